//! `podrestore-agent checkpoint`: dumps a process tree living in pod-like
//! namespaces into a checkpoint archive (the kubelet/containerd format), with
//! runc's checkpoint flags.
//!
//! CRIU's network lock is removed from the source's network namespace
//! afterwards, so the pod the tree lived in keeps its network (see
//! `podrestore_agent::checkpoint`).

use std::path::PathBuf;

use podrestore_agent::checkpoint::{CheckpointRequest, DEFAULT_WORK_ROOT, Identity, checkpoint};
use podrestore_agent::criu::Criu;
use podrestore_agent::criu::options::NetworkLock;
use podrestore_agent::namespaces::Namespace;

/// Arguments of `podrestore-agent checkpoint`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The host PID of the root of the process tree to dump.
    #[arg(long, value_name = "PID")]
    pid: i32,
    /// A namespace of the tree as TYPE or TYPE=PATH, in the order of its spec;
    /// the network and PID namespace paths are marked external (runc's
    /// `extRootNetNS` / `extRootPidNS`). Repeat for each namespace.
    #[arg(long = "ns", value_name = "TYPE[=PATH]")]
    namespaces: Vec<String>,
    /// The archive to write (mode 0600); it must not exist.
    #[arg(long, value_name = "ARCHIVE")]
    output: PathBuf,
    /// Leave the process tree running after the dump.
    #[arg(long)]
    leave_running: bool,
    #[command(flatten)]
    switches: super::Switches,
    /// Cgroup handling: soft, full, strict or ignore (absent: CRIU's default).
    #[arg(long, value_name = "MODE")]
    manage_cgroups_mode: Option<String>,
    /// How CRIU locks the network during the dump: iptables, nftables or skip
    /// (not a runc option; absent: none unless --tcp-established, where
    /// CRIU's iptables lock is kept). A lock CRIU leaves is removed afterwards.
    #[arg(long, value_name = "METHOD")]
    network_lock: Option<String>,
    /// Where the private directory for the images is created.
    #[arg(long, value_name = "DIR", env = "PODRESTORE_WORK_DIR", default_value = DEFAULT_WORK_ROOT)]
    work_dir: PathBuf,
    /// The container's name, recorded in spec.dump (default: the command name).
    #[arg(long, value_name = "NAME")]
    container_name: Option<String>,
    /// The pod's name, recorded in spec.dump.
    #[arg(long, value_name = "NAME")]
    pod_name: Option<String>,
    /// The pod's namespace, recorded in spec.dump.
    #[arg(long, value_name = "NAMESPACE")]
    pod_namespace: Option<String>,
    /// The CRIU binary.
    #[arg(
        long,
        value_name = "PATH",
        env = "PODRESTORE_CRIU",
        default_value = "criu"
    )]
    criu: PathBuf,
}

/// Runs `podrestore-agent checkpoint`; prints the archive's path, size and
/// SHA-256.
pub fn run(args: Args) -> anyhow::Result<()> {
    let namespaces = args
        .namespaces
        .iter()
        .map(|arg| Namespace::parse_arg(arg))
        .collect::<Result<Vec<_>, _>>()?;
    let network_lock = args
        .network_lock
        .as_deref()
        .map(str::parse::<NetworkLock>)
        .transpose()?;
    let mut request = CheckpointRequest::new(args.pid, namespaces, args.output);
    request.leave_running = args.leave_running;
    request.flags = args.switches.flags();
    request.manage_cgroups_mode = args.manage_cgroups_mode;
    request.network_lock = network_lock;
    request.work_root = args.work_dir;
    request.identity = Identity {
        container_name: args.container_name,
        pod_name: args.pod_name,
        pod_namespace: args.pod_namespace,
    };
    request.criu = Criu::new(args.criu);
    let outcome = checkpoint(request)?;
    for warning in &outcome.warnings {
        eprintln!("warning: {warning}");
    }
    for command in &outcome.unlocked {
        eprintln!("removed CRIU's network lock: {command}");
    }
    println!(
        "{}\t{}\tsha256:{}",
        outcome.archive.display(),
        outcome.digest.size,
        outcome.digest.sha256
    );
    Ok(())
}
