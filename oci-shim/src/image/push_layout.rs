//! `skiff push` of an OCI image layout directory (what `umoci`, `skopeo copy … oci:DIR`,
//! `buildah push … oci:DIR` and `docker buildx --output type=oci,tar=false` write): the
//! image the layout's `index.json` names is uploaded — every layer blob and the config
//! (each checked against its digest first, and skipped when the registry has it), then the
//! manifest under the reference's tag.
//!
//! Which image: the only one, else the one whose `org.opencontainers.image.ref.name`
//! annotation equals the reference's tag, else the linux entry for this machine (a nested
//! index is followed the same way). Pushing a whole multi-platform index is not supported.

use std::path::{Path, PathBuf};

use futures::TryStreamExt as _;
use oci_client::Reference;
use oci_client::manifest::OciImageManifest;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::artifact::{is_index, select_from_index};
use super::fetch::Remote;
use super::push::{PushedArtifact, sha256_digest};
use super::{ImageError, OCI_MANIFEST_MEDIA_TYPE, RegistryCredentials};

/// The annotation naming an image in a layout's index (its tag).
const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";

/// Uploads the image of the OCI image layout in `dir` to `reference` (`registry/repo:tag`).
#[tracing::instrument(skip(creds), fields(dir = %dir.display()))]
pub async fn push_image_layout(
    dir: &Path,
    reference: &str,
    creds: &RegistryCredentials,
) -> Result<PushedArtifact, ImageError> {
    let parsed: Reference = reference.parse().map_err(|e: oci_client::ParseError| ImageError::InvalidReference {
        reference: reference.to_string(),
        message: e.to_string(),
    })?;
    let layout = Layout { dir: dir.to_path_buf() };
    let index = layout.json(&dir.join("index.json"))?;
    let (digest, media_type) = layout.choose(&index, parsed.tag())?;
    let manifest_bytes = layout.blob(&digest).await?;
    let manifest: OciImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| ImageError::InvalidArtifact(format!("{}: manifest {digest} is not valid: {e}", dir.display())))?;
    if let Some(wanted) = parsed.digest()
        && wanted != digest
    {
        return Err(ImageError::InvalidReference {
            reference: reference.to_string(),
            message: format!("the layout's image is {digest}, not {wanted}"),
        });
    }

    let remote = Remote::new(parsed.clone(), creds)?;
    let (client, auth) = remote.parts();
    let registry_error = |e: oci_client::errors::OciDistributionError| ImageError::Registry {
        reference: parsed.whole(),
        message: e.to_string(),
    };
    client.store_auth_if_needed(parsed.resolve_registry(), auth).await;
    for descriptor in manifest.layers.iter().chain(std::iter::once(&manifest.config)) {
        let path = layout.verified_blob_path(&descriptor.digest).await?;
        if client.blob_exists(&parsed, &descriptor.digest).await.map_err(registry_error)? {
            continue;
        }
        let file = tokio::fs::File::open(&path).await.map_err(ImageError::io(&path))?;
        let size = file.metadata().await.map_err(ImageError::io(&path))?.len();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .map_err(oci_client::errors::OciDistributionError::from);
        client.push_blob_stream(&parsed, stream, &descriptor.digest, Some(size)).await.map_err(registry_error)?;
    }
    let content_type = http::HeaderValue::from_str(&media_type).map_err(|e| {
        ImageError::InvalidArtifact(format!("{}: manifest media type {media_type:?}: {e}", dir.display()))
    })?;
    client.push_manifest_raw(&parsed, manifest_bytes, content_type).await.map_err(registry_error)?;
    Ok(PushedArtifact { reference: parsed.whole(), digest })
}

/// Reading an image layout directory.
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn invalid(&self, message: impl std::fmt::Display) -> ImageError {
        ImageError::InvalidArtifact(format!("{} is not a usable OCI image layout: {message}", self.dir.display()))
    }

    fn json(&self, path: &Path) -> Result<Value, ImageError> {
        let bytes = std::fs::read(path).map_err(|e| self.invalid(format_args!("{}: {e}", path.display())))?;
        serde_json::from_slice(&bytes).map_err(|e| self.invalid(format_args!("{}: {e}", path.display())))
    }

    /// The manifest to push (digest, media type) from an index document.
    fn choose(&self, index: &Value, tag: Option<&str>) -> Result<(String, String), ImageError> {
        let entries = index["manifests"].as_array().ok_or_else(|| self.invalid("index.json has no manifests"))?;
        let named = tag.and_then(|tag| entries.iter().find(|e| e["annotations"][REF_NAME_ANNOTATION] == tag));
        let entry = match (entries.as_slice(), named) {
            (_, Some(entry)) | ([entry], None) => entry.clone(),
            _ => {
                let digest = select_from_index(index)
                    .ok_or_else(|| self.invalid("several images and none for this tag or platform"))?;
                entries.iter().find(|e| e["digest"] == digest.as_str()).cloned().unwrap_or_default()
            }
        };
        let digest = entry["digest"].as_str().ok_or_else(|| self.invalid("an index entry has no digest"))?;
        if is_index(&entry) {
            let nested = self.json(&self.blob_path(digest)?)?;
            return self.choose(&nested, None);
        }
        let media_type = entry["mediaType"].as_str().unwrap_or(OCI_MANIFEST_MEDIA_TYPE).to_string();
        Ok((digest.to_string(), media_type))
    }

    fn blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let hex = super::layers::sha256_hex(digest)
            .ok_or_else(|| self.invalid(format_args!("unsupported digest {digest:?}")))?;
        Ok(self.dir.join("blobs/sha256").join(hex))
    }

    /// A small blob's bytes, verified.
    async fn blob(&self, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest)?;
        let bytes = tokio::fs::read(&path).await.map_err(|e| self.invalid(format_args!("{}: {e}", path.display())))?;
        let actual = sha256_digest(&bytes);
        if actual != digest {
            return Err(self.mismatch(digest, actual));
        }
        Ok(bytes)
    }

    /// A blob's path after hashing its content (blobs can be large: streamed, off the runtime).
    async fn verified_blob_path(&self, digest: &str) -> Result<PathBuf, ImageError> {
        let path = self.blob_path(digest)?;
        let hashed = path.clone();
        let actual = tokio::task::spawn_blocking(move || -> std::io::Result<String> {
            let mut hasher = Sha256::new();
            std::io::copy(&mut std::fs::File::open(&hashed)?, &mut hasher)?;
            Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
        })
        .await
        .map_err(|e| self.invalid(format_args!("hashing {digest}: {e}")))?
        .map_err(|e| self.invalid(format_args!("{}: {e}", path.display())))?;
        if actual != digest {
            return Err(self.mismatch(digest, actual));
        }
        Ok(path)
    }

    fn mismatch(&self, digest: &str, actual: String) -> ImageError {
        ImageError::DigestMismatch { reference: self.dir.display().to_string(), digest: digest.to_string(), actual }
    }
}
