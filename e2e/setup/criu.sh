#!/usr/bin/env bash
# Installs the node's CRIU toolchain: CRIU 4.2.1 built from Debian's source tarball as
# /usr/local/sbin/criu, plus runc, iptables, nftables, iproute2 and util-linux from the system
# sources. Idempotent: a second run only checks and prints the versions.
#
# Why 4.2.1 and not a packaged CRIU: bookworm's 3.17.1 fails `criu check` on kernels >= 6.x here
# (vdso bounds), and 4.1.1 cannot dump any process with a TCP/UDP socket on kernels >= 6.16
# because it reads SO_PASSCRED on every socket; 4.2.1 reads it only on unix and netlink sockets.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$here/lib.sh"

CRIU_VERSION=4.2.1
CRIU_ORIG=criu_${CRIU_VERSION}.orig.tar.xz
CRIU_ORIG_SHA256=29ec0ee09e296479fe7048c80980e8ef1d0684d0b0204c2b101dfea19f6725b9
# Suites whose sources carry 4.2.1, newest first; the pool path is the fallback once they move on.
CRIU_SOURCE_SUITES=(sid forky)
CRIU_POOL_URL=$PODRESTORE_DEBIAN_MIRROR/pool/main/c/criu/$CRIU_ORIG
CRIU_BIN=/usr/local/sbin/criu

# runc drives CRIU for container checkpoints; CRIU runs iptables-restore to lock the network
# during dump and restore, and uses ip/nsenter/unshare in tests and namespace setup.
runtime_pkgs=(runc iptables nftables iproute2 util-linux)
build_pkgs=(
    gcc make libc6-dev pkg-config python3 curl xz-utils
    libprotobuf-c-dev protobuf-c-compiler libprotobuf-dev protobuf-compiler python3-protobuf
    libnl-3-dev libnl-route-3-dev libnet1-dev libcap-dev libbsd-dev libnftables-dev
    libgnutls28-dev uuid-dev
)

cache=$(podrestore_cache_dir)
src=$cache/criu-$CRIU_VERSION
tarball=$cache/$CRIU_ORIG

# Print the version a criu binary reports ("Version: 4.2.1" on the first line), or nothing.
criu_version_of() {
    "$1" --version 2>/dev/null | sed -n 's/^Version: *//p' | head -n1 || true
}

fetch_tarball() {
    if sha256_ok "$tarball" "$CRIU_ORIG_SHA256"; then
        log "cached: $tarball"
        return 0
    fi
    # `apt-get source --download-only` can fail on a missing .debian.tar.xz while the orig tarball,
    # the only file the build needs, is there: ask apt for the URI and fetch that file alone.
    local url="" suite
    for suite in "${CRIU_SOURCE_SUITES[@]}"; do
        [[ -f "$(podrestore_cache_dir "apt/$suite")/updated" ]] || apt_private_update "$suite"
        url=$(apt_private "$suite" source --print-uris criu 2>/dev/null |
            sed -n "s|^'\([^']*/$CRIU_ORIG\)'.*|\1|p" | head -n1 || true)
        if [[ -z "$url" ]]; then
            # Old lists can name a version the mirror no longer has.
            apt_private_update "$suite"
            url=$(apt_private "$suite" source --print-uris criu 2>/dev/null |
                sed -n "s|^'\([^']*/$CRIU_ORIG\)'.*|\1|p" | head -n1 || true)
        fi
        [[ -n "$url" ]] && break
        log "Debian $suite no longer has criu $CRIU_VERSION"
    done
    url=${url:-$CRIU_POOL_URL}
    log "downloading $url"
    curl -fsSL --retry 3 -o "$tarball.part" "$url" || die "download of $url failed"
    sha256_ok "$tarball.part" "$CRIU_ORIG_SHA256" ||
        die "$url has sha256 $(sha256sum "$tarball.part" | cut -d' ' -f1), expected $CRIU_ORIG_SHA256"
    mv "$tarball.part" "$tarball"
}

build_criu() {
    if [[ -x "$src/criu/criu" && "$(criu_version_of "$src/criu/criu")" == "$CRIU_VERSION" ]]; then
        log "cached build: $src/criu/criu"
        return 0
    fi
    fetch_tarball
    if [[ ! -f "$src/Makefile" ]]; then
        # Unpack beside the final place and rename, so an interrupted run never leaves half a tree.
        local tmp
        tmp=$(mktemp -d "$cache/.criu-unpack.XXXXXX")
        run tar -C "$tmp" -xJf "$tarball"
        [[ -f "$tmp/criu-$CRIU_VERSION/Makefile" ]] || die "$tarball does not unpack to criu-$CRIU_VERSION/"
        rm -rf "$src"
        mv "$tmp/criu-$CRIU_VERSION" "$src"
        rmdir "$tmp"
    fi
    log "building CRIU $CRIU_VERSION in $src"
    local start=$SECONDS
    run make -C "$src" -j"$(nproc)" criu >"$src/build.log" 2>&1 ||
        { tail -n 40 "$src/build.log" >&2; die "CRIU build failed, full log in $src/build.log"; }
    [[ "$(criu_version_of "$src/criu/criu")" == "$CRIU_VERSION" ]] ||
        die "$src/criu/criu does not report version $CRIU_VERSION"
    log "built in $((SECONDS - start)) s"
}

install_criu() {
    if [[ -x "$CRIU_BIN" ]] && cmp -s "$src/criu/criu" "$CRIU_BIN"; then
        log "already installed: $CRIU_BIN $CRIU_VERSION"
        return 0
    fi
    if [[ -x "$CRIU_BIN" ]]; then
        local have
        have=$(criu_version_of "$CRIU_BIN")
        if [[ "$have" == "$CRIU_VERSION" ]]; then
            log "keeping $CRIU_BIN: already CRIU $CRIU_VERSION (a different build)"
            return 0
        fi
        log "replacing $CRIU_BIN (version ${have:-unknown})"
    fi
    run install -D -m 0755 "$src/criu/criu" "$CRIU_BIN"
}

# runc hands CRIU config_file=/etc/criu/runc.conf on every checkpoint and restore; CRIU skips a
# missing file, but a stray one would silently change every dump and restore of the node.
check_runc_conf() {
    if [[ -e /etc/criu/runc.conf ]]; then
        log "warning: /etc/criu/runc.conf exists and applies to every runc checkpoint/restore:"
        sed 's/^/    /' /etc/criu/runc.conf >&2
    else
        log "/etc/criu/runc.conf absent (runc's CRIU calls use only their own options)"
    fi
}

apt_install_missing "${runtime_pkgs[@]}" "${build_pkgs[@]}"
build_criu
install_criu
check_runc_conf

resolved=$(command -v criu || true)
[[ "$resolved" == "$CRIU_BIN" ]] ||
    log "warning: 'criu' on PATH is ${resolved:-missing}, not $CRIU_BIN; runc runs the one on PATH"

run "$CRIU_BIN" --version
# `criu check` exits non-zero when the kernel lacks something a plain dump/restore needs.
run "$CRIU_BIN" check
log "runc: $(runc --version | head -n1)"
