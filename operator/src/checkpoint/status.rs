//! What the PodCheckpoint controller decides, as pure functions: which container to
//! checkpoint, the kubelet's answer, and the status transitions.

use jiff::Timestamp;
use k8s_openapi::{
    api::core::v1::Pod,
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
};
use kube::ResourceExt;

use podrestore_crds::podcheckpoint::{
    CheckpointedPod, PodCheckpoint, PodCheckpointStatus,
    condition::{CHECKPOINTED, reason},
};
use podrestore_proto::agent as pb;

use crate::{
    status::{Truth, set_condition},
    validate::Rejection,
};

/// The container to checkpoint, resolved from the pod.
#[derive(Clone, Debug, PartialEq)]
pub struct Source {
    /// The pod's node.
    pub node: String,
    /// The pod.
    pub pod: CheckpointedPod,
    /// The container's name.
    pub container: String,
}

/// Resolves the pod and container of `pc`, given the pod of that name in the
/// PodCheckpoint's namespace (if any).
pub fn source(pc: &PodCheckpoint, pod: Option<&Pod>) -> Result<Source, Rejection> {
    let namespace = pc.namespace().unwrap_or_default();
    let name = &pc.spec.pod_name;
    let reject = |reason, message: String| Rejection { reason, message };
    let pod = pod.ok_or_else(|| {
        reject(
            reason::POD_NOT_FOUND,
            format!("pod {namespace}/{name} does not exist; create it or fix spec.podName"),
        )
    })?;
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let (Some("Running"), Some(node)) = (phase, node) else {
        return Err(reject(
            reason::POD_NOT_RUNNING,
            format!(
                "pod {namespace}/{name} is {}, not Running; the checkpoint waits for it",
                phase.unwrap_or("not scheduled")
            ),
        ));
    };
    let containers: Vec<&str> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let container = match (&pc.spec.container, containers.as_slice()) {
        (Some(wanted), _) if containers.contains(&wanted.as_str()) => wanted.clone(),
        (Some(wanted), _) => {
            return Err(reject(
                reason::CONTAINER_NOT_FOUND,
                format!(
                    "pod {namespace}/{name} has no container {wanted}; it has {}",
                    containers.join(", ")
                ),
            ));
        }
        (None, [only]) => (*only).to_owned(),
        (None, _) => {
            return Err(reject(
                reason::CONTAINER_AMBIGUOUS,
                format!(
                    "pod {namespace}/{name} has containers {}; name one in spec.container",
                    containers.join(", ")
                ),
            ));
        }
    };
    Ok(Source {
        node,
        pod: CheckpointedPod {
            name: name.clone(),
            namespace,
            uid: pod.uid().unwrap_or_default(),
        },
        container,
    })
}

/// The kubelet checkpoint API through the API server's node proxy:
/// `POST /api/v1/nodes/{node}/proxy/checkpoint/{namespace}/{pod}/{container}?timeout=N`.
pub fn kubelet_path(source: &Source, timeout_seconds: i32) -> String {
    format!(
        "/api/v1/nodes/{}/proxy/checkpoint/{}/{}/{}?timeout={}",
        source.node, source.pod.namespace, source.pod.name, source.container, timeout_seconds
    )
}

/// The archive path in the kubelet's answer `{"items": ["<path>"]}`.
pub fn archive_path(reply: &serde_json::Value) -> Option<String> {
    reply["items"]
        .as_array()?
        .iter()
        .find_map(|item| item.as_str().filter(|p| p.starts_with('/')))
        .map(str::to_owned)
}

/// The `Checkpointed` condition.
pub fn condition(status: &PodCheckpointStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == CHECKPOINTED)
}

/// Whether nothing is left to do: the archive is recorded, or the checkpoint failed.
pub fn is_finished(status: &PodCheckpointStatus) -> bool {
    condition(status).is_some_and(|c| {
        c.status == "True" || (c.status == "False" && c.reason == reason::CHECKPOINT_FAILED)
    })
}

/// The checkpoint cannot start yet (or the request is wrong): records why. Returns whether
/// the status changed.
pub fn waiting(
    status: &mut PodCheckpointStatus,
    rejection: &Rejection,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    status.observed_generation = generation;
    set_condition(
        &mut status.conditions,
        CHECKPOINTED,
        Truth::False,
        rejection.reason,
        rejection.message.clone(),
        generation,
        now,
    )
}

