//! The node restore engine: restores a checkpoint archive into a running
//! container of a pod, so that the restored processes belong to that pod as if
//! the runtime had started them there.
//!
//! How a restore goes ([`NodeEngine::restore`]):
//! 1. The target container is found through the container runtime (CRI,
//!    [`crate::runtime`]): its init's host PID, root file system, mounts,
//!    namespace list (in the runtime's order) and cgroups.
//! 2. The archive is read once ([`crate::archive::summary`]) for its mounts and
//!    refused by the archive policy before anything else happens.
//! 3. The restore is planned from the target alone, never from paths in the
//!    archive:
//!    - **Namespaces**: the runtime's list goes to runc's rules unchanged: an
//!      ordinary pod's network namespace (the sandbox's) is external
//!      (`inherit_fd extRootNetNS`), ipc and uts are joined, and with
//!      `shareProcessNamespace` the sandbox's PID namespace is external.
//!    - **PID namespace when it is not external**: CRIU creates a new one for
//!      the tree (the checkpointed container's init is PID 1 there). It is
//!      created as a child of the PID namespace CRIU runs in, so CRIU runs in
//!      the target container's: the restored tree is then inside the pod's
//!      process tree (`kubectl exec <target> -- ps` shows it) and ends when the
//!      target's PID namespace ends (deleting the pod kills its init, and the
//!      kernel kills every process of that namespace and of the namespaces
//!      below it). See [`shim`] for how CRIU gets there.
//!    - **External PID namespace** (both pods share their process namespace):
//!      CRIU enters the sandbox's namespace and recreates the checkpoint's
//!      PIDs there; they must be free in the target pod, or CRIU fails with
//!      `Can't fork for <pid>: File exists`.
//!    - **Root file system**: CRIU rebuilds the checkpoint's own mount
//!      namespace over the target container's root file system, bind-mounted as
//!      CRIU's root as runc does. The agent needs a path to it in its own mount
//!      namespace (the kernel refuses to bind-mount `/proc/<pid>/root` across
//!      mount namespaces): the mount whose device and root match the one the
//!      container sees at `/`, else the runtime's rootfs path. The agent must
//!      therefore run in the runtime's mount namespace (on a real node: the
//!      host's).
//!    - **Mounts**: [`mounts`]: the checkpoint's bind mounts map to the
//!      target's mounts at the same destinations, or the restore is refused
//!      with the missing ones listed; cgroup v1 binds map to the target's
//!      cgroups; masked files to `/dev/null`.
//!    - **Cgroups**: the tree lands in the target container's cgroups: the
//!      shim joins them before CRIU starts (runc's `criuApplyCgroups`), and
//!      CRIU's cgroup root is the container's cgroup, so the pod's limits and
//!      accounting apply.
//! 4. The shim restores ([`shim`]) and stays as the tree's parent; the engine
//!    maps the PID it reports to the host's and keeps the root's start time
//!    in [`RestoreOutcome::extra`], so a reused PID is never taken for the
//!    restored tree.
//!
//! runc's namespace rules are applied to the target's list as soon as the
//! target is found, before the archive is read: a list runc refuses (a cgroup
//! namespace with a path, say) changes nothing of the target.
//!
//! Before CRIU runs, the checkpoint's writable layer (`rootfs-diff.tar`) is
//! applied to the target's root file system ([`rootfs`]), except at the
//! target's mount points. The target's files change for good: a restore that
//! fails after that step leaves them changed.
//!
//! The restored tree's stdout and stderr are the target container's own (the
//! shim opens `/proc/<target>/fd/1` and `2` and hands them to CRIU, whose
//! stdio the checkpoint's stdio pipes inherit by runc's rule), so its output
//! lands in the target's log; stdin is `/dev/null`.

pub mod mountinfo;
pub mod mounts;
pub mod process;
pub mod rootfs;
pub mod shim;

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::OnceCell;

use crate::archive::metadata::names;
use crate::archive::summary::{ArchiveSummary, summarize_file};
use crate::archive::{ArchiveError, Limits};
use crate::criu::{Criu, CriuVersion};
use crate::namespaces::{self, Namespace, NamespaceError, NamespaceType};
use crate::runtime::{Runtime, RuntimeConfig, RuntimeError, TargetContainer};
use crate::service::{
    ArchiveInfo, EngineError, EngineErrorKind, ManageCgroupsMode, NetworkLock, Phase,
    ProgressReporter, RestoreEngine, RestoreJob, RestoreOutcome,
};
use crate::sys::{Host, Syscalls};
use shim::{ShimReply, ShimRequest};

