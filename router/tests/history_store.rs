//! The same history scenarios against both stores: in memory, and on a real `redis-server`.

use std::time::Duration;

use bytes::Bytes;
use herald_router::history::{Append, HistoryStore, Limits, MemoryHistory, Query, RedisHistory};
use herald_testkit::RedisServer;

const META_TTL: Duration = Duration::from_secs(600);

fn append(channel: &str, data: &str, key: Option<&str>, size: u32) -> Append {
    Append {
        channel: channel.into(),
        data: Bytes::copy_from_slice(data.as_bytes()),
        origin: "client-1".into(),
        idempotency_key: key.map(String::from),
        accepted_at_us: 42,
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
    }
}

async fn offsets(store: &dyn HistoryStore, channel: &str, q: Query) -> Vec<u64> {
    let page = store.read(channel, q, META_TTL).await.unwrap();
    page.publications.iter().map(|p| p.offset).collect()
}

async fn conformance(store: &dyn HistoryStore) {
    // An empty channel already has an epoch, which its first publication keeps.
    let empty = store
        .read("c", query(None, 10, false), META_TTL)
        .await
        .unwrap();
    assert_eq!(empty.position.offset, 0);
    assert!(!empty.position.epoch.is_empty());

    for i in 1..=5u64 {
        let appended = store
            .append(append("c", &format!("{{\"n\":{i}}}"), None, 3))
            .await
            .unwrap();
        assert_eq!(appended.offset, i);
        assert_eq!(appended.epoch, empty.position.epoch);
    }
    assert_eq!(offsets(store, "c", query(None, 10, false)).await, [3, 4, 5]);
    assert_eq!(offsets(store, "c", query(None, 2, false)).await, [4, 5]);
    assert_eq!(offsets(store, "c", query(None, 2, true)).await, [5, 4]);
    assert_eq!(offsets(store, "c", query(Some(3), 10, false)).await, [4, 5]);
    assert_eq!(offsets(store, "c", query(Some(5), 10, true)).await, [4, 3]);
    assert_eq!(
        offsets(store, "c", query(Some(0), 0, false)).await,
        Vec::<u64>::new()
    );

    let page = store
        .read("c", query(Some(4), 1, false), META_TTL)
        .await
        .unwrap();
    let publication = &page.publications[0];
    assert_eq!(&publication.data[..], b"{\"n\":5}");
    assert_eq!(publication.origin, "client-1");
    assert_eq!(publication.accepted_at_us, 42);
    assert_eq!(publication.channel, "c");
    assert_eq!(page.position.offset, 5);

    let first = store.append(append("d", "1", Some("k"), 10)).await.unwrap();
    let retry = store.append(append("d", "1", Some("k"), 10)).await.unwrap();
    assert!(!first.duplicate);
    assert!(retry.duplicate);
    assert_eq!(first.offset, retry.offset);
    assert_eq!(offsets(store, "d", query(None, 10, false)).await, [1]);
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(&MemoryHistory::new()).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let redis = RedisServer::start();
    let store = RedisHistory::connect(&redis.url(), "t", Duration::from_secs(2))
        .await
        .unwrap();
    conformance(&store).await;
}

#[tokio::test]
async fn redis_store_fails_while_redis_is_down_and_recovers() {
    let mut redis = RedisServer::start();
    let store = RedisHistory::connect(&redis.url(), "t", Duration::from_secs(1))
        .await
        .unwrap();
    store.append(append("c", "1", None, 10)).await.unwrap();
    redis.stop();
    assert!(store.append(append("c", "2", None, 10)).await.is_err());
    redis.restart();
    // Redis kept nothing: the channel starts a new epoch at offset 1.
    let recovered = herald_testkit::wait_for_async(Duration::from_secs(20), || async {
        store.append(append("c", "3", None, 10)).await.is_ok()
    })
    .await;
    assert!(recovered, "appends resume after Redis returns");
}
