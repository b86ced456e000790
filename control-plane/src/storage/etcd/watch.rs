//! etcd watches turned into the store's [`WatchEvent`] stream: creates told apart from
//! updates, deletes given their last value, and a compacted or cancelled watch ended with an
//! error item rather than silently.

use std::collections::VecDeque;

use etcd_client::EventType;

use super::{EtcdStore, backend};
use crate::storage::{EventKind, KeyValue, Revision, StoreError, WatchEvent};

/// One etcd watch turned into [`WatchEvent`]s.
pub(super) struct WatchState {
    store: EtcdStore,
    responses: etcd_client::WatchStream,
    pending: VecDeque<Result<WatchEvent, StoreError>>,
    after: Revision,
    finished: bool,
}

impl WatchState {
    /// Wraps the etcd watch `responses`, which start after revision `after`.
    pub(super) fn new(store: EtcdStore, responses: etcd_client::WatchStream, after: Revision) -> Self {
        WatchState { store, responses, pending: VecDeque::new(), after, finished: false }
    }

    pub(super) async fn next_event(&mut self) -> Option<Result<WatchEvent, StoreError>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(item);
            }
            if self.finished {
                return None;
            }
            let failure = match self.responses.message().await {
                Ok(Some(resp)) if resp.compact_revision() != 0 => {
                    Some(StoreError::Compacted { requested: self.after + 1, compacted: resp.compact_revision() })
                }
                Ok(Some(resp)) if resp.canceled() => {
                    Some(StoreError::Backend(format!("etcd canceled the watch: {}", resp.cancel_reason())))
                }
                Ok(Some(resp)) => {
                    for event in resp.events() {
                        let converted = self.convert(event);
                        if let Ok(event) = &converted {
                            self.after = event.kv.mod_revision;
                        }
                        self.pending.push_back(converted);
                    }
                    None
                }
                Ok(None) => Some(StoreError::Backend("etcd closed the watch stream".into())),
                Err(error) => Some(backend(error)),
            };
            if let Some(error) = failure {
                self.finished = true;
                self.pending.push_back(Err(error));
            }
        }
    }

    fn convert(&self, event: &etcd_client::Event) -> Result<WatchEvent, StoreError> {
        let kv = event.kv().ok_or_else(|| StoreError::Backend("etcd event without key-value".into()))?;
        let kv = self.store.convert(kv)?;
        let prev = event.prev_kv().map(|prev| self.store.convert(prev)).transpose()?;
        Ok(match event.event_type() {
            EventType::Put if kv.create_revision == kv.mod_revision => {
                WatchEvent { kind: EventKind::Create, kv, prev: None }
            }
            EventType::Put => WatchEvent { kind: EventKind::Update, kv, prev },
            EventType::Delete => {
                // etcd's delete event carries an empty value; ours carries the last one.
                let kv = match &prev {
                    Some(prev) => KeyValue { mod_revision: kv.mod_revision, ..prev.clone() },
                    None => kv,
                };
                WatchEvent { kind: EventKind::Delete, kv, prev }
            }
        })
    }
}
