//! The slow-consumer scenario: a subscriber that reads nothing, on the same channel and the
//! same gateway as a subscriber that reads everything. Its socket buffers, then its
//! outbound queue fill, and the gateway cuts it (code 3004); the question is what that
//! costs the reader, measured against the same run without the stuck subscriber.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// A native client subscribed to `channel` that never reads again.
pub struct Stuck {
    ws: WebSocketStream<TcpStream>,
}

impl Stuck {
    pub async fn subscribe(addr: SocketAddr, channel: &str) -> anyhow::Result<Self> {
        let socket = TcpSocket::new_v4()?;
        socket.set_recv_buffer_size(8 * 1024)?;
        let stream = socket.connect(addr).await?;
        let url = format!("ws://{addr}/connection/websocket");
        let (mut ws, _) = tokio_tungstenite::client_async(url, stream).await?;
        for (id, method, params) in [
            (1, "connect", json!({})),
            (2, "subscribe", json!({ "channel": channel })),
        ] {
            let command = json!({ "id": id, "method": method, "params": params });
            ws.send(Message::text(command.to_string())).await?;
            ws.next().await.context("no reply")??;
        }
        Ok(Self { ws })
    }

    /// Reads what the gateway left for it; whether it was cut as a slow consumer (3004).
    pub async fn was_cut(mut self) -> bool {
        let read = async {
            while let Some(Ok(frame)) = self.ws.next().await {
                match frame {
                    Message::Close(Some(close)) => return u16::from(close.code) == 3004,
                    Message::Text(text) => {
                        let push: Value = serde_json::from_str(&text).unwrap_or_default();
                        if push["push"] == "disconnect" {
                            return push["code"] == 3004;
                        }
                    }
                    _ => {}
                }
            }
            false
        };
        tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .unwrap_or(false)
    }
}
