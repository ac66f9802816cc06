//! Pod-like sandboxes: the ground the agent's checkpoint and restore are tested,
//! benchmarked and demonstrated on.
//!
//! A [`Sandbox`] is what a Kubernetes pod sandbox is to its containers: a network
//! namespace (bind-mounted under the sandbox's run directory, loopback up, and
//! optionally a veth to a private uplink namespace), a PID namespace whose PID 1 is
//! a placeholder init (see [`pause_main`]), and IPC and UTS namespaces. It hands out
//! the OCI-style namespace paths a runtime puts in `config.json`, starts workloads
//! inside ([`workload`]), and is torn down completely, every step attempted even
//! when an earlier one fails.
//!
//! Namespaces are created by the `unshare`/`nsenter`/`ip` commands and not by
//! syscalls here, so this module needs no `unsafe`. Everything needs root.
//!
//! - [`workload`]: processes started inside a sandbox, with or without a root
//!   filesystem of their own, and the busybox scripts tests run there.
//! - [`runc`]: OCI bundles whose namespaces are a sandbox's, and the `runc` command.
//! - [`criu_cli`]: the bare `criu` command lines equivalent to what runc sends.

pub mod criu_cli;
pub mod procfs;
pub mod runc;
pub mod workload;

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::mount::{MntFlags, umount2};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

pub use workload::{Workload, WorkloadRoot, WorkloadSpec};

/// Where sandboxes keep their run directories unless told otherwise.
pub const DEFAULT_RUN_ROOT: &str = "/run/podrestore-sandbox";

/// How long teardown waits for the processes of a sandbox to disappear.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// How long creation waits for the placeholder init to start.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of the sandbox, its workloads and the reference tools it drives.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A program the sandbox needs is not installed.
    #[error("{tool} not found on PATH: install it (e2e/setup/criu.sh installs the toolchain)")]
    ToolMissing {
        /// The program's name.
        tool: String,
    },
    /// A command could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why it could not start.
        source: io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed ({status}): {output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed (stderr, then stdout), trimmed.
        output: String,
    },
    /// A file operation failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A system call failed.
    #[error("{call}: {source}")]
    Sys {
        /// The call and its argument.
        call: String,
        /// The error.
        source: Errno,
    },
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// An observation contradicted what the sandbox set up.
    #[error("{0}")]
    Unexpected(String),
    /// Teardown finished with errors; every step was still attempted.
    #[error("teardown of {name} left problems: {}", join_errors(.errors))]
    Teardown {
        /// The sandbox or object torn down.
        name: String,
        /// Every error met, in order.
        errors: Vec<SandboxError>,
    },
}

fn join_errors(errors: &[SandboxError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// The namespaces a sandbox owns and shares with its workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SandboxNs {
    /// The network namespace.
    Network,
    /// The PID namespace.
    Pid,
    /// The System V IPC / POSIX message queue namespace.
    Ipc,
    /// The hostname namespace.
    Uts,
}

impl SandboxNs {
    /// All of them, in the order a pod's runtime config lists them.
    pub const ALL: [SandboxNs; 4] = [
        SandboxNs::Pid,
        SandboxNs::Network,
        SandboxNs::Ipc,
        SandboxNs::Uts,
    ];

    /// The OCI runtime-spec type name (`network`, `pid`, `ipc`, `uts`).
    pub fn oci_name(self) -> &'static str {
        match self {
            SandboxNs::Network => "network",
            SandboxNs::Pid => "pid",
            SandboxNs::Ipc => "ipc",
            SandboxNs::Uts => "uts",
        }
    }

    /// The name under `/proc/<pid>/ns/` (`net`, `pid`, `ipc`, `uts`).
    pub fn proc_name(self) -> &'static str {
        match self {
            SandboxNs::Network => "net",
            SandboxNs::Pid => "pid",
            SandboxNs::Ipc => "ipc",
            SandboxNs::Uts => "uts",
        }
    }
}

/// A veth pair from the sandbox (`eth0`) to an uplink network namespace the
/// sandbox also owns, so traffic to the sandbox's address never touches the host.
#[derive(Debug, Clone)]
pub struct Uplink {
    /// The sandbox side's address with prefix, e.g. `10.231.7.2/24`.
    pub sandbox_address: String,
    /// The uplink side's address with prefix, e.g. `10.231.7.1/24`.
    pub uplink_address: String,
}

