//! What a restore into a pod must guarantee beyond "the process runs again",
//! checked on the local cluster with the operator and the agent placed as on
//! a real node (the agent in the node's mount namespace, see
//! `podrestore_e2e::install`):
//!
//! - a stateful workload (a counter holding a file of its writable layer open,
//!   and a server with a listening socket) goes on from its state in the target
//!   pod: it counts on, its socket answers on the target pod's IP, `ps` in the
//!   pod shows it, its output goes on in the target container's log, it is
//!   charged to the target container's cgroups, and the pod's end is its end;
//!   the same with pods sharing their process namespace;
//! - a checkpoint holding established TCP connections is refused without
//!   `tcpEstablished`, saying so, before anything reaches the target;
//! - a restore that CRIU fails leaves the target pod's network namespace
//!   firewall exactly as it was (no CRIU lock chain or table), nothing of the
//!   restore running and nothing in the agent's work directory;
//! - a checkpoint whose bind mounts the target lacks is refused, with the
//!   missing destinations listed, and nothing is restored;
//! - an archive whose writable layer tries to leave the container's root
//!   (`..`, an absolute path, a symlink pointing out) is refused and changes
//!   nothing outside that root.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use podrestore_crds::condition::{kind, reason};
use podrestore_e2e::{
    Cluster, cluster,
    host::{container_pid, firewall, run_in_netns, start_ticks},
    install::{
        AgentPlace, Installation, condition, delete_podrestore, install, podrestore, podrestores,
    },
    pods::{
        self, Archive, CHECKPOINT, MAIN, POD_START, PodOptions, bare_container_id, checkpoint,
        count, start_pod, start_pod_with,
    },
    wait_until,
};
use serde_json::{Value, json};

const RESTORE: Duration = Duration::from_secs(120);

/// A container that only waits.
const IDLE: &str = "exec sleep 3600";
/// The server's port.
const PORT: &str = "8080";
/// The stateful workload, one process tree: a counter whose value lives in a
/// subshell's memory, written every second to `/tmp/count` (through a rename,
/// so a reader never finds it empty) and appended to `/tmp/log`, which the tree
/// holds open (a file of the container's writable layer, so the restore needs
/// the checkpoint's `rootfs-diff.tar`) and printed as `count <n>` on stdout
/// (the container's log); and a server whose count lives in the
/// main shell's memory: each connection gets `answer <n>`, and `n` goes up by
/// one per connection. Between connections the shell waits for `nc`, which
/// holds the listening socket.
const WORKLOAD: &str = "exec 3>>/tmp/log; \
    (i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; echo $i >&3; echo count $i; sleep 1; done) & \
    n=0; while true; do n=$((n+1)); echo \"answer $n\" > /tmp/reply; nc -l -p 8080 -e cat /tmp/reply; done";
/// What `ps` shows of the server's listener.
const LISTENER_MARK: &str = "nc -l -p 8080";
/// How long a scenario waits for a counter to move.
const COUNTING: Duration = Duration::from_secs(30);

/// Runs `command` in container `main` of `pod` and returns its output.
fn exec(cluster: &Cluster, ns: &str, pod: &str, command: &[&str]) -> Result<String> {
    pods::exec(cluster, ns, (pod, MAIN), command)
}

/// The lines of `ps` in `pod` other than `ps` itself and the container's
/// `sleep`.
fn foreign_processes(cluster: &Cluster, ns: &str, pod: &str) -> Result<Vec<String>> {
    let ps = exec(cluster, ns, pod, &["ps", "-o", "pid,args"])?;
    Ok(ps
        .lines()
        .skip(1)
        .filter(|l| !l.ends_with(" ps -o pid,args") && !l.ends_with(" sleep 3600"))
        .map(str::to_owned)
        .collect())
}

/// What the server at `ip` answers a connection from pod `client`.
fn ask(cluster: &Cluster, ns: &str, client: &str, ip: &str) -> Result<String> {
    let out = exec(cluster, ns, client, &["timeout", "5", "nc", ip, PORT])?;
    Ok(out.trim().to_owned())
}

/// Creates PodRestore `name` restoring `archive` into container `main` of
/// `target` with `options`.
async fn create_restore(
    client: &kube::Client,
    node: &str,
    ns: &str,
    name: &str,
    (archive, target): (&Path, &str),
    options: Value,
) -> Result<()> {
    let spec = json!({
        "checkpoint": {"archive": {"nodeName": node, "path": archive.display().to_string()}},
        "target": {"podName": target, "container": "main"},
        "options": options,
    });
    podrestores(client, ns)
        .create(&PostParams::default(), &podrestore(ns, name, spec)?)
        .await?;
    Ok(())
}

