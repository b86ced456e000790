//! Named network namespaces, kept alive by a bind mount under a run directory (what
//! `ip netns add` does under `/run/netns`).
//!
//! What it owns: creating a pod's network namespace before anything joins it, and deleting it
//! (unmount + unlink) once the pod is gone. [`Netns::path`] is what runc's `linux.namespaces`
//! entry and the CNI plugins' `CNI_NETNS` point at. What it does not: configure anything inside
//! the namespace (the [`cni`](super::cni) module does).
//!
//! Creation shells out to util-linux `unshare --net=<file>`: `unshare(2)` is an `unsafe` call
//! in rustix (it can split file tables) and the workspace denies `unsafe_code`, and a child
//! process is the one place where unsharing cannot leak into a runtime thread. One exec per
//! pod costs a few milliseconds. Deletion is plain syscalls (`umount2(MNT_DETACH)`, `unlink`).
//!
//! Unlike `ip netns`, the run directory is not turned into a shared mount: a mount namespace
//! created while the bind mount existed (a runc container whose rootfs saw the run directory)
//! would keep a copy alive until it exits. runc pivots away from the host's tree, so in
//! practice nothing holds such a copy.

use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::{StatFs, statfs};
use rustix::mount::{UnmountFlags, unmount};
use tokio::process::Command;

/// `statfs` magic of nsfs: a namespace file bind-mounted somewhere.
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// Why a network namespace could not be created or deleted.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid network namespace name {0:?}: use letters, digits, '-', '_' and '.'")]
    InvalidName(String),
    #[error("creating network namespace directory {path}: {source}")]
    RunDir { path: PathBuf, source: io::Error },
    #[error("running `unshare --net={path}` (is util-linux installed?): {source}")]
    Spawn { path: PathBuf, source: io::Error },
    #[error("creating network namespace {path} failed (root needed): {stderr}")]
    Create { path: PathBuf, stderr: String },
    #[error("deleting network namespace {path}: {source}")]
    Delete { path: PathBuf, source: io::Error },
}

/// A named network namespace pinned by a bind mount at `<run_dir>/<name>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Netns {
    path: PathBuf,
}

impl Netns {
    /// The namespace `name` under `run_dir`, without touching the system (to delete one whose
    /// creation is not remembered, e.g. after an agent restart).
    pub fn at(run_dir: &Path, name: &str) -> Result<Netns, NetnsError> {
        check_name(name)?;
        Ok(Netns { path: run_dir.join(name) })
    }

    /// Creates the namespace `name` under `run_dir` (created if missing). Idempotent: an
    /// existing namespace of that name is returned as it is, so a pod's address survives an
    /// agent restart; a stale file left by a crash mid-create is replaced.
    pub async fn create(run_dir: &Path, name: &str) -> Result<Netns, NetnsError> {
        let ns = Netns::at(run_dir, name)?;
        tokio::fs::create_dir_all(run_dir)
            .await
            .map_err(|source| NetnsError::RunDir { path: run_dir.to_path_buf(), source })?;
        if ns.is_mounted() {
            return Ok(ns);
        }
        // `unshare --net=FILE` bind-mounts onto FILE, which must exist.
        tokio::fs::write(&ns.path, b"").await.map_err(|source| NetnsError::RunDir { path: ns.path.clone(), source })?;
        let out = Command::new("unshare")
            .arg(format!("--net={}", ns.path.display()))
            .arg("true")
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|source| NetnsError::Spawn { path: ns.path.clone(), source })?;
        if !out.status.success() {
            let _ = std::fs::remove_file(&ns.path);
            return Err(NetnsError::Create {
                path: ns.path.clone(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(ns)
    }

    /// The bind-mounted namespace file: runc's `linux.namespaces[].path`, CNI's `CNI_NETNS`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the namespace exists (its file is an nsfs bind mount).
    pub fn is_mounted(&self) -> bool {
        statfs(&self.path).is_ok_and(|s: StatFs| is_nsfs(s.f_type as u64))
    }

    /// Unmounts and removes the namespace file. Idempotent: a namespace already gone, or a
    /// file that never got mounted, is fine. The namespace itself disappears once no process
    /// is inside it any more.
    pub async fn delete(&self) -> Result<(), NetnsError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || delete_blocking(&path))
            .await
            .map_err(|e| NetnsError::Delete { path: self.path.clone(), source: io::Error::other(e) })?
    }
}

fn delete_blocking(path: &Path) -> Result<(), NetnsError> {
    let err = |source| NetnsError::Delete { path: path.to_path_buf(), source };
    match unmount(path, UnmountFlags::DETACH) {
        // EINVAL: not a mount point (never mounted, or unmounted by an earlier delete).
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(err(e.into())),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err(e)),
        _ => Ok(()),
    }
}

fn is_nsfs(f_type: u64) -> bool {
    f_type == NSFS_MAGIC
}

/// Names become file names in the run dir: no separators, no `.`/`..`, no surprises.
fn check_name(name: &str) -> Result<(), NetnsError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name != "."
        && name != ".."
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok { Ok(()) } else { Err(NetnsError::InvalidName(name.to_string())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_file_names() {
        for good in ["pod-1", "skiff_abc.0", "a"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "../x", "x y", "ü"] {
            assert!(matches!(check_name(bad), Err(NetnsError::InvalidName(_))), "{bad}");
        }
    }

    #[test]
    fn path_is_under_the_run_dir() {
        let ns = Netns::at(Path::new("/run/skiff/netns"), "pod-1").expect("valid name");
        assert_eq!(ns.path(), Path::new("/run/skiff/netns/pod-1"));
        assert!(is_nsfs(0x6e73_6673));
        assert!(!is_nsfs(0x0102_1994)); // tmpfs
    }

    #[tokio::test]
    async fn deleting_what_never_existed_is_fine() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ns = Netns::at(dir.path(), "ghost").expect("valid name");
        assert!(!ns.is_mounted());
        ns.delete().await.expect("first delete");
        ns.delete().await.expect("second delete");
    }
}
