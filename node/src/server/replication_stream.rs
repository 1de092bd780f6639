//! The leader's end of one `Replicate` stream: AppendEntries to one follower.
//!
//! openraft's replication to a follower has one AppendEntries in flight at a time,
//! so a request and the next answer on the stream belong together. A stream that
//! failed, or whose exchange was abandoned before its answer came (openraft drops
//! the call when its own timeout, the heartbeat interval, passes), is dropped: a
//! late answer would otherwise be read as the next request's, and a follower would
//! be counted as holding entries it has not yet made durable. The next request
//! opens a new stream.

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

/// Send `data` on `stream` (opening it first if there is none) and return the answer.
/// The stream is taken out for the exchange and put back only after a good answer, so a
/// failed exchange, or one abandoned before its answer came (the future dropped), drops it.
///
/// No timeout of its own: openraft bounds every AppendEntries. Its timeout is reported as
/// a timeout, so a follower slowed by its disk is retried at once; a timeout here would be
/// "unreachable", which makes openraft pause replication to that follower, and under a
/// slow disk those pauses stalled every write.
pub async fn exchange(
    stream: &mut Option<ReplicationStream>,
    peers: &Peers,
    addr: &str,
    data: Vec<u8>,
) -> Result<Vec<u8>, PeerError> {
    let mut open = match stream.take() {
        Some(open) => open,
        None => ReplicationStream::open(peers, addr).await?,
    };
    let answer = open.exchange(addr, data).await?;
    *stream = Some(open);
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::server::echo_server::echo_server;

    #[tokio::test]
    async fn an_abandoned_exchange_is_never_answered_by_the_next_ones_reply() {
        let (addr, release, peers) = echo_server().await;
        let mut stream = None;
        assert_eq!(exchange(&mut stream, &peers, &addr, vec![1]).await.unwrap(), vec![1]);
        // The server holds this answer, so the caller gives up first, as openraft does when
        // its timeout passes.
        let abandoned = tokio::time::timeout(
            Duration::from_millis(100),
            exchange(&mut stream, &peers, &addr, vec![254]),
        );
        assert!(abandoned.await.is_err(), "the held request was answered");
        release.notify_one();
        assert_eq!(
            exchange(&mut stream, &peers, &addr, vec![2]).await.unwrap(),
            vec![2],
            "the late answer to the abandoned request was taken for this one's"
        );
    }
}
