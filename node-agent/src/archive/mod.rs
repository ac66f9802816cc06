//! Checkpoint archives: reading untrusted ones safely, and writing them.
//!
//! The archive format is the one the kubelet's checkpoint API produces
//! through containerd and CRI-O (and Podman): an uncompressed tar holding
//! `checkpoint/` (CRIU's images), `config.dump`, `spec.dump`, optionally
//! `rootfs-diff.tar`, `dump.log`, `stats-dump` and runtime-specific files.
//! gzip-compressed archives are accepted too, recognised by their magic
//! bytes.
//!
//! The agent runs as root and the archive comes from whoever could create a
//! checkpoint, so reading is fenced:
//! - [`extract`] creates only regular files (0600) and directories (0700) in
//!   a fresh directory; links, devices, pipes, absolute paths and `..` are
//!   refused, every lookup is done with `openat2` without following symbolic
//!   links, and every refusal names the entry.
//! - [`Limits`] caps total and per-file size, entry count, path depth and
//!   length, and the size of metadata parsed in memory.
//! - [`layer`] applies `rootfs-diff.tar` into a container's root file system
//!   with the same lookups; symbolic links in the layer are created, never
//!   followed.
//! - [`metadata`] parses `config.dump`, `spec.dump` and
//!   `checkpoint/descriptors.json`; [`policy`] decides which of the checkpointed
//!   container's mounts and devices a restore may recreate.
//! - [`summary`] reads an archive without extracting it (for `inspect`), and
//!   [`criu_image`] decodes the few CRIU images it shows.
//! - [`writer`] builds archives in the same format, deterministically.

mod beneath;
pub mod criu_image;
mod entry_path;
mod extract;
mod input;
pub mod layer;
mod limits;
pub mod metadata;
pub mod policy;
pub mod summary;
mod tarstream;
mod walk;
pub mod writer;

use std::io::{self, Read, Write};
use std::path::PathBuf;

pub use entry_path::{EntryName, EntryPath, PathProblem};
pub use extract::{
    DIR_MODE, Extracted, ExtractedCheckpoint, FILE_MODE, extract, extract_checkpoint, extract_file,
};
pub use input::{ArchiveDigest, digest_file, digest_reader};
pub use limits::{Limits, NAME_MAX};
pub use walk::EntryCounts;

/// Chunk size for copying entry data.
const COPY_BUFFER: usize = 1 << 20;

