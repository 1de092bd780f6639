//! A test-only Raft transport server that echoes what it is sent (for the stream tests).

use std::sync::Arc;

use keel_proto::raft::raft_server::{Raft as RaftRpc, RaftServer};
use keel_proto::raft::{Payload, ReadIndexRequest, StatusRequest};
use tokio::sync::Notify;
use tonic::{Request, Response, Status, Streaming};

use crate::server::peer::Peers;
use crate::server::raft_service::{answer_in_order, Answers};

/// Answers each payload with itself, through the server's real stream handling.
/// Forwarded requests finish out of order (they yield a different number of times); a
/// payload starting with 255 fails the stream. A replicated payload starting with 254 is
/// answered only once `release` is notified.
struct Echo {
    release: Arc<Notify>,
}

#[tonic::async_trait]
impl RaftRpc for Echo {
    type ReplicateStream = Answers;
    type ForwardStream = Answers;

    async fn forward(&self, req: Request<Streaming<Payload>>) -> Result<Response<Answers>, Status> {
        Ok(Response::new(answer_in_order(req.into_inner(), 8, |data| async move {
            for _ in 0..(7 - data[0] % 8) {
                tokio::task::yield_now().await;
            }
            if data[0] == 255 {
                return Err(Status::internal("poisoned"));
            }
            Ok(data)
        })))
    }

    async fn replicate(&self, req: Request<Streaming<Payload>>) -> Result<Response<Answers>, Status> {
        let release = self.release.clone();
        Ok(Response::new(answer_in_order(req.into_inner(), 1, move |data| {
            let release = release.clone();
            async move {
                if data[0] == 254 {
                    release.notified().await;
                }
                Ok(data)
            }
        })))
    }
    async fn append_entries(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn vote(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn install_snapshot(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn change_membership(&self, _: Request<Payload>) -> Result<Response<Payload>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn read_index(&self, _: Request<ReadIndexRequest>) -> Result<Response<Payload>, Status> {
        Err(Status::unimplemented("test"))
    }
    async fn status(&self, _: Request<StatusRequest>) -> Result<Response<Payload>, Status> {
        Err(Status::unimplemented("test"))
    }
}

/// An echo server over mutual TLS: its address, the notify that releases held answers, and
/// the peers (with a control node's certificate of the same CA) to call it with.
pub(crate) async fn echo_server() -> (String, Arc<Notify>, Peers) {
    use crate::tls::{identity::Identity, link, testing};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let release = Arc::new(Notify::new());
    let (dir, creds) = testing::credentials("test", Identity::node("test", 1));
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServer::new(Echo {
                release: release.clone(),
            }))
            .serve_with_incoming(link::incoming(
                listener,
                link::server_config(&creds, link::Peer::ControlNode),
            )),
    );
    // The files are loaded; the directory may go.
    drop(dir);
    let peers = Peers::new("test", link::client_config(&creds, link::Peer::ControlNode));
    (addr, release, peers)
}
