//! Pure classification: which entry of a manifest list to pull, and whether an image manifest
//! describes a WASM artifact (and which layer is the module) or a container image.

use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde_json::Value;

use super::{LEGACY_WASM_LAYER_MEDIA_TYPE, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};

/// Layer media types that carry a wasm binary (the last is what `oci-client` itself pushes).
const WASM_LAYER_TYPES: &[&str] =
    &[WASM_LAYER_MEDIA_TYPE, LEGACY_WASM_LAYER_MEDIA_TYPE, oci_client::manifest::WASM_LAYER_MEDIA_TYPE];

/// Whether a manifest document is an index / manifest list rather than an image manifest.
pub fn is_index(doc: &Value) -> bool {
    let media_type = doc["mediaType"].as_str().unwrap_or_default();
    media_type.contains("index") || media_type.contains("manifest.list") || doc["manifests"].is_array()
}

/// The digest to pull from an index: a wasm platform first (`os` wasip1/wasip2/wasi or
/// `architecture` wasm), then an entry without a platform, then linux on this machine's
/// architecture.
pub fn select_from_index(index: &Value) -> Option<String> {
    let entries = index["manifests"].as_array()?;
    let digest = |e: &Value| e["digest"].as_str().map(str::to_string);
    let wasm = entries.iter().find(|e| {
        let os = e["platform"]["os"].as_str().unwrap_or_default();
        let arch = e["platform"]["architecture"].as_str().unwrap_or_default();
        matches!(os, "wasip1" | "wasip2" | "wasi") || arch == "wasm"
    });
    if let Some(entry) = wasm {
        return digest(entry);
    }
    if let Some(entry) = entries.iter().find(|e| e["platform"].is_null()) {
        return digest(entry);
    }
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    entries.iter().find(|e| e["platform"]["os"] == "linux" && e["platform"]["architecture"] == arch).and_then(digest)
}

/// The layer holding the wasm binary, when the manifest is a WASM artifact: by the wasm
/// config media type (its single layer) or by a wasm layer media type.
pub fn wasm_layer(manifest: &OciImageManifest) -> Option<&OciDescriptor> {
    if let Some(layer) = manifest.layers.iter().find(|l| WASM_LAYER_TYPES.contains(&l.media_type.as_str())) {
        return Some(layer);
    }
    if manifest.config.media_type == WASM_CONFIG_MEDIA_TYPE && manifest.layers.len() == 1 {
        return manifest.layers.first();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(config_type: &str, layer_types: &[&str]) -> OciImageManifest {
        serde_json::from_value(json!({
            "schemaVersion": 2,
            "config": {"mediaType": config_type, "digest": "sha256:c", "size": 2},
            "layers": layer_types.iter().enumerate().map(|(i, t)| json!({"mediaType": t, "digest": format!("sha256:{i}"), "size": 1})).collect::<Vec<_>>(),
        }))
        .expect("manifest")
    }

    #[test]
    fn detects_wasm_artifacts() {
        let m = manifest(WASM_CONFIG_MEDIA_TYPE, &[WASM_LAYER_MEDIA_TYPE]);
        assert_eq!(wasm_layer(&m).map(|l| l.digest.as_str()), Some("sha256:0"));
        let legacy = manifest("application/vnd.oci.image.config.v1+json", &["x", LEGACY_WASM_LAYER_MEDIA_TYPE]);
        assert_eq!(wasm_layer(&legacy).map(|l| l.digest.as_str()), Some("sha256:1"));
        let by_config = manifest(WASM_CONFIG_MEDIA_TYPE, &["application/octet-stream"]);
        assert!(wasm_layer(&by_config).is_some());
        let container = manifest(
            "application/vnd.oci.image.config.v1+json",
            &["application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.oci.image.layer.v1.tar+gzip"],
        );
        assert!(wasm_layer(&container).is_none());
    }

    #[test]
    fn picks_platforms() {
        let index = json!({"mediaType": "application/vnd.oci.image.index.v1+json", "manifests": [
            {"digest": "sha256:linux", "platform": {"os": "linux", "architecture": "amd64"}},
            {"digest": "sha256:wasm", "platform": {"os": "wasip2", "architecture": "wasm"}},
        ]});
        assert!(is_index(&index));
        assert_eq!(select_from_index(&index).as_deref(), Some("sha256:wasm"));
        let plain = json!({"manifests": [{"digest": "sha256:any"}]});
        assert_eq!(select_from_index(&plain).as_deref(), Some("sha256:any"));
        let other =
            json!({"manifests": [{"digest": "sha256:s390", "platform": {"os": "linux", "architecture": "s390x"}}]});
        assert_eq!(select_from_index(&other), None);
        assert!(!is_index(&json!({"schemaVersion": 2, "layers": []})));
    }
}
