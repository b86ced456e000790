//! A cache of namespaces for the namespace-lifecycle admission check, fed by the store's
//! watch — what the Go API server's NamespaceLifecycle plugin does with an informer. Every
//! namespaced create asks "does the namespace exist, and is it terminating?"; answering from
//! memory saves a store read (an etcd round trip) per create. A miss falls back to a live
//! read, so a namespace created a moment ago is never refused because the cache lags.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::object::meta_str;
use crate::storage::{EventKind, ListOptions, SharedStore};

/// Namespace name → terminating (has a deletionTimestamp).
#[derive(Debug, Clone, Default)]
pub struct NamespaceCache {
    inner: Arc<RwLock<HashMap<String, bool>>>,
}

const PREFIX: &str = "namespaces/";

impl NamespaceCache {
    /// `Some(terminating)` when the namespace is known, `None` on a miss.
    pub fn lookup(&self, ns: &str) -> Option<bool> {
        self.inner.read().ok()?.get(ns).copied()
    }

    fn apply(&self, key: &str, value: Option<&[u8]>) {
        let Some(name) = key.strip_prefix(PREFIX) else { return };
        let Ok(mut map) = self.inner.write() else { return };
        match value.and_then(|v| serde_json::from_slice::<serde_json::Value>(v).ok()) {
            Some(obj) => {
                map.insert(name.to_string(), meta_str(&obj, "deletionTimestamp").is_some());
            }
            None => {
                map.remove(name);
            }
        }
    }

    /// Lists and then follows the namespaces until `cancel`; re-lists after any watch error.
    pub async fn run(self, store: SharedStore, cancel: CancellationToken) {
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.sync_once(&store) => r,
            };
            if let Err(e) = result {
                warn!(error = %e, "namespace cache lost its watch; re-listing");
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    async fn sync_once(&self, store: &SharedStore) -> Result<(), crate::storage::StoreError> {
        let page = store.list(PREFIX, ListOptions::default()).await?;
        {
            let Ok(mut map) = self.inner.write() else { return Ok(()) };
            map.clear();
        }
        for kv in &page.items {
            self.apply(&kv.key, Some(&kv.value));
        }
        debug!(count = page.items.len(), revision = page.revision, "namespace cache synced");
        let mut events = store.watch(PREFIX, page.revision).await?;
        while let Some(ev) = events.next().await {
            let ev = ev?;
            match ev.kind {
                EventKind::Delete => self.apply(&ev.kv.key, None),
                _ => self.apply(&ev.kv.key, Some(&ev.kv.value)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracks_existence_and_termination() {
        let cache = NamespaceCache::default();
        assert_eq!(cache.lookup("a"), None);
        cache.apply("namespaces/a", Some(br#"{"metadata":{"name":"a"}}"#));
        assert_eq!(cache.lookup("a"), Some(false));
        cache.apply("namespaces/a", Some(br#"{"metadata":{"name":"a","deletionTimestamp":"2026-01-01T00:00:00Z"}}"#));
        assert_eq!(cache.lookup("a"), Some(true));
        cache.apply("namespaces/a", None);
        assert_eq!(cache.lookup("a"), None);
    }
}
