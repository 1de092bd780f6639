//! DNS NOTIFY (RFC 1996): tell secondaries the zone has a new serial, so they
//! transfer it now instead of at their next refresh.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::{Message, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use tokio::net::UdpSocket;

/// How long to wait for a secondary's acknowledgement, per attempt.
const ACK_WAIT: Duration = Duration::from_millis(500);
/// Attempts per secondary.
const ATTEMPTS: u32 = 3;

/// Send NOTIFY for `origin` to `secondary`; true once it acknowledged.
pub async fn notify(origin: &str, secondary: SocketAddr) -> bool {
    let Ok(zone) = Name::from_ascii(origin) else {
        return false;
    };
    let bind = if secondary.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let Ok(socket) = UdpSocket::bind(bind).await else {
        return false;
    };
    for _ in 0..ATTEMPTS {
        let mut msg = Message::query();
        msg.metadata.op_code = OpCode::Notify;
        msg.metadata.authoritative = true;
        msg.add_query(Query::query(zone.clone(), RecordType::SOA));
        let id = msg.metadata.id;
        let Ok(bytes) = msg.to_vec() else {
            return false;
        };
        if socket.send_to(&bytes, secondary).await.is_err() {
            continue;
        }
        let mut buf = [0u8; 512];
        if let Ok(Ok((n, from))) = tokio::time::timeout(ACK_WAIT, socket.recv_from(&mut buf)).await {
            if from == secondary && Message::from_vec(&buf[..n]).is_ok_and(|m| m.metadata.id == id) {
                return true;
            }
        }
    }
    tracing::warn!(%secondary, zone = origin, "A secondary did not acknowledge NOTIFY; it will catch up at its next refresh.");
    false
}
