//! Processes the engine starts and restores, seen through `/proc`: which host
//! PID a restored root has, whether it still is the process that was
//! restored (PIDs are reused: the start time tells), and stopping it.

use std::fs;
use std::io;
use std::path::Path;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The state letter (`R`, `S`, `Z`, ...) and start time in clock ticks after
/// boot of a `stat` line (proc(5) fields 3 and 22). The command name (field 2)
/// may hold spaces and parentheses, so fields are counted from its last `)`.
pub fn parse_stat(stat: &str) -> Option<(char, u64)> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ticks = fields.nth(18)?.parse().ok()?;
    Some((state, ticks))
}

/// State and start ticks of `pid`, `None` when it does not exist.
pub fn stat(proc_root: &Path, pid: i32) -> Option<(char, u64)> {
    let text = fs::read_to_string(proc_root.join(pid.to_string()).join("stat")).ok()?;
    parse_stat(&text)
}

/// Whether `pid` is still the process that started at `start_ticks` and has
/// not ended (a zombie has ended; only its parent has not reaped it yet).
pub fn is_alive(proc_root: &Path, pid: i32, start_ticks: u64) -> bool {
    matches!(stat(proc_root, pid), Some((state, ticks)) if ticks == start_ticks && state != 'Z' && state != 'X')
}

/// The PIDs of `pid` in each PID namespace it is in, outermost first
/// (`NSpid` of `/proc/<pid>/status`).
pub fn ns_pids(proc_root: &Path, pid: i32) -> io::Result<Vec<i32>> {
    let status = fs::read_to_string(proc_root.join(pid.to_string()).join("status"))?;
    Ok(parse_ns_pids(&status))
}

/// The `NSpid` line of a status file.
pub fn parse_ns_pids(status: &str) -> Vec<i32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The children of `pid`, from every thread's `children` file.
pub fn children(proc_root: &Path, pid: i32) -> Vec<i32> {
    let tasks = proc_root.join(pid.to_string()).join("task");
    let Ok(entries) = fs::read_dir(&tasks) else {
        return Vec::new();
    };
    let mut found: Vec<i32> = entries
        .filter_map(Result::ok)
        .filter_map(|task| fs::read_to_string(task.path().join("children")).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<i32>>()
        })
        .collect();
    found.sort_unstable();
    found.dedup();
    found
}

/// The host PID of the child of `parent` that has PID `inner` in `parent`'s
/// own PID namespace: a process reports PIDs of its namespace, the agent
/// works with the host's.
pub fn child_by_inner_pid(proc_root: &Path, parent: i32, inner: i32) -> Option<i32> {
    let level = ns_pids(proc_root, parent).ok()?.len();
    let index = level.checked_sub(1)?;
    children(proc_root, parent)
        .into_iter()
        .find(|child| ns_pids(proc_root, *child).is_ok_and(|p| p.get(index) == Some(&inner)))
}

/// Processes whose command line is `<binary> <subcommand> ... <flag> <value> ...`:
/// how the engine finds the shim of one restore again.
pub fn find_by_args(proc_root: &Path, subcommand: &str, flag: &str, value: &str) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    let mut found: Vec<i32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(bytes) = fs::read(proc_root.join(pid.to_string()).join("cmdline")) else {
                return false;
            };
            let args: Vec<&[u8]> = bytes.split(|b| *b == 0).collect();
            args.get(1) == Some(&subcommand.as_bytes())
                && args
                    .windows(2)
                    .any(|w| w[0] == flag.as_bytes() && w[1] == value.as_bytes())
        })
        .collect();
    found.sort_unstable();
    found
}

/// Sends SIGKILL to `pid`; a process that is already gone is not an error.
pub fn kill_now(pid: i32) -> io::Result<()> {
    match kill(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_tricky_name() {
        let line = "5536 (sh) x) (y) S 5500 5536 1 0 -1 4194560 95 0 0 0 0 0 0 0 20 0 1 0 987654 1081344 69 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("12 (z) Z"), None);
    }

    #[test]
    fn ns_pids_outermost_first() {
        let status = "Name:\tsh\nPid:\t5536\nNSpid:\t5536\t53\t1\nNSpgid:\t5536\t53\t1\n";
        assert_eq!(parse_ns_pids(status), [5536, 53, 1]);
        assert!(parse_ns_pids("Name:\tx\n").is_empty());
    }

    #[test]
    fn this_process_is_alive_and_found_by_its_arguments() {
        let proc_root = Path::new("/proc");
        let me = i32::try_from(std::process::id()).unwrap();
        let (state, ticks) = stat(proc_root, me).unwrap();
        assert_ne!(state, 'Z');
        assert!(is_alive(proc_root, me, ticks));
        assert!(!is_alive(proc_root, me, ticks + 1));
        let pids = ns_pids(proc_root, me).unwrap();
        assert_eq!(pids.first(), Some(&me));
        assert!(find_by_args(proc_root, "no-such-subcommand", "--uid", "x").is_empty());
    }

    #[test]
    fn a_child_is_found_by_its_pid() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let proc_root = Path::new("/proc");
        assert!(children(proc_root, me).contains(&pid));
        // Same namespace: the inner PID is the host PID.
        assert_eq!(child_by_inner_pid(proc_root, me, pid), Some(pid));
        let found = find_by_args(proc_root, "5", "nothing", "x");
        assert!(found.is_empty());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
