//! The `criu_opts` of runc's RESTORE and DUMP requests, built as pure functions.
//!
//! [`restore_plan`] follows runc's `Restore` (criu_linux.go) step by step and in
//! its order, so that a request failing several rules reports the same first
//! error as runc. Per-run descriptors (`images_dir_fd`, `work_dir_fd`) and
//! `cg_root` are left to the caller that holds them.
//!
//! Where podrestore goes beyond runc it says so on the field: `network_lock`
//! (runc always leaves CRIU's iptables default, whose lock rules cost time and
//! can leak into a shared pod netns) and `tcp_close`.

use std::path::PathBuf;
use std::str::FromStr;

use podrestore_proto::criu as rpc;

use super::version::{
    LSM_OPTIONS, MIN_CRIU, NETWORK_LOCK, NETWORK_LOCK_SKIP, VersionTooOld, check_version,
};
use crate::namespaces::{self, Namespace, NamespaceError, NamespaceType};
use crate::sys::Syscalls;

/// CRIU's log level runc asks for (4: debug).
pub const LOG_LEVEL: i32 = 4;
/// The restore log file name, in the work directory.
pub const RESTORE_LOG: &str = "restore.log";
/// The dump log file name, in the work directory.
pub const DUMP_LOG: &str = "dump.log";
/// The CRIU configuration file runc points CRIU at unless told otherwise.
pub const RUNC_CONFIG_FILE: &str = "/etc/criu/runc.conf";
/// The annotation (or label) that overrides the CRIU configuration file.
pub const CONFIG_ANNOTATION: &str = "org.criu.config";
/// The file in the images directory that lists the dumped process's fds 0..2.
pub const DESCRIPTORS_FILE: &str = "descriptors.json";

/// Errors of building a request. Messages are runc's where runc has the rule.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// CRIU is older than the request needs.
    #[error(transparent)]
    TooOld(#[from] VersionTooOld),
    /// An unknown `--manage-cgroups-mode`.
    #[error("invalid manage-cgroups-mode value")]
    CgroupMode,
    /// An unknown `--network-lock` (podrestore's option).
    #[error("invalid network-lock value {0:?}: use iptables, nftables or skip")]
    NetworkLockValue(String),
    /// `--lsm-profile` on a CRIU before 3.16.
    #[error("--lsm-profile requires at least CRIU 3.16")]
    LsmProfile,
    /// `--lsm-mount-context` on a CRIU before 3.16.
    #[error("--lsm-mount-context requires at least CRIU 3.16")]
    LsmMountContext,
    /// `--network-lock` on a CRIU before 3.16 (podrestore's option).
    #[error("--network-lock requires at least CRIU 3.16")]
    NetworkLock,
    /// `--network-lock skip` on a CRIU before 3.19 (podrestore's option).
    #[error("--network-lock skip requires at least CRIU 3.19")]
    NetworkLockSkip,
    /// A namespace rule.
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// `descriptors.json` could not be read.
    #[error("cannot read {path}: {cause}", path = .path.display())]
    ReadDescriptors {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: std::io::Error,
    },
    /// `descriptors.json` is not a JSON array of strings.
    #[error("invalid {path}: {cause}", path = .path.display())]
    ParseDescriptors {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: serde_json::Error,
    },
}

/// runc's `--manage-cgroups-mode`, mapped as `criuCgMode` does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CgroupMode {
    /// `""`: CRIU's DEFAULT, which CRIU treats as SOFT.
    #[default]
    Default,
    /// `soft`.
    Soft,
    /// `full`.
    Full,
    /// `strict`.
    Strict,
    /// `ignore`: CRIU leaves cgroups alone, so the restored tasks stay in the
    /// cgroup CRIU runs in.
    Ignore,
}

impl FromStr for CgroupMode {
    type Err = OptionsError;

    fn from_str(s: &str) -> Result<Self, OptionsError> {
        match s {
            "" => Ok(Self::Default),
            "soft" => Ok(Self::Soft),
            "full" => Ok(Self::Full),
            "strict" => Ok(Self::Strict),
            "ignore" => Ok(Self::Ignore),
            _ => Err(OptionsError::CgroupMode),
        }
    }
}

