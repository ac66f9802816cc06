//! Whole DUMP and RESTORE calls on an images directory: build runc's options,
//! open the directories and namespace files, run CRIU, close everything.
//!
//! What runc does around these (the `criu-root` bind mount, cgroups, mounts
//! prepared inside the rootfs) is the caller's: pass `options.root` and, for
//! `cg_root`, a [`NotifyHandler::started`] hook.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::CriuError;
use super::client::{Criu, CriuCall, DumpOutcome, NotifyHandler, Restored};
use super::options::{
    DESCRIPTORS_FILE, DumpOptions, OptionsError, RestoreOptions, dump_opts, restore_plan,
};
use crate::namespaces::Namespace;
use crate::sys::Host;

/// Errors of a whole DUMP or RESTORE.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// No images directory was given (runc's wording).
    #[error("invalid directory to restore checkpoint")]
    NoRestoreDir,
    /// No images directory was given (runc's wording).
    #[error("invalid directory to save checkpoint")]
    NoDumpDir,
    /// A directory could not be created or opened.
    #[error("{path}: {cause}", path = .path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// `descriptors.json` could not be written.
    #[error("cannot write {path}: {cause}", path = .path.display())]
    Descriptors {
        /// The file.
        path: PathBuf,
        /// Why.
        cause: io::Error,
    },
    /// A rule refused the request.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// CRIU failed.
    #[error(transparent)]
    Criu(#[from] CriuError),
}

/// A RESTORE from an images directory into existing namespaces.
#[derive(Debug, Default)]
pub struct RestoreRequest {
    /// The CRIU images (with `descriptors.json` unless `options.descriptors`
    /// says otherwise).
    pub images_dir: PathBuf,
    /// Where CRIU writes `restore.log` and its other files; the images
    /// directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// The target's namespaces, in spec order.
    pub namespaces: Vec<Namespace>,
    /// Everything else; `descriptors` defaults to the images' descriptors.json.
    pub options: RestoreOptions,
    /// The restored process's stdin, stdout, stderr (CRIU's own); `/dev/null`
    /// when `None`.
    pub stdio: [Option<OwnedFd>; 3],
}

/// Restores `request` with CRIU (version number `criu_version`), following
/// runc's `Restore`; returns the restored root's host PID, which is a child of
/// this process (`rst_sibling`).
pub fn restore(
    criu: &Criu,
    criu_version: u32,
    request: RestoreRequest,
    handler: &mut dyn NotifyHandler,
) -> Result<Restored, OpError> {
    if request.images_dir.as_os_str().is_empty() {
        return Err(OpError::NoRestoreDir);
    }
    let mut options = request.options;
    if options.descriptors.is_none() {
        options.descriptors = Some(request.images_dir.join(DESCRIPTORS_FILE));
    }
    let plan = restore_plan(&Host, criu_version, &request.namespaces, &options)?;
    let images = open_dir(&request.images_dir)?;
    let work = request.work_dir.as_deref().map(make_work_dir).transpose()?;
    let mut opts = plan.opts;
    opts.images_dir_fd = images.as_raw_fd();
    opts.work_dir_fd = work.as_ref().map(AsRawFd::as_raw_fd);
    let log_dir = request.work_dir.unwrap_or(request.images_dir);
    let call = CriuCall {
        log_path: opts.log_file.as_deref().map(|name| log_dir.join(name)),
        opts,
        inherit: plan.files.iter().map(AsFd::as_fd).collect(),
        stdio: request.stdio,
    };
    Ok(criu.restore(call, handler)?)
}

/// A DUMP of a process tree into an images directory.
#[derive(Debug, Default)]
pub struct DumpRequest {
    /// Where the images go; created (0700) if missing.
    pub images_dir: PathBuf,
    /// Where CRIU writes `dump.log`; the images directory when `None`.
    pub work_dir: Option<PathBuf>,
    /// The source's namespaces, in spec order: its network and PID namespace
    /// paths become CRIU externals.
    pub namespaces: Vec<Namespace>,
    /// Everything else, including the root PID.
    pub options: DumpOptions,
}

