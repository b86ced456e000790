//! The watch and compaction part of the conformance suite (see `conformance.rs`).

use super::{assert_quiet, create, next_event, watch_outcome};
use crate::storage::{EventKind, ListOptions, SharedStore, StoreError, WatchEvent};

pub(super) async fn watch_from_now_sees_only_later_events(store: SharedStore) {
    create(&store, "w/old", "1").await;
    let mut stream = store.watch("w/", 0).await.expect("watch");
    let new = create(&store, "w/new", "2").await;
    let event = next_event(&mut stream).await;
    assert_eq!(event, WatchEvent { kind: EventKind::Create, kv: new, prev: None });
    assert_quiet(&mut stream).await;
}

pub(super) async fn watch_replays_history_then_continues_live(store: SharedStore) {
    let a = create(&store, "w/a", "1").await;
    let b = create(&store, "w/b", "1").await;
    let a2 = store.update("w/a", b"2".to_vec(), a.mod_revision).await.expect("update");
    let b_gone = store.delete("w/b", None).await.expect("delete");
    let mut stream = store.watch("w/", a.mod_revision).await.expect("watch");
    let replayed = [next_event(&mut stream).await, next_event(&mut stream).await, next_event(&mut stream).await];
    assert_eq!(replayed[0], WatchEvent { kind: EventKind::Create, kv: b.clone(), prev: None });
    assert_eq!(replayed[1], WatchEvent { kind: EventKind::Update, kv: a2.clone(), prev: Some(a) });
    assert_eq!(replayed[2], WatchEvent { kind: EventKind::Delete, kv: b_gone, prev: Some(b) });
    let c = create(&store, "w/c", "1").await;
    assert_eq!(next_event(&mut stream).await.kv, c);
    let mut revisions = replayed.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>();
    revisions.push(c.mod_revision);
    assert!(revisions.windows(2).all(|w| w[0] < w[1]), "{revisions:?}");
    assert_quiet(&mut stream).await;
}

pub(super) async fn watch_filters_by_prefix(store: SharedStore) {
    let mut stream = store.watch("pods/a/", 0).await.expect("watch");
    create(&store, "pods/ab/x", "no").await;
    create(&store, "services/a/x", "no").await;
    let mine = create(&store, "pods/a/x", "yes").await;
    assert_eq!(next_event(&mut stream).await.kv, mine);
    assert_quiet(&mut stream).await;
}

pub(super) async fn delete_event_carries_the_previous_value(store: SharedStore) {
    let created = create(&store, "d/k", "last").await;
    let mut stream = store.watch("d/", created.mod_revision).await.expect("watch");
    let deleted = store.delete("d/k", Some(created.mod_revision)).await.expect("delete");
    let event = next_event(&mut stream).await;
    assert_eq!(event.kind, EventKind::Delete);
    assert_eq!(event.kv, deleted);
    assert_eq!(event.kv.value, b"last");
    assert_eq!(event.prev, Some(created));
}

pub(super) async fn compaction_makes_old_revisions_gone(store: SharedStore) {
    let mut last = create(&store, "c/k", "0").await;
    for i in 1..6 {
        last = store.update("c/k", i.to_string().into_bytes(), last.mod_revision).await.expect("update");
    }
    let point = last.mod_revision - 2;
    store.compact(point).await.expect("compact");
    assert_eq!(store.compacted_revision().await.expect("compacted"), point);
    store.compact(point - 1).await.expect("compacting below the point is a no-op");

    let old_watch = watch_outcome(&store, "c/", point - 2).await;
    assert!(matches!(old_watch, Err(StoreError::Compacted { .. })), "{old_watch:?}");
    let old_list = store.list("c/", ListOptions { revision: point - 1, ..Default::default() }).await;
    assert!(matches!(old_list, Err(StoreError::Compacted { .. })), "{old_list:?}");

    // The compaction point itself is still readable and watchable.
    let at_point = store.list("c/", ListOptions { revision: point, ..Default::default() }).await.expect("list");
    assert_eq!(at_point.items.len(), 1);
    assert_eq!(at_point.items[0].mod_revision, point);
    let mut stream = store.watch("c/", point - 1).await.expect("watch at the point");
    assert_eq!(next_event(&mut stream).await.kv.mod_revision, point);

    let future = store.compact(last.mod_revision + 100).await;
    assert!(matches!(future, Err(StoreError::FutureRevision { .. })), "{future:?}");
}
