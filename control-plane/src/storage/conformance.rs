//! The store conformance suite: one set of async checks of the [`Store`] contract, run
//! unchanged against the embedded backend (on a temporary file) and the etcd backend (on a
//! real etcd this suite starts itself). A behaviour both backends pass here is one the API
//! server may rely on.

use std::time::Duration;

use futures::StreamExt;

use super::{KeyValue, ListOptions, SharedStore, StoreError, WatchEvent, WatchStream};

mod watch;
use self::watch::{
    compaction_makes_old_revisions_gone, delete_event_carries_the_previous_value, watch_filters_by_prefix,
    watch_from_now_sees_only_later_events, watch_replays_history_then_continues_live,
};

/// Every wait in the suite is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

async fn next_event(stream: &mut WatchStream) -> WatchEvent {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a watch event within the timeout")
        .expect("the watch stream is still open")
        .expect("a watch event, not an error")
}

/// Asserts that nothing arrives on `stream` for a short while.
async fn assert_quiet(stream: &mut WatchStream) {
    let got = tokio::time::timeout(Duration::from_millis(300), stream.next()).await;
    assert!(got.is_err(), "unexpected watch item: {got:?}");
}

/// The outcome of watching after `after`: the error from `watch` or from its first item.
async fn watch_outcome(store: &SharedStore, prefix: &str, after: i64) -> Result<(), StoreError> {
    let mut stream = store.watch(prefix, after).await?;
    match tokio::time::timeout(Duration::from_millis(500), stream.next()).await {
        Ok(Some(Err(error))) => Err(error),
        _ => Ok(()),
    }
}

async fn create(store: &SharedStore, key: &str, value: &str) -> KeyValue {
    store.create(key, value.as_bytes().to_vec()).await.expect("create succeeds")
}

fn keys(items: &[KeyValue]) -> Vec<&str> {
    items.iter().map(|kv| kv.key.as_str()).collect()
}

pub(super) async fn revision_is_global_and_monotonic(store: SharedStore) {
    let start = store.current_revision().await.expect("revision");
    let a = create(&store, "a/1", "x").await;
    let b = create(&store, "b/1", "y").await;
    let a2 = store.update("a/1", b"z".to_vec(), a.mod_revision).await.expect("update");
    assert!(start < a.mod_revision && a.mod_revision < b.mod_revision && b.mod_revision < a2.mod_revision);
    assert_eq!(a.create_revision, a.mod_revision);
    assert_eq!(a2.create_revision, a.create_revision);
    assert_eq!(store.current_revision().await.expect("revision"), a2.mod_revision);
}

pub(super) async fn get_returns_the_latest_value(store: SharedStore) {
    assert_eq!(store.get("pods/default/web").await.expect("get"), None);
    let created = create(&store, "pods/default/web", "v1").await;
    assert_eq!(store.get("pods/default/web").await.expect("get"), Some(created.clone()));
    let updated = store.update("pods/default/web", b"v2".to_vec(), created.mod_revision).await.expect("update");
    let got = store.get("pods/default/web").await.expect("get").expect("present");
    assert_eq!(got, updated);
    assert_eq!(got.value, b"v2");
}

pub(super) async fn create_twice_is_already_exists(store: SharedStore) {
    create(&store, "k", "1").await;
    let again = store.create("k", b"2".to_vec()).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists(ref k)) if k == "k"), "{again:?}");
    assert_eq!(store.get("k").await.expect("get").expect("present").value, b"1");
}

