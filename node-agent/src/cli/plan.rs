//! `podrestore-agent plan`: prints the CRIU RESTORE options the agent would send
//! for a target, as JSON, without restoring anything.
//!
//! The rules run exactly as on a real restore, including opening the target's
//! network and PID namespace files, so a target that would fail fails here with
//! the same (runc's) message. Fields that only exist during a run are left out:
//! `images_dir_fd` and `work_dir_fd` (descriptor numbers of the restoring
//! process) and `cg_root` (taken from the cgroup CRIU is started in).

use std::path::PathBuf;

use podrestore_agent::criu::Criu;
use podrestore_agent::criu::json::opts_to_json;
use podrestore_agent::criu::options::{
    ConfigFile, CriuFlags, NetworkLock, RestoreOptions, restore_plan,
};
use podrestore_agent::namespaces::Namespace;
use podrestore_agent::netlock;
use podrestore_agent::sys::Host;

/// Arguments of `podrestore-agent plan`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// CRIU's version number (major*10000 + minor*100 + sublevel, e.g. 40201);
    /// asked from the installed CRIU (VERSION RPC) when absent.
    #[arg(long, value_name = "N", env = "PODRESTORE_CRIU_VERSION")]
    criu_version: Option<u32>,
    /// The CRIU binary to ask for its version.
    #[arg(
        long,
        value_name = "PATH",
        env = "PODRESTORE_CRIU",
        default_value = "criu"
    )]
    criu: PathBuf,
    /// A target namespace as TYPE or TYPE=PATH, in the order of the target's
    /// spec; TYPE is an OCI name (network, pid, ipc, uts, mount, user, cgroup,
    /// time), no PATH means a new namespace. Repeat for each namespace.
    #[arg(long = "ns", value_name = "TYPE[=PATH]")]
    namespaces: Vec<String>,
    /// The checkpoint's descriptors.json: stdio pipes become inherit_fd entries.
    #[arg(long, value_name = "FILE")]
    descriptors: Option<PathBuf>,
    /// Cgroup handling: soft, full, strict or ignore (empty: CRIU's default).
    #[arg(long, value_name = "MODE", default_value = "")]
    manage_cgroups_mode: String,
    /// CRIU's root directory (the bind-mounted container rootfs).
    #[arg(long, value_name = "DIR")]
    root: Option<String>,
    #[command(flatten)]
    switches: super::Switches,
    /// Punch holes into image pages as they are restored.
    #[arg(long)]
    auto_dedup: bool,
    /// Restore memory lazily.
    #[arg(long)]
    lazy_pages: bool,
    /// LSM profile to restore with (CRIU >= 3.16).
    #[arg(long, value_name = "TYPE:NAME")]
    lsm_profile: Option<String>,
    /// LSM mount context to restore with (CRIU >= 3.16).
    #[arg(long, value_name = "CONTEXT")]
    lsm_mount_context: Option<String>,
    /// The CRIU configuration file, like the `org.criu.config` annotation: an
    /// empty value sends none; absent means /etc/criu/runc.conf.
    #[arg(long, value_name = "FILE")]
    criu_config: Option<String>,
    /// How CRIU locks the network: iptables, nftables or skip (not a runc
    /// option). Absent: the agent's own choice, as `restore` makes it: skip
    /// unless --tcp-established is given, where runc would leave CRIU's
    /// iptables default.
    #[arg(long, value_name = "METHOD")]
    network_lock: Option<String>,
    /// Restore established TCP connections closed (not a runc option).
    #[arg(long)]
    tcp_close: bool,
}

/// Runs `podrestore-agent plan`. A rule error is returned as is, so its message
/// is runc's text alone.
pub fn run(args: Args) -> anyhow::Result<()> {
    let criu_version = match args.criu_version {
        Some(v) => v,
        None => Criu::new(&args.criu).version()?.number(),
    };
    let namespaces = args
        .namespaces
        .iter()
        .map(|arg| match arg.split_once('=') {
            Some((kind, path)) => Namespace::from_oci(kind, Some(path)),
            None => Namespace::from_oci(arg, None),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let network_lock = args
        .network_lock
        .as_deref()
        .map(str::parse::<NetworkLock>)
        .transpose()?
        // Beyond runc: the same default as `restore`, so the plan shows what
        // a restore would really send.
        .or_else(|| netlock::automatic(criu_version, args.switches.tcp_established));
    let options = RestoreOptions {
        root: args.root,
        flags: CriuFlags {
            auto_dedup: args.auto_dedup,
            lazy_pages: args.lazy_pages,
            ..args.switches.flags()
        },
        manage_cgroups_mode: args.manage_cgroups_mode,
        lsm_profile: args.lsm_profile,
        lsm_mount_context: args.lsm_mount_context,
        config_file: ConfigFile::from_annotation(args.criu_config.as_deref()),
        descriptors: args.descriptors,
        ext_mounts: Vec::new(),
        network_lock,
        tcp_close: args.tcp_close,
    };
    // The opened namespace files are closed when the plan is dropped.
    let plan = restore_plan(&Host, criu_version, &namespaces, &options)?;
    println!(
        "{}",
        serde_json::to_string_pretty(&opts_to_json(&plan.opts))?
    );
    Ok(())
}
