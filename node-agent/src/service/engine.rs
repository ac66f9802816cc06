//! The seam between the gRPC service and the code that restores.
//!
//! The service validates requests, keeps the at-most-once record per PodRestore UID and
//! streams progress; a [`RestoreEngine`] does the node work (read the archive, resolve the
//! target through the CRI, drive CRIU with runc's namespace rules, stop what it restored).
//! The service never calls [`RestoreEngine::restore`] twice for one UID.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use podrestore_proto::agent as pb;

/// The node work behind the agent's API.
///
/// Implementations run blocking work (CRIU, archive reads) off the async runtime
/// (`spawn_blocking`) and honour [`RestoreJob::options`]'s timeout themselves: the service
/// waits for [`RestoreEngine::restore`] to return, however long it takes, because only the
/// engine knows whether the restore can still complete.
#[async_trait::async_trait]
pub trait RestoreEngine: Send + Sync + 'static {
    /// The CRIU version restores run with, e.g. `4.2.1`.
    async fn criu_version(&self) -> Result<String, EngineError>;

    /// Reads where the checkpoint at `archive` (a canonical path inside a checkpoint
    /// directory) was taken, without extracting it.
    async fn inspect(&self, archive: &Path) -> Result<ArchiveInfo, EngineError>;

    /// Restores `job` and returns what it restored. Reports progress through `progress` as
    /// it goes. Temporary files belong in [`RestoreJob::work_dir`], which the service
    /// creates before and removes at cleanup.
    async fn restore(
        &self,
        job: RestoreJob,
        progress: ProgressReporter,
    ) -> Result<RestoreOutcome, EngineError>;

    /// Whether the tree restored for `uid` still runs. Implementations must make sure the
    /// PID still belongs to that tree (PIDs are reused), e.g. with the start time kept in
    /// [`RestoreOutcome::extra`].
    async fn is_running(&self, uid: &str, outcome: &RestoreOutcome) -> Result<bool, EngineError>;

    /// Stops the tree restored for `uid` if it still runs; returns whether something was
    /// stopped. `outcome` is `None` when the restore failed or its result was lost (the
    /// agent restarted in the middle): the engine then looks for anything it left behind for
    /// `uid` by itself.
    async fn stop(&self, uid: &str, outcome: Option<&RestoreOutcome>) -> Result<bool, EngineError>;

    /// Removes files the engine keeps outside [`RestoreJob::work_dir`] for `uid`; returns
    /// what it removed.
    async fn cleanup(&self, _uid: &str) -> Result<Vec<PathBuf>, EngineError> {
        Ok(Vec::new())
    }

    /// Called at startup for a restore that was running when the agent stopped. Returns the
    /// outcome if the engine can prove the restore completed (the tree runs), `None` if it
    /// cannot tell; the service then records the restore as interrupted and never runs it
    /// again.
    async fn recover(
        &self,
        _uid: &str,
        _work_dir: &Path,
    ) -> Result<Option<RestoreOutcome>, EngineError> {
        Ok(None)
    }
}

/// One validated restore, ready for the engine.
#[derive(Clone, Debug, PartialEq)]
pub struct RestoreJob {
    /// UID of the PodRestore; the key of everything the agent keeps for it.
    pub uid: String,
    /// Namespace of the PodRestore (equal to the target pod's namespace).
    pub namespace: String,
    /// Name of the PodRestore.
    pub name: String,
    /// Canonical path of the archive, inside one of the agent's checkpoint directories.
    pub archive: PathBuf,
    /// The container whose namespaces receive the tree.
    pub target: Target,
    /// CRIU choices.
    pub options: RestoreOptions,
    /// A fresh directory (mode 0700) for this restore's temporary files.
    pub work_dir: PathBuf,
}

/// The container whose namespaces receive the restored tree, as the operator saw it in the
/// API. The engine resolves it through the CRI and checks that it matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// `metadata.uid` of the pod.
    pub pod_uid: String,
    /// Namespace of the pod.
    pub pod_namespace: String,
    /// Name of the pod.
    pub pod_name: String,
    /// Name of the container in the pod.
    pub container_name: String,
    /// `<runtime>://<id>` from the pod status.
    pub container_id: String,
}

