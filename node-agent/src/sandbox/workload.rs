//! Processes started inside a sandbox, shaped so that CRIU can dump them the way
//! it dumps a container of a pod.
//!
//! A workload is a busybox shell script run in all of the sandbox's namespaces,
//! as the leader of its own session (CRIU dumps a tree only with its session
//! leader inside it), with stdin/stdout/stderr reopened on `/dev/null` *inside*
//! its mount namespace (an fd on a file of another mount namespace fails the dump
//! with `Can't lookup mount=N for fd=0`) and every other fd closed, including
//! those the test runner's own parent leaked without close-on-exec.
//!
//! With [`WorkloadRoot::Rootfs`] it also gets a mount namespace of its own whose
//! root is a directory (pivot_root, as runc does), with `/proc` of the sandbox's
//! PID namespace: a clean mount table CRIU can dump, and that a restore rebuilds
//! with `--root <dir>`. A plain copy of the host's mount table would not do: it
//! carries the `nsfs` bind mounts of every sandbox and `ip netns`, which CRIU
//! refuses (`doesn't have a proper root mount`).

use std::fs;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::stat::{Mode, SFlag, makedev, mknod};

use super::{Sandbox, SandboxError, describe_command, io_err, procfs, require_tool};

/// How long [`Sandbox::spawn`] waits for the workload process to appear.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a workload's busybox lives inside a root prepared by
/// [`prepare_busybox_rootfs`].
pub const ROOTFS_BUSYBOX: &str = "/bin/busybox";

/// The mount namespace and root a workload runs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkloadRoot {
    /// The host's mount namespace and root: CRIU dumps no mounts, and a restore
    /// needs no `--root`.
    Host,
    /// A new mount namespace rooted at this directory, which must hold
    /// `/bin/busybox`, `/dev/null` and `/proc` ([`prepare_busybox_rootfs`]). One
    /// directory per running workload.
    Rootfs(PathBuf),
}

/// What to run in a sandbox.
#[derive(Debug, Clone)]
pub struct WorkloadSpec {
    /// The script for `busybox sh -c`. It starts with stdio on `/dev/null` and
    /// should call applets through [`WorkloadSpec::busybox_inside`].
    pub script: String,
    /// Its mount namespace and root.
    pub root: WorkloadRoot,
    /// The host's busybox, run to set the workload up (and as the workload itself
    /// with [`WorkloadRoot::Host`]). Must be statically linked for `Rootfs`.
    pub busybox: PathBuf,
}

impl WorkloadSpec {
    /// A workload sharing the host's mount namespace, run by the busybox on PATH.
    pub fn host(script: impl Into<String>) -> Result<Self, SandboxError> {
        Ok(WorkloadSpec {
            script: script.into(),
            root: WorkloadRoot::Host,
            busybox: require_tool("busybox")?,
        })
    }

    /// A workload in its own mount namespace rooted at `rootfs`.
    pub fn in_rootfs(
        rootfs: impl Into<PathBuf>,
        script: impl Into<String>,
    ) -> Result<Self, SandboxError> {
        Ok(WorkloadSpec {
            script: script.into(),
            root: WorkloadRoot::Rootfs(rootfs.into()),
            busybox: require_tool("busybox")?,
        })
    }

    /// The path of busybox as the workload sees it, for building its script.
    pub fn busybox_inside(&self) -> String {
        match &self.root {
            WorkloadRoot::Host => self.busybox.to_string_lossy().into_owned(),
            WorkloadRoot::Rootfs(_) => ROOTFS_BUSYBOX.to_owned(),
        }
    }

    /// Where a path seen by the workload is on the host.
    pub fn host_path(&self, inside: &str) -> PathBuf {
        match &self.root {
            WorkloadRoot::Host => PathBuf::from(inside),
            WorkloadRoot::Rootfs(root) => root.join(inside.trim_start_matches('/')),
        }
    }
}

/// Sets up the mount namespace of a `Rootfs` workload and execs the script.
/// `$1` is the root, `$2` the script. Runs under the host's busybox, in the new
/// mount namespace (propagation private, so nothing leaks back to the host).
const PIVOT: &str = r#"set -e
root=$1
mount --bind "$root" "$root"
mount -t proc proc "$root/proc"
cd "$root"
mkdir -p .oldroot
pivot_root . .oldroot
umount -l /.oldroot
exec /bin/busybox setsid /bin/busybox sh -c "$2"
"#;

/// The start of every workload script: closes every fd above 2, whatever the
/// process that started the tests left open without close-on-exec, and reopens
/// stdio inside the final mount namespace.
const CLEAN_FDS: &str = r#"for fd in /proc/self/fd/*; do
  fd=${fd##*/}
  case $fd in 0|1|2) ;; *) eval "exec $fd>&-" ;; esac
done
exec </dev/null >/dev/null 2>&1
"#;

/// A process running a [`WorkloadSpec`] in a sandbox.
///
/// Its parent is an `nsenter` child of ours, which reaps it; dropping the
/// workload kills it.
#[derive(Debug)]
pub struct Workload {
    pid: u32,
    launcher: Option<Child>,
    log: PathBuf,
}

