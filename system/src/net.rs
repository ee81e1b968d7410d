//! Transport plumbing shared by every role: a flush-only-when-written stream wrapper, a hyper
//! timer built on the runtime's clock, an HTTP/1.1 accept loop, and a one-shot HTTP client.
//!
//! Everything here uses `tokio` as the workspace names it, so it is madsim's simulated TCP and
//! time under `--cfg madsim` and real tokio otherwise. Every connection of the system goes
//! through [`FlushIfDirty`], which under the simulator also applies the link faults of
//! [`crate::env::link`] (latency, jitter and loss per link) to what it reads. Not provided:
//! TLS, HTTP/2, connection pooling in the HTTP client.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How long a server waits for a request head before closing the connection.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The link faults a connection's reads go through: the simulator's, or nothing at all.
#[cfg(madsim)]
type ReadLink = Option<crate::env::link::DelayedReads>;
#[cfg(not(madsim))]
type ReadLink = ();

pin_project_lite::pin_project! {
    /// Forwards `poll_flush` only after a non-empty write. The simulated stream sends even an
    /// empty buffer on flush and fails once the peer is gone, which turns every clean close into
    /// a reset; real sockets lose nothing by skipping an empty flush.
    ///
    /// Under the simulator it also holds back what it reads as the faults on the link from
    /// the peer allow ([`crate::env::link`]); under the real runtime reads go straight through.
    #[derive(Debug)]
    pub struct FlushIfDirty<S> {
        #[pin]
        inner: S,
        dirty: bool,
        link: ReadLink,
    }
}

/// A stream that knows which link it reads from: the peer's address and its own.
pub trait LinkEnds {
    /// `(peer, local)` addresses, if the stream knows them.
    fn link_ends(&self) -> Option<(SocketAddr, SocketAddr)>;
}

impl LinkEnds for TcpStream {
    fn link_ends(&self) -> Option<(SocketAddr, SocketAddr)> {
        Some((self.peer_addr().ok()?, self.local_addr().ok()?))
    }
}

impl<S: LinkEnds> FlushIfDirty<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        #[cfg(madsim)]
        let link = inner
            .link_ends()
            .map(|(peer, local)| crate::env::link::DelayedReads::new(peer.ip(), local.ip()));
        #[cfg(not(madsim))]
        let link = ();
        Self {
            inner,
            dirty: false,
            link,
        }
    }
}

impl<S: AsyncRead> AsyncRead for FlushIfDirty<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        #[cfg(madsim)]
        if let Some(link) = this.link {
            return link.poll_read(this.inner, cx, buf);
        }
        this.inner.poll_read(cx, buf)
    }
}

impl<S: AsyncWrite> AsyncWrite for FlushIfDirty<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let written = this.inner.poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            *this.dirty |= *n > 0;
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if !*this.dirty {
            return Poll::Ready(Ok(()));
        }
        let flushed = this.inner.poll_flush(cx);
        if let Poll::Ready(Ok(())) = &flushed {
            *this.dirty = false;
        }
        flushed
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

/// The runtime's instant for a std instant: the same type under madsim, a conversion on tokio.
#[allow(
    clippy::useless_conversion,
    reason = "an identity only in the simulated build"
)]
pub fn runtime_instant(instant: Instant) -> tokio::time::Instant {
    instant.into()
}

/// A hyper timer on the runtime's clock (hyper-util's own timer needs the real reactor).
#[derive(Debug, Clone, Copy, Default)]
pub struct PortableTimer;

struct PortableSleep(Pin<Box<tokio::time::Sleep>>);

impl Future for PortableSleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.as_mut().poll(cx)
    }
}

impl hyper::rt::Sleep for PortableSleep {}

impl hyper::rt::Timer for PortableTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PortableSleep(Box::pin(tokio::time::sleep(duration))))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(PortableSleep(Box::pin(tokio::time::sleep_until(
            runtime_instant(deadline),
        ))))
    }
}

/// Serves `router` over HTTP/1.1 (with upgrades) on every connection `listener` accepts.
pub async fn serve_http(listener: TcpListener, router: axum::Router) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "http_accept_failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small frames (gateway dispatches, short answers) go out at once, not after the
        // peer's delayed ACK.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(%peer, %error, "http_nodelay_failed");
        }
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        tokio::spawn(async move {
            let io = TokioIo::new(FlushIfDirty::new(stream));
            let served = hyper::server::conn::http1::Builder::new()
                .timer(PortableTimer)
                .header_read_timeout(Some(HEADER_READ_TIMEOUT))
                .serve_connection(io, service)
                .with_upgrades()
                .await;
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "http_connection_ended");
            }
        });
    }
}

/// Why an HTTP exchange failed before a status came back.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The TCP connection could not be opened.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The server.
        addr: SocketAddr,
        /// What the socket said.
        source: io::Error,
    },
    /// The exchange broke after connecting; the request may or may not have been processed.
    #[error("http exchange with {addr} failed: {message}")]
    Exchange {
        /// The server.
        addr: SocketAddr,
        /// What hyper said.
        message: String,
    },
    /// No complete response within the deadline; the outcome is unknown.
    #[error("no response from {addr} within {timeout_ms} ms")]
    Timeout {
        /// The server.
        addr: SocketAddr,
        /// The deadline that passed.
        timeout_ms: u64,
    },
}

/// One HTTP request on a fresh connection; the response's status and body.
pub async fn http_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    json_body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), HttpError> {
    let headers: Vec<(&str, &str)> = authorization
        .map(|value| ("authorization", value))
        .into_iter()
        .collect();
    http_request_with(addr, method, path, &headers, json_body, timeout).await
}

/// [`http_request`] with any request headers (`(name, value)` pairs).
pub async fn http_request_with(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    json_body: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), HttpError> {
    let exchange = http_exchange(addr, method, path, headers, json_body);
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_elapsed) => {
            let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            Err(HttpError::Timeout { addr, timeout_ms })
        }
    }
}

async fn http_exchange(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    json_body: Option<Vec<u8>>,
) -> Result<(StatusCode, Bytes), HttpError> {
    let exchange_error = |e: hyper::Error| HttpError::Exchange {
        addr,
        message: e.to_string(),
    };

    // 1. Connect and hand the connection to its own task.
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HttpError::Connect { addr, source })?;
    let io = TokioIo::new(FlushIfDirty::new(stream));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(exchange_error)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "http_client_connection_ended");
        }
    });

    // 2. Build and send the request.
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let body = match json_body {
        Some(bytes) => {
            builder = builder.header("content-type", "application/json");
            Full::new(Bytes::from(bytes))
        }
        None => Full::new(Bytes::new()),
    };
    let request = builder.body(body).map_err(|e| HttpError::Exchange {
        addr,
        message: format!("bad request: {e}"),
    })?;
    let response = sender.send_request(request).await.map_err(exchange_error)?;

    // 3. Read the whole body.
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(exchange_error)?
        .to_bytes();
    Ok((status, body))
}
