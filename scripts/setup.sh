#!/usr/bin/env bash
# Set up a machine to build, test and run Skiff, then start a single-node cluster.
#
#   bash scripts/setup.sh             # install what is missing, build, start `skiff up`
#   bash scripts/setup.sh --no-start  # install and build only (used by .ci/run)
#
# Idempotent: installed packages, toolchains and a running cluster are left as they are.
# Environment: SKIFF_DATA_DIR (default ~/.local/share/skiff), SKIFF_LISTEN (default
# 127.0.0.1:6443).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$(pwd)

START=1
for arg in "$@"; do
    case "$arg" in
        --no-start) START=0 ;;
        -h | --help)
            sed -n '2,10p' "$0"
            exit 0
            ;;
        *)
            echo "setup.sh: unknown argument $arg (try --help)" >&2
            exit 2
            ;;
    esac
done

log() { echo "==> $*" >&2; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
fi

# --- Debian packages -------------------------------------------------------------------
# command -> package providing it
declare -A WANT=(
    [protoc]=protobuf-compiler
    [etcd]=etcd-server
    [etcdctl]=etcd-client
    [docker-registry]=docker-registry
    [curl]=curl
    [cc]=build-essential
    [pkg-config]=pkg-config
    [git]=git
    [ip]=iproute2
    # OCI containers (issue 5): the runtime, a static busybox for test images, portmap's rules
    [runc]=runc
    [iptables]=iptables
    [nsenter]=util-linux
    # Cluster DNS tests (issue 6) query with the real dig
    [dig]=dnsutils
    # Ingress e2e makes its TLS Secret's certificate with openssl; the http/ingress benches load with wrk
    [openssl]=openssl
    [wrk]=wrk
    # Cluster DNS: the upstream the e2e test forwards to, and the bench's reference server
    # (knot) and load generator (dnsperf)
    [knotd]=knot
    [dnsperf]=dnsperf
)
missing=()
for cmd in "${!WANT[@]}"; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("${WANT[$cmd]}")
done
if ! [ -e /etc/ssl/certs/ca-certificates.crt ]; then
    missing+=(ca-certificates)
fi
# etcd-client's build script compiles etcd's protos, which import protobuf's well-known types
# (google/protobuf/descriptor.proto, struct.proto). protoc finds them in libprotobuf-dev, which
# protobuf-compiler only recommends — and recommends are not installed below.
if ! [ -e /usr/include/google/protobuf/descriptor.proto ]; then
    missing+=(libprotobuf-dev)
fi
# The CNI plugins live off PATH.
if ! [ -x /usr/lib/cni/bridge ]; then
    missing+=(containernetworking-plugins)
fi
# Test images are built from a *static* busybox (a dynamic one would not run in a bare rootfs).
if command -v dpkg >/dev/null 2>&1 && ! dpkg -s busybox-static >/dev/null 2>&1; then
    missing+=(busybox-static)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "setup.sh: missing ${missing[*]} and no apt-get; install them by hand" >&2
        exit 1
    fi
    log "installing ${missing[*]}"
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
else
    log "Debian packages present"
fi

if ! command -v kubectl >/dev/null 2>&1; then
    echo "==> WARNING: kubectl (v1.32) not found; the end-to-end tests and the quick start need it." >&2
fi

# --- Rust toolchain ------------------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi
if ! command -v cargo >/dev/null 2>&1; then
    echo "setup.sh: cargo not found; install a Rust toolchain (1.95+) with rustup first" >&2
    exit 1
fi
if command -v rustup >/dev/null 2>&1; then
    if ! rustup target list --installed | grep -qx wasm32-wasip2; then
        log "adding the wasm32-wasip2 target"
        rustup target add wasm32-wasip2
    fi
else
    log "no rustup: make sure the wasm32-wasip2 target is installed"
fi

if [ "$START" = 0 ]; then
    # CI and test runs build what they need themselves (scripts/test.sh builds the debug binary).
    log "set-up done (--no-start)"
    exit 0
fi

# --- Build ---------------------------------------------------------------------------
log "building target/release/skiff"
cargo build --release -p skiff

# --- Start a single-node cluster ------------------------------------------------------
DATA_DIR=${SKIFF_DATA_DIR:-$HOME/.local/share/skiff}
LISTEN=${SKIFF_LISTEN:-127.0.0.1:6443}
TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}
SKIFF="$TARGET_DIR/release/skiff"
mkdir -p "$DATA_DIR"
PID_FILE="$DATA_DIR/skiff.pid"
LOG_FILE="$DATA_DIR/skiff.log"
KUBECONFIG_PATH="$DATA_DIR/kubeconfig"

if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
    log "skiff already running (pid $(cat "$PID_FILE"), log $LOG_FILE)"
else
    log "starting $SKIFF up --data-dir $DATA_DIR --listen $LISTEN (log: $LOG_FILE)"
    nohup "$SKIFF" up --data-dir "$DATA_DIR" --listen "$LISTEN" >>"$LOG_FILE" 2>&1 &
    echo $! >"$PID_FILE"
    ready=0
    for _ in $(seq 1 120); do
        if ! kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
            echo "setup.sh: skiff exited; last log lines:" >&2
            tail -n 30 "$LOG_FILE" >&2
            exit 1
        fi
        # -k: the CA is in the kubeconfig; /readyz needs no credentials.
        if [ -f "$KUBECONFIG_PATH" ] && curl -fsk "https://$LISTEN/readyz" >/dev/null 2>&1; then
            ready=1
            break
        fi
        sleep 0.5
    done
    if [ "$ready" != 1 ]; then
        echo "setup.sh: skiff did not become ready in 60 s; see $LOG_FILE" >&2
        exit 1
    fi
fi

echo "kubeconfig: $KUBECONFIG_PATH"
echo "Skiff is running (stop it with: kill \$(cat $PID_FILE)). Use it with:"
echo "  export KUBECONFIG=$KUBECONFIG_PATH"
echo "  kubectl get ns"
