//! Applying workflow commands. Every one carries the fence of the leader
//! services that sent it, which must be the services in force and hold the
//! claim on the workflow's job: a stopped worker's late report is refused.
//! Which changes are allowed at all is [`crate::transitions`]' tables.

use super::databases::Outcome;
use super::{conflict, not_found, refused, AdminState};
use crate::command::Response;
use crate::records::*;
use crate::transitions::{self, Phase, TASK, WORKFLOW};

/// One task's progress, as `UpdateTask` reports it.
pub(super) struct TaskUpdate<'a> {
    pub index: usize,
    pub state: StepState,
    pub attempt: u32,
    pub result: Option<&'a str>,
    pub undo: Option<&'a [Task]>,
    pub output: Option<&'a crate::catalog::TaskOutput>,
}

impl AdminState {
    fn workflow_response(&self, id: &str) -> Response {
        match self.workflows.get(id) {
            Some(w) => Response::Workflow {
                workflow: Box::new(w.clone()),
            },
            None => not_found("workflow", id),
        }
    }

    /// The workflow, if `fence` may act on it now and it has not finished.
    fn checked_workflow(&self, workflow_id: &str, fence: u64) -> Result<&Workflow, Response> {
        let wf = self
            .workflows
            .get(workflow_id)
            .ok_or_else(|| not_found("workflow", workflow_id))?;
        let job = self.jobs.get(&wf.job_id).ok_or_else(|| not_found("job", &wf.job_id))?;
        self.check_claim(job, fence)?;
        if matches!(Phase::of(wf), Phase::Succeeded | Phase::Failed) {
            return Err(conflict(format!("workflow {workflow_id} has already finished")));
        }
        Ok(wf)
    }