/// `extra` key: the restored root's start time in clock ticks after boot.
pub const EXTRA_START_TICKS: &str = "startTicks";
/// `extra` key: the shim's host PID.
pub const EXTRA_SHIM_PID: &str = "shimPid";
/// `extra` key: the root's PID inside the target container's PID namespace.
pub const EXTRA_POD_PID: &str = "podPid";

/// How long [`NodeEngine::stop`] waits for a killed tree to be gone.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The CRIU binary.
    pub criu: PathBuf,
    /// The agent's own binary, run as the shim.
    pub shim_binary: PathBuf,
    /// How to reach the container runtime.
    pub runtime: RuntimeConfig,
    /// Where `/proc` is (host PIDs, the agent's mount namespace).
    pub proc_root: PathBuf,
    /// Caps on the archive.
    pub limits: Limits,
    /// How long a restarted agent waits for a shim that is still restoring.
    pub recover_wait: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            criu: PathBuf::from("criu"),
            shim_binary: PathBuf::from("/proc/self/exe"),
            runtime: RuntimeConfig::default(),
            proc_root: PathBuf::from("/proc"),
            limits: Limits::default(),
            recover_wait: Duration::from_secs(120),
        }
    }
}

/// The restore engine of a node: CRI, the archive, CRIU.
#[derive(Debug)]
pub struct NodeEngine {
    config: EngineConfig,
    criu_version: OnceCell<CriuVersion>,
}

impl NodeEngine {
    /// An engine with `config`. Nothing is checked yet: a missing CRIU or
    /// runtime fails the requests that need them, with a message saying so.
    pub fn new(config: EngineConfig) -> Self {
        Self {
            config,
            criu_version: OnceCell::new(),
        }
    }
}

fn error(kind: EngineErrorKind, message: impl Into<String>) -> EngineError {
    EngineError::new(kind, message)
}

fn internal(message: impl Into<String>) -> EngineError {
    error(EngineErrorKind::Internal, message)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, EngineError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| internal(format!("a blocking task of the engine failed: {e}")))?
}

fn archive_error(archive: &Path, err: ArchiveError) -> EngineError {
    match &err {
        ArchiveError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => error(
            EngineErrorKind::ArchiveNotFound,
            format!("no checkpoint archive at {}", archive.display()),
        ),
        _ => error(EngineErrorKind::ArchiveInvalid, err.to_string()),
    }
}

fn runtime_error(err: RuntimeError) -> EngineError {
    let kind = match err {
        RuntimeError::PodNotFound { .. }
        | RuntimeError::ContainerNotFound { .. }
        | RuntimeError::AmbiguousContainer { .. } => EngineErrorKind::TargetMismatch,
        RuntimeError::Namespace { .. } => EngineErrorKind::Unsupported,
        _ => EngineErrorKind::Internal,
    };
    error(kind, err.to_string())
}

/// runc's restore rules for namespaces (`handleRestoringNamespaces`) on the
/// target's list, with `sys` opening the network and PID namespace files as
/// runc does (they are closed again at once). The shim applies the same rules
/// when it plans CRIU's request, but only after the checkpoint's writable
/// layer is in the target's root file system; a refusal must come first.
fn check_namespaces<S: Syscalls>(
    sys: &S,
    criu_version: u32,
    list: &[Namespace],
) -> Result<(), EngineError> {
    namespaces::restore_namespaces(sys, criu_version, list)
        .map(drop)
        .map_err(|e| {
            let kind = match e {
                NamespaceError::Missing { .. } => EngineErrorKind::TargetMismatch,
                _ => EngineErrorKind::Unsupported,
            };
            error(kind, e.to_string())
        })
}

/// Refuses a checkpoint holding `streams` established TCP connections unless
/// the request asks for them (`tcpEstablished`), before anything reaches the
/// target: CRIU would fail later with only `Connected TCP socket in image`.
fn established_tcp_allowed(streams: u64, tcp_established: bool) -> Result<(), EngineError> {
    if streams == 0 || tcp_established {
        return Ok(());
    }
    Err(error(
        EngineErrorKind::OptionRequired,
        format!(
            "the checkpoint holds {streams} established TCP connection{s} (checkpoint/tcp-stream-*.img); \
             they are restored only when asked: set spec.options.tcpEstablished: true",
            s = if streams == 1 { "" } else { "s" }
        ),
    ))
}

/// The ID part of `<runtime>://<id>`.
fn bare_id(container_id: &str) -> &str {
    container_id
        .split_once("://")
        .map_or(container_id, |(_, id)| id)
}

