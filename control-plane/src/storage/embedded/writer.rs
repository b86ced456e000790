//! The single writer of the embedded store, and the group commit that makes it fast.
//!
//! Every write (create, update, delete, compact) becomes a [`WriteRequest`] on a channel. One
//! dedicated thread drains everything queued, applies it all in ONE `redb` write transaction,
//! commits once (one fsync, `Durability::Immediate`), and only then publishes the batch's
//! events and answers each request. With many concurrent clients the fsync cost is shared by
//! the whole batch, which is what lets the store take thousands of durable writes a second.
//!
//! Each request is judged on its own inside the batch (a failed precondition writes nothing
//! and does not affect its neighbours); only a storage error fails the whole batch, and then
//! nothing of it was committed or published.

use std::sync::Arc;
use std::thread::JoinHandle;

use redb::{Database, ReadableTable, Table};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::codec::{HISTORY, KV, META, META_COMPACTED, META_REVISION, decode_kv, encode_event, encode_kv};
use crate::storage::{EventKind, KeyValue, Revision, StoreError, WatchEvent};

/// At most this many requests share one transaction, bounding its size and latency.
const MAX_BATCH: usize = 4096;

/// The events of one committed transaction, in revision order.
pub(super) type EventBatch = Arc<[WatchEvent]>;

/// What a write asks for.
#[derive(Debug)]
pub(super) enum WriteOp {
    Create { key: String, value: Vec<u8> },
    Update { key: String, value: Vec<u8>, expected: Revision },
    Delete { key: String, expected: Option<Revision> },
    Compact { revision: Revision },
}

/// The answer to a write: the written key-value (`None` for a compaction).
pub(super) type WriteResult = Result<Option<KeyValue>, StoreError>;

/// One queued write and where to send its answer.
#[derive(Debug)]
pub(super) struct WriteRequest {
    pub op: WriteOp,
    pub reply: oneshot::Sender<WriteResult>,
}

/// Starts the writer thread. It runs until every sender of `requests` is dropped.
pub(super) fn spawn(
    db: Arc<Database>,
    mut requests: mpsc::Receiver<WriteRequest>,
    events: broadcast::Sender<EventBatch>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name("skiff-store-writer".into()).spawn(move || {
        while let Some(first) = requests.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            match apply_batch(&db, &batch) {
                Ok((results, committed)) => {
                    if !committed.is_empty() {
                        // No subscribers is fine: nobody is watching.
                        let _ = events.send(committed.into());
                    }
                    for (request, result) in batch.into_iter().zip(results) {
                        // The caller may have given up waiting; the write still happened.
                        let _ = request.reply.send(result);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, requests = batch.len(), "store write batch failed");
                    for request in batch {
                        let _ = request.reply.send(Err(StoreError::Backend(error.to_string())));
                    }
                }
            }
        }
    })
}

/// Applies `batch` in one transaction; returns each request's result and the committed events.
fn apply_batch(db: &Database, batch: &[WriteRequest]) -> Result<(Vec<WriteResult>, Vec<WatchEvent>), redb::Error> {
    let txn = db.begin_write()?;
    let mut results = Vec::with_capacity(batch.len());
    let events;
    {
        let mut meta = txn.open_table(META)?;
        let revision = meta.get(META_REVISION)?.map_or(0, |g| g.value());
        let compacted = meta.get(META_COMPACTED)?.map_or(0, |g| g.value());
        let mut state = BatchState {
            kv: txn.open_table(KV)?,
            history: txn.open_table(HISTORY)?,
            revision,
            compacted,
            events: Vec::new(),
        };
        for request in batch {
            results.push(state.apply(&request.op)?);
        }
        meta.insert(META_REVISION, state.revision)?;
        meta.insert(META_COMPACTED, state.compacted)?;
        events = state.events;
    }
    txn.commit()?;
    Ok((results, events))
}

/// The open tables and counters of one write transaction.
struct BatchState<'txn> {
    kv: Table<'txn, &'static str, &'static [u8]>,
    history: Table<'txn, i64, &'static [u8]>,
    revision: Revision,
    compacted: Revision,
    events: Vec<WatchEvent>,
}

impl BatchState<'_> {
    /// Applies one request. The outer error is a storage failure (fails the batch); the inner
    /// one is this request's own outcome.
    fn apply(&mut self, op: &WriteOp) -> Result<WriteResult, redb::Error> {
        match op {
            WriteOp::Create { key, value } => {
                if self.read(key)?.is_some() {
                    return Ok(Err(StoreError::AlreadyExists(key.clone())));
                }
                let revision = self.revision + 1;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: revision,
                    mod_revision: revision,
                };
                self.kv.insert(key.as_str(), encode_kv(revision, revision, value).as_slice())?;
                self.record(WatchEvent { kind: EventKind::Create, kv: kv.clone(), prev: None })?;
                Ok(Ok(Some(kv)))
            }
            WriteOp::Update { key, value, expected } => {
                let prev = match self.checked(key, Some(*expected))? {
                    Ok(prev) => prev,
                    Err(error) => return Ok(Err(error)),
                };
                let revision = self.revision + 1;
                let kv = KeyValue {
                    key: key.clone(),
                    value: value.clone(),
                    create_revision: prev.create_revision,
                    mod_revision: revision,
                };
                self.kv.insert(key.as_str(), encode_kv(prev.create_revision, revision, value).as_slice())?;
                self.record(WatchEvent { kind: EventKind::Update, kv: kv.clone(), prev: Some(prev) })?;
                Ok(Ok(Some(kv)))
            }
            WriteOp::Delete { key, expected } => {
                let prev = match self.checked(key, *expected)? {
                    Ok(prev) => prev,
                    Err(error) => return Ok(Err(error)),
                };
                let kv = KeyValue { mod_revision: self.revision + 1, ..prev.clone() };
                self.kv.remove(key.as_str())?;
                self.record(WatchEvent { kind: EventKind::Delete, kv: kv.clone(), prev: Some(prev) })?;
                Ok(Ok(Some(kv)))
            }
            WriteOp::Compact { revision } => {
                if *revision > self.revision {
                    return Ok(Err(StoreError::FutureRevision { requested: *revision, current: self.revision }));
                }
                // Compacting at or below the current point is a no-op, so a periodic compactor
                // may retry freely.
                if *revision > self.compacted {
                    self.history.retain_in(..*revision, |_, _| false)?;
                    self.compacted = *revision;
                }
                Ok(Ok(None))
            }
        }
    }

    /// Reads `key`; a corrupt record is reported as a request error, not a batch failure.
    fn read(&self, key: &str) -> Result<Option<Result<KeyValue, StoreError>>, redb::Error> {
        Ok(self.kv.get(key)?.map(|guard| decode_kv(key, guard.value())))
    }

    /// Reads `key` and checks that it exists with mod revision `expected` (when given).
    fn checked(&self, key: &str, expected: Option<Revision>) -> Result<Result<KeyValue, StoreError>, redb::Error> {
        Ok(match self.read(key)? {
            None => Err(StoreError::NotFound(key.to_owned())),
            Some(Err(error)) => Err(error),
            Some(Ok(current)) => match expected {
                Some(expected) if expected != current.mod_revision => {
                    Err(StoreError::Conflict { key: key.to_owned(), expected, actual: current.mod_revision })
                }
                _ => Ok(current),
            },
        })
    }

    /// Takes the next revision for `event` and appends it to the history.
    fn record(&mut self, event: WatchEvent) -> Result<(), redb::Error> {
        self.revision += 1;
        self.history.insert(self.revision, encode_event(&event).as_slice())?;
        self.events.push(event);
        Ok(())
    }
}