/// Waits until PodRestore `name` failed; returns the Restored condition's
/// message and the status.
async fn refused(
    setup: &Installation,
    client: &kube::Client,
    name: &str,
) -> Result<(String, Value)> {
    let api = podrestores(client, &setup.ns.name);
    let message = condition(
        &api,
        name,
        (kind::RESTORED, "False", reason::RESTORE_FAILED),
        RESTORE,
        || setup.logs(),
    )
    .await?;
    Ok((message, api.get(name).await?.data["status"].clone()))
}

/// Waits until the counter in `pod` shows at least `at_least`; returns what it
/// shows then.
async fn counted_to(cluster: &Cluster, ns: &str, pod: &str, at_least: u64) -> Result<u64> {
    pods::counted_to(cluster, ns, (pod, MAIN), at_least, COUNTING).await
}

#[tokio::test]
async fn stateful_workload_carries_on_in_the_target_pod() -> Result<()> {
    stateful_workload("chk-state", false).await
}

#[tokio::test]
async fn stateful_workload_carries_on_in_a_pod_sharing_its_process_namespace() -> Result<()> {
    stateful_workload("chk-shared", true).await
}

/// The stateful workload checkpointed in pod A and restored into pod B, both
/// sharing one process namespace among their containers when `shared` (the
/// pid namespace is then external to the checkpoint, and CRIU recreates the
/// tree's PIDs in pod B's).
async fn stateful_workload(prefix: &str, shared: bool) -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = install(&cluster, &client, prefix, AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let layout = PodOptions {
        share_process_namespace: shared,
        ..PodOptions::default()
    };
    // In a shared process namespace the tree's PIDs must be free in pod B: a
    // container started first in pod A moves them past the ones pod B uses.
    let source: &[(&str, &str)] = if shared {
        &[("idle", IDLE), (MAIN, WORKLOAD)]
    } else {
        &[(MAIN, WORKLOAD)]
    };
    let source_ip = start_pod_with(&cluster, &pods, "source", source, layout)
        .await?
        .ip;
    let target = start_pod_with(&cluster, &pods, "target", &[(MAIN, IDLE)], layout).await?;
    let (target_id, target_ip) = (target.container_id(MAIN)?.to_owned(), target.ip);
    start_pod(&cluster, &pods, "client", IDLE).await?;

    // One connection before the checkpoint: the server's count moves to 2.
    let first = wait_until("the server in pod A to answer", POD_START, || async {
        Ok(ask(&cluster, &ns, "client", &source_ip).ok())
    })
    .await?;
    assert_eq!(first, "answer 1");
    let before = counted_to(&cluster, &ns, "source", 3).await?;
    let archive = checkpoint(&client, &cluster.node, &ns, ("source", MAIN), CHECKPOINT).await?;
    let after = count(&cluster, &ns, ("source", MAIN))?;

    create_restore(
        &client,
        &cluster.node,
        &ns,
        "state",
        (&archive.0, "target"),
        json!({"networkLock": "Skip"}),
    )
    .await?;
    let api = podrestores(&client, &ns);
    condition(
        &api,
        "state",
        (kind::RESTORED, "True", reason::RESTORE_SUCCEEDED),
        RESTORE,
        || setup.logs(),
    )
    .await?;
    let restored_at = std::time::Instant::now();
    let status = api.get("state").await?.data["status"].clone();
    let pid = status["restoredPID"]
        .as_i64()
        .with_context(|| format!("no restoredPID in {status}"))?;

    // The counter goes on from its checkpointed value, not from the start, and
    // keeps counting.
    let resumed = counted_to(&cluster, &ns, "target", before + 1)
        .await
        .with_context(|| setup.logs())?;
    let elapsed = restored_at.elapsed().as_secs();
    assert!(
        resumed <= after + elapsed + 3,
        "the restored counter shows {resumed}; it was checkpointed between {before} and {after} and restored {elapsed}s ago"
    );
    let later = counted_to(&cluster, &ns, "target", resumed + 2).await?;
    // Its output goes on in pod B's log (pod B's own container prints
    // nothing): the restored counter's lines, from where it was.
    let printed = wait_until("the restored counter in pod B's log", COUNTING, || async {
        let log = cluster.kubectl(&["logs", "-n", &ns, "target", "-c", MAIN])?;
        let counts: Vec<u64> = log
            .lines()
            .filter_map(|l| l.strip_prefix("count ")?.trim().parse().ok())
            .collect();
        Ok((counts.len() >= 2).then_some(counts))
    })
    .await
    .with_context(|| setup.logs())?;
    assert!(
        printed.windows(2).all(|w| w[1] == w[0] + 1) && printed[0] > before,
        "pod B's log: {printed:?} (checkpointed after {before})"
    );
    // The file the tree holds open: the checkpoint's lines, carried over with
    // the writable layer, then the restored counter's, with no gap and no
    // restart.
    let log = exec(&cluster, &ns, "target", &["cat", "/tmp/log"])?;
    let lines: Vec<u64> = log.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let expected: Vec<u64> = (1..=lines.len() as u64).collect();
    assert_eq!(lines, expected, "/tmp/log in pod B");
    assert!(
        lines.len() as u64 >= later,
        "/tmp/log ends before {later}: {lines:?}"
    );

    // The listening socket lives in pod B's network namespace now: B's IP
    // answers, and with the checkpointed count.
    let answer = ask(&cluster, &ns, "client", &target_ip).with_context(|| setup.logs())?;
    assert_eq!(answer, "answer 2", "pod B ({target_ip}) answered");
    let again = ask(&cluster, &ns, "client", &target_ip)?;
    assert_eq!(again, "answer 3", "pod B ({target_ip}) answered");

    // Pod B shows the restored tree: the workload's shell and its counting
    // subshell, and the listening nc (besides the restore shim, their parent).
    let seen = foreign_processes(&cluster, &ns, "target")?;
    let args = |l: &String| {
        l.trim_start()
            .split_once(' ')
            .map(|(_, args)| args.to_owned())
            .unwrap_or_default()
    };
    let shells = seen
        .iter()
        .filter(|l| args(l) == format!("/bin/sh -c {WORKLOAD}"));
    let listeners = seen.iter().filter(|l| args(l).starts_with(LISTENER_MARK));
    assert_eq!(
        (shells.count(), listeners.count()),
        (2, 1),
        "ps in pod B: {seen:?}"
    );

    // Charged to pod B's container: its cgroup in every hierarchy, memory
    // among them.
    let id = bare_container_id(&target_id);
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    assert!(
        cgroups.lines().any(|l| l.contains(":memory:")),
        "no memory cgroup for {pid}: {cgroups}"
    );
    for line in cgroups.lines() {
        assert!(line.ends_with(id), "cgroup of {pid}: {line} (target {id})");
    }
    eprintln!(
        "checkpointed between {before} and {after}; pod B counted on from {resumed} to {later}, \
         {target_ip} answered {answer:?} then {again:?}; restored PID {pid}"
    );

    // Deleting pod B ends the restored tree with it.
    let ticks = start_ticks(pid).context("the restored root is gone")?;
    pods.delete("target", &DeleteParams::default()).await?;
    wait_until("the restored tree to end with pod B", RESTORE, || {
        let ticks = ticks.clone();
        async move { Ok((start_ticks(pid) != Some(ticks)).then_some(())) }
    })
    .await
    .with_context(|| setup.logs())?;
    Ok(())
}

