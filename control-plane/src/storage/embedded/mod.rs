//! The embedded store: the whole cluster state in one `redb` file, the default backend.
//!
//! What it owns: durability (a write is answered only after its transaction committed with
//! `Durability::Immediate`, i.e. fsync'd), the global revision (persisted in the `meta`
//! table), the event history for watch replay, and compaction of that history.
//!
//! How: writes go through one writer thread doing group commit (`writer.rs`); reads run in
//! their own read transactions on the blocking pool and never wait for the writer
//! (`read.rs`); watches replay the history table and then follow the writer's broadcast
//! (`watch.rs`). The file layout is in `codec.rs`.
//!
//! Lists at a past revision are reconstructed from history (see `read.rs`), so pagination
//! pinned to the first page's revision sees exactly that revision's state.
//!
//! Reopening the same file requires every handle to the previous store — including watch
//! streams, which keep the database open for replay — to be dropped first.

mod codec;
mod read;
#[cfg(test)]
mod tests;
mod watch;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use redb::Database;
use tokio::sync::{broadcast, mpsc, oneshot};

use self::read::backend;
use self::writer::{EventBatch, WriteOp, WriteRequest};
use super::{KeyValue, ListOptions, ListPage, Revision, Store, StoreError, WatchStream};

/// Queued writes before callers wait for room; a few batches' worth.
const WRITE_QUEUE: usize = 16 * 1024;
/// Committed batches buffered per watcher before it lags (and falls back to replay).
const EVENT_BUFFER: usize = 1024;

/// The `redb`-backed store. Cheap to share behind a [`SharedStore`](super::SharedStore).
pub struct EmbeddedStore {
    inner: Inner,
}

struct Inner {
    db: Arc<Database>,
    /// `None` only while dropping: closing it stops the writer.
    writes: Option<mpsc::Sender<WriteRequest>>,
    events: broadcast::Sender<EventBatch>,
    writer: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore").finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue lets the writer finish what was queued and exit; joining it
        // releases its database handle, so the file can be reopened right after.
        self.writes = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store file at `path` and starts its writer thread.
    pub fn open(path: &Path) -> Result<EmbeddedStore, StoreError> {
        Self::open_with_event_buffer(path, EVENT_BUFFER)
    }

    /// A store held in memory only, gone when dropped: for controller unit tests, which want
    /// the real store semantics (revisions, watch, conflicts) without a file or an fsync per write.
    pub fn in_memory() -> Result<EmbeddedStore, StoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StoreError::Backend(format!("creating an in-memory store: {e}")))?;
        Self::start(db, EVENT_BUFFER)
    }

    /// [`Self::open`] with a chosen broadcast depth (tests make watchers lag with a tiny one).
    fn open_with_event_buffer(path: &Path, event_buffer: usize) -> Result<EmbeddedStore, StoreError> {
        let db = Database::create(path).map_err(|e| StoreError::Backend(format!("opening {}: {e}", path.display())))?;
        Self::start(db, event_buffer)
    }

    /// Creates the tables and starts the writer thread on an opened database.
    fn start(db: Database, event_buffer: usize) -> Result<EmbeddedStore, StoreError> {
        // Create the tables up front so read transactions can always open them.
        let txn = db.begin_write().map_err(backend)?;
        txn.open_table(codec::META).map_err(backend)?;
        txn.open_table(codec::KV).map_err(backend)?;
        txn.open_table(codec::HISTORY).map_err(backend)?;
        txn.commit().map_err(backend)?;

        let db = Arc::new(db);
        let (writes, requests) = mpsc::channel(WRITE_QUEUE);
        let (events, _) = broadcast::channel(event_buffer);
        let writer = writer::spawn(db.clone(), requests, events.clone())
            .map_err(|e| StoreError::Backend(format!("starting the store writer: {e}")))?;
        Ok(EmbeddedStore { inner: Inner { db, writes: Some(writes), events, writer: Some(writer) } })
    }

    /// Queues `op` for the writer and waits until it is committed.
    async fn write(&self, op: WriteOp) -> Result<Option<KeyValue>, StoreError> {
        let writes = self.inner.writes.as_ref().ok_or(StoreError::Closed)?;
        let (reply, answer) = oneshot::channel();
        writes.send(WriteRequest { op, reply }).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Like [`Self::write`], for ops that always return a key-value.
    async fn write_kv(&self, op: WriteOp) -> Result<KeyValue, StoreError> {
        self.write(op).await?.ok_or_else(|| StoreError::Backend("writer returned no key-value".into()))
    }

    /// Runs a read on the blocking pool: `redb` reads are synchronous file I/O.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Database) -> Result<T, StoreError> + Send + 'static,
    {
        let db = self.inner.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| StoreError::Backend(format!("store read task failed: {e}")))?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.read(read::revisions).await?.0)
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_owned();
        self.read(move |db| read::get(db, &key)).await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListPage, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |db| read::list(db, &prefix, &opts)).await
    }

    async fn count(&self, prefix: &str) -> Result<i64, StoreError> {
        let prefix = prefix.to_owned();
        self.read(move |db| read::count(db, &prefix)).await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        self.write_kv(WriteOp::Create { key: key.to_owned(), value }).await
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError> {
        self.write_kv(WriteOp::Update { key: key.to_owned(), value, expected }).await
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        self.write_kv(WriteOp::Delete { key: key.to_owned(), expected }).await
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Subscribe before reading the snapshot: see `watch` for why this leaves no gap.
        let live = self.inner.events.subscribe();
        let (current, compacted) = self.read(read::revisions).await?;
        let after = if after == 0 { current } else { after };
        if after + 1 < compacted {
            return Err(StoreError::Compacted { requested: after + 1, compacted });
        }
        let watch = watch::Watch::new(self.inner.db.clone(), prefix.to_owned(), live, after, current);
        Ok(watch.into_stream())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.write(WriteOp::Compact { revision }).await.map(|_| ())
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        Ok(self.read(read::revisions).await?.1)
    }
}
