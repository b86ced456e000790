//! Writing a set of files into a volume directory so that a reader never sees a half
//! update — the kubelet's `AtomicWriter` scheme for configMap, secret and downwardAPI
//! volumes:
//!
//! ```text
//! <dir>/..2024_05_01_10_20_30.123456789/   the payload of one version
//! <dir>/..data -> ..2024_05_01_10_20_30.123456789
//! <dir>/<key>  -> ..data/<key>               user-visible names, stable across versions
//! ```
//!
//! A new version is written to a fresh timestamped directory, then `..data` is swapped with a
//! `rename(2)` of a temporary symlink (atomic), then the user-visible links are fixed up and
//! the old version is removed. A payload equal to what is there is not rewritten.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProjection {
    pub data: Vec<u8>,
    /// Permission bits (`defaultMode` or the item's `mode`).
    pub mode: u32,
}

/// Relative path → file; paths may contain `/` (an item's `path: a/b.txt`).
pub type Payload = BTreeMap<String, FileProjection>;

const DATA_DIR: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Why a payload could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AtomicWriteError {
    #[error("invalid path {0:?}: must be relative, without '..' and not start with '..'")]
    InvalidPath(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AtomicWriteError + '_ {
    move |source| AtomicWriteError::Io { path: path.to_path_buf(), source }
}

/// A payload path is relative, has no `..` component and does not start with `..` (which
/// would collide with the writer's own entries).
pub fn validate_path(path: &str) -> Result<(), AtomicWriteError> {
    let p = Path::new(path);
    let ok = !path.is_empty() && !path.starts_with("..") && p.components().all(|c| matches!(c, Component::Normal(_)));
    if ok { Ok(()) } else { Err(AtomicWriteError::InvalidPath(path.to_string())) }
}

/// The first component of a payload path: what gets a user-visible symlink.
fn top_level(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Reads the payload currently published in `dir` (empty when nothing was written yet).
pub fn read_current(dir: &Path) -> Payload {
    let mut out = Payload::new();
    let root = dir.join(DATA_DIR);
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if let (Ok(data), Ok(rel)) = (std::fs::read(&path), path.strip_prefix(&root)) {
                let mode = meta.permissions().mode() & 0o7777;
                out.insert(rel.to_string_lossy().into_owned(), FileProjection { data, mode });
            }
        }
    }
    out
}

/// Publishes `payload` in `dir` (see the module docs). Returns whether anything changed.
pub fn write(dir: &Path, payload: &Payload) -> Result<bool, AtomicWriteError> {
    for path in payload.keys() {
        validate_path(path)?;
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let data_link = dir.join(DATA_DIR);
    let old_version = std::fs::read_link(&data_link).ok();
    if old_version.is_some() && read_current(dir) == *payload {
        return Ok(false);
    }

    // 1. The new version, complete, in its own directory.
    let stamp = jiff::Timestamp::now().strftime("..%Y_%m_%d_%H_%M_%S.%f").to_string();
    let version = dir.join(&stamp);
    std::fs::create_dir(&version).map_err(io(&version))?;
    for (rel, file) in payload {
        let path = version.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, &file.data).map_err(io(&path))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode)).map_err(io(&path))?;
    }

    // 2. Swap `..data` atomically.
    let tmp = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &data_link).map_err(io(&data_link))?;

    // 3. User-visible links: add new names, drop names no longer in the payload.
    let wanted: BTreeSet<&str> = payload.keys().map(|k| top_level(k)).collect();
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA_DIR).join(name), &link).map_err(io(&link))?;
        }
    }
    for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with("..") && !wanted.contains(name.as_ref()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }

    // 4. The old version is unreachable now.
    if let Some(old) = old_version {
        let old = dir.join(old);
        if old != version {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(items: &[(&str, &str)]) -> Payload {
        items
            .iter()
            .map(|(k, v)| (k.to_string(), FileProjection { data: v.as_bytes().to_vec(), mode: 0o644 }))
            .collect()
    }

    fn versions(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_DIR)
            .collect();
        v.sort();
        v
    }

    #[test]
    fn publishes_swaps_and_cleans_up() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("vol");
        assert!(write(&dir, &payload(&[("a", "1"), ("sub/b", "2")])).expect("first write"));
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).expect("sub/b"), "2");
        assert_eq!(std::fs::read_link(dir.join("a")).expect("link"), Path::new("..data/a"));
        let first = versions(&dir);
        assert_eq!(first.len(), 1);

        assert!(
            !write(&dir, &payload(&[("a", "1"), ("sub/b", "2")])).expect("same payload"),
            "unchanged payload is not rewritten"
        );
        assert_eq!(versions(&dir), first);

        // Keep a handle on the old version: a reader holding it still sees complete old data.
        let old_a = std::fs::read_to_string(dir.join("a")).expect("old a");
        assert!(write(&dir, &payload(&[("a", "10"), ("c", "3")])).expect("update"));
        assert_eq!(old_a, "1");
        assert_eq!(std::fs::read_to_string(dir.join("a")).expect("a"), "10");
        assert_eq!(std::fs::read_to_string(dir.join("c")).expect("c"), "3");
        assert!(std::fs::symlink_metadata(dir.join("sub")).is_err(), "removed key's link is gone");
        let second = versions(&dir);
        assert_eq!(second.len(), 1, "old version removed: {second:?}");
        assert_ne!(second, first);
        assert_eq!(read_current(&dir), payload(&[("a", "10"), ("c", "3")]));
    }

    #[test]
    fn modes_and_invalid_paths() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut p = payload(&[("key", "v")]);
        p.get_mut("key").expect("key").mode = 0o400;
        write(tmp.path(), &p).expect("write");
        let mode = std::fs::metadata(tmp.path().join("key")).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o400);
        for bad in ["../x", "/abs", "..hidden", "a/../b", ""] {
            assert!(matches!(validate_path(bad), Err(AtomicWriteError::InvalidPath(_))), "{bad}");
        }
    }
}
