//! One OCI bundle directory per container, and its overlayfs root filesystem.
//!
//! Layout of `<root>/<id>/`: `config.json`; `rootfs/` (an overlayfs of the image's read-only
//! snapshot dirs under `upper/` + `work/`, so the snapshots are shared and never written);
//! `log` (the container's stdout/stderr, see [`super::shim`]); `status.json` ([`super::status`]);
//! `init.pid` (runc's pid file); `shim.log` (the shim's own errors).
//!
//! Creating is idempotent: an existing bundle is adopted (its rootfs is mounted only when it is
//! not already), so an agent restarting halfway through creating a container can simply retry.
//! Does not own: unpacking the snapshots, or the runc container (the driver deletes that first).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use rustix::mount::{MountFlags, UnmountFlags};

use super::status::{self, StatusFile};

/// The largest mount(2) data string the kernel takes (one page).
const MAX_MOUNT_DATA: usize = 4095;

/// Why a bundle could not be created, read or removed.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// A container id that is empty or not `[A-Za-z0-9_.-]` (it names a directory and a runc id).
    #[error("invalid container id {0:?}: use letters, digits, '_', '.' and '-'")]
    InvalidId(String),
    /// No image snapshot directories were given.
    #[error("no image layers to mount for container {0}")]
    NoLayers(String),
    /// A snapshot path overlayfs cannot take (`:` or `,` in it) or too many/long paths.
    #[error("cannot mount the image layers of {id}: {reason}")]
    Layers {
        /// Container id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A filesystem operation on the bundle failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// Writing `config.json` failed.
    #[error("writing {}: {source}", path.display())]
    Config {
        /// The config path.
        path: PathBuf,
        /// The serialization or I/O error.
        source: oci_spec::OciSpecError,
    },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> BundleError + use<> {
    let path = path.to_path_buf();
    move |source| BundleError::Io { op, path, source }
}

/// Checks a container id: it becomes a directory name and a runc id.
pub fn validate_id(id: &str) -> Result<(), BundleError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok { Ok(()) } else { Err(BundleError::InvalidId(id.to_string())) }
}

/// The overlayfs mount data for `lowerdirs` given base layer first (image order); overlayfs wants
/// the topmost first.
pub fn overlay_options(id: &str, lowerdirs: &[PathBuf], upper: &Path, work: &Path) -> Result<String, BundleError> {
    let bad = |reason: String| BundleError::Layers { id: id.to_string(), reason };
    let mut lower = Vec::with_capacity(lowerdirs.len());
    for dir in lowerdirs.iter().rev() {
        let s = dir.to_str().ok_or_else(|| bad(format!("{} is not UTF-8", dir.display())))?;
        if s.contains([':', ',']) {
            return Err(bad(format!("{s} contains ':' or ','")));
        }
        lower.push(s);
    }
    let data = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    if data.len() > MAX_MOUNT_DATA {
        return Err(bad(format!(
            "{} layers make {} bytes of overlayfs options, over the kernel's {MAX_MOUNT_DATA}",
            lowerdirs.len(),
            data.len()
        )));
    }
    Ok(data)
}

/// A container's bundle directory.
#[derive(Debug, Clone)]
pub struct Bundle {
    id: String,
    dir: PathBuf,
}

