//! What the schema cannot check: the target pod as it is now, where the checkpoint lies,
//! and whether the checkpoint's namespace may be restored here. Pure functions; the
//! controller fetches what they look at.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;

use podrestore_crds::{
    condition::reason,
    v1alpha1::{ArchiveSource, PodRestore},
};

/// A refusal, reported as `Accepted=False` with this reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Stable CamelCase reason from [`podrestore_crds::condition::reason`].
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

impl Rejection {
    fn new(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// The target container, resolved from the pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The pod's node.
    pub node: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// The container's name.
    pub container: String,
    /// The container's runtime ID (`<runtime>://<id>`).
    pub container_id: String,
}

/// Resolves the target pod and container of `pr`, given the pod of that name in the
/// PodRestore's namespace (if any).
pub fn target(pr: &PodRestore, pod: Option<&Pod>) -> Result<Target, Rejection> {
    let namespace = pr.namespace().unwrap_or_default();
    let name = &pr.spec.target.pod_name;
    let pod = pod.ok_or_else(|| {
        Rejection::new(
            reason::TARGET_POD_NOT_FOUND,
            format!("pod {namespace}/{name} does not exist; create it or fix spec.target.podName"),
        )
    })?;
    // A PodRestore may only target pods in its own namespace.
    if pod.namespace().as_deref() != Some(namespace.as_str()) {
        return Err(Rejection::new(
            reason::TARGET_POD_NOT_FOUND,
            format!("pod {name} is not in namespace {namespace}"),
        ));
    }
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
    let (Some("Running"), Some(node)) = (phase, node) else {
        return Err(Rejection::new(
            reason::TARGET_POD_NOT_RUNNING,
            format!(
                "pod {namespace}/{name} is {}, not Running; the restore waits for it",
                phase.unwrap_or("not scheduled")
            ),
        ));
    };
    let containers: Vec<&str> = pod
        .spec
        .as_ref()
        .map(|s| s.containers.iter().map(|c| c.name.as_str()).collect())
        .unwrap_or_default();
    let container = match &pr.spec.target.container {
        Some(wanted) if containers.contains(&wanted.as_str()) => wanted.clone(),
        Some(wanted) => {
            return Err(Rejection::new(
                reason::TARGET_CONTAINER_NOT_FOUND,
                format!(
                    "pod {namespace}/{name} has no container {wanted} (it has: {})",
                    containers.join(", ")
                ),
            ));
        }
        None => match containers.as_slice() {
            [only] => (*only).to_owned(),
            _ => {
                return Err(Rejection::new(
                    reason::TARGET_CONTAINER_AMBIGUOUS,
                    format!(
                        "pod {namespace}/{name} has {} containers ({}); name one in spec.target.container",
                        containers.len(),
                        containers.join(", ")
                    ),
                ));
            }
        },
    };
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == container));
    let running = status
        .and_then(|s| s.state.as_ref())
        .is_some_and(|state| state.running.is_some());
    let container_id = status.and_then(|s| s.container_id.clone());
    let (true, Some(container_id)) = (running, container_id) else {
        return Err(Rejection::new(
            reason::TARGET_CONTAINER_NOT_RUNNING,
            format!("container {container} of pod {namespace}/{name} is not running yet"),
        ));
    };
    Ok(Target {
        node,
        pod_uid: pod.uid().unwrap_or_default(),
        container,
        container_id,
    })
}

/// The checkpoint source of `pr`. An archive on another node than the target's is pulled
/// by the target node's agent from the source node's agent.
pub fn archive<'a>(pr: &'a PodRestore, _target_node: &str) -> Result<&'a ArchiveSource, Rejection> {
    let archive = pr.spec.checkpoint.archive.as_ref().ok_or_else(|| {
        Rejection::new(
            reason::ARCHIVE_REJECTED,
            "spec.checkpoint names no source this operator supports",
        )
    })?;
    Ok(archive)
}

