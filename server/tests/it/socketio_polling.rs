//! HTTP long-polling on the wire, with hand-made requests: the handshake, CORS, and bad
//! input that must end the offending session only, with the reference server's errors.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};

use serde_json::{Value, json};

use super::*;

struct Response {
    status: u16,
    head: String,
    body: String,
}

impl Response {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

/// One HTTP/1.1 request on a connection of its own.
fn request(addr: SocketAddr, method: &str, path: &str, headers: &[&str], body: &str) -> Response {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    Response {
        status: head[9..12].parse().unwrap(),
        head: head.to_ascii_lowercase(),
        body: body.to_string(),
    }
}

const POLLING: &str = "/socket.io/?EIO=4&transport=polling";

/// Opens a polling session; its sid and handshake.
fn handshake(addr: SocketAddr) -> (String, Value) {
    let response = request(addr, "GET", POLLING, &[], "");
    assert_eq!(response.status, 200, "{}", response.body);
    let open: Value = serde_json::from_str(response.body.strip_prefix('0').unwrap()).unwrap();
    (open["sid"].as_str().unwrap().to_string(), open)
}

fn get(addr: SocketAddr, sid: &str) -> Response {
    request(addr, "GET", &format!("{POLLING}&sid={sid}"), &[], "")
}

fn post(addr: SocketAddr, sid: &str, body: &str) -> Response {
    request(addr, "POST", &format!("{POLLING}&sid={sid}"), &[], body)
}

/// Waits until the session is gone: its GETs are refused as unknown.
fn session_ended(addr: SocketAddr, sid: &str) {
    let ended = herald_testkit::wait_for(PATIENCE, || {
        let response = get(addr, sid);
        response.status == 400 && response.json()["code"] == 1
    });
    assert!(ended, "session {sid} still alive");
}

/// A handshake costs a session; one whose client never sends a packet ends after
/// `socketio.open_timeout`, however often it polls, while its neighbour lives on.
#[test]
fn a_handshake_nobody_follows_up_expires_quickly() {
    let node = standalone(&[("HERALD_SOCKETIO__OPEN_TIMEOUT", "1s")]);
    let addr = node.addr();
    let (idle, _) = handshake(addr);
    let (active, _) = handshake(addr);
    assert_eq!(post(addr, &active, "40").status, 200);
    session_ended(addr, &idle);
    let reply = get(addr, &active);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.starts_with("40{"), "{}", reply.body);
}

#[test]
fn a_polling_session_connects_and_gets_a_new_pid_for_an_unknown_one() {
    let node = standalone(&[]);
    let (sid, open) = handshake(node.addr());
    assert_eq!(open["upgrades"], json!(["websocket"]));
    // A client coming back with a pid nobody knows gets a fresh socket: a new pid.
    let ok = post(
        node.addr(),
        &sid,
        r#"40{"recovery":true,"pid":"unknown","offset":"00000000:1"}"#,
    );
    assert_eq!((ok.status, ok.body.as_str()), (200, "ok"));
    let reply = get(node.addr(), &sid);
    let connect: Value = serde_json::from_str(reply.body.strip_prefix("40").unwrap()).unwrap();
    assert!(
        connect["pid"].is_string() && connect["pid"] != "unknown",
        "{connect}"
    );
    // Several packets in one POST, and the answers batched in one GET.
    let ok = post(node.addr(), &sid, "42[\"a\"]\x1e42[\"b\"]\x1e3");
    assert_eq!(ok.status, 200);
    // A client close packet ends the session at once.
    assert_eq!(post(node.addr(), &sid, "1").status, 200);
    session_ended(node.addr(), &sid);
}

