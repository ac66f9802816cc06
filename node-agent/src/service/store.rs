//! The at-most-once record of every restore, one JSON file per PodRestore UID under the
//! agent's state directory.
//!
//! A record is written (and synced) before the engine starts, so after a crash the agent
//! knows the restore may have begun and never starts it again; the result is written when
//! the engine returns and replayed to every later request with the same UID.

use std::{
    fs, io,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::engine::RestoreOutcome;

/// Where records live below the state directory.
const RECORDS_DIR: &str = "restores";
/// Where per-restore work directories live below the state directory.
const WORK_DIR: &str = "work";

/// Errors of the record store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing a file failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What the store was doing.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// A record file does not parse.
    #[error("record {path} is corrupt: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: serde_json::Error,
    },
}

/// Where a restore stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordState {
    /// The engine was started and has not returned (or the agent stopped before it did).
    Running,
    /// The engine restored the tree.
    Succeeded,
    /// The engine failed, or the restore was interrupted.
    Failed,
}

/// A failed restore, as reported to callers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// Stable CamelCase reason.
    pub reason: String,
    /// What went wrong.
    pub message: String,
    /// The tail of CRIU's log.
    #[serde(default)]
    pub log_excerpt: String,
}

/// Cleanup of a restore: once requested, Restore is refused for the UID.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleanup {
    /// When cleanup was first asked for.
    pub requested_at: SystemTime,
    /// Whether it finished without errors.
    pub completed: bool,
}

/// Everything the agent keeps about one restore.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// UID of the PodRestore.
    pub uid: String,
    /// Namespace of the PodRestore.
    pub namespace: String,
    /// Name of the PodRestore.
    pub name: String,
    /// SHA-256 of the first request's encoding; a later request must match it.
    pub fingerprint: String,
    /// Where the restore stands.
    pub state: RecordState,
    /// The per-restore work directory.
    pub work_dir: PathBuf,
    /// When the engine was started.
    pub started_at: SystemTime,
    /// When the engine returned.
    #[serde(default)]
    pub finished_at: Option<SystemTime>,
    /// Set when the state is `Succeeded`.
    #[serde(default)]
    pub outcome: Option<RestoreOutcome>,
    /// Set when the state is `Failed`.
    #[serde(default)]
    pub failure: Option<Failure>,
    /// Set once cleanup was requested.
    #[serde(default)]
    pub cleanup: Option<Cleanup>,
}

impl Record {
    /// Marks the record finished with the engine's result.
    pub fn finish(&mut self, result: Result<RestoreOutcome, Failure>, at: SystemTime) {
        self.finished_at = Some(at);
        match result {
            Ok(outcome) => {
                self.state = RecordState::Succeeded;
                self.outcome = Some(outcome);
            }
            Err(failure) => {
                self.state = RecordState::Failed;
                self.failure = Some(failure);
            }
        }
    }
}

/// The record files of one agent.
#[derive(Debug, Clone)]
pub struct Store {
    records: PathBuf,
    work: PathBuf,
}