impl CgroupMode {
    /// The RPC enum value.
    pub fn to_rpc(self) -> rpc::CriuCgMode {
        match self {
            Self::Default => rpc::CriuCgMode::Default,
            Self::Soft => rpc::CriuCgMode::Soft,
            Self::Full => rpc::CriuCgMode::Full,
            Self::Strict => rpc::CriuCgMode::Strict,
            Self::Ignore => rpc::CriuCgMode::Ignore,
        }
    }
}

/// How CRIU locks the network while it works (`network_lock`). podrestore's
/// option: runc never sets it, so CRIU's default (iptables) applies there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkLock {
    /// iptables rules (CRIU's default).
    Iptables,
    /// An nftables table.
    Nftables,
    /// No lock at all (CRIU >= 3.19): nothing is added to, or can be left in,
    /// a shared network namespace.
    Skip,
}

impl FromStr for NetworkLock {
    type Err = OptionsError;

    fn from_str(s: &str) -> Result<Self, OptionsError> {
        match s {
            "iptables" => Ok(Self::Iptables),
            "nftables" => Ok(Self::Nftables),
            "skip" => Ok(Self::Skip),
            other => Err(OptionsError::NetworkLockValue(other.to_owned())),
        }
    }
}

impl NetworkLock {
    /// The RPC enum value.
    pub fn to_rpc(self) -> rpc::CriuNetworkLockMethod {
        match self {
            Self::Iptables => rpc::CriuNetworkLockMethod::Iptables,
            Self::Nftables => rpc::CriuNetworkLockMethod::Nftables,
            Self::Skip => rpc::CriuNetworkLockMethod::Skip,
        }
    }

    fn check(self, criu_version: u32) -> Result<(), OptionsError> {
        if criu_version < NETWORK_LOCK {
            return Err(OptionsError::NetworkLock);
        }
        if self == Self::Skip && criu_version < NETWORK_LOCK_SKIP {
            return Err(OptionsError::NetworkLockSkip);
        }
        Ok(())
    }
}

/// Which CRIU configuration file the request names (runc's
/// `handleCriuConfigurationFile`, driven by the `org.criu.config` annotation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigFile {
    /// No annotation: `/etc/criu/runc.conf` (CRIU skips it when absent).
    #[default]
    RuncDefault,
    /// The annotation is present and empty: no configuration file.
    Disabled,
    /// The annotation's value.
    Path(String),
}

impl ConfigFile {
    /// From the value of the `org.criu.config` annotation, if present.
    pub fn from_annotation(value: Option<&str>) -> Self {
        match value {
            None => Self::RuncDefault,
            Some("") => Self::Disabled,
            Some(path) => Self::Path(path.to_owned()),
        }
    }

    fn value(&self) -> Option<String> {
        match self {
            Self::RuncDefault => Some(RUNC_CONFIG_FILE.to_owned()),
            Self::Disabled => None,
            Self::Path(path) => Some(path.clone()),
        }
    }
}

/// runc's command-line switches that map one to one onto CRIU options. runc
/// always sends them, `false` when off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CriuFlags {
    /// `--tcp-established`.
    pub tcp_established: bool,
    /// `--ext-unix-sk`.
    pub ext_unix_sk: bool,
    /// `--shell-job`.
    pub shell_job: bool,
    /// `--file-locks`.
    pub file_locks: bool,
    /// `--auto-dedup`.
    pub auto_dedup: bool,
    /// `--lazy-pages`.
    pub lazy_pages: bool,
}

/// What a restore asks for beyond the target namespaces.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// CRIU's root: a mount point whose parent is not overmounted (runc bind
    /// mounts the rootfs at `<state>/criu-root`). `None` leaves it unset.
    pub root: Option<String>,
    /// The runc switches.
    pub flags: CriuFlags,
    /// `--manage-cgroups-mode` as given (`""`, soft, full, strict, ignore);
    /// parsed where runc parses it, so the first error is runc's.
    pub manage_cgroups_mode: String,
    /// `--lsm-profile` (CRIU >= 3.16).
    pub lsm_profile: Option<String>,
    /// `--lsm-mount-context` (CRIU >= 3.16).
    pub lsm_mount_context: Option<String>,
    /// The CRIU configuration file.
    pub config_file: ConfigFile,
    /// `descriptors.json` of the images, read after the namespaces as runc does.
    /// `None` sends no pipe `inherit_fd` entries.
    pub descriptors: Option<PathBuf>,
    /// External mounts: (key recorded at dump, host path to mount).
    pub ext_mounts: Vec<(String, String)>,
    /// podrestore beyond runc: the network lock method (CRIU >= 3.16; skip
    /// needs 3.19). `None` leaves CRIU's default, as runc does.
    pub network_lock: Option<NetworkLock>,
    /// podrestore beyond runc: restore established TCP connections closed.
    pub tcp_close: bool,
}

