//! Unpacking one layer tarball into an empty directory, in the form overlayfs stacks:
//! OCI whiteouts (`.wh.<name>`) become character devices 0/0 and opaque markers
//! (`.wh..wh..opq`) become the `trusted.overlay.opaque=y` xattr on their directory.
//!
//! Owns: path safety (no entry may leave the directory — `..` components are refused, and
//! no entry may be written through a symlink, since an earlier entry of the same layer could
//! point that symlink anywhere on the host), modes, ownership, times, symlinks, hard links
//! within the layer, device nodes and PAX xattrs. Does not own where the directory lives,
//! decompression or digest checks (`snapshot`), nor stacking (`overlay` belongs to the
//! runtime). Runs as root: ownership and device nodes are taken from the archive as is.
//!
//! Synchronous on purpose: it is CPU- and syscall-bound and runs on a blocking thread.

use std::collections::HashSet;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, CWD, FileType, Gid, Mode, Timestamps, Uid, XattrFlags};
use tar::EntryType;

/// Prefix of an OCI whiteout entry's file name.
const WHITEOUT_PREFIX: &str = ".wh.";
/// The OCI opaque-directory marker.
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// The overlayfs xattr that makes a directory hide everything below it.
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// PAX records carrying extended attributes (GNU tar, BSD tar and Docker write these).
const PAX_XATTR_PREFIX: &str = "SCHILY.xattr.";

/// Why a layer could not be unpacked.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?} would escape the snapshot: {reason}")]
    Escape { path: String, reason: String },
    #[error("layer entry {path:?} is a hard link to {target:?}, which is not an earlier file of the same layer")]
    HardlinkTarget { path: String, target: String },
    #[error("reading the layer archive: {0}")]
    Archive(io::Error),
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// What an unpack wrote, for logs and throughput figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Archive entries applied (whiteouts included).
    pub entries: u64,
    /// Bytes of regular-file content written.
    pub bytes: u64,
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Io { path: path.to_path_buf(), source }
}

