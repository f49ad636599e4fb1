//! A minimal Kafka client connection on a glommio TCP stream.
//!
//! Requests are framed by `sluice_wire::frame`; a broker answers the requests
//! of one connection in order, so a writer may send up to its in-flight bound
//! ahead while a reader takes answers in the same order. Every read has a
//! timeout and every answer's size is bounded before anything is allocated
//! for it.

use std::time::Duration;

use anyhow::{bail, ensure, Context};
use bytes::Bytes;
use futures_lite::io::{split, AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use glommio::net::TcpStream;
use sluice_wire::frame::{decode_response, encode_request, FRAME_PREFIX_BYTES};
use sluice_wire::kafka::messages::{ApiKey, RequestHeader};
use sluice_wire::kafka::protocol::{Decodable, Encodable, StrBytes};
use sluice_wire::ApiVersion;

/// Largest answer accepted: a fetch answer is bounded by the request's
/// max bytes, far below this.
pub const RESPONSE_BYTES_MAX: usize = 256 << 20;
/// How long any one answer may take. A fetch long-poll waits far less.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The client id sent with every request.
const CLIENT_ID: &str = "sluice-bench";

/// The sending half of a connection.
pub struct Writer {
    inner: WriteHalf<TcpStream>,
    correlation_next: i32,
    addr: String,
}

/// The receiving half of a connection.
pub struct Reader {
    inner: ReadHalf<TcpStream>,
    addr: String,
}

/// A request on its way: what the reader needs to decode its answer.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
}

/// A whole connection, for request-then-answer exchanges.
pub struct Conn {
    pub writer: Writer,
    pub reader: Reader,
}

impl Conn {
    pub async fn connect(addr: &str) -> anyhow::Result<Conn> {
        let stream = glommio::timer::timeout(CONNECT_TIMEOUT, async {
            TcpStream::connect(addr)
                .await
                .map_err(|e| glommio::GlommioError::IoError(std::io::Error::other(e.to_string())))
        })
        .await
        .map_err(|e| anyhow::anyhow!("connecting to {addr}: {e}"))?;
        // glommio's error is not `Sync`, so anyhow keeps its text.
        stream
            .set_nodelay(true)
            .map_err(|e| anyhow::anyhow!("TCP_NODELAY on {addr}: {e}"))?;
        let (r, w) = split(stream);
        Ok(Conn {
            writer: Writer {
                inner: w,
                correlation_next: 0,
                addr: addr.to_string(),
            },
            reader: Reader {
                inner: r,
                addr: addr.to_string(),
            },
        })
    }

    /// Sends one request and waits for its answer.
    pub async fn call<R: Encodable, S: Decodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> anyhow::Result<S> {
        let sent = self.writer.send(api, version, body).await?;
        self.reader.recv(sent).await
    }
}

impl Writer {
    /// Encodes and writes one request; the caller keeps [`Sent`] for the answer.
    pub async fn send<R: Encodable>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &R,
    ) -> anyhow::Result<Sent> {
        let correlation_id = self.correlation_next;
        self.correlation_next = self.correlation_next.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(StrBytes::from_static_str(CLIENT_ID)));
        let frame = encode_request(&header, body)
            .with_context(|| format!("encoding {api:?} v{version}"))?;
        self.inner
            .write_all(&frame)
            .await
            .with_context(|| format!("writing {api:?} to {}", self.addr))?;
        Ok(Sent {
            api,
            version,
            correlation_id,
        })
    }
}

impl Reader {
    /// Reads one whole answer frame, without its size prefix.
    pub async fn frame(&mut self) -> anyhow::Result<Bytes> {
        let addr = self.addr.clone();
        let inner = &mut self.inner;
        let read = async move {
            let mut prefix = [0u8; FRAME_PREFIX_BYTES];
            inner.read_exact(&mut prefix).await?;
            let len = i32::from_be_bytes(prefix);
            if len < 4 || len as usize > RESPONSE_BYTES_MAX {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("answer size {len} outside 4..={RESPONSE_BYTES_MAX}"),
                ));
            }
            let mut body = vec![0u8; len as usize];
            inner.read_exact(&mut body).await?;
            Ok(Bytes::from(body))
        };
        glommio::timer::timeout(RESPONSE_TIMEOUT, async {
            read.await.map_err(glommio::GlommioError::IoError)
        })
        .await
        .map_err(|e| anyhow::anyhow!("reading an answer from {addr}: {e}"))
    }

    /// Reads and decodes the answer to `sent`.
    pub async fn recv<S: Decodable>(&mut self, sent: Sent) -> anyhow::Result<S> {
        let frame = self.frame().await?;
        let (correlation_id, body) =
            decode_response::<S>(sent.api, ApiVersion(sent.version), frame)
                .with_context(|| format!("decoding {:?} v{} answer", sent.api, sent.version))?;
        ensure!(
            correlation_id == sent.correlation_id,
            "answer for correlation id {correlation_id} where {} was due",
            sent.correlation_id
        );
        Ok(body)
    }
}

/// Splits a bootstrap list into addresses.
pub fn bootstrap_list(brokers: &str) -> anyhow::Result<Vec<String>> {
    let list: Vec<String> = brokers
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if list.is_empty() {
        bail!("--brokers names no broker");
    }
    Ok(list)
}