/// How to build a sandbox.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// A label; the sandbox's name is this plus a suffix unique on the machine.
    pub label: String,
    /// The directory that holds the sandbox's run directory.
    pub run_root: PathBuf,
    /// The placeholder init, run with no arguments as PID 1 of the PID namespace.
    /// It must reap orphans and wait for signals (the `podrestore-pause` binary).
    pub pause: PathBuf,
    /// An optional veth to a private uplink namespace.
    pub uplink: Option<Uplink>,
}

impl SandboxConfig {
    /// A sandbox under [`DEFAULT_RUN_ROOT`] without an uplink.
    pub fn new(label: impl Into<String>, pause: impl Into<PathBuf>) -> Self {
        SandboxConfig {
            label: label.into(),
            run_root: PathBuf::from(DEFAULT_RUN_ROOT),
            pause: pause.into(),
            uplink: None,
        }
    }
}

/// What a sandbox occupied on the machine, kept so that its disappearance can be
/// checked after teardown ([`Footprint::leftovers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footprint {
    /// The sandbox's name.
    pub name: String,
    /// Its run directory.
    pub run_dir: PathBuf,
    /// The host PID of its init.
    pub init_pid: u32,
    /// `(proc name, inode)` of every namespace it created, uplink included.
    pub namespaces: Vec<(&'static str, u64)>,
}

impl Footprint {
    /// Everything of the sandbox still present: processes in its namespaces, open
    /// fds and mounts referring to them, mounts under or at its run directory, the
    /// run directory itself. Empty after a complete teardown.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        if self.run_dir.exists() {
            found.push(format!("run directory {} exists", self.run_dir.display()));
        }
        if procfs::is_alive(self.init_pid) {
            found.push(format!("init {} still runs", self.init_pid));
        }
        for pid in procfs::pids() {
            for (name, inode) in &self.namespaces {
                if procfs::ns_inode(pid, name).ok() == Some(*inode) {
                    found.push(format!(
                        "process {pid} ({}) is in {name}:[{inode}]",
                        procfs::describe(pid)
                    ));
                }
            }
            for link in procfs::fd_targets(pid) {
                for (name, inode) in &self.namespaces {
                    if link == format!("{name}:[{inode}]") {
                        found.push(format!("process {pid} holds an fd on {link}"));
                    }
                }
            }
            let run_dir = self.run_dir.to_string_lossy();
            for line in procfs::mountinfo(pid) {
                let mentions_ns = self
                    .namespaces
                    .iter()
                    .any(|(name, inode)| line.contains(&format!("{name}:[{inode}]")));
                if mentions_ns || line.contains(run_dir.as_ref()) {
                    found.push(format!("mount in the mount namespace of {pid}: {line}"));
                }
            }
        }
        found.dedup();
        found
    }
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A pod-like sandbox. See the module documentation.
#[derive(Debug)]
pub struct Sandbox {
    name: String,
    run_dir: PathBuf,
    init_pid: u32,
    /// `unshare --fork`, the parent of init; waited for on teardown.
    holder: Option<Child>,
    net_path: PathBuf,
    uplink_path: Option<PathBuf>,
    footprint: Footprint,
    torn_down: bool,
}

impl Sandbox {
    /// Creates the namespaces, starts the placeholder init and brings loopback up.
    /// On failure everything created so far is removed again.
    pub fn create(config: &SandboxConfig) -> Result<Sandbox, SandboxError> {
        let unshare = require_tool("unshare")?;
        let ip = require_tool("ip")?;
        require_tool("nsenter")?;
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{}-{seq}", config.label, std::process::id());
        let run_dir = config.run_root.join(&name);
        fs::create_dir_all(&config.run_root).map_err(io_err("create", &config.run_root))?;
        fs::create_dir(&run_dir).map_err(io_err("create", &run_dir))?;
        let net_path = run_dir.join("net");
        let mut sandbox = Sandbox {
            name: name.clone(),
            run_dir: run_dir.clone(),
            init_pid: 0,
            holder: None,
            net_path: net_path.clone(),
            uplink_path: None,
            footprint: Footprint {
                name,
                run_dir: run_dir.clone(),
                init_pid: 0,
                namespaces: Vec::new(),
            },
            torn_down: false,
        };
        match sandbox.start(config, &unshare, &ip) {
            Ok(()) => Ok(sandbox),
            Err(err) => {
                // A cleanup error never hides the original one.
                if let Err(cleanup) = sandbox.teardown_in_place() {
                    eprintln!("sandbox {}: {cleanup}", sandbox.name);
                }
                Err(err)
            }
        }
    }

