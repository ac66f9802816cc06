//! Creating files and directories below a directory file descriptor without
//! ever following a symbolic link or crossing a mount.
//!
//! Every lookup goes through `openat2(2)` with `RESOLVE_BENEATH`,
//! `RESOLVE_NO_SYMLINKS`, `RESOLVE_NO_MAGICLINKS` and `RESOLVE_NO_XDEV`, one
//! component at a time from the root's file descriptor, so neither a hostile
//! archive nor a hostile tree already on disk (a container's root file
//! system) can redirect a write elsewhere, even while it is being changed
//! underneath.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};

use super::ArchiveError;
use super::entry_path::EntryName;

/// Resolution rules for every lookup below the root.
fn resolve() -> ResolveFlag {
    ResolveFlag::RESOLVE_BENEATH
        | ResolveFlag::RESOLVE_NO_SYMLINKS
        | ResolveFlag::RESOLVE_NO_MAGICLINKS
        | ResolveFlag::RESOLVE_NO_XDEV
}

/// A directory that entries are created below.
pub(crate) struct Beneath {
    root: OwnedFd,
    /// The last parent directory looked up, since archives list the files
    /// of one directory together.
    cache: Option<(Vec<OsString>, OwnedFd)>,
}

impl Beneath {
    /// Opens `root` itself without following a symbolic link at its last
    /// component.
    pub(crate) fn open(root: &Path) -> Result<Self, ArchiveError> {
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC);
        let root = openat2(nix::fcntl::AT_FDCWD, root, how).map_err(|e| ArchiveError::Io {
            action: "opening directory",
            path: root.to_path_buf(),
            source: e.into(),
        })?;
        Ok(Self { root, cache: None })
    }

    /// Opens the directory made of `components` below the root. Missing
    /// directories are created with `create` when given; otherwise a missing
    /// one is `Ok(None)`.
    pub(crate) fn dir(
        &mut self,
        entry: &EntryName,
        components: &[OsString],
        create: Option<Mode>,
    ) -> Result<Option<BorrowedFd<'_>>, ArchiveError> {
        if components.is_empty() {
            return Ok(Some(self.root.as_fd()));
        }
        let cached = matches!(&self.cache, Some((path, _)) if path.as_slice() == components);
        if !cached {
            let mut current: Option<OwnedFd> = None;
            for component in components {
                let dirfd = current.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
                match open_dir(dirfd, component, create, entry)? {
                    Some(fd) => current = Some(fd),
                    None => return Ok(None),
                }
            }
            let Some(fd) = current else {
                return Ok(Some(self.root.as_fd()));
            };
            self.cache = Some((components.to_vec(), fd));
        }
        Ok(self.cache.as_ref().map(|(_, fd)| fd.as_fd()))
    }

    /// Opens an existing directory below the root without touching the
    /// cache; `None` if a component is missing.
    pub(crate) fn open_uncached(
        &self,
        entry: &EntryName,
        components: &[OsString],
    ) -> Result<Option<OwnedFd>, ArchiveError> {
        let mut current: Option<OwnedFd> = None;
        for component in components {
            let dirfd = current.as_ref().map_or(self.root.as_fd(), |fd| fd.as_fd());
            match open_dir(dirfd, component, None, entry)? {
                Some(fd) => current = Some(fd),
                None => return Ok(None),
            }
        }
        match current {
            Some(fd) => Ok(Some(fd)),
            None => self
                .root
                .try_clone()
                .map(Some)
                .map_err(|source| ArchiveError::EntryIo {
                    entry: entry.clone(),
                    action: "duplicating the root descriptor for",
                    source,
                }),
        }
    }

    /// Forgets the cached directory (after something below the root was
    /// removed or replaced).
    pub(crate) fn forget(&mut self) {
        self.cache = None;
    }
}

/// Opens one directory component below `dirfd`.
fn open_dir(
    dirfd: BorrowedFd<'_>,
    name: &OsStr,
    create: Option<Mode>,
    entry: &EntryName,
) -> Result<Option<OwnedFd>, ArchiveError> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(resolve());
    let mut created = false;
    loop {
        match openat2(dirfd, name, how) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::ENOENT) if !created => {
                let Some(mode) = create else {
                    return Ok(None);
                };
                match mkdirat(dirfd, name, mode) {
                    Ok(()) | Err(Errno::EEXIST) => created = true,
                    Err(e) => return Err(entry_io(entry, "creating a parent directory of", e)),
                }
            }
            Err(Errno::EAGAIN) => {}
            // O_NOFOLLOW with O_DIRECTORY reports a symbolic link as "not a
            // directory"; say which it is.
            Err(Errno::ENOTDIR) if is_symlink_at(dirfd, name) => {
                return Err(lookup_error(entry, Errno::ELOOP));
            }
            Err(e) => return Err(lookup_error(entry, e)),
        }
    }
}

fn is_symlink_at(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    matches!(lstat_at(dir, name), Ok(Some(st))
        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
}

/// Creates a new regular file `name` in `dir`; never opens an existing one.
pub(crate) fn create_file(dir: BorrowedFd<'_>, name: &OsStr, mode: Mode) -> Result<File, Errno> {
    let how = OpenHow::new()
        .flags(
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        )
        .mode(mode)
        .resolve(resolve());
    loop {
        match openat2(dir, name, how) {
            Ok(fd) => return Ok(File::from(fd)),
            Err(Errno::EAGAIN) => {}
            Err(e) => return Err(e),
        }
    }
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Option<FileStat>, Errno> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Whether a stat result is a directory.
pub(crate) fn is_dir(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
}

/// Whether a stat result is a regular file.
pub(crate) fn is_regular(st: &FileStat) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG
}

/// Maps a failed lookup of a parent component to the refusal it means.
pub(crate) fn lookup_error(entry: &EntryName, errno: Errno) -> ArchiveError {
    match errno {
        Errno::ELOOP => ArchiveError::ThroughSymlink {
            entry: entry.clone(),
        },
        Errno::ENOTDIR => ArchiveError::ParentNotDirectory {
            entry: entry.clone(),
        },
        Errno::EXDEV => ArchiveError::CrossesMount {
            entry: entry.clone(),
        },
        other => entry_io(entry, "looking up a parent directory of", other),
    }
}

/// An I/O error while handling one entry.
pub(crate) fn entry_io(entry: &EntryName, action: &'static str, errno: Errno) -> ArchiveError {
    ArchiveError::EntryIo {
        entry: entry.clone(),
        action,
        source: io::Error::from(errno),
    }
}
