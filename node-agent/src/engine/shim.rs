//! The restore shim: the process that runs one restore inside the target
//! container's PID namespace and then stays as the restored tree's parent.
//!
//! Why a process of its own: where the target's PID namespace is not external
//! to the checkpoint (an ordinary pod), CRIU creates a new PID namespace for
//! the tree, as a child of its own, so CRIU has to be a member of the target's
//! PID namespace (with an external one, from a pod sharing its process
//! namespace, CRIU enters that namespace itself and the shim stays in the
//! agent's); and CRIU reads `/proc` for the processes it
//! creates, so the `/proc` it sees must be the one of that namespace, or it
//! looks up its own helpers under the wrong PIDs (`vdso: Can't find rt vDSO`).
//! It also resolves `images_dir_fd` through `/proc/<peer>/fd`, where the peer
//! (the process holding the RPC socket) must be visible. The agent itself
//! stays where it is; the shim is born in the target's PID namespace (the
//! agent sets `pid_for_children` on one thread and spawns it from there),
//! gives itself a private mount namespace with a fresh `/proc`, moves itself
//! into the target container's cgroups (runc's `criuApplyCgroups`), and runs
//! the agent's restore ([`crate::restore::restore`]) from there.
//!
//! Namespace paths the runtime gives (`/proc/<sandbox>/ns/ipc`) name host
//! PIDs, which the new `/proc` does not show; the shim opens them first and
//! hands them on as `/proc/<shim>/fd/<n>`.
//!
//! Protocol with the engine: the request is a JSON file the engine writes
//! before it starts the shim (so an agent that dies right after the start
//! still leaves the shim its whole request); the reply is written to the
//! outcome file (atomically) and then as one JSON line on stdout. A restored
//! tree's root is the shim's child (CRIU's `rst_sibling`): the shim waits for
//! it, reaps it, and exits with its status, as `runc restore` does in the
//! foreground. The shim is a child subreaper, so orphans of CRIU's helpers and
//! of the tree come to it rather than to the target's init (often a program
//! that never reaps); it reaps them, and after a failed restore it reaps
//! everything CRIU left before it replies. The agent may die meanwhile; the
//! outcome file lets the next agent process find what was restored.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::archive::Limits;
use crate::criu::Criu;
use crate::criu::options::{CriuFlags, NetworkLock};
use crate::namespaces::{Namespace, NamespaceType};
use crate::restore::{self, CheckpointSource, RestoreError, RestoreRequest};
use crate::service::EngineErrorKind;
use crate::sys::mount;
use crate::sys::process::{Ended, become_subreaper, reap_children, wait_child_reaping};

/// The agent subcommand that runs a shim.
pub const SUBCOMMAND: &str = "restore-shim";
/// The shim's flag naming the PodRestore UID (also how the engine finds the
/// shim of a restore again).
pub const UID_FLAG: &str = "--uid";
/// The shim's flag naming its request file.
pub const REQUEST_FLAG: &str = "--request";
/// The request file's name in the restore's work directory.
pub const REQUEST_FILE: &str = "shim-request.json";
/// The outcome file's name in the restore's work directory.
pub const OUTCOME_FILE: &str = "shim-outcome.json";
/// The shim's log file's name in the restore's work directory.
pub const LOG_FILE: &str = "shim.log";

/// One namespace of the target, as the runtime lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceSpec {
    /// The OCI type (`network`, `pid`, ...).
    pub kind: String,
    /// The namespace to use, a path in the agent's view; none: a new one.
    pub path: Option<PathBuf>,
}

/// What the shim restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ShimRequest {
    /// The target container's ID, echoed in the reply.
    pub container_id: String,
    /// The checkpoint archive.
    pub archive: PathBuf,
    /// The target's namespaces in the runtime's order (runc's rules apply).
    pub namespaces: Vec<NamespaceSpec>,
    /// The target container's root file system, a path in the agent's mount
    /// namespace.
    pub root: PathBuf,
    /// CRIU's external mounts: (key in the checkpoint, source on this node).
    pub ext_mounts: Vec<(String, String)>,
    /// CRIU's cgroup root: the target container's cgroup.
    pub cgroup_root: Option<String>,
    /// The target container's `cgroup.procs` files the shim joins first.
    pub join_cgroups: Vec<PathBuf>,
    /// runc's switches.
    pub tcp_established: bool,
    /// runc's switches.
    pub ext_unix_sk: bool,
    /// runc's switches.
    pub shell_job: bool,
    /// runc's switches.
    pub file_locks: bool,
    /// `soft`, `full`, `strict` or `ignore`.
    pub manage_cgroups_mode: String,
    /// `iptables`, `nftables` or `skip`; none: the agent's choice.
    pub network_lock: Option<String>,
    /// Where the restore's private directory is created.
    pub work_root: PathBuf,
    /// The CRIU binary.
    pub criu: PathBuf,
    /// Where the reply is written too.
    pub outcome_file: PathBuf,
    /// The target container's open files (`/proc/<pid>/fd` in the agent's
    /// view): the restored tree writes to the target's own stdout and stderr,
    /// so its output lands in the target container's log, as a runtime wires
    /// a restored container to the container's IO. Absent: `/dev/null`.
    #[serde(default)]
    pub output_of: Option<PathBuf>,
}

