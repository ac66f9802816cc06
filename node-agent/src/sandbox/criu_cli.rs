//! The bare `criu` command lines equivalent to what runc asks CRIU for, as the
//! baseline a restore is timed against and as a way to make checkpoint images of
//! sandbox workloads without any runtime.
//!
//! What the command line cannot express of runc's request (notify scripts, the
//! orphan pts master) is left out; both only matter with hooks or a terminal.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Sandbox, SandboxError, SandboxNs, describe_command, io_err, require_tool};

/// The external keys runc gives the sandbox's network and PID namespaces.
pub const EXT_ROOT_NET: &str = "extRootNetNS";
/// See [`EXT_ROOT_NET`].
pub const EXT_ROOT_PID: &str = "extRootPidNS";

/// `criu dump` of the tree rooted at `pid`, with the sandbox's network and PID
/// namespaces marked external under runc's keys (`net[<inode>]:extRootNetNS`,
/// `pid[<inode>]:extRootPidNS`), as runc's checkpoint does.
#[derive(Debug, Clone)]
pub struct DumpCli {
    /// The root of the tree to dump.
    pub pid: u32,
    /// Where the images go.
    pub images: PathBuf,
    /// Where `dump.log` goes.
    pub work_dir: PathBuf,
    /// The network namespace inode to mark external.
    pub net_inode: u64,
    /// The PID namespace inode to mark external.
    pub pid_inode: u64,
    /// Keep the tree running after the dump.
    pub leave_running: bool,
}

impl DumpCli {
    /// The dump of `pid`, a process of `source`.
    pub fn of(pid: u32, source: &Sandbox, images: &Path, work_dir: &Path) -> Self {
        DumpCli {
            pid,
            images: images.to_path_buf(),
            work_dir: work_dir.to_path_buf(),
            net_inode: source.ns_inode(SandboxNs::Network),
            pid_inode: source.ns_inode(SandboxNs::Pid),
            leave_running: false,
        }
    }

    /// The command line.
    pub fn command(&self) -> Result<Command, SandboxError> {
        let mut cmd = Command::new(require_tool("criu")?);
        cmd.arg("dump")
            .arg("-t")
            .arg(self.pid.to_string())
            .arg("-D")
            .arg(&self.images)
            .arg("-W")
            .arg(&self.work_dir)
            .args(["-o", "dump.log", "-v4"])
            .arg("--external")
            .arg(format!("net[{}]:{EXT_ROOT_NET}", self.net_inode))
            .arg("--external")
            .arg(format!("pid[{}]:{EXT_ROOT_PID}", self.pid_inode));
        if self.leave_running {
            cmd.arg("--leave-running");
        }
        Ok(cmd)
    }

    /// Runs the dump; failure carries the error lines of `dump.log`.
    pub fn run(&self) -> Result<Duration, SandboxError> {
        for dir in [&self.images, &self.work_dir] {
            fs::create_dir_all(dir).map_err(io_err("create", dir))?;
        }
        let mut cmd = self.command()?;
        timed(&mut cmd, &self.work_dir.join("dump.log"))
    }
}

/// `criu restore` with the options runc 1.1+ sends for a restore into a
/// sandbox's namespaces (runc's `Restore`, `criu_linux.go`):
///
/// - `-d --restore-sibling` (swrk forces detach; runc asks for `rst_sibling`),
/// - `--evasive-devices`, `-v4 -o restore.log`, `--manage-cgroups=soft`,
/// - `--empty-ns net` (the runc CLI always sets it),
/// - `--root` when the tree has a mount namespace of its own,
/// - the target's network and PID namespaces as `--inherit-fd fd[N]:extRoot*NS`
///   with fds from 4 in config order, IPC and UTS as `--join-ns`,
/// - `--cgroup-root` where runc sends a `cg_root` per controller.
///
/// The namespace files are opened at fds 4, 5 by a `sh` that then execs CRIU,
/// the only way to place fds at chosen numbers without a fork hook; it costs
/// about a millisecond of the measured time.
#[derive(Debug, Clone)]
pub struct RestoreCli {
    /// The images to restore.
    pub images: PathBuf,
    /// Where `restore.log` and the PID file go.
    pub work_dir: PathBuf,
    /// `--root`, for a tree with its own mount namespace.
    pub root: Option<PathBuf>,
    /// `(external key, namespace file)`, given fds 4, 5, ... in this order.
    pub inherit: Vec<(&'static str, PathBuf)>,
    /// `(ns, file)` pairs for `--join-ns`.
    pub join: Vec<(&'static str, PathBuf)>,
    /// `--cgroup-root`.
    pub cgroup_root: Option<String>,
}

/// A process tree restored by [`RestoreCli::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// The host PID of the restored root.
    pub pid: u32,
    /// How long the `criu restore` command took.
    pub took: Duration,
}

impl RestoreCli {
    /// The restore runc would ask for into `target` (pid, network, ipc, uts in
    /// runc's config order).
    pub fn into_sandbox(images: &Path, work_dir: &Path, target: &Sandbox) -> Self {
        let mut restore = RestoreCli {
            images: images.to_path_buf(),
            work_dir: work_dir.to_path_buf(),
            root: None,
            inherit: Vec::new(),
            join: Vec::new(),
            cgroup_root: None,
        };
        for (kind, path) in target.namespaces() {
            match kind {
                SandboxNs::Network => restore.inherit.push((EXT_ROOT_NET, path)),
                SandboxNs::Pid => restore.inherit.push((EXT_ROOT_PID, path)),
                SandboxNs::Ipc => restore.join.push(("ipc", path)),
                SandboxNs::Uts => restore.join.push(("uts", path)),
            }
        }
        restore
    }

