//! runc's namespace rules for CRIU, as pure functions over a [`Syscalls`] handle.
//!
//! - Restore ([`restore_namespaces`], runc's `handleRestoringNamespaces`): the
//!   target's network and PID namespaces are handed to CRIU as inherited files
//!   under the keys `extRootNetNS` / `extRootPidNS`; ipc, uts, mount, user and
//!   time are joined by path (`join_ns`); a cgroup namespace path is refused.
//! - Checkpoint ([`checkpoint_externals`], runc's
//!   `handleCheckpointingExternalNamespaces`): the source's network and PID
//!   namespaces are marked external as `net[<inode>]:extRootNetNS` and
//!   `pid[<inode>]:extRootPidNS`, so that CRIU writes the key into the images and
//!   looks for exactly that inherited file on restore.
//!
//! Error texts are runc's, word for word, so that people who know runc recognise
//! them (including runc's "network" in the open error for a PID namespace).

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use podrestore_proto::criu as rpc;

use crate::criu::version::{EXTERNAL_NET_NS, EXTERNAL_PID_NS};
use crate::sys::Syscalls;

/// The fd number CRIU sees the first inherited namespace file at: fd 3 is the
/// RPC socket (`criu swrk 3`), inherited files follow in order.
pub const FIRST_INHERIT_FD: i32 = 4;

/// The `inherit_fd` / `external` key of an external network namespace.
pub const EXTERNAL_NET_KEY: &str = "extRootNetNS";
/// The `inherit_fd` / `external` key of an external PID namespace.
pub const EXTERNAL_PID_KEY: &str = "extRootPidNS";

/// A Linux namespace type, named as the OCI runtime spec names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NamespaceType {
    /// `network` (CLONE_NEWNET).
    Network,
    /// `pid` (CLONE_NEWPID).
    Pid,
    /// `ipc` (CLONE_NEWIPC).
    Ipc,
    /// `uts` (CLONE_NEWUTS).
    Uts,
    /// `mount` (CLONE_NEWNS).
    Mount,
    /// `user` (CLONE_NEWUSER).
    User,
    /// `cgroup` (CLONE_NEWCGROUP).
    Cgroup,
    /// `time` (CLONE_NEWTIME).
    Time,
}

impl NamespaceType {
    /// Every type, in the OCI spec's order of listing.
    pub const ALL: [NamespaceType; 8] = [
        Self::Pid,
        Self::Network,
        Self::Mount,
        Self::Ipc,
        Self::Uts,
        Self::User,
        Self::Cgroup,
        Self::Time,
    ];

    /// Parses an OCI runtime-spec namespace type (`network`, `pid`, ...).
    pub fn from_oci(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.oci_name() == name)
    }

    /// The OCI runtime-spec name.
    pub fn oci_name(self) -> &'static str {
        match self {
            Self::Network => "network",
            Self::Pid => "pid",
            Self::Ipc => "ipc",
            Self::Uts => "uts",
            Self::Mount => "mount",
            Self::User => "user",
            Self::Cgroup => "cgroup",
            Self::Time => "time",
        }
    }

    /// runc's `configs.NamespaceType` value (`NEWNET`, ...), which its errors print.
    pub fn runc_name(self) -> &'static str {
        match self {
            Self::Network => "NEWNET",
            Self::Pid => "NEWPID",
            Self::Ipc => "NEWIPC",
            Self::Uts => "NEWUTS",
            Self::Mount => "NEWNS",
            Self::User => "NEWUSER",
            Self::Cgroup => "NEWCGROUP",
            Self::Time => "NEWTIME",
        }
    }

    /// The name under `/proc/<pid>/ns/`, which CRIU's `join_ns` and `external`
    /// use too (runc's `NsName`).
    pub fn proc_name(self) -> &'static str {
        match self {
            Self::Network => "net",
            Self::Pid => "pid",
            Self::Ipc => "ipc",
            Self::Uts => "uts",
            Self::Mount => "mnt",
            Self::User => "user",
            Self::Cgroup => "cgroup",
            Self::Time => "time",
        }
    }

    /// The `CLONE_NEW*` flag.
    pub fn clone_flag(self) -> u32 {
        let flag = match self {
            Self::Network => libc::CLONE_NEWNET,
            Self::Pid => libc::CLONE_NEWPID,
            Self::Ipc => libc::CLONE_NEWIPC,
            Self::Uts => libc::CLONE_NEWUTS,
            Self::Mount => libc::CLONE_NEWNS,
            Self::User => libc::CLONE_NEWUSER,
            Self::Cgroup => libc::CLONE_NEWCGROUP,
            Self::Time => libc::CLONE_NEWTIME,
        };
        flag.cast_unsigned()
    }

    /// The external key runc uses for this type (`criuNsToKey`): only network
    /// and PID namespaces are ever external.
    pub fn external_key(self) -> Option<&'static str> {
        match self {
            Self::Network => Some(EXTERNAL_NET_KEY),
            Self::Pid => Some(EXTERNAL_PID_KEY),
            _ => None,
        }
    }

    /// The CRIU version that supports this type as an external namespace
    /// (runc's `criuSupportsExtNS`): net 3.11, pid 3.15, nothing else ever.
    pub fn external_min_version(self) -> Option<u32> {
        match self {
            Self::Network => Some(EXTERNAL_NET_NS),
            Self::Pid => Some(EXTERNAL_PID_NS),
            _ => None,
        }
    }
}

