//! The same presence scenarios against both stores: in memory, and on a real
//! `redis-server`.

use std::time::Duration;

use bytes::Bytes;
use herald_proto::bus::v1::ClientInfo;
use herald_router::presence::{MemoryPresence, PresenceStore, RedisPresence};
use herald_router::redis::Redis;
use herald_testkit::{RedisCluster, Server};

const LONG: Duration = Duration::from_secs(600);

fn client(id: &str, user: &str) -> ClientInfo {
    ClientInfo {
        client: id.into(),
        user: user.into(),
        info: Bytes::from_static(br#"{"name":"A"}"#),
    }
}

async fn ids(store: &dyn PresenceStore, channel: &str) -> Vec<String> {
    let mut ids: Vec<String> = store
        .list(channel)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.client)
        .collect();
    ids.sort();
    ids
}

async fn conformance(store: &dyn PresenceStore) {
    // A join is new once; a heartbeat of the same client is not.
    assert!(
        store
            .add("chat", &client("c1", "alice"), LONG)
            .await
            .unwrap()
    );
    assert!(
        !store
            .add("chat", &client("c1", "alice"), LONG)
            .await
            .unwrap()
    );
    assert!(store.add("chat", &client("c2", "bob"), LONG).await.unwrap());
    assert!(store.add("other", &client("c3", "",), LONG).await.unwrap());
    assert_eq!(ids(store, "chat").await, ["c1", "c2"]);
    let listed = store.list("chat").await.unwrap();
    let alice = listed.iter().find(|c| c.client == "c1").unwrap();
    assert_eq!(*alice, client("c1", "alice"));

    // A leave is real once.
    assert!(store.remove("chat", "c1").await.unwrap());
    assert!(!store.remove("chat", "c1").await.unwrap());
    assert!(!store.remove("nowhere", "c1").await.unwrap());
    assert_eq!(ids(store, "chat").await, ["c2"]);

    // Entries nobody confirms expire; a confirmed one stays.
    store
        .add("chat", &client("c4", "dave"), Duration::from_millis(50))
        .await
        .unwrap();
    assert_eq!(ids(store, "chat").await, ["c2", "c4"]);
    let expired = herald_testkit::wait_for_async(Duration::from_secs(10), || async {
        ids(store, "chat").await == ["c2"]
    })
    .await;
    assert!(expired, "an unconfirmed entry outlived its ttl");
    // Coming back after expiring is a new join, and a removal of an expired entry is not
    // a leave anyone was not told about already.
    assert!(
        store
            .add("chat", &client("c4", "dave"), LONG)
            .await
            .unwrap()
    );
    store
        .add("chat", &client("c5", "eve"), Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(!store.remove("chat", "c5").await.unwrap());
    assert_eq!(ids(store, "other").await, ["c3"]);
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(&MemoryPresence::new()).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let server = Server::redis();
    let redis = Redis::connect_url(&server.url(), "t").await.unwrap();
    conformance(&RedisPresence::new(&redis)).await;
}

#[tokio::test]
async fn redis_store_conforms_on_a_cluster() {
    let cluster = RedisCluster::start();
    let redis = Redis::connect_url(&cluster.url(), "t").await.unwrap();
    conformance(&RedisPresence::new(&redis)).await;
}