#[tokio::test]
async fn checkpoint_with_a_bind_mount_the_target_lacks_is_refused() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = install(&cluster, &client, "chk-mounts", AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let with_data = PodOptions {
        data_volume: true,
        ..PodOptions::default()
    };
    let holder = "echo kept > /data/file; exec sleep 3600";
    start_pod_with(&cluster, &pods, "holder", &[(MAIN, holder)], with_data).await?;
    start_pod(&cluster, &pods, "target", IDLE).await?;
    let archive = checkpoint(&client, &cluster.node, &ns, ("holder", MAIN), CHECKPOINT).await?;

    create_restore(
        &client,
        &cluster.node,
        &ns,
        "mounts",
        (&archive.0, "target"),
        json!({"networkLock": "Skip"}),
    )
    .await?;
    let (message, status) = refused(&setup, &client, "mounts").await?;
    // Only /data is missing: the runtime's own mounts (/etc/hosts, ...) are
    // there in both pods.
    assert!(
        message.contains("no mount at /data,"),
        "Restored message: {message}"
    );
    assert!(status["restoredPID"].is_null(), "status: {status}");
    let foreign = foreign_processes(&cluster, &ns, "target")?;
    assert!(foreign.is_empty(), "ps in pod B: {foreign:?}");
    eprintln!("refused: {message}");
    Ok(())
}

