//! Applying workflow commands. Every one carries the leader's term, which must
//! be the term of the claim in force on the workflow's job: a deposed leader's
//! late progress report is refused.

use super::{conflict, not_found, stale, AdminState};
use crate::command::Response;
use crate::records::*;

impl AdminState {
    /// Refuse unless `term` holds the claim in force on `job_id`.
    fn check_claim(&self, job_id: &str, term: u64) -> Result<(), Response> {
        let job = self.jobs.get(job_id).ok_or_else(|| not_found("job", job_id))?;
        let in_force = self.term_in_force(job);
        if job.state != JobState::Running || job.current_claim().map(|c| c.term) != Some(term) || term < in_force {
            return Err(stale(job_id, in_force, term));
        }
        Ok(())
    }

    fn workflow_response(&self, id: &str) -> Response {
        match self.workflows.get(id) {
            Some(w) => Response::Workflow {
                workflow: Box::new(w.clone()),
            },
            None => not_found("workflow", id),
        }
    }

    fn checked_workflow(&self, workflow_id: &str, term: u64) -> Result<&Workflow, Response> {
        let wf = self
            .workflows
            .get(workflow_id)
            .ok_or_else(|| not_found("workflow", workflow_id))?;
        self.check_claim(&wf.job_id, term)?;
        if matches!(wf.state, StepState::Succeeded | StepState::Failed) {
            return Err(conflict(format!("workflow {workflow_id} has already finished")));
        }
        Ok(wf)
    }

