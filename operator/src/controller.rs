//! The PodRestore controller: one `finalizer()` call per reconcile, dispatching to an
//! idempotent [`apply`] and a [`cleanup`] that tolerates apply never having run.
//!
//! A PodRestore goes: checked (target pod, node, source namespace through the agent's
//! Inspect) → `status.startTime` written → the agent's Restore streamed to its end → final
//! status. Once `startTime` is written the request is never checked again, only resumed:
//! the agent keys every restore by the PodRestore's UID and answers a repeated request with
//! the first one's result, so an operator restart in the middle never restores twice.

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
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{
        Controller,
        controller::Action,
        events::{Event, EventType, Recorder},
        finalizer::{Event as Finalizer, finalizer},
        watcher,
    },
};
use serde_json::json;
use tracing::{debug, info, warn};

use podrestore_crds::v1alpha1::{
    ArchiveSource, CheckpointOrigin, ManageCgroupsMode, NetworkLock, PodRestore, PodRestoreStatus,
};
use podrestore_proto::agent as pb;

use crate::{
    agent::{AgentError, Agents},
    metrics::Metrics,
    status::{self, Acceptance, Outcome},
    validate::{self, Rejection},
};

/// The finalizer that keeps a PodRestore until its agent cleaned up.
pub const FINALIZER: &str = "podrestore.io/cleanup";
/// The one field manager of every status write.
pub const FIELD_MANAGER: &str = "podrestore-operator";

/// Reasons of events that are not also condition reasons.
pub mod event_reason {
    /// The agent was asked to restore.
    pub const RESTORE_STARTED: &str = "RestoreStarted";
    /// The agent stopped the restored tree (if it ran) and removed its files.
    pub const CLEANED_UP: &str = "CleanedUp";
    /// Deletion went ahead without the agent (its node is gone, or it stayed away).
    pub const CLEANUP_SKIPPED: &str = "CleanupSkipped";
}

/// Retry of a refusal that depends on the target pod (it may start running).
const POD_RETRY: Duration = Duration::from_secs(15);
/// Retry of other refusals (they change only with the cluster's configuration).
const SLOW_RETRY: Duration = Duration::from_secs(300);
/// Deleting a PodRestore whose node has no agent waits this long for one to come back.
const AGENT_GONE_GRACE: Duration = Duration::from_secs(300);
/// Added to the restore's own timeout for the gRPC deadline.
const RESTORE_DEADLINE_MARGIN: Duration = Duration::from_secs(120);

/// Errors of a reconcile; each counts under its [`Error::metric_label`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("kubernetes api: {0}")]
    Kube(#[source] kube::Error),
    /// Adding or removing the finalizer failed, or apply/cleanup failed inside it.
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// The agent could not be reached or failed transiently.
    #[error(transparent)]
    Agent(#[from] AgentError),
    /// The agent's stream ended before the result.
    #[error("the agent on node {node} ended the restore stream without a result")]
    StreamEnded {
        /// The node.
        node: String,
    },
    /// A PodRestore without a namespace (cannot happen for a namespaced kind).
    #[error("PodRestore has no namespace")]
    NoNamespace,
}

impl Error {
    /// A short stable label for the error counter.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "KubeApi",
            Self::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.metric_label(),
                _ => "Finalizer",
            },
            Self::Agent(AgentError::NoAgent { .. }) => "NoAgent",
            Self::Agent(AgentError::NotReady { .. }) => "AgentNotReady",
            Self::Agent(AgentError::Connect { .. }) => "AgentConnect",
            Self::Agent(AgentError::Lookup { .. }) => "AgentLookup",
            Self::Agent(AgentError::Rpc { .. }) => "AgentRpc",
            Self::StreamEnded { .. } => "StreamEnded",
            Self::NoNamespace => "NoNamespace",
        }
    }
}

