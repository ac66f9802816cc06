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
}
