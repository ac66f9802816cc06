//! Checkpointing a process tree into a checkpoint archive.
//!
//! [`checkpoint`] dumps the tree rooted at a PID with runc's options
//! (`Checkpoint` in criu_linux.go): the source's network and PID namespaces
//! become CRIU externals `net[<inode>]:extRootNetNS` / `pid[<inode>]:extRootPidNS`,
//! so the images restore into another pod's namespaces; `descriptors.json`
//! records fds 0..2. The images then go into an archive in the format the
//! kubelet's checkpoint API writes through containerd (`checkpoint/`,
//! `config.dump`, `spec.dump`, `dump.log`, `stats-dump`), 0600, written to a
//! temporary file next to the output and renamed into place without ever
//! replacing an existing file.
//!
//! The network lock: unless told otherwise, the agent asks CRIU for no lock
//! when no established TCP connection is dumped ([`netlock::automatic`]): the
//! tree is frozen during the dump anyway, and the lock, installed in the pod's
//! shared network namespace, would cut off the pod's other containers for as
//! long as CRIU works. With `tcp_established` CRIU's default iptables lock is
//! kept (runc never changes it): while the tree is frozen the kernel still
//! acknowledges data for its connections, which would change their state under
//! CRIU's feet. A dump that ends the tree leaves that lock in place, a DROP-all
//! `CRIU` chain, for a restore into the same namespace to lift (measured with
//! CRIU 4.2.1); in a pod the namespace stays with the pod's other containers,
//! so after every dump the agent removes exactly CRIU's lock
//! ([`crate::netlock::remove_lock`]), whether the dump succeeded or not and
//! with or without `leave_running`. The price: peers of connections of a tree
//! that was not left running see them reset once the lock is gone, instead of
//! waiting for a restore into the same namespace.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sha2::{Digest, Sha256};

use crate::archive::metadata::{ContainerConfig, keys, names};
use crate::archive::writer::{CheckpointContents, write_archive_file};
use crate::archive::{ArchiveDigest, ArchiveError};
use crate::criu::ops::{self, DumpRequest, OpError};
use crate::criu::options::{CriuFlags, DUMP_LOG, DumpOptions, NetworkLock};
use crate::criu::{Criu, CriuError, CriuVersion, IgnoreNotifications};
use crate::namespaces::{Namespace, NamespaceType, path_of};
use crate::workdir::{PrivateDir, WorkDirError};
use crate::{netlock, procinfo};

/// Where per-operation directories go unless told otherwise.
pub const DEFAULT_WORK_ROOT: &str = "/var/lib/podrestore/work";

/// What the archive says the checkpointed container was. Written as
/// containerd's CRI annotations (which `checkpointctl` and the agent's
/// `inspect` read) and as the generic `org.criu.checkpoint.*` ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The container's name in its pod.
    pub container_name: Option<String>,
    /// The pod's name.
    pub pod_name: Option<String>,
    /// The pod's namespace.
    pub pod_namespace: Option<String>,
}

/// A checkpoint of one process tree.
#[derive(Debug, Clone)]
pub struct CheckpointRequest {
    /// The root of the tree to dump (a host PID).
    pub pid: i32,
    /// The tree's namespaces, in spec order; the network and PID paths become
    /// CRIU externals, and all of them are listed in `spec.dump`.
    pub namespaces: Vec<Namespace>,
    /// The archive to write; must not exist yet.
    pub output: PathBuf,
    /// Keep the tree running after the dump (`--leave-running`).
    pub leave_running: bool,
    /// runc's switches (`--tcp-established`, `--ext-unix-sk`, ...).
    pub flags: CriuFlags,
    /// `--manage-cgroups-mode`; runc sets it on dump only when given.
    pub manage_cgroups_mode: Option<String>,
    /// podrestore beyond runc: CRIU's network lock method on dump; `None`
    /// lets the agent choose ([`netlock::automatic`]).
    pub network_lock: Option<NetworkLock>,
    /// Where the private directory for the images is created.
    pub work_root: PathBuf,
    /// Names recorded in `spec.dump`.
    pub identity: Identity,
    /// The CRIU to run.
    pub criu: Criu,
    /// CRIU's version, when the caller knows it already; asked otherwise.
    pub criu_version: Option<CriuVersion>,
    /// The firewall tools used to remove CRIU's lock.
    pub lock_tools: netlock::Tools,
    /// `/proc`, where the process is read from.
    pub proc_root: PathBuf,
}

