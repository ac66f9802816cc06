//! Applying a container's writable layer (`rootfs-diff.tar`) and its
//! `deleted.files` to a root file system, safely.
//!
//! The layer is as untrusted as the archive, and so is the root it is applied
//! to (the target container may have planted symbolic links in it). The
//! rules:
//! - Every lookup is `openat2` below the root with `RESOLVE_BENEATH`,
//!   `RESOLVE_NO_SYMLINKS`, `RESOLVE_NO_MAGICLINKS` and `RESOLVE_NO_XDEV`:
//!   an entry whose parent is a symbolic link (in the layer or already in the
//!   root) or a mount point is refused, naming the entry. A layer for an
//!   image whose `/lib` is a symbolic link to `usr/lib` therefore cannot
//!   write below `lib/`; it must use `usr/lib/`.
//! - Symbolic links in the layer are created as they are, never followed;
//!   their targets are not checked, since nothing here resolves them. Hard
//!   links must point at a regular file below the root.
//! - Device nodes and named pipes are refused, or skipped and reported
//!   ([`Specials`]).
//! - An entry replaces whatever exists at its path (a directory only by
//!   another directory, which is kept and gets the new mode); OCI whiteouts
//!   (`.wh.<name>`, `.wh..wh..opq`) remove paths, as containerd's
//!   `rootfs-diff.tar` (an OCI layer) expresses deletions that way.
//! - Removal never follows a symbolic link and never descends into a mount.
//! - Paths, sizes and counts obey [`Limits`] as in extraction.

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, fchmod, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fchownat, linkat, symlinkat, unlinkat};
use serde::Serialize;

use super::beneath::{Beneath, create_file, entry_io, is_dir, is_regular, lookup_error, lstat_at};
use super::entry_path::{EntryName, EntryPath};
use super::input::ArchiveDigest;
use super::limits::Limits;
use super::tarstream::EntryKind;
use super::walk::{Entry, EntryCounts, Layout, Sink, walk};
use super::{ArchiveError, copy_entry_data};

/// Prefix of OCI whiteout files.
const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// The OCI opaque-directory marker.
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Deepest directory tree a whiteout or replacement removes.
const MAX_REMOVE_DEPTH: usize = 256;

/// What to do with device nodes and named pipes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Specials {
    /// Fail on the first one.
    #[default]
    Refuse,
    /// Leave them out and list them in [`LayerReport::skipped`].
    Skip,
}

/// How to apply a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerOptions {
    /// Device nodes and named pipes.
    pub specials: Specials,
    /// Give files the owner and group the layer records (needs
    /// `CAP_CHOWN`); otherwise they belong to the caller.
    pub preserve_ownership: bool,
}

impl Default for LayerOptions {
    fn default() -> Self {
        Self {
            specials: Specials::Refuse,
            preserve_ownership: true,
        }
    }
}

/// An entry left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedEntry {
    /// The entry's path in the layer.
    pub path: String,
    /// What it is.
    pub kind: String,
}

/// What applying a layer did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LayerReport {
    /// SHA-256 and size of the layer file.
    pub digest: ArchiveDigest,
    /// Entries applied.
    pub counts: EntryCounts,
    /// Whiteouts carried out.
    pub whiteouts: u64,
    /// Entries left out under [`Specials::Skip`].
    pub skipped: Vec<SkippedEntry>,
}

/// Applies the layer read from `layer` (uncompressed or gzip tar) to the
/// existing directory `root`. Stops at the first refusal; what was applied
/// before it stays (the caller owns `root` and decides whether to discard
/// it).
pub fn apply_layer<R: Read>(
    layer: R,
    root: &Path,
    limits: &Limits,
    options: &LayerOptions,
) -> Result<LayerReport, ArchiveError> {
    let mut sink = LayerSink {
        dir: Beneath::open(root)?,
        limits: limits.clone(),
        options: options.clone(),
        created: HashSet::new(),
        whiteouts: 0,
        skipped: Vec::new(),
        buf: vec![0; super::COPY_BUFFER],
    };
    let (digest, counts) = walk(layer, limits, Layout::Layer, &mut sink)?;
    Ok(LayerReport {
        digest,
        counts,
        whiteouts: sink.whiteouts,
        skipped: sink.skipped,
    })
}

