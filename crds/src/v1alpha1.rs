//! `podrestore.io/v1alpha1`: the `PodRestore` resource.
//!
//! Doc comments on the types and fields below become the descriptions that
//! `kubectl explain podrestore` prints, so they are written for users.
//!
//! Enum values follow the Kubernetes API convention for enumerations: CamelCase words with
//! an initial capital (`Soft`, `Iptables`), like `imagePullPolicy: IfNotPresent`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Pattern of a DNS-1123 subdomain (names of pods and nodes).
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Pattern of a DNS-1123 label (names of containers).
const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// What to restore, into which pod, and with which CRIU choices. Immutable after creation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "podrestore.io",
    version = "v1alpha1",
    kind = "PodRestore",
    plural = "podrestores",
    singular = "podrestore",
    shortname = "pr",
    category = "podrestore-io",
    namespaced,
    status = "PodRestoreStatus",
    derive = "PartialEq",
    doc = "Restores a CRIU checkpoint into the namespaces of a running pod. The operator checks the request, asks the podrestore agent on the target pod's node to restore the checkpoint's process tree into the target container's namespaces, and reports the outcome in status. A PodRestore runs at most once: its spec cannot change, and a failed restore is not retried (create a new PodRestore instead). Deleting it stops the restored process tree if it still runs and removes the agent's temporary files.",
    printcolumn = r#"{"name": "Target", "type": "string", "description": "The pod the checkpoint is restored into", "jsonPath": ".spec.target.podName"}"#,
    printcolumn = r#"{"name": "Node", "type": "string", "description": "The node the restore runs on", "jsonPath": ".status.node"}"#,
    printcolumn = r#"{"name": "Restored", "type": "string", "description": "Whether the process tree was restored", "jsonPath": ".status.conditions[?(@.type==\"Restored\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "description": "Why the restore is where it is", "jsonPath": ".status.conditions[?(@.type==\"Restored\")].reason"}"#,
    printcolumn = r#"{"name": "PID", "type": "integer", "description": "PID of the restored process tree's root on the node", "jsonPath": ".status.restoredPID"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: delete this PodRestore and create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct PodRestoreSpec {
    /// Where the checkpoint comes from. Exactly one source must be set.
    pub checkpoint: CheckpointSource,

    /// The running pod whose namespaces receive the restored process tree. It must be in
    /// the PodRestore's own namespace.
    pub target: RestoreTarget,

    /// CRIU choices for the restore. Every field has a default; omit the whole block to take
    /// them all.
    #[serde(default)]
    pub options: RestoreOptions,
}

/// Where the checkpoint comes from. Exactly one source must be set.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("[has(self.archive), has(self.podCheckpoint)].filter(x, x).size() == 1").message("exactly one checkpoint source must be set (archive or podCheckpoint)"))]
#[serde(rename_all = "camelCase")]
pub struct CheckpointSource {
    /// A checkpoint archive on a node's disk, as written by the kubelet checkpoint API
    /// (`POST /checkpoint/{namespace}/{pod}/{container}`) or by `podrestore-agent
    /// checkpoint`. When it lies on another node than the target pod, the target node's
    /// agent pulls it from that node's agent over mutual TLS and restores it only if its
    /// sha256 matches what the source reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveSource>,

    /// A PodCheckpoint in the PodRestore's namespace. The restore waits until it is
    /// `Checkpointed`, then restores its archive from the node that holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_checkpoint: Option<PodCheckpointRef>,
}

/// A PodCheckpoint in the PodRestore's namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodCheckpointRef {
    /// Name of the PodCheckpoint.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub name: String,
}

/// A checkpoint archive on a node's disk.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSource {
    /// The node whose disk holds the archive.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub node_name: String,

    /// Absolute path of the archive on that node, for example
    /// `/var/lib/kubelet/checkpoints/checkpoint-counter_default-counter-2026-01-01T00:00:00Z.tar`.
    /// It must lie inside one of the checkpoint directories the node's agent serves (by
    /// default the kubelet's checkpoint directory); the agent resolves symbolic links before
    /// it checks.
    #[schemars(length(min = 2, max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("path must be absolute"))]
    #[x_kube(validation = Rule::new("!self.contains('/../') && !self.endsWith('/..')").message("path must not contain '..' segments"))]
    pub path: String,
}

/// The pod and container that receive the restored process tree.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// Name of a running pod in the PodRestore's namespace.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub pod_name: String,

    /// Name of the container in that pod whose namespaces receive the process tree. May be
    /// omitted when the pod has exactly one container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub container: Option<String>,
}

