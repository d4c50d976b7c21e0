//! Prometheus metrics of a real cluster: after traffic, the families of gateways and routers
//! have moved by what the traffic did, and no label carries a channel or user name.

use std::net::SocketAddr;

use herald_testkit::node::http_get;
use herald_testkit::{Cluster, TestBackend, wait_for};
use serde_json::json;

use crate::{PATIENCE, client, herald, publications, publish, refused, subscribe};

/// The `/metrics` exposition of the node at `addr`.
pub fn scrape(addr: SocketAddr) -> String {
    let (status, body) = http_get(addr, "/metrics").expect("a scrape");
    assert_eq!(status, 200, "{body}");
    body
}

/// Sum of the samples of `name` whose labels include every one of `labels`; `None` when
/// there is no such series.
pub fn sample(exposition: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (metric, series_labels) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let matches = metric == name
            && labels
                .iter()
                .all(|(k, v)| series_labels.contains(&format!("{k}=\"{v}\"")));
        if matches {
            let value: f64 = value.parse().expect("a numeric sample");
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Writes the scrapes to `$METRICS_SCRAPE_DIR`, when set, for `deploy/check.sh` to
/// validate the dashboards and the exposition against. (Not `HERALD_…`: the nodes this
/// test starts inherit the environment, and would refuse an unknown setting.)
fn keep(scrapes: &[(&str, &str)]) {
    let Ok(dir) = std::env::var("METRICS_SCRAPE_DIR") else {
        return;
    };
    std::fs::create_dir_all(&dir).expect("create the scrape directory");
    for (name, exposition) in scrapes {
        let path = std::path::Path::new(&dir).join(name);
        std::fs::write(&path, exposition).expect("write a scrape");
    }
}

fn at_least(exposition: &str, name: &str, labels: &[(&str, &str)], min: f64) {
    let value = sample(exposition, name, labels);
    assert!(
        value.is_some_and(|v| v >= min),
        "{name}{labels:?} = {value:?}, expected at least {min}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_traffic_shows_the_counters_moved() {
    const N: usize = 20;
    // A publish hook on one namespace, for the hooks' series.
    let backend = TestBackend::start().await;
    let hooked = [(
        "HERALD_HOOKS__NAMESPACES__HOOKED__PUBLISH__URL",
        backend.grpc_url.as_str(),
    )];
    let cluster = Cluster::start(herald(), 2, 1, &hooked);
    let (near, far) = (&cluster.gateways[0], &cluster.gateways[1]);
    let channel = "chat:metrics-secret-room";

    let subscriber = client(&near.ws_url()).await;
    let start = subscribe(&subscriber, channel).await;
    let publisher = client(&far.ws_url()).await;
    for n in 0..N {
        publish(&publisher, channel, json!(n)).await;
    }
    publications(&subscriber, channel, N).await;
    let error = refused(&publisher, "publish", json!({ "channel": "", "data": 1 })).await;
    assert_eq!(error["code"], 102, "{error}");
    publish(&publisher, "hooked:1", json!({ "text": "stamp" })).await;
    let error = refused(
        &publisher,
        "publish",
        json!({ "channel": "hooked:1", "data": "badword" }),
    )
    .await;
    assert_eq!(error["code"], 1003, "{error}");
    // A returning subscription that recovers.
    subscriber
        .ok("unsubscribe", json!({ "channel": channel }))
        .await
        .unwrap();
    publish(&publisher, channel, json!("missed")).await;
    let last = start["offset"].as_u64().unwrap() + N as u64;
    let params =
        json!({ "channel": channel, "recover": true, "offset": last, "epoch": start["epoch"] });
    let result = subscriber.ok("subscribe", params).await.unwrap();
    assert_eq!(result["recovered"], true, "{result}");

    let far_scrape = scrape(far.addr());
    let native = [("protocol", "native")];
    at_least(
        &far_scrape,
        "herald_messages_received_total",
        &native,
        (N + 1) as f64,
    );
    at_least(
        &far_scrape,
        "herald_publish_duration_seconds_count",
        &native,
        (N + 1) as f64,
    );
    let ok = [("protocol", "native"), ("code", "0")];
    at_least(&far_scrape, "herald_replies_total", &ok, (N + 2) as f64);
    let bad_channel = [("protocol", "native"), ("code", "102")];
    at_least(&far_scrape, "herald_replies_total", &bad_channel, 1.0);
    at_least(&far_scrape, "herald_connections_opened_total", &native, 1.0);
    let app = [("protocol", "native"), ("code", "app")];
    at_least(&far_scrape, "herald_replies_total", &app, 1.0);
    for result in ["ok", "refused"] {
        let labels = [
            ("hook", "publish"),
            ("namespace", "hooked"),
            ("result", result),
        ];
        at_least(&far_scrape, "herald_hook_calls_total", &labels, 1.0);
    }
    let publish_hook = [("hook", "publish"), ("namespace", "hooked")];
    at_least(
        &far_scrape,
        "herald_hook_duration_seconds_count",
        &publish_hook,
        2.0,
    );

    let near_scrape = scrape(near.addr());
    at_least(
        &near_scrape,
        "herald_messages_sent_total",
        &native,
        N as f64,
    );
    at_least(
        &near_scrape,
        "herald_delivery_latency_seconds_count",
        &[],
        N as f64,
    );
    let websocket = [("protocol", "native"), ("transport", "websocket")];
    assert_eq!(
        sample(&near_scrape, "herald_connections", &websocket),
        Some(1.0)
    );
    assert_eq!(sample(&near_scrape, "herald_subscriptions", &[]), Some(1.0));
    assert_eq!(sample(&near_scrape, "herald_channels", &[]), Some(1.0));
    let recovered = [("protocol", "native"), ("result", "recovered")];
    assert_eq!(
        sample(&near_scrape, "herald_recoveries_total", &recovered),
        Some(1.0)
    );
    assert_eq!(
        sample(&near_scrape, "herald_nats_connected", &[]),
        Some(1.0)
    );
    assert_eq!(sample(&near_scrape, "herald_draining", &[]), Some(0.0));
    let gateway = [("mode", "gateway")];
    assert_eq!(
        sample(&near_scrape, "herald_build_info", &gateway),
        Some(1.0)
    );

    let router_scrape = scrape(cluster.routers[0].addr());
    at_least(
        &router_scrape,
        "herald_publications_total",
        &[],
        (N + 1) as f64,
    );
    let append = [("operation", "history_append")];
    at_least(
        &router_scrape,
        "herald_redis_operation_duration_seconds_count",
        &append,
        1.0,
    );
    assert_eq!(sample(&router_scrape, "herald_redis_up", &[]), Some(1.0));
    at_least(&router_scrape, "herald_nats_connects_total", &[], 1.0);
    let router = [("mode", "router")];
    assert_eq!(
        sample(&router_scrape, "herald_build_info", &router),
        Some(1.0)
    );

    keep(&[
        ("gateway.prom", &near_scrape),
        ("gateway-publisher.prom", &far_scrape),
        ("router.prom", &router_scrape),
    ]);
    for exposition in [&far_scrape, &near_scrape, &router_scrape] {
        assert!(
            !exposition.contains("metrics-secret-room"),
            "a channel name became a label"
        );
    }

    // The subscriber leaves: its gateway counts a disconnect by the client.
    drop(subscriber);
    let client_left = [("protocol", "native"), ("code", "client")];
    let counted = wait_for(PATIENCE, || {
        let exposition = scrape(near.addr());
        sample(&exposition, "herald_disconnects_total", &client_left) == Some(1.0)
            && sample(&exposition, "herald_connections", &websocket) == Some(0.0)
    });
    assert!(counted, "{}", scrape(near.addr()));
}
