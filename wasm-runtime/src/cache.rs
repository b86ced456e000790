//! The on-disk cache of compiled artifacts.
//!
//! Key: the SHA-256 of the artifact's bytes plus a hash of the engine's compatibility
//! settings (wasmtime version, target, compiler flags), so a cache directory shared across
//! Skiff upgrades never hands an engine code it cannot run. Files are written to a temporary
//! name and renamed, so a crash never leaves a torn entry; an entry wasmtime refuses anyway
//! (a truncated file, a foreign version) is recompiled and replaced.

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use wasmtime::Engine;

/// What is cached: the two kinds of compiled code wasmtime serializes differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Component,
    Module,
}

/// The cache directory of one engine.
#[derive(Debug)]
pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_hash: u64,
}

impl DiskCache {
    pub fn new(dir: PathBuf, engine: &Engine) -> Self {
        // DefaultHasher is only stable within one build of Skiff, which is all we need: a
        // different build may have a different wasmtime and must not reuse entries anyway.
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Self { dir, engine_hash: h.finish() }
    }

    /// The file for content hash `sha256_hex` of `kind`.
    pub fn path(&self, sha256_hex: &str, kind: Kind) -> PathBuf {
        let ext = match kind {
            Kind::Component => "cwasm",
            Kind::Module => "cmod",
        };
        self.dir.join(entry_name(sha256_hex, self.engine_hash, ext))
    }

    /// Stores `bytes` under `path` atomically. Failures are logged, not fatal: a cache that
    /// cannot be written only costs a recompile next time.
    pub fn store(&self, path: &Path, bytes: &[u8]) {
        if let Err(error) = write_atomically(path, bytes) {
            tracing::warn!(path = %path.display(), %error, "could not write compiled artifact to cache");
        }
    }
}

/// Writes `bytes` to a temporary name beside `path`, syncs, and renames it into place.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// `<sha256>-<engine hash>.<ext>`: only hex digits, so no digest can name a path outside the
/// cache directory.
pub(crate) fn entry_name(sha256_hex: &str, engine_hash: u64, ext: &str) -> String {
    format!("{sha256_hex}-{engine_hash:016x}.{ext}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_differ_by_content_and_engine() {
        let a = entry_name("ab", 1, "cwasm");
        assert_eq!(a, "ab-0000000000000001.cwasm");
        assert_ne!(a, entry_name("ab", 2, "cwasm"));
        assert_ne!(a, entry_name("ac", 1, "cwasm"));
    }
}
