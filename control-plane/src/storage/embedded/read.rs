//! Reads of the embedded store. Each runs in its own `redb` read transaction — a consistent
//! snapshot that never waits for the writer.
//!
//! Lists at a past revision are reconstructed from the history table: the state of a key at
//! revision `r` is the `prev` of the first event on it after `r`, or its current value when
//! nothing touched it since. That costs a scan of the history after `r` (short for the
//! intended use: the later pages of a paginated list pinned to the first page's revision),
//! and works for every revision not yet compacted.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use redb::{AccessGuard, Database, ReadOnlyTable, ReadTransaction, ReadableDatabase};

use super::codec::{HISTORY, KV, META, META_COMPACTED, META_REVISION, decode_event, decode_kv};
use crate::storage::{KeyValue, ListOptions, ListPage, Revision, StoreError, WatchEvent};

/// Wraps any `redb` error as a backend error.
pub(super) fn backend(error: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// The current revision and the compaction point, from one snapshot.
pub(super) fn revisions(db: &Database) -> Result<(Revision, Revision), StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    revisions_in(&txn)
}

fn revisions_in(txn: &ReadTransaction) -> Result<(Revision, Revision), StoreError> {
    let meta = txn.open_table(META).map_err(backend)?;
    let read = |name| -> Result<Revision, StoreError> { Ok(meta.get(name).map_err(backend)?.map_or(0, |g| g.value())) };
    Ok((read(META_REVISION)?, read(META_COMPACTED)?))
}

/// Reads one key at the latest revision.
pub(super) fn get(db: &Database, key: &str) -> Result<Option<KeyValue>, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let kv = txn.open_table(KV).map_err(backend)?;
    let found = kv.get(key).map_err(backend)?;
    found.map(|guard| decode_kv(key, guard.value())).transpose()
}

/// Counts keys under `prefix` at the latest revision.
pub(super) fn count(db: &Database, prefix: &str) -> Result<i64, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let kv = txn.open_table(KV).map_err(backend)?;
    let mut n = 0;
    for entry in kv.range::<&str>(prefix..).map_err(backend)? {
        let (key, _) = entry.map_err(backend)?;
        if !key.value().starts_with(prefix) {
            break;
        }
        n += 1;
    }
    Ok(n)
}

/// A key in a list, its value decoded only if it lands on the page.
enum Entry<'a> {
    Current(String, AccessGuard<'a, &'static [u8]>),
    Past(KeyValue),
}

impl Entry<'_> {
    fn into_kv(self) -> Result<KeyValue, StoreError> {
        match self {
            Entry::Current(key, guard) => decode_kv(&key, guard.value()),
            Entry::Past(kv) => Ok(kv),
        }
    }
}

