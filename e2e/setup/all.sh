#!/usr/bin/env bash
# Installs or builds everything podrestore's tests and demo need, in order, each
# step cached by version under $PODRESTORE_CACHE (default /var/cache/podrestore).
# A second run changes nothing and takes seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)

# lib.sh and kube-lib.sh are sourced by these; they are not steps of their own.
steps=(
    node-packages # runc, iptables, conntrack, busybox-static (Debian bookworm)
    criu          # CRIU 4.2.1 from Debian sid's source
    checkpointctl # checkpointctl from its Go module
    debian-trixie # etcd and the CNI plugins (Debian trixie)
    kube          # Kubernetes binaries from the Go module k8s.io/kubernetes
    containerd    # containerd 2.x from its Go module
    helm          # helm from its Go module
    images        # pause and busybox OCI images for the local cluster
    e2e-tools     # e2e/tools programs the tests run on a node (containerd client)
)
for step in "${steps[@]}"; do
    started=$(date +%s)
    "$here/$step.sh"
    echo "setup: $step done in $(( $(date +%s) - started ))s"
done
