//! Restoring a checkpoint archive into existing namespaces.
//!
//! [`restore`] follows runc's `Restore` (criu_linux.go), with the archive
//! handling a runtime does before it:
//! 1. CRIU's version, then the whole CRIU request is planned with runc's rules
//!    ([`crate::criu::options::restore_plan`]) *before anything touches the
//!    system*: a refused target (a cgroup namespace path, a missing network or
//!    PID namespace, an old CRIU) fails with runc's message and leaves no
//!    directory, mount, firewall rule or open file behind.
//! 2. The archive is extracted into a fresh private directory (0700) with the
//!    archive module's safe extraction; its metadata is read and its mounts and
//!    devices reviewed. Bind mounts of the checkpointed container must be
//!    mapped to a host path (`ext_mounts`, CRIU `ext_mnt`) or the restore is
//!    refused; nothing in the archive names a host path the restore uses.
//! 3. With a root directory, runc's `criu-root`: the root is bind-mounted
//!    (`MS_BIND|MS_REC`) on `<work>/criu-root`, since CRIU's root must be a
//!    mount point whose parent is not overmounted. Without one, CRIU's root is
//!    left unset, which is the agent's own `/`: already such a mount point, so
//!    no bind is needed. That is right for a tree that shared the host's mount
//!    namespace; a checkpoint holding a mount namespace of its own needs the
//!    container's root filesystem and is refused without one.
//! 4. runc's pipe rule from `descriptors.json` (fds 0..2 that were pipes are
//!    handed over from CRIU's own stdio), then CRIU runs (`criu swrk`).
//! 5. Every temporary path and mount is removed on every exit path, all
//!    errors collected; a cleanup error never hides the original one. After a
//!    failed CRIU run, CRIU's network lock is removed from the target's network
//!    namespace, where a failed restore can leave it (criu#2828).
//!
//! The source is normally an archive ([`CheckpointSource::Archive`]). A CRIU
//! images directory the caller already trusts (a runtime's own checkpoint,
//! the benchmark's) can be restored directly ([`CheckpointSource::Images`]):
//! step 2's extraction and review are skipped, `descriptors.json` is read from
//! the images.
//!
//! The network lock: unless told otherwise the agent asks CRIU for none when
//! the restore brings back no established TCP connection
//! ([`netlock::automatic`]); runc always leaves CRIU's iptables lock, whose
//! rules in the pod's shared network namespace drop the traffic of the pod's
//! other containers while CRIU works, and take 50-75 ms to add and remove.
//!
//! The restored root task is a child of the calling process (`rst_sibling`:
//! CRIU clones it with `CLONE_PARENT`). The caller must reap it when it ends
//! ([`crate::sys::process::wait_child`]) or exit, handing it to the nearest
//! subreaper or init.
//!
//! Cancellation: [`RestoreRequest::cancel`] is checked between steps and at
//! every CRIU notification; a cancelled notification is not acked, so CRIU
//! aborts and rolls back what it restored. The cleanup runs from a guard, so it
//! also runs when the calling thread unwinds.

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::archive::metadata::{self, names};
use crate::archive::{self, ArchiveDigest, ArchiveError, Limits};
use crate::checkpoint::DEFAULT_WORK_ROOT;
use crate::criu::options::{
    ConfigFile, CriuFlags, DESCRIPTORS_FILE, NetworkLock, OptionsError, RESTORE_LOG,
    RestoreOptions, pipe_inherit_fds, restore_plan,
};
use crate::criu::{
    Criu, CriuCall, CriuError, CriuVersion, HandlerError, Notification, NotifyHandler,
};
use crate::namespaces::{Namespace, NamespaceType, path_of};
use crate::sys::{Host, mount};
use crate::workdir::{PrivateDir, WorkDirError};
use crate::{netlock, procinfo};
use podrestore_proto::criu::CgroupRoot;

/// The directory inside the work directory the archive is extracted to.
const EXTRACTED: &str = "archive";
/// runc's name for CRIU's root mount point.
pub const CRIU_ROOT: &str = "criu-root";

