//! The leader's end of one `Replicate` stream: AppendEntries to one follower.
//!
//! openraft's replication to a follower has one AppendEntries in flight at a time,
//! so a request and the next answer on the stream belong together. A stream that
//! failed or timed out is dropped (a late answer would otherwise be read as the
//! next request's), and the next request opens a new one.

use std::time::Duration;

use keel_proto::raft::Payload;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Streaming;

use super::peer::{PeerError, Peers};

/// One open stream to a follower.
pub struct ReplicationStream {
    requests: mpsc::Sender<Payload>,
    /// openraft needs the connection to be `Sync` and `Streaming` is not; only ever
    /// reached through `&mut` (`get_mut`), so the lock is never taken.
    answers: std::sync::Mutex<Streaming<Payload>>,
}

impl ReplicationStream {
    /// Open a stream to the node at `addr`.
    async fn open(peers: &Peers, addr: &str) -> Result<Self, PeerError> {
        // One slot: the sender waits for its answer before sending again.
        let (requests, outgoing) = mpsc::channel(1);
        let mut client = peers.client(addr)?;
        let answers = client
            .replicate(peers.stream_request(ReceiverStream::new(outgoing)))
            .await
            .map_err(|s| PeerError::from_status(addr, &s))?
            .into_inner();
        Ok(Self {
            requests,
            answers: std::sync::Mutex::new(answers),
        })
    }

    async fn exchange(&mut self, addr: &str, data: Vec<u8>) -> Result<Vec<u8>, PeerError> {
        self.requests
            .send(Payload { data })
            .await
            .map_err(|_| PeerError::unreachable(addr, "the replication stream closed"))?;
        let answers = self.answers.get_mut().unwrap_or_else(|p| p.into_inner());
        match answers.message().await {
            Ok(Some(answer)) => Ok(answer.data),
            Ok(None) => Err(PeerError::unreachable(addr, "the replication stream ended")),
            Err(s) => Err(PeerError::from_status(addr, &s)),
        }
    }
}

/// Send `data` on `stream` (opening it first if there is none) and return the answer,
/// within `timeout`; on any failure the stream is dropped.
pub async fn exchange(
    stream: &mut Option<ReplicationStream>,
    peers: &Peers,
    addr: &str,
    data: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, PeerError> {
    let answer = tokio::time::timeout(timeout, async {
        let open = match stream {
            Some(open) => open,
            None => stream.insert(ReplicationStream::open(peers, addr).await?),
        };
        open.exchange(addr, data).await
    })
    .await
    .unwrap_or_else(|_| Err(PeerError::unreachable(addr, format!("no answer within {timeout:?}"))));
    if answer.is_err() {
        *stream = None;
    }
    answer
}
