//! The mounts and cgroups of a restore into a running container, as pure
//! functions of the checkpoint's mounts, the target container and the node's
//! mount table.
//!
//! - Bind mounts (runc's `addCriuRestoreMount`): every bind mount of the
//!   checkpointed container is mapped, by its destination (the key runc's dump
//!   writes, CRIU `ext_mnt`), to the target container's own bind mount at the
//!   same destination. A destination the target lacks refuses the restore,
//!   listing every one (CRI-O made that refusal a security fix): the source
//!   never comes from the checkpoint.
//! - cgroup v1 without a cgroup namespace (runc's `getCgroupMounts`): runc's
//!   dump marks each controller's bind under the cgroup mount as external,
//!   keyed `<destination>/<hierarchy mount point name>`; each maps to the
//!   target's cgroup directory in that hierarchy.
//! - Masked files: runc's dump records them as `/dev/null`, mapped to the
//!   node's `/dev/null`.
//! - The restored tree's cgroups: the target container's own, in every
//!   hierarchy (runc's `criuApplyCgroups` puts CRIU there before it restores).

use std::path::PathBuf;

use crate::runtime::{CgroupEntry, TargetContainer};

use super::mountinfo::{CgroupMount, cgroup_dir};

/// The key and source of masked files (runc's `addMaskPaths`).
pub const DEV_NULL: &str = "/dev/null";

/// The checkpointed container had bind mounts the target container lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the target container has no mount at {}, which the checkpointed container had; give the target pod the same volumes at the same paths",
    .0.join(", ")
)]
pub struct MissingMounts(pub Vec<String>);

/// CRIU's external mount map for a checkpoint whose bind mounts are
/// `checkpoint_binds` (destinations, as the archive lists them), restored
/// into `target`: the target's bind mount sources, then `cgroup_binds`, then
/// `/dev/null`.
pub fn ext_mounts(
    checkpoint_binds: &[String],
    target: &TargetContainer,
    cgroup_binds: &[(String, String)],
) -> Result<Vec<(String, String)>, MissingMounts> {
    let mut map = Vec::new();
    let mut missing = Vec::new();
    for destination in checkpoint_binds {
        match target.bind_mount(destination) {
            Some(mount) => map.push((destination.clone(), mount.source.clone())),
            None => missing.push(destination.clone()),
        }
    }
    if !missing.is_empty() {
        return Err(MissingMounts(missing));
    }
    map.extend(cgroup_binds.iter().cloned());
    map.push((DEV_NULL.to_owned(), DEV_NULL.to_owned()));
    Ok(map)
}

/// runc's cgroup v1 binds for `target`: for each hierarchy the node mounts,
/// `<cgroup mount destination>/<mount point name>` mapped to the target's
/// cgroup directory there. Empty when the container has no cgroup mount, has a
/// cgroup namespace of its own (runc then skips them), or the node runs
/// cgroup v2 only.
pub fn cgroup_binds(target: &TargetContainer, node: &[CgroupMount]) -> Vec<(String, String)> {
    let has_cgroupns = target
        .namespaces
        .iter()
        .any(|ns| ns.kind == crate::namespaces::NamespaceType::Cgroup);
    let Some(destination) = target
        .mounts
        .iter()
        .find(|m| m.kind == "cgroup")
        .map(|m| m.destination.trim_end_matches('/').to_owned())
    else {
        return Vec::new();
    };
    if has_cgroupns {
        return Vec::new();
    }
    node.iter()
        .filter_map(|mount| {
            let entry = entry_for(&target.cgroups, &mount.controllers)?;
            let dir = cgroup_dir(&mount.mount_point, &mount.root, &entry.path)?;
            let name = mount
                .mount_point
                .file_name()?
                .to_string_lossy()
                .into_owned();
            Some((
                format!("{destination}/{name}"),
                dir.to_string_lossy().into_owned(),
            ))
        })
        .collect()
}

