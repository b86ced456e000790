//! Image garbage collection: when the store's disk use passes a high-water mark, remove
//! content no image needs (leftovers), then whole images not in use, least recently used
//! first, until use is back under the mark.
//!
//! What an image needs is read from its own blobs: the manifest (config and layer digests)
//! and, for containers, the config's DiffIDs (the chain IDs of its snapshots). An image in
//! `in_use` is kept even without an index entry. Holds the store's GC lock exclusively, so a
//! pull or unpack never sees its fresh content removed under it. What callers must ensure:
//! `in_use` lists every image a pod runs *or is about to start* ([`ImageStore::gc_referenced`]
//! resolves pods' image references under the lock), and a minimum age ([`ImageStore::gc_with`]) keeps
//! images just pulled for a pod the caller's list did not know yet — as the kubelet's
//! `--minimum-image-ttl-duration`.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::layers::chain_ids;
use super::store::Inner;
use super::{ImageError, ImageStore};

/// What a collection did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Disk use of blobs and snapshots before and after, in bytes.
    pub usage_before: u64,
    pub usage_after: u64,
    /// Manifest digests of the images removed (all their references dropped from the index).
    pub removed_images: Vec<String>,
    /// Digests of the blobs removed.
    pub removed_blobs: Vec<String>,
    /// Chain IDs (hex) of the snapshots removed.
    pub removed_snapshots: Vec<String>,
}

impl GcReport {
    /// Bytes freed.
    pub fn freed_bytes(&self) -> u64 {
        self.usage_before.saturating_sub(self.usage_after)
    }
}

impl ImageStore {
    /// If blobs and snapshots use more than `high_water_bytes` of disk, removes unreferenced
    /// content and then images not in `in_use` (manifest digests), oldest use first, until use
    /// is at or below the mark (or nothing more may go). Below the mark it does nothing.
    pub async fn gc(&self, in_use: &[String], high_water_bytes: u64) -> Result<GcReport, ImageError> {
        self.gc_with(in_use, high_water_bytes, Duration::ZERO).await
    }

    /// As [`ImageStore::gc`], freeing until use is at or below `target_bytes`, but never
    /// removing an image used (pulled or started) less than `min_age` ago.
    #[tracing::instrument(skip(self, in_use), fields(dir = %self.inner.dir.display()))]
    pub async fn gc_with(
        &self,
        in_use: &[String],
        target_bytes: u64,
        min_age: Duration,
    ) -> Result<GcReport, ImageError> {
        let _exclusive = self.inner.gc_lock.write().await;
        self.collect_locked(in_use.iter().cloned().collect(), target_bytes, min_age).await
    }

    /// As [`ImageStore::gc_with`], keeping the images `references` (pods' `image:` values or
    /// image IDs) stand for, resolved once no pull is in flight. Resolving before waiting for
    /// the lock would miss an image whose pull was still running — a pod's image, already
    /// listed by reference, then recorded and removed at once (seen with a zero minimum age).
    #[tracing::instrument(skip(self, references), fields(dir = %self.inner.dir.display()))]
    pub async fn gc_referenced(
        &self,
        references: &[String],
        target_bytes: u64,
        min_age: Duration,
    ) -> Result<GcReport, ImageError> {
        let _exclusive = self.inner.gc_lock.write().await;
        let in_use = self.digests_of(references.iter().map(String::as_str)).into_iter().collect();
        self.collect_locked(in_use, target_bytes, min_age).await
    }

    /// One collection; the caller holds the GC lock exclusively.
    async fn collect_locked(
        &self,
        in_use: HashSet<String>,
        target_bytes: u64,
        min_age: Duration,
    ) -> Result<GcReport, ImageError> {
        let inner = self.inner.clone();
        let report = tokio::task::spawn_blocking(move || inner.collect(&in_use, target_bytes, min_age))
            .await
            .map_err(|e| ImageError::Io { path: self.inner.dir.clone(), message: format!("gc task: {e}") })??;
        if !report.removed_images.is_empty() {
            self.inner.persist_index().await?;
        }
        if report.freed_bytes() > 0 {
            tracing::info!(freed = report.freed_bytes(), images = report.removed_images.len(), "image gc");
        }
        Ok(report)
    }

    /// Bytes of disk the store's blobs and snapshots take (what [`ImageStore::gc`] measures).
    pub async fn disk_usage(&self) -> Result<u64, ImageError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.disk_usage())
            .await
            .map_err(|e| ImageError::Io { path: self.inner.dir.clone(), message: format!("usage task: {e}") })?
    }

    /// The manifest digests `references` (pods' `image:` values, or `…@sha256:` image IDs)
    /// stand for in this store: what to pass as `in_use`. References the store does not know
    /// are skipped (nothing of theirs is stored); a digest reference counts as itself.
    pub fn digests_of<'a>(&self, references: impl IntoIterator<Item = &'a str>) -> Vec<String> {
        let index = self.inner.index.lock().unwrap_or_else(|p| p.into_inner());
        let mut digests = Vec::new();
        for reference in references {
            let Ok(parsed) = reference.parse::<oci_client::Reference>() else { continue };
            if let Some(digest) = parsed.digest() {
                digests.push(digest.to_string());
            }
            if let Some(entry) = index.get(&parsed.whole()) {
                digests.push(entry.digest.clone());
            }
        }
        digests.sort();
        digests.dedup();
        digests
    }
}