impl fmt::Display for NamespaceType {
    /// Prints runc's type name, as runc's `%v` does.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.runc_name())
    }
}

/// One namespace of a target (or source), in the order the spec lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The type.
    pub kind: NamespaceType,
    /// An existing namespace to use; `None` means "a new one".
    pub path: Option<PathBuf>,
}

impl Namespace {
    /// A namespace entry; an empty path means no path, as in runc's `PathOf`.
    pub fn new(kind: NamespaceType, path: Option<impl Into<PathBuf>>) -> Self {
        let path = path.map(Into::into).filter(|p| !p.as_os_str().is_empty());
        Self { kind, path }
    }

    /// Parses an OCI spec entry (`type`, `path`) as runc's spec converter does.
    pub fn from_oci(kind: &str, path: Option<&str>) -> Result<Self, NamespaceError> {
        match NamespaceType::from_oci(kind) {
            Some(t) => Ok(Self::new(t, path)),
            None => Err(NamespaceError::UnknownType(go_quote_entry(
                kind,
                path.unwrap_or(""),
            ))),
        }
    }

    /// The path, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Parses a command-line `TYPE[=PATH]` (`network=/run/netns/a`, `pid`):
    /// an OCI type, and the namespace to use when a path is given.
    pub fn parse_arg(arg: &str) -> Result<Self, NamespaceError> {
        match arg.split_once('=') {
            Some((kind, path)) => Self::from_oci(kind, Some(path)),
            None => Self::from_oci(arg, None),
        }
    }
}

/// The path of the first namespace of type `kind` in `namespaces`, if it has one.
pub fn path_of(namespaces: &[Namespace], kind: NamespaceType) -> Option<&Path> {
    namespaces
        .iter()
        .find(|ns| ns.kind == kind)
        .and_then(Namespace::path)
}

/// Errors of the namespace rules. Messages are runc's.
#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    /// The spec names a type runc does not know.
    #[error("namespace {0} does not exist")]
    UnknownType(String),
    /// The spec lists a type twice (runc's spec converter rejects that first).
    #[error("malformed spec file: duplicated ns {0}")]
    Duplicated(String),
    /// CRIU is too old for an external namespace of this type on restore. runc
    /// checks this before looking at the path.
    #[error(
        "criu lacks support for external {0} namespace during the restoration process (old criu version?)"
    )]
    RestoreUnsupported(&'static str),
    /// CRIU is too old for an external namespace of this type on checkpoint.
    #[error(
        "criu lacks support for external {0} namespace during checkpointing process (old criu version?)"
    )]
    CheckpointUnsupported(&'static str),
    /// A network or PID namespace path could not be opened (runc says "network"
    /// for both).
    #[error("Requested network namespace {path} does not exist")]
    Missing {
        /// The path as given.
        path: String,
        /// Why the open failed; logged, not part of runc's message.
        cause: io::Error,
    },
    /// CRIU cannot join a namespace of this type (only cgroup gets here).
    #[error("Do not know how to handle namespace {0}")]
    CannotJoin(NamespaceType),
    /// The inode of a namespace to mark external could not be read.
    #[error("stat {path}: {cause}")]
    Stat {
        /// The path as given.
        path: String,
        /// The failure of `stat(2)`.
        cause: io::Error,
    },
}

