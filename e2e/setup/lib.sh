# shellcheck shell=bash
# Helpers shared by the e2e/setup/*.sh scripts. Source this file; do not run it.
#
#   log MSG...                    print a progress line on stderr, prefixed with the script name
#   die MSG...                    log an error and exit 1
#   run CMD...                    log the command, then run it
#   podrestore_cache_dir [SUB]    print (and create) $PODRESTORE_CACHE[/SUB], default /var/cache/podrestore
#   sha256_ok FILE SUM            succeed when FILE exists and has that sha256
#   pkg_installed PKG             succeed when the dpkg package PKG is installed
#   apt_install_missing PKG...    install from the system sources the packages not yet installed
#   apt_private SUITE ARGS...     run apt-get against a private config for a Debian SUITE (trixie, sid, ...)
#   apt_private_update SUITE      refresh that suite's private package lists
#   apt_private_download SUITE PKG[=VERSION]...
#                                 download .deb files of SUITE into the cache and print their paths
#
# The private apt configs keep their sources, lists and caches under
# $PODRESTORE_CACHE/apt/<suite>/ so the system's sources and package caches are never touched.

if [[ -n "${PODRESTORE_SETUP_LIB_LOADED:-}" ]]; then
    return 0
fi
PODRESTORE_SETUP_LIB_LOADED=1

# Debian mirror used for the private suites; the system sources point at the same one.
: "${PODRESTORE_DEBIAN_MIRROR:=http://deb.debian.org/debian}"
# Another setup script may hold the dpkg lock (several scripts can run at once on a shared machine).
: "${PODRESTORE_APT_LOCK_TIMEOUT:=600}"

log() {
    printf '[%s] %s\n' "${PODRESTORE_LOG_TAG:-$(basename "${0:-setup}" .sh)}" "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

run() {
    log "+ $*"
    "$@"
}

podrestore_cache_dir() {
    local dir="${PODRESTORE_CACHE:-/var/cache/podrestore}"
    if [[ $# -gt 0 ]]; then
        dir="$dir/$1"
    fi
    mkdir -p "$dir"
    printf '%s\n' "$dir"
}

sha256_ok() {
    local file=$1 want=$2
    [[ -f "$file" ]] && [[ "$(sha256sum "$file" | cut -d' ' -f1)" == "$want" ]]
}

pkg_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == "installed" ]]
}

# Set once apt-get update has run in this process, so several calls refresh the lists only once.
_PODRESTORE_APT_UPDATED=""

apt_install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        pkg_installed "$pkg" || missing+=("$pkg")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        log "already installed: $*"
        return 0
    fi
    local apt=(apt-get -q -o "DPkg::Lock::Timeout=$PODRESTORE_APT_LOCK_TIMEOUT")
    # Refresh the lists only when a package has no install candidate (fresh machine, stale lists).
    if [[ -z "$_PODRESTORE_APT_UPDATED" ]] && ! _apt_all_have_candidate "${missing[@]}"; then
        run "${apt[@]}" update
        _PODRESTORE_APT_UPDATED=1
    fi
    if ! DEBIAN_FRONTEND=noninteractive run "${apt[@]}" install -y --no-install-recommends "${missing[@]}"; then
        # A candidate can exist while its file is gone from the mirror: refresh once and retry.
        [[ -z "$_PODRESTORE_APT_UPDATED" ]] || die "apt-get install failed: ${missing[*]}"
        run "${apt[@]}" update
        _PODRESTORE_APT_UPDATED=1
        DEBIAN_FRONTEND=noninteractive run "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
    fi
}

_apt_all_have_candidate() {
    local pkg candidate
    for pkg in "$@"; do
        candidate=$(apt-cache policy "$pkg" 2>/dev/null | sed -n 's/^ *Candidate: *//p')
        [[ -n "$candidate" && "$candidate" != "(none)" ]] || return 1
    done
}

