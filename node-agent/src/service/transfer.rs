//! Moving a checkpoint archive between nodes: the source agent serves `FetchArchive`, the
//! target agent pulls into a partial file in the restore's work directory, resumes a cut
//! transfer from that file's length, checks the whole file against the sha256 the source
//! reported, and only then moves it to where the restore reads it.

use std::{
    io::{Read, Seek, SeekFrom, Write},
    path::{Component, Path, PathBuf},
    pin::Pin,
    time::Duration,
};

use futures::{Stream, StreamExt, future::BoxFuture};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tonic::Status;

use podrestore_proto::agent as pb;

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::{
    tls::{TlsFiles, agent_server_name},
    validate::{self, ValidationError},
};

/// The largest data chunk the source sends.
pub const CHUNK_SIZE: usize = 1 << 20;
/// Attempts of one pull before the transfer counts as failed.
pub const ATTEMPTS: u32 = 3;
/// Progress is reported at most once per this many bytes (and at the end).
const PROGRESS_STEP: u64 = 4 << 20;

/// Failure reason when the pulled bytes do not match the source's sha256.
pub const REASON_DIGEST_MISMATCH: &str = "ArchiveDigestMismatch";
/// Failure reason when the source agent could not deliver the archive.
pub const REASON_TRANSFER_FAILED: &str = "ArchiveTransferFailed";

/// Why a transfer failed.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The source agent refused, was unreachable or stopped in the middle, every attempt.
    #[error("fetching {path} from node {node} failed after {attempts} attempts: {last}")]
    Source {
        /// Source node.
        node: String,
        /// Archive path there.
        path: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        last: String,
    },
    /// The source broke the protocol (no header first, more bytes than announced).
    #[error("source agent broke the transfer protocol: {0}")]
    Protocol(String),
    /// The complete file's sha256 differs from the one the source reported.
    #[error(
        "archive digest mismatch: the source reported sha256 {expected}, the {size} bytes received hash to {actual}; nothing was restored"
    )]
    DigestMismatch {
        /// What the source reported.
        expected: String,
        /// What arrived.
        actual: String,
        /// Bytes received.
        size: u64,
    },
    /// Local file I/O failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl TransferError {
    /// The stable failure reason recorded for the restore.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::DigestMismatch { .. } => REASON_DIGEST_MISMATCH,
            Self::Source { .. } | Self::Protocol(_) => REASON_TRANSFER_FAILED,
            Self::Io { .. } => "Internal",
        }
    }
}

fn io_error(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TransferError {
    let path = path.to_path_buf();
    move |source| TransferError::Io { what, path, source }
}

/// A validated remote source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Remote {
    /// Source node.
    pub node_name: String,
    /// Archive path on the source node.
    pub path: String,
    /// host:port of the source node's agent.
    pub endpoint: String,
}

/// Checks a remote source's fields. The path is checked again by the source agent against
/// its own checkpoint directories.
pub fn remote(archive: &pb::RemoteArchive) -> Result<Remote, ValidationError> {
    validate::dns_subdomain("checkpoint.remote_archive.node_name", &archive.node_name)?;
    if archive.path.is_empty() {
        return Err(ValidationError::Missing {
            field: "checkpoint.remote_archive.path",
        });
    }
    let path = Path::new(&archive.path);
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(ValidationError::BadPath {
            path: archive.path.clone(),
        });
    }
    let endpoint_ok = archive
        .endpoint
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        && !archive.endpoint.contains('/');
    if !endpoint_ok {
        return Err(ValidationError::BadEndpoint {
            value: archive.endpoint.clone(),
        });
    }
    Ok(Remote {
        node_name: archive.node_name.clone(),
        path: archive.path.clone(),
        endpoint: archive.endpoint.clone(),
    })
}

/// Size and sha256 (lower-case hex) of a file, read in chunks.
pub fn digest_file(path: &Path) -> Result<(u64, String), std::io::Error> {
    let mut file = std::fs::File::open(path)?;
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hash.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hash.finalize())))
}

/// A stream of the source's answer.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::FetchArchiveChunk, Status>> + Send>>;

