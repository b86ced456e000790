#!/usr/bin/env bash
# Build the debug `skiff` binary the end-to-end tests run, then run the whole suite.
# With CI=true clippy runs too, with warnings as errors. Extra arguments go to `cargo test`.
#
#   bash scripts/test.sh
#   bash scripts/test.sh -p skiff-tests -- kubectl   # a subset
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

# The e2e tests start etcd and drive kubectl themselves; fail early and clearly without them.
for tool in etcd kubectl docker-registry; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "test.sh: $tool not found; run scripts/setup.sh first" >&2
        exit 1
    fi
done

# Warnings are errors in CI through clippy's `-D warnings` below (clippy runs every rustc lint
# too), not through RUSTFLAGS: a RUSTFLAGS change invalidates every cached artifact, so CI and
# local builds sharing one target dir would rebuild the whole workspace each time they alternate.

echo "==> building the WASM guests and examples" >&2
bash scripts/build-guests.sh
echo "==> cargo build -p skiff" >&2
cargo build -p skiff
echo "==> cargo test --workspace $*" >&2
cargo test --workspace "$@"

if [ "${CI:-}" = true ]; then
    echo "==> cargo clippy --workspace --all-targets -- -D warnings" >&2
    cargo clippy --workspace --all-targets -- -D warnings
fi
