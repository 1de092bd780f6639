//! Natural batching of writes: proposals that arrive while earlier batches are
//! in flight travel together in the next one.
//!
//! A lone write goes out at once (no added latency); under load, each Raft
//! entry or forwarded call carries many proposals, so the per-message costs
//! (log write, replication message, fsync, RPC) are paid once per batch.

use std::future::Future;
use std::sync::Arc;

use keel_raft_store::{Proposal, Response};
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::peer::RemoteFailure;

/// Most proposals in one batch (bounds entry size and apply time).
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Response, RemoteFailure>>;

/// A queue in front of one way of committing a batch (here, or one remote leader).
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<(Proposal, Reply)>,
}

impl Batcher {
    /// Start a batcher that commits with `commit`, at most `in_flight` batches at a time.
    pub fn spawn<F, Fut>(in_flight: usize, commit: F) -> Self
    where
        F: Fn(Vec<Proposal>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<Response>, RemoteFailure>> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::unbounded_channel::<(Proposal, Reply)>();
        let slots = Arc::new(Semaphore::new(in_flight.max(1)));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                // Waiting for a free slot is what lets a batch fill up.
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(item) => batch.push(item),
                        Err(_) => break,
                    }
                }
                let (proposals, replies): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
                let committed = commit(proposals);
                tokio::spawn(async move {
                    let _slot = slot;
                    match committed.await {
                        Ok(responses) if responses.len() == replies.len() => {
                            for (reply, response) in replies.into_iter().zip(responses) {
                                let _ = reply.send(Ok(response));
                            }
                        }
                        Ok(responses) => {
                            let failure = RemoteFailure::Failed {
                                message: format!(
                                    "the leader answered {} results for a batch of {}; this is a bug",
                                    responses.len(),
                                    replies.len()
                                ),
                                retryable: false,
                            };
                            for reply in replies {
                                let _ = reply.send(Err(failure.clone()));
                            }
                        }
                        Err(failure) => {
                            for reply in replies {
                                let _ = reply.send(Err(failure.clone()));
                            }
                        }
                    }
                });
            }
        });
        Self { tx }
    }

    /// Commit `proposal` in the next batch and return what apply answered for it.
    pub async fn submit(&self, proposal: Proposal) -> Result<Response, RemoteFailure> {
        let (reply, answer) = oneshot::channel();
        let stopped = || RemoteFailure::Failed {
            message: "this node is shutting down".into(),
            retryable: true,
        };
        self.tx.send((proposal, reply)).map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use keel_raft_store::{Command, Rejection};

    use super::*;

    fn proposal(i: u64) -> Proposal {
        let command = Command::InitCluster {
            name: format!("c{i}"),
            admin_token: None,
        };
        Proposal::new(i, command)
    }

    #[tokio::test]
    async fn concurrent_writes_share_batches_and_each_gets_its_own_answer() {
        let commits = Arc::new(AtomicUsize::new(0));
        let counted = commits.clone();
        let batcher = Batcher::spawn(1, move |proposals: Vec<Proposal>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::task::yield_now().await;
                Ok(proposals
                    .iter()
                    .map(|p| Response::Rejected {
                        rejection: Rejection::Conflict {
                            message: p.at_ms.to_string(),
                        },
                    })
                    .collect())
            }
        });
        let calls: Vec<_> = (0..200u64)
            .map(|i| {
                let b = batcher.clone();
                tokio::spawn(async move { (i, b.submit(proposal(i)).await) })
            })
            .collect();
        for call in calls {
            let (i, answer) = call.await.unwrap();
            match answer {
                Ok(Response::Rejected {
                    rejection: Rejection::Conflict { message },
                }) => assert_eq!(message, i.to_string(), "write {i} got another write's answer"),
                other => panic!("write {i} got {other:?}"),
            }
        }
        let n = commits.load(Ordering::SeqCst);
        assert!(n < 200, "200 concurrent writes took {n} commits; they were not batched");
    }

    #[tokio::test]
    async fn a_failed_batch_fails_every_write_in_it() {
        let batcher = Batcher::spawn(1, |_proposals: Vec<Proposal>| async {
            Err(RemoteFailure::NotLeader { leader: None })
        });
        let answer = batcher.submit(proposal(1)).await;
        assert!(
            matches!(answer, Err(RemoteFailure::NotLeader { leader: None })),
            "{answer:?}"
        );
    }
}
