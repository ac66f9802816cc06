//! Restoring a checkpoint into a running pod on the local cluster, the way a
//! user does it: a counter runs in pod A and is checkpointed through the
//! kubelet's checkpoint API; a `PodRestore` names pod B on the same node; the
//! operator (a host process) asks the agent (`podrestore-agent serve` in the
//! node's mount namespace, as it would run on a real node) over mutual TLS;
//! the agent finds B through containerd's CRI and restores with the real CRIU.
//!
//! What a user sees is checked from the outside: the PodRestore's conditions
//! and status, `kubectl exec B -- ps` and the counter's file inside B, and on
//! the node the restored PID's PID namespaces and cgroups.

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DeleteParams, PostParams},
};
use podrestore_crds::condition::{kind, reason};
use podrestore_e2e::{
    Cluster,
    install::{AgentPlace, Installation, condition, install, podrestore, podrestores},
    wait_until,
};
use serde_json::json;

const POD_START: Duration = Duration::from_secs(120);
const RESTORE: Duration = Duration::from_secs(120);

/// The counter's loop: the value lives in the shell's memory; every second it
/// is written to `/tmp/count` and appended to `/tmp/log`, which the shell holds
/// open (a file of the container's writable layer, so the restore needs the
/// checkpoint's `rootfs-diff.tar`).
const COUNTER: &str = "exec 3>>/tmp/log; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; echo $i >&3; sleep 1; done";
/// A piece of the counter's command line that `ps` shows.
const COUNTER_MARK: &str = "i=$((i+1))";

fn cluster() -> Cluster {
    match Cluster::from_env() {
        Ok(c) => c,
        Err(e) => panic!("no local cluster: {e:#}"),
    }
}

/// Starts a one-container busybox pod on the cluster's node and waits until it
/// runs; returns its container ID (`containerd://...`).
async fn start_pod(
    cluster: &Cluster,
    pods: &Api<Pod>,
    name: &str,
    container: &str,
    script: &str,
) -> Result<String> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "nodeName": cluster.node,
            "containers": [{
                "name": container,
                "image": cluster.busybox_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c", script],
            }],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    wait_until(&format!("pod {name} running"), POD_START, || async {
        let pod = pods.get(name).await?;
        let status = pod.status.unwrap_or_default();
        if status.phase.as_deref() != Some("Running") {
            return Ok(None);
        }
        Ok(status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.name == container)
            .and_then(|c| c.container_id))
    })
    .await
}

/// Checkpoints a container through the kubelet's API (through the API
/// server's node proxy) and returns the archive's path on the node.
async fn checkpoint(
    client: &kube::Client,
    node: &str,
    ns: &str,
    pod: &str,
    container: &str,
) -> Result<PathBuf> {
    let path = format!("/api/v1/nodes/{node}/proxy/checkpoint/{ns}/{pod}/{container}?timeout=60");
    let request = http::Request::post(path).body(Vec::new())?;
    let reply: serde_json::Value = client
        .request(request)
        .await
        .context("kubelet checkpoint API")?;
    let archive = reply["items"][0]
        .as_str()
        .with_context(|| format!("no archive in the kubelet's reply {reply}"))?;
    Ok(PathBuf::from(archive))
}

/// Removes a checkpoint archive when the scenario ends.
struct Archive(PathBuf);

impl Drop for Archive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The counter's value in `pod` (its `/tmp/count`).
fn count(cluster: &Cluster, ns: &str, pod: &str) -> Result<u64> {
    let out = cluster.kubectl(&["exec", "-n", ns, pod, "--", "cat", "/tmp/count"])?;
    out.trim()
        .parse()
        .with_context(|| format!("/tmp/count in {pod} holds {out:?}"))
}

/// The lines of `ps` inside `pod` that show the counter.
fn counters_in(cluster: &Cluster, ns: &str, pod: &str) -> Result<Vec<String>> {
    let ps = cluster.kubectl(&["exec", "-n", ns, pod, "--", "ps"])?;
    Ok(ps
        .lines()
        .filter(|l| l.contains(COUNTER_MARK))
        .map(str::to_owned)
        .collect())
}

/// Waits until the counter in `pod` has reached `at_least`.
async fn counted_to(cluster: &Cluster, ns: &str, pod: &str, at_least: u64) -> Result<u64> {
    wait_until(
        &format!("{pod} to count to {at_least}"),
        Duration::from_secs(60),
        || async {
            let n = count(cluster, ns, pod)?;
            Ok((n >= at_least).then_some(n))
        },
    )
    .await
}

/// `NSpid` of a host PID: its PID in each PID namespace, outermost first.
fn ns_pids(pid: i64) -> Result<Vec<i64>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("process {pid} is not running"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .context("no NSpid line")?;
    Ok(line
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// The start time of a host PID (field 22 of its stat), to tell it from a
/// later process with the same PID.
fn start_ticks(pid: i64) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19).map(|s| (*s).to_owned())
}