/// The namespace part of a CRIU RESTORE request.
#[derive(Debug)]
pub struct RestoreNamespaces<F> {
    /// `inherit_fd` entries, numbered from [`FIRST_INHERIT_FD`] in spec order.
    pub inherit_fd: Vec<rpc::InheritFd>,
    /// `join_ns` entries in spec order.
    pub join_ns: Vec<rpc::JoinNamespace>,
    /// The opened files, to be placed at fd `FIRST_INHERIT_FD + i` in CRIU.
    pub files: Vec<F>,
    /// The paths behind `files`, in the order they were opened.
    pub opened: Vec<PathBuf>,
}

/// Checks a spec's namespace list as runc's spec converter does: every type at
/// most once. The error quotes the second entry the way Go's `%q` prints it.
pub fn check_duplicates(namespaces: &[Namespace]) -> Result<(), NamespaceError> {
    for (i, ns) in namespaces.iter().enumerate() {
        if namespaces[..i]
            .iter()
            .any(|earlier| earlier.kind == ns.kind)
        {
            let path = ns.path().map(|p| p.to_string_lossy()).unwrap_or_default();
            return Err(NamespaceError::Duplicated(go_quote_entry(
                ns.kind.oci_name(),
                &path,
            )));
        }
    }
    Ok(())
}

/// runc's `handleRestoringNamespaces`: the namespace part of a RESTORE request.
///
/// Walks `namespaces` in order and stops at the first error:
/// - network / PID: CRIU must support the external type (net >= 3.11,
///   pid >= 3.15) even when there is no path; with a path, the file is opened
///   (failure: `Requested network namespace <path> does not exist`) and passed as
///   `inherit_fd {extRoot<Net|Pid>NS, 4 + files opened so far}`;
/// - any other type without a path: skipped;
/// - cgroup with a path: `Do not know how to handle namespace NEWCGROUP`;
/// - ipc, uts, mount, user, time with a path: `join_ns {<proc name>, <path>}`,
///   not opened or checked here (CRIU checks it).
///
/// Files opened before an error are dropped (closed) with the error.
pub fn restore_namespaces<S: Syscalls>(
    sys: &S,
    criu_version: u32,
    namespaces: &[Namespace],
) -> Result<RestoreNamespaces<S::File>, NamespaceError> {
    check_duplicates(namespaces)?;
    let mut out = RestoreNamespaces {
        inherit_fd: Vec::new(),
        join_ns: Vec::new(),
        files: Vec::new(),
        opened: Vec::new(),
    };
    for ns in namespaces {
        match (ns.kind.external_key(), ns.kind.external_min_version()) {
            (Some(key), Some(min)) => {
                if criu_version < min {
                    return Err(NamespaceError::RestoreUnsupported(ns.kind.proc_name()));
                }
                let Some(path) = ns.path() else { continue };
                let file = sys.open_namespace(path).map_err(|cause| {
                    tracing::warn!(
                        path = %path.display(),
                        "If a specific network namespace is defined it must exist: {cause}"
                    );
                    NamespaceError::Missing {
                        path: path.display().to_string(),
                        cause,
                    }
                })?;
                // The number is taken before the push: the first file is fd 4.
                let fd = FIRST_INHERIT_FD + fd_offset(out.files.len());
                out.inherit_fd.push(rpc::InheritFd {
                    key: key.to_owned(),
                    fd,
                });
                out.files.push(file);
                out.opened.push(path.to_owned());
            }
            _ => {
                let Some(path) = ns.path() else { continue };
                if ns.kind == NamespaceType::Cgroup {
                    return Err(NamespaceError::CannotJoin(ns.kind));
                }
                out.join_ns.push(rpc::JoinNamespace {
                    ns: ns.kind.proc_name().to_owned(),
                    ns_file: path.to_string_lossy().into_owned(),
                    extra_opt: None,
                });
            }
        }
    }
    Ok(out)
}

