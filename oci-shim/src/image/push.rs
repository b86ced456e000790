//! Pushing a `.wasm` file as a CNCF wasm OCI artifact: one `application/wasm` layer, a config
//! of type `application/vnd.wasm.config.v0+json` (architecture `wasm`, os `wasip1` for core
//! modules or `wasip2` for components), and an OCI image manifest, tagged as asked.
//!
//! Blobs go up through `oci-client`'s chunked upload (POST, PATCH…, PUT); the manifest is
//! serialised here so its digest is known exactly.

use oci_client::Reference;
use oci_client::client::ImageLayer;
use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::fetch::Remote;
use super::{ImageError, OCI_MANIFEST_MEDIA_TYPE, RegistryCredentials, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE};

/// What a push stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushedArtifact {
    /// `registry/repository:tag` as pushed.
    pub reference: String,
    /// The manifest digest.
    pub digest: String,
}

/// Which WASI world a binary targets, from its header: core modules are `wasip1`,
/// components `wasip2`. Fails on anything that is not WebAssembly.
pub fn wasm_os(bytes: &[u8]) -> Result<&'static str, ImageError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(ImageError::InvalidArtifact("not a WebAssembly binary (no \\0asm header)".into()));
    }
    match bytes[4..8] {
        [1, 0, 0, 0] => Ok("wasip1"),
        // Component binaries: version 0x0d (pre-1.0 encoding), layer 1.
        [_, _, 1, 0] => Ok("wasip2"),
        _ => Err(ImageError::InvalidArtifact(format!("unknown WebAssembly version/layer {:?}", &bytes[4..8]))),
    }
}

/// The config and manifest documents for a wasm binary with digest `layer_digest`.
pub fn artifact_documents(os: &str, layer_digest: &str, layer_size: usize) -> (Vec<u8>, Vec<u8>) {
    let config = json!({"architecture": "wasm", "os": os, "layerDigests": [layer_digest]}).to_string().into_bytes();
    let config_digest = sha256_digest(&config);
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST_MEDIA_TYPE,
        "artifactType": WASM_CONFIG_MEDIA_TYPE,
        "config": {"mediaType": WASM_CONFIG_MEDIA_TYPE, "digest": config_digest, "size": config.len()},
        "layers": [{"mediaType": WASM_LAYER_MEDIA_TYPE, "digest": layer_digest, "size": layer_size}],
    })
    .to_string()
    .into_bytes();
    (config, manifest)
}

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

/// Pushes `wasm` to `reference` (which must carry a tag).
pub async fn push_wasm(
    reference: &str,
    wasm: Vec<u8>,
    creds: &RegistryCredentials,
) -> Result<PushedArtifact, ImageError> {
    let os = wasm_os(&wasm)?;
    let parsed: Reference = reference.parse().map_err(|e: oci_client::ParseError| ImageError::InvalidReference {
        reference: reference.to_string(),
        message: e.to_string(),
    })?;
    let remote = Remote::new(parsed.clone(), creds)?;
    let (client, auth) = remote.parts();
    let registry_error = |e: oci_client::errors::OciDistributionError| ImageError::Registry {
        reference: parsed.whole(),
        message: e.to_string(),
    };
    client.store_auth_if_needed(parsed.resolve_registry(), auth).await;

    let layer_digest = sha256_digest(&wasm);
    let (config, manifest) = artifact_documents(os, &layer_digest, wasm.len());
    let layer = ImageLayer::new(wasm, WASM_LAYER_MEDIA_TYPE.to_string(), None);
    client.push_blob(&parsed, layer.data, &layer_digest).await.map_err(registry_error)?;
    let config_digest = sha256_digest(&config);
    client.push_blob(&parsed, config, &config_digest).await.map_err(registry_error)?;
    let digest = sha256_digest(&manifest);
    let content_type = http::HeaderValue::from_static(OCI_MANIFEST_MEDIA_TYPE);
    client.push_manifest_raw(&parsed, manifest, content_type).await.map_err(registry_error)?;
    Ok(PushedArtifact { reference: parsed.whole(), digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_wasm_binaries() {
        assert_eq!(wasm_os(b"\0asm\x01\0\0\0").expect("module"), "wasip1");
        assert_eq!(wasm_os(b"\0asm\x0d\0\x01\0").expect("component"), "wasip2");
        assert!(matches!(wasm_os(b"\x7fELF\x02\x01\x01\0"), Err(ImageError::InvalidArtifact(_))));
        assert!(matches!(wasm_os(b"\0asm"), Err(ImageError::InvalidArtifact(_))));
    }

    #[test]
    fn documents_follow_the_cncf_layout() {
        let layer = sha256_digest(b"\0asm\x01\0\0\0");
        let (config, manifest) = artifact_documents("wasip1", &layer, 8);
        let config: serde_json::Value = serde_json::from_slice(&config).expect("config json");
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip1");
        let manifest: oci_client::manifest::OciImageManifest = serde_json::from_slice(&manifest).expect("manifest");
        assert_eq!(manifest.config.media_type, WASM_CONFIG_MEDIA_TYPE);
        assert_eq!(manifest.layers[0].media_type, WASM_LAYER_MEDIA_TYPE);
        assert_eq!(manifest.layers[0].digest, layer);
        assert_eq!(super::super::artifact::wasm_layer(&manifest).map(|l| l.digest.clone()), Some(layer));
    }
}
