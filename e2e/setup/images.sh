#!/usr/bin/env bash
# Writes the OCI image tarballs the local cluster imports into containerd: the
# pod sandbox ("pause", a static C program of ours) and a busybox userland for
# test workloads (Debian's busybox-static). No registry is involved.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=kube-lib.sh
source "$(dirname "$0")/kube-lib.sh"

t0=$(date +%s.%N)
[[ -x /bin/busybox ]] || die "/bin/busybox missing: run e2e/setup/node-packages.sh"
command -v gcc >/dev/null || die "gcc is not installed"
mkdir -p "$IMAGES_DIR"
tool=$E2E_DIR/images/ociimage.py

run gcc -static -O2 -Wall -Wextra -o "$IMAGES_DIR/pause" "$E2E_DIR/images/pause.c"
"$tool" --name "$PAUSE_IMAGE" --out "$IMAGES_DIR/pause.tar" \
	--add "$IMAGES_DIR/pause:/pause" --entrypoint /pause

args=(--add /bin/busybox:/bin/busybox --dir /tmp --dir /root --dir /proc --dir /sys --dir /dev)
for a in $(/bin/busybox --list); do
	[[ $a == busybox ]] || args+=(--symlink "/bin/$a:busybox")
done
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$IMAGES_DIR/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$IMAGES_DIR/group"
"$tool" --name "$BUSYBOX_IMAGE" --out "$IMAGES_DIR/busybox.tar" "${args[@]}" \
	--add "$IMAGES_DIR/passwd:/etc/passwd" --add "$IMAGES_DIR/group:/etc/group" --cmd /bin/sh
say "images ready in $IMAGES_DIR ($(elapsed "$t0"))"