/// Lists keys under `prefix` at `opts.revision` (latest when 0), one page of them.
pub(super) fn list(db: &Database, prefix: &str, opts: &ListOptions) -> Result<ListPage, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let (current, compacted) = revisions_in(&txn)?;
    let at = if opts.revision == 0 { current } else { opts.revision };
    if at > current {
        return Err(StoreError::FutureRevision { requested: at, current });
    }
    if at < compacted {
        return Err(StoreError::Compacted { requested: at, compacted });
    }
    let start = match &opts.start_after {
        Some(after) if after.as_str() >= prefix => Bound::Excluded(after.as_str()),
        _ => Bound::Included(prefix),
    };
    let (changed, past) =
        if at < current { state_at(&txn, prefix, start, at, current)? } else { (BTreeSet::new(), BTreeMap::new()) };

    let kv = txn.open_table(KV).map_err(backend)?;
    let mut now = kv
        .range::<&str>((start, Bound::Unbounded))
        .map_err(backend)?
        .map(|entry| entry.map_err(backend).map(|(k, v)| (k.value().to_owned(), v)))
        .take_while(|entry| entry.as_ref().map_or(true, |(key, _)| key.starts_with(prefix)))
        .filter(|entry| entry.as_ref().map_or(true, |(key, _)| !changed.contains(key)))
        .peekable();
    let mut then = past.into_values().peekable();
    // Both sides are in key order and disjoint: merge them.
    let mut next = || {
        let take_past = match (now.peek(), then.peek()) {
            (Some(Ok((key, _))), Some(old)) => old.key.as_str() < key.as_str(),
            (Some(_), _) => false,
            (None, Some(_)) => true,
            (None, None) => return None,
        };
        if take_past {
            then.next().map(|kv| Ok(Entry::Past(kv)))
        } else {
            now.next().map(|entry| entry.map(|(key, guard)| Entry::Current(key, guard)))
        }
    };

    let limit = if opts.limit > 0 { usize::try_from(opts.limit).unwrap_or(usize::MAX) } else { usize::MAX };
    let mut items = Vec::new();
    while items.len() < limit {
        match next() {
            Some(entry) => items.push(entry?.into_kv()?),
            None => break,
        }
    }
    let mut remaining = 0;
    while let Some(entry) = next() {
        entry?;
        remaining += 1;
    }
    let continue_after = if remaining > 0 { items.last().map(|kv| kv.key.clone()) } else { None };
    Ok(ListPage { items, revision: at, continue_after, remaining: Some(remaining) })
}

/// For the keys under `prefix` (from `start`) changed after `at`: the set of them, and the
/// values of those that existed at `at`.
fn state_at(
    txn: &ReadTransaction,
    prefix: &str,
    start: Bound<&str>,
    at: Revision,
    current: Revision,
) -> Result<(BTreeSet<String>, BTreeMap<String, KeyValue>), StoreError> {
    let history = txn.open_table(HISTORY).map_err(backend)?;
    let mut changed = BTreeSet::new();
    let mut past = BTreeMap::new();
    for entry in history.range(at + 1..=current).map_err(backend)? {
        let (revision, bytes) = entry.map_err(backend)?;
        let event = decode_event(revision.value(), bytes.value())?;
        let key = &event.kv.key;
        let in_range = match start {
            Bound::Excluded(after) => key.as_str() > after,
            _ => true,
        };
        if !key.starts_with(prefix) || !in_range || changed.contains(key) {
            continue;
        }
        changed.insert(key.clone());
        if let Some(prev) = event.prev {
            past.insert(prev.key.clone(), prev);
        }
    }
    Ok((changed, past))
}

/// Events under `prefix` after `after`, up to `until`, scanning at most `max_scan` records.
#[derive(Debug)]
pub(super) struct HistoryChunk {
    pub events: Vec<WatchEvent>,
    /// Every event up to this revision has been scanned.
    pub scanned_to: Revision,
}

/// Reads the next chunk of history for a watch; [`StoreError::Compacted`] if part of the
/// requested range is gone.
pub(super) fn history_chunk(
    db: &Database,
    prefix: &str,
    after: Revision,
    until: Revision,
    max_scan: usize,
) -> Result<HistoryChunk, StoreError> {
    let txn = db.begin_read().map_err(backend)?;
    let (_, compacted) = revisions_in(&txn)?;
    if after + 1 < compacted {
        return Err(StoreError::Compacted { requested: after + 1, compacted });
    }
    let history: ReadOnlyTable<i64, &[u8]> = txn.open_table(HISTORY).map_err(backend)?;
    let mut chunk = HistoryChunk { events: Vec::new(), scanned_to: until };
    for (scanned, entry) in history.range(after + 1..=until).map_err(backend)?.enumerate() {
        let (revision, bytes) = entry.map_err(backend)?;
        if scanned == max_scan {
            chunk.scanned_to = revision.value() - 1;
            break;
        }
        let event = decode_event(revision.value(), bytes.value())?;
        if event.kv.key.starts_with(prefix) {
            chunk.events.push(event);
        }
    }
    Ok(chunk)
}
