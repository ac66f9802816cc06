//! Reconcile scenarios against a mocked API server (tower-test): each checks the method,
//! path and body of every call the reconcile makes, in order, with a fake agent.

use std::sync::Mutex as StdMutex;

use futures::stream;
use http::{Request, Response};
use k8s_openapi::{
    api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStatus, PodSpec, PodStatus,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{api::ObjectMeta, client::Body, runtime::events::Reporter};
use podrestore_crds::{
    condition::{kind, reason},
    v1alpha1::{CheckpointSource, PodRestoreSpec, RestoreTarget},
};
use serde_json::Value;
use tower_test::mock::{self, Handle, SendResponse};

use super::*;
use crate::agent::RestoreEvents;

const UID: &str = "11111111-2222-3333-4444-555555555555";
const NS: &str = "team-a";
const PR_PATH: &str = "/apis/podrestore.io/v1alpha1/namespaces/team-a/podrestores/r";
const POD_PATH: &str = "/api/v1/namespaces/team-a/pods/forensic";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";

/// What the fake agent answers to Restore: the stream's items, or a refusal.
type RestoreAnswer = Result<Vec<Result<pb::RestoreEvent, AgentError>>, AgentError>;

/// A fake agent API: answers are set per test, calls are recorded.
#[derive(Default)]
struct FakeAgents {
    inspect: StdMutex<Option<Result<pb::InspectResponse, AgentError>>>,
    restore: StdMutex<Option<RestoreAnswer>>,
    cleanup: StdMutex<Option<Result<pb::CleanupResponse, AgentError>>>,
    calls: StdMutex<Vec<String>>,
    restore_requests: StdMutex<Vec<pb::RestoreRequest>>,
}

fn take<T>(slot: &StdMutex<Option<T>>, what: &str) -> T {
    slot.lock()
        .expect("lock")
        .take()
        .unwrap_or_else(|| panic!("unexpected agent call: {what}"))
}

#[async_trait::async_trait]
impl Agents for FakeAgents {
    async fn inspect(
        &self,
        node: &str,
        _request: pb::InspectRequest,
    ) -> Result<pb::InspectResponse, AgentError> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("inspect {node}"));
        take(&self.inspect, "inspect")
    }

    async fn restore(
        &self,
        node: &str,
        request: pb::RestoreRequest,
        _timeout: Duration,
    ) -> Result<RestoreEvents, AgentError> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("restore {node}"));
        self.restore_requests.lock().expect("lock").push(request);
        let events = take(&self.restore, "restore")?;
        Ok(stream::iter(events).boxed())
    }

    async fn cleanup(
        &self,
        node: &str,
        request: pb::CleanupRequest,
    ) -> Result<pb::CleanupResponse, AgentError> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("cleanup {node} {}", request.restore_uid));
        take(&self.cleanup, "cleanup")
    }
    async fn endpoint(&self, node: &str) -> Result<String, AgentError> {
        self.calls
            .lock()
            .expect("lock")
            .push(format!("endpoint {node}"));
        Ok("10.200.0.12:9443".into())
    }
}

impl FakeAgents {
    fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("lock").clone()
    }
}

type ApiHandle = Handle<Request<Body>, Response<Body>>;

fn context(agents: Arc<FakeAgents>) -> (Arc<Context>, ApiHandle) {
    let (service, handle) = mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "podrestore-operator".into(),
            instance: Some("test".into()),
        },
    );
    let ctx = Context::new(
        client,
        recorder,
        Metrics::default(),
        agents,
        vec!["shared".into()],
    );
    (Arc::new(ctx), handle)
}

/// Waits for the next request; checks method and path; returns its JSON body.
async fn expect(
    handle: &mut ApiHandle,
    method: &str,
    path: &str,
) -> (Value, String, SendResponse<Response<Body>>) {
    let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("no {method} {path} within 5s"))
        .expect("the client was dropped");
    let uri = request.uri().to_string();
    assert_eq!(request.method().as_str(), method, "{uri}");
    assert!(uri.starts_with(path), "want {method} {path}, got {uri}");
    let bytes = request.into_body().collect_bytes().await.expect("body");
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).expect("json body")
    };
    (body, uri, send)
}

