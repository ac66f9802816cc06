//! `podrestore.io/v1alpha1`: the `PodCheckpoint` resource, a checkpoint of one container
//! of a running pod, taken once through the kubelet checkpoint API.
//!
//! Doc comments on the types and fields below become the descriptions that
//! `kubectl explain podcheckpoint` prints, so they are written for users.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Pattern of a DNS-1123 subdomain (names of pods).
const DNS_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
/// Pattern of a DNS-1123 label (names of containers).
const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// Which container to checkpoint. Immutable after creation.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "podrestore.io",
    version = "v1alpha1",
    kind = "PodCheckpoint",
    plural = "podcheckpoints",
    singular = "podcheckpoint",
    shortname = "pcp",
    category = "podrestore-io",
    namespaced,
    status = "PodCheckpointStatus",
    derive = "PartialEq",
    doc = "A checkpoint of one container of a running pod in the same namespace. The operator asks the pod's kubelet to checkpoint the container (kubelet checkpoint API), records where the archive lies and its SHA-256 in status, and never checkpoints again: the spec cannot change, and a failed checkpoint is not retried (create a new PodCheckpoint instead). A PodRestore names it in spec.checkpoint.podCheckpoint to restore the archive. The pod keeps running; the checkpoint does not stop it.",
    printcolumn = r#"{"name": "Pod", "type": "string", "description": "The checkpointed pod", "jsonPath": ".spec.podName"}"#,
    printcolumn = r#"{"name": "Node", "type": "string", "description": "The node that holds the archive", "jsonPath": ".status.nodeName"}"#,
    printcolumn = r#"{"name": "Checkpointed", "type": "string", "description": "Whether the archive was written", "jsonPath": ".status.conditions[?(@.type==\"Checkpointed\")].status"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "description": "Why the checkpoint is where it is", "jsonPath": ".status.conditions[?(@.type==\"Checkpointed\")].reason"}"#,
    printcolumn = r#"{"name": "Size", "type": "integer", "description": "Size of the archive in bytes", "jsonPath": ".status.size"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("self == oldSelf").message("spec is immutable: delete this PodCheckpoint and create a new one"))]
#[serde(rename_all = "camelCase")]
pub struct PodCheckpointSpec {
    /// Name of a running pod in the PodCheckpoint's namespace.
    #[schemars(length(min = 1, max = 253), pattern(DNS_SUBDOMAIN))]
    pub pod_name: String,

    /// Name of the container to checkpoint. May be omitted when the pod has exactly one
    /// container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63), pattern(DNS_LABEL))]
    pub container: Option<String>,

    /// How long the kubelet may take to checkpoint, in seconds (1 to 3600). Default: 60.
    #[serde(default = "default_timeout_seconds")]
    #[schemars(range(min = 1, max = 3600))]
    pub timeout_seconds: i32,
}

/// Default of [`PodCheckpointSpec::timeout_seconds`].
fn default_timeout_seconds() -> i32 {
    60
}

/// What the operator observed and did.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PodCheckpointStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Checkpointed`. `kubectl wait --for=condition=Checkpointed` waits for the archive;
    /// a `Checkpointed` condition with status `False` and reason `CheckpointFailed` is
    /// final.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The node whose disk holds the archive: the pod's node when it was checkpointed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,

    /// Absolute path of the archive on that node, as the kubelet reported it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_path: Option<String>,

    /// Lower-case hex SHA-256 of the archive file, as the node's agent read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,

    /// Size of the archive file in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,

    /// When the checkpoint was taken (the archive's record, else when the kubelet answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_time: Option<Time>,

    /// The pod that was checkpointed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<CheckpointedPod>,

    /// The container that was checkpointed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,

    /// Version of the CRIU that wrote the checkpoint, when the archive records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub criu_version: Option<String>,
}

/// The pod a checkpoint was taken from.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointedPod {
    /// Name of the pod.
    pub name: String,
    /// Namespace of the pod.
    pub namespace: String,
    /// UID of the pod, which tells this pod from a later one of the same name.
    pub uid: String,
}

/// Condition types and reasons of `PodCheckpoint.status.conditions`: part of the API, each
/// a stable CamelCase constant.
pub mod condition {
    /// The one condition type: whether the archive was written.
    pub const CHECKPOINTED: &str = "Checkpointed";

    /// Condition reasons.
    pub mod reason {
        /// The operator has not acted yet.
        pub const PENDING: &str = "Pending";
        /// No pod named `spec.podName` exists in the namespace; the operator retries.
        pub const POD_NOT_FOUND: &str = "PodNotFound";
        /// The pod is not `Running` on a node yet; the operator retries.
        pub const POD_NOT_RUNNING: &str = "PodNotRunning";
        /// The pod has no container named `spec.container`.
        pub const CONTAINER_NOT_FOUND: &str = "ContainerNotFound";
        /// `spec.container` is empty and the pod has more than one container.
        pub const CONTAINER_AMBIGUOUS: &str = "ContainerAmbiguous";
        /// The kubelet is being asked to checkpoint.
        pub const CHECKPOINTING: &str = "Checkpointing";
        /// The archive is written; the node's agent could not yet read its digest and the
        /// operator retries.
        pub const AGENT_UNAVAILABLE: &str = "AgentUnavailable";
        /// The archive is written and its digest recorded.
        pub const CHECKPOINT_SUCCEEDED: &str = "CheckpointSucceeded";
        /// The kubelet refused or failed; the message carries its answer. Final.
        pub const CHECKPOINT_FAILED: &str = "CheckpointFailed";
    }
}