    fn start(
        &mut self,
        config: &SandboxConfig,
        unshare: &Path,
        ip: &Path,
    ) -> Result<(), SandboxError> {
        fs::File::create(&self.net_path).map_err(io_err("create", &self.net_path))?;
        let log_path = self.run_dir.join("init.log");
        let log = fs::File::create(&log_path).map_err(io_err("create", &log_path))?;
        let log_err = log.try_clone().map_err(io_err("open", &log_path))?;
        // `--net=FILE` makes unshare bind-mount the new network namespace there,
        // as `ip netns add` and CNI do for a pod. `--kill-child` ties init's life
        // to unshare's, which is our child.
        let mut cmd = Command::new(unshare);
        cmd.arg(format!("--net={}", self.net_path.display()))
            .args([
                "--pid",
                "--ipc",
                "--uts",
                "--fork",
                "--kill-child=SIGKILL",
                "--",
            ])
            .arg(&config.pause)
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let holder = cmd.spawn().map_err(|source| SandboxError::Spawn {
            command: describe_command(&cmd),
            source,
        })?;
        let holder_pid = holder.id();
        self.holder = Some(holder);

        let pause_exe =
            fs::canonicalize(&config.pause).map_err(io_err("resolve", &config.pause))?;
        let started = Instant::now();
        let init_pid = loop {
            let child = procfs::children(holder_pid).into_iter().next();
            // The child exists once unshare has created the namespaces; it is
            // init once it has exec'd the placeholder.
            if let Some(pid) = child
                && procfs::exe(pid).as_deref() == Some(pause_exe.as_path())
            {
                break pid;
            }
            if let Some(holder) = self.holder.as_mut()
                && let Ok(Some(status)) = holder.try_wait()
            {
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                return Err(SandboxError::CommandFailed {
                    command: describe_command(&cmd),
                    status: status.to_string(),
                    output: log.trim().to_owned(),
                });
            }
            if started.elapsed() > START_TIMEOUT {
                return Err(SandboxError::Timeout {
                    what: format!("the init of sandbox {}", self.name),
                    after: START_TIMEOUT,
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        self.init_pid = init_pid;
        self.footprint.init_pid = init_pid;
        for kind in SandboxNs::ALL {
            let inode = procfs::ns_inode(init_pid, kind.proc_name())
                .map_err(io_err("stat", procfs::ns_link(init_pid, kind.proc_name())))?;
            self.footprint.namespaces.push((kind.proc_name(), inode));
        }
        // unshare bind-mounts the namespace from a helper process it waits for
        // only after forking init, so the bind may lag behind init's start.
        let wanted = self.ns_inode(SandboxNs::Network);
        let net_path = self.net_path.clone();
        let mut bound = 0;
        wait_until(
            format!("{} to be bound", net_path.display()),
            START_TIMEOUT,
            || {
                bound = fs::metadata(&net_path).map(|m| m.ino()).unwrap_or(0);
                bound == wanted
            },
        )
        .map_err(|_| {
            SandboxError::Unexpected(format!(
                "{} is inode {bound}, not the net:[{wanted}] of init {init_pid}",
                net_path.display()
            ))
        })?;
        self.ip(ip, &self.net_path, &["link", "set", "lo", "up"])?;
        if let Some(uplink) = &config.uplink {
            self.add_uplink(unshare, ip, uplink)?;
        }
        Ok(())
    }

    fn add_uplink(
        &mut self,
        unshare: &Path,
        ip: &Path,
        uplink: &Uplink,
    ) -> Result<(), SandboxError> {
        let path = self.run_dir.join("uplink-net");
        fs::File::create(&path).map_err(io_err("create", &path))?;
        let mut cmd = Command::new(unshare);
        cmd.arg(format!("--net={}", path.display())).arg("true");
        run(&mut cmd)?;
        self.uplink_path = Some(path.clone());
        let inode = fs::metadata(&path).map_err(io_err("stat", &path))?.ino();
        self.footprint.namespaces.push(("net", inode));
        let init = self.init_pid.to_string();
        self.ip(ip, &path, &["link", "set", "lo", "up"])?;
        self.ip(
            ip,
            &path,
            &[
                "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &init,
            ],
        )?;
        self.ip(
            ip,
            &path,
            &["addr", "add", &uplink.uplink_address, "dev", "up0"],
        )?;
        self.ip(ip, &path, &["link", "set", "up0", "up"])?;
        self.ip(
            ip,
            &self.net_path,
            &["addr", "add", &uplink.sandbox_address, "dev", "eth0"],
        )?;
        self.ip(ip, &self.net_path, &["link", "set", "eth0", "up"])?;
        Ok(())
    }

    fn ip(&self, ip: &Path, netns: &Path, args: &[&str]) -> Result<Output, SandboxError> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", netns.display()))
            .arg("--")
            .arg(ip)
            .args(args);
        run(&mut cmd)
    }

    /// The sandbox's unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The directory holding the sandbox's bind mounts and logs.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// The host PID of the placeholder init (PID 1 inside).
    pub fn init_pid(&self) -> u32 {
        self.init_pid
    }

    /// The path a runtime config names for `kind`: the bind mount for the network
    /// namespace, `/proc/<init>/ns/<kind>` for the others.
    pub fn ns_path(&self, kind: SandboxNs) -> PathBuf {
        match kind {
            SandboxNs::Network => self.net_path.clone(),
            _ => procfs::ns_link(self.init_pid, kind.proc_name()),
        }
    }

    /// The inode identifying the sandbox's namespace of `kind`, as
    /// `stat -L /proc/<pid>/ns/<kind>` shows it.
    pub fn ns_inode(&self, kind: SandboxNs) -> u64 {
        self.footprint
            .namespaces
            .iter()
            .find(|(name, _)| *name == kind.proc_name())
            .map(|(_, inode)| *inode)
            .unwrap_or_default()
    }

    /// `(kind, path)` for every namespace, in runtime-config order (pid, network,
    /// ipc, uts).
    pub fn namespaces(&self) -> Vec<(SandboxNs, PathBuf)> {
        SandboxNs::ALL
            .into_iter()
            .map(|kind| (kind, self.ns_path(kind)))
            .collect()
    }

    /// The uplink's network namespace, when the sandbox has one.
    pub fn uplink_netns(&self) -> Option<&Path> {
        self.uplink_path.as_deref()
    }

    /// Host PIDs of every process in the sandbox's namespace of `kind`, init
    /// included, the `unshare` holding the sandbox excluded.
    pub fn members(&self, kind: SandboxNs) -> Vec<u32> {
        let inode = self.ns_inode(kind);
        // unshare, init's parent, sits in the namespaces it created too (all
        // but the PID namespace, which only its children enter).
        let holder = self.holder.as_ref().map(Child::id);
        procfs::pids()
            .into_iter()
            .filter(|pid| Some(*pid) != holder)
            .filter(|pid| procfs::ns_inode(*pid, kind.proc_name()).ok() == Some(inode))
            .collect()
    }

    /// Whether `pid` is in the sandbox's namespace of `kind`.
    pub fn contains(&self, pid: u32, kind: SandboxNs) -> Result<bool, SandboxError> {
        let inode = procfs::ns_inode(pid, kind.proc_name())
            .map_err(io_err("stat", procfs::ns_link(pid, kind.proc_name())))?;
        Ok(inode == self.ns_inode(kind))
    }

    /// Runs a command in the sandbox's network namespace only (a client, `ip`,
    /// `iptables-save`), waits for it and returns its output whatever the status.
    pub fn run_in_netns<S: AsRef<OsStr>>(
        &self,
        program: S,
        args: &[&str],
    ) -> Result<Output, SandboxError> {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.net_path.display()))
            .arg("--")
            .arg(program)
            .args(args)
            .current_dir("/")
            .stdin(Stdio::null());
        cmd.output().map_err(|source| SandboxError::Spawn {
            command: describe_command(&cmd),
            source,
        })
    }

    /// The firewall rules of the sandbox's network namespace that belong to
    /// CRIU's network lock (its `CRIU` chains and tables), from `iptables-save`,
    /// `ip6tables-save` and `nft list ruleset`. Empty when nothing is locked.
    pub fn criu_lock_rules(&self) -> Result<Vec<String>, SandboxError> {
        let mut rules = Vec::new();
        for (tool, args) in [
            ("iptables-save", &[][..]),
            ("ip6tables-save", &[][..]),
            ("nft", &["list", "ruleset"][..]),
        ] {
            let program = require_tool(tool)?;
            let output = self.run_in_netns(&program, args)?;
            if !output.status.success() {
                return Err(SandboxError::CommandFailed {
                    command: format!("{tool} in {}", self.net_path.display()),
                    status: output.status.to_string(),
                    output: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
                });
            }
            rules.extend(
                String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .filter(|line| line.contains("CRIU"))
                    .map(|line| format!("{tool}: {}", line.trim())),
            );
        }
        Ok(rules)
    }

    /// Starts a workload in all of the sandbox's namespaces. See [`workload`].
    pub fn spawn(&self, spec: &WorkloadSpec) -> Result<Workload, SandboxError> {
        workload::spawn(self, spec)
    }

    /// Kills and reaps every process of the sandbox but its init, leaving the
    /// sandbox empty as after creation (PIDs inside free again).
    pub fn clear(&self, timeout: Duration) -> Result<(), SandboxError> {
        let others = |sandbox: &Sandbox| -> Vec<u32> {
            sandbox
                .members(SandboxNs::Pid)
                .into_iter()
                .filter(|pid| *pid != sandbox.init_pid)
                .collect()
        };
        let mut errors = Vec::new();
        for pid in others(self) {
            if let Err(err) = kill_and_reap(pid, timeout) {
                errors.push(err);
            }
        }
        // Children of killed processes go to init, which reaps them.
        let left = wait_until("the sandbox to empty", timeout, || others(self).is_empty());
        if let Err(err) = left {
            errors.push(err);
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SandboxError::Teardown {
                name: format!("processes of {}", self.name),
                errors,
            })
        }
    }

