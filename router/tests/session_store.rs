//! The same Socket.IO session-record scenarios against both stores: in memory, and on a
//! real `redis-server`.

use std::time::Duration;

use bytes::Bytes;
use herald_router::redis::Redis;
use herald_router::sessions::{MemorySessions, RedisSessions, SessionStore, Stored};
use herald_testkit::{RedisCluster, Server};

const LONG: Duration = Duration::from_secs(600);

fn whole(record: &Bytes) -> Option<Stored> {
    Some(Stored {
        record: record.clone(),
        amendments: Vec::new(),
    })
}

async fn conformance(store: &dyn SessionStore) {
    let record = Bytes::from_static(b"record");
    store
        .save("p1", "holder-a", record.clone(), LONG)
        .await
        .unwrap();
    // A record is good for one recovery.
    assert_eq!(store.take("p1").await.unwrap(), whole(&record));
    assert_eq!(store.take("p1").await.unwrap(), None);
    assert_eq!(store.take("never-saved").await.unwrap(), None);

    // Only the holder may drop or refresh a record.
    store
        .save("p2", "holder-a", record.clone(), LONG)
        .await
        .unwrap();
    store.drop_held("p2", "holder-b").await.unwrap();
    store
        .touch("p2", "holder-b", Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(store.take("p2").await.unwrap(), whole(&record));
    store
        .save("p3", "holder-a", record.clone(), LONG)
        .await
        .unwrap();
    store.drop_held("p3", "holder-a").await.unwrap();
    assert_eq!(store.take("p3").await.unwrap(), None);

    // Amendments: one per channel, the newest wins, only from the holder; a whole save
    // starts over.
    store
        .save("p5", "holder-a", record.clone(), LONG)
        .await
        .unwrap();
    let mark = |text: &'static str| Some(Bytes::from_static(text.as_bytes()));
    for (holder, channel, value) in [
        ("holder-a", "/:a", mark("a1")),
        ("holder-a", "/:b", mark("b1")),
        ("holder-a", "/:a", None),
        ("holder-b", "/:c", mark("c1")),
    ] {
        store
            .amend("p5", holder, channel, value, LONG)
            .await
            .unwrap();
    }
    let mut stored = store
        .take("p5")
        .await
        .unwrap()
        .expect("the record was kept");
    stored.amendments.sort();
    assert_eq!(stored.record, record);
    assert_eq!(
        stored.amendments,
        [("/:a".to_string(), None), ("/:b".to_string(), mark("b1"))]
    );
    store
        .save("p6", "holder-a", record.clone(), LONG)
        .await
        .unwrap();
    store
        .amend("p6", "holder-a", "/:a", mark("a1"), LONG)
        .await
        .unwrap();
    store
        .save("p6", "holder-a", record.clone(), LONG)
        .await
        .unwrap();
    assert_eq!(store.take("p6").await.unwrap(), whole(&record));
    // Amending a record that is not there creates nothing.
    store
        .amend("p7", "holder-a", "/:a", mark("a1"), LONG)
        .await
        .unwrap();
    assert_eq!(store.take("p7").await.unwrap(), None);

    // A record expires when its holder stops refreshing it.
    store
        .save("p4", "holder-a", record.clone(), LONG)
        .await
        .unwrap();
    store
        .touch("p4", "holder-a", Duration::from_millis(1))
        .await
        .unwrap();
    let expired = herald_testkit::wait_for_async(Duration::from_secs(10), || async {
        store.take("p4").await.unwrap().is_none()
    })
    .await;
    assert!(expired, "the record outlived its ttl");
}

#[tokio::test]
async fn memory_store_conforms() {
    conformance(&MemorySessions::new()).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let server = Server::redis();
    let redis = Redis::connect_url(&server.url(), "t").await.unwrap();
    conformance(&RedisSessions::new(&redis)).await;
}

#[tokio::test]
async fn redis_store_conforms_on_a_cluster() {
    let cluster = RedisCluster::start();
    let redis = Redis::connect_url(&cluster.url(), "t").await.unwrap();
    conformance(&RedisSessions::new(&redis)).await;
}
