//! The UDP answer cache: encoded authoritative responses by query, reused while the records
//! do not change.
//!
//! Cluster answers change only when the Service/Endpoints cache does, so the encoded response
//! of a query can be reused: the key is the query's bytes after its ID (the question name
//! lowercased; flags, EDNS and all else included), valid while the records' serial is
//! unchanged. A hit costs a copy and two patches — the client's ID, and the question name as
//! the client spelled it (0x20 case randomisation). Only authoritative responses are cached
//! (cluster names; forwarded answers carry upstream TTLs that age).

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock};

use crate::records::ClusterRecords;

/// Responses kept; the cache starts over when full (a flood of distinct names cannot grow it).
const MAX_CACHED: usize = 16 * 1024;
/// Header bytes.
const HEADER: usize = 12;
/// Authoritative-answer bit in the third header byte.
const AA: u8 = 0x04;

/// Encoded responses by [`key`].
type Responses = HashMap<Box<[u8]>, Box<[u8]>>;

/// Encoded authoritative responses by query, valid for one records serial.
#[derive(Debug)]
pub(crate) struct AnswerCache {
    records: ClusterRecords,
    entries: RwLock<(u32, Responses)>,
}

/// Where the question name ends in a query (offset after its terminating zero), if the packet
/// is a plain query: QR 0, opcode QUERY, one question, no answer or authority records, an
/// uncompressed name.
fn question_end(packet: &[u8]) -> Option<usize> {
    if packet.len() < HEADER + 5 || packet[2] & 0xf8 != 0 {
        return None;
    }
    let count = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    if count(4) != 1 || count(6) != 0 || count(8) != 0 {
        return None;
    }
    let mut at = HEADER;
    loop {
        let len = usize::from(*packet.get(at)?);
        if len == 0 {
            return Some(at + 1);
        }
        if len > 63 {
            return None;
        }
        at += 1 + len;
    }
}

/// The cache key of a query: every byte after the ID, with the question name lowercased.
fn key(packet: &[u8], name_end: usize) -> Box<[u8]> {
    let mut key = packet[2..].to_vec();
    key[HEADER - 2..name_end - 2].make_ascii_lowercase();
    key.into_boxed_slice()
}

impl AnswerCache {
    pub(crate) fn new(records: ClusterRecords) -> Self {
        let serial = records.serial();
        Self { records, entries: RwLock::new((serial, HashMap::new())) }
    }

    /// Appends the cached response to `packet`, patched for it, to `out` and says whether
    /// there was one for the current records (the hot path: no allocation once `scratch` and
    /// `out` have grown). `scratch` is the caller's buffer for the key.
    pub(crate) fn answer_into(&self, packet: &[u8], scratch: &mut Vec<u8>, out: &mut Vec<u8>) -> bool {
        let Some(name_end) = question_end(packet) else { return false };
        scratch.clear();
        scratch.extend_from_slice(&packet[2..]);
        scratch[HEADER - 2..name_end - 2].make_ascii_lowercase();
        let serial = self.records.serial();
        let entries = self.entries.read().unwrap_or_else(PoisonError::into_inner);
        if entries.0 != serial {
            return false;
        }
        let Some(cached) = entries.1.get(scratch.as_slice()) else { return false };
        let start = out.len();
        out.extend_from_slice(cached);
        drop(entries);
        let response = &mut out[start..];
        response[..2].copy_from_slice(&packet[..2]);
        // The question is the first name of the response, at the same offset and length
        // (checked when it was cached).
        response[HEADER..name_end].copy_from_slice(&packet[HEADER..name_end]);
        true
    }

    /// [`AnswerCache::answer_into`] into a new buffer.
    #[cfg(test)]
    pub(crate) fn answer(&self, packet: &[u8]) -> Option<Vec<u8>> {
        let mut response = Vec::new();
        self.answer_into(packet, &mut Vec::new(), &mut response).then_some(response)
    }

    /// The records the answers come from.
    pub(crate) fn records(&self) -> &ClusterRecords {
        &self.records
    }

