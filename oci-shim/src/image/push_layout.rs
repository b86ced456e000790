//! `skiff push` of an OCI image layout directory (what `umoci`, `skopeo copy … oci:DIR`,
//! `buildah push … oci:DIR` and `docker buildx --output type=oci,tar=false` write): the
//! image the layout's `index.json` names is uploaded — every layer blob and the config
//! (each checked against its digest first, and skipped when the registry has it), then the
//! manifest under the reference's tag.
//!
//! Which image ([`select_image`], pure): the entry whose `org.opencontainers.image.ref.name`
//! annotation equals the reference's tag, else the only entry; several entries with no
//! names and one platform each are one multi-platform image (the whole `index.json` is
//! pushed); anything else is an error listing the entries. A chosen entry that is itself an
//! index (a multi-platform image) is pushed as is: every platform's manifest by digest, then
//! the index under the tag — the pulling node picks its platform.

use std::path::{Path, PathBuf};

use futures::TryStreamExt as _;
use oci_client::Reference;
use oci_client::manifest::OciImageManifest;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use super::artifact::is_index;
use super::fetch::Remote;
use super::push::{PushedArtifact, sha256_digest};
use super::{ImageError, OCI_MANIFEST_MEDIA_TYPE, RegistryCredentials};

/// The annotation naming an image in a layout's index (its tag).
pub const REF_NAME_ANNOTATION: &str = "org.opencontainers.image.ref.name";
/// OCI image index media type.
const OCI_INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// How deep nested indexes may go (a layout's index → image index → manifests is 2).
const MAX_DEPTH: usize = 4;

/// What of a layout's `index.json` to push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// One entry: an image manifest, or a nested (multi-platform) index.
    Entry { digest: String, media_type: String },
    /// `index.json` itself: unnamed entries, one per platform.
    WholeIndex,
}

/// Picks what to push from a layout's `index.json` for `tag`; the error lists the entries.
pub fn select_image(index: &Value, tag: Option<&str>) -> Result<Selection, String> {
    let entries = index["manifests"].as_array().ok_or("index.json has no manifests list")?;
    let name = |e: &Value| e["annotations"][REF_NAME_ANNOTATION].as_str().map(str::to_string);
    let entry = match (tag.and_then(|tag| entries.iter().find(|e| name(e).as_deref() == Some(tag))), &entries[..]) {
        (Some(entry), _) | (None, [entry]) => entry,
        (None, []) => return Err("index.json lists no images".into()),
        (None, _) => {
            let platform = |e: &Value| {
                let p = &e["platform"];
                p["os"].as_str().map(|os| format!("{os}/{}", p["architecture"].as_str().unwrap_or("?")))
            };
            let platforms: Vec<Option<String>> = entries.iter().map(platform).collect();
            let distinct: std::collections::HashSet<_> = platforms.iter().flatten().collect();
            if entries.iter().all(|e| name(e).is_none()) && distinct.len() == entries.len() {
                return Ok(Selection::WholeIndex);
            }
            let listed: Vec<String> = entries
                .iter()
                .zip(&platforms)
                .map(|(e, p)| {
                    format!(
                        "{} ({}{})",
                        name(e).map(|n| format!("tag {n:?}")).unwrap_or_else(|| "no tag".into()),
                        e["digest"].as_str().unwrap_or("no digest"),
                        p.as_ref().map(|p| format!(", {p}")).unwrap_or_default(),
                    )
                })
                .collect();
            let wanted = tag.map(|t| format!(" and none is tagged {t:?}")).unwrap_or_default();
            return Err(format!(
                "index.json lists {} images{wanted}: {}; push one of them by giving its tag",
                entries.len(),
                listed.join(", ")
            ));
        }
    };
    let digest = entry["digest"].as_str().ok_or("an index entry has no digest")?.to_string();
    let default_type = if is_index(entry) { OCI_INDEX_MEDIA_TYPE } else { OCI_MANIFEST_MEDIA_TYPE };
    let media_type = entry["mediaType"].as_str().unwrap_or(default_type).to_string();
    Ok(Selection::Entry { digest, media_type })
}

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
    let index_path = dir.join("index.json");
    let index_bytes = std::fs::read(&index_path).map_err(|e| layout.invalid(format_args!("index.json: {e}")))?;
    let index: Value =
        serde_json::from_slice(&index_bytes).map_err(|e| layout.invalid(format_args!("index.json: {e}")))?;
    let (bytes, media_type) = match select_image(&index, parsed.tag()).map_err(|e| layout.invalid(e))? {
        Selection::Entry { digest, media_type } => (layout.blob(&digest).await?, media_type),
        Selection::WholeIndex => {
            let media_type = index["mediaType"].as_str().unwrap_or(OCI_INDEX_MEDIA_TYPE).to_string();
            (index_bytes, media_type)
        }
    };
    let digest = sha256_digest(&bytes);
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
    client.store_auth_if_needed(parsed.resolve_registry(), auth).await;
    let pusher = Pusher { layout, client, top: parsed.clone() };
    pusher.push_document(&parsed, bytes, &media_type, 0).await?;
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

/// Uploads documents of one layout to one repository.
struct Pusher<'a> {
    layout: Layout,
    client: &'a oci_client::Client,
    /// The reference asked for (its repository receives every blob and manifest).
    top: Reference,
}