/// CRIU choices of a restore.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestoreOptions {
    /// CRIU `tcp_established`.
    pub tcp_established: bool,
    /// CRIU `file_locks`.
    pub file_locks: bool,
    /// CRIU `shell_job`.
    pub shell_job: bool,
    /// CRIU `ext_unix_sk`.
    pub ext_unix_sk: bool,
    /// CRIU `manage_cgroups_mode`.
    pub manage_cgroups_mode: ManageCgroupsMode,
    /// CRIU `network_lock`.
    pub network_lock: NetworkLock,
    /// How long the restore may take.
    pub timeout: Duration,
}

/// CRIU's cgroup handling on restore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ManageCgroupsMode {
    /// CRIU's default.
    #[default]
    Soft,
    /// Restore every property.
    Full,
    /// Fail on mismatch.
    Strict,
    /// Leave cgroups alone.
    Ignore,
}

/// CRIU's network lock method.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NetworkLock {
    /// CRIU's default.
    #[default]
    Iptables,
    /// An nftables table.
    Nftables,
    /// No lock (CRIU >= 3.19).
    Skip,
}

/// What a successful restore produced. Stored with the record and handed back to
/// [`RestoreEngine::is_running`] and [`RestoreEngine::stop`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreOutcome {
    /// `<runtime>://<id>` of the target container.
    pub container_id: String,
    /// PID of the restored tree's root in the node's PID namespace.
    pub pid: i64,
    /// Lower-case hex SHA-256 of the archive.
    pub archive_sha256: String,
    /// Archive size in bytes.
    pub archive_size: u64,
    /// CRIU version that restored.
    pub criu_version: String,
    /// Engine-private facts kept with the record (e.g. the root's start time).
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// Where a checkpoint was taken, as the archive records it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArchiveInfo {
    /// Namespace of the checkpointed pod.
    pub pod_namespace: String,
    /// Name of the checkpointed pod.
    pub pod_name: String,
    /// Name of the checkpointed container.
    pub container_name: String,
    /// When the checkpoint was taken, if recorded.
    pub checkpointed_at: Option<SystemTime>,
    /// Archive size in bytes.
    pub size: u64,
    /// SHA-256 of the archive file, lower-case hex (empty when not computed).
    pub sha256: String,
    /// Version of the CRIU that wrote the checkpoint, if recorded.
    pub criu_version: Option<String>,
}

/// A failure of the engine. Its kind becomes the stable reason users see.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    /// What class of failure this is.
    pub kind: EngineErrorKind,
    /// What went wrong, for a user.
    pub message: String,
    /// The tail of CRIU's log, when CRIU ran.
    pub log_excerpt: Option<String>,
}

impl EngineError {
    /// An error without a log excerpt.
    pub fn new(kind: EngineErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            log_excerpt: None,
        }
    }

    /// Attaches the tail of CRIU's log.
    pub fn with_log(mut self, excerpt: impl Into<String>) -> Self {
        self.log_excerpt = Some(excerpt.into());
        self
    }
}

/// Classes of engine failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineErrorKind {
    /// The archive does not exist.
    ArchiveNotFound,
    /// The archive is not a checkpoint archive the agent can restore.
    ArchiveInvalid,
    /// The target container was not found through the CRI, or differs from the request.
    TargetMismatch,
    /// CRIU refused or failed.
    CriuFailed,
    /// The restore did not finish within its timeout.
    Timeout,
    /// The node cannot do this (CRIU missing or too old, no restore engine).
    Unsupported,
    /// The checkpoint needs an option the request did not set (established
    /// TCP connections without `tcpEstablished`).
    OptionRequired,
    /// Anything else.
    Internal,
}

