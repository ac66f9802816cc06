//! The agent's gRPC service (`podrestore.agent.v1alpha1.Agent`), served over mutual TLS
//! to the operator.
//!
//! - [`engine`]: the [`RestoreEngine`] seam to the code that restores.
//! - [`store`]: the at-most-once record per PodRestore UID.
//! - [`validate`]: the checks every request passes again on the node.
//! - [`tls`]: the server's TLS configuration and the client-name check.
//! - [`server`]: the listener, TLS handshakes and the tonic server.
//! - [`transfer`]: archives pulled from another node's agent.

pub mod engine;
pub mod metrics;
pub mod server;
pub mod store;
pub mod tls;
pub mod transfer;
pub mod validate;

use std::{
    collections::HashMap,
    os::unix::fs::DirBuilderExt,
    path::PathBuf,
    pin::Pin,
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use futures::Stream;
use prost::Message;
use sha2::{Digest, Sha256};
use tokio::sync::{Mutex, broadcast, mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{error, info, warn};

use podrestore_proto::agent::{self as pb, agent_server::Agent};

pub use engine::{
    ArchiveInfo, EngineError, EngineErrorKind, ManageCgroupsMode, NetworkLock, Phase,
    ProgressReporter, RestoreEngine, RestoreJob, RestoreOptions, RestoreOutcome, Target,
    UnavailableEngine,
};
use metrics::Metrics;
use store::{Cleanup, Failure, Record, RecordState, Store, StoreError};

/// Cleaned-up records are kept this long to refuse late Restore requests for their UID.
const TOMBSTONE_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// Reason of a restore the agent cannot account for after a restart.
const INTERRUPTED: &str = "Interrupted";

/// Errors while starting the service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The record store could not be opened or read.
    #[error("state directory: {0}")]
    Store(#[from] StoreError),
    /// A checkpoint directory does not exist or cannot be resolved.
    #[error("checkpoint directory {path}: {source}")]
    CheckpointDir {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// Settings of the service.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The node this agent serves.
    pub node_name: String,
    /// The directory for records and work directories.
    pub state_dir: PathBuf,
    /// Directories archives must lie in.
    pub checkpoint_dirs: Vec<PathBuf>,
}

/// The gRPC service. Cheap to clone.
#[derive(Clone)]
pub struct AgentService {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<dyn RestoreEngine>,
    store: Store,
    node_name: String,
    checkpoint_dirs: Vec<PathBuf>,
    metrics: Metrics,
    /// Restores whose engine call has not returned, by UID. Its lock also orders record
    /// creation, so two requests for one UID cannot both start the engine.
    runs: Mutex<HashMap<String, Run>>,
    /// The identity this agent presents to peer agents when it pulls an archive.
    peer_tls: std::sync::RwLock<Option<tls::TlsFiles>>,
    /// Changes pulled chunks on their way in, to prove the digest check.
    #[cfg(test)]
    chunk_hook: std::sync::RwLock<Option<ChunkHook>>,
}

#[cfg(test)]
type ChunkHook = Arc<dyn Fn(&mut pb::FetchArchiveChunk) + Send + Sync>;

#[derive(Clone)]
struct Run {
    fingerprint: String,
    events: broadcast::Sender<pb::RestoreEvent>,
    done: watch::Receiver<Option<pb::RestoreResult>>,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RestoreEvent, Status>> + Send>>;

/// The interceptor every call passes first.
type Interceptor = fn(Request<()>) -> Result<Request<()>, Status>;

/// The service wrapped in its interceptor, ready for a tonic server.
pub type GrpcServer = tonic::service::interceptor::InterceptedService<
    pb::agent_server::AgentServer<AgentService>,
    Interceptor,
>;

impl AgentService {
    /// Opens the record store, settles restores a previous agent process left running (the
    /// engine may prove they completed; otherwise they are recorded as interrupted and
    /// never run again) and prunes old tombstones.
    pub async fn start(
        engine: Arc<dyn RestoreEngine>,
        config: ServiceConfig,
        metrics: Metrics,
    ) -> Result<Self, ServiceError> {
        let store = Store::open(&config.state_dir)?;
        let checkpoint_dirs = config
            .checkpoint_dirs
            .iter()
            .map(|dir| {
                std::fs::canonicalize(dir).map_err(|source| ServiceError::CheckpointDir {
                    path: dir.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        for entry in store.list()? {
            let mut record = match entry {
                Ok(record) => record,
                Err(err) => {
                    error!(error = %err, "unreadable restore record; requests for its UID are refused");
                    continue;
                }
            };
            if record.state != RecordState::Running {
                continue;
            }
            let result = match engine.recover(&record.uid, &record.work_dir).await {
                Ok(Some(outcome)) => Ok(outcome),
                Ok(None) => Err(interrupted(None)),
                Err(err) => Err(interrupted(Some(&err))),
            };
            info!(uid = %record.uid, recovered = result.is_ok(), "settled a restore left running by a previous agent");
            record.finish(result, SystemTime::now());
            store.save(&record)?;
        }
        let pruned = store.prune(SystemTime::now(), TOMBSTONE_RETENTION)?;
        if pruned > 0 {
            info!(pruned, "pruned old cleaned-up restore records");
        }
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                store,
                node_name: config.node_name,
                checkpoint_dirs,
                metrics,
                runs: Mutex::new(HashMap::new()),
                peer_tls: std::sync::RwLock::new(None),
                #[cfg(test)]
                chunk_hook: std::sync::RwLock::new(None),
            }),
        })
    }

    /// Waits until no restore runs, or `limit` passed; returns how many still run. Used at
    /// shutdown so that a restore in flight can record its result instead of being settled
    /// as interrupted by the next agent process.
    pub async fn wait_idle(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let running = self.inner.runs.lock().await.len();
            if running == 0 || Instant::now() >= deadline {
                return running;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sets the certificate, key and CA bundle this agent uses to pull archives from peer
    /// agents (its own serving files: the agents' certificate carries client-auth usage).
    pub fn set_peer_tls(&self, files: tls::TlsFiles) {
        match self.inner.peer_tls.write() {
            Ok(mut guard) => *guard = Some(files),
            Err(poisoned) => *poisoned.into_inner() = Some(files),
        }
    }

    /// Refuses a call from a peer agent: peers may only fetch archives. The TLS layer
    /// already admitted the caller as the operator or as an agent.
    fn operator_only<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let agent = match tls::dns_name(&tls::agent_server_name(&self.inner.node_name)) {
            Ok(name) => name,
            Err(err) => return Err(Status::internal(err.to_string())),
        };
        let is_agent = request
            .peer_certs()
            .and_then(|certs| certs.first().cloned())
            .is_some_and(|leaf| {
                rustls::server::ParsedCertificate::try_from(&leaf)
                    .is_ok_and(|parsed| rustls::client::verify_server_name(&parsed, &agent).is_ok())
            });
        if is_agent {
            return Err(Status::permission_denied(
                "peer agents may only call FetchArchive",
            ));
        }
        Ok(())
    }

    /// The tonic server for this service, refusing every call that did not come with a
    /// client certificate (defence in depth behind the TLS handshake's own check).
    pub fn into_server(self) -> GrpcServer {
        pb::agent_server::AgentServer::with_interceptor(
            self,
            require_client_certificate as Interceptor,
        )
    }
}

/// Refuses calls without a TLS client certificate.
fn require_client_certificate(request: Request<()>) -> Result<Request<()>, Status> {
    match request.peer_certs() {
        Some(certs) if !certs.is_empty() => Ok(request),
        _ => Err(Status::unauthenticated(
            "the agent serves only callers that present a client certificate (mutual TLS)",
        )),
    }
}

fn interrupted(err: Option<&EngineError>) -> Failure {
    let mut message =
        "the agent stopped while this restore ran and cannot tell whether it completed; it is not run again"
            .to_owned();
    if let Some(err) = err {
        message.push_str(&format!(" (recovery failed: {err})"));
    }
    Failure {
        reason: INTERRUPTED.into(),
        message,
        log_excerpt: String::new(),
    }
}

/// The idempotency fingerprint: what the PodRestore's spec decides. The target's pod UID,
/// container name and container ID are left out: the operator resolves them from the pod
/// when it starts, and may no longer be able to when it resumes (the pod may be gone).
fn fingerprint(request: &pb::RestoreRequest) -> String {
    let mut stable = request.clone();
    // The source agent's address may change (a restarted pod); the node and path decide.
    if let Some(pb::checkpoint_source::Source::RemoteArchive(remote)) =
        stable.checkpoint.as_mut().and_then(|c| c.source.as_mut())
    {
        remote.endpoint.clear();
    }
    if let Some(target) = stable.target.as_mut() {
        target.pod_uid.clear();
        target.container_name.clear();
        target.container_id.clear();
    }
    hex::encode(Sha256::digest(stable.encode_to_vec()))
}

fn store_error(err: StoreError) -> Status {
    error!(error = %err, "restore record store failed");
    Status::internal(format!("agent state: {err}"))
}

fn engine_status(err: EngineError) -> Status {
    Status::new(err.kind.code(), err.message)
}

fn result_of(record: &Record, replayed: bool) -> pb::RestoreResult {
    let outcome = match (&record.outcome, &record.failure) {
        (Some(o), _) => Some(pb::restore_result::Outcome::Success(pb::RestoreSuccess {
            container_id: o.container_id.clone(),
            pid: o.pid,
            archive: Some(pb::ArchiveDigest {
                sha256: o.archive_sha256.clone(),
                size: o.archive_size,
            }),
            criu_version: o.criu_version.clone(),
        })),
        (None, Some(f)) => Some(pb::restore_result::Outcome::Failure(pb::RestoreFailure {
            reason: f.reason.clone(),
            message: f.message.clone(),
            log_excerpt: f.log_excerpt.clone(),
        })),
        (None, None) => None,
    };
    pb::RestoreResult {
        outcome,
        replayed,
        started_at: Some(record.started_at.into()),
        finished_at: record.finished_at.map(Into::into),
    }
}

fn result_event(result: pb::RestoreResult) -> pb::RestoreEvent {
    pb::RestoreEvent {
        event: Some(pb::restore_event::Event::Result(result)),
    }
}

/// Waits until a run has its result; `None` if the run ended without one.
async fn wait_result(
    done: &mut watch::Receiver<Option<pb::RestoreResult>>,
) -> Option<pb::RestoreResult> {
    // The guard is not `Send`: clone out of it before anything else is awaited.
    match done.wait_for(Option::is_some).await {
        Ok(guard) => guard.clone(),
        Err(_) => None,
    }
}

/// A stream that forwards a run's progress and ends with its result.
fn watch_run(run: &Run) -> EventStream {
    let mut events = run.events.subscribe();
    let mut done = run.done.clone();
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                result = wait_result(&mut done) => {
                    let item = result
                        .map(result_event)
                        .ok_or_else(|| Status::internal("the restore task ended without a result"));
                    let _ = tx.send(item).await;
                    return;
                }
                event = events.recv() => match event {
                    Ok(event) => {
                        if tx.send(Ok(event)).await.is_err() {
                            // The caller went away; the restore goes on regardless.
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {
                        // Only the result is left to wait for.
                        let result = wait_result(&mut done).await;
                        let item = result
                            .map(result_event)
                            .ok_or_else(|| Status::internal("the restore task ended without a result"));
                        let _ = tx.send(item).await;
                        return;
                    }
                },
            }
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

fn replay(record: &Record) -> EventStream {
    let event = result_event(result_of(record, true));
    Box::pin(tokio_stream::once(Ok(event)))
}

impl Inner {
    /// Runs the engine for a new record, saves the result and wakes every watcher.
    async fn run(
        self: Arc<Self>,
        mut record: Record,
        job: RestoreJob,
        remote: Option<transfer::Remote>,
        events: broadcast::Sender<pb::RestoreEvent>,
        done: watch::Sender<Option<pb::RestoreResult>>,
    ) {
        let uid = record.uid.clone();
        let started = Instant::now();
        let engine = self.engine.clone();
        let reporter = ProgressReporter::new(events.clone());
        let pulled = match &remote {
            Some(remote) => self.pull(remote, &job, &reporter).await,
            None => Ok(()),
        };
        // Its own task, so that a panicking engine still ends in a recorded failure.
        let handle = tokio::spawn(async move {
            pulled?;
            engine
                .restore(job, reporter)
                .await
                .map_err(RunError::Engine)
        });
        let result = match handle.await {
            Ok(Ok(outcome)) => Ok(outcome),
            Ok(Err(RunError::Engine(err))) => Err(Failure {
                reason: err.kind.reason().to_owned(),
                message: err.message,
                log_excerpt: err.log_excerpt.unwrap_or_default(),
            }),
            Ok(Err(RunError::Transfer(err))) => Err(Failure {
                reason: err.reason().to_owned(),
                message: err.to_string(),
                log_excerpt: String::new(),
            }),
            Err(join) => Err(Failure {
                reason: EngineErrorKind::Internal.reason().to_owned(),
                message: format!("the restore engine crashed: {join}"),
                log_excerpt: String::new(),
            }),
        };
        let reason = match &result {
            Ok(_) => "Succeeded".to_owned(),
            Err(f) => f.reason.clone(),
        };
        self.metrics.observe_restore(&reason, started.elapsed());
        match &result {
            Ok(o) => info!(%uid, pid = o.pid, "restore succeeded"),
            Err(f) => warn!(%uid, reason = %f.reason, message = %f.message, "restore failed"),
        }
        record.finish(result, SystemTime::now());
        if let Err(err) = self.store.save(&record) {
            // The result still reaches the callers now; after a restart the record reads
            // as running and is settled as interrupted, never run again.
            error!(%uid, error = %err, "cannot record the restore result");
        }
        let mut runs = self.runs.lock().await;
        done.send_replace(Some(result_of(&record, false)));
        runs.remove(&uid);
    }
}

/// Why a run ended before or in the engine.
enum RunError {
    Transfer(transfer::TransferError),
    Engine(EngineError),
}

impl Inner {
    /// Pulls a remote archive to `job.archive`, reporting bytes as transfer progress.
    async fn pull(
        &self,
        remote: &transfer::Remote,
        job: &RestoreJob,
        reporter: &ProgressReporter,
    ) -> Result<(), RunError> {
        let files = match self.peer_tls.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        let Some(files) = files else {
            return Err(RunError::Transfer(transfer::TransferError::Protocol(
                "this agent has no TLS identity for pulling from peer agents".into(),
            )));
        };
        reporter.phase(
            Phase::Transferring,
            format!("pulling {} from node {}", remote.path, remote.node_name),
        );
        #[allow(unused_mut)]
        let mut fetch = transfer::grpc_fetch(remote, &files, &job.uid);
        #[cfg(test)]
        {
            let hook = match self.chunk_hook.read() {
                Ok(guard) => guard.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            if let Some(hook) = hook {
                let mut inner = fetch;
                fetch = Box::new(move |offset| {
                    let opened = inner(offset);
                    let hook = hook.clone();
                    Box::pin(async move {
                        let stream = opened.await?;
                        Ok(Box::pin(futures::StreamExt::map(stream, move |item| {
                            item.map(|mut chunk| {
                                hook(&mut chunk);
                                chunk
                            })
                        })) as transfer::ChunkStream)
                    })
                });
            }
        }
        let partial = job.work_dir.join("archive.partial");
        let progress = |done: u64, total: u64| reporter.transferred(done, total);
        let pulled = transfer::pull(remote, &mut fetch, &partial, &job.archive, &progress)
            .await
            .map_err(RunError::Transfer)?;
        info!(uid = %job.uid, node = %remote.node_name, size = pulled.size, sha256 = %pulled.sha256, "archive pulled and verified");
        reporter.phase(
            Phase::Transferring,
            format!(
                "pulled {} bytes from node {}, sha256 {} verified",
                pulled.size, remote.node_name, pulled.sha256
            ),
        );
        Ok(())
    }
}

#[tonic::async_trait]
impl Agent for AgentService {
    type FetchArchiveStream = transfer::ChunkStream;

    async fn fetch_archive(
        &self,
        request: Request<pb::FetchArchiveRequest>,
    ) -> Result<Response<Self::FetchArchiveStream>, Status> {
        let request = request.into_inner();
        let path = validate::archive_path(&request.path, &self.inner.checkpoint_dirs)?;
        info!(restore_uid = %request.restore_uid, path = %path.display(), offset = request.offset, "serving an archive to a peer");
        Ok(Response::new(transfer::serve_file(path, request.offset)))
    }

    type RestoreStream = EventStream;

    async fn version(
        &self,
        request: Request<pb::VersionRequest>,
    ) -> Result<Response<pb::VersionResponse>, Status> {
        self.operator_only(&request)?;
        let criu_version = match self.inner.engine.criu_version().await {
            Ok(version) => version,
            Err(err) => {
                warn!(error = %err, "criu version unavailable");
                String::new()
            }
        };
        Ok(Response::new(pb::VersionResponse {
            node_name: self.inner.node_name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            criu_version,
            checkpoint_dirs: self
                .inner
                .checkpoint_dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect(),
        }))
    }

    async fn inspect(
        &self,
        request: Request<pb::InspectRequest>,
    ) -> Result<Response<pb::InspectResponse>, Status> {
        self.operator_only(&request)?;
        let request = request.into_inner();
        let path = validate::source(request.checkpoint.as_ref(), &self.inner.checkpoint_dirs)?;
        let info = self
            .inner
            .engine
            .inspect(&path)
            .await
            .map_err(engine_status)?;
        Ok(Response::new(pb::InspectResponse {
            pod_namespace: info.pod_namespace,
            pod_name: info.pod_name,
            container_name: info.container_name,
            checkpointed_at: info.checkpointed_at.map(Into::into),
            size: info.size,
            sha256: info.sha256,
            criu_version: info.criu_version.unwrap_or_default(),
        }))
    }

    async fn restore(
        &self,
        request: Request<pb::RestoreRequest>,
    ) -> Result<Response<Self::RestoreStream>, Status> {
        self.operator_only(&request)?;
        let request = request.into_inner();
        let rref = request
            .restore
            .clone()
            .ok_or(validate::ValidationError::Missing { field: "restore" })?;
        validate::uid("restore.uid", &rref.uid)?;
        validate::dns_label("restore.namespace", &rref.namespace)?;
        validate::dns_subdomain("restore.name", &rref.name)?;
        let uid = rref.uid;
        let fingerprint = fingerprint(&request);
        let mismatch = || {
            Status::already_exists(format!(
                "restore {uid} was already requested with different parameters"
            ))
        };

        let mut runs = self.inner.runs.lock().await;
        if let Some(run) = runs.get(&uid) {
            if run.fingerprint != fingerprint {
                return Err(mismatch());
            }
            info!(%uid, "attaching to the running restore");
            return Ok(Response::new(watch_run(run)));
        }
        if let Some(mut record) = self.inner.store.load(&uid).map_err(store_error)? {
            if record.cleanup.is_some() {
                return Err(Status::failed_precondition(format!(
                    "restore {uid} was cleaned up; a PodRestore runs at most once"
                )));
            }
            if record.fingerprint != fingerprint {
                return Err(mismatch());
            }
            if record.state == RecordState::Running {
                // Not in `runs`: left by a process that died after `start` settled records.
                record.finish(Err(interrupted(None)), SystemTime::now());
                self.inner.store.save(&record).map_err(store_error)?;
            }
            info!(%uid, state = ?record.state, "replaying the recorded result");
            return Ok(Response::new(replay(&record)));
        }

        // First request for this UID: validate it all, record it, then run it.
        let work_dir = self.inner.store.work_dir(&uid);
        let remote = match request.checkpoint.as_ref().and_then(|c| c.source.as_ref()) {
            Some(pb::checkpoint_source::Source::RemoteArchive(remote)) => {
                Some(transfer::remote(remote)?)
            }
            _ => None,
        };
        let archive = match remote {
            // Pulled there before the engine runs; removed with the work directory.
            Some(_) => work_dir.join("archive.tar"),
            None => validate::source(request.checkpoint.as_ref(), &self.inner.checkpoint_dirs)?,
        };
        let target = validate::target(request.target.as_ref(), &rref.namespace)?;
        let options = validate::options(request.options.as_ref())?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&work_dir)
            .map_err(|err| Status::internal(format!("create {}: {err}", work_dir.display())))?;
        let record = Record {
            uid: uid.clone(),
            namespace: rref.namespace.clone(),
            name: rref.name.clone(),
            fingerprint: fingerprint.clone(),
            state: RecordState::Running,
            work_dir: work_dir.clone(),
            started_at: SystemTime::now(),
            finished_at: None,
            outcome: None,
            failure: None,
            cleanup: None,
        };
        self.inner.store.save(&record).map_err(store_error)?;
        let job = RestoreJob {
            uid: uid.clone(),
            namespace: rref.namespace,
            name: rref.name,
            archive,
            target,
            options,
            work_dir,
        };
        let (events, _) = broadcast::channel(64);
        let (done_tx, done_rx) = watch::channel(None);
        let run = Run {
            fingerprint,
            events: events.clone(),
            done: done_rx,
        };
        let stream = watch_run(&run);
        let _ = events.send(pb::RestoreEvent {
            event: Some(pb::restore_event::Event::Progress(pb::Progress {
                phase: pb::Phase::Accepted.into(),
                message: format!("restore recorded on node {}", self.inner.node_name),
                time: Some(SystemTime::now().into()),
                ..pb::Progress::default()
            })),
        });
        runs.insert(uid.clone(), run);
        drop(runs);
        info!(%uid, "restore started");
        tokio::spawn(self.inner.clone().run(record, job, remote, events, done_tx));
        Ok(Response::new(stream))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        self.operator_only(&request)?;
        let uid = request.into_inner().restore_uid;
        validate::uid("restore_uid", &uid)?;
        if self.inner.runs.lock().await.contains_key(&uid) {
            return Ok(Response::new(pb::StatusResponse {
                state: pb::RestoreState::Running.into(),
                ..pb::StatusResponse::default()
            }));
        }
        let Some(record) = self.inner.store.load(&uid).map_err(store_error)? else {
            return Ok(Response::new(pb::StatusResponse {
                state: pb::RestoreState::Unknown.into(),
                ..pb::StatusResponse::default()
            }));
        };
        let state = match (record.cleanup.is_some(), record.state) {
            (true, _) => pb::RestoreState::CleanedUp,
            (false, RecordState::Running) => pb::RestoreState::Running,
            (false, RecordState::Succeeded) => pb::RestoreState::Succeeded,
            (false, RecordState::Failed) => pb::RestoreState::Failed,
        };
        let process_running = match (&record.outcome, state) {
            (Some(outcome), pb::RestoreState::Succeeded) => self
                .inner
                .engine
                .is_running(&uid, outcome)
                .await
                .map_err(engine_status)?,
            _ => false,
        };
        Ok(Response::new(pb::StatusResponse {
            state: state.into(),
            result: (record.state != RecordState::Running).then(|| result_of(&record, true)),
            process_running,
        }))
    }

    async fn cleanup(
        &self,
        request: Request<pb::CleanupRequest>,
    ) -> Result<Response<pb::CleanupResponse>, Status> {
        self.operator_only(&request)?;
        let uid = request.into_inner().restore_uid;
        validate::uid("restore_uid", &uid)?;
        // Wait for a running restore to end, then mark the record so that no Restore for
        // this UID starts afterwards.
        let mut record = loop {
            let runs = self.inner.runs.lock().await;
            if let Some(run) = runs.get(&uid) {
                let mut done = run.done.clone();
                drop(runs);
                info!(%uid, "cleanup waits for the running restore to end");
                let _ = wait_result(&mut done).await;
                continue;
            }
            let now = SystemTime::now();
            let mut record = match self.inner.store.load(&uid).map_err(store_error)? {
                Some(record) => record,
                None => Record {
                    uid: uid.clone(),
                    namespace: String::new(),
                    name: String::new(),
                    fingerprint: String::new(),
                    state: RecordState::Failed,
                    work_dir: self.inner.store.work_dir(&uid),
                    started_at: now,
                    finished_at: Some(now),
                    outcome: None,
                    failure: Some(Failure {
                        reason: "NotStarted".into(),
                        message: "cleanup arrived before any restore".into(),
                        log_excerpt: String::new(),
                    }),
                    cleanup: None,
                },
            };
            if record.cleanup.is_none() {
                record.cleanup = Some(Cleanup {
                    requested_at: now,
                    completed: false,
                });
                self.inner.store.save(&record).map_err(store_error)?;
            }
            break record;
        };

        let mut errors = Vec::new();
        let process_stopped = match self.inner.engine.stop(&uid, record.outcome.as_ref()).await {
            Ok(stopped) => stopped,
            Err(err) => {
                errors.push(format!("stop the restored tree: {err}"));
                false
            }
        };
        let mut removed = match self.inner.engine.cleanup(&uid).await {
            Ok(paths) => paths.iter().map(|p| p.display().to_string()).collect(),
            Err(err) => {
                errors.push(format!("engine cleanup: {err}"));
                Vec::new()
            }
        };
        match std::fs::remove_dir_all(&record.work_dir) {
            Ok(()) => removed.push(record.work_dir.display().to_string()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => errors.push(format!("remove {}: {err}", record.work_dir.display())),
        }
        if !errors.is_empty() {
            warn!(%uid, errors = ?errors, "cleanup incomplete");
            return Err(Status::internal(format!(
                "cleanup of {uid} incomplete: {}",
                errors.join("; ")
            )));
        }
        if let Some(cleanup) = record.cleanup.as_mut() {
            cleanup.completed = true;
        }
        self.inner.store.save(&record).map_err(store_error)?;
        info!(%uid, process_stopped, removed = removed.len(), "cleanup done");
        Ok(Response::new(pb::CleanupResponse {
            process_stopped,
            removed,
        }))
    }
}

#[cfg(test)]
mod tests;
