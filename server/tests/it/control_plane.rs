//! The control plane between routers and gateways (gRPC, `control.*`): a command reaches
//! every live gateway and names the ones it did not reach; gateways answer only callers
//! with the control key or, with mutual TLS, a certificate of the cluster's CA.

use std::net::SocketAddr;

use herald_proto::api::v1::herald_api_client::HeraldApiClient;
use herald_proto::api::v1::{ChannelsRequest, DisconnectRequest, InfoRequest};
use herald_proto::control::v1::StatusRequest;
use herald_proto::control::v1::gateway_control_client::GatewayControlClient;
use herald_testkit::tls::TlsFiles;
use herald_testkit::{Cluster, wait_for_async};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::server_api::api;
use crate::{PATIENCE, client_with_token, close_frame, herald, tokens};

/// Disconnect every connection of `user`.
fn user(user: &str) -> DisconnectRequest {
    DisconnectRequest {
        user: user.into(),
        client: String::new(),
    }
}

/// Waits until the router's `Info` lists `gateways` gateways.
async fn listed(api: &HeraldApiClient<Channel>, gateways: usize) {
    let all_there = wait_for_async(PATIENCE, || {
        let mut api = api.clone();
        async move {
            let nodes = api.info(InfoRequest {}).await.unwrap().into_inner().nodes;
            let listed = nodes.iter().filter(|n| n.kind == "gateway").count();
            listed == gateways
                && nodes
                    .iter()
                    .all(|n| n.kind == "router" || !n.control.is_empty())
        }
    })
    .await;
    assert!(all_there, "Info did not list {gateways} gateways");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reaches_the_live_gateways_and_names_the_one_that_died() {
    let settings = [
        ("HERALD_AUTH__HMAC_SECRET", tokens::SECRET),
        // A dead gateway stays listed for three heartbeats: long enough to be called.
        ("HERALD_NODE__HEARTBEAT", "2s"),
    ];
    let mut cluster = Cluster::start(herald(), 3, 1, &settings);
    let mut api = api(cluster.routers[0].api_addr()).await;
    listed(&api, 3).await;
    let token = tokens::user("alice", 600);
    let (alice_1, _) = client_with_token(&cluster.ws_url(0), &token).await;
    let (alice_2, _) = client_with_token(&cluster.ws_url(1), &token).await;
    let (_alice_3, _) = client_with_token(&cluster.ws_url(2), &token).await;
    let (bob, bob_connected) =
        client_with_token(&cluster.ws_url(0), &tokens::user("bob", 600)).await;
    let dead = cluster.gateways[2].control_addr().to_string();
    cluster.gateways[2].kill();

    // One native client: only its own gateway is asked, so the dead one is not in the way.
    let bob_id = bob_connected["client"].as_str().unwrap().to_string();
    let reply = api
        .disconnect(DisconnectRequest {
            user: String::new(),
            client: bob_id,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (reply.connections, reply.failures.len()),
        (1, 0),
        "{reply:?}"
    );
    assert_eq!(close_frame(&bob).await.code, 3504);

    let started = std::time::Instant::now();
    let reply = api
        .disconnect(user("alice"))
        .await
        .expect("a partial success is a success")
        .into_inner();
    eprintln!("Disconnect answered in {:?}", started.elapsed());
    assert_eq!(reply.connections, 2, "{reply:?}");
    let [failure] = &reply.failures[..] else {
        panic!("one gateway not reached: {reply:?}");
    };
    assert_eq!(failure.node, "gateway-3");
    assert_eq!(failure.address, dead);
    assert!(failure.error.starts_with("unavailable"), "{failure:?}");
    for alice in [&alice_1, &alice_2] {
        assert_eq!(close_frame(alice).await.code, 3504);
    }

    let channels = api
        .channels(ChannelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(channels.gateways, 2, "{channels:?}");
    assert_eq!(channels.failures.len(), 1, "{channels:?}");
    assert_eq!(channels.failures[0].node, "gateway-3");

    // The router counts every call by outcome: the ones to the dead gateway failed.
    let counted = |outcome| {
        let scrape = crate::metrics::scrape(cluster.routers[0].addr());
        let labels = [("outcome", outcome)];
        crate::metrics::sample(&scrape, "herald_control_calls_total", &labels).unwrap_or(0.0)
    };
    // Bob's disconnect, alice's on two gateways, Channels on two.
    assert!(counted("ok") >= 5.0, "{}", counted("ok"));
    assert!(counted("unavailable") >= 2.0, "{}", counted("unavailable"));
}

/// The control service of `addr`, over `tls` when given.
async fn control(
    addr: SocketAddr,
    tls: Option<ClientTlsConfig>,
) -> Result<GatewayControlClient<Channel>, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
    if let Some(tls) = tls {
        endpoint = endpoint.tls_config(tls)?;
    }
    Ok(GatewayControlClient::new(endpoint.connect_lazy()))
}

fn client_tls(files: &TlsFiles, identity: &TlsFiles) -> ClientTlsConfig {
    let read = |path| std::fs::read(path).expect("a test TLS file");
    ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&files.ca_file)))
        .identity(Identity::from_pem(
            read(&identity.cert_file),
            read(&identity.key_file),
        ))
        .domain_name("localhost")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_mutual_tls_gateways_answer_only_the_clusters_certificates() {
    let ours = TlsFiles::generate("control-tls");
    let stranger = TlsFiles::generate("control-stranger");
    let text = TlsFiles::text;
    let (ca, cert, key) = (
        text(&ours.ca_file),
        text(&ours.cert_file),
        text(&ours.key_file),
    );
    let settings = [
        ("HERALD_AUTH__HMAC_SECRET", tokens::SECRET),
        ("HERALD_NODE__HEARTBEAT", "300ms"),
        ("HERALD_CONTROL__TLS_CA_FILE", ca.as_str()),
        ("HERALD_CONTROL__TLS_CERT_FILE", cert.as_str()),
        ("HERALD_CONTROL__TLS_KEY_FILE", key.as_str()),
        ("HERALD_CONTROL__TLS_SERVER_NAME", "localhost"),
    ];
    let cluster = Cluster::start(herald(), 1, 1, &settings);
    let mut api = api(cluster.routers[0].api_addr()).await;
    listed(&api, 1).await;
    let (alice, _) = client_with_token(&cluster.ws_url(0), &tokens::user("alice", 600)).await;
    let reply = api.disconnect(user("alice")).await.unwrap().into_inner();
    assert_eq!(
        (reply.connections, reply.failures.len()),
        (1, 0),
        "{reply:?}"
    );
    assert_eq!(close_frame(&alice).await.code, 3504);

    let gateway = cluster.gateways[0].control_addr();
    let mut member = control(gateway, Some(client_tls(&ours, &ours)))
        .await
        .unwrap();
    let status = member.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(status.node, "gateway-1");
    // A certificate of another CA, or none, or no TLS at all: the connection fails, and no
    // call is answered.
    let refused = |outcome: Result<tonic::Response<_>, tonic::Status>, who: &str| {
        let status = outcome.expect_err(who);
        // Not an answer of the service: the connection failed (with TLS 1.3 it may break
        // only once the server has read the client's certificate, hence several codes).
        let source = std::error::Error::source(&status);
        let transport = source.is_some_and(|e| e.is::<tonic::transport::Error>());
        assert!(transport, "{who}: {status:?}");
    };
    let mut outsider = control(gateway, Some(client_tls(&ours, &stranger)))
        .await
        .unwrap();
    refused(
        outsider.status(StatusRequest {}).await,
        "another CA's certificate",
    );
    let anonymous = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&ours.ca_file).unwrap()))
        .domain_name("localhost");
    let mut anonymous = control(gateway, Some(anonymous)).await.unwrap();
    refused(anonymous.status(StatusRequest {}).await, "no certificate");
    let mut plain = control(gateway, None).await.unwrap();
    refused(plain.status(StatusRequest {}).await, "no TLS");

    // A gateway whose certificate another CA signed: the router does not trust it, and
    // says so.
    let (ca, cert, key) = (
        text(&stranger.ca_file),
        text(&stranger.cert_file),
        text(&stranger.key_file),
    );
    let foreign_env = [
        ("HERALD_NODE__HEARTBEAT", "300ms"),
        ("HERALD_CONTROL__TLS_CA_FILE", ca.as_str()),
        ("HERALD_CONTROL__TLS_CERT_FILE", cert.as_str()),
        ("HERALD_CONTROL__TLS_KEY_FILE", key.as_str()),
        ("HERALD_CONTROL__TLS_SERVER_NAME", "localhost"),
    ];
    let nats = cluster.nats.url();
    let _foreign =
        herald_testkit::cluster::gateway(herald().as_ref(), "foreign", &nats, &foreign_env);
    listed(&api, 2).await;
    let reply = api
        .channels(ChannelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.gateways, 1, "{reply:?}");
    let [failure] = &reply.failures[..] else {
        panic!("the foreign gateway is reported: {reply:?}");
    };
    assert_eq!(failure.node, "foreign");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_control_key_a_gateway_refuses_and_the_router_says_so() {
    let settings = [
        ("HERALD_NODE__HEARTBEAT", "300ms"),
        ("HERALD_CONTROL__KEY", "c0ntrol"),
    ];
    let mut cluster = Cluster::start(herald(), 1, 1, &settings);
    let gateway = cluster.gateways[0].control_addr();
    let mut direct = control(gateway, None).await.unwrap();
    let refusal = direct.status(StatusRequest {}).await.unwrap_err();
    assert_eq!(refusal.code(), Code::Unauthenticated, "{refusal:?}");
    // With the key, but meant for another gateway (one whose address this gateway now
    // has): refused, so that a drain never lands on the wrong node.
    let meant_for = |node: &str| {
        let mut request = tonic::Request::new(StatusRequest {});
        let metadata = request.metadata_mut();
        metadata.insert("x-control-key", "c0ntrol".parse().unwrap());
        metadata.insert("x-herald-node", node.parse().unwrap());
        request
    };
    let wrong = direct.status(meant_for("gateway-9")).await.unwrap_err();
    assert_eq!(wrong.code(), Code::FailedPrecondition, "{wrong:?}");
    let right = direct.status(meant_for("gateway-1")).await.unwrap();
    assert_eq!(right.into_inner().node, "gateway-1");

    // A router with another key: the gateway is reported, not silently left out.
    let (nats, redis) = (cluster.nats.url(), cluster.redis.url());
    let env = [
        ("HERALD_NODE__HEARTBEAT", "300ms"),
        ("HERALD_CONTROL__KEY", "wrong"),
    ];
    cluster.routers.push(herald_testkit::cluster::router(
        herald().as_ref(),
        "router-2",
        &nats,
        Some(&redis),
        &env,
    ));
    let mut api = api(cluster.routers[1].api_addr()).await;
    listed(&api, 1).await;
    let reply = api
        .channels(ChannelsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.gateways, 0, "{reply:?}");
    assert!(reply.failures[0].error.contains("control key"), "{reply:?}");
}