    /// What the sandbox occupies, to check later that teardown removed it all.
    pub fn footprint(&self) -> Footprint {
        self.footprint.clone()
    }

    /// Kills everything in the sandbox and removes its namespaces, mounts and run
    /// directory. Every step runs even if an earlier one failed; all errors are
    /// returned together.
    pub fn teardown(mut self) -> Result<(), SandboxError> {
        self.teardown_in_place()
    }

    fn teardown_in_place(&mut self) -> Result<(), SandboxError> {
        if self.torn_down {
            return Ok(());
        }
        self.torn_down = true;
        let mut errors = Vec::new();
        if self.init_pid != 0 {
            // Killing PID 1 of a PID namespace kills every process in it.
            if let Err(err) = signal(self.init_pid, Signal::SIGKILL) {
                errors.push(err);
            }
        }
        // Init, dying, waits until every process of the namespace is reaped; those
        // whose parent lives outside (restored trees are our children) stay
        // zombies until that parent reaps them. So reap while unshare, init's
        // parent, waits for init.
        let pid_inode = self.ns_inode(SandboxNs::Pid);
        if let Err(err) = reap_namespace(pid_inode, self.holder.as_mut(), TEARDOWN_TIMEOUT) {
            errors.push(err);
        }
        if let Some(mut holder) = self.holder.take() {
            // Still there after the timeout: unshare's `--kill-child` takes init with it.
            if let Err(err) = wait_child(&mut holder, "unshare", Duration::from_secs(1)) {
                errors.push(err);
            }
        }
        let mounts = [Some(self.net_path.clone()), self.uplink_path.clone()];
        for path in mounts.into_iter().flatten() {
            match umount2(&path, MntFlags::MNT_DETACH) {
                // EINVAL: not a mount point, creation stopped before the bind.
                Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
                Err(source) => errors.push(SandboxError::Sys {
                    call: format!("umount2({})", path.display()),
                    source,
                }),
            }
        }
        match fs::remove_dir_all(&self.run_dir) {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(source) => errors.push(SandboxError::Io {
                what: "remove",
                path: self.run_dir.clone(),
                source,
            }),
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(SandboxError::Teardown {
                name: self.name.clone(),
                errors,
            })
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(err) = self.teardown_in_place() {
            eprintln!("{err}");
        }
    }
}

/// The namespaces a process is in, and which of two sandboxes' they are: what a
/// restore is judged by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Place {
    /// The namespace of the sandbox the process was checkpointed in.
    Source,
    /// The namespace of the sandbox it was restored into.
    Target,
    /// A namespace of neither: the host's or a new one.
    Other,
}