/// Copies the real archive `from` to `to`, each entry whose name (without a
/// leading `./`) `pick` accepts replaced by what `change` makes of its
/// content; returns how many were replaced.
fn rewritten(
    from: &Path,
    to: &Path,
    pick: impl Fn(&str) -> bool,
    change: impl Fn(Vec<u8>) -> Vec<u8>,
) -> Result<usize> {
    let mut input = tar::Archive::new(std::fs::File::open(from)?);
    let mut output = tar::Builder::new(std::fs::File::create(to)?);
    let mut replaced = 0;
    for entry in input.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let mut header = entry.header().clone();
        let mut data = Vec::new();
        entry.read_to_end(&mut data)?;
        if pick(path.to_string_lossy().trim_start_matches("./")) {
            data = change(data);
            header.set_size(data.len() as u64);
            header.set_cksum();
            replaced += 1;
        }
        output.append(&header, data.as_slice())?;
    }
    output.finish()?;
    Ok(replaced)
}

/// Copies the real archive `from` to `to` with one more regular file `name`
/// holding `data`.
fn with_entry(from: &Path, to: &Path, name: &str, data: &[u8]) -> Result<()> {
    let mut input = tar::Archive::new(std::fs::File::open(from)?);
    let mut output = tar::Builder::new(std::fs::File::create(to)?);
    for entry in input.entries()? {
        let mut entry = entry?;
        let header = entry.header().clone();
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        output.append(&header, content.as_slice())?;
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_mode(0o600);
    header.set_size(data.len() as u64);
    output.append_data(&mut header, name, data)?;
    output.finish()?;
    Ok(())
}

/// Copies the real archive `from` to `to`, its `rootfs-diff.tar` replaced by
/// `layer`.
fn with_layer(from: &Path, to: &Path, layer: &[u8]) -> Result<()> {
    let replaced = rewritten(
        from,
        to,
        |name| name == "rootfs-diff.tar",
        |_| layer.to_vec(),
    )?;
    anyhow::ensure!(replaced == 1, "{} has no rootfs-diff.tar", from.display());
    Ok(())
}

/// One tar entry with a raw name and link name, written as they are (the tar
/// crate refuses to write `..` and absolute names through its path setters);
/// names longer than a header holds go first as GNU long-name entries.
fn raw_entry(
    layer: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) -> Result<()> {
    let long = |layer: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, value: &str| {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        let mut header = tar::Header::new_gnu();
        let marker = b"././@LongLink";
        header.as_old_mut().name[..marker.len()].copy_from_slice(marker);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        layer.append(&header, data.as_slice())
    };
    let mut header = tar::Header::new_gnu();
    let bytes = name.as_bytes();
    if bytes.len() > 100 {
        long(layer, tar::EntryType::GNULongName, name)?;
    }
    let keep = bytes.len().min(100);
    header.as_old_mut().name[..keep].copy_from_slice(&bytes[..keep]);
    if let Some(link) = link {
        let bytes = link.as_bytes();
        if bytes.len() > 100 {
            long(layer, tar::EntryType::GNULongLink, link)?;
        }
        let keep = bytes.len().min(100);
        header.as_old_mut().linkname[..keep].copy_from_slice(&bytes[..keep]);
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    layer.append(&header, data)?;
    Ok(())
}

#[tokio::test]
async fn archive_escaping_the_root_changes_nothing_outside() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = install(&cluster, &client, "chk-escape", AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    start_pod(&cluster, &pods, "source", IDLE).await?;
    start_pod(&cluster, &pods, "target", IDLE).await?;
    let real = checkpoint(&client, &cluster.node, &ns, ("source", MAIN), CHECKPOINT).await?;

    // A file outside every container's root, in a directory the agent sees
    // at the same path (its own state lives next to it).
    let outside = tempfile::tempdir_in(setup.dir.path())?;
    let sentinel = outside.path().join("sentinel");
    std::fs::write(&sentinel, "untouched\n")?;
    let before = std::fs::metadata(&sentinel)?.modified()?;
    let dir = outside
        .path()
        .to_str()
        .context("path is not UTF-8")?
        .to_owned();
    let up = "../".repeat(32);
    let relative = dir.trim_start_matches('/');

    type Case<'a> = (
        &'a str,
        Vec<(String, tar::EntryType, Option<String>, &'a [u8])>,
    );
    let regular = tar::EntryType::Regular;
    let cases: Vec<Case> = vec![
        (
            "dotdot",
            vec![(
                format!("{up}{relative}/sentinel"),
                regular,
                None,
                b"escaped\n",
            )],
        ),
        (
            "absolute",
            vec![(format!("{dir}/sentinel"), regular, None, b"escaped\n")],
        ),
        (
            "symlink",
            vec![
                (
                    "out".into(),
                    tar::EntryType::Symlink,
                    Some(dir.clone()),
                    b"",
                ),
                ("out/sentinel".into(), regular, None, b"escaped\n"),
            ],
        ),
        (
            "hardlink",
            vec![
                (
                    "stolen".into(),
                    tar::EntryType::Link,
                    Some(format!("{up}{relative}/sentinel")),
                    b"",
                ),
                ("stolen".into(), regular, None, b"escaped\n"),
            ],
        ),
    ];
    let mut archives = Vec::new();
    for (name, entries) in cases {
        let mut layer = tar::Builder::new(Vec::new());
        for (path, kind, link, data) in entries {
            raw_entry(&mut layer, &path, kind, link.as_deref(), data)?;
        }
        let layer = layer.into_inner()?;
        let crafted = Archive(setup.checkpoints.join(format!("escape-{name}-{ns}.tar")));
        with_layer(&real.0, &crafted.0, &layer)?;
        create_restore(
            &client,
            &cluster.node,
            &ns,
            &format!("escape-{name}"),
            (&crafted.0, "target"),
            json!({"networkLock": "Skip"}),
        )
        .await?;
        archives.push((name, crafted));
    }

    for (name, _) in &archives {
        let (message, status) = refused(&setup, &client, &format!("escape-{name}")).await?;
        assert!(status["restoredPID"].is_null(), "{name}: status {status}");
        // The archive's fault, named as such, with the layer in question.
        assert!(
            message.starts_with("ArchiveInvalid: ") && message.contains("rootfs-diff.tar"),
            "{name}: Restored message: {message}"
        );
        eprintln!("{name}: refused: {message}");
        let text = std::fs::read_to_string(&sentinel)?;
        assert_eq!(text, "untouched\n", "{name}: the sentinel changed");
    }
    assert_eq!(std::fs::metadata(&sentinel)?.modified()?, before);
    let names: Vec<_> = std::fs::read_dir(outside.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, vec![std::ffi::OsString::from("sentinel")]);
    let foreign = foreign_processes(&cluster, &ns, "target")?;
    assert!(foreign.is_empty(), "ps in pod B: {foreign:?}");
    Ok(())
}

#[tokio::test]
async fn restore_failed_by_criu_leaves_the_target_as_it_was() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = install(&cluster, &client, "chk-fail", AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // The source holds a file of its writable layer open.
    let holder = "exec 3>>/tmp/held; exec sleep 3600";
    start_pod(&cluster, &pods, "source", holder).await?;
    let target = start_pod(&cluster, &pods, "target", IDLE).await?;
    let target_id = target.container_id(MAIN)?;
    let real = checkpoint(&client, &cluster.node, &ns, ("source", MAIN), CHECKPOINT).await?;

    // Without its writable layer the held file is missing: CRIU forks the
    // tree in pod B's namespaces and fails when it reopens the file.
    let missing = Archive(setup.checkpoints.join(format!("missing-{ns}.tar")));
    let empty = tar::Builder::new(Vec::new()).into_inner()?;
    with_layer(&real.0, &missing.0, &empty)?;
    // The memory images cut in half: CRIU does not finish, and the agent
    // stops it at the PodRestore's timeout.
    let stuck = Archive(setup.checkpoints.join(format!("stuck-{ns}.tar")));
    let replaced = rewritten(
        &real.0,
        &stuck.0,
        |name| name.starts_with("checkpoint/pages-") && name.ends_with(".img"),
        |mut pages| {
            pages.truncate(pages.len() / 2);
            pages
        },
    )?;
    assert!(replaced > 0, "no memory pages in {}", real.0.display());

    // Pod B has a firewall rule of its own, which must stay as it is.
    let netns = PathBuf::from(format!("/proc/{}/ns/net", container_pid(target_id)?));
    let own = [
        "iptables",
        "-A",
        "INPUT",
        "-s",
        "203.0.113.7/32",
        "-j",
        "DROP",
    ];
    run_in_netns(&netns, &own)?;
    let before = firewall(&netns)?;
    assert!(
        before.iter().any(|l| l.contains("203.0.113.7")),
        "pod B's own rule is missing: {before:?}"
    );
    // CRIU's default lock (iptables), then nftables; then a restore stopped.
    let cases = [
        ("missing-iptables", &missing, json!({}), "CriuFailed: "),
        (
            "missing-nftables",
            &missing,
            json!({"networkLock": "Nftables"}),
            "CriuFailed: ",
        ),
        (
            "stuck-iptables",
            &stuck,
            json!({"timeoutSeconds": 15}),
            "Timeout: ",
        ),
    ];
    for (name, archive, options, failure) in cases {
        create_restore(
            &client,
            &cluster.node,
            &ns,
            name,
            (&archive.0, "target"),
            options,
        )
        .await?;
        let (message, status) = refused(&setup, &client, name).await?;
        assert!(
            message.starts_with(failure),
            "{name}: Restored message: {message}"
        );
        assert!(status["restoredPID"].is_null(), "{name}: status {status}");

        // Pod B's firewall is as it was, with no lock left in it.
        let after = firewall(&netns)?;
        assert_eq!(after, before, "{name}: the firewall of pod B changed");
        // Nothing of the restore runs in pod B (not even the shim), no CRIU
        // runs for it, and the agent keeps only the restore's record and logs
        // until the PodRestore is deleted.
        let foreign = foreign_processes(&cluster, &ns, "target")?;
        assert!(foreign.is_empty(), "{name}: ps in pod B: {foreign:?}");
        let uid = podrestores(&client, &ns)
            .get(name)
            .await?
            .metadata
            .uid
            .context("no uid")?;
        let work = setup.state().join("work").join(&uid);
        let mut kept: Vec<String> = std::fs::read_dir(&work)
            .with_context(|| format!("{name}: no work directory {}", work.display()))?
            .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect::<Result<_, _>>()?;
        kept.sort();
        assert_eq!(
            kept,
            ["shim-outcome.json", "shim-request.json", "shim.log"],
            "{name}: in {}; shim.log: {}",
            work.display(),
            std::fs::read_to_string(work.join("shim.log")).unwrap_or_default()
        );
        delete_podrestore(&podrestores(&client, &ns), name, RESTORE, || setup.logs()).await?;
        assert!(!work.exists(), "{name}: {} is still there", work.display());
        eprintln!("{name}: refused: {message}");
    }
    Ok(())
}

#[tokio::test]
async fn established_tcp_connections_need_the_option_and_nothing_changes_before() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = install(&cluster, &client, "chk-tcp", AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // The source writes a file of its writable layer, which the refused
    // restore must not carry over.
    let source = "echo a > /written-in-a; exec sleep 3600";
    start_pod(&cluster, &pods, "source", source).await?;
    start_pod(&cluster, &pods, "target", IDLE).await?;
    let real = checkpoint(&client, &cluster.node, &ns, ("source", MAIN), CHECKPOINT).await?;

    // The kubelet's checkpoints never hold established connections (the
    // runtime does not ask CRIU for them); CRIU writes one
    // `tcp-stream-<id>.img` per connection it dumps.
    let connected = Archive(setup.checkpoints.join(format!("connected-{ns}.tar")));
    with_entry(
        &real.0,
        &connected.0,
        "checkpoint/tcp-stream-1a2b3c.img",
        b"stream",
    )?;
    create_restore(
        &client,
        &cluster.node,
        &ns,
        "connected",
        (&connected.0, "target"),
        json!({"networkLock": "Skip"}),
    )
    .await?;
    let (message, status) = refused(&setup, &client, "connected").await?;
    assert!(
        message.starts_with("OptionRequired: the checkpoint holds 1 established TCP connection")
            && message.contains("tcpEstablished: true"),
        "Restored message: {message}"
    );
    assert!(status["restoredPID"].is_null(), "status: {status}");
    let root = exec(&cluster, &ns, "target", &["ls", "/"])?;
    assert!(
        !root.lines().any(|l| l == "written-in-a"),
        "the checkpoint's layer reached pod B: {root}"
    );
    let foreign = foreign_processes(&cluster, &ns, "target")?;
    assert!(foreign.is_empty(), "ps in pod B: {foreign:?}");
    eprintln!("refused: {message}");
    Ok(())
}