/// What a restore reads the checkpoint from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckpointSource {
    /// A checkpoint archive (tar, or gzip-compressed tar), untrusted: extracted
    /// safely and reviewed.
    Archive(PathBuf),
    /// A CRIU images directory with `descriptors.json`, trusted as it is.
    Images(PathBuf),
}

impl Default for CheckpointSource {
    fn default() -> Self {
        Self::Archive(PathBuf::new())
    }
}

/// A restore of one checkpoint.
#[derive(Debug, Default)]
pub struct RestoreRequest {
    /// The checkpoint.
    pub source: CheckpointSource,
    /// The target's namespaces, in spec order (runc's rules apply).
    pub namespaces: Vec<Namespace>,
    /// The root file system to restore onto (runc: the container's rootfs);
    /// `None` restores onto the agent's own root. See the module documentation.
    pub root: Option<PathBuf>,
    /// runc's switches (`--tcp-established`, `--ext-unix-sk`, ...).
    pub flags: CriuFlags,
    /// podrestore beyond runc: restore established connections closed.
    pub tcp_close: bool,
    /// `--manage-cgroups-mode` as given (`""`: CRIU's default, soft).
    pub manage_cgroups_mode: String,
    /// podrestore beyond runc: CRIU's network lock; `None` lets the agent
    /// choose ([`netlock::automatic`]).
    pub network_lock: Option<NetworkLock>,
    /// CRIU's cgroup root for the restored tree (`criu --cgroup-root`, one
    /// root for every controller, as crun passes it); `None` restores into
    /// the cgroups recorded in the images.
    pub cgroup_root: Option<String>,
    /// Bind mounts of the checkpointed container mapped to host paths: (the
    /// destination in the container, which runc records as CRIU's external
    /// mount key, the host path to mount there).
    pub ext_mounts: Vec<(String, String)>,
    /// The CRIU configuration file (runc's default: `/etc/criu/runc.conf`).
    /// The checkpoint's own `org.criu.config` annotation is never used: it
    /// would let an archive choose a file on this node.
    pub config_file: ConfigFile,
    /// Where the private work directory is created; [`DEFAULT_WORK_ROOT`] when
    /// empty.
    pub work_root: PathBuf,
    /// Caps on the archive.
    pub limits: Limits,
    /// The CRIU to run.
    pub criu: Criu,
    /// CRIU's version, when the caller knows it already; asked otherwise.
    pub criu_version: Option<CriuVersion>,
    /// The restored tree's stdin, stdout and stderr; `/dev/null` when `None`.
    pub stdio: [Option<OwnedFd>; 3],
    /// Set to abandon the restore (see the module documentation).
    pub cancel: Option<Arc<AtomicBool>>,
    /// The firewall tools used to remove a lock a failed restore left.
    pub lock_tools: netlock::Tools,
}

/// What a restore produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RestoreOutcome {
    /// The restored root task's host PID (a child of the caller).
    pub pid: i32,
    /// Its start time in clock ticks after boot, to tell it from a later
    /// process with the same PID.
    pub start_ticks: Option<u64>,
    /// The CRIU version that restored (`4.2.1`).
    pub criu_version: String,
    /// SHA-256 and size of the archive (none for an images directory).
    pub archive: Option<ArchiveDigest>,
    /// Where the time went.
    pub timings: Timings,
    /// What did not fail the restore but should be known (an archive file not
    /// used, a cleanup step that failed).
    pub warnings: Vec<String>,
}

/// Durations of a restore's steps, in milliseconds when serialized.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    /// Extracting and checking the archive.
    #[serde(with = "millis")]
    pub extract: Duration,
    /// CRIU's restore, from starting `criu swrk` to its exit.
    #[serde(with = "millis")]
    pub criu: Duration,
    /// The whole call, cleanup included.
    #[serde(with = "millis")]
    pub total: Duration,
}

