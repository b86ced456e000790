//! Small accessors and edits on JSON API objects (`metadata.*`), and the store encoding.
//!
//! The store holds objects without `metadata.resourceVersion`: an object's resourceVersion
//! is the store's mod revision of its key, injected on every read, exactly as the Go API
//! server's etcd3 storage does. That keeps the value written once per revision honest.

use serde_json::{Map, Value, json};

use crate::apiserver::error::ApiError;
use crate::storage::{KeyValue, Revision};

/// `metadata.<field>` as a string, if present.
pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

/// The `metadata` map, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    obj["metadata"].as_object_mut().expect("metadata was just made an object")
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

/// `metadata.labels` as owned pairs (empty when absent).
pub fn labels(obj: &Value) -> std::collections::BTreeMap<String, String> {
    obj.get("metadata")
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
        .unwrap_or_default()
}

pub fn set_resource_version(obj: &mut Value, rev: Revision) {
    meta_mut(obj).insert("resourceVersion".into(), Value::String(rev.to_string()));
}

/// The store bytes of an object (resourceVersion stripped).
pub fn encode(obj: &Value) -> Result<Vec<u8>, ApiError> {
    /// Serialises like the object but skips `metadata.resourceVersion`, without the deep
    /// copy that removing it from a clone would cost on every write.
    struct WithoutRv<'a>(&'a Value);
    struct MetaWithoutRv<'a>(&'a serde_json::Map<String, Value>);
    impl serde::Serialize for WithoutRv<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let Some(map) = self.0.as_object() else { return self.0.serialize(s) };
            let mut out = s.serialize_map(Some(map.len()))?;
            for (k, v) in map {
                match (k.as_str(), v.as_object()) {
                    ("metadata", Some(meta)) => out.serialize_entry(k, &MetaWithoutRv(meta))?,
                    _ => out.serialize_entry(k, v)?,
                }
            }
            out.end()
        }
    }
    impl serde::Serialize for MetaWithoutRv<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut out = s.serialize_map(None)?;
            for (k, v) in self.0.iter().filter(|(k, _)| k.as_str() != "resourceVersion") {
                out.serialize_entry(k, v)?;
            }
            out.end()
        }
    }
    serde_json::to_vec(&WithoutRv(obj)).map_err(|e| ApiError::Internal(format!("encoding object: {e}")))
}

/// Decodes store bytes and injects the resourceVersion.
pub fn decode(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::Internal(format!("corrupt object at {}: {e}", kv.key)))?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

/// Writes the stored JSON `value` to `out` with `"resourceVersion": rev` spliced in as the first
/// field of its top-level `metadata` — the same object [`decode`] would give, without building
/// a `Value` tree and serialising it again. A watch with no selector sends every event this way,
/// so each watcher pays one scan of the bytes instead of a full decode and encode. `false`
/// (and `out` untouched) when the bytes are not an object with a `metadata` object.
pub fn splice_resource_version(value: &[u8], rev: Revision, out: &mut Vec<u8>) -> bool {
    #[derive(serde::Deserialize)]
    struct Top<'a> {
        #[serde(borrow, default)]
        metadata: Option<&'a serde_json::value::RawValue>,
    }
    let Ok(Top { metadata: Some(meta) }) = serde_json::from_slice::<Top<'_>>(value) else { return false };
    let raw = meta.get().as_bytes();
    // The raw value borrows from `value`, so its address gives its offset.
    let start = raw.as_ptr() as usize - value.as_ptr() as usize;
    if raw.first() != Some(&b'{') || start >= value.len() {
        return false;
    }
    let empty = raw[1..].iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'}');
    out.extend_from_slice(&value[..=start]);
    out.extend_from_slice(b"\"resourceVersion\":\"");
    out.extend_from_slice(rev.to_string().as_bytes());
    out.extend_from_slice(if empty { &b"\""[..] } else { &b"\","[..] });
    out.extend_from_slice(&value[start + 1..]);
    true
}

/// The current time as Kubernetes writes timestamps (RFC 3339, seconds, UTC).
pub fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A timestamp `secs` seconds from now.
pub fn now_plus(secs: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(secs);
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `generateName` suffix: five characters from the alphabet Kubernetes uses (no vowels, no
/// look-alikes), so generated names never spell words.
pub fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// Everything but `metadata` and `status`: what a `generation` bump is about.
pub fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
        m.remove("kind");
        m.remove("apiVersion");
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splicing_the_resource_version_matches_decode() {
        for obj in [
            json!({"kind": "Pod", "metadata": {"name": "a", "uid": "u"}, "spec": {"x": {"metadata": {}}}}),
            json!({"apiVersion": "v1", "metadata": {}, "data": {"metadata": "not this one"}}),
            json!({"status": {"metadata": {"name": "nested"}}, "metadata": {"labels": {"a": "b"}}}),
        ] {
            let value = encode(&obj).expect("encodes");
            let mut out = Vec::new();
            assert!(splice_resource_version(&value, 42, &mut out));
            let spliced: Value = serde_json::from_slice(&out).expect("valid json");
            let kv = KeyValue { key: "k".into(), value, create_revision: 1, mod_revision: 42 };
            assert_eq!(spliced, decode(&kv).expect("decodes"));
        }
        let mut out = Vec::new();
        assert!(!splice_resource_version(b"{\"kind\": \"Pod\"}", 1, &mut out), "no metadata");
        assert!(!splice_resource_version(b"{\"metadata\": 3}", 1, &mut out), "metadata not an object");
        assert!(!splice_resource_version(b"[1]", 1, &mut out), "not an object");
        assert!(out.is_empty());
    }

    #[test]
    fn encode_drops_only_the_resource_version() {
        let obj = json!({"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "7", "uid": "u"}, "spec": {}});
        let stored: Value = serde_json::from_slice(&encode(&obj).expect("encodes")).expect("json");
        assert_eq!(stored, json!({"kind": "Pod", "metadata": {"name": "a", "uid": "u"}, "spec": {}}));
        assert_eq!(obj["metadata"]["resourceVersion"], "7");
    }
}