/// Everything [`NodeEngine::restore`] decided before the shim starts.
struct Prepared {
    request: ShimRequest,
    pid_ns: Option<File>,
    request_file: PathBuf,
    log: File,
    container_id: String,
}

impl NodeEngine {
    /// Step 3 of the module documentation.
    fn prepare(
        &self,
        job: &RestoreJob,
        target: &TargetContainer,
        summary: &ArchiveSummary,
    ) -> Result<Prepared, EngineError> {
        let proc_root = &self.config.proc_root;
        let read = |path: PathBuf| {
            fs::read_to_string(&path)
                .map_err(|e| internal(format!("cannot read {}: {e}", path.display())))
        };
        let agent_mounts = mountinfo::parse(&read(proc_root.join("self/mountinfo"))?);
        let target_mounts = mountinfo::parse(&read(
            proc_root.join(target.pid.to_string()).join("mountinfo"),
        )?);
        let root = self.root_of(target, &agent_mounts, &target_mounts)?;

        let v1 = mountinfo::cgroup_v1_mounts(&agent_mounts);
        let v2 = mountinfo::cgroup_v2_mount(&agent_mounts);
        let cgroup_binds = mounts::cgroup_binds(target, &v1);
        let destinations: Vec<String> = summary
            .mounts
            .bind_mount_destinations()
            .into_iter()
            .map(str::to_owned)
            .collect();
        let ext_mounts = mounts::ext_mounts(&destinations, target, &cgroup_binds)
            .map_err(|e| error(EngineErrorKind::TargetMismatch, e.to_string()))?;
        let cgroup_root = target.cgroup_path().map(str::to_owned).ok_or_else(|| {
            error(
                EngineErrorKind::Unsupported,
                "the target container's cgroup paths differ between hierarchies; the restore sets one cgroup root for all of them",
            )
        })?;
        let join_cgroups = mounts::cgroup_procs(&target.cgroups, &v1, v2.as_ref());

        // With an external PID namespace (runc's rule for a pid entry with a
        // path) CRIU enters it itself; otherwise the shim must be born in the
        // target's, so that the tree's new namespace nests below it.
        let external_pid = target
            .namespaces
            .iter()
            .any(|ns| ns.kind == NamespaceType::Pid && ns.path.is_some());
        let pid_ns = if external_pid {
            None
        } else {
            let path = target.own_namespace(proc_root, NamespaceType::Pid);
            Some(File::open(&path).map_err(|e| {
                error(
                    EngineErrorKind::TargetMismatch,
                    format!(
                        "cannot open the target's PID namespace {}: {e}",
                        path.display()
                    ),
                )
            })?)
        };
        let log_path = job.work_dir.join(shim::LOG_FILE);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| internal(format!("cannot create {}: {e}", log_path.display())))?;