fn reply(send: SendResponse<Response<Body>>, code: u16, body: &Value) {
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(body).expect("json")))
            .expect("response"),
    );
}

fn not_found(send: SendResponse<Response<Body>>) {
    reply(
        send,
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    );
}

/// Expects a server-side apply of the status with the one field manager; answers with the
/// object carrying it; returns the applied status.
async fn expect_status(handle: &mut ApiHandle, pr: &PodRestore) -> PodRestoreStatus {
    let (body, uri, send) = expect(handle, "PATCH", &format!("{PR_PATH}/status")).await;
    assert!(uri.contains("fieldManager=podrestore-operator"), "{uri}");
    assert!(uri.contains("force=true"), "{uri}");
    assert_eq!(body["kind"], "PodRestore");
    let status: PodRestoreStatus = serde_json::from_value(body["status"].clone()).expect("status");
    let mut answer = pr.clone();
    answer.status = Some(status.clone());
    reply(send, 200, &serde_json::to_value(&answer).expect("json"));
    status
}

/// Expects an event with `reason` and `type_`.
async fn expect_event(handle: &mut ApiHandle, type_: &str, reason: &str) -> Value {
    let (body, _, send) = expect(handle, "POST", EVENTS_PATH).await;
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["type"], type_, "{body}");
    assert_eq!(body["regarding"]["kind"], "PodRestore");
    reply(send, 201, &body);
    body
}

fn restore_object(archive_node: &str) -> PodRestore {
    let mut pr = PodRestore::new(
        "r",
        PodRestoreSpec {
            checkpoint: CheckpointSource {
                archive: Some(ArchiveSource {
                    node_name: archive_node.into(),
                    path: "/var/lib/kubelet/checkpoints/counter.tar".into(),
                }),
                ..CheckpointSource::default()
            },
            target: RestoreTarget {
                pod_name: "forensic".into(),
                container: None,
            },
            options: Default::default(),
        },
    );
    pr.metadata.namespace = Some(NS.into());
    pr.metadata.uid = Some(UID.into());
    pr.metadata.generation = Some(1);
    pr.metadata.finalizers = Some(vec![FINALIZER.into()]);
    pr
}

fn running_pod() -> Value {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("forensic".into()),
            namespace: Some(NS.into()),
            uid: Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("n1".into()),
            containers: vec![Container {
                name: "sleeper".into(),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            container_statuses: Some(vec![ContainerStatus {
                name: "sleeper".into(),
                container_id: Some("containerd://0123".into()),
                state: Some(ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..ContainerState::default()
                }),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        }),
    };
    serde_json::to_value(pod).expect("json")
}

fn inspected(namespace: &str) -> pb::InspectResponse {
    pb::InspectResponse {
        pod_namespace: namespace.into(),
        pod_name: "counter".into(),
        container_name: "counter".into(),
        checkpointed_at: None,
        size: 10,
        ..pb::InspectResponse::default()
    }
}

fn progress(phase: pb::Phase) -> Result<pb::RestoreEvent, AgentError> {
    Ok(pb::RestoreEvent {
        event: Some(pb::restore_event::Event::Progress(pb::Progress {
            phase: phase.into(),
            ..pb::Progress::default()
        })),
    })
}

fn success(replayed: bool) -> Result<pb::RestoreEvent, AgentError> {
    Ok(pb::RestoreEvent {
        event: Some(pb::restore_event::Event::Result(pb::RestoreResult {
            outcome: Some(pb::restore_result::Outcome::Success(pb::RestoreSuccess {
                container_id: "containerd://0123".into(),
                pid: 4242,
                archive: Some(pb::ArchiveDigest {
                    sha256: "ab".repeat(32),
                    size: 10,
                }),
                criu_version: "4.2.1".into(),
            })),
            replayed,
            started_at: Some(prost_types::Timestamp {
                seconds: 10,
                nanos: 0,
            }),
            finished_at: Some(prost_types::Timestamp {
                seconds: 11,
                nanos: 0,
            }),
        })),
    })
}

fn cond<'a>(status: &'a PodRestoreStatus, type_: &str) -> (&'a str, &'a str) {
    status::condition(status, type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
        .unwrap_or(("", ""))
}

#[tokio::test]
async fn a_new_podrestore_gets_the_finalizer_before_anything_else() {
    let agents = Arc::new(FakeAgents::default());
    let (ctx, mut api) = context(agents.clone());
    let mut pr = restore_object("n1");
    pr.metadata.finalizers = None;
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            let (body, _, send) = expect(&mut api, "PATCH", PR_PATH).await;
            assert_eq!(body[1]["op"], "add");
            assert_eq!(body[1]["path"], "/metadata/finalizers");
            assert_eq!(body[1]["value"], json!([FINALIZER]));
            let mut answer = pr.clone();
            answer.metadata.finalizers = Some(vec![FINALIZER.into()]);
            reply(send, 200, &serde_json::to_value(answer).expect("json"));
        }
    });
    let action = reconcile(Arc::new(pr), ctx).await.expect("reconcile");
    server.await.expect("api server");
    assert_eq!(action, Action::await_change());
    assert!(agents.calls().is_empty());
}

