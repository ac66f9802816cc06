//! Writing a checkpoint archive in the format the kubelet, containerd and
//! CRI-O write, so `checkpointctl` and the runtimes' restore paths read it.
//!
//! The output is deterministic: the same inputs give the same bytes. Entries
//! are in a fixed order (metadata first, so a streaming reader can decide
//! about an archive before its memory pages arrive: `config.dump`,
//! `spec.dump`, `stats-dump`, `dump.log`, extra files by name, then
//! `checkpoint/` sorted by name, then `rootfs-diff.tar`), owned by 0:0 with
//! mtime 0, files 0600 and directories 0700 (the archive holds every memory
//! page of the checkpointed processes; CRI-O and containerd use 0600 for the
//! same reason).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::extract::{DIR_MODE, FILE_MODE};
use super::input::ArchiveDigest;
use super::metadata::{self, ContainerConfig, names};
use super::{ArchiveError, EntryName};

/// Deepest directory nesting copied from the image directory.
const MAX_SOURCE_DEPTH: usize = 16;

/// What goes into a checkpoint archive.
#[derive(Debug, Clone)]
pub struct CheckpointContents<'a> {
    /// CRIU's image directory; becomes `checkpoint/`. Holds
    /// `descriptors.json` when the checkpoint was taken the runc way.
    pub images_dir: &'a Path,
    /// Written as `config.dump`.
    pub config: &'a ContainerConfig,
    /// Written as `spec.dump`; must parse as an OCI spec.
    pub spec_dump: &'a [u8],
    /// Written as `rootfs-diff.tar`.
    pub rootfs_diff: Option<&'a Path>,
    /// Written as `dump.log`.
    pub dump_log: Option<&'a Path>,
    /// Written as `stats-dump`.
    pub stats_dump: Option<&'a Path>,
    /// Further top-level files, by archive name (e.g. `status.dump`,
    /// `deleted.files`). A name is one plain component and not one of the
    /// names above.
    pub extra_files: Vec<(String, PathBuf)>,
}

/// Writes the archive to `out` and returns its digest.
pub fn write_archive<W: Write>(
    contents: &CheckpointContents<'_>,
    out: W,
) -> Result<ArchiveDigest, ArchiveError> {
    metadata::parse_spec(contents.spec_dump)?;
    let config = serde_json::to_vec_pretty(contents.config).map_err(|e| ArchiveError::Io {
        action: "encoding",
        path: PathBuf::from(names::CONFIG_DUMP),
        source: io::Error::other(e),
    })?;
    let mut extra = contents.extra_files.clone();
    extra.sort();
    for (name, _) in &extra {
        check_extra_name(name)?;
    }

    let hashing = HashingWriter {
        inner: out,
        hasher: Sha256::new(),
        count: 0,
    };
    let mut tar = tar::Builder::new(hashing);
    tar.mode(tar::HeaderMode::Deterministic);
    append_bytes(&mut tar, names::CONFIG_DUMP, &config)?;
    append_bytes(&mut tar, names::SPEC_DUMP, contents.spec_dump)?;
    if let Some(path) = contents.stats_dump {
        append_file(&mut tar, names::STATS_DUMP, path)?;
    }
    if let Some(path) = contents.dump_log {
        append_file(&mut tar, names::DUMP_LOG, path)?;
    }
    for (name, path) in &extra {
        append_file(&mut tar, name, path)?;
    }
    append_dir(
        &mut tar,
        Path::new(names::CHECKPOINT_DIR),
        contents.images_dir,
        0,
    )?;
    if let Some(path) = contents.rootfs_diff {
        append_file(&mut tar, names::ROOTFS_DIFF, path)?;
    }
    let hashing = tar
        .into_inner()
        .map_err(|source| write_error("finishing", source))?;
    let HashingWriter {
        mut inner,
        hasher,
        count,
    } = hashing;
    inner
        .flush()
        .map_err(|source| write_error("flushing", source))?;
    Ok(ArchiveDigest {
        sha256: hex::encode(hasher.finalize()),
        size: count,
    })
}

/// Writes the archive to a new file at `path` (mode 0600, never replacing an
/// existing file) and syncs it. On error the partial file is removed.
pub fn write_archive_file(
    contents: &CheckpointContents<'_>,
    path: &Path,
) -> Result<ArchiveDigest, ArchiveError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| ArchiveError::Io {
            action: "creating archive",
            path: path.to_path_buf(),
            source,
        })?;
    let result = (|| {
        // The umask may have taken bits away; make the mode exact.
        file.set_permissions(fs::Permissions::from_mode(FILE_MODE))
            .map_err(|source| write_error("setting the mode of the archive", source))?;
        let digest = write_archive(contents, BufWriter::with_capacity(1 << 20, &file))?;
        file.sync_all()
            .map_err(|source| write_error("syncing", source))?;
        Ok(digest)
    })();
    if result.is_err()
        && let Err(e) = fs::remove_file(path)
    {
        tracing::warn!(path = %path.display(), error = %e, "removing a partly written archive failed");
    }
    result
}

