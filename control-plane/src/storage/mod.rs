//! The state store: a key-value store with etcd semantics that every API object lives in.
//!
//! What it owns: one global, monotonic revision (it becomes every object's `resourceVersion`),
//! compare-and-swap writes guarded by an object's mod revision, prefix lists with pagination
//! pinned to one revision, watches that replay every event after a revision in order, and
//! compaction (asking for a compacted revision is [`StoreError::Compacted`], which the API
//! turns into `410 Gone`).
//!
//! What it does not own: object encoding, validation and key layout — the store sees opaque
//! bytes under string keys; `registry/` decides what goes where.
//!
//! Backends: [`embedded`] (`redb`, one fsync'd file, the default) and [`etcd`]
//! (`etcd-client`). The conformance suite in `conformance.rs` runs unchanged against both.

#[cfg(test)]
mod conformance;
pub mod embedded;
pub mod etcd;
pub mod etcd_server;

use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;

/// A revision of the store (etcd's `int64` revision). `0` means "none".
pub type Revision = i64;

/// One key with its value and the revisions etcd would report for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    /// Revision at which the key was (last) created.
    pub create_revision: Revision,
    /// Revision of the last write to the key: the object's `resourceVersion`.
    pub mod_revision: Revision,
}

/// A page of a prefix list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<KeyValue>,
    /// The revision the whole list (every page of it) is read at.
    pub revision: Revision,
    /// When more keys follow: the key to pass as `start_after` for the next page.
    pub continue_after: Option<String>,
    /// How many keys remain after this page (at `revision`), when known.
    pub remaining: Option<i64>,
}

/// Options for [`Store::list`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListOptions {
    /// At most this many items (0 = no limit).
    pub limit: i64,
    /// Continue after this key (exclusive), from a previous page's `continue_after`.
    pub start_after: Option<String>,
    /// Read at this revision (0 = latest). A compacted revision is [`StoreError::Compacted`].
    pub revision: Revision,
}

/// What happened to a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// The key was created.
    Create,
    /// The key was updated.
    Update,
    /// The key was deleted.
    Delete,
}

/// One change, as delivered by [`Store::watch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchEvent {
    pub kind: EventKind,
    /// The key after the change. For a delete: the key with its last value, and
    /// `mod_revision` set to the revision of the delete.
    pub kv: KeyValue,
    /// The key before the change (absent for a create).
    pub prev: Option<KeyValue>,
}

/// A stream of watch events, in revision order. The stream ends with an error item if the
/// backend loses the watch (e.g. the events it would need were compacted meanwhile).
pub type WatchStream = BoxStream<'static, Result<WatchEvent, StoreError>>;

/// Errors of the store, each mapped to one Kubernetes reason by the API server.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {0} already exists")]
    AlreadyExists(String),
    /// The compare-and-swap failed: the key's mod revision is not the expected one.
    #[error("key {key} was modified (expected revision {expected}, found {actual})")]
    Conflict { key: String, expected: Revision, actual: Revision },
    /// The requested revision has been compacted away.
    #[error("revision {requested} has been compacted (oldest available is {compacted})")]
    Compacted { requested: Revision, compacted: Revision },
    /// The requested revision is in the future.
    #[error("revision {requested} is newer than the current revision {current}")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("store backend error: {0}")]
    Backend(String),
    #[error("store is shutting down")]
    Closed,
}

/// The store contract. Every method is atomic; every write returns the new revision.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The current (latest) revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// Reads one key at the latest revision.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Lists keys starting with `prefix` in key order.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListPage, StoreError>;

    /// Counts keys under `prefix` at the latest revision.
    async fn count(&self, prefix: &str) -> Result<i64, StoreError>;

    /// Creates `key` only if it does not exist ([`StoreError::AlreadyExists`] otherwise).
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;

    /// Replaces `key` only if its mod revision is `expected`
    /// ([`StoreError::NotFound`] / [`StoreError::Conflict`] otherwise).
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError>;

    /// Deletes `key`, only if its mod revision is `expected` when given. Returns the deleted
    /// key-value, with `mod_revision` set to the revision of the delete.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError>;

    /// Watches every key under `prefix`, delivering every event with a revision greater than
    /// `after` in order, then live events. `after = 0` means "from now".
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// Drops history older than `revision`; later watches/lists before it get `Compacted`.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The oldest revision still available to watch from (the compaction point).
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;

    // Raw keys: records other tools read beside the API objects (SkyDNS's `/skydns/...`).
    // With etcd they live at etcd's root, outside the object prefix, where those tools look;
    // the embedded store has one key space, so they sit beside the objects' keys (which never
    // start with `/`). The defaults are the embedded behaviour, built on the calls above.

    /// Writes `key` = `value` unconditionally (unchanged values are not rewritten).
    async fn put_raw(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        loop {
            let result = match self.get(key).await? {
                Some(kv) if kv.value == value => return Ok(()),
                Some(kv) => self.update(key, value.clone(), kv.mod_revision).await.map(|_| ()),
                None => self.create(key, value.clone()).await.map(|_| ()),
            };
            match result {
                // A concurrent writer: read again and retry.
                Err(StoreError::Conflict { .. } | StoreError::AlreadyExists(_) | StoreError::NotFound(_)) => {}
                other => return other,
            }
        }
    }

    /// Every raw key under `prefix` with its value, in key order.
    async fn list_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        let mut opts = ListOptions { limit: 500, ..ListOptions::default() };
        loop {
            let page = self.list(prefix, opts.clone()).await?;
            out.extend(page.items.into_iter().map(|kv| (kv.key, kv.value)));
            match page.continue_after {
                Some(after) => opts = ListOptions { start_after: Some(after), revision: page.revision, ..opts },
                None => return Ok(out),
            }
        }
    }

    /// Deletes raw `key`; a key already gone is fine.
    async fn delete_raw(&self, key: &str) -> Result<(), StoreError> {
        match self.delete(key, None).await {
            Ok(_) | Err(StoreError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// A shared handle to a store backend.
pub type SharedStore = Arc<dyn Store>;
