//! Reading processes and their namespaces from `/proc`: which process is where,
//! what it holds open, what it mounts. Every read tolerates the process vanishing.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// `/proc/<pid>/ns/<name>`.
pub fn ns_link(pid: u32, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/ns/{name}"))
}

/// The inode of the namespace `name` (`net`, `pid`, `mnt`, ...) of `pid`.
pub fn ns_inode(pid: u32, name: &str) -> io::Result<u64> {
    Ok(fs::metadata(ns_link(pid, name))?.ino())
}

/// Every PID currently listed in `/proc`.
pub fn pids() -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The children of `pid`'s main thread.
pub fn children(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect()
}

/// The program `pid` runs.
pub fn exe(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Whether `/proc/<pid>` exists (a zombie exists).
pub fn exists(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok()
}

/// The fields of `/proc/<pid>/stat` a test needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    /// The command name.
    pub comm: String,
    /// The state letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// The parent's PID, as seen from our PID namespace.
    pub ppid: u32,
    /// The session ID.
    pub session: u32,
}

/// Parses `/proc/<pid>/stat`; the command name may hold spaces and parentheses,
/// so the fields after it are found from the last `)`.
pub fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let _pgrp = rest.next()?;
    let session = rest.next()?.parse().ok()?;
    Some(Stat {
        comm,
        state,
        ppid,
        session,
    })
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    stat(pid).is_some_and(|stat| stat.state != 'Z' && stat.state != 'X')
}

/// `comm, state, ppid` of `pid` for messages, or `gone`.
pub fn describe(pid: u32) -> String {
    match stat(pid) {
        Some(stat) => format!("{} state {} parent {}", stat.comm, stat.state, stat.ppid),
        None => "gone".to_owned(),
    }
}

/// `pid`'s PIDs from the outermost to its own PID namespace (`NSpid:`).
pub fn nspids(pid: u32) -> Vec<u32> {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix("NSpid:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The resident set size of `pid` in bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The fd numbers `pid` has open.
pub fn fds(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let mut fds: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// What each open fd of `pid` points at (`/dev/null`, `pipe:[N]`, `net:[N]`, ...).
pub fn fd_targets(pid: u32) -> Vec<String> {
    fds(pid)
        .into_iter()
        .filter_map(|fd| fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .collect()
}

/// The lines of `/proc/<pid>/mountinfo`.
pub fn mountinfo(pid: u32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{pid}/mountinfo"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_stat_and_namespaces() {
        let me = std::process::id();
        let stat = stat(me).expect("own stat");
        assert!(is_alive(me));
        assert_ne!(stat.ppid, 0);
        assert!(ns_inode(me, "net").expect("own netns") > 0);
        assert_eq!(nspids(me).first().copied(), Some(me));
        assert!(!stat.comm.is_empty());
    }
}
