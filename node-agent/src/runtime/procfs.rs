//! What `/proc` and the cgroup file system say about a container when the
//! runtime's status leaves something out: namespace inodes, cgroups, the
//! parent (the runtime's shim or conmon), the OCI bundle, and the init process
//! of a cgroup.
//!
//! Every function takes the roots (`/proc`, `/sys/fs/cgroup`) as parameters so
//! tests can point them at fixtures.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::namespaces::NamespaceType;
use crate::procinfo;

use super::namespaces::{NsInodes, proc_ns_path};

/// How deep the cgroup search goes below a hierarchy's root
/// (`/kubepods.slice/kubepods-besteffort.slice/<pod>.slice/<ctr>.scope` is 4).
const CGROUP_SEARCH_DEPTH: usize = 8;

/// The inode of each namespace of `pid`; types the kernel lacks are left out.
pub fn ns_inodes(proc_root: &Path, pid: i32) -> io::Result<NsInodes> {
    let mut out = NsInodes::new();
    fs::metadata(proc_root.join(pid.to_string()).join("ns"))?;
    for kind in NamespaceType::ALL {
        match fs::metadata(proc_ns_path(proc_root, pid, kind)) {
            Ok(meta) => {
                out.insert(kind, meta.ino());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The parent of `pid` (`PPid` of `/proc/<pid>/status`).
pub fn parent_pid(proc_root: &Path, pid: i32) -> io::Result<i32> {
    let status = fs::read_to_string(proc_root.join(pid.to_string()).join("status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("no PPid in /proc/{pid}/status"),
            )
        })
}

/// One line of `/proc/<pid>/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CgroupEntry {
    /// The hierarchy ID (0 for cgroup v2).
    pub hierarchy: u32,
    /// The controllers of the hierarchy (`cpu`, `cpuacct`, `name=systemd`);
    /// empty for cgroup v2.
    pub controllers: Vec<String>,
    /// The cgroup's path in that hierarchy.
    pub path: String,
}

/// Parses `/proc/<pid>/cgroup` (`<id>:<controllers>:<path>` lines). Lines that
/// do not have that shape are skipped.
pub fn parse_cgroups(text: &str) -> Vec<CgroupEntry> {
    text.lines()
        .filter_map(|line| {
            let (id, rest) = line.split_once(':')?;
            let (controllers, path) = rest.split_once(':')?;
            Some(CgroupEntry {
                hierarchy: id.parse().ok()?,
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned)
                    .collect(),
                path: path.to_owned(),
            })
        })
        .collect()
}

/// The cgroups of `pid`.
pub fn cgroups(proc_root: &Path, pid: i32) -> io::Result<Vec<CgroupEntry>> {
    Ok(parse_cgroups(&fs::read_to_string(
        proc_root.join(pid.to_string()).join("cgroup"),
    )?))
}

/// The value of a `-b X`, `--bundle X`, `-bundle X` or `--bundle=X` argument.
fn bundle_argument(args: &[String]) -> Option<PathBuf> {
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        if let Some(v) = arg
            .strip_prefix("--bundle=")
            .or_else(|| arg.strip_prefix("-bundle="))
        {
            return Some(PathBuf::from(v));
        }
        if matches!(arg.as_str(), "-b" | "--bundle" | "-bundle") {
            return iter.next().map(PathBuf::from);
        }
    }
    None
}

/// The OCI bundle of a container, found through the process that started its
/// init (`parent`):
/// - conmon (CRI-O) names it in its arguments (`-b` / `--bundle`);
/// - containerd's runc shim runs in the bundle of the pod's first task (the
///   sandbox), so the container's bundle is the sibling directory named after
///   the container.
///
/// A candidate counts only if it holds a `config.json`, and, when it holds
/// containerd's `init.pid`, only if that names `pid`.
pub fn find_bundle(proc_root: &Path, parent: i32, container_id: &str, pid: i32) -> Option<PathBuf> {
    let parent_dir = proc_root.join(parent.to_string());
    let mut candidates = Vec::new();
    if let Ok(args) = procinfo::cmdline(proc_root, parent) {
        candidates.extend(bundle_argument(&args));
    }
    if let Ok(cwd) = fs::read_link(parent_dir.join("cwd")) {
        if cwd.file_name().is_some_and(|n| n == container_id) {
            candidates.push(cwd);
        } else if let Some(tasks) = cwd.parent() {
            candidates.push(tasks.join(container_id));
        }
    }
    candidates.into_iter().find(|dir| {
        if !dir.join("config.json").is_file() {
            return false;
        }
        match fs::read_to_string(dir.join("init.pid")) {
            Ok(text) => text.trim().parse::<i32>().ok() == Some(pid),
            Err(_) => true,
        }
    })
}