/// Unpacks the tar stream `reader` into `root` (an existing, empty directory).
pub fn unpack_layer(reader: impl Read, root: &Path) -> Result<UnpackStats, UnpackError> {
    let mut archive = tar::Archive::new(reader);
    let mut stats = UnpackStats::default();
    // Directory modes and times are applied last: writing children changes a directory's
    // mtime, and a read-only mode must not stop later entries (root would pass anyway).
    let mut dirs: Vec<(PathBuf, u32, u64)> = Vec::new();
    let mut seen_dirs = HashSet::new();
    for entry in archive.entries().map_err(UnpackError::Archive)? {
        let mut entry = entry.map_err(UnpackError::Archive)?;
        let raw = entry.path().map_err(UnpackError::Archive)?.into_owned();
        let rel = clean_path(&raw)?;
        stats.entries += 1;
        let header = entry.header().clone();
        let kind = header.entry_type();
        let mode = header.mode().map_err(UnpackError::Archive)? & 0o7777;
        let (uid, gid) = (header.uid().map_err(UnpackError::Archive)?, header.gid().map_err(UnpackError::Archive)?);
        let mtime = header.mtime().map_err(UnpackError::Archive)?;
        let owner = (u32::try_from(uid).unwrap_or(0), u32::try_from(gid).unwrap_or(0));

        let file_name = rel.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if let Some(hidden) = file_name.strip_prefix(WHITEOUT_PREFIX) {
            let dir = ensure_parent(root, &rel)?;
            if file_name == OPAQUE_MARKER {
                rustix::fs::lsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(|e| io_at(&dir)(e.into()))?;
            } else {
                if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.contains('/') {
                    return Err(escape(&raw, "malformed whiteout name"));
                }
                let target = dir.join(hidden);
                remove_existing(&target)?;
                rustix::fs::mknodat(CWD, &target, FileType::CharacterDevice, Mode::empty(), 0)
                    .map_err(|e| io_at(&target)(e.into()))?;
            }
            continue;
        }

        let xattrs = pax_xattrs(&mut entry)?;
        let target = root.join(&rel);
        if rel.as_os_str().is_empty() {
            // `./` itself: the snapshot root takes the entry's metadata.
            if kind == EntryType::Directory {
                lchown(&target, owner)?;
                dirs.push((target, mode, mtime));
            }
            continue;
        }
        ensure_parent(root, &rel)?;
        match kind {
            EntryType::Directory => {
                let is_dir = fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir());
                if !is_dir {
                    remove_existing(&target)?;
                    fs::create_dir(&target).map_err(io_at(&target))?;
                }
                lchown(&target, owner)?;
                if seen_dirs.insert(target.clone()) {
                    dirs.push((target.clone(), mode, mtime));
                }
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                remove_existing(&target)?;
                let mut file = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&target)
                    .map_err(io_at(&target))?;
                stats.bytes += io::copy(&mut entry, &mut file).map_err(UnpackError::Archive)?;
                drop(file);
                // chown clears set-id bits, so the mode comes after it.
                lchown(&target, owner)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io_at(&target))?;
                set_mtime(&target, mtime)?;
            }
            EntryType::Symlink => {
                let link = entry.link_name().map_err(UnpackError::Archive)?.unwrap_or_default().into_owned();
                remove_existing(&target)?;
                // Symlink targets are stored as is: they are resolved inside the container's
                // root at run time, never while unpacking (entries never go through them).
                std::os::unix::fs::symlink(&link, &target).map_err(io_at(&target))?;
                lchown(&target, owner)?;
                set_mtime(&target, mtime)?;
            }
            EntryType::Link => {
                let link = entry.link_name().map_err(UnpackError::Archive)?.unwrap_or_default().into_owned();
                let source_rel = clean_path(&link)?;
                let no_target = || UnpackError::HardlinkTarget {
                    path: raw.display().to_string(),
                    target: link.display().to_string(),
                };
                check_parents(root, &source_rel).map_err(|_| no_target())?;
                let source = root.join(&source_rel);
                let metadata = fs::symlink_metadata(&source).map_err(|_| no_target())?;
                if metadata.is_dir() || source_rel.as_os_str().is_empty() {
                    return Err(no_target());
                }
                if source != target {
                    remove_existing(&target)?;
                    fs::hard_link(&source, &target).map_err(io_at(&target))?;
                }
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let file_type = match kind {
                    EntryType::Char => FileType::CharacterDevice,
                    EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                // FIFOs have no device numbers; some writers leave those fields blank.
                let (major, minor) = if kind == EntryType::Fifo {
                    (0, 0)
                } else {
                    (
                        header.device_major().map_err(UnpackError::Archive)?.unwrap_or(0),
                        header.device_minor().map_err(UnpackError::Archive)?.unwrap_or(0),
                    )
                };
                remove_existing(&target)?;
                rustix::fs::mknodat(
                    CWD,
                    &target,
                    file_type,
                    Mode::from_bits_truncate(mode),
                    rustix::fs::makedev(major, minor),
                )
                .map_err(|e| io_at(&target)(e.into()))?;
                lchown(&target, owner)?;
                fs::set_permissions(&target, fs::Permissions::from_mode(mode)).map_err(io_at(&target))?;
                set_mtime(&target, mtime)?;
            }
            other => {
                // Global PAX headers and the like carry nothing for the filesystem.
                tracing::debug!(path = %raw.display(), kind = ?other, "skipping layer entry");
                continue;
            }
        }
        for (name, value) in xattrs {
            match rustix::fs::lsetxattr(&target, name.as_str(), &value, XattrFlags::empty()) {
                // As containerd does: a filesystem without xattr support loses them, loudly.
                Err(rustix::io::Errno::NOTSUP) => {
                    tracing::warn!(path = %raw.display(), xattr = name, "filesystem does not support xattrs; dropped");
                }
                result => result.map_err(|e| io_at(&target)(e.into()))?,
            }
        }
    }
    for (dir, mode, mtime) in dirs.into_iter().rev() {
        // A later entry may have replaced the directory with something else.
        if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
            continue;
        }
        fs::set_permissions(&dir, fs::Permissions::from_mode(mode)).map_err(io_at(&dir))?;
        set_mtime(&dir, mtime)?;
    }
    Ok(stats)
}

