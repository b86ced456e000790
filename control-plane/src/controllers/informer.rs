//! A typed, shared cache of one resource, fed by the store: list a prefix at a revision, then
//! watch from that revision; when the watch is lost (compaction: the API's `410 Gone`), list
//! again and tell subscribers what changed in between. It is client-go's reflector + indexer
//! + shared informer in one, reading the store directly because it lives in the API server.
//!
//! Readers get `Arc<T>` snapshots (cheap to hand around, never mutated in place). Subscribers
//! are called on the informer's task for every change with the old and new object; they must
//! only enqueue keys (controllers reconcile from the cache later), so they never block it.
//!
//! What it does not own: writes (those go through [`crate::registry::rest::Registry`]) and
//! reconciliation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::Metadata;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::registry::catalog::ResourceInfo;
use crate::storage::{EventKind, KeyValue, ListOptions, SharedStore, StoreError};

/// A kind an informer can cache.
pub trait Object: DeserializeOwned + Metadata<Ty = ObjectMeta> + Send + Sync + 'static {}
impl<T> Object for T where T: DeserializeOwned + Metadata<Ty = ObjectMeta> + Send + Sync + 'static {}

/// One change seen by the cache.
#[derive(Debug)]
pub enum Change<T> {
    Added(Arc<T>),
    Updated { old: Arc<T>, new: Arc<T> },
    Deleted(Arc<T>),
}

impl<T> Change<T> {
    /// The object after the change (the last state for a delete).
    pub fn object(&self) -> &Arc<T> {
        match self {
            Change::Added(o) | Change::Deleted(o) | Change::Updated { new: o, .. } => o,
        }
    }
}

/// A secondary index: the index value of an object, if it has one.
pub type IndexFn<T> = fn(&T) -> Option<String>;

/// The cached objects, sorted by key (so one namespace is a range, not a scan of all), and the
/// secondary index: value → keys.
struct Items<T> {
    objects: BTreeMap<String, Arc<T>>,
    index: HashMap<String, BTreeSet<String>>,
}

impl<T> Items<T> {
    fn insert(&mut self, index_of: Option<&IndexFn<T>>, key: String, obj: Arc<T>) -> Option<Arc<T>> {
        let old = self.objects.insert(key.clone(), obj);
        if let Some(f) = index_of {
            let before = old.as_deref().and_then(f);
            let now = self.objects.get(&key).and_then(|o| f(o));
            if before != now {
                if let Some(before) = before {
                    self.unindex(&before, &key);
                }
                if let Some(now) = now {
                    self.index.entry(now).or_default().insert(key);
                }
            }
        }
        old
    }

    fn remove(&mut self, index_of: Option<&IndexFn<T>>, key: &str) -> Option<Arc<T>> {
        let old = self.objects.remove(key)?;
        if let Some(value) = index_of.and_then(|f| f(&old)) {
            self.unindex(&value, key);
        }
        Some(old)
    }

    fn unindex(&mut self, value: &str, key: &str) {
        if let Some(keys) = self.index.get_mut(value) {
            keys.remove(key);
            if keys.is_empty() {
                self.index.remove(value);
            }
        }
    }

    fn reindex(&mut self, index_of: Option<&IndexFn<T>>) {
        self.index.clear();
        let Some(f) = index_of else { return };
        for (key, obj) in &self.objects {
            if let Some(value) = f(obj) {
                self.index.entry(value).or_default().insert(key.clone());
            }
        }
    }
}

/// A subscriber: called for every change, on the informer's task.
pub type Handler<T> = Arc<dyn Fn(&Change<T>) + Send + Sync>;

/// The cache key of an object: `namespace/name`, or `name` for cluster-scoped kinds.
pub fn key_of(meta: &ObjectMeta) -> String {
    match meta.namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{}", meta.name.as_deref().unwrap_or_default()),
        _ => meta.name.clone().unwrap_or_default(),
    }
}

/// A shared cache of one resource. Clones share the cache.
pub struct Informer<T> {
    inner: Arc<Inner<T>>,
}

struct Inner<T> {
    prefix: String,
    items: RwLock<Items<T>>,
    /// The secondary index's key of an object ([`Informer::set_index`]).
    index_of: OnceLock<IndexFn<T>>,
    handlers: RwLock<Vec<Handler<T>>>,
    synced: tokio::sync::watch::Sender<bool>,
}

impl<T> Clone for Informer<T> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<T> std::fmt::Debug for Informer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Informer").field("prefix", &self.inner.prefix).finish_non_exhaustive()
    }
}

