//! The lifecycle rules of jobs, workflows and tasks, as data.
//!
//! Apply consults these tables for every job, workflow and task change, so the
//! rules live in one place and a test can list them: every pair of states is
//! in its table exactly once, allowed or refused with the reason a rejection
//! gives.

use crate::records::{JobState, StepState, Workflow};

/// Whether a transition is allowed, and why not when it is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Allowed; the sentence says when it happens.
    Allowed(&'static str),
    /// Refused; the sentence is the reason given.
    Refused(&'static str),
}

/// One row of a transition table.
pub type Rule<S> = (S, S, Verdict);

use Verdict::{Allowed, Refused};

const TASK_FINAL: Verdict = Refused("a finished task is final; a failed one is followed by the workflow's undo tasks");

/// Task states: an attempt is recorded as running before it runs, and its outcome after.
pub const TASK: [Rule<StepState>; 16] = [
    (
        StepState::Pending,
        StepState::Pending,
        Refused("the task is already pending"),
    ),
    (
        StepState::Pending,
        StepState::Running,
        Allowed("its first attempt starts"),
    ),
    (
        StepState::Pending,
        StepState::Succeeded,
        Refused("a task succeeds only after an attempt was recorded as running"),
    ),
    (
        StepState::Pending,
        StepState::Failed,
        Refused("a task fails only after an attempt was recorded as running"),
    ),
    (
        StepState::Running,
        StepState::Pending,
        Refused("an attempt that may have run is never forgotten"),
    ),
    (
        StepState::Running,
        StepState::Running,
        Allowed("the same attempt is re-sent, or the next one starts (attempt numbers never go back)"),
    ),
    (
        StepState::Running,
        StepState::Succeeded,
        Allowed("its attempt succeeded"),
    ),
    (
        StepState::Running,
        StepState::Failed,
        Allowed("its last attempt failed (with the undo plan, for a forward task)"),
    ),
    (StepState::Succeeded, StepState::Pending, TASK_FINAL),
    (StepState::Succeeded, StepState::Running, TASK_FINAL),
    (StepState::Succeeded, StepState::Succeeded, TASK_FINAL),
    (StepState::Succeeded, StepState::Failed, TASK_FINAL),
    (StepState::Failed, StepState::Pending, TASK_FINAL),
    (StepState::Failed, StepState::Running, TASK_FINAL),
    (StepState::Failed, StepState::Succeeded, TASK_FINAL),
    (StepState::Failed, StepState::Failed, TASK_FINAL),
];

/// Where a workflow is, derived from its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Running its forward tasks.
    Running,
    /// A forward task failed; running the undo tasks recorded with that failure.
    Compensating,
    /// Finished: every forward task succeeded.
    Succeeded,
    /// Finished: planning failed, or a task failed and its undo tasks ran.
    Failed,
}

impl Phase {
    /// Every phase, for tables and tests.
    pub const ALL: [Phase; 4] = [Phase::Running, Phase::Compensating, Phase::Succeeded, Phase::Failed];

    /// The phase of `wf`.
    pub fn of(wf: &Workflow) -> Phase {
        match (wf.state, &wf.error) {
            (StepState::Succeeded, _) => Phase::Succeeded,
            (StepState::Failed, _) => Phase::Failed,
            (_, Some(_)) => Phase::Compensating,
            (_, None) => Phase::Running,
        }
    }
}

const WORKFLOW_FINAL: Verdict = Refused("the workflow has finished; its outcome is final");

/// Workflow phases: a failure switches to compensation in the same command that records it,
/// so no state exists in which a task failed and nothing says what undoes it.
pub const WORKFLOW: [Rule<Phase>; 16] = [
    (
        Phase::Running,
        Phase::Running,
        Refused("the workflow is already running"),
    ),
    (
        Phase::Running,
        Phase::Compensating,
        Allowed("a forward task failed; its undo tasks are recorded with the failure"),
    ),
    (
        Phase::Running,
        Phase::Succeeded,
        Allowed("every forward task succeeded"),
    ),
    (
        Phase::Running,
        Phase::Failed,
        Allowed("nothing could be planned: the start records why, in the same command"),
    ),
    (
        Phase::Compensating,
        Phase::Running,
        Refused("a workflow that is undoing its work never resumes it"),
    ),
    (
        Phase::Compensating,
        Phase::Compensating,
        Refused("the workflow is already compensating for an earlier failure"),
    ),
    (
        Phase::Compensating,
        Phase::Succeeded,
        Refused("a workflow whose task failed never succeeds"),
    ),
    (
        Phase::Compensating,
        Phase::Failed,
        Allowed("its undo tasks have finished, or one of them failed"),
    ),
    (Phase::Succeeded, Phase::Running, WORKFLOW_FINAL),
    (Phase::Succeeded, Phase::Compensating, WORKFLOW_FINAL),
    (Phase::Succeeded, Phase::Succeeded, WORKFLOW_FINAL),
    (Phase::Succeeded, Phase::Failed, WORKFLOW_FINAL),
    (Phase::Failed, Phase::Running, WORKFLOW_FINAL),
    (Phase::Failed, Phase::Compensating, WORKFLOW_FINAL),
    (Phase::Failed, Phase::Succeeded, WORKFLOW_FINAL),
    (Phase::Failed, Phase::Failed, WORKFLOW_FINAL),
];

const JOB_FINAL: Verdict = Refused("the job has finished; its outcome is final");

