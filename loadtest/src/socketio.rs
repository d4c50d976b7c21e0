//! The Socket.IO scenario: a socket on gateway A emits events with acks, keeping a window
//! of them in flight, and a socket on gateway B receives them; both speak Engine.IO over a
//! WebSocket, as a stock client on the WebSocket transport does.

use std::time::Instant;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use herald_core::time::unix_micros;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::RunResult;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket connected to the root namespace of the gateway at `addr`; with `recovery`, it
/// asks for connection state recovery, so that every event it receives ends with an
/// offset.
async fn connect(addr: std::net::SocketAddr, recovery: bool) -> anyhow::Result<Ws> {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.next().await.context("no open packet")??;
    let connect = if recovery {
        r#"40{"recovery":true}"#
    } else {
        "40"
    };
    ws.send(Message::text(connect)).await?;
    loop {
        match ws.next().await.context("no CONNECT reply")?? {
            Message::Text(text) if text.starts_with("40") => return Ok(ws),
            _ => {}
        }
    }
}

pub async fn measure(
    a: std::net::SocketAddr,
    b: std::net::SocketAddr,
    n: usize,
    window: usize,
    recovery: bool,
) -> anyhow::Result<RunResult> {
    let mut publisher = connect(a, false).await?;
    let mut subscriber = connect(b, recovery).await?;
    let started = Instant::now();
    let sender = tokio::spawn(async move {
        let (mut sent, mut acked) = (0usize, 0usize);
        while acked < n {
            if sent < n && sent - acked < window {
                let event = format!(r#"42{sent}["bench",{{"i":{sent},"t":{}}}]"#, unix_micros());
                publisher.send(Message::text(event)).await?;
                sent += 1;
                continue;
            }
            match publisher.next().await.context("publisher closed")?? {
                Message::Text(text) if text.starts_with("43") => {
                    if !text.contains(r#""ok":true"#) {
                        bail!("event refused: {text}");
                    }
                    acked += 1;
                }
                Message::Text(text) if text.as_str() == "2" => {
                    publisher.send(Message::text("3")).await?;
                }
                _ => {}
            }
        }
        Ok::<_, anyhow::Error>(())
    });
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut next = 0u64;
    while (next as usize) < n {
        let Message::Text(text) = subscriber.next().await.context("subscriber closed")?? else {
            continue;
        };
        if text.as_str() == "2" {
            subscriber.send(Message::text("3")).await?;
            continue;
        }
        let Some(array) = text.strip_prefix("42") else {
            continue;
        };
        let now = unix_micros();
        let event: Value = serde_json::from_str(array)?;
        if event[1]["i"].as_u64() != Some(next) {
            bail!("out of order: expected {next}, got {text}");
        }
        let sent = event[1]["t"].as_u64().context("timestamp")?;
        histogram.record(now.saturating_sub(sent).max(1))?;
        next += 1;
    }
    let elapsed = started.elapsed();
    sender.await??;
    Ok(RunResult {
        per_second: n as f64 / elapsed.as_secs_f64(),
        p50_us: histogram.value_at_quantile(0.50),
        p99_us: histogram.value_at_quantile(0.99),
        max_us: histogram.max(),
    })
}