impl Workload {
    /// The host PID of the workload's process (the root of its tree).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Whether the process still runs (a dump without `--leave-running` ends it).
    pub fn is_alive(&self) -> bool {
        procfs::is_alive(self.pid)
    }

    /// What the setup before the script printed, to explain an early death.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills the workload (if it still runs) and waits for its launcher.
    pub fn stop(mut self) -> Result<(), SandboxError> {
        self.stop_in_place()
    }

    fn stop_in_place(&mut self) -> Result<(), SandboxError> {
        let Some(mut launcher) = self.launcher.take() else {
            return Ok(());
        };
        // The launcher reaps the workload and exits with it.
        if procfs::is_alive(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(super::pid_t(self.pid)),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let result = super::wait_child(&mut launcher, "nsenter", Duration::from_secs(10));
        let _ = fs::remove_file(&self.log);
        result
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Err(err) = self.stop_in_place() {
            eprintln!("workload {}: {err}", self.pid);
        }
    }
}

pub(super) fn spawn(sandbox: &Sandbox, spec: &WorkloadSpec) -> Result<Workload, SandboxError> {
    let nsenter = require_tool("nsenter")?;
    let inner = format!("{CLEAN_FDS}{}", spec.script);
    let mut cmd = Command::new(nsenter);
    cmd.arg(format!("--target={}", sandbox.init_pid()))
        .args(["--net", "--pid", "--ipc", "--uts", "--"]);
    match &spec.root {
        WorkloadRoot::Host => {
            cmd.arg(&spec.busybox)
                .arg("setsid")
                .arg(&spec.busybox)
                .args(["sh", "-c", &inner]);
        }
        WorkloadRoot::Rootfs(root) => {
            let unshare = require_tool("unshare")?;
            cmd.arg(unshare)
                .args(["--mount", "--propagation", "private", "--"])
                .arg(&spec.busybox)
                .args(["sh", "-c", PIVOT, "pivot"])
                .arg(root)
                .arg(&inner);
        }
    }
    let seq = super::SEQUENCE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = sandbox.run_dir().join(format!("workload-{seq}.log"));
    let log_file = fs::File::create(&log).map_err(io_err("create", &log))?;
    // The environment of a test run has no business in a checkpoint image.
    cmd.env_clear()
        .env("PATH", "/bin:/usr/bin:/sbin:/usr/sbin")
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file);
    let launcher = cmd.spawn().map_err(|source| SandboxError::Spawn {
        command: describe_command(&cmd),
        source,
    })?;
    let mut workload = Workload {
        pid: 0,
        launcher: Some(launcher),
        log,
    };
    let launcher_pid = workload
        .launcher
        .as_ref()
        .map(Child::id)
        .unwrap_or_default();
    // nsenter forks to enter the PID namespace; the child then only execs, so
    // its PID is the workload's. It is the workload once it leads a session.
    let mut found = None;
    let waited = super::wait_until("the workload to start", SPAWN_TIMEOUT, || {
        found = procfs::children(launcher_pid)
            .into_iter()
            .find(|pid| procfs::stat(*pid).is_some_and(|stat| stat.session == *pid));
        found.is_some() || !procfs::is_alive(launcher_pid)
    });
    match (waited, found) {
        (Ok(()), Some(pid)) => {
            workload.pid = pid;
            Ok(workload)
        }
        (waited, _) => {
            let log = workload.log();
            let command = describe_command(&cmd);
            drop(workload);
            match waited {
                Err(err) => Err(err),
                Ok(()) => Err(SandboxError::CommandFailed {
                    command,
                    status: "exited before the workload started".to_owned(),
                    output: log.trim().to_owned(),
                }),
            }
        }
    }
}

/// Lays out a minimal root filesystem at `dir` for [`WorkloadRoot::Rootfs`] and
/// OCI bundles: a static busybox at `/bin/busybox` with `/bin/sh` linking to it,
/// `/dev/null`, and empty `/proc`, `/tmp`, `/data`. Idempotent.
pub fn prepare_busybox_rootfs(dir: &Path, busybox: &Path) -> Result<(), SandboxError> {
    for sub in ["bin", "dev", "proc", "tmp", "data", "etc"] {
        let path = dir.join(sub);
        fs::create_dir_all(&path).map_err(io_err("create", &path))?;
    }
    let target = dir.join("bin/busybox");
    if !target.exists() {
        fs::copy(busybox, &target).map_err(io_err("copy busybox to", &target))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(0o755))
            .map_err(io_err("chmod", &target))?;
    }
    let sh = dir.join("bin/sh");
    if fs::symlink_metadata(&sh).is_err() {
        symlink("busybox", &sh).map_err(io_err("link", &sh))?;
    }
    let null = dir.join("dev/null");
    if fs::symlink_metadata(&null).is_err() {
        mknod(
            &null,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(1, 3),
        )
        .map_err(|source| SandboxError::Sys {
            call: format!("mknod({})", null.display()),
            source,
        })?;
        // mknod applies the umask.
        fs::set_permissions(&null, fs::Permissions::from_mode(0o666))
            .map_err(io_err("chmod", &null))?;
    }
    Ok(())
}