/// Dumps `request` with CRIU (version number `criu_version`), following runc's
/// `Checkpoint`, and writes `descriptors.json` (the root's fds 0..2) next to
/// the images for the restore's pipe rule.
pub fn dump(
    criu: &Criu,
    criu_version: u32,
    request: DumpRequest,
    handler: &mut dyn NotifyHandler,
) -> Result<DumpOutcome, OpError> {
    if request.images_dir.as_os_str().is_empty() {
        return Err(OpError::NoDumpDir);
    }
    let images = make_work_dir(&request.images_dir)?;
    let work = request.work_dir.as_deref().map(make_work_dir).transpose()?;
    let mut opts = dump_opts(&Host, criu_version, &request.namespaces, &request.options)?;
    opts.images_dir_fd = images.as_raw_fd();
    opts.work_dir_fd = work.as_ref().map(AsRawFd::as_raw_fd);
    // Read before the dump: a dump without leave_running ends the process.
    let descriptors = stdio_links(request.options.pid);
    let log_dir = request
        .work_dir
        .unwrap_or_else(|| request.images_dir.clone());
    let call = CriuCall {
        log_path: opts.log_file.as_deref().map(|name| log_dir.join(name)),
        opts,
        ..Default::default()
    };
    let outcome = criu.dump(call, handler)?;
    write_descriptors(&request.images_dir.join(DESCRIPTORS_FILE), &descriptors)?;
    Ok(outcome)
}

/// runc's external descriptors: where fds 0, 1 and 2 of `pid` point
/// (`pipe:[123]`, `/dev/null`, ...); "" for one that cannot be read.
pub fn stdio_links(pid: i32) -> Vec<String> {
    (0..3)
        .map(|fd| {
            fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map(|target| target.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect()
}

fn write_descriptors(path: &Path, descriptors: &[String]) -> Result<(), OpError> {
    let fail = |cause| OpError::Descriptors {
        path: path.to_owned(),
        cause,
    };
    let json = serde_json::to_vec(descriptors).map_err(|e| fail(io::Error::other(e)))?;
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(fail)?;
    io::Write::write_all(&mut file, &json).map_err(fail)
}

fn open_dir(path: &Path) -> Result<File, OpError> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
        .map_err(|cause| OpError::Dir {
            path: path.to_owned(),
            cause,
        })
}

/// runc's work directory rule: create it 0700, an existing one is fine.
fn make_work_dir(path: &Path) -> Result<File, OpError> {
    match fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(cause) => {
            return Err(OpError::Dir {
                path: path.to_owned(),
                cause,
            });
        }
    }
    open_dir(path)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::criu::IgnoreNotifications;

    #[test]
    fn empty_dirs_use_runc_wording() {
        let criu = Criu::new("/nonexistent/criu");
        let err = restore(
            &criu,
            40201,
            RestoreRequest::default(),
            &mut IgnoreNotifications,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "invalid directory to restore checkpoint");
        let err = dump(
            &criu,
            40201,
            DumpRequest::default(),
            &mut IgnoreNotifications,
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "invalid directory to save checkpoint");
    }

    #[test]
    fn restore_needs_descriptors_like_runc() {
        let dir = tempfile::tempdir().unwrap();
        let err = restore(
            &Criu::new("/nonexistent/criu"),
            40201,
            RestoreRequest {
                images_dir: dir.path().to_owned(),
                ..Default::default()
            },
            &mut IgnoreNotifications,
        )
        .unwrap_err();
        let want = format!(
            "cannot read {}: No such file or directory (os error 2)",
            dir.path().join("descriptors.json").display()
        );
        assert_eq!(err.to_string(), want);
    }

    #[test]
    fn stdio_links_of_this_process() {
        let links = stdio_links(i32::try_from(std::process::id()).unwrap());
        assert_eq!(links.len(), 3);
    }
}