/// Whether a cgroup directory name is the container's: the ID itself
/// (cgroupfs driver) or a systemd scope ending in `-<id>.scope`
/// (`cri-containerd-<id>.scope`, `crio-<id>.scope`), but not CRI-O's
/// `crio-conmon-<id>.scope`, which holds conmon.
fn is_container_cgroup(name: &str, id: &str) -> bool {
    name == id
        || (name
            .strip_suffix(".scope")
            .and_then(|n| n.strip_suffix(id))
            .is_some_and(|prefix| prefix.ends_with('-') && !prefix.ends_with("conmon-")))
}

/// The cgroup directories a search starts from: the cgroup v2 root when the
/// host runs cgroup v2, else the v1 `pids`, `memory` and `unified` hierarchies.
fn search_roots(cgroup_root: &Path) -> Vec<PathBuf> {
    if cgroup_root.join("cgroup.controllers").is_file() {
        return vec![cgroup_root.to_owned()];
    }
    ["pids", "memory", "unified", "systemd"]
        .iter()
        .map(|h| cgroup_root.join(h))
        .filter(|p| p.is_dir())
        .collect()
}

/// Finds the container's cgroup directory below `root` (breadth first).
fn find_cgroup_dir(root: &Path, id: &str) -> Option<PathBuf> {
    let mut level = vec![root.to_owned()];
    for _ in 0..CGROUP_SEARCH_DEPTH {
        let mut next = Vec::new();
        for dir in level {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                let name = entry.file_name();
                if is_container_cgroup(&name.to_string_lossy(), id) {
                    return Some(entry.path());
                }
                next.push(entry.path());
            }
        }
        if next.is_empty() {
            break;
        }
        level = next;
    }
    None
}

/// The init process among the processes of a container's cgroup: the one
/// whose parent is outside the cgroup (the shim or conmon started it); among
/// several such (`kubectl exec` sessions have the shim as parent too), the
/// one that started first.
pub fn init_of(proc_root: &Path, pids: &[i32]) -> Option<i32> {
    let members: HashSet<i32> = pids.iter().copied().collect();
    pids.iter()
        .copied()
        .filter(|pid| parent_pid(proc_root, *pid).is_ok_and(|p| !members.contains(&p)))
        .filter_map(|pid| procinfo::start_ticks(proc_root, pid).ok().map(|t| (t, pid)))
        .min()
        .map(|(_, pid)| pid)
}

