//! Running skiff with real containers in a test: the start options (skiff inside the test's
//! network namespace but the host's mount namespace) and the clean-up of what the node's OCI
//! runtime leaves behind — one copy for every container e2e test and the containers bench.
//!
//! Why a wrapper script: `ip netns exec` would give skiff a private mount namespace without the
//! host's cgroup hierarchy, which runc needs; `nsenter --mount=/proc/<test>/ns/mnt` puts it back
//! in the test's (the host's) mounts while the harness still starts it in the test netns.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::{NetNs, StartOptions, StoreKind};

/// Removes what the node left under a data dir — runc containers (force-deleted), then every
/// mount below it deepest first (volume tmpfs, rootfs overlays, netns bind mounts) — on
/// success as on failure.
#[derive(Debug)]
pub struct OciLeftovers {
    data_dir: PathBuf,
}

impl OciLeftovers {
    /// Cleans up `data_dir` (skiff's `--data-dir`) when dropped.
    pub fn new(data_dir: &Path) -> Self {
        Self { data_dir: data_dir.to_path_buf() }
    }
}

impl Drop for OciLeftovers {
    fn drop(&mut self) {
        runc_delete_all(&self.data_dir.join("agent").join("oci").join("runc"));
        let mut below = mounts_under(&self.data_dir);
        below.sort_by_key(|m| std::cmp::Reverse(m.0.len()));
        for (mount_point, _) in below {
            let _ = std::process::Command::new("umount").arg("-l").arg(&mount_point).output();
        }
    }
}

/// Force-deletes every container runc knows under `root` (best effort: for clean-up).
pub fn runc_delete_all(root: &Path) {
    // `runc list` would create a missing root.
    if !root.exists() {
        return;
    }
    if let Ok(out) = std::process::Command::new("runc").arg("--root").arg(root).args(["list", "-q"]).output() {
        for id in String::from_utf8_lossy(&out.stdout).lines().filter(|l| !l.is_empty()) {
            let _ = std::process::Command::new("runc").arg("--root").arg(root).args(["delete", "--force", id]).output();
        }
    }
}

/// `(mount point, mount options + super options)` of the mounts at or below `dir` in this
/// process's mount namespace (skiff runs in it too, see [`skiff_in_host_mounts`]).
pub fn mounts_under(dir: &Path) -> Vec<(String, String)> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let dir = dir.to_string_lossy().into_owned();
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split(' ').nth(4)?.to_string();
            mount_point.starts_with(&dir).then(|| (mount_point, right.to_string()))
        })
        .collect()
}

/// Writes `dir/skiff-host-mounts`, a script running `skiff` in this process's mount namespace.
pub fn skiff_in_host_mounts(dir: &Path, skiff: &Path) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let skiff = std::fs::canonicalize(skiff).with_context(|| format!("skiff binary {}", skiff.display()))?;
    let script = dir.join("skiff-host-mounts");
    let text =
        format!("#!/bin/sh\nexec nsenter --mount=/proc/{}/ns/mnt -- {} \"$@\"\n", std::process::id(), skiff.display());
    std::fs::write(&script, text).context("writing the skiff wrapper")?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))?;
    Ok(script)
}

/// Options for `skiff up` with containers: embedded store, inside `netns`, bridge pod
/// network, `--runtimes wasm,oci`, through a wrapper written to `scripts` (keep it alive).
pub fn oci_start_options(netns: &NetNs, scripts: &Path) -> Result<StartOptions> {
    let mut options = StartOptions::new(StoreKind::Embedded);
    options.binary = Some(skiff_in_host_mounts(scripts, &crate::binary::skiff_binary()?)?);
    options.netns = Some(netns.name().to_string());
    options.extra_args = ["--pod-network", "bridge", "--runtimes", "wasm,oci"].map(String::from).to_vec();
    Ok(options)
}
