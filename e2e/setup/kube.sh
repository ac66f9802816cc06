#!/usr/bin/env bash
# Builds the Kubernetes binaries of the local cluster (kube-apiserver,
# kube-controller-manager, kube-scheduler, kube-proxy, kubectl, kubelet) from the
# Go module k8s.io/kubernetes into $PODRESTORE_CACHE/kube-<version>/bin.
# Cold: about half an hour on 2 cores; warm: nothing to do.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=kube-lib.sh
source "$(dirname "$0")/kube-lib.sh"

mod=$E2E_DIR/kube
command -v go >/dev/null || die "go is not installed"

# The module's replace lines follow the served go.mod of this exact version.
if ! grep -q "k8s.io/kubernetes v$KUBE_VERSION" "$mod/go.mod"; then
	KUBE_VERSION=$KUBE_VERSION run "$mod/gen-gomod.sh"
fi

minor=${KUBE_VERSION#*.}
minor=${minor%%.*}
# The version the binaries report; without it they say v0.0.0-master.
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
	ldflags+=" -X $p.gitVersion=v$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor"
	ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
done

t0=$(date +%s.%N)
# Upstream builds these statically (hack/lib/golang.sh KUBE_STATIC_LIBRARIES).
go_build_into "$KUBE_BIN" "$mod" 0 "$ldflags" \
	k8s.io/kubernetes/cmd/kube-apiserver \
	k8s.io/kubernetes/cmd/kube-controller-manager \
	k8s.io/kubernetes/cmd/kube-scheduler \
	k8s.io/kubernetes/cmd/kube-proxy \
	k8s.io/kubernetes/cmd/kubectl
go_build_into "$KUBE_BIN" "$mod" 1 "$ldflags" k8s.io/kubernetes/cmd/kubelet
"$KUBE_BIN/kubectl" version --client >&2
say "kubernetes v$KUBE_VERSION ready in $KUBE_BIN ($(elapsed "$t0"))"
