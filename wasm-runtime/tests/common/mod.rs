//! Helpers shared by this crate's integration tests.

use std::path::{Path, PathBuf};

/// Where build-guests.sh puts the guests (same rule as `skiff_tests::guests::guest_path`,
/// repeated here so this crate's tests do not depend on the e2e harness).
pub fn guest_bytes(name: &str) -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"), PathBuf::from);
    let dir = target.join("guests/wasm32-wasip2/release");
    for candidate in [name.to_owned(), name.replace('-', "_")] {
        if let Ok(bytes) = std::fs::read(dir.join(format!("{candidate}.wasm"))) {
            return bytes;
        }
    }
    panic!("guest {name} not found in {}: run scripts/build-guests.sh first", dir.display());
}