/// A RESTORE request's options together with the files it refers to.
#[derive(Debug)]
pub struct RestorePlan<F> {
    /// The options; `images_dir_fd` is -1 (unset) until the caller opens the
    /// images directory.
    pub opts: rpc::CriuOpts,
    /// Files CRIU must have at fds 4, 5, ... (namespace files).
    pub files: Vec<F>,
    /// The paths behind `files`, in order.
    pub opened: Vec<PathBuf>,
}

/// runc's RESTORE options for `namespaces` (in spec order) and `options`.
///
/// Order of checks, as in runc's `Restore`: CRIU >= 3.0, the cgroup mode, the
/// LSM options, the namespaces (§ `handleRestoringNamespaces`), then
/// `descriptors.json`. The CLI-fixed fields are always set: evasive_devices,
/// log_level 4, log_file `restore.log`, rst_sibling, manage_cgroups,
/// notify_scripts, orphan_pts_master, empty_ns = CLONE_NEWNET (runc never lets
/// CRIU restore network devices), and the runc switches.
pub fn restore_plan<S: Syscalls>(
    sys: &S,
    criu_version: u32,
    namespaces: &[Namespace],
    options: &RestoreOptions,
) -> Result<RestorePlan<S::File>, OptionsError> {
    check_version(criu_version, MIN_CRIU)?;
    let cg_mode: CgroupMode = options.manage_cgroups_mode.parse()?;
    let flags = options.flags;
    let mut opts = rpc::CriuOpts {
        evasive_devices: Some(true),
        log_level: Some(LOG_LEVEL),
        log_file: Some(RESTORE_LOG.to_owned()),
        rst_sibling: Some(true),
        root: options.root.clone(),
        manage_cgroups: Some(true),
        manage_cgroups_mode: Some(cg_mode.to_rpc().into()),
        notify_scripts: Some(true),
        shell_job: Some(flags.shell_job),
        ext_unix_sk: Some(flags.ext_unix_sk),
        tcp_established: Some(flags.tcp_established),
        file_locks: Some(flags.file_locks),
        empty_ns: Some(NamespaceType::Network.clone_flag()),
        orphan_pts_master: Some(true),
        auto_dedup: Some(flags.auto_dedup),
        lazy_pages: Some(flags.lazy_pages),
        ..Default::default()
    };
    if let Some(profile) = &options.lsm_profile {
        if criu_version < LSM_OPTIONS {
            return Err(OptionsError::LsmProfile);
        }
        opts.lsm_profile = Some(profile.clone());
    }
    if let Some(context) = &options.lsm_mount_context {
        if criu_version < LSM_OPTIONS {
            return Err(OptionsError::LsmMountContext);
        }
        opts.lsm_mount_context = Some(context.clone());
    }
    opts.config_file = options.config_file.value();

    let ns = namespaces::restore_namespaces(sys, criu_version, namespaces)?;
    opts.inherit_fd = ns.inherit_fd;
    opts.join_ns = ns.join_ns;
    opts.ext_mnt = ext_mounts(&options.ext_mounts);

    if let Some(lock) = options.network_lock {
        lock.check(criu_version)?;
        opts.network_lock = Some(lock.to_rpc().into());
    }
    if options.tcp_close {
        opts.tcp_close = Some(true);
    }

    if let Some(path) = &options.descriptors {
        let descriptors = read_descriptors(sys, path)?;
        opts.inherit_fd.extend(pipe_inherit_fds(&descriptors));
    }

    Ok(RestorePlan {
        opts,
        files: ns.files,
        opened: ns.opened,
    })
}

