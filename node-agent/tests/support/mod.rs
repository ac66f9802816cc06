//! Shared ground for the tests that checkpoint and restore real processes:
//! pod-like sandboxes (`podrestore_agent::sandbox`), the workloads run in them
//! (a counter, a memory holder, an HTTP server), and the checks a restore is
//! judged by (which namespaces a process is in, what a sandbox still holds, that
//! teardown left nothing behind).
//!
//! These tests need root, real namespaces and the node's toolchain (busybox,
//! util-linux, iproute2, iptables, nftables, CRIU, runc; `e2e/setup/criu.sh`).
//! A missing tool fails the test with its name; nothing is skipped.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod peer;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

pub use podrestore_agent::sandbox::procfs;
pub use podrestore_agent::sandbox::workload::{prepare_busybox_rootfs, scripts};
pub use podrestore_agent::sandbox::{
    Footprint, Landing, Place, Sandbox, SandboxConfig, SandboxNs, Uplink, Workload, WorkloadRoot,
    WorkloadSpec, require_tool,
};

/// The placeholder init built with this package.
pub const PAUSE: &str = env!("CARGO_BIN_EXE_podrestore-pause");

/// Every program the ground uses.
pub const TOOLS: &[&str] = &[
    "busybox",
    "unshare",
    "nsenter",
    "ip",
    "iptables-save",
    "ip6tables-save",
    "nft",
    "criu",
    "runc",
    "sh",
];

/// How long a workload gets to show progress.
pub const PROGRESS_TIMEOUT: Duration = Duration::from_secs(20);

/// A test's ground: root checked, tools present, orphans adopted, and a scratch
/// directory removed at the end.
pub struct Ground {
    /// Scratch space for rootfs, images, bundles and logs.
    pub scratch: tempfile::TempDir,
}

/// Prepares the ground; panics with the reason when the machine cannot host it.
pub fn ground() -> Ground {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests create namespaces and run CRIU: run them as root"
    );
    for tool in TOOLS {
        require_tool(tool).unwrap_or_else(|err| panic!("{err}"));
    }
    static ADOPT: Once = Once::new();
    // Restored trees are detached from their restorer; we reap them.
    ADOPT.call_once(|| podrestore_agent::sandbox::adopt_orphans().expect("become a subreaper"));
    let scratch = tempfile::Builder::new()
        .prefix("podrestore-test-")
        .tempdir_in("/var/tmp")
        .expect("scratch directory");
    Ground { scratch }
}

impl Ground {
    /// A subdirectory of the scratch space, created.
    pub fn dir(&self, name: &str) -> PathBuf {
        let dir = self.scratch.path().join(name);
        fs::create_dir_all(&dir).expect("scratch subdirectory");
        dir
    }

    /// A busybox root filesystem under the scratch space.
    pub fn rootfs(&self, name: &str) -> PathBuf {
        let dir = self.dir(name);
        prepare_busybox_rootfs(&dir, &require_tool("busybox").unwrap()).expect("busybox rootfs");
        dir
    }
}

/// A sandbox with the test's placeholder init.
pub fn sandbox(label: &str) -> Sandbox {
    Sandbox::create(&SandboxConfig::new(label, PAUSE)).expect("create sandbox")
}

/// A sandbox whose `eth0` is `10.231.<subnet>.2/24`, wired to an uplink
/// namespace at `10.231.<subnet>.1`.
pub fn sandbox_with_uplink(label: &str, subnet: u8) -> Sandbox {
    let mut config = SandboxConfig::new(label, PAUSE);
    config.uplink = Some(Uplink {
        sandbox_address: format!("10.231.{subnet}.2/24"),
        uplink_address: format!("10.231.{subnet}.1/24"),
    });
    Sandbox::create(&config).expect("create sandbox with uplink")
}

/// Tears `sandbox` down and checks nothing of it is left.
pub fn teardown(sandbox: Sandbox) {
    let footprint = sandbox.footprint();
    sandbox.teardown().expect("teardown");
    assert_gone(&footprint);
}

/// Asserts that nothing of a torn-down sandbox remains: no process in its
/// namespaces, no fd or mount referring to them, no run directory.
pub fn assert_gone(footprint: &Footprint) {
    // Namespaces are freed once their last reference goes; give the kernel a beat.
    let mut leftovers = footprint.leftovers();
    for _ in 0..50 {
        if leftovers.is_empty() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
        leftovers = footprint.leftovers();
    }
    panic!(
        "sandbox {} left behind:\n{}",
        footprint.name,
        leftovers.join("\n")
    );
}