/// The kubelet is about to be asked: records the pod, node and container.
pub fn checkpointing(
    status: &mut PodCheckpointStatus,
    source: &Source,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.observed_generation = generation;
    status.node_name = Some(source.node.clone());
    status.pod = Some(source.pod.clone());
    status.container = Some(source.container.clone());
    set_condition(
        &mut status.conditions,
        CHECKPOINTED,
        Truth::False,
        reason::CHECKPOINTING,
        format!(
            "asking the kubelet on node {} to checkpoint container {} of pod {}/{}",
            source.node, source.container, source.pod.namespace, source.pod.name
        ),
        generation,
        now,
    );
}

/// The kubelet wrote the archive at `path`: recorded at once, so that a restart never asks
/// the kubelet again.
pub fn written(
    status: &mut PodCheckpointStatus,
    path: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.observed_generation = generation;
    status.checkpoint_time = Some(Time(now));
    set_condition(
        &mut status.conditions,
        CHECKPOINTED,
        Truth::False,
        reason::CHECKPOINTING,
        format!("the kubelet wrote {path}; reading its digest through the node's agent"),
        generation,
        now,
    );
    status.archive_path = Some(path);
}

/// The node's agent read the archive: records its digest and what it says of itself.
pub fn recorded(
    status: &mut PodCheckpointStatus,
    info: &pb::InspectResponse,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.observed_generation = generation;
    status.sha256 = Some(info.sha256.clone()).filter(|s| !s.is_empty());
    status.size = i64::try_from(info.size).ok();
    if let Some(at) = info
        .checkpointed_at
        .as_ref()
        .and_then(|t| Timestamp::new(t.seconds, t.nanos).ok())
    {
        status.checkpoint_time = Some(Time(at));
    }
    status.criu_version = Some(info.criu_version.clone()).filter(|s| !s.is_empty());
    let path = status.archive_path.clone().unwrap_or_default();
    let node = status.node_name.clone().unwrap_or_default();
    set_condition(
        &mut status.conditions,
        CHECKPOINTED,
        Truth::True,
        reason::CHECKPOINT_SUCCEEDED,
        format!("archive {path} on node {node}, {} bytes", info.size),
        generation,
        now,
    );
}

/// The node's agent cannot be reached yet. Returns whether the status changed.
pub fn agent_unavailable(
    status: &mut PodCheckpointStatus,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    status.observed_generation = generation;
    set_condition(
        &mut status.conditions,
        CHECKPOINTED,
        Truth::False,
        reason::AGENT_UNAVAILABLE,
        message,
        generation,
        now,
    )
}

