//! Answering over UDP, with a cache of hickory's own answers.
//!
//! hickory spends tens of µs of CPU on each query (parse, a task, the lookup, encoding);
//! NSD a few. But queries repeat: a query with the same bytes after its 2-byte ID gets the
//! same answer until the zone changes. So the first such query is answered by hickory,
//! through [`ZoneServer`]'s handler exactly as over TCP, and its encoded answer kept; a
//! repeat is answered by copying that answer and writing in the new ID. Queries differing in
//! anything else (name case, flags, EDNS size or options) are different keys, so a cached
//! answer is always byte for byte what hickory would send. Publishing any change empties the
//! cache, and a generation number keeps an answer computed from the old zone out of it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use hickory_proto::op::{Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::Record;
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder};
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::net::NetError;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};
use tokio::net::UdpSocket;

use crate::server::ZoneServer;

/// Answers kept; when full the cache starts over, so queries for ever-new names cannot grow it.
const KEPT: usize = 1 << 16;
/// Longer queries are answered but never cached.
const CACHEABLE_QUERY_BYTES: usize = 512;
/// Largest datagram read (a query is far smaller; a longer one must not be silently cut).
const MAX_DATAGRAM: usize = 65_535;
/// A DNS header.
const HEADER_BYTES: usize = 12;

/// hickory's encoded answers by query bytes after the ID.
#[derive(Default)]
pub(crate) struct AnswerCache {
    inner: RwLock<Answers>,
}

#[derive(Default)]
struct Answers {
    generation: u64,
    by_query: HashMap<Box<[u8]>, Box<[u8]>>,
}

impl AnswerCache {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Answers> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Answers> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The current generation; an answer computed after reading it may be kept only if no
    /// change was published meanwhile.
    pub(crate) fn generation(&self) -> u64 {
        self.read().generation
    }

    /// Forget every answer (the zone changed).
    pub(crate) fn invalidate(&self) {
        let mut answers = self.write();
        answers.generation += 1;
        answers.by_query.clear();
    }

    /// Put the kept answer to `query`, with the query's ID, in `out`.
    fn answer(&self, query: &[u8], out: &mut Vec<u8>) -> bool {
        if query.len() < HEADER_BYTES {
            return false;
        }
        let answers = self.read();
        let Some(answer) = answers.by_query.get(&query[2..]) else {
            return false;
        };
        out.clear();
        out.extend_from_slice(answer);
        out[..2].copy_from_slice(&query[..2]);
        true
    }

    fn keep(&self, generation: u64, query: &[u8], answer: &[u8]) {
        if query.len() > CACHEABLE_QUERY_BYTES || answer.len() < HEADER_BYTES {
            return;
        }
        let mut answers = self.write();
        if answers.generation != generation {
            return;
        }
        if answers.by_query.len() >= KEPT {
            answers.by_query.clear();
        }
        answers.by_query.insert(query[2..].into(), answer.into());
    }
}

/// Answer queries on `socket` until it fails.
pub(crate) async fn serve(socket: UdpSocket, server: ZoneServer) -> std::io::Result<()> {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut out = Vec::with_capacity(4096);
    loop {
        let (len, src) = match socket.recv_from(&mut buf).await {
            Ok(r) => r,
            // An ICMP error from an earlier reply to a client that went away.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
            Err(e) => return Err(e),
        };
        if src.port() == 0 || src.ip().is_unspecified() {
            continue;
        }
        let query = &buf[..len];
        if server.answers.answer(query, &mut out) {
            // A lost reply is the client's to retry, as for any UDP answer.
            let _ = socket.send_to(&out, src).await;
            continue;
        }
        let (socket, server, query) = (socket.clone(), server.clone(), query.to_vec());
        tokio::spawn(async move {
            let generation = server.answers.generation();
            let Some((answer, cacheable)) = resolve(&server, &query, src).await else {
                return;
            };
            let _ = socket.send_to(&answer, src).await;
            if cacheable {
                server.answers.keep(generation, &query, &answer);
            }
        });
    }
}

/// hickory's answer to `query`, and whether it may be kept. `None`: send nothing (too
/// short to have an ID, or itself a response), as hickory's own server does.
async fn resolve(server: &ZoneServer, query: &[u8], src: SocketAddr) -> Option<(Vec<u8>, bool)> {
    let header = Header::read(&mut BinDecoder::new(query)).ok()?;
    if header.message_type == MessageType::Response {
        return None;
    }
    let request = match Request::from_bytes(query.to_vec(), src, Protocol::Udp) {
        Ok(request) => request,
        Err(_) => {
            let queries = Queries::read(&mut BinDecoder::new(&[]), 0).ok()?;
            let response = MessageResponseBuilder::new(&queries, None).error_msg(&header, ResponseCode::FormErr);
            return Some((encode(response), false));
        }
    };
    let cacheable = request.metadata.op_code == OpCode::Query;
    let capture = Capture::default();
    server.handle_request::<_, TokioTime>(&request, capture.clone()).await;
    let answer = capture.0.lock().unwrap_or_else(|p| p.into_inner()).take()?;
    Some((answer, cacheable))
}

