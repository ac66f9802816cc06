//! `/proc/<pid>/mountinfo`, parsed: the engine finds the target container's
//! root file system and the node's cgroup hierarchies in it.

use std::path::{Path, PathBuf};

/// One line of a mountinfo file (proc(5)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// `major:minor` of the file system.
    pub device: String,
    /// The directory of the file system that is mounted (`/` for all of it).
    pub root: String,
    /// Where it is mounted, in that process's mount namespace.
    pub mount_point: String,
    /// The file system type (`overlay`, `cgroup`, ...).
    pub fs_type: String,
    /// The per-superblock options (`rw,cpu,cpuacct`).
    pub super_options: String,
}

/// Parses a mountinfo file; lines without the `-` separator are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MountEntry> {
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields.iter().position(|f| *f == "-")?;
    if separator < 6 {
        return None;
    }
    Some(MountEntry {
        device: fields.get(2)?.to_string(),
        root: unescape(fields.get(3)?),
        mount_point: unescape(fields.get(4)?),
        fs_type: fields.get(separator + 1)?.to_string(),
        super_options: fields.get(separator + 3).copied().unwrap_or("").to_owned(),
    })
}

/// Decodes the `\ooo` escapes mountinfo uses for space, tab, newline and `\`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4);
        match octal {
            Some(digits)
                if bytes[i] == b'\\' && digits.iter().all(|b| (b'0'..=b'7').contains(b)) =>
            {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            _ => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount a process sees at `/`: the last one listed there (a later mount
/// covers an earlier one).
pub fn root_mount(entries: &[MountEntry]) -> Option<&MountEntry> {
    entries.iter().rev().find(|e| e.mount_point == "/")
}

/// Where the file system of `wanted` (same device, same root directory) is
/// mounted in another mount namespace's `entries`: how the agent reaches a
/// container's root file system, which it cannot bind-mount through
/// `/proc/<pid>/root` (the kernel refuses binds across mount namespaces).
pub fn same_mount<'a>(entries: &'a [MountEntry], wanted: &MountEntry) -> Option<&'a MountEntry> {
    entries
        .iter()
        .find(|e| e.device == wanted.device && e.root == wanted.root)
}

/// A cgroup v1 hierarchy mounted in the agent's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Where it is mounted (`/sys/fs/cgroup/cpu,cpuacct`).
    pub mount_point: PathBuf,
    /// The directory of the hierarchy mounted there (`/` for all of it).
    pub root: String,
    /// Its controllers as `/proc/<pid>/cgroup` names them (`cpu`, `cpuacct`,
    /// `name=systemd`).
    pub controllers: Vec<String>,
}

/// Mount options of a cgroup v1 file system that are not controllers.
const CGROUP_OPTIONS: &[&str] = &[
    "rw",
    "ro",
    "noprefix",
    "clone_children",
    "xattr",
    "cpuset_v2_mode",
    "favordynmods",
    "nofavordynmods",
];

/// The cgroup v1 hierarchies among `entries` (one per hierarchy: the first
/// mount of each set of controllers).
pub fn cgroup_v1_mounts(entries: &[MountEntry]) -> Vec<CgroupMount> {
    let mut found: Vec<CgroupMount> = Vec::new();
    for entry in entries.iter().filter(|e| e.fs_type == "cgroup") {
        let mut controllers: Vec<String> = entry
            .super_options
            .split(',')
            .filter(|o| {
                !o.is_empty() && !CGROUP_OPTIONS.contains(o) && !o.starts_with("release_agent=")
            })
            .map(str::to_owned)
            .collect();
        controllers.sort();
        if controllers.is_empty() || found.iter().any(|m| m.controllers == controllers) {
            continue;
        }
        found.push(CgroupMount {
            mount_point: PathBuf::from(&entry.mount_point),
            root: entry.root.clone(),
            controllers,
        });
    }
    found
}

/// The cgroup v2 (unified) mount among `entries`, if any: its mount point and root.
pub fn cgroup_v2_mount(entries: &[MountEntry]) -> Option<(PathBuf, String)> {
    entries
        .iter()
        .find(|e| e.fs_type == "cgroup2")
        .map(|e| (PathBuf::from(&e.mount_point), e.root.clone()))
}

/// The directory of cgroup `path` (as `/proc/<pid>/cgroup` names it) below a
/// hierarchy mounted at `mount_point` with root `root`; `None` when the mount
/// does not reach that cgroup.
pub fn cgroup_dir(mount_point: &Path, root: &str, path: &str) -> Option<PathBuf> {
    let relative = if root == "/" {
        path
    } else {
        let rest = path.strip_prefix(root)?;
        if !rest.is_empty() && !rest.starts_with('/') {
            return None;
        }
        rest
    };
    Some(mount_point.join(relative.trim_start_matches('/')))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const NODE: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw,discard
25 22 0:22 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
26 25 0:29 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpu
27 25 0:30 / /sys/fs/cgroup/cpuacct rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,cpuacct
28 25 0:37 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,xattr,name=systemd
29 25 0:38 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
30 25 0:29 / /srv/again/cpu rw - cgroup cgroup rw,cpu
297 91 0:108 / /var/lib/c/state/k8s.io/41102409/rootfs rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
298 91 0:109 / /var/lib/c/state/k8s.io/other\\040dir/rootfs rw,relatime - overlay overlay rw,lowerdir=/l2
";

    const CONTAINER: &str = "\
396 299 0:108 / / rw,relatime - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
397 396 0:110 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
403 402 0:29 /kubepods/pod1/c1 /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu
";

    #[test]
    fn finds_the_container_root_in_the_node_namespace() {
        let node = parse(NODE);
        let container = parse(CONTAINER);
        let root = root_mount(&container).unwrap();
        assert_eq!(root.device, "0:108");
        let found = same_mount(&node, root).unwrap();
        assert_eq!(found.mount_point, "/var/lib/c/state/k8s.io/41102409/rootfs");
        assert_eq!(
            parse(NODE)[8].mount_point,
            "/var/lib/c/state/k8s.io/other dir/rootfs"
        );
    }

    #[test]
    fn cgroup_hierarchies_once_each() {
        let mounts = cgroup_v1_mounts(&parse(NODE));
        let names: Vec<_> = mounts.iter().map(|m| m.controllers.join(",")).collect();
        assert_eq!(names, ["cpu", "cpuacct", "name=systemd"]);
        assert_eq!(mounts[0].mount_point, Path::new("/sys/fs/cgroup/cpu"));
        assert_eq!(
            cgroup_v2_mount(&parse(NODE)),
            Some((PathBuf::from("/sys/fs/cgroup/unified"), "/".to_owned()))
        );
    }

    #[test]
    fn cgroup_directories_below_a_mount() {
        let mp = Path::new("/sys/fs/cgroup/cpu");
        assert_eq!(
            cgroup_dir(mp, "/", "/kubepods/pod1/c1").unwrap(),
            Path::new("/sys/fs/cgroup/cpu/kubepods/pod1/c1")
        );
        assert_eq!(
            cgroup_dir(mp, "/kubepods", "/kubepods/pod1").unwrap(),
            Path::new("/sys/fs/cgroup/cpu/pod1")
        );
        assert_eq!(
            cgroup_dir(mp, "/kubepods", "/kubepods").unwrap(),
            Path::new("/sys/fs/cgroup/cpu")
        );
        assert_eq!(cgroup_dir(mp, "/kube", "/kubepods/pod1"), None);
        assert_eq!(cgroup_dir(mp, "/other", "/kubepods/pod1"), None);
    }
}