/// Quotes `text` for a POSIX shell.
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Busybox shell scripts for workloads. `bb` is the busybox path as the workload
/// sees it ([`WorkloadSpec::busybox_inside`]); file paths are as it sees them.
pub mod scripts {
    use super::shell_quote;

    /// Writes 1, 2, 3, ... to `file`, one number every `interval` (a busybox
    /// `sleep` argument such as `0.1`), through a rename so that neither a
    /// reader nor a checkpoint ever catches the file empty. The number lives in
    /// the shell's memory,
    /// so a restored counter goes on from where it was, where a restarted one
    /// would begin at 1 again.
    pub fn counter(bb: &str, file: &str, interval: &str) -> String {
        format!(
            "i=0\nwhile :; do\n  i=$((i+1))\n  echo $i > {next}\n  {bb} mv {next} {file}\n  {bb} sleep {interval}\ndone\n",
            next = shell_quote(&format!("{file}.next")),
            file = shell_quote(file),
            bb = shell_quote(bb),
        )
    }

    /// Holds `bytes` of touched, non-zero memory in shell variables, writes the
    /// number of bytes held to `ready` once they are allocated, then counts like
    /// [`counter`]. The memory is 64 MiB strings, copies of one another: a single
    /// huge string would be built in a buffer the shell keeps, doubling the
    /// memory held.
    pub fn memory_holder(bb: &str, bytes: u64, ready: &str, file: &str, interval: &str) -> String {
        format!(
            "{}echo $held > {ready}\n{}",
            hold_memory(bb, bytes, 64 << 20),
            counter(bb, file, interval),
            ready = shell_quote(ready),
        )
    }

    /// Script lines filling `bytes` in strings of `chunk` bytes and setting
    /// `$held` to the number of bytes they hold.
    fn hold_memory(bb: &str, bytes: u64, chunk: u64) -> String {
        if bytes == 0 {
            return "held=0\n".to_owned();
        }
        let bb = shell_quote(bb);
        let make = |size: u64| format!("$({bb} head -c {size} /dev/zero | {bb} tr '\\000' a)");
        let chunk = bytes.min(chunk);
        let copies = bytes / chunk;
        let rest = bytes % chunk;
        let mut lines = format!("m0={}\n", make(chunk));
        lines.push_str(&format!(
            "i=1\nwhile [ $i -lt {copies} ]; do eval \"m$i=\\$m0\"; i=$((i+1)); done\n"
        ));
        if rest > 0 {
            lines.push_str(&format!("r={}\n", make(rest)));
        }
        lines.push_str(&format!("held=$(( ${{#m0}} * {copies} + ${{#r}} ))\n"));
        lines
    }

    /// Serves the files of `docroot` over HTTP on `address` (`127.0.0.1:8080`):
    /// a process holding a listening TCP socket, forking one child per request.
    pub fn http_server(bb: &str, address: &str, docroot: &str) -> String {
        format!(
            "exec {bb} httpd -f -p {address} -h {docroot}\n",
            bb = shell_quote(bb),
            address = shell_quote(address),
            docroot = shell_quote(docroot),
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn run(script: &str) -> String {
            let busybox = crate::sandbox::require_tool("busybox").expect("busybox");
            let output = std::process::Command::new(&busybox)
                .args(["sh", "-c", script])
                .output()
                .expect("run busybox sh");
            assert!(output.status.success(), "{output:?}");
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }

        #[test]
        fn memory_is_held_in_chunks_and_counted() {
            let bb = crate::sandbox::require_tool("busybox").expect("busybox");
            let bb = bb.to_string_lossy();
            for (bytes, chunk, expected) in [
                (0, 10, "0"),
                (2500, 1000, "2500"),
                (3000, 1000, "3000"),
                (7, 1000, "7"),
            ] {
                let script = format!("{}echo $held ${{#m1}}", hold_memory(&bb, bytes, chunk));
                let out = run(&script);
                assert_eq!(
                    out.split_whitespace().next(),
                    Some(expected),
                    "{bytes}/{chunk}: {out}"
                );
            }
            // The copies are real: m1 holds a full chunk of non-zero bytes.
            let out = run(&format!(
                "{}echo ${{#m1}} ${{m1%%a*}}x",
                hold_memory(&bb, 3000, 1000)
            ));
            assert_eq!(out, "1000 x");
        }

        #[test]
        fn counter_counts() {
            let bb = crate::sandbox::require_tool("busybox").expect("busybox");
            let dir = tempfile::tempdir().expect("tempdir");
            let file = dir.path().join("count");
            let script = counter(&bb.to_string_lossy(), &file.to_string_lossy(), "0.01")
                .replace("while :; do", "while [ $i -lt 3 ]; do");
            run(&script);
            assert_eq!(std::fs::read_to_string(&file).expect("count").trim(), "3");
        }
    }
}
