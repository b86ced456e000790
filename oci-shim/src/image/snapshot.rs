//! Unpacked layers: `snapshots/<chain-id-hex>/fs`, one read-only directory per layer prefix,
//! stacked by the runtime as overlayfs lowerdirs. Each layer is unpacked once, on the first
//! [`ImageStore::container_rootfs`] that needs it, and shared by every image with the same
//! chain below it.
//!
//! Crash safety: a layer is decompressed and unpacked under `tmp/` (emptied when the store
//! opens), its uncompressed digest checked against the config's DiffID, the filesystem
//! synced, and only then renamed into `snapshots/` — a snapshot under its final name is
//! always complete. Not owned here: the overlay mount and the runtime spec.

use std::fs;
use std::io::{self, BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oci_client::manifest::{OciDescriptor, OciImageManifest};
use sha2::{Digest as _, Sha256};

use super::config::ImageConfig;
use super::layers::{Compression, chain_ids, sha256_hex};
use super::store::Inner;
use super::unpack::{UnpackStats, unpack_layer};
use super::{ImageError, ImageKind, ImageStore, PulledImage};

/// A container image ready to run: its layers unpacked and its config parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerImage {
    /// The manifest digest (the container status's `imageID`).
    pub manifest_digest: String,
    /// Snapshot directories, top layer first, as overlayfs' `lowerdir=` wants them. Read-only:
    /// they are shared by every container of every image with these layers.
    pub lowerdirs: Vec<PathBuf>,
    /// What the image says about running it.
    pub config: ImageConfig,
}

impl ImageStore {
    /// Unpacks (once) every layer of a pulled container image and returns its lowerdirs and
    /// config. Fails with a message naming the layer when a layer is corrupt, unsafe, or no
    /// longer in the store (pull it again).
    #[tracing::instrument(skip(self, pulled), fields(reference = %pulled.reference))]
    pub async fn container_rootfs(&self, pulled: &PulledImage) -> Result<ContainerImage, ImageError> {
        let ImageKind::Container { manifest_digest, config_digest } = &pulled.kind else {
            return Err(ImageError::Unsupported {
                reference: pulled.reference.clone(),
                message: "is a WASM artifact, not a container image".into(),
            });
        };
        let _no_gc = self.inner.gc_lock.read().await;
        let reference = pulled.reference.as_str();
        let manifest_bytes = self.inner.read_blob(reference, manifest_digest).await?;
        let manifest: OciImageManifest = serde_json::from_slice(&manifest_bytes).map_err(|e| {
            ImageError::InvalidArtifact(format!("{reference}: manifest {manifest_digest} is not valid: {e}"))
        })?;
        let config = ImageConfig::parse(config_digest, &self.inner.read_blob(reference, config_digest).await?)?;
        if config.diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::InvalidArtifact(format!(
                "{reference}: the manifest lists {} layers but the config {} DiffIDs",
                manifest.layers.len(),
                config.diff_ids.len()
            )));
        }
        let chains = chain_ids(&config.diff_ids);
        let mut lowerdirs = Vec::with_capacity(chains.len());
        for ((layer, diff_id), chain) in manifest.layers.iter().zip(&config.diff_ids).zip(&chains) {
            lowerdirs.push(self.inner.ensure_snapshot(reference, layer, diff_id, chain).await?);
        }
        lowerdirs.reverse();
        self.inner.touch(manifest_digest).await?;
        Ok(ContainerImage { manifest_digest: manifest_digest.clone(), lowerdirs, config })
    }
}

impl Inner {
    /// `snapshots/<hex>` for a chain ID.
    pub(super) fn snapshot_path(&self, chain_id: &str) -> Option<PathBuf> {
        sha256_hex(chain_id).map(|hex| self.dir.join("snapshots").join(hex))
    }

    async fn read_blob(&self, reference: &str, digest: &str) -> Result<Vec<u8>, ImageError> {
        let path = self.blob_path(digest);
        tokio::fs::read(&path).await.map_err(|e| missing_or_io(reference, digest, &path, e))
    }