/// What the shim answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "result",
    rename_all = "camelCase",
    rename_all_fields = "camelCase"
)]
pub enum ShimReply {
    /// The tree runs; its root is the shim's child.
    Restored {
        /// The target container's ID.
        container_id: String,
        /// The root's PID in the target container's PID namespace.
        pid: i32,
        /// The CRIU version.
        criu_version: String,
        /// SHA-256 of the archive.
        archive_sha256: String,
        /// Size of the archive.
        archive_size: u64,
        /// What did not fail the restore.
        warnings: Vec<String>,
    },
    /// Nothing was restored.
    Failed {
        /// [`EngineErrorKind::reason`] of the failure.
        reason: String,
        /// What went wrong.
        message: String,
        /// CRIU's log lines around its errors.
        log_excerpt: Option<String>,
    },
}

impl ShimReply {
    fn failed(kind: EngineErrorKind, message: impl Into<String>) -> Self {
        Self::Failed {
            reason: kind.reason().to_owned(),
            message: message.into(),
            log_excerpt: None,
        }
    }
}

/// The error kind named by [`EngineErrorKind::reason`].
pub fn kind_of(reason: &str) -> EngineErrorKind {
    [
        EngineErrorKind::ArchiveNotFound,
        EngineErrorKind::ArchiveInvalid,
        EngineErrorKind::TargetMismatch,
        EngineErrorKind::CriuFailed,
        EngineErrorKind::Timeout,
        EngineErrorKind::Unsupported,
    ]
    .into_iter()
    .find(|k| k.reason() == reason)
    .unwrap_or(EngineErrorKind::Internal)
}

/// Writes `request` to `path` (mode 0600), then starts the shim
/// (`binary restore-shim --uid <uid> --request <path>`) as a member of the PID
/// namespace `pid_ns` (the agent's own when `None`). Its stderr goes to `log`.
pub fn spawn(
    binary: &Path,
    uid: &str,
    pid_ns: Option<&File>,
    request: &ShimRequest,
    path: &Path,
    log: File,
) -> io::Result<Child> {
    let json = serde_json::to_vec(request).map_err(io::Error::other)?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(&json)?;
    file.sync_all()?;
    drop(file);
    let mut command = Command::new(binary);
    command
        .arg(SUBCOMMAND)
        .arg(UID_FLAG)
        .arg(uid)
        .arg(REQUEST_FLAG)
        .arg(path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log));
    // setns(CLONE_NEWPID) only decides where the calling thread's future
    // children are born; a thread of its own does it, so no other thread of
    // the agent is affected, and the thread ends right after.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                if let Some(ns) = pid_ns {
                    mount::setns(ns, libc::CLONE_NEWPID)?;
                }
                command.spawn()
            })
            .join()
            .map_err(|_| io::Error::other("the thread starting the shim panicked"))?
    })
}

/// Reads the shim's one-line reply from its stdout (`None`: it ended without
/// one).
pub fn read_reply(child: &mut Child) -> io::Result<Option<ShimReply>> {
    let Some(stdout) = child.stdout.take() else {
        return Ok(None);
    };
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim().is_empty() {
        return Ok(None);
    }
    serde_json::from_str(&line)
        .map(Some)
        .map_err(io::Error::other)
}

