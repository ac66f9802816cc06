//! `podrestore-agent restore`: restores a checkpoint archive into existing
//! namespaces (a pod's) with runc's rules and flags.
//!
//! The restored tree's root is a child of this command (CRIU's `rst_sibling`,
//! as with runc). Without `--detach` the command waits for it, reaps it and
//! exits with its status, as `runc restore` does in the foreground; it never
//! kills it, so ending the command early (a signal) leaves the tree running.
//! With `--detach` the command prints the PID and exits at once; the tree is
//! then adopted by the nearest subreaper or init, which reaps it.

use std::io::Write;
use std::path::PathBuf;

use podrestore_agent::archive::Limits;
use podrestore_agent::checkpoint::DEFAULT_WORK_ROOT;
use podrestore_agent::criu::Criu;
use podrestore_agent::criu::options::NetworkLock;
use podrestore_agent::namespaces::Namespace;
use podrestore_agent::restore::{CheckpointSource, RestoreRequest, restore};
use podrestore_agent::sys::process::{Ended, wait_child};

/// How the outcome is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    /// The restored PID alone.
    Text,
    /// A JSON object: pid, startTicks, criuVersion, archive (sha256, size),
    /// timings in milliseconds, warnings.
    Json,
}

/// Arguments of `podrestore-agent restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The checkpoint archive (extracted safely into a private directory).
    #[arg(
        long,
        value_name = "ARCHIVE",
        required_unless_present = "images",
        conflicts_with = "images"
    )]
    archive: Option<PathBuf>,
    /// Instead of an archive, a CRIU images directory with descriptors.json
    /// (as `runc checkpoint --image-path` writes it), used as it is.
    #[arg(long, value_name = "DIR")]
    images: Option<PathBuf>,
    /// A target namespace as TYPE or TYPE=PATH, in the order of the target's
    /// spec; TYPE is an OCI name (network, pid, ipc, uts, mount, user, cgroup,
    /// time), no PATH means a new namespace. Repeat for each namespace.
    #[arg(long = "ns", value_name = "TYPE[=PATH]")]
    namespaces: Vec<String>,
    /// The root file system to restore onto (bind-mounted as CRIU's root, as
    /// runc does with the container's rootfs); absent: this machine's `/`,
    /// right for a tree that shared the host's mount namespace.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    #[command(flatten)]
    switches: super::Switches,
    /// Restore established TCP connections closed (not a runc option).
    #[arg(long)]
    tcp_close: bool,
    /// Cgroup handling: soft, full, strict or ignore (empty: CRIU's default).
    #[arg(long, value_name = "MODE", default_value = "")]
    manage_cgroups_mode: String,
    /// How CRIU locks the network while it restores: iptables, nftables or
    /// skip (not a runc option; absent: none unless --tcp-established, where
    /// runc's iptables lock is kept).
    #[arg(long, value_name = "METHOD")]
    network_lock: Option<String>,
    /// CRIU's cgroup root for the restored tree (`criu --cgroup-root`); absent:
    /// the cgroups recorded in the checkpoint.
    #[arg(long, value_name = "PATH")]
    cgroup_root: Option<String>,
    /// A bind mount of the checkpointed container mapped to a path on this
    /// node, as DEST=PATH (CRIU's external mount). Repeat for each.
    #[arg(long = "ext-mount", value_name = "DEST=PATH")]
    ext_mounts: Vec<String>,
    /// Where the private directory the archive is extracted to is created.
    #[arg(long, value_name = "DIR", env = "PODRESTORE_WORK_DIR", default_value = DEFAULT_WORK_ROOT)]
    work_dir: PathBuf,
    /// Print the PID and exit instead of waiting for the restored tree.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// The CRIU binary.
    #[arg(
        long,
        value_name = "PATH",
        env = "PODRESTORE_CRIU",
        default_value = "criu"
    )]
    criu: PathBuf,
}

/// Runs `podrestore-agent restore`. Rule errors are returned as they are, so
/// the message is runc's text alone.
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
    let ext_mounts = args
        .ext_mounts
        .iter()
        .map(|m| {
            m.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .ok_or_else(|| anyhow::anyhow!("--ext-mount {m:?}: expected DEST=PATH"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let request = RestoreRequest {
        source: match (args.archive, args.images) {
            (Some(archive), _) => CheckpointSource::Archive(archive),
            (None, Some(images)) => CheckpointSource::Images(images),
            (None, None) => anyhow::bail!("give --archive or --images"),
        },
        namespaces,
        root: args.root,
        flags: args.switches.flags(),
        tcp_close: args.tcp_close,
        manage_cgroups_mode: args.manage_cgroups_mode,
        network_lock,
        cgroup_root: args.cgroup_root,
        ext_mounts,
        work_root: args.work_dir,
        limits: Limits::default(),
        criu: Criu::new(args.criu),
        ..RestoreRequest::default()
    };
    let outcome = restore(request)?;
    for warning in &outcome.warnings {
        eprintln!("warning: {warning}");
    }
    match args.output {
        Output::Text => println!("{}", outcome.pid),
        Output::Json => println!("{}", serde_json::to_string_pretty(&outcome)?),
    }
    std::io::stdout().flush()?;
    if args.detach {
        return Ok(());
    }
    let ended = wait_child(outcome.pid)?;
    let code = match ended {
        Ended::Exited(code) => code,
        Ended::Signaled(signal) => 128 + signal,
    };
    if code == 0 {
        Ok(())
    } else {
        // The tree's own status, as runc's foreground restore passes it on.
        std::process::exit(code)
    }
}
