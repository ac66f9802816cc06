//! Private per-operation directories: where a checkpoint's images are dumped or
//! an archive is extracted, mode 0700, unique, removed when the operation ends.
//!
//! Removal never crosses a mount point: a restore bind-mounts the container's
//! root filesystem inside its directory (`criu-root`), and a recursive removal
//! through a mount that failed to go would delete the root filesystem's files.
//! [`PrivateDir::remove`] therefore refuses while anything is mounted below it.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Mode of a private directory.
pub const PRIVATE_MODE: u32 = 0o700;

/// Errors of creating or removing a private directory.
#[derive(Debug, thiserror::Error)]
pub enum WorkDirError {
    /// A file operation failed.
    #[error("{action} {path}: {source}", path = .path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Something is still mounted below the directory, so it was left in place.
    #[error("{path} still has mounts below it ({}); it was not removed", .mounts.join(", "), path = .path.display())]
    Mounted {
        /// The directory.
        path: PathBuf,
        /// The mount points found below it.
        mounts: Vec<String>,
    },
}

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// A directory only root can enter, created fresh under a parent and removed
/// (once nothing is mounted below it) by [`PrivateDir::remove`] or on drop.
#[derive(Debug)]
pub struct PrivateDir {
    path: PathBuf,
    removed: bool,
}

impl PrivateDir {
    /// Creates `<parent>/<prefix>-<pid>-<unique>` with mode 0700. `parent` is
    /// created (0700) if missing.
    pub fn create(parent: &Path, prefix: &str) -> Result<Self, WorkDirError> {
        DirBuilder::new()
            .recursive(true)
            .mode(PRIVATE_MODE)
            .create(parent)
            .map_err(|source| WorkDirError::Io {
                action: "creating",
                path: parent.to_owned(),
                source,
            })?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        loop {
            let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
            let path = parent.join(format!("{prefix}-{}-{nanos:08x}{seq}", std::process::id()));
            match DirBuilder::new().mode(PRIVATE_MODE).create(&path) {
                Ok(()) => {
                    let dir = Self {
                        path,
                        removed: false,
                    };
                    // The umask may have taken bits away; make the mode exact.
                    fs::set_permissions(&dir.path, Permissions::from_mode(PRIVATE_MODE)).map_err(
                        |source| WorkDirError::Io {
                            action: "setting the mode of",
                            path: dir.path.clone(),
                            source,
                        },
                    )?;
                    return Ok(dir);
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => {
                    return Err(WorkDirError::Io {
                        action: "creating",
                        path,
                        source,
                    });
                }
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the directory and everything in it, unless something is mounted
    /// below it. Idempotent.
    pub fn remove(&mut self) -> Result<(), WorkDirError> {
        if self.removed {
            return Ok(());
        }
        let mounts = mounts_below(&self.path);
        if !mounts.is_empty() {
            return Err(WorkDirError::Mounted {
                path: self.path.clone(),
                mounts,
            });
        }
        match fs::remove_dir_all(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(WorkDirError::Io {
                    action: "removing",
                    path: self.path.clone(),
                    source,
                });
            }
        }
        self.removed = true;
        Ok(())
    }
}

impl PrivateDir {
    /// Gives up removing the directory (after a failed [`PrivateDir::remove`]
    /// was reported) and returns its path.
    pub fn leave(mut self) -> PathBuf {
        self.removed = true;
        std::mem::take(&mut self.path)
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(err) = self.remove() {
            tracing::warn!("{err}");
        }
    }
}

/// Mount points of this process's mount namespace at or below `dir`.
pub fn mounts_below(dir: &Path) -> Vec<String> {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    mount_points_below(&info, dir)
}

/// The mount points (field 5 of each mountinfo line, octal escapes decoded) at
/// or below `dir`.
pub fn mount_points_below(mountinfo: &str, dir: &Path) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|point| Path::new(point).starts_with(dir))
        .collect()
}

/// Decodes the `\ooo` escapes mountinfo uses for space, tab, newline and `\`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let value = bytes[i + 1..i + 4]
                .iter()
                .fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(value).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn private_unique_and_removed() {
        let parent = tempfile::tempdir().unwrap();
        let nested = parent.path().join("work");
        let mut a = PrivateDir::create(&nested, "restore").unwrap();
        let b = PrivateDir::create(&nested, "restore").unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(fs::metadata(a.path()).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(fs::metadata(&nested).unwrap().mode() & 0o777, 0o700);
        fs::create_dir(a.path().join("sub")).unwrap();
        fs::write(a.path().join("sub/file"), b"x").unwrap();
        let path = a.path().to_owned();
        a.remove().unwrap();
        a.remove().unwrap();
        assert!(!path.exists());
        let b_path = b.path().to_owned();
        drop(b);
        assert!(!b_path.exists());
    }

    #[test]
    fn mountinfo_points_below_a_directory() {
        let info = "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
90 22 254:0 /var/tmp/root /var/lib/podrestore/work/restore-1/criu-root rw shared:1 - ext4 /dev/vda rw
91 22 0:4 net:[4026532243] /var/lib/podrestore/work/restore-10/net rw - nsfs nsfs rw
92 22 0:50 / /var/lib/podrestore/work/restore-1/with\\040space rw - tmpfs tmpfs rw
";
        let dir = Path::new("/var/lib/podrestore/work/restore-1");
        assert_eq!(
            mount_points_below(info, dir),
            [
                "/var/lib/podrestore/work/restore-1/criu-root",
                "/var/lib/podrestore/work/restore-1/with space"
            ]
        );
        assert!(mount_points_below(info, Path::new("/srv")).is_empty());
    }
}