/// Encode for UDP as hickory's server does: within the client's EDNS size (512 bytes
/// without EDNS), truncating what does not fit; SERVFAIL if it cannot be encoded.
fn encode<'a>(
    response: MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> Vec<u8> {
    let id = response.metadata().id;
    let max = response.edns().map_or(512, |e| e.max_payload());
    let mut bytes = Vec::with_capacity(512);
    let mut encoder = BinEncoder::new(&mut bytes);
    encoder.set_max_size(max);
    if response.destructive_emit(&mut encoder).is_ok() {
        return bytes;
    }
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let failed = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    bytes.clear();
    // A bare header always encodes.
    let _ = failed.emit(&mut BinEncoder::new(&mut bytes));
    bytes
}

/// A response handler that keeps the encoded answer instead of sending it.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

#[async_trait::async_trait]
impl ResponseHandler for Capture {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        let bytes = encode(response);
        let header = Header::read(&mut BinDecoder::new(&bytes)).map_err(|e| NetError::from(e.to_string()))?;
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(bytes);
        Ok(ResponseInfo::from(header))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_an_answer_with_the_new_id_until_the_zone_changes() {
        let cache = AnswerCache::default();
        let query = |id: u8| [&[0, id][..], &[1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 3, b'a', b'b', b'c', 0]].concat();
        let answer = [&[0, 7][..], &[0x85, 0, 0, 1, 0, 1, 0, 0, 0, 0, 9, 9]].concat();
        let mut out = Vec::new();
        assert!(!cache.answer(&query(7), &mut out));
        let generation = cache.generation();
        cache.keep(generation, &query(7), &answer);
        assert!(cache.answer(&query(42), &mut out));
        assert_eq!(out[..2], [0, 42], "the new query's id");
        assert_eq!(out[2..], answer[2..]);

        cache.invalidate();
        assert!(!cache.answer(&query(42), &mut out), "a change empties the cache");
        cache.keep(generation, &query(7), &answer);
        assert!(
            !cache.answer(&query(42), &mut out),
            "an answer from before the change is not kept"
        );
        assert!(!cache.answer(&[0, 1, 2], &mut out), "shorter than a header");
    }

    /// A query for `name` A with `id`, built by hand.
    fn query_for(name: &str, id: u16) -> Vec<u8> {
        let mut q = id.to_be_bytes().to_vec();
        q.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.') {
            q.push(label.len() as u8);
            q.extend_from_slice(label.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    #[tokio::test]
    async fn the_serving_loop_keeps_what_it_sent_and_resends_it() {
        let server = ZoneServer::new(vec![]);
        let table = crate::EndpointTable {
            serial: 2,
            nameservers: vec![crate::Nameserver {
                id: 1,
                addr: "127.0.0.1".parse().unwrap(),
            }],
            databases: vec![],
        };
        let config = crate::ZoneConfig {
            origin: "db.keel.internal.".into(),
            ttl: 5,
        };
        server.publish(&config, table).await.unwrap();
        let sockets = ZoneServer::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = sockets.local_addr().unwrap();
        let serving = server.clone();
        tokio::spawn(async move { serving.serve(sockets, std::future::pending()).await });

        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let ask = |id: u16| {
            let client = &client;
            async move {
                client
                    .send_to(&query_for("ns1.ns.db.keel.internal", id), addr)
                    .await
                    .unwrap();
                let mut buf = [0u8; 512];
                let n = tokio::time::timeout(std::time::Duration::from_secs(5), client.recv(&mut buf))
                    .await
                    .expect("an answer")
                    .unwrap();
                buf[..n].to_vec()
            }
        };
        let first = ask(1).await;
        assert_eq!(u16::from_be_bytes([first[6], first[7]]), 1, "one answer record");
        // hickory's answer is kept just after it is sent.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let mut kept = Vec::new();
        while !server
            .answers
            .answer(&query_for("ns1.ns.db.keel.internal", 1), &mut kept)
        {
            assert!(std::time::Instant::now() < deadline, "the answer was never kept");
            tokio::task::yield_now().await;
        }
        assert_eq!(kept, first, "kept exactly what was sent");
        let second = ask(2).await;
        assert_eq!(second[..2], [0, 2]);
        assert_eq!(second[2..], first[2..], "the repeat is the same answer");
    }
}
