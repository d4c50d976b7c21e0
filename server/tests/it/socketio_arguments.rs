//! What the handlers of stock Socket.IO clients receive with default settings: exactly the
//! arguments the sender emitted, however many, whatever the client library. (A JavaScript
//! listener ignores extra arguments; a Flutter handler gets a List as soon as there are
//! two, and a one-argument python-socketio handler raises `TypeError`.)

use herald_testkit::socketio::{Agent, Library};
use serde_json::{Value, json};

use super::*;

fn websocket_only() -> Value {
    json!({ "transports": ["websocket"] })
}

async fn connect(mut agent: Agent) -> Agent {
    agent.next("connect", PATIENCE).await.unwrap();
    agent
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_get_exactly_the_emitted_arguments_by_default() {
    let cluster = cluster(2, 1);
    let here = format!("http://{}", cluster.gateways[0].addr());
    let there = format!("http://{}", cluster.gateways[1].addr());
    let mut js = connect(Agent::spawn(Library::Js, &here, "/", websocket_only())).await;
    let python = Agent::spawn_python_one_argument(&here, "/", websocket_only(), &["message"]);
    let mut python = connect(python).await;
    let mut talker = connect(Agent::spawn(Library::Js, &there, "/", websocket_only())).await;

    // The seed's program: emit('message', '这是一条消息') and on('message', (data) => …).
    let ack = talker
        .emit_ack("message", json!(["这是一条消息"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    let event = js.next("event", PATIENCE).await.unwrap();
    assert_eq!(event["args"], json!(["这是一条消息"]), "{event}");
    // A Flutter handler gets the string itself, not a List.
    assert_eq!(event["dart"], "这是一条消息", "{event}");
    // `def message(data)` was called (with two arguments it would have raised TypeError).
    let event = python.next("event", PATIENCE).await.unwrap();
    assert_eq!(
        (event["event"].clone(), event["args"].clone()),
        (json!("message"), json!(["这是一条消息"]))
    );

    // Any number of arguments, of any kind, arrives as it was emitted.
    let cases = [
        json!([]),
        json!([null]),
        json!([1, "two", {"three": [3, 3.5, true]}]),
        json!([[1, 2], [], {}]),
        json!([{"$binary": [0, 1, 255]}, "caption"]),
    ];
    for args in cases {
        let ack = talker
            .emit_ack("update", args.clone(), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true, "{args}: {ack}");
        for listener in [&mut js, &mut python] {
            let event = listener.next("event", PATIENCE).await.unwrap();
            assert_eq!(event["event"], "update", "{event}");
            assert_eq!(event["args"], args, "{event}");
        }
    }
}

#[tokio::test]
async fn the_sender_gets_nothing_back_and_acks_carry_one_object() {
    let node = standalone(&[]);
    let url = format!("http://{}", node.addr());
    let mut talker = connect(Agent::spawn(Library::Js, &url, "/chat", websocket_only())).await;
    let mut listener = connect(Agent::spawn(Library::Js, &url, "/chat", websocket_only())).await;
    let ack = talker
        .emit_ack("message", json!(["hi", 2]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(ack["offset"].is_u64(), "{ack}");
    let event = listener.next("event", PATIENCE).await.unwrap();
    assert_eq!(event["args"], json!(["hi", 2]));
    assert_eq!(
        event["dart"],
        json!(["hi", 2]),
        "several arguments: one List"
    );
    let quiet = talker.next("event", Duration::from_millis(300)).await;
    assert!(quiet.is_err(), "the sender got its own event: {quiet:?}");
}