/// A counter's output file, read from the host.
#[derive(Debug, Clone)]
pub struct Counter {
    /// Where the host sees the file.
    pub file: PathBuf,
}

impl Counter {
    /// The current number, if the file holds one (it is rewritten in place, so a
    /// read can catch it empty).
    pub fn read(&self) -> Option<u64> {
        fs::read_to_string(&self.file).ok()?.trim().parse().ok()
    }

    /// Waits until the number exceeds `past` and returns it.
    pub fn wait_past(&self, past: u64) -> u64 {
        let mut seen = 0;
        podrestore_agent::sandbox::wait_until(
            format!("{} to count past {past}", self.file.display()),
            PROGRESS_TIMEOUT,
            || {
                seen = self.read().unwrap_or(0);
                seen > past
            },
        )
        .unwrap_or_else(|err| panic!("{err} (last read {seen})"));
        seen
    }

    /// Asserts that the number does not move during `quiet` and returns it: the
    /// counter is stopped (dumped, killed).
    pub fn assert_stopped(&self, quiet: Duration) -> u64 {
        let before = self.read_settled();
        std::thread::sleep(quiet);
        let after = self.read_settled();
        assert_eq!(before, after, "{} still counts", self.file.display());
        after
    }

    /// Asserts the counter runs on from `last` (the value when it was
    /// checkpointed): it goes past it, and without starting over at 1.
    pub fn assert_continues_from(&self, last: u64) -> u64 {
        let now = self.wait_past(last);
        assert!(
            now > last,
            "counter at {now} after the restore, was {last} at the checkpoint"
        );
        now
    }

    fn read_settled(&self) -> u64 {
        let mut value = None;
        podrestore_agent::sandbox::wait_until("a readable counter", PROGRESS_TIMEOUT, || {
            value = self.read();
            value.is_some()
        })
        .expect("counter file");
        value.unwrap()
    }
}

/// A counter workload in `root`: its spec and where the host reads it. Counts
/// every 50 ms into `/data/count` of a rootfs, or into `dir/count` on the host.
pub fn counter_workload(root: &WorkloadRoot, dir: &Path) -> (WorkloadSpec, Counter) {
    let (mut spec, inside) = match root {
        WorkloadRoot::Host => (
            WorkloadSpec::host("").unwrap(),
            dir.join("count").to_string_lossy().into_owned(),
        ),
        WorkloadRoot::Rootfs(rootfs) => (
            WorkloadSpec::in_rootfs(rootfs, "").unwrap(),
            "/data/count".to_owned(),
        ),
    };
    spec.script = scripts::counter(&spec.busybox_inside(), &inside, "0.05");
    let counter = Counter {
        file: spec.host_path(&inside),
    };
    let _ = fs::remove_file(&counter.file);
    (spec, counter)
}

/// Starts a counter in `sandbox` and waits until it counts.
pub fn start_counter(sandbox: &Sandbox, root: &WorkloadRoot, dir: &Path) -> (Workload, Counter) {
    let (spec, counter) = counter_workload(root, dir);
    let workload = sandbox.spawn(&spec).expect("start counter");
    let seen = counter.wait_past(1);
    assert!(seen >= 2, "{}", workload.log());
    (workload, counter)
}

/// An HTTP server in a sandbox, serving a file that holds `token`.
#[derive(Debug, Clone)]
pub struct HttpServer {
    /// The loopback port it listens on.
    pub port: u16,
    /// What `GET /token` answers.
    pub token: String,
}

