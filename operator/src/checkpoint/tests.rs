//! Reconcile scenarios against a mocked API server (tower-test): each checks the method,
//! path and body of every call, in order, with a fake agent.

use std::sync::Mutex as StdMutex;

use http::{Request, Response};
use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
use kube::{api::ObjectMeta, client::Body, runtime::events::Reporter};
use podrestore_crds::podcheckpoint::{PodCheckpointSpec, condition::CHECKPOINTED};
use serde_json::Value;
use tower_test::mock::{self, Handle, SendResponse};

use super::*;
use crate::agent::RestoreEvents;

const NS: &str = "team-a";
const PC_PATH: &str = "/apis/podrestore.io/v1alpha1/namespaces/team-a/podcheckpoints/c";
const POD_PATH: &str = "/api/v1/namespaces/team-a/pods/counter";
const KUBELET_PATH: &str = "/api/v1/nodes/a/proxy/checkpoint/team-a/counter/count?timeout=60";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/team-a/events";
const ARCHIVE: &str = "/var/lib/kubelet/checkpoints/checkpoint-counter.tar";

#[derive(Default)]
struct FakeAgents {
    inspect: StdMutex<Option<Result<pb::InspectResponse, AgentError>>>,
    calls: StdMutex<Vec<String>>,
}

#[async_trait::async_trait]
impl Agents for FakeAgents {
    async fn inspect(
        &self,
        node: &str,
        request: pb::InspectRequest,
    ) -> Result<pb::InspectResponse, AgentError> {
        let path = match request.checkpoint.and_then(|c| c.source) {
            Some(pb::checkpoint_source::Source::LocalArchive(a)) => a.path,
            _ => String::new(),
        };
        self.calls
            .lock()
            .expect("lock")
            .push(format!("inspect {node} {path}"));
        self.inspect
            .lock()
            .expect("lock")
            .take()
            .expect("unexpected inspect")
    }

    async fn restore(
        &self,
        _node: &str,
        _request: pb::RestoreRequest,
        _timeout: Duration,
    ) -> Result<RestoreEvents, AgentError> {
        panic!("the checkpoint controller never restores")
    }

    async fn cleanup(
        &self,
        _node: &str,
        _request: pb::CleanupRequest,
    ) -> Result<pb::CleanupResponse, AgentError> {
        panic!("the checkpoint controller never cleans up restores")
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
    let ctx = Context::new(client, recorder, Metrics::default(), agents);
    (Arc::new(ctx), handle)
}

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

async fn expect_status(handle: &mut ApiHandle, pc: &PodCheckpoint) -> PodCheckpointStatus {
    let (body, uri, send) = expect(handle, "PATCH", &format!("{PC_PATH}/status")).await;
    assert!(uri.contains("fieldManager=podrestore-operator"), "{uri}");
    assert_eq!(body["kind"], "PodCheckpoint");
    let status: PodCheckpointStatus =
        serde_json::from_value(body["status"].clone()).expect("status");
    let mut answer = pc.clone();
    answer.status = Some(status.clone());
    reply(send, 200, &serde_json::to_value(&answer).expect("json"));
    status
}

async fn expect_event(handle: &mut ApiHandle, type_: &str, reason: &str) {
    let (body, _, send) = expect(handle, "POST", EVENTS_PATH).await;
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["type"], type_, "{body}");
    assert_eq!(body["regarding"]["kind"], "PodCheckpoint");
    reply(send, 201, &body);
}

fn checkpoint_object() -> PodCheckpoint {
    let mut pc = PodCheckpoint::new(
        "c",
        PodCheckpointSpec {
            pod_name: "counter".into(),
            container: None,
            timeout_seconds: 60,
        },
    );
    pc.metadata.namespace = Some(NS.into());
    pc.metadata.uid = Some("pc-uid".into());
    pc.metadata.generation = Some(1);
    pc
}

