//! runc as the reference peer for restores into a pod's namespaces.
//!
//! A busybox container runs in sandbox A's PID, network, IPC and UTS namespaces,
//! is checkpointed by `runc checkpoint` and restored by `runc restore` with its
//! config naming sandbox B's namespaces instead. Where the restored process
//! lands is recorded as a `Landing`; a restore of the same images by the agent
//! must land the same way (`support::peer` keeps the images for that).
//!
//! Needs root, runc and CRIU 4.2.1 (e2e/setup/criu.sh); fails when they are missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;

use podrestore_agent::sandbox::runc::OciNamespace;
use support::peer::Peer;
use support::{Landing, Place};

/// runc's restore into external namespaces, the behaviour the agent reproduces:
/// network and PID through CRIU's inherit-fd, IPC and UTS joined, a new mount
/// namespace, the PID it had inside the source sandbox.
#[test]
fn runc_restores_a_checkpoint_into_another_sandboxes_namespaces() {
    let ground = support::ground();
    let source = support::sandbox("peer-a");
    let target = support::sandbox("peer-b");
    let mut peer = Peer::new(&ground);

    let checkpoint = peer.checkpoint_counter(&ground, &source, "counter");
    // The container and everything of it left the source sandbox with the
    // checkpoint, while the sandbox itself lives on.
    support::assert_holds_only_init(&source);
    let source_lock = source.criu_lock_rules().unwrap();
    eprintln!(
        "after runc checkpoint, CRIU lock rules in the source netns: {}",
        if source_lock.is_empty() {
            "none".to_owned()
        } else {
            source_lock.join(" | ")
        }
    );

    let restored = peer.restore(&checkpoint, &target);
    let landing = peer.landing(&restored, &source, &target);
    eprintln!(
        "runc restore landing (reference): {}",
        serde_json::to_string(&landing).unwrap()
    );
    assert_eq!(
        landing,
        Landing {
            network: Place::Target,
            pid: Place::Target,
            ipc: Place::Target,
            uts: Place::Target,
            own_mount_namespace: true,
            pid_inside: checkpoint.pid_inside,
        },
        "restore log:\n{}",
        peer.restore_log(&restored.id)
    );
    support::assert_in_sandbox(restored.pid, &target);
    checkpoint.counter.assert_continues_from(checkpoint.last);
    support::assert_holds_only_init(&source);
    support::assert_no_criu_lock(&target);

    // The images stay usable: a second restore of the same images lands the
    // same way and again goes on from the checkpointed number.
    peer.remove(&restored.id);
    fs::remove_file(&checkpoint.counter.file).unwrap();
    let again = peer.restore(&checkpoint, &target);
    assert_eq!(peer.landing(&again, &source, &target), landing);
    checkpoint.counter.assert_continues_from(checkpoint.last);
    peer.remove(&again.id);

    drop(peer);
    support::teardown(source);
    support::teardown(target);
}

/// runc refuses a target with a cgroup namespace path before CRIU runs, and the
/// target sandbox is left as it was.
#[test]
fn runc_refuses_to_restore_into_a_cgroup_namespace_path() {
    let ground = support::ground();
    let source = support::sandbox("peer-cg-a");
    let target = support::sandbox("peer-cg-b");
    let mut peer = Peer::new(&ground);
    let checkpoint = peer.checkpoint_counter(&ground, &source, "cgroupns");

    let mut namespaces = OciNamespace::for_sandbox(&target);
    namespaces.push(OciNamespace::new(
        "cgroup",
        Some(format!("/proc/{}/ns/cgroup", target.init_pid()).into()),
    ));
    let err = peer
        .try_restore(&checkpoint, namespaces)
        .expect_err("runc restores into a cgroup namespace path");
    eprintln!("runc's refusal (reference): {err}");
    assert!(
        err.to_string()
            .contains("Do not know how to handle namespace NEWCGROUP"),
        "{err}"
    );
    support::assert_holds_only_init(&target);
    support::assert_no_criu_lock(&target);
    checkpoint
        .counter
        .assert_stopped(std::time::Duration::from_millis(200));

    drop(peer);
    support::teardown(source);
    support::teardown(target);
}
