//! A follower's end of the `Forward` stream: write batches to one leader.
//!
//! One task owns the stream. Batches go out as they come (the batcher bounds how
//! many are in flight), and the leader answers them in the order sent, so each
//! answer goes to the oldest caller still waiting. If the stream fails, every
//! waiting caller gets the failure (its batch may or may not have committed, as
//! with any lost reply; writes carry request ids for that), and the next batch
//! opens a new stream.

use std::collections::VecDeque;
use std::time::Duration;

use keel_proto::raft::Payload;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::peer::{PeerError, Peers};

type Reply = oneshot::Sender<Result<Vec<u8>, PeerError>>;

/// Forwarded calls to the node at one address.
#[derive(Clone)]
pub struct ForwardStream {
    calls: mpsc::UnboundedSender<(Vec<u8>, Reply)>,
    addr: String,
}

impl ForwardStream {
    /// Start the task that forwards to the node at `addr`; it ends when every handle is dropped.
    pub fn spawn(peers: Peers, addr: String) -> Self {
        let (calls, queued) = mpsc::unbounded_channel();
        tokio::spawn(run(peers, addr.clone(), queued));
        Self { calls, addr }
    }

    /// The address forwarded to.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Send `data` and wait at most `timeout` for the answer.
    pub async fn call(&self, data: Vec<u8>, timeout: Duration) -> Result<Vec<u8>, PeerError> {
        let unreachable = |reason: String| PeerError::Unreachable {
            addr: self.addr.clone(),
            reason,
        };
        let (reply, answer) = oneshot::channel();
        self.calls
            .send((data, reply))
            .map_err(|_| unreachable("this node is shutting down".into()))?;
        // A late answer still arrives in order and goes to the dropped receiver.
        match tokio::time::timeout(timeout, answer).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(unreachable("the forwarding task stopped".into())),
            Err(_) => Err(unreachable(format!("no answer within {timeout:?}"))),
        }
    }
}

async fn run(peers: Peers, addr: String, mut queued: mpsc::UnboundedReceiver<(Vec<u8>, Reply)>) {
    let failure = |reason: String| PeerError::Unreachable {
        addr: addr.clone(),
        reason,
    };
    // One pass per stream: opened for the first call after the previous one failed.
    while let Some((data, reply)) = queued.recv().await {
        let (outgoing, requests) = mpsc::unbounded_channel();
        let mut waiting: VecDeque<Reply> = VecDeque::new();
        let _ = outgoing.send(Payload { data });
        waiting.push_back(reply);
        let opened = match peers.client(&addr) {
            Ok(mut client) => client
                .forward(peers.stream_request(UnboundedReceiverStream::new(requests)))
                .await
                .map_err(|s| failure(format!("{}: {}", s.code(), s.message()))),
            Err(e) => Err(e),
        };
        let mut answers = match opened {
            Ok(response) => response.into_inner(),
            Err(e) => {
                fail_all(&mut waiting, &e);
                continue;
            }
        };
        let ended = loop {
            tokio::select! {
                call = queued.recv() => match call {
                    Some((data, reply)) => {
                        if outgoing.send(Payload { data }).is_err() {
                            let _ = reply.send(Err(failure("the forward stream closed".into())));
                            break failure("the forward stream closed".into());
                        }
                        waiting.push_back(reply);
                    }
                    None => return,
                },
                answer = answers.message() => match answer {
                    Ok(Some(payload)) => {
                        if let Some(reply) = waiting.pop_front() {
                            let _ = reply.send(Ok(payload.data));
                        }
                    }
                    Ok(None) => break failure("the forward stream ended".into()),
                    Err(s) => break failure(format!("{}: {}", s.code(), s.message())),
                },
            }
        };
        fail_all(&mut waiting, &ended);
    }
}

fn fail_all(waiting: &mut VecDeque<Reply>, error: &PeerError) {
    for reply in waiting.drain(..) {
        let _ = reply.send(Err(error.clone()));
    }
}