/// Starts busybox httpd on `127.0.0.1:port` of `sandbox` (a listening TCP socket)
/// and waits until it answers from inside the sandbox.
pub fn start_http_server(
    sandbox: &Sandbox,
    root: &WorkloadRoot,
    dir: &Path,
    port: u16,
) -> (Workload, HttpServer) {
    let token = format!("podrestore-{}-{port}", std::process::id());
    let (mut spec, docroot) = match root {
        WorkloadRoot::Host => (
            WorkloadSpec::host("").unwrap(),
            dir.join("www").to_string_lossy().into_owned(),
        ),
        WorkloadRoot::Rootfs(rootfs) => (
            WorkloadSpec::in_rootfs(rootfs, "").unwrap(),
            "/data/www".to_owned(),
        ),
    };
    let host_docroot = spec.host_path(&docroot);
    fs::create_dir_all(&host_docroot).unwrap();
    fs::write(host_docroot.join("token"), format!("{token}\n")).unwrap();
    spec.script = scripts::http_server(
        &spec.busybox_inside(),
        &format!("127.0.0.1:{port}"),
        &docroot,
    );
    let workload = sandbox.spawn(&spec).expect("start http server");
    let server = HttpServer { port, token };
    podrestore_agent::sandbox::wait_until("httpd to answer", PROGRESS_TIMEOUT, || {
        http_get(sandbox, port, "/token").is_ok()
    })
    .unwrap_or_else(|err| panic!("{err}: {}", workload.log()));
    (workload, server)
}

/// `GET http://127.0.0.1:<port><path>` from inside the sandbox's network
/// namespace, with busybox nc (busybox's static wget crashes here); returns the
/// body of a 200 answer.
pub fn http_get(sandbox: &Sandbox, port: u16, path: &str) -> Result<String, String> {
    let busybox = require_tool("busybox").map_err(|err| err.to_string())?;
    let script = format!(
        "printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' | {bb} nc -w 5 127.0.0.1 {port}",
        bb = busybox.display()
    );
    let output = sandbox
        .run_in_netns(&busybox, &["sh", "-c", &script])
        .map_err(|err| err.to_string())?;
    let answer = String::from_utf8_lossy(&output.stdout).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    if output.status.success() && head.starts_with("HTTP/1.1 200") {
        Ok(body.trim().to_owned())
    } else {
        Err(format!(
            "GET {path} on port {port} in {}: {} {head:?} {}",
            sandbox.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Asserts that `pid` is in each of `sandbox`'s namespaces.
pub fn assert_in_sandbox(pid: u32, sandbox: &Sandbox) {
    for kind in SandboxNs::ALL {
        assert!(
            sandbox
                .contains(pid, kind)
                .expect("read the process's namespaces"),
            "process {pid} is not in the {} namespace of {}: {:?} != {}",
            kind.oci_name(),
            sandbox.name(),
            procfs::ns_inode(pid, kind.proc_name()),
            sandbox.ns_inode(kind),
        );
    }
}

/// Asserts that only the placeholder init is left in `sandbox`'s namespaces:
/// nothing of a process that was checkpointed out of it remains.
pub fn assert_holds_only_init(sandbox: &Sandbox) {
    for kind in SandboxNs::ALL {
        let mut members = sandbox.members(kind);
        // A killed tree's zombies are reaped by the init within moments.
        for _ in 0..100 {
            if members == [sandbox.init_pid()] {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
            members = sandbox.members(kind);
        }
        let described: Vec<String> = members
            .iter()
            .map(|pid| format!("{pid} ({})", procfs::describe(*pid)))
            .collect();
        assert_eq!(
            members,
            [sandbox.init_pid()],
            "{} namespace of {} holds {}",
            kind.oci_name(),
            sandbox.name(),
            described.join(", ")
        );
    }
}

/// Asserts that the sandbox's network namespace carries none of CRIU's network
/// lock rules.
pub fn assert_no_criu_lock(sandbox: &Sandbox) {
    let rules = sandbox.criu_lock_rules().expect("read the firewall rules");
    assert!(
        rules.is_empty(),
        "network namespace of {} is still locked by CRIU:\n{}",
        sandbox.name(),
        rules.join("\n")
    );
}

/// Asserts that `pid` has only fds 0, 1 and 2 open, on `/dev/null`.
pub fn assert_clean_stdio(pid: u32) {
    assert_eq!(
        procfs::fds(pid),
        [0, 1, 2],
        "fds of {pid}: {:?}",
        procfs::fd_targets(pid)
    );
    for target in procfs::fd_targets(pid) {
        assert_eq!(target, "/dev/null", "stdio of {pid}");
    }
}

/// Asserts that `pid` leads its own session, as CRIU needs of a dumped tree.
pub fn assert_session_leader(pid: u32) {
    let stat = procfs::stat(pid).expect("process stat");
    assert_eq!(
        stat.session, pid,
        "{pid} ({}) does not lead its session",
        stat.comm
    );
}