/// Why an archive could not be read, extracted, applied or written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A path that could leave the root or breaks a limit.
    #[error("archive entry {entry} {problem}")]
    Path {
        /// The entry.
        entry: EntryName,
        /// What is wrong with its path.
        problem: PathProblem,
    },
    /// A link, device, pipe or unknown type where only files and directories
    /// are allowed.
    #[error("archive entry {entry} is a {kind}; only regular files and directories are allowed")]
    KindNotAllowed {
        /// The entry.
        entry: EntryName,
        /// What it is.
        kind: String,
    },
    /// A non-directory entry naming the root itself (`./`).
    #[error("archive entry {entry} names the extraction root but is not a directory")]
    RootNotDirectory {
        /// The entry.
        entry: EntryName,
    },
    /// A file larger than [`Limits::max_file_bytes`].
    #[error("archive entry {entry} is {size} bytes, more than the per-file limit of {limit} bytes")]
    FileTooLarge {
        /// The entry.
        entry: EntryName,
        /// Its size as the header claims it.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The files so far plus this one exceed [`Limits::max_total_bytes`].
    #[error("archive entry {entry} takes the extracted size past the limit of {limit} bytes")]
    TotalTooLarge {
        /// The entry.
        entry: EntryName,
        /// The limit.
        limit: u64,
    },
    /// A JSON metadata file larger than [`Limits::max_metadata_bytes`].
    #[error(
        "archive entry {entry} is {size} bytes, more than the limit of {limit} bytes for metadata files"
    )]
    MetadataTooLarge {
        /// The entry.
        entry: EntryName,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// More headers than [`Limits::max_entries`].
    #[error("archive has more than {limit} tar headers")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The archive file is larger than [`Limits::max_archive_bytes`].
    #[error("archive is larger than the limit of {limit} bytes")]
    ArchiveTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The same file twice, or a file where a directory was.
    #[error("archive entry {entry} appears more than once")]
    Duplicate {
        /// The entry.
        entry: EntryName,
    },
    /// A parent of the entry is a file or other non-directory.
    #[error("archive entry {entry} lies below something that is not a directory")]
    ParentNotDirectory {
        /// The entry.
        entry: EntryName,
    },
    /// A parent of the entry is a symbolic link.
    #[error("archive entry {entry} lies below a symbolic link; symbolic links are never followed")]
    ThroughSymlink {
        /// The entry.
        entry: EntryName,
    },
    /// A parent of the entry is a mount point.
    #[error("archive entry {entry} lies below a mount point; extraction never crosses mounts")]
    CrossesMount {
        /// The entry.
        entry: EntryName,
    },
    /// A hard link whose target is not a regular file already extracted.
    #[error(
        "archive entry {entry} is a hard link to {target}, which is not a regular file in the archive"
    )]
    BadHardlink {
        /// The entry.
        entry: EntryName,
        /// The link target.
        target: EntryName,
    },
    /// A whiteout naming nothing (`.wh.`), the directory itself or its
    /// parent.
    #[error("archive entry {entry} is a whiteout that names no removable entry")]
    BadWhiteout {
        /// The entry.
        entry: EntryName,
    },
    /// A device or named pipe in a layer applied with [`layer::Specials::Refuse`].
    #[error("archive entry {entry} is a {kind}; device nodes and named pipes are not created")]
    SpecialRefused {
        /// The entry.
        entry: EntryName,
        /// What it is.
        kind: String,
    },
    /// Not a tar archive, or a corrupt one.
    #[error("malformed tar archive at byte {offset}: {reason}")]
    Malformed {
        /// Offset in the decoded stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The archive ends in the middle of a header or of data.
    #[error("archive is truncated at byte {offset}")]
    Truncated {
        /// Offset in the decoded stream.
        offset: u64,
    },
    /// A GNU long-name record longer than [`Limits::max_path_bytes`].
    #[error("GNU long name of {len} bytes at byte {offset} is longer than the limit of {limit}")]
    LongNameTooLong {
        /// Offset of its header.
        offset: u64,
        /// Its claimed length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// A PAX header too large to be real.
    #[error("PAX header of {len} bytes at byte {offset} is larger than the limit of {limit}")]
    PaxTooLarge {
        /// Offset of its header.
        offset: u64,
        /// Its claimed length.
        len: u64,
        /// The limit.
        limit: u64,
    },
    /// zstd, xz or bzip2.
    #[error(
        "archive is {name}-compressed; only uncompressed and gzip-compressed tar archives are accepted"
    )]
    UnsupportedCompression {
        /// The compression recognised.
        name: &'static str,
    },
    /// The extraction directory exists already.
    #[error("extraction directory {} already exists; extraction needs a fresh directory", path.display())]
    DestinationExists {
        /// The directory.
        path: PathBuf,
    },
    /// A source of the writer is not a regular file or directory.
    #[error("{} is not a regular file or directory; only those are archived", path.display())]
    SourceNotRegular {
        /// The path.
        path: PathBuf,
    },
    /// A metadata file or CRIU image is missing or malformed.
    #[error(transparent)]
    Metadata(#[from] metadata::MetadataError),
    /// `spec.dump` asks for more than a restore grants.
    #[error(transparent)]
    Policy(#[from] policy::PolicyError),
    /// An extra file name for the writer that is not one plain component or
    /// is reserved.
    #[error(
        "{name:?} cannot be an extra file name: it must be one plain path component and not a name the archive format reserves"
    )]
    BadExtraName {
        /// The name.
        name: String,
    },
    /// Reading the archive stream failed.
    #[error("reading archive: {source}")]
    Read {
        /// The cause.
        source: io::Error,
    },
    /// Writing one entry's file failed.
    #[error("{action} archive entry {entry}: {source}")]
    EntryIo {
        /// The entry.
        entry: EntryName,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// Any other file operation.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

impl ArchiveError {
    /// Maps an error from the archive stream, recognising the limit and
    /// truncation markers the readers carry inside `io::Error`.
    pub(crate) fn from_read(err: io::Error) -> Self {
        if let Some(inner) = err.get_ref() {
            if let Some(too_large) = inner.downcast_ref::<input::ArchiveTooLarge>() {
                return Self::ArchiveTooLarge { limit: too_large.0 };
            }
            if let Some(truncated) = inner.downcast_ref::<tarstream::TruncatedAt>() {
                return Self::Truncated {
                    offset: truncated.0,
                };
            }
        }
        Self::Read { source: err }
    }
}

/// Copies an entry's data to `out`, telling read errors (the archive) from
/// write errors (the disk).
pub(crate) fn copy_entry_data(
    entry: &walk::Entry,
    data: &mut dyn Read,
    out: &mut dyn Write,
    buf: &mut [u8],
) -> Result<u64, ArchiveError> {
    let mut copied = 0u64;
    loop {
        let n = match data.read(buf) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ArchiveError::from_read(e)),
        };
        out.write_all(&buf[..n])
            .map_err(|source| ArchiveError::EntryIo {
                entry: entry.name.clone(),
                action: "writing",
                source,
            })?;
        copied += n as u64;
    }
}