fn running_pod() -> Value {
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("counter".into()),
            namespace: Some(NS.into()),
            uid: Some("pod-uid".into()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            node_name: Some("a".into()),
            containers: vec![Container {
                name: "count".into(),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: Some(PodStatus {
            phase: Some("Running".into()),
            ..PodStatus::default()
        }),
    };
    serde_json::to_value(pod).expect("json")
}

fn reason_of(status: &PodCheckpointStatus) -> (String, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == CHECKPOINTED)
        .expect("Checkpointed condition");
    (c.status.clone(), c.reason.clone())
}

#[tokio::test]
async fn checkpoint_through_the_kubelet_records_archive_and_digest() {
    let agents = Arc::new(FakeAgents::default());
    *agents.inspect.lock().expect("lock") = Some(Ok(pb::InspectResponse {
        pod_namespace: NS.into(),
        pod_name: "counter".into(),
        container_name: "count".into(),
        size: 4096,
        sha256: "0f".repeat(32),
        criu_version: "4.2.1".into(),
        ..pb::InspectResponse::default()
    }));
    let (ctx, mut handle) = context(agents.clone());
    let pc = checkpoint_object();
    let task = tokio::spawn(apply(Arc::new(pc.clone()), ctx));

    let (_, _, send) = expect(&mut handle, "GET", POD_PATH).await;
    reply(send, 200, &running_pod());
    let status = expect_status(&mut handle, &pc).await;
    assert_eq!(reason_of(&status).1, reason::CHECKPOINTING);
    assert_eq!(status.node_name.as_deref(), Some("a"));
    assert_eq!(status.pod.as_ref().map(|p| p.uid.as_str()), Some("pod-uid"));

    let (_, uri, send) = expect(&mut handle, "POST", KUBELET_PATH).await;
    assert_eq!(uri, KUBELET_PATH);
    reply(send, 200, &json!({"items": [ARCHIVE]}));
    let status = expect_status(&mut handle, &pc).await;
    assert_eq!(status.archive_path.as_deref(), Some(ARCHIVE));

    let status = expect_status(&mut handle, &pc).await;
    assert_eq!(
        reason_of(&status),
        ("True".into(), reason::CHECKPOINT_SUCCEEDED.into())
    );
    assert_eq!(status.sha256.as_deref(), Some("0f".repeat(32).as_str()));
    assert_eq!(status.size, Some(4096));
    assert_eq!(status.container.as_deref(), Some("count"));
    assert_eq!(status.criu_version.as_deref(), Some("4.2.1"));
    expect_event(&mut handle, "Normal", reason::CHECKPOINT_SUCCEEDED).await;

    let action = task.await.expect("join").expect("reconcile");
    assert_eq!(action, Action::await_change());
    assert_eq!(
        *agents.calls.lock().expect("lock"),
        vec![format!("inspect a {ARCHIVE}")]
    );
}

#[tokio::test]
async fn kubelet_failure_is_final() {
    let agents = Arc::new(FakeAgents::default());
    let (ctx, mut handle) = context(agents.clone());
    let pc = checkpoint_object();
    let task = tokio::spawn(apply(Arc::new(pc.clone()), ctx));

    let (_, _, send) = expect(&mut handle, "GET", POD_PATH).await;
    reply(send, 200, &running_pod());
    expect_status(&mut handle, &pc).await;
    let (_, _, send) = expect(&mut handle, "POST", KUBELET_PATH).await;
    reply(
        send,
        500,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 500, "message": "checkpointing of team-a/counter/count failed: criu failed"}),
    );
    let status = expect_status(&mut handle, &pc).await;
    assert_eq!(
        reason_of(&status),
        ("False".into(), reason::CHECKPOINT_FAILED.into())
    );
    assert!(status.archive_path.is_none());
    expect_event(&mut handle, "Warning", reason::CHECKPOINT_FAILED).await;
    let action = task.await.expect("join").expect("reconcile");
    assert_eq!(action, Action::await_change());
    assert!(agents.calls.lock().expect("lock").is_empty());
}

#[tokio::test]
async fn missing_pod_waits_and_recorded_archive_is_not_taken_again() {
    // No pod: the condition says so and the controller looks again.
    let (ctx, mut handle) = context(Arc::new(FakeAgents::default()));
    let pc = checkpoint_object();
    let task = tokio::spawn(apply(Arc::new(pc.clone()), ctx));
    let (_, _, send) = expect(&mut handle, "GET", POD_PATH).await;
    reply(
        send,
        404,
        &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
    );
    let status = expect_status(&mut handle, &pc).await;
    assert_eq!(reason_of(&status).1, reason::POD_NOT_FOUND);
    expect_event(&mut handle, "Warning", reason::POD_NOT_FOUND).await;
    let action = task.await.expect("join").expect("reconcile");
    assert_eq!(action, Action::requeue(POD_RETRY));

    // The archive path is recorded and the agent is away: only the agent is asked, and
    // the error retries with backoff.
    let agents = Arc::new(FakeAgents::default());
    *agents.inspect.lock().expect("lock") = Some(Err(AgentError::NotReady {
        node: "a".into(),
        reason: "no client certificate yet".into(),
    }));
    let (ctx, mut handle) = context(agents.clone());
    let mut pc = checkpoint_object();
    pc.status = Some(PodCheckpointStatus {
        node_name: Some("a".into()),
        archive_path: Some(ARCHIVE.into()),
        ..PodCheckpointStatus::default()
    });
    let task = tokio::spawn(apply(Arc::new(pc.clone()), ctx));
    let status = expect_status(&mut handle, &pc).await;
    assert_eq!(reason_of(&status).1, reason::AGENT_UNAVAILABLE);
    expect_event(&mut handle, "Warning", reason::AGENT_UNAVAILABLE).await;
    let err = task.await.expect("join").expect_err("agent away");
    assert_eq!(err.metric_label(), "AgentRpc");
    assert_eq!(
        *agents.calls.lock().expect("lock"),
        vec![format!("inspect a {ARCHIVE}")]
    );
}