fn escape(path: &Path, reason: &str) -> UnpackError {
    UnpackError::Escape { path: path.display().to_string(), reason: reason.to_string() }
}

/// The entry path relative to the snapshot root: leading `/` and `.` components dropped,
/// `..` refused (however harmless it may look — no legitimate layer needs it).
fn clean_path(path: &Path) -> Result<PathBuf, UnpackError> {
    let mut clean = PathBuf::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => clean.push(part),
            Component::ParentDir => return Err(escape(path, "it contains `..`")),
            Component::Prefix(_) => return Err(escape(path, "it has a path prefix")),
        }
    }
    Ok(clean)
}

/// Checks that every ancestor of `rel` below `root` that exists is a real directory (never a
/// symlink), returning the first ancestor that does not exist yet.
fn check_parents(root: &Path, rel: &Path) -> Result<Option<PathBuf>, UnpackError> {
    let mut current = root.to_path_buf();
    let Some(parent) = rel.parent() else { return Ok(None) };
    for part in parent.components() {
        current.push(part);
        match fs::symlink_metadata(&current) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(escape(
                    rel,
                    &format!("its parent {:?} is a symlink", current.strip_prefix(root).unwrap_or(&current)),
                ));
            }
            Ok(_) => return Err(escape(rel, "a parent is not a directory")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(current)),
            Err(e) => return Err(io_at(&current)(e)),
        }
    }
    Ok(None)
}

/// Creates the missing parent directories of `rel` (mode 0755 until their own entries say
/// otherwise) and returns the parent's path; refuses to go through a symlink.
fn ensure_parent(root: &Path, rel: &Path) -> Result<PathBuf, UnpackError> {
    let parent = root.join(rel.parent().unwrap_or(Path::new("")));
    if check_parents(root, rel)?.is_some() {
        fs::create_dir_all(&parent).map_err(io_at(&parent))?;
    }
    Ok(parent)
}

/// Removes whatever an earlier entry of this layer put at `path` (later entries win).
fn remove_existing(path: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_at(path)),
        Ok(_) => fs::remove_file(path).map_err(io_at(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_at(path)(e)),
    }
}

fn lchown(path: &Path, (uid, gid): (u32, u32)) -> Result<(), UnpackError> {
    rustix::fs::chownat(CWD, path, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)), AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| io_at(path)(e.into()))
}

fn set_mtime(path: &Path, mtime: u64) -> Result<(), UnpackError> {
    let time = rustix::fs::Timespec { tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX), tv_nsec: 0 };
    let times = Timestamps { last_access: time, last_modification: time };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io_at(path)(e.into()))
}

/// The entry's extended attributes from its PAX records. `trusted.overlay.*` is dropped: a
/// layer must not be able to fake overlayfs metadata (redirects, opaque markers) itself.
fn pax_xattrs<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Vec<(String, Vec<u8>)>, UnpackError> {
    let Some(extensions) = entry.pax_extensions().map_err(UnpackError::Archive)? else {
        return Ok(Vec::new());
    };
    let mut xattrs = Vec::new();
    for extension in extensions {
        let extension = extension.map_err(UnpackError::Archive)?;
        let Ok(key) = extension.key() else { continue };
        if let Some(name) = key.strip_prefix(PAX_XATTR_PREFIX)
            && !name.starts_with("trusted.overlay.")
        {
            xattrs.push((name.to_string(), extension.value_bytes().to_vec()));
        }
    }
    Ok(xattrs)
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