/// The checkpoint failed for good.
pub fn failed(
    status: &mut PodCheckpointStatus,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.observed_generation = generation;
    set_condition(
        &mut status.conditions,
        CHECKPOINTED,
        Truth::False,
        reason::CHECKPOINT_FAILED,
        message,
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus};
    use kube::api::ObjectMeta;
    use podrestore_crds::podcheckpoint::PodCheckpointSpec;
    use serde_json::json;

    use super::*;

    fn checkpoint(container: Option<&str>) -> PodCheckpoint {
        let mut pc = PodCheckpoint::new(
            "c",
            PodCheckpointSpec {
                pod_name: "counter".into(),
                container: container.map(Into::into),
                timeout_seconds: 60,
            },
        );
        pc.metadata.namespace = Some("team-a".into());
        pc
    }

    fn pod(phase: &str, node: Option<&str>, containers: &[&str]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("counter".into()),
                namespace: Some("team-a".into()),
                uid: Some("pod-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(Into::into),
                containers: containers
                    .iter()
                    .map(|name| Container {
                        name: (*name).into(),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..PodStatus::default()
            }),
        }
    }

    /// Container asked for, the pod, and the container or reason expected.
    type Case = (
        Option<&'static str>,
        Option<Pod>,
        Result<&'static str, &'static str>,
    );

    #[test]
    fn source_resolves_pod_node_and_container() {
        let cases: &[Case] = &[
            (None, None, Err(reason::POD_NOT_FOUND)),
            (
                None,
                Some(pod("Pending", None, &["count"])),
                Err(reason::POD_NOT_RUNNING),
            ),
            (
                None,
                Some(pod("Running", Some("a"), &["count"])),
                Ok("count"),
            ),
            (
                Some("side"),
                Some(pod("Running", Some("a"), &["count", "side"])),
                Ok("side"),
            ),
            (
                Some("other"),
                Some(pod("Running", Some("a"), &["count"])),
                Err(reason::CONTAINER_NOT_FOUND),
            ),
            (
                None,
                Some(pod("Running", Some("a"), &["count", "side"])),
                Err(reason::CONTAINER_AMBIGUOUS),
            ),
        ];
        for (container, pod, want) in cases {
            let got = source(&checkpoint(*container), pod.as_ref());
            match (got, want) {
                (Ok(s), Ok(c)) => {
                    assert_eq!(s.container, *c);
                    assert_eq!(s.node, "a");
                    assert_eq!(
                        s.pod,
                        CheckpointedPod {
                            name: "counter".into(),
                            namespace: "team-a".into(),
                            uid: "pod-uid".into()
                        }
                    );
                }
                (Err(r), Err(reason)) => assert_eq!(r.reason, *reason, "{}", r.message),
                (got, want) => panic!("{container:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn kubelet_path_goes_through_the_node_proxy() {
        let s = source(
            &checkpoint(None),
            Some(&pod("Running", Some("a"), &["count"])),
        )
        .expect("source");
        assert_eq!(
            kubelet_path(&s, 30),
            "/api/v1/nodes/a/proxy/checkpoint/team-a/counter/count?timeout=30"
        );
    }

    #[test]
    fn archive_path_reads_the_kubelet_answer() {
        let reply = json!({"items": ["/var/lib/kubelet/checkpoints/x.tar"]});
        assert_eq!(
            archive_path(&reply).as_deref(),
            Some("/var/lib/kubelet/checkpoints/x.tar")
        );
        assert_eq!(archive_path(&json!({"items": []})), None);
        assert_eq!(archive_path(&json!({"items": ["relative.tar"]})), None);
        assert_eq!(archive_path(&json!("nonsense")), None);
    }

    #[test]
    fn lifecycle_ends_checkpointed_with_digest() {
        let now = Timestamp::UNIX_EPOCH;
        let mut status = PodCheckpointStatus::default();
        assert!(!is_finished(&status));
        let s = source(
            &checkpoint(None),
            Some(&pod("Running", Some("a"), &["count"])),
        )
        .expect("source");
        checkpointing(&mut status, &s, Some(1), now);
        assert_eq!(status.node_name.as_deref(), Some("a"));
        assert_eq!(status.container.as_deref(), Some("count"));
        assert!(!is_finished(&status));
        written(&mut status, "/ckpt/x.tar".into(), Some(1), now);
        assert_eq!(status.archive_path.as_deref(), Some("/ckpt/x.tar"));
        assert!(!is_finished(&status));
        let info = pb::InspectResponse {
            size: 42,
            sha256: "ab".repeat(32),
            criu_version: "4.2.1".into(),
            checkpointed_at: Some(prost_types::Timestamp {
                seconds: 1000,
                nanos: 0,
            }),
            ..pb::InspectResponse::default()
        };
        recorded(&mut status, &info, Some(1), now);
        assert!(is_finished(&status));
        let c = condition(&status).expect("condition");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("True", reason::CHECKPOINT_SUCCEEDED)
        );
        assert_eq!(status.size, Some(42));
        assert_eq!(status.sha256.as_deref(), Some("ab".repeat(32).as_str()));
        assert_eq!(status.criu_version.as_deref(), Some("4.2.1"));
        assert_eq!(
            status.checkpoint_time,
            Some(Time(Timestamp::new(1000, 0).expect("time")))
        );
    }

    #[test]
    fn waiting_reports_changes_once_and_failure_is_final() {
        let now = Timestamp::UNIX_EPOCH;
        let mut status = PodCheckpointStatus::default();
        let r = Rejection {
            reason: reason::POD_NOT_RUNNING,
            message: "pending".into(),
        };
        assert!(waiting(&mut status, &r, Some(1), now));
        assert!(!waiting(&mut status, &r, Some(1), now));
        assert!(!is_finished(&status));
        assert!(agent_unavailable(&mut status, "down".into(), Some(1), now));
        assert!(!is_finished(&status));
        failed(&mut status, "kubelet said no".into(), Some(1), now);
        assert!(is_finished(&status));
    }
}