/// The init process of a container (or sandbox) found from its cgroup, for a
/// runtime whose status gives no PID: the cgroup named after `id` in the
/// first hierarchy that has one, then [`init_of`] its processes.
pub fn find_init_by_cgroup(proc_root: &Path, cgroup_root: &Path, id: &str) -> Option<i32> {
    search_roots(cgroup_root).iter().find_map(|root| {
        let dir = find_cgroup_dir(root, id)?;
        let procs = fs::read_to_string(dir.join("cgroup.procs")).ok()?;
        let pids: Vec<i32> = procs
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        init_of(proc_root, &pids)
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn cgroup_files() {
        let v1 = "12:cpu,cpuacct:/kubepods/pod1/abc\n1:name=systemd:/kubepods/pod1/abc\n0::/kubepods/pod1/abc\nbogus\n";
        assert_eq!(
            parse_cgroups(v1),
            vec![
                CgroupEntry {
                    hierarchy: 12,
                    controllers: vec!["cpu".into(), "cpuacct".into()],
                    path: "/kubepods/pod1/abc".into()
                },
                CgroupEntry {
                    hierarchy: 1,
                    controllers: vec!["name=systemd".into()],
                    path: "/kubepods/pod1/abc".into()
                },
                CgroupEntry {
                    hierarchy: 0,
                    controllers: vec![],
                    path: "/kubepods/pod1/abc".into()
                },
            ]
        );
        // A path may hold a colon.
        assert_eq!(parse_cgroups("0::/a:b")[0].path, "/a:b");
    }

    #[test]
    fn container_cgroup_names() {
        let cases = [
            ("abc", true),
            ("cri-containerd-abc.scope", true),
            ("crio-abc.scope", true),
            ("crio-conmon-abc.scope", false),
            ("abcd", false),
            ("xabc.scope", false),
            ("cri-containerd-abc", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_container_cgroup(name, "abc"), want, "{name}");
        }
    }

    #[test]
    fn bundle_arguments() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            bundle_argument(&args(&["conmon", "-c", "id", "-b", "/run/b", "-p", "x"])),
            Some(PathBuf::from("/run/b"))
        );
        assert_eq!(
            bundle_argument(&args(&["conmon", "--bundle=/run/c"])),
            Some(PathBuf::from("/run/c"))
        );
        assert_eq!(
            bundle_argument(&args(&["shim", "-namespace", "k8s.io", "-id", "x"])),
            None
        );
    }

    /// A fake `/proc` entry: status with a parent, stat with a start time.
    fn fake_process(proc_root: &Path, pid: i32, ppid: i32, start: u64) {
        let dir = proc_root.join(pid.to_string());
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("status"), format!("Name:\tx\nPPid:\t{ppid}\n")).unwrap();
        fs::write(
            dir.join("stat"),
            format!("{pid} (x) S {ppid} 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0"),
        )
        .unwrap();
    }

    #[test]
    fn bundle_of_a_containerd_shim() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let tasks = tmp
            .path()
            .join("state/io.containerd.runtime.v2.task/k8s.io");
        for id in ["sandbox", "ctr"] {
            fs::create_dir_all(tasks.join(id)).unwrap();
            fs::write(tasks.join(id).join("config.json"), "{}").unwrap();
        }
        fs::write(tasks.join("ctr/init.pid"), "20").unwrap();
        fake_process(&proc_root, 10, 1, 5);
        symlink(tasks.join("sandbox"), proc_root.join("10/cwd")).unwrap();
        fs::write(proc_root.join("10/cmdline"), "shim\0-id\0sandbox\0").unwrap();

        assert_eq!(
            find_bundle(&proc_root, 10, "ctr", 20),
            Some(tasks.join("ctr"))
        );
        // init.pid names another process: not this container's bundle.
        assert_eq!(find_bundle(&proc_root, 10, "ctr", 21), None);
        // The sandbox's own bundle is the shim's working directory.
        assert_eq!(
            find_bundle(&proc_root, 10, "sandbox", 20),
            Some(tasks.join("sandbox"))
        );
        assert_eq!(find_bundle(&proc_root, 10, "gone", 20), None);
    }

    #[test]
    fn bundle_of_conmon() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let bundle = tmp.path().join("overlay-containers/ctr/userdata");
        fs::create_dir_all(&bundle).unwrap();
        fs::write(bundle.join("config.json"), "{}").unwrap();
        fake_process(&proc_root, 10, 1, 5);
        fs::write(
            proc_root.join("10/cmdline"),
            format!("conmon\0-b\0{}\0", bundle.display()),
        )
        .unwrap();
        assert_eq!(find_bundle(&proc_root, 10, "ctr", 20), Some(bundle));
    }

    #[test]
    fn init_found_from_the_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        let proc_root = tmp.path().join("proc");
        let cg = tmp.path().join("cgroup");
        // cgroup v1 with a systemd-style scope under the pids hierarchy.
        let dir = cg.join("pids/kubepods.slice/kubepods-pod1.slice/cri-containerd-ctr.scope");
        fs::create_dir_all(&dir).unwrap();
        fs::create_dir_all(cg.join("memory")).unwrap();
        // 30 is the init (parent 10, the shim), 31 its child, 32 an exec
        // session started later (parent 10 too).
        fs::write(dir.join("cgroup.procs"), "31\n30\n32\n").unwrap();
        fake_process(&proc_root, 30, 10, 100);
        fake_process(&proc_root, 31, 30, 90);
        fake_process(&proc_root, 32, 10, 200);
        assert_eq!(find_init_by_cgroup(&proc_root, &cg, "ctr"), Some(30));
        assert_eq!(find_init_by_cgroup(&proc_root, &cg, "other"), None);
    }

    #[test]
    fn this_process() {
        let proc_root = Path::new("/proc");
        let me = i32::try_from(std::process::id()).unwrap();
        let inodes = ns_inodes(proc_root, me).unwrap();
        assert!(inodes.contains_key(&NamespaceType::Network));
        assert!(inodes.contains_key(&NamespaceType::Mount));
        assert!(parent_pid(proc_root, me).unwrap() > 0);
        assert!(!cgroups(proc_root, me).unwrap().is_empty());
        assert!(ns_inodes(proc_root, i32::MAX).is_err());
    }
}
