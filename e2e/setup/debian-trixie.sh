#!/usr/bin/env bash
# Unpacks Debian trixie's etcd-server and containernetworking-plugins into the
# cache. Both depend only on libc6 >= 2.34 and run on bookworm; they are
# downloaded with a private apt configuration and extracted with dpkg-deb -x, so
# the system's sources and packages stay untouched.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=kube-lib.sh
source "$(dirname "$0")/kube-lib.sh"

# Usage: unpack <package> <version> <cache-dir> <file that proves the unpack is complete>
unpack() {
	local pkg=$1 ver=$2 dir=$3 probe=$4
	if [[ -x $dir/$probe ]]; then
		say "$pkg $ver already in $dir"
		return
	fi
	local tmp
	tmp=$(mktemp -d)
	# apt downloads as the _apt user when it can write the directory.
	chown _apt "$tmp" 2>/dev/null || true
	if ! (cd "$tmp" && apt_private trixie apt-get download "$pkg=$ver" >&2); then
		# The package lists may be stale: refresh them once.
		rm -f "$PODRESTORE_CACHE/apt-trixie/lists/.updated"
		(cd "$tmp" && apt_private trixie apt-get download "$pkg=$ver" >&2) ||
			die "trixie has no $pkg $ver any more (it has: $(apt_private trixie apt-cache policy "$pkg" | sed -n 's/ *Candidate: //p')); update the pin in kube-lib.sh"
	fi
	rm -rf "$dir.tmp"
	run dpkg-deb -x "$tmp/${pkg}_${ver#*:}_amd64.deb" "$dir.tmp"
	rm -rf "$tmp" "$dir"
	mv "$dir.tmp" "$dir"
	say "$pkg $ver unpacked into $dir"
}

t0=$(date +%s.%N)
unpack etcd-server "$ETCD_DEB_VERSION" "$ETCD_DIR" usr/bin/etcd
unpack containernetworking-plugins "$CNI_DEB_VERSION" "$CNI_DIR" usr/lib/cni/bridge
"$ETCD_DIR/usr/bin/etcd" --version | head -n1 >&2
say "trixie packages ready ($(elapsed "$t0"))"
