//! Caps applied while reading an untrusted archive.
//!
//! A checkpoint holds every memory page of the checkpointed processes, so the
//! defaults are generous; they exist so that a hostile or corrupt archive
//! (a gzip bomb, a header claiming an exabyte, a million empty files) fails
//! with a clear error instead of filling the node's disk or memory.

/// One GiB, for readable defaults.
const GIB: u64 = 1 << 30;
/// One MiB, for readable defaults.
const MIB: u64 = 1 << 20;

/// Longest single path component Linux accepts (`NAME_MAX`).
pub const NAME_MAX: usize = 255;

/// Caps on what one archive may contain. Every field is checked before any
/// byte of the offending entry is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Sum of the sizes of all regular files in the archive. Default 256 GiB:
    /// a checkpoint is about as large as the resident memory of the container
    /// plus its writable layer, and nodes with a few hundred GiB of memory exist.
    pub max_total_bytes: u64,
    /// Size of one regular file. Default 256 GiB: CRIU writes the memory of a
    /// whole process tree into one `pages-*.img` file, so one file may be
    /// nearly the whole checkpoint.
    pub max_file_bytes: u64,
    /// Bytes of the archive file itself (compressed, headers and padding
    /// included). Default 320 GiB; bounds the time spent on a stream that
    /// never ends.
    pub max_archive_bytes: u64,
    /// Number of tar headers (files, directories, links and extension
    /// headers). Default 1,000,000: CRIU writes about ten images per process,
    /// and a writable layer may hold many small files.
    pub max_entries: u64,
    /// Number of path components of one entry. Default 64.
    pub max_depth: usize,
    /// Bytes of one entry path. Default 4096 (`PATH_MAX`).
    pub max_path_bytes: usize,
    /// Size of each JSON metadata file (`config.dump`, `spec.dump`,
    /// `checkpoint/descriptors.json`, `deleted.files`, ...). Default 16 MiB:
    /// an OCI spec with thousands of environment variables and mounts is
    /// still well under 1 MiB.
    pub max_metadata_bytes: u64,
    /// Size of one CRIU image read into memory for inspection (`pstree.img`,
    /// `core-*.img`, `inventory.img`, `stats-dump`). Default 4 MiB.
    pub max_image_bytes: u64,
    /// Total memory `inspect` may hold for small files read from an archive
    /// without extracting it. Default 64 MiB.
    pub max_scan_memory_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_total_bytes: 256 * GIB,
            max_file_bytes: 256 * GIB,
            max_archive_bytes: 320 * GIB,
            max_entries: 1_000_000,
            max_depth: 64,
            max_path_bytes: 4096,
            max_metadata_bytes: 16 * MIB,
            max_image_bytes: 4 * MIB,
            max_scan_memory_bytes: 64 * MIB,
        }
    }
}