impl Pusher<'_> {
    fn registry_error(&self, e: oci_client::errors::OciDistributionError) -> ImageError {
        ImageError::Registry { reference: self.top.whole(), message: super::fetch::describe(&e) }
    }

    /// Pushes a manifest or index (`bytes`) under `target`, after everything it names.
    async fn push_document(
        &self,
        target: &Reference,
        bytes: Vec<u8>,
        media_type: &str,
        depth: usize,
    ) -> Result<(), ImageError> {
        if depth > MAX_DEPTH {
            return Err(self.layout.invalid("indexes nested too deep"));
        }
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| self.layout.invalid(e))?;
        if is_index(&doc) {
            for child in doc["manifests"].as_array().into_iter().flatten() {
                let digest = child["digest"].as_str().ok_or_else(|| self.layout.invalid("an entry has no digest"))?;
                let child_type = child["mediaType"].as_str().unwrap_or(OCI_MANIFEST_MEDIA_TYPE);
                let child_bytes = self.layout.blob(digest).await?;
                let by_digest = self.top.clone_with_digest(digest.to_string());
                Box::pin(self.push_document(&by_digest, child_bytes, child_type, depth + 1)).await?;
            }
        } else {
            let manifest: OciImageManifest = serde_json::from_value(doc)
                .map_err(|e| self.layout.invalid(format_args!("a manifest is not valid: {e}")))?;
            for descriptor in manifest.layers.iter().chain(std::iter::once(&manifest.config)) {
                self.push_blob(&descriptor.digest).await?;
            }
        }
        let content_type = http::HeaderValue::from_str(media_type)
            .map_err(|e| self.layout.invalid(format_args!("media type {media_type:?}: {e}")))?;
        self.client.push_manifest_raw(target, bytes, content_type).await.map_err(|e| self.registry_error(e))?;
        Ok(())
    }

    /// Uploads one blob (verified first) unless the registry has it.
    async fn push_blob(&self, digest: &str) -> Result<(), ImageError> {
        let path = self.layout.verified_blob_path(digest).await?;
        if self.client.blob_exists(&self.top, digest).await.map_err(|e| self.registry_error(e))? {
            return Ok(());
        }
        let file = tokio::fs::File::open(&path).await.map_err(ImageError::io(&path))?;
        let size = file.metadata().await.map_err(ImageError::io(&path))?.len();
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 1 << 20)
            .map_err(oci_client::errors::OciDistributionError::from);
        self.client
            .push_blob_stream(&self.top, stream, digest, Some(size))
            .await
            .map_err(|e| self.registry_error(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn entry(digest: &str, name: Option<&str>, platform: Option<(&str, &str)>) -> Value {
        let mut e = json!({"mediaType": OCI_MANIFEST_MEDIA_TYPE, "digest": digest, "size": 1});
        if let Some(name) = name {
            e["annotations"] = json!({ REF_NAME_ANNOTATION: name });
        }
        if let Some((os, arch)) = platform {
            e["platform"] = json!({"os": os, "architecture": arch});
        }
        e
    }

    fn pick(digest: &str) -> Result<Selection, String> {
        Ok(Selection::Entry { digest: digest.into(), media_type: OCI_MANIFEST_MEDIA_TYPE.into() })
    }

    #[test]
    fn the_tag_names_the_image_else_the_only_one() {
        let index = json!({"manifests": [entry("sha256:a", Some("v1"), None), entry("sha256:b", Some("v2"), None)]});
        assert_eq!(select_image(&index, Some("v2")), pick("sha256:b"));
        let only = json!({"manifests": [entry("sha256:a", Some("latest"), Some(("linux", "amd64")))]});
        assert_eq!(select_image(&only, Some("v9")), pick("sha256:a"), "the only image, whatever its name");
    }

    #[test]
    fn several_images_without_a_match_are_listed() {
        let index = json!({"manifests": [
            entry("sha256:a", Some("v1"), Some(("linux", "amd64"))),
            entry("sha256:b", Some("v2"), None),
        ]});
        let err = select_image(&index, Some("v3")).expect_err("ambiguous");
        for part in ["2 images", "none is tagged \"v3\"", "tag \"v1\" (sha256:a, linux/amd64)", "tag \"v2\" (sha256:b)"]
        {
            assert!(err.contains(part), "{part:?} missing from {err}");
        }
        assert!(select_image(&json!({"manifests": []}), Some("v1")).is_err());
        assert!(select_image(&json!({}), Some("v1")).is_err());
    }

    #[test]
    fn multi_platform_images_are_pushed_whole() {
        let flat = json!({"manifests": [
            entry("sha256:a", None, Some(("linux", "amd64"))),
            entry("sha256:b", None, Some(("linux", "arm64"))),
        ]});
        assert_eq!(select_image(&flat, Some("v1")), Ok(Selection::WholeIndex));
        // Same platform twice is not one image.
        let twice = json!({"manifests": [
            entry("sha256:a", None, Some(("linux", "amd64"))),
            entry("sha256:b", None, Some(("linux", "amd64"))),
        ]});
        assert!(select_image(&twice, Some("v1")).is_err());
        // A nested index (what buildx and `skopeo copy --all` write) is one entry.
        let nested = json!({"manifests": [{"mediaType": OCI_INDEX_MEDIA_TYPE, "digest": "sha256:i",
            "annotations": {REF_NAME_ANNOTATION: "v1"}}]});
        assert_eq!(
            select_image(&nested, Some("v1")),
            Ok(Selection::Entry { digest: "sha256:i".into(), media_type: OCI_INDEX_MEDIA_TYPE.into() })
        );
    }
}
