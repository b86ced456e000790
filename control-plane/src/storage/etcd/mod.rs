//! The etcd backend: the store contract mapped onto a real etcd v3 cluster.
//!
//! What it owns: the key namespace (every key lives under `prefix`, `/registry/` like
//! Kubernetes, and is reported without it) and the translation of each operation into etcd
//! primitives — compare-and-swap writes as `Txn`s on `create_revision`/`mod_revision`, lists
//! as ranges pinned to a revision, watches as etcd watches with `prev_kv`.
//!
//! etcd has no call that reports its compaction point, so [`Store::compacted_revision`]
//! finds it by binary search over "can I still read at revision r?" probes (a few cheap
//! count-only ranges).

mod watch;

use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse, WatchOptions,
};
use futures::StreamExt;

use self::watch::WatchState;
use super::{KeyValue, ListOptions, ListPage, Revision, Store, StoreError, WatchStream};

/// The etcd-backed store.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    prefix: String,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// Maps a client error, recognising etcd's revision errors by their (stable) messages.
fn map_error(error: etcd_client::Error, requested: Revision) -> StoreError {
    let text = error.to_string();
    if text.contains("required revision has been compacted") {
        StoreError::Compacted { requested, compacted: 0 }
    } else if text.contains("required revision is a future revision") {
        StoreError::FutureRevision { requested, current: 0 }
    } else {
        StoreError::Backend(format!("etcd: {text}"))
    }
}

pub(super) fn backend(error: etcd_client::Error) -> StoreError {
    StoreError::Backend(format!("etcd: {error}"))
}

/// The smallest key greater than every key starting with `prefix` (etcd's `range_end`).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0] // every key
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, StoreError> {
    header.map(|h| h.revision()).ok_or_else(|| StoreError::Backend("etcd response without header".into()))
}

impl EtcdStore {
    /// [`Self::range`], halving the chunk while the response is over the gRPC message limit
    /// (large objects), down to one key.
    async fn range_fitting(
        &self,
        prefix: &str,
        start_after: Option<String>,
        mut limit: i64,
        revision: Revision,
    ) -> Result<ListPage, StoreError> {
        loop {
            match self.range(prefix, start_after.clone(), limit, revision).await {
                Err(StoreError::Backend(msg)) if limit > 1 && msg.contains("too large") => limit /= 2,
                other => return other,
            }
        }
    }

    /// One etcd range: at most `limit` keys under `prefix` after `start_after`, at `revision`
    /// (0 = latest).
    async fn range(
        &self,
        prefix: &str,
        start_after: Option<String>,
        limit: i64,
        revision: Revision,
    ) -> Result<ListPage, StoreError> {
        let opts = ListOptions { limit, start_after, revision };
        let full_prefix = self.full(prefix);
        let start = match &opts.start_after {
            Some(after) if after.as_str() >= prefix => format!("{}\0", self.full(after)),
            _ => full_prefix.clone(),
        };
        let mut options = GetOptions::new().with_range(prefix_end(full_prefix.as_bytes())).with_limit(opts.limit);
        if opts.revision != 0 {
            options = options.with_revision(opts.revision);
        }
        let resp = match self.client.clone().get(start, Some(options)).await {
            Ok(resp) => resp,
            Err(error) => {
                return Err(match map_error(error, opts.revision) {
                    StoreError::Compacted { requested, .. } => self.compacted_error(requested).await,
                    StoreError::FutureRevision { requested, .. } => {
                        StoreError::FutureRevision { requested, current: self.current_revision().await? }
                    }
                    other => other,
                });
            }
        };
        let items = resp.kvs().iter().map(|kv| self.convert(kv)).collect::<Result<Vec<_>, _>>()?;
        let revision = if opts.revision != 0 { opts.revision } else { header_revision(resp.header())? };
        let remaining = resp.count() - items.len() as i64;
        let continue_after = if resp.more() { items.last().map(|kv| kv.key.clone()) } else { None };
        Ok(ListPage { items, revision, continue_after, remaining: Some(remaining) })
    }