pub(super) async fn update_checks_the_revision(store: SharedStore) {
    let v1 = create(&store, "k", "1").await;
    let v2 = store.update("k", b"2".to_vec(), v1.mod_revision).await.expect("update");
    let stale = store.update("k", b"3".to_vec(), v1.mod_revision).await;
    match stale {
        Err(StoreError::Conflict { key, expected, actual }) => {
            assert_eq!((key.as_str(), expected, actual), ("k", v1.mod_revision, v2.mod_revision));
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let missing = store.update("nope", b"x".to_vec(), v1.mod_revision).await;
    assert!(matches!(missing, Err(StoreError::NotFound(ref k)) if k == "nope"), "{missing:?}");
    let missing_zero = store.update("nope", b"x".to_vec(), 0).await;
    assert!(matches!(missing_zero, Err(StoreError::NotFound(_))), "{missing_zero:?}");
}

pub(super) async fn delete_checks_the_revision(store: SharedStore) {
    let v1 = create(&store, "k", "1").await;
    let wrong = store.delete("k", Some(v1.mod_revision + 100)).await;
    assert!(matches!(wrong, Err(StoreError::Conflict { .. })), "{wrong:?}");
    let deleted = store.delete("k", Some(v1.mod_revision)).await.expect("delete");
    assert_eq!(deleted.value, b"1");
    assert_eq!(deleted.create_revision, v1.create_revision);
    assert!(deleted.mod_revision > v1.mod_revision);
    assert_eq!(store.current_revision().await.expect("revision"), deleted.mod_revision);
    assert_eq!(store.get("k").await.expect("get"), None);
    let missing = store.delete("k", None).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "{missing:?}");
    create(&store, "u", "1").await;
    store.delete("u", None).await.expect("unconditional delete");
}

pub(super) async fn list_is_scoped_to_the_prefix(store: SharedStore) {
    for key in ["pods/a/x", "pods/a/y", "pods/ab/x", "pods/b/z", "podsx"] {
        create(&store, key, key).await;
    }
    let page = store.list("pods/a/", ListOptions::default()).await.expect("list");
    assert_eq!(keys(&page.items), ["pods/a/x", "pods/a/y"]);
    assert_eq!(page.items[0].value, b"pods/a/x");
    assert_eq!(page.continue_after, None);
    assert_eq!(page.revision, store.current_revision().await.expect("revision"));
    let all = store.list("pods/", ListOptions::default()).await.expect("list");
    assert_eq!(keys(&all.items), ["pods/a/x", "pods/a/y", "pods/ab/x", "pods/b/z"]);
    assert_eq!(store.count("pods/").await.expect("count"), 4);
    assert_eq!(store.count("pods/a/").await.expect("count"), 2);
    assert_eq!(store.count("none/").await.expect("count"), 0);
}

pub(super) async fn pagination_is_pinned_to_a_revision(store: SharedStore) {
    let mut originals = Vec::new();
    for i in 1..=5 {
        originals.push(create(&store, &format!("p/{i}"), &format!("v{i}")).await);
    }
    create(&store, "q/0", "outside").await;
    let first = store.list("p/", ListOptions { limit: 2, ..Default::default() }).await.expect("page 1");
    assert_eq!(keys(&first.items), ["p/1", "p/2"]);
    assert_eq!(first.continue_after.as_deref(), Some("p/2"));
    assert_eq!(first.remaining, Some(3));

    // Writes between pages must not show up in later pages.
    create(&store, "p/25", "new").await;
    store.delete("p/4", None).await.expect("delete");
    store.update("p/3", b"changed".to_vec(), originals[2].mod_revision).await.expect("update");

    let mut items = first.items.clone();
    let mut next = first.continue_after.clone();
    while let Some(after) = next {
        let opts = ListOptions { limit: 2, start_after: Some(after), revision: first.revision };
        let page = store.list("p/", opts).await.expect("next page");
        assert_eq!(page.revision, first.revision);
        items.extend(page.items);
        next = page.continue_after;
    }
    assert_eq!(items, originals);

    let latest = store.list("p/", ListOptions::default()).await.expect("latest");
    assert_eq!(keys(&latest.items), ["p/1", "p/2", "p/25", "p/3", "p/5"]);
    assert_eq!(latest.items[3].value, b"changed");
    let future = store.list("p/", ListOptions { revision: latest.revision + 10, ..Default::default() }).await;
    assert!(matches!(future, Err(StoreError::FutureRevision { .. })), "{future:?}");
}

pub(super) async fn concurrent_creates_all_succeed(store: SharedStore) {
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..32 {
        let store = store.clone();
        tasks.spawn(async move {
            let mut revisions = Vec::new();
            for i in 0..50 {
                let kv = store.create(&format!("load/{task}/{i}"), vec![7; 64]).await.expect("create");
                revisions.push(kv.mod_revision);
            }
            revisions
        });
    }
    let mut all = Vec::new();
    while let Some(revisions) = tasks.join_next().await {
        all.extend(revisions.expect("task finished"));
    }
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 32 * 50);
    assert_eq!(store.count("load/").await.expect("count"), 32 * 50);
}