    pub(super) fn start_workflow(
        &mut self,
        index: u64,
        at: Millis,
        workflow_id: &str,
        job_id: &str,
        term: u64,
        tasks: &[Task],
    ) -> Response {
        if let Err(refused) = self.check_claim(job_id, term) {
            return refused;
        }
        // One workflow per job: a new leader resumes the one that exists.
        if let Some(existing) = self.workflows.values().find(|w| w.job_id == job_id) {
            return self.workflow_response(&existing.id.clone());
        }
        let database = self.jobs[job_id].kind.database().unwrap_or_default().to_string();
        self.workflows.insert(
            workflow_id.to_string(),
            Workflow {
                id: workflow_id.to_string(),
                job_id: job_id.to_string(),
                tasks: tasks.to_vec(),
                state: StepState::Running,
                database,
                error: None,
            },
        );
        let message = format!("Workflow {workflow_id} planned {} tasks for job {job_id}.", tasks.len());
        self.event(index, at, "workflow-started", job_id, message);
        self.workflow_response(workflow_id)
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn update_task(
        &mut self,
        at: Millis,
        workflow_id: &str,
        index: usize,
        term: u64,
        state: StepState,
        attempt: u32,
        result: Option<&str>,
    ) -> Response {
        let wf = match self.checked_workflow(workflow_id, term) {
            Ok(wf) => wf,
            Err(refused) => return refused,
        };
        let Some(task) = wf.tasks.get(index) else {
            return not_found("task", &format!("{workflow_id}/{index}"));
        };
        // Tasks run in order: every earlier task must be done (undo tasks also run after the failed one).
        let blocked = wf.tasks[..index].iter().any(|t| match t.state {
            StepState::Succeeded => false,
            StepState::Failed => !task.compensation,
            _ => true,
        });
        if blocked {
            return conflict(format!(
                "task {index} of workflow {workflow_id} cannot run before the ones ahead of it"
            ));
        }
        let allowed = matches!(
            (task.state, state),
            (StepState::Pending, StepState::Running)
                | (StepState::Running, StepState::Running)
                | (StepState::Running, StepState::Succeeded)
                | (StepState::Running, StepState::Failed)
        );
        if !allowed || attempt < task.attempt {
            return conflict(format!(
                "task {index} of workflow {workflow_id} cannot go from {:?} (attempt {}) to {state:?} (attempt {attempt})",
                task.state, task.attempt
            ));
        }
        let task = &mut self.workflows.get_mut(workflow_id).expect("checked").tasks[index];
        task.state = state;
        task.attempt = attempt;
        task.result = result.map(str::to_string);
        match state {
            StepState::Running => {
                task.started_at_ms = Some(at);
                task.finished_at_ms = None;
            }
            _ => task.finished_at_ms = Some(at),
        }
        self.workflow_response(workflow_id)
    }

    pub(super) fn compensate_workflow(
        &mut self,
        workflow_id: &str,
        term: u64,
        error: &str,
        tasks: &[Task],
    ) -> Response {
        let wf = match self.checked_workflow(workflow_id, term) {
            Ok(wf) => wf,
            Err(refused) => return refused,
        };
        if wf.error.is_some() {
            return self.workflow_response(workflow_id);
        }
        // Drop what never ran, then append the undo tasks.
        let wf = self.workflows.get_mut(workflow_id).expect("checked");
        wf.tasks.retain(|t| t.state != StepState::Pending);
        wf.error = Some(error.to_string());
        wf.tasks.extend(tasks.iter().cloned().map(|mut t| {
            t.compensation = true;
            t
        }));
        self.workflow_response(workflow_id)
    }

    pub(super) fn finish_workflow(
        &mut self,
        index: u64,
        at: Millis,
        workflow_id: &str,
        term: u64,
        error: Option<&str>,
    ) -> Response {
        let wf = match self.checked_workflow(workflow_id, term) {
            Ok(wf) => wf,
            Err(refused) => return refused,
        };
        let job_id = wf.job_id.clone();
        let error = error.map(str::to_string).or_else(|| wf.error.clone());
        let wf = self.workflows.get_mut(workflow_id).expect("checked");
        wf.state = if error.is_some() {
            StepState::Failed
        } else {
            StepState::Succeeded
        };
        wf.error = error.clone();
        let kind = self.finish_job(index, at, &job_id, term, error.clone()).kind;
        self.conclude(index, at, &kind, error.as_deref());
        self.workflow_response(workflow_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Proposal};

    fn apply(s: &mut AdminState, i: u64, command: Command) -> Response {
        s.apply(i, &Proposal { at_ms: i, command })
    }

    fn healthy_host(s: &mut AdminState) {
        s.hosts.insert(
            "h1".into(),
            Host {
                name: "h1".into(),
                addr: "127.0.1.1:7300".into(),
                zone: "a".into(),
                health: HostHealth::Healthy,
                ..Host::default()
            },
        );
    }

    fn create(s: &mut AdminState, i: u64, name: &str, job: &str) -> Response {
        apply(
            s,
            i,
            Command::CreateDatabase {
                job_id: job.into(),
                request_id: Some(job.into()),
                name: name.into(),
                spec: DatabaseSpec::default(),
                master_verifier: "SCRAM-SHA-256$x".into(),
                instance_id: format!("{name}-i1"),
            },
        )
    }

    fn task(id: &str) -> Task {
        Task {
            id: id.into(),
            name: "provision".into(),
            host: "h1".into(),
            ..Task::default()
        }
    }

    fn run_to_end(s: &mut AdminState, i: &mut u64, wf: &str, job: &str, term: u64, error: Option<&str>) {
        let mut next = || {
            *i += 1;
            *i
        };
        apply(
            s,
            next(),
            Command::ClaimJob {
                job_id: job.into(),
                term,
                node_id: 1,
            },
        );
        let started = apply(
            s,
            next(),
            Command::StartWorkflow {
                workflow_id: wf.into(),
                job_id: job.into(),
                term,
                tasks: vec![task(&format!("{wf}-t0"))],
            },
        );
        assert!(matches!(started, Response::Workflow { .. }), "{started:?}");
        for state in [StepState::Running, StepState::Succeeded] {
            let r = apply(
                s,
                next(),
                Command::UpdateTask {
                    workflow_id: wf.into(),
                    index: 0,
                    term,
                    state,
                    attempt: 1,
                    result: None,
                },
            );
            assert!(matches!(r, Response::Workflow { .. }), "{r:?}");
        }
        let r = apply(
            s,
            next(),
            Command::FinishWorkflow {
                workflow_id: wf.into(),
                term,
                error: error.map(Into::into),
            },
        );
        assert!(matches!(r, Response::Workflow { .. }), "{r:?}");
    }

    #[test]
    fn create_then_delete_frees_port_and_name() {
        let mut s = AdminState::default();
        healthy_host(&mut s);
        let mut i = 1;
        assert!(matches!(
            create(&mut s, i, "orders", "j1"),
            Response::Database { created: true, .. }
        ));
        assert!(
            matches!(
                create(&mut s, 2, "orders", "j1"),
                Response::Database { created: false, .. }
            ),
            "retry"
        );
        assert!(
            matches!(create(&mut s, 3, "orders", "j9"), Response::Rejected { .. }),
            "duplicate name"
        );
        i = 3;
        run_to_end(&mut s, &mut i, "w1", "j1", 1, None);
        let db = &s.databases["orders"];
        assert_eq!(db.status, DatabaseStatus::Available);
        assert_eq!(db.endpoint.as_ref().unwrap().addr, "127.0.1.1");
        assert_eq!(db.endpoint.as_ref().unwrap().port, super::super::placement::FIRST_PORT);
        assert_eq!(s.jobs["j1"].state, JobState::Succeeded);
        assert_eq!(s.open_jobs().count(), 0, "a finished workflow closes its job");

        i += 1;
        assert!(matches!(
            apply(
                &mut s,
                i,
                Command::DeleteDatabase {
                    job_id: "j2".into(),
                    request_id: None,
                    name: "orders".into()
                }
            ),
            Response::Database { .. }
        ));
        i += 1;
        let busy = apply(
            &mut s,
            i,
            Command::DeleteDatabase {
                job_id: "j3".into(),
                request_id: None,
                name: "orders".into(),
            },
        );
        assert!(
            matches!(&busy, Response::Rejected { rejection } if rejection.to_string().contains("busy")),
            "{busy:?}"
        );
        run_to_end(&mut s, &mut i, "w2", "j2", 1, None);
        assert!(!s.databases.contains_key("orders"));
        assert!(s.instances.is_empty(), "port and slot freed");
        i += 1;
        assert!(
            matches!(
                create(&mut s, i, "orders", "j4"),
                Response::Database { created: true, .. }
            ),
            "name reusable"
        );
    }

    #[test]
    fn a_failed_create_gives_back_its_instance_and_stale_terms_are_refused() {
        let mut s = AdminState::default();
        healthy_host(&mut s);
        create(&mut s, 1, "db1", "j1");
        let mut i = 1;
        run_to_end(&mut s, &mut i, "w1", "j1", 2, Some("disk on fire"));
        assert_eq!(s.databases["db1"].status, DatabaseStatus::Failed);
        assert_eq!(s.databases["db1"].status_reason.as_deref(), Some("disk on fire"));
        assert!(s.instances.is_empty());

        create(&mut s, 20, "db2", "j2");
        apply(
            &mut s,
            21,
            Command::ClaimJob {
                job_id: "j2".into(),
                term: 3,
                node_id: 1,
            },
        );
        apply(
            &mut s,
            22,
            Command::StartWorkflow {
                workflow_id: "w2".into(),
                job_id: "j2".into(),
                term: 3,
                tasks: vec![task("w2-t0")],
            },
        );
        apply(
            &mut s,
            23,
            Command::ClaimJob {
                job_id: "j2".into(),
                term: 4,
                node_id: 2,
            },
        );
        let late = apply(
            &mut s,
            24,
            Command::UpdateTask {
                workflow_id: "w2".into(),
                index: 0,
                term: 3,
                state: StepState::Running,
                attempt: 1,
                result: None,
            },
        );
        assert!(
            matches!(late, Response::Rejected { .. }),
            "a deposed leader's report is refused: {late:?}"
        );
        let resumed = apply(
            &mut s,
            25,
            Command::StartWorkflow {
                workflow_id: "w-other".into(),
                job_id: "j2".into(),
                term: 4,
                tasks: vec![],
            },
        );
        assert!(
            matches!(&resumed, Response::Workflow { workflow } if workflow.id == "w2"),
            "the new leader resumes the same workflow"
        );
        let skip = apply(
            &mut s,
            26,
            Command::UpdateTask {
                workflow_id: "w2".into(),
                index: 0,
                term: 4,
                state: StepState::Succeeded,
                attempt: 1,
                result: None,
            },
        );
        assert!(
            matches!(skip, Response::Rejected { .. }),
            "pending cannot jump to succeeded"
        );
    }
}
