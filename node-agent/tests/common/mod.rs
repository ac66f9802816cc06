//! Helpers for the tests that run the real CRIU: pod-like sandboxes (a
//! placeholder init in its own pid, net, ipc and uts namespaces, like a pod's
//! pause container), workloads started inside them, and the CRIU binary.
//!
//! These tests need root and CRIU; they fail, never skip, when either is
//! missing (`e2e/setup/criu.sh` installs CRIU).

#![allow(dead_code, clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The CRIU binary: `$PODRESTORE_CRIU`, else `/usr/local/sbin/criu` (where
/// e2e/setup/criu.sh installs it), else `criu` on PATH. Panics when none runs.
pub fn criu_binary() -> PathBuf {
    let candidates = std::env::var_os("PODRESTORE_CRIU")
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/local/sbin/criu"), PathBuf::from("criu")]);
    for candidate in candidates {
        let runs = Command::new(&candidate)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if runs {
            return candidate;
        }
    }
    panic!(
        "CRIU is not installed (looked at $PODRESTORE_CRIU, /usr/local/sbin/criu, PATH): \
         run e2e/setup/criu.sh"
    );
}

/// Panics unless the test runs as root: CRIU and namespaces need it.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test restores processes with CRIU and needs root"
    );
}

/// Waits until `check` returns `Some`, panicking after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

/// The children of `pid` (its main thread's), as the kernel lists them.
pub fn children(pid: u32) -> Vec<i32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// `/proc/<pid>/comm` without the newline, or "" once the process is gone.
pub fn comm(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The namespace id (`net:[4026532008]`) of `pid`'s namespace `kind`.
pub fn ns_id(pid: i32, kind: &str) -> String {
    fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

/// The PIDs of `pid` in each PID namespace, outermost first (`NSpid`).
pub fn nspids(pid: i32) -> Vec<i32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect()
}

/// Every process whose PID namespace is `pidns` (as `ns_id` prints it).
pub fn processes_in_pidns(pidns: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|l| l.to_string_lossy() == pidns)
        {
            found.push(pid);
        }
    }
    found
}

/// The sandbox init: like a pod's pause process it only reaps what is
/// reparented to it, so orphans of a dumped or rolled-back tree do not linger
/// as zombies (which would keep their session's PID numbers taken).
const REAPER_INIT: &str = "
import os, signal
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
while True:
    signal.sigtimedwait([signal.SIGCHLD], 0.1)
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass
";

/// A pod-like sandbox: a reaping init (Debian's python3, which
/// e2e/setup/criu.sh installs) as PID 1 of new pid, net, ipc and uts
/// namespaces. Dropping it kills the init, which tears the PID namespace down.
pub struct Sandbox {
    unshare: Child,
    /// The host PID of the placeholder init.
    pub init: i32,
    /// The workloads' working directory. The sandbox shares the host's mount
    /// namespace, whose `/proc` is not its PID namespace's, so CRIU's parasite
    /// mounts a `/proc` of its own at `proc.crtools` in the dumped task's
    /// working directory: two dumps at once must not share one.
    cwd: tempfile::TempDir,
}

impl Sandbox {
    /// Starts a sandbox and waits for its init.
    pub fn new() -> Self {
        let unshare = Command::new("unshare")
            .args([
                "--pid",
                "--net",
                "--ipc",
                "--uts",
                "--fork",
                "--kill-child",
                "/usr/bin/python3",
                "-c",
                REAPER_INIT,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run unshare (util-linux): run e2e/setup/criu.sh");
        let id = unshare.id();
        let init = wait_for("the sandbox init", Duration::from_secs(10), || {
            children(id)
                .into_iter()
                .find(|&pid| comm(pid).starts_with("python3"))
        });
        let cwd = tempfile::tempdir().expect("a working directory for the sandbox");
        Self { unshare, init, cwd }
    }

    /// `/proc/<init>/ns/<kind>`.
    pub fn ns_path(&self, kind: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/{kind}", self.init))
    }

    /// The namespace id of the sandbox's namespace `kind`.
    pub fn ns_id(&self, kind: &str) -> String {
        ns_id(self.init, kind)
    }

    /// Brings the loopback interface up in the sandbox's network namespace.
    pub fn loopback_up(&self) {
        let status = Command::new("nsenter")
            .args([
                "-t",
                &self.init.to_string(),
                "-n",
                "ip",
                "link",
                "set",
                "lo",
                "up",
            ])
            .status()
            .expect("cannot run nsenter/ip (iproute2)");
        assert!(status.success(), "ip link set lo up: {status}");
    }

    /// Connects to 127.0.0.1:`port` from inside the sandbox's network namespace
    /// and returns the first line the server sends, or `None` if it cannot.
    pub fn ask(&self, port: u16) -> Option<String> {
        let client = format!(
            "import socket\n\
             s = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n\
             print(s.makefile().readline().strip())"
        );
        let out = Command::new("nsenter")
            .args([
                "-t",
                &self.init.to_string(),
                "-n",
                "/usr/bin/python3",
                "-c",
                &client,
            ])
            .stderr(Stdio::null())
            .output()
            .expect("cannot run nsenter");
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// Starts `script` under `sh` inside the sandbox's pid, net, ipc and uts
    /// namespaces, as the leader of its own session (like a container process).
    pub fn spawn(&self, script: &str) -> Workload {
        let nsenter = Command::new("nsenter")
            .args(["-t", &self.init.to_string(), "-p", "-n", "-i", "-u", "--"])
            .args(["setsid", "sh", "-c", script])
            .current_dir(self.cwd.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot run nsenter (util-linux)");
        let id = nsenter.id();
        // nsenter forks once into the PID namespace; setsid and sh exec in place,
        // so that child's PID is the workload's whatever it runs by now.
        let pid = wait_for("the workload", Duration::from_secs(10), || {
            children(id).into_iter().next()
        });
        Workload { nsenter, pid }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        // SIGKILL is the one signal a PID namespace's init gets from outside.
        let _ = kill(Pid::from_raw(self.init), Signal::SIGKILL);
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

/// A process started in a sandbox; `nsenter` is its parent outside.
pub struct Workload {
    nsenter: Child,
    /// The host PID of the `sh` running the script.
    pub pid: i32,
}

impl Workload {
    /// Reaps the `nsenter` parent after the workload ended.
    pub fn reap(mut self) {
        let _ = self.nsenter.wait();
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = self.nsenter.kill();
        let _ = self.nsenter.wait();
    }
}

/// A shell loop that counts up in `file` every 50 ms.
pub fn counter_script(file: &Path) -> String {
    format!(
        "i=0; while :; do i=$((i+1)); echo $i > {}.tmp; mv {0}.tmp {0}; sleep 0.05; done",
        file.display()
    )
}

/// The counter's current value, once the file holds one.
pub fn read_counter(file: &Path) -> u64 {
    wait_for("the counter file", Duration::from_secs(10), || {
        fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}

/// A shell command running a TCP server on 127.0.0.1:`port` that answers each
/// connection with `hello <n>` (n counting connections) and closes it.
pub fn tcp_server_script(port: u16) -> String {
    format!(
        "exec /usr/bin/python3 -c '
import socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((\"127.0.0.1\", {port}))
s.listen()
n = 0
while True:
    c, _ = s.accept()
    n += 1
    c.sendall(b\"hello %d\\n\" % n)
    c.close()
'"
    )
}
