//! The content store on a node:
//!
//! ```text
//! <dir>/blobs/sha256/<hex>   every blob and manifest, by digest, verified before it lands
//! <dir>/tmp/                 downloads in progress (renamed into blobs/ once verified)
//! <dir>/index.json           pulled references -> manifest digest, kind, last use
//! <dir>/snapshots/<chain>/fs  unpacked container layers (`snapshot`), by chain ID
//! ```
//!
//! A container pull fetches manifest, config and every layer blob; layers are unpacked
//! later, on first use (`snapshot`), and `gc` removes what no image still needs. A blob
//! under its final name is always complete and verified: it is hashed while written to `tmp/`,
//! fsync'd, and renamed only on a match. Concurrent pulls of one reference with the same
//! credentials share one download.
//!
//! Why not share across credentials: a pull without access (no or wrong credentials) that
//! started first would hand its 401 to an authorised caller. Separate downloads of one
//! reference are safe (blobs land by digest through unique staging files). What is *not*
//! enforced, as in Kubernetes without `KubeletEnsureSecretPulledImages`: once an image is in
//! the store, `IfNotPresent`/`Never` pulls use it whatever the caller's credentials.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{Stream, StreamExt};
use oci_client::Reference;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::io::AsyncWriteExt;

use super::artifact::wasm_layer;
use super::fetch::Remote;
use super::layers::is_layer_media_type;
use super::{Auth, ImageError, ImageKind, PullPolicy, PulledImage, RegistryCredentials};

type PullFuture = Shared<BoxFuture<'static, Result<PulledImage, ImageError>>>;
type InflightKey = (String, Option<Auth>);

/// A node's image and artifact store. Cheap to clone; clones share the store.
#[derive(Clone)]
pub struct ImageStore {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) dir: PathBuf,
    /// Normalised reference -> what it resolved to last time.
    pub(super) index: Mutex<HashMap<String, IndexEntry>>,
    /// Pulls under way, by normalised reference and the credentials they use.
    inflight: Mutex<HashMap<InflightKey, PullFuture>>,
    /// Registry round trips made (manifest fetches), for metrics and tests.
    fetches: AtomicU64,
    /// Blobs downloaded (configs and layers; manifests are counted in `fetches`).
    blob_fetches: AtomicU64,
    /// One lock per chain ID being unpacked, so concurrent starts unpack a layer once.
    pub(super) unpacking: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Pulls and unpacks hold it shared; `gc` exclusively, so it never removes content a
    /// pull has written but not yet recorded.
    pub(super) gc_lock: tokio::sync::RwLock<()>,
}

impl std::fmt::Debug for ImageStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageStore").field("dir", &self.inner.dir).finish_non_exhaustive()
    }
}

/// One pulled reference in `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct IndexEntry {
    pub(super) digest: String,
    pub(super) kind: IndexKind,
    /// Unix seconds of the last pull or rootfs request: `gc` removes the oldest first.
    #[serde(default)]
    pub(super) last_used: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) enum IndexKind {
    Wasm { module_digest: String },
    Container { config_digest: String },
}

