#!/usr/bin/env bash
# Installs the bookworm packages the local cluster's node needs: runc (the OCI
# runtime under containerd), iptables and conntrack (kube-proxy, CNI masquerade),
# busybox-static (the test workloads' userland).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=kube-lib.sh
source "$(dirname "$0")/kube-lib.sh"

pkgs=(runc iptables conntrack busybox-static)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
	say "installed already: ${pkgs[*]}"
	exit 0
fi
t0=$(date +%s.%N)
export DEBIAN_FRONTEND=noninteractive
run apt-get -o DPkg::Lock::Timeout=600 update -qq
run apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}"
say "installed ${missing[*]} ($(elapsed "$t0"))"