#[tokio::test]
async fn a_missing_target_pod_is_reported_and_nothing_runs() {
    let agents = Arc::new(FakeAgents::default());
    let (ctx, mut api) = context(agents.clone());
    let pr = restore_object("n1");
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            let (_, _, send) = expect(&mut api, "GET", POD_PATH).await;
            not_found(send);
            let status = expect_status(&mut api, &pr).await;
            assert_eq!(
                cond(&status, kind::ACCEPTED),
                ("False", reason::TARGET_POD_NOT_FOUND)
            );
            assert_eq!(
                cond(&status, kind::RESTORED),
                ("False", reason::NOT_ACCEPTED)
            );
            assert_eq!(status.observed_generation, Some(1));
            assert!(status.start_time.is_none());
            expect_event(&mut api, "Warning", reason::TARGET_POD_NOT_FOUND).await;
        }
    });
    let action = reconcile(Arc::new(pr), ctx).await.expect("reconcile");
    server.await.expect("api server");
    assert_eq!(action, Action::requeue(POD_RETRY));
    assert!(agents.calls().is_empty(), "{:?}", agents.calls());
}

#[tokio::test]
async fn an_archive_on_another_node_is_pulled_by_the_target_nodes_agent() {
    let agents = Arc::new(FakeAgents::default());
    *agents.inspect.lock().expect("lock") = Some(Ok(inspected(NS)));
    let transfer = |done| {
        Ok(pb::RestoreEvent {
            event: Some(pb::restore_event::Event::Progress(pb::Progress {
                phase: pb::Phase::Transferring.into(),
                bytes_done: done,
                bytes_total: 1000,
                ..pb::Progress::default()
            })),
        })
    };
    let mismatch = Ok(pb::RestoreEvent {
        event: Some(pb::restore_event::Event::Result(pb::RestoreResult {
            outcome: Some(pb::restore_result::Outcome::Failure(pb::RestoreFailure {
                reason: "ArchiveDigestMismatch".into(),
                message: "archive digest mismatch; nothing was restored".into(),
                log_excerpt: String::new(),
            })),
            ..pb::RestoreResult::default()
        })),
    });
    *agents.restore.lock().expect("lock") = Some(Ok(vec![
        progress(pb::Phase::Accepted),
        transfer(0),
        transfer(20),
        transfer(1000),
        mismatch,
    ]));
    let (ctx, mut api) = context(agents.clone());
    let pr = restore_object("n2");
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            let (_, _, send) = expect(&mut api, "GET", POD_PATH).await;
            reply(send, 200, &running_pod());
            let (_, _, send) = expect(&mut api, "GET", "/api/v1/nodes/n2").await;
            reply(
                send,
                200,
                &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}}),
            );
            let started = expect_status(&mut api, &pr).await;
            assert_eq!(cond(&started, kind::ACCEPTED), ("True", reason::VALIDATED));
            assert_eq!(started.node.as_deref(), Some("n1"));
            expect_event(&mut api, "Normal", "RestoreStarted").await;
            // Transfer progress shows in the Restoring condition, a write per tenth.
            for want in [
                "archive transfer: 0 of 1000 bytes (0%)",
                "archive transfer: 1000 of 1000 bytes (100%)",
            ] {
                let status = expect_status(&mut api, &pr).await;
                assert_eq!(
                    cond(&status, kind::RESTORING),
                    ("True", reason::TRANSFERRING)
                );
                let message =
                    status::condition(&status, kind::RESTORING).map(|c| c.message.clone());
                assert_eq!(message.as_deref(), Some(want));
            }
            let done = expect_status(&mut api, &pr).await;
            assert_eq!(
                cond(&done, kind::RESTORED),
                ("False", reason::ARCHIVE_DIGEST_MISMATCH)
            );
            assert!(status::is_finished(&done));
            expect_event(&mut api, "Warning", reason::ARCHIVE_DIGEST_MISMATCH).await;
        }
    });
    let action = reconcile(Arc::new(pr), ctx).await.expect("reconcile");
    server.await.expect("api server");
    assert_eq!(action, Action::await_change());
    // Inspected where the archive is, restored where the target runs.
    assert_eq!(
        agents.calls(),
        vec!["inspect n2", "endpoint n2", "restore n1"]
    );
    let requests = agents.restore_requests.lock().expect("lock").clone();
    let source = requests[0].checkpoint.clone().and_then(|c| c.source);
    assert_eq!(
        source,
        Some(pb::checkpoint_source::Source::RemoteArchive(
            pb::RemoteArchive {
                node_name: "n2".into(),
                path: "/var/lib/kubelet/checkpoints/counter.tar".into(),
                endpoint: "10.200.0.12:9443".into(),
            }
        ))
    );
}

