//! Routers on Redis as operators run it: behind Sentinel through a failover, as a
//! Cluster, over TLS as an ACL user; each configured as a deployment would be, through
//! `HERALD_REDIS__*` environment variables.

use std::collections::BTreeSet;

use herald_testkit::cluster;
use herald_testkit::node::http_status;
use herald_testkit::{RedisCluster, RedisSentinel, RedisTls, Server};
use serde_json::json;

use super::faults::{is_error, is_ok, publish_until};
use super::*;

/// A gateway on `nats`.
fn gateway(nats: &Server) -> HeraldProcess {
    cluster::gateway(std::path::Path::new(herald()), "gateway", &nats.url(), &[])
}

/// A router on `nats`, its Redis settings in `env`.
fn router(name: &str, nats: &Server, env: &[(&str, &str)]) -> HeraldProcess {
    cluster::router(std::path::Path::new(herald()), name, &nats.url(), None, env)
}

/// Redis behind Sentinel, its primary SIGKILLed while a client publishes. The routers
/// find the promoted replica by themselves; meanwhile publishes are refused with 111
/// (temporary); with `wait_replicas = 1` every acknowledged publication keeps its offset
/// and reaches the subscriber, in order, in the same epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_loses_no_acknowledged_publication() {
    let mut redis = RedisSentinel::start();
    let nats = Server::nats();
    let url = redis.url();
    let settings = [
        ("HERALD_REDIS__URL", url.as_str()),
        ("HERALD_REDIS__WAIT_REPLICAS", "1"),
        ("HERALD_REDIS__TIMEOUT", "1s"),
    ];
    let routers = [
        router("router-1", &nats, &settings),
        router("router-2", &nats, &settings),
    ];
    let nats_url = nats.url();
    let args = ["gateway", "--listen", "127.0.0.1:0", "--nats", &nats_url];
    let gateway = HeraldProcess::spawn_with_env("gateway", herald(), &args, &[]);
    gateway.wait_ready(PATIENCE);

    let channel = "chat:failover";
    let publisher = client(&gateway.ws_url()).await;
    let subscriber = client(&gateway.ws_url()).await;
    subscribe(&subscriber, channel).await;
    let mut acked = BTreeSet::new();
    let first = publish(&publisher, channel, json!("before")).await;
    acked.insert(first["offset"].as_u64().expect("an offset"));
    for _ in 0..50 {
        let result = publish(&publisher, channel, json!("before")).await;
        acked.insert(result["offset"].as_u64().expect("an offset"));
    }
    redis.primary.stop();
    publish_until(&publisher, channel, &mut acked, is_error).await;
    let resumed = publish_until(&publisher, channel, &mut acked, is_ok).await;
    assert_eq!(resumed["result"]["epoch"], first["epoch"], "the same epoch");
    // Both routers serve again (requests go to either), and are ready.
    for _ in 0..40 {
        let result = publish(&publisher, channel, json!("after")).await;
        acked.insert(result["offset"].as_u64().expect("an offset"));
    }
    for router in &routers {
        assert_eq!(http_status(router.addr(), "/readyz"), Some(200));
    }

    // Every acknowledged publication arrives, in order; a refused one may arrive as well
    // (its append can have landed with too few replicas to acknowledge it).
    let last = publish(&publisher, channel, json!("last")).await;
    acked.insert(last["offset"].as_u64().expect("an offset"));
    every_acknowledged_arrives(&subscriber, channel, &acked).await;
}

/// Publishes on `channels` channels through `gateway` and reads each one's history back.
async fn publish_and_read_back(gateway: &HeraldProcess, channels: usize) {
    let client = client(&gateway.ws_url()).await;
    for i in 0..channels {
        let channel = format!("chat:room-{i}");
        let published = publish(&client, &channel, json!({ "n": i })).await;
        assert_eq!(published["offset"], 1, "{published}");
        let history = client
            .ok("history", json!({ "channel": channel, "limit": 10 }))
            .await
            .expect("history");
        let publications = history["publications"].as_array().expect("publications");
        assert_eq!(publications.len(), 1, "{history}");
        assert_eq!(publications[0]["data"], json!({ "n": i }));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_on_a_redis_cluster_spread_channels_over_its_nodes() {
    let redis = RedisCluster::start();
    let nats = Server::nats();
    let url = redis.url();
    let settings = [("HERALD_REDIS__URL", url.as_str())];
    let _routers = [
        router("router-1", &nats, &settings),
        router("router-2", &nats, &settings),
    ];
    let gateway = gateway(&nats);
    publish_and_read_back(&gateway, 30).await;
    for node in 0..redis.nodes.len() {
        assert!(redis.keys_on(node) > 0, "node {node} holds no channel");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_reaches_redis_over_tls_as_an_acl_user() {
    let redis = RedisTls::start();
    let nats = Server::nats();
    let (url, ca, cert, key) = (
        redis.url(),
        redis.tls.ca_file.to_string_lossy().into_owned(),
        redis.tls.cert_file.to_string_lossy().into_owned(),
        redis.tls.key_file.to_string_lossy().into_owned(),
    );
    let settings = [
        ("HERALD_REDIS__URL", url.as_str()),
        ("HERALD_REDIS__USERNAME", RedisTls::USER),
        ("HERALD_REDIS__PASSWORD", RedisTls::PASSWORD),
        ("HERALD_REDIS__TLS_CA_FILE", ca.as_str()),
        ("HERALD_REDIS__TLS_CERT_FILE", cert.as_str()),
        ("HERALD_REDIS__TLS_KEY_FILE", key.as_str()),
    ];
    let _router = router("router-1", &nats, &settings);
    let gateway = gateway(&nats);
    publish_and_read_back(&gateway, 3).await;
}
