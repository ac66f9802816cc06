#!/usr/bin/env bash
# Installs checkpointctl (inspects checkpoint archives) as /usr/local/bin/checkpointctl, built from
# its Go module and cached by version. Idempotent: a second run only checks and prints the version.
#
# Debian's checkpointctl needs glibc 2.38 and does not run on bookworm, hence the build from source.
# The version is pinned so every machine inspects archives with the same tool. 1.6.0 is the newest
# that builds from the Go module proxy reachable here: 1.7.0 needs go-criu/v8 v8.5.0, which the proxy
# refuses (403 "not available").
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

CHECKPOINTCTL_VERSION=${CHECKPOINTCTL_VERSION:-1.6.0}
CHECKPOINTCTL_MODULE=github.com/checkpoint-restore/checkpointctl
CHECKPOINTCTL_BIN=/usr/local/bin/checkpointctl

outdir=$(podrestore_cache_dir "checkpointctl-$CHECKPOINTCTL_VERSION")
built=$outdir/checkpointctl

# Print the version a checkpointctl binary reports ("checkpointctl version 1.6.0"), or nothing.
checkpointctl_version_of() {
    "$1" --version 2>/dev/null | sed -n 's/^.* version *//p' | head -n1 || true
}

if [[ -x "$built" && "$(checkpointctl_version_of "$built")" == "$CHECKPOINTCTL_VERSION" ]]; then
    log "cached build: $built"
else
    # The toolchain lives outside the default PATH on these machines.
    command -v go >/dev/null || PATH=$PATH:/usr/local/go/bin
    command -v go >/dev/null || die "go is not installed; checkpointctl $CHECKPOINTCTL_VERSION needs Go >= 1.25"
    log "building $CHECKPOINTCTL_MODULE@v$CHECKPOINTCTL_VERSION with $(go version)"
    start=$SECONDS
    # The upstream Makefile stamps name and version the same way; without them --version is empty.
    # GOTOOLCHAIN=local: fail on a too old Go instead of downloading another toolchain.
    GOBIN=$outdir CGO_ENABLED=0 GOTOOLCHAIN=local GOFLAGS=-buildvcs=false \
        run go install -trimpath \
        -ldflags "-s -w -X main.name=checkpointctl -X main.version=$CHECKPOINTCTL_VERSION" \
        "$CHECKPOINTCTL_MODULE@v$CHECKPOINTCTL_VERSION"
    [[ "$(checkpointctl_version_of "$built")" == "$CHECKPOINTCTL_VERSION" ]] ||
        die "$built does not report version $CHECKPOINTCTL_VERSION"
    log "built in $((SECONDS - start)) s"
fi

if [[ -x "$CHECKPOINTCTL_BIN" ]] && cmp -s "$built" "$CHECKPOINTCTL_BIN"; then
    log "already installed: $CHECKPOINTCTL_BIN $CHECKPOINTCTL_VERSION"
else
    run install -D -m 0755 "$built" "$CHECKPOINTCTL_BIN"
fi

run "$CHECKPOINTCTL_BIN" --version