#[tokio::test]
async fn a_checkpoint_from_another_namespace_is_refused() {
    let agents = Arc::new(FakeAgents::default());
    *agents.inspect.lock().expect("lock") = Some(Ok(inspected("team-b")));
    let (ctx, mut api) = context(agents.clone());
    let pr = restore_object("n1");
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            let (_, _, send) = expect(&mut api, "GET", POD_PATH).await;
            reply(send, 200, &running_pod());
            let status = expect_status(&mut api, &pr).await;
            assert_eq!(
                cond(&status, kind::ACCEPTED),
                ("False", reason::SOURCE_NAMESPACE_NOT_ALLOWED)
            );
            let event =
                expect_event(&mut api, "Warning", reason::SOURCE_NAMESPACE_NOT_ALLOWED).await;
            assert!(
                event["note"].as_str().is_some_and(|n| n.contains("team-b")),
                "{event}"
            );
        }
    });
    reconcile(Arc::new(pr), ctx).await.expect("reconcile");
    server.await.expect("api server");
    assert_eq!(agents.calls(), vec!["inspect n1"]);
}

#[tokio::test]
async fn an_allowed_source_namespace_restores() {
    let agents = Arc::new(FakeAgents::default());
    *agents.inspect.lock().expect("lock") = Some(Ok(inspected("shared")));
    *agents.restore.lock().expect("lock") = Some(Ok(vec![success(false)]));
    let (ctx, mut api) = context(agents.clone());
    let pr = restore_object("n1");
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            let (_, _, send) = expect(&mut api, "GET", POD_PATH).await;
            reply(send, 200, &running_pod());
            let started = expect_status(&mut api, &pr).await;
            assert_eq!(
                started.source.and_then(|s| s.namespace).as_deref(),
                Some("shared")
            );
            expect_event(&mut api, "Normal", "RestoreStarted").await;
            expect_status(&mut api, &pr).await;
            expect_event(&mut api, "Normal", reason::RESTORE_SUCCEEDED).await;
        }
    });
    reconcile(Arc::new(pr), ctx).await.expect("reconcile");
    server.await.expect("api server");
}