        let options = &job.options;
        let container_id = if job.target.container_id.is_empty() {
            format!("containerd://{}", target.container_id)
        } else {
            job.target.container_id.clone()
        };
        let request = ShimRequest {
            container_id: container_id.clone(),
            archive: job.archive.clone(),
            namespaces: target
                .restore_namespaces()
                .into_iter()
                .map(|ns| shim::NamespaceSpec {
                    kind: ns.kind.oci_name().to_owned(),
                    path: ns.path,
                })
                .collect(),
            root,
            ext_mounts,
            cgroup_root: Some(cgroup_root),
            join_cgroups,
            tcp_established: options.tcp_established,
            ext_unix_sk: options.ext_unix_sk,
            shell_job: options.shell_job,
            file_locks: options.file_locks,
            manage_cgroups_mode: match options.manage_cgroups_mode {
                ManageCgroupsMode::Soft => "soft",
                ManageCgroupsMode::Full => "full",
                ManageCgroupsMode::Strict => "strict",
                ManageCgroupsMode::Ignore => "ignore",
            }
            .to_owned(),
            network_lock: Some(
                match options.network_lock {
                    NetworkLock::Iptables => "iptables",
                    NetworkLock::Nftables => "nftables",
                    NetworkLock::Skip => "skip",
                }
                .to_owned(),
            ),
            work_root: job.work_dir.clone(),
            criu: self.config.criu.clone(),
            outcome_file: job.work_dir.join(shim::OUTCOME_FILE),
            output_of: Some(proc_root.join(target.pid.to_string()).join("fd")),
        };
        Ok(Prepared {
            request,
            pid_ns,
            request_file: job.work_dir.join(shim::REQUEST_FILE),
            log,
            container_id,
        })
    }

    /// The target's root file system as a path in the agent's mount namespace.
    fn root_of(
        &self,
        target: &TargetContainer,
        agent_mounts: &[mountinfo::MountEntry],
        target_mounts: &[mountinfo::MountEntry],
    ) -> Result<PathBuf, EngineError> {
        if let Some(found) = mountinfo::root_mount(target_mounts)
            .and_then(|root| mountinfo::same_mount(agent_mounts, root))
        {
            return Ok(PathBuf::from(&found.mount_point));
        }
        let through_proc = target.root_through_proc(&self.config.proc_root);
        if target.rootfs != through_proc && target.rootfs.is_dir() {
            return Ok(target.rootfs.clone());
        }
        Err(error(
            EngineErrorKind::Unsupported,
            format!(
                "the root file system of container {} is not mounted in the agent's mount namespace; run the agent in the container runtime's mount namespace",
                target.container_id
            ),
        ))
    }

    /// Runs the shim to its reply, within `deadline`. On a timeout the shim
    /// and whatever it started are killed: CRIU, losing its client, rolls the
    /// restore back.
    async fn run_shim(
        &self,
        uid: &str,
        prepared: Prepared,
        deadline: Instant,
    ) -> Result<(ShimReply, Child), EngineError> {
        let shim_pid = Arc::new(AtomicI32::new(0));
        let locked_netns = lockable_netns(&prepared.request);
        let work_root = prepared.request.work_root.clone();
        let binary = self.config.shim_binary.clone();
        let uid_owned = uid.to_owned();
        let pid_slot = shim_pid.clone();
        let mut handle = tokio::task::spawn_blocking(move || {
            let mut child = shim::spawn(
                &binary,
                &uid_owned,
                prepared.pid_ns.as_ref(),
                &prepared.request,
                &prepared.request_file,
                prepared.log,
            )
            .map_err(|e| {
                internal(format!(
                    "cannot start the restore shim {}: {e}",
                    binary.display()
                ))
            })?;
            pid_slot.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
            let reply = shim::read_reply(&mut child)
                .map_err(|e| internal(format!("cannot read the restore shim's reply: {e}")));
            Ok::<_, EngineError>((reply, child))
        });
        let sleep = tokio::time::sleep_until(deadline.into());
        tokio::pin!(sleep);
        tokio::select! {
            joined = &mut handle => {
                let (reply, child) = joined.map_err(|e| internal(format!("the shim task failed: {e}")))??;
                // The shim lives on as the tree's parent; reaped when it ends.
                return match reply {
                    Ok(Some(reply)) => Ok((reply, child)),
                    Ok(None) => {
                        reap_later(child);
                        Err(internal(format!(
                            "the restore shim ended without an answer; see {} in the restore's work directory",
                            shim::LOG_FILE
                        )))
                    }
                    Err(e) => {
                        reap_later(child);
                        Err(e)
                    }
                };
            }
            () = &mut sleep => {}
        }
        // Everything the shim started dies; the shim, finding CRIU gone, does
        // what it does after any failed restore (removes CRIU's network lock,
        // reaps what is left) and answers. Only a shim that does not answer in
        // time is killed too.
        let pid = shim_pid.load(Ordering::SeqCst);
        if pid > 0 {
            self.kill_descendants(pid);
        }
        match tokio::time::timeout(STOPPED_SHIM_PATIENCE, &mut handle).await {
            Ok(Ok(Ok((_, child)))) => reap_later(child),
            Ok(_) => {}
            Err(_) => {
                tracing::warn!(
                    uid,
                    shim = pid,
                    "the stopped restore's shim does not answer; killing it"
                );
                self.kill_shim(pid);
                if let Ok(Ok((_, child))) = handle.await {
                    reap_later(child);
                }
            }
        }
        remove_private_dirs(&work_root);
        // Beyond runc: a restore stopped in the middle must not leave the
        // target's traffic dropped, whoever else was meant to lift the lock.
        if let Some(netns) = locked_netns {
            let removed = tokio::task::spawn_blocking(move || {
                crate::netlock::remove_lock(&netns, &crate::netlock::Tools::default())
            })
            .await;
            match removed {
                Ok(Ok(parts)) if !parts.is_empty() => {
                    tracing::info!(
                        uid,
                        ?parts,
                        "removed CRIU's network lock the stopped restore left"
                    );
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => tracing::warn!(uid, "cannot remove CRIU's network lock: {e}"),
                Err(e) => tracing::warn!(uid, "cannot remove CRIU's network lock: {e}"),
            }
        }
        Err(error(
            EngineErrorKind::Timeout,
            "the restore did not finish within its timeout; it was stopped and rolled back",
        ))
    }

    /// Kills every process below the shim `pid` (CRIU and its helpers, the
    /// tree it was restoring), the deepest first.
    fn kill_descendants(&self, pid: i32) {
        let mut found = Vec::new();
        let mut next = vec![pid];
        while let Some(parent) = next.pop() {
            for child in process::children(&self.config.proc_root, parent) {
                if !found.contains(&child) {
                    found.push(child);
                    next.push(child);
                }
            }
        }
        for victim in found.into_iter().rev() {
            if let Err(e) = process::kill_now(victim) {
                tracing::warn!(pid = victim, "cannot kill: {e}");
            }
        }
    }

    /// Kills what the shim `pid` started (CRIU, or the restored root, which
    /// takes its whole PID namespace along), then the shim.
    fn kill_shim(&self, pid: i32) {
        self.kill_descendants(pid);
        if let Err(e) = process::kill_now(pid) {
            tracing::warn!(pid, "cannot kill the restore shim: {e}");
        }
    }

    /// The outcome for a shim's successful reply: the root's host PID and
    /// start time, found as the shim's child.
    fn outcome_of(&self, shim_pid: i32, reply: ShimReply) -> Result<RestoreOutcome, EngineError> {
        let ShimReply::Restored {
            container_id,
            pid,
            criu_version,
            archive_sha256,
            archive_size,
            warnings,
        } = reply
        else {
            return Err(internal("not a successful reply"));
        };
        let proc_root = &self.config.proc_root;
        let host_pid = process::child_by_inner_pid(proc_root, shim_pid, pid).ok_or_else(|| {
            error(
                EngineErrorKind::CriuFailed,
                format!("CRIU reported PID {pid}, but the restored tree is gone already"),
            )
        })?;
        let (_, ticks) = process::stat(proc_root, host_pid).ok_or_else(|| {
            error(
                EngineErrorKind::CriuFailed,
                "the restored tree ended at once",
            )
        })?;
        // The engine applies the layer itself (the library restore does not).
        for warning in warnings.iter().filter(|w| !w.contains(names::ROOTFS_DIFF)) {
            tracing::warn!(pid = host_pid, "{warning}");
        }
        let mut outcome = RestoreOutcome {
            container_id,
            pid: i64::from(host_pid),
            archive_sha256,
            archive_size,
            criu_version,
            extra: Default::default(),
        };
        outcome
            .extra
            .insert(EXTRA_START_TICKS.into(), ticks.to_string());
        outcome
            .extra
            .insert(EXTRA_SHIM_PID.into(), shim_pid.to_string());
        outcome.extra.insert(EXTRA_POD_PID.into(), pid.to_string());
        Ok(outcome)
    }

    fn shims(&self, uid: &str) -> Vec<i32> {
        process::find_by_args(
            &self.config.proc_root,
            shim::SUBCOMMAND,
            shim::UID_FLAG,
            uid,
        )
    }
}