/// What every reconcile gets.
pub struct Context {
    /// Kubernetes client.
    pub client: Client,
    /// Publishes events on PodRestores.
    pub recorder: Recorder,
    /// Metrics.
    pub metrics: Metrics,
    /// The agents.
    pub agents: Arc<dyn Agents>,
    /// Namespaces whose checkpoints any PodRestore may restore.
    pub allowed_source_namespaces: Vec<String>,
    /// Consecutive failures per PodRestore UID, for the error backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// Reconciles running now.
    in_flight: AtomicUsize,
}

/// Counts a running reconcile while alive.
pub(crate) struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    /// Counts one more running reconcile until the guard is dropped.
    pub(crate) fn start(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Context {
    /// A context.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Metrics,
        agents: Arc<dyn Agents>,
        allowed_source_namespaces: Vec<String>,
    ) -> Self {
        Self {
            client,
            recorder,
            metrics,
            agents,
            allowed_source_namespaces,
            failures: Mutex::new(HashMap::new()),
            in_flight: AtomicUsize::new(0),
        }
    }

    /// How many reconciles run now. At shutdown the operator waits for this to reach zero
    /// (the controller's own graceful shutdown can wait forever when it is asked to stop
    /// before its first list completed).
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
    async fn event(
        &self,
        pr: &PodRestore,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate_note(note)),
            action: action.to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&event, &pr.object_ref(&())).await {
            warn!(error = %err, reason, "cannot publish event");
        }
    }
}

/// Events notes are limited to 1 kB.
fn truncate_note(mut note: String) -> String {
    if note.len() > 1000 {
        let mut cut = 997;
        while !note.is_char_boundary(cut) {
            cut -= 1;
        }
        note.truncate(cut);
        note.push_str("...");
    }
    note
}

/// Reconciles one PodRestore.
pub async fn reconcile(pr: Arc<PodRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_timer();
    let _running = InFlight::start(&ctx.in_flight);
    let namespace = pr.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<PodRestore> = Api::namespaced(ctx.client.clone(), &namespace);
    let uid = pr.uid().unwrap_or_default();
    let result = finalizer(&api, FINALIZER, pr, |event| async {
        match event {
            Finalizer::Apply(pr) => apply(pr, ctx.clone()).await,
            Finalizer::Cleanup(pr) => cleanup(pr, ctx.clone()).await,
        }
    })
    .await
    .map_err(|err| Error::Finalizer(Box::new(err)));
    if result.is_ok() {
        ctx.failures().remove(&uid);
    }
    result
}

/// Counts the error and retries with exponential backoff per PodRestore (5 s doubling to
/// 5 min).
pub fn error_policy(pr: Arc<PodRestore>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(error.metric_label());
    let uid = pr.uid().unwrap_or_default();
    let attempt = {
        let mut failures = ctx.failures();
        let n = failures.entry(uid).or_insert(0);
        *n = n.saturating_add(1);
        *n
    };
    let delay = backoff(attempt);
    warn!(podrestore = %pr.name_any(), error = %error, attempt, retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}

/// The delay before retry `attempt` (1-based).
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(6);
    Duration::from_secs(5 * (1 << exp)).min(Duration::from_secs(300))
}