/// Job states: claimed by the leader services in force, completed only by the claim in force.
pub const JOB: [Rule<JobState>; 16] = [
    (
        JobState::Pending,
        JobState::Pending,
        Refused("the job is already pending"),
    ),
    (
        JobState::Pending,
        JobState::Running,
        Allowed("the leader services in force claim it"),
    ),
    (
        JobState::Pending,
        JobState::Succeeded,
        Refused("a job finishes only under a claim"),
    ),
    (
        JobState::Pending,
        JobState::Failed,
        Refused("a job finishes only under a claim"),
    ),
    (
        JobState::Running,
        JobState::Pending,
        Refused("a claimed job is never unclaimed; newer leader services take it over"),
    ),
    (
        JobState::Running,
        JobState::Running,
        Allowed("newer leader services take it over (a new leader, or the services restarted)"),
    ),
    (
        JobState::Running,
        JobState::Succeeded,
        Allowed("the claim in force completes it"),
    ),
    (
        JobState::Running,
        JobState::Failed,
        Allowed("the claim in force completes it with an error"),
    ),
    (JobState::Succeeded, JobState::Pending, JOB_FINAL),
    (JobState::Succeeded, JobState::Running, JOB_FINAL),
    (JobState::Succeeded, JobState::Succeeded, JOB_FINAL),
    (JobState::Succeeded, JobState::Failed, JOB_FINAL),
    (JobState::Failed, JobState::Pending, JOB_FINAL),
    (JobState::Failed, JobState::Running, JOB_FINAL),
    (JobState::Failed, JobState::Succeeded, JOB_FINAL),
    (JobState::Failed, JobState::Failed, JOB_FINAL),
];

/// The verdict of `table` on `from → to`: `Err` carries the refusal's reason.
pub fn check<S: PartialEq + Copy>(table: &[Rule<S>], from: S, to: S) -> Result<(), &'static str> {
    match table.iter().find(|(f, t, _)| *f == from && *t == to) {
        Some((_, _, Allowed(_))) => Ok(()),
        Some((_, _, Refused(why))) => Err(why),
        None => Err("no such transition"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TASK_STATES: [StepState; 4] = [
        StepState::Pending,
        StepState::Running,
        StepState::Succeeded,
        StepState::Failed,
    ];
    const JOB_STATES: [JobState; 4] = [
        JobState::Pending,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
    ];

    /// Every (from, to) pair of `states` appears exactly once.
    fn complete<S: PartialEq + Copy + std::fmt::Debug>(table: &[Rule<S>], states: &[S]) {
        for &from in states {
            for &to in states {
                let rows = table.iter().filter(|(f, t, _)| *f == from && *t == to).count();
                assert_eq!(rows, 1, "{from:?} -> {to:?} appears {rows} times");
            }
        }
        assert_eq!(table.len(), states.len() * states.len());
    }

    #[test]
    fn every_pair_of_states_has_exactly_one_rule() {
        complete(&TASK, &TASK_STATES);
        complete(&WORKFLOW, &Phase::ALL);
        complete(&JOB, &JOB_STATES);
    }

    #[test]
    fn the_allowed_transitions_are_exactly_these() {
        let allowed = |table: &[Rule<StepState>]| -> Vec<(StepState, StepState)> {
            table
                .iter()
                .filter(|(_, _, v)| matches!(v, Allowed(_)))
                .map(|(f, t, _)| (*f, *t))
                .collect()
        };
        use StepState::*;
        assert_eq!(
            allowed(&TASK),
            [
                (Pending, Running),
                (Running, Running),
                (Running, Succeeded),
                (Running, Failed)
            ]
        );
        let phases: Vec<_> = WORKFLOW
            .iter()
            .filter(|(_, _, v)| matches!(v, Allowed(_)))
            .map(|(f, t, _)| (*f, *t))
            .collect();
        assert_eq!(
            phases,
            [
                (Phase::Running, Phase::Compensating),
                (Phase::Running, Phase::Succeeded),
                (Phase::Running, Phase::Failed),
                (Phase::Compensating, Phase::Failed)
            ]
        );
        let jobs: Vec<_> = JOB
            .iter()
            .filter(|(_, _, v)| matches!(v, Allowed(_)))
            .map(|(f, t, _)| (*f, *t))
            .collect();
        assert_eq!(
            jobs,
            [
                (JobState::Pending, JobState::Running),
                (JobState::Running, JobState::Running),
                (JobState::Running, JobState::Succeeded),
                (JobState::Running, JobState::Failed)
            ]
        );
    }

    #[test]
    fn refusals_give_their_reason() {
        assert_eq!(
            check(&WORKFLOW, Phase::Compensating, Phase::Succeeded),
            Err("a workflow whose task failed never succeeds")
        );
        assert!(check(&TASK, StepState::Failed, StepState::Running)
            .unwrap_err()
            .contains("final"));
        assert!(check(&JOB, JobState::Running, JobState::Succeeded).is_ok());
    }

    #[test]
    fn the_phase_is_derived_from_the_record() {
        let mut wf = Workflow {
            state: StepState::Running,
            ..Workflow::default()
        };
        assert_eq!(Phase::of(&wf), Phase::Running);
        wf.error = Some("provision failed".into());
        assert_eq!(Phase::of(&wf), Phase::Compensating);
        wf.state = StepState::Failed;
        assert_eq!(Phase::of(&wf), Phase::Failed);
    }
}
