#!/usr/bin/env bash
# Builds containerd 2.x (containerd, ctr, containerd-shim-runc-v2) from its Go
# module into $PODRESTORE_CACHE/containerd-<version>/bin. The kubelet checkpoint
# API needs containerd >= 2.0 (1.7 does not implement CRI CheckpointContainer).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=kube-lib.sh
source "$(dirname "$0")/kube-lib.sh"
command -v go >/dev/null || die "go is not installed"

mod=github.com/containerd/containerd/v2
t0=$(date +%s.%N)
ldflags="-s -w -X $mod/version.Version=v$CONTAINERD_VERSION -X $mod/version.Package=$mod"
tmp=$PODRESTORE_CACHE/.containerd-gobin
mkdir -p "$CONTAINERD_BIN"
# Static builds without cgo: no btrfs snapshotter (it needs cgo); overlayfs is
# what the cluster uses. The shim drops gRPC like upstream's release build.
for cmd in containerd ctr containerd-shim-runc-v2; do
	[[ -x $CONTAINERD_BIN/$cmd ]] && continue
	tags=urfave_cli_no_docs
	[[ $cmd == containerd-shim-runc-v2 ]] && tags+=",no_grpc"
	say "building $cmd v$CONTAINERD_VERSION"
	rm -rf "$tmp"
	GOBIN=$tmp CGO_ENABLED=0 go install -trimpath -tags "$tags" -ldflags "$ldflags" "$mod/cmd/$cmd@v$CONTAINERD_VERSION"
	mv "$tmp/$cmd" "$CONTAINERD_BIN/$cmd"
done
rm -rf "$tmp"
"$CONTAINERD_BIN/containerd" --version >&2
say "containerd v$CONTAINERD_VERSION ready in $CONTAINERD_BIN ($(elapsed "$t0"))"