/// Serves `FetchArchive` for a file already validated: header, then bytes from `offset`.
/// The file is read on a blocking thread, one chunk at a time, as the receiver takes them.
pub fn serve_file(path: PathBuf, offset: u64) -> ChunkStream {
    let (tx, rx) = mpsc::channel::<Result<pb::FetchArchiveChunk, Status>>(4);
    tokio::task::spawn_blocking(move || {
        let fail =
            |err: std::io::Error| Status::internal(format!("read {}: {err}", path.display()));
        let (size, sha256) = match digest_file(&path) {
            Ok(d) => d,
            Err(err) => {
                let _ = tx.blocking_send(Err(fail(err)));
                return;
            }
        };
        if offset > size {
            let _ = tx.blocking_send(Err(Status::out_of_range(format!(
                "offset {offset} is past the archive's end ({size} bytes)"
            ))));
            return;
        }
        let header = pb::FetchArchiveChunk {
            chunk: Some(pb::fetch_archive_chunk::Chunk::Header(
                pb::FetchArchiveHeader { size, sha256 },
            )),
        };
        if tx.blocking_send(Ok(header)).is_err() {
            return;
        }
        let mut file = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(err) => {
                let _ = tx.blocking_send(Err(fail(err)));
                return;
            }
        };
        if let Err(err) = file.seek(SeekFrom::Start(offset)) {
            let _ = tx.blocking_send(Err(fail(err)));
            return;
        }
        let mut buf = vec![0u8; CHUNK_SIZE];
        loop {
            let n = match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => n,
                Err(err) => {
                    let _ = tx.blocking_send(Err(fail(err)));
                    return;
                }
            };
            let chunk = pb::FetchArchiveChunk {
                chunk: Some(pb::fetch_archive_chunk::Chunk::Data(buf[..n].to_vec())),
            };
            if tx.blocking_send(Ok(chunk)).is_err() {
                // The puller went away.
                return;
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Opens the source's stream from an offset.
pub type Fetch = Box<dyn FnMut(u64) -> BoxFuture<'static, Result<ChunkStream, Status>> + Send>;

/// Where to resume given the partial file's length and what the source announces: the
/// same length when the source's archive is unchanged and at least that long, otherwise
/// from the start (the partial bytes belong to another file).
pub fn resume_offset(
    partial_len: u64,
    previous: Option<&pb::FetchArchiveHeader>,
    header: &pb::FetchArchiveHeader,
) -> u64 {
    match previous {
        Some(prev) if prev != header => 0,
        _ if partial_len > header.size => 0,
        _ => partial_len,
    }
}

/// The outcome of a successful pull.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pulled {
    /// Size in bytes.
    pub size: u64,
    /// sha256, lower-case hex, equal to the source's.
    pub sha256: String,
    /// Bytes moved over the network (more than `size` after a restart).
    pub transferred: u64,
}

/// How one attempt ended.
enum Attempt {
    /// Every announced byte arrived.
    Complete(pb::FetchArchiveHeader),
    /// The partial file must be discarded and the pull restarted from zero.
    Restart,
}

/// Pulls the archive into `partial`, resuming from its length, and renames it to `dest`
/// once the whole file's sha256 equals the source's. `progress(done, total)` is called as
/// bytes arrive. Never leaves a file at `dest` unless it matched.
pub async fn pull(
    remote: &Remote,
    fetch: &mut Fetch,
    partial: &Path,
    dest: &Path,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<Pulled, TransferError> {
    let mut previous: Option<pb::FetchArchiveHeader> = None;
    let mut last = String::new();
    let mut transferred = 0u64;
    let mut attempts = 0u32;
    let mut restarted_after_mismatch = false;
    while attempts < ATTEMPTS {
        attempts += 1;
        let start = std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0);
        let attempt = one_attempt(
            fetch,
            partial,
            start,
            &mut previous,
            progress,
            &mut transferred,
        )
        .await;
        let header = match attempt {
            Ok(Attempt::Complete(header)) => header,
            Ok(Attempt::Restart) => {
                remove(partial)?;
                attempts -= 1;
                continue;
            }
            Err(AttemptError::Local(err)) => return Err(err),
            Err(AttemptError::Source(status)) => {
                last = format!("{}: {}", status.code(), status.message());
                tracing::warn!(node = %remote.node_name, path = %remote.path, attempt = attempts, error = %last, "archive transfer cut; resuming");
                if attempts < ATTEMPTS {
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempts))).await;
                }
                continue;
            }
        };
        let p = partial.to_path_buf();
        let (size, sha256) = tokio::task::spawn_blocking(move || digest_file(&p))
            .await
            .map_err(|err| TransferError::Protocol(format!("hash task: {err}")))?
            .map_err(io_error("hash", partial))?;
        if size == header.size && sha256 == header.sha256 {
            std::fs::rename(partial, dest).map_err(io_error("rename into place", dest))?;
            return Ok(Pulled {
                size,
                sha256,
                transferred,
            });
        }
        remove(partial)?;
        // Bytes kept from an earlier attempt may be what differs: one clean restart.
        if start > 0 && !restarted_after_mismatch {
            restarted_after_mismatch = true;
            previous = None;
            attempts -= 1;
            continue;
        }
        return Err(TransferError::DigestMismatch {
            expected: header.sha256,
            actual: sha256,
            size,
        });
    }
    Err(TransferError::Source {
        node: remote.node_name.clone(),
        path: remote.path.clone(),
        attempts,
        last,
    })
}

