#!/usr/bin/env bash
# Builds helm from its Go module (helm.sh/helm/v4) into
# $PODRESTORE_CACHE/helm-<version>/bin.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=kube-lib.sh
source "$(dirname "$0")/kube-lib.sh"
command -v go >/dev/null || die "go is not installed"

if [[ -x $HELM_BIN/helm ]]; then
	say "helm v$HELM_VERSION already in $HELM_BIN"
	exit 0
fi
t0=$(date +%s.%N)
mod=helm.sh/helm/v4
tmp=$PODRESTORE_CACHE/.helm-gobin
rm -rf "$tmp"
say "building helm v$HELM_VERSION"
GOBIN=$tmp CGO_ENABLED=0 go install -trimpath \
	-ldflags "-s -w -X $mod/internal/version.version=v$HELM_VERSION" "$mod/cmd/helm@v$HELM_VERSION"
mkdir -p "$HELM_BIN"
mv "$tmp/helm" "$HELM_BIN/helm"
rm -rf "$tmp"
"$HELM_BIN/helm" version >&2
say "helm v$HELM_VERSION ready in $HELM_BIN ($(elapsed "$t0"))"