impl EngineErrorKind {
    /// The stable CamelCase reason reported to the operator.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ArchiveNotFound => "ArchiveNotFound",
            Self::ArchiveInvalid => "ArchiveInvalid",
            Self::TargetMismatch => "TargetMismatch",
            Self::CriuFailed => "CriuFailed",
            Self::Timeout => "Timeout",
            Self::Unsupported => "Unsupported",
            Self::OptionRequired => "OptionRequired",
            Self::Internal => "Internal",
        }
    }

    /// The gRPC code for calls that answer directly (Inspect, Status, Cleanup).
    pub fn code(self) -> tonic::Code {
        match self {
            Self::ArchiveNotFound => tonic::Code::NotFound,
            Self::ArchiveInvalid => tonic::Code::InvalidArgument,
            Self::TargetMismatch => tonic::Code::FailedPrecondition,
            Self::CriuFailed | Self::Internal => tonic::Code::Internal,
            Self::Timeout => tonic::Code::DeadlineExceeded,
            Self::Unsupported => tonic::Code::Unimplemented,
            Self::OptionRequired => tonic::Code::FailedPrecondition,
        }
    }
}

/// Steps an engine reports while it restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Moving the archive to this node.
    Transferring,
    /// Unpacking and preparing the target's namespaces.
    Preparing,
    /// CRIU restores.
    Restoring,
}

impl From<Phase> for pb::Phase {
    fn from(phase: Phase) -> Self {
        match phase {
            Phase::Transferring => pb::Phase::Transferring,
            Phase::Preparing => pb::Phase::Preparing,
            Phase::Restoring => pb::Phase::Restoring,
        }
    }
}

/// Hands progress of one restore to every caller watching it. Reporting never blocks and
/// never fails: with nobody watching, reports are dropped.
#[derive(Clone, Debug)]
pub struct ProgressReporter {
    events: broadcast::Sender<pb::RestoreEvent>,
}

impl ProgressReporter {
    pub(crate) fn new(events: broadcast::Sender<pb::RestoreEvent>) -> Self {
        Self { events }
    }

    /// Reports that the restore entered `phase`.
    pub fn phase(&self, phase: Phase, message: impl Into<String>) {
        self.send(phase, message.into(), 0, 0);
    }

    /// Reports transfer progress in bytes (`total` 0 when unknown).
    pub fn transferred(&self, done: u64, total: u64) {
        self.send(Phase::Transferring, String::new(), done, total);
    }

    fn send(&self, phase: Phase, message: String, bytes_done: u64, bytes_total: u64) {
        let progress = pb::Progress {
            phase: pb::Phase::from(phase).into(),
            message,
            bytes_done,
            bytes_total,
            time: Some(SystemTime::now().into()),
        };
        // An error only means nobody listens right now.
        let _ = self.events.send(pb::RestoreEvent {
            event: Some(pb::restore_event::Event::Progress(progress)),
        });
    }
}

/// The engine `serve` runs with until a node restore engine is plugged in: every call
/// fails with [`EngineErrorKind::Unsupported`], so requests are refused, never faked.
#[derive(Debug, Default)]
pub struct UnavailableEngine;

impl UnavailableEngine {
    fn error() -> EngineError {
        EngineError::new(
            EngineErrorKind::Unsupported,
            "this agent build has no restore engine",
        )
    }
}

#[async_trait::async_trait]
impl RestoreEngine for UnavailableEngine {
    async fn criu_version(&self) -> Result<String, EngineError> {
        Err(Self::error())
    }
    async fn inspect(&self, _archive: &Path) -> Result<ArchiveInfo, EngineError> {
        Err(Self::error())
    }
    async fn restore(
        &self,
        _job: RestoreJob,
        _progress: ProgressReporter,
    ) -> Result<RestoreOutcome, EngineError> {
        Err(Self::error())
    }
    async fn is_running(&self, _uid: &str, _outcome: &RestoreOutcome) -> Result<bool, EngineError> {
        Ok(false)
    }
    async fn stop(
        &self,
        _uid: &str,
        _outcome: Option<&RestoreOutcome>,
    ) -> Result<bool, EngineError> {
        Ok(false)
    }
}
