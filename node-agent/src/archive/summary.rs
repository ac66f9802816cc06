//! What a checkpoint archive holds, read in one pass without extracting it:
//! the basis of `podrestore-agent inspect`.
//!
//! The walk applies the same refusals as extraction (an archive `inspect`
//! accepts is one `extract` accepts, size caps aside), keeps only the small
//! files it shows in memory, within [`Limits::max_scan_memory_bytes`], and
//! only counts the rest.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::Serialize;

use super::ArchiveError;
use super::criu_image::{self, DumpStats, Inventory, ProcessInfo};
use super::input::ArchiveDigest;
use super::limits::Limits;
use super::metadata::{
    self, ContainerConfig, LOG_HEAD_BYTES, MetadataError, PodIdentity, SpecNamespace, SpecProcess,
    names,
};
use super::policy::{self, MountReview};
use super::walk::{Entry, EntryCounts, Layout, Sink, walk};

/// Sizes of the parts of a checkpoint.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sizes {
    /// All files below `checkpoint/` (CRIU's images).
    pub checkpoint_bytes: u64,
    /// The memory pages (`checkpoint/pages-*.img`).
    pub pages_bytes: u64,
    /// `rootfs-diff.tar`.
    pub rootfs_diff_bytes: u64,
    /// Established TCP connections CRIU dumped: one `checkpoint/tcp-stream-*.img`
    /// each (a count, not bytes).
    pub tcp_streams: u64,
    /// All regular files.
    pub files_bytes: u64,
}

/// Everything `inspect` shows.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ArchiveSummary {
    /// SHA-256 and size of the archive file.
    pub archive: ArchiveDigest,
    /// Entry counts.
    pub counts: EntryCounts,
    /// Sizes of the parts.
    pub sizes: Sizes,
    /// `config.dump`.
    pub container: ContainerConfig,
    /// Pod and container identity from `spec.dump`.
    pub pod: PodIdentity,
    /// CRIU version, from the annotations or `dump.log`.
    pub criu_version: Option<String>,
    /// The container's init process as the spec describes it.
    pub process: Option<SpecProcess>,
    /// Namespaces of the checkpointed container (types and source paths).
    pub namespaces: Vec<SpecNamespace>,
    /// Mounts and devices, reviewed against the restore policy.
    pub mounts: MountReview,
    /// `checkpoint/descriptors.json`.
    pub descriptors: Option<Vec<String>>,
    /// `checkpoint/inventory.img`.
    pub inventory: Option<Inventory>,
    /// `stats-dump`.
    pub dump_stats: Option<DumpStats>,
    /// The process tree from `checkpoint/pstree.img`, depth-first.
    pub processes: Vec<ProcessInfo>,
    /// What could not be shown, and why.
    pub warnings: Vec<String>,
}

/// Reads a checkpoint archive and summarizes it.
pub fn summarize<R: Read>(archive: R, limits: &Limits) -> Result<ArchiveSummary, ArchiveError> {
    let mut sink = ScanSink {
        limits: limits.clone(),
        kept: BTreeMap::new(),
        kept_bytes: 0,
        sizes: Sizes::default(),
        warnings: Vec::new(),
    };
    let (digest, counts) = walk(archive, limits, Layout::Checkpoint, &mut sink)?;
    sink.sizes.files_bytes = counts.bytes;
    build(sink, digest, counts)
}

/// [`summarize`] for a file on disk.
pub fn summarize_file(path: &Path, limits: &Limits) -> Result<ArchiveSummary, ArchiveError> {
    let file = File::open(path).map_err(|source| ArchiveError::Io {
        action: "opening archive",
        path: path.to_path_buf(),
        source,
    })?;
    summarize(file, limits)
}

struct ScanSink {
    limits: Limits,
    kept: BTreeMap<String, Vec<u8>>,
    kept_bytes: u64,
    sizes: Sizes,
    warnings: Vec<String>,
}

/// How much of a file the scan keeps.
enum Keep {
    /// All of it, up to this cap.
    Whole(u64),
    /// The first bytes only.
    Head(u64),
}

impl ScanSink {
    fn keep(&self, name: &str) -> Option<Keep> {
        let image = Keep::Whole(self.limits.max_image_bytes);
        match name {
            names::CONFIG_DUMP | names::SPEC_DUMP | names::DESCRIPTORS => {
                Some(Keep::Whole(self.limits.max_metadata_bytes))
            }
            // Runtimes move CRIU's log next to config.dump; a bare image
            // directory has it inside.
            names::DUMP_LOG | "checkpoint/dump.log" => Some(Keep::Head(LOG_HEAD_BYTES)),
            "stats-dump"
            | "checkpoint/stats-dump"
            | "checkpoint/pstree.img"
            | "checkpoint/inventory.img" => Some(image),
            n if n.starts_with("checkpoint/core-") && n.ends_with(".img") => Some(image),
            _ => None,
        }
    }
}

