//! Small filesystem helpers for the PKI: secret files must never be world-readable, and a
//! half-written file must never be observed by a restarting process, so every write goes to a
//! temporary sibling first (created with the final mode) and is renamed into place.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::PkiError;

/// File mode for private keys, tokens and kubeconfigs.
pub(crate) const SECRET_MODE: u32 = 0o600;
/// File mode for certificates (public material).
pub(crate) const PUBLIC_MODE: u32 = 0o644;

/// Writes `contents` to `path` atomically with the given permission bits.
pub(crate) fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), PkiError> {
    let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = path.with_file_name(format!(".{file_name}.tmp{}", std::process::id()));
    let io_err = |source| PkiError::Io { path: path.to_path_buf(), source };
    // A stale temporary from a crash may exist with a wider mode; never reuse it.
    let _ = fs::remove_file(&tmp);
    let result = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io_err)
}

/// Reads a UTF-8 file, or `None` when it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, PkiError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io { path: path.to_path_buf(), source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_sets_mode_and_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("secret");
        write_atomic(&path, b"one", SECRET_MODE).expect("first write");
        write_atomic(&path, b"two", SECRET_MODE).expect("second write");
        assert_eq!(fs::read_to_string(&path).expect("read"), "two");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_optional(&dir.path().join("missing")).expect("read"), None);
    }
}
