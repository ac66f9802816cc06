//! The checkpointed container's writable layer, carried over to the target
//! container's root file system before CRIU restores (a restored process may
//! hold files open that only exist there).
//!
//! The layer (`rootfs-diff.tar`, an OCI layer, gzip-compressed in containerd's
//! archives despite its name) and CRI-O's `deleted.files` are applied with the
//! archive module's safe layer application ([`crate::archive::layer`]), into
//! the target's root as the agent sees it. One more rule is needed because the
//! target container is running: the agent's view of its root file system has
//! no mounts on it, but the container's own view does (`/etc/hosts`,
//! `/dev/termination-log`, volumes). Replacing or removing a path that is a
//! mount point in another mount namespace silently detaches that mount there,
//! so every entry at a mount destination of the target, below one, or that
//! would replace a directory holding one, is left out and reported. Those paths
//! belong to the runtime, which sets them up for the target as it did for the
//! checkpointed container.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::archive::layer::{self, LayerOptions, Specials};
use crate::archive::metadata::{self, names};
use crate::archive::{ArchiveError, EntryName, EntryPath, Limits};

/// What applying the layer did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootfsReport {
    /// Whether the archive had a layer.
    pub layer: bool,
    /// Entries applied.
    pub applied: u64,
    /// Paths removed by whiteouts and `deleted.files`.
    pub removed: u64,
    /// Entries left out, with why.
    pub skipped: Vec<String>,
}

/// Errors while carrying the layer over.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    /// The archive or the layer could not be read.
    #[error("reading the checkpoint's {what}: {source}")]
    Read {
        /// Which part.
        what: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The layer could not be applied.
    #[error("applying the checkpoint's {file}: {0}", file = names::ROOTFS_DIFF)]
    Apply(#[from] ArchiveError),
}

fn read_error(what: &'static str) -> impl Fn(io::Error) -> RootfsError {
    move |source| RootfsError::Read { what, source }
}

/// How a layer entry relates to the target's mount destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Nowhere near a mount: applied.
    Free,
    /// A directory on the way to a mount destination: applied (an existing
    /// directory is kept, only its mode changes).
    AncestorDirectory,
    /// At, below, or replacing the way to a mount destination: left out.
    Mounted,
}

/// Where `path` (relative to the root, as a layer names it) lies with respect
/// to `destinations` (absolute mount destinations of the target).
/// `is_directory` says whether the entry is a plain directory; whiteouts are
/// judged by the path they remove, opaque markers by their directory.
pub fn placement(path: &str, is_directory: bool, destinations: &[String]) -> Placement {
    let mut parts = components(path);
    let mut directory = is_directory;
    if let Some(last) = parts.last().cloned() {
        if last == ".wh..wh..opq" {
            // Empties its directory: as if that directory were replaced.
            parts.pop();
            directory = false;
        } else if let Some(target) = last.strip_prefix(".wh.") {
            parts.pop();
            parts.push(target.to_owned());
            directory = false;
        }
    }
    if parts.is_empty() {
        // The root itself (or an opaque marker at the top): it would empty
        // everything that is mounted on.
        return if directory {
            Placement::AncestorDirectory
        } else {
            Placement::Mounted
        };
    }
    let mut placement = Placement::Free;
    for destination in destinations {
        let dest = components(destination);
        if dest.is_empty() {
            continue;
        }
        if parts.starts_with(&dest) {
            return Placement::Mounted;
        }
        if dest.starts_with(&parts) {
            if !directory {
                return Placement::Mounted;
            }
            placement = Placement::AncestorDirectory;
        }
    }
    placement
}

fn components(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .map(str::to_owned)
        .collect()
}

/// A reader over `input`, gunzipped when it starts with gzip's magic bytes.
fn maybe_gzip<'a, R: Read + 'a>(input: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::new(input);
    let head = buffered.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Copies the layer read from `layer` into a new tar at `out`, leaving out
/// entries [`placement`] marks as mounted; returns what was left out.
fn filter_layer(
    layer: impl Read,
    out: &Path,
    destinations: &[String],
    limits: &Limits,
) -> Result<Vec<String>, RootfsError> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(read_error("filtered layer"))?;
    let mut builder = tar::Builder::new(file);
    builder.follow_symlinks(false);
    let mut archive = tar::Archive::new(maybe_gzip(layer).map_err(read_error(names::ROOTFS_DIFF))?);
    let mut skipped = Vec::new();
    for entry in archive.entries().map_err(read_error(names::ROOTFS_DIFF))? {
        let mut entry = entry.map_err(read_error(names::ROOTFS_DIFF))?;
        let path = entry.path_bytes().into_owned();
        // The layer code checks every path again when it applies the copy;
        // checked here too, an entry that could leave the root is refused as
        // the archive's fault instead of failing to be copied.
        checked_path(&path, limits)?;
        let path_text = String::from_utf8_lossy(&path).into_owned();
        let kind = entry.header().entry_type();
        if placement(&path_text, kind.is_dir(), destinations) == Placement::Mounted {
            skipped.push(path_text);
            continue;
        }
        let mut header = entry.header().clone();
        let path = PathBuf::from(path_text);
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(read_error(names::ROOTFS_DIFF))?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            if kind.is_hard_link() {
                checked_path(target.as_os_str().as_encoded_bytes(), limits)?;
            }
            builder
                .append_link(&mut header, &path, &target)
                .map_err(read_error("filtered layer"))?;
        } else {
            builder
                .append_data(&mut header, &path, &mut entry)
                .map_err(read_error("filtered layer"))?;
        }
    }
    builder.into_inner().map_err(read_error("filtered layer"))?;
    Ok(skipped)
}