    /// Remembers `response` to `packet` when it is authoritative and the records have not
    /// changed since `serial` (read before the handler ran).
    pub(crate) fn insert(&self, packet: &[u8], response: &[u8], serial: u32) {
        let Some(name_end) = question_end(packet) else { return };
        if response.len() < name_end || response[2] & AA == 0 || response[HEADER..name_end] != packet[HEADER..name_end]
        {
            return;
        }
        let mut entries = self.entries.write().unwrap_or_else(PoisonError::into_inner);
        let now = self.records.serial();
        if now != serial {
            // The records changed while the handler ran: this response may be stale already.
            return;
        }
        if entries.0 != now {
            entries.0 = now;
            entries.1.clear();
        }
        if entries.1.len() >= MAX_CACHED {
            entries.1.clear();
        }
        entries.1.insert(key(packet, name_end), response.into());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A plain A query for `name` with ID `id`.
    pub(crate) fn query(id: u16, name: &str) -> Vec<u8> {
        let mut packet = id.to_be_bytes().to_vec();
        packet.extend([0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            packet.push(u8::try_from(label.len()).expect("label"));
            packet.extend(label.as_bytes());
        }
        packet.extend([0, 0, 1, 0, 1]);
        packet
    }

    #[test]
    fn keys_ignore_the_id_and_the_case_of_the_name_only() {
        let a = query(1, "Web.D.svc");
        let b = query(2, "web.d.SVC");
        let end = question_end(&a).expect("a plain query");
        assert_eq!(end, HEADER + 1 + 3 + 1 + 1 + 1 + 3 + 1);
        assert_eq!(key(&a, end), key(&b, end));
        let mut aaaa = b.clone();
        let at = aaaa.len() - 3;
        aaaa[at] = 28;
        assert_ne!(key(&aaaa, end), key(&b, end), "the type is part of the key");
        let mut response = a.clone();
        response[2] |= 0x80;
        assert_eq!(question_end(&response), None, "responses are not queries");
        let mut compressed = a.clone();
        compressed[HEADER] = 0xc0;
        assert_eq!(question_end(&compressed), None);
        assert_eq!(question_end(&a[..a.len() - 6]), None, "cut short");
    }

    #[test]
    fn answers_are_appended_to_the_output() {
        let records = ClusterRecords::new(crate::ZoneConfig::default());
        let cache = AnswerCache::new(records.clone());
        let asked = query(7, "web.d.svc");
        let mut response = asked.clone();
        response[2] = 0x84;
        cache.insert(&asked, &response, records.serial());
        let mut out = b"before".to_vec();
        let mut scratch = Vec::new();
        assert!(cache.answer_into(&query(3, "Web.d.svc"), &mut scratch, &mut out));
        assert!(!cache.answer_into(&query(3, "other.d.svc"), &mut scratch, &mut out));
        assert_eq!(&out[..6], b"before");
        assert_eq!(&out[6..8], &[0, 3]);
        assert_eq!(out.len(), 6 + response.len(), "a miss appends nothing");
    }

    #[test]
    fn cached_answers_are_patched_and_dropped_on_change() {
        use k8s_openapi::api::core::v1::{Service, ServiceSpec};
        let records = ClusterRecords::new(crate::ZoneConfig::default());
        let cache = AnswerCache::new(records.clone());
        let asked = query(7, "web.d.svc");
        let end = question_end(&asked).expect("query");
        let mut response = asked.clone();
        response[2] = 0x84; // QR + AA
        response.extend([0xc0, 0x0c]);
        let serial = records.serial();
        cache.insert(&asked, &response, serial);
        let again = query(9, "WEB.d.svc");
        let answer = cache.answer(&again).expect("cached");
        assert_eq!(&answer[..2], &[0, 9], "the client's ID");
        assert_eq!(&answer[HEADER..end], &again[HEADER..end], "the client's spelling");
        assert_eq!(&answer[end..], &response[end..]);

        let mut not_authoritative = response.clone();
        not_authoritative[2] = 0x80;
        let other = query(1, "other.d.svc");
        cache.insert(&other, &not_authoritative, serial);
        assert!(cache.answer(&other).is_none(), "only authoritative answers are kept");

        let service = Service {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("x".into()),
                namespace: Some("d".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec::default()),
            ..Service::default()
        };
        records.upsert_service(&service);
        assert!(cache.answer(&again).is_none(), "a change of the records empties the cache");
        cache.insert(&asked, &response, serial);
        assert!(cache.answer(&asked).is_none(), "an answer computed before the change is not kept");
    }
}