/// CRIU choices for the restore. They must match how the checkpoint was taken where CRIU
/// requires it (for example `tcpEstablished`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOptions {
    /// Restore established TCP connections (CRIU `--tcp-established`). Needed when the
    /// checkpoint holds connected TCP sockets; they only keep working if the target pod has
    /// the same addresses. Default: false.
    #[serde(default)]
    pub tcp_established: bool,

    /// Restore file locks (CRIU `--file-locks`). Default: false.
    #[serde(default)]
    pub file_locks: bool,

    /// The checkpointed process was a shell job attached to a terminal session (CRIU
    /// `--shell-job`). Default: false.
    #[serde(default)]
    pub shell_job: bool,

    /// Restore connections to UNIX sockets outside the checkpointed tree (CRIU
    /// `--ext-unix-sk`). Default: false.
    #[serde(default)]
    pub ext_unix_sk: bool,

    /// How CRIU treats the cgroups recorded in the checkpoint (CRIU
    /// `--manage-cgroups-mode`). `Soft` restores cgroup properties only where CRIU creates
    /// the cgroup, `Full` restores all properties, `Strict` fails on any mismatch, `Ignore`
    /// leaves cgroups alone and the tree stays in the cgroup it is restored into.
    /// Default: Soft (CRIU's own default).
    #[serde(default)]
    pub manage_cgroups_mode: ManageCgroupsMode,

    /// How CRIU keeps the network quiet while it restores sockets (CRIU `--network-lock`).
    /// `Iptables` and `Nftables` add temporary lock rules in the target's network namespace,
    /// which also hold the target pod's own traffic during the restore; `Skip` adds none and
    /// is only safe when the checkpoint has no live TCP connections. Default: Iptables
    /// (CRIU's own default).
    #[serde(default)]
    pub network_lock: NetworkLock,

    /// How long the agent lets the restore run before it gives up, in seconds (1 to 3600).
    /// Default: 300.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
}

/// Default of [`RestoreOptions::timeout_seconds`].
fn default_timeout_seconds() -> i32 {
    300
}

impl Default for RestoreOptions {
    fn default() -> Self {
        Self {
            tcp_established: false,
            file_locks: false,
            shell_job: false,
            ext_unix_sk: false,
            manage_cgroups_mode: ManageCgroupsMode::default(),
            network_lock: NetworkLock::default(),
            timeout_seconds: default_timeout_seconds(),
        }
    }
}

/// How CRIU treats the cgroups recorded in the checkpoint (CRIU `--manage-cgroups-mode`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ManageCgroupsMode {
    /// Restore cgroup properties only where CRIU creates the cgroup.
    #[default]
    Soft,
    /// Restore every cgroup property.
    Full,
    /// Fail when the cgroups differ from the checkpoint.
    Strict,
    /// Leave cgroups alone.
    Ignore,
}

/// How CRIU locks the network during the restore (CRIU `--network-lock`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetworkLock {
    /// Lock with iptables rules.
    #[default]
    Iptables,
    /// Lock with an nftables table.
    Nftables,
    /// Do not lock.
    Skip,
}

/// What the operator and the agent observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodRestoreStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Accepted`, `Restoring` and `Restored`. `kubectl wait --for=condition=Restored`
    /// waits for success; a `Restored` condition with status `False` and reason
    /// `RestoreFailed`, `NotAccepted` or `Interrupted` is final.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The node the restore runs on: the target pod's node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,

    /// Where the checkpoint was taken, as the archive records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<CheckpointOrigin>,

    /// The container runtime's ID of the target container (`<runtime>://<id>`).
    #[serde(
        default,
        rename = "targetContainerID",
        skip_serializing_if = "Option::is_none"
    )]
    pub target_container_id: Option<String>,

    /// PID, in the node's PID namespace, of the root of the restored process tree.
    #[serde(
        default,
        rename = "restoredPID",
        skip_serializing_if = "Option::is_none"
    )]
    pub restored_pid: Option<i64>,

    /// Digest and size of the archive the agent restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveDigest>,

    /// Version of the CRIU that restored the tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criu_version: Option<String>,

    /// When the operator asked the agent to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,

    /// When the restore ended, whether it succeeded or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,

    /// The chain from the checkpointed pod to the restored one, written when the restore
    /// succeeds: what was taken where and when, the archive's digest, and where it runs now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
}

/// The chain from a checkpointed pod to its restore.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// The PodCheckpoint the archive came from, when the PodRestore named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_checkpoint: Option<String>,
    /// Namespace of the checkpointed pod, as the archive records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_namespace: Option<String>,
    /// Name of the checkpointed pod, as the archive records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_pod: Option<String>,
    /// Name of the checkpointed container, as the archive records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_container: Option<String>,
    /// The node whose disk held the archive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_node: Option<String>,
    /// When the checkpoint was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_time: Option<Time>,
    /// Lower-case hex SHA-256 of the archive the agent restored from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_sha256: Option<String>,
    /// The pod the process tree was restored into.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_pod: Option<String>,
    /// The node the process tree runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_node: Option<String>,
    /// When the restore completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_time: Option<Time>,
    /// Version of the CRIU that restored the tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criu_version: Option<String>,
}

/// Where a checkpoint was taken, as its archive records it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointOrigin {
    /// Namespace of the checkpointed pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name of the checkpointed pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// Name of the checkpointed container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// When the checkpoint was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_time: Option<Time>,
}

/// Digest and size of a checkpoint archive.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveDigest {
    /// Lower-case hex SHA-256 of the archive file.
    pub sha256: String,
    /// Size of the archive file in bytes.
    pub size: i64,
}
