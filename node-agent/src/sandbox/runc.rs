//! runc as the reference peer: OCI bundles whose namespaces are a sandbox's, and
//! the `runc` commands a container runtime would run for a checkpoint and a
//! restore.
//!
//! runc keeps its state under a root of our own (`runc --root`), never in the
//! host's `/run/runc`. The container's stdio are files, not pipes: a detached
//! container keeps them open, so a pipe would never reach end of file.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{SandboxError, describe_command, io_err, procfs, require_tool};

/// A namespace entry of a bundle's `linux.namespaces`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OciNamespace {
    /// The OCI type (`pid`, `network`, `ipc`, `uts`, `mount`, `cgroup`, ...).
    pub kind: String,
    /// The namespace to join; `None` asks for a new one.
    pub path: Option<PathBuf>,
}

impl OciNamespace {
    /// An entry of type `kind` joining `path`, or new when `path` is `None`.
    pub fn new(kind: &str, path: Option<PathBuf>) -> Self {
        OciNamespace {
            kind: kind.to_owned(),
            path,
        }
    }

    /// The entries that put a container in a sandbox, as a pod runtime writes
    /// them (pid, network, ipc, uts with paths), followed by a new mount namespace.
    pub fn for_sandbox(sandbox: &super::Sandbox) -> Vec<OciNamespace> {
        let mut namespaces: Vec<OciNamespace> = sandbox
            .namespaces()
            .into_iter()
            .map(|(kind, path)| OciNamespace::new(kind.oci_name(), Some(path)))
            .collect();
        namespaces.push(OciNamespace::new("mount", None));
        namespaces
    }
}

/// What goes into a bundle's `config.json`.
#[derive(Debug, Clone)]
pub struct BundleSpec {
    /// The root filesystem (absolute); see `workload::prepare_busybox_rootfs`.
    pub rootfs: PathBuf,
    /// The container's command.
    pub args: Vec<String>,
    /// `linux.namespaces`, in order.
    pub namespaces: Vec<OciNamespace>,
    /// `linux.cgroupsPath`, e.g. `/podrestore-<id>`.
    pub cgroups_path: String,
}

impl BundleSpec {
    /// A busybox shell running `script` as PID `n` of the sandbox's namespaces.
    /// The script starts with its stdio reopened on the container's `/dev/null`,
    /// so the checkpoint holds no fd on a file of the host.
    pub fn shell_in_sandbox(
        rootfs: &Path,
        sandbox: &super::Sandbox,
        id: &str,
        script: &str,
    ) -> Self {
        BundleSpec {
            rootfs: rootfs.to_path_buf(),
            args: vec![
                "/bin/sh".to_owned(),
                "-c".to_owned(),
                format!("exec </dev/null >/dev/null 2>&1\n{script}"),
            ],
            namespaces: OciNamespace::for_sandbox(sandbox),
            cgroups_path: format!("/podrestore-{id}"),
        }
    }

    /// The OCI runtime config: runc's default spec cut down to `/proc` and a
    /// tmpfs `/dev`, no terminal, and the given namespaces.
    pub fn config(&self) -> Value {
        let namespaces: Vec<Value> = self
            .namespaces
            .iter()
            .map(|ns| match &ns.path {
                Some(path) => json!({ "type": ns.kind, "path": path }),
                None => json!({ "type": ns.kind }),
            })
            .collect();
        let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
        json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": { "uid": 0, "gid": 0 },
                "args": self.args,
                "env": ["PATH=/bin"],
                "cwd": "/",
                "capabilities": {
                    "bounding": caps, "effective": caps, "permitted": caps
                },
                "noNewPrivileges": true
            },
            "root": { "path": self.rootfs, "readonly": false },
            "mounts": [
                { "destination": "/proc", "type": "proc", "source": "proc" },
                {
                    "destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                    "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
                }
            ],
            "linux": {
                "namespaces": namespaces,
                "cgroupsPath": self.cgroups_path,
                "resources": { "devices": [{ "allow": false, "access": "rwm" }] }
            }
        })
    }

    /// Writes `dir/config.json` and returns `dir`.
    pub fn write(&self, dir: &Path) -> Result<PathBuf, SandboxError> {
        fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        let path = dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.config()).map_err(|err| {
            SandboxError::Unexpected(format!("cannot serialise {}: {err}", path.display()))
        })?;
        fs::write(&path, text).map_err(io_err("write", &path))?;
        Ok(dir.to_path_buf())
    }
}

