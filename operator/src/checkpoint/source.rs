//! A PodRestore's view of a PodCheckpoint: `spec.checkpoint.podCheckpoint` read as the
//! archive it recorded, and the provenance chain written when the restore succeeds.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{Api, Client};

use podrestore_crds::{
    condition::reason,
    podcheckpoint::PodCheckpoint,
    v1alpha1::{ArchiveSource, PodRestore, PodRestoreStatus, Provenance},
};

use super::status::is_finished;
use crate::validate::Rejection;

/// The archive a PodCheckpoint recorded, or why a restore must wait for it (or cannot use
/// it).
pub fn archive_of(name: &str, pc: Option<&PodCheckpoint>) -> Result<ArchiveSource, Rejection> {
    let reject = |reason, message: String| Rejection { reason, message };
    let pc = pc.ok_or_else(|| {
        reject(
            reason::CHECKPOINT_NOT_FOUND,
            format!(
                "PodCheckpoint {name} does not exist in this namespace; create it or fix spec.checkpoint.podCheckpoint.name"
            ),
        )
    })?;
    let status = pc.status.clone().unwrap_or_default();
    match (&status.node_name, &status.archive_path, &status.sha256) {
        (Some(node), Some(path), Some(_)) if is_finished(&status) => Ok(ArchiveSource {
            node_name: node.clone(),
            path: path.clone(),
        }),
        _ if is_finished(&status) => Err(reject(
            reason::CHECKPOINT_NOT_READY,
            format!(
                "PodCheckpoint {name} failed; it has no archive to restore (see its Checkpointed condition)"
            ),
        )),
        _ => Err(reject(
            reason::CHECKPOINT_NOT_READY,
            format!("PodCheckpoint {name} is not Checkpointed yet; the restore waits for it"),
        )),
    }
}

/// `pr` as the controller acts on it: a PodCheckpoint source becomes the archive it
/// recorded (in `spec.checkpoint.archive`, the name kept in `podCheckpoint`). The outer
/// error is the API's; the inner one says why the restore waits.
pub async fn resolve(
    client: &Client,
    namespace: &str,
    pr: Arc<PodRestore>,
) -> Result<Result<Arc<PodRestore>, (Arc<PodRestore>, Rejection)>, kube::Error> {
    let Some(named) = pr.spec.checkpoint.pod_checkpoint.clone() else {
        return Ok(Ok(pr));
    };
    let api: Api<PodCheckpoint> = Api::namespaced(client.clone(), namespace);
    let pc = api.get_opt(&named.name).await?;
    Ok(match archive_of(&named.name, pc.as_ref()) {
        Ok(archive) => {
            let mut resolved = (*pr).clone();
            resolved.spec.checkpoint.archive = Some(archive);
            Ok(Arc::new(resolved))
        }
        Err(rejection) => Err((pr, rejection)),
    })
}

/// The chain from the checkpointed pod to the restored one, from what the status recorded.
pub fn provenance(
    pr: &PodRestore,
    archive: &ArchiveSource,
    status: &PodRestoreStatus,
) -> Provenance {
    let origin = status.source.clone().unwrap_or_default();
    Provenance {
        pod_checkpoint: pr
            .spec
            .checkpoint
            .pod_checkpoint
            .as_ref()
            .map(|p| p.name.clone()),
        source_namespace: origin.namespace,
        source_pod: origin.pod_name,
        source_container: origin.container,
        source_node: Some(archive.node_name.clone()),
        checkpoint_time: origin.checkpoint_time,
        archive_sha256: status.archive.as_ref().map(|a| a.sha256.clone()),
        target_pod: Some(pr.spec.target.pod_name.clone()),
        target_node: status.node.clone(),
        restore_time: status.completion_time.clone().map(|t| Time(t.0)),
        criu_version: status.criu_version.clone(),
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;
    use podrestore_crds::{
        podcheckpoint::{PodCheckpointSpec, PodCheckpointStatus},
        v1alpha1::{
            ArchiveDigest, CheckpointOrigin, CheckpointSource, PodCheckpointRef, PodRestoreSpec,
            RestoreTarget,
        },
    };
    use podrestore_proto::agent as pb;

    use super::*;
    use crate::checkpoint::status::{failed, recorded, written};

    fn checkpoint(status: PodCheckpointStatus) -> PodCheckpoint {
        let mut pc = PodCheckpoint::new(
            "snap",
            PodCheckpointSpec {
                pod_name: "counter".into(),
                container: None,
                timeout_seconds: 60,
            },
        );
        pc.status = Some(status);
        pc
    }

    #[test]
    fn restore_waits_for_a_checkpointed_podcheckpoint() {
        let now = Timestamp::UNIX_EPOCH;
        assert_eq!(
            archive_of("snap", None).expect_err("missing").reason,
            reason::CHECKPOINT_NOT_FOUND
        );
        let mut status = PodCheckpointStatus {
            node_name: Some("a".into()),
            ..PodCheckpointStatus::default()
        };
        written(&mut status, "/ckpt/x.tar".into(), Some(1), now);
        assert_eq!(
            archive_of("snap", Some(&checkpoint(status.clone())))
                .expect_err("not yet")
                .reason,
            reason::CHECKPOINT_NOT_READY
        );
        let mut failed_status = status.clone();
        failed(&mut failed_status, "no".into(), Some(1), now);
        let rej = archive_of("snap", Some(&checkpoint(failed_status))).expect_err("failed");
        assert!(rej.message.contains("failed"), "{}", rej.message);
        let info = pb::InspectResponse {
            sha256: "aa".repeat(32),
            size: 1,
            ..pb::InspectResponse::default()
        };
        recorded(&mut status, &info, Some(1), now);
        assert_eq!(
            archive_of("snap", Some(&checkpoint(status))).expect("ready"),
            ArchiveSource {
                node_name: "a".into(),
                path: "/ckpt/x.tar".into()
            }
        );
    }

    #[test]
    fn provenance_links_source_archive_and_target() {
        let pr = PodRestore::new(
            "r",
            PodRestoreSpec {
                checkpoint: CheckpointSource {
                    pod_checkpoint: Some(PodCheckpointRef {
                        name: "snap".into(),
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
        let at = Time(Timestamp::UNIX_EPOCH);
        let status = PodRestoreStatus {
            node: Some("b".into()),
            source: Some(CheckpointOrigin {
                namespace: Some("team-a".into()),
                pod_name: Some("counter".into()),
                container: Some("count".into()),
                checkpoint_time: Some(at.clone()),
            }),
            archive: Some(ArchiveDigest {
                sha256: "bb".repeat(32),
                size: 9,
            }),
            criu_version: Some("4.2.1".into()),
            completion_time: Some(at.clone()),
            ..PodRestoreStatus::default()
        };
        let archive = ArchiveSource {
            node_name: "a".into(),
            path: "/ckpt/x.tar".into(),
        };
        let chain = provenance(&pr, &archive, &status);
        assert_eq!(chain.pod_checkpoint.as_deref(), Some("snap"));
        assert_eq!(chain.source_pod.as_deref(), Some("counter"));
        assert_eq!(chain.source_namespace.as_deref(), Some("team-a"));
        assert_eq!(chain.source_node.as_deref(), Some("a"));
        assert_eq!(chain.target_node.as_deref(), Some("b"));
        assert_eq!(chain.target_pod.as_deref(), Some("forensic"));
        assert_eq!(chain.archive_sha256, Some("bb".repeat(32)));
        assert_eq!(chain.restore_time, Some(at));
        assert_eq!(chain.criu_version.as_deref(), Some("4.2.1"));
    }
}
