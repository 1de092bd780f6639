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
        let unreachable = |reason: String| PeerError::unreachable(&self.addr, reason);
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
    let failure = |reason: &str| PeerError::unreachable(&addr, reason);
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
                .map_err(|s| PeerError::from_status(&addr, &s)),
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
                            let _ = reply.send(Err(failure("the forward stream closed")));
                            break failure("the forward stream closed");
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
                    Ok(None) => break failure("the forward stream ended"),
                    Err(s) => break PeerError::from_status(&addr, &s),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::echo_server::echo_server;

    #[tokio::test]
    async fn concurrent_calls_each_get_their_own_answer() {
        let (addr, _, peers) = echo_server().await;
        let stream = ForwardStream::spawn(peers, addr);
        let calls: Vec<_> = (0..200u32)
            .map(|i| {
                let stream = stream.clone();
                let data = vec![i as u8, 7];
                tokio::spawn(async move { (data.clone(), stream.call(data, Duration::from_secs(10)).await) })
            })
            .collect();
        for call in calls {
            let (sent, answer) = call.await.unwrap();
            assert_eq!(answer.unwrap(), sent, "a call got another call's answer");
        }
    }

    #[tokio::test]
    async fn a_failed_stream_fails_its_call_and_the_next_call_opens_a_new_one() {
        let (addr, _, peers) = echo_server().await;
        let stream = ForwardStream::spawn(peers, addr);
        assert_eq!(stream.call(vec![1], Duration::from_secs(10)).await.unwrap(), vec![1]);
        let failed = stream.call(vec![255], Duration::from_secs(10)).await;
        assert!(
            matches!(&failed, Err(PeerError::Unreachable { reason, .. }) if reason.contains("poisoned")),
            "{failed:?}"
        );
        assert_eq!(stream.call(vec![2], Duration::from_secs(10)).await.unwrap(), vec![2]);
    }
}