/// The `runc` command with a state root of its own.
#[derive(Debug, Clone)]
pub struct Runc {
    binary: PathBuf,
    root: PathBuf,
    logs: PathBuf,
}

/// What `runc state` says about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuncState {
    /// `created`, `running`, `stopped`, ...
    pub status: String,
    /// The host PID of the container's init.
    pub pid: u32,
}

impl Runc {
    /// runc from PATH, keeping state under `root` and command output under `logs`.
    pub fn new(root: impl Into<PathBuf>, logs: impl Into<PathBuf>) -> Result<Self, SandboxError> {
        let runc = Runc {
            binary: require_tool("runc")?,
            root: root.into(),
            logs: logs.into(),
        };
        fs::create_dir_all(&runc.root).map_err(io_err("create", &runc.root))?;
        fs::create_dir_all(&runc.logs).map_err(io_err("create", &runc.logs))?;
        Ok(runc)
    }

    /// The command `runc --root <root> <args>`, stdio on files under the log
    /// directory (the container or the restored process inherit them).
    pub fn command(&self, step: &str, args: &[&str]) -> Result<(Command, PathBuf), SandboxError> {
        let out_path = self.logs.join(format!("{step}.out"));
        let out = fs::File::create(&out_path).map_err(io_err("create", &out_path))?;
        let err = out.try_clone().map_err(io_err("open", &out_path))?;
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root")
            .arg(&self.root)
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        Ok((cmd, out_path))
    }

    /// Runs `runc <args>`; failure carries what runc printed. Returns the wall time.
    pub fn exec(&self, step: &str, args: &[&str]) -> Result<Duration, SandboxError> {
        let (mut cmd, out_path) = self.command(step, args)?;
        let started = Instant::now();
        let status = cmd.status().map_err(|source| SandboxError::Spawn {
            command: describe_command(&cmd),
            source,
        })?;
        let took = started.elapsed();
        if status.success() {
            Ok(took)
        } else {
            Err(SandboxError::CommandFailed {
                command: describe_command(&cmd),
                status: status.to_string(),
                output: fs::read_to_string(&out_path)
                    .unwrap_or_default()
                    .trim()
                    .to_owned(),
            })
        }
    }

    /// `runc run -d`: creates and starts the container of `bundle`.
    pub fn run_detached(&self, id: &str, bundle: &Path) -> Result<(), SandboxError> {
        let bundle = bundle.to_string_lossy();
        self.exec(
            &format!("run-{id}"),
            &["run", "-d", "--bundle", &bundle, id],
        )
        .map(drop)
    }

    /// `runc state`.
    pub fn state(&self, id: &str) -> Result<RuncState, SandboxError> {
        let (mut cmd, _) = self.command(&format!("state-{id}"), &["state", id])?;
        let output = super::run(cmd.stdout(Stdio::piped()))?;
        let value: Value = serde_json::from_slice(&output.stdout).map_err(|err| {
            SandboxError::Unexpected(format!("runc state {id} printed no JSON: {err}"))
        })?;
        Ok(RuncState {
            status: value["status"].as_str().unwrap_or_default().to_owned(),
            pid: value["pid"]
                .as_u64()
                .and_then(|pid| u32::try_from(pid).ok())
                .unwrap_or_default(),
        })
    }

