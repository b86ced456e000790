//! Watch streams of the embedded store: history replay from the `history` table, then live
//! events from the writer's broadcast, without gaps or duplicates.
//!
//! The invariant is `delivered_to`: every event up to that revision has been handled (sent or
//! filtered out). The stream subscribes to the broadcast *before* reading the snapshot it
//! replays, and the writer broadcasts only after committing, so every event is either in the
//! snapshot or still to come on the broadcast; events at or below `delivered_to` are dropped
//! as duplicates. A watcher too slow for the broadcast buffer (`Lagged`) is not lost: it goes
//! back to replaying the history table up to the current revision, and only fails — with
//! [`StoreError::Compacted`] — if that history was compacted meanwhile.

use std::collections::VecDeque;
use std::sync::Arc;

use futures::StreamExt;
use redb::Database;
use tokio::sync::broadcast::{self, error::RecvError};

use super::read::{history_chunk, revisions};
use super::writer::EventBatch;
use crate::storage::{Revision, StoreError, WatchEvent, WatchStream};

/// History records scanned per replay step, bounding memory for a far-behind watcher.
const REPLAY_CHUNK: usize = 1024;

/// The state of one watch stream.
#[derive(Debug)]
pub(super) struct Watch {
    db: Arc<Database>,
    prefix: String,
    live: broadcast::Receiver<EventBatch>,
    pending: VecDeque<WatchEvent>,
    delivered_to: Revision,
    replay_to: Option<Revision>,
    finished: bool,
}

impl Watch {
    /// A watch that delivers events under `prefix` after `after`. `live` must have been
    /// subscribed before `current` was read.
    pub(super) fn new(
        db: Arc<Database>,
        prefix: String,
        live: broadcast::Receiver<EventBatch>,
        after: Revision,
        current: Revision,
    ) -> Watch {
        Watch {
            db,
            prefix,
            live,
            pending: VecDeque::new(),
            delivered_to: after,
            replay_to: (after < current).then_some(current),
            finished: false,
        }
    }

    /// Turns the watch into the boxed stream the [`Store`](crate::storage::Store) trait returns.
    pub(super) fn into_stream(self) -> WatchStream {
        futures::stream::unfold(self, |mut watch| async move { watch.next_event().await.map(|item| (item, watch)) })
            .boxed()
    }

    async fn next_event(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(Ok(event));
            }
            if self.finished {
                return None;
            }
            let step = match self.replay_to {
                Some(until) => self.replay(until).await,
                None => self.receive().await,
            };
            if let Err(error) = step {
                self.finished = true;
                return Some(Err(error));
            }
        }
    }

    /// Reads the next chunk of history up to `until` into `pending`.
    async fn replay(&mut self, until: Revision) -> Result<(), StoreError> {
        if until <= self.delivered_to {
            self.replay_to = None;
            return Ok(());
        }
        let (db, prefix, after) = (self.db.clone(), self.prefix.clone(), self.delivered_to);
        let chunk = tokio::task::spawn_blocking(move || history_chunk(&db, &prefix, after, until, REPLAY_CHUNK))
            .await
            .map_err(|e| StoreError::Backend(format!("watch replay task failed: {e}")))??;
        self.pending.extend(chunk.events);
        self.delivered_to = chunk.scanned_to.max(self.delivered_to);
        if self.delivered_to >= until {
            self.replay_to = None;
        }
        Ok(())
    }

    /// Waits for the next committed batch and queues its new events under the prefix.
    async fn receive(&mut self) -> Result<(), StoreError> {
        match self.live.recv().await {
            Ok(batch) => {
                for event in batch.iter() {
                    let revision = event.kv.mod_revision;
                    if revision <= self.delivered_to {
                        continue;
                    }
                    self.delivered_to = revision;
                    if event.kv.key.starts_with(&self.prefix) {
                        self.pending.push_back(event.clone());
                    }
                }
                Ok(())
            }
            Err(RecvError::Lagged(missed)) => {
                tracing::debug!(missed, prefix = %self.prefix, "watcher lagged; replaying history");
                let db = self.db.clone();
                let (current, _) = tokio::task::spawn_blocking(move || revisions(&db))
                    .await
                    .map_err(|e| StoreError::Backend(format!("watch replay task failed: {e}")))??;
                self.replay_to = Some(current);
                Ok(())
            }
            Err(RecvError::Closed) => Err(StoreError::Closed),
        }
    }
}