/// [`apply_layer`] from a file on disk.
pub fn apply_layer_file(
    layer: &Path,
    root: &Path,
    limits: &Limits,
    options: &LayerOptions,
) -> Result<LayerReport, ArchiveError> {
    let file = File::open(layer).map_err(|source| ArchiveError::Io {
        action: "opening layer",
        path: layer.to_path_buf(),
        source,
    })?;
    apply_layer(file, root, limits, options)
}

/// Removes the paths of `deleted.files` (CRI-O and Podman list them
/// relative to the container root, with or without a leading `/`) from
/// `root`. Paths that do not exist are fine. Returns how many were removed.
pub fn remove_deleted_files(
    root: &Path,
    paths: &[String],
    limits: &Limits,
) -> Result<u64, ArchiveError> {
    let mut dir = Beneath::open(root)?;
    let mut removed = 0;
    for raw in paths {
        let name = EntryName(raw.as_bytes().to_vec());
        let relative = raw.trim_start_matches('/');
        let path = EntryPath::parse(relative.as_bytes(), limits).map_err(|problem| {
            ArchiveError::Path {
                entry: name.clone(),
                problem,
            }
        })?;
        let Some(file_name) = path.file_name() else {
            return Err(ArchiveError::RootNotDirectory { entry: name });
        };
        let Some(parent) = dir.dir(&name, path.parent(), None)? else {
            continue;
        };
        if remove_tree(parent, file_name, &name, 0)? {
            removed += 1;
        }
        dir.forget();
    }
    Ok(removed)
}

struct LayerSink {
    dir: Beneath,
    limits: Limits,
    options: LayerOptions,
    /// Paths this layer created, which an opaque marker must keep.
    created: HashSet<Vec<OsString>>,
    whiteouts: u64,
    skipped: Vec<SkippedEntry>,
    buf: Vec<u8>,
}

impl LayerSink {
    fn parent(&mut self, entry: &Entry) -> Result<BorrowedFd<'_>, ArchiveError> {
        self.dir
            .dir(
                &entry.name,
                entry.path.parent(),
                Some(Mode::from_bits_truncate(0o755)),
            )?
            .ok_or_else(|| lookup_error(&entry.name, Errno::ENOENT))
    }

    /// Carries out a whiteout entry; `false` if the entry is not one.
    fn whiteout(&mut self, entry: &Entry) -> Result<bool, ArchiveError> {
        let Some(name) = entry.path.file_name() else {
            return Ok(false);
        };
        let bytes = name.as_bytes();
        if !bytes.starts_with(WHITEOUT_PREFIX) {
            return Ok(false);
        }
        let parent_path: Vec<OsString> = entry.path.parent().to_vec();
        if bytes == OPAQUE_MARKER {
            // Everything in the directory that this layer did not put there
            // goes.
            let keep: Vec<OsString> = self
                .created
                .iter()
                .filter(|p| p.len() == parent_path.len() + 1 && p.starts_with(&parent_path))
                .filter_map(|p| p.last().cloned())
                .collect();
            let parent = self.parent(entry)?;
            let names = list_dir(parent, &entry.name)?;
            for child in names {
                if !keep.contains(&child) {
                    remove_tree(parent, &child, &entry.name, 0)?;
                }
            }
        } else {
            let target = OsStr::from_bytes(&bytes[WHITEOUT_PREFIX.len()..]).to_os_string();
            if matches!(target.as_bytes(), b"" | b"." | b"..") {
                return Err(ArchiveError::BadWhiteout {
                    entry: entry.name.clone(),
                });
            }
            // `.wh..wh.*` other than the opaque marker is AUFS bookkeeping.
            if target.as_bytes().starts_with(WHITEOUT_PREFIX) {
                return Ok(true);
            }
            let mut target_path = parent_path;
            target_path.push(target.clone());
            if !self.created.contains(&target_path) {
                let parent = self.parent(entry)?;
                remove_tree(parent, &target, &entry.name, 0)?;
            }
        }
        self.dir.forget();
        self.whiteouts += 1;
        Ok(true)
    }

    /// Removes whatever is at the entry's path unless it is a directory and
    /// `keep_dir` is set. Returns whether a directory is there afterwards.
    fn clear(&mut self, entry: &Entry, keep_dir: bool) -> Result<bool, ArchiveError> {
        let Some(name) = entry.path.file_name() else {
            return Ok(true);
        };
        let parent = self.parent(entry)?;
        match lstat_at(parent, name) {
            Ok(None) => Ok(false),
            Ok(Some(st)) if keep_dir && is_dir(&st) => Ok(true),
            Ok(Some(_)) => {
                remove_tree(parent, name, &entry.name, 0)?;
                self.dir.forget();
                Ok(false)
            }
            Err(e) => Err(entry_io(&entry.name, "inspecting", e)),
        }
    }

    fn record(&mut self, entry: &Entry) {
        self.created.insert(entry.path.components().to_vec());
    }

    fn owner(&self, entry: &Entry) -> (Option<Uid>, Option<Gid>) {
        if !self.options.preserve_ownership {
            return (None, None);
        }
        let uid = u32::try_from(entry.header.uid).ok().map(Uid::from_raw);
        let gid = u32::try_from(entry.header.gid).ok().map(Gid::from_raw);
        (uid, gid)
    }
}

