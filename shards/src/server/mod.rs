//! The Kafka listener of one shard: accepting connections and serving
//! requests on them, one at a time per connection as Kafka does.
//!
//! Every shard binds the same address with SO_REUSEPORT, so the kernel spreads
//! connections over shards; any shard serves any request, forwarding the parts
//! that concern partitions it does not own (see `handlers`).

pub mod error_codes;
pub mod handlers;

use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::sync::Semaphore;
use sluice_wire::frame::{self, FRAME_PREFIX_BYTES};

use crate::join::select_first;
use crate::shard::Shard;

/// Bytes read from a socket per step while a large frame arrives, so memory
/// grows with the bytes that actually came rather than with the size prefix.
const FRAME_READ_STEP_BYTES: usize = 1 << 20;
/// Pause after a failed accept (for example, out of file descriptors).
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);
/// How long shutdown waits for open connections to finish their request.
pub const SHUTDOWN_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until the shard stops; returns the connection slots so
/// shutdown can wait for open connections to finish.
pub async fn serve(shard: Rc<Shard>, listener: TcpListener, slots: Rc<Semaphore>) {
    loop {
        let permit = match slots.acquire_static_permit(1).await {
            Ok(p) => p,
            Err(_) => return,
        };
        let accepted = select_first(vec![
            Box::pin(async { Some(listener.accept().await) }),
            Box::pin(async {
                shard.stopping.changed_since(0).await;
                None
            }),
        ])
        .await
        .flatten();
        match accepted {
            Some(Ok(stream)) => {
                let shard = shard.clone();
                // Owned by this accept loop through `slots`: shutdown waits for
                // every permit to come back.
                glommio::spawn_local(async move {
                    serve_connection(&shard, stream).await;
                    drop(permit);
                })
                .detach();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(ACCEPT_RETRY_DELAY).await;
            }
            None => return,
        }
    }
}

#[derive(Debug)]
enum Closed {
    Eof,
    Stopping,
    Io(std::io::Error),
}

async fn read_exact_or_stop(
    shard: &Shard,
    stream: &mut TcpStream,
    buf: &mut [u8],
) -> Result<(), Closed> {
    let outcome = select_first(vec![
        Box::pin(async { Some(stream.read_exact(buf).await) }),
        Box::pin(async {
            shard.stopping.changed_since(0).await;
            None
        }),
    ])
    .await
    .flatten();
    match outcome {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(Closed::Eof),
        Some(Err(e)) => Err(Closed::Io(e)),
        None => Err(Closed::Stopping),
    }
}

async fn read_frame(
    shard: &Shard,
    stream: &mut TcpStream,
) -> Result<Result<Bytes, sluice_wire::DecodeError>, Closed> {
    let mut prefix = [0u8; FRAME_PREFIX_BYTES];
    read_exact_or_stop(shard, stream, &mut prefix).await?;
    let len = match frame::frame_len(prefix, shard.config.socket_request_max_bytes) {
        Ok(len) => len,
        Err(e) => return Ok(Err(e)),
    };
    let mut body = Vec::with_capacity(len.min(FRAME_READ_STEP_BYTES));
    while body.len() < len {
        let start = body.len();
        let step = (len - start).min(FRAME_READ_STEP_BYTES);
        body.resize(start + step, 0);
        read_exact_or_stop(shard, stream, &mut body[start..]).await?;
    }
    Ok(Ok(Bytes::from(body)))
}

async fn serve_connection(shard: &Rc<Shard>, mut stream: TcpStream) {
    let peer_addr = stream.peer_addr().ok();
    let peer = peer_addr
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into());
    let peer_host = peer_addr.map(|a| a.ip().to_string()).unwrap_or_default();
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%peer, error = %e, "TCP_NODELAY refused");
    }
    if let Err(e) = stream.set_read_timeout(Some(shard.config.connections_max_idle())) {
        tracing::debug!(%peer, error = %e, "read timeout refused");
    }
    tracing::debug!(%peer, shard = shard.id.0, "connection accepted");
    loop {
        let frame_bytes = match read_frame(shard, &mut stream).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad frame");
                break;
            }
            Err(Closed::Eof) | Err(Closed::Stopping) => break,
            Err(Closed::Io(e)) => {
                tracing::debug!(%peer, error = %e, "connection read failed");
                break;
            }
        };
        let request = match frame::decode_request(frame_bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%peer, error = %e, "closing connection: bad request header");
                break;
            }
        };
        let api = request.api_key;
        let version = request.api_version.0;
        match handlers::dispatch(shard, request, &peer_host).await {
            Ok(Some(response)) => {
                // Chunks go out one after another: a fetched record set is
                // written from the bytes the log returned, never copied.
                let mut failed = None;
                for chunk in &response.chunks {
                    if let Err(e) = stream.write_all(chunk).await {
                        failed = Some(e);
                        break;
                    }
                }
                if let Some(e) = failed {
                    tracing::debug!(%peer, error = %e, "connection write failed");
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(%peer, ?api, version, error = %e, "closing connection");
                break;
            }
        }
    }
    if let Err(e) = stream.close().await {
        tracing::debug!(%peer, error = %e, "closing socket failed");
    }
}
