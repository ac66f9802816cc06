//! CRIU: the swrk RPC client, version rules, request options and log quoting.
//!
//! - [`client`]: runs `criu swrk 3` and speaks the RPC (VERSION, FEATURE_CHECK,
//!   DUMP, RESTORE, notifications with acks).
//! - [`version`]: version numbers as runc compares them.
//! - [`options`]: the `criu_opts` of runc's RESTORE and DUMP requests.
//! - [`json`]: a request's options as JSON keyed by rpc.proto field names.
//! - [`log`]: the lines around each error in CRIU's log file.
//! - [`ops`]: whole DUMP and RESTORE calls on an images directory.

pub mod client;
pub mod json;
pub mod log;
pub mod ops;
pub mod options;
pub mod version;

use std::io;
use std::path::PathBuf;

pub use client::{
    Criu, CriuCall, DumpOutcome, IgnoreNotifications, Notification, NotifyHandler, Restored,
};
pub use version::CriuVersion;

/// A boxed error from a notification handler.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors of talking to CRIU.
#[derive(Debug, thiserror::Error)]
pub enum CriuError {
    /// The CRIU binary could not be started.
    #[error("cannot start {binary}: {cause}", binary = .binary.display())]
    Spawn {
        /// The binary run.
        binary: PathBuf,
        /// Why it did not start.
        cause: io::Error,
    },
    /// A socket or wait call on the RPC channel failed.
    #[error("criu rpc: {0}")]
    Io(io::Error),
    /// CRIU closed the channel before answering (runc's wording).
    #[error("unexpected EOF")]
    UnexpectedEof,
    /// A message from CRIU could not be decoded, or made no sense.
    #[error("unable to parse the response {0}")]
    Protocol(String),
    /// CRIU answered with `success = false` (runc's wording; runc ignores
    /// `cr_errmsg`, the log quote carries the details).
    #[error("criu failed: type {kind} errno {errno}")]
    Failed {
        /// The response type, e.g. `RESTORE`.
        kind: String,
        /// `cr_errno` (0 when CRIU sent none).
        errno: i32,
        /// CRIU's own message, if it sent one.
        message: Option<String>,
    },
    /// A notification handler failed; CRIU was not acked and aborts.
    #[error("{0}")]
    Handler(HandlerError),
    /// CRIU exited with a failure after answering (runc's wording).
    #[error("criu failed: {0}")]
    Exit(std::process::ExitStatus),
    /// A call needs a newer CRIU.
    #[error(transparent)]
    TooOld(#[from] version::VersionTooOld),
    /// CRIU lacks features the caller asked for (runc's wording).
    #[error("criu is missing features: [{}]", .0.join(" "))]
    MissingFeatures(Vec<&'static str>),
    /// An error that happened while CRIU worked on a request, with the lines
    /// around each error in CRIU's log file appended.
    #[error("{error}{log}")]
    WithLog {
        /// The error.
        error: Box<CriuError>,
        /// Quoted log lines, each starting with a newline.
        log: String,
    },
}

impl CriuError {
    /// The error itself, without any log quote around it.
    pub fn inner(&self) -> &CriuError {
        match self {
            Self::WithLog { error, .. } => error.inner(),
            other => other,
        }
    }
}

impl From<io::Error> for CriuError {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}
