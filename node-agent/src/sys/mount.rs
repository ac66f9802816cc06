//! Mounts and namespace entry: what a restore needs around CRIU (the bind-mounted
//! root CRIU restores onto, entering a target's namespaces in tests and tools).

use std::io;
use std::os::fd::AsFd;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Bind-mounts `source` on `target` recursively (`MS_BIND|MS_REC`), as runc does
/// for `criu-root`: CRIU's root must be a mount point whose parent is not
/// overmounted.
pub fn bind_recursive(source: &Path, target: &Path) -> io::Result<()> {
    nix::mount::mount(
        Some(source),
        target,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )?;
    Ok(())
}

/// Detaches the mount at `target` (`umount2(MNT_DETACH)`).
pub fn unmount_detach(target: &Path) -> io::Result<()> {
    nix::mount::umount2(target, MntFlags::MNT_DETACH)?;
    Ok(())
}

/// Moves the calling thread into the namespace `ns` refers to. `nstype` is a
/// `CLONE_NEW*` flag that must match the namespace, or 0 for any type.
pub fn setns(ns: impl AsFd, nstype: i32) -> io::Result<()> {
    nix::sched::setns(ns, CloneFlags::from_bits_retain(nstype))?;
    Ok(())
}

/// Gives the calling thread a mount namespace of its own (a copy of the
/// current one) whose mounts receive, but never send, mount events (`MS_SLAVE`
/// recursively): what the process mounts afterwards stays private to it, and
/// unmounts on the node still reach it. The caller must be single-threaded for
/// the namespace to cover the whole process.
pub fn unshare_mount_namespace() -> io::Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNS)?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )?;
    Ok(())
}

/// Mounts a fresh `proc` on `target` (`nosuid,nodev,noexec`): it shows the
/// PID namespace the calling process is a member of.
pub fn mount_proc(target: &Path) -> io::Result<()> {
    nix::mount::mount(
        Some("proc"),
        target,
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    )?;
    Ok(())
}