#[tokio::test]
async fn a_valid_request_restores_once_and_records_the_pid() {
    let agents = Arc::new(FakeAgents::default());
    *agents.inspect.lock().expect("lock") = Some(Ok(inspected(NS)));
    *agents.restore.lock().expect("lock") = Some(Ok(vec![
        progress(pb::Phase::Accepted),
        progress(pb::Phase::Preparing),
        progress(pb::Phase::Restoring),
        success(false),
    ]));
    let (ctx, mut api) = context(agents.clone());
    let pr = restore_object("n1");
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            let (_, _, send) = expect(&mut api, "GET", POD_PATH).await;
            reply(send, 200, &running_pod());
            // Accepted, written before the agent is asked.
            let started = expect_status(&mut api, &pr).await;
            assert_eq!(cond(&started, kind::ACCEPTED), ("True", reason::VALIDATED));
            assert_eq!(cond(&started, kind::RESTORING), ("True", reason::STARTED));
            assert_eq!(
                cond(&started, kind::RESTORED),
                ("False", reason::IN_PROGRESS)
            );
            assert_eq!(started.node.as_deref(), Some("n1"));
            assert_eq!(
                started.target_container_id.as_deref(),
                Some("containerd://0123")
            );
            assert!(started.start_time.is_some());
            expect_event(&mut api, "Normal", "RestoreStarted").await;
            // One write per new phase (Accepted maps to Started, which is already set).
            let preparing = expect_status(&mut api, &pr).await;
            assert_eq!(
                cond(&preparing, kind::RESTORING),
                ("True", reason::PREPARING)
            );
            let restoring = expect_status(&mut api, &pr).await;
            assert_eq!(
                cond(&restoring, kind::RESTORING),
                ("True", reason::RESTORING)
            );
            let done = expect_status(&mut api, &pr).await;
            assert_eq!(
                cond(&done, kind::RESTORED),
                ("True", reason::RESTORE_SUCCEEDED)
            );
            assert_eq!(cond(&done, kind::RESTORING), ("False", reason::FINISHED));
            assert_eq!(done.restored_pid, Some(4242));
            assert_eq!(done.criu_version.as_deref(), Some("4.2.1"));
            assert_eq!(done.archive.map(|a| a.size), Some(10));
            assert_eq!(
                done.completion_time,
                Some(Time(Timestamp::from_second(11).expect("ts")))
            );
            expect_event(&mut api, "Normal", reason::RESTORE_SUCCEEDED).await;
        }
    });
    let action = reconcile(Arc::new(pr), ctx.clone())
        .await
        .expect("reconcile");
    server.await.expect("api server");
    assert_eq!(action, Action::await_change());
    assert_eq!(agents.calls(), vec!["inspect n1", "restore n1"]);
    let requests = agents.restore_requests.lock().expect("lock").clone();
    let request = &requests[0];
    assert_eq!(request.restore.as_ref().map(|r| r.uid.as_str()), Some(UID));
    let target = request.target.clone().expect("target");
    assert_eq!(
        (
            target.pod_namespace.as_str(),
            target.pod_name.as_str(),
            target.container_name.as_str()
        ),
        (NS, "forensic", "sleeper")
    );
    assert_eq!(target.container_id, "containerd://0123");
    let options = request.options.expect("options");
    assert_eq!(options.timeout_seconds, 300);
    assert_eq!(options.network_lock, pb::NetworkLock::Iptables as i32);
}