impl Sink for ScanSink {
    fn directory(&mut self, _entry: &Entry) -> Result<(), ArchiveError> {
        Ok(())
    }

    fn file(&mut self, entry: &Entry, data: &mut dyn Read) -> Result<(), ArchiveError> {
        let name = entry.path.to_string_lossy();
        let size = entry.header.size;
        if name.starts_with("checkpoint/") {
            self.sizes.checkpoint_bytes += size;
            if name.starts_with("checkpoint/pages-") {
                self.sizes.pages_bytes += size;
            }
            if name.starts_with("checkpoint/tcp-stream-") && name.ends_with(".img") {
                self.sizes.tcp_streams += 1;
            }
        }
        if name == names::ROOTFS_DIFF {
            self.sizes.rootfs_diff_bytes = size;
        }
        let Some(keep) = self.keep(&name) else {
            return Ok(());
        };
        let want = match keep {
            Keep::Whole(cap) if size > cap => {
                self.warnings
                    .push(format!("{name} not read: {size} bytes, more than {cap}"));
                return Ok(());
            }
            Keep::Whole(_) => size,
            Keep::Head(n) => size.min(n),
        };
        if self.kept_bytes + want > self.limits.max_scan_memory_bytes {
            self.warnings.push(format!(
                "{name} not read: the scan already holds {} bytes in memory",
                self.kept_bytes
            ));
            return Ok(());
        }
        let mut buf = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
        data.take(want)
            .read_to_end(&mut buf)
            .map_err(ArchiveError::from_read)?;
        self.kept_bytes += want;
        if self.kept.insert(name, buf).is_some() {
            return Err(ArchiveError::Duplicate {
                entry: entry.name.clone(),
            });
        }
        Ok(())
    }

    fn other(&mut self, entry: &Entry) -> Result<(), ArchiveError> {
        Err(ArchiveError::KindNotAllowed {
            entry: entry.name.clone(),
            kind: entry.header.kind.describe(),
        })
    }
}

fn build(
    mut sink: ScanSink,
    digest: ArchiveDigest,
    counts: EntryCounts,
) -> Result<ArchiveSummary, ArchiveError> {
    let mut take = |name: &str| sink.kept.remove(name);
    let required = |bytes: Option<Vec<u8>>, name: &str| {
        bytes.ok_or_else(|| MetadataError::Missing {
            file: name.to_string(),
        })
    };
    let config = metadata::parse_config(&required(take(names::CONFIG_DUMP), names::CONFIG_DUMP)?)?;
    let spec = metadata::parse_spec(&required(take(names::SPEC_DUMP), names::SPEC_DUMP)?)?;
    let descriptors = take(names::DESCRIPTORS)
        .map(|b| metadata::parse_descriptors(&b))
        .transpose()?;
    let criu_version = spec.criu_version().or_else(|| {
        take(names::DUMP_LOG)
            .or_else(|| take("checkpoint/dump.log"))
            .and_then(|log| metadata::criu_version_from_log(&log))
    });
    let inventory_bytes = take("checkpoint/inventory.img");
    let stats_bytes = take("stats-dump").or_else(|| take("checkpoint/stats-dump"));
    let pstree_bytes = take("checkpoint/pstree.img");

    let mut warnings = std::mem::take(&mut sink.warnings);
    let mut note = |what: &str, err: MetadataError| warnings.push(format!("{what}: {err}"));
    let inventory = inventory_bytes.and_then(|b| {
        criu_image::parse_inventory(&b)
            .map_err(|e| note("inventory", e))
            .ok()
    });
    let dump_stats = stats_bytes.and_then(|b| {
        criu_image::parse_dump_stats(&b)
            .map_err(|e| note("dump statistics", e))
            .ok()
            .flatten()
    });
    let mut comms = BTreeMap::new();
    for (name, bytes) in &sink.kept {
        let Some(pid) = name
            .strip_prefix("checkpoint/core-")
            .and_then(|n| n.strip_suffix(".img"))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        match criu_image::parse_core_comm(name, bytes) {
            Ok(Some(comm)) => {
                comms.insert(pid, comm);
            }
            Ok(None) => {}
            Err(e) => note("process name", e),
        }
    }
    let processes = match pstree_bytes {
        Some(b) => match criu_image::parse_pstree(&b) {
            Ok(entries) => criu_image::process_tree(&entries, &comms),
            Err(e) => {
                note("process tree", e);
                Vec::new()
            }
        },
        None => {
            warnings.push("process tree: checkpoint/pstree.img is missing".into());
            Vec::new()
        }
    };
    Ok(ArchiveSummary {
        archive: digest,
        counts,
        sizes: sink.sizes,
        pod: spec.identity(),
        criu_version,
        process: spec.process.clone(),
        namespaces: spec.namespaces().to_vec(),
        mounts: policy::review(&spec),
        container: config,
        descriptors,
        inventory,
        dump_stats,
        processes,
        warnings,
    })
}