    /// The workflow of `job_id`, if one was started.
    pub fn workflow_of(&self, job_id: &str) -> Option<&Workflow> {
        self.workflow_by_job.get(job_id).and_then(|id| self.workflows.get(id))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_workflow(
        &mut self,
        index: u64,
        at: Millis,
        workflow_id: &str,
        job_id: &str,
        fence: u64,
        tasks: &[Task],
        error: Option<&str>,
    ) -> Response {
        let Some(job) = self.jobs.get(job_id) else {
            return not_found("job", job_id);
        };
        if let Err(refused) = self.check_claim(job, fence) {
            return refused;
        }
        // One workflow per job: a new leader resumes the one that exists.
        if let Some(existing) = self.workflow_by_job.get(job_id) {
            return self.workflow_response(&existing.clone());
        }
        if tasks
            .iter()
            .any(|t| t.compensation || t.state != StepState::Pending || t.attempt != 0)
        {
            return conflict(format!(
                "workflow {workflow_id} must start with pending forward tasks only"
            ));
        }
        if error.is_some() && !tasks.is_empty() {
            return conflict(format!(
                "workflow {workflow_id} has tasks; it fails only through a task's failure"
            ));
        }
        let database = job.kind.database().unwrap_or_default().to_string();
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
        self.workflow_by_job.insert(job_id.to_string(), workflow_id.to_string());
        let message = format!("Workflow {workflow_id} planned {} tasks for job {job_id}.", tasks.len());
        self.event(index, at, "workflow-started", job_id, message);
        if let Some(e) = error {
            // Nothing could be planned: the failure is the outcome, recorded in this command.
            let outcome = Outcome::Failed {
                error: e.to_string(),
                undone: true,
            };
            self.conclude_workflow(index, at, workflow_id, fence, Phase::Failed, &outcome);
        }
        self.workflow_response(workflow_id)
    }

    pub(super) fn update_task(
        &mut self,
        index: u64,
        at: Millis,
        workflow_id: &str,
        fence: u64,
        update: TaskUpdate<'_>,
    ) -> Response {
        let wf = match self.checked_workflow(workflow_id, fence) {
            Ok(wf) => wf,
            Err(refused) => return refused,
        };
        let n = update.index;
        let Some(task) = wf.tasks.get(n) else {
            return not_found("task", &format!("{workflow_id}/{n}"));
        };
        let what = format!("task {n} ({}) of workflow {workflow_id}", task.action);
        // Tasks run one at a time, in order: every earlier task must have finished (forward
        // tasks before an undo task may have failed: that failure is why the undo runs).
        let blocked = wf.tasks[..n].iter().find(|t| match t.state {
            StepState::Succeeded => false,
            StepState::Failed => t.compensation || !task.compensation,
            _ => true,
        });
        if let Some(ahead) = blocked {
            return conflict(format!(
                "{what} cannot run before task {} ({}, {}) ahead of it",
                ahead.id,
                ahead.action,
                wire_name(&ahead.state)
            ));
        }
        if let Err(why) = transitions::check(&TASK, task.state, update.state) {
            return refused(
                format!("{what} cannot go from {:?} to {:?}", task.state, update.state),
                why,
            );
        }
        if update.attempt < task.attempt.max(1) {
            return conflict(format!(
                "{what} is at attempt {}; attempt {} is older",
                task.attempt, update.attempt
            ));
        }
        let forward_failure = update.state == StepState::Failed && !task.compensation;
        let undo = match (forward_failure, update.undo) {
            (true, Some(undo)) => {
                if let Err(why) = transitions::check(&WORKFLOW, Phase::of(wf), Phase::Compensating) {
                    return refused(format!("workflow {workflow_id} cannot compensate"), why);
                }
                undo
            }
            (true, None) => {
                return conflict(format!(
                    "{what} cannot fail without the plan that undoes the workflow's work"
                ))
            }
            (false, Some(_)) => {
                return conflict(format!(
                    "{what}: an undo plan comes only with the failure of a forward task"
                ))
            }
            (false, None) => &[][..],
        };
        let action = task.action;
        if let (StepState::Succeeded, Some(output)) = (update.state, update.output) {
            let instance = task.instance.clone();
            if let Some(kind) = self.jobs.get(&wf.job_id).map(|j| j.kind.clone()) {
                self.record_output(at, &kind, &instance, output);
            }
        }
        let wf = self.workflows.get_mut(workflow_id).expect("checked");
        let task = &mut wf.tasks[n];
        // A note on an attempt already running (progress, an unknown outcome) keeps its start.
        let same_attempt = task.state == StepState::Running && task.attempt == update.attempt;
        task.state = update.state;
        task.attempt = update.attempt;
        task.result = update.result.map(str::to_string);
        if update.state == StepState::Succeeded {
            task.output = update.output.cloned();
        }
        match update.state {
            StepState::Running => {
                if !same_attempt || task.started_at_ms.is_none() {
                    task.started_at_ms = Some(at);
                }
                task.finished_at_ms = None;
            }
            _ => task.finished_at_ms = Some(at),
        }
        if forward_failure {
            // Drop what never ran, then append the undo tasks: one command, so a failure
            // always comes with what undoes it.
            let error = format!("{action} failed: {}", update.result.unwrap_or("no detail"));
            wf.tasks.retain(|t| t.state != StepState::Pending);
            wf.tasks.extend(undo.iter().cloned().enumerate().map(|(k, mut t)| {
                t.id = format!("{workflow_id}-undo{k}");
                t.compensation = true;
                t.state = StepState::Pending;
                t.attempt = 0;
                t
            }));
            wf.error = Some(error.clone());
            let job_id = wf.job_id.clone();
            let message = format!(
                "Workflow {workflow_id} failed ({error}); {} undo tasks follow.",
                undo.len()
            );
            self.event(index, at, "workflow-compensating", &job_id, message);
        }
        self.workflow_response(workflow_id)
    }

    pub(super) fn finish_workflow(&mut self, index: u64, at: Millis, workflow_id: &str, fence: u64) -> Response {
        let wf = match self.checked_workflow(workflow_id, fence) {
            Ok(wf) => wf,
            Err(refused) => return refused,
        };
        let phase = Phase::of(wf);
        let undo_failed = wf.tasks.iter().find(|t| t.compensation && t.state == StepState::Failed);
        let unfinished = wf
            .tasks
            .iter()
            .find(|t| !matches!(t.state, StepState::Succeeded | StepState::Failed));
        let (to, outcome) = match phase {
            Phase::Compensating => {
                let error = wf.error.clone().unwrap_or_default();
                match (undo_failed, unfinished) {
                    (Some(u), _) => (
                        Phase::Failed,
                        Outcome::Failed {
                            error: format!(
                                "{error}; undoing it failed too ({} failed: {})",
                                u.action,
                                u.result.as_deref().unwrap_or("no detail")
                            ),
                            undone: false,
                        },
                    ),
                    (None, None) => (Phase::Failed, Outcome::Failed { error, undone: true }),
                    (None, Some(t)) => {
                        return conflict(format!(
                            "workflow {workflow_id} cannot finish: undo task {} ({}) is {}",
                            t.id,
                            t.action,
                            wire_name(&t.state)
                        ))
                    }
                }
            }
            _ => match unfinished {
                Some(t) => {
                    return conflict(format!(
                        "workflow {workflow_id} cannot finish: task {} ({}) is {}",
                        t.id,
                        t.action,
                        wire_name(&t.state)
                    ))
                }
                None => (Phase::Succeeded, Outcome::Succeeded),
            },
        };
        if let Err(why) = transitions::check(&WORKFLOW, phase, to) {
            return refused(format!("workflow {workflow_id} cannot finish"), why);
        }
        if undo_failed.is_some() {
            // Undo tasks after a failed one never ran: drop them, as a failure drops forward tasks.
            let wf = self.workflows.get_mut(workflow_id).expect("checked");
            wf.tasks.retain(|t| t.state != StepState::Pending);
        }
        self.conclude_workflow(index, at, workflow_id, fence, to, &outcome);
        self.workflow_response(workflow_id)
    }

    /// Record a checked outcome: the workflow's state, its job's end, and the effect on the database.
    fn conclude_workflow(
        &mut self,
        index: u64,
        at: Millis,
        workflow_id: &str,
        fence: u64,
        to: Phase,
        outcome: &Outcome,
    ) {
        let wf = self.workflows.get_mut(workflow_id).expect("checked by the caller");
        let job_id = wf.job_id.clone();
        let error = match outcome {
            Outcome::Succeeded => None,
            Outcome::Failed { error, .. } => Some(error.clone()),
        };
        wf.state = if to == Phase::Succeeded {
            StepState::Succeeded
        } else {
            StepState::Failed
        };
        wf.error = error.clone();
        let kind = self.finish_job(index, at, &job_id, fence, error).kind;
        let owner = kind
            .database()
            .and_then(|d| self.databases.get(d))
            .and_then(|d| d.operation.clone());
        if owner.is_some_and(|op| op != job_id) {
            // A failover pre-empted it: only its effect on the catalog remains.
            self.conclude_preempted(index, at, &kind, outcome);
            return;
        }
        self.conclude(index, at, &kind, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Proposal};
    use crate::transitions::{check, TASK};

    /// An admin state with one healthy host and leader services in force.
    struct H {
        s: AdminState,
        i: u64,
        fence: u64,
    }

    impl H {
        fn new() -> Self {
            let mut h = H {
                s: AdminState::default(),
                i: 0,
                fence: 0,
            };
            h.s.hosts.insert(
                "h1".into(),
                Host {
                    name: "h1".into(),
                    addr: "127.0.1.1:7300".into(),
                    zone: "a".into(),
                    health: HostHealth::Healthy,
                    ..Host::default()
                },
            );
            h.services(1);
            h
        }

        fn apply(&mut self, command: Command) -> Response {
            self.i += 1;
            self.s.apply(self.i, &Proposal::new(self.i, command))
        }

        fn services(&mut self, term: u64) -> u64 {
            match self.apply(Command::StartLeaderServices { node_id: 1, term }) {
                Response::LeaderServices { services } => self.fence = services.fence,
                other => panic!("{other:?}"),
            }
            self.fence
        }

        fn create(&mut self, name: &str, job: &str) -> Response {
            self.apply(Command::CreateAccount { name: "acme".into() });
            self.apply(Command::CreateDatabase {
                job_id: job.into(),
                request: Some(RequestKey {
                    id: job.into(),
                    fingerprint: format!("create {name}"),
                    retention_ms: 1_000_000,
                }),
                name: name.into(),
                account: "acme".into(),
                spec: DatabaseSpec {
                    class: "small".into(),
                    storage_gib: 10,
                    ..DatabaseSpec::default()
                },
                master_verifier: "SCRAM-SHA-256$x".into(),
                instance_id: format!("{name}-i1"),
            })
        }

        fn claim(&mut self, job: &str) -> Response {
            let fence = self.fence;
            self.apply(Command::ClaimJob {
                job_id: job.into(),
                fence,
                node_id: 1,
            })
        }

        fn start(&mut self, wf: &str, job: &str, actions: &[TaskAction]) -> Response {
            let tasks = actions
                .iter()
                .enumerate()
                .map(|(n, a)| Task {
                    id: format!("{wf}-{n}"),
                    action: *a,
                    host: "h1".into(),
                    instance: "db-i1".into(),
                    ..Task::default()
                })
                .collect();
            let fence = self.fence;
            self.apply(Command::StartWorkflow {
                workflow_id: wf.into(),
                job_id: job.into(),
                fence,
                tasks,
                error: None,
            })
        }

        fn update(&mut self, wf: &str, n: usize, state: StepState, attempt: u32, undo: Option<Vec<Task>>) -> Response {
            let fence = self.fence;
            self.apply(Command::UpdateTask {
                workflow_id: wf.into(),
                index: n,
                fence,
                state,
                attempt,
                result: Some(format!("{state:?}")),
                undo,
                output: None,
            })
        }

        fn run(&mut self, wf: &str, n: usize) {
            ok(&self.update(wf, n, StepState::Running, 1, None));
            ok(&self.update(wf, n, StepState::Succeeded, 1, None));
        }

        fn fail(&mut self, wf: &str, n: usize, undo: &[TaskAction]) -> Response {
            ok(&self.update(wf, n, StepState::Running, 1, None));
            let undo = undo
                .iter()
                .map(|a| Task {
                    action: *a,
                    host: "h1".into(),
                    instance: "db-i1".into(),
                    ..Task::default()
                })
                .collect();
            self.update(wf, n, StepState::Failed, 1, Some(undo))
        }

        fn finish(&mut self, wf: &str) -> Response {
            let fence = self.fence;
            self.apply(Command::FinishWorkflow {
                workflow_id: wf.into(),
                fence,
            })
        }

        fn wf(&self, id: &str) -> &Workflow {
            &self.s.workflows[id]
        }
    }

    #[track_caller]
    fn ok(r: &Response) {
        assert!(!matches!(r, Response::Rejected { .. }), "{r:?}");
    }

    #[track_caller]
    fn refused(r: &Response, containing: &str) {
        match r {
            Response::Rejected { rejection } => assert!(
                rejection.to_string().contains(containing),
                "{rejection} does not say {containing:?}"
            ),
            other => panic!("expected a refusal saying {containing:?}, got {other:?}"),
        }
    }

    fn created(name: &str, job: &str, actions: &[TaskAction]) -> H {
        let mut h = H::new();
        ok(&h.create(name, job));
        ok(&h.claim(job));
        ok(&h.start("w", job, actions));
        h
    }

    const CREATE: [TaskAction; 3] = [TaskAction::Provision, TaskAction::Start, TaskAction::Check];

    #[test]
    fn names_and_request_ids_are_each_accounts_own() {
        let mut h = H::new();
        ok(&h.create("db", "r1"));
        h.apply(Command::CreateAccount { name: "other".into() });
        let theirs = h.apply(Command::CreateDatabase {
            job_id: "j2".into(),
            request: Some(RequestKey {
                id: "r1".into(),
                fingerprint: "create db".into(),
                retention_ms: 1_000_000,
            }),
            name: "db".into(),
            account: "other".into(),
            spec: DatabaseSpec {
                class: "small".into(),
                storage_gib: 10,
                ..DatabaseSpec::default()
            },
            master_verifier: "SCRAM-SHA-256$x".into(),
            instance_id: "other-i1".into(),
        });
        assert!(
            matches!(theirs, Response::Database { created: true, .. }),
            "the same name and request id in another account make a new database: {theirs:?}"
        );
        assert!(h.s.databases.contains_key("db.acme") && h.s.databases.contains_key("db.other"));
        // DNS hears of the new database by its key, as of everything after.
        let create = Proposal::new(
            0,
            Command::CreateDatabase {
                job_id: "j2".into(),
                request: None,
                name: "db".into(),
                account: "other".into(),
                spec: DatabaseSpec::default(),
                master_verifier: String::new(),
                instance_id: String::new(),
            },
        );
        assert_eq!(h.s.zone_changes(&create, &Response::Done), ["db.other"]);
        assert_eq!(h.s.jobs["j2"].account, "other");
    }

    #[test]
    fn create_then_delete_frees_port_and_name() {
        let mut h = created("db", "j1", &CREATE);
        assert!(
            matches!(h.create("db", "j1"), Response::Database { created: false, .. }),
            "retry"
        );
        refused(&h.create("db", "j9"), "already exists");
        for n in 0..3 {
            h.run("w", n);
        }
        ok(&h.finish("w"));
        let db = &h.s.databases["db.acme"];
        assert_eq!(db.status, DatabaseStatus::Available);
        assert_eq!(db.endpoint.as_ref().unwrap().addr, "127.0.1.1");
        assert_eq!(h.s.jobs["j1"].state, JobState::Succeeded);
        assert_eq!(h.s.open_jobs().count(), 0, "a finished workflow closes its job");
        ok(&h.apply(Command::DeleteDatabase {
            job_id: "j2".into(),
            request: None,
            name: "db.acme".into(),
            final_snapshot: None,
        }));
        refused(
            &h.apply(Command::DeleteDatabase {
                job_id: "j3".into(),
                request: None,
                name: "db.acme".into(),
                final_snapshot: None,
            }),
            "busy",
        );
        ok(&h.claim("j2"));
        ok(&h.start("w2", "j2", &[TaskAction::Destroy]));
        h.run("w2", 0);
        ok(&h.finish("w2"));
        assert!(!h.s.databases.contains_key("db.acme"));
        assert!(h.s.instances.is_empty(), "port and slot freed");
        assert!(
            matches!(h.create("db", "j4"), Response::Database { created: true, .. }),
            "name reusable"
        );
    }

    #[test]
    fn a_failure_is_committed_with_its_undo_plan_or_not_at_all() {
        let mut h = created("db", "j1", &CREATE);
        ok(&h.update("w", 0, StepState::Running, 1, None));
        refused(&h.update("w", 0, StepState::Failed, 1, None), "without the plan");
        refused(
            &h.update("w", 0, StepState::Succeeded, 1, Some(vec![])),
            "only with the failure",
        );
        assert_eq!(h.wf("w").tasks[0].state, StepState::Running, "nothing changed");
        ok(&h.update("w", 0, StepState::Failed, 1, Some(vec![Task::default()])));
        let wf = h.wf("w");
        assert_eq!(Phase::of(wf), Phase::Compensating);
        assert_eq!(wf.tasks.len(), 2, "pending forward tasks dropped, one undo task added");
        assert!(wf.tasks[1].compensation && wf.tasks[1].id == "w-undo0");
    }

    #[test]
    fn a_failed_last_task_never_ends_as_success() {
        let mut h = created("db", "j1", &CREATE);
        h.run("w", 0);
        h.run("w", 1);
        ok(&h.fail("w", 2, &[TaskAction::Destroy]));
        refused(&h.finish("w"), "undo task w-undo0 (destroy) is pending");
        h.run("w", 3);
        ok(&h.finish("w"));
        assert_eq!(h.wf("w").state, StepState::Failed);
        let db = &h.s.databases["db.acme"];
        assert_eq!(db.status, DatabaseStatus::Failed);
        assert!(db.status_reason.as_deref().unwrap().starts_with("check failed"));
        assert!(
            db.endpoint.is_none(),
            "no DNS address for a database that does not answer"
        );
        assert!(
            h.s.instances.is_empty(),
            "the undone create gave back its port and slot"
        );
        assert_eq!(h.s.jobs["j1"].state, JobState::Failed);
    }

    #[test]
    fn a_failed_undo_keeps_the_instance_for_a_delete_to_clean_up() {
        let mut h = created("db", "j1", &CREATE);
        ok(&h.fail("w", 0, &[TaskAction::Destroy]));
        ok(&h.update("w", 1, StepState::Running, 1, None));
        ok(&h.update("w", 1, StepState::Failed, 1, None));
        ok(&h.finish("w"));
        let db = &h.s.databases["db.acme"];
        assert_eq!(db.status, DatabaseStatus::Failed);
        assert!(db.status_reason.as_deref().unwrap().contains("undoing it failed too"));
        assert_eq!(
            h.s.instances.len(),
            1,
            "the port stays taken while the volume may exist"
        );
    }

    #[test]
    fn a_failed_modify_rolls_back_to_available() {
        let mut h = created("db", "j1", &CREATE);
        for n in 0..3 {
            h.run("w", n);
        }
        ok(&h.finish("w"));
        ok(&h.apply(Command::ModifyDatabase {
            job_id: "j2".into(),
            request: None,
            name: "db.acme".into(),
            modification: Modification {
                class: Some("large".into()),
                ..Modification::default()
            },
        }));
        ok(&h.claim("j2"));
        ok(&h.start("w2", "j2", &[TaskAction::Restart, TaskAction::Check]));
        h.run("w2", 0);
        ok(&h.fail("w2", 1, &[TaskAction::Restart, TaskAction::Check]));
        h.run("w2", 2);
        h.run("w2", 3);
        ok(&h.finish("w2"));
        let db = &h.s.databases["db.acme"];
        assert_eq!(db.status, DatabaseStatus::Available);
        assert_eq!(db.spec.class, "small", "the old class stays");
        assert!(db.endpoint.is_some());
        let last = h.s.events.back().unwrap();
        assert_eq!(last.kind, "database-modify-rolled-back", "{last:?}");
        assert!(last.message.contains("check failed"), "{}", last.message);
    }

    #[test]
    fn a_plan_that_cannot_be_made_fails_in_the_start_command() {
        let mut h = H::new();
        ok(&h.create("db", "j1"));
        ok(&h.claim("j1"));
        let fence = h.fence;
        ok(&h.apply(Command::StartWorkflow {
            workflow_id: "w".into(),
            job_id: "j1".into(),
            fence,
            tasks: vec![],
            error: Some("no class".into()),
        }));
        assert_eq!(h.wf("w").state, StepState::Failed);
        assert_eq!(h.s.jobs["j1"].state, JobState::Failed);
        assert_eq!(h.s.databases["db.acme"].status, DatabaseStatus::Failed);
    }

    #[test]
    fn stopped_services_cannot_progress_a_workflow_and_newer_ones_resume_it() {
        let mut h = created("db", "j1", &CREATE);
        let old = h.fence;
        ok(&h.update("w", 0, StepState::Running, 1, None));
        h.services(1); // the same term's services restart after a lease lapse
        let late = h.apply(Command::UpdateTask {
            workflow_id: "w".into(),
            index: 0,
            fence: old,
            state: StepState::Failed,
            attempt: 1,
            result: Some("leadership lost".into()),
            undo: Some(vec![]),
            output: None,
        });
        refused(&late, "is stale");
        ok(&h.claim("j1"));
        let resumed = h.start("w-other", "j1", &[]);
        assert!(
            matches!(&resumed, Response::Workflow { workflow } if workflow.id == "w"),
            "the new services resume the same workflow"
        );
        refused(&h.update("w", 1, StepState::Running, 1, None), "ahead of it");
        ok(&h.update("w", 0, StepState::Running, 1, None));
        refused(&h.update("w", 0, StepState::Running, 0, None), "older");
    }

    /// Put task 0 of a fresh create workflow into `state`.
    fn task_in(state: StepState) -> H {
        let mut h = created("db", "j1", &CREATE);
        match state {
            StepState::Pending => {}
            StepState::Running => ok(&h.update("w", 0, StepState::Running, 1, None)),
            StepState::Succeeded => h.run("w", 0),
            StepState::Failed => ok(&h.fail("w", 0, &[TaskAction::Destroy])),
        }
        h
    }

    #[test]
    fn apply_follows_the_task_table_for_every_pair() {
        let states = [
            StepState::Pending,
            StepState::Running,
            StepState::Succeeded,
            StepState::Failed,
        ];
        for from in states {
            for to in states {
                let mut h = task_in(from);
                let undo = (to == StepState::Failed).then(Vec::new);
                let r = h.update("w", 0, to, 2, undo);
                match check(&TASK, from, to) {
                    Ok(()) => ok(&r),
                    Err(why) => refused(&r, why),
                }
            }
        }
    }

    #[test]
    fn a_finished_workflow_takes_no_command() {
        let mut h = created("db", "j1", &CREATE);
        for n in 0..3 {
            h.run("w", n);
        }
        ok(&h.finish("w"));
        refused(&h.finish("w"), "already finished");
        let fence = h.services(2);
        ok(&h.apply(Command::SubmitJob {
            job_id: "j-other".into(),
            request: None,
            kind: JobKind::Noop { work_ms: 0 },
        }));
        refused(
            &h.apply(Command::ClaimJob {
                job_id: "j1".into(),
                fence,
                node_id: 1,
            }),
            "final",
        );
    }
}