impl Sink for LayerSink {
    fn directory(&mut self, entry: &Entry) -> Result<(), ArchiveError> {
        let Some(name) = entry.path.file_name() else {
            return Ok(());
        };
        let exists = self.clear(entry, true)?;
        let (uid, gid) = self.owner(entry);
        let mode = Mode::from_bits_truncate(entry.header.mode);
        let parent = self.parent(entry)?;
        if !exists {
            match mkdirat(parent, name, Mode::from_bits_truncate(0o700)) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(entry_io(&entry.name, "creating directory for", e)),
            }
        }
        let fd = open_dir_fd(parent, name).map_err(|e| lookup_error(&entry.name, e))?;
        // Owner first: chown clears set-id bits.
        if uid.is_some() || gid.is_some() {
            fchown(&fd, uid, gid).map_err(|e| entry_io(&entry.name, "changing the owner of", e))?;
        }
        fchmod(&fd, mode).map_err(|e| entry_io(&entry.name, "changing the mode of", e))?;
        self.record(entry);
        Ok(())
    }

    fn file(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<(), ArchiveError> {
        if self.whiteout(entry)? {
            return Ok(());
        }
        let Some(name) = entry.path.file_name() else {
            return Err(ArchiveError::RootNotDirectory {
                entry: entry.name.clone(),
            });
        };
        self.clear(entry, false)?;
        let (uid, gid) = self.owner(entry);
        let mode = Mode::from_bits_truncate(entry.header.mode);
        let parent = self.parent(entry)?;
        let mut file = match create_file(parent, name, Mode::from_bits_truncate(0o600)) {
            Ok(f) => f,
            Err(Errno::EEXIST) => {
                return Err(ArchiveError::Duplicate {
                    entry: entry.name.clone(),
                });
            }
            Err(e) => return Err(entry_io(&entry.name, "creating file for", e)),
        };
        copy_entry_data(entry, data, &mut file, &mut self.buf)?;
        file.flush().map_err(|source| ArchiveError::EntryIo {
            entry: entry.name.clone(),
            action: "writing",
            source,
        })?;
        if uid.is_some() || gid.is_some() {
            fchown(file.as_fd(), uid, gid)
                .map_err(|e| entry_io(&entry.name, "changing the owner of", e))?;
        }
        fchmod(file.as_fd(), mode).map_err(|e| entry_io(&entry.name, "changing the mode of", e))?;
        self.record(entry);
        Ok(())
    }

    fn other(&mut self, entry: &Entry) -> Result<(), ArchiveError> {
        let Some(name) = entry.path.file_name() else {
            return Err(ArchiveError::RootNotDirectory {
                entry: entry.name.clone(),
            });
        };
        match entry.header.kind {
            EntryKind::Symlink => {
                self.clear(entry, false)?;
                let (uid, gid) = self.owner(entry);
                let target = OsStr::from_bytes(&entry.header.link).to_os_string();
                let parent = self.parent(entry)?;
                symlinkat(target.as_os_str(), parent, name)
                    .map_err(|e| entry_io(&entry.name, "creating symbolic link for", e))?;
                if uid.is_some() || gid.is_some() {
                    fchownat(parent, name, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)
                        .map_err(|e| entry_io(&entry.name, "changing the owner of", e))?;
                }
                self.record(entry);
                Ok(())
            }
            EntryKind::Hardlink => {
                let target = link_target(entry, &self.limits)?;
                let Some(target_name) = target.file_name() else {
                    return Err(bad_hardlink(entry));
                };
                if target == entry.path {
                    return Err(bad_hardlink(entry));
                }
                let target_dir = self
                    .dir
                    .open_uncached(&entry.name, target.parent())?
                    .ok_or_else(|| bad_hardlink(entry))?;
                match lstat_at(target_dir.as_fd(), target_name) {
                    Ok(Some(st)) if is_regular(&st) => {}
                    Ok(_) => return Err(bad_hardlink(entry)),
                    Err(e) => return Err(entry_io(&entry.name, "inspecting the target of", e)),
                }
                self.clear(entry, false)?;
                let parent = self.parent(entry)?;
                linkat(
                    target_dir.as_fd(),
                    target_name,
                    parent,
                    name,
                    AtFlags::empty(),
                )
                .map_err(|e| entry_io(&entry.name, "creating hard link for", e))?;
                self.record(entry);
                Ok(())
            }
            kind => {
                // overlayfs whiteouts are 0:0 character devices; a layer
                // carrying one under a .wh. name is handled as a whiteout.
                if self.whiteout(entry)? {
                    return Ok(());
                }
                match self.options.specials {
                    Specials::Refuse => Err(ArchiveError::SpecialRefused {
                        entry: entry.name.clone(),
                        kind: kind.describe(),
                    }),
                    Specials::Skip => {
                        self.skipped.push(SkippedEntry {
                            path: entry.path.to_string_lossy(),
                            kind: kind.describe(),
                        });
                        Ok(())
                    }
                }
            }
        }
    }
}

