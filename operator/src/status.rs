//! Status transitions of a PodRestore, as pure functions on [`PodRestoreStatus`]. The
//! controller applies the result with server-side apply.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use podrestore_crds::{
    condition::{kind, reason},
    v1alpha1::{ArchiveDigest, CheckpointOrigin, PodRestoreStatus},
};
use podrestore_proto::agent as pb;

use crate::validate::Rejection;

/// The API server's limit on a condition message.
const MAX_MESSAGE: usize = 32 * 1024;

/// Status of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Truth {
    /// `True`.
    True,
    /// `False`.
    False,
    /// `Unknown`.
    Unknown,
}

impl Truth {
    fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
            Self::Unknown => "Unknown",
        }
    }
}

fn truncate(mut message: String) -> String {
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str("...");
    }
    message
}

/// Sets condition `type_`, keeping its `lastTransitionTime` unless its status changes.
/// Returns whether anything (status, reason or message) changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: Truth,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let message = truncate(message.into());
    let status = status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let changed = c.status != status || c.reason != reason || c.message != message;
            if c.status != status {
                c.last_transition_time = Time(now);
            }
            c.status = status.to_owned();
            c.reason = reason.to_owned();
            c.message = message;
            c.observed_generation = generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_owned(),
                status: status.to_owned(),
                reason: reason.to_owned(),
                message,
                observed_generation: generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// The condition `type_`, if set.
pub fn condition<'a>(status: &'a PodRestoreStatus, type_: &str) -> Option<&'a Condition> {
    status.conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the PodRestore reached its end: restored, or failed in a way that is never
/// retried (a PodRestore runs at most once).
pub fn is_finished(status: &PodRestoreStatus) -> bool {
    condition(status, kind::RESTORED).is_some_and(|c| {
        c.status == "True"
            || matches!(
                c.reason.as_str(),
                reason::RESTORE_FAILED
                    | reason::INTERRUPTED
                    | reason::ARCHIVE_DIGEST_MISMATCH
                    | reason::ARCHIVE_TRANSFER_FAILED
            )
    })
}

/// Whether the operator already asked an agent to restore (from then on the request is
/// never validated again, only resumed).
pub fn is_started(status: &PodRestoreStatus) -> bool {
    status.start_time.is_some()
}

/// A refusal before anything ran. Returns whether the status changed.
pub fn rejected(
    status: &mut PodRestoreStatus,
    rejection: &Rejection,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    status.observed_generation = generation;
    let c = &mut status.conditions;
    let a = set_condition(
        c,
        kind::ACCEPTED,
        Truth::False,
        rejection.reason,
        rejection.message.clone(),
        generation,
        now,
    );
    let b = set_condition(
        c,
        kind::RESTORING,
        Truth::False,
        reason::NOT_STARTED,
        "no restore runs until the request is accepted",
        generation,
        now,
    );
    let d = set_condition(
        c,
        kind::RESTORED,
        Truth::False,
        reason::NOT_ACCEPTED,
        format!("not accepted: {}", rejection.reason),
        generation,
        now,
    );
    a || b || d
}

/// The agent could not be reached while checking the request. Returns whether the status
/// changed.
pub fn agent_unavailable(
    status: &mut PodRestoreStatus,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    status.observed_generation = generation;
    let c = &mut status.conditions;
    let a = set_condition(
        c,
        kind::ACCEPTED,
        Truth::Unknown,
        reason::AGENT_UNAVAILABLE,
        message,
        generation,
        now,
    );
    let b = set_condition(
        c,
        kind::RESTORED,
        Truth::False,
        reason::PENDING,
        "waiting for the request to be accepted",
        generation,
        now,
    );
    a || b
}

/// Everything the operator learned when it accepted the request.
#[derive(Clone, Debug, PartialEq)]
pub struct Acceptance {
    /// The node the restore runs on.
    pub node: String,
    /// The target container's runtime ID.
    pub container_id: String,
    /// Where the checkpoint was taken.
    pub origin: CheckpointOrigin,
}

/// The request was accepted and the agent is about to be asked.
pub fn started(
    status: &mut PodRestoreStatus,
    acceptance: Acceptance,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.observed_generation = generation;
    status.node = Some(acceptance.node.clone());
    status.target_container_id = Some(acceptance.container_id);
    status.source = Some(acceptance.origin);
    status.start_time = Some(Time(now));
    let c = &mut status.conditions;
    set_condition(
        c,
        kind::ACCEPTED,
        Truth::True,
        reason::VALIDATED,
        "the target runs and the checkpoint may be restored into it",
        generation,
        now,
    );
    set_condition(
        c,
        kind::RESTORING,
        Truth::True,
        reason::STARTED,
        format!("asked the agent on node {}", acceptance.node),
        generation,
        now,
    );
    set_condition(
        c,
        kind::RESTORED,
        Truth::False,
        reason::IN_PROGRESS,
        "the restore runs",
        generation,
        now,
    );
}

