//! Extraction of a checkpoint archive into a fresh private directory.
//!
//! Only regular files and directories are created: a checkpoint archive as
//! the kubelet, containerd and CRI-O write it holds nothing else (the
//! container's own symbolic links travel inside `rootfs-diff.tar`, which is
//! extracted as a file and applied later by [`super::layer`]). Files are
//! created 0600 and directories 0700 whatever the archive says, since they
//! hold every memory page of the checkpointed processes.

use std::fs::{self, DirBuilder, File, Permissions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::stat::{Mode, mkdirat};

use super::beneath::{Beneath, create_file, entry_io, is_dir, lookup_error, lstat_at};
use super::input::ArchiveDigest;
use super::limits::Limits;
use super::metadata::CheckpointMetadata;
use super::policy::{self, MountReview};
use super::walk::{Entry, EntryCounts, Layout, Sink, walk};
use super::{ArchiveError, copy_entry_data};

/// Mode of every extracted directory, the extraction root included.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every extracted file.
pub const FILE_MODE: u32 = 0o600;

/// A checkpoint archive extracted to disk.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Extracted {
    /// The directory the archive was extracted into (mode 0700).
    pub root: PathBuf,
    /// SHA-256 and size of the archive file, computed in the same pass.
    pub digest: ArchiveDigest,
    /// What was extracted.
    pub counts: EntryCounts,
}

/// Extracts the checkpoint archive read from `archive` into `dest`, which
/// must not exist yet and is created with mode 0700 (its parent must exist).
/// On any refusal or error, `dest` is removed again and the first error is
/// returned.
pub fn extract<R: Read>(
    archive: R,
    dest: &Path,
    limits: &Limits,
) -> Result<Extracted, ArchiveError> {
    create_private_dir(dest)?;
    match extract_into(archive, dest, limits) {
        Ok(extracted) => Ok(extracted),
        Err(err) => {
            remove_quietly(dest);
            Err(err)
        }
    }
}

/// A checkpoint extracted, its metadata read and its mounts reviewed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedCheckpoint {
    /// Where and what was extracted.
    pub extracted: Extracted,
    /// `config.dump`, `spec.dump`, `descriptors.json`, `deleted.files`.
    pub metadata: CheckpointMetadata,
    /// The bind mounts the restore must map to the target's mounts.
    pub mounts: MountReview,
}

/// What a restore calls: [`extract_file`], then
/// [`CheckpointMetadata::from_dir`], then the mount and device policy
/// ([`policy::review`]). Any failure removes `dest` again.
pub fn extract_checkpoint(
    archive: &Path,
    dest: &Path,
    limits: &Limits,
) -> Result<ExtractedCheckpoint, ArchiveError> {
    let extracted = extract_file(archive, dest, limits)?;
    let checked = (|| {
        let metadata = CheckpointMetadata::from_dir(dest, limits)?;
        let mounts = policy::review(&metadata.spec);
        mounts.ensure_restorable()?;
        Ok::<_, ArchiveError>((metadata, mounts))
    })();
    match checked {
        Ok((metadata, mounts)) => Ok(ExtractedCheckpoint {
            extracted,
            metadata,
            mounts,
        }),
        Err(err) => {
            remove_quietly(dest);
            Err(err)
        }
    }
}

fn remove_quietly(dest: &Path) {
    // Nothing in the tree is a symlink (none is ever created), and
    // remove_dir_all does not follow them anyway. A failure to clean up must
    // not hide why extraction failed.
    if let Err(cleanup) = fs::remove_dir_all(dest) {
        tracing::warn!(path = %dest.display(), error = %cleanup, "removing a partly extracted checkpoint failed");
    }
}

/// [`extract`] from a file on disk.
pub fn extract_file(
    archive: &Path,
    dest: &Path,
    limits: &Limits,
) -> Result<Extracted, ArchiveError> {
    let file = File::open(archive).map_err(|source| ArchiveError::Io {
        action: "opening archive",
        path: archive.to_path_buf(),
        source,
    })?;
    extract(file, dest, limits)
}

fn create_private_dir(dest: &Path) -> Result<(), ArchiveError> {
    DirBuilder::new()
        .mode(DIR_MODE)
        .create(dest)
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => ArchiveError::DestinationExists {
                path: dest.to_path_buf(),
            },
            _ => ArchiveError::Io {
                action: "creating extraction directory",
                path: dest.to_path_buf(),
                source,
            },
        })?;
    // The umask may have taken bits away; make the mode exact.
    fs::set_permissions(dest, Permissions::from_mode(DIR_MODE)).map_err(|source| ArchiveError::Io {
        action: "setting the mode of",
        path: dest.to_path_buf(),
        source,
    })
}

fn extract_into<R: Read>(
    archive: R,
    dest: &Path,
    limits: &Limits,
) -> Result<Extracted, ArchiveError> {
    let mut sink = ExtractSink {
        dir: Beneath::open(dest)?,
        buf: vec![0; super::COPY_BUFFER],
    };
    let (digest, counts) = walk(archive, limits, Layout::Checkpoint, &mut sink)?;
    Ok(Extracted {
        root: dest.to_path_buf(),
        digest,
        counts,
    })
}

struct ExtractSink {
    dir: Beneath,
    buf: Vec<u8>,
}

impl Sink for ExtractSink {
    fn directory(&mut self, entry: &Entry) -> Result<(), ArchiveError> {
        let Some(name) = entry.path.file_name() else {
            return Ok(());
        };
        let mode = Mode::from_bits_truncate(DIR_MODE);
        let parent = self
            .dir
            .dir(&entry.name, entry.path.parent(), Some(mode))?
            .ok_or_else(|| lookup_error(&entry.name, Errno::ENOENT))?;
        match mkdirat(parent, name, mode) {
            Ok(()) => Ok(()),
            // Listed twice, or created earlier as the parent of a file: fine
            // as long as it is a directory.
            Err(Errno::EEXIST) => match lstat_at(parent, name) {
                Ok(Some(st)) if is_dir(&st) => Ok(()),
                Ok(_) => Err(ArchiveError::Duplicate {
                    entry: entry.name.clone(),
                }),
                Err(e) => Err(entry_io(&entry.name, "inspecting", e)),
            },
            Err(e) => Err(entry_io(&entry.name, "creating directory for", e)),
        }
    }

    fn file(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<(), ArchiveError> {
        let Some(name) = entry.path.file_name() else {
            return Err(ArchiveError::RootNotDirectory {
                entry: entry.name.clone(),
            });
        };
        let parent = self
            .dir
            .dir(
                &entry.name,
                entry.path.parent(),
                Some(Mode::from_bits_truncate(DIR_MODE)),
            )?
            .ok_or_else(|| lookup_error(&entry.name, Errno::ENOENT))?;
        let mut file = match create_file(parent, name, Mode::from_bits_truncate(FILE_MODE)) {
            Ok(file) => file,
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
        })
    }

    fn other(&mut self, entry: &Entry) -> Result<(), ArchiveError> {
        Err(ArchiveError::KindNotAllowed {
            entry: entry.name.clone(),
            kind: entry.header.kind.describe(),
        })
    }
}