fn write_error(action: &'static str, source: io::Error) -> ArchiveError {
    ArchiveError::Io {
        action,
        path: PathBuf::from("archive"),
        source,
    }
}

fn check_extra_name(name: &str) -> Result<(), ArchiveError> {
    let reserved = [
        names::CONFIG_DUMP,
        names::SPEC_DUMP,
        names::STATS_DUMP,
        names::DUMP_LOG,
        names::CHECKPOINT_DIR,
        names::ROOTFS_DIFF,
    ];
    let plain = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\0')
        && name.len() <= super::NAME_MAX;
    if plain && !reserved.contains(&name) {
        Ok(())
    } else {
        Err(ArchiveError::BadExtraName {
            name: name.to_string(),
        })
    }
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h
}

fn append_bytes<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    data: &[u8],
) -> Result<(), ArchiveError> {
    let mut h = header(tar::EntryType::Regular, FILE_MODE, data.len() as u64);
    tar.append_data(&mut h, name, data)
        .map_err(|source| entry_error(name, source))
}

fn entry_error(name: &str, source: io::Error) -> ArchiveError {
    ArchiveError::EntryIo {
        entry: EntryName::from(name),
        action: "writing",
        source,
    }
}

/// Opens a source without following a symbolic link and checks that it is
/// a regular file.
fn open_source(path: &Path) -> Result<(File, u64), ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        action: "opening",
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            // ELOOP: the last component is a symbolic link.
            if e.raw_os_error() == Some(nix::libc::ELOOP) {
                ArchiveError::SourceNotRegular {
                    path: path.to_path_buf(),
                }
            } else {
                io_err(e)
            }
        })?;
    let meta = file.metadata().map_err(io_err)?;
    if !meta.is_file() {
        return Err(ArchiveError::SourceNotRegular {
            path: path.to_path_buf(),
        });
    }
    Ok((file, meta.len()))
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    name: impl AsRef<Path>,
    path: &Path,
) -> Result<(), ArchiveError> {
    let name = name.as_ref();
    let (file, size) = open_source(path)?;
    let mut h = header(tar::EntryType::Regular, FILE_MODE, size);
    let mut exact = ExactReader {
        inner: file.take(size),
        remaining: size,
    };
    tar.append_data(&mut h, name, &mut exact)
        .map_err(|source| entry_error(&name.to_string_lossy(), source))
}

fn append_dir<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &Path,
    dir: &Path,
    depth: usize,
) -> Result<(), ArchiveError> {
    if depth > MAX_SOURCE_DEPTH {
        return Err(ArchiveError::Io {
            action: "archiving",
            path: dir.to_path_buf(),
            source: io::Error::other("directory nesting is deeper than 16 levels"),
        });
    }
    let meta = fs::symlink_metadata(dir).map_err(|source| ArchiveError::Io {
        action: "reading",
        path: dir.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(ArchiveError::SourceNotRegular {
            path: dir.to_path_buf(),
        });
    }
    let mut h = header(tar::EntryType::Directory, DIR_MODE, 0);
    tar.append_data(&mut h, name, io::empty())
        .map_err(|source| entry_error(&name.to_string_lossy(), source))?;
    let mut children: Vec<(std::ffi::OsString, PathBuf, fs::FileType)> = Vec::new();
    let read_dir = fs::read_dir(dir).map_err(|source| ArchiveError::Io {
        action: "listing",
        path: dir.to_path_buf(),
        source,
    })?;
    for child in read_dir {
        let child = child.map_err(|source| ArchiveError::Io {
            action: "listing",
            path: dir.to_path_buf(),
            source,
        })?;
        let kind = child.file_type().map_err(|source| ArchiveError::Io {
            action: "reading",
            path: child.path(),
            source,
        })?;
        children.push((child.file_name(), child.path(), kind));
    }
    // Byte order of the names, so the archive does not depend on the order
    // the file system lists them in.
    children.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    for (file_name, path, kind) in children {
        let child_name = name.join(&file_name);
        if kind.is_dir() {
            append_dir(tar, &child_name, &path, depth + 1)?;
        } else if kind.is_file() {
            append_file(tar, &child_name, &path)?;
        } else {
            return Err(ArchiveError::SourceNotRegular { path });
        }
    }
    Ok(())
}

/// Yields exactly `remaining` bytes or fails: a file that shrinks while it
/// is archived must not produce a corrupt archive.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while it was archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
