//! A WebSocket user of the gateway, for tests on real tokio: connect to `/gateway` and read
//! JSON payloads with a deadline.
//!
//! Not provided: compression or ETF (the gateway speaks JSON text frames only).

use std::net::SocketAddr;
use std::time::Duration;

use chat_system::net::FlushIfDirty;
use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// A client connection to the gateway.
pub type Ws = tokio_tungstenite::WebSocketStream<FlushIfDirty<TcpStream>>;

/// How long a payload may take to arrive.
const WS_TIMEOUT: Duration = Duration::from_secs(15);

/// Opens `ws://{gateway}/gateway{query}` (`query` empty or starting with `?`).
pub async fn connect(gateway: SocketAddr, query: &str) -> Ws {
    let stream = TcpStream::connect(gateway).await.expect("gateway accepts");
    let url = format!("ws://{gateway}/gateway{query}");
    let (ws, _) = tokio_tungstenite::client_async(url, FlushIfDirty::new(stream))
        .await
        .expect("websocket handshake");
    ws
}

/// The next JSON payload, skipping pings; panics on a close or after [`WS_TIMEOUT`].
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(WS_TIMEOUT, ws.next())
            .await
            .expect("a payload in time");
        match message.expect("stream open").expect("no ws error") {
            Message::Text(text) => return serde_json::from_str(&text).expect("JSON payload"),
            Message::Close(frame) => panic!("closed: {frame:?}"),
            _ => continue,
        }
    }
}