/// runc's `handleCheckpointingExternalNamespaces`, called for network and then
/// PID whatever the spec holds: the `external` entries of a DUMP request.
///
/// For each of the two types: CRIU must support it as external (so any
/// checkpoint needs CRIU >= 3.15), then, if the spec gives a path, its inode
/// (following symlinks) makes `net[<inode>]:extRootNetNS` or
/// `pid[<inode>]:extRootPidNS`.
pub fn checkpoint_externals<S: Syscalls>(
    sys: &S,
    criu_version: u32,
    namespaces: &[Namespace],
) -> Result<Vec<String>, NamespaceError> {
    check_duplicates(namespaces)?;
    let mut external = Vec::new();
    for kind in [NamespaceType::Network, NamespaceType::Pid] {
        let (Some(key), Some(min)) = (kind.external_key(), kind.external_min_version()) else {
            continue;
        };
        if criu_version < min {
            return Err(NamespaceError::CheckpointUnsupported(kind.proc_name()));
        }
        let Some(path) = namespaces
            .iter()
            .find(|ns| ns.kind == kind)
            .and_then(Namespace::path)
        else {
            continue;
        };
        let inode = sys.inode(path).map_err(|cause| NamespaceError::Stat {
            path: path.display().to_string(),
            cause,
        })?;
        external.push(format!("{}[{inode}]:{key}", kind.proc_name()));
    }
    Ok(external)
}

fn fd_offset(count: usize) -> i32 {
    // A spec lists each type once, so there are at most two external files.
    i32::try_from(count).unwrap_or(i32::MAX - FIRST_INHERIT_FD)
}

/// Formats an OCI namespace entry as Go's `%q` prints the `LinuxNamespace`
/// struct in runc's spec-converter errors: `{"pid" "/proc/1/ns/pid"}`.
fn go_quote_entry(kind: &str, path: &str) -> String {
    format!("{{{} {}}}", go_quote(kind), go_quote(path))
}

