//! On-disk layout of the embedded store: the `redb` tables and the byte encodings of the
//! records in them.
//!
//! Owns nothing but bytes: three tables (`meta`, `kv`, `history`) and a small hand-written,
//! length-prefixed encoding for key-values and events. A hand-written format keeps the file
//! independent of any serde format's evolution, and decoding never trusts the bytes: a short
//! or malformed record is a [`StoreError::Backend`], never a panic.

use redb::TableDefinition;

use crate::storage::{EventKind, KeyValue, Revision, StoreError, WatchEvent};

/// Store-wide counters: [`META_REVISION`] and [`META_COMPACTED`].
pub(super) const META: TableDefinition<&str, i64> = TableDefinition::new("meta");
/// The current state: key -> `create_rev | mod_rev | value`.
pub(super) const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
/// Every event not yet compacted: revision -> encoded [`WatchEvent`].
pub(super) const HISTORY: TableDefinition<i64, &[u8]> = TableDefinition::new("history");

/// The latest revision written.
pub(super) const META_REVISION: &str = "revision";
/// The compaction point: history before it is gone.
pub(super) const META_COMPACTED: &str = "compacted";

/// Encodes the value stored in [`KV`] for one key.
pub(super) fn encode_kv(create_revision: Revision, mod_revision: Revision, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + value.len());
    out.extend_from_slice(&create_revision.to_be_bytes());
    out.extend_from_slice(&mod_revision.to_be_bytes());
    out.extend_from_slice(value);
    out
}

/// Decodes a [`KV`] value stored under `key`.
pub(super) fn decode_kv(key: &str, bytes: &[u8]) -> Result<KeyValue, StoreError> {
    let mut reader = Reader { bytes, key };
    let create_revision = reader.i64()?;
    let mod_revision = reader.i64()?;
    Ok(KeyValue { key: key.to_owned(), value: reader.bytes.to_vec(), create_revision, mod_revision })
}

/// Encodes one event for the [`HISTORY`] table.
pub(super) fn encode_event(event: &WatchEvent) -> Vec<u8> {
    let prev_len = event.prev.as_ref().map_or(0, |p| p.value.len() + 20);
    let mut out = Vec::with_capacity(32 + event.kv.key.len() + event.kv.value.len() + prev_len);
    out.push(match event.kind {
        EventKind::Create => 0,
        EventKind::Update => 1,
        EventKind::Delete => 2,
    });
    put_bytes(&mut out, event.kv.key.as_bytes());
    put_revisions_and_value(&mut out, &event.kv);
    match &event.prev {
        None => out.push(0),
        Some(prev) => {
            out.push(1);
            put_revisions_and_value(&mut out, prev);
        }
    }
    out
}

/// Decodes one [`HISTORY`] record (stored at `revision`, used only for error context).
pub(super) fn decode_event(revision: Revision, bytes: &[u8]) -> Result<WatchEvent, StoreError> {
    let context = format!("history@{revision}");
    let mut reader = Reader { bytes, key: &context };
    let kind = match reader.u8()? {
        0 => EventKind::Create,
        1 => EventKind::Update,
        2 => EventKind::Delete,
        other => return Err(reader.corrupt(&format!("unknown event kind {other}"))),
    };
    let key = String::from_utf8(reader.bytes()?.to_vec()).map_err(|_| reader.corrupt("key is not UTF-8"))?;
    let kv = reader.key_value(&key)?;
    let prev = match reader.u8()? {
        0 => None,
        _ => Some(reader.key_value(&key)?),
    };
    Ok(WatchEvent { kind, kv, prev })
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Keys and values are bounded far below 4 GiB by the API server's request size limit.
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn put_revisions_and_value(out: &mut Vec<u8>, kv: &KeyValue) {
    out.extend_from_slice(&kv.create_revision.to_be_bytes());
    out.extend_from_slice(&kv.mod_revision.to_be_bytes());
    put_bytes(out, &kv.value);
}

/// A cursor over a record that reports truncation as corruption of `key`.
struct Reader<'a> {
    bytes: &'a [u8],
    key: &'a str,
}

impl<'a> Reader<'a> {
    fn corrupt(&self, what: &str) -> StoreError {
        StoreError::Backend(format!("corrupt record for {}: {what}", self.key))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], StoreError> {
        if self.bytes.len() < n {
            return Err(self.corrupt("truncated"));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn i64(&mut self) -> Result<i64, StoreError> {
        let raw: [u8; 8] = self.take(8)?.try_into().map_err(|_| self.corrupt("truncated"))?;
        Ok(i64::from_be_bytes(raw))
    }

    fn bytes(&mut self) -> Result<&'a [u8], StoreError> {
        let raw: [u8; 4] = self.take(4)?.try_into().map_err(|_| self.corrupt("truncated"))?;
        self.take(u32::from_be_bytes(raw) as usize)
    }

    fn key_value(&mut self, key: &str) -> Result<KeyValue, StoreError> {
        let create_revision = self.i64()?;
        let mod_revision = self.i64()?;
        let value = self.bytes()?.to_vec();
        Ok(KeyValue { key: key.to_owned(), value, create_revision, mod_revision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, value: &[u8], create: Revision, modified: Revision) -> KeyValue {
        KeyValue { key: key.into(), value: value.to_vec(), create_revision: create, mod_revision: modified }
    }

    #[test]
    fn kv_round_trips() {
        let bytes = encode_kv(3, 7, b"hello");
        assert_eq!(decode_kv("a", &bytes).expect("decodes"), kv("a", b"hello", 3, 7));
    }

    #[test]
    fn events_round_trip() {
        let events = [
            WatchEvent { kind: EventKind::Create, kv: kv("pods/a", b"x", 1, 1), prev: None },
            WatchEvent { kind: EventKind::Delete, kv: kv("pods/a", b"x", 1, 5), prev: Some(kv("pods/a", b"x", 1, 4)) },
        ];
        for event in events {
            let decoded = decode_event(9, &encode_event(&event)).expect("decodes");
            assert_eq!(decoded, event);
        }
    }

    #[test]
    fn truncated_records_are_errors() {
        assert!(decode_kv("a", &[0, 1]).is_err());
        let bytes = encode_event(&WatchEvent { kind: EventKind::Create, kv: kv("k", b"v", 1, 1), prev: None });
        assert!(decode_event(1, &bytes[..bytes.len() - 2]).is_err());
        assert!(decode_event(1, &[7]).is_err());
    }
}