    /// Connects to the etcd cluster at `endpoints`, storing every key under `prefix`.
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<EtcdStore, StoreError> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5));
        let client = Client::connect(endpoints, Some(options)).await.map_err(backend)?;
        Ok(EtcdStore { client, prefix: prefix.to_owned() })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Converts an etcd key-value, stripping the prefix.
    pub(super) fn convert(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        let full = kv.key_str().map_err(backend)?;
        let key = full
            .strip_prefix(self.prefix.as_str())
            .ok_or_else(|| StoreError::Backend(format!("etcd returned key {full} outside {}", self.prefix)))?;
        Ok(KeyValue {
            key: key.to_owned(),
            value: kv.value().to_vec(),
            create_revision: kv.create_revision(),
            mod_revision: kv.mod_revision(),
        })
    }

    /// For a failed compare-and-swap: NotFound or Conflict, from the `or_else` get.
    fn precondition_failed(&self, key: &str, expected: Revision, resp: &TxnResponse) -> StoreError {
        let found = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => get.kvs().first().map(|kv| kv.mod_revision()),
            _ => None,
        });
        match found {
            None => StoreError::NotFound(key.to_owned()),
            Some(actual) => StoreError::Conflict { key: key.to_owned(), expected, actual },
        }
    }

    /// Whether revision `revision` can still be read (is not compacted).
    async fn readable(&self, revision: Revision) -> Result<bool, StoreError> {
        let options = GetOptions::new().with_revision(revision).with_count_only().with_limit(1);
        match self.client.clone().get(self.prefix.as_str(), Some(options)).await {
            Ok(_) => Ok(true),
            Err(error) => match map_error(error, revision) {
                StoreError::Compacted { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// A `Compacted` error for `requested`, with the real compaction point filled in.
    async fn compacted_error(&self, requested: Revision) -> StoreError {
        match self.compacted_revision().await {
            Ok(compacted) => StoreError::Compacted { requested, compacted },
            Err(error) => error,
        }
    }
}

/// Most keys one etcd range returns: keeps a response well under gRPC's message limit for
/// typical objects (a few KiB each).
const LIST_CHUNK: i64 = 500;

fn chunk(limit: i64) -> i64 {
    if limit == 0 { LIST_CHUNK } else { limit.min(LIST_CHUNK) }
}

#[async_trait]
impl Store for EtcdStore {
    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let options = GetOptions::new().with_count_only();
        let resp = self.client.clone().get(self.prefix.as_str(), Some(options)).await.map_err(backend)?;
        header_revision(resp.header())
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let resp = self.client.clone().get(self.full(key), None).await.map_err(backend)?;
        resp.kvs().first().map(|kv| self.convert(kv)).transpose()
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListPage, StoreError> {
        // One gRPC response is capped (4 MiB by default), so a large or unlimited list is read
        // as several ranges pinned to the revision of the first one.
        let mut page = self.range_fitting(prefix, opts.start_after.clone(), chunk(opts.limit), opts.revision).await?;
        while let Some(after) = page.continue_after.clone() {
            let wanted = if opts.limit == 0 { LIST_CHUNK } else { opts.limit - page.items.len() as i64 };
            if wanted <= 0 {
                break;
            }
            let next = self.range_fitting(prefix, Some(after), chunk(wanted), page.revision).await?;
            page.items.extend(next.items);
            page.continue_after = next.continue_after;
            page.remaining = next.remaining;
        }
        Ok(page)
    }

    async fn count(&self, prefix: &str) -> Result<i64, StoreError> {
        let full_prefix = self.full(prefix);
        let options = GetOptions::new().with_range(prefix_end(full_prefix.as_bytes())).with_count_only();
        let resp = self.client.clone().get(full_prefix, Some(options)).await.map_err(backend)?;
        Ok(resp.count())
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let full = self.full(key);
        let txn = Txn::new()
            .when([Compare::create_revision(full.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(full.as_str(), value.clone(), None)]);
        let resp = self.client.clone().txn(txn).await.map_err(backend)?;
        if !resp.succeeded() {
            return Err(StoreError::AlreadyExists(key.to_owned()));
        }
        let revision = header_revision(resp.header())?;
        Ok(KeyValue { key: key.to_owned(), value, create_revision: revision, mod_revision: revision })
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError> {
        let full = self.full(key);
        let txn = Txn::new()
            .when([
                Compare::create_revision(full.as_str(), CompareOp::Greater, 0),
                Compare::mod_revision(full.as_str(), CompareOp::Equal, expected),
            ])
            .and_then([TxnOp::put(full.as_str(), value.clone(), Some(PutOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(full.as_str(), None)]);
        let resp = self.client.clone().txn(txn).await.map_err(backend)?;
        if !resp.succeeded() {
            return Err(self.precondition_failed(key, expected, &resp));
        }
        let revision = header_revision(resp.header())?;
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Put(put) => put.prev_key().map(|kv| kv.create_revision()),
                _ => None,
            })
            .ok_or_else(|| StoreError::Backend("etcd put returned no previous key".into()))?;
        Ok(KeyValue { key: key.to_owned(), value, create_revision, mod_revision: revision })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
        let full = self.full(key);
        let mut compares = vec![Compare::create_revision(full.as_str(), CompareOp::Greater, 0)];
        if let Some(expected) = expected {
            compares.push(Compare::mod_revision(full.as_str(), CompareOp::Equal, expected));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then([TxnOp::delete(full.as_str(), Some(DeleteOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(full.as_str(), None)]);
        let resp = self.client.clone().txn(txn).await.map_err(backend)?;
        if !resp.succeeded() {
            return Err(self.precondition_failed(key, expected.unwrap_or_default(), &resp));
        }
        let revision = header_revision(resp.header())?;
        let prev = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Delete(delete) => delete.prev_kvs().first().cloned(),
                _ => None,
            })
            .ok_or_else(|| StoreError::Backend("etcd delete returned no previous key".into()))?;
        Ok(KeyValue { mod_revision: revision, ..self.convert(&prev)? })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // "From now" is pinned to the current revision so no write after this call is missed.
        let after = if after == 0 { self.current_revision().await? } else { after };
        // etcd reports a compacted start revision only asynchronously; probe it up front so
        // the caller gets the error from `watch` itself, like the embedded store.
        if !self.readable(after + 1).await.or_else(|e| match e {
            StoreError::FutureRevision { .. } => Ok(true),
            other => Err(other),
        })? {
            return Err(self.compacted_error(after + 1).await);
        }
        let full_prefix = self.full(prefix);
        let options = WatchOptions::new()
            .with_range(prefix_end(full_prefix.as_bytes()))
            .with_prev_key()
            .with_start_revision(after + 1);
        let responses = self.client.clone().watch(full_prefix, Some(options)).await.map_err(backend)?;
        let state = WatchState::new(self.clone(), responses, after);
        Ok(futures::stream::unfold(
            state,
            |mut state| async move { state.next_event().await.map(|item| (item, state)) },
        )
        .boxed())
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        match self.client.clone().compact(revision, None).await {
            Ok(_) => Ok(()),
            Err(error) => match map_error(error, revision) {
                // Already compacted at or past `revision`: nothing to do, as in the embedded store.
                StoreError::Compacted { .. } => Ok(()),
                StoreError::FutureRevision { requested, .. } => {
                    Err(StoreError::FutureRevision { requested, current: self.current_revision().await? })
                }
                other => Err(other),
            },
        }
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        // The smallest readable revision is the compaction point (1 when nothing was compacted).
        let (mut low, mut high) = (1, self.current_revision().await?.max(1));
        if self.readable(low).await? {
            return Ok(0);
        }
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if self.readable(mid).await? {
                high = mid;
            } else {
                low = mid;
            }
        }
        Ok(high)
    }

    async fn put_raw(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        // At etcd's root, not under `prefix`: CoreDNS's etcd plugin and etcdctl look there.
        self.client.clone().put(key, value, None).await.map_err(backend)?;
        Ok(())
    }

    async fn list_raw(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let options = GetOptions::new().with_range(prefix_end(prefix.as_bytes()));
        let resp = self.client.clone().get(prefix, Some(options)).await.map_err(backend)?;
        resp.kvs()
            .iter()
            .map(|kv| {
                let key = kv.key_str().map_err(backend)?.to_owned();
                Ok((key, kv.value().to_vec()))
            })
            .collect()
    }

    async fn delete_raw(&self, key: &str) -> Result<(), StoreError> {
        self.client.clone().delete(key, None).await.map_err(backend)?;
        Ok(())
    }
}