/// Reads an outcome file the shim wrote.
pub fn read_outcome(path: &Path) -> io::Result<Option<ShimReply>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(io::Error::other),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// How long a shim waits for the processes of a failed restore (CRIU has
/// killed them) to end.
const FAILED_RESTORE_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// The shim's whole life: reads the request from the file `request`,
/// restores, replies on `output`, then waits for the restored tree. Returns
/// the process exit status.
pub fn run(request: &Path, mut output: impl Write) -> i32 {
    let parsed = fs::read(request)
        .map_err(|e| e.to_string())
        .and_then(|bytes| serde_json::from_slice::<ShimRequest>(&bytes).map_err(|e| e.to_string()));
    let request = match parsed {
        Ok(r) => r,
        Err(e) => {
            let reply =
                ShimReply::failed(EngineErrorKind::Internal, format!("bad shim request: {e}"));
            send(&reply, None, &mut output);
            return 1;
        }
    };
    // CRIU's helpers and a tree it killed on failure end up here, not with
    // the target's init, which may never reap them (a container whose first
    // process is a plain program).
    if let Err(e) = become_subreaper() {
        tracing::warn!("cannot become a child subreaper: {e}");
    }
    let reply = match restore_here(&request) {
        Ok(reply) => reply,
        Err(reply) => reply,
    };
    let ShimReply::Restored { pid, .. } = reply else {
        // Nothing of a failed restore may stay in the target: reaped before
        // the reply, so whoever reads it finds the pod as it was.
        match reap_children(FAILED_RESTORE_PATIENCE) {
            Ok((_, 0)) => {}
            Ok((_, running)) => {
                tracing::warn!(running, "processes of the failed restore still run")
            }
            Err(e) => tracing::warn!("cannot reap the failed restore's processes: {e}"),
        }
        send(&reply, Some(&request.outcome_file), &mut output);
        return 1;
    };
    send(&reply, Some(&request.outcome_file), &mut output);
    tracing::info!(pid, "restored; waiting for the tree to end");
    match wait_child_reaping(pid) {
        Ok(Ended::Exited(code)) => {
            tracing::info!(pid, code, "the restored tree exited");
            code
        }
        Ok(Ended::Signaled(signal)) => {
            tracing::info!(pid, signal, "the restored tree was killed");
            128 + signal
        }
        Err(e) => {
            tracing::warn!(pid, "cannot wait for the restored tree: {e}");
            1
        }
    }
}