impl<T: Object> Informer<T> {
    /// An informer over the store keys of `info`.
    pub fn new(info: &ResourceInfo) -> Self {
        Self::with_prefix(info.key_prefix())
    }

    /// An informer over every key under `prefix`.
    pub fn with_prefix(prefix: String) -> Self {
        Self {
            inner: Arc::new(Inner {
                prefix,
                items: RwLock::new(Items { objects: BTreeMap::new(), index: HashMap::new() }),
                index_of: OnceLock::new(),
                handlers: RwLock::new(Vec::new()),
                synced: tokio::sync::watch::channel(false).0,
            }),
        }
    }

    /// Subscribes to changes. Subscribe before [`Informer::run`] starts to see the initial list.
    pub fn subscribe(&self, handler: impl Fn(&Change<T>) + Send + Sync + 'static) {
        self.inner.handlers.write().unwrap_or_else(|e| e.into_inner()).push(Arc::new(handler));
    }

    /// Gives the cache a secondary index (one per informer, like a client-go indexer), so
    /// [`Informer::by_index`] answers without scanning every object; a second call is ignored.
    pub fn set_index(&self, index_of: IndexFn<T>) {
        if self.inner.index_of.set(index_of).is_ok() {
            self.inner.items.write().unwrap_or_else(|e| e.into_inner()).reindex(self.inner.index_of.get());
        }
    }

    /// The cached objects whose index value ([`Informer::set_index`]) is `value`.
    pub fn by_index(&self, value: &str) -> Vec<Arc<T>> {
        let items = self.read();
        let keys = items.index.get(value).into_iter().flatten();
        keys.filter_map(|key| items.objects.get(key).cloned()).collect()
    }

    /// The cached object under `key` (`namespace/name` or `name`).
    pub fn get(&self, key: &str) -> Option<Arc<T>> {
        self.read().objects.get(key).cloned()
    }

    /// A snapshot of every cached object.
    pub fn list(&self) -> Vec<Arc<T>> {
        self.read().objects.values().cloned().collect()
    }

    /// A snapshot of the cached objects that `keep` accepts.
    pub fn list_where(&self, mut keep: impl FnMut(&T) -> bool) -> Vec<Arc<T>> {
        self.read().objects.values().filter(|o| keep(o)).cloned().collect()
    }

    /// The cached objects of one namespace (a range of the sorted keys `ns/…`).
    pub fn list_namespace(&self, ns: &str) -> Vec<Arc<T>> {
        let prefix = format!("{ns}/");
        let items = self.read();
        let range =
            items.objects.range::<str, _>((std::ops::Bound::Included(prefix.as_str()), std::ops::Bound::Unbounded));
        range.take_while(|(key, _)| key.starts_with(&prefix)).map(|(_, obj)| obj.clone()).collect()
    }

    /// True once the first list has been applied.
    pub fn has_synced(&self) -> bool {
        *self.inner.synced.borrow()
    }

    /// Waits for the first list; false if `cancel` fired first.
    pub async fn wait_synced(&self, cancel: &CancellationToken) -> bool {
        let mut rx = self.inner.synced.subscribe();
        tokio::select! {
            r = rx.wait_for(|s| *s) => r.is_ok(),
            _ = cancel.cancelled() => false,
        }
    }

