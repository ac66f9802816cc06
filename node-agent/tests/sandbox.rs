//! The test ground itself: sandboxes look like pods, workloads are dumpable, and
//! teardown leaves nothing. The CRIU command lines of `sandbox::criu_cli` move a
//! counter and an HTTP server from one sandbox to another, which shows the
//! ground is what a checkpoint and restore need.
//!
//! Needs root, busybox, util-linux, iproute2, iptables, nftables and CRIU 4.2.1
//! (e2e/setup/criu.sh); fails when any is missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use podrestore_agent::sandbox::criu_cli::{DumpCli, RestoreCli};
use podrestore_agent::sandbox::{kill_and_reap, procfs};
use support::{Landing, Place, SandboxNs, WorkloadRoot};

#[test]
fn sandbox_is_pod_like_and_teardown_leaves_nothing() {
    let _ground = support::ground();
    let sandbox = support::sandbox("shape");
    let init = sandbox.init_pid();
    assert_eq!(
        procfs::nspids(init).last(),
        Some(&1),
        "init is PID 1 inside"
    );
    let me = std::process::id();
    for kind in SandboxNs::ALL {
        let host = procfs::ns_inode(me, kind.proc_name()).unwrap();
        assert_ne!(
            sandbox.ns_inode(kind),
            host,
            "{} is the host's",
            kind.oci_name()
        );
        assert_eq!(sandbox.members(kind), [init], "{}", kind.oci_name());
        let path = sandbox.ns_path(kind);
        assert_eq!(
            std::fs::metadata(&path)
                .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
                .unwrap(),
            sandbox.ns_inode(kind),
            "{}",
            path.display()
        );
    }
    assert!(
        sandbox
            .ns_path(SandboxNs::Network)
            .starts_with(sandbox.run_dir())
    );
    let lo = sandbox
        .run_in_netns("ip", &["-o", "link", "show", "lo"])
        .unwrap();
    assert!(
        String::from_utf8_lossy(&lo.stdout).contains("UP"),
        "loopback is down"
    );
    support::assert_no_criu_lock(&sandbox);
    support::teardown(sandbox);
}

