//! The abuse scenarios (`--abuse`): what two attacks of docs/security.md cost a node, to
//! compare releases.
//!
//! - **reads**: one client reads the history of `--reads` channel names that never had a
//!   publication, pipelined. Reported: the standalone node's resident memory before and
//!   after, and on a cluster the keys Redis holds before and after. Reading must create
//!   nothing.
//! - **rooms**: one Socket.IO socket with connection state recovery joins `--rooms` rooms,
//!   one after the other, each acknowledged. Reported: the mean time of a join among the
//!   first and the last quarter of them. A join must cost the same however many rooms
//!   the socket is in.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use herald_testkit::{Cluster, HeraldProcess, NativeClient};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// History reads in flight at once.
const WINDOW: usize = 256;

/// Memory of a standalone node before and after `reads` reads, in MiB.
pub async fn reads_standalone(herald: &Path, reads: usize) -> anyhow::Result<(f64, f64)> {
    let args = ["--listen", "127.0.0.1:0", "--api-listen", "127.0.0.1:0"];
    let env = [("HERALD_LOG__LEVEL", "warn")];
    let node = HeraldProcess::spawn_with_env("standalone", herald, &args, &env);
    let before = node.rss_bytes().context("node RSS")?;
    read_never_used(&node.ws_url(), reads).await?;
    // Let the reads' transient buffers go before reading the steady state.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = node.rss_bytes().context("node RSS")?;
    Ok((mib(before), mib(after)))
}

/// Keys in a cluster's Redis before and after `reads` reads.
pub async fn reads_cluster(herald: &Path, reads: usize) -> anyhow::Result<(u64, u64)> {
    let cluster = Cluster::start(herald, 1, 1, &[("HERALD_LOG__LEVEL", "warn")]);
    let redis = cluster.redis.url();
    let before = redis_keys(&redis)?;
    read_never_used(&cluster.ws_url(0), reads).await?;
    Ok((before, redis_keys(&redis)?))
}

/// Mean milliseconds of a join among the first and the last quarter of `rooms` joins of
/// one socket with recovery, on a cluster started with `env`.
pub async fn rooms(
    herald: &Path,
    rooms: usize,
    env: &[(String, String)],
) -> anyhow::Result<(f64, f64)> {
    let mut settings = vec![("HERALD_LOG__LEVEL", "warn")];
    settings.extend(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let cluster = Cluster::start(herald, 1, 1, &settings);
    let url = format!(
        "ws://{}/socket.io/?EIO=4&transport=websocket",
        cluster.gateways[0].addr()
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.next().await.context("no open packet")??;
    ws.send(Message::text(r#"40{"recovery":true}"#)).await?;
    expect(&mut ws, "40").await?;
    let mut took = Vec::with_capacity(rooms);
    for room in 0..rooms {
        let started = Instant::now();
        ws.send(Message::text(format!(r#"42{room}["join","room-{room}"]"#)))
            .await?;
        let ack = expect(&mut ws, &format!("43{room}")).await?;
        if !ack.contains(r#""ok":true"#) {
            bail!("join {room} refused: {ack}");
        }
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let quarter = (rooms / 4).max(1);
    let mean = |joins: &[f64]| joins.iter().sum::<f64>() / joins.len() as f64;
    Ok((mean(&took[..quarter]), mean(&took[rooms - quarter..])))
}

/// Reads `reads` channel names nobody used, `WINDOW` at a time.
async fn read_never_used(url: &str, reads: usize) -> anyhow::Result<()> {
    let client = NativeClient::connect(url)
        .await
        .map_err(anyhow::Error::msg)?;
    let mut pending = Vec::with_capacity(WINDOW);
    for n in 0..reads {
        let params = json!({ "channel": format!("never:{n:x}"), "limit": 10 });
        let reply = client
            .start("history", params)
            .await
            .map_err(anyhow::Error::msg)?;
        pending.push(reply);
        if pending.len() == WINDOW || n + 1 == reads {
            for reply in pending.drain(..) {
                let reply = reply.await.context("no reply")?;
                if reply.get("result").is_none() {
                    bail!("history refused: {reply}");
                }
            }
        }
    }
    Ok(())
}

/// The next text frame that starts with `prefix`, skipping others (pings are answered).
async fn expect(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    prefix: &str,
) -> anyhow::Result<String> {
    loop {
        match ws.next().await.context("the socket closed")?? {
            Message::Text(text) if text.starts_with(prefix) => return Ok(text.to_string()),
            Message::Text(text) if text.as_str() == "2" => ws.send(Message::text("3")).await?,
            _ => {}
        }
    }
}

fn redis_keys(url: &str) -> anyhow::Result<u64> {
    let output = Command::new("redis-cli")
        .args(["-u", url, "DBSIZE"])
        .output()?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.trim()
        .parse()
        .with_context(|| format!("redis-cli said {text:?}"))
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}