    /// True when the cache holds exactly what the store holds now (same keys, same
    /// revisions) — how tests wait for a cache to see their writes.
    pub async fn caught_up(&self, store: &SharedStore) -> Result<bool, StoreError> {
        let page = store.list(&self.inner.prefix, ListOptions::default()).await?;
        let items = &self.read().objects;
        Ok(items.len() == page.items.len()
            && page.items.iter().all(|kv| {
                let key = kv.key.strip_prefix(&self.inner.prefix).unwrap_or_default();
                let rv = kv.mod_revision.to_string();
                items.get(key).is_some_and(|o| o.metadata().resource_version.as_deref() == Some(rv.as_str()))
            }))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Items<T>> {
        self.inner.items.read().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self, changes: &[Change<T>]) {
        if changes.is_empty() {
            return;
        }
        let handlers = self.inner.handlers.read().unwrap_or_else(|e| e.into_inner()).clone();
        for change in changes {
            for h in &handlers {
                h(change);
            }
        }
    }

    fn decode(&self, kv: &KeyValue) -> Option<(String, Arc<T>)> {
        let key = kv.key.strip_prefix(&self.inner.prefix)?.to_string();
        match serde_json::from_slice::<T>(&kv.value) {
            Ok(mut obj) => {
                // The store keeps objects without a resourceVersion: it is the key's revision.
                obj.metadata_mut().resource_version = Some(kv.mod_revision.to_string());
                Some((key, Arc::new(obj)))
            }
            Err(e) => {
                warn!(key = %kv.key, error = %e, "informer cannot decode a stored object; skipped");
                None
            }
        }
    }

    /// Lists, then follows the store until `cancel`; re-lists whenever the watch is lost.
    pub async fn run(self, store: SharedStore, cancel: CancellationToken) {
        loop {
            let result = tokio::select! {
                _ = cancel.cancelled() => return,
                r = self.sync_once(&store) => r,
            };
            match result {
                Err(StoreError::Closed) => return,
                Err(e) => warn!(prefix = %self.inner.prefix, error = %e, "informer lost its watch; re-listing"),
                Ok(()) => debug!(prefix = %self.inner.prefix, "informer watch ended; re-listing"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    async fn sync_once(&self, store: &SharedStore) -> Result<(), StoreError> {
        let page = store.list(&self.inner.prefix, ListOptions::default()).await?;
        let fresh: BTreeMap<String, Arc<T>> = page.items.iter().filter_map(|kv| self.decode(kv)).collect();
        let changes = {
            let mut items = self.inner.items.write().unwrap_or_else(|e| e.into_inner());
            let changes = diff(&items.objects, &fresh);
            items.objects = fresh;
            items.reindex(self.inner.index_of.get());
            changes
        };
        self.notify(&changes);
        self.inner.synced.send_replace(true);
        if page.revision == 0 {
            // A store never written to: watching "after 0" means "from now" and would miss a
            // write made since the list. List again shortly instead; the diff reports it.
            return Ok(());
        }
        let mut events = store.watch(&self.inner.prefix, page.revision).await?;
        while let Some(ev) = events.next().await {
            let ev = ev?;
            let change = match ev.kind {
                EventKind::Delete => {
                    let Some(key) = ev.kv.key.strip_prefix(&self.inner.prefix) else { continue };
                    let index_of = self.inner.index_of.get();
                    let removed = self.inner.items.write().unwrap_or_else(|e| e.into_inner()).remove(index_of, key);
                    match removed {
                        Some(old) => Change::Deleted(old),
                        None => continue,
                    }
                }
                EventKind::Create | EventKind::Update => {
                    let Some((key, obj)) = self.decode(&ev.kv) else { continue };
                    let index_of = self.inner.index_of.get();
                    let old =
                        self.inner.items.write().unwrap_or_else(|e| e.into_inner()).insert(index_of, key, obj.clone());
                    match old {
                        Some(old) => Change::Updated { old, new: obj },
                        None => Change::Added(obj),
                    }
                }
            };
            self.notify(std::slice::from_ref(&change));
        }
        Ok(())
    }
}

/// What turned `old` into `new` (after a re-list).
fn diff<T: Object>(old: &BTreeMap<String, Arc<T>>, new: &BTreeMap<String, Arc<T>>) -> Vec<Change<T>> {
    let mut changes = Vec::new();
    for (key, obj) in new {
        match old.get(key) {
            None => changes.push(Change::Added(obj.clone())),
            Some(prev) if prev.metadata().resource_version != obj.metadata().resource_version => {
                changes.push(Change::Updated { old: prev.clone(), new: obj.clone() });
            }
            Some(_) => {}
        }
    }
    for (key, obj) in old {
        if !new.contains_key(key) {
            changes.push(Change::Deleted(obj.clone()));
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::embedded::EmbeddedStore;
    use k8s_openapi::api::core::v1::ConfigMap;
    use std::sync::Mutex;

    fn cm(name: &str, data: &str) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({"metadata": {"name": name, "namespace": "ns"}, "data": {"k": data}}))
            .expect("json")
    }

    #[tokio::test]
    async fn follows_creates_updates_and_deletes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store: SharedStore = Arc::new(EmbeddedStore::open(&dir.path().join("s.redb")).expect("store"));
        store.create("configmaps/ns/a", cm("a", "1")).await.expect("create");
        let informer = Informer::<ConfigMap>::with_prefix("configmaps/".into());
        let seen = Arc::new(Mutex::new(Vec::<String>::new()));
        let s2 = seen.clone();
        informer.subscribe(move |c| {
            let what = match c {
                Change::Added(o) => format!("add {}", key_of(o.metadata())),
                Change::Updated { old, new } => format!(
                    "update {} {}->{}",
                    key_of(new.metadata()),
                    old.data.as_ref().and_then(|d| d.get("k")).cloned().unwrap_or_default(),
                    new.data.as_ref().and_then(|d| d.get("k")).cloned().unwrap_or_default()
                ),
                Change::Deleted(o) => format!("delete {}", key_of(o.metadata())),
            };
            s2.lock().expect("lock").push(what);
        });
        let cancel = CancellationToken::new();
        let task = tokio::spawn(informer.clone().run(store.clone(), cancel.clone()));
        assert!(tokio::time::timeout(Duration::from_secs(5), informer.wait_synced(&cancel)).await.expect("syncs"));
        let a = informer.get("ns/a").expect("listed");
        assert!(a.metadata.resource_version.is_some(), "resourceVersion injected");

        let kv = store.get("configmaps/ns/a").await.expect("get").expect("exists");
        store.update("configmaps/ns/a", cm("a", "2"), kv.mod_revision).await.expect("update");
        store.create("configmaps/ns/b", cm("b", "1")).await.expect("create b");
        store.delete("configmaps/ns/a", None).await.expect("delete");
        let want = vec!["add ns/a", "update ns/a 1->2", "add ns/b", "delete ns/a"];
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while seen.lock().expect("lock").len() < want.len() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*seen.lock().expect("lock"), want);
        assert!(informer.get("ns/a").is_none());
        assert_eq!(informer.list().len(), 1);
        cancel.cancel();
        task.await.expect("informer ends on cancel");
    }

    #[test]
    fn the_index_and_namespace_ranges_follow_inserts_changes_and_removals() {
        let mk = |ns: &str, name: &str, group: &str| {
            let mut c = ConfigMap::default();
            c.metadata.namespace = Some(ns.into());
            c.metadata.name = Some(name.into());
            c.data = Some([("group".to_string(), group.to_string())].into());
            Arc::new(c)
        };
        let group: IndexFn<ConfigMap> = |c| c.data.as_ref()?.get("group").filter(|g| !g.is_empty()).cloned();
        let informer = Informer::<ConfigMap>::with_prefix("configmaps/".into());
        informer.set_index(group);
        let f = informer.inner.index_of.get();
        {
            let mut items = informer.inner.items.write().expect("lock");
            items.insert(f, "a/one".into(), mk("a", "one", "x"));
            items.insert(f, "a/two".into(), mk("a", "two", "x"));
            items.insert(f, "ab/three".into(), mk("ab", "three", "y"));
            items.insert(f, "a/two".into(), mk("a", "two", "y"));
        }
        let names = |list: Vec<Arc<ConfigMap>>| {
            let mut names: Vec<String> = list.iter().map(|c| c.metadata.name.clone().unwrap_or_default()).collect();
            names.sort();
            names
        };
        assert_eq!(names(informer.by_index("x")), ["one"], "a changed value moves the key");
        assert_eq!(names(informer.by_index("y")), ["three", "two"]);
        assert_eq!(names(informer.list_namespace("a")), ["one", "two"], "`ab/` is not in namespace `a`");
        informer.inner.items.write().expect("lock").remove(f, "a/one");
        assert!(informer.by_index("x").is_empty());
        informer.inner.items.write().expect("lock").insert(f, "a/two".into(), mk("a", "two", ""));
        assert_eq!(names(informer.by_index("y")), ["three"], "an object without a value leaves the index");
    }

    #[test]
    fn relist_diff_reports_each_kind_of_change() {
        let mk = |name: &str, rv: &str| {
            let mut c = ConfigMap::default();
            c.metadata.name = Some(name.into());
            c.metadata.resource_version = Some(rv.into());
            Arc::new(c)
        };
        let old: BTreeMap<_, _> =
            [("a".to_string(), mk("a", "1")), ("b".to_string(), mk("b", "1")), ("c".to_string(), mk("c", "1"))].into();
        let new: BTreeMap<_, _> =
            [("a".to_string(), mk("a", "1")), ("b".to_string(), mk("b", "5")), ("d".to_string(), mk("d", "6"))].into();
        let mut kinds: Vec<String> = diff(&old, &new)
            .iter()
            .map(|c| match c {
                Change::Added(o) => format!("+{}", key_of(o.metadata())),
                Change::Updated { new, .. } => format!("~{}", key_of(new.metadata())),
                Change::Deleted(o) => format!("-{}", key_of(o.metadata())),
            })
            .collect();
        kinds.sort();
        assert_eq!(kinds, vec!["+d", "-c", "~b"]);
    }
}
