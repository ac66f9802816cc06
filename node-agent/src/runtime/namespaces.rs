//! A target container's namespaces: the runtime's OCI list turned into the
//! agent's [`Namespace`] values, the container's own namespace files, and the
//! same list found from `/proc` when the runtime does not say.
//!
//! What runc's restore rules take as input is the list the runtime gave runc,
//! unchanged: see [`super::TargetContainer::restore_namespaces`].

use std::collections::HashMap;
use std::path::Path;

use crate::namespaces::{Namespace, NamespaceError, NamespaceType};

use super::spec::OciNamespace;

/// The inode of each namespace of one process, by type.
pub type NsInodes = HashMap<NamespaceType, u64>;

/// The order a list found from `/proc` takes: containerd's (`pid, ipc, uts,
/// mount, network`), then the types CRI runtimes add only in some setups.
/// Time namespaces are left out: no CRI runtime creates one.
pub const PROC_ORDER: [NamespaceType; 7] = [
    NamespaceType::Pid,
    NamespaceType::Ipc,
    NamespaceType::Uts,
    NamespaceType::Mount,
    NamespaceType::Network,
    NamespaceType::User,
    NamespaceType::Cgroup,
];

/// The runtime's OCI namespace list as [`Namespace`] values, in the same
/// order, paths as given. An unknown type fails with runc's message.
pub fn from_oci(list: &[OciNamespace]) -> Result<Vec<Namespace>, NamespaceError> {
    list.iter()
        .map(|ns| Namespace::from_oci(&ns.kind, ns.path.as_deref()))
        .collect()
}

/// The namespace file of `pid` for `kind`: `<proc_root>/<pid>/ns/<proc name>`.
pub fn proc_ns_path(proc_root: &Path, pid: i32, kind: NamespaceType) -> std::path::PathBuf {
    proc_root
        .join(pid.to_string())
        .join("ns")
        .join(kind.proc_name())
}

/// The namespaces the container's init is in now, for every type the runtime
/// listed, in the runtime's order: a path-less entry (a namespace the runtime
/// had runc create) becomes the container's own `<proc>/<pid>/ns/<x>`, an
/// entry with a path points at the same namespace through the container's
/// init (so it stays valid while the container runs).
pub fn own_namespaces(list: &[Namespace], proc_root: &Path, pid: i32) -> Vec<Namespace> {
    list.iter()
        .map(|ns| Namespace::new(ns.kind, Some(proc_ns_path(proc_root, pid, ns.kind))))
        .collect()
}

