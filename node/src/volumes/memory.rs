//! Memory-backed volume directories: `emptyDir` with `medium: Memory`, and every `secret`
//! volume (and projected volume carrying a secret), whose contents must never reach
//! persistent disk.
//!
//! As root the volume's own directory becomes a `tmpfs` mount (as the kubelet does), of a
//! bounded size where the caller gives one. The mounts are found again by looking at the
//! mount table, so removal works after an agent restart too (see `reclaim` for pods deleted
//! while the agent was down). Without
//! root, or where mounting is not allowed, the directory is created under `/dev/shm`
//! (`/dev/shm/skiff-<pod uid>/<kind>/<name>`), which is a tmpfs on every Linux system; the
//! canonical pod path then is not used. If neither is possible the volume fails rather than
//! falling back to disk. Cleanup unmounts before removing (see [`unmount_under`]).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Whether this process runs as root (`/proc/self` is owned by the effective uid).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// Mount points of this mount namespace with their filesystem types.
fn mounts() -> Vec<(PathBuf, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            // `id parent major:minor root mountpoint opts [optional...] - fstype source superopts`
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            Some((PathBuf::from(unescape(mount_point)), fstype.to_string()))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

/// The filesystem type holding `path` (the type of its longest mount-point prefix).
pub fn fs_type(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    mounts()
        .into_iter()
        .filter(|(mp, _)| path.starts_with(mp))
        .max_by_key(|(mp, _)| mp.as_os_str().len())
        .map(|(_, t)| t)
}

/// True when `path` is a memory filesystem.
pub fn is_memory_backed(path: &Path) -> bool {
    matches!(fs_type(path).as_deref(), Some("tmpfs" | "ramfs"))
}

/// Makes a memory-backed directory for a volume whose canonical place is `canonical`, at most
/// `size` bytes (`None`: the tmpfs default, half of memory); returns where it actually is.
pub fn prepare(canonical: &Path, pod_uid: &str, kind: &str, name: &str, size: Option<u64>) -> std::io::Result<PathBuf> {
    if is_root() {
        std::fs::create_dir_all(canonical)?;
        // Already mounted by an earlier prepare of the same pod (an agent restart).
        if is_mount_point(canonical) {
            return Ok(canonical.to_path_buf());
        }
        let options = tmpfs_options(size);
        let status = Command::new("mount").args(["-t", "tmpfs", "-o", &options, "tmpfs"]).arg(canonical).status();
        match status {
            Ok(s) if s.success() => return Ok(canonical.to_path_buf()),
            other => tracing::warn!(path = %canonical.display(), result = ?other, "tmpfs mount failed; using /dev/shm"),
        }
    }
    let shm = Path::new("/dev/shm");
    if !is_memory_backed(shm) {
        return Err(std::io::Error::other("no tmpfs available for a memory-backed volume (/dev/shm is not tmpfs)"));
    }
    let dir = shm_root(pod_uid).join(kind).join(name);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The `-o` options of a volume's tmpfs.
fn tmpfs_options(size: Option<u64>) -> String {
    match size {
        Some(bytes) => format!("mode=0755,size={bytes}"),
        None => "mode=0755".to_string(),
    }
}

/// `/dev/shm/skiff-<pod uid>`: where a pod's memory-backed volumes go without root.
pub fn shm_root(pod_uid: &str) -> PathBuf {
    Path::new("/dev/shm").join(format!("skiff-{pod_uid}"))
}

fn is_mount_point(path: &Path) -> bool {
    let Ok(path) = std::fs::canonicalize(path) else { return false };
    mounts().iter().any(|(mp, _)| *mp == path)
}

/// Unmounts every mount at or below `dir`, deepest first, so the directory can be removed.
pub fn unmount_under(dir: &Path) {
    let Ok(dir) = std::fs::canonicalize(dir) else { return };
    let mut below: Vec<PathBuf> = mounts().into_iter().map(|(mp, _)| mp).filter(|mp| mp.starts_with(&dir)).collect();
    below.sort_by_key(|mp| std::cmp::Reverse(mp.as_os_str().len()));
    for mp in below {
        match Command::new("umount").arg(&mp).status() {
            Ok(s) if s.success() => {}
            other => tracing::warn!(path = %mp.display(), result = ?other, "unmounting a pod volume failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tmpfs_is_sized_when_asked() {
        assert_eq!(tmpfs_options(Some(16 << 20)), "mode=0755,size=16777216");
        assert_eq!(tmpfs_options(None), "mode=0755");
        assert_eq!(unescape("/a\\040b"), "/a b");
    }
}
