//! The same history scenarios against both stores: in memory, and on a real `redis-server`.

use std::time::Duration;

use bytes::Bytes;
use fred::interfaces::ServerInterface;
use herald_core::config::RedisConfig;
use herald_proto::bus::v1::ClientInfo;
use herald_router::history::{
    Append, Appended, Entry, HistoryStore, Limits, MemoryHistory, Query, RedisHistory, StoreError,
};
use herald_router::keys::Keys;
use herald_router::redis::{ConnectError, Redis};
use herald_testkit::{RedisCluster, RedisSentinel, RedisTls, Server};

const META_TTL: Duration = Duration::from_secs(600);

fn entry(data: &str, key: Option<&str>) -> Entry {
    Entry {
        data: Bytes::copy_from_slice(data.as_bytes()),
        publisher: Some(ClientInfo {
            client: "client-1".into(),
            user: "alice".into(),
            info: Bytes::from_static(br#"{"name":"Alice"}"#),
        }),
        idempotency_key: key.map(String::from),
        accepted_at_us: 42,
        ..Default::default()
    }
}

fn append(channel: &str, data: &str, key: Option<&str>, size: u32) -> Append {
    batch(channel, vec![entry(data, key)], size)
}

fn batch(channel: &str, entries: Vec<Entry>, size: u32) -> Append {
    Append {
        channel: channel.into(),
        entries,
        limits: Limits {
            size,
            ttl: Duration::from_secs(60),
            meta_ttl: META_TTL,
            idempotency_ttl: Duration::from_secs(60),
        },
    }
}

fn query(since: Option<u64>, limit: u32, reverse: bool) -> Query {
    Query {
        since,
        limit,
        reverse,
        max_bytes: usize::MAX,
    }
}

async fn one(store: &dyn HistoryStore, append: Append) -> Appended {
    let mut appended = store.append(append).await.unwrap();
    assert_eq!(appended.len(), 1);
    appended.remove(0)
}

async fn offsets(store: &dyn HistoryStore, channel: &str, q: Query) -> Vec<u64> {
    let page = store.read(channel, q).await.unwrap();
    page.publications.iter().map(|p| p.offset).collect()
}

async fn conformance(store: &dyn HistoryStore) {
    // A channel without a stream has no epoch yet; reading it creates none, and its first
    // publication starts one at offset 1.
    let empty = store.read("c", query(None, 10, false)).await.unwrap();
    assert_eq!(empty.position.offset, 0);
    assert_eq!(empty.position.epoch, "");

    let mut epoch = String::new();
    for i in 1..=5u64 {
        let appended = one(store, append("c", &format!("{{\"n\":{i}}}"), None, 3)).await;
        assert_eq!(appended.offset, i);
        assert!(!appended.epoch.is_empty());
        assert!(epoch.is_empty() || appended.epoch == epoch);
        epoch = appended.epoch;
    }
    let page = store.read("c", query(None, 0, false)).await.unwrap();
    assert_eq!((page.position.offset, page.position.epoch), (5, epoch));
    assert_eq!(offsets(store, "c", query(None, 10, false)).await, [3, 4, 5]);
    assert_eq!(offsets(store, "c", query(None, 2, false)).await, [4, 5]);
    assert_eq!(offsets(store, "c", query(None, 2, true)).await, [5, 4]);
    assert_eq!(offsets(store, "c", query(Some(3), 10, false)).await, [4, 5]);
    assert_eq!(offsets(store, "c", query(Some(5), 10, true)).await, [4, 3]);
    assert_eq!(
        offsets(store, "c", query(Some(0), 0, false)).await,
        Vec::<u64>::new()
    );

    let page = store.read("c", query(Some(4), 1, false)).await.unwrap();
    let publication = &page.publications[0];
    assert_eq!(&publication.data[..], b"{\"n\":5}");
    let publisher = publication.publisher.as_ref().unwrap();
    assert_eq!(
        (publisher.client.as_str(), publisher.user.as_str()),
        ("client-1", "alice")
    );
    assert_eq!(&publisher.info[..], br#"{"name":"Alice"}"#);
    assert_eq!(publication.accepted_at_us, 42);
    assert_eq!(publication.channel, "c");
    assert_eq!(page.position.offset, 5);

    let first = one(store, append("d", "1", Some("k"), 10)).await;
    let retry = one(store, append("d", "1", Some("k"), 10)).await;
    assert!(!first.duplicate);
    assert!(retry.duplicate);
    assert_eq!(first.offset, retry.offset);
    assert_eq!(offsets(store, "d", query(None, 10, false)).await, [1]);

    // A batch is appended in order; a key repeated inside it, or seen before, is stored once.
    let entries = vec![
        entry("a", None),
        entry("b", Some("k")),
        entry("c", Some("k9")),
        entry("d", Some("k9")),
        entry("e", None),
    ];
    let appended = store.append(batch("d", entries, 10)).await.unwrap();
    let landed: Vec<(u64, bool)> = appended.iter().map(|a| (a.offset, a.duplicate)).collect();
    assert_eq!(
        landed,
        [(2, false), (1, true), (3, false), (3, true), (4, false)]
    );
    let page = store.read("d", query(Some(1), 10, false)).await.unwrap();
    let data: Vec<&[u8]> = page.publications.iter().map(|p| &p.data[..]).collect();
    assert_eq!(data, [&b"a"[..], b"c", b"e"]);

    // A batch longer than the history keeps its newest entries only.
    let entries = (1..=5).map(|i| entry(&i.to_string(), None)).collect();
    store.append(batch("t", entries, 3)).await.unwrap();
    assert_eq!(offsets(store, "t", query(None, 10, false)).await, [3, 4, 5]);

    // Binary attachments come back raw, and a server publication has no publisher.
    let binary = Entry {
        data: Bytes::from_static(br#"{"event":"up","args":[{"_placeholder":true,"num":0}]}"#),
        attachments: vec![Bytes::from_static(&[0, 255, 1]), Bytes::new()],
        ..Default::default()
    };
    store.append(batch("e", vec![binary], 10)).await.unwrap();
    let page = store.read("e", query(None, 1, false)).await.unwrap();
    let publication = &page.publications[0];
    assert_eq!(
        publication.attachments,
        [Bytes::from_static(&[0, 255, 1]), Bytes::new()]
    );
    assert_eq!(publication.publisher, None);

    // A page holds what fits in its bytes, at least one publication, from the start of
    // what was asked for, and says when it was cut.
    let big = "x".repeat(10_000);
    for _ in 0..5 {
        one(store, append("f", &big, None, 10)).await;
    }
    let page = |since, reverse, max_bytes| async move {
        let query = Query {
            max_bytes,
            ..query(since, 10, reverse)
        };
        let page = store.read("f", query).await.unwrap();
        let offsets: Vec<u64> = page.publications.iter().map(|p| p.offset).collect();
        (offsets, page.truncated)
    };
    assert_eq!(page(None, false, 25_000).await, (vec![1, 2], true));
    assert_eq!(page(Some(2), false, 25_000).await, (vec![3, 4], true));
    assert_eq!(page(None, true, 25_000).await, (vec![5, 4], true));
    assert_eq!(page(Some(4), false, 1).await, (vec![5], false));
    assert_eq!(
        page(None, false, 1_000_000).await,
        (vec![1, 2, 3, 4, 5], false)
    );

    // Which channels got publications since when, for the consume stream: at least those
    // appended to since then (written in batches, so soon rather than at once), never one
    // whose history has expired by then.
    let before = herald_router::history::now_ms();
    one(store, append("active:1", "x", None, 10)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let active = store.active_since(before).await.unwrap();
        if active.contains(&"active:1".to_string()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{active:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Past the history's 60 s, nothing.
    let later = store.active_since(before + 120_000).await.unwrap();
    assert!(later.is_empty(), "{later:?}");
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(&MemoryHistory::new()).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let redis = Server::redis();
    let store = RedisHistory::new(&Redis::connect_url(&redis.url(), "t").await.unwrap());
    conformance(&store).await;
}

#[tokio::test]
async fn reading_channels_that_never_existed_leaves_nothing_in_redis() {
    let redis = Server::redis();
    let client = Redis::connect_url(&redis.url(), "t").await.unwrap();
    let store = RedisHistory::new(&client);
    for i in 0..200 {
        let page = store
            .read(&format!("nobody:{i}"), query(Some(0), 10, false))
            .await
            .unwrap();
        assert_eq!(page.position.epoch, "");
    }
    let keys: u64 = client.client().dbsize().await.unwrap();
    assert_eq!(keys, 0, "reads created keys");
}

#[tokio::test]
async fn redis_store_fails_while_redis_is_down_and_recovers() {
    let mut redis = Server::redis();
    let config = RedisConfig {
        url: redis.url(),
        key_prefix: "t".into(),
        timeout: Duration::from_secs(1),
        ..RedisConfig::default()
    };
    let store = RedisHistory::new(&Redis::connect(&config).await.unwrap());
    one(&store, append("c", "1", None, 10)).await;
    redis.stop();
    let down = store.append(append("c", "2", None, 10)).await;
    assert!(
        matches!(down, Err(StoreError::Unavailable(_))),
        "a Redis that is down is unavailable, which clients retry: {down:?}"
    );
    redis.restart();
    // Redis kept nothing: the channel starts a new epoch at offset 1.
    let recovered = herald_testkit::wait_for_async(Duration::from_secs(20), || async {
        store.append(append("c", "3", None, 10)).await.is_ok()
    })
    .await;
    assert!(recovered, "appends resume after Redis returns");
}

/// The settings that reach a [`RedisTls`] server: its CA, the client certificate, the
/// ACL user.
fn tls_config(server: &RedisTls) -> RedisConfig {
    let path = |p: &std::path::Path| p.to_string_lossy().into_owned();
    RedisConfig {
        url: server.url(),
        username: RedisTls::USER.into(),
        password: RedisTls::PASSWORD.into(),
        tls_ca_file: path(&server.tls.ca_file),
        tls_cert_file: path(&server.tls.cert_file),
        tls_key_file: path(&server.tls.key_file),
        key_prefix: "t".into(),
        ..RedisConfig::default()
    }
}

#[tokio::test]
async fn redis_store_conforms_over_tls_as_an_acl_user() {
    let server = RedisTls::start();
    let redis = Redis::connect(&tls_config(&server)).await.unwrap();
    conformance(&RedisHistory::new(&redis)).await;
}

#[tokio::test]
async fn wrong_redis_credentials_or_an_unknown_ca_fail_with_what_is_wrong() {
    let server = RedisTls::start();
    let wrong_password = RedisConfig {
        password: "not-the-password".into(),
        ..tls_config(&server)
    };
    let refused = Redis::connect(&wrong_password).await.err().unwrap();
    assert!(
        refused.to_string().contains("WRONGPASS"),
        "a wrong password says so: {refused}"
    );
    // The system's CAs do not know the test CA: the handshake fails, naming the
    // certificate.
    let unknown_ca = RedisConfig {
        tls_ca_file: String::new(),
        ..tls_config(&server)
    };
    let untrusted = Redis::connect(&unknown_ca).await.err().unwrap();
    assert!(
        untrusted.to_string().to_lowercase().contains("certificate"),
        "an untrusted server says so: {untrusted}"
    );
    let missing_ca = RedisConfig {
        tls_ca_file: "/nonexistent/ca.pem".into(),
        ..tls_config(&server)
    };
    let missing = Redis::connect(&missing_ca).await.err().unwrap();
    assert!(
        matches!(missing, ConnectError::Config(ref e) if e.contains("/nonexistent/ca.pem")),
        "a missing CA file is a configuration error naming it: {missing}"
    );
    // A file that holds no PEM certificate (the key, say) would trust nothing.
    let not_a_ca = RedisConfig {
        tls_ca_file: server.tls.key_file.to_string_lossy().into_owned(),
        ..tls_config(&server)
    };
    let unusable = Redis::connect(&not_a_ca).await.err().unwrap();
    assert!(
        matches!(unusable, ConnectError::Config(ref e) if e.contains("no PEM certificate")),
        "a CA file without certificates is a configuration error: {unusable}"
    );
}

#[tokio::test]
async fn redis_store_conforms_on_a_cluster_and_spreads_channels_over_its_nodes() {
    let cluster = RedisCluster::start();
    let redis = Redis::connect_url(&cluster.url(), "t").await.unwrap();
    let store = RedisHistory::new(&redis);
    conformance(&store).await;
    // Each channel's keys share one slot (its scripts would fail across slots); channels
    // spread over every node.
    // A name that starts with a closing brace would make an empty hash tag, which Redis
    // ignores: its keys still share a slot.
    one(&store, append("}brace{", "x", Some("k"), 10)).await;
    for i in 0..60 {
        let channel = format!("spread:{i}");
        let appended = one(&store, append(&channel, "x", Some("k"), 10)).await;
        assert_eq!(appended.offset, 1);
    }
    for node in 0..cluster.nodes.len() {
        assert!(cluster.keys_on(node) > 0, "node {node} holds no channel");
    }
}

/// Every publication in `channel`'s history, oldest first.
async fn everything(store: &dyn HistoryStore, channel: &str) -> Vec<(u64, Bytes)> {
    let mut all = Vec::new();
    let mut since = 0;
    loop {
        let page = store
            .read(channel, query(Some(since), 500, false))
            .await
            .unwrap();
        let Some(last) = page.publications.last() else {
            return all;
        };
        since = last.offset;
        all.extend(page.publications.into_iter().map(|p| (p.offset, p.data)));
    }
}

/// A store on `url` whose appends wait for one replica (`WAIT 1`).
async fn replicated_store(url: String) -> RedisHistory {
    let config = RedisConfig {
        url,
        key_prefix: "t".into(),
        timeout: Duration::from_secs(1),
        wait_replicas: 1,
        wait_timeout: Duration::from_secs(1),
        ..RedisConfig::default()
    };
    RedisHistory::new(&Redis::connect(&config).await.unwrap())
}

/// Appends to `channel` one after another, calls `kill` (which takes the primary away)
/// after 200 of them, and goes on until 200 more are acknowledged. Every refusal must be
/// "unavailable" (111); afterwards every acknowledged append must be in the history, at
/// its offset, with its data. Prints how long appends were refused, for
/// docs/operations.md (`--no-capture`).
async fn appends_survive_a_failover(store: &RedisHistory, channel: &str, kill: impl FnOnce()) {
    const BEFORE: usize = 200;
    const AFTER: usize = 200;
    let (mut acknowledged, mut unavailable) = (Vec::new(), 0);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let (mut kill, mut killed, mut back) = (Some(kill), None, None);
    for i in 0.. {
        if i == BEFORE {
            kill.take().expect("killed once")();
            killed = Some(std::time::Instant::now());
        }
        let data = format!("{i}");
        match store.append(append(channel, &data, None, 100_000)).await {
            Ok(appended) => {
                acknowledged.push((appended[0].offset, data));
                if unavailable > 0 && back.is_none() {
                    back = killed.map(|at| at.elapsed());
                }
            }
            Err(StoreError::Unavailable(_)) => unavailable += 1,
            Err(other) => panic!("during a failover an append is unavailable (111): {other:?}"),
        }
        if acknowledged.len() >= BEFORE + AFTER {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "appends did not resume after the failover ({} acknowledged)",
            acknowledged.len()
        );
    }
    assert!(unavailable > 0, "the failover was noticed");
    println!("failover: appends refused for {back:?} ({unavailable} refusals)");
    // No offset was given twice: each acknowledged one is past the one before.
    assert!(
        acknowledged.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets go forward"
    );
    let stored: std::collections::HashMap<u64, Bytes> =
        everything(store, channel).await.into_iter().collect();
    for (offset, data) in &acknowledged {
        assert_eq!(
            stored.get(offset).map(|d| &d[..]),
            Some(data.as_bytes()),
            "acknowledged publication {data} at offset {offset}"
        );
    }
}

#[tokio::test]
async fn acknowledged_appends_survive_a_sentinel_failover_and_keep_their_offsets() {
    let mut sentinel = RedisSentinel::start();
    let old_primary = sentinel.primary.port();
    let store = replicated_store(sentinel.url()).await;
    appends_survive_a_failover(&store, "failover", || sentinel.primary.stop()).await;
    let new_primary = sentinel.primary_port();
    assert!(
        new_primary.is_some() && new_primary != Some(old_primary),
        "a replica was promoted: {new_primary:?}"
    );
}

#[tokio::test]
async fn acknowledged_appends_survive_a_cluster_failover_and_keep_their_offsets() {
    // Two replicas a primary: one is left to confirm writes once the other is promoted.
    let mut cluster = RedisCluster::with_replicas(2);
    let store = replicated_store(cluster.url()).await;
    let key = Keys::new("t").history("failover");
    let primary = cluster
        .primary_of(&key)
        .expect("a primary holds the channel");
    appends_survive_a_failover(&store, "failover", || cluster.nodes[primary].stop()).await;
    let promoted = cluster.primary_of(&key);
    assert!(
        promoted.is_some() && promoted != Some(primary),
        "a replica was promoted: {promoted:?}"
    );
}

#[tokio::test]
async fn an_append_the_replicas_do_not_confirm_in_time_is_unavailable() {
    let sentinel = RedisSentinel::start();
    let config = RedisConfig {
        url: sentinel.url(),
        key_prefix: "t".into(),
        wait_replicas: 1,
        wait_timeout: Duration::from_millis(300),
        ..RedisConfig::default()
    };
    let redis = Redis::connect(&config).await.unwrap();
    let store = RedisHistory::new(&redis);
    one(&store, append("w", "confirmed", None, 10)).await;
    // Replicas that answer nothing (as across a partition) cannot confirm the next one.
    for replica in &sentinel.replicas {
        replica.pause();
    }
    let unconfirmed = store.append(append("w", "unconfirmed", None, 10)).await;
    // Reads do not queue behind the writes' WAIT: they have a connection of their own.
    let read = store.read("w", query(None, 10, false)).await;
    for replica in &sentinel.replicas {
        replica.resume();
    }
    assert!(
        matches!(unconfirmed, Err(StoreError::Unavailable(ref e)) if e.contains("replicas")),
        "{unconfirmed:?}"
    );
    assert!(read.is_ok(), "{read:?}");
    // Once they answer again, appends are confirmed.
    let resumed = herald_testkit::wait_for_async(Duration::from_secs(20), || async {
        store.append(append("w", "later", None, 10)).await.is_ok()
    })
    .await;
    assert!(resumed, "appends are confirmed again");
}
