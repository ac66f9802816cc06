//! The PodCheckpoint controller: asks a pod's kubelet to checkpoint one container (the
//! kubelet checkpoint API through the API server's node proxy), records where the archive
//! lies, and has the node's agent read its digest.
//!
//! A PodCheckpoint goes: pod and container resolved → node and pod written to status →
//! kubelet asked → archive path written → agent's Inspect → `Checkpointed=True`. The archive
//! path is written the moment the kubelet answers, so a restart after that never
//! checkpoints again. A restart between asking and recording asks the kubelet once more;
//! the kubelet's first archive then stays on the node unrecorded.
//!
//! PodCheckpoints carry no finalizer: the archive outlives its PodCheckpoint, like any
//! file the kubelet writes into its checkpoint directory.

pub mod source;
pub mod status;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder},
        watcher,
    },
};
use serde_json::json;
use tracing::{debug, info, warn};

use podrestore_crds::podcheckpoint::{PodCheckpoint, PodCheckpointStatus, condition::reason};
use podrestore_proto::agent as pb;

use crate::{
    agent::{AgentError, Agents},
    controller::{FIELD_MANAGER, InFlight, backoff},
    metrics::Metrics,
    validate::Rejection,
};

/// Retry while the pod is missing or not running yet.
const POD_RETRY: Duration = Duration::from_secs(15);
/// Retry of a request that names a container the pod does not have.
const SLOW_RETRY: Duration = Duration::from_secs(300);
/// Added to the kubelet's own timeout for the API call.
const KUBELET_MARGIN: Duration = Duration::from_secs(30);

/// Errors of a reconcile; each counts under its [`Error::metric_label`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("kubernetes api: {0}")]
    Kube(#[source] kube::Error),
    /// The kubelet could not be reached through the API server; the operator retries.
    #[error("kubelet checkpoint api on node {node}: {source}")]
    Kubelet {
        /// The node.
        node: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The agent could not be reached or failed transiently.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// A PodCheckpoint without a namespace (cannot happen for a namespaced kind).
    #[error("PodCheckpoint has no namespace")]
    NoNamespace,
}

impl Error {
    /// A short stable label for the error counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubeApi",
            Self::Kubelet { .. } => "KubeletCheckpoint",
            Self::Agent(_) => "AgentRpc",
            Self::NoNamespace => "NoNamespace",
        }
    }
}

/// What every reconcile gets.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes events on PodCheckpoints.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// The agents.
    pub agents: Arc<dyn Agents>,
    /// Consecutive failures per PodCheckpoint UID, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Reconciles running now.
    in_flight: AtomicUsize,
}

impl Context {
    /// A context.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Metrics,
        agents: Arc<dyn Agents>,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            agents,
            failures: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// How many PodCheckpoint reconciles run now (see the PodRestore controller's
    /// `Context::in_flight` for why shutdown counts them itself).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        match self.failures.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Publishes an event; failing to is logged, never fatal.
    async fn event(&self, pc: &PodCheckpoint, type_: EventType, reason: &str, note: String) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note.chars().take(1000).collect()),
            action: "Checkpoint".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &pc.object_ref(&())).await {
            warn!(error = %err, reason, "cannot publish event");
        }
    }
}

