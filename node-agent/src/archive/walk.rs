//! One pass over an archive: decode, validate every header and path, enforce
//! the caps, and hand each accepted entry to a sink that extracts, applies or
//! only looks at it.

use std::io::Read;

use super::ArchiveError;
use super::entry_path::{EntryName, EntryPath};
use super::input::{ArchiveDigest, Decoded};
use super::limits::Limits;
use super::tarstream::{EntryKind, Header, TarStream};

/// An entry whose path passed validation.
pub(crate) struct Entry {
    /// The raw name, for error messages.
    pub name: EntryName,
    /// The validated path.
    pub path: EntryPath,
    /// The header, long names and PAX records applied.
    pub header: Header,
}

/// What to do with accepted entries.
pub(crate) trait Sink {
    /// A directory entry (never the root itself).
    fn directory(&mut self, entry: &Entry) -> Result<(), ArchiveError>;
    /// A regular file; `data` yields exactly `entry.header.size` bytes. Data
    /// the sink leaves unread is skipped.
    fn file(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<(), ArchiveError>;
    /// A symbolic link, hard link, device or named pipe.
    fn other(&mut self, entry: &Entry) -> Result<(), ArchiveError>;
}

/// Counts over one pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct EntryCounts {
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub directories: u64,
    /// Links, devices and pipes handed to the sink.
    pub others: u64,
    /// Sum of regular file sizes.
    pub bytes: u64,
}

/// Names of the JSON metadata files of a checkpoint archive, capped at
/// [`Limits::max_metadata_bytes`] since they are parsed in memory.
pub(crate) const METADATA_FILES: &[&str] = &[
    "config.dump",
    "spec.dump",
    "status.dump",
    "status",
    "deleted.files",
    "bind.mounts",
    "network.status",
    "pod.dump",
    "pod.options",
    "checkpoint/descriptors.json",
];

/// How the walk treats names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// A checkpoint archive: metadata files are capped.
    Checkpoint,
    /// A root file system layer: names carry no meaning.
    Layer,
}

/// Reads the whole archive, hands accepted entries to `sink`, and returns the
/// archive's digest and counts. The first refusal ends the walk.
pub(crate) fn walk<R: Read>(
    input: R,
    limits: &Limits,
    layout: Layout,
    sink: &mut dyn Sink,
) -> Result<(ArchiveDigest, EntryCounts), ArchiveError> {
    let decoded = Decoded::new(input, limits.max_archive_bytes)?;
    let mut tar = TarStream::new(decoded, limits.max_entries, limits.max_path_bytes);
    let mut counts = EntryCounts::default();
    while let Some(header) = tar.next_header()? {
        let name = EntryName(header.path.clone());
        let path = match EntryPath::parse(&header.path, limits) {
            Ok(path) => path,
            Err(problem) => {
                return Err(ArchiveError::Path {
                    entry: name,
                    problem,
                });
            }
        };
        let entry = Entry { name, path, header };
        match entry.header.kind {
            EntryKind::Directory => {
                // The root exists already; an entry for it ("./") says nothing.
                if !entry.path.is_root() {
                    sink.directory(&entry)?;
                }
                counts.directories += 1;
            }
            EntryKind::File => {
                check_file(&entry, limits, layout, counts.bytes)?;
                counts.bytes += entry.header.size;
                sink.file(&entry, &mut tar.data())?;
                counts.files += 1;
            }
            EntryKind::Unsupported(_) => {
                return Err(ArchiveError::KindNotAllowed {
                    entry: entry.name,
                    kind: entry.header.kind.describe(),
                });
            }
            _ => {
                if entry.path.is_root() {
                    return Err(ArchiveError::RootNotDirectory { entry: entry.name });
                }
                sink.other(&entry)?;
                counts.others += 1;
            }
        }
    }
    let digest = tar.into_inner().finish()?;
    Ok((digest, counts))
}

fn check_file(
    entry: &Entry,
    limits: &Limits,
    layout: Layout,
    bytes_so_far: u64,
) -> Result<(), ArchiveError> {
    let size = entry.header.size;
    if entry.path.is_root() {
        return Err(ArchiveError::RootNotDirectory {
            entry: entry.name.clone(),
        });
    }
    if size > limits.max_file_bytes {
        return Err(ArchiveError::FileTooLarge {
            entry: entry.name.clone(),
            size,
            limit: limits.max_file_bytes,
        });
    }
    if bytes_so_far.saturating_add(size) > limits.max_total_bytes {
        return Err(ArchiveError::TotalTooLarge {
            entry: entry.name.clone(),
            limit: limits.max_total_bytes,
        });
    }
    if layout == Layout::Checkpoint
        && size > limits.max_metadata_bytes
        && METADATA_FILES.contains(&entry.path.to_string_lossy().as_str())
    {
        return Err(ArchiveError::MetadataTooLarge {
            entry: entry.name.clone(),
            size,
            limit: limits.max_metadata_bytes,
        });
    }
    Ok(())
}