/// Whether a checkpoint taken in `source` may be restored by a PodRestore in `restore`:
/// always within one namespace, across namespaces only from namespaces the administrator
/// allowed. Fails closed when the archive does not say where it was taken.
pub fn source_namespace(source: &str, restore: &str, allowed: &[String]) -> Result<(), Rejection> {
    if source.is_empty() {
        return Err(Rejection::new(
            reason::SOURCE_NAMESPACE_NOT_ALLOWED,
            "the archive does not record the namespace it was taken in, so it cannot be authorized",
        ));
    }
    if source == restore || allowed.iter().any(|a| a == source) {
        return Ok(());
    }
    Err(Rejection::new(
        reason::SOURCE_NAMESPACE_NOT_ALLOWED,
        format!(
            "the checkpoint was taken in namespace {source}; a PodRestore in {restore} may only restore checkpoints from its own namespace unless the operator's --allowed-source-namespaces lists {source}"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        Container, ContainerState, ContainerStateRunning, ContainerStateWaiting, ContainerStatus,
        PodSpec, PodStatus,
    };
    use kube::api::ObjectMeta;
    use podrestore_crds::v1alpha1::{CheckpointSource, PodRestoreSpec, RestoreTarget};

    use super::*;

    fn restore(container: Option<&str>, archive_node: &str) -> PodRestore {
        let mut pr = PodRestore::new(
            "r",
            PodRestoreSpec {
                checkpoint: CheckpointSource {
                    archive: Some(ArchiveSource {
                        node_name: archive_node.into(),
                        path: "/var/lib/kubelet/checkpoints/c.tar".into(),
                    }),
                    ..CheckpointSource::default()
                },
                target: RestoreTarget {
                    pod_name: "forensic".into(),
                    container: container.map(str::to_owned),
                },
                options: Default::default(),
            },
        );
        pr.metadata.namespace = Some("team-a".into());
        pr
    }

    fn running(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            container_id: Some(format!("containerd://{name}-id")),
            state: Some(ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    fn waiting(name: &str) -> ContainerStatus {
        ContainerStatus {
            name: name.into(),
            state: Some(ContainerState {
                waiting: Some(ContainerStateWaiting::default()),
                ..ContainerState::default()
            }),
            ..ContainerStatus::default()
        }
    }

    fn pod(
        namespace: &str,
        phase: &str,
        node: Option<&str>,
        containers: &[ContainerStatus],
    ) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("forensic".into()),
                namespace: Some(namespace.into()),
                uid: Some("pod-uid".into()),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(str::to_owned),
                containers: containers
                    .iter()
                    .map(|c| Container {
                        name: c.name.clone(),
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                container_statuses: Some(containers.to_vec()),
                ..PodStatus::default()
            }),
        }
    }

    #[test]
    fn targets() {
        let one = [running("sleeper")];
        let two = [running("sleeper"), running("sidecar")];
        type Case = (
            &'static str,
            PodRestore,
            Option<Pod>,
            Result<&'static str, &'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "single container",
                restore(None, "n1"),
                Some(pod("team-a", "Running", Some("n1"), &one)),
                Ok("sleeper"),
            ),
            (
                "named container",
                restore(Some("sidecar"), "n1"),
                Some(pod("team-a", "Running", Some("n1"), &two)),
                Ok("sidecar"),
            ),
            (
                "no pod",
                restore(None, "n1"),
                None,
                Err(reason::TARGET_POD_NOT_FOUND),
            ),
            (
                "other namespace",
                restore(None, "n1"),
                Some(pod("team-b", "Running", Some("n1"), &one)),
                Err(reason::TARGET_POD_NOT_FOUND),
            ),
            (
                "pending",
                restore(None, "n1"),
                Some(pod("team-a", "Pending", Some("n1"), &one)),
                Err(reason::TARGET_POD_NOT_RUNNING),
            ),
            (
                "unscheduled",
                restore(None, "n1"),
                Some(pod("team-a", "Running", None, &one)),
                Err(reason::TARGET_POD_NOT_RUNNING),
            ),
            (
                "succeeded",
                restore(None, "n1"),
                Some(pod("team-a", "Succeeded", Some("n1"), &one)),
                Err(reason::TARGET_POD_NOT_RUNNING),
            ),
            (
                "ambiguous",
                restore(None, "n1"),
                Some(pod("team-a", "Running", Some("n1"), &two)),
                Err(reason::TARGET_CONTAINER_AMBIGUOUS),
            ),
            (
                "unknown container",
                restore(Some("nope"), "n1"),
                Some(pod("team-a", "Running", Some("n1"), &one)),
                Err(reason::TARGET_CONTAINER_NOT_FOUND),
            ),
            (
                "container waiting",
                restore(None, "n1"),
                Some(pod("team-a", "Running", Some("n1"), &[waiting("sleeper")])),
                Err(reason::TARGET_CONTAINER_NOT_RUNNING),
            ),
        ];
        for (case, pr, pod, want) in cases {
            let got = target(&pr, pod.as_ref());
            match (got, want) {
                (Ok(t), Ok(container)) => {
                    assert_eq!(t.container, container, "{case}");
                    assert_eq!(t.node, "n1", "{case}");
                    assert_eq!(
                        t.container_id,
                        format!("containerd://{container}-id"),
                        "{case}"
                    );
                }
                (Err(rej), Err(reason)) => {
                    assert_eq!(rej.reason, reason, "{case}: {}", rej.message)
                }
                (got, want) => panic!("{case}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn archive_may_be_on_another_node() {
        assert!(archive(&restore(None, "n1"), "n1").is_ok());
        assert!(
            archive(&restore(None, "n2"), "n1").is_ok(),
            "pulled from n2"
        );
        let mut no_source = restore(None, "n1");
        no_source.spec.checkpoint = CheckpointSource::default();
        assert_eq!(
            archive(&no_source, "n1").map(|_| ()),
            Err(Rejection::new(
                reason::ARCHIVE_REJECTED,
                "spec.checkpoint names no source this operator supports"
            ))
        );
    }

    #[test]
    fn source_namespaces() {
        let allowed = vec!["shared".to_owned()];
        let cases = [
            ("team-a", "team-a", true),
            ("shared", "team-a", true),
            ("team-b", "team-a", false),
            ("", "team-a", false),
        ];
        for (source, restore, ok) in cases {
            let got = source_namespace(source, restore, &allowed);
            assert_eq!(got.is_ok(), ok, "{source} -> {restore}");
            if let Err(rej) = got {
                assert_eq!(rej.reason, reason::SOURCE_NAMESPACE_NOT_ALLOWED);
            }
        }
    }
}
