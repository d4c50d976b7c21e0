//! Where Herald's Engine.IO endpoint answers as the reference server does, on the wire:
//! the behaviours the official protocol test suites (socketio/engine.io-protocol and
//! socketio/socket.io-protocol) found different, and the handshake of Flutter's client.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use super::*;

const POLLING: &str = "/socket.io/?EIO=4&transport=polling";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One HTTP/1.1 request on a connection of its own: the status and the body.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (head[9..12].parse().unwrap(), body.to_string())
}

/// The next text frame, skipping none.
async fn text(ws: &mut Ws) -> String {
    match tokio::time::timeout(PATIENCE, ws.next()).await {
        Ok(Some(Ok(Message::Text(text)))) => text.to_string(),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

/// Whether the server answers with a close frame (rather than dropping the connection).
async fn closes_cleanly(ws: &mut Ws) -> bool {
    let closing = tokio::time::timeout(PATIENCE, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(_))) => return true,
                Some(Ok(_)) => continue,
                _ => return false,
            }
        }
    });
    closing.await.unwrap_or(false)
}

#[test]
fn a_handshake_by_any_method_but_get_is_refused_with_code_2() {
    let node = standalone(&[]);
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        let (status, body) = request(node.addr(), method, POLLING, "");
        assert_eq!(
            (status, serde_json::from_str::<Value>(&body).unwrap()),
            (400, json!({"code": 2, "message": "Bad handshake method"})),
            "{method}"
        );
    }
    let (_, open) = request(node.addr(), "GET", POLLING, "");
    let open: Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    let sid = open["sid"].as_str().unwrap();
    let (status, body) = request(node.addr(), "PUT", &format!("{POLLING}&sid={sid}"), "");
    assert_eq!((status, body.contains("\"code\":3")), (400, true), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_websocket_on_an_upgraded_session_opens_then_closes() {
    let node = standalone(&[]);
    let addr = node.addr();
    let (_, open) = request(addr, "GET", POLLING, "");
    let open: Value = serde_json::from_str(open.strip_prefix('0').unwrap()).unwrap();
    let sid = open["sid"].as_str().unwrap().to_string();
    let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&sid={sid}");
    let (mut first, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    first.send(Message::text("2probe")).await.unwrap();
    assert_eq!(text(&mut first).await, "3probe");
    first.send(Message::text("5")).await.unwrap();

    // The reference server completes the second handshake, then closes that WebSocket.
    let (mut second, response) = tokio_tungstenite::connect_async(&url)
        .await
        .expect("the WebSocket handshake succeeds");
    assert_eq!(response.status(), 101);
    assert!(
        closes_cleanly(&mut second).await,
        "the second WebSocket is closed"
    );

    // The session carries on over the first; polling is over for it.
    first.send(Message::text("40")).await.unwrap();
    let connect = text(&mut first).await;
    assert!(connect.starts_with("40{\"sid\":"), "{connect}");
    let (status, _) = request(addr, "GET", &format!("{POLLING}&sid={sid}"), "");
    assert_eq!(status, 400);
}

#[tokio::test]
async fn a_clients_close_frame_is_answered_with_a_close_frame() {
    let node = standalone(&[]);
    let socketio = format!("ws://{}/socket.io/?EIO=4&transport=websocket", node.addr());
    for url in [socketio, node.ws_url()] {
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        if url.contains("socket.io") {
            text(&mut ws).await; // the open packet
        }
        ws.close(None).await.unwrap();
        assert!(
            closes_cleanly(&mut ws).await,
            "{url}: no close frame came back"
        );
    }
}

#[tokio::test]
async fn a_websocket_handshake_named_polling_is_a_websocket_session() {
    // Flutter's socket_io_client on Android and iOS always opens a WebSocket, but asks for
    // `transport=polling`, the first of its default transports.
    let node = standalone(&[]);
    let url = format!("ws://{}{POLLING}", node.addr());
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let open: Value = serde_json::from_str(text(&mut ws).await.strip_prefix('0').unwrap()).unwrap();
    assert_eq!(open["upgrades"], json!([]), "{open}");
    ws.send(Message::text("40")).await.unwrap();
    let connect = text(&mut ws).await;
    assert!(connect.starts_with("40{\"sid\":"), "{connect}");
}
