#!/usr/bin/env bash
# Builds the small Go programs of e2e/tools that the end-to-end tests run on a
# node, each into $PODRESTORE_CACHE/e2e-tools/<tool>-<containerd version>-<hash
# of its sources>/ and linked from $PODRESTORE_CACHE/e2e-tools/bin/<tool>, where
# the tests look for it. A build whose sources did not change is not redone.
#
#   cgroupns-path   gives a container's stored OCI spec a cgroup namespace path
#                   through containerd's API (see its main.go)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=kube-lib.sh
source "$(dirname "$0")/kube-lib.sh"
command -v go >/dev/null || die "go is not installed"

tools=(cgroupns-path)
out=$PODRESTORE_CACHE/e2e-tools
mkdir -p "$out/bin"
t0=$(date +%s.%N)
for tool in "${tools[@]}"; do
	src=$E2E_DIR/tools/$tool
	[[ -f $src/go.mod && -f $src/go.sum ]] || die "$src has no go.mod and go.sum"
	# The tool talks to the cluster's containerd: it must use the same client.
	pinned=$(sed -n 's#^[[:space:]]*\(require[[:space:]]\+\)\?github.com/containerd/containerd/v2 v\([^[:space:]]*\).*#\2#p' "$src/go.mod")
	[[ $pinned == "$CONTAINERD_VERSION" ]] ||
		die "$src/go.mod requires containerd v${pinned:-?}, the cluster runs v$CONTAINERD_VERSION: run 'go get github.com/containerd/containerd/v2@v$CONTAINERD_VERSION && go mod tidy' there"
	hash=$(cd "$src" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) -print0 |
		LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
	dir=$out/$tool-$CONTAINERD_VERSION-$hash
	if [[ ! -x $dir/$tool ]]; then
		say "building $tool against containerd v$CONTAINERD_VERSION"
		rm -rf "$dir.tmp"
		mkdir -p "$dir.tmp"
		(cd "$src" && CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly" \
			go build -trimpath -ldflags "-s -w" -o "$dir.tmp/$tool" .)
		rm -rf "$dir"
		mv "$dir.tmp" "$dir"
	fi
	ln -sfn "$dir/$tool" "$out/bin/$tool"
	say "$tool ready: $out/bin/$tool -> $dir/$tool"
done
say "e2e tools ready in $out/bin ($(elapsed "$t0"))"
