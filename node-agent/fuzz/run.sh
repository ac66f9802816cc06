#!/usr/bin/env bash
# Runs the archive reader fuzz target for a bounded time.
#
#   node-agent/fuzz/run.sh [SECONDS]   (default 60)
#
# Installs cargo-fuzz if missing. Only stable Rust is available here, so the
# nightly flags cargo-fuzz passes are unlocked with RUSTC_BOOTSTRAP=1, and
# the target is built without a sanitizer (-s none): libFuzzer's coverage
# guidance still works, and Rust's own checks catch memory errors in safe
# code. The corpus lives in the cache, seeded with small archives on first
# use. Exits non-zero if libFuzzer finds a crash (the input is kept under
# node-agent/fuzz/artifacts/).
set -euo pipefail

seconds="${1:-60}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${PODRESTORE_CACHE:-/var/cache/podrestore}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/cargo-target}"
corpus="$cache/fuzz-corpus/archive_reader"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

if [ -z "$(ls -A "$corpus" 2>/dev/null)" ]; then
    echo "fuzz: seeding corpus $corpus"
    mkdir -p "$corpus"
    seed="$(mktemp -d)"
    trap 'rm -rf "$seed"' EXIT
    mkdir -p "$seed/c/checkpoint"
    printf '{"id":"abc","name":"c","runtime":"runc"}' >"$seed/c/config.dump"
    printf '{"ociVersion":"1.2.0","annotations":{"io.kubernetes.cri.sandbox-name":"p"}}' >"$seed/c/spec.dump"
    printf '\x19\x43\x56\x54\x30\x30\x27\x50\x06\x00\x00\x00\x08\x01\x10\x00\x18\x01' >"$seed/c/checkpoint/pstree.img"
    printf '["/dev/null","/dev/null","/dev/null"]' >"$seed/c/checkpoint/descriptors.json"
    tar -C "$seed/c" --format=gnu -cf "$corpus/gnu.tar" .
    tar -C "$seed/c" --format=pax -cf "$corpus/pax.tar" .
    tar -C "$seed/c" --format=ustar -czf "$corpus/ustar.tar.gz" .
    mkdir -p "$seed/layer/etc" && ln -s ../usr/lib "$seed/layer/lib" && printf x >"$seed/layer/etc/motd" \
        && : >"$seed/layer/etc/.wh.hosts" && ln "$seed/layer/etc/motd" "$seed/layer/etc/motd2"
    tar -C "$seed/layer" -cf "$corpus/layer.tar" .
fi

cd "$here"
echo "fuzz: running archive_reader for ${seconds}s"
RUSTC_BOOTSTRAP=1 cargo fuzz run archive_reader "$corpus" -s none -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10