impl Store {
    /// Opens (and creates, mode 0700) the store below `state_dir`.
    pub fn open(state_dir: &Path) -> Result<Self, StoreError> {
        let records = state_dir.join(RECORDS_DIR);
        let work = state_dir.join(WORK_DIR);
        for dir in [&records, &work] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| StoreError::Io {
                    action: "create",
                    path: dir.clone(),
                    source,
                })?;
        }
        Ok(Self { records, work })
    }

    /// The work directory of `uid` (not created).
    pub fn work_dir(&self, uid: &str) -> PathBuf {
        self.work.join(uid)
    }

    fn path(&self, uid: &str) -> PathBuf {
        self.records.join(format!("{uid}.json"))
    }

    /// Loads the record of `uid`, if any. `uid` must be validated (it names a file).
    pub fn load(&self, uid: &str) -> Result<Option<Record>, StoreError> {
        let path = self.path(uid);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    action: "read",
                    path,
                    source,
                });
            }
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { path, source })
    }

    /// Writes `record` durably: a temporary file, fsync, rename over the old one, fsync of
    /// the directory. A crash leaves either the old or the new record, never a torn one.
    pub fn save(&self, record: &Record) -> Result<(), StoreError> {
        let path = self.path(&record.uid);
        let tmp = self.records.join(format!(".{}.json.tmp", record.uid));
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| StoreError::Io {
                action,
                path,
                source,
            }
        };
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io_err("create", &tmp))?;
        file.write_all(&bytes).map_err(io_err("write", &tmp))?;
        file.sync_all().map_err(io_err("sync", &tmp))?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        fs::File::open(&self.records)
            .and_then(|dir| dir.sync_all())
            .map_err(io_err("sync", &self.records))?;
        Ok(())
    }

    /// Every record in the store. Unparsable files are reported, not skipped silently.
    pub fn list(&self) -> Result<Vec<Result<Record, StoreError>>, StoreError> {
        let entries = fs::read_dir(&self.records).map_err(|source| StoreError::Io {
            action: "list",
            path: self.records.clone(),
            source,
        })?;
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|source| StoreError::Io {
                action: "list",
                path: self.records.clone(),
                source,
            })?;
            let name = entry.file_name();
            let Some(uid) = name.to_str().and_then(|n| n.strip_suffix(".json")) else {
                continue;
            };
            if uid.starts_with('.') {
                continue;
            }
            match self.load(uid) {
                Ok(Some(record)) => out.push(Ok(record)),
                Ok(None) => {}
                Err(err) => out.push(Err(err)),
            }
        }
        Ok(out)
    }

    /// Deletes records whose cleanup completed more than `retention` ago; returns how many.
    /// Until then they keep refusing late Restore requests for their UID.
    pub fn prune(&self, now: SystemTime, retention: Duration) -> Result<usize, StoreError> {
        let mut pruned = 0;
        for record in self.list()?.into_iter().flatten() {
            let Some(cleanup) = &record.cleanup else {
                continue;
            };
            let old = now
                .duration_since(cleanup.requested_at)
                .is_ok_and(|age| age > retention);
            if cleanup.completed && old {
                let path = self.path(&record.uid);
                fs::remove_file(&path).map_err(|source| StoreError::Io {
                    action: "remove",
                    path,
                    source,
                })?;
                pruned += 1;
            }
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(uid: &str) -> Record {
        Record {
            uid: uid.into(),
            namespace: "team-a".into(),
            name: "restore-1".into(),
            fingerprint: "f".into(),
            state: RecordState::Running,
            work_dir: PathBuf::from("/w"),
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(10),
            finished_at: None,
            outcome: None,
            failure: None,
            cleanup: None,
        }
    }

    #[test]
    fn save_load_roundtrip_and_overwrite() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        assert_eq!(store.load("a")?, None);
        let mut r = record("a");
        store.save(&r)?;
        assert_eq!(store.load("a")?, Some(r.clone()));
        r.finish(
            Ok(RestoreOutcome {
                pid: 42,
                ..RestoreOutcome::default()
            }),
            SystemTime::UNIX_EPOCH + Duration::from_secs(20),
        );
        store.save(&r)?;
        let loaded = store.load("a")?.ok_or("record vanished")?;
        assert_eq!(loaded.state, RecordState::Succeeded);
        assert_eq!(loaded.outcome.map(|o| o.pid), Some(42));
        // A reopened store (agent restart) sees the same record.
        let reopened = Store::open(dir.path())?;
        assert_eq!(reopened.list()?.len(), 1);
        Ok(())
    }

    #[test]
    fn corrupt_records_are_reported() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        fs::write(dir.path().join("restores/b.json"), b"{not json")?;
        assert!(matches!(store.load("b"), Err(StoreError::Corrupt { .. })));
        assert_eq!(store.list()?.len(), 1);
        Ok(())
    }

    #[test]
    fn prune_keeps_recent_and_unfinished_tombstones() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = Store::open(dir.path())?;
        let day = Duration::from_secs(86_400);
        let now = SystemTime::UNIX_EPOCH + 30 * day;
        let cases = [
            ("old-done", Some((now - 10 * day, true)), false),
            ("old-failed-cleanup", Some((now - 10 * day, false)), true),
            ("recent-done", Some((now - day, true)), true),
            ("never-cleaned", None, true),
        ];
        for (uid, cleanup, _) in &cases {
            let mut r = record(uid);
            r.cleanup = cleanup.map(|(requested_at, completed)| Cleanup {
                requested_at,
                completed,
            });
            store.save(&r)?;
        }
        assert_eq!(store.prune(now, 7 * day)?, 1);
        for (uid, _, kept) in cases {
            assert_eq!(store.load(uid)?.is_some(), kept, "{uid}");
        }
        Ok(())
    }
}
