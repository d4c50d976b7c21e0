//! The Socket.IO endpoint on the wire, with hand-made frames: the Engine.IO handshake, and
//! bad input that must end the offending connection only.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::*;

/// `GET path` over HTTP/1.1; the status code and the body.
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(addr: SocketAddr) -> (Ws, Value) {
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket");
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let Some(Ok(Message::Text(open))) = ws.next().await else {
        panic!("no open packet");
    };
    let handshake: Value =
        serde_json::from_str(open.strip_prefix('0').expect("an open packet")).unwrap();
    (ws, handshake)
}

/// Reads until the server closes the connection; fails if it does not within PATIENCE.
async fn closed_by_server(ws: &mut Ws) {
    let closed = tokio::time::timeout(PATIENCE, async {
        while let Some(Ok(message)) = ws.next().await {
            if matches!(message, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the server did not close the connection");
}

#[tokio::test]
async fn handshake_heartbeat_and_engine_io_errors() {
    let node = standalone(&[
        ("HERALD_SOCKETIO__PING_INTERVAL", "200ms"),
        ("HERALD_SOCKETIO__PING_TIMEOUT", "300ms"),
    ]);
    let (mut ws, handshake) = open(node.addr()).await;
    assert_eq!(handshake["pingInterval"], 200);
    assert_eq!(handshake["pingTimeout"], 300);
    assert_eq!(handshake["maxPayload"], 1_000_000);
    assert!(handshake["sid"].as_str().is_some_and(|sid| sid.len() == 22));

    ws.send(Message::text("40")).await.unwrap();
    let Some(Ok(Message::Text(reply))) = ws.next().await else {
        panic!("no CONNECT reply")
    };
    // Without connection state recovery, which a client must ask for, the reply is the
    // socket's id alone, as the reference server's.
    let reply: Value = serde_json::from_str(reply.strip_prefix("40").expect("a CONNECT")).unwrap();
    assert_eq!(reply.as_object().map(|o| o.len()), Some(1), "{reply}");
    assert!(reply["sid"].is_string(), "{reply}");
    ws.send(Message::text(r#"40/chat,{"recovery":true}"#))
        .await
        .unwrap();
    let Some(Ok(Message::Text(reply))) = ws.next().await else {
        panic!("no CONNECT reply")
    };
    // A client that asks for recovery gets a private id too.
    let reply: Value =
        serde_json::from_str(reply.strip_prefix("40/chat,").expect("a CONNECT")).unwrap();
    assert!(
        reply["sid"].is_string() && reply["pid"].is_string(),
        "{reply}"
    );
    // The server pings; a client that answers stays connected through several intervals.
    for _ in 0..3 {
        let Some(Ok(Message::Text(ping))) = ws.next().await else {
            panic!("no ping")
        };
        assert_eq!(ping.as_str(), "2");
        ws.send(Message::text("3")).await.unwrap();
    }
    // One that stops answering is disconnected after the timeout.
    closed_by_server(&mut ws).await;

    let (status, body) = get(node.addr(), "/socket.io/?EIO=3&transport=websocket");
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (
            400,
            json!({"code": 5, "message": "Unsupported protocol version"})
        )
    );
    let (status, body) = get(node.addr(), "/socket.io/?EIO=4&transport=carrier-pigeon");
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).unwrap()["code"].clone()
        ),
        (400, json!(0))
    );
}

#[tokio::test]
async fn malformed_packets_close_only_their_connection() {
    let node = standalone(&[]);
    let mut bystander = herald_testkit::socketio::Agent::spawn(
        herald_testkit::socketio::Library::Js,
        &format!("http://{}", node.addr()),
        "/",
        json!({"transports": ["websocket"]}),
    );
    bystander.next("connect", PATIENCE).await.unwrap();

    let garbage: Vec<Message> = vec![
        Message::text("9"),
        Message::text(""),
        Message::text("4garbage"),
        Message::text("42[\"unterminated\""),
        Message::text("451-[\"bin\",{\"_placeholder\":true,\"num\":0}]"),
        Message::binary(vec![0xff, 0x00, 0x13]),
        Message::text("0{\"sid\":\"x\"}"),
    ];
    for (i, frame) in garbage.into_iter().enumerate() {
        let (mut ws, _) = open(node.addr()).await;
        ws.send(Message::text("40")).await.unwrap();
        ws.next().await.unwrap().unwrap();
        let follow_up = i == 4;
        ws.send(frame).await.unwrap();
        if follow_up {
            // A binary event announced one attachment; a text packet instead breaks it.
            ws.send(Message::text("42[\"x\"]")).await.unwrap();
        }
        closed_by_server(&mut ws).await;
    }
    // A flood of valid events from one client is served, and the bystander is unharmed.
    let (mut ws, _) = open(node.addr()).await;
    ws.send(Message::text("40")).await.unwrap();
    ws.next().await.unwrap().unwrap();
    for n in 0..2000 {
        ws.send(Message::text(format!("42[\"flood\",{n}]")))
            .await
            .unwrap();
    }
    let mut last = None;
    while last != Some(1999) {
        let event = bystander.next("event", PATIENCE).await.unwrap();
        last = event["args"][0].as_u64();
    }
    assert_eq!(
        herald_testkit::node::http_status(node.addr(), "/healthz"),
        Some(200)
    );
}
