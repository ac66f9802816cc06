#!/usr/bin/env bash
# Builds podrestore's own OCI images without a container engine: the operator and
# the node agent, from the workspace's release binaries, written with ociimage.py
# as single-layer image tarballs tagged with the crates' version:
#
#   podrestore.local/podrestore-operator:<version>   the operator and the shared
#       libraries it links (glibc, libgcc_s), nothing else: it runs as a
#       non-root user on a read-only root file system.
#   podrestore.local/podrestore-agent:<version>      the agent, CRIU from
#       /usr/local/sbin/criu (e2e/setup/criu.sh), and the programs CRIU runs:
#       iptables and nft to lock a network namespace while it restores (with the
#       xtables extensions they load), GNU tar and gzip for tmpfs contents,
#       /bin/sh (CRIU starts iptables through a shell); and every shared library
#       these link.
#
# The binaries are dynamically linked glibc binaries (no musl target can be
# installed offline here); the libraries come from this machine, found with ldd,
# so the images run on any x86-64 Linux node whatever its distribution.
#
# Usage: e2e/images/build-podrestore-images.sh [--no-build] [--import] [--print-version]
#   --no-build       use the release binaries already in $CARGO_TARGET_DIR/release
#   --import         also import the images into every node of the local cluster
#                    (e2e/cluster import)
#   --print-version  print the version the images are tagged with and exit
# Writes $PODRESTORE_CACHE/e2e-images/podrestore-{operator,agent}-<version>.tar and
# prints their paths on stdout.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source-path=SCRIPTDIR source=../setup/kube-lib.sh
source "$here/../setup/kube-lib.sh"
repo=$(cd "$here/../.." && pwd)

build=1 import=0 print_version=0
for arg in "$@"; do
	case $arg in
	--no-build) build=0 ;;
	--import) import=1 ;;
	--print-version) print_version=1 ;;
	*) die "unknown argument $arg (see the header of $0)" ;;
	esac
done

: "${CARGO_TARGET_DIR:=$PODRESTORE_CACHE/cargo-target}"
export CARGO_TARGET_DIR
REGISTRY=podrestore.local
CRIU=/usr/local/sbin/criu
CRIU_VERSION=4.2.1