/// Where a restored process landed, namespace by namespace, plus the new mount
/// namespace a container always gets.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Landing {
    /// Its network namespace.
    pub network: Place,
    /// Its PID namespace.
    pub pid: Place,
    /// Its IPC namespace.
    pub ipc: Place,
    /// Its UTS namespace.
    pub uts: Place,
    /// Whether its mount namespace differs from the host's (ours).
    pub own_mount_namespace: bool,
    /// Its PID inside its PID namespace.
    pub pid_inside: u32,
}

impl Landing {
    /// Observes `pid` against the source and target sandboxes.
    pub fn observe(pid: u32, source: &Sandbox, target: &Sandbox) -> Result<Self, SandboxError> {
        let place = |kind: SandboxNs| -> Result<Place, SandboxError> {
            let inode = procfs::ns_inode(pid, kind.proc_name())
                .map_err(io_err("stat", procfs::ns_link(pid, kind.proc_name())))?;
            Ok(if inode == target.ns_inode(kind) {
                Place::Target
            } else if inode == source.ns_inode(kind) {
                Place::Source
            } else {
                Place::Other
            })
        };
        let mnt =
            procfs::ns_inode(pid, "mnt").map_err(io_err("stat", procfs::ns_link(pid, "mnt")))?;
        let ours = procfs::ns_inode(std::process::id(), "mnt")
            .map_err(io_err("stat", procfs::ns_link(std::process::id(), "mnt")))?;
        Ok(Landing {
            network: place(SandboxNs::Network)?,
            pid: place(SandboxNs::Pid)?,
            ipc: place(SandboxNs::Ipc)?,
            uts: place(SandboxNs::Uts)?,
            own_mount_namespace: mnt != ours,
            pid_inside: procfs::nspids(pid).last().copied().unwrap_or_default(),
        })
    }
}

