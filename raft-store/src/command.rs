//! The one way the admin store changes: a [`Proposal`] carrying a [`Command`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::records::{ClusterConfig, Host, Job, JobKind, Millis};

/// A command as proposed: the proposer stamps the time so apply never reads a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Proposer's wall clock, milliseconds since the Unix epoch.
    pub at_ms: Millis,
    /// What to change.
    pub command: Command,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.command.name(), self.at_ms)
    }
}

/// Every state transition of the admin store, one verb-noun variant each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Command {
    /// Record the cluster's configuration (the first write of a new cluster).
    InitCluster {
        /// Cluster name.
        name: String,
    },
    /// Register a data host; idempotent by name and by client token.
    AddHost {
        /// Unique host name.
        name: String,
        /// host:port of its host manager.
        addr: String,
        /// Zone.
        zone: String,
        /// Operator labels.
        #[serde(default)]
        labels: BTreeMap<String, String>,
        /// Client token for retries.
        #[serde(default)]
        client_token: Option<String>,
    },
    /// Deregister a data host; idempotent by request id.
    RemoveHost {
        /// Host name.
        name: String,
        /// Request id stamped by the proposer, so a retried removal is a repeat.
        #[serde(default)]
        request_id: Option<String>,
    },
    /// Put a job on the queue; idempotent by request id.
    SubmitJob {
        /// Id stamped by the proposer.
        job_id: String,
        /// Client request id.
        #[serde(default)]
        request_id: Option<String>,
        /// What to do.
        kind: JobKind,
    },
    /// A leader claims a job for its term.
    ClaimJob {
        /// Job id.
        job_id: String,
        /// Claiming leader's term.
        term: u64,
        /// Claiming leader.
        node_id: u64,
    },
    /// A leader finishes a job it claimed.
    CompleteJob {
        /// Job id.
        job_id: String,
        /// Term of the claim.
        term: u64,
        /// `None` for success, or the reason it failed.
        #[serde(default)]
        error: Option<String>,
    },
    /// A new leader announces it runs the leader services.
    StartLeaderServices {
        /// The leader.
        node_id: u64,
        /// Its term.
        term: u64,
    },
}

impl Command {
    /// Short name for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Command::InitCluster { .. } => "init-cluster",
            Command::AddHost { .. } => "add-host",
            Command::RemoveHost { .. } => "remove-host",
            Command::SubmitJob { .. } => "submit-job",
            Command::ClaimJob { .. } => "claim-job",
            Command::CompleteJob { .. } => "complete-job",
            Command::StartLeaderServices { .. } => "start-leader-services",
        }
    }
}

/// The result of applying a command. Rejections are values, not errors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Response {
    /// Nothing to report (blank and membership entries).
    Done,
    /// The cluster configuration in force.
    Cluster {
        /// The configuration.
        config: ClusterConfig,
    },
    /// A host, and whether this command created it.
    Host {
        /// The host.
        host: Host,
        /// False for an idempotent repeat.
        created: bool,
    },
    /// A host was removed.
    HostRemoved {
        /// The host as it was.
        host: Host,
    },
    /// A job, and whether this command created it.
    Job {
        /// The job as it now is.
        job: Job,
        /// False for an idempotent repeat.
        created: bool,
    },
    /// The command was refused; nothing changed.
    Rejected {
        /// Why.
        rejection: Rejection,
    },
}

/// Why a command was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Rejection {
    /// The named thing does not exist.
    #[error("{kind} {name:?} does not exist")]
    NotFound {
        /// What kind of thing.
        kind: String,
        /// Its name or id.
        name: String,
    },
    /// It conflicts with what exists.
    #[error("{message}")]
    Conflict {
        /// A sentence saying what conflicts and what to do.
        message: String,
    },
    /// A claim or completion from an older term than the one in force.
    #[error("job {job_id} is held by term {current_term}; term {given_term} is stale")]
    StaleTerm {
        /// The job.
        job_id: String,
        /// Term in force.
        current_term: u64,
        /// Term the command carried.
        given_term: u64,
    },
}