impl CheckpointRequest {
    /// A request with runc's defaults for everything but the essentials.
    pub fn new(pid: i32, namespaces: Vec<Namespace>, output: impl Into<PathBuf>) -> Self {
        Self {
            pid,
            namespaces,
            output: output.into(),
            leave_running: false,
            flags: CriuFlags::default(),
            manage_cgroups_mode: None,
            network_lock: None,
            work_root: PathBuf::from(DEFAULT_WORK_ROOT),
            identity: Identity::default(),
            criu: Criu::default(),
            criu_version: None,
            lock_tools: netlock::Tools::default(),
            proc_root: PathBuf::from("/proc"),
        }
    }
}

/// What a checkpoint produced.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckpointOutcome {
    /// The archive written.
    pub archive: PathBuf,
    /// Its SHA-256 and size.
    pub digest: ArchiveDigest,
    /// The CRIU version that dumped (`4.2.1`).
    pub criu_version: String,
    /// The commands that removed CRIU's lock from the source's network
    /// namespace (empty when there was none).
    pub unlocked: Vec<String>,
    /// How long CRIU's dump took.
    #[serde(with = "millis")]
    pub dump_time: Duration,
    /// Cleanup problems that did not fail the checkpoint.
    pub warnings: Vec<String>,
}

/// Errors of a checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The process to dump cannot be read.
    #[error("process {pid}: {source}")]
    Process {
        /// The PID.
        pid: i32,
        /// Why.
        source: io::Error,
    },
    /// The output exists already, or its directory does not.
    #[error("{path}: {reason}", path = .path.display())]
    Output {
        /// The output path.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// CRIU's version could not be read.
    #[error(transparent)]
    Version(CriuError),
    /// The private work directory.
    #[error(transparent)]
    WorkDir(#[from] WorkDirError),
    /// The dump (runc's option rules, CRIU itself).
    #[error(transparent)]
    Dump(#[from] OpError),
    /// Writing the archive.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// CRIU's network lock could not be removed from the source's namespace;
    /// the checkpoint itself may have succeeded.
    #[error("{}CRIU's network lock could not be removed from the source network namespace: {source}", written(.archive.as_deref()))]
    Unlock {
        /// The archive, when it was written.
        archive: Option<PathBuf>,
        /// Why.
        source: netlock::NetLockError,
    },
    /// An error, and the lock removal that failed after it.
    #[error(
        "{error}; also, CRIU's network lock could not be removed from the source network namespace: {unlock}"
    )]
    AndUnlock {
        /// The first error.
        error: Box<CheckpointError>,
        /// The lock removal error.
        unlock: netlock::NetLockError,
    },
}

fn written(archive: Option<&Path>) -> String {
    archive
        .map(|a| format!("the checkpoint was written to {}, but ", a.display()))
        .unwrap_or_default()
}