/// Lists bigger than what one backend request returns (etcd answers in chunks under its gRPC
/// message limit) come back whole, and a limit above the chunk size is honoured exactly.
pub(super) async fn large_lists_are_complete(store: SharedStore) {
    let value = "x".repeat(16 * 1024);
    for i in 0..1200 {
        store.create(&format!("big/{i:05}"), value.clone().into_bytes()).await.expect("create");
    }
    let all = store.list("big/", ListOptions::default()).await.expect("list");
    assert_eq!(all.items.len(), 1200);
    assert!(all.continue_after.is_none());
    assert!(all.items.windows(2).all(|w| w[0].key < w[1].key), "key order");
    let page = store.list("big/", ListOptions { limit: 700, ..Default::default() }).await.expect("list");
    assert_eq!(page.items.len(), 700);
    assert_eq!(page.continue_after.as_deref(), Some("big/00699"));
    let rest = store
        .list("big/", ListOptions { start_after: page.continue_after, revision: page.revision, ..Default::default() })
        .await
        .expect("list");
    assert_eq!(rest.items.len(), 500);
}

/// Declares one `#[tokio::test]` per suite function for a backend built by `$fixture`.
macro_rules! backend_suite {
    ($backend:ident, $fixture:path) => {
        mod $backend {
            backend_suite!(@tests $fixture;
                revision_is_global_and_monotonic,
                get_returns_the_latest_value,
                create_twice_is_already_exists,
                update_checks_the_revision,
                delete_checks_the_revision,
                list_is_scoped_to_the_prefix,
                pagination_is_pinned_to_a_revision,
                watch_from_now_sees_only_later_events,
                watch_replays_history_then_continues_live,
                watch_filters_by_prefix,
                delete_event_carries_the_previous_value,
                compaction_makes_old_revisions_gone,
                concurrent_creates_all_succeed,
                large_lists_are_complete,
            );
        }
    };
    (@tests $fixture:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let fixture = $fixture().await;
                super::$name(fixture.store.clone()).await;
            }
        )*
    };
}

backend_suite!(embedded_backend, super::fixtures::embedded);
backend_suite!(etcd_backend, super::fixtures::etcd);

/// A store under test plus whatever must outlive it (its directory, its etcd process).
struct Fixture {
    /// Declared first so it is dropped before the guard.
    store: SharedStore,
    _guard: Box<dyn std::any::Any + Send>,
}

mod fixtures {
    use std::sync::Arc;

    use super::Fixture;
    use crate::storage::embedded::EmbeddedStore;
    use crate::storage::etcd::EtcdStore;
    use crate::storage::etcd_server::EtcdServer;

    pub(super) async fn embedded() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = EmbeddedStore::open(&dir.path().join("state.redb")).expect("the store opens");
        Fixture { store: Arc::new(store), _guard: Box::new(dir) }
    }

    pub(super) async fn etcd() -> Fixture {
        let server = EtcdServer::start().await.expect("etcd starts");
        let store =
            EtcdStore::connect(std::slice::from_ref(&server.endpoint), "/registry/").await.expect("etcd connects");
        Fixture { store: Arc::new(store), _guard: Box::new(server) }
    }
}