#[tokio::test]
async fn after_an_operator_restart_the_restore_is_resumed_not_checked_again() {
    let agents = Arc::new(FakeAgents::default());
    *agents.restore.lock().expect("lock") = Some(Ok(vec![success(true)]));
    let (ctx, mut api) = context(agents.clone());
    let mut pr = restore_object("n1");
    let mut status = PodRestoreStatus::default();
    status::started(
        &mut status,
        status::Acceptance {
            node: "n1".into(),
            container_id: "containerd://0123".into(),
            origin: CheckpointOrigin::default(),
        },
        Some(1),
        Timestamp::from_second(5).expect("ts"),
    );
    pr.status = Some(status);
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            // The target pod is gone by now; the agent answers from its record.
            let (_, _, send) = expect(&mut api, "GET", POD_PATH).await;
            not_found(send);
            let done = expect_status(&mut api, &pr).await;
            assert_eq!(
                cond(&done, kind::RESTORED),
                ("True", reason::RESTORE_SUCCEEDED)
            );
            assert_eq!(done.restored_pid, Some(4242));
            expect_event(&mut api, "Normal", reason::RESTORE_SUCCEEDED).await;
        }
    });
    reconcile(Arc::new(pr), ctx.clone())
        .await
        .expect("reconcile");
    server.await.expect("api server");
    assert_eq!(agents.calls(), vec!["restore n1"], "no Inspect on resume");
    let requests = agents.restore_requests.lock().expect("lock").clone();
    assert_eq!(
        requests[0].target.as_ref().map(|t| t.container_id.as_str()),
        Some("containerd://0123")
    );
}

#[tokio::test]
async fn a_finished_podrestore_is_left_alone() {
    let agents = Arc::new(FakeAgents::default());
    let (ctx, _api) = context(agents.clone());
    let mut pr = restore_object("n1");
    let mut status = PodRestoreStatus::default();
    status::refused(
        &mut status,
        "earlier".into(),
        Some(1),
        Timestamp::from_second(5).expect("ts"),
    );
    pr.status = Some(status);
    let action = reconcile(Arc::new(pr), ctx).await.expect("reconcile");
    assert_eq!(action, Action::await_change());
    assert!(agents.calls().is_empty());
}

#[tokio::test]
async fn an_agent_refusal_is_final() {
    let agents = Arc::new(FakeAgents::default());
    *agents.inspect.lock().expect("lock") = Some(Ok(inspected(NS)));
    *agents.restore.lock().expect("lock") = Some(Err(AgentError::Rpc {
        node: "n1".into(),
        status: tonic::Status::failed_precondition("restore was cleaned up"),
    }));
    let (ctx, mut api) = context(agents.clone());
    let pr = restore_object("n1");
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            let (_, _, send) = expect(&mut api, "GET", POD_PATH).await;
            reply(send, 200, &running_pod());
            expect_status(&mut api, &pr).await;
            expect_event(&mut api, "Normal", "RestoreStarted").await;
            let done = expect_status(&mut api, &pr).await;
            assert_eq!(
                cond(&done, kind::RESTORED),
                ("False", reason::RESTORE_FAILED)
            );
            assert!(status::is_finished(&done));
            expect_event(&mut api, "Warning", reason::RESTORE_FAILED).await;
        }
    });
    let action = reconcile(Arc::new(pr), ctx).await.expect("reconcile");
    server.await.expect("api server");
    assert_eq!(action, Action::await_change());
}

#[tokio::test]
async fn an_unreachable_agent_is_an_error_with_backoff() {
    let agents = Arc::new(FakeAgents::default());
    *agents.inspect.lock().expect("lock") = Some(Err(AgentError::Connect {
        node: "n1".into(),
        address: "10.0.0.1:9443".into(),
        message: "connection refused".into(),
    }));
    let (ctx, mut api) = context(agents.clone());
    let pr = restore_object("n1");
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            let (_, _, send) = expect(&mut api, "GET", POD_PATH).await;
            reply(send, 200, &running_pod());
            let status = expect_status(&mut api, &pr).await;
            assert_eq!(
                cond(&status, kind::ACCEPTED),
                ("Unknown", reason::AGENT_UNAVAILABLE)
            );
            expect_event(&mut api, "Warning", reason::AGENT_UNAVAILABLE).await;
        }
    });
    let pr = Arc::new(pr);
    let err = reconcile(pr.clone(), ctx.clone())
        .await
        .expect_err("agent down");
    server.await.expect("api server");
    assert_eq!(err.metric_label(), "AgentConnect");
    assert_eq!(
        error_policy(pr.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(5))
    );
    assert_eq!(
        error_policy(pr.clone(), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(10))
    );
    assert_eq!(ctx.metrics.errors_for("AgentConnect"), 2);
}

