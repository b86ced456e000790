//! Locating the `skiff` binary under test.
//!
//! Tests and benches run from `target/<profile>/deps/` (test binaries) or `target/<profile>/`
//! (bench binary), so the `skiff` binary built by `cargo build -p skiff` sits next to them one
//! directory up at most. `SKIFF_BIN` overrides the search, e.g. to test an installed binary.
//! This module does not build anything: a missing binary is an error that says how to build it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

/// Environment variable that overrides where the `skiff` binary is taken from.
pub const SKIFF_BIN_ENV: &str = "SKIFF_BIN";

/// Returns the path of the `skiff` binary to test: `$SKIFF_BIN` if set, else the `skiff` next
/// to the running executable's profile directory (`target/debug/skiff` for tests,
/// `target/release/skiff` for a release bench).
pub fn skiff_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os(SKIFF_BIN_ENV) {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("{SKIFF_BIN_ENV}={} does not name a file", path.display());
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().context("finding the running executable")?;
    let path =
        binary_beside(&exe, "skiff").with_context(|| format!("cannot derive the target dir from {}", exe.display()))?;
    if !path.is_file() {
        let profile = path.parent().and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or("debug");
        let flag = if profile == "release" { " --release" } else { "" };
        bail!(
            "skiff binary not found at {}: build it first with `cargo build{flag} -p skiff` \
             (or set {SKIFF_BIN_ENV})",
            path.display()
        );
    }
    Ok(path)
}

/// The path `name` would have in the profile directory of `exe` (`target/<profile>/name`),
/// skipping a trailing `deps/` directory where cargo puts test binaries.
pub fn binary_beside(exe: &Path, name: &str) -> Option<PathBuf> {
    let mut dir = exe.parent()?;
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir = dir.parent()?;
    }
    Some(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_binaries_live_in_deps() {
        let exe = Path::new("/t/target/debug/deps/e2e-0123abcd");
        assert_eq!(binary_beside(exe, "skiff"), Some(PathBuf::from("/t/target/debug/skiff")));
    }

    #[test]
    fn bench_binary_lives_in_profile_dir() {
        let exe = Path::new("/t/target/release/skiff-bench");
        assert_eq!(binary_beside(exe, "skiff"), Some(PathBuf::from("/t/target/release/skiff")));
    }
}
