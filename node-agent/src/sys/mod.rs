//! Every syscall the agent makes goes through this module; it is the only place
//! of the crate that may use `unsafe`, and each such block says why it is sound.
//!
//! - [`socket`]: the `SOCK_SEQPACKET` socketpair CRIU's RPC runs over, and
//!   datagrams with file descriptors attached (`SCM_RIGHTS`).
//! - [`process`]: starting a program with chosen files at fds 3, 4, 5, ...
//! - [`mount`]: bind mounts, detaching unmounts and `setns`.
//!
//! The pure restore logic does not call these directly: it takes a [`Syscalls`]
//! implementation, which is [`Host`] in the agent and a recording fake in tests.

#![allow(unsafe_code)]

pub mod mount;
pub mod process;
pub mod socket;

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What the restore and checkpoint rules need from the kernel.
///
/// The rules decide in which order files are touched and which failure becomes
/// which error; an implementation only performs the calls.
pub trait Syscalls {
    /// An open file handed to CRIU later (an fd in the agent, anything in a fake).
    type File;

    /// Opens a namespace file read-only and close-on-exec, as runc's `os.Open` does.
    fn open_namespace(&self, path: &Path) -> io::Result<Self::File>;

    /// The inode number of the file at `path`, following symlinks (`stat(2)`).
    fn inode(&self, path: &Path) -> io::Result<u64>;

    /// The whole content of a small file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
}

/// The real kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl Syscalls for Host {
    type File = OwnedFd;

    fn open_namespace(&self, path: &Path) -> io::Result<OwnedFd> {
        // std opens with O_CLOEXEC; the fd reaches CRIU only through an
        // explicit renumbering in `process::spawn`.
        Ok(File::open(path)?.into())
    }

    fn inode(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.ino())
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}