/// Reaps a shim when it ends (it lives as long as the restored tree).
/// How long a shim whose restore was stopped gets to clean up and answer.
const STOPPED_SHIM_PATIENCE: Duration = Duration::from_secs(20);

/// The target's network namespace when CRIU may lock it during `request`
/// (any lock but `skip`).
fn lockable_netns(request: &ShimRequest) -> Option<PathBuf> {
    if request.network_lock.as_deref() == Some("skip") {
        return None;
    }
    request
        .namespaces
        .iter()
        .find(|n| n.kind == "network")
        .and_then(|n| n.path.clone())
}

/// Removes the private directories (`restore-*`) a stopped shim left in
/// `work_root`, unless something is mounted below one (in the agent's mount
/// namespace; the shim's own mounts ended with it).
fn remove_private_dirs(work_root: &Path) {
    let Ok(entries) = fs::read_dir(work_root) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        let private = entry.file_name().to_string_lossy().starts_with("restore-")
            && entry.file_type().is_ok_and(|t| t.is_dir());
        if !private {
            continue;
        }
        let mounts = crate::workdir::mounts_below(&path);
        if !mounts.is_empty() {
            tracing::warn!(path = %path.display(), ?mounts, "left in place: mounts below it");
        } else if let Err(e) = fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), "cannot remove: {e}");
        }
    }
}