async fn patch_status(
    api: &Api<PodRestore>,
    name: &str,
    status: &PodRestoreStatus,
) -> Result<(), Error> {
    let patch = json!({
        "apiVersion": "podrestore.io/v1alpha1",
        "kind": "PodRestore",
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

fn source(archive: &ArchiveSource) -> pb::CheckpointSource {
    pb::CheckpointSource {
        source: Some(pb::checkpoint_source::Source::LocalArchive(
            pb::LocalArchive {
                path: archive.path.clone(),
            },
        )),
    }
}

/// An archive on another node: the target node's agent pulls it from the agent at
/// `endpoint` on the archive's node.
fn remote_source(archive: &ArchiveSource, endpoint: String) -> pb::CheckpointSource {
    pb::CheckpointSource {
        source: Some(pb::checkpoint_source::Source::RemoteArchive(
            pb::RemoteArchive {
                node_name: archive.node_name.clone(),
                path: archive.path.clone(),
                endpoint,
            },
        )),
    }
}

fn options(pr: &PodRestore) -> pb::RestoreOptions {
    let o = &pr.spec.options;
    pb::RestoreOptions {
        tcp_established: o.tcp_established,
        file_locks: o.file_locks,
        shell_job: o.shell_job,
        ext_unix_sk: o.ext_unix_sk,
        manage_cgroups_mode: match o.manage_cgroups_mode {
            ManageCgroupsMode::Soft => pb::ManageCgroupsMode::Soft,
            ManageCgroupsMode::Full => pb::ManageCgroupsMode::Full,
            ManageCgroupsMode::Strict => pb::ManageCgroupsMode::Strict,
            ManageCgroupsMode::Ignore => pb::ManageCgroupsMode::Ignore,
        }
        .into(),
        network_lock: match o.network_lock {
            NetworkLock::Iptables => pb::NetworkLock::Iptables,
            NetworkLock::Nftables => pb::NetworkLock::Nftables,
            NetworkLock::Skip => pb::NetworkLock::Skip,
        }
        .into(),
        timeout_seconds: u32::try_from(o.timeout_seconds).unwrap_or(0),
    }
}

/// Builds the Restore request. `target` is what the operator knows of the target now: on
/// a resume the pod may be gone, and the agent then answers from its record.
fn restore_request(
    pr: &PodRestore,
    checkpoint: pb::CheckpointSource,
    target: pb::TargetContainer,
) -> pb::RestoreRequest {
    pb::RestoreRequest {
        restore: Some(pb::RestoreRef {
            uid: pr.uid().unwrap_or_default(),
            namespace: pr.namespace().unwrap_or_default(),
            name: pr.name_any(),
        }),
        checkpoint: Some(checkpoint),
        target: Some(target),
        options: Some(options(pr)),
    }
}

/// The request was refused before anything ran: record it, tell the user, retry later.
async fn reject(
    api: &Api<PodRestore>,
    ctx: &Context,
    pr: &PodRestore,
    mut status: PodRestoreStatus,
    rejection: Rejection,
) -> Result<Action, Error> {
    let now = Timestamp::now();
    if status::rejected(&mut status, &rejection, pr.metadata.generation, now) {
        patch_status(api, &pr.name_any(), &status).await?;
        ctx.event(
            pr,
            EventType::Warning,
            rejection.reason,
            "Validate",
            rejection.message.clone(),
        )
        .await;
    }
    let pod_dependent = matches!(
        rejection.reason,
        podrestore_crds::condition::reason::TARGET_POD_NOT_FOUND
            | podrestore_crds::condition::reason::TARGET_POD_NOT_RUNNING
            | podrestore_crds::condition::reason::TARGET_CONTAINER_NOT_RUNNING
            | podrestore_crds::condition::reason::TARGET_CONTAINER_NOT_FOUND
            | podrestore_crds::condition::reason::TARGET_CONTAINER_AMBIGUOUS
            | podrestore_crds::condition::reason::CHECKPOINT_NOT_FOUND
            | podrestore_crds::condition::reason::CHECKPOINT_NOT_READY
    );
    Ok(Action::requeue(if pod_dependent {
        POD_RETRY
    } else {
        SLOW_RETRY
    }))
}

/// Records a final refusal by the agent of the Restore call itself.
async fn refused(
    api: &Api<PodRestore>,
    ctx: &Context,
    pr: &PodRestore,
    mut status: PodRestoreStatus,
    err: &AgentError,
) -> Result<Action, Error> {
    let message = format!("the agent refused the restore: {err}");
    status::refused(
        &mut status,
        message.clone(),
        pr.metadata.generation,
        Timestamp::now(),
    );
    patch_status(api, &pr.name_any(), &status).await?;
    ctx.metrics.restore_finished(Outcome::Failed.reason(), None);
    ctx.event(
        pr,
        EventType::Warning,
        Outcome::Failed.reason(),
        "Restore",
        message,
    )
    .await;
    Ok(Action::await_change())
}

/// Checks, authorizes and runs (or resumes) the restore.
pub async fn apply(pr: Arc<PodRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = pr.namespace().ok_or(Error::NoNamespace)?;
    let name = pr.name_any();
    let generation = pr.metadata.generation;
    let api: Api<PodRestore> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut status = pr.status.clone().unwrap_or_default();
    if status::is_finished(&status) {
        return Ok(Action::await_change());
    }
    // A PodCheckpoint source is acted on as the archive it recorded.
    let pr = match crate::checkpoint::source::resolve(&ctx.client, &namespace, pr)
        .await
        .map_err(Error::Kube)?
    {
        Ok(pr) => pr,
        Err((pr, rejection)) => return reject(&api, &ctx, &pr, status, rejection).await,
    };
    let Some(archive) = pr.spec.checkpoint.archive.clone() else {
        return reject(
            &api,
            &ctx,
            &pr,
            status,
            Rejection {
                reason: podrestore_crds::condition::reason::ARCHIVE_REJECTED,
                message: "spec.checkpoint names no source this operator supports".into(),
            },
        )
        .await;
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
    let pod = pods
        .get_opt(&pr.spec.target.pod_name)
        .await
        .map_err(Error::Kube)?;

    let (node, target, source_endpoint) = if status::is_started(&status) {
        // Resume: never check again, send what is still known; the agent answers from
        // its record of this UID.
        let node = status.node.clone().unwrap_or_default();
        let resolved = validate::target(&pr, pod.as_ref()).ok();
        let target = pb::TargetContainer {
            pod_uid: resolved
                .as_ref()
                .map(|t| t.pod_uid.clone())
                .unwrap_or_default(),
            pod_namespace: namespace.clone(),
            pod_name: pr.spec.target.pod_name.clone(),
            container_name: resolved
                .as_ref()
                .map(|t| t.container.clone())
                .or_else(|| pr.spec.target.container.clone())
                .unwrap_or_default(),
            container_id: status.target_container_id.clone().unwrap_or_default(),
        };
        info!(podrestore = %name, %node, "resuming the restore");
        // The agent answers a resumed request from its record; the source's address is
        // only needed if it never got the first one.
        let endpoint = if archive.node_name == node {
            None
        } else {
            Some(
                ctx.agents
                    .endpoint(&archive.node_name)
                    .await
                    .unwrap_or_default(),
            )
        };
        (node, target, endpoint)
    } else {
        let checked = validate::target(&pr, pod.as_ref())
            .and_then(|t| validate::archive(&pr, &t.node).map(|_| t));
        let target = match checked {
            Ok(target) => target,
            Err(rejection) => return reject(&api, &ctx, &pr, status, rejection).await,
        };
        // An archive on another node is pulled from that node's agent: the node must exist,
        // or the request can never go anywhere.
        if archive.node_name != target.node && !node_exists(&ctx, &archive.node_name).await? {
            let rejection = Rejection {
                reason: podrestore_crds::condition::reason::ARCHIVE_NODE_NOT_FOUND,
                message: format!(
                    "node {} named in spec.checkpoint.archive.nodeName does not exist; \
                     name the node that holds the archive",
                    archive.node_name
                ),
            };
            return reject(&api, &ctx, &pr, status, rejection).await;
        }
        let inspected = ctx
            .agents
            .inspect(
                &archive.node_name,
                pb::InspectRequest {
                    checkpoint: Some(source(&archive)),
                },
            )
            .await;
        let info = match inspected {
            Ok(info) => info,
            Err(err) if err.is_refusal() => {
                let reason = if err.code() == Some(tonic::Code::NotFound) {
                    podrestore_crds::condition::reason::ARCHIVE_NOT_FOUND
                } else {
                    podrestore_crds::condition::reason::ARCHIVE_REJECTED
                };
                let rejection = Rejection {
                    reason,
                    message: err.to_string(),
                };
                return reject(&api, &ctx, &pr, status, rejection).await;
            }
            Err(err) => {
                if status::agent_unavailable(
                    &mut status,
                    err.to_string(),
                    generation,
                    Timestamp::now(),
                ) {
                    patch_status(&api, &name, &status).await?;
                    ctx.event(
                        &pr,
                        EventType::Warning,
                        podrestore_crds::condition::reason::AGENT_UNAVAILABLE,
                        "Inspect",
                        err.to_string(),
                    )
                    .await;
                }
                return Err(err.into());
            }
        };
        if let Err(rejection) = validate::source_namespace(
            &info.pod_namespace,
            &namespace,
            &ctx.allowed_source_namespaces,
        ) {
            return reject(&api, &ctx, &pr, status, rejection).await;
        }
        // Found before the restore is recorded as started, so that a lookup failure is
        // retried as a fresh start.
        let endpoint = if archive.node_name == target.node {
            None
        } else {
            Some(ctx.agents.endpoint(&archive.node_name).await?)
        };
        let origin = CheckpointOrigin {
            namespace: Some(info.pod_namespace.clone()).filter(|s| !s.is_empty()),
            pod_name: Some(info.pod_name.clone()).filter(|s| !s.is_empty()),
            container: Some(info.container_name.clone()).filter(|s| !s.is_empty()),
            checkpoint_time: info
                .checkpointed_at
                .as_ref()
                .and_then(|t| Timestamp::new(t.seconds, t.nanos).ok())
                .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
        };
        status::started(
            &mut status,
            Acceptance {
                node: target.node.clone(),
                container_id: target.container_id.clone(),
                origin,
            },
            generation,
            Timestamp::now(),
        );
        // Written before the agent is asked: from here on the request is only resumed.
        patch_status(&api, &name, &status).await?;
        ctx.event(
            &pr,
            EventType::Normal,
            event_reason::RESTORE_STARTED,
            "Restore",
            format!(
                "restoring {} into container {} of pod {} on node {}",
                archive.path, target.container, pr.spec.target.pod_name, target.node
            ),
        )
        .await;
        let request_target = pb::TargetContainer {
            pod_uid: target.pod_uid.clone(),
            pod_namespace: namespace.clone(),
            pod_name: pr.spec.target.pod_name.clone(),
            container_name: target.container.clone(),
            container_id: target.container_id.clone(),
        };
        (target.node, request_target, endpoint)
    };

    let checkpoint = match source_endpoint {
        Some(endpoint) => remote_source(&archive, endpoint),
        None => source(&archive),
    };
    let request = restore_request(&pr, checkpoint, target);
    let timeout =
        Duration::from_secs(u64::try_from(pr.spec.options.timeout_seconds).unwrap_or(300))
            + RESTORE_DEADLINE_MARGIN;
    let mut events = match ctx.agents.restore(&node, request, timeout).await {
        Ok(events) => events,
        Err(err) if err.is_refusal() => return refused(&api, &ctx, &pr, status, &err).await,
        Err(err) => return Err(err.into()),
    };
    while let Some(item) = events.next().await {
        let event = match item {
            Ok(event) => event,
            Err(err) if err.is_refusal() => return refused(&api, &ctx, &pr, status, &err).await,
            Err(err) => return Err(err.into()),
        };
        match event.event {
            Some(pb::restore_event::Event::Progress(report))
                if status::progress(&mut status, &report, generation, Timestamp::now()) =>
            {
                patch_status(&api, &name, &status).await?;
            }
            Some(pb::restore_event::Event::Result(result)) => {
                let (outcome, message) =
                    status::finished(&mut status, &result, generation, Timestamp::now());
                if outcome == Outcome::Succeeded {
                    status.provenance = Some(crate::checkpoint::source::provenance(
                        &pr, &archive, &status,
                    ));
                }
                patch_status(&api, &name, &status).await?;
                if !result.replayed {
                    let at = |t: &prost_types::Timestamp| Timestamp::new(t.seconds, t.nanos).ok();
                    let took = match (
                        result.started_at.as_ref().and_then(at),
                        result.finished_at.as_ref().and_then(at),
                    ) {
                        (Some(a), Some(b)) => Duration::try_from(b.duration_since(a)).ok(),
                        _ => None,
                    };
                    ctx.metrics.restore_finished(outcome.reason(), took);
                }
                let type_ = if outcome == Outcome::Succeeded {
                    EventType::Normal
                } else {
                    EventType::Warning
                };
                ctx.event(&pr, type_, outcome.reason(), "Restore", message)
                    .await;
                info!(podrestore = %name, outcome = outcome.reason(), "restore finished");
                return Ok(Action::await_change());
            }
            Some(pb::restore_event::Event::Progress(_)) | None => {}
        }
    }
    Err(Error::StreamEnded { node })
}

/// Asks the agent to stop the restored tree and remove its files; nothing to do when the
/// agent was never asked.
pub async fn cleanup(pr: Arc<PodRestore>, ctx: Arc<Context>) -> Result<Action, Error> {
    let status = pr.status.clone().unwrap_or_default();
    let Some(node) = status.node.clone() else {
        debug!(podrestore = %pr.name_any(), "no agent was asked; nothing to clean up");
        return Ok(Action::await_change());
    };
    let request = pb::CleanupRequest {
        restore_uid: pr.uid().unwrap_or_default(),
    };
    match ctx.agents.cleanup(&node, request).await {
        Ok(response) => {
            let note = format!(
                "agent on node {node}: {}; removed {} path(s)",
                if response.process_stopped {
                    "stopped the restored process tree"
                } else {
                    "no restored process was running"
                },
                response.removed.len()
            );
            ctx.event(
                &pr,
                EventType::Normal,
                event_reason::CLEANED_UP,
                "Cleanup",
                note,
            )
            .await;
            Ok(Action::await_change())
        }
        Err(err @ AgentError::NoAgent { .. }) => {
            let node_exists = node_exists(&ctx, &node).await?;
            let waited = pr
                .meta()
                .deletion_timestamp
                .as_ref()
                .and_then(|t| Timestamp::now().duration_since(t.0).try_into().ok())
                .is_some_and(|d: Duration| d > AGENT_GONE_GRACE);
            if node_exists && !waited {
                return Err(err.into());
            }
            let note = if node_exists {
                format!(
                    "no agent on node {node} for {AGENT_GONE_GRACE:?}; the restored process may still run there"
                )
            } else {
                format!("node {node} is gone; nothing left to clean up")
            };
            ctx.event(
                &pr,
                EventType::Warning,
                event_reason::CLEANUP_SKIPPED,
                "Cleanup",
                note,
            )
            .await;
            Ok(Action::await_change())
        }
        Err(err) => Err(err.into()),
    }
}

/// Whether the cluster has a Node named `name`.
async fn node_exists(ctx: &Context, name: &str) -> Result<bool, Error> {
    let nodes = Api::<Node>::all(ctx.client.clone());
    Ok(nodes.get_opt(name).await.map_err(Error::Kube)?.is_some())
}

/// Runs the controller on the PodRestores of `namespace` (all when `None`) until
/// `shutdown` resolves; running reconciles finish first.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<&str>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let api: Api<PodRestore> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Controller::new(api, watcher::Config::default().any_semantic())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => debug!(podrestore = %object.name, "reconciled"),
                Err(err) => debug!(error = %err, "reconcile loop"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests;