/// Pod A counting, its checkpoint, and pod B to restore into.
struct Scenario {
    setup: Installation,
    archive: Archive,
    /// The counter's value right before the checkpoint was taken.
    before: u64,
    /// The counter's value in A right after the checkpoint.
    after: u64,
    target_container: String,
}

async fn scenario(cluster: &Cluster, client: &kube::Client, prefix: &str) -> Result<Scenario> {
    let setup = install(cluster, client, prefix, AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    start_pod(cluster, &pods, "counter", "count", COUNTER).await?;
    let target_container = start_pod(cluster, &pods, "forensic", "main", "exec sleep 3600").await?;
    let before = counted_to(cluster, &ns, "counter", 3).await?;
    let archive = Archive(checkpoint(client, &cluster.node, &ns, "counter", "count").await?);
    let after = count(cluster, &ns, "counter")?;
    assert!(
        archive.0.starts_with(&setup.checkpoints),
        "archive {} is outside {}",
        archive.0.display(),
        setup.checkpoints.display()
    );
    Ok(Scenario {
        setup,
        archive,
        before,
        after,
        target_container,
    })
}

fn restore_spec(node: &str, archive: &Path) -> serde_json::Value {
    json!({
        "checkpoint": {"archive": {"nodeName": node, "path": archive.display().to_string()}},
        "target": {"podName": "forensic", "container": "main"},
        "options": {"networkLock": "Skip"},
    })
}

/// What the restored tree looks like from the node and from inside pod B.
async fn check_restored(
    cluster: &Cluster,
    s: &Scenario,
    pid: i64,
    restored_at: Instant,
) -> Result<()> {
    let ns = &s.setup.ns.name;
    // Inside the pod's process tree, in a PID namespace of its own below the
    // pod's: host PID, PID in pod B, and 1 in its own namespace.
    let levels = ns_pids(pid)?;
    assert_eq!(levels.len(), 3, "NSpid of {pid}: {levels:?}");
    assert_eq!(levels.last(), Some(&1));
    let seen = counters_in(cluster, ns, "forensic")?;
    assert_eq!(seen.len(), 1, "ps in forensic: {seen:?}");
    assert!(
        seen[0].trim_start().starts_with(&levels[1].to_string()),
        "ps in forensic shows {seen:?}, the restored root is PID {} there",
        levels[1]
    );

    // It goes on from the checkpointed value, not from the start, and keeps
    // counting.
    // The restored shell writes its file at its next turn.
    let first = counted_to(cluster, ns, "forensic", s.before + 1).await?;
    let elapsed = restored_at.elapsed().as_secs();
    assert!(
        first > s.before && first <= s.after + elapsed + 3,
        "the restored counter shows {first}; it was checkpointed between {} and {} and restored {elapsed}s ago",
        s.before,
        s.after
    );
    let later = counted_to(cluster, ns, "forensic", first + 2).await?;
    // The log the shell holds open: the checkpoint's lines, carried over
    // with the writable layer, then the restored shell's, with no gap and no
    // restart.
    let log = cluster.kubectl(&["exec", "-n", ns, "forensic", "--", "cat", "/tmp/log"])?;
    let lines: Vec<u64> = log.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let expected: Vec<u64> = (1..=lines.len() as u64).collect();
    assert_eq!(lines, expected, "/tmp/log in forensic");
    assert!(
        lines.len() as u64 >= later,
        "/tmp/log ends before {later}: {lines:?}"
    );
    eprintln!(
        "checkpointed between {} and {}; restored counter at {first}, then {later}",
        s.before, s.after
    );

    // Charged to the target container: its cgroup in every hierarchy.
    let id = s
        .target_container
        .split_once("://")
        .map_or(s.target_container.as_str(), |(_, id)| id);
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    for line in cgroups.lines() {
        assert!(line.ends_with(id), "cgroup of {pid}: {line} (target {id})");
    }
    Ok(())
}

#[tokio::test]
async fn restore_into_forensic_pod() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let s = scenario(&cluster, &client, "restore").await?;
    let ns = s.setup.ns.name.clone();
    let api = podrestores(&client, &ns);
    let logs = || s.setup.logs();

    api.create(
        &PostParams::default(),
        &podrestore(&ns, "forensic", restore_spec(&cluster.node, &s.archive.0))?,
    )
    .await?;
    condition(
        &api,
        "forensic",
        (kind::RESTORED, "True", reason::RESTORE_SUCCEEDED),
        RESTORE,
        logs,
    )
    .await?;
    let restored_at = Instant::now();
    let object = api.get("forensic").await?;
    let status = &object.data["status"];
    let pid = status["restoredPID"]
        .as_i64()
        .with_context(|| format!("no restoredPID in {status}"))?;
    assert_eq!(status["targetContainerID"], json!(s.target_container));
    assert_eq!(status["criuVersion"], json!("4.2.1"));
    let size = std::fs::metadata(&s.archive.0)?.len();
    assert_eq!(status["archive"]["size"], json!(size));
    check_restored(&cluster, &s, pid, restored_at)
        .await
        .with_context(logs)?;
    let ticks = start_ticks(pid).context("the restored root is gone")?;

    // Deleting the PodRestore stops the tree and cleans up on the node; the
    // target pod itself runs on.
    api.delete("forensic", &DeleteParams::default()).await?;
    wait_until("the PodRestore to be gone", RESTORE, || async {
        Ok(api.get_opt("forensic").await?.is_none().then_some(()))
    })
    .await
    .with_context(logs)?;
    assert_ne!(
        start_ticks(pid),
        Some(ticks),
        "restored PID {pid} still runs"
    );
    assert!(counters_in(&cluster, &ns, "forensic")?.is_empty());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let phase = pods.get("forensic").await?.status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Running"));
    let work = std::fs::read_dir(s.setup.state().join("work"))?.count();
    assert_eq!(work, 0, "the agent left work directories");
    Ok(())
}