/// The `Restoring` reason for an agent phase.
pub fn phase_reason(phase: pb::Phase) -> &'static str {
    match phase {
        pb::Phase::Transferring => reason::TRANSFERRING,
        pb::Phase::Preparing => reason::PREPARING,
        pb::Phase::Restoring => reason::RESTORING,
        pb::Phase::Accepted | pb::Phase::Unspecified => reason::STARTED,
    }
}

/// A progress report from the agent. Returns whether the status changed (only a new phase
/// or a transfer's next tenth changes it, so that byte counts do not cause a write each).
pub fn progress(
    status: &mut PodRestoreStatus,
    report: &pb::Progress,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let phase = pb::Phase::try_from(report.phase).unwrap_or(pb::Phase::Unspecified);
    let reason = phase_reason(phase);
    let message = if phase == pb::Phase::Transferring && report.bytes_total > 0 {
        transfer_message(report.bytes_done, report.bytes_total)
    } else if report.message.is_empty() {
        reason.to_owned()
    } else {
        report.message.clone()
    };
    let transfer_bytes = phase == pb::Phase::Transferring && report.bytes_total > 0;
    if condition(status, kind::RESTORING)
        .is_some_and(|c| c.reason == reason && (!transfer_bytes || c.message == message))
    {
        return false;
    }
    set_condition(
        &mut status.conditions,
        kind::RESTORING,
        Truth::True,
        reason,
        message,
        generation,
        now,
    )
}

/// The `Restoring` message of a transfer, in steps of a tenth so that a large archive
/// causes a few status writes, not one per chunk.
pub fn transfer_message(done: u64, total: u64) -> String {
    let tenths = (done.min(total) * 10) / total.max(1);
    let shown = total / 10 * tenths;
    let shown = if tenths == 10 { total } else { shown };
    format!(
        "archive transfer: {shown} of {total} bytes ({}%)",
        tenths * 10
    )
}

/// Which final outcome a result is, for conditions, events and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Restored.
    Succeeded,
    /// The agent failed.
    Failed,
    /// The agent lost track of it.
    Interrupted,
    /// The pulled archive's sha256 differed from the source's.
    DigestMismatch,
    /// The archive could not be pulled from its node.
    TransferFailed,
}

impl Outcome {
    /// The `Restored` reason (also the event reason and metric label).
    pub fn reason(self) -> &'static str {
        match self {
            Self::Succeeded => reason::RESTORE_SUCCEEDED,
            Self::Failed => reason::RESTORE_FAILED,
            Self::Interrupted => reason::INTERRUPTED,
            Self::DigestMismatch => reason::ARCHIVE_DIGEST_MISMATCH,
            Self::TransferFailed => reason::ARCHIVE_TRANSFER_FAILED,
        }
    }
}

/// The final result from the agent. Returns its outcome and the message for an event.
pub fn finished(
    status: &mut PodRestoreStatus,
    result: &pb::RestoreResult,
    generation: Option<i64>,
    now: Timestamp,
) -> (Outcome, String) {
    let completed = result
        .finished_at
        .as_ref()
        .and_then(|t| Timestamp::new(t.seconds, t.nanos).ok())
        .unwrap_or(now);
    status.completion_time = Some(Time(completed));
    status.observed_generation = generation;
    let (outcome, message) = match &result.outcome {
        Some(pb::restore_result::Outcome::Success(s)) => {
            status.restored_pid = Some(s.pid);
            if !s.container_id.is_empty() {
                status.target_container_id = Some(s.container_id.clone());
            }
            status.archive = s.archive.as_ref().map(|a| ArchiveDigest {
                sha256: a.sha256.clone(),
                size: i64::try_from(a.size).unwrap_or(i64::MAX),
            });
            if !s.criu_version.is_empty() {
                status.criu_version = Some(s.criu_version.clone());
            }
            (
                Outcome::Succeeded,
                format!(
                    "restored; the tree's root is PID {} on node {}",
                    s.pid,
                    status.node.as_deref().unwrap_or("?")
                ),
            )
        }
        Some(pb::restore_result::Outcome::Failure(f)) => {
            let outcome = match f.reason.as_str() {
                reason::INTERRUPTED => Outcome::Interrupted,
                reason::ARCHIVE_DIGEST_MISMATCH => Outcome::DigestMismatch,
                reason::ARCHIVE_TRANSFER_FAILED => Outcome::TransferFailed,
                _ => Outcome::Failed,
            };
            let mut message = format!("{}: {}", f.reason, f.message);
            if !f.log_excerpt.is_empty() {
                message.push_str("\nCRIU log (last lines):\n");
                message.push_str(&f.log_excerpt);
            }
            (outcome, message)
        }
        None => (
            Outcome::Failed,
            "the agent returned a result without an outcome".to_owned(),
        ),
    };
    let truth = if outcome == Outcome::Succeeded {
        Truth::True
    } else {
        Truth::False
    };
    let c = &mut status.conditions;
    set_condition(
        c,
        kind::RESTORED,
        truth,
        outcome.reason(),
        message.clone(),
        generation,
        now,
    );
    set_condition(
        c,
        kind::RESTORING,
        Truth::False,
        reason::FINISHED,
        "the restore ended",
        generation,
        now,
    );
    (outcome, truncate(message))
}