    /// `runc checkpoint --image-path <images> --work-path <work> [--leave-running]`.
    /// Without `leave_running` the container's init is then reaped: a detached
    /// container's init is adopted by the nearest subreaper, which may be us.
    pub fn checkpoint(
        &self,
        id: &str,
        images: &Path,
        work: &Path,
        leave_running: bool,
    ) -> Result<(), SandboxError> {
        let images = images.to_string_lossy();
        let work = work.to_string_lossy();
        let mut args = vec!["checkpoint", "--image-path", &images, "--work-path", &work];
        if leave_running {
            args.push("--leave-running");
        }
        args.push(id);
        let pid = self.state(id)?.pid;
        self.exec(&format!("checkpoint-{id}"), &args)?;
        if !leave_running && pid != 0 {
            super::reap(pid, Duration::from_secs(10))?;
        }
        Ok(())
    }

    /// `runc restore -d` of `images` as container `id` with the config of `bundle`.
    /// Returns the wall time of the command.
    pub fn restore_detached(
        &self,
        id: &str,
        bundle: &Path,
        images: &Path,
        work: &Path,
    ) -> Result<Duration, SandboxError> {
        let bundle = bundle.to_string_lossy();
        let images = images.to_string_lossy();
        let work = work.to_string_lossy();
        self.exec(
            &format!("restore-{id}"),
            &[
                "restore",
                "-d",
                "--image-path",
                &images,
                "--work-path",
                &work,
                "--bundle",
                &bundle,
                id,
            ],
        )
    }

    /// Kills the container's processes and deletes it; a container that does not
    /// exist is fine. Every step is attempted.
    pub fn remove(&self, id: &str) -> Result<(), SandboxError> {
        let pid = self.state(id).map(|state| state.pid).unwrap_or_default();
        let mut errors = Vec::new();
        if let Err(err) = self.exec(&format!("delete-{id}"), &["delete", "--force", id]) {
            let gone = matches!(&err, SandboxError::CommandFailed { output, .. } if output.contains("does not exist"));
            if !gone {
                errors.push(err);
            }
        }
        // A restored init is our child (adopted); runc does not reap it.
        if pid != 0
            && procfs::exists(pid)
            && let Err(err) = super::kill_and_reap(pid, Duration::from_secs(10))
        {
            errors.push(err);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SandboxError::Teardown {
                name: format!("runc container {id}"),
                errors,
            })
        }
    }
}

/// Removes the cgroup `path` (as in `cgroupsPath`) from every hierarchy under
/// `/sys/fs/cgroup` where it exists, deepest directories first. A cgroup still
/// holding processes is an error.
pub fn remove_cgroup(path: &str) -> Result<(), SandboxError> {
    let relative = path.trim_start_matches('/');
    if relative.is_empty() {
        return Err(SandboxError::Unexpected(
            "refusing to remove the root cgroup".to_owned(),
        ));
    }
    let mut errors = Vec::new();
    let hierarchies = fs::read_dir("/sys/fs/cgroup").map_err(io_err("list", "/sys/fs/cgroup"))?;
    let mut roots: Vec<PathBuf> = hierarchies.filter_map(|e| Some(e.ok()?.path())).collect();
    // cgroup v2 mounted directly on /sys/fs/cgroup.
    roots.push(PathBuf::from("/sys/fs/cgroup"));
    for root in roots {
        let dir = root.join(relative);
        if dir.is_dir()
            && let Err(err) = remove_cgroup_tree(&dir)
        {
            errors.push(err);
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SandboxError::Teardown {
            name: format!("cgroup {path}"),
            errors,
        })
    }
}

fn remove_cgroup_tree(dir: &Path) -> Result<(), SandboxError> {
    let entries = fs::read_dir(dir).map_err(io_err("list", dir))?;
    for entry in entries.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path())?;
        }
    }
    fs::remove_dir(dir).map_err(io_err("remove cgroup", dir))
}
