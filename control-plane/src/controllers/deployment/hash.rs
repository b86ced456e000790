//! The `pod-template-hash`: a stable name for one version of a Deployment's pod template.
//! Computed like the Go controller's `ComputeHash`: FNV-1a (32 bit) over the serialised
//! template, printed in decimal and mapped through the "safe" alphabet (no vowels, no
//! look-alikes), so the label and the ReplicaSet name never spell words.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use skiff_api::labels::POD_TEMPLATE_HASH;

const SAFE_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// FNV-1a, 32 bit.
fn fnv1a32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Kubernetes' `rand.SafeEncodeString`.
fn safe_encode(s: &str) -> String {
    s.bytes().map(|b| SAFE_ALPHABET[usize::from(b) % SAFE_ALPHABET.len()] as char).collect()
}

/// The hash of a template, ignoring any `pod-template-hash` label already on it. The JSON
/// form of the typed template is deterministic (struct fields in a fixed order, maps sorted),
/// so equal templates always hash equal.
pub fn template_hash(template: &PodTemplateSpec) -> String {
    template_hash_with(template, None)
}

/// [`template_hash`] salted with the Deployment's `status.collisionCount` (as Kubernetes'
/// `ComputeHash`: 8 more bytes, the count little-endian), so a name taken by a foreign
/// ReplicaSet is escaped by counting up.
pub fn template_hash_with(template: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut t = template.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
    }
    let mut bytes = serde_json::to_vec(&t).unwrap_or_default();
    if let Some(n) = collision_count {
        bytes.extend_from_slice(&(n as u32).to_le_bytes());
        bytes.extend_from_slice(&[0; 4]);
    }
    safe_encode(&fnv1a32(&bytes).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn template(v: serde_json::Value) -> PodTemplateSpec {
        serde_json::from_value(v).expect("template json")
    }

    #[test]
    fn fnv_matches_the_reference_vectors() {
        assert_eq!(fnv1a32(b""), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9c_f968);
    }

    #[test]
    fn hash_is_stable_and_follows_the_template() {
        let a = template(
            json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}, "spec": {"containers": [{"name": "c", "image": "v1"}]}}),
        );
        let same_other_order = template(
            json!({"spec": {"containers": [{"image": "v1", "name": "c"}]}, "metadata": {"labels": {"tier": "fe", "app": "web"}}}),
        );
        let b = template(
            json!({"metadata": {"labels": {"app": "web", "tier": "fe"}}, "spec": {"containers": [{"name": "c", "image": "v2"}]}}),
        );
        let h = template_hash(&a);
        assert_eq!(h, template_hash(&a));
        assert_eq!(h, template_hash(&same_other_order));
        assert_ne!(h, template_hash(&b));
        assert!(h.bytes().all(|c| SAFE_ALPHABET.contains(&c)) && !h.is_empty() && h.len() <= 10);
        // Pinned: a change of serialisation would rename every ReplicaSet on upgrade.
        assert_eq!(h, "6dd84d667b");
        let mut labelled = a.clone();
        labelled
            .metadata
            .as_mut()
            .and_then(|m| m.labels.as_mut())
            .map(|l| l.insert(POD_TEMPLATE_HASH.into(), h.clone()));
        assert_eq!(template_hash(&labelled), h, "the hash label itself does not count");
        assert_ne!(template_hash_with(&a, Some(1)), h, "a collision count renames");
        assert_ne!(template_hash_with(&a, Some(1)), template_hash_with(&a, Some(2)));
    }
}