/// The `cgroup.procs` files of the target container's cgroups in every
/// hierarchy the node mounts (v1 controllers, and the v2 tree when mounted):
/// writing a PID there moves the process into the container's cgroups.
pub fn cgroup_procs(
    target: &[CgroupEntry],
    v1: &[CgroupMount],
    v2: Option<&(PathBuf, String)>,
) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in target {
        let dir = if entry.hierarchy == 0 && entry.controllers.is_empty() {
            v2.and_then(|(point, root)| cgroup_dir(point, root, &entry.path))
        } else {
            let mut wanted = entry.controllers.clone();
            wanted.sort();
            v1.iter()
                .find(|m| m.controllers == wanted)
                .and_then(|m| cgroup_dir(&m.mount_point, &m.root, &entry.path))
        };
        if let Some(dir) = dir {
            files.push(dir.join("cgroup.procs"));
        }
    }
    files
}

/// The target's cgroup in the hierarchy with exactly `controllers`.
fn entry_for<'a>(target: &'a [CgroupEntry], controllers: &[String]) -> Option<&'a CgroupEntry> {
    target.iter().find(|e| {
        let mut have = e.controllers.clone();
        have.sort();
        e.hierarchy != 0 && have == controllers
    })
}

/// Whether `path` names the same mount destination as one of `destinations`
/// (compared without leading, trailing or doubled slashes).
pub fn is_destination(path: &str, destinations: &[String]) -> bool {
    let norm = |p: &str| -> String {
        p.split('/')
            .filter(|s| !s.is_empty() && *s != ".")
            .collect::<Vec<_>>()
            .join("/")
    };
    let want = norm(path);
    destinations.iter().any(|d| norm(d) == want)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::namespaces::{Namespace, NamespaceType};
    use crate::runtime::{Flavor, Mount, Provenance, Source};

    fn target() -> TargetContainer {
        let bind = |dest: &str, src: &str| Mount {
            destination: dest.into(),
            kind: "bind".into(),
            source: src.into(),
            options: vec!["rbind".into()],
        };
        let path = "/kubepods/besteffort/podb/cb".to_owned();
        TargetContainer {
            pod_namespace: "ns".into(),
            pod_name: "b".into(),
            pod_uid: "uid-b".into(),
            pod_ip: None,
            sandbox_id: "sb".into(),
            sandbox_pid: Some(10),
            container_id: "cb".into(),
            container_name: "main".into(),
            pid: 11,
            parent_pid: Some(9),
            bundle: None,
            rootfs: "/run/c/cb/rootfs".into(),
            rootfs_readonly: false,
            mounts: vec![
                Mount {
                    destination: "/sys/fs/cgroup".into(),
                    kind: "cgroup".into(),
                    source: "cgroup".into(),
                    options: vec![],
                },
                bind("/etc/hosts", "/var/lib/kubelet/pods/uid-b/etc-hosts"),
                bind("/dev/shm", "/run/c/sandboxes/sb/shm"),
            ],
            namespaces: vec![
                Namespace::new(NamespaceType::Pid, None::<&str>),
                Namespace::new(NamespaceType::Network, Some("/proc/10/ns/net")),
            ],
            cgroups_path: Some(path.clone()),
            cgroups: vec![
                CgroupEntry {
                    hierarchy: 2,
                    controllers: vec!["cpuacct".into(), "cpu".into()],
                    path: path.clone(),
                },
                CgroupEntry {
                    hierarchy: 9,
                    controllers: vec!["name=systemd".into()],
                    path: path.clone(),
                },
                CgroupEntry {
                    hierarchy: 0,
                    controllers: vec![],
                    path,
                },
            ],
            flavor: Flavor::Containerd,
            provenance: Provenance {
                pid: Source::Runtime,
                rootfs: Source::Runtime,
                mounts: Source::Runtime,
                namespaces: Source::Runtime,
            },
        }
    }

    fn node() -> Vec<CgroupMount> {
        vec![
            CgroupMount {
                mount_point: "/sys/fs/cgroup/cpu,cpuacct".into(),
                root: "/".into(),
                controllers: vec!["cpu".into(), "cpuacct".into()],
            },
            CgroupMount {
                mount_point: "/sys/fs/cgroup/systemd".into(),
                root: "/".into(),
                controllers: vec!["name=systemd".into()],
            },
            CgroupMount {
                mount_point: "/sys/fs/cgroup/memory".into(),
                root: "/".into(),
                controllers: vec!["memory".into()],
            },
        ]
    }

    #[test]
    fn binds_map_to_the_target_and_cgroups_to_its_directories() {
        let t = target();
        let cgroups = cgroup_binds(&t, &node());
        assert_eq!(
            cgroups,
            [
                (
                    "/sys/fs/cgroup/cpu,cpuacct".to_owned(),
                    "/sys/fs/cgroup/cpu,cpuacct/kubepods/besteffort/podb/cb".to_owned()
                ),
                (
                    "/sys/fs/cgroup/systemd".to_owned(),
                    "/sys/fs/cgroup/systemd/kubepods/besteffort/podb/cb".to_owned()
                ),
            ]
        );
        let map = ext_mounts(&["/etc/hosts".into(), "/dev/shm/".into()], &t, &cgroups).unwrap();
        assert_eq!(
            map[0],
            (
                "/etc/hosts".into(),
                "/var/lib/kubelet/pods/uid-b/etc-hosts".into()
            )
        );
        assert_eq!(
            map[1],
            ("/dev/shm/".into(), "/run/c/sandboxes/sb/shm".into())
        );
        assert_eq!(
            map.last().unwrap(),
            &("/dev/null".to_owned(), "/dev/null".to_owned())
        );
        assert_eq!(map.len(), 5);
    }

    #[test]
    fn missing_destinations_are_all_listed() {
        let err = ext_mounts(
            &["/etc/hosts".into(), "/data".into(), "/cache".into()],
            &target(),
            &[],
        )
        .unwrap_err();
        assert_eq!(err.0, ["/data", "/cache"]);
        assert_eq!(
            err.to_string(),
            "the target container has no mount at /data, /cache, which the checkpointed container had; give the target pod the same volumes at the same paths"
        );
    }

    #[test]
    fn no_cgroup_binds_with_a_cgroup_namespace_or_without_a_cgroup_mount() {
        let mut t = target();
        t.namespaces
            .push(Namespace::new(NamespaceType::Cgroup, None::<&str>));
        assert!(cgroup_binds(&t, &node()).is_empty());
        let mut t = target();
        t.mounts.retain(|m| m.kind != "cgroup");
        assert!(cgroup_binds(&t, &node()).is_empty());
    }

    #[test]
    fn cgroup_procs_in_every_mounted_hierarchy() {
        let v2 = (PathBuf::from("/sys/fs/cgroup/unified"), "/".to_owned());
        let files = cgroup_procs(&target().cgroups, &node(), Some(&v2));
        assert_eq!(
            files,
            [
                PathBuf::from(
                    "/sys/fs/cgroup/cpu,cpuacct/kubepods/besteffort/podb/cb/cgroup.procs"
                ),
                PathBuf::from("/sys/fs/cgroup/systemd/kubepods/besteffort/podb/cb/cgroup.procs"),
                PathBuf::from("/sys/fs/cgroup/unified/kubepods/besteffort/podb/cb/cgroup.procs"),
            ]
        );
        assert_eq!(cgroup_procs(&target().cgroups, &node(), None).len(), 2);
    }

    #[test]
    fn destinations_compare_as_paths() {
        let dests = vec!["/etc/hosts".to_owned(), "/var/run/secrets/x/".to_owned()];
        assert!(is_destination("etc/hosts", &dests));
        assert!(is_destination("./var/run/secrets/x", &dests));
        assert!(!is_destination("etc", &dests));
    }
}