/// runc's rule for the dumped process's stdio: each of fds 0..2 that was a pipe
/// (its link target contains `pipe:`) is handed over from CRIU's own fd of the
/// same number, under the recorded name as key.
pub fn pipe_inherit_fds(descriptors: &[String]) -> Vec<rpc::InheritFd> {
    (0..)
        .zip(descriptors)
        .filter(|(_, name)| name.contains("pipe:"))
        .map(|(fd, name)| rpc::InheritFd {
            key: name.clone(),
            fd,
        })
        .collect()
}

fn read_descriptors<S: Syscalls>(
    sys: &S,
    path: &std::path::Path,
) -> Result<Vec<String>, OptionsError> {
    let bytes = sys
        .read_file(path)
        .map_err(|cause| OptionsError::ReadDescriptors {
            path: path.to_owned(),
            cause,
        })?;
    serde_json::from_slice(&bytes).map_err(|cause| OptionsError::ParseDescriptors {
        path: path.to_owned(),
        cause,
    })
}

fn ext_mounts(list: &[(String, String)]) -> Vec<rpc::ExtMountMap> {
    list.iter()
        .map(|(key, val)| rpc::ExtMountMap {
            key: key.clone(),
            val: val.clone(),
        })
        .collect()
}

/// What a checkpoint asks for beyond the source namespaces.
#[derive(Debug, Clone, Default)]
pub struct DumpOptions {
    /// The root task to dump.
    pub pid: i32,
    /// The root of the dumped tree's filesystem (runc: the container rootfs).
    pub root: Option<String>,
    /// The runc switches.
    pub flags: CriuFlags,
    /// `--leave-running`.
    pub leave_running: bool,
    /// `--manage-cgroups-mode` as given; runc sets the mode on dump only when
    /// the flag is given.
    pub manage_cgroups_mode: Option<String>,
    /// The CRIU configuration file.
    pub config_file: ConfigFile,
    /// A freezer cgroup to stop the tree with instead of ptrace.
    pub freeze_cgroup: Option<String>,
    /// External mounts: key = value = the mountpoint, as runc records them.
    pub ext_mounts: Vec<(String, String)>,
    /// podrestore beyond runc: the network lock method.
    pub network_lock: Option<NetworkLock>,
}

