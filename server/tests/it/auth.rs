//! Connection tokens on a real node: every signing algorithm, refusals with their codes,
//! refresh without reconnecting, and the disconnect of a connection whose token ran out,
//! on both protocols.

use herald_testkit::NativeClient;
use herald_testkit::socketio::{Agent, Library};
use serde_json::{Value, json};

use crate::tokens::{self, SECRET, es256, hs256, hs256_with, now, rs256};
use crate::{PATIENCE, client_with_token, close_frame, refused, standalone};

/// Tokens that have just expired but are still inside the 5 s clock-skew leeway: accepted,
/// and running out about four seconds later (time enough for a client process to start
/// and connect on a loaded machine).
const ABOUT_TO_EXPIRE: i64 = -1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_every_algorithm_say_who_connects() {
    let rsa_key = tokens::key_file("rsa_public.pem");
    let ec_key = tokens::key_file("ec_public.pem");
    let rsa = standalone(&[
        ("HERALD_AUTH__HMAC_SECRET", SECRET),
        ("HERALD_AUTH__PUBLIC_KEY_FILE", &rsa_key),
        ("HERALD_AUTH__ANONYMOUS", "false"),
    ]);
    let ec = standalone(&[
        ("HERALD_AUTH__PUBLIC_KEY_FILE", &ec_key),
        ("HERALD_AUTH__ANONYMOUS", "false"),
    ]);
    let claims = json!({ "sub": "alice", "exp": now() + 600, "info": { "name": "Alice" } });
    for (node, token) in [
        (&rsa, hs256(&claims)),
        (&rsa, rs256(&claims)),
        (&ec, es256(&claims)),
    ] {
        let (_, result) = client_with_token(&node.ws_url(), &token).await;
        assert_eq!(result["user"], "alice", "{result}");
        let expires_in = result["expires_in"].as_u64().unwrap();
        assert!((590..=605).contains(&expires_in), "{result}");
        assert_eq!(result["personal"], "user:#alice", "{result}");
    }

    // Refusals: no token where one is needed, a forged one, an expired one, and a token
    // signed with a key this node does not take.
    let expired = hs256(&json!({ "sub": "alice", "exp": now() - 600 }));
    for (node, params, code) in [
        (&rsa, json!({}), 101),
        (&rsa, json!({ "token": hs256_with("guess", &claims) }), 101),
        (&rsa, json!({ "token": expired }), 109),
        (&rsa, json!({ "token": es256(&claims) }), 101),
        (&ec, json!({ "token": rs256(&claims) }), 101),
    ] {
        let client = NativeClient::open(&node.ws_url()).await.unwrap();
        let error = refused(&client, "connect", params.clone()).await;
        assert_eq!(error["code"], code, "{params}: {error}");
        // A refused connect leaves the connection open for a better one.
        let good = client
            .ok("connect", json!({ "token": rs256(&claims) }))
            .await;
        assert_eq!(good.is_ok(), std::ptr::eq(node, &rsa), "{good:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshed_connection_lives_on_and_an_expired_one_is_closed_with_3006() {
    let node = standalone(&[("HERALD_AUTH__HMAC_SECRET", SECRET)]);
    let url = node.ws_url();
    let (refreshed, _) = client_with_token(&url, &tokens::user("alice", ABOUT_TO_EXPIRE)).await;
    let (expiring, _) = client_with_token(&url, &tokens::user("bob", ABOUT_TO_EXPIRE)).await;

    // A refresh needs a good token of the same user.
    let error = refused(
        &refreshed,
        "refresh",
        json!({ "token": tokens::user("mallory", 600) }),
    )
    .await;
    assert_eq!(error["code"], 101, "{error}");
    let error = refused(
        &refreshed,
        "refresh",
        json!({ "token": tokens::user("alice", -600) }),
    )
    .await;
    assert_eq!(error["code"], 109, "{error}");
    let result = refreshed
        .ok("refresh", json!({ "token": tokens::user("alice", 600) }))
        .await
        .unwrap();
    assert!(result["expires_in"].as_u64().unwrap() > 590, "{result}");

    let closed = close_frame(&expiring).await;
    assert_eq!(
        (closed.code, closed.reason.as_str()),
        (3006, "token expired")
    );
    // Both tokens ran out at the same moment; the refreshed connection is still served.
    refreshed.ok("ping", json!({})).await.unwrap();
    let publish = json!({ "channel": "news", "data": 1 });
    refreshed.ok("publish", publish).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socketio_sockets_refresh_with_a_reserved_event_and_expire_with_a_reason() {
    let node = standalone(&[("HERALD_AUTH__HMAC_SECRET", SECRET)]);
    let url = format!("http://{}", node.addr());
    let options = |user: &str| {
        json!({
            "transports": ["websocket"],
            "auth": { "token": tokens::user(user, 600) },
        })
    };
    let mut refreshed = Agent::spawn(Library::Js, &url, "/", options("alice"));
    let mut expiring = Agent::spawn(Library::Js, &url, "/", options("bob"));
    refreshed.next("connect", PATIENCE).await.unwrap();
    expiring.next("connect", PATIENCE).await.unwrap();
    // Both sockets now hold tokens about to run out: given once the client processes have
    // started and connected, however long that took on a loaded machine.
    for (socket, user) in [(&mut refreshed, "alice"), (&mut expiring, "bob")] {
        let token = tokens::user(user, ABOUT_TO_EXPIRE);
        let ack = socket
            .emit_ack("herald:refresh", json!([token]), PATIENCE)
            .await
            .unwrap();
        assert_eq!(ack["ok"], true, "{ack}");
    }

    let ack = refreshed
        .emit_ack(
            "herald:refresh",
            json!([tokens::user("mallory", 600)]),
            PATIENCE,
        )
        .await
        .unwrap();
    assert_eq!(ack["error"]["code"], 101, "{ack}");
    let ack = refreshed
        .emit_ack(
            "herald:refresh",
            json!([tokens::user("alice", 600)]),
            PATIENCE,
        )
        .await
        .unwrap();
    assert_eq!(ack["ok"], true, "{ack}");
    assert!(ack["expires_in"].as_u64().unwrap() > 590, "{ack}");

    let told = expiring
        .find(PATIENCE, |r| r["event"] == "herald:disconnect")
        .await
        .unwrap();
    assert_eq!(
        told["args"][0],
        json!({ "code": 3006, "reason": "token expired", "reconnect": true })
    );
    let disconnect = expiring.next("disconnect", PATIENCE).await.unwrap();
    assert_eq!(disconnect["reason"], "io server disconnect");
    // The refreshed socket still has its namespace.
    let ack = refreshed
        .emit_ack("message", json!(["still here"]), PATIENCE)
        .await
        .unwrap();
    assert_eq!(ack["ok"], Value::Bool(true), "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_is_recovered_only_for_its_own_user() {
    let node = standalone(&[("HERALD_AUTH__HMAC_SECRET", SECRET)]);
    let url = format!("http://{}", node.addr());
    let options = json!({
        "transports": ["websocket"],
        "auth": { "token": tokens::user("alice", 600), "recovery": true },
    });
    let mut socket = Agent::spawn(Library::Js, &url, "/", options);
    let first = socket.next("connect", PATIENCE).await.unwrap();

    // Back with alice's token: the same socket.
    socket.cut();
    socket.next("disconnect", PATIENCE).await.unwrap();
    socket.reconnect();
    let again = socket.next("connect", PATIENCE).await.unwrap();
    assert_eq!(
        (again["recovered"].clone(), again["id"].clone()),
        (json!(true), first["id"].clone())
    );

    // Back with mallory's token (and alice's pid): a fresh socket of mallory's.
    socket.cut();
    socket.next("disconnect", PATIENCE).await.unwrap();
    socket.set_auth(json!({ "token": tokens::user("mallory", 600), "recovery": true }));
    socket.reconnect();
    let taken = socket.next("connect", PATIENCE).await.unwrap();
    assert_eq!(taken["recovered"], false, "{taken}");
    assert_ne!(taken["id"], first["id"], "{taken}");
}