/// The namespace list a CRI runtime would have written, found from the
/// inodes of `/proc/<pid>/ns/*` when the runtime does not say:
/// - a namespace the container shares with the node (`node`: the inodes of
///   a process in the node's namespaces, such as the runtime's shim) is not
///   listed, as runtimes leave out `hostNetwork`, `hostIPC` and `hostPID`
///   namespaces;
/// - one it shares with the sandbox process points at the sandbox's
///   `<proc>/<sandbox pid>/ns/<x>`, as containerd writes it;
/// - any other is the container's own: listed without a path.
///
/// A type the kernel lacks (absent from `container`) is left out. The order is
/// [`PROC_ORDER`].
pub fn from_inodes(
    container: &NsInodes,
    sandbox: Option<(i32, &NsInodes)>,
    node: &NsInodes,
    proc_root: &Path,
) -> Vec<Namespace> {
    let mut out = Vec::new();
    for kind in PROC_ORDER {
        let Some(inode) = container.get(&kind) else {
            continue;
        };
        if node.get(&kind) == Some(inode) {
            continue;
        }
        let path = sandbox
            .filter(|(_, inodes)| inodes.get(&kind) == Some(inode))
            .map(|(pid, _)| proc_ns_path(proc_root, pid, kind));
        out.push(Namespace::new(kind, path));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn oci(list: &[(&str, Option<&str>)]) -> Vec<OciNamespace> {
        list.iter()
            .map(|(kind, path)| OciNamespace {
                kind: (*kind).to_owned(),
                path: path.map(str::to_owned),
            })
            .collect()
    }

    fn ns(list: &[(NamespaceType, Option<&str>)]) -> Vec<Namespace> {
        list.iter().map(|(k, p)| Namespace::new(*k, *p)).collect()
    }

    use NamespaceType::{Cgroup, Ipc, Mount, Network, Pid, Time, User, Uts};

    #[test]
    fn oci_lists_keep_order_and_paths() {
        struct Case {
            name: &'static str,
            oci: Vec<OciNamespace>,
            want: Vec<Namespace>,
        }
        let cases = [
            Case {
                name: "containerd, ordinary pod: net/ipc/uts from the sandbox",
                oci: oci(&[
                    ("pid", None),
                    ("ipc", Some("/proc/7/ns/ipc")),
                    ("uts", Some("/proc/7/ns/uts")),
                    ("mount", None),
                    ("network", Some("/proc/7/ns/net")),
                ]),
                want: ns(&[
                    (Pid, None),
                    (Ipc, Some("/proc/7/ns/ipc")),
                    (Uts, Some("/proc/7/ns/uts")),
                    (Mount, None),
                    (Network, Some("/proc/7/ns/net")),
                ]),
            },
            Case {
                name: "containerd, shareProcessNamespace: pid from the sandbox",
                oci: oci(&[
                    ("pid", Some("/proc/7/ns/pid")),
                    ("ipc", Some("/proc/7/ns/ipc")),
                    ("uts", Some("/proc/7/ns/uts")),
                    ("mount", None),
                    ("network", Some("/proc/7/ns/net")),
                ]),
                want: ns(&[
                    (Pid, Some("/proc/7/ns/pid")),
                    (Ipc, Some("/proc/7/ns/ipc")),
                    (Uts, Some("/proc/7/ns/uts")),
                    (Mount, None),
                    (Network, Some("/proc/7/ns/net")),
                ]),
            },
            Case {
                name: "CRI-O: pinned files, its own order, cgroup on v2",
                oci: oci(&[
                    ("pid", None),
                    ("network", Some("/var/run/netns/x")),
                    ("ipc", Some("/var/run/ipcns/x")),
                    ("uts", Some("/var/run/utsns/x")),
                    ("mount", None),
                    ("cgroup", None),
                ]),
                want: ns(&[
                    (Pid, None),
                    (Network, Some("/var/run/netns/x")),
                    (Ipc, Some("/var/run/ipcns/x")),
                    (Uts, Some("/var/run/utsns/x")),
                    (Mount, None),
                    (Cgroup, None),
                ]),
            },
            Case {
                name: "hostNetwork: no network entry at all",
                oci: oci(&[
                    ("pid", None),
                    ("ipc", Some("/proc/7/ns/ipc")),
                    ("mount", None),
                ]),
                want: ns(&[(Pid, None), (Ipc, Some("/proc/7/ns/ipc")), (Mount, None)]),
            },
            Case {
                name: "an empty path is no path (runc's PathOf)",
                oci: oci(&[("network", Some(""))]),
                want: ns(&[(Network, None)]),
            },
            Case {
                name: "duplicates are passed on for runc's rules to refuse",
                oci: oci(&[("ipc", None), ("ipc", Some("/x"))]),
                want: ns(&[(Ipc, None), (Ipc, Some("/x"))]),
            },
        ];
        for case in cases {
            assert_eq!(from_oci(&case.oci).unwrap(), case.want, "{}", case.name);
        }
    }

    #[test]
    fn unknown_oci_type_uses_runc_wording() {
        let err = from_oci(&oci(&[("pid", None), ("net", Some("/x"))])).unwrap_err();
        assert_eq!(err.to_string(), r#"namespace {"net" "/x"} does not exist"#);
    }

    #[test]
    fn own_namespaces_point_at_the_container_init() {
        let list = ns(&[
            (Pid, None),
            (Ipc, Some("/proc/7/ns/ipc")),
            (Mount, None),
            (Network, Some("/var/run/netns/x")),
        ]);
        assert_eq!(
            own_namespaces(&list, Path::new("/host/proc"), 42),
            ns(&[
                (Pid, Some("/host/proc/42/ns/pid")),
                (Ipc, Some("/host/proc/42/ns/ipc")),
                (Mount, Some("/host/proc/42/ns/mnt")),
                (Network, Some("/host/proc/42/ns/net")),
            ])
        );
    }

    fn inodes(list: &[(NamespaceType, u64)]) -> NsInodes {
        list.iter().copied().collect()
    }

    #[test]
    fn lists_found_from_proc() {
        let host = inodes(&[
            (Pid, 1),
            (Ipc, 2),
            (Uts, 3),
            (Mount, 4),
            (Network, 5),
            (User, 6),
            (Cgroup, 7),
            (Time, 8),
        ]);
        // The sandbox (pause, PID 7) has its own everything but user, cgroup, time.
        let sandbox = inodes(&[
            (Pid, 11),
            (Ipc, 12),
            (Uts, 13),
            (Mount, 14),
            (Network, 15),
            (User, 6),
            (Cgroup, 7),
            (Time, 8),
        ]);
        struct Case {
            name: &'static str,
            container: NsInodes,
            with_sandbox: bool,
            want: Vec<Namespace>,
        }
        let cases = [
            Case {
                name: "ordinary pod: what containerd writes",
                container: inodes(&[
                    (Pid, 21),
                    (Ipc, 12),
                    (Uts, 13),
                    (Mount, 24),
                    (Network, 15),
                    (User, 6),
                    (Cgroup, 7),
                    (Time, 8),
                ]),
                with_sandbox: true,
                want: ns(&[
                    (Pid, None),
                    (Ipc, Some("/proc/7/ns/ipc")),
                    (Uts, Some("/proc/7/ns/uts")),
                    (Mount, None),
                    (Network, Some("/proc/7/ns/net")),
                ]),
            },
            Case {
                name: "shareProcessNamespace: pid from the sandbox too",
                container: inodes(&[
                    (Pid, 11),
                    (Ipc, 12),
                    (Uts, 13),
                    (Mount, 24),
                    (Network, 15),
                    (User, 6),
                    (Cgroup, 7),
                ]),
                with_sandbox: true,
                want: ns(&[
                    (Pid, Some("/proc/7/ns/pid")),
                    (Ipc, Some("/proc/7/ns/ipc")),
                    (Uts, Some("/proc/7/ns/uts")),
                    (Mount, None),
                    (Network, Some("/proc/7/ns/net")),
                ]),
            },
            Case {
                name: "hostNetwork and hostPID: left out; cgroup v2 namespace of its own",
                container: inodes(&[
                    (Pid, 1),
                    (Ipc, 12),
                    (Uts, 13),
                    (Mount, 24),
                    (Network, 5),
                    (User, 6),
                    (Cgroup, 27),
                ]),
                with_sandbox: true,
                want: ns(&[
                    (Ipc, Some("/proc/7/ns/ipc")),
                    (Uts, Some("/proc/7/ns/uts")),
                    (Mount, None),
                    (Cgroup, None),
                ]),
            },
            Case {
                name: "no sandbox process (CRI-O without infra): all path-less",
                container: inodes(&[(Pid, 21), (Ipc, 12), (Network, 15), (Mount, 24)]),
                with_sandbox: false,
                want: ns(&[(Pid, None), (Ipc, None), (Mount, None), (Network, None)]),
            },
        ];
        for case in cases {
            assert_eq!(
                from_inodes(
                    &case.container,
                    case.with_sandbox.then_some((7, &sandbox)),
                    &host,
                    Path::new("/proc")
                ),
                case.want,
                "{}",
                case.name
            );
        }
    }

    #[test]
    fn proc_paths() {
        assert_eq!(
            proc_ns_path(Path::new("/proc"), 3, Mount),
            PathBuf::from("/proc/3/ns/mnt")
        );
    }
}
