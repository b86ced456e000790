//! Feeds the dependency graph from the store: one paginated list of the whole key space at a
//! revision, then one watch from that revision (Kubernetes runs a monitor per resource; a
//! single watch is the same stream in revision order, which also keeps the graph
//! consistent across kinds). Only `metadata` is decoded, only keys of cataloged resources
//! count. A lost watch (compaction) re-lists and rebuilds the graph.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::Shared;
use super::graph::{Envelope, Meta, Work};
use crate::registry::catalog::{RESOURCES, ResourceInfo};
use crate::storage::{EventKind, ListOptions, SharedStore, StoreError};

/// Keys per page of the initial list (bounds the memory of one read).
const PAGE: i64 = 500;

/// Every resource's key prefix, longest first, built once: this runs for every write.
static PREFIXES: std::sync::LazyLock<Vec<(String, &'static ResourceInfo)>> = std::sync::LazyLock::new(|| {
    let mut prefixes: Vec<_> = RESOURCES.iter().map(|r| (r.key_prefix(), r)).collect();
    prefixes.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    prefixes
});

/// The resource whose keys `key` belongs to (the longest matching prefix), if any.
pub fn resource_of(key: &str) -> Option<&'static ResourceInfo> {
    PREFIXES.iter().find(|(prefix, _)| key.starts_with(prefix.as_str())).map(|(_, r)| *r)
}

/// Events are never owners nor (in practice) dependents, and they are most of the writes of
/// a busy cluster: Kubernetes' garbage collector ignores them too (`ignoredResources`).
fn ignored(info: &ResourceInfo) -> bool {
    info.plural == "events"
}

/// The graph's view of a stored value, `None` for keys that are no API object.
fn decode(key: &str, value: &[u8]) -> Option<(&'static ResourceInfo, Meta)> {
    let info = resource_of(key).filter(|r| !ignored(r))?;
    match serde_json::from_slice::<Envelope>(value) {
        Ok(e) => Some((info, e.metadata)),
        Err(e) => {
            debug!(key, error = %e, "garbage collector skips an undecodable object");
            None
        }
    }
}

/// Lists, then follows the store until `cancel`, re-listing after a lost watch; every
/// change's work goes to `enqueue`.
pub async fn run(shared: Arc<Shared>, store: SharedStore, enqueue: impl Fn(Vec<Work>), cancel: CancellationToken) {
    loop {
        let result = tokio::select! {
            _ = cancel.cancelled() => return,
            r = sync_once(&shared, &store, &enqueue) => r,
        };
        match result {
            Err(StoreError::Closed) => return,
            Err(e) => warn!(error = %e, "garbage collector lost its watch; re-listing"),
            Ok(()) => debug!("garbage collector watch ended; re-listing"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn sync_once(shared: &Shared, store: &SharedStore, enqueue: &impl Fn(Vec<Work>)) -> Result<(), StoreError> {
    let mut objects = Vec::new();
    let mut opts = ListOptions { limit: PAGE, ..Default::default() };
    let revision = loop {
        let page = store.list("", opts.clone()).await?;
        objects.extend(page.items.iter().filter_map(|kv| decode(&kv.key, &kv.value)));
        match page.continue_after {
            Some(after) => opts = ListOptions { limit: PAGE, start_after: Some(after), revision: page.revision },
            None => break page.revision,
        }
    };
    if revision == 0 {
        // An empty store: a watch "after 0" would start from whatever is current when it
        // opens and could miss a write made meanwhile. Nothing to collect yet: look again.
        tokio::time::sleep(Duration::from_millis(50)).await;
        return Ok(());
    }
    let work = shared.graph().reset(objects);
    debug!(objects = shared.graph().len(), revision, "garbage collector graph built");
    // Work is queued before the revision counts as seen, so "caught up" implies "queued".
    enqueue(work);
    shared.seen(revision);
    let mut events = store.watch("", revision).await?;
    while let Some(ev) = events.next().await {
        let ev = ev?;
        let work = match (ev.kind, decode(&ev.kv.key, &ev.kv.value)) {
            (_, None) => vec![],
            (EventKind::Delete, Some((_, meta))) => match meta.uid {
                Some(uid) => shared.graph().remove(&uid),
                None => vec![],
            },
            (EventKind::Create | EventKind::Update, Some((info, meta))) => shared.graph().upsert(info, meta),
        };
        enqueue(work);
        shared.seen(ev.kv.mod_revision);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_their_resource() {
        assert_eq!(resource_of("pods/ns/a").map(|r| r.kind), Some("Pod"));
        assert_eq!(resource_of("apps/replicasets/ns/a").map(|r| r.kind), Some("ReplicaSet"));
        assert_eq!(resource_of("events.k8s.io/events/ns/a").map(|r| r.group), Some("events.k8s.io"));
        assert_eq!(resource_of("events/ns/a").map(|r| r.group), Some(""));
        assert_eq!(resource_of("namespaces/a").map(|r| r.kind), Some("Namespace"));
        assert!(resource_of("something/else").is_none());
        assert!(decode("events/ns/a", br#"{"metadata": {"uid": "u"}}"#).is_none(), "events are ignored");
        assert!(decode("configmaps/ns/a", br#"{"metadata": {"uid": "u"}}"#).is_some());
    }
}