impl ImageStore {
    /// Opens (creating if needed) the store in `dir`, discarding unfinished downloads.
    pub fn open(dir: &Path) -> Result<ImageStore, ImageError> {
        std::fs::create_dir_all(dir.join("blobs/sha256")).map_err(ImageError::io(dir))?;
        let tmp = dir.join("tmp");
        // Leftovers of a crash mid-download are never valid content.
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(ImageError::io(&tmp))?;
        }
        std::fs::create_dir_all(&tmp).map_err(ImageError::io(&tmp))?;
        let index_path = dir.join("index.json");
        let index = match std::fs::read(&index_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %index_path.display(), error = %e, "unreadable image index; starting empty");
                HashMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(ImageError::io(&index_path)(e)),
        };
        Ok(ImageStore {
            inner: Arc::new(Inner {
                dir: dir.to_path_buf(),
                index: Mutex::new(index),
                inflight: Mutex::new(HashMap::new()),
                fetches: AtomicU64::new(0),
                blob_fetches: AtomicU64::new(0),
                unpacking: Mutex::new(HashMap::new()),
                gc_lock: tokio::sync::RwLock::new(()),
            }),
        })
    }

    /// How many times this store asked a registry for a manifest (one per actual pull).
    pub fn registry_fetches(&self) -> u64 {
        self.inner.fetches.load(Ordering::Relaxed)
    }

    /// How many blobs (configs, layers, modules) this store downloaded; blobs already in the
    /// store are never downloaded again.
    pub fn registry_blob_fetches(&self) -> u64 {
        self.inner.blob_fetches.load(Ordering::Relaxed)
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Makes `reference` available locally per `policy` and describes it. Concurrent calls for
    /// the same reference and the same credentials share one download.
    #[tracing::instrument(skip(self, creds), fields(dir = %self.inner.dir.display()))]
    pub async fn pull(
        &self,
        reference: &str,
        policy: PullPolicy,
        creds: &RegistryCredentials,
    ) -> Result<PulledImage, ImageError> {
        let parsed: Reference = reference.parse().map_err(|e: oci_client::ParseError| {
            ImageError::InvalidReference { reference: reference.to_string(), message: e.to_string() }
        })?;
        let key = parsed.whole();
        if policy != PullPolicy::Always
            && let Some(image) = self.inner.local(&key)
        {
            return Ok(image);
        }
        if policy == PullPolicy::Never {
            return Err(ImageError::NotPresent { reference: key });
        }
        let inflight_key = (key.clone(), creds.auth.clone());
        let pull = {
            let mut inflight = self.inner.inflight.lock().unwrap_or_else(|p| p.into_inner());
            inflight
                .entry(inflight_key.clone())
                .or_insert_with(|| {
                    let inner = self.inner.clone();
                    let creds = creds.clone();
                    async move { inner.fetch(parsed, &creds).await }.boxed().shared()
                })
                .clone()
        };
        let result = pull.clone().await;
        let mut inflight = self.inner.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if inflight.get(&inflight_key).is_some_and(|current| current.ptr_eq(&pull)) {
            inflight.remove(&inflight_key);
        }
        result
    }
}

