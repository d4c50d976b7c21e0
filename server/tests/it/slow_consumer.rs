//! A client that stops reading, next to one that reads: the reader gets everything, the
//! stuck one is cut with code 3004 once its outbound queue is full (in frames, or in
//! bytes), and the gateway's memory does not grow with what the stuck client did not read.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::Message;

use crate::{PATIENCE, client, publications, standalone, subscribe};

/// Frames a connection may have waiting; well above the publisher's window below, so a
/// client that reads keeps up with its bursts.
const QUEUE: usize = 256;
const WINDOW: usize = 32;
const PAYLOAD: usize = 16 * 1024;

/// The most a kernel may buffer for one TCP socket's sends, in bytes.
fn kernel_send_buffer() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|text| text.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 * 1024 * 1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_and_the_others_are_served() {
    // The queue's bound in frames (256 × 16 KiB) comes before its bound in bytes (8 MiB).
    stuck_client_is_cut(QUEUE, 8 * 1024 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_by_its_byte_budget() {
    // Here the bound in bytes (2 MB, 122 publications) comes first.
    stuck_client_is_cut(100_000, 2_000_000).await;
}

/// The attack of a client that asks for large history pages, over and over, and reads
/// none of them: its replies are held against its byte budget like publications, and it
/// is cut with 3004 long before the gateway holds what it asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_asks_for_history_and_never_reads_is_cut() {
    let node = standalone(&[("HERALD_GATEWAY__OUTBOUND_BYTES", "4000000")]);
    let channel = "feed:archive";
    let publisher = client(&node.ws_url()).await;
    let data = "x".repeat(60_000);
    for n in 0..40 {
        let params = json!({ "channel": channel, "data": { "n": n, "pad": data } });
        let reply = publisher.call("publish", params).await.unwrap();
        assert!(reply.get("result").is_some(), "{reply}");
    }
    let baseline = node.rss_bytes().expect("the gateway's RSS");
    let (mut stuck, _) = stuck_client(&node).await;
    // 40 pages of about 1 MiB each (a page is cut to fit one bus message): ten times the
    // client's budget.
    for id in 2..42 {
        let params = json!({ "channel": channel, "limit": 1000 });
        let command = json!({ "id": id, "method": "history", "params": params });
        if stuck
            .send(Message::text(command.to_string()))
            .await
            .is_err()
        {
            break;
        }
    }
    let (_, reasons) = read_to_the_end(&mut stuck).await;
    assert_eq!(
        reasons,
        [Some(3004), Some(3004)],
        "the disconnect push and close frame"
    );
    let grown = node.rss_bytes().unwrap().saturating_sub(baseline);
    assert!(grown < 24_000_000, "the gateway grew by {grown} bytes");
    // The node goes on serving.
    let reader = client(&node.ws_url()).await;
    let page = reader
        .ok("history", json!({ "channel": channel, "limit": 1 }))
        .await
        .unwrap();
    assert_eq!(page["publications"][0]["data"]["n"], 39);
}

type Stuck = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// A native client with a small receive buffer, connected; it reads only when told to.
async fn stuck_client(node: &herald_testkit::HeraldProcess) -> (Stuck, Value) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(8 * 1024).unwrap();
    let stream = socket.connect(node.addr()).await.unwrap();
    let (mut stuck, _) = tokio_tungstenite::client_async(node.ws_url().as_str(), stream)
        .await
        .unwrap();
    let command = json!({ "id": 1, "method": "connect", "params": {} });
    stuck
        .send(Message::text(command.to_string()))
        .await
        .unwrap();
    let reply = stuck.next().await.unwrap().unwrap();
    let reply: Value = serde_json::from_str(reply.to_text().unwrap()).unwrap();
    assert!(reply.get("result").is_some(), "{reply}");
    (stuck, reply)
}

/// Reads what a stuck client's buffers still hold, to the end of its connection: how
/// many publications, and the codes of the disconnect push and of the close frame.
async fn read_to_the_end(stuck: &mut Stuck) -> (usize, Vec<Option<u64>>) {
    let mut publications = 0;
    let mut reasons = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(frame)) = stuck.next().await {
            match frame {
                Message::Text(text) => {
                    let frame: Value = serde_json::from_str(&text).unwrap();
                    match frame["push"].as_str() {
                        Some("publication") => publications += 1,
                        Some("disconnect") => reasons.push(frame["code"].as_u64()),
                        _ => {}
                    }
                }
                Message::Close(Some(close)) => reasons.push(Some(u16::from(close.code).into())),
                _ => {}
            }
        }
    });
    read.await.expect("the stuck client's connection ended");
    (publications, reasons)
}

/// A stuck client beside a reader, on a gateway whose connections may queue `frames`
/// frames and `bytes` bytes.
async fn stuck_client_is_cut(frames: usize, bytes: usize) {
    let (queue, budget) = (frames.to_string(), bytes.to_string());
    let node = standalone(&[
        ("HERALD_GATEWAY__OUTBOUND_QUEUE", &queue),
        ("HERALD_GATEWAY__OUTBOUND_BYTES", &budget),
        ("HERALD_CHANNELS__DEFAULT__HISTORY_SIZE", "10"),
    ]);
    let url = node.ws_url();
    let channel = "feed:firehose";

    // The stuck client: once subscribed it reads nothing.
    let (mut stuck, _) = stuck_client(&node).await;
    let command = json!({ "id": 2, "method": "subscribe", "params": { "channel": channel } });
    stuck
        .send(Message::text(command.to_string()))
        .await
        .unwrap();
    let reply = stuck.next().await.unwrap().unwrap();
    assert!(reply.to_text().unwrap().contains("result"), "{reply:?}");

    let reader = client(&url).await;
    subscribe(&reader, channel).await;
    let publisher = client(&url).await;
    let baseline = node.rss_bytes().expect("the gateway's RSS");

    // Far more than the kernel can buffer for the stuck client, plus its queue.
    let total = 8 * (kernel_send_buffer() + bytes.min(frames * PAYLOAD));
    let count = total / PAYLOAD;
    let data = "x".repeat(PAYLOAD - 16);
    let mut pending = Vec::new();
    for n in 0..count {
        let params = json!({ "channel": channel, "data": { "n": n, "pad": data } });
        pending.push(publisher.start("publish", params).await.unwrap());
        if pending.len() == WINDOW {
            for reply in pending.drain(..) {
                let reply: Value = reply.await.unwrap();
                assert!(reply.get("result").is_some(), "{reply}");
            }
        }
    }
    let received = publications(&reader, channel, count).await;
    let order: Vec<u64> = received
        .iter()
        .map(|p| p["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        order,
        (0..count as u64).collect::<Vec<_>>(),
        "the reader lost its stream"
    );
    let grown = node.rss_bytes().unwrap().saturating_sub(baseline);
    eprintln!("slow consumer: {count} publications, {total} bytes, gateway grew {grown} bytes");
    assert!(
        grown < (total / 2) as u64,
        "the gateway grew by {grown} bytes while {total} bytes were sent to a stuck client"
    );

    // Reading again, the stuck client finds the publications its buffers held, then the
    // reason it was cut.
    let (publications_read, reasons) = read_to_the_end(&mut stuck).await;
    assert!(publications_read < count, "the stuck client got everything");
    assert_eq!(
        reasons,
        [Some(3004), Some(3004)],
        "the disconnect push and close frame"
    );
}
