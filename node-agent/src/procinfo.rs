//! What the agent reads about a process from `/proc`: its command line,
//! working directory and start time. A checkpoint records them in its metadata;
//! a restore keeps the start time so a PID can later be told from a reused one
//! (runc's `newRestoredProcess` does the same).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// A process's `/proc` directory under `proc_root` (normally `/proc`).
fn dir(proc_root: &Path, pid: i32) -> PathBuf {
    proc_root.join(pid.to_string())
}

/// The command line: `/proc/<pid>/cmdline` split at NUL bytes.
pub fn cmdline(proc_root: &Path, pid: i32) -> io::Result<Vec<String>> {
    let bytes = fs::read(dir(proc_root, pid).join("cmdline"))?;
    Ok(bytes
        .split(|b| *b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect())
}

/// The command name (`/proc/<pid>/comm`).
pub fn comm(proc_root: &Path, pid: i32) -> io::Result<String> {
    Ok(fs::read_to_string(dir(proc_root, pid).join("comm"))?
        .trim_end()
        .to_owned())
}

/// The working directory, as seen from the agent's root.
pub fn cwd(proc_root: &Path, pid: i32) -> io::Result<PathBuf> {
    fs::read_link(dir(proc_root, pid).join("cwd"))
}

/// The start time in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
pub fn start_ticks(proc_root: &Path, pid: i32) -> io::Result<u64> {
    let stat = fs::read_to_string(dir(proc_root, pid).join("stat"))?;
    parse_start_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("no start time in /proc/{pid}/stat"),
        )
    })
}

/// Field 22 of a `stat` line. The command name (field 2) may hold spaces and
/// parentheses, so fields are counted from its last `)`.
pub fn parse_start_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts at field 3 (state); field 22 is the 20th after it.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// When the process started, in seconds since the Unix epoch: the boot time
/// (`btime` in `/proc/stat`) plus its start ticks.
pub fn start_time_unix(proc_root: &Path, pid: i32) -> io::Result<i64> {
    let ticks = start_ticks(proc_root, pid)?;
    let stat = fs::read_to_string(proc_root.join("stat"))?;
    let boot = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no btime in /proc/stat"))?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|hz| *hz > 0)
        .unwrap_or(100);
    let hz = u64::try_from(hz).unwrap_or(100);
    Ok(boot + i64::try_from(ticks / hz).unwrap_or(0))
}

/// Formats seconds since the Unix epoch as RFC 3339 in UTC
/// (`2025-01-02T03:04:05Z`), the form `config.dump` carries.
pub fn rfc3339(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn start_ticks_after_a_tricky_comm() {
        let stat =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_ticks(stat), Some(987_654));
        assert_eq!(parse_start_ticks("1 (x) S 0"), None);
    }

    #[test]
    fn this_process() {
        let proc_root = Path::new("/proc");
        let pid = i32::try_from(std::process::id()).unwrap();
        assert!(start_ticks(proc_root, pid).unwrap() > 0);
        assert!(!cmdline(proc_root, pid).unwrap().is_empty());
        assert_eq!(
            cwd(proc_root, pid).unwrap(),
            std::env::current_dir().unwrap()
        );
        let started = start_time_unix(proc_root, pid).unwrap();
        assert!(started > 1_600_000_000, "{started}");
    }

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_735_787_045), "2025-01-02T03:04:05Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