/// Dumps the tree rooted at `request.pid` and writes the archive. See the
/// module documentation for the steps and the network lock.
pub fn checkpoint(request: CheckpointRequest) -> Result<CheckpointOutcome, CheckpointError> {
    let version = match &request.criu_version {
        Some(v) => v.clone(),
        None => request.criu.version().map_err(CheckpointError::Version)?,
    };
    let process = ProcessInfo::read(&request.proc_root, request.pid)?;
    check_output(&request.output)?;
    let netns = path_of(&request.namespaces, NamespaceType::Network).map(Path::to_owned);

    let mut work = PrivateDir::create(&request.work_root, "checkpoint")?;
    let started = Instant::now();
    let result = dump_and_write(&request, &version, &process, work.path());
    let dump_time = started.elapsed();

    // The lock goes whatever happened: a failed dump may leave it too.
    let unlocked = netns
        .as_deref()
        .map(|ns| netlock::remove_lock(ns, &request.lock_tools))
        .transpose();
    let mut warnings = Vec::new();
    if let Err(err) = work.remove() {
        warnings.push(err.to_string());
    }
    match (result, unlocked) {
        (Ok(digest), Ok(unlocked)) => Ok(CheckpointOutcome {
            archive: request.output.clone(),
            digest,
            criu_version: version.to_string(),
            unlocked: unlocked.unwrap_or_default(),
            dump_time,
            warnings,
        }),
        (Ok(_), Err(source)) => Err(CheckpointError::Unlock {
            archive: Some(request.output.clone()),
            source,
        }),
        (Err(error), Ok(_)) => Err(error),
        (Err(error), Err(unlock)) => Err(CheckpointError::AndUnlock {
            error: Box::new(error),
            unlock,
        }),
    }
}

fn dump_and_write(
    request: &CheckpointRequest,
    version: &CriuVersion,
    process: &ProcessInfo,
    work: &Path,
) -> Result<ArchiveDigest, CheckpointError> {
    let images = work.join(names::CHECKPOINT_DIR);
    let dump = DumpRequest {
        images_dir: images.clone(),
        work_dir: Some(work.to_owned()),
        namespaces: request.namespaces.clone(),
        options: DumpOptions {
            pid: request.pid,
            flags: request.flags,
            leave_running: request.leave_running,
            manage_cgroups_mode: request.manage_cgroups_mode.clone(),
            network_lock: request
                .network_lock
                .or_else(|| netlock::automatic(version.number(), request.flags.tcp_established)),
            ..Default::default()
        },
    };
    ops::dump(
        &request.criu,
        version.number(),
        dump,
        &mut IgnoreNotifications,
    )?;

    let checkpointed = unix_now();
    let config = container_config(request, process, checkpointed);
    let spec = spec_dump(request, version, process);
    let spec = serde_json::to_vec_pretty(&spec).map_err(|e| ArchiveError::Io {
        action: "encoding",
        path: PathBuf::from(names::SPEC_DUMP),
        source: io::Error::other(e),
    })?;
    let dump_log = work.join(DUMP_LOG);
    // CRIU writes its statistics into its working directory (the work
    // directory when one is given).
    let stats = [work.join(names::STATS_DUMP), images.join(names::STATS_DUMP)]
        .into_iter()
        .find(|p| p.is_file());
    let contents = CheckpointContents {
        images_dir: &images,
        config: &config,
        spec_dump: &spec,
        rootfs_diff: None,
        dump_log: dump_log.is_file().then_some(dump_log.as_path()),
        stats_dump: stats.as_deref(),
        extra_files: Vec::new(),
    };
    write_atomically(&contents, &request.output)
}

/// Writes the archive to a temporary file in the output's directory and
/// renames it to `output` with `RENAME_NOREPLACE`: readers never see a partial
/// archive, and an existing file is never replaced.
fn write_atomically(
    contents: &CheckpointContents<'_>,
    output: &Path,
) -> Result<ArchiveDigest, CheckpointError> {
    let temp = temp_sibling(output);
    let digest = write_archive_file(contents, &temp)?;
    let renamed = nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &temp,
        nix::fcntl::AT_FDCWD,
        output,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    );
    if let Err(errno) = renamed {
        if let Err(e) = std::fs::remove_file(&temp) {
            tracing::warn!(path = %temp.display(), "removing the temporary archive: {e}");
        }
        return Err(CheckpointError::Output {
            path: output.to_owned(),
            reason: format!("cannot move the archive into place: {errno}"),
        });
    }
    Ok(digest)
}

