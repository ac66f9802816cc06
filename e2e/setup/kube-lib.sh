# Helpers shared by the cluster setup scripts (sourced, not run).
# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables are for the scripts sourcing this file

PODRESTORE_CACHE=${PODRESTORE_CACHE:-/var/cache/podrestore}
E2E_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Versions pinned for the local cluster; one place to bump them.
KUBE_VERSION=${KUBE_VERSION:-1.37.2}
HELM_VERSION=${HELM_VERSION:-4.3.2}
CONTAINERD_VERSION=${CONTAINERD_VERSION:-2.4.2}
# Debian trixie package versions (etcd-server, containernetworking-plugins).
ETCD_DEB_VERSION=${ETCD_DEB_VERSION:-3.5.16-4}
CNI_DEB_VERSION=${CNI_DEB_VERSION:-1.1.1+ds1-3+b17}

# Where each component lives once its setup script has run.
KUBE_BIN=$PODRESTORE_CACHE/kube-$KUBE_VERSION/bin
HELM_BIN=$PODRESTORE_CACHE/helm-$HELM_VERSION/bin
CONTAINERD_BIN=$PODRESTORE_CACHE/containerd-$CONTAINERD_VERSION/bin
ETCD_DIR=$PODRESTORE_CACHE/etcd-$ETCD_DEB_VERSION
CNI_DIR=$PODRESTORE_CACHE/cni-plugins-$CNI_DEB_VERSION
IMAGES_DIR=$PODRESTORE_CACHE/e2e-images

# Images written by images.sh and imported into every node.
PAUSE_IMAGE=podrestore.local/pause:1.0
BUSYBOX_IMAGE=podrestore.local/busybox:1.35

say() { printf '[%s] %s\n' "$(basename "$0" .sh)" "$*" >&2; }
die() { say "error: $*"; exit 1; }

# Runs a command, printing it first.
run() { say "+ $*"; "$@"; }

# Prints the seconds elapsed since $1 (from `date +%s.%N`).
elapsed() { python3 -c "import sys,time; print(f'{time.time()-float(sys.argv[1]):.1f}s')" "$1"; }

# Builds Go packages into a directory atomically: first into a temporary
# directory next to it, then renamed, so a cut build never looks complete.
# Usage: go_build_into <dest-dir> <module-dir> <cgo 0|1> <ldflags> <pkg>...
go_build_into() {
	local dest=$1 mod=$2 cgo=$3 ldflags=$4
	shift 4
	local pkg name
	mkdir -p "$dest"
	for pkg in "$@"; do
		name=$(basename "$pkg")
		if [[ -x $dest/$name ]]; then continue; fi
		local t0
		t0=$(date +%s.%N)
		say "building $name (CGO_ENABLED=$cgo)"
		(cd "$mod" && CGO_ENABLED=$cgo go build -trimpath -ldflags "$ldflags" -o "$dest/.$name.tmp" "$pkg")
		mv "$dest/.$name.tmp" "$dest/$name"
		say "built $name in $(elapsed "$t0")"
	done
}

# A private apt configuration for one Debian suite, so packages of another
# suite can be downloaded without touching the system's sources.
# Usage: apt_private <suite> apt-get|apt-cache <args...>
apt_private() {
	local suite=$1 tool=$2
	shift 2
	local d=$PODRESTORE_CACHE/apt-$suite
	mkdir -p "$d/lists/partial" "$d/archives/partial" "$d/cache"
	local mirror
	mirror=$(sed -n 's|^deb \(http[^ ]*\) .*|\1|p' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | head -n1)
	if [[ -z $mirror ]]; then
		mirror=$(sed -n 's|^URIs: *\(http[^ ]*\).*|\1|p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
	fi
	mirror=${mirror:-http://deb.debian.org/debian}
	echo "deb $mirror $suite main" >"$d/sources.list"
	local opts=(-o "Dir::Etc::sourcelist=$d/sources.list" -o "Dir::Etc::sourceparts=-"
		-o "Dir::State::Lists=$d/lists" -o "Dir::Cache=$d/cache" -o "Dir::Cache::archives=$d/archives"
		-o "APT::Get::List-Cleanup=0")
	if [[ ! -e $d/lists/.updated ]]; then
		run apt-get "${opts[@]}" update >&2
		touch "$d/lists/.updated"
	fi
	"$tool" "${opts[@]}" "$@"
}