/// The agent refused to run the restore at all (validation on the node, a cleaned-up
/// UID): final, recorded as a failure.
pub fn refused(
    status: &mut PodRestoreStatus,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    status.completion_time = Some(Time(now));
    status.observed_generation = generation;
    let c = &mut status.conditions;
    set_condition(
        c,
        kind::RESTORED,
        Truth::False,
        reason::RESTORE_FAILED,
        message,
        generation,
        now,
    );
    set_condition(
        c,
        kind::RESTORING,
        Truth::False,
        reason::FINISHED,
        "the agent refused the restore",
        generation,
        now,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).expect("ts")
    }

    #[test]
    fn transfer_progress_writes_status_once_per_tenth() {
        assert_eq!(
            transfer_message(0, 1000),
            "archive transfer: 0 of 1000 bytes (0%)"
        );
        assert_eq!(
            transfer_message(999, 1000),
            "archive transfer: 900 of 1000 bytes (90%)"
        );
        assert_eq!(
            transfer_message(1000, 1000),
            "archive transfer: 1000 of 1000 bytes (100%)"
        );
        let mut status = PodRestoreStatus::default();
        let report = |done| pb::Progress {
            phase: pb::Phase::Transferring.into(),
            bytes_done: done,
            bytes_total: 1000,
            ..pb::Progress::default()
        };
        let changed: Vec<bool> = [0, 50, 120, 150, 1000]
            .into_iter()
            .map(|done| progress(&mut status, &report(done), Some(1), at(10)))
            .collect();
        assert_eq!(changed, vec![true, false, true, false, true]);
        let restoring = condition(&status, kind::RESTORING).map(|c| c.message.clone());
        assert_eq!(
            restoring.as_deref(),
            Some("archive transfer: 1000 of 1000 bytes (100%)")
        );
    }

    #[test]
    fn transition_time_moves_only_with_status() {
        let mut c = Vec::new();
        let steps = [
            // status, reason, message, now, changed, expected lastTransitionTime
            (Truth::Unknown, "Pending", "m", 10, true, 10),
            (Truth::Unknown, "Pending", "m", 20, false, 10),
            (Truth::Unknown, "AgentUnavailable", "m", 30, true, 10),
            (Truth::True, "Validated", "ok", 40, true, 40),
            (Truth::True, "Validated", "ok again", 50, true, 40),
            (Truth::False, "TargetPodNotFound", "gone", 60, true, 60),
        ];
        for (i, (truth, reason, message, now, changed, transition)) in steps.into_iter().enumerate()
        {
            let got = set_condition(
                &mut c,
                kind::ACCEPTED,
                truth,
                reason,
                message,
                Some(2),
                at(now),
            );
            assert_eq!(got, changed, "step {i}");
            assert_eq!(c.len(), 1);
            assert_eq!(c[0].last_transition_time, Time(at(transition)), "step {i}");
            assert_eq!(c[0].reason, reason);
            assert_eq!(c[0].observed_generation, Some(2));
        }
    }

    #[test]
    fn conditions_keep_their_order_and_messages_are_bounded() {
        let mut c = Vec::new();
        set_condition(&mut c, kind::ACCEPTED, Truth::True, "A", "", None, at(1));
        set_condition(
            &mut c,
            kind::RESTORED,
            Truth::False,
            "B",
            "x".repeat(40_000),
            None,
            at(1),
        );
        set_condition(&mut c, kind::ACCEPTED, Truth::False, "C", "", None, at(2));
        let types: Vec<&str> = c.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, vec![kind::ACCEPTED, kind::RESTORED]);
        assert_eq!(c[1].message.len(), MAX_MESSAGE);
    }

    fn success() -> pb::RestoreResult {
        pb::RestoreResult {
            outcome: Some(pb::restore_result::Outcome::Success(pb::RestoreSuccess {
                container_id: "containerd://abc".into(),
                pid: 4242,
                archive: Some(pb::ArchiveDigest {
                    sha256: "ab".into(),
                    size: 10,
                }),
                criu_version: "4.2.1".into(),
            })),
            replayed: false,
            started_at: None,
            finished_at: Some(prost_types::Timestamp {
                seconds: 100,
                nanos: 0,
            }),
        }
    }

    fn failure(reason: &str) -> pb::RestoreResult {
        pb::RestoreResult {
            outcome: Some(pb::restore_result::Outcome::Failure(pb::RestoreFailure {
                reason: reason.into(),
                message: "boom".into(),
                log_excerpt: "Error (criu/cr-restore.c:1)".into(),
            })),
            ..pb::RestoreResult::default()
        }
    }

    #[test]
    fn lifecycle() {
        let mut s = PodRestoreStatus::default();
        assert!(!is_started(&s) && !is_finished(&s));

        let rejection = Rejection {
            reason: reason::TARGET_POD_NOT_FOUND,
            message: "no pod".into(),
        };
        assert!(rejected(&mut s, &rejection, Some(1), at(1)));
        assert!(
            !rejected(&mut s, &rejection, Some(1), at(2)),
            "same rejection again changes nothing"
        );
        assert!(!is_finished(&s), "a rejection is retried, the pod may come");

        started(
            &mut s,
            Acceptance {
                node: "n1".into(),
                container_id: "containerd://abc".into(),
                origin: CheckpointOrigin::default(),
            },
            Some(1),
            at(3),
        );
        assert!(is_started(&s));
        assert_eq!(
            condition(&s, kind::ACCEPTED).map(|c| c.status.as_str()),
            Some("True")
        );

        let report = |phase: pb::Phase| pb::Progress {
            phase: phase.into(),
            ..pb::Progress::default()
        };
        assert!(progress(
            &mut s,
            &report(pb::Phase::Preparing),
            Some(1),
            at(4)
        ));
        assert!(!progress(
            &mut s,
            &report(pb::Phase::Preparing),
            Some(1),
            at(5)
        ));
        assert!(progress(
            &mut s,
            &report(pb::Phase::Restoring),
            Some(1),
            at(6)
        ));

        let (outcome, _) = finished(&mut s, &success(), Some(1), at(7));
        assert_eq!(outcome, Outcome::Succeeded);
        assert!(is_finished(&s));
        assert_eq!(s.restored_pid, Some(4242));
        assert_eq!(s.completion_time, Some(Time(at(100))));
        assert_eq!(s.archive.as_ref().map(|a| a.size), Some(10));
        let restored = condition(&s, kind::RESTORED).expect("restored");
        assert_eq!(
            (restored.status.as_str(), restored.reason.as_str()),
            ("True", reason::RESTORE_SUCCEEDED)
        );
        assert_eq!(
            condition(&s, kind::RESTORING).map(|c| c.status.as_str()),
            Some("False")
        );
    }

    #[test]
    fn failures_are_final_and_carry_the_criu_log() {
        let cases = [
            ("CriuFailed", Outcome::Failed, reason::RESTORE_FAILED),
            ("Interrupted", Outcome::Interrupted, reason::INTERRUPTED),
            (
                "ArchiveDigestMismatch",
                Outcome::DigestMismatch,
                reason::ARCHIVE_DIGEST_MISMATCH,
            ),
            (
                "ArchiveTransferFailed",
                Outcome::TransferFailed,
                reason::ARCHIVE_TRANSFER_FAILED,
            ),
        ];
        for (agent_reason, outcome, condition_reason) in cases {
            let mut s = PodRestoreStatus::default();
            let (got, message) = finished(&mut s, &failure(agent_reason), None, at(1));
            assert_eq!(got, outcome);
            assert!(message.contains("cr-restore.c"), "{message}");
            assert!(is_finished(&s));
            assert_eq!(
                condition(&s, kind::RESTORED).map(|c| c.reason.as_str()),
                Some(condition_reason)
            );
        }
        let mut s = PodRestoreStatus::default();
        refused(&mut s, "cleaned up".into(), None, at(1));
        assert!(is_finished(&s));
    }
}