/// Makes the calling process the reaper of its orphaned descendants
/// (`PR_SET_CHILD_SUBREAPER`).
///
/// A restored process tree is detached from whatever restored it (`runc restore
/// -d`, `criu restore -d`). Without a subreaper it is adopted by the host's PID 1,
/// which on some machines never reaps; its zombie then keeps its PID taken inside
/// the sandbox, and the next restore of the same images fails with EEXIST. With
/// this set, [`kill_and_reap`] can reap it. Process-wide: call once at start.
pub fn adopt_orphans() -> Result<(), SandboxError> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|source| SandboxError::Sys {
        call: "prctl(PR_SET_CHILD_SUBREAPER)".to_owned(),
        source,
    })
}

/// Kills `pid` with SIGKILL and waits until it is gone: reaped here if it is our
/// child (directly or adopted, see [`adopt_orphans`]), or reaped by its parent.
pub fn kill_and_reap(pid: u32, timeout: Duration) -> Result<(), SandboxError> {
    match signal(pid, Signal::SIGKILL) {
        Ok(()) => {}
        // Gone already, or a zombie: reaping below still applies.
        Err(SandboxError::Sys {
            source: Errno::ESRCH,
            ..
        }) => {}
        Err(err) => return Err(err),
    }
    reap(pid, timeout)
}

