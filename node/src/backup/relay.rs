//! For a database whose commits wait for the archive (`--backup-rpo zero`): a relay on a
//! private socket between `pg_receivewal` and the engine. The engine lists the archive
//! as its synchronous standby, and a synchronous standby's commits are released by the
//! flush position it reports; the relay passes everything through but lowers that
//! position to what is already stored in the zone's store. So no commit is acknowledged
//! before its WAL is in the archive's first tier.
//!
//! Only the client's messages are parsed (the startup packet, then typed frames); a
//! standby status update (`CopyData` holding `r`) has its flush and apply positions
//! capped, and a new one is sent whenever the uploader stores more. The engine's
//! messages go through untouched.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The archive's name as a synchronous standby (`synchronous_standby_names`).
pub const STANDBY_NAME: &str = "keel_archive";

/// Startup codes that come before the real startup packet (answered by the engine).
const SSL_REQUEST: i32 = 80_877_103;
const GSSENC_REQUEST: i32 = 80_877_104;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_US: u64 = 946_684_800_000_000;

/// A relay listening on `dir/.s.PGSQL.<port>` (so `host=dir port=<port>` reaches it)
/// for the engine listening at `engine_dir/.s.PGSQL.<port>`.
pub struct Relay {
    /// What `pg_receivewal` reports flushed (its spool holds WAL up to here).
    pub received: watch::Receiver<u64>,
}

impl Relay {
    /// Bind and serve until `stop`; `uploaded` says how far the store holds the WAL.
    pub fn start(
        dir: &Path,
        engine_dir: &Path,
        port: u16,
        uploaded: watch::Receiver<u64>,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        let socket = dir.join(format!(".s.PGSQL.{port}"));
        let _ = std::fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket)?;
        // The directory is the engine user's alone; the socket must let that user in.
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
        let upstream = engine_dir.join(format!(".s.PGSQL.{port}"));
        let (received_tx, received) = watch::channel(0);
        tokio::spawn(async move {
            loop {
                let client = tokio::select! {
                    _ = stop.cancelled() => break,
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => client,
                        Err(e) => {
                            tracing::warn!(error = %e, "The archive relay could not accept a connection.");
                            continue;
                        }
                    },
                };
                let (upstream, uploaded, received_tx, stop) =
                    (upstream.clone(), uploaded.clone(), received_tx.clone(), stop.clone());
                tokio::spawn(async move {
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        r = relay(client, &upstream, uploaded, received_tx) => {
                            if let Err(e) = r {
                                tracing::debug!(error = %e, "An archive relay connection ended.");
                            }
                        }
                    }
                });
            }
            let _ = std::fs::remove_file(&socket);
        });
        Ok(Self { received })
    }
}

/// The positions of a standby status update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Status {
    write: u64,
    flush: u64,
    apply: u64,
}

/// A standby status update body (`r`), with flush and apply capped at `stored`.
fn status_update(s: Status, stored: u64, clock_us: u64, reply: bool) -> Vec<u8> {
    let mut body = Vec::with_capacity(34);
    body.push(b'r');
    body.extend_from_slice(&s.write.to_be_bytes());
    body.extend_from_slice(&s.flush.min(stored).to_be_bytes());
    body.extend_from_slice(&s.apply.min(stored).to_be_bytes());
    body.extend_from_slice(&clock_us.to_be_bytes());
    body.push(u8::from(reply));
    body
}

/// The positions in a `CopyData` body, if it is a standby status update.
fn parse_status(body: &[u8]) -> Option<(Status, u64, bool)> {
    if body.len() < 34 || body[0] != b'r' {
        return None;
    }
    let at = |i: usize| u64::from_be_bytes(body[i..i + 8].try_into().expect("8 bytes"));
    Some((
        Status {
            write: at(1),
            flush: at(9),
            apply: at(17),
        },
        at(25),
        body[33] != 0,
    ))
}

fn pg_clock_us() -> u64 {
    let unix_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    unix_us.saturating_sub(PG_EPOCH_US)
}

async fn write_frame(w: &mut (impl AsyncWriteExt + Unpin), tag: u8, body: &[u8]) -> std::io::Result<()> {
    let mut frame = Vec::with_capacity(body.len() + 5);
    frame.push(tag);
    frame.extend_from_slice(&(body.len() as i32 + 4).to_be_bytes());
    frame.extend_from_slice(body);
    w.write_all(&frame).await
}

async fn relay(
    client: UnixStream,
    upstream: &PathBuf,
    mut uploaded: watch::Receiver<u64>,
    received: watch::Sender<u64>,
) -> std::io::Result<()> {
    let engine = UnixStream::connect(upstream).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut er, mut ew) = engine.into_split();
    let down = tokio::spawn(async move { tokio::io::copy(&mut er, &mut cw).await });
    // The startup packet (after any encryption requests, which the engine refuses).
    loop {
        let len = cr.read_i32().await?;
        if !(8..=10_000).contains(&len) {
            return Err(std::io::Error::other(format!("startup packet of {len} bytes")));
        }
        let mut rest = vec![0; len as usize - 4];
        cr.read_exact(&mut rest).await?;
        ew.write_all(&len.to_be_bytes()).await?;
        ew.write_all(&rest).await?;
        let code = i32::from_be_bytes(rest[..4].try_into().expect("4 bytes"));
        if code != SSL_REQUEST && code != GSSENC_REQUEST {
            break;
        }
    }
    let mut last: Option<Status> = None;
    loop {
        tokio::select! {
            tag = cr.read_u8() => {
                let Ok(tag) = tag else { break };
                let len = cr.read_i32().await?;
                if len < 4 {
                    return Err(std::io::Error::other(format!("a frame of {len} bytes")));
                }
                let mut body = vec![0; len as usize - 4];
                cr.read_exact(&mut body).await?;
                if let (b'd', Some((status, clock, reply))) = (tag, parse_status(&body)) {
                    received.send_if_modified(|r| {
                        let moved = status.flush > *r;
                        *r = (*r).max(status.flush);
                        moved
                    });
                    last = Some(status);
                    body = status_update(status, *uploaded.borrow_and_update(), clock, reply);
                }
                write_frame(&mut ew, tag, &body).await?;
            }
            changed = uploaded.changed() => {
                if changed.is_err() {
                    break;
                }
                if let Some(status) = last {
                    let stored = *uploaded.borrow_and_update();
                    write_frame(&mut ew, b'd', &status_update(status, stored, pg_clock_us(), false)).await?;
                }
            }
        }
    }
    down.abort();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_updates_round_trip_and_are_capped_at_what_is_stored() {
        let s = Status {
            write: 0x300_0100,
            flush: 0x300_0100,
            apply: 0x300_0080,
        };
        let body = status_update(s, u64::MAX, 42, true);
        assert_eq!(body.len(), 34);
        assert_eq!(parse_status(&body), Some((s, 42, true)));
        let capped = status_update(s, 0x300_0000, 43, false);
        let (c, clock, reply) = parse_status(&capped).unwrap();
        assert_eq!(
            (c.write, c.flush, c.apply, clock, reply),
            (0x300_0100, 0x300_0000, 0x300_0000, 43, false)
        );
        assert_eq!(parse_status(b"k12345"), None, "a keepalive is not a status update");
    }
}
