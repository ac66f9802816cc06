//! The few CRIU images `inspect` decodes: `inventory.img`, `pstree.img`,
//! `core-<pid>.img` and `stats-dump`.
//!
//! CRIU's image format (`criu/include/magic.h`, `criu/image.c`): a 32-bit
//! little-endian magic (`IMG_COMMON_MAGIC`, or `IMG_SERVICE_MAGIC` for
//! `stats-dump`) followed by the image's own magic, then entries, each a
//! 32-bit little-endian length and that many bytes of protobuf.
//! `inventory.img` carries only its own magic. The messages below declare
//! only the fields read, with CRIU's field numbers (`images/*.proto`);
//! protobuf skips the rest.

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use serde::Serialize;

use super::metadata::MetadataError;

/// Head of every image but the inventory (`magic.h`).
pub const IMG_COMMON_MAGIC: u32 = 0x5456_4319;
/// Head of service files such as `stats-dump` (`magic.h`).
pub const IMG_SERVICE_MAGIC: u32 = 0x5510_5940;
/// `inventory.img`.
pub const INVENTORY_MAGIC: u32 = 0x5831_3116;
/// `pstree.img`.
pub const PSTREE_MAGIC: u32 = 0x5027_3030;
/// `core-<pid>.img`.
pub const CORE_MAGIC: u32 = 0x5505_3847;
/// `stats-dump`.
pub const STATS_MAGIC: u32 = 0x5709_3306;

/// `pstree_entry` (`images/pstree.proto`).
#[derive(Clone, PartialEq, Message)]
pub struct PstreeEntry {
    /// Pid in the checkpointed pid namespace.
    #[prost(uint32, required, tag = "1")]
    pub pid: u32,
    /// Parent pid.
    #[prost(uint32, required, tag = "2")]
    pub ppid: u32,
    /// Process group.
    #[prost(uint32, required, tag = "3")]
    pub pgid: u32,
    /// Session.
    #[prost(uint32, required, tag = "4")]
    pub sid: u32,
    /// Thread ids.
    #[prost(uint32, repeated, packed = "false", tag = "5")]
    pub threads: Vec<u32>,
}

/// `core_entry` (`images/core.proto`), only `tc`.
#[derive(Clone, PartialEq, Message)]
struct CoreEntry {
    #[prost(message, optional, tag = "3")]
    tc: Option<TaskCoreEntry>,
}

/// `task_core_entry`, only `comm` (kept as bytes: a hostile image may hold
/// anything).
#[derive(Clone, PartialEq, Message)]
struct TaskCoreEntry {
    #[prost(bytes = "vec", optional, tag = "6")]
    comm: Option<Vec<u8>>,
}

/// `inventory_entry` (`images/inventory.proto`), the fields shown.
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Inventory {
    /// Image format version.
    #[prost(uint32, optional, tag = "1")]
    pub img_version: Option<u32>,
    /// System uptime at dump, in microseconds.
    #[prost(uint64, optional, tag = "8")]
    pub dump_uptime: Option<u64>,
}

/// `stats_entry` (`images/stats.proto`).
#[derive(Clone, PartialEq, Message)]
struct StatsEntry {
    #[prost(message, optional, tag = "1")]
    dump: Option<DumpStats>,
}

/// `dump_stats_entry`: how long the dump took and how much memory it wrote.
#[derive(Clone, PartialEq, Message, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DumpStats {
    /// Microseconds spent freezing the tree.
    #[prost(uint32, optional, tag = "1")]
    pub freezing_time: Option<u32>,
    /// Microseconds the tree was frozen.
    #[prost(uint32, optional, tag = "2")]
    pub frozen_time: Option<u32>,
    /// Microseconds spent dumping memory.
    #[prost(uint32, optional, tag = "3")]
    pub memdump_time: Option<u32>,
    /// Microseconds spent writing memory.
    #[prost(uint32, optional, tag = "4")]
    pub memwrite_time: Option<u32>,
    /// Pages scanned.
    #[prost(uint64, optional, tag = "5")]
    pub pages_scanned: Option<u64>,
    /// Pages skipped because the parent image has them.
    #[prost(uint64, optional, tag = "6")]
    pub pages_skipped_parent: Option<u64>,
    /// Pages written.
    #[prost(uint64, optional, tag = "7")]
    pub pages_written: Option<u64>,
}

/// Splits an image into its protobuf entries after checking its magic.
pub fn image_entries<'a>(
    file: &str,
    data: &'a [u8],
    magic: u32,
) -> Result<Vec<&'a [u8]>, MetadataError> {
    let bad = |reason: String| MetadataError::Image {
        file: file.to_string(),
        reason,
    };
    let word = |at: usize| -> Option<u32> {
        let bytes = data.get(at..at + 4)?;
        Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    };
    let first = word(0).ok_or_else(|| bad("shorter than its magic".into()))?;
    let (found, mut at) = if first == IMG_COMMON_MAGIC || first == IMG_SERVICE_MAGIC {
        (
            word(4).ok_or_else(|| bad("shorter than its magic".into()))?,
            8,
        )
    } else {
        (first, 4)
    };
    if found != magic {
        return Err(bad(format!("magic {found:#010x}, expected {magic:#010x}")));
    }
    let mut entries = Vec::new();
    while at < data.len() {
        let len =
            word(at).ok_or_else(|| bad(format!("truncated entry length at byte {at}")))? as usize;
        at += 4;
        let entry = data.get(at..at.saturating_add(len)).ok_or_else(|| {
            bad(format!(
                "entry of {len} bytes at byte {at} runs past the end"
            ))
        })?;
        entries.push(entry);
        at += len;
    }
    Ok(entries)
}