#[test]
fn bad_polling_requests_get_engine_io_errors() {
    let node = standalone(&[("HERALD_SOCKETIO__MAX_PAYLOAD", "1000")]);
    let addr = node.addr();
    let error = |r: Response| (r.status, r.json()["code"].clone());

    assert_eq!(
        error(request(addr, "POST", POLLING, &[], "40")),
        (400, json!(2))
    );
    assert_eq!(
        error(request(
            addr,
            "GET",
            "/socket.io/?EIO=3&transport=polling",
            &[],
            ""
        )),
        (400, json!(5))
    );
    // Unknown sids, whether they name this gateway or no gateway at all.
    let (sid, _) = handshake(addr);
    let unknown_here = format!("{}{}", &sid[..6], "x".repeat(16));
    assert_eq!(error(get(addr, &unknown_here)), (400, json!(1)));
    assert_eq!(error(get(addr, "nobody-knows-this")), (400, json!(1)));
    assert_eq!(error(get(addr, "a.b%2A%3Ec%20d")), (400, json!(1)));

    // Garbage ends the session with "Bad request".
    let (sid, _) = handshake(addr);
    assert_eq!(error(post(addr, &sid, "9garbage")), (400, json!(3)));
    session_ended(addr, &sid);
    let (sid, _) = handshake(addr);
    assert_eq!(
        error(post(addr, &sid, "40\x1ebnot-base64!")),
        (400, json!(3))
    );
    session_ended(addr, &sid);
    let (sid, _) = handshake(addr);
    assert_eq!(
        error(post(
            addr,
            &sid,
            "451-[\"bin\",{\"_placeholder\":true,\"num\":0}]\x1e42[\"x\"]"
        ))
        .0,
        200
    );
    session_ended(addr, &sid);

    // A body over maxPayload is refused with 413 and ends the session.
    let (sid, _) = handshake(addr);
    let big = format!("42[\"big\",\"{}\"]", "x".repeat(1500));
    assert_eq!(post(addr, &sid, &big).status, 413);
    session_ended(addr, &sid);

    // Two GETs at once break the protocol: the second is refused and the session ends.
    let (sid, _) = handshake(addr);
    let waiting = std::thread::spawn({
        let sid = sid.clone();
        move || get(addr, &sid)
    });
    let refused = herald_testkit::wait_for(PATIENCE, || get(addr, &sid).status == 400);
    assert!(refused);
    // Whichever GET waited is answered with a close packet when the session ends.
    let first = waiting.join().unwrap();
    assert!(
        first.status == 400 || first.body.ends_with('1'),
        "{} {}",
        first.status,
        first.body
    );
    session_ended(addr, &sid);

    // A flood of events in polling bodies is served; the node is unharmed.
    let (sid, _) = handshake(addr);
    assert_eq!(post(addr, &sid, "40").status, 200);
    for _ in 0..20 {
        let flood = vec!["42[\"flood\",1]"; 60].join("\x1e");
        assert_eq!(post(addr, &sid, &flood).status, 200);
    }
    assert_eq!(
        herald_testkit::node::http_status(addr, "/healthz"),
        Some(200)
    );
}

#[test]
fn cors_admits_only_the_configured_origins() {
    let node = standalone(&[(
        "HERALD_SOCKETIO__CORS_ORIGINS",
        r#"["https://app.example"]"#,
    )]);
    let preflight = |origin: &str| {
        request(
            node.addr(),
            "OPTIONS",
            POLLING,
            &[
                &format!("Origin: {origin}"),
                "Access-Control-Request-Method: POST",
                "Access-Control-Request-Headers: content-type",
            ],
            "",
        )
    };
    let allowed = preflight("https://app.example");
    assert!(
        allowed
            .head
            .contains("access-control-allow-origin: https://app.example"),
        "{}",
        allowed.head
    );
    assert!(
        allowed
            .head
            .contains("access-control-allow-credentials: true")
    );
    let refused = preflight("https://evil.example");
    assert!(
        !refused.head.contains("access-control-allow-origin"),
        "{}",
        refused.head
    );
    let polled = request(
        node.addr(),
        "GET",
        POLLING,
        &["Origin: https://app.example"],
        "",
    );
    assert!(
        polled
            .head
            .contains("access-control-allow-origin: https://app.example")
    );
}
