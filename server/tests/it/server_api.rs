//! The gRPC server API on real processes: a backend's publish and broadcast reach native
//! and Socket.IO clients on every gateway; the API key; invalid arguments; the standard
//! health service.

use std::net::SocketAddr;

use herald_proto::api::v1::herald_api_client::HeraldApiClient;
use herald_proto::api::v1::{
    BroadcastRequest, HistoryRequest, PresenceRequest, PublishRequest, broadcast_result,
};
use herald_testkit::Cluster;
use herald_testkit::socketio::{Agent, Library};
use serde_json::json;
use tonic::Code;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use crate::{PATIENCE, client, herald, publications, standalone, subscribe};

async fn api(addr: SocketAddr) -> HeraldApiClient<Channel> {
    HeraldApiClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the API")
}

fn publish(channel: &str, data: serde_json::Value) -> PublishRequest {
    PublishRequest {
        channel: channel.into(),
        data: data.to_string(),
        idempotency_key: String::new(),
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
    let url = format!("http://{}", cluster.gateways[1].addr());
    let options = json!({ "transports": ["websocket"] });
    let mut socket = Agent::spawn(Library::Js, &url, "/", options);
    socket.next("connect", PATIENCE).await.unwrap();

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
    let event = socket.next("event", PATIENCE).await.unwrap();
    assert_eq!(event["event"], "message", "{event}");
    assert_eq!(
        event["args"][0],
        json!({ "alert": "maintenance" }),
        "{event}"
    );

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
                idempotency_key: String::new(),
            },
            Code::InvalidArgument,
            "not JSON",
        ),
        (
            PublishRequest {
                channel: "news".into(),
                data: "1".into(),
                idempotency_key: "k".repeat(200),
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