# Print the directory of the private apt config for SUITE, creating it on first use.
_apt_private_dir() {
    local suite=$1 dir
    dir=$(podrestore_cache_dir "apt/$suite")
    mkdir -p "$dir/lists/partial" "$dir/cache/archives/partial" "$dir/preferences.d" "$dir/debs"
    local sources="deb $PODRESTORE_DEBIAN_MIRROR $suite main
deb-src $PODRESTORE_DEBIAN_MIRROR $suite main"
    if [[ "$(cat "$dir/sources.list" 2>/dev/null)" != "$sources" ]]; then
        printf '%s\n' "$sources" >"$dir/sources.list"
        # Different sources make the old lists meaningless.
        rm -f "$dir/lists/"*_* "$dir/updated"
    fi
    printf '%s\n' "$dir"
}

apt_private() {
    local suite=$1 dir
    shift
    dir=$(_apt_private_dir "$suite")
    # sourceparts=- names no directory, so only the private sources.list is read; the empty private
    # preferences.d keeps the system's pins out.
    apt-get -q \
        -o "Dir::Etc::sourcelist=$dir/sources.list" \
        -o "Dir::Etc::sourceparts=-" \
        -o "Dir::Etc::preferences=$dir/preferences" \
        -o "Dir::Etc::preferencesparts=$dir/preferences.d" \
        -o "Dir::State::Lists=$dir/lists" \
        -o "Dir::Cache=$dir/cache" \
        -o "APT::Get::List-Cleanup=0" \
        -o "APT::Sandbox::User=root" \
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false" \
        -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false" \
        -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false" \
        "$@"
}

apt_private_update() {
    local suite=$1 dir
    dir=$(_apt_private_dir "$suite")
    log "refreshing the private package lists of Debian $suite"
    # Setup scripts may run side by side; apt would fail, not wait, on the lists lock.
    (
        flock 9
        apt_private "$suite" update >&2
    ) 9>"$dir/lock.setup"
    touch "$dir/updated"
}

# Refresh SUITE's lists when they were never fetched.
_apt_private_ensure_lists() {
    local dir
    dir=$(_apt_private_dir "$1")
    [[ -f "$dir/updated" ]] || apt_private_update "$1"
}

apt_private_download() {
    local suite=$1
    shift
    local dir spec
    dir=$(_apt_private_dir "$suite")
    for spec in "$@"; do
        _apt_private_download_one "$suite" "$dir/debs" "$spec"
    done
}

_apt_private_download_one() {
    local suite=$1 debs=$2 spec=$3 pkg version cached
    pkg=${spec%%=*}
    version=""
    [[ "$spec" == *=* ]] && version=${spec#*=}
    # A pinned version already in the cache needs no network at all. Debian file names drop the epoch.
    if [[ -n "$version" ]]; then
        cached=$(compgen -G "$debs/${pkg}_${version#*:}_*.deb" | head -n1 || true)
        if [[ -n "$cached" ]]; then
            printf '%s\n' "$cached"
            return 0
        fi
    fi
    _apt_private_ensure_lists "$suite"
    local uris
    if ! uris=$(apt_private "$suite" download --print-uris "$spec" 2>/dev/null) || [[ -z "$uris" ]]; then
        apt_private_update "$suite"
        uris=$(apt_private "$suite" download --print-uris "$spec") || die "no package $spec in Debian $suite"
    fi
    # Line format: 'URI' FILENAME SIZE SHA256:HEX
    local file sum
    read -r _ file _ sum <<<"$uris"
    sum=${sum#*:}
    if sha256_ok "$debs/$file" "$sum"; then
        log "cached: $debs/$file"
    else
        log "downloading $spec from Debian $suite"
        (
            flock 9
            cd "$debs" && apt_private "$suite" download "$spec" >&2
        ) 9>"$debs/.lock" || die "download of $spec from Debian $suite failed"
        sha256_ok "$debs/$file" "$sum" || die "checksum mismatch for $debs/$file"
    fi
    printf '%s\n' "$debs/$file"
}
