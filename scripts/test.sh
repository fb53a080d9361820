#!/usr/bin/env bash
# The one test command: installs what the tests need when it is missing, then runs every test.
#
#   bash scripts/test.sh            # from anywhere inside the repository
#
# On a fresh Debian 12 machine it installs (apt-get, as root or through sudo):
#   sip-tester (SIPp, the carrier and callee in the end-to-end tests), baresip (the agents'
#   softphones and citizens' phones), postgresql (the records tests on a real server), sqlite3 (to
#   inspect the call records by hand), a C compiler (rusqlite builds SQLite from source), and for
#   the wallboard test chromium, nodejs/npm (playwright-core is installed by the test with `npm ci`
#   into tests/web/node_modules; no browser is downloaded) and a Korean font (fonts-noto-cjk);
# cargo-nextest is used when present; without it the suite runs under `cargo test`. Extra arguments are passed to the test runner (e.g. a test name filter).
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
    [baresip]=baresip
    [/usr/lib/postgresql/15/bin/initdb]=postgresql
    [sqlite3]=sqlite3
    [cc]=gcc
    [chromium]=chromium
    [node]=nodejs
    [npm]=npm
    [/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc]=fonts-noto-cjk
    [unshare]=util-linux
    [ip]=iproute2
)

missing=()
for bin in "${!PEERS[@]}"; do
    if ! command -v "$bin" >/dev/null 2>&1; then
        missing+=("${PEERS[$bin]}")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    # shellcheck disable=SC2207
    missing=($(printf '%s\n' "${missing[@]}" | sort -u))
    log "installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Rust comes with the machine (rustup's stable toolchain); cargo-nextest too on CI images.
# Without nextest the suite runs under `cargo test`, which runs the same tests.
if ! command -v cargo >/dev/null 2>&1; then
    log "cargo is missing: install the Rust toolchain (rustup, stable) first"
    exit 1
fi

for bin in sipp baresip sqlite3 /usr/lib/postgresql/15/bin/initdb; do
    command -v "$bin" >/dev/null 2>&1 || { log "$bin is still missing after installing"; exit 1; }
done
log "sipp: $(sipp -v 2>&1 | grep -o 'v[0-9][^ ]*' | head -1), cargo: $(cargo --version)"

rc=0
if command -v cargo-nextest >/dev/null 2>&1; then
    log "cargo nextest run --workspace --no-fail-fast $*"
    cargo nextest run --workspace --no-fail-fast "$@" || rc=$?
    # nextest does not run doc tests.
    log "cargo test --workspace --doc"
    cargo test --workspace --doc || rc=$?
else
    log "cargo test --workspace --no-fail-fast $*"
    cargo test --workspace --no-fail-fast "$@" || rc=$?
fi
if [ "$rc" -ne 0 ]; then
    log "FAILED (exit $rc)"
fi
exit "$rc"
