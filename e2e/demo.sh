#!/usr/bin/env bash
# podrestore's demo: on a local single-node cluster, install podrestore with Helm,
# checkpoint a counting process through the kubelet API, restore it into another
# ("forensic") pod with a PodRestore, and watch it count on there.
#
# Every step says what it does and shows the commands it runs, so the demo doubles as
# a walk-through. It ends with exit status 0 only when the restored process counts in
# the forensic pod; when a step cannot go on it says where and why, and exits 1.
#
# Usage: sudo e2e/demo.sh
# Environment: PODRESTORE_E2E_CLUSTER (default e2e) and the other variables of
# e2e/cluster; PODRESTORE_DEMO_NAMESPACE (default podrestore-demo);
# PODRESTORE_DEMO_SKIP_SETUP=1 skips e2e/setup/all.sh (everything installed already).
set -euo pipefail
E2E=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$E2E/.." && pwd)
RELEASE=podrestore
SYSTEM_NS=podrestore-system
DEMO_NS=${PODRESTORE_DEMO_NAMESPACE:-podrestore-demo}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-${PODRESTORE_CACHE:-/var/cache/podrestore}/cargo-target}

if [[ -t 1 ]]; then bold=$'\e[1m' dim=$'\e[2m' red=$'\e[31m' green=$'\e[32m' off=$'\e[0m'; else bold='' dim='' red='' green='' off=''; fi
n=0
step() {
	n=$((n + 1))
	printf '\n%s== %d. %s%s\n' "$bold" "$n" "$1" "$off"
	shift
	local line
	for line in "$@"; do printf '   %s\n' "$line"; done
}
# Shows a command (on stderr, so that its output can be captured alone), then runs it.
show() {
	printf '%s$ %s%s\n' "$dim" "$*" "$off" >&2
	"$@"
}
fail() {
	printf '\n%sThe demo stops here: %s%s\n' "$red" "$1" "$off"
	shift
	local line
	for line in "$@"; do printf '   %s\n' "$line"; done
	exit 1
}

step "Install what the demo needs" \
	"CRIU 4.2.1, runc, containerd, the Kubernetes binaries, helm and the test images," \
	"each cached by version under /var/cache/podrestore (seconds when already there)."
if [[ ${PODRESTORE_DEMO_SKIP_SETUP:-} == 1 ]]; then
	echo "   skipped (PODRESTORE_DEMO_SKIP_SETUP=1)"
else
	show "$E2E/setup/all.sh"
fi

step "Build podrestore and its images" \
	"Release builds of the operator and the node agent, packed as OCI images without a" \
	"container engine: the agent's image carries CRIU and the iptables/nft tools CRIU runs."
mapfile -t images < <("$E2E/images/build-podrestore-images.sh")
printf '   %s\n' "${images[@]}"

# The manifest digest of each image: a changed image under the same tag rolls the pods.
digest() { python3 -c 'import json,sys,tarfile; print(json.load(tarfile.open(sys.argv[1]).extractfile("index.json"))["manifests"][0]["digest"])' "$1"; }
operator_digest=$(digest "${images[0]}")
agent_digest=$(digest "${images[1]}")

step "Start the local cluster" \
	"etcd, the API server, scheduler, controller manager, containerd, kubelet and kube-proxy" \
	"run as plain processes in network namespaces of their own; nothing touches the host's network."
if "$E2E/cluster" status >/dev/null 2>&1; then
	echo "   already up"
else
	show "$E2E/cluster" up
fi
eval "$("$E2E/cluster" env)"
echo "   The node's mounts are made shared, as systemd makes them on a real node, so that the"
echo "   mounts of containers started after the agent propagate into its view of the node:"
for each in $PODRESTORE_E2E_NODES; do show "$E2E/cluster" node-exec "$each" mount --make-rshared /; done
node=$PODRESTORE_E2E_NODE
node_dir=$PODRESTORE_E2E_STATE/nodes/$node
checkpoints=$PODRESTORE_E2E_KUBELET_ROOT/checkpoints
show kubectl get nodes