fn reap_later(mut child: Child) {
    let spawned = std::thread::Builder::new()
        .name("shim-reaper".into())
        .spawn(move || match child.wait() {
            Ok(status) => tracing::info!(shim = child.id(), %status, "a restore shim ended"),
            Err(e) => tracing::warn!(shim = child.id(), "cannot wait for a restore shim: {e}"),
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a thread to reap the restore shim: {e}");
    }
}

fn start_ticks(outcome: &RestoreOutcome) -> Option<u64> {
    outcome.extra.get(EXTRA_START_TICKS)?.parse().ok()
}

impl NodeEngine {
    /// The CRIU version, asked once.
    async fn criu(&self) -> Result<&CriuVersion, EngineError> {
        let criu = Criu::new(&self.config.criu);
        self.criu_version
            .get_or_try_init(|| {
                blocking(move || {
                    criu.version().map_err(|e| {
                        error(
                            EngineErrorKind::Unsupported,
                            format!(
                                "cannot ask CRIU ({}) for its version: {e}",
                                criu.binary().display()
                            ),
                        )
                    })
                })
            })
            .await
    }
}

#[async_trait::async_trait]
impl RestoreEngine for NodeEngine {
    async fn criu_version(&self) -> Result<String, EngineError> {
        self.criu().await.map(ToString::to_string)
    }

    async fn inspect(&self, archive: &Path) -> Result<ArchiveInfo, EngineError> {
        let path = archive.to_owned();
        let limits = self.config.limits.clone();
        let summary =
            blocking(move || summarize_file(&path, &limits).map_err(|e| archive_error(&path, e)))
                .await?;
        let pod = summary.pod;
        let namespace = pod.pod_namespace.ok_or_else(|| {
            error(
                EngineErrorKind::ArchiveInvalid,
                "the archive does not record the namespace of the pod it was taken from (no pod annotations in spec.dump)",
            )
        })?;
        let checkpointed_at = summary
            .container
            .checkpointed_time
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map(SystemTime::from);
        Ok(ArchiveInfo {
            pod_namespace: namespace,
            pod_name: pod.pod_name.unwrap_or_default(),
            container_name: pod.container_name.unwrap_or_default(),
            checkpointed_at,
            size: summary.archive.size,
            sha256: summary.archive.sha256,
            criu_version: summary.criu_version,
        })
    }

    async fn restore(
        &self,
        job: RestoreJob,
        progress: ProgressReporter,
    ) -> Result<RestoreOutcome, EngineError> {
        let deadline = Instant::now() + job.options.timeout;
        progress.phase(
            Phase::Preparing,
            format!(
                "finding container {:?} of pod {}/{} through the container runtime",
                job.target.container_name, job.target.pod_namespace, job.target.pod_name
            ),
        );
        let runtime = Runtime::connect(self.config.runtime.clone())
            .await
            .map_err(runtime_error)?;
        let container = Some(job.target.container_name.as_str()).filter(|c| !c.is_empty());
        let target = runtime
            .find_target(&job.target.pod_namespace, &job.target.pod_name, container)
            .await
            .map_err(runtime_error)?;
        let wanted = bare_id(&job.target.container_id);
        if !wanted.is_empty() && wanted != target.container_id {
            return Err(error(
                EngineErrorKind::TargetMismatch,
                format!(
                    "container {:?} of pod {}/{} is {} on this node, not {wanted} as the API says; it was restarted",
                    target.container_name,
                    target.pod_namespace,
                    target.pod_name,
                    target.container_id
                ),
            ));
        }
        if !job.target.pod_uid.is_empty()
            && !target.pod_uid.is_empty()
            && job.target.pod_uid != target.pod_uid
        {
            return Err(error(
                EngineErrorKind::TargetMismatch,
                format!(
                    "pod {}/{} on this node has UID {}, not {}",
                    target.pod_namespace, target.pod_name, target.pod_uid, job.target.pod_uid
                ),
            ));
        }

        let version = self.criu().await?.number();
        check_namespaces(&Host, version, &target.restore_namespaces())?;

        progress.phase(Phase::Preparing, "reading the checkpoint archive");
        let archive = job.archive.clone();
        let limits = self.config.limits.clone();
        let summary = blocking(move || {
            summarize_file(&archive, &limits).map_err(|e| archive_error(&archive, e))
        })
        .await?;
        summary
            .mounts
            .ensure_restorable()
            .map_err(|e| error(EngineErrorKind::ArchiveInvalid, e.to_string()))?;
        established_tcp_allowed(summary.sizes.tcp_streams, job.options.tcp_established)?;
        let prepared = self.prepare(&job, &target, &summary)?;
        let container_id = prepared.container_id.clone();

        progress.phase(
            Phase::Preparing,
            "carrying the checkpoint's writable layer over to the target's root file system",
        );
        let report = {
            let archive = job.archive.clone();
            let root = prepared.request.root.clone();
            let destinations: Vec<String> = target
                .mounts
                .iter()
                .map(|m| m.destination.clone())
                .collect();
            let scratch = job.work_dir.clone();
            let limits = self.config.limits.clone();
            blocking(move || {
                rootfs::apply(&archive, &root, &destinations, &scratch, &limits).map_err(|e| {
                    let kind = match e {
                        rootfs::RootfsError::Apply(_) => EngineErrorKind::ArchiveInvalid,
                        rootfs::RootfsError::Read { .. } => EngineErrorKind::Internal,
                    };
                    error(kind, e.to_string())
                })
            })
            .await?
        };
        tracing::info!(
            uid = %job.uid,
            applied = report.applied,
            removed = report.removed,
            skipped = ?report.skipped,
            "applied the checkpoint's writable layer"
        );

        progress.phase(
            Phase::Restoring,
            format!(
                "CRIU restores into container {container_id} (PID {})",
                target.pid
            ),
        );
        let (reply, child) = self.run_shim(&job.uid, prepared, deadline).await?;
        let shim_pid = i32::try_from(child.id()).unwrap_or(0);
        match reply {
            ShimReply::Failed {
                reason,
                message,
                log_excerpt,
            } => {
                reap_later(child);
                let mut err = error(shim::kind_of(&reason), message);
                if let Some(log) = log_excerpt {
                    err = err.with_log(log);
                }
                Err(err)
            }
            restored @ ShimReply::Restored { .. } => {
                let outcome = self.outcome_of(shim_pid, restored);
                reap_later(child);
                if outcome.is_err() {
                    self.kill_shim(shim_pid);
                }
                outcome
            }
        }
    }

    async fn is_running(&self, _uid: &str, outcome: &RestoreOutcome) -> Result<bool, EngineError> {
        let Some(ticks) = start_ticks(outcome) else {
            return Ok(false);
        };
        let pid = i32::try_from(outcome.pid).unwrap_or(0);
        Ok(pid > 0 && process::is_alive(&self.config.proc_root, pid, ticks))
    }

    async fn stop(&self, uid: &str, outcome: Option<&RestoreOutcome>) -> Result<bool, EngineError> {
        let proc_root = self.config.proc_root.clone();
        let mut stopped = false;
        let mut victims = Vec::new();
        if let Some(outcome) = outcome
            && let Some(ticks) = start_ticks(outcome)
            && let Ok(pid) = i32::try_from(outcome.pid)
            && process::is_alive(&proc_root, pid, ticks)
        {
            victims.push((pid, ticks));
        }
        // A shim still running for this UID: its child is the tree (or CRIU).
        for shim_pid in self.shims(uid) {
            for child in process::children(&proc_root, shim_pid) {
                if let Some((_, ticks)) = process::stat(&proc_root, child)
                    && !victims.iter().any(|(p, _)| *p == child)
                {
                    victims.push((child, ticks));
                }
            }
        }
        for (pid, _) in &victims {
            // The root is the init of the tree's PID namespace: killing it
            // ends every process of the tree.
            process::kill_now(*pid).map_err(|e| internal(format!("cannot kill PID {pid}: {e}")))?;
            stopped = true;
        }
        let deadline = Instant::now() + STOP_WAIT;
        while victims
            .iter()
            .any(|(pid, ticks)| process::is_alive(&proc_root, *pid, *ticks))
        {
            if Instant::now() >= deadline {
                return Err(internal("the restored tree did not end after SIGKILL"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if stopped {
            tracing::info!(%uid, pids = ?victims.iter().map(|(p, _)| p).collect::<Vec<_>>(), "stopped the restored tree");
        }
        Ok(stopped)
    }

    async fn recover(
        &self,
        uid: &str,
        work_dir: &Path,
    ) -> Result<Option<RestoreOutcome>, EngineError> {
        let outcome_file = work_dir.join(shim::OUTCOME_FILE);
        let deadline = Instant::now() + self.config.recover_wait;
        // A shim that is still restoring answers soon; wait for it.
        let reply = loop {
            let reply = shim::read_outcome(&outcome_file)
                .map_err(|e| internal(format!("cannot read {}: {e}", outcome_file.display())))?;
            if reply.is_some() || self.shims(uid).is_empty() || Instant::now() >= deadline {
                break reply;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let Some(reply @ ShimReply::Restored { .. }) = reply else {
            return Ok(None);
        };
        for shim_pid in self.shims(uid) {
            if let Ok(outcome) = self.outcome_of(shim_pid, reply.clone()) {
                tracing::info!(%uid, pid = outcome.pid, "found the tree a previous agent process restored");
                return Ok(Some(outcome));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_without_the_runtime_prefix() {
        assert_eq!(bare_id("containerd://abc"), "abc");
        assert_eq!(bare_id("abc"), "abc");
        assert_eq!(bare_id(""), "");
    }

    #[test]
    fn established_tcp_connections_need_the_option() {
        assert!(established_tcp_allowed(0, false).is_ok());
        assert!(established_tcp_allowed(2, true).is_ok());
        let refused = established_tcp_allowed(1, false).unwrap_err();
        assert_eq!(refused.kind, EngineErrorKind::OptionRequired);
        assert!(
            refused
                .message
                .starts_with("the checkpoint holds 1 established TCP connection (")
                && refused
                    .message
                    .ends_with("set spec.options.tcpEstablished: true"),
            "{}",
            refused.message
        );
    }

    #[test]
    fn runc_namespace_rules_refuse_before_the_restore() {
        let ns = |args: &[&str]| -> Vec<Namespace> {
            args.iter()
                .map(|a| Namespace::parse_arg(a).unwrap())
                .collect()
        };
        // containerd's list for an ordinary pod, the sandbox being this process.
        let pod = [
            "pid",
            "ipc=/proc/self/ns/ipc",
            "uts=/proc/self/ns/uts",
            "mount",
            "network=/proc/self/ns/net",
        ];
        let with = |extra: &str| {
            let mut list = pod.to_vec();
            list.push(extra);
            ns(&list)
        };
        let criu = 40201;
        // name, CRIU version, the runtime's list, the refusal if any
        type Case = (
            &'static str,
            u32,
            Vec<Namespace>,
            Option<(EngineErrorKind, &'static str)>,
        );
        let cases: [Case; 6] = [
            ("ordinary pod", criu, ns(&pod), None),
            ("cgroup without a path", criu, with("cgroup"), None),
            (
                "cgroup with a path",
                criu,
                with("cgroup=/proc/self/ns/cgroup"),
                Some((
                    EngineErrorKind::Unsupported,
                    "Do not know how to handle namespace NEWCGROUP",
                )),
            ),
            (
                "cgroup with a path that does not exist",
                criu,
                with("cgroup=/nonexistent/cgroup"),
                Some((
                    EngineErrorKind::Unsupported,
                    "Do not know how to handle namespace NEWCGROUP",
                )),
            ),
            (
                "network namespace gone",
                criu,
                ns(&["pid", "network=/nonexistent/net", "cgroup=/x"]),
                Some((
                    EngineErrorKind::TargetMismatch,
                    "Requested network namespace /nonexistent/net does not exist",
                )),
            ),
            (
                "CRIU too old for an external PID namespace, checked without a path",
                31400,
                ns(&pod),
                Some((
                    EngineErrorKind::Unsupported,
                    "criu lacks support for external pid namespace during the restoration process (old criu version?)",
                )),
            ),
        ];
        for (name, version, list, want) in cases {
            let got = check_namespaces(&Host, version, &list)
                .err()
                .map(|e| (e.kind, e.message));
            let want = want.map(|(kind, message)| (kind, message.to_owned()));
            assert_eq!(got, want, "{name}");
        }
    }

    #[tokio::test]
    async fn a_missing_archive_is_named() {
        let engine = NodeEngine::new(EngineConfig::default());
        let err = engine
            .inspect(Path::new("/nonexistent/a.tar"))
            .await
            .unwrap_err();
        assert_eq!(err.kind, EngineErrorKind::ArchiveNotFound);
        assert_eq!(err.message, "no checkpoint archive at /nonexistent/a.tar");
    }

    #[tokio::test]
    async fn a_missing_criu_is_unsupported() {
        let engine = NodeEngine::new(EngineConfig {
            criu: "/nonexistent/criu".into(),
            ..EngineConfig::default()
        });
        let err = engine.criu_version().await.unwrap_err();
        assert_eq!(err.kind, EngineErrorKind::Unsupported);
    }

    #[tokio::test]
    async fn an_outcome_without_a_start_time_is_not_running() {
        let engine = NodeEngine::new(EngineConfig::default());
        let me = i64::from(std::process::id());
        let outcome = RestoreOutcome {
            pid: me,
            ..RestoreOutcome::default()
        };
        assert!(!engine.is_running("u", &outcome).await.unwrap());
        let (_, ticks) = process::stat(Path::new("/proc"), i32::try_from(me).unwrap()).unwrap();
        let mut alive = outcome.clone();
        alive
            .extra
            .insert(EXTRA_START_TICKS.into(), ticks.to_string());
        assert!(engine.is_running("u", &alive).await.unwrap());
        alive
            .extra
            .insert(EXTRA_START_TICKS.into(), (ticks + 1).to_string());
        assert!(!engine.is_running("u", &alive).await.unwrap());
    }
}
