//! The garbage collector (Kubernetes' `pkg/controller/garbagecollector`), generic over every
//! kind in the catalog:
//!
//! * background: an object whose owners are all gone is deleted; one with some owners left
//!   loses the references to the gone ones;
//! * foreground: an owner with a deletionTimestamp and the `foregroundDeletion` finalizer has
//!   its dependents deleted, waits until none with `blockOwnerDeletion` remains, then loses
//!   the finalizer (and the registry completes its delete);
//! * orphan: an owner with the `orphan` finalizer has its references removed from every
//!   dependent, then loses the finalizer.
//!
//! Parts: [`graph`] (the dependency graph, pure), [`monitor`] (the store watch feeding it),
//! [`collect`] (live checks and writes). An owner's absence is always confirmed with a live
//! read by name and uid, never trusted to the graph alone.
//!
//! Not here: which finalizers a DELETE adds (the registry's delete path) and namespace
//! deletion (`controllers::namespace`).

mod collect;
pub mod graph;
pub mod monitor;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::workqueue::WorkQueue;
use super::{Ctx, ReconcileError};
use crate::registry::rest::Registry;
use crate::storage::{Revision, SharedStore, StoreError};
use graph::{Graph, Work};

/// The whole graph is also scanned this often, in case a change was missed.
const RESYNC_INTERVAL: Duration = Duration::from_secs(60);
/// Queue key prefix: check an object for deletion (or its foreground deletion).
const DELETE: &str = "delete/";
/// Queue key prefix: orphan an owner's dependents.
const ORPHAN: &str = "orphan/";

/// The graph and how far it has read the store, shared by the monitor and the workers.
#[derive(Debug, Default)]
pub struct Shared {
    graph: Mutex<Graph>,
    revision: AtomicI64,
}

impl Shared {
    fn graph(&self) -> MutexGuard<'_, Graph> {
        // A panic while holding the lock leaves a usable graph; the next resync repairs it.
        self.graph.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn seen(&self, revision: Revision) {
        self.revision.fetch_max(revision, Ordering::SeqCst);
    }
}

/// The garbage collector (cheap to clone).
#[derive(Debug, Clone)]
pub struct GarbageCollector {
    registry: Registry,
    shared: Arc<Shared>,
    queue: WorkQueue,
}

impl GarbageCollector {
    /// Creates the collector; [`GarbageCollector::run`] feeds its graph.
    pub fn new(ctx: &Ctx) -> Self {
        GarbageCollector { registry: ctx.registry.clone(), shared: Arc::default(), queue: WorkQueue::new() }
    }

    /// Follows the store into the graph and rescans it every [`RESYNC_INTERVAL`], until `cancel`.
    pub async fn run(self, store: SharedStore, cancel: CancellationToken) {
        let queue = self.queue.clone();
        let enqueue = move |work: Vec<Work>| {
            for w in work {
                queue.add(&key_of(&w));
            }
        };
        let monitor = monitor::run(self.shared.clone(), store, enqueue, cancel.clone());
        let resync = async {
            let mut tick = tokio::time::interval(RESYNC_INTERVAL);
            tick.tick().await;
            loop {
                tick.tick().await;
                let work = self.shared.graph().scan();
                for w in work {
                    self.queue.add(&key_of(&w));
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = monitor => {}
            _ = resync => {}
        }
    }

    /// True when the graph has seen every write the store holds now (for tests).
    pub async fn caught_up(&self, store: &SharedStore) -> Result<bool, StoreError> {
        Ok(self.shared.revision.load(Ordering::SeqCst) >= store.current_revision().await?)
    }

    /// Works on one queue key (`delete/<uid>` or `orphan/<uid>`).
    pub async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        if let Some(uid) = key.strip_prefix(DELETE) {
            self.attempt_to_delete(uid).await
        } else if let Some(uid) = key.strip_prefix(ORPHAN) {
            self.orphan_dependents(uid).await
        } else {
            Ok(())
        }
    }
}

/// The queue key of a piece of work.
fn key_of(work: &Work) -> String {
    match work {
        Work::Delete(uid) => format!("{DELETE}{uid}"),
        Work::Orphan(uid) => format!("{ORPHAN}{uid}"),
    }
}

impl super::Reconcile for GarbageCollector {
    const NAME: &'static str = "garbage-collector";

    fn queue(&self) -> WorkQueue {
        self.queue.clone()
    }

    async fn reconcile(&self, key: &str) -> Result<(), ReconcileError> {
        GarbageCollector::reconcile(self, key).await
    }
}
