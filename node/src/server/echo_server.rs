//! A test-only Raft transport server that echoes what it is sent (for the stream tests).

use std::sync::Arc;

use keel_proto::raft::raft_server::{Raft as RaftRpc, RaftServer};
use keel_proto::raft::{Payload, ReadIndexRequest, StatusRequest};
use tokio::sync::Notify;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

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

/// Start an echo server; returns its address and the notify that releases held answers.
pub(crate) async fn echo_server() -> (String, Arc<Notify>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let release = Arc::new(Notify::new());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RaftServer::new(Echo {
                release: release.clone(),
            }))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    (addr, release)
}