async fn patch_status(
    api: &Api<PodCheckpoint>,
    name: &str,
    status: &PodCheckpointStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": "podrestore.io/v1alpha1",
        "kind": "PodCheckpoint",
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

/// Whether the kubelet's (or the proxy's) answer is final: it answered and asking again
/// would fail the same way. Unavailable and throttled answers are retried.
fn is_final(err: &kube::Error) -> bool {
    match err {
        kube::Error::Api(status) => !matches!(status.code, 429 | 502 | 503 | 504),
        _ => false,
    }
}

/// Reconciles one PodCheckpoint.
pub async fn reconcile(pc: Arc<PodCheckpoint>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    let _running = InFlight::start(&ctx.in_flight);
    let uid = pc.uid().unwrap_or_default();
    let result = apply(pc, ctx.clone()).await;
    if result.is_ok() {
        ctx.failures().remove(&uid);
    }
    result
}

/// Counts the error and retries with the PodRestore controller's backoff.
pub fn error_policy(pc: Arc<PodCheckpoint>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(error.metric_label());
    let attempt = {
        let mut failures = ctx.failures();
        let n = failures.entry(pc.uid().unwrap_or_default()).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(attempt);
    warn!(podcheckpoint = %pc.name_any(), error = %error, attempt, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// Takes (or finishes recording) the checkpoint.
pub async fn apply(pc: Arc<PodCheckpoint>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = pc.namespace().ok_or(Error::NoNamespace)?;
    let name = pc.name_any();
    let generation = pc.metadata.generation;
    let api: Api<PodCheckpoint> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut status = pc.status.clone().unwrap_or_default();
    if status::is_finished(&status) {
        return Ok(Action::await_change());
    }

    if status.archive_path.is_none() {
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let pod = pods.get_opt(&pc.spec.pod_name).await.map_err(Error::Kube)?;
        let source = match status::source(&pc, pod.as_ref()) {
            Ok(source) => source,
            Err(rejection) => return wait(&api, &ctx, &pc, status, rejection).await,
        };
        status::checkpointing(&mut status, &source, generation, Timestamp::now());
        patch_status(&api, &name, &status).await?;

        let timeout = pc.spec.timeout_seconds.max(1);
        let request = axum::http::Request::post(status::kubelet_path(&source, timeout))
            .body(Vec::new())
            .map_err(|err| Error::Kube(kube::Error::HttpError(err)))?;
        let call = ctx.client.request::<serde_json::Value>(request);
        let limit = Duration::from_secs(u64::try_from(timeout).unwrap_or(60)) + KUBELET_MARGIN;
        let reply = match tokio::time::timeout(limit, call).await {
            Ok(Ok(reply)) => reply,
            Ok(Err(err)) if is_final(&err) => {
                let message = format!(
                    "the kubelet on node {} did not checkpoint container {} of pod {}/{}: {err}",
                    source.node, source.container, namespace, pc.spec.pod_name
                );
                return fail(&api, &ctx, &pc, status, message).await;
            }
            Ok(Err(source_err)) => {
                return Err(Error::Kubelet {
                    node: source.node,
                    source: source_err,
                });
            }
            Err(_) => {
                let message = format!(
                    "the kubelet on node {} did not answer within {limit:?}",
                    source.node
                );
                return fail(&api, &ctx, &pc, status, message).await;
            }
        };
        let Some(path) = status::archive_path(&reply) else {
            let message = format!("the kubelet's answer names no archive: {reply}");
            return fail(&api, &ctx, &pc, status, message).await;
        };
        info!(podcheckpoint = %name, node = %source.node, %path, "kubelet wrote the checkpoint");
        status::written(&mut status, path, generation, Timestamp::now());
        patch_status(&api, &name, &status).await?;
    }

    let node = status.node_name.clone().unwrap_or_default();
    let path = status.archive_path.clone().unwrap_or_default();
    let inspected = ctx
        .agents
        .inspect(
            &node,
            pb::InspectRequest {
                checkpoint: Some(pb::CheckpointSource {
                    source: Some(pb::checkpoint_source::Source::LocalArchive(
                        pb::LocalArchive { path: path.clone() },
                    )),
                }),
            },
        )
        .await;
    match inspected {
        Ok(info) => {
            status::recorded(&mut status, &info, generation, Timestamp::now());
            patch_status(&api, &name, &status).await?;
            let note = format!(
                "archive {path} on node {node}: {} bytes, sha256 {}",
                info.size, info.sha256
            );
            ctx.event(&pc, EventType::Normal, reason::CHECKPOINT_SUCCEEDED, note)
                .await;
            Ok(Action::await_change())
        }
        Err(err) if err.is_refusal() => {
            let message = format!("the agent on node {node} cannot read {path}: {err}");
            fail(&api, &ctx, &pc, status, message).await
        }
        Err(err) => {
            if status::agent_unavailable(
                &mut status,
                format!("the archive {path} is written; {err}"),
                generation,
                Timestamp::now(),
            ) {
                patch_status(&api, &name, &status).await?;
                ctx.event(
                    &pc,
                    EventType::Warning,
                    reason::AGENT_UNAVAILABLE,
                    err.to_string(),
                )
                .await;
            }
            Err(err.into())
        }
    }
}

/// The checkpoint cannot start yet: record why and look again later.
async fn wait(
    api: &Api<PodCheckpoint>,
    ctx: &Context,
    pc: &PodCheckpoint,
    mut status: PodCheckpointStatus,
    rejection: Rejection,
) -> Result<Action, Error> {
    if status::waiting(
        &mut status,
        &rejection,
        pc.metadata.generation,
        Timestamp::now(),
    ) {
        patch_status(api, &pc.name_any(), &status).await?;
        ctx.event(
            pc,
            EventType::Warning,
            rejection.reason,
            rejection.message.clone(),
        )
        .await;
    }
    let pod_dependent = matches!(
        rejection.reason,
        reason::POD_NOT_FOUND | reason::POD_NOT_RUNNING
    );
    Ok(Action::requeue(if pod_dependent {
        POD_RETRY
    } else {
        SLOW_RETRY
    }))
}

/// The checkpoint failed for good: record it and stop.
async fn fail(
    api: &Api<PodCheckpoint>,
    ctx: &Context,
    pc: &PodCheckpoint,
    mut status: PodCheckpointStatus,
    message: String,
) -> Result<Action, Error> {
    status::failed(
        &mut status,
        message.clone(),
        pc.metadata.generation,
        Timestamp::now(),
    );
    patch_status(api, &pc.name_any(), &status).await?;
    ctx.event(pc, EventType::Warning, reason::CHECKPOINT_FAILED, message)
        .await;
    Ok(Action::await_change())
}

/// Runs the controller on the PodCheckpoints of `namespace` (all when `None`) until
/// `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<PodCheckpoint> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Controller::new(api, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(podcheckpoint = %object.name, "reconciled"),
                Err(err) => debug!(error = %err, "reconcile loop"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests;