    /// The PID file CRIU writes the restored root's PID to.
    pub fn pid_file(&self) -> PathBuf {
        self.work_dir.join("restored.pid")
    }

    /// The command line (`sh -c 'exec 4<… 5<…; exec criu restore …'`).
    pub fn command(&self) -> Result<Command, SandboxError> {
        let criu = require_tool("criu")?;
        let sh = require_tool("sh")?;
        let mut opens = String::new();
        for (index, _) in self.inherit.iter().enumerate() {
            // "$1" is the first namespace file, opened at fd 4.
            opens.push_str(&format!("exec {}<\"${}\"\n", index + 4, index + 1));
        }
        let script = format!("{opens}shift {}\nexec \"$@\"\n", self.inherit.len());
        let mut cmd = Command::new(sh);
        cmd.arg("-c").arg(script).arg("criu-restore");
        for (_, path) in &self.inherit {
            cmd.arg(path);
        }
        cmd.arg(criu)
            .arg("restore")
            .arg("-D")
            .arg(&self.images)
            .arg("-W")
            .arg(&self.work_dir)
            .args(["-o", "restore.log", "-v4", "-d", "--restore-sibling"])
            .args([
                "--evasive-devices",
                "--manage-cgroups=soft",
                "--empty-ns",
                "net",
            ])
            .arg("--pidfile")
            .arg(self.pid_file());
        if let Some(root) = &self.root {
            cmd.arg("--root").arg(root);
        }
        for (index, (key, _)) in self.inherit.iter().enumerate() {
            cmd.arg("--inherit-fd")
                .arg(format!("fd[{}]:{key}", index + 4));
        }
        for (ns, path) in &self.join {
            cmd.arg("--join-ns").arg(format!("{ns}:{}", path.display()));
        }
        if let Some(cgroup_root) = &self.cgroup_root {
            cmd.arg("--cgroup-root").arg(cgroup_root);
        }
        Ok(cmd)
    }

    /// Runs the restore. The restored root is our child (`--restore-sibling`);
    /// kill it with `kill_and_reap`.
    pub fn run(&self) -> Result<Restored, SandboxError> {
        fs::create_dir_all(&self.work_dir).map_err(io_err("create", &self.work_dir))?;
        let pid_file = self.pid_file();
        let _ = fs::remove_file(&pid_file);
        let mut cmd = self.command()?;
        let took = timed(&mut cmd, &self.work_dir.join("restore.log"))?;
        let text = fs::read_to_string(&pid_file).map_err(io_err("read", &pid_file))?;
        let pid = text.trim().parse().map_err(|_| {
            SandboxError::Unexpected(format!("{} holds {text:?}, not a PID", pid_file.display()))
        })?;
        Ok(Restored { pid, took })
    }
}

/// Runs `cmd` with stdio on `/dev/null` and times it; on failure the error
/// carries the `Error` lines of `log`.
fn timed(cmd: &mut Command, log: &Path) -> Result<Duration, SandboxError> {
    cmd.current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let started = Instant::now();
    let status = cmd.status().map_err(|source| SandboxError::Spawn {
        command: describe_command(cmd),
        source,
    })?;
    let took = started.elapsed();
    if status.success() {
        return Ok(took);
    }
    Err(SandboxError::CommandFailed {
        command: describe_command(cmd),
        status: status.to_string(),
        output: log_errors(log),
    })
}

/// The `Error` lines of a CRIU log, without the harmless ones this machine
/// always produces (raising RLIMIT_NOFILE needs CAP_SYS_RESOURCE).
pub fn log_errors(log: &Path) -> String {
    let text =
        fs::read_to_string(log).unwrap_or_else(|err| format!("no log {}: {err}", log.display()));
    text.lines()
        .filter(|line| line.contains("Error") && !line.contains("RLIMIT_NOFILE"))
        .collect::<Vec<_>>()
        .join("\n")
}