    /// The `fs` directory of the snapshot for `chain_id`, unpacking `layer` if needed.
    async fn ensure_snapshot(
        self: &Arc<Self>,
        reference: &str,
        layer: &OciDescriptor,
        diff_id: &str,
        chain_id: &str,
    ) -> Result<PathBuf, ImageError> {
        let snapshot = self.snapshot_path(chain_id).ok_or_else(|| ImageError::Unsupported {
            reference: reference.to_string(),
            message: format!("unsupported layer DiffID/chain ID {chain_id:?}"),
        })?;
        let fs_dir = snapshot.join("fs");
        if fs_dir.is_dir() {
            return Ok(fs_dir);
        }
        let lock = {
            let mut unpacking = self.unpacking.lock().unwrap_or_else(|p| p.into_inner());
            unpacking.entry(chain_id.to_string()).or_default().clone()
        };
        let result = {
            let _one_unpack = lock.lock().await;
            if fs_dir.is_dir() {
                Ok(())
            } else {
                let blob = self.blob_path(&layer.digest);
                if !blob.is_file() {
                    Err(missing_or_io(reference, &layer.digest, &blob, io::ErrorKind::NotFound.into()))
                } else {
                    let inner = self.clone();
                    let (reference, layer_digest, diff_id) =
                        (reference.to_string(), layer.digest.clone(), diff_id.to_string());
                    let target = snapshot.clone();
                    tokio::task::spawn_blocking(move || {
                        inner.unpack_snapshot(&reference, &layer_digest, &diff_id, &blob, &target)
                    })
                    .await
                    .map_err(|e| ImageError::Io { path: snapshot.clone(), message: format!("unpack task: {e}") })
                    .and_then(|r| r)
                }
            }
        };
        self.unpacking.lock().unwrap_or_else(|p| p.into_inner()).remove(chain_id);
        result.map(|()| fs_dir)
    }

    /// Decompresses and unpacks `blob` under `tmp/`, verifies its DiffID, and renames the
    /// result to `target` (blocking).
    fn unpack_snapshot(
        &self,
        reference: &str,
        layer_digest: &str,
        diff_id: &str,
        blob: &Path,
        target: &Path,
    ) -> Result<(), ImageError> {
        let staging = self.dir.join("tmp").join(format!("snapshot-{}", uuid::Uuid::new_v4()));
        let result = (|| {
            let fs_dir = staging.join("fs");
            fs::create_dir_all(&fs_dir).map_err(ImageError::io(&fs_dir))?;
            let started = std::time::Instant::now();
            let (stats, actual) = unpack_blob(blob, &fs_dir).map_err(|e| ImageError::Unpack {
                reference: reference.to_string(),
                digest: layer_digest.to_string(),
                message: e.to_string(),
            })?;
            if actual != diff_id {
                return Err(ImageError::DigestMismatch {
                    reference: reference.to_string(),
                    digest: diff_id.to_string(),
                    actual,
                });
            }
            // One syncfs instead of an fsync per file: the rename below must not become
            // durable before the files it publishes.
            let dir = fs::File::open(&staging).map_err(ImageError::io(&staging))?;
            rustix::fs::syncfs(&dir).map_err(|e| ImageError::io(&staging)(e.into()))?;
            let parent = target.parent().unwrap_or(&self.dir);
            fs::create_dir_all(parent).map_err(ImageError::io(parent))?;
            if let Err(e) = fs::rename(&staging, target) {
                // Another process sharing the store may have published it first.
                if !target.join("fs").is_dir() {
                    return Err(ImageError::io(target)(e));
                }
            }
            tracing::debug!(
                layer = layer_digest,
                entries = stats.entries,
                bytes = stats.bytes,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "unpacked layer"
            );
            Ok(())
        })();
        if staging.exists() {
            let _ = fs::remove_dir_all(&staging);
        }
        result
    }
}

/// Unpacks a (possibly compressed) layer blob into `dest`, returning what was written and
/// the `sha256:` digest of the uncompressed tar stream (the layer's DiffID).
pub fn unpack_blob(blob: &Path, dest: &Path) -> Result<(UnpackStats, String), super::unpack::UnpackError> {
    use super::unpack::UnpackError;
    let file = fs::File::open(blob).map_err(|source| UnpackError::Io { path: blob.to_path_buf(), source })?;
    let mut buffered = BufReader::with_capacity(256 * 1024, file);
    let head = buffered.fill_buf().map_err(UnpackError::Archive)?;
    let decoder: Box<dyn Read> = match Compression::sniff(head) {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::Decoder::with_buffer(buffered).map_err(UnpackError::Archive)?),
    };
    let mut hashing = HashingReader { inner: decoder, hasher: Sha256::new() };
    let stats = unpack_layer(&mut hashing, dest)?;
    // The tar reader stops at the end-of-archive marker; the DiffID covers every byte.
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Archive)?;
    Ok((stats, format!("sha256:{}", hex::encode(hashing.hasher.finalize()))))
}

/// Hashes what passes through it.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn missing_or_io(reference: &str, digest: &str, path: &Path, e: io::Error) -> ImageError {
    if e.kind() == io::ErrorKind::NotFound {
        ImageError::Missing { reference: reference.to_string(), digest: digest.to_string() }
    } else {
        ImageError::io(path)(e)
    }
}
