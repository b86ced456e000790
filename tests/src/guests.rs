//! Where the built WASM guests are: `scripts/build-guests.sh` puts the test guests
//! (`tests/guests`), the examples and the `invalid.wasm` fixture into
//! `${CARGO_TARGET_DIR:-<repo>/target}/guests/wasm32-wasip2/release/`.
//!
//! A missing guest is a test failure (a panic naming the script to run), never a skip:
//! a suite that silently skipped its WASM tests would pass while testing nothing.

use std::path::{Path, PathBuf};

/// The directory the guests are built into.
pub fn guests_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"), PathBuf::from);
    target.join("guests").join("wasm32-wasip2").join("release")
}

/// The path of the built guest `name` (`http-probe`, `cli-probe`, `dns-probe`, `hello-http`,
/// `hello-job`, `invalid`); `-` and `_` are interchangeable, as cargo names cdylibs with `_`.
///
/// # Panics
/// If the guest has not been built, with a message saying to run `scripts/build-guests.sh`.
pub fn guest_path(name: &str) -> PathBuf {
    let dir = guests_dir();
    let stem = name.trim_end_matches(".wasm");
    let candidates = [stem.to_owned(), stem.replace('-', "_"), stem.replace('_', "-")];
    for candidate in &candidates {
        let path = dir.join(format!("{candidate}.wasm"));
        if path.is_file() {
            return path;
        }
    }
    panic!(
        "WASM guest `{name}` not found in {}: run scripts/build-guests.sh (with the same \
         CARGO_TARGET_DIR) before the tests",
        dir.display()
    );
}