# The version of the workspace's crates (both binaries share it).
version=$(cd "$repo" && cargo metadata --no-deps --format-version 1 --offline 2>/dev/null |
	python3 -c 'import json,sys
pkgs={p["name"]:p["version"] for p in json.load(sys.stdin)["packages"]}
assert pkgs["podrestore-operator"]==pkgs["podrestore-agent"], pkgs
print(pkgs["podrestore-operator"])') || die "cannot read the crate version with cargo metadata"
if ((print_version)); then
	echo "$version"
	exit 0
fi

t0=$(date +%s.%N)
if ((build)); then
	say "building the release binaries (cargo build --release; a no-op when they are current)"
	(cd "$repo" && run cargo build --release --locked -p podrestore-operator -p podrestore-agent)
fi
release=$CARGO_TARGET_DIR/release
for bin in podrestore-operator podrestore-agent; do
	[[ -x $release/$bin ]] || die "$release/$bin is missing: run without --no-build"
done
[[ -x $CRIU ]] || die "$CRIU is missing: run e2e/setup/criu.sh"
"$CRIU" --version | grep -q "^Version: $CRIU_VERSION\$" || die "$CRIU is not CRIU $CRIU_VERSION: run e2e/setup/criu.sh"
[[ -x /bin/busybox ]] || die "/bin/busybox is missing: run e2e/setup/node-packages.sh"
for tool in /usr/sbin/xtables-nft-multi /usr/sbin/xtables-legacy-multi /usr/sbin/nft /bin/tar /bin/gzip; do
	[[ -x $tool ]] || die "$tool is missing: run e2e/setup/criu.sh (it installs iptables and nftables; tar and gzip are essential packages)"
done
xtables_dir=/usr/lib/x86_64-linux-gnu/xtables
[[ -d $xtables_dir ]] || die "$xtables_dir is missing (package iptables)"

mkdir -p "$IMAGES_DIR"
work=$(mktemp -d "$IMAGES_DIR/.podrestore-images.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Prints the shared libraries (and the dynamic loader) the given ELF files
# load, as absolute paths on this machine, one per line, sorted and unique.
shared_libs() {
	local f out
	for f in "$@"; do
		out=$(ldd "$f" 2>&1) || {
			# Static binaries: ldd says so and exits 1.
			grep -q "not a dynamic executable" <<<"$out" && continue
			die "ldd $f: $out"
		}
		if grep -q "not found" <<<"$out"; then die "ldd $f: $out"; fi
		sed -n -e 's/^.*=> \(\/[^ ]*\) (0x.*$/\1/p' -e 's/^[[:space:]]*\(\/[^ ]*\) (0x.*$/\1/p' <<<"$out"
	done | sort -u
}

# The library arguments of ociimage.py for the given ELF files. Libraries are
# placed at their path below /usr (Debian's merged /usr: /lib is a link to usr/lib),
# so the loader finds them in its default directories without an ld.so.cache.
lib_args() {
	local lib dest
	while read -r lib; do
		dest=$lib
		[[ $dest == /usr/* ]] || dest=/usr$dest
		printf -- '--add\n%s:%s\n' "$lib" "$dest"
	done < <(shared_libs "$@")
}
# The merged-/usr links every image carries: the loader is looked up as
# /lib64/ld-linux-x86-64.so.2 and libraries under /lib/x86_64-linux-gnu.
base_args=(--symlink /lib:usr/lib --symlink /lib64:usr/lib64 --symlink /bin:usr/bin --symlink /sbin:usr/sbin
	--dir /tmp --dir /proc --dir /sys --dir /dev --dir /run --dir /etc)

# Stripped copies keep the images small; the release profile keeps symbols.
run strip --strip-unneeded -o "$work/podrestore-operator" "$release/podrestore-operator"
run strip --strip-unneeded -o "$work/podrestore-agent" "$release/podrestore-agent"

printf 'root:x:0:0:root:/root:/bin/false\nnonroot:x:65532:65532:nonroot:/nonexistent:/bin/false\n' >"$work/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$work/group"

operator_image=$REGISTRY/podrestore-operator:$version
operator_tar=$IMAGES_DIR/podrestore-operator-$version.tar
mapfile -t operator_libs < <(lib_args "$work/podrestore-operator")
say "writing $operator_image: the operator and $((${#operator_libs[@]} / 2)) shared libraries"
python3 "$here/ociimage.py" --name "$operator_image" --out "$operator_tar" \
	"${base_args[@]}" "${operator_libs[@]}" \
	--add "$work/podrestore-operator:/usr/local/bin/podrestore-operator" \
	--add "$work/passwd:/etc/passwd" --add "$work/group:/etc/group" \
	--env PATH=/usr/local/bin:/usr/bin --entrypoint /usr/local/bin/podrestore-operator

# The agent: CRIU and what it executes: the firewall tools, tar and gzip
# (`tar --extract --gzip` restores a tmpfs's contents), and a shell for CRIU's
# `sh -c "iptables ..."`. The iptables names point at the flavour this machine
# uses (nf_tables or legacy), as the node's own CRIU and kube-proxy do; CRIU
# looks for the -legacy names itself when it needs the legacy tables.
flavour=$(basename "$(readlink -f /usr/sbin/iptables)")
[[ $flavour == xtables-nft-multi || $flavour == xtables-legacy-multi ]] ||
	die "/usr/sbin/iptables is $flavour, neither xtables-nft-multi nor xtables-legacy-multi"
agent_args=(
	--add "$work/podrestore-agent:/usr/local/bin/podrestore-agent"
	--add "$CRIU:/usr/local/sbin/criu"
	--add /usr/sbin/xtables-nft-multi:/usr/sbin/xtables-nft-multi
	--add /usr/sbin/xtables-legacy-multi:/usr/sbin/xtables-legacy-multi
	--add /usr/sbin/nft:/usr/sbin/nft
	--add /bin/tar:/usr/bin/tar --add /bin/gzip:/usr/bin/gzip
	--add /bin/busybox:/usr/bin/busybox --symlink /usr/bin/sh:busybox
	--add "$work/passwd:/etc/passwd" --add "$work/group:/etc/group"
	--dir /var/lib/podrestore
)
for v in "" 6; do
	for t in "" -save -restore; do
		agent_args+=(--symlink "/usr/sbin/ip${v}tables$t:$flavour"
			--symlink "/usr/sbin/ip${v}tables-legacy$t:xtables-legacy-multi"
			--symlink "/usr/sbin/ip${v}tables-nft$t:xtables-nft-multi")
	done
done
for ext in "$xtables_dir"/*.so; do
	agent_args+=(--add "$ext:/usr${ext#/usr}")
done
mapfile -t agent_libs < <(lib_args "$work/podrestore-agent" "$CRIU" /usr/sbin/xtables-nft-multi \
	/usr/sbin/xtables-legacy-multi /usr/sbin/nft /bin/tar /bin/gzip "$xtables_dir"/*.so)
agent_image=$REGISTRY/podrestore-agent:$version
agent_tar=$IMAGES_DIR/podrestore-agent-$version.tar
say "writing $agent_image: the agent, CRIU $CRIU_VERSION, iptables ($flavour), nft, tar, gzip, /bin/sh, their libraries"
python3 "$here/ociimage.py" --name "$agent_image" --out "$agent_tar" \
	"${base_args[@]}" "${agent_libs[@]}" "${agent_args[@]}" \
	--env PATH=/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin --entrypoint /usr/local/bin/podrestore-agent \
	--cmd serve

say "images written ($(elapsed "$t0")): $operator_image, $agent_image"
if ((import)); then
	run "$repo/e2e/cluster" import "$operator_tar" "$agent_tar"
fi
printf '%s\n' "$operator_tar" "$agent_tar"