#[test]
fn uplink_reaches_the_sandbox_and_goes_with_it() {
    let _ground = support::ground();
    let sandbox = support::sandbox_with_uplink("uplink", 17);
    let uplink = sandbox.uplink_netns().expect("uplink").to_path_buf();
    let busybox = support::require_tool("busybox").unwrap();
    let ping = std::process::Command::new("nsenter")
        .arg(format!("--net={}", uplink.display()))
        .arg("--")
        .arg(busybox)
        .args(["ping", "-c", "1", "-W", "5", "10.231.17.2"])
        .output()
        .unwrap();
    assert!(
        ping.status.success(),
        "{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    let footprint = sandbox.footprint();
    assert_eq!(
        footprint.namespaces.len(),
        5,
        "uplink netns is part of the footprint"
    );
    support::teardown(sandbox);
}

fn workload_is_dumpable(root: WorkloadRoot) {
    let ground = support::ground();
    let sandbox = support::sandbox("workload");
    let (workload, counter) = support::start_counter(&sandbox, &root, &ground.dir("counter"));
    let pid = workload.pid();
    support::assert_in_sandbox(pid, &sandbox);
    support::assert_session_leader(pid);
    support::assert_clean_stdio(pid);
    if let WorkloadRoot::Rootfs(_) = root {
        let mounts = procfs::mountinfo(pid);
        assert_eq!(mounts.len(), 2, "root and /proc only: {mounts:#?}");
        assert!(mounts[1].contains(" /proc "), "{mounts:#?}");
    }
    counter.wait_past(counter.read().unwrap_or(0) + 2);
    workload.stop().unwrap();
    counter.assert_stopped(Duration::from_millis(200));
    support::assert_holds_only_init(&sandbox);
    support::teardown(sandbox);
}

#[test]
fn host_root_workload_is_a_clean_session_leader() {
    workload_is_dumpable(WorkloadRoot::Host);
}

#[test]
fn rootfs_workload_has_a_clean_mount_table() {
    let ground = support::ground();
    workload_is_dumpable(WorkloadRoot::Rootfs(ground.rootfs("rootfs")));
}

/// Dumps a counter in A with runc's checkpoint externals and restores it into B
/// with the options runc sends, all by CRIU's command line.
fn criu_moves_a_counter(root: WorkloadRoot, kill_before_teardown: bool) {
    let ground = support::ground();
    let a = support::sandbox("criu-a");
    let b = support::sandbox("criu-b");
    let (workload, counter) = support::start_counter(&a, &root, &ground.dir("counter"));
    let pid_inside = procfs::nspids(workload.pid()).last().copied().unwrap();

    let images = ground.dir("images");
    let dump = DumpCli::of(workload.pid(), &a, &images, &ground.dir("dump"));
    dump.run().unwrap_or_else(|err| panic!("{err}"));
    let last = counter.assert_stopped(Duration::from_millis(200));
    assert!(!workload.is_alive());
    drop(workload);
    support::assert_holds_only_init(&a);
    eprintln!(
        "CRIU lock rules left in the source netns by the dump: {:?}",
        a.criu_lock_rules().unwrap()
    );

    let mut restore = RestoreCli::into_sandbox(&images, &ground.dir("restore"), &b);
    if let WorkloadRoot::Rootfs(rootfs) = &root {
        restore.root = Some(rootfs.clone());
    }
    let restored = restore.run().unwrap_or_else(|err| panic!("{err}"));
    let landing = Landing::observe(restored.pid, &a, &b).unwrap();
    assert_eq!(
        landing,
        Landing {
            network: Place::Target,
            pid: Place::Target,
            ipc: Place::Target,
            uts: Place::Target,
            own_mount_namespace: matches!(root, WorkloadRoot::Rootfs(_)),
            pid_inside,
        }
    );
    counter.assert_continues_from(last);
    support::assert_holds_only_init(&a);
    support::assert_no_criu_lock(&b);
    eprintln!("criu restore took {:?}", restored.took);

    if kill_before_teardown {
        kill_and_reap(restored.pid, Duration::from_secs(10)).unwrap();
        support::assert_holds_only_init(&b);
    }
    // Otherwise teardown itself kills and reaps the restored tree.
    support::teardown(a);
    support::teardown(b);
}

#[test]
fn criu_moves_a_host_root_counter_between_sandboxes() {
    criu_moves_a_counter(WorkloadRoot::Host, true);
}

#[test]
fn criu_moves_a_rootfs_counter_between_sandboxes() {
    let ground = support::ground();
    criu_moves_a_counter(WorkloadRoot::Rootfs(ground.rootfs("rootfs")), false);
}

#[test]
fn criu_moves_a_listening_socket_between_sandboxes() {
    let ground = support::ground();
    let a = support::sandbox("tcp-a");
    let b = support::sandbox("tcp-b");
    let root = WorkloadRoot::Rootfs(ground.rootfs("rootfs"));
    let (workload, server) = support::start_http_server(&a, &root, &ground.dir("www"), 8080);
    assert_eq!(
        support::http_get(&a, server.port, "/token").unwrap(),
        server.token
    );
    assert!(
        support::http_get(&b, server.port, "/token").is_err(),
        "B answers before the restore"
    );

    let images = ground.dir("images");
    DumpCli::of(workload.pid(), &a, &images, &ground.dir("dump"))
        .run()
        .unwrap_or_else(|err| panic!("{err}"));
    drop(workload);
    support::assert_holds_only_init(&a);

    let mut restore = RestoreCli::into_sandbox(&images, &ground.dir("restore"), &b);
    if let WorkloadRoot::Rootfs(rootfs) = &root {
        restore.root = Some(rootfs.clone());
    }
    let restored = restore.run().unwrap_or_else(|err| panic!("{err}"));
    support::assert_in_sandbox(restored.pid, &b);
    assert_eq!(
        support::http_get(&b, server.port, "/token").unwrap(),
        server.token
    );
    assert!(
        support::http_get(&a, server.port, "/token").is_err(),
        "A still answers"
    );
    kill_and_reap(restored.pid, Duration::from_secs(10)).unwrap();
    support::teardown(a);
    support::teardown(b);
}
