//! `podrestore-agent checkpoint` and `podrestore-agent restore` on real CRIU,
//! between pod-like sandboxes:
//! - a counter checkpointed in sandbox A goes on counting in sandbox B, in B's
//!   namespaces, with nothing of it left in A's;
//! - a process listening on the sandbox's loopback answers in B;
//! - the source's network namespace carries no CRIU lock after a checkpoint,
//!   with or without `--leave-running`, and its other processes still talk;
//! - runc's checkpoint images restored by `runc restore` and by the agent land
//!   in the same namespaces;
//! - a target with a cgroup namespace path is refused with runc's message and
//!   leaves nothing behind;
//! - established TCP connections are restored only with `--tcp-established`;
//!   without it the restore is refused before CRIU runs, saying so;
//! - `checkpointctl show` reads an archive the agent wrote.
//!
//! Needs root, busybox, util-linux, iproute2, iptables, nftables, CRIU 4.2.1,
//! runc and checkpointctl (e2e/setup/criu.sh, e2e/setup/checkpointctl.sh);
//! fails when any is missing. The tests run one at a time: they count the
//! descriptors and mounts of this process.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use podrestore_agent::archive::metadata::ContainerConfig;
use podrestore_agent::archive::writer::{CheckpointContents, write_archive_file};
use podrestore_agent::namespaces::Namespace;
use podrestore_agent::restore::{CheckpointSource, RestoreError, RestoreRequest};
use podrestore_agent::sandbox::{kill_and_reap, procfs};
use support::peer::Peer;
use support::{Landing, Place, Sandbox, SandboxNs, WorkloadRoot};

/// The agent binary built with this package.
const AGENT: &str = env!("CARGO_BIN_EXE_podrestore-agent");

/// checkpointctl, installed by e2e/setup/checkpointctl.sh.
const CHECKPOINTCTL: &str = "/usr/local/bin/checkpointctl";