impl Inner {
    pub(super) fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.dir.join("blobs/sha256").join(hex)
    }

    /// The pulled image for `key` if the index has it and its content is still on disk.
    fn local(&self, key: &str) -> Option<PulledImage> {
        let entry = self.index.lock().unwrap_or_else(|p| p.into_inner()).get(key)?.clone();
        if !self.blob_path(&entry.digest).is_file() {
            return None;
        }
        let kind = match entry.kind {
            IndexKind::Wasm { module_digest } => {
                let module_path = self.blob_path(&module_digest);
                if !module_path.is_file() {
                    return None;
                }
                ImageKind::Wasm { module_path, module_digest }
            }
            IndexKind::Container { config_digest } => {
                ImageKind::Container { manifest_digest: entry.digest.clone(), config_digest }
            }
        };
        Some(PulledImage { reference: key.to_string(), digest: entry.digest, kind })
    }

    /// Pulls from the registry: manifest, config, and the module (WASM) or every layer.
    async fn fetch(
        self: Arc<Self>,
        reference: Reference,
        creds: &RegistryCredentials,
    ) -> Result<PulledImage, ImageError> {
        let _no_gc = self.gc_lock.read().await;
        let key = reference.whole();
        let remote = Remote::new(reference, creds)?;
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let (manifest, digest, raw) = remote.manifest().await?;
        let config = manifest.config.clone();
        self.fetch_blob(&key, &remote, &config).await?;
        let (kind, index_kind) = match wasm_layer(&manifest) {
            Some(layer) => {
                self.fetch_blob(&key, &remote, layer).await?;
                let module_digest = layer.digest.clone();
                (
                    ImageKind::Wasm {
                        module_path: self.blob_path(&module_digest),
                        module_digest: module_digest.clone(),
                    },
                    IndexKind::Wasm { module_digest },
                )
            }
            None => {
                for layer in &manifest.layers {
                    if !is_layer_media_type(&layer.media_type) {
                        return Err(ImageError::Unsupported {
                            reference: key,
                            message: format!(
                                "layer {} has media type {:?}, not a container layer",
                                layer.digest, layer.media_type
                            ),
                        });
                    }
                    self.fetch_blob(&key, &remote, layer).await?;
                }
                (
                    ImageKind::Container { manifest_digest: digest.clone(), config_digest: config.digest.clone() },
                    IndexKind::Container { config_digest: config.digest.clone() },
                )
            }
        };
        // The manifest lands last: its presence means the image is complete locally.
        self.write_bytes(&key, &digest, &raw).await?;
        self.record(&key, IndexEntry { digest: digest.clone(), kind: index_kind, last_used: now_secs() }).await?;
        tracing::info!(reference = %key, %digest, "pulled");
        Ok(PulledImage { reference: key, digest, kind })
    }

    /// Downloads one blob unless the store has it (verified when it was written).
    async fn fetch_blob(
        &self,
        reference: &str,
        remote: &Remote,
        descriptor: &oci_client::manifest::OciDescriptor,
    ) -> Result<(), ImageError> {
        if self.blob_path(&descriptor.digest).is_file() {
            return Ok(());
        }
        self.blob_fetches.fetch_add(1, Ordering::Relaxed);
        self.write_stream(reference, &descriptor.digest, remote.blob(descriptor).await?).await
    }

    pub(super) async fn write_bytes(&self, reference: &str, digest: &str, bytes: &[u8]) -> Result<(), ImageError> {
        let chunk: Result<bytes::Bytes, std::io::Error> = Ok(bytes::Bytes::copy_from_slice(bytes));
        self.write_stream(reference, digest, futures::stream::iter([chunk])).await
    }

    /// Streams a blob into `tmp/`, hashing as it goes, and renames it under its digest only
    /// if the content matches. Blobs already present (verified when written) are skipped.
    async fn write_stream(
        &self,
        reference: &str,
        digest: &str,
        stream: impl Stream<Item = Result<bytes::Bytes, std::io::Error>>,
    ) -> Result<(), ImageError> {
        let Some(hex) =
            digest.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        else {
            return Err(ImageError::Unsupported {
                reference: reference.to_string(),
                message: format!("unsupported digest {digest:?}"),
            });
        };
        let target = self.blob_path(digest);
        if target.is_file() {
            return Ok(());
        }
        let staging = self.dir.join("tmp").join(uuid::Uuid::new_v4().to_string());
        let result = self.download(reference, hex, &staging, &target, stream).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&staging).await;
        }
        result
    }

    async fn download(
        &self,
        reference: &str,
        hex: &str,
        staging: &Path,
        target: &Path,
        stream: impl Stream<Item = Result<bytes::Bytes, std::io::Error>>,
    ) -> Result<(), ImageError> {
        let mut file = tokio::fs::File::create(staging).await.map_err(ImageError::io(staging))?;
        let mut hasher = Sha256::new();
        let mut stream = std::pin::pin!(stream);
        let mut stream_error = None;
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => {
                    hasher.update(&chunk);
                    file.write_all(&chunk).await.map_err(ImageError::io(staging))?;
                }
                Err(e) => {
                    stream_error = Some(e);
                    break;
                }
            }
        }
        let actual = hex::encode(hasher.finalize());
        // oci-client's own verification ends the stream with an error on a mismatch; report
        // that as the mismatch we saw (naming both digests), and any other stream error as is.
        let verification_error = stream_error.as_ref().is_none_or(|e| e.to_string().to_lowercase().contains("digest"));
        if actual != hex && verification_error {
            return Err(ImageError::DigestMismatch {
                reference: reference.to_string(),
                digest: format!("sha256:{hex}"),
                actual: format!("sha256:{actual}"),
            });
        }
        if let Some(e) = stream_error {
            return Err(ImageError::Registry {
                reference: reference.to_string(),
                message: format!("downloading sha256:{hex}: {e}"),
            });
        }
        file.sync_all().await.map_err(ImageError::io(staging))?;
        drop(file);
        tokio::fs::rename(staging, target).await.map_err(ImageError::io(target))
    }

    /// Adds `entry` to the index and rewrites `index.json` atomically.
    pub(super) async fn record(&self, key: &str, entry: IndexEntry) -> Result<(), ImageError> {
        self.index.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), entry);
        self.persist_index().await
    }

    /// Marks every reference resolving to `digest` as used now (the order `gc` evicts in).
    pub(super) async fn touch(&self, digest: &str) -> Result<(), ImageError> {
        let now = now_secs();
        let changed = {
            let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
            let mut changed = false;
            // Second resolution is plenty for eviction order; skip rewrites within a minute.
            for entry in index.values_mut().filter(|e| e.digest == digest && e.last_used + 60 <= now) {
                entry.last_used = now;
                changed = true;
            }
            changed
        };
        if changed { self.persist_index().await } else { Ok(()) }
    }

    /// The index as `index.json` bytes.
    pub(super) fn index_json(&self) -> Result<Vec<u8>, ImageError> {
        let index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_vec_pretty(&*index)
            .map_err(|e| ImageError::Io { path: self.dir.join("index.json"), message: e.to_string() })
    }

    /// Rewrites `index.json` atomically from the in-memory index.
    pub(super) async fn persist_index(&self) -> Result<(), ImageError> {
        let json = self.index_json()?;
        let staging = self.dir.join("tmp").join(format!("index-{}", uuid::Uuid::new_v4()));
        let path = self.dir.join("index.json");
        let mut file = tokio::fs::File::create(&staging).await.map_err(ImageError::io(&staging))?;
        file.write_all(&json).await.map_err(ImageError::io(&staging))?;
        file.sync_all().await.map_err(ImageError::io(&staging))?;
        drop(file);
        // Two concurrent records may rename in either order; each file holds the whole index
        // as of its snapshot, so the older one can lose the newer entry until the next pull.
        tokio::fs::rename(&staging, &path).await.map_err(ImageError::io(&path))
    }
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(super) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn never_and_if_not_present_without_a_registry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("open");
        let creds = RegistryCredentials::default();
        let err = store.pull("127.0.0.1:1/demo/hello:v1", PullPolicy::Never, &creds).await.expect_err("absent");
        assert!(matches!(err, ImageError::NotPresent { .. }), "{err}");
        assert!(err.to_string().contains("pull policy is Never"));
        let err = store.pull("NOT A REF", PullPolicy::IfNotPresent, &creds).await.expect_err("bad ref");
        assert!(matches!(err, ImageError::InvalidReference { .. }), "{err}");
        assert_eq!(store.registry_fetches(), 0);
    }

    #[tokio::test]
    async fn blobs_are_verified_before_they_land() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = ImageStore::open(dir.path()).expect("open");
        let good = format!("sha256:{}", hex::encode(Sha256::digest(b"hello")));
        store.inner.write_bytes("r", &good, b"hello").await.expect("good blob");
        assert_eq!(std::fs::read(store.inner.blob_path(&good)).expect("stored"), b"hello");
        let claimed = format!("sha256:{}", hex::encode(Sha256::digest(b"other")));
        let err = store.inner.write_bytes("r", &claimed, b"hello").await.expect_err("mismatch");
        assert!(matches!(err, ImageError::DigestMismatch { .. }), "{err}");
        assert!(!store.inner.blob_path(&claimed).exists());
        assert_eq!(std::fs::read_dir(dir.path().join("tmp")).expect("tmp").count(), 0, "staging cleaned up");
    }

    #[tokio::test]
    async fn index_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let module = b"\0asm\x01\0\0\0";
        let module_digest = format!("sha256:{}", hex::encode(Sha256::digest(module)));
        let manifest_digest = format!("sha256:{}", hex::encode(Sha256::digest(b"{}")));
        {
            let store = ImageStore::open(dir.path()).expect("open");
            store.inner.write_bytes("r", &module_digest, module).await.expect("module");
            store.inner.write_bytes("r", &manifest_digest, b"{}").await.expect("manifest");
            let entry = IndexEntry {
                digest: manifest_digest.clone(),
                kind: IndexKind::Wasm { module_digest: module_digest.clone() },
                last_used: 0,
            };
            store.inner.record("example.com/a:v1", entry).await.expect("record");
        }
        let store = ImageStore::open(dir.path()).expect("reopen");
        let image =
            store.pull("example.com/a:v1", PullPolicy::Never, &RegistryCredentials::default()).await.expect("cached");
        assert_eq!(image.digest, manifest_digest);
        match image.kind {
            ImageKind::Wasm { module_path, module_digest: d } => {
                assert_eq!(d, module_digest);
                assert_eq!(std::fs::read(module_path).expect("module"), module);
            }
            other => panic!("expected wasm, got {other:?}"),
        }
    }
}