#[test]
fn backoff_doubles_up_to_five_minutes() {
    let delays: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
    assert_eq!(delays, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
}

fn deleting(mut pr: PodRestore) -> PodRestore {
    pr.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    pr
}

#[tokio::test]
async fn deleting_asks_the_agent_to_clean_up_then_drops_the_finalizer() {
    let agents = Arc::new(FakeAgents::default());
    *agents.cleanup.lock().expect("lock") = Some(Ok(pb::CleanupResponse {
        process_stopped: true,
        removed: vec!["/var/lib/podrestore/work/x".into()],
    }));
    let (ctx, mut api) = context(agents.clone());
    let mut pr = restore_object("n1");
    pr.status = Some(PodRestoreStatus {
        node: Some("n1".into()),
        ..PodRestoreStatus::default()
    });
    let pr = deleting(pr);
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            let event = expect_event(&mut api, "Normal", "CleanedUp").await;
            assert!(
                event["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("stopped")),
                "{event}"
            );
            let (body, _, send) = expect(&mut api, "PATCH", PR_PATH).await;
            assert_eq!(
                body[1],
                json!({"op": "remove", "path": "/metadata/finalizers/0"})
            );
            let mut answer = pr.clone();
            answer.metadata.finalizers = None;
            reply(send, 200, &serde_json::to_value(answer).expect("json"));
        }
    });
    reconcile(Arc::new(pr), ctx).await.expect("reconcile");
    server.await.expect("api server");
    assert_eq!(agents.calls(), vec![format!("cleanup n1 {UID}")]);
}

#[tokio::test]
async fn deleting_before_any_agent_was_asked_only_drops_the_finalizer() {
    let agents = Arc::new(FakeAgents::default());
    let (ctx, mut api) = context(agents.clone());
    let pr = deleting(restore_object("n1"));
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            let (body, _, send) = expect(&mut api, "PATCH", PR_PATH).await;
            assert_eq!(body[1]["op"], "remove");
            reply(send, 200, &serde_json::to_value(pr).expect("json"));
        }
    });
    reconcile(Arc::new(pr), ctx).await.expect("reconcile");
    server.await.expect("api server");
    assert!(agents.calls().is_empty());
}

#[tokio::test]
async fn deleting_when_the_node_is_gone_does_not_block() {
    let agents = Arc::new(FakeAgents::default());
    *agents.cleanup.lock().expect("lock") = Some(Err(AgentError::NoAgent {
        node: "n1".into(),
        selector: "app=agent".into(),
        namespace: "podrestore-system".into(),
    }));
    let (ctx, mut api) = context(agents.clone());
    let mut pr = restore_object("n1");
    pr.status = Some(PodRestoreStatus {
        node: Some("n1".into()),
        ..PodRestoreStatus::default()
    });
    let pr = deleting(pr);
    let server = tokio::spawn({
        let pr = pr.clone();
        async move {
            let (_, _, send) = expect(&mut api, "GET", "/api/v1/nodes/n1").await;
            not_found(send);
            expect_event(&mut api, "Warning", "CleanupSkipped").await;
            let (_, _, send) = expect(&mut api, "PATCH", PR_PATH).await;
            reply(send, 200, &serde_json::to_value(pr).expect("json"));
        }
    });
    reconcile(Arc::new(pr), ctx).await.expect("reconcile");
    server.await.expect("api server");
}