step "Import the images into the node's containerd" \
	"There is no registry: the image tarballs go straight into containerd's k8s.io namespace."
show "$E2E/cluster" import "${images[@]}" 2>&1 | grep -v '^Importing\|^application/' | sed 's/^/   /' || true

step "Install podrestore with Helm" \
	"The chart installs the PodRestore CRD, the operator (2 replicas, one leads through a Lease)" \
	"and the agent DaemonSet. The agent mounts the node paths it works with, at the same paths:" \
	"the runtime socket, the kubelet's checkpoint directory, its own state directory, and the" \
	"runtime's and kubelet's directories where target containers' files live (here all inside" \
	"the local cluster's state)."
show helm upgrade --install "$RELEASE" "$REPO/charts/podrestore" \
	--namespace "$SYSTEM_NS" --create-namespace \
	--set "agent.hostPaths.runtimeSocket=$node_dir/containerd.sock" \
	--set "agent.hostPaths.checkpointDir=$checkpoints" \
	--set "agent.hostPaths.stateDir=$node_dir/podrestore" \
	--set "agent.hostPaths.runtimeStateDir=$node_dir/containerd/state" \
	--set "agent.hostPaths.runtimeRootDir=$node_dir/containerd/root" \
	--set "agent.hostPaths.kubeletPodsDir=$PODRESTORE_E2E_KUBELET_ROOT/pods" \
	--set-string "operator.podAnnotations.podrestore\\.io/image-digest=$operator_digest" \
	--set-string "agent.podAnnotations.podrestore\\.io/image-digest=$agent_digest" \
	--wait --timeout 3m >/dev/null
show kubectl -n "$SYSTEM_NS" get pods -o wide
echo "   The operator issued the mutual-TLS certificates the agent serves with:"
show kubectl -n "$SYSTEM_NS" get secrets -l app.kubernetes.io/managed-by=podrestore-operator
show kubectl explain podrestore.spec

step "Start a counting workload" \
	"A busybox shell counts 1, 2, 3, ... in its memory and writes each number into /tmp/count," \
	"one a second (through a rename, so that a reader never finds the file empty), and prints" \
	"it to its log."
kubectl delete namespace "$DEMO_NS" --ignore-not-found --wait=true >/dev/null
show kubectl create namespace "$DEMO_NS"
pod() { # name container command
	cat <<EOF
apiVersion: v1
kind: Pod
metadata: {name: $1, namespace: $DEMO_NS}
spec:
  nodeName: $node
  terminationGracePeriodSeconds: 1
  containers:
    - name: $2
      image: $PODRESTORE_E2E_BUSYBOX_IMAGE
      imagePullPolicy: IfNotPresent
      command: [/bin/sh, -c, '$3']
EOF
}
# shellcheck disable=SC2016 # the container's shell expands it
pod counter count 'i=0; while true; do i=$((i+1)); echo $i >/tmp/count.new; mv /tmp/count.new /tmp/count; echo count $i; sleep 1; done' | show kubectl apply -f -
show kubectl -n "$DEMO_NS" wait --for=condition=Ready pod/counter --timeout=2m
sleep 3
show kubectl -n "$DEMO_NS" exec counter -- cat /tmp/count

step "Checkpoint it through the kubelet API" \
	"POST /checkpoint/{namespace}/{pod}/{container} on the kubelet, through the API server's node" \
	"proxy. The runtime's CRIU dumps the container and the kubelet writes a checkpoint archive;" \
	"the container keeps running."
reply=$(show kubectl create --raw "/api/v1/nodes/$node/proxy/checkpoint/$DEMO_NS/counter/count?timeout=60" -f /dev/null)
echo "   $reply"
archive=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["items"][0])' <<<"$reply")
printf '   %s bytes\n' "$(stat -c %s "$archive")"

step "Start the forensic pod" \
	"An idle pod on the same node; the checkpointed process tree will be restored into its" \
	"container's namespaces, where it can be inspected away from the original."
