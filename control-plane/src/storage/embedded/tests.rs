//! Tests of what only the embedded store has: a file that survives restarts, and watchers
//! that lag behind the live broadcast. The shared contract is in `storage/conformance.rs`.

use std::time::Duration;

use futures::StreamExt;

use super::EmbeddedStore;
use crate::storage::{EventKind, ListOptions, Store, StoreError, WatchEvent, WatchStream};

async fn next_item(stream: &mut WatchStream) -> Option<Result<WatchEvent, StoreError>> {
    tokio::time::timeout(Duration::from_secs(10), stream.next()).await.expect("an item within the timeout")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_every_acknowledged_write() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("state.redb");
    let store = std::sync::Arc::new(EmbeddedStore::open(&path).expect("opens"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.spawn(async move { store.create(&format!("k/{i:02}"), vec![i]).await.expect("create") });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task finished");
    }
    let k0 = store.get("k/00").await.expect("get").expect("present");
    store.update("k/00", b"updated".to_vec(), k0.mod_revision).await.expect("update");
    store.delete("k/01", None).await.expect("delete");
    store.compact(5).await.expect("compact");
    let before = store.list("k/", ListOptions::default()).await.expect("list");
    let revision = store.current_revision().await.expect("revision");
    assert_eq!(revision, 22);

    // A live watch ends with `Closed` when the store goes away.
    let mut watch = store.watch("k/", 0).await.expect("watch");
    drop(tasks);
    let store = std::sync::Arc::into_inner(store).expect("the only handle");
    drop(store);
    assert!(matches!(next_item(&mut watch).await, Some(Err(StoreError::Closed))));
    assert!(next_item(&mut watch).await.is_none());
    drop(watch);

    let store = EmbeddedStore::open(&path).expect("reopens");
    assert_eq!(store.current_revision().await.expect("revision"), revision);
    assert_eq!(store.compacted_revision().await.expect("compacted"), 5);
    assert_eq!(store.list("k/", ListOptions::default()).await.expect("list"), before);
    assert_eq!(store.get("k/00").await.expect("get").expect("present").value, b"updated");
    // History survived too: a watch replays the last two events.
    let mut replay = store.watch("k/", revision - 2).await.expect("watch");
    let update = next_item(&mut replay).await.expect("item").expect("event");
    let delete = next_item(&mut replay).await.expect("item").expect("event");
    assert_eq!((update.kind, delete.kind), (EventKind::Update, EventKind::Delete));
    let next = store.create("k/new", vec![]).await.expect("create");
    assert_eq!(next.mod_revision, revision + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_catches_up_from_history() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open_with_event_buffer(&dir.path().join("s.redb"), 2).expect("opens");
    let mut stream = store.watch("lag/", 0).await.expect("watch");
    let mut written = Vec::new();
    for i in 0..40 {
        // Sequential writes: one commit, one broadcast batch each, far more than the buffer.
        written.push(store.create(&format!("lag/{i:02}"), vec![]).await.expect("create").mod_revision);
        store.create(&format!("other/{i:02}"), vec![]).await.expect("create");
    }
    let mut seen = Vec::new();
    while seen.len() < written.len() {
        seen.push(next_item(&mut stream).await.expect("item").expect("event").kv.mod_revision);
    }
    assert_eq!(seen, written);
    // And it is live again afterwards.
    let last = store.create("lag/last", vec![]).await.expect("create");
    assert_eq!(next_item(&mut stream).await.expect("item").expect("event").kv, last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_watcher_whose_history_was_compacted_fails() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = EmbeddedStore::open_with_event_buffer(&dir.path().join("s.redb"), 2).expect("opens");
    let mut stream = store.watch("lag/", 0).await.expect("watch");
    for i in 0..20 {
        store.create(&format!("lag/{i:02}"), vec![]).await.expect("create");
    }
    let current = store.current_revision().await.expect("revision");
    store.compact(current).await.expect("compact");
    assert!(matches!(next_item(&mut stream).await, Some(Err(StoreError::Compacted { .. }))));
    assert!(next_item(&mut stream).await.is_none());
}

/// A throughput smoke check, run by hand (`-- --ignored --nocapture`): group commit should
/// give thousands of durable creates a second at 32 concurrent clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing measurement, run by hand"]
async fn group_commit_throughput() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = std::sync::Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).expect("opens"));
    let started = std::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..32 {
        let store = store.clone();
        tasks.spawn(async move {
            for i in 0..200 {
                store.create(&format!("pods/ns{task}/p{i}"), vec![b'x'; 1024]).await.expect("create");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("task finished");
    }
    let rate = (32.0 * 200.0) / started.elapsed().as_secs_f64();
    eprintln!("embedded store: {rate:.0} creates/s at 32 clients");
}