/// runc's DUMP options (`Checkpoint`), in runc's order of checks: CRIU >= 3.0,
/// the configuration file, the external network and PID namespaces (always
/// checked, so any checkpoint needs CRIU >= 3.15), then the cgroup mode.
/// `images_dir_fd` is left unset for the caller.
pub fn dump_opts<S: Syscalls>(
    sys: &S,
    criu_version: u32,
    namespaces: &[Namespace],
    options: &DumpOptions,
) -> Result<rpc::CriuOpts, OptionsError> {
    check_version(criu_version, MIN_CRIU)?;
    let flags = options.flags;
    let mut opts = rpc::CriuOpts {
        log_level: Some(LOG_LEVEL),
        log_file: Some(DUMP_LOG.to_owned()),
        root: options.root.clone(),
        manage_cgroups: Some(true),
        notify_scripts: Some(true),
        pid: Some(options.pid),
        shell_job: Some(flags.shell_job),
        leave_running: Some(options.leave_running),
        tcp_established: Some(flags.tcp_established),
        ext_unix_sk: Some(flags.ext_unix_sk),
        file_locks: Some(flags.file_locks),
        empty_ns: Some(NamespaceType::Network.clone_flag()),
        orphan_pts_master: Some(true),
        auto_dedup: Some(flags.auto_dedup),
        lazy_pages: Some(flags.lazy_pages),
        ..Default::default()
    };
    opts.config_file = options.config_file.value();
    opts.external = namespaces::checkpoint_externals(sys, criu_version, namespaces)?;
    opts.freeze_cgroup = options.freeze_cgroup.clone();
    if let Some(mode) = &options.manage_cgroups_mode {
        let mode: CgroupMode = mode.parse()?;
        opts.manage_cgroups_mode = Some(mode.to_rpc().into());
    }
    opts.ext_mnt = ext_mounts(&options.ext_mounts);
    if let Some(lock) = options.network_lock {
        lock.check(criu_version)?;
        opts.network_lock = Some(lock.to_rpc().into());
    }
    Ok(opts)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;
    use std::io;
    use std::path::Path;

    use super::*;

    /// Files by path; namespace opens succeed for listed paths.
    #[derive(Default)]
    struct FakeSys {
        files: BTreeMap<PathBuf, Vec<u8>>,
    }

    impl Syscalls for FakeSys {
        type File = PathBuf;
        fn open_namespace(&self, path: &Path) -> io::Result<PathBuf> {
            if self.files.contains_key(path) {
                Ok(path.to_owned())
            } else {
                Err(io::ErrorKind::NotFound.into())
            }
        }
        fn inode(&self, path: &Path) -> io::Result<u64> {
            if self.files.contains_key(path) {
                Ok(4026532008)
            } else {
                Err(io::ErrorKind::NotFound.into())
            }
        }
        fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
            self.files
                .get(path)
                .cloned()
                .ok_or_else(|| io::ErrorKind::NotFound.into())
        }
    }

    fn sys() -> FakeSys {
        let mut sys = FakeSys::default();
        sys.files.insert("/run/netns/b".into(), Vec::new());
        sys.files.insert("/proc/9/ns/pid".into(), Vec::new());
        sys.files.insert(
            "/img/descriptors.json".into(),
            br#"["/dev/null","pipe:[12345]","pipe:[12346]"]"#.to_vec(),
        );
        sys.files.insert("/img/bad.json".into(), b"{".to_vec());
        sys
    }

    fn ns(list: &[(&str, Option<&str>)]) -> Vec<Namespace> {
        list.iter()
            .map(|(t, p)| Namespace::from_oci(t, *p).unwrap())
            .collect()
    }

    #[test]
    fn restore_defaults_match_runc() {
        let plan = restore_plan(&sys(), 40201, &[], &RestoreOptions::default()).unwrap();
        let want = rpc::CriuOpts {
            images_dir_fd: -1,
            evasive_devices: Some(true),
            log_level: Some(4),
            log_file: Some("restore.log".into()),
            rst_sibling: Some(true),
            manage_cgroups: Some(true),
            manage_cgroups_mode: Some(6),
            notify_scripts: Some(true),
            shell_job: Some(false),
            ext_unix_sk: Some(false),
            tcp_established: Some(false),
            file_locks: Some(false),
            empty_ns: Some(0x4000_0000),
            orphan_pts_master: Some(true),
            auto_dedup: Some(false),
            lazy_pages: Some(false),
            config_file: Some("/etc/criu/runc.conf".into()),
            ..Default::default()
        };
        assert_eq!(plan.opts, want);
        assert!(plan.files.is_empty());
        // Fields runc never sets on restore.
        assert_eq!(plan.opts.external, Vec::<String>::new());
        assert_eq!(plan.opts.network_lock, None);
        assert_eq!(plan.opts.pid, None);
        assert_eq!(plan.opts.leave_running, None);
    }

    #[test]
    fn restore_full_request() {
        let options = RestoreOptions {
            root: Some("/run/podrestore/x/criu-root".into()),
            flags: CriuFlags {
                tcp_established: true,
                ext_unix_sk: true,
                shell_job: true,
                file_locks: true,
                auto_dedup: false,
                lazy_pages: false,
            },
            manage_cgroups_mode: "ignore".into(),
            config_file: ConfigFile::Disabled,
            descriptors: Some("/img/descriptors.json".into()),
            ext_mounts: vec![("/etc/hosts".into(), "/var/lib/x/hosts".into())],
            network_lock: Some(NetworkLock::Skip),
            tcp_close: true,
            ..Default::default()
        };
        let plan = restore_plan(
            &sys(),
            40201,
            &ns(&[
                ("network", Some("/run/netns/b")),
                ("pid", Some("/proc/9/ns/pid")),
                ("ipc", Some("/proc/9/ns/ipc")),
            ]),
            &options,
        )
        .unwrap();
        let o = &plan.opts;
        assert_eq!(o.root.as_deref(), Some("/run/podrestore/x/criu-root"));
        assert_eq!(o.manage_cgroups_mode, Some(0));
        assert_eq!(o.config_file, None);
        assert_eq!(o.shell_job, Some(true));
        assert_eq!(o.tcp_established, Some(true));
        assert_eq!(o.network_lock, Some(3));
        assert_eq!(o.tcp_close, Some(true));
        let inherit: Vec<(&str, i32)> = o
            .inherit_fd
            .iter()
            .map(|i| (i.key.as_str(), i.fd))
            .collect();
        // Namespace fds first, then the pipes at their own stdio numbers.
        assert_eq!(
            inherit,
            [
                ("extRootNetNS", 4),
                ("extRootPidNS", 5),
                ("pipe:[12345]", 1),
                ("pipe:[12346]", 2)
            ]
        );
        assert_eq!(o.join_ns.len(), 1);
        assert_eq!(o.ext_mnt[0].key, "/etc/hosts");
        assert_eq!(
            plan.files,
            [
                PathBuf::from("/run/netns/b"),
                PathBuf::from("/proc/9/ns/pid")
            ]
        );
    }

    #[test]
    fn cgroup_modes() {
        for (given, want) in [
            ("", rpc::CriuCgMode::Default),
            ("soft", rpc::CriuCgMode::Soft),
            ("full", rpc::CriuCgMode::Full),
            ("strict", rpc::CriuCgMode::Strict),
            ("ignore", rpc::CriuCgMode::Ignore),
        ] {
            let options = RestoreOptions {
                manage_cgroups_mode: given.into(),
                ..Default::default()
            };
            let plan = restore_plan(&sys(), 40201, &[], &options).unwrap();
            assert_eq!(plan.opts.manage_cgroups_mode, Some(want.into()), "{given}");
        }
    }

    #[test]
    fn config_file_rules() {
        assert_eq!(ConfigFile::from_annotation(None), ConfigFile::RuncDefault);
        assert_eq!(ConfigFile::from_annotation(Some("")), ConfigFile::Disabled);
        assert_eq!(
            ConfigFile::from_annotation(Some("/etc/criu/x.conf")),
            ConfigFile::Path("/etc/criu/x.conf".into())
        );
        let options = RestoreOptions {
            config_file: ConfigFile::Path("/etc/criu/x.conf".into()),
            ..Default::default()
        };
        let plan = restore_plan(&sys(), 40201, &[], &options).unwrap();
        assert_eq!(plan.opts.config_file.as_deref(), Some("/etc/criu/x.conf"));
    }

    #[test]
    fn restore_errors_in_runc_order() {
        struct Case {
            name: &'static str,
            version: u32,
            spec: Vec<Namespace>,
            options: RestoreOptions,
            error: &'static str,
        }
        let bad_mode = || RestoreOptions {
            manage_cgroups_mode: "hard".into(),
            ..Default::default()
        };
        let cases = vec![
            Case {
                name: "too old before anything",
                version: 20800,
                spec: ns(&[("cgroup", Some("/x"))]),
                options: bad_mode(),
                error: "CRIU version 20800 must be 30000 or higher",
            },
            Case {
                name: "cgroup mode before namespaces",
                version: 40201,
                spec: ns(&[("cgroup", Some("/x"))]),
                options: bad_mode(),
                error: "invalid manage-cgroups-mode value",
            },
            Case {
                name: "lsm profile on 3.15",
                version: 31599,
                spec: ns(&[("cgroup", Some("/x"))]),
                options: RestoreOptions {
                    lsm_profile: Some("apparmor:x".into()),
                    ..Default::default()
                },
                error: "--lsm-profile requires at least CRIU 3.16",
            },
            Case {
                name: "lsm mount context on 3.15",
                version: 31500,
                spec: vec![],
                options: RestoreOptions {
                    lsm_mount_context: Some("system_u:object_r:x".into()),
                    ..Default::default()
                },
                error: "--lsm-mount-context requires at least CRIU 3.16",
            },
            Case {
                name: "namespaces before descriptors",
                version: 40201,
                spec: ns(&[("network", Some("/run/netns/missing"))]),
                options: RestoreOptions {
                    descriptors: Some("/img/missing.json".into()),
                    ..Default::default()
                },
                error: "Requested network namespace /run/netns/missing does not exist",
            },
            Case {
                name: "missing descriptors",
                version: 40201,
                spec: vec![],
                options: RestoreOptions {
                    descriptors: Some("/img/missing.json".into()),
                    ..Default::default()
                },
                error: "cannot read /img/missing.json: entity not found",
            },
            Case {
                name: "bad descriptors",
                version: 40201,
                spec: vec![],
                options: RestoreOptions {
                    descriptors: Some("/img/bad.json".into()),
                    ..Default::default()
                },
                error: "invalid /img/bad.json: invalid type: map, expected a sequence at line 1 column 0",
            },
            Case {
                name: "network lock needs 3.16",
                version: 31500,
                spec: vec![],
                options: RestoreOptions {
                    network_lock: Some(NetworkLock::Nftables),
                    ..Default::default()
                },
                error: "--network-lock requires at least CRIU 3.16",
            },
            Case {
                name: "network lock skip needs 3.19",
                version: 31800,
                spec: vec![],
                options: RestoreOptions {
                    network_lock: Some(NetworkLock::Skip),
                    ..Default::default()
                },
                error: "--network-lock skip requires at least CRIU 3.19",
            },
        ];
        for case in cases {
            let err = restore_plan(&sys(), case.version, &case.spec, &case.options)
                .map(|_| ())
                .expect_err(case.name);
            assert_eq!(err.to_string(), case.error, "{}", case.name);
        }
    }

    #[test]
    fn pipes_only_from_descriptors() {
        let list = vec![
            "/dev/pts/0".to_string(),
            "pipe:[1]".to_string(),
            "socket:[2]".to_string(),
            "anon_inode:pipe:[3]".to_string(),
        ];
        let got: Vec<(String, i32)> = pipe_inherit_fds(&list)
            .into_iter()
            .map(|i| (i.key, i.fd))
            .collect();
        assert_eq!(
            got,
            [
                ("pipe:[1]".to_string(), 1),
                ("anon_inode:pipe:[3]".to_string(), 3)
            ]
        );
    }

    #[test]
    fn network_lock_values() {
        assert_eq!("skip".parse::<NetworkLock>().unwrap(), NetworkLock::Skip);
        assert_eq!(
            "nft".parse::<NetworkLock>().unwrap_err().to_string(),
            "invalid network-lock value \"nft\": use iptables, nftables or skip"
        );
    }

    #[test]
    fn dump_matches_runc() {
        let options = DumpOptions {
            pid: 1234,
            root: Some("/".into()),
            leave_running: true,
            ..Default::default()
        };
        let opts = dump_opts(
            &sys(),
            40201,
            &ns(&[
                ("pid", Some("/proc/9/ns/pid")),
                ("network", Some("/run/netns/b")),
                ("ipc", None),
            ]),
            &options,
        )
        .unwrap();
        let want = rpc::CriuOpts {
            images_dir_fd: -1,
            log_level: Some(4),
            log_file: Some("dump.log".into()),
            root: Some("/".into()),
            manage_cgroups: Some(true),
            notify_scripts: Some(true),
            pid: Some(1234),
            shell_job: Some(false),
            leave_running: Some(true),
            tcp_established: Some(false),
            ext_unix_sk: Some(false),
            file_locks: Some(false),
            empty_ns: Some(0x4000_0000),
            orphan_pts_master: Some(true),
            auto_dedup: Some(false),
            lazy_pages: Some(false),
            config_file: Some("/etc/criu/runc.conf".into()),
            external: vec![
                "net[4026532008]:extRootNetNS".into(),
                "pid[4026532008]:extRootPidNS".into(),
            ],
            ..Default::default()
        };
        assert_eq!(opts, want);
    }

    #[test]
    fn dump_errors_in_runc_order() {
        let bad_mode = DumpOptions {
            manage_cgroups_mode: Some("x".into()),
            ..Default::default()
        };
        let err = dump_opts(&sys(), 31400, &[], &bad_mode).unwrap_err();
        assert_eq!(
            err.to_string(),
            "criu lacks support for external pid namespace during checkpointing process (old criu version?)"
        );
        let err = dump_opts(&sys(), 40201, &[], &bad_mode).unwrap_err();
        assert_eq!(err.to_string(), "invalid manage-cgroups-mode value");
        let soft = DumpOptions {
            manage_cgroups_mode: Some("soft".into()),
            ..Default::default()
        };
        let opts = dump_opts(&sys(), 40201, &[], &soft).unwrap();
        assert_eq!(opts.manage_cgroups_mode, Some(3));
    }
}
