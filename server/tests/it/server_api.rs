//! The gRPC server API on real processes: a backend's publish and broadcast reach native
//! and Socket.IO clients on every gateway; the cluster's nodes, channels and clients
//! (info, channels, unsubscribe, disconnect); the API key; invalid arguments; the
//! standard health service.

use std::net::SocketAddr;

use herald_proto::api::v1 as api_v1;
use herald_proto::api::v1::herald_api_client::HeraldApiClient;
use herald_proto::api::v1::{
    BroadcastRequest, ChannelsRequest, DisconnectRequest, HistoryRequest, InfoRequest, NodeInfo,
    PresenceRequest, PublishRequest, SubscribeRequest, UnsubscribeRequest, broadcast_result,
};
use herald_testkit::socketio::{Agent, Library};
use herald_testkit::{Cluster, wait_for_async};
use serde_json::json;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use tonic_reflection::pb::v1::ServerReflectionRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

use crate::tokens;
use crate::{
    PATIENCE, client, client_with_token, close_frame, herald, publications, standalone, subscribe,
};

pub async fn api(addr: SocketAddr) -> HeraldApiClient<Channel> {
    HeraldApiClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the API")
}

fn publish(channel: &str, data: serde_json::Value) -> PublishRequest {
    PublishRequest {
        channel: channel.into(),
        data: data.to_string(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_reaches_native_and_socketio_clients_on_every_gateway() {
    let cluster = Cluster::start(herald(), 2, 2, &[]);
    let first = client(&cluster.ws_url(0)).await;
    let second = client(&cluster.ws_url(1)).await;
    for subscriber in [&first, &second] {
        subscribe(subscriber, "news").await;
    }
    let options = json!({ "transports": ["websocket"] });
    let mut sockets = Vec::new();
    for (gateway, library) in [(0, Library::Python), (1, Library::Js)] {
        let url = format!("http://{}", cluster.gateways[gateway].addr());
        let mut socket = Agent::spawn(library, &url, "/", options.clone());
        socket.next("connect", PATIENCE).await.unwrap();
        sockets.push(socket);
    }

    // Each router serves the API.
    let mut api = api(cluster.routers[1].api_addr()).await;
    let reply = api
        .publish(publish("news", json!({ "headline": "这是一条消息" })))
        .await
        .unwrap()
        .into_inner();
    let position = reply.position.unwrap();
    assert!(
        position.offset >= 1 && !position.epoch.is_empty(),
        "{position:?}"
    );
    for subscriber in [&first, &second] {
        let got = publications(subscriber, "news", 1).await;
        assert_eq!(got[0]["data"]["headline"], "这是一条消息");
        assert_eq!(got[0]["offset"], position.offset);
    }

    let mut api = self::api(cluster.routers[0].api_addr()).await;
    let broadcast = BroadcastRequest {
        channels: vec!["news".into(), "/".into(), "".into()],
        data: json!({ "alert": "maintenance" }).to_string(),
        ..Default::default()
    };
    let results = api.broadcast(broadcast).await.unwrap().into_inner().results;
    assert!(matches!(
        results[0].result,
        Some(broadcast_result::Result::Position(_))
    ));
    assert!(matches!(
        results[1].result,
        Some(broadcast_result::Result::Position(_))
    ));
    let Some(broadcast_result::Result::Error(error)) = &results[2].result else {
        panic!("an empty channel name was published: {results:?}");
    };
    assert_eq!(error.code, 102);
    for subscriber in [&first, &second] {
        let got = publications(subscriber, "news", 1).await;
        assert_eq!(got[0]["data"]["alert"], "maintenance");
    }
    for socket in &mut sockets {
        let event = socket.next("event", PATIENCE).await.unwrap();
        assert_eq!(event["event"], "message", "{event}");
        let alert = json!({ "alert": "maintenance" });
        assert_eq!(event["args"][0], alert, "{event}");
    }

    let history = api
        .history(HistoryRequest {
            channel: "news".into(),
            since: None,
            limit: 10,
            reverse: false,
        })
        .await
        .unwrap()
        .into_inner();
    let data: Vec<serde_json::Value> = history
        .publications
        .iter()
        .map(|p| serde_json::from_str(&p.data).unwrap())
        .collect();
    assert_eq!(
        data,
        [
            json!({ "headline": "这是一条消息" }),
            json!({ "alert": "maintenance" })
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_subscribes_a_users_connections_on_every_gateway_and_protocol() {
    let secret = [("HERALD_AUTH__HMAC_SECRET", tokens::SECRET)];
    let cluster = Cluster::start(herald(), 2, 2, &secret);
    let alice = tokens::user("alice", 600);
    let (native0, _) = client_with_token(&cluster.ws_url(0), &alice).await;
    let (native1, _) = client_with_token(&cluster.ws_url(1), &alice).await;
    let (bob, _) = client_with_token(&cluster.ws_url(0), &tokens::user("bob", 600)).await;
    let options = json!({ "transports": ["websocket"], "auth": { "token": alice } });
    let mut sockets = Vec::new();
    for (gateway, library) in [(0, Library::Js), (1, Library::Python)] {
        let url = format!("http://{}", cluster.gateways[gateway].addr());
        let mut socket = Agent::spawn(library, &url, "/", options.clone());
        socket.next("connect", PATIENCE).await.unwrap();
        sockets.push(socket);
    }

    let mut api = api(cluster.routers[0].api_addr()).await;
    let subscribe = |channel: &str| SubscribeRequest {
        user: "alice".into(),
        channel: channel.into(),
    };
    let told = api
        .subscribe(subscribe("/:vip"))
        .await
        .unwrap()
        .into_inner();
    // Two native connections and two Socket.IO connections.
    assert_eq!(told.connections, 4);
    for native in [&native0, &native1] {
        let push = native.next_push(PATIENCE).await.unwrap();
        assert_eq!(push["push"], "subscribe", "{push}");
        assert_eq!(push["channel"], "/:vip", "{push}");
        assert_eq!(push["offset"], 0, "{push}");
    }
    for socket in &mut sockets {
        let told = socket
            .find(PATIENCE, |r| r["event"] == "herald:subscribe")
            .await
            .unwrap();
        assert_eq!(
            told["args"][0],
            json!({ "channel": "/:vip", "room": "vip" })
        );
    }
    // The room is theirs now: a publication reaches all four, and only them.
    let sent = api
        .publish(publish("/:vip", json!({ "perk": "lounge" })))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.position.unwrap().offset, 1);
    for native in [&native0, &native1] {
        let got = publications(native, "/:vip", 1).await;
        assert_eq!(got[0]["data"], json!({ "perk": "lounge" }));
    }
    for socket in &mut sockets {
        let event = socket
            .find(PATIENCE, |r| r["event"] == "message")
            .await
            .unwrap();
        assert_eq!(event["args"][0], json!({ "perk": "lounge" }), "{event}");
    }
    // Bob was not subscribed: the first push he sees is his own subscription's.
    subscribe_and_publish_to(&bob, "/:vip", &mut api).await;

    // Subscribing again changes nothing, and tells nobody again.
    let told = api
        .subscribe(subscribe("/:vip"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(told.connections, 4);
    let refused = api.subscribe(SubscribeRequest {
        user: String::new(),
        channel: "news".into(),
    });
    assert_eq!(refused.await.unwrap_err().code(), Code::InvalidArgument);

    // A broadcast retried with its idempotency key is stored once per channel.
    let broadcast = BroadcastRequest {
        channels: vec!["news".into(), "/:vip".into()],
        data: json!({ "n": 1 }).to_string(),
        idempotency_key: "b-1".into(),
        ..Default::default()
    };
    let positions = |response: tonic::Response<api_v1::BroadcastResponse>| {
        response
            .into_inner()
            .results
            .into_iter()
            .map(|r| match r.result {
                Some(broadcast_result::Result::Position(p)) => p.offset,
                other => panic!("{other:?}"),
            })
            .collect::<Vec<_>>()
    };
    let first = positions(api.broadcast(broadcast.clone()).await.unwrap());
    let again = positions(api.broadcast(broadcast).await.unwrap());
    assert_eq!(first, again);
    // "/:vip" had two publications before.
    assert_eq!(first, [1, 3]);
}

/// Subscribes `client` to `channel`, publishes there through `api`, and checks that the
/// client's first push is that publication: nothing of the channel came before.
async fn subscribe_and_publish_to(
    client: &herald_testkit::NativeClient,
    channel: &str,
    api: &mut HeraldApiClient<Channel>,
) {
    subscribe(client, channel).await;
    let data = json!({ "after": "subscribing" });
    api.publish(publish(channel, data.clone())).await.unwrap();
    let got = publications(client, channel, 1).await;
    assert_eq!(got[0]["data"], data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_need_the_api_key_and_probes_do_not() {
    let node = standalone(&[("HERALD_API__KEY", "k3y")]);
    let addr = node.api_addr();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let key = |value: &'static str| {
        move |mut request: tonic::Request<()>| {
            request
                .metadata_mut()
                .insert("x-api-key", MetadataValue::from_static(value));
            Ok(request)
        }
    };
    let mut without = HeraldApiClient::new(channel.clone());
    let status = without
        .publish(publish("news", json!(1)))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut wrong = HeraldApiClient::with_interceptor(channel.clone(), key("guess"));
    let status = wrong.publish(publish("news", json!(1))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut right = HeraldApiClient::with_interceptor(channel.clone(), key("k3y"));
    right.publish(publish("news", json!(1))).await.unwrap();

    // grpcurl finds the services by reflection, without the key.
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().expect("an answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a list of services: {answer:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(names.contains(&"herald.api.v1.HeraldApi"), "{names:?}");
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");

    // Kubernetes probes and grpcurl's health check carry no key.
    let mut health = HealthClient::new(channel);
    for service in ["", "herald.api.v1.HeraldApi"] {
        let request = HealthCheckRequest {
            service: service.into(),
        };
        let status = health.check(request).await.unwrap().into_inner().status;
        assert_eq!(status, 1, "{service:?} is not SERVING");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_arguments_are_refused_with_a_reason() {
    let node = standalone(&[]);
    let mut api = api(node.api_addr()).await;
    for (request, code, words) in [
        (publish("", json!(1)), Code::InvalidArgument, "empty"),
        (
            PublishRequest {
                channel: "news".into(),
                data: "{not json".into(),
                ..Default::default()
            },
            Code::InvalidArgument,
            "not JSON",
        ),
        (
            PublishRequest {
                channel: "news".into(),
                data: "1".into(),
                idempotency_key: "k".repeat(200),
                ..Default::default()
            },
            Code::InvalidArgument,
            "idempotency_key",
        ),
    ] {
        let status = api.publish(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(words), "{status:?}");
    }
    let status = api
        .history(HistoryRequest {
            channel: "news".into(),
            since: None,
            limit: 1_000_000,
            reverse: false,
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = api
        .presence(PresenceRequest {
            channel: "news".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("108"), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_answers_for_its_nodes_channels_and_clients() {
    let settings = [
        ("HERALD_AUTH__HMAC_SECRET", tokens::SECRET),
        ("HERALD_NODE__HEARTBEAT", "300ms"),
    ];
    let mut cluster = Cluster::start(herald(), 2, 2, &settings);
    let mut api = api(cluster.routers[0].api_addr()).await;

    // Info: all four nodes, by their heartbeats.
    let kinds = |nodes: &[NodeInfo]| {
        let mut kinds: Vec<(String, String)> = nodes
            .iter()
            .map(|n| (n.id.clone(), n.kind.clone()))
            .collect();
        kinds.sort();
        kinds
    };
    let all = [
        ("gateway-1", "gateway"),
        ("gateway-2", "gateway"),
        ("router-1", "router"),
        ("router-2", "router"),
    ]
    .map(|(id, kind)| (id.to_string(), kind.to_string()));
    let listed = wait_for_async(PATIENCE, || {
        let mut api = api.clone();
        let all = all.clone();
        async move { kinds(&api.info(InfoRequest {}).await.unwrap().into_inner().nodes) == all }
    })
    .await;
    assert!(listed, "Info did not list the four nodes");

    // Channels, counted over both gateways.
    let (alice_a, _) = client_with_token(&cluster.ws_url(0), &tokens::user("alice", 600)).await;
    let (alice_b, _) = client_with_token(&cluster.ws_url(1), &tokens::user("alice", 600)).await;
    let (bob, _) = client_with_token(&cluster.ws_url(0), &tokens::user("bob", 600)).await;
    for (client, channel) in [
        (&alice_a, "news"),
        (&alice_b, "news"),
        (&bob, "news"),
        (&bob, "chat:a"),
    ] {
        subscribe(client, channel).await;
    }
    let url = format!("http://{}", cluster.gateways[1].addr());
    let options = json!({
        "transports": ["websocket"],
        "auth": { "token": tokens::user("alice", 600) },
    });
    let mut alice_app = Agent::spawn(Library::Js, &url, "/", options);
    alice_app.next("connect", PATIENCE).await.unwrap();
    let channels = api
        .channels(ChannelsRequest {
            pattern: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<(String, u32)> = channels
        .channels
        .iter()
        .map(|c| (c.channel.clone(), c.subscribers))
        .collect();
    assert_eq!(channels.gateways, 2);
    for expected in [("news", 3), ("chat:a", 1), ("/", 1), ("user:#alice", 3)] {
        let expected = (expected.0.to_string(), expected.1);
        assert!(counts.contains(&expected), "{expected:?} not in {counts:?}");
    }
    let chat = api
        .channels(ChannelsRequest {
            pattern: "chat:*".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(chat.channels.len(), 1, "{chat:?}");

    // Unsubscribe bob from news; he is told, and may subscribe again.
    let unsubscribed = api
        .unsubscribe(UnsubscribeRequest {
            user: "bob".into(),
            channel: "news".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unsubscribed.connections, 1);
    let push = bob.next_push(PATIENCE).await.unwrap();
    assert_eq!(push, json!({ "push": "unsubscribe", "channel": "news" }));
    subscribe(&bob, "news").await;

    // Disconnect alice: every connection of hers, on both gateways, and nobody else's.
    let disconnected = api
        .disconnect(DisconnectRequest {
            user: "alice".into(),
            client: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disconnected.connections, 3);
    for connection in [&alice_a, &alice_b] {
        let closed = close_frame(connection).await;
        assert_eq!(
            (closed.code, closed.reason.as_str()),
            (3504, "disconnected by the server")
        );
    }
    let told = alice_app
        .find(PATIENCE, |r| r["event"] == "herald:disconnect")
        .await
        .unwrap();
    assert_eq!(told["args"][0]["code"], 3504, "{told}");
    let gone = alice_app.next("disconnect", PATIENCE).await.unwrap();
    assert_eq!(gone["reason"], "io server disconnect");
    bob.ok("ping", json!({})).await.unwrap();

    // One client, by its id: carol's second connection goes, her first stays.
    let (carol_a, _) = client_with_token(&cluster.ws_url(0), &tokens::user("carol", 600)).await;
    let (carol_b, hello) = client_with_token(&cluster.ws_url(1), &tokens::user("carol", 600)).await;
    let client = hello["client"].as_str().unwrap().to_string();
    let disconnected = api
        .disconnect(DisconnectRequest {
            user: String::new(),
            client,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(disconnected.connections, 1);
    let closed = close_frame(&carol_b).await;
    assert_eq!(closed.code, 3504);
    carol_a.ok("ping", json!({})).await.unwrap();

    // A killed node drops out of Info after three missed heartbeats.
    cluster.gateways[1].kill();
    let dropped = wait_for_async(PATIENCE, || {
        let mut api = api.clone();
        async move {
            let nodes = api.info(InfoRequest {}).await.unwrap().into_inner().nodes;
            nodes.len() == 3 && nodes.iter().all(|n| n.id != "gateway-2")
        }
    })
    .await;
    assert!(dropped, "the killed gateway stayed in Info");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_can_be_served_over_tls() {
    let (cert, key) = (
        tokens::key_file("tls_cert.pem"),
        tokens::key_file("tls_key.pem"),
    );
    let node = standalone(&[
        ("HERALD_API__TLS_CERT_FILE", &cert),
        ("HERALD_API__TLS_KEY_FILE", &key),
    ]);
    let port = node.api_addr().port();
    let ca = Certificate::from_pem(std::fs::read(&cert).unwrap());
    let tls = ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .expect("a TLS connection");
    // The node lists itself once its first heartbeat has gone round.
    let api = HeraldApiClient::new(channel);
    let listed = wait_for_async(PATIENCE, || {
        let mut api = api.clone();
        async move {
            api.info(InfoRequest {})
                .await
                .unwrap()
                .into_inner()
                .nodes
                .len()
                == 1
        }
    })
    .await;
    assert!(listed, "Info over TLS did not list the node");
    // Plain HTTP/2 gets nowhere.
    let plain = HeraldApiClient::connect(format!("http://{}", node.api_addr())).await;
    if let Ok(mut plain) = plain {
        assert!(plain.info(InfoRequest {}).await.is_err());
    }
}
