//! The registry's files under `<data-dir>/registry/`:
//!
//! ```text
//! blobs/sha256/<hex>                                   content, by digest (manifests too)
//! uploads/<uuid>                                       uploads in progress
//! tmp/                                                 staging for atomic writes
//! repositories/<name>/_manifests/revisions/<hex>       "this repo has manifest <hex>"; holds its media type
//! repositories/<name>/_manifests/tags/<tag>            the digest the tag points to
//! ```
//!
//! Every file that appears under a final name got there by `rename` from a fully written and
//! fsync'd file on the same file system, so a crash never leaves half a blob under its digest
//! or a torn tag. Blobs are verified against their digest before that rename. Bodies are
//! streamed to disk; nothing buffers a blob in memory (manifests are small and bounded).
//!
//! Blobs are shared by all repositories (a single-tenant cluster registry needs no per-repo
//! blob links). Garbage collection of unreferenced blobs is not done yet.

use std::path::{Path, PathBuf};

use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::error::RegistryError;
use super::path::Digest;

/// Largest manifest accepted (the reference registry's limit is 4 MiB too).
pub const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// The registry's on-disk store.
#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
}

impl Storage {
    /// Opens (creating if needed) the store rooted at `root`.
    pub fn open(root: &Path) -> std::io::Result<Storage> {
        for dir in ["blobs/sha256", "uploads", "tmp", "repositories"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(Storage { root: root.to_path_buf() })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    fn upload_path(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    fn manifests_dir(&self, name: &str) -> PathBuf {
        self.root.join("repositories").join(name).join("_manifests")
    }

    /// The size of a stored blob, or `None`.
    pub async fn blob_size(&self, digest: &Digest) -> Result<Option<u64>, RegistryError> {
        match tokio::fs::metadata(self.blob_path(digest)).await {
            Ok(meta) => Ok(Some(meta.len())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::io(format!("stat blob {digest}"))(e)),
        }
    }

    /// Opens a stored blob for streaming, with its size.
    pub async fn open_blob(&self, digest: &Digest) -> Result<(tokio::fs::File, u64), RegistryError> {
        let file = match tokio::fs::File::open(self.blob_path(digest)).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistryError::BlobUnknown(digest.to_string()));
            }
            Err(e) => return Err(RegistryError::io(format!("opening blob {digest}"))(e)),
        };
        let size = file.metadata().await.map_err(RegistryError::io(format!("stat blob {digest}")))?.len();
        Ok((file, size))
    }

    /// Starts an upload; returns its id.
    pub async fn new_upload(&self) -> Result<String, RegistryError> {
        let id = uuid::Uuid::new_v4().to_string();
        tokio::fs::File::create(self.upload_path(&id)).await.map_err(RegistryError::io("creating upload"))?;
        Ok(id)
    }

    /// Bytes received so far for upload `id`.
    pub async fn upload_size(&self, id: &str) -> Result<u64, RegistryError> {
        match tokio::fs::metadata(self.upload_path(id)).await {
            Ok(meta) => Ok(meta.len()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::BlobUploadUnknown(id.to_string())),
            Err(e) => Err(RegistryError::io(format!("stat upload {id}"))(e)),
        }
    }

