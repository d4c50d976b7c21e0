//! The same sync document scenarios against both stores: in memory, and on a real
//! `redis-server`. Each store keeps a channel's document beside its history, whose entries
//! are the document's patches.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use herald_proto::bus::v1::Position;
use herald_router::history::{Entry, HistoryStore, MemoryHistory, Query, RedisHistory};
use herald_router::redis::Redis;
use herald_router::sync::{
    Commit, Committed, DocumentStore, MemoryDocuments, RedisDocuments, Retention, Snapshot,
};
use herald_testkit::{RedisCluster, Server};

const TTL: Duration = Duration::from_secs(60);

fn retention(patches: u32) -> Retention {
    Retention {
        patches,
        ttl: TTL,
        idempotency_ttl: TTL,
    }
}

fn entry(patch: &str, key: Option<&str>) -> Entry {
    Entry {
        data: Bytes::copy_from_slice(patch.as_bytes()),
        idempotency_key: key.map(String::from),
        accepted_at_us: 7,
        ..Entry::default()
    }
}

fn batch(expected: &Position, doc: &str, patches: Vec<Entry>) -> Commit {
    Commit {
        channel: "doc:1".into(),
        expected: expected.clone(),
        doc: Bytes::copy_from_slice(doc.as_bytes()),
        patches,
        retention: retention(3),
    }
}

fn commit(expected: &Position, doc: &str, patch: &str, key: Option<&str>) -> Commit {
    batch(expected, doc, vec![entry(patch, key)])
}

fn applied(committed: Committed) -> Position {
    match committed {
        Committed::Applied(position) => position,
        other => panic!("expected the patch applied, got {other:?}"),
    }
}

async fn conformance(documents: &dyn DocumentStore, history: &dyn HistoryStore) {
    // No document yet: the empty object at revision 0 of no epoch, and nothing created.
    let empty = documents.snapshot("doc:1", TTL).await.unwrap();
    assert_eq!(empty, Snapshot::empty());

    let first = applied(
        documents
            .commit(commit(
                &empty.position,
                r#"{"a":1}"#,
                r#"{"a":1}"#,
                Some("k1"),
            ))
            .await
            .unwrap(),
    );
    assert_eq!(first.offset, 1);
    assert!(!first.epoch.is_empty(), "the first patch starts an epoch");
    let second = applied(
        documents
            .commit(commit(&first, r#"{"a":1,"b":2}"#, r#"{"b":2}"#, None))
            .await
            .unwrap(),
    );
    assert_eq!((second.offset, &second.epoch), (2, &first.epoch));
    let snapshot = documents.snapshot("doc:1", TTL).await.unwrap();
    assert_eq!(snapshot.position, second);
    assert_eq!(snapshot.doc, Bytes::from_static(br#"{"a":1,"b":2}"#));

    // A commit computed from an older revision changes nothing and returns the document.
    let stale = documents
        .commit(commit(&first, r#"{"x":1}"#, r#"{"x":1}"#, None))
        .await
        .unwrap();
    assert_eq!(stale, Committed::Stale(snapshot.clone()));
    // Without patches, a commit only checks where the document is.
    let checked = documents.commit(batch(&second, "", vec![])).await.unwrap();
    assert_eq!(
        checked,
        Committed::Applied(Position {
            offset: 3,
            epoch: first.epoch.clone()
        })
    );
    // A retried key is not applied again (nor is anything else of its batch), and its
    // patch comes back while it is kept.
    let patches = vec![entry(r#"{"z":1}"#, None), entry(r#"{"a":1}"#, Some("k1"))];
    let retried = documents
        .commit(batch(&second, r#"{"z":1}"#, patches))
        .await
        .unwrap();
    assert_eq!(
        retried,
        Committed::Duplicate {
            index: 1,
            position: first.clone(),
            patch: Some(Bytes::from_static(br#"{"a":1}"#)),
        }
    );
    assert_eq!(documents.snapshot("doc:1", TTL).await.unwrap(), snapshot);

    // Patches committed together take the next revisions in order; they are the
    // channel's history, trimmed to the retention.
    let patches = vec![entry(r#"{"b":3}"#, Some("k2")), entry(r#"{"c":4}"#, None)];
    let third = applied(
        documents
            .commit(batch(&second, r#"{"a":1,"b":3,"c":4}"#, patches))
            .await
            .unwrap(),
    );
    assert_eq!((third.offset, &third.epoch), (3, &first.epoch));
    let query = Query {
        since: Some(0),
        limit: 10,
        reverse: false,
        max_bytes: usize::MAX,
    };
    let page = history.read("doc:1", query).await.unwrap();
    assert_eq!(page.position.offset, 4);
    let kept: Vec<(u64, &[u8])> = page
        .publications
        .iter()
        .map(|p| (p.offset, p.data.as_ref()))
        .collect();
    assert_eq!(
        kept,
        [
            (2, &br#"{"b":2}"#[..]),
            (3, br#"{"b":3}"#),
            (4, br#"{"c":4}"#)
        ]
    );
    let latest = documents.snapshot("doc:1", TTL).await.unwrap();
    assert_eq!(latest.doc, Bytes::from_static(br#"{"a":1,"b":3,"c":4}"#));
    let retried = documents
        .commit(commit(&page.position, "{}", r#"{"b":3}"#, Some("k2")))
        .await
        .unwrap();
    assert_eq!(
        retried,
        Committed::Duplicate {
            index: 0,
            position: third.clone(),
            patch: Some(Bytes::from_static(br#"{"b":3}"#)),
        }
    );

    // Deleting starts a new epoch at revision 0, with the empty document and no patches.
    let deleted = documents.delete("doc:1", TTL).await.unwrap();
    assert_eq!(deleted.offset, 0);
    assert_ne!(deleted.epoch, first.epoch);
    let after = documents.snapshot("doc:1", TTL).await.unwrap();
    assert_eq!(after.position, deleted);
    assert_eq!(after.doc, Bytes::from_static(b"{}"));
    let page = history.read("doc:1", query).await.unwrap();
    assert!(page.publications.is_empty());
    let next = applied(
        documents
            .commit(commit(&deleted, r#"{"c":1}"#, r#"{"c":1}"#, None))
            .await
            .unwrap(),
    );
    assert_eq!((next.offset, &next.epoch), (1, &deleted.epoch));
    // A key retried after the delete is still answered with where its patch landed: in
    // the old epoch, whose patches are gone.
    let retried = documents
        .commit(commit(&next, r#"{"z":1}"#, r#"{"a":1}"#, Some("k1")))
        .await
        .unwrap();
    assert_eq!(
        retried,
        Committed::Duplicate {
            index: 0,
            position: first,
            patch: None,
        }
    );
}

#[tokio::test]
async fn memory_store_conforms() {
    let history = Arc::new(MemoryHistory::new());
    conformance(&MemoryDocuments::new(history.clone()), history.as_ref()).await;
}

#[tokio::test]
async fn redis_store_conforms() {
    let server = Server::redis();
    let redis = Redis::connect_url(&server.url(), "t").await.unwrap();
    conformance(&RedisDocuments::new(&redis), &RedisHistory::new(&redis)).await;
}

#[tokio::test]
async fn redis_store_conforms_on_a_cluster() {
    let cluster = RedisCluster::start();
    let redis = Redis::connect_url(&cluster.url(), "t").await.unwrap();
    conformance(&RedisDocuments::new(&redis), &RedisHistory::new(&redis)).await;
}