impl Bundle {
    /// Creates (or adopts) the bundle of `id` under `root`: directories, the overlay rootfs over
    /// `lowerdirs` (base layer first), and `config.json` from `spec` (its `root.path` must be
    /// `"rootfs"`).
    pub fn create(root: &Path, id: &str, lowerdirs: &[PathBuf], spec: &Spec) -> Result<Self, BundleError> {
        validate_id(id)?;
        if lowerdirs.is_empty() {
            return Err(BundleError::NoLayers(id.to_string()));
        }
        let bundle = Self { id: id.to_string(), dir: root.join(id) };
        for dir in [bundle.rootfs(), bundle.dir.join("upper"), bundle.dir.join("work")] {
            std::fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
        }
        if !bundle.rootfs_mounted()? {
            let data = overlay_options(id, lowerdirs, &bundle.dir.join("upper"), &bundle.dir.join("work"))?;
            let data = std::ffi::CString::new(data)
                .map_err(|e| BundleError::Layers { id: id.to_string(), reason: e.to_string() })?;
            rustix::mount::mount("overlay", bundle.rootfs(), "overlay", MountFlags::empty(), data.as_c_str())
                .map_err(|e| io_err("mounting overlayfs on", &bundle.rootfs())(e.into()))?;
        }
        let config = bundle.config();
        let tmp = bundle.dir.join("config.json.tmp");
        spec.save(&tmp).map_err(|source| BundleError::Config { path: config.clone(), source })?;
        std::fs::rename(&tmp, &config).map_err(io_err("renaming", &tmp))?;
        Ok(bundle)
    }

    /// The existing bundle of `id` under `root`, if there is one (for re-adoption).
    pub fn open(root: &Path, id: &str) -> Option<Self> {
        let bundle = Self { id: id.to_string(), dir: root.join(id) };
        (validate_id(id).is_ok() && bundle.config().is_file()).then_some(bundle)
    }

    /// The container id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The bundle directory (what `runc --bundle` takes).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The root filesystem mount point.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.join("rootfs")
    }

    /// `config.json`.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.json")
    }

    /// The container's log file (stdout and stderr, one line format, see [`super::shim`]).
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// `status.json`, written by the shim.
    pub fn status_path(&self) -> PathBuf {
        self.dir.join("status.json")
    }

    /// runc's `--pid-file`.
    pub fn pid_file(&self) -> PathBuf {
        self.dir.join("init.pid")
    }

    /// The shim's own stderr (errors that happen before `status.json` can say them).
    pub fn shim_log(&self) -> PathBuf {
        self.dir.join("shim.log")
    }

    /// The shim's record, if it wrote one yet.
    pub fn status(&self) -> Result<Option<StatusFile>, BundleError> {
        let path = self.status_path();
        status::read(&path).map_err(io_err("reading", &path))
    }

    /// Whether something is mounted on `rootfs/` (it then sits on another device than the bundle).
    fn rootfs_mounted(&self) -> Result<bool, BundleError> {
        let rootfs = self.rootfs();
        let inner = std::fs::metadata(&rootfs).map_err(io_err("inspecting", &rootfs))?;
        let outer = std::fs::metadata(&self.dir).map_err(io_err("inspecting", &self.dir))?;
        Ok(inner.dev() != outer.dev())
    }

    /// Unmounts the rootfs and removes the directory. Idempotent; call after `runc delete`.
    pub fn remove(&self) -> Result<(), BundleError> {
        if !self.dir.exists() {
            return Ok(());
        }
        let rootfs = self.rootfs();
        if rootfs.exists() && self.rootfs_mounted()? {
            // A busy mount (a process still holding a file) is detached rather than left behind.
            if rustix::mount::unmount(&rootfs, UnmountFlags::empty()).is_err() {
                rustix::mount::unmount(&rootfs, UnmountFlags::DETACH)
                    .map_err(|e| io_err("unmounting", &rootfs)(e.into()))?;
            }
        }
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", &self.dir)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("pod-1_c.2").is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn overlay_lowerdirs_topmost_first() {
        let lowers = [PathBuf::from("/s/base"), PathBuf::from("/s/top")];
        let data = overlay_options("c", &lowers, Path::new("/b/upper"), Path::new("/b/work")).expect("ok");
        assert_eq!(data, "lowerdir=/s/top:/s/base,upperdir=/b/upper,workdir=/b/work");
        let err = overlay_options("c", &[PathBuf::from("/a:b")], Path::new("/u"), Path::new("/w"));
        assert!(matches!(err, Err(BundleError::Layers { .. })));
        let many: Vec<PathBuf> = (0..200).map(|i| PathBuf::from(format!("/var/lib/skiff/snapshots/{i:040}"))).collect();
        assert!(overlay_options("c", &many, Path::new("/u"), Path::new("/w")).is_err());
    }
}
