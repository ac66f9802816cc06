//! Condition types and reasons of `PodRestore.status.conditions`.
//!
//! They are part of the API: users script against them (`kubectl wait
//! --for=condition=Restored`, alerting on a reason), so each value is a stable CamelCase
//! constant that never changes meaning once released.

/// Condition types.
pub mod kind {
    /// Whether the operator accepted the request: the target pod and container exist and run,
    /// the checkpoint is reachable from the target node and its source namespace is allowed.
    pub const ACCEPTED: &str = "Accepted";
    /// Whether a restore is running now; its reason names the step.
    pub const RESTORING: &str = "Restoring";
    /// Whether the checkpoint was restored into the target; `True` is final.
    pub const RESTORED: &str = "Restored";
}

/// Condition reasons. Each names what happened so that a user can act on it.
pub mod reason {
    // Accepted
    /// The operator has not looked at the request yet.
    pub const PENDING: &str = "Pending";
    /// Every check passed.
    pub const VALIDATED: &str = "Validated";
    /// No pod named `spec.target.podName` exists in the PodRestore's namespace.
    pub const TARGET_POD_NOT_FOUND: &str = "TargetPodNotFound";
    /// The target pod exists but is not `Running` (or not yet scheduled on a node).
    pub const TARGET_POD_NOT_RUNNING: &str = "TargetPodNotRunning";
    /// The target pod has no container named `spec.target.container`.
    pub const TARGET_CONTAINER_NOT_FOUND: &str = "TargetContainerNotFound";
    /// `spec.target.container` is empty and the target pod has more than one container.
    pub const TARGET_CONTAINER_AMBIGUOUS: &str = "TargetContainerAmbiguous";
    /// The target container has not started yet, so it has no namespaces to restore into.
    pub const TARGET_CONTAINER_NOT_RUNNING: &str = "TargetContainerNotRunning";
    /// `spec.checkpoint.archive.nodeName` names a node the cluster does not have.
    pub const ARCHIVE_NODE_NOT_FOUND: &str = "ArchiveNodeNotFound";
    /// The checkpoint was taken in another namespace that the operator's configuration does
    /// not allow as a source for this namespace.
    pub const SOURCE_NAMESPACE_NOT_ALLOWED: &str = "SourceNamespaceNotAllowed";
    /// The agent found no archive at `spec.checkpoint.archive.path`.
    pub const ARCHIVE_NOT_FOUND: &str = "ArchiveNotFound";
    /// The agent refused the archive: outside the checkpoint directories it serves, or not a
    /// checkpoint archive it can read.
    pub const ARCHIVE_REJECTED: &str = "ArchiveRejected";
    /// The agent on the node could not be reached; the operator retries.
    pub const AGENT_UNAVAILABLE: &str = "AgentUnavailable";
    /// No PodCheckpoint named `spec.checkpoint.podCheckpoint.name` exists in the
    /// PodRestore's namespace; the operator looks again.
    pub const CHECKPOINT_NOT_FOUND: &str = "CheckpointNotFound";
    /// The named PodCheckpoint is not `Checkpointed` yet (the restore waits), or it failed.
    pub const CHECKPOINT_NOT_READY: &str = "CheckpointNotReady";

    // Restoring
    /// The operator asked the agent to restore and waits for its first report.
    pub const STARTED: &str = "Started";
    /// The agent moves the archive to the target node.
    pub const TRANSFERRING: &str = "Transferring";
    /// The agent unpacks the archive and prepares the target's namespaces.
    pub const PREPARING: &str = "Preparing";
    /// CRIU restores the process tree.
    pub const RESTORING: &str = "Restoring";
    /// The restore ended (see the `Restored` condition for how).
    pub const FINISHED: &str = "Finished";
    /// No restore runs because the request was not accepted.
    pub const NOT_STARTED: &str = "NotStarted";

    // Restored
    /// The process tree runs in the target's namespaces.
    pub const RESTORE_SUCCEEDED: &str = "RestoreSucceeded";
    /// The request was refused; see the `Accepted` condition.
    pub const NOT_ACCEPTED: &str = "NotAccepted";
    /// The restore runs; see the `Restoring` condition.
    pub const IN_PROGRESS: &str = "InProgress";
    /// The agent tried and failed; the message carries the agent's reason and CRIU's log
    /// excerpt. A PodRestore is never retried: create a new one.
    pub const RESTORE_FAILED: &str = "RestoreFailed";
    /// The agent restarted while the restore ran and could not tell whether it completed;
    /// the agent does not run it again.
    pub const INTERRUPTED: &str = "Interrupted";
    /// The archive pulled from another node did not match the sha256 its node's agent
    /// reported; nothing was restored.
    pub const ARCHIVE_DIGEST_MISMATCH: &str = "ArchiveDigestMismatch";
    /// The archive could not be pulled from its node's agent (unreachable, or it stopped in
    /// the middle every attempt); nothing was restored.
    pub const ARCHIVE_TRANSFER_FAILED: &str = "ArchiveTransferFailed";
}