/// Errors of a restore.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// CRIU's version could not be read.
    #[error(transparent)]
    Version(CriuError),
    /// A rule refused the request; the message is runc's where runc has the
    /// rule.
    #[error(transparent)]
    Plan(#[from] OptionsError),
    /// The archive file cannot be read.
    #[error("cannot read archive {path}: {source}", path = .path.display())]
    ArchiveMissing {
        /// The archive.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The archive is refused or could not be extracted.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The checkpoint cannot be restored as asked.
    #[error("{0}")]
    Checkpoint(String),
    /// The private work directory.
    #[error(transparent)]
    WorkDir(#[from] WorkDirError),
    /// A directory or mount around CRIU.
    #[error("{action} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// CRIU failed (with the lines around its errors).
    #[error(transparent)]
    Criu(CriuError),
    /// The restore was cancelled.
    #[error("restore cancelled")]
    Cancelled,
    /// An error, and cleanup steps that failed after it.
    #[error("{error}; cleanup also failed: {}", .cleanup.join("; "))]
    WithCleanup {
        /// The original error.
        error: Box<RestoreError>,
        /// What the cleanup could not do.
        cleanup: Vec<String>,
    },
}

impl RestoreError {
    /// The error itself, without cleanup failures around it.
    pub fn original(&self) -> &RestoreError {
        match self {
            Self::WithCleanup { error, .. } => error.original(),
            other => other,
        }
    }
}

/// Restores the archive of `request` into its namespaces and returns the
/// restored root's PID. See the module documentation for the steps.
pub fn restore(request: RestoreRequest) -> Result<RestoreOutcome, RestoreError> {
    let started = Instant::now();
    let mut request = request;
    let version = match &request.criu_version {
        Some(v) => v.clone(),
        None => request.criu.version().map_err(RestoreError::Version)?,
    };
    cancelled(&request.cancel)?;
    let network_lock = request
        .network_lock
        .or_else(|| netlock::automatic(version.number(), request.flags.tcp_established));
    // runc's rules first, before any file, mount or process exists.
    let options = RestoreOptions {
        root: None,
        flags: request.flags,
        manage_cgroups_mode: request.manage_cgroups_mode.clone(),
        lsm_profile: None,
        lsm_mount_context: None,
        config_file: request.config_file.clone(),
        descriptors: None,
        ext_mounts: request.ext_mounts.clone(),
        network_lock,
        tcp_close: request.tcp_close,
    };
    let mut plan = restore_plan(&Host, version.number(), &request.namespaces, &options)?;
    if let Some(path) = &request.cgroup_root {
        plan.opts.cg_root.push(CgroupRoot {
            ctrl: None,
            path: path.clone(),
        });
    }
    let (CheckpointSource::Archive(source_path) | CheckpointSource::Images(source_path)) =
        &request.source;
    fs::metadata(source_path).map_err(|source| RestoreError::ArchiveMissing {
        path: source_path.clone(),
        source,
    })?;

    let work_root = if request.work_root.as_os_str().is_empty() {
        PathBuf::from(DEFAULT_WORK_ROOT)
    } else {
        request.work_root.clone()
    };
    let mut cleanup = Cleanup {
        work: Some(PrivateDir::create(&work_root, "restore")?),
        mounted: None,
    };
    let stdio = std::mem::take(&mut request.stdio);
    let result = run(&request, &version, plan, &mut cleanup, stdio);

    // A failed restore may leave CRIU's lock in the target's network namespace.
    let mut problems = Vec::new();
    if let Err(err) = &result
        && matches!(err, RestoreError::Criu(_) | RestoreError::Cancelled)
        && network_lock != Some(NetworkLock::Skip)
        && let Some(netns) = path_of(&request.namespaces, NamespaceType::Network)
        && let Err(e) = netlock::remove_lock(netns, &request.lock_tools)
    {
        problems.push(e.to_string());
    }
    problems.extend(cleanup.finish());
    match result {
        Ok(mut outcome) => {
            outcome.warnings.extend(problems);
            outcome.timings.total = started.elapsed();
            for warning in &outcome.warnings {
                tracing::warn!(pid = outcome.pid, "{warning}");
            }
            Ok(outcome)
        }
        Err(error) if problems.is_empty() => Err(error),
        Err(error) => Err(RestoreError::WithCleanup {
            error: Box::new(error),
            cleanup: problems,
        }),
    }
}

fn run(
    request: &RestoreRequest,
    version: &CriuVersion,
    mut plan: crate::criu::options::RestorePlan<OwnedFd>,
    cleanup: &mut Cleanup,
    stdio: [Option<OwnedFd>; 3],
) -> Result<RestoreOutcome, RestoreError> {
    let work = cleanup
        .work
        .as_ref()
        .map(|w| w.path().to_owned())
        .ok_or_else(|| RestoreError::Checkpoint("no work directory".to_owned()))?;
    let mut warnings = Vec::new();

    let extract_started = Instant::now();
    let (images, digest, descriptors) = match &request.source {
        CheckpointSource::Archive(archive) => {
            let extracted =
                archive::extract_checkpoint(archive, &work.join(EXTRACTED), &request.limits)?;
            check_archive(request, &extracted, &mut warnings)?;
            (
                extracted.extracted.root.join(names::CHECKPOINT_DIR),
                Some(extracted.extracted.digest),
                extracted.metadata.descriptors,
            )
        }
        CheckpointSource::Images(images) => (images.clone(), None, read_descriptors(images)?),
    };
    let names = image_names(&images)?;
    let streams = tcp_streams(&names);
    if streams > 0 && !request.flags.tcp_established && !request.tcp_close {
        return Err(RestoreError::Checkpoint(format!(
            "the checkpoint holds {streams} established TCP connection{s} (tcp-stream-*.img); \
             they are restored only when asked: pass --tcp-established (or --tcp-close to restore them closed)",
            s = if streams == 1 { "" } else { "s" }
        )));
    }
    if request.root.is_none() && has_mount_namespace(&names) {
        return Err(RestoreError::Checkpoint(
            "the checkpoint holds a mount namespace of its own: give the container's root file system to restore onto".to_owned(),
        ));
    }
    let descriptors = descriptors.ok_or_else(|| {
        RestoreError::Checkpoint(format!(
            "{} is missing from the checkpoint; runc's restore needs it",
            names::DESCRIPTORS
        ))
    })?;
    // runc's order: namespace inherit fds, then the stdio pipes.
    plan.opts.inherit_fd.extend(pipe_inherit_fds(&descriptors));
    let extract = extract_started.elapsed();
    cancelled(&request.cancel)?;

    if let Some(root) = &request.root {
        let target = work.join(CRIU_ROOT);
        DirBuilder::new()
            .mode(0o755)
            .create(&target)
            .map_err(|source| RestoreError::Io {
                action: "creating",
                path: target.clone(),
                source,
            })?;
        mount::bind_recursive(root, &target).map_err(|source| RestoreError::Io {
            action: "bind-mounting the root on",
            path: target.clone(),
            source,
        })?;
        cleanup.mounted = Some(target.clone());
        let resolved = fs::canonicalize(&target).map_err(|source| RestoreError::Io {
            action: "resolving",
            path: target.clone(),
            source,
        })?;
        plan.opts.root = Some(resolved.to_string_lossy().into_owned());
    }

    let images_dir = open_dir(&images)?;
    let work_dir = open_dir(&work)?;
    plan.opts.images_dir_fd = images_dir.as_raw_fd();
    plan.opts.work_dir_fd = Some(work_dir.as_raw_fd());
    let call = CriuCall {
        opts: plan.opts,
        inherit: plan.files.iter().map(AsFd::as_fd).collect(),
        stdio,
        log_path: Some(work.join(RESTORE_LOG)),
    };
    let mut notifier = Notifier {
        cancel: request.cancel.clone(),
    };
    let criu_started = Instant::now();
    let restored = request.criu.restore(call, &mut notifier);
    let criu = criu_started.elapsed();
    let restored = match restored {
        Ok(r) => r,
        Err(e) if matches!(e.inner(), CriuError::Handler(_)) && is_cancelled(&request.cancel) => {
            return Err(RestoreError::Cancelled);
        }
        Err(e) => return Err(RestoreError::Criu(e)),
    };
    Ok(RestoreOutcome {
        pid: restored.pid,
        start_ticks: procinfo::start_ticks(Path::new("/proc"), restored.pid).ok(),
        criu_version: version.to_string(),
        archive: digest,
        timings: Timings {
            extract,
            criu,
            total: Duration::ZERO,
        },
        warnings,
    })
}

/// `descriptors.json` of an images directory, if it has one.
fn read_descriptors(images: &Path) -> Result<Option<Vec<String>>, RestoreError> {
    let path = images.join(DESCRIPTORS_FILE);
    match fs::read(&path) {
        Ok(bytes) => Ok(Some(
            metadata::parse_descriptors(&bytes).map_err(ArchiveError::from)?,
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(RestoreError::Io {
            action: "reading",
            path,
            source,
        }),
    }
}

/// What a restore cannot do with this archive, found before CRIU runs.
fn check_archive(
    request: &RestoreRequest,
    extracted: &archive::ExtractedCheckpoint,
    warnings: &mut Vec<String>,
) -> Result<(), RestoreError> {
    let unmapped: Vec<&str> = extracted
        .mounts
        .bind_mount_destinations()
        .into_iter()
        .filter(|dest| !request.ext_mounts.iter().any(|(key, _)| key == dest))
        .collect();
    if !unmapped.is_empty() {
        return Err(RestoreError::Checkpoint(format!(
            "the checkpointed container had bind mounts at {}; map each to a path on this node (an external mount) to restore it",
            unmapped.join(", ")
        )));
    }
    if extracted.extracted.root.join(names::ROOTFS_DIFF).is_file() {
        warnings.push(format!(
            "the archive's {} was not applied: the restore uses the root file system as it is",
            names::ROOTFS_DIFF
        ));
    }
    Ok(())
}

/// The names of the files in the images directory, listed once for the
/// checks that read them.
fn image_names(images: &Path) -> Result<Vec<String>, RestoreError> {
    let entries = fs::read_dir(images).map_err(|source| RestoreError::Io {
        action: "listing",
        path: images.to_owned(),
        source,
    })?;
    Ok(entries
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect())
}

/// Whether CRIU dumped a mount namespace (it writes `mountpoints-<id>.img`
/// only for mount namespaces other than its own).
fn has_mount_namespace(names: &[String]) -> bool {
    names.iter().any(|n| n.starts_with("mountpoints-"))
}

/// How many established TCP connections the images hold: CRIU writes one
/// `tcp-stream-<id>.img` for each.
fn tcp_streams(names: &[String]) -> usize {
    names
        .iter()
        .filter(|n| n.starts_with("tcp-stream-") && n.ends_with(".img"))
        .count()
}

fn open_dir(path: &Path) -> Result<File, RestoreError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(|source| RestoreError::Io {
            action: "opening",
            path: path.to_owned(),
            source,
        })
}

fn is_cancelled(cancel: &Option<Arc<AtomicBool>>) -> bool {
    cancel.as_ref().is_some_and(|c| c.load(Ordering::SeqCst))
}

fn cancelled(cancel: &Option<Arc<AtomicBool>>) -> Result<(), RestoreError> {
    if is_cancelled(cancel) {
        Err(RestoreError::Cancelled)
    } else {
        Ok(())
    }
}

/// Acks CRIU's notifications unless the restore was cancelled: an unacked
/// notification makes CRIU abort and roll back.
struct Notifier {
    cancel: Option<Arc<AtomicBool>>,
}

impl NotifyHandler for Notifier {
    fn notify(&mut self, notification: Notification) -> Result<(), HandlerError> {
        if is_cancelled(&self.cancel) {
            return Err(format!("restore cancelled at {}", notification.script).into());
        }
        // `orphan-pts-master` hands over a terminal's master side; without a
        // console socket to pass it to, it is closed (dropped) here.
        Ok(())
    }
}

/// Everything a restore leaves to remove: the `criu-root` bind mount, then the
/// work directory (which refuses to go while anything is mounted below it).
/// Runs on drop too, so an unwinding thread cleans up as well.
struct Cleanup {
    work: Option<PrivateDir>,
    mounted: Option<PathBuf>,
}

impl Cleanup {
    fn finish(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(target) = self.mounted.take() {
            // runc's deferred `umount(MNT_DETACH)` of criu-root.
            if let Err(e) = mount::unmount_detach(&target) {
                problems.push(format!("unmounting {}: {e}", target.display()));
            }
        }
        if let Some(mut work) = self.work.take()
            && let Err(e) = work.remove()
        {
            problems.push(e.to_string());
            // Refused or failed: reported here, not tried again on drop.
            work.leave();
        }
        problems
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for problem in self.finish() {
            tracing::warn!("restore cleanup: {problem}");
        }
    }
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u128(d.as_millis())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_path_refused_before_anything_exists() {
        let parent = tempfile::tempdir().unwrap();
        let work_root = parent.path().join("work");
        let request = RestoreRequest {
            source: CheckpointSource::Archive(parent.path().join("missing.tar")),
            namespaces: vec![
                Namespace::parse_arg("ipc").unwrap(),
                Namespace::parse_arg("cgroup=/proc/self/ns/cgroup").unwrap(),
            ],
            work_root: work_root.clone(),
            criu_version: Some(CriuVersion {
                major: 4,
                minor: 2,
                sublevel: 1,
                gitid: None,
                name: None,
            }),
            ..Default::default()
        };
        let err = restore(request).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Do not know how to handle namespace NEWCGROUP"
        );
        assert!(!work_root.exists());
    }

    #[test]
    fn missing_archive_is_named() {
        let parent = tempfile::tempdir().unwrap();
        let work_root = parent.path().join("work");
        let request = RestoreRequest {
            source: CheckpointSource::Archive(parent.path().join("missing.tar")),
            work_root: work_root.clone(),
            criu_version: Some(CriuVersion {
                major: 4,
                minor: 2,
                sublevel: 1,
                gitid: None,
                name: None,
            }),
            ..Default::default()
        };
        let err = restore(request).unwrap_err().to_string();
        assert!(err.starts_with("cannot read archive "), "{err}");
        assert!(!work_root.exists());
    }

    #[test]
    fn cancelled_before_it_starts_leaves_nothing() {
        let parent = tempfile::tempdir().unwrap();
        let archive = parent.path().join("a.tar");
        fs::write(&archive, b"").unwrap();
        let work_root = parent.path().join("work");
        let request = RestoreRequest {
            source: CheckpointSource::Archive(archive),
            work_root: work_root.clone(),
            criu_version: Some(CriuVersion {
                major: 4,
                minor: 2,
                sublevel: 1,
                gitid: None,
                name: None,
            }),
            cancel: Some(Arc::new(AtomicBool::new(true))),
            ..Default::default()
        };
        let err = restore(request).unwrap_err();
        assert!(matches!(err, RestoreError::Cancelled), "{err:?}");
        assert!(!work_root.exists());
    }

    #[test]
    fn a_bad_archive_is_refused_and_its_directory_removed() {
        let parent = tempfile::tempdir().unwrap();
        let archive = parent.path().join("a.tar");
        fs::write(&archive, vec![b'x'; 1024]).unwrap();
        let work_root = parent.path().join("work");
        let request = RestoreRequest {
            source: CheckpointSource::Archive(archive),
            work_root: work_root.clone(),
            criu_version: Some(CriuVersion {
                major: 4,
                minor: 2,
                sublevel: 1,
                gitid: None,
                name: None,
            }),
            ..Default::default()
        };
        let err = restore(request).unwrap_err();
        assert!(matches!(err, RestoreError::Archive(_)), "{err:?}");
        assert_eq!(fs::read_dir(&work_root).unwrap().count(), 0);
    }

    #[test]
    fn mount_namespace_and_connections_detected_from_image_names() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("pstree.img"), b"").unwrap();
        let names = image_names(dir.path()).unwrap();
        assert!(!has_mount_namespace(&names));
        assert_eq!(tcp_streams(&names), 0);
        fs::write(dir.path().join("mountpoints-13.img"), b"").unwrap();
        fs::write(dir.path().join("tcp-stream-1a2b.img"), b"").unwrap();
        fs::write(dir.path().join("tcp-stream-3c4d.img"), b"").unwrap();
        let names = image_names(dir.path()).unwrap();
        assert!(has_mount_namespace(&names));
        assert_eq!(tcp_streams(&names), 2);
    }
}
