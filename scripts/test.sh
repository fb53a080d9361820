#!/usr/bin/env bash
# The one test command: installs what the tests need when it is missing, then runs every test.
#
#   bash scripts/test.sh            # from anywhere inside the repository
#
# On a fresh Debian 12 machine it installs (apt-get, as root or through sudo):
#   sip-tester (SIPp, the carrier and callee in the end-to-end tests), sqlite3 (to inspect the
#   call records by hand), a C compiler (rusqlite builds SQLite from source);
# and, when missing, cargo-nextest (prebuilt, from get.nexte.st). Without nextest it falls back
# to `cargo test`. Extra arguments are passed to the test runner (e.g. a test name filter).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "need root (or sudo) to run: $*"
        return 1
    fi
}

# binary -> Debian package
declare -A PEERS=(
    [sipp]=sip-tester
    [sqlite3]=sqlite3
    [cc]=gcc
)

missing=()
for bin in "${!PEERS[@]}"; do
    if ! command -v "$bin" >/dev/null 2>&1; then
        missing+=("${PEERS[$bin]}")
    fi
done
if ! command -v cargo >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/cargo" ]; then
    missing+=(curl ca-certificates)
fi
if ! command -v cargo-nextest >/dev/null 2>&1 && ! command -v curl >/dev/null 2>&1; then
    missing+=(curl ca-certificates)
fi

if [ "${#missing[@]}" -gt 0 ]; then
    # shellcheck disable=SC2207
    missing=($(printf '%s\n' "${missing[@]}" | sort -u))
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Rust: CI images have it; a bare machine gets a minimal stable toolchain through rustup.
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        log "installing the Rust toolchain (rustup, minimal profile)"
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi

if ! command -v cargo-nextest >/dev/null 2>&1; then
    bindir="${CARGO_HOME:-$HOME/.cargo}/bin"
    mkdir -p "$bindir"
    log "installing cargo-nextest into $bindir"
    if curl -LsSf https://get.nexte.st/latest/linux | tar zxf - -C "$bindir"; then
        export PATH="$bindir:$PATH"
    else
        log "could not install cargo-nextest: falling back to cargo test"
    fi
fi

for bin in sipp sqlite3; do
    command -v "$bin" >/dev/null 2>&1 || { log "$bin is still missing after installing"; exit 1; }
done
log "sipp: $(sipp -v 2>&1 | grep -o 'v[0-9][^ ]*' | head -1), cargo: $(cargo --version)"

if command -v cargo-nextest >/dev/null 2>&1; then
    log "cargo nextest run --workspace --no-fail-fast $*"
    cargo nextest run --workspace --no-fail-fast "$@"
    # nextest does not run doc tests.
    log "cargo test --workspace --doc"
    cargo test --workspace --doc
else
    log "cargo test --workspace --no-fail-fast $*"
    cargo test --workspace --no-fail-fast "$@"
fi