#[tokio::test]
async fn deleting_the_target_pod_ends_the_restored_tree() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let s = scenario(&cluster, &client, "restore-del").await?;
    let ns = s.setup.ns.name.clone();
    let api = podrestores(&client, &ns);
    api.create(
        &PostParams::default(),
        &podrestore(&ns, "forensic", restore_spec(&cluster.node, &s.archive.0))?,
    )
    .await?;
    condition(
        &api,
        "forensic",
        (kind::RESTORED, "True", reason::RESTORE_SUCCEEDED),
        RESTORE,
        || s.setup.logs(),
    )
    .await?;
    let object = api.get("forensic").await?;
    let pid = object.data["status"]["restoredPID"]
        .as_i64()
        .context("no restoredPID")?;
    let ticks = start_ticks(pid).context("the restored root is gone")?;

    // The pod's end takes its PID namespace, and every namespace below it, along.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    pods.delete("forensic", &DeleteParams::default()).await?;
    wait_until("the restored tree to end with its pod", RESTORE, || {
        let ticks = ticks.clone();
        async move { Ok((start_ticks(pid) != Some(ticks)).then_some(())) }
    })
    .await
    .with_context(|| s.setup.logs())?;
    Ok(())
}

#[tokio::test]
async fn agent_killed_during_a_restore_restores_once() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let mut s = scenario(&cluster, &client, "restore-kill").await?;
    let ns = s.setup.ns.name.clone();
    let api = podrestores(&client, &ns);
    let created = api
        .create(
            &PostParams::default(),
            &podrestore(&ns, "forensic", restore_spec(&cluster.node, &s.archive.0))?,
        )
        .await?;
    let uid = created.metadata.uid.context("no uid")?;

    // Kill the agent as soon as the process restoring for this PodRestore
    // exists (the shim, whose command line names the UID).
    let deadline = Instant::now() + RESTORE;
    let shim = loop {
        if let Some(pid) = shim_of(&uid) {
            break pid;
        }
        if Instant::now() >= deadline {
            bail!("no restore shim for {uid} appeared\n{}", s.setup.logs());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    s.setup.agent.kill()?;
    let outcome_written = std::fs::read_dir(s.setup.state().join("work"))?
        .filter_map(Result::ok)
        .any(|d| d.path().join("shim-outcome.json").exists());
    eprintln!(
        "killed the agent while shim {shim} ran (its outcome written already: {outcome_written})"
    );

    // The next agent process settles the restore the first one started; it is
    // never started again.
    s.setup.restart_agent().await?;
    condition(
        &api,
        "forensic",
        (kind::RESTORED, "True", reason::RESTORE_SUCCEEDED),
        RESTORE,
        || s.setup.logs(),
    )
    .await?;
    let object = api.get("forensic").await?;
    let pid = object.data["status"]["restoredPID"]
        .as_i64()
        .context("no restoredPID")?;
    assert!(
        start_ticks(pid).is_some(),
        "restored PID {pid} is not running"
    );
    let seen = counters_in(&cluster, &ns, "forensic")?;
    assert_eq!(
        seen.len(),
        1,
        "exactly one restored counter in forensic: {seen:?}"
    );

    api.delete("forensic", &DeleteParams::default()).await?;
    wait_until("the PodRestore to be gone", RESTORE, || async {
        Ok(api.get_opt("forensic").await?.is_none().then_some(()))
    })
    .await
    .with_context(|| s.setup.logs())?;
    assert!(counters_in(&cluster, &ns, "forensic")?.is_empty());
    Ok(())
}

/// The host PID of the restore shim working for PodRestore `uid`.
fn shim_of(uid: &str) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmd| {
                let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
                args.get(1) == Some(&&b"restore-shim"[..]) && args.contains(&uid.as_bytes())
            })
        })
}
