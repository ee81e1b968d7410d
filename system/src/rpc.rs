//! Request/response RPC between nodes: length-delimited JSON frames over TCP.
//!
//! A connection carries one request at a time; a client keeps idle connections per peer and
//! opens another when all are busy. Every call has a deadline, because a partition stalls an
//! open stream instead of resetting it. Guarantees: a response belongs to the request sent on
//! the same connection; a call that fails after its request was written reports
//! [`RpcError::Unknown`], since the peer may have acted on it. Not provided: multiplexing,
//! cancellation sent to the peer, authentication.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{Framed, LengthDelimitedCodec};

use crate::net::FlushIfDirty;

/// The largest frame either side accepts.
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;
/// How many idle connections a client keeps per peer.
const IDLE_PER_PEER_MAX: usize = 8;

type Conn = Framed<FlushIfDirty<TcpStream>, LengthDelimitedCodec>;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(FRAME_BYTES_MAX)
        .new_codec()
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RpcError {
    /// Nothing was sent: the peer refused the connection or it could not be opened in time.
    #[error("cannot reach {addr}: {reason}")]
    Unreachable {
        /// The peer.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The request may have been acted on: the exchange broke or timed out after sending.
    #[error("outcome unknown for call to {addr}: {reason}")]
    Unknown {
        /// The peer.
        addr: SocketAddr,
        /// What went wrong.
        reason: String,
    },
}

/// A client that reuses connections per peer.
#[derive(Debug, Default, Clone)]
pub struct RpcClient {
    idle: Arc<Mutex<BTreeMap<SocketAddr, Vec<Conn>>>>,
}

impl RpcClient {
    /// A client with no open connections.
    pub fn new() -> Self {
        Self::default()
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(&addr).and_then(Vec::pop)
    }

    fn put_idle(&self, addr: SocketAddr, conn: Conn) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let conns = idle.entry(addr).or_default();
        if conns.len() < IDLE_PER_PEER_MAX {
            conns.push(conn);
        }
    }

    /// Sends `request` to `addr` and waits up to `timeout` for the response.
    pub async fn call<Req, Resp>(
        &self,
        addr: SocketAddr,
        request: &Req,
        timeout: Duration,
    ) -> Result<Resp, RpcError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
    {
        let payload = serde_json::to_vec(request).map_err(|e| RpcError::Unreachable {
            addr,
            reason: format!("cannot encode request: {e}"),
        })?;
        let payload = Bytes::from(payload);
        match tokio::time::timeout(timeout, self.exchange(addr, payload)).await {
            Ok(result) => result,
            Err(_elapsed) => {
                let reason = format!("no response within {} ms", timeout.as_millis());
                Err(RpcError::Unknown { addr, reason })
            }
        }
    }

    async fn exchange<Resp: DeserializeOwned>(
        &self,
        addr: SocketAddr,
        payload: Bytes,
    ) -> Result<Resp, RpcError> {
        // 1. Send on an idle connection; a stale one (the peer restarted) fails at send, before
        //    the peer could act, so one retry on a fresh connection is safe.
        let mut conn = match self.take_idle(addr) {
            Some(mut conn) => match conn.send(payload.clone()).await {
                Ok(()) => conn,
                Err(_stale) => self.connect_and_send(addr, payload).await?,
            },
            None => self.connect_and_send(addr, payload).await?,
        };

        // 2. Read the one response frame.
        let unknown = |reason: String| RpcError::Unknown { addr, reason };
        let frame = match conn.next().await {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Err(unknown(format!("read failed: {e}"))),
            None => return Err(unknown("connection closed before the response".to_string())),
        };
        let response = serde_json::from_slice(&frame)
            .map_err(|e| unknown(format!("undecodable response: {e}")))?;
        self.put_idle(addr, conn);
        Ok(response)
    }

    async fn connect_and_send(&self, addr: SocketAddr, payload: Bytes) -> Result<Conn, RpcError> {
        let unreachable = |reason: String| RpcError::Unreachable { addr, reason };
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let mut conn = Framed::new(FlushIfDirty::new(stream), codec());
        conn.send(payload)
            .await
            .map_err(|e| unreachable(format!("send failed: {e}")))?;
        Ok(conn)
    }
}

/// Answers every request arriving on `listener` with `handler`, one task per connection.
/// A frame that does not decode as `Req` closes its connection.
pub async fn serve_rpc<Req, Resp, H, F>(listener: TcpListener, handler: H)
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    H: Fn(Req) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Resp> + Send + 'static,
{
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "rpc_accept_failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let mut conn = Framed::new(FlushIfDirty::new(stream), codec());
            while let Some(frame) = conn.next().await {
                let Ok(frame) = frame else { break };
                let request: Req = match serde_json::from_slice(&frame) {
                    Ok(request) => request,
                    Err(error) => {
                        tracing::warn!(%peer, %error, "rpc_undecodable_request");
                        break;
                    }
                };
                let response = handler(request).await;
                let Ok(bytes) = serde_json::to_vec(&response) else {
                    break;
                };
                if conn.send(Bytes::from(bytes)).await.is_err() {
                    break;
                }
            }
        });
    }
}