/// Go's `strconv.Quote` for the strings that appear in namespace entries.
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x80 && c.is_control() => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, HashSet};

    use super::*;

    /// A kernel that knows a fixed set of files and records every call.
    #[derive(Default)]
    struct FakeSys {
        existing: HashSet<PathBuf>,
        inodes: BTreeMap<PathBuf, u64>,
        calls: RefCell<Vec<String>>,
    }

    impl FakeSys {
        fn with(paths: &[&str]) -> Self {
            let mut sys = Self::default();
            for (i, p) in paths.iter().enumerate() {
                sys.existing.insert(PathBuf::from(p));
                sys.inodes
                    .insert(PathBuf::from(p), 4026531000 + u64::try_from(i).unwrap());
            }
            sys
        }
        fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }
    }

    impl Syscalls for FakeSys {
        type File = String;
        fn open_namespace(&self, path: &Path) -> io::Result<String> {
            self.calls
                .borrow_mut()
                .push(format!("open {}", path.display()));
            if self.existing.contains(path) {
                Ok(format!("file:{}", path.display()))
            } else {
                Err(io::Error::from(io::ErrorKind::NotFound))
            }
        }
        fn inode(&self, path: &Path) -> io::Result<u64> {
            self.calls
                .borrow_mut()
                .push(format!("stat {}", path.display()));
            self.inodes
                .get(path)
                .copied()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        }
        fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("read {}", path.display()),
            ))
        }
    }

    /// Parses "network=/run/netns/a", "pid" (no path).
    fn spec(entries: &[&str]) -> Vec<Namespace> {
        entries
            .iter()
            .map(|e| {
                let (kind, path) = match e.split_once('=') {
                    Some((k, p)) => (k, Some(p)),
                    None => (*e, None),
                };
                Namespace::from_oci(kind, path).unwrap()
            })
            .collect()
    }

    fn inherit(list: &[(&str, i32)]) -> Vec<rpc::InheritFd> {
        list.iter()
            .map(|&(key, fd)| rpc::InheritFd {
                key: key.into(),
                fd,
            })
            .collect()
    }

    fn join(list: &[(&str, &str)]) -> Vec<rpc::JoinNamespace> {
        list.iter()
            .map(|&(ns, file)| rpc::JoinNamespace {
                ns: ns.into(),
                ns_file: file.into(),
                extra_opt: None,
            })
            .collect()
    }

    const NET: &str = "/run/netns/a";
    const PID: &str = "/proc/9/ns/pid";

    struct Ok_ {
        name: &'static str,
        version: u32,
        spec: &'static [&'static str],
        inherit: &'static [(&'static str, i32)],
        join: &'static [(&'static str, &'static str)],
        opens: &'static [&'static str],
    }

    #[test]
    fn restore_namespaces_successes() {
        let cases = [
            Ok_ {
                name: "empty spec",
                version: 30000,
                spec: &[],
                inherit: &[],
                join: &[],
                opens: &[],
            },
            Ok_ {
                name: "net and pid with paths: fds 4 and 5 in spec order",
                version: 31500,
                spec: &["network=/run/netns/a", "pid=/proc/9/ns/pid"],
                inherit: &[("extRootNetNS", 4), ("extRootPidNS", 5)],
                join: &[],
                opens: &[NET, PID],
            },
            Ok_ {
                name: "pid before net keeps spec order",
                version: 40201,
                spec: &["pid=/proc/9/ns/pid", "network=/run/netns/a"],
                inherit: &[("extRootPidNS", 4), ("extRootNetNS", 5)],
                join: &[],
                opens: &[PID, NET],
            },
            Ok_ {
                name: "net without path is skipped once the version allows it",
                version: 31100,
                spec: &["network"],
                inherit: &[],
                join: &[],
                opens: &[],
            },
            Ok_ {
                name: "pid without path, net with path: net gets fd 4",
                version: 31500,
                spec: &["pid", "network=/run/netns/a"],
                inherit: &[("extRootNetNS", 4)],
                join: &[],
                opens: &[NET],
            },
            Ok_ {
                name: "net at exactly 3.11 with a path",
                version: 31100,
                spec: &["network=/run/netns/a"],
                inherit: &[("extRootNetNS", 4)],
                join: &[],
                opens: &[NET],
            },
            Ok_ {
                name: "join types map to proc names, no version gate, no open",
                version: 30000,
                spec: &[
                    "ipc=/proc/9/ns/ipc",
                    "uts=/proc/9/ns/uts",
                    "mount=/proc/9/ns/mnt",
                    "user=/proc/9/ns/user",
                    "time=/proc/9/ns/time",
                ],
                inherit: &[],
                join: &[
                    ("ipc", "/proc/9/ns/ipc"),
                    ("uts", "/proc/9/ns/uts"),
                    ("mnt", "/proc/9/ns/mnt"),
                    ("user", "/proc/9/ns/user"),
                    ("time", "/proc/9/ns/time"),
                ],
                opens: &[],
            },
            Ok_ {
                name: "join paths are not checked by runc",
                version: 40201,
                spec: &["ipc=/does/not/exist"],
                inherit: &[],
                join: &[("ipc", "/does/not/exist")],
                opens: &[],
            },
            Ok_ {
                name: "other types without path are skipped, cgroup included",
                version: 30000,
                spec: &["ipc", "uts", "mount", "user", "cgroup", "time"],
                inherit: &[],
                join: &[],
                opens: &[],
            },
            Ok_ {
                name: "empty path means no path",
                version: 31500,
                spec: &["network=", "pid=", "cgroup="],
                inherit: &[],
                join: &[],
                opens: &[],
            },
            Ok_ {
                name: "a pod-like target",
                version: 40201,
                spec: &[
                    "pid=/proc/9/ns/pid",
                    "network=/run/netns/a",
                    "ipc=/proc/9/ns/ipc",
                    "uts=/proc/9/ns/uts",
                    "mount",
                    "cgroup",
                ],
                inherit: &[("extRootPidNS", 4), ("extRootNetNS", 5)],
                join: &[("ipc", "/proc/9/ns/ipc"), ("uts", "/proc/9/ns/uts")],
                opens: &[PID, NET],
            },
            Ok_ {
                name: "git build of 3.14 counts as 3.15 for pid",
                version: crate::criu::version::version_number(3, 14, 0, Some("g1")),
                spec: &["pid=/proc/9/ns/pid"],
                inherit: &[("extRootPidNS", 4)],
                join: &[],
                opens: &[PID],
            },
        ];
        for case in cases {
            let sys = FakeSys::with(&[NET, PID]);
            let got = restore_namespaces(&sys, case.version, &spec(case.spec))
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert_eq!(got.inherit_fd, inherit(case.inherit), "{}", case.name);
            assert_eq!(got.join_ns, join(case.join), "{}", case.name);
            let want_opens: Vec<String> = case.opens.iter().map(|p| format!("open {p}")).collect();
            assert_eq!(sys.calls(), want_opens, "{}", case.name);
            assert_eq!(
                got.opened,
                case.opens.iter().map(PathBuf::from).collect::<Vec<_>>(),
                "{}",
                case.name
            );
            assert_eq!(
                got.files,
                case.opens
                    .iter()
                    .map(|p| format!("file:{p}"))
                    .collect::<Vec<_>>(),
                "{}",
                case.name
            );
        }
    }

    struct Err_ {
        name: &'static str,
        version: u32,
        spec: &'static [&'static str],
        error: &'static str,
        opens: &'static [&'static str],
    }

    #[test]
    fn restore_namespaces_errors() {
        let cases = [
            Err_ {
                name: "net below 3.11 with a path",
                version: 31000,
                spec: &["network=/run/netns/a"],
                error: "criu lacks support for external net namespace during the restoration process (old criu version?)",
                opens: &[],
            },
            Err_ {
                name: "net below 3.11 without a path: version checked before the path",
                version: 31099,
                spec: &["network"],
                error: "criu lacks support for external net namespace during the restoration process (old criu version?)",
                opens: &[],
            },
            Err_ {
                name: "pid below 3.15 without a path",
                version: 31400,
                spec: &["pid"],
                error: "criu lacks support for external pid namespace during the restoration process (old criu version?)",
                opens: &[],
            },
            Err_ {
                name: "pid below 3.15 after a good net: net already opened",
                version: 31499,
                spec: &["network=/run/netns/a", "pid=/proc/9/ns/pid"],
                error: "criu lacks support for external pid namespace during the restoration process (old criu version?)",
                opens: &[NET],
            },
            Err_ {
                name: "missing net path",
                version: 40201,
                spec: &["network=/run/netns/missing"],
                error: "Requested network namespace /run/netns/missing does not exist",
                opens: &["/run/netns/missing"],
            },
            Err_ {
                name: "missing pid path still says network",
                version: 40201,
                spec: &["pid=/proc/4242/ns/pid"],
                error: "Requested network namespace /proc/4242/ns/pid does not exist",
                opens: &["/proc/4242/ns/pid"],
            },
            Err_ {
                name: "missing path stops before a later cgroup error",
                version: 40201,
                spec: &["network=/nope", "cgroup=/proc/9/ns/cgroup"],
                error: "Requested network namespace /nope does not exist",
                opens: &["/nope"],
            },
            Err_ {
                name: "cgroup with a path",
                version: 40201,
                spec: &["cgroup=/proc/9/ns/cgroup"],
                error: "Do not know how to handle namespace NEWCGROUP",
                opens: &[],
            },
            Err_ {
                name: "cgroup after net: net opened first, cgroup refused",
                version: 40201,
                spec: &["network=/run/netns/a", "cgroup=/proc/9/ns/cgroup", "ipc=/x"],
                error: "Do not know how to handle namespace NEWCGROUP",
                opens: &[NET],
            },
            Err_ {
                name: "cgroup before an old-criu pid: first error in spec order wins",
                version: 31000,
                spec: &["cgroup=/proc/9/ns/cgroup", "pid"],
                error: "Do not know how to handle namespace NEWCGROUP",
                opens: &[],
            },
            Err_ {
                name: "duplicated type is refused before anything else",
                version: 30000,
                spec: &["network=/run/netns/a", "ipc", "network"],
                error: r#"malformed spec file: duplicated ns {"network" ""}"#,
                opens: &[],
            },
            Err_ {
                name: "duplicated type quotes the second entry with its path",
                version: 40201,
                spec: &["pid", "pid=/proc/1/ns/pid"],
                error: r#"malformed spec file: duplicated ns {"pid" "/proc/1/ns/pid"}"#,
                opens: &[],
            },
        ];
        for case in cases {
            let sys = FakeSys::with(&[NET, PID]);
            let err = restore_namespaces(&sys, case.version, &spec(case.spec))
                .map(|_| ())
                .expect_err(case.name);
            assert_eq!(err.to_string(), case.error, "{}", case.name);
            let want_opens: Vec<String> = case.opens.iter().map(|p| format!("open {p}")).collect();
            assert_eq!(sys.calls(), want_opens, "{}", case.name);
        }
    }

    #[test]
    fn missing_path_keeps_the_cause_out_of_the_message() {
        let sys = FakeSys::default();
        let err = restore_namespaces(&sys, 40201, &spec(&["network=/x"])).unwrap_err();
        assert!(std::error::Error::source(&err).is_none());
        let NamespaceError::Missing { cause, .. } = err else {
            panic!("wrong variant")
        };
        assert_eq!(cause.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn unknown_oci_type_uses_runc_wording() {
        let err = Namespace::from_oci("net", Some("/run/netns/a")).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"namespace {"net" "/run/netns/a"} does not exist"#
        );
        let err = Namespace::from_oci("bogus", None).unwrap_err();
        assert_eq!(err.to_string(), r#"namespace {"bogus" ""} does not exist"#);
    }

    #[test]
    fn go_quoting_escapes_like_strconv_quote() {
        assert_eq!(go_quote("a\"b\\c\nd\u{1}é"), r#""a\"b\\c\nd\x01é""#);
    }

    #[test]
    fn names_and_flags() {
        for t in NamespaceType::ALL {
            assert_eq!(NamespaceType::from_oci(t.oci_name()), Some(t));
        }
        assert_eq!(NamespaceType::Mount.proc_name(), "mnt");
        assert_eq!(NamespaceType::Network.clone_flag(), 0x4000_0000);
        assert_eq!(NamespaceType::Pid.clone_flag(), 0x2000_0000);
        assert_eq!(NamespaceType::Time.clone_flag(), 0x80);
        assert_eq!(NamespaceType::Cgroup.to_string(), "NEWCGROUP");
        assert_eq!(NamespaceType::from_oci("net"), None);
    }

    #[test]
    fn checkpoint_externals_cases() {
        struct Case {
            name: &'static str,
            version: u32,
            spec: &'static [&'static str],
            want: Result<&'static [&'static str], &'static str>,
            calls: &'static [&'static str],
        }
        let cases = [
            Case {
                name: "both with paths: net first whatever the spec order",
                version: 40201,
                spec: &["pid=/proc/9/ns/pid", "network=/run/netns/a"],
                want: Ok(&[
                    "net[4026531000]:extRootNetNS",
                    "pid[4026531001]:extRootPidNS",
                ]),
                calls: &["stat /run/netns/a", "stat /proc/9/ns/pid"],
            },
            Case {
                name: "no paths: nothing, but the version still matters",
                version: 31500,
                spec: &["network", "pid", "ipc=/proc/9/ns/ipc"],
                want: Ok(&[]),
                calls: &[],
            },
            Case {
                name: "no namespaces at all on an old criu: net check fails",
                version: 31000,
                spec: &[],
                want: Err(
                    "criu lacks support for external net namespace during checkpointing process (old criu version?)",
                ),
                calls: &[],
            },
            Case {
                name: "3.11 to 3.14: pid check fails even without pid in the spec",
                version: 31400,
                spec: &["network=/run/netns/a"],
                want: Err(
                    "criu lacks support for external pid namespace during checkpointing process (old criu version?)",
                ),
                calls: &["stat /run/netns/a"],
            },
            Case {
                name: "stat failure",
                version: 40201,
                spec: &["network=/gone"],
                want: Err("stat /gone: entity not found"),
                calls: &["stat /gone"],
            },
            Case {
                name: "duplicates",
                version: 40201,
                spec: &["ipc", "ipc"],
                want: Err(r#"malformed spec file: duplicated ns {"ipc" ""}"#),
                calls: &[],
            },
        ];
        for case in cases {
            let sys = FakeSys::with(&[NET, PID]);
            let got = checkpoint_externals(&sys, case.version, &spec(case.spec))
                .map_err(|e| e.to_string());
            let want = case
                .want
                .map(|list| list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .map_err(str::to_string);
            assert_eq!(got, want, "{}", case.name);
            assert_eq!(sys.calls(), case.calls, "{}", case.name);
        }
    }
}