fn decode_one<M: Message + Default>(
    file: &str,
    data: &[u8],
    magic: u32,
) -> Result<M, MetadataError> {
    let entries = image_entries(file, data, magic)?;
    let first = entries.first().ok_or_else(|| MetadataError::Image {
        file: file.to_string(),
        reason: "no entries".into(),
    })?;
    M::decode(*first).map_err(|e| MetadataError::Image {
        file: file.to_string(),
        reason: e.to_string(),
    })
}

/// Decodes `inventory.img`.
pub fn parse_inventory(data: &[u8]) -> Result<Inventory, MetadataError> {
    decode_one("inventory.img", data, INVENTORY_MAGIC)
}

/// Decodes `stats-dump`.
pub fn parse_dump_stats(data: &[u8]) -> Result<Option<DumpStats>, MetadataError> {
    decode_one::<StatsEntry>("stats-dump", data, STATS_MAGIC).map(|s| s.dump)
}

/// Decodes `pstree.img`.
pub fn parse_pstree(data: &[u8]) -> Result<Vec<PstreeEntry>, MetadataError> {
    image_entries("pstree.img", data, PSTREE_MAGIC)?
        .into_iter()
        .map(|e| {
            PstreeEntry::decode(e).map_err(|err| MetadataError::Image {
                file: "pstree.img".into(),
                reason: err.to_string(),
            })
        })
        .collect()
}

/// The command name (`comm`) from a `core-<pid>.img`.
pub fn parse_core_comm(file: &str, data: &[u8]) -> Result<Option<String>, MetadataError> {
    let core: CoreEntry = decode_one(file, data, CORE_MAGIC)?;
    Ok(core.tc.and_then(|tc| tc.comm).map(|c| {
        String::from_utf8_lossy(&c)
            .chars()
            .filter(|c| !c.is_control())
            .collect()
    }))
}

/// One process of the checkpointed tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    /// Pid in the checkpointed pid namespace.
    pub pid: u32,
    /// Parent pid.
    pub ppid: u32,
    /// Process group.
    pub pgid: u32,
    /// Session.
    pub sid: u32,
    /// Number of threads.
    pub threads: usize,
    /// Command name, from `core-<pid>.img`, when present.
    pub comm: Option<String>,
    /// Depth in the tree; roots are 0.
    pub depth: usize,
}