/// Refuses a layer path (or hard link target) that is absolute, has a `..`
/// component or breaks a limit, with the archive module's own error.
fn checked_path(raw: &[u8], limits: &Limits) -> Result<(), ArchiveError> {
    EntryPath::parse(raw, limits)
        .map(drop)
        .map_err(|problem| ArchiveError::Path {
            entry: EntryName(raw.to_vec()),
            problem,
        })
}

/// Applies the writable layer and `deleted.files` of the checkpoint archive
/// `archive` to `root`, leaving out what lies at the target's mount
/// `destinations` (see the module documentation). `scratch` is a private
/// directory for the filtered copy of the layer.
pub fn apply(
    archive: &Path,
    root: &Path,
    destinations: &[String],
    scratch: &Path,
    limits: &Limits,
) -> Result<RootfsReport, RootfsError> {
    let file = File::open(archive).map_err(read_error("archive"))?;
    let mut outer = tar::Archive::new(maybe_gzip(file).map_err(read_error("archive"))?);
    let mut report = RootfsReport::default();
    let filtered = scratch.join("rootfs-diff.filtered.tar");
    let mut deleted = None;
    for entry in outer.entries().map_err(read_error("archive"))? {
        let entry = entry.map_err(read_error("archive"))?;
        let path = entry.path_bytes();
        let name = String::from_utf8_lossy(&path);
        let name = name.trim_start_matches("./");
        if name == names::ROOTFS_DIFF && !report.layer {
            report.layer = true;
            let filtering = filter_layer(entry, &filtered, destinations, limits);
            if filtering.is_err() {
                let _ = std::fs::remove_file(&filtered);
            }
            report.skipped = filtering?;
        } else if name == names::DELETED_FILES && deleted.is_none() {
            let mut bytes = Vec::new();
            entry
                .take(limits.max_metadata_bytes)
                .read_to_end(&mut bytes)
                .map_err(read_error(names::DELETED_FILES))?;
            deleted = Some(bytes);
        }
    }
    if report.layer {
        let options = LayerOptions {
            specials: Specials::Skip,
            preserve_ownership: true,
        };
        let applied = layer::apply_layer_file(&filtered, root, limits, &options);
        let _ = std::fs::remove_file(&filtered);
        let applied = applied?;
        report.applied = applied.counts.files + applied.counts.directories + applied.counts.others;
        report.removed = applied.whiteouts;
        report.skipped.extend(
            applied
                .skipped
                .into_iter()
                .map(|s| format!("{} ({})", s.path, s.kind)),
        );
    }
    if let Some(bytes) = deleted {
        let paths = metadata::parse_deleted_files(&bytes).map_err(ArchiveError::from)?;
        let (kept, left): (Vec<String>, Vec<String>) = paths
            .into_iter()
            .partition(|p| placement(p, false, destinations) != Placement::Mounted);
        report.skipped.extend(left);
        report.removed += layer::remove_deleted_files(root, &kept, limits)?;
    }
    Ok(report)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::archive::PathProblem;

    fn dests() -> Vec<String> {
        [
            "/etc/hosts",
            "/dev",
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "/proc",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    }

    #[test]
    fn entries_near_mounts() {
        let d = dests();
        assert_eq!(placement("tmp/count", false, &d), Placement::Free);
        assert_eq!(placement("./tmp/", true, &d), Placement::Free);
        assert_eq!(placement("etc/hosts", false, &d), Placement::Mounted);
        assert_eq!(placement("etc/", true, &d), Placement::AncestorDirectory);
        assert_eq!(
            placement("etc", false, &d),
            Placement::Mounted,
            "a file replacing etc/"
        );
        assert_eq!(placement("etc/hostname", false, &d), Placement::Free);
        assert_eq!(
            placement("dev/termination-log", false, &d),
            Placement::Mounted
        );
        assert_eq!(
            placement("var/run/secrets/kubernetes.io/serviceaccount/", true, &d),
            Placement::Mounted
        );
        assert_eq!(
            placement("var/run/", true, &d),
            Placement::AncestorDirectory
        );
        assert_eq!(placement("etc/.wh.hosts", false, &d), Placement::Mounted);
        assert_eq!(placement("etc/.wh.passwd", false, &d), Placement::Free);
        assert_eq!(placement("etc/.wh..wh..opq", false, &d), Placement::Mounted);
        assert_eq!(placement("tmp/.wh..wh..opq", false, &d), Placement::Free);
        assert_eq!(placement(".wh..wh..opq", false, &d), Placement::Mounted);
        assert_eq!(placement("./", true, &d), Placement::AncestorDirectory);
    }

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            if path.ends_with('/') {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder.append_data(&mut header, path, &b""[..]).unwrap();
            } else {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                header.set_size(data.len() as u64);
                builder.append_data(&mut header, path, *data).unwrap();
            }
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn applies_the_layer_but_not_over_mounts() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hosts"), b"target's").unwrap();
        std::fs::write(root.join("gone"), b"x").unwrap();
        let inner = layer(&[
            ("etc/", b""),
            ("etc/hosts", b"source's"),
            ("tmp/", b""),
            ("tmp/count", b"7\n"),
            (".wh.gone", b""),
        ]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &inner).unwrap();
        let outer = layer(&[
            ("rootfs-diff.tar", &gz.finish().unwrap()),
            ("spec.dump", b"{}"),
        ]);
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, outer).unwrap();
        let scratch = dir.path().join("scratch");
        std::fs::create_dir(&scratch).unwrap();

        let report = apply(&archive, &root, &dests(), &scratch, &Limits::default()).unwrap();
        assert!(report.layer);
        assert_eq!(report.skipped, ["etc/hosts"]);
        assert_eq!(report.removed, 1);
        assert_eq!(std::fs::read(root.join("tmp/count")).unwrap(), b"7\n");
        assert_eq!(std::fs::read(root.join("etc/hosts")).unwrap(), b"target's");
        assert!(!root.join("gone").exists());
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    }

    /// An outer archive holding `layer` as its `rootfs-diff.tar`.
    fn with_layer(dir: &Path, inner: Vec<u8>) -> PathBuf {
        let archive = dir.join("a.tar");
        let outer = layer(&[("rootfs-diff.tar", &inner[..]), ("spec.dump", b"{}")]);
        std::fs::write(&archive, outer).unwrap();
        archive
    }

    /// A layer with one entry whose raw name is `name` (the tar crate's
    /// builder refuses to write such names itself).
    fn raw_layer(name: &[u8], kind: tar::EntryType, link: &[u8]) -> Vec<u8> {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(0);
        header.set_cksum();
        let mut bytes = header.as_bytes().to_vec();
        bytes.extend_from_slice(&[0; 1024]);
        bytes
    }

    #[test]
    fn entries_leaving_the_root_are_the_archive_s_fault() {
        let cases: [(&[u8], tar::EntryType, &[u8], PathProblem); 4] = [
            (
                b"../outside",
                tar::EntryType::Regular,
                b"",
                PathProblem::Escapes,
            ),
            (
                b"/etc/outside",
                tar::EntryType::Regular,
                b"",
                PathProblem::Absolute,
            ),
            (
                b"tmp/../../x",
                tar::EntryType::Regular,
                b"",
                PathProblem::Escapes,
            ),
            (
                b"tmp/link",
                tar::EntryType::Link,
                b"../../etc/shadow",
                PathProblem::Escapes,
            ),
        ];
        for (name, kind, link, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let root = dir.path().join("root");
            std::fs::create_dir(&root).unwrap();
            let archive = with_layer(dir.path(), raw_layer(name, kind, link));
            let scratch = dir.path().join("scratch");
            std::fs::create_dir(&scratch).unwrap();
            let err = apply(&archive, &root, &dests(), &scratch, &Limits::default()).unwrap_err();
            match err {
                RootfsError::Apply(ArchiveError::Path { problem, .. }) => {
                    assert_eq!(problem, expected, "{}", String::from_utf8_lossy(name));
                }
                other => panic!("{}: {other}", String::from_utf8_lossy(name)),
            }
            assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
            assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
        }
    }

    #[test]
    fn an_archive_without_a_layer_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let archive = dir.path().join("a.tar");
        std::fs::write(&archive, layer(&[("spec.dump", b"{}")])).unwrap();
        let report = apply(
            &archive,
            dir.path(),
            &dests(),
            dir.path(),
            &Limits::default(),
        )
        .unwrap();
        assert_eq!(report, RootfsReport::default());
    }
}