impl Inner {
    fn collect(&self, in_use: &HashSet<String>, high_water: u64, min_age: Duration) -> Result<GcReport, ImageError> {
        let usage = self.disk_usage()?;
        let mut report = GcReport { usage_before: usage, usage_after: usage, ..GcReport::default() };
        if usage <= high_water {
            return Ok(report);
        }
        // Least recently used image first; an image's use is the latest of its references.
        let mut candidates: BTreeMap<String, u64> = BTreeMap::new();
        for entry in self.index.lock().unwrap_or_else(|p| p.into_inner()).values() {
            if !in_use.contains(&entry.digest) {
                let used = candidates.entry(entry.digest.clone()).or_default();
                *used = (*used).max(entry.last_used);
            }
        }
        let newest_allowed = super::store::now_secs().saturating_sub(min_age.as_secs());
        let mut order: Vec<(u64, String)> =
            candidates.into_iter().filter(|(_, t)| *t <= newest_allowed).map(|(d, t)| (t, d)).collect();
        order.sort();
        let mut order = order.into_iter().map(|(_, digest)| digest);
        loop {
            self.sweep(in_use, &mut report)?;
            report.usage_after = self.disk_usage()?;
            if report.usage_after <= high_water {
                break;
            }
            let Some(victim) = order.next() else { break };
            self.index.lock().unwrap_or_else(|p| p.into_inner()).retain(|_, e| e.digest != victim);
            report.removed_images.push(victim);
        }
        Ok(report)
    }

    /// Removes every blob and snapshot that neither an indexed image nor `in_use` needs.
    fn sweep(&self, in_use: &HashSet<String>, report: &mut GcReport) -> Result<(), ImageError> {
        let mut roots: HashSet<String> = in_use.clone();
        roots.extend(self.index.lock().unwrap_or_else(|p| p.into_inner()).values().flat_map(|e| {
            let mut digests = vec![e.digest.clone()];
            if let super::store::IndexKind::Wasm { module_digest } = &e.kind {
                digests.push(module_digest.clone());
            }
            digests
        }));
        let mut blobs = HashSet::new();
        let mut snapshots = HashSet::new();
        for manifest in &roots {
            self.references(manifest, &mut blobs, &mut snapshots);
        }
        let blob_dir = self.dir.join("blobs/sha256");
        for entry in fs::read_dir(&blob_dir).map_err(ImageError::io(&blob_dir))? {
            let entry = entry.map_err(ImageError::io(&blob_dir))?;
            let hex = entry.file_name().to_string_lossy().into_owned();
            if !blobs.contains(&hex) {
                fs::remove_file(entry.path()).map_err(ImageError::io(&entry.path()))?;
                report.removed_blobs.push(format!("sha256:{hex}"));
            }
        }
        let snapshot_dir = self.dir.join("snapshots");
        let Ok(entries) = fs::read_dir(&snapshot_dir) else { return Ok(()) };
        for entry in entries {
            let entry = entry.map_err(ImageError::io(&snapshot_dir))?;
            let hex = entry.file_name().to_string_lossy().into_owned();
            if !snapshots.contains(&hex) {
                // Out of `snapshots/` first, so a crash mid-removal leaves no half snapshot
                // under a name that says complete (`tmp/` is emptied on open).
                let doomed = self.dir.join("tmp").join(format!("gc-{}", uuid::Uuid::new_v4()));
                fs::rename(entry.path(), &doomed).map_err(ImageError::io(&entry.path()))?;
                fs::remove_dir_all(&doomed).map_err(ImageError::io(&doomed))?;
                report.removed_snapshots.push(hex);
            }
        }
        Ok(())
    }

    /// Adds the blob hexes and snapshot hexes `digest` (a manifest, or any blob) keeps alive.
    /// Unreadable documents keep only themselves: nothing is removed on a guess.
    fn references(&self, digest: &str, blobs: &mut HashSet<String>, snapshots: &mut HashSet<String>) {
        let hex = |d: &str| d.strip_prefix("sha256:").unwrap_or(d).to_string();
        blobs.insert(hex(digest));
        let Some(manifest) = self.read_json(digest) else { return };
        if !manifest["layers"].is_array() {
            return;
        }
        let config_digest = manifest["config"]["digest"].as_str().unwrap_or_default();
        blobs.insert(hex(config_digest));
        for layer in manifest["layers"].as_array().into_iter().flatten() {
            blobs.insert(hex(layer["digest"].as_str().unwrap_or_default()));
        }
        let Some(config) = self.read_json(config_digest) else { return };
        let diff_ids: Vec<String> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d.as_str().map(str::to_string))
            .collect();
        snapshots.extend(chain_ids(&diff_ids).iter().map(|c| hex(c)));
    }

    fn read_json(&self, digest: &str) -> Option<Value> {
        if digest.is_empty() {
            return None;
        }
        let path = self.blob_path(digest);
        // Layers are large and never JSON; a manifest or config is small.
        if fs::metadata(&path).ok()?.len() > 4 * 1024 * 1024 {
            return None;
        }
        serde_json::from_slice(&fs::read(path).ok()?).ok()
    }

    /// Bytes of disk the blobs and snapshots take (allocated blocks; hard links once).
    pub(super) fn disk_usage(&self) -> Result<u64, ImageError> {
        let mut seen = HashSet::new();
        let mut total = 0;
        for dir in [self.dir.join("blobs"), self.dir.join("snapshots")] {
            total += usage_of(&dir, &mut seen)?;
        }
        Ok(total)
    }
}

fn usage_of(path: &Path, seen: &mut HashSet<(u64, u64)>) -> Result<u64, ImageError> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(ImageError::io(path)(e)),
    };
    if !seen.insert((metadata.dev(), metadata.ino())) {
        return Ok(0);
    }
    let mut total = metadata.blocks() * 512;
    if metadata.is_dir() {
        for entry in fs::read_dir(path).map_err(ImageError::io(path))? {
            let entry = entry.map_err(ImageError::io(path))?;
            total += usage_of(&entry.path(), seen)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
#[path = "gc_tests.rs"]
mod tests;