fn remove(path: &Path) -> Result<(), TransferError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(io_error("remove", path)(err)),
    }
}

enum AttemptError {
    Source(Status),
    Local(TransferError),
}

async fn one_attempt(
    fetch: &mut Fetch,
    partial: &Path,
    start: u64,
    previous: &mut Option<pb::FetchArchiveHeader>,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
    transferred: &mut u64,
) -> Result<Attempt, AttemptError> {
    let mut stream = fetch(start).await.map_err(AttemptError::Source)?;
    let header = match stream.next().await {
        Some(Ok(pb::FetchArchiveChunk {
            chunk: Some(pb::fetch_archive_chunk::Chunk::Header(h)),
        })) => h,
        Some(Ok(_)) => {
            return Err(AttemptError::Local(TransferError::Protocol(
                "the first message is not the header".into(),
            )));
        }
        Some(Err(status)) => return Err(AttemptError::Source(status)),
        None => {
            return Err(AttemptError::Source(Status::unavailable(
                "stream ended before the header",
            )));
        }
    };
    let offset = resume_offset(start, previous.as_ref(), &header);
    *previous = Some(header.clone());
    if offset != start {
        return Ok(Attempt::Restart);
    }
    let local = |e| AttemptError::Local(e);
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(partial)
        .map_err(|e| local(io_error("open", partial)(e)))?;
    let mut done = start;
    let mut reported = start;
    progress(done, header.size);
    while let Some(item) = stream.next().await {
        let data = match item {
            Ok(pb::FetchArchiveChunk {
                chunk: Some(pb::fetch_archive_chunk::Chunk::Data(data)),
            }) => data,
            Ok(_) => {
                return Err(local(TransferError::Protocol(
                    "a second header or an empty message".into(),
                )));
            }
            Err(status) => {
                let _ = file.flush();
                return Err(AttemptError::Source(status));
            }
        };
        if data.len() > CHUNK_SIZE || done + data.len() as u64 > header.size {
            return Err(local(TransferError::Protocol(format!(
                "more bytes than the announced {} or a chunk over 1 MiB",
                header.size
            ))));
        }
        file.write_all(&data)
            .map_err(|e| local(io_error("write", partial)(e)))?;
        done += data.len() as u64;
        *transferred += data.len() as u64;
        if done - reported >= PROGRESS_STEP {
            reported = done;
            progress(done, header.size);
        }
    }
    file.sync_all()
        .map_err(|e| local(io_error("sync", partial)(e)))?;
    progress(done, header.size);
    if done < header.size {
        return Err(AttemptError::Source(Status::unavailable(format!(
            "stream ended after {done} of {} bytes",
            header.size
        ))));
    }
    Ok(Attempt::Complete(header))
}

/// Opens `FetchArchive` streams on the source agent of `remote` over mutual TLS: the
/// target agent presents its own certificate (issued by the operator's CA for every
/// node's agent name, with client-auth usage) and expects the source's certificate to
/// name the source node's agent. The files are read at every attempt, so a rotated
/// certificate is picked up.
pub fn grpc_fetch(remote: &Remote, files: &TlsFiles, restore_uid: &str) -> Fetch {
    let remote = remote.clone();
    let files = files.clone();
    let restore_uid = restore_uid.to_owned();
    Box::new(move |offset| {
        let remote = remote.clone();
        let files = files.clone();
        let restore_uid = restore_uid.clone();
        Box::pin(async move {
            let read = |path: &Path| {
                std::fs::read(path)
                    .map_err(|err| Status::internal(format!("read {}: {err}", path.display())))
            };
            let tls = ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(read(&files.client_ca)?))
                .identity(Identity::from_pem(read(&files.cert)?, read(&files.key)?))
                .domain_name(agent_server_name(&remote.node_name));
            let channel = Endpoint::from_shared(format!("https://{}", remote.endpoint))
                .map_err(|err| Status::invalid_argument(err.to_string()))?
                .tls_config(tls)
                .map_err(|err| Status::internal(err.to_string()))?
                .connect_timeout(Duration::from_secs(10))
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(10))
                .connect()
                .await
                .map_err(|err| {
                    Status::unavailable(format!(
                        "connect to the agent of node {} at {}: {err:?}",
                        remote.node_name, remote.endpoint
                    ))
                })?;
            let stream = pb::agent_client::AgentClient::new(channel)
                .fetch_archive(pb::FetchArchiveRequest {
                    path: remote.path.clone(),
                    offset,
                    restore_uid,
                })
                .await?
                .into_inner();
            Ok(Box::pin(stream) as ChunkStream)
        })
    })
}

#[cfg(test)]
#[path = "transfer_tests.rs"]
mod tests;