    /// Appends `body` to upload `id` (streaming); `start`, from a `Content-Range`, must equal
    /// the bytes already received. Returns the new size.
    pub async fn append_upload(&self, id: &str, start: Option<u64>, body: Body) -> Result<u64, RegistryError> {
        let size = self.upload_size(id).await?;
        if let Some(start) = start
            && start != size
        {
            return Err(RegistryError::RangeInvalid {
                message: format!("chunk starts at {start}, upload has {size} bytes"),
                size,
            });
        }
        let mut file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(self.upload_path(id))
            .await
            .map_err(RegistryError::io(format!("opening upload {id}")))?;
        let mut stream = body.into_data_stream();
        let mut written = size;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| RegistryError::Body(e.to_string()))?;
            file.write_all(&chunk).await.map_err(RegistryError::io(format!("writing upload {id}")))?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(RegistryError::io(format!("writing upload {id}")))?;
        Ok(written)
    }

    /// Completes upload `id`: verifies its content against `digest` and moves it under that
    /// digest. On a mismatch the upload is discarded.
    pub async fn finish_upload(&self, id: &str, digest: &Digest) -> Result<u64, RegistryError> {
        let path = self.upload_path(id);
        let (actual, size) = hash_file(&path).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => RegistryError::BlobUploadUnknown(id.to_string()),
            _ => RegistryError::io(format!("reading upload {id}"))(e),
        })?;
        if actual != *digest {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(RegistryError::DigestInvalid(format!("expected {digest}, content is {actual}")));
        }
        let file = tokio::fs::File::open(&path).await.map_err(RegistryError::io(format!("opening upload {id}")))?;
        file.sync_all().await.map_err(RegistryError::io(format!("syncing upload {id}")))?;
        tokio::fs::rename(&path, self.blob_path(digest))
            .await
            .map_err(RegistryError::io(format!("storing blob {digest}")))?;
        Ok(size)
    }

    /// Discards upload `id`.
    pub async fn cancel_upload(&self, id: &str) -> Result<(), RegistryError> {
        match tokio::fs::remove_file(self.upload_path(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(RegistryError::BlobUploadUnknown(id.to_string())),
            Err(e) => Err(RegistryError::io(format!("removing upload {id}"))(e)),
        }
    }

    /// Stores a manifest's bytes as a blob and links it into repository `name` with its media
    /// type; returns its digest.
    pub async fn put_manifest(&self, name: &str, bytes: &Bytes, media_type: &str) -> Result<Digest, RegistryError> {
        let digest = Digest::from_sha256(&Sha256::digest(bytes));
        if self.blob_size(&digest).await?.is_none() {
            self.write_atomic(&self.blob_path(&digest), bytes).await?;
        }
        let revisions = self.manifests_dir(name).join("revisions");
        tokio::fs::create_dir_all(&revisions)
            .await
            .map_err(RegistryError::io(format!("creating repository {name}")))?;
        self.write_atomic(&revisions.join(digest.hex()), media_type.as_bytes()).await?;
        Ok(digest)
    }

    /// Points `tag` of repository `name` at `digest`.
    pub async fn put_tag(&self, name: &str, tag: &str, digest: &Digest) -> Result<(), RegistryError> {
        let tags = self.manifests_dir(name).join("tags");
        tokio::fs::create_dir_all(&tags).await.map_err(RegistryError::io(format!("creating repository {name}")))?;
        self.write_atomic(&tags.join(tag), digest.to_string().as_bytes()).await
    }

    /// The digest `tag` points to in repository `name`.
    pub async fn resolve_tag(&self, name: &str, tag: &str) -> Result<Digest, RegistryError> {
        let path = self.manifests_dir(name).join("tags").join(tag);
        match tokio::fs::read_to_string(&path).await {
            Ok(text) => Digest::parse(text.trim()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(RegistryError::ManifestUnknown(format!("{name}:{tag}")))
            }
            Err(e) => Err(RegistryError::io(format!("reading tag {name}:{tag}"))(e)),
        }
    }

    /// The media type of manifest `digest` in repository `name`, if the repository has it.
    pub async fn manifest_media_type(&self, name: &str, digest: &Digest) -> Result<Option<String>, RegistryError> {
        match tokio::fs::read_to_string(self.manifests_dir(name).join("revisions").join(digest.hex())).await {
            Ok(media_type) => Ok(Some(media_type)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(RegistryError::io(format!("reading manifest {name}@{digest}"))(e)),
        }
    }

    /// A manifest's bytes and media type.
    pub async fn manifest(&self, name: &str, digest: &Digest) -> Result<(Bytes, String), RegistryError> {
        let unknown = || RegistryError::ManifestUnknown(format!("{name}@{digest}"));
        let media_type = self.manifest_media_type(name, digest).await?.ok_or_else(unknown)?;
        match tokio::fs::read(self.blob_path(digest)).await {
            Ok(bytes) => Ok((Bytes::from(bytes), media_type)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(unknown()),
            Err(e) => Err(RegistryError::io(format!("reading manifest {digest}"))(e)),
        }
    }

    /// Removes manifest `digest` from repository `name`, with every tag pointing to it.
    pub async fn delete_manifest(&self, name: &str, digest: &Digest) -> Result<(), RegistryError> {
        let path = self.manifests_dir(name).join("revisions").join(digest.hex());
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(RegistryError::ManifestUnknown(format!("{name}@{digest}")));
            }
            Err(e) => return Err(RegistryError::io(format!("deleting manifest {name}@{digest}"))(e)),
        }
        for tag in self.tags(name).await.unwrap_or_default() {
            if self.resolve_tag(name, &tag).await.is_ok_and(|d| d == *digest) {
                self.delete_tag(name, &tag).await?;
            }
        }
        Ok(())
    }

    /// Removes `tag` from repository `name`.
    pub async fn delete_tag(&self, name: &str, tag: &str) -> Result<(), RegistryError> {
        match tokio::fs::remove_file(self.manifests_dir(name).join("tags").join(tag)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(RegistryError::ManifestUnknown(format!("{name}:{tag}")))
            }
            Err(e) => Err(RegistryError::io(format!("deleting tag {name}:{tag}"))(e)),
        }
    }

    /// The sorted tags of repository `name`.
    pub async fn tags(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        let dir = self.manifests_dir(name);
        if !tokio::fs::try_exists(&dir).await.map_err(RegistryError::io(format!("reading repository {name}")))? {
            return Err(RegistryError::NameUnknown(name.to_string()));
        }
        let mut tags = Vec::new();
        let mut entries = match tokio::fs::read_dir(dir.join("tags")).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(tags),
            Err(e) => return Err(RegistryError::io(format!("listing tags of {name}"))(e)),
        };
        while let Some(entry) =
            entries.next_entry().await.map_err(RegistryError::io(format!("listing tags of {name}")))?
        {
            if let Some(tag) = entry.file_name().to_str() {
                tags.push(tag.to_string());
            }
        }
        tags.sort();
        Ok(tags)
    }

    /// Writes `bytes` to a staging file, fsyncs it, and renames it to `path`.
    async fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), RegistryError> {
        let staging = self.root.join("tmp").join(uuid::Uuid::new_v4().to_string());
        let context = || format!("writing {}", path.display());
        let result = async {
            let mut file = tokio::fs::File::create(&staging).await?;
            file.write_all(bytes).await?;
            file.sync_all().await?;
            tokio::fs::rename(&staging, path).await
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&staging).await;
        }
        result.map_err(RegistryError::io(context()))
    }
}

/// The sha256 digest and size of a file, read in chunks.
async fn hash_file(path: &Path) -> std::io::Result<(Digest, u64)> {
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((Digest::from_sha256(&hasher.finalize()), size))
}
