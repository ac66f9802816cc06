#!/usr/bin/env bash
# Runs every podrestore test on this machine, as root: installs what is missing,
# checks formatting and lints, runs the unit and integration tests against the real
# CRIU, fuzzes the archive reader for a bounded time, then brings up the local
# cluster and runs the end-to-end scenarios against it. The cluster is taken down
# again on every exit path.
#
# Environment:
#   PODRESTORE_CACHE   where builds and downloads are cached (default /var/cache/podrestore)
#   PODRESTORE_FUZZ_SECONDS  how long the archive fuzzer runs (default 60)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

export PODRESTORE_CACHE=${PODRESTORE_CACHE:-/var/cache/podrestore}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PODRESTORE_CACHE/cargo-target}
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$HOME/.cargo/bin:/usr/local/go/bin:$PATH
fuzz_seconds=${PODRESTORE_FUZZ_SECONDS:-60}

if [ "$(id -u)" -ne 0 ]; then
    echo "e2e/test.sh needs root: the tests create namespaces, run CRIU and a kubelet" >&2
    exit 1
fi

started=$(date +%s)
step() { printf '\n==> [%4ss] %s\n' "$(( $(date +%s) - started ))" "$*"; }

step "installing what is missing (cached under $PODRESTORE_CACHE)"
"$here/setup/all.sh"

step "formatting and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

step "unit and integration tests (real CRIU)"
cargo test --workspace --exclude podrestore-e2e --locked --no-fail-fast

if [ -x node-agent/fuzz/run.sh ]; then
    step "fuzzing the archive reader for ${fuzz_seconds}s"
    node-agent/fuzz/run.sh "$fuzz_seconds"
fi

step "OCI image tool"
python3 -m unittest discover -s e2e/images

step "bringing up the local cluster"
logs=${PODRESTORE_E2E_LOGS:-$PODRESTORE_CACHE/logs/e2e-$(date +%Y%m%d-%H%M%S)}
single=${PODRESTORE_E2E_CLUSTER:-e2e}
# The cross-node scenarios need two nodes; they get a cluster of their own.
pair=${single:0:4}two
pair_port=$(( ${PODRESTORE_E2E_API_PORT:-16443} + 1 ))
clusters_up=()
down() { # down NAME [VAR=VALUE...]: takes one cluster down, keeping its logs
    local name=$1
    shift
    env "$@" PODRESTORE_E2E_CLUSTER="$name" PODRESTORE_E2E_LOGS="$logs/$name" "$here/cluster" down
}
cleanup() {
    status=$?
    for name in "${clusters_up[@]}"; do
        step "taking cluster $name down (logs kept in $logs/$name)"
        down "$name" || status=1
    done
    exit "$status"
}
trap cleanup EXIT

# The scenarios run the operator and agent binaries from the target directory.
cargo build -p podrestore-operator -p podrestore-agent --locked

# Scenarios that move a checkpoint between nodes need two; the rest run on one.
pair_names=(migration forensic_migration)
single_tests=()
pair_tests=()
for t in e2e/tests/*.rs; do
    t=$(basename "$t" .rs)
    if [[ " ${pair_names[*]} " == *" $t "* ]]; then
        pair_tests+=(--test "$t")
    else
        single_tests+=(--test "$t")
    fi
done

clusters_up=("$single")
PODRESTORE_E2E_CLUSTER=$single "$here/cluster" up
step "end-to-end scenarios on the single-node cluster $single"
(
    eval "$(PODRESTORE_E2E_CLUSTER=$single "$here/cluster" env)"
    cargo test -p podrestore-e2e --locked --no-fail-fast --lib "${single_tests[@]}" -- --test-threads=1
)
step "taking cluster $single down; it must leave nothing behind"
clusters_up=()
down "$single"

clusters_up=("$pair")
PODRESTORE_E2E_CLUSTER=$pair PODRESTORE_E2E_API_PORT=$pair_port PODRESTORE_E2E_NODES="a b" "$here/cluster" up
step "cross-node scenarios on the two-node cluster $pair"
(
    eval "$(PODRESTORE_E2E_CLUSTER=$pair PODRESTORE_E2E_API_PORT=$pair_port PODRESTORE_E2E_NODES="a b" "$here/cluster" env)"
    cargo test -p podrestore-e2e --locked --no-fail-fast "${pair_tests[@]}" -- --test-threads=1
)
step "taking cluster $pair down; it must leave nothing behind"
clusters_up=()
down "$pair" PODRESTORE_E2E_API_PORT="$pair_port" PODRESTORE_E2E_NODES="a b"

step "all tests passed in $(( $(date +%s) - started ))s"
