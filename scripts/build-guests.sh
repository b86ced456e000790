#!/usr/bin/env bash
# Builds the WASM guests — the test guests (tests/guests) and the examples — for wasm32-wasip2
# into ${CARGO_TARGET_DIR:-<repo>/target}/guests/wasm32-wasip2/release/, where the runtime
# tests and the e2e suite look for them (tests/src/guests.rs). Also copies the invalid.wasm
# fixture there so tests find every guest in one place.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$repo/target}/guests"

if ! rustup target list --installed | grep -qx wasm32-wasip2; then
    rustup target add wasm32-wasip2
fi

for manifest in tests/guests/Cargo.toml examples/Cargo.toml; do
    cargo build --release --locked --target wasm32-wasip2 \
        --manifest-path "$repo/$manifest" --target-dir "$target_dir"
done

out="$target_dir/wasm32-wasip2/release"
cp "$repo/tests/guests/invalid.wasm" "$out/invalid.wasm"
ls -1 "$out"/*.wasm