fn temp_sibling(output: &Path) -> PathBuf {
    let mut name = OsString::from(".");
    name.push(output.file_name().unwrap_or_default());
    name.push(format!(".{}.partial", std::process::id()));
    output.with_file_name(name)
}

fn check_output(output: &Path) -> Result<(), CheckpointError> {
    let fail = |reason: &str| CheckpointError::Output {
        path: output.to_owned(),
        reason: reason.to_owned(),
    };
    if output.file_name().is_none() {
        return Err(fail("not a file name"));
    }
    if std::fs::symlink_metadata(output).is_ok() {
        return Err(fail("exists already; a checkpoint never replaces a file"));
    }
    let parent = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !parent.is_dir() {
        return Err(fail("its directory does not exist"));
    }
    Ok(())
}

/// What the metadata says about the dumped process, read before the dump ends
/// it.
#[derive(Debug, Clone)]
struct ProcessInfo {
    args: Vec<String>,
    cwd: PathBuf,
    comm: String,
    started: Option<i64>,
}

impl ProcessInfo {
    fn read(proc_root: &Path, pid: i32) -> Result<Self, CheckpointError> {
        let fail = |source| CheckpointError::Process { pid, source };
        let comm = procinfo::comm(proc_root, pid).map_err(fail)?;
        Ok(Self {
            args: procinfo::cmdline(proc_root, pid).map_err(fail)?,
            cwd: procinfo::cwd(proc_root, pid).map_err(fail)?,
            comm,
            started: procinfo::start_time_unix(proc_root, pid).ok(),
        })
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// `config.dump`: an id derived from the process and the time (64 hex digits,
/// as container ids are), the container name, and the times.
fn container_config(
    request: &CheckpointRequest,
    process: &ProcessInfo,
    checkpointed: i64,
) -> ContainerConfig {
    let mut hasher = Sha256::new();
    hasher.update(request.pid.to_le_bytes());
    hasher.update(process.started.unwrap_or_default().to_le_bytes());
    hasher.update(checkpointed.to_le_bytes());
    hasher.update(process.comm.as_bytes());
    ContainerConfig {
        id: hex::encode(hasher.finalize()),
        name: request
            .identity
            .container_name
            .clone()
            .unwrap_or_else(|| process.comm.clone()),
        runtime: "podrestore-agent".to_owned(),
        created_time: process.started.map(procinfo::rfc3339),
        checkpointed_time: Some(procinfo::rfc3339(checkpointed)),
        ..ContainerConfig::default()
    }
}

/// `spec.dump`: the process, the root, the namespaces in the order given and
/// the identity annotations. Namespace paths name the source node's files; a
/// restore never uses them.
fn spec_dump(
    request: &CheckpointRequest,
    version: &CriuVersion,
    process: &ProcessInfo,
) -> serde_json::Value {
    let mut annotations = BTreeMap::new();
    let id = &request.identity;
    let container = id
        .container_name
        .clone()
        .unwrap_or_else(|| process.comm.clone());
    annotations.insert(keys::CRI_CONTAINER_NAME, container.clone());
    annotations.insert(keys::CHECKPOINT_CONTAINER_NAME, container);
    if let Some(pod) = &id.pod_name {
        annotations.insert(keys::CRI_SANDBOX_NAME, pod.clone());
        annotations.insert(keys::CHECKPOINT_POD_NAME, pod.clone());
    }
    if let Some(ns) = &id.pod_namespace {
        annotations.insert(keys::CRI_SANDBOX_NAMESPACE, ns.clone());
        annotations.insert(keys::CHECKPOINT_POD_NAMESPACE, ns.clone());
    }
    annotations.insert(keys::CHECKPOINT_CRIU_VERSION, version.to_string());
    let namespaces: Vec<serde_json::Value> = request
        .namespaces
        .iter()
        .map(|ns| match ns.path() {
            Some(path) => json!({ "type": ns.kind.oci_name(), "path": path }),
            None => json!({ "type": ns.kind.oci_name() }),
        })
        .collect();
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": request.flags.shell_job,
            "args": process.args,
            "cwd": process.cwd,
        },
        "root": { "path": "/" },
        "mounts": [],
        "annotations": annotations,
        "linux": { "namespaces": namespaces },
    })
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
    use crate::archive::metadata::parse_spec;

    fn process() -> ProcessInfo {
        ProcessInfo {
            args: vec!["sh".into(), "-c".into(), "sleep 1".into()],
            cwd: "/srv".into(),
            comm: "sh".into(),
            started: Some(1_735_787_045),
        }
    }

    #[test]
    fn spec_dump_names_the_pod_and_lists_namespaces_in_order() {
        let mut request = CheckpointRequest::new(
            42,
            vec![
                Namespace::parse_arg("pid=/proc/7/ns/pid").unwrap(),
                Namespace::parse_arg("network=/run/netns/a").unwrap(),
                Namespace::parse_arg("mount").unwrap(),
            ],
            "/tmp/x.tar",
        );
        request.identity = Identity {
            container_name: Some("counter".into()),
            pod_name: Some("pod-a".into()),
            pod_namespace: Some("default".into()),
        };
        let version = CriuVersion::try_from(&podrestore_proto::criu::CriuVersion {
            major_number: 4,
            minor_number: 2,
            sublevel: Some(1),
            ..Default::default()
        })
        .unwrap();
        let spec = spec_dump(&request, &version, &process());
        let parsed = parse_spec(&serde_json::to_vec(&spec).unwrap()).unwrap();
        let identity = parsed.identity();
        assert_eq!(identity.container_name.as_deref(), Some("counter"));
        assert_eq!(identity.pod_name.as_deref(), Some("pod-a"));
        assert_eq!(identity.pod_namespace.as_deref(), Some("default"));
        assert_eq!(parsed.criu_version().as_deref(), Some("4.2.1"));
        let kinds: Vec<(&str, Option<&str>)> = parsed
            .namespaces()
            .iter()
            .map(|n| (n.kind.as_str(), n.path.as_deref()))
            .collect();
        assert_eq!(
            kinds,
            [
                ("pid", Some("/proc/7/ns/pid")),
                ("network", Some("/run/netns/a")),
                ("mount", None)
            ]
        );
        // Nothing in it asks a restore for more than it grants.
        crate::archive::policy::review(&parsed)
            .ensure_restorable()
            .unwrap();
    }

    #[test]
    fn config_dump_defaults_to_the_command_name() {
        let request = CheckpointRequest::new(42, vec![], "/tmp/x.tar");
        let config = container_config(&request, &process(), 1_735_790_000);
        assert_eq!(config.name, "sh");
        assert_eq!(config.id.len(), 64);
        assert_eq!(config.created_time.as_deref(), Some("2025-01-02T03:04:05Z"));
        assert_eq!(
            config.checkpointed_time.as_deref(),
            Some("2025-01-02T03:53:20Z")
        );
    }

    #[test]
    fn output_must_be_new_and_in_an_existing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let existing = dir.path().join("a.tar");
        std::fs::write(&existing, b"").unwrap();
        let err = check_output(&existing).unwrap_err().to_string();
        assert!(err.ends_with("exists already; a checkpoint never replaces a file"));
        let err = check_output(&dir.path().join("missing/b.tar"))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("its directory does not exist"), "{err}");
        check_output(&dir.path().join("c.tar")).unwrap();
        assert_eq!(
            temp_sibling(&dir.path().join("c.tar")),
            dir.path()
                .join(format!(".c.tar.{}.partial", std::process::id()))
        );
    }
}
