//! Starting a program with chosen open files at fixed descriptor numbers.
//!
//! CRIU's swrk mode takes its RPC socket as a number on the command line and
//! looks up every `inherit_fd` number in its own fd table, so the numbers the
//! agent writes into the request must be the numbers the child really has.
//! runc gets this from Go's `ExtraFiles` (entry `i` at fd `3 + i`); this module
//! does the same renumbering with `dup2` between fork and exec.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};

/// The first descriptor number [`spawn`] places files at.
pub const FIRST_EXTRA_FD: RawFd = 3;

/// Spawns `command` with `files[i]` at descriptor `3 + i` in the child.
///
/// The parent's descriptors stay as they are (all of the agent's files are
/// close-on-exec, so nothing else leaks into the child). Stdio is whatever
/// `command` was configured with.
pub fn spawn(mut command: Command, files: &[BorrowedFd<'_>]) -> io::Result<Child> {
    let sources: Vec<RawFd> = files.iter().map(AsRawFd::as_raw_fd).collect();
    let count = RawFd::try_from(sources.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many files"))?;
    // Scratch space filled in the child; allocated here because the child may
    // only make async-signal-safe calls between fork and exec.
    let mut scratch: Vec<RawFd> = vec![-1; sources.len()];
    let closure = move || -> io::Result<()> {
        // First copy every source above the target range, so a source that sits
        // on another file's target number is not overwritten before it is used.
        let floor = FIRST_EXTRA_FD + count;
        for (slot, &source) in scratch.iter_mut().zip(&sources) {
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) on a descriptor the parent holds open
            // (the BorrowedFd lifetimes cover the spawn); it only creates a new
            // descriptor and is async-signal-safe.
            let copy = unsafe { libc::fcntl(source, libc::F_DUPFD_CLOEXEC, floor) };
            if copy < 0 {
                return Err(io::Error::last_os_error());
            }
            *slot = copy;
        }
        // dup2 clears close-on-exec on the target, so exactly these survive exec
        // at their numbers; the scratch copies are close-on-exec and vanish.
        for (target, &copy) in (FIRST_EXTRA_FD..).zip(scratch.iter()) {
            // SAFETY: dup2 between two descriptors valid in this (child) process;
            // async-signal-safe; the target number is free for us to replace.
            if unsafe { libc::dup2(copy, target) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and only calls
    // fcntl and dup2 (async-signal-safe) and writes into memory it owns; it does
    // not allocate, lock or touch state shared with other threads.
    unsafe {
        command.pre_exec(closure);
    }
    command.spawn()
}

/// Spawns `command` inside the namespace `ns` refers to: the child calls
/// `setns(ns, nstype)` between fork and exec, so only the new program runs there
/// and the caller's threads stay where they are. `nstype` is a `CLONE_NEW*`
/// flag the namespace must match (0 for any).
///
/// Used to run short-lived tools (`iptables`, `nft`) in a pod's network
/// namespace without `nsenter`.
pub fn spawn_in_namespace(
    mut command: Command,
    ns: BorrowedFd<'_>,
    nstype: libc::c_int,
) -> io::Result<Child> {
    let raw = ns.as_raw_fd();
    let closure = move || -> io::Result<()> {
        // SAFETY: setns on a descriptor the parent holds open for the duration of
        // the spawn (the BorrowedFd lifetime); a plain syscall, async-signal-safe,
        // touching no memory of the process.
        if unsafe { libc::setns(raw, nstype) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    };
    // SAFETY: the closure runs in the forked child before exec and only makes the
    // setns syscall; it does not allocate, lock or touch shared state.
    unsafe {
        command.pre_exec(closure);
    }
    command.spawn()
}

/// How a waited-for child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this status.
    Exited(i32),
    /// A signal with this number killed it.
    Signaled(i32),
}

/// Waits until the child `pid` (a process this one may reap, such as a tree
/// CRIU restored as its sibling) ends, and reaps it.
pub fn wait_child(pid: i32) -> io::Result<Ended> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let target = nix::unistd::Pid::from_raw(pid);
    loop {
        match waitpid(target, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(Ended::Exited(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(Ended::Signaled(signal as i32)),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Makes this process a child subreaper (`PR_SET_CHILD_SUBREAPER`): a
/// descendant whose parent ends becomes this process's child, not the child
/// of its PID namespace's init, which in a container may be a program that
/// never reaps.
pub fn become_subreaper() -> io::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// Waits until the child `pid` ends, like [`wait_child`], reaping every other
/// child that ends meanwhile (what a subreaper inherits).
pub fn wait_child_reaping(pid: i32) -> io::Result<Ended> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(WaitStatus::Exited(p, code)) if p.as_raw() == pid => return Ok(Ended::Exited(code)),
            Ok(WaitStatus::Signaled(p, signal, _)) if p.as_raw() == pid => {
                return Ok(Ended::Signaled(signal as i32));
            }
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Reaps every child of this process, giving those still running up to
/// `patience` to end. Returns how many were reaped and how many still run.
pub fn reap_children(patience: std::time::Duration) -> io::Result<(usize, usize)> {
    use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
    let deadline = std::time::Instant::now() + patience;
    let mut reaped = 0;
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {
                if std::time::Instant::now() >= deadline {
                    return Ok((reaped, running_children()));
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => reaped += 1,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::ECHILD) => return Ok((reaped, 0)),
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// How many children this process has, from `/proc/self/task/*/children`.
fn running_children() -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .map(|c| c.split_whitespace().count())
        .sum()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::process::Stdio;

    use super::*;

    #[test]
    fn files_land_at_three_and_up() {
        let mut first = tempfile::NamedTempFile::new().unwrap();
        first.write_all(b"first").unwrap();
        let mut second = tempfile::NamedTempFile::new().unwrap();
        second.write_all(b"second").unwrap();
        let a = File::open(first.path()).unwrap();
        let b = File::open(second.path()).unwrap();
        let mut command = Command::new("sh");
        command
            .args(["-c", "cat <&3; echo; cat <&4"])
            .stdout(Stdio::piped());
        let child = spawn(command, &[a.as_fd(), b.as_fd()]).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        assert_eq!(String::from_utf8_lossy(&out.stdout), "first\nsecond");
    }

    #[test]
    fn child_runs_in_the_given_namespace() {
        // Our own network namespace: entering it changes nothing but proves the
        // call; a foreign one needs root and lives in the integration tests.
        let ns = File::open("/proc/self/ns/net").unwrap();
        let mut command = Command::new("readlink");
        command.arg("/proc/self/ns/net").stdout(Stdio::piped());
        let child = spawn_in_namespace(command, ns.as_fd(), libc::CLONE_NEWNET).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        let ours = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            ours.to_str().unwrap()
        );
        // A namespace of the wrong type is refused in the child.
        let mut command = Command::new("true");
        command.stdout(Stdio::null());
        let err = spawn_in_namespace(command, ns.as_fd(), libc::CLONE_NEWPID).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn other_files_stay_behind() {
        let passed = tempfile::NamedTempFile::new().unwrap();
        let kept = tempfile::tempfile().unwrap();
        let kept_fd = kept.as_raw_fd();
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                &format!(
                    "readlink /proc/self/fd/3; test -e /proc/self/fd/{kept_fd} && echo leaked"
                ),
            ])
            .stdout(Stdio::piped());
        let file = File::open(passed.path()).unwrap();
        let child = spawn(command, &[file.as_fd()]).unwrap();
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.trim(), passed.path().to_str().unwrap());
    }

    /// Being a subreaper and reaping any child are process-wide: the test
    /// runs again in a process of its own (this test binary, filtered to it).
    #[test]
    fn a_subreaper_reaps_the_orphans_of_its_children() {
        const INSIDE: &str = "PODRESTORE_TEST_SUBREAPER";
        if std::env::var_os(INSIDE).is_none() {
            let name = "sys::process::tests::a_subreaper_reaps_the_orphans_of_its_children";
            let out = Command::new(std::env::current_exe().unwrap())
                .args(["--exact", name, "--test-threads=1", "--nocapture"])
                .env(INSIDE, "1")
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(text.contains("1 passed"), "{text}");
            return;
        }
        become_subreaper().unwrap();
        // Reaped below through its PID, which the lint cannot follow.
        #[allow(clippy::zombie_processes)]
        let child = Command::new("sh")
            .args(["-c", "sleep 0.2 & sleep 5 >/dev/null 2>&1 & exit 3"])
            .spawn()
            .unwrap();
        let ended = wait_child_reaping(i32::try_from(child.id()).unwrap()).unwrap();
        assert_eq!(ended, Ended::Exited(3));
        // The two sleeps are orphans now, children of this process: the short
        // one ends within the patience, the long one does not.
        let (reaped, running) = reap_children(std::time::Duration::from_secs(2)).unwrap();
        assert_eq!((reaped, running), (1, 1));
    }
}