/// Writes the reply to the outcome file, then to `output`. Neither may fail
/// the shim: the agent that reads its stdout may be gone.
fn send(reply: &ShimReply, outcome_file: Option<&Path>, output: &mut impl Write) {
    let Ok(json) = serde_json::to_string(reply) else {
        return;
    };
    if let Some(path) = outcome_file {
        let temporary = path.with_extension("tmp");
        let written =
            fs::write(&temporary, json.as_bytes()).and_then(|()| fs::rename(&temporary, path));
        if let Err(e) = written {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }
    if let Err(e) = writeln!(output, "{json}").and_then(|()| output.flush()) {
        tracing::warn!("cannot send the reply to the agent: {e}");
    }
}

/// The target's open file `fd` (1 or 2) from its fd directory `fds`, opened
/// anew for appending (a pipe for a runtime's container; a regular file is
/// never written over); `None` (the tree gets `/dev/null`) when it cannot be.
fn target_output(fds: &Path, fd: u8) -> Option<OwnedFd> {
    let path = fds.join(fd.to_string());
    match fs::OpenOptions::new().append(true).open(&path) {
        Ok(file) => Some(OwnedFd::from(file)),
        Err(e) => {
            tracing::warn!(
                "the restored tree's fd {fd} is /dev/null: cannot open {}: {e}",
                path.display()
            );
            None
        }
    }
}

/// Restores from inside the target's PID namespace (see the module
/// documentation for each step).
fn restore_here(request: &ShimRequest) -> Result<ShimReply, ShimReply> {
    let internal = |what: &str, e: io::Error| {
        ShimReply::failed(EngineErrorKind::Internal, format!("{what}: {e}"))
    };
    mount::unshare_mount_namespace()
        .map_err(|e| internal("cannot create a private mount namespace", e))?;
    // Opened while /proc still shows the node's PIDs.
    let mut held: Vec<OwnedFd> = Vec::new();
    let mut opened = Vec::new();
    for spec in &request.namespaces {
        let kind = NamespaceType::from_oci(&spec.kind).ok_or_else(|| {
            ShimReply::failed(
                EngineErrorKind::Unsupported,
                format!("unknown namespace type {:?}", spec.kind),
            )
        })?;
        let fd = match &spec.path {
            Some(path) => {
                let file = File::open(path).map_err(|e| {
                    ShimReply::failed(
                        EngineErrorKind::TargetMismatch,
                        format!(
                            "cannot open the target's {} namespace {}: {e}",
                            spec.kind,
                            path.display()
                        ),
                    )
                })?;
                let fd = OwnedFd::from(file);
                let raw = fd.as_raw_fd();
                held.push(fd);
                Some(raw)
            }
            None => None,
        };
        opened.push((kind, fd));
    }
    let mut output = request.output_of.as_deref().map_or([None, None], |fds| {
        [target_output(fds, 1), target_output(fds, 2)]
    });
    mount::mount_proc(Path::new("/proc"))
        .map_err(|e| internal("cannot mount /proc for the target's PID namespace", e))?;
    let me = std::process::id();
    let namespaces: Vec<Namespace> = opened
        .into_iter()
        .map(|(kind, fd)| Namespace::new(kind, fd.map(|fd| format!("/proc/{me}/fd/{fd}"))))
        .collect();
    for procs in &request.join_cgroups {
        fs::write(procs, b"0").map_err(|e| {
            internal(
                &format!("cannot join the target's cgroup {}", procs.display()),
                e,
            )
        })?;
    }
    let network_lock = request
        .network_lock
        .as_deref()
        .map(str::parse::<NetworkLock>)
        .transpose()
        .map_err(|e| ShimReply::failed(EngineErrorKind::Unsupported, e.to_string()))?;
    let outcome = restore::restore(RestoreRequest {
        source: CheckpointSource::Archive(request.archive.clone()),
        namespaces,
        root: Some(request.root.clone()),
        flags: CriuFlags {
            tcp_established: request.tcp_established,
            ext_unix_sk: request.ext_unix_sk,
            shell_job: request.shell_job,
            file_locks: request.file_locks,
            ..CriuFlags::default()
        },
        manage_cgroups_mode: request.manage_cgroups_mode.clone(),
        network_lock,
        cgroup_root: request.cgroup_root.clone(),
        ext_mounts: request.ext_mounts.clone(),
        work_root: request.work_root.clone(),
        limits: Limits::default(),
        criu: Criu::new(&request.criu),
        stdio: [None, output[0].take(), output[1].take()],
        ..RestoreRequest::default()
    })
    .map_err(|e| failure(&e))?;
    drop(held);
    let digest = outcome.archive.unwrap_or(crate::archive::ArchiveDigest {
        sha256: String::new(),
        size: 0,
    });
    Ok(ShimReply::Restored {
        container_id: request.container_id.clone(),
        pid: outcome.pid,
        criu_version: outcome.criu_version,
        archive_sha256: digest.sha256,
        archive_size: digest.size,
        warnings: outcome.warnings,
    })
}

/// The reply for a failed restore; the kind follows the original error.
fn failure(error: &RestoreError) -> ShimReply {
    let kind = match error.original() {
        RestoreError::Version(_) | RestoreError::Plan(_) => EngineErrorKind::Unsupported,
        RestoreError::ArchiveMissing { .. } => EngineErrorKind::ArchiveNotFound,
        RestoreError::Archive(_) | RestoreError::Checkpoint(_) => EngineErrorKind::ArchiveInvalid,
        RestoreError::Criu(_) => EngineErrorKind::CriuFailed,
        RestoreError::Cancelled => EngineErrorKind::Timeout,
        RestoreError::WorkDir(_) | RestoreError::Io { .. } | RestoreError::WithCleanup { .. } => {
            EngineErrorKind::Internal
        }
    };
    let (message, log_excerpt) = match error.original() {
        RestoreError::Criu(crate::criu::CriuError::WithLog { error: inner, log }) => (
            inner.to_string(),
            Some(log.trim_start_matches('\n').to_owned()),
        ),
        _ => (error.to_string(), None),
    };
    ShimReply::Failed {
        reason: kind.reason().to_owned(),
        message,
        log_excerpt,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn replies_round_trip_as_one_line() {
        let reply = ShimReply::Restored {
            container_id: "c1".into(),
            pid: 53,
            criu_version: "4.2.1".into(),
            archive_sha256: "ab".into(),
            archive_size: 7,
            warnings: vec![],
        };
        let json = serde_json::to_string(&reply).unwrap();
        assert!(!json.contains('\n'));
        assert!(json.contains(r#""result":"restored""#), "{json}");
        assert!(json.contains(r#""containerId":"c1""#), "{json}");
        assert_eq!(serde_json::from_str::<ShimReply>(&json).unwrap(), reply);
    }

    #[test]
    fn reasons_map_back_to_kinds() {
        for kind in [
            EngineErrorKind::ArchiveNotFound,
            EngineErrorKind::CriuFailed,
            EngineErrorKind::Timeout,
            EngineErrorKind::Internal,
        ] {
            assert_eq!(kind_of(kind.reason()), kind);
        }
        assert_eq!(kind_of("Whatever"), EngineErrorKind::Internal);
    }

    #[test]
    fn a_bad_request_fails_without_restoring() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REQUEST_FILE);
        fs::write(&path, b"{not json").unwrap();
        let mut out = Vec::new();
        assert_eq!(run(&path, &mut out), 1);
        let reply: ShimReply = serde_json::from_slice(&out).unwrap();
        assert!(
            matches!(reply, ShimReply::Failed { ref reason, .. } if reason == "Internal"),
            "{reply:?}"
        );
    }

    #[test]
    fn outcome_files_are_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OUTCOME_FILE);
        assert_eq!(read_outcome(&path).unwrap(), None);
        let reply = ShimReply::failed(EngineErrorKind::CriuFailed, "criu failed");
        let mut out = Vec::new();
        send(&reply, Some(&path), &mut out);
        assert_eq!(serde_json::from_slice::<ShimReply>(&out).unwrap(), reply);
        assert_eq!(read_outcome(&path).unwrap(), Some(reply));
    }
}