fn bad_hardlink(entry: &Entry) -> ArchiveError {
    ArchiveError::BadHardlink {
        entry: entry.name.clone(),
        target: EntryName(entry.header.link.clone()),
    }
}

/// Hard link targets are archive paths (relative to the root), checked like
/// entry paths.
fn link_target(entry: &Entry, limits: &Limits) -> Result<EntryPath, ArchiveError> {
    let raw = &entry.header.link;
    EntryPath::parse(raw, limits).map_err(|problem| ArchiveError::Path {
        entry: EntryName(raw.clone()),
        problem,
    })
}

fn open_dir_fd(parent: BorrowedFd<'_>, name: &OsStr) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
    loop {
        match openat2(parent, name, how) {
            Err(Errno::EAGAIN) => {}
            other => return other,
        }
    }
}

/// Names in a directory, without `.` and `..`.
fn list_dir(parent: BorrowedFd<'_>, entry: &EntryName) -> Result<Vec<OsString>, ArchiveError> {
    let fd = open_dir_fd(parent, OsStr::new(".")).map_err(|e| lookup_error(entry, e))?;
    let mut dir = nix::dir::Dir::from_fd(fd).map_err(|e| entry_io(entry, "listing", e))?;
    let mut names = Vec::new();
    for item in dir.iter() {
        let item = item.map_err(|e| entry_io(entry, "listing", e))?;
        let name = item.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(OsStr::from_bytes(name).to_os_string());
        }
    }
    Ok(names)
}

/// Removes `name` in `parent`, recursively if it is a directory, never
/// following a symbolic link or entering a mount. `false` if it did not
/// exist.
fn remove_tree(
    parent: BorrowedFd<'_>,
    name: &OsStr,
    entry: &EntryName,
    depth: usize,
) -> Result<bool, ArchiveError> {
    let st = match lstat_at(parent, name) {
        Ok(Some(st)) => st,
        Ok(None) => return Ok(false),
        Err(e) => return Err(entry_io(entry, "inspecting", e)),
    };
    if is_dir(&st) {
        if depth >= MAX_REMOVE_DEPTH {
            return Err(entry_io(
                entry,
                "removing a tree deeper than 256 levels for",
                Errno::ELOOP,
            ));
        }
        let fd = open_dir_fd(parent, name).map_err(|e| lookup_error(entry, e))?;
        for child in list_dir(fd.as_fd(), entry)? {
            remove_tree(fd.as_fd(), &child, entry, depth + 1)?;
        }
        unlinkat(parent, name, UnlinkatFlags::RemoveDir)
            .map_err(|e| entry_io(entry, "removing a directory for", e))?;
    } else {
        unlinkat(parent, name, UnlinkatFlags::NoRemoveDir)
            .map_err(|e| entry_io(entry, "removing a file for", e))?;
    }
    Ok(true)
}