/// One test at a time: descriptor and mount counts of this process must not
/// move because of another test.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the agent with `args`; stdin on /dev/null.
fn agent(args: &[String]) -> Output {
    Command::new(AGENT)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("podrestore-agent runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `--ns TYPE=PATH` for each of the sandbox's namespaces, in runtime-config order.
fn ns_args(sandbox: &Sandbox) -> Vec<String> {
    sandbox
        .namespaces()
        .into_iter()
        .flat_map(|(kind, path)| {
            [
                "--ns".to_owned(),
                format!("{}={}", kind.oci_name(), path.display()),
            ]
        })
        .collect()
}

/// The entries of a directory, by name.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// `podrestore-agent checkpoint` of `pid` out of `source`; returns the archive
/// and what the command printed on stderr. The work directory is left empty.
fn checkpoint(
    ground: &support::Ground,
    source: &Sandbox,
    pid: u32,
    extra: &[&str],
) -> (PathBuf, String) {
    let archives = ground.dir("archives");
    let archive = archives.join(format!("checkpoint-{pid}.tar"));
    let work = ground.dir("checkpoint-work");
    let mut args = vec![
        "checkpoint".to_owned(),
        "--pid".to_owned(),
        pid.to_string(),
        "--output".to_owned(),
        archive.display().to_string(),
        "--work-dir".to_owned(),
        work.display().to_string(),
    ];
    args.extend(ns_args(source));
    args.extend(extra.iter().map(|a| (*a).to_owned()));
    let out = agent(&args);
    assert!(
        out.status.success(),
        "podrestore-agent checkpoint failed: {}",
        text(&out.stderr)
    );
    let printed = text(&out.stdout);
    assert!(
        printed.starts_with(&archive.display().to_string()),
        "checkpoint printed {printed:?}"
    );
    let meta = fs::metadata(&archive).expect("the archive exists");
    assert_eq!(meta.permissions().mode() & 0o7777, 0o600, "archive mode");
    assert_eq!(
        entries(&work),
        Vec::<String>::new(),
        "checkpoint left files in its work directory"
    );
    assert_eq!(
        entries(&archives)
            .iter()
            .filter(|n| n.ends_with(".partial"))
            .count(),
        0,
        "a temporary archive was left"
    );
    (archive, text(&out.stderr))
}

/// `podrestore-agent restore --detach --output json` of `archive` into
/// `target`; returns the restored PID. The work directory is left empty.
fn restore(ground: &support::Ground, archive: &Path, target: &Sandbox, extra: &[String]) -> u32 {
    let work = ground.dir("restore-work");
    let mut args = vec![
        "restore".to_owned(),
        "--archive".to_owned(),
        archive.display().to_string(),
        "--work-dir".to_owned(),
        work.display().to_string(),
        "--detach".to_owned(),
        "--output".to_owned(),
        "json".to_owned(),
    ];
    args.extend(ns_args(target));
    args.extend(extra.iter().cloned());
    let out = agent(&args);
    assert!(
        out.status.success(),
        "podrestore-agent restore failed: {}",
        text(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    eprintln!("podrestore-agent restore: {json}");
    assert_eq!(json["criuVersion"], "4.2.1");
    assert_eq!(
        json["archive"]["size"],
        fs::metadata(archive).unwrap().len()
    );
    assert_eq!(
        entries(&work),
        Vec::<String>::new(),
        "restore left files in its work directory"
    );
    let pid = json["pid"].as_u64().expect("a pid") as u32;
    assert!(procfs::is_alive(pid), "restored process {pid} does not run");
    pid
}

/// `podrestore-agent restore --detach` of `archive` into `target` with
/// `extra` arguments and `work` as its work directory, which must be refused:
/// exit status 1, nothing on stdout, nothing left in `work`. Returns what it
/// said on stderr.
fn refused_restore(archive: &Path, work: &Path, target: &Sandbox, extra: &[String]) -> String {
    let mut args = vec![
        "restore".to_owned(),
        "--archive".to_owned(),
        archive.display().to_string(),
        "--work-dir".to_owned(),
        work.display().to_string(),
        "--detach".to_owned(),
    ];
    args.extend(ns_args(target));
    args.extend(extra.iter().cloned());
    let out = agent(&args);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(text(&out.stdout), "", "{stderr}");
    assert_eq!(
        entries(work),
        Vec::<String>::new(),
        "temporary files were left"
    );
    stderr
}

/// The inodes of a process's network, PID, IPC and UTS namespaces.
fn ns_inodes(pid: u32) -> Vec<(&'static str, u64)> {
    SandboxNs::ALL
        .iter()
        .map(|k| (k.proc_name(), procfs::ns_inode(pid, k.proc_name()).unwrap()))
        .collect()
}

/// Asserts that a restored counter goes on from `last`, the number it had
/// written when it was checkpointed: the first new number follows it closely
/// (a restarted counter would begin at 1 again). Returns that number.
fn assert_resumes_from(counter: &support::Counter, last: u64) -> u64 {
    let mut seen = last;
    podrestore_agent::sandbox::wait_until(
        "the restored counter to write",
        support::PROGRESS_TIMEOUT,
        || {
            seen = counter.read().unwrap_or(last);
            seen != last
        },
    )
    .unwrap_or_else(|err| panic!("{err}"));
    assert!(
        seen > last && seen <= last + 5,
        "counter wrote {seen} after the restore; it was at {last} when checkpointed"
    );
    counter.wait_past(seen)
}

fn stop(pid: u32) {
    kill_and_reap(pid, Duration::from_secs(10)).expect("kill the restored process");
}

#[test]
fn counter_goes_on_counting_in_another_sandbox() {
    let _serial = serial();
    let ground = support::ground();
    let a = support::sandbox("agent-a");
    let b = support::sandbox("agent-b");
    let (workload, counter) =
        support::start_counter(&a, &WorkloadRoot::Host, &ground.dir("counter"));
    let pid_inside = procfs::nspids(workload.pid()).last().copied().unwrap();
    // Far enough from 1 that going on and starting over look different.
    counter.wait_past(20);

    let (archive, _) = checkpoint(&ground, &a, workload.pid(), &[]);
    let last = counter.assert_stopped(Duration::from_millis(300));
    assert!(
        !workload.is_alive(),
        "the checkpoint left the counter running"
    );
    workload.stop().unwrap();
    support::assert_holds_only_init(&a);

    let pid = restore(&ground, &archive, &b, &[]);
    let now = assert_resumes_from(&counter, last);
    eprintln!("counter at {last} when checkpointed, {now} after the restore");
    assert_eq!(
        Landing::observe(pid, &a, &b).unwrap(),
        Landing {
            network: Place::Target,
            pid: Place::Target,
            ipc: Place::Target,
            uts: Place::Target,
            own_mount_namespace: false,
            pid_inside,
        }
    );
    for (name, inode) in ns_inodes(pid) {
        let kind = SandboxNs::ALL
            .into_iter()
            .find(|k| k.proc_name() == name)
            .unwrap();
        assert_eq!(inode, b.ns_inode(kind), "/proc/{pid}/ns/{name} is not B's");
    }
    // Nothing of it in A: only A's init is left in each of A's namespaces.
    support::assert_holds_only_init(&a);
    support::assert_no_criu_lock(&a);
    support::assert_no_criu_lock(&b);

    stop(pid);
    support::assert_holds_only_init(&b);
    support::teardown(a);
    support::teardown(b);
}

/// The established TCP connections (state 01) on `port` that `pid` sees in
/// its network namespace, as `/proc/<pid>/net/tcp` and `tcp6` list them (a
/// listener bound to `::` accepts IPv4 connections as IPv6 sockets).
fn established_on(pid: u32, port: u16) -> usize {
    let port = format!(":{port:04X}");
    ["tcp", "tcp6"]
        .iter()
        .map(|file| fs::read_to_string(format!("/proc/{pid}/net/{file}")).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
        .lines()
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.len() > 3
                && fields[3] == "01"
                && (fields[1].ends_with(&port) || fields[2].ends_with(&port))
        })
        .count()
}

#[test]
fn established_connections_are_restored_only_when_asked() {
    let _serial = serial();
    let ground = support::ground();
    let a = support::sandbox("agent-est-a");
    let b = support::sandbox("agent-est-b");
    // A server and a client connected to it over the loopback interface, both
    // in the tree: two ends of one established connection.
    let mut spec = support::WorkloadSpec::host("").unwrap();
    let bb = spec.busybox_inside();
    spec.script = format!(
        "{bb} sleep 3600 | {bb} nc -l -p 9100 >/dev/null &\n{bb} sleep 0.3\n{bb} sleep 3600 | {bb} nc 127.0.0.1 9100 >/dev/null &\nwait\n"
    );
    let workload = a.spawn(&spec).expect("start the connected pair");
    podrestore_agent::sandbox::wait_until(
        "the connection to be established",
        support::PROGRESS_TIMEOUT,
        || established_on(workload.pid(), 9100) == 2,
    )
    .unwrap_or_else(|err| panic!("{err}: {}", workload.log()));
    let (archive, _) = checkpoint(&ground, &a, workload.pid(), &["--tcp-established"]);
    workload.stop().unwrap();
    support::assert_holds_only_init(&a);

    // Not asked for: refused before CRIU runs, saying what to do.
    let stderr = refused_restore(&archive, &ground.dir("restore-work"), &b, &[]);
    assert!(
        stderr.starts_with("the checkpoint holds 2 established TCP connections")
            && stderr.contains("pass --tcp-established"),
        "{stderr}"
    );
    support::assert_holds_only_init(&b);
    support::assert_no_criu_lock(&b);

    // Asked for: both ends are back in B, connected.
    let pid = restore(&ground, &archive, &b, &["--tcp-established".to_owned()]);
    support::assert_in_sandbox(pid, &b);
    assert_eq!(
        established_on(pid, 9100),
        2,
        "connections in B after the restore"
    );
    support::assert_no_criu_lock(&b);

    stop(pid);
    support::teardown(a);
    support::teardown(b);
}

#[test]
fn listening_socket_answers_in_the_target_sandbox() {
    let _serial = serial();
    let ground = support::ground();
    let a = support::sandbox("agent-tcp-a");
    let b = support::sandbox("agent-tcp-b");
    // Its own mount namespace and root: the restore bind-mounts that root as
    // CRIU's root, as runc does with a container's rootfs.
    let rootfs = ground.rootfs("rootfs-tcp");
    let root = WorkloadRoot::Rootfs(rootfs.clone());
    let (workload, server) = support::start_http_server(&a, &root, &ground.dir("www"), 8080);
    assert!(
        support::http_get(&b, server.port, "/token").is_err(),
        "B answers before the restore"
    );

    let (archive, _) = checkpoint(&ground, &a, workload.pid(), &[]);
    workload.stop().unwrap();
    assert!(
        support::http_get(&a, server.port, "/token").is_err(),
        "A still answers after the checkpoint"
    );
    support::assert_holds_only_init(&a);

    let mounts_before = procfs::mountinfo(std::process::id()).len();
    let pid = restore(
        &ground,
        &archive,
        &b,
        &["--root".to_owned(), rootfs.display().to_string()],
    );
    // The criu-root bind mount went with the restore.
    assert_eq!(procfs::mountinfo(std::process::id()).len(), mounts_before);
    support::assert_in_sandbox(pid, &b);
    assert_eq!(
        support::http_get(&b, server.port, "/token").unwrap(),
        server.token
    );

    // The same images again into B: the PIDs are taken, CRIU fails after it
    // has locked B's network and the root is mounted; all of that goes again.
    let stderr = refused_restore(
        &archive,
        &ground.dir("restore-work"),
        &b,
        &["--root".to_owned(), rootfs.display().to_string()],
    );
    eprintln!("second restore into B: {stderr}");
    assert!(
        stderr.starts_with("criu failed: type RESTORE errno "),
        "{stderr}"
    );
    assert!(
        stderr.contains("--- quoting "),
        "no CRIU log quoted: {stderr}"
    );
    assert_eq!(procfs::mountinfo(std::process::id()).len(), mounts_before);
    support::assert_no_criu_lock(&b);
    assert!(
        support::http_get(&a, server.port, "/token").is_err(),
        "A answers after the restore"
    );
    support::assert_holds_only_init(&a);
    support::assert_no_criu_lock(&b);

    stop(pid);
    support::teardown(a);
    support::teardown(b);
}

/// Checkpoints a counter out of a sandbox that also runs an HTTP server, the
/// pod's other container; afterwards the sandbox's netns has no CRIU lock and
/// the server still answers in it. With `lock`, CRIU is asked for that lock
/// (runc's iptables default); without, the agent chooses (none here).
fn source_keeps_its_network(leave_running: bool, lock: Option<&str>) -> String {
    let ground = support::ground();
    let a = support::sandbox("agent-lock");
    let (server_workload, server) =
        support::start_http_server(&a, &WorkloadRoot::Host, &ground.dir("www"), 8080);
    let (counter_workload, counter) =
        support::start_counter(&a, &WorkloadRoot::Host, &ground.dir("counter"));

    let mut extra = Vec::new();
    if leave_running {
        extra.push("--leave-running");
    }
    if let Some(lock) = lock {
        extra.extend(["--network-lock", lock]);
    }
    let (_, stderr) = checkpoint(&ground, &a, counter_workload.pid(), &extra);
    eprintln!("checkpoint {extra:?} said: {stderr}");
    support::assert_no_criu_lock(&a);
    assert_eq!(
        support::http_get(&a, server.port, "/token").unwrap(),
        server.token,
        "the sandbox's other process lost its network"
    );
    if leave_running {
        let seen = counter.read().unwrap_or(0);
        counter.wait_past(seen);
        assert!(counter_workload.is_alive());
    } else {
        counter.assert_stopped(Duration::from_millis(200));
    }
    counter_workload.stop().unwrap();
    server_workload.stop().unwrap();
    support::teardown(a);
    stderr
}

#[test]
fn source_network_is_unlocked_after_a_checkpoint() {
    let _serial = serial();
    let said = source_keeps_its_network(false, Some("iptables"));
    // CRIU left its DROP-all chain (measured); the agent removed it.
    for removed in [
        "iptables -w -t filter -D INPUT -j CRIU",
        "iptables -w -t filter -X CRIU",
        "ip6tables -w -t filter -X CRIU",
    ] {
        assert!(
            said.contains(&format!("removed CRIU's network lock: {removed}")),
            "{said}"
        );
    }
}

#[test]
fn source_network_is_unlocked_after_a_checkpoint_that_leaves_it_running() {
    let _serial = serial();
    source_keeps_its_network(true, Some("iptables"));
}

#[test]
fn checkpoint_without_established_connections_takes_no_lock() {
    let _serial = serial();
    for leave_running in [false, true] {
        let said = source_keeps_its_network(leave_running, None);
        assert!(
            !said.contains("removed CRIU's network lock"),
            "CRIU locked the source although nothing needed it: {said}"
        );
    }
}

#[test]
fn runc_and_the_agent_restore_the_same_images_into_the_same_namespaces() {
    let _serial = serial();
    let ground = support::ground();
    let a = support::sandbox("agent-peer-a");
    let b = support::sandbox("agent-peer-b");
    let mut peer = Peer::new(&ground);
    let checkpoint = peer.checkpoint_counter(&ground, &a, "agentpeer");

    // runc, the reference.
    let by_runc = peer.restore(&checkpoint, &b);
    let runc_landing = peer.landing(&by_runc, &a, &b);
    let runc_inodes = ns_inodes(by_runc.pid);
    checkpoint.counter.assert_continues_from(checkpoint.last);
    peer.remove(&by_runc.id);
    fs::remove_file(&checkpoint.counter.file).unwrap();

    // The agent, from an archive of the very same images.
    let archive = ground.dir("archives").join("runc-checkpoint.tar");
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": { "args": checkpoint.bundle.args, "cwd": "/" },
        "root": { "path": checkpoint.rootfs },
        "mounts": [
            { "destination": "/proc", "type": "proc", "source": "proc" },
            { "destination": "/dev", "type": "tmpfs", "source": "tmpfs" }
        ],
        "annotations": { "io.kubernetes.cri.container-name": "counter" },
        "linux": { "namespaces": oci_namespaces_of(&a) }
    });
    write_archive_file(
        &CheckpointContents {
            images_dir: &checkpoint.images,
            config: &ContainerConfig {
                id: checkpoint.id.clone(),
                name: "counter".into(),
                runtime: "runc".into(),
                ..ContainerConfig::default()
            },
            spec_dump: &serde_json::to_vec(&spec).unwrap(),
            rootfs_diff: None,
            dump_log: None,
            stats_dump: None,
            extra_files: Vec::new(),
        },
        &archive,
    )
    .expect("write the archive");
    let pid = restore(
        &ground,
        &archive,
        &b,
        &[
            "--ns".to_owned(),
            "mount".to_owned(),
            "--root".to_owned(),
            checkpoint.rootfs.display().to_string(),
            // A cgroup of its own, as runc gives the restored container.
            "--cgroup-root".to_owned(),
            format!("/podrestore-{}-agent", checkpoint.id),
        ],
    );
    let agent_landing = Landing::observe(pid, &a, &b).unwrap();
    eprintln!(
        "runc: {} {:?}; agent: {} {:?}",
        serde_json::to_string(&runc_landing).unwrap(),
        runc_inodes,
        serde_json::to_string(&agent_landing).unwrap(),
        ns_inodes(pid)
    );
    assert_eq!(agent_landing, runc_landing);
    assert_eq!(ns_inodes(pid), runc_inodes);
    assert_eq!(agent_landing.pid, Place::Target);
    assert_resumes_from(&checkpoint.counter, checkpoint.last);
    stop(pid);

    // The library call the agent's service makes, in this process: the same
    // landing, and no descriptor or mount of it left here afterwards.
    fs::remove_file(&checkpoint.counter.file).unwrap();
    let me = std::process::id();
    let mounts_before = procfs::mountinfo(me);
    let fds_before = fd_targets_of_self();
    let mut namespaces = sandbox_namespaces(&b);
    namespaces.push(Namespace::parse_arg("mount").unwrap());
    let work = ground.dir("library-work");
    let outcome = podrestore_agent::restore::restore(RestoreRequest {
        source: CheckpointSource::Archive(archive.clone()),
        namespaces,
        root: Some(checkpoint.rootfs.clone()),
        cgroup_root: Some(format!("/podrestore-{}-library", checkpoint.id)),
        work_root: work.clone(),
        ..RestoreRequest::default()
    })
    .expect("restore through the library");
    let pid = u32::try_from(outcome.pid).unwrap();
    assert_eq!(Landing::observe(pid, &a, &b).unwrap(), runc_landing);
    assert_eq!(ns_inodes(pid), runc_inodes);
    assert_eq!(
        outcome.archive.as_ref().map(|d| d.size),
        Some(fs::metadata(&archive).unwrap().len())
    );
    let ticks = podrestore_agent::procinfo::start_ticks(Path::new("/proc"), outcome.pid);
    assert_eq!(outcome.start_ticks, Some(ticks.unwrap()));
    assert_resumes_from(&checkpoint.counter, checkpoint.last);
    assert_eq!(procfs::mountinfo(me), mounts_before, "mounts changed");
    assert_eq!(
        fd_targets_of_self(),
        fds_before,
        "descriptors of this process changed"
    );
    assert_eq!(
        entries(&work),
        Vec::<String>::new(),
        "temporary files were left"
    );
    // rst_sibling: the restored root is this process's child.
    assert_eq!(procfs::stat(pid).unwrap().ppid, me);
    stop(pid);
    drop(peer);
    for cgroup in ["agent", "library"] {
        remove_cgroup(&format!("/podrestore-{}-{cgroup}", checkpoint.id));
    }
    support::teardown(a);
    support::teardown(b);
}

/// The OCI namespace entries of a sandbox, as `spec.dump` lists them.
fn oci_namespaces_of(sandbox: &Sandbox) -> serde_json::Value {
    sandbox
        .namespaces()
        .into_iter()
        .map(|(kind, path)| serde_json::json!({ "type": kind.oci_name(), "path": path }))
        .chain(std::iter::once(serde_json::json!({ "type": "mount" })))
        .collect()
}

/// Removes a cgroup the restored tree lived in, from every hierarchy; a cgroup
/// v1 directory stays busy for a moment after its last task was reaped.
fn remove_cgroup(path: &str) {
    let mut last = None;
    let gone = podrestore_agent::sandbox::wait_until(
        format!("cgroup {path} to be removed"),
        Duration::from_secs(10),
        || match podrestore_agent::sandbox::runc::remove_cgroup(path) {
            Ok(()) => true,
            Err(err) => {
                last = Some(err.to_string());
                false
            }
        },
    );
    if let Err(err) = gone {
        panic!("{err}: {}", last.unwrap_or_default());
    }
}

/// A sandbox's namespaces as the library takes them.
fn sandbox_namespaces(sandbox: &Sandbox) -> Vec<Namespace> {
    sandbox
        .namespaces()
        .into_iter()
        .map(|(kind, path)| Namespace::from_oci(kind.oci_name(), path.to_str()).unwrap())
        .collect()
}

fn fd_targets_of_self() -> Vec<String> {
    let mut fds = procfs::fd_targets(std::process::id());
    fds.sort();
    fds
}

#[test]
fn cgroup_namespace_target_is_refused_and_leaves_nothing_behind() {
    let _serial = serial();
    let ground = support::ground();
    let a = support::sandbox("agent-cg-a");
    let b = support::sandbox("agent-cg-b");
    let (workload, _counter) =
        support::start_counter(&a, &WorkloadRoot::Host, &ground.dir("counter"));
    let (archive, _) = checkpoint(&ground, &a, workload.pid(), &[]);
    workload.stop().unwrap();

    let cgroup_ns = format!("/proc/{}/ns/cgroup", b.init_pid());
    let work = ground.dir("refused-work");
    let me = std::process::id();
    let mounts_before = procfs::mountinfo(me);
    let fds_before = fd_targets_of_self();
    let firewall_before = firewall(&b);

    // The command: runc's message, exit status 1.
    let stderr = refused_restore(
        &archive,
        &work,
        &b,
        &["--ns".to_owned(), format!("cgroup={cgroup_ns}")],
    );
    assert_eq!(stderr, "Do not know how to handle namespace NEWCGROUP\n");

    // The library, in this process: same refusal, and nothing of it remains.
    let mut namespaces = sandbox_namespaces(&b);
    namespaces.push(Namespace::parse_arg(&format!("cgroup={cgroup_ns}")).unwrap());
    let err = podrestore_agent::restore::restore(RestoreRequest {
        source: CheckpointSource::Archive(archive.clone()),
        namespaces,
        work_root: work.clone(),
        ..RestoreRequest::default()
    })
    .unwrap_err();
    assert!(matches!(err, RestoreError::Plan(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "Do not know how to handle namespace NEWCGROUP"
    );

    assert_eq!(procfs::mountinfo(me), mounts_before, "mounts changed");
    assert_eq!(
        fd_targets_of_self(),
        fds_before,
        "descriptors of this process changed"
    );
    assert_eq!(
        entries(&work),
        Vec::<String>::new(),
        "temporary files were left"
    );
    assert_eq!(
        firewall(&b),
        firewall_before,
        "the target's firewall changed"
    );
    support::assert_no_criu_lock(&b);
    support::assert_holds_only_init(&b);
    support::teardown(a);
    support::teardown(b);
}

/// The target's firewall as `iptables-save`, `ip6tables-save` and `nft list
/// ruleset` print it, without iptables-save's timestamp comments.
fn firewall(sandbox: &Sandbox) -> String {
    let mut all = String::new();
    for (tool, args) in [
        ("iptables-save", &[][..]),
        ("ip6tables-save", &[][..]),
        ("nft", &["list", "ruleset"][..]),
    ] {
        let out = sandbox.run_in_netns(tool, args).unwrap();
        assert!(out.status.success(), "{tool}: {}", text(&out.stderr));
        for line in text(&out.stdout).lines().filter(|l| !l.starts_with('#')) {
            all.push_str(line);
            all.push('\n');
        }
    }
    all
}

#[test]
fn foreground_restore_waits_for_the_tree_and_passes_its_status_on() {
    let _serial = serial();
    let ground = support::ground();
    let a = support::sandbox("agent-fg-a");
    let b = support::sandbox("agent-fg-b");
    let marker = ground.dir("fg").join("started");
    let mut spec = support::WorkloadSpec::host("").unwrap();
    let bb = spec.busybox_inside();
    spec.script = format!(
        "echo up > {marker}\n{bb} sleep 3\nexit 7\n",
        marker = marker.display()
    );
    let workload = a.spawn(&spec).expect("start the workload");
    podrestore_agent::sandbox::wait_until(
        "the workload to start",
        support::PROGRESS_TIMEOUT,
        || marker.is_file(),
    )
    .unwrap();
    let (archive, _) = checkpoint(&ground, &a, workload.pid(), &[]);
    workload.stop().unwrap();

    // No --detach: the command waits for the restored shell, reaps it and
    // exits with its status.
    let mut args = vec![
        "restore".to_owned(),
        "--archive".to_owned(),
        archive.display().to_string(),
        "--work-dir".to_owned(),
        ground.dir("restore-work").display().to_string(),
    ];
    args.extend(ns_args(&b));
    let started = std::time::Instant::now();
    let out = agent(&args);
    eprintln!(
        "foreground restore: {:?} after {:?}, printed {:?}",
        out.status,
        started.elapsed(),
        text(&out.stdout)
    );
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    let pid: u32 = text(&out.stdout).trim().parse().expect("the restored PID");
    assert!(
        !procfs::exists(pid),
        "the restored process {pid} was not reaped"
    );
    support::assert_holds_only_init(&b);
    support::teardown(a);
    support::teardown(b);
}

#[test]
fn checkpointctl_shows_an_archive_the_agent_wrote() {
    let _serial = serial();
    assert!(
        Path::new(CHECKPOINTCTL).is_file(),
        "{CHECKPOINTCTL} is missing: run e2e/setup/checkpointctl.sh"
    );
    let ground = support::ground();
    let a = support::sandbox("agent-ctl");
    let (workload, _counter) =
        support::start_counter(&a, &WorkloadRoot::Host, &ground.dir("counter"));
    let (archive, _) = checkpoint(
        &ground,
        &a,
        workload.pid(),
        &[
            "--container-name",
            "counter",
            "--pod-name",
            "pod-a",
            "--pod-namespace",
            "team-a",
        ],
    );
    workload.stop().unwrap();
    assert_eq!(fs::metadata(&archive).unwrap().mode() & 0o777, 0o600);

    let show = Command::new(CHECKPOINTCTL)
        .arg("show")
        .arg(&archive)
        .output()
        .unwrap();
    let shown = text(&show.stdout);
    eprintln!("checkpointctl show:\n{shown}");
    assert!(
        show.status.success(),
        "checkpointctl show failed: {shown}{}",
        text(&show.stderr)
    );
    for want in ["counter", "podrestore-agent", "containerd"] {
        assert!(shown.contains(want), "{want} missing from:\n{shown}");
    }
    let tree = Command::new(CHECKPOINTCTL)
        .args(["inspect", "--ps-tree"])
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        tree.status.success() && text(&tree.stdout).contains("busybox"),
        "checkpointctl inspect --ps-tree: {}{}",
        text(&tree.stdout),
        text(&tree.stderr)
    );
    // The agent reads its own archive back.
    let inspect = agent(&["inspect".to_owned(), archive.display().to_string()]);
    let table = text(&inspect.stdout);
    assert!(inspect.status.success(), "{}", text(&inspect.stderr));
    for want in [
        "Pod:              team-a/pod-a",
        "CRIU version:     4.2.1",
        "Restore policy:   ok",
    ] {
        assert!(table.contains(want), "{want:?} missing from:\n{table}");
    }
    support::teardown(a);
}