/// Orders `pstree.img` entries as a depth-first walk of the process tree
/// (children in pid order) and records each one's depth. A process whose
/// parent is not in the image is a root (CRIU's root task has ppid 0).
/// The result is flat, so neither printing nor serializing it recurses, and
/// duplicates or cycles in a hostile image cannot make it loop: each pid is
/// placed once, and whatever sits in a cycle is listed as a root.
pub fn process_tree(entries: &[PstreeEntry], comms: &BTreeMap<u32, String>) -> Vec<ProcessInfo> {
    let known: BTreeSet<u32> = entries.iter().map(|e| e.pid).collect();
    let mut children: BTreeMap<u32, Vec<&PstreeEntry>> = BTreeMap::new();
    let mut roots = Vec::new();
    for e in entries {
        if e.ppid != e.pid && known.contains(&e.ppid) {
            children.entry(e.ppid).or_default().push(e);
        } else {
            roots.push(e);
        }
    }
    for list in children.values_mut() {
        list.sort_by_key(|e| e.pid);
    }
    let mut placed = BTreeSet::new();
    let mut out = Vec::with_capacity(entries.len());
    let cyclic: Vec<&PstreeEntry> = entries.iter().collect();
    for start in roots.into_iter().chain(cyclic) {
        let mut stack = vec![(start, 0usize)];
        while let Some((e, depth)) = stack.pop() {
            if !placed.insert(e.pid) {
                continue;
            }
            out.push(ProcessInfo {
                pid: e.pid,
                ppid: e.ppid,
                pgid: e.pgid,
                sid: e.sid,
                threads: e.threads.len(),
                comm: comms.get(&e.pid).cloned(),
                depth,
            });
            if let Some(kids) = children.get(&e.pid) {
                stack.extend(kids.iter().rev().map(|k| (*k, depth + 1)));
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Encodes an image the way CRIU writes one.
    pub(crate) fn image(head: &[u32], entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for m in head {
            out.extend_from_slice(&m.to_le_bytes());
        }
        for e in entries {
            out.extend_from_slice(&(e.len() as u32).to_le_bytes());
            out.extend_from_slice(e);
        }
        out
    }

    pub(crate) fn pstree(procs: &[(u32, u32, usize)]) -> Vec<u8> {
        let entries: Vec<Vec<u8>> = procs
            .iter()
            .map(|(pid, ppid, threads)| {
                PstreeEntry {
                    pid: *pid,
                    ppid: *ppid,
                    pgid: *pid,
                    sid: 1,
                    threads: (0..*threads as u32).map(|t| pid + t).collect(),
                }
                .encode_to_vec()
            })
            .collect();
        image(&[IMG_COMMON_MAGIC, PSTREE_MAGIC], &entries)
    }

    pub(crate) fn core(comm: &str) -> Vec<u8> {
        let entry = CoreEntry {
            tc: Some(TaskCoreEntry {
                comm: Some(comm.as_bytes().to_vec()),
            }),
        };
        image(&[IMG_COMMON_MAGIC, CORE_MAGIC], &[entry.encode_to_vec()])
    }

    #[test]
    fn pstree_round_trip_and_tree() {
        let data = pstree(&[(1, 0, 1), (9, 1, 1), (7, 1, 3), (12, 7, 1)]);
        let entries = parse_pstree(&data).expect("decodes");
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[2].threads, vec![7, 8, 9]);
        let comms = BTreeMap::from([(1, "sh".to_string()), (12, "sleep".to_string())]);
        let tree = process_tree(&entries, &comms);
        let order: Vec<(u32, usize)> = tree.iter().map(|p| (p.pid, p.depth)).collect();
        assert_eq!(order, [(1, 0), (7, 1), (12, 2), (9, 1)]);
        assert_eq!(tree[0].comm.as_deref(), Some("sh"));
        assert_eq!(tree[1].threads, 3);
        assert_eq!(tree[2].comm.as_deref(), Some("sleep"));
    }

    #[test]
    fn cycles_and_duplicates_terminate() {
        let entries =
            parse_pstree(&pstree(&[(2, 3, 1), (3, 2, 1), (3, 2, 1), (5, 5, 1)])).expect("decodes");
        let tree = process_tree(&entries, &BTreeMap::new());
        let mut pids: Vec<u32> = tree.iter().map(|p| p.pid).collect();
        pids.sort();
        assert_eq!(pids, [2, 3, 5]);
    }

    #[test]
    fn long_chain_is_flat() {
        let procs: Vec<(u32, u32, usize)> = (1..200_000).map(|p| (p, p - 1, 1)).collect();
        let entries = parse_pstree(&pstree(&procs)).expect("decodes");
        let tree = process_tree(&entries, &BTreeMap::new());
        assert_eq!(tree.len(), 199_999);
        assert_eq!(tree[199_998].depth, 199_998);
    }

    #[test]
    fn core_comm() {
        assert_eq!(
            parse_core_comm("core-1.img", &core("counter\u{1b}"))
                .expect("decodes")
                .as_deref(),
            Some("counter")
        );
    }

    #[test]
    fn inventory_without_common_magic() {
        let inv = Inventory {
            img_version: Some(2),
            dump_uptime: Some(123),
        };
        let data = image(&[INVENTORY_MAGIC], &[inv.encode_to_vec()]);
        assert_eq!(parse_inventory(&data).expect("decodes"), inv);
    }

    #[test]
    fn stats_with_service_magic() {
        let stats = StatsEntry {
            dump: Some(DumpStats {
                frozen_time: Some(1500),
                pages_written: Some(42),
                ..DumpStats::default()
            }),
        };
        let data = image(&[IMG_SERVICE_MAGIC, STATS_MAGIC], &[stats.encode_to_vec()]);
        let got = parse_dump_stats(&data)
            .expect("decodes")
            .expect("dump stats");
        assert_eq!(got.pages_written, Some(42));
    }

    #[test]
    fn malformed_images() {
        let table: Vec<(Vec<u8>, &str)> = vec![
            (
                vec![1, 2],
                "CRIU image pstree.img is malformed: shorter than its magic",
            ),
            (
                image(&[IMG_COMMON_MAGIC, CORE_MAGIC], &[]),
                "CRIU image pstree.img is malformed: magic 0x55053847, expected 0x50273030",
            ),
            (
                {
                    let mut d = image(&[IMG_COMMON_MAGIC, PSTREE_MAGIC], &[]);
                    d.extend_from_slice(&1000u32.to_le_bytes());
                    d.extend_from_slice(&[0; 10]);
                    d
                },
                "CRIU image pstree.img is malformed: entry of 1000 bytes at byte 12 runs past the end",
            ),
            (
                image(&[IMG_COMMON_MAGIC, PSTREE_MAGIC], &[vec![0xff, 0xff]]),
                "CRIU image pstree.img is malformed: failed to decode Protobuf message: ",
            ),
        ];
        for (data, want) in table {
            let err = parse_pstree(&data).expect_err(want).to_string();
            assert!(err.starts_with(want), "{err}");
        }
    }
}