/// Waits until `pid` no longer exists, reaping it if it is our child.
pub fn reap(pid: u32, timeout: Duration) -> Result<(), SandboxError> {
    let started = Instant::now();
    loop {
        match waitpid(
            Pid::from_raw(pid_t(pid)),
            Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL),
        ) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(_) => return Ok(()),
            // Not our child: its own parent reaps it.
            Err(Errno::ECHILD) => {
                if !procfs::exists(pid) {
                    return Ok(());
                }
            }
            Err(Errno::EINTR) => continue,
            Err(source) => {
                return Err(SandboxError::Sys {
                    call: format!("waitpid({pid})"),
                    source,
                });
            }
        }
        if started.elapsed() > timeout {
            return Err(SandboxError::Timeout {
                what: format!("process {pid} ({}) to go away", procfs::describe(pid)),
                after: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Kills and reaps every process of the PID namespace `pid:[inode]` until it is
/// empty and `holder` has exited.
fn reap_namespace(
    inode: u64,
    mut holder: Option<&mut Child>,
    timeout: Duration,
) -> Result<(), SandboxError> {
    let started = Instant::now();
    loop {
        let members: Vec<u32> = if inode == 0 {
            Vec::new()
        } else {
            procfs::pids()
                .into_iter()
                .filter(|pid| procfs::ns_inode(*pid, "pid").ok() == Some(inode))
                .collect()
        };
        for pid in &members {
            let pid = Pid::from_raw(pid_t(*pid));
            let _ = kill(pid, Signal::SIGKILL);
            // Only our own children (adopted orphans) can be reaped here.
            let _ = waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL));
        }
        let holder_done = match holder.as_mut() {
            Some(child) => !matches!(child.try_wait(), Ok(None)),
            None => true,
        };
        if members.is_empty() && holder_done {
            return Ok(());
        }
        if started.elapsed() > timeout {
            let described: Vec<String> = members
                .iter()
                .map(|pid| format!("{pid} ({})", procfs::describe(*pid)))
                .collect();
            return Err(SandboxError::Timeout {
                what: format!(
                    "pid:[{inode}] to empty (holder exited: {holder_done}), still in it: {}",
                    described.join(", ")
                ),
                after: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The placeholder init of a sandbox, like a pod's pause container: it holds the
/// PID namespace, reaps every orphan reparented to it and exits on SIGTERM or
/// SIGINT. It starts no process of its own, so PIDs 2 and up stay free for the
/// process trees restored into the sandbox.
pub fn pause_main() -> ExitCode {
    let mut signals = SigSet::empty();
    for sig in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        signals.add(sig);
    }
    // Blocked signals are queued even for a PID namespace's init, which would
    // otherwise ignore signals without a handler; sigwait then takes them.
    if signals.thread_block().is_err() {
        return ExitCode::FAILURE;
    }
    loop {
        // Reap before waiting: a child that died before the block is collected
        // here, one that dies later leaves SIGCHLD pending.
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        match signals.wait() {
            Ok(Signal::SIGCHLD) | Err(Errno::EINTR) => {}
            Ok(_) => return ExitCode::SUCCESS,
            Err(_) => return ExitCode::FAILURE,
        }
    }
}

/// Looks `tool` up on PATH; a missing tool is an error, never a reason to skip.
pub fn require_tool(tool: &str) -> Result<PathBuf, SandboxError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.mode() & 0o111 != 0)
                .unwrap_or(false)
        })
        .ok_or_else(|| SandboxError::ToolMissing {
            tool: tool.to_owned(),
        })
}

/// Polls `condition` every few milliseconds until it holds or `timeout` passes.
pub fn wait_until(
    what: impl Into<String>,
    timeout: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<(), SandboxError> {
    let started = Instant::now();
    while !condition() {
        if started.elapsed() > timeout {
            return Err(SandboxError::Timeout {
                what: what.into(),
                after: timeout,
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Runs a command to completion; a non-zero exit is an error carrying its output.
pub fn run(cmd: &mut Command) -> Result<Output, SandboxError> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| SandboxError::Spawn {
            command: describe_command(cmd),
            source,
        })?;
    if output.status.success() {
        Ok(output)
    } else {
        Err(SandboxError::CommandFailed {
            command: describe_command(cmd),
            status: output.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            )
            .trim()
            .to_owned(),
        })
    }
}

/// A command line as one string, for error messages.
pub fn describe_command(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Sends `sig` to `pid`.
fn signal(pid: u32, sig: Signal) -> Result<(), SandboxError> {
    kill(Pid::from_raw(pid_t(pid)), sig).map_err(|source| SandboxError::Sys {
        call: format!("kill({pid}, {sig})"),
        source,
    })
}

/// Waits for a child we spawned, killing it if it does not exit in time.
fn wait_child(child: &mut Child, what: &str, timeout: Duration) -> Result<(), SandboxError> {
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => return Ok(()),
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SandboxError::Timeout {
                    what: format!("{what} ({}) to exit", child.id()),
                    after: timeout,
                });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(source) => {
                return Err(SandboxError::Io {
                    what: "wait for",
                    path: PathBuf::from(format!("/proc/{}", child.id())),
                    source,
                });
            }
        }
    }
}

/// PIDs from procfs always fit; anything else maps to an invalid PID.
fn pid_t(pid: u32) -> i32 {
    i32::try_from(pid).unwrap_or(i32::MAX)
}

fn io_err(what: &'static str, path: impl AsRef<Path>) -> impl FnOnce(io::Error) -> SandboxError {
    let path = path.as_ref().to_path_buf();
    move |source| SandboxError::Io { what, path, source }
}