pod forensic shell 'exec sleep 86400' | show kubectl apply -f -
show kubectl -n "$DEMO_NS" wait --for=condition=Ready pod/forensic --timeout=2m
echo "   Before the restore, the forensic pod has no counter:"
show kubectl -n "$DEMO_NS" exec forensic -- ps

step "Restore it with a PodRestore" \
	"The operator checks the request (target pod running, checkpoint on its node and from this" \
	"namespace), then asks the agent on node $node over mutual TLS to restore the archive."
cat >"${TMPDIR:-/tmp}/podrestore-demo.yaml" <<EOF
apiVersion: podrestore.io/v1alpha1
kind: PodRestore
metadata:
  name: counter-restore
  namespace: $DEMO_NS
spec:
  checkpoint:
    archive:
      nodeName: $node
      path: $archive
  target:
    podName: forensic
EOF
sed 's/^/   /' "${TMPDIR:-/tmp}/podrestore-demo.yaml"
show kubectl apply -f "${TMPDIR:-/tmp}/podrestore-demo.yaml"
rm -f "${TMPDIR:-/tmp}/podrestore-demo.yaml"

step "Wait for Restored" \
	"kubectl wait --for=condition=Restored would wait for success only; the demo watches the" \
	"conditions so that a refusal or a failure shows at once."
conditions() {
	kubectl -n "$DEMO_NS" get podrestores counter-restore \
		-o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}): {.message}{"\n"}{end}'
}
restored=""
for _ in $(seq 1 150); do
	restored=$(kubectl -n "$DEMO_NS" get podrestores counter-restore \
		-o jsonpath='{.status.conditions[?(@.type=="Restored")].status}/{.status.conditions[?(@.type=="Restored")].reason}')
	case $restored in
	True/*) break ;;
	False/InProgress | False/Pending | /* | "") sleep 2 ;;
	False/*) break ;;
	*) sleep 2 ;;
	esac
done
show kubectl -n "$DEMO_NS" get podrestores
conditions | sed 's/^/   /'
if [[ $restored != True/* ]]; then
	show kubectl -n "$DEMO_NS" get events --field-selector involvedObject.kind=PodRestore
	fail "the PodRestore did not reach Restored=True (${restored:-no condition})." \
		"Everything before it ran for real: the chart, the images, the checkpoint through the" \
		"kubelet, the operator's checks and its mutual-TLS call to the agent. The conditions" \
		"above carry the agent's answer; \`kubectl -n $SYSTEM_NS logs ds/$RELEASE-agent\` has its log."
fi

step "Watch the restored process count on inside the forensic pod" \
	"The restored shell carries on from the number it had reached at the checkpoint."
show kubectl -n "$DEMO_NS" get podrestores counter-restore \
	-o jsonpath='{"restored PID on the node: "}{.status.restoredPID}{"\nCRIU: "}{.status.criuVersion}{"\narchive sha256: "}{.status.archive.sha256}{"\n"}'
show kubectl -n "$DEMO_NS" exec forensic -- ps
first=$(show kubectl -n "$DEMO_NS" exec forensic -- cat /tmp/count)
echo "   $first"
sleep 3
second=$(show kubectl -n "$DEMO_NS" exec forensic -- cat /tmp/count)
echo "   $second"
if ! [[ $first =~ ^[0-9]+$ && $second =~ ^[0-9]+$ ]] || ((second <= first)); then
	fail "the forensic pod's /tmp/count did not grow ($first, then $second)."
fi
echo "   Its output goes on in the forensic pod's log (the forensic pod's own shell prints nothing):"
show kubectl -n "$DEMO_NS" logs forensic --tail=3
printf '\n%sThe restored counter went on from %s to %s inside the forensic pod.%s\n' "$green" "$first" "$second" "$off"
cat <<EOF

Clean up:
  kubectl delete namespace $DEMO_NS       # the PodRestore's finalizer stops the restored tree
  helm uninstall $RELEASE -n $SYSTEM_NS
  e2e/cluster down
EOF
