//! Restoring a checkpoint into a running pod on the local cluster, the way a
//! user does it: a counter runs in pod A and is checkpointed through the
//! kubelet's checkpoint API; a `PodRestore` names pod B on the same node; the
//! operator (a host process) asks the agent (`podrestore-agent serve` in the
//! node's mount namespace, as it would run on a real node) over mutual TLS;
//! the agent finds B through containerd's CRI and restores with the real CRIU.
//! Killing the operator or the agent in the middle still restores once; a
//! checkpoint of a pod A in another namespace is refused unless the operator
//! allows that namespace.
//!
//! What a user sees is checked from the outside: the PodRestore's conditions
//! and status, `kubectl exec B -- ps` and the counter's files inside B, and on
//! the node the restored PID's PID namespaces and cgroups.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::{core::v1::Pod, events::v1::Event};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use podrestore_crds::condition::{kind, reason};
use podrestore_e2e::{
    Cluster, TestNamespace, cluster,
    host::start_ticks,
    install::{
        AgentPlace, CONDITION, Installation, condition, delete_podrestore, install, podrestore,
        podrestores,
    },
    pods::{
        self, Archive, CHECKPOINT, PodOptions, bare_container_id, checkpoint, count, exec,
        start_pod_with,
    },
    wait_until,
};
use serde_json::json;

const RESTORE: Duration = Duration::from_secs(120);

/// The counter's loop: the value lives in the shell's memory; every second it
/// is written to `/tmp/count` and appended to `/tmp/log`, which the shell holds
/// open (a file of the container's writable layer, so the restore needs the
/// checkpoint's `rootfs-diff.tar`).
const COUNTER: &str = "exec 3>>/tmp/log; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; echo $i >&3; sleep 1; done";
/// A piece of the counter's command line that `ps` shows.
const COUNTER_MARK: &str = "i=$((i+1))";
/// A container that only waits.
const IDLE: &str = "exec sleep 3600";

/// Pod A and the counter's container in it.
const SOURCE: (&str, &str) = ("counter", "count");
/// Pod B and the container restored into.
const TARGET: (&str, &str) = ("forensic", "main");

/// The lines of `ps` in a container that show the counter.
fn counters_in(cluster: &Cluster, ns: &str, place: (&str, &str)) -> Result<Vec<String>> {
    let ps = exec(cluster, ns, place, &["ps"])?;
    Ok(ps
        .lines()
        .filter(|l| l.contains(COUNTER_MARK))
        .map(str::to_owned)
        .collect())
}

/// The PID a `ps` line starts with.
fn first_pid(line: &str) -> Result<i64> {
    line.split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no PID in {line:?}"))
}

/// Waits until the counter in a container has reached `at_least`.
async fn counted_to(
    cluster: &Cluster,
    ns: &str,
    place: (&str, &str),
    at_least: u64,
) -> Result<u64> {
    pods::counted_to(cluster, ns, place, at_least, Duration::from_secs(60)).await
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

/// Where a scenario's pods run.
#[derive(Debug, Clone, Copy, Default)]
struct Layout {
    /// Both pods share their process namespaces.
    shared: bool,
    /// Pod A runs in a namespace of its own, not in the installation's.
    source_elsewhere: bool,
}

/// Pod A counting, its checkpoint, and pod B to restore into.
struct Scenario {
    setup: Installation,
    archive: Archive,
    /// The counter's value right before the checkpoint was taken.
    before: u64,
    /// The counter's value in A right after the checkpoint.
    after: u64,
    /// Pod B's container, `containerd://<id>`.
    target_container: String,
    /// Both pods share their process namespaces.
    shared: bool,
    /// The counter's PID in pod A.
    pid_in_source: i64,
    /// Pod A's namespace when it is not the installation's (deleted last).
    elsewhere: Option<TestNamespace>,
}

async fn scenario(
    cluster: &Cluster,
    client: &kube::Client,
    prefix: &str,
    Layout {
        shared,
        source_elsewhere,
    }: Layout,
) -> Result<Scenario> {
    let setup = install(cluster, client, prefix, AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let elsewhere = if source_elsewhere {
        Some(cluster.namespace(&format!("{prefix}-src"))?)
    } else {
        None
    };
    let source_ns = elsewhere.as_ref().map_or(ns.clone(), |n| n.name.clone());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    // In a shared process namespace CRIU recreates the counter's PIDs in pod
    // B, where they must be free: a container started before the counter in
    // pod A moves them past the ones pod B uses.
    let source: &[(&str, &str)] = if shared {
        &[("idle", IDLE), (SOURCE.1, COUNTER)]
    } else {
        &[(SOURCE.1, COUNTER)]
    };
    let source_pods: Api<Pod> = Api::namespaced(client.clone(), &source_ns);
    let options = PodOptions {
        share_process_namespace: shared,
        ..PodOptions::default()
    };
    start_pod_with(cluster, &source_pods, SOURCE.0, source, options).await?;
    let target = start_pod_with(cluster, &pods, TARGET.0, &[(TARGET.1, IDLE)], options).await?;
    let target_container = target.container_id(TARGET.1)?.to_owned();
    let before = counted_to(cluster, &source_ns, SOURCE, 3).await?;
    let seen = counters_in(cluster, &source_ns, SOURCE)?;
    let pid_in_source = first_pid(seen.first().context("no counter in pod A")?)?;
    let archive = checkpoint(client, &cluster.node, &source_ns, SOURCE, CHECKPOINT).await?;
    let after = count(cluster, &source_ns, SOURCE)?;
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
        shared,
        pid_in_source,
        elsewhere,
    })
}

impl Scenario {
    fn logs(&self) -> String {
        self.setup.logs()
    }

    /// The namespace pod A runs in.
    fn source_ns(&self) -> &str {
        self.elsewhere
            .as_ref()
            .map_or(&self.setup.ns.name, |n| &n.name)
    }

    /// Creates the PodRestore `name` naming the archive and pod B with
    /// `options`; returns its UID.
    async fn create_restore(
        &self,
        client: &kube::Client,
        name: &str,
        node: &str,
        options: serde_json::Value,
    ) -> Result<String> {
        let ns = &self.setup.ns.name;
        let spec = json!({
            "checkpoint": {"archive": {
                "nodeName": node,
                "path": self.archive.0.display().to_string(),
            }},
            "target": {"podName": TARGET.0, "container": TARGET.1},
            "options": options,
        });
        let created = podrestores(client, ns)
            .create(&PostParams::default(), &podrestore(ns, name, spec)?)
            .await?;
        created.metadata.uid.context("no uid")
    }

    /// Waits until PodRestore `name` has `Restored=True`; returns its status.
    async fn restored(&self, client: &kube::Client, name: &str) -> Result<serde_json::Value> {
        let api = podrestores(client, &self.setup.ns.name);
        condition(
            &api,
            name,
            (kind::RESTORED, "True", reason::RESTORE_SUCCEEDED),
            RESTORE,
            || self.logs(),
        )
        .await?;
        Ok(api.get(name).await?.data["status"].clone())
    }

    /// Deletes PodRestore `name` and waits until it is gone (its finalizer ran).
    async fn delete_restore(&self, client: &kube::Client, name: &str) -> Result<()> {
        let api = podrestores(client, &self.setup.ns.name);
        delete_podrestore(&api, name, RESTORE, || self.logs()).await
    }
}

/// The host PID of the restored root, from the status.
fn restored_pid(status: &serde_json::Value) -> Result<i64> {
    status["restoredPID"]
        .as_i64()
        .with_context(|| format!("no restoredPID in {status}"))
}

/// What the restored tree looks like from the node and from inside pod B.
async fn check_restored(
    cluster: &Cluster,
    s: &Scenario,
    pid: i64,
    restored_at: Instant,
) -> Result<()> {
    let ns = &s.setup.ns.name;
    let levels = ns_pids(pid)?;
    if s.shared {
        // In pod B's (shared) PID namespace itself, at the PID it had in pod A.
        assert_eq!(levels.len(), 2, "NSpid of {pid}: {levels:?}");
        assert_eq!(levels[1], s.pid_in_source, "NSpid of {pid}: {levels:?}");
    } else {
        // Inside the pod's process tree, in a PID namespace of its own below
        // the pod's: host PID, PID in pod B, and 1 in its own namespace.
        assert_eq!(levels.len(), 3, "NSpid of {pid}: {levels:?}");
        assert_eq!(levels.last(), Some(&1));
    }
    let seen = counters_in(cluster, ns, TARGET)?;
    assert_eq!(seen.len(), 1, "ps in forensic: {seen:?}");
    assert_eq!(first_pid(&seen[0])?, levels[1], "ps in forensic: {seen:?}");

    // It goes on from the checkpointed value, not from the start, and keeps
    // counting; the restored shell writes its file at its next turn.
    let first = counted_to(cluster, ns, TARGET, s.before + 1).await?;
    let elapsed = restored_at.elapsed().as_secs();
    assert!(
        first <= s.after + elapsed + 3,
        "the restored counter shows {first}; it was checkpointed between {} and {} and restored {elapsed}s ago",
        s.before,
        s.after
    );
    let later = counted_to(cluster, ns, TARGET, first + 2).await?;
    // The log the shell holds open: the checkpoint's lines, carried over with
    // the writable layer, then the restored shell's, with no gap and no
    // restart.
    let log = exec(cluster, ns, TARGET, &["cat", "/tmp/log"])?;
    let lines: Vec<u64> = log.lines().filter_map(|l| l.trim().parse().ok()).collect();
    let expected: Vec<u64> = (1..=lines.len() as u64).collect();
    assert_eq!(lines, expected, "/tmp/log in forensic");
    assert!(
        lines.len() as u64 >= later,
        "/tmp/log ends before {later}: {lines:?}"
    );
    eprintln!(
        "checkpointed between {} and {}; restored counter at {first}, then {later}; NSpid {levels:?}",
        s.before, s.after
    );

    // Charged to the target container: its cgroup in every hierarchy.
    let id = bare_container_id(&s.target_container);
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    for line in cgroups.lines() {
        assert!(line.ends_with(id), "cgroup of {pid}: {line} (target {id})");
    }
    Ok(())
}

/// The whole user story in one pod layout: restore, look, delete, gone.
async fn restore_look_delete(prefix: &str, shared: bool) -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let layout = Layout {
        shared,
        ..Layout::default()
    };
    let s = scenario(&cluster, &client, prefix, layout).await?;
    let ns = s.setup.ns.name.clone();

    s.create_restore(
        &client,
        "forensic",
        &cluster.node,
        json!({"networkLock": "Skip"}),
    )
    .await?;
    let status = s.restored(&client, "forensic").await?;
    let restored_at = Instant::now();
    let pid = restored_pid(&status)?;
    assert_eq!(status["targetContainerID"], json!(s.target_container));
    assert_eq!(status["criuVersion"], json!("4.2.1"));
    let size = std::fs::metadata(&s.archive.0)?.len();
    assert_eq!(status["archive"]["size"], json!(size));
    check_restored(&cluster, &s, pid, restored_at)
        .await
        .with_context(|| s.logs())?;
    let ticks = start_ticks(pid).context("the restored root is gone")?;

    // Deleting the PodRestore stops the tree and cleans up on the node; the
    // target pod itself runs on.
    s.delete_restore(&client, "forensic").await?;
    assert_ne!(
        start_ticks(pid),
        Some(ticks),
        "restored PID {pid} still runs"
    );
    assert!(counters_in(&cluster, &ns, TARGET)?.is_empty());
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let phase = pods.get(TARGET.0).await?.status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Running"));
    let work = std::fs::read_dir(s.setup.state().join("work"))?.count();
    assert_eq!(work, 0, "the agent left work directories");
    Ok(())
}

#[tokio::test]
async fn restore_into_forensic_pod() -> Result<()> {
    restore_look_delete("restore", false).await
}

#[tokio::test]
async fn restore_into_pod_sharing_its_process_namespace() -> Result<()> {
    restore_look_delete("restore-shared", true).await
}

#[tokio::test]
async fn deleting_the_target_pod_ends_the_restored_tree() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let s = scenario(&cluster, &client, "restore-del", Layout::default()).await?;
    // The API's defaults (CRIU's iptables network lock among them).
    s.create_restore(&client, "forensic", &cluster.node, json!({}))
        .await?;
    let pid = restored_pid(&s.restored(&client, "forensic").await?)?;
    let ticks = start_ticks(pid).context("the restored root is gone")?;

    // The pod's end takes its PID namespace, and every namespace below it,
    // along.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &s.setup.ns.name);
    pods.delete(TARGET.0, &DeleteParams::default()).await?;
    wait_until("the restored tree to end with its pod", RESTORE, || {
        let ticks = ticks.clone();
        async move { Ok((start_ticks(pid) != Some(ticks)).then_some(())) }
    })
    .await
    .with_context(|| s.logs())?;
    Ok(())
}

#[tokio::test]
async fn agent_killed_during_a_restore_restores_once() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let mut s = scenario(&cluster, &client, "restore-kill", Layout::default()).await?;
    let ns = s.setup.ns.name.clone();
    let uid = s
        .create_restore(
            &client,
            "forensic",
            &cluster.node,
            json!({"networkLock": "Skip"}),
        )
        .await?;

    // Kill the agent as soon as the process restoring for this PodRestore
    // exists.
    let shim = shim_started(&uid, &s).await?;
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
    let pid = restored_pid(&s.restored(&client, "forensic").await?)?;
    assert!(
        start_ticks(pid).is_some(),
        "restored PID {pid} is not running"
    );
    let seen = counters_in(&cluster, &ns, TARGET)?;
    assert_eq!(
        seen.len(),
        1,
        "exactly one restored counter in forensic: {seen:?}"
    );

    s.delete_restore(&client, "forensic").await?;
    assert!(counters_in(&cluster, &ns, TARGET)?.is_empty());
    Ok(())
}

/// Waits until the restore shim for PodRestore `uid` runs; returns its PID.
/// Polled often: the shim lives only as long as CRIU restores.
async fn shim_started(uid: &str, s: &Scenario) -> Result<u32> {
    let deadline = Instant::now() + RESTORE;
    loop {
        if let Some(pid) = shim_of(uid) {
            return Ok(pid);
        }
        if Instant::now() >= deadline {
            bail!("no restore shim for {uid} appeared\n{}", s.logs());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The agent's record of PodRestore `uid` (`<state>/restores/<uid>.json`).
fn agent_record(setup: &Installation, uid: &str) -> Result<serde_json::Value> {
    let path = setup.state().join("restores").join(format!("{uid}.json"));
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read the agent's record {}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

/// How many lines of `log` carry `message` and name `uid`.
fn log_lines(log: &str, message: &str, uid: &str) -> usize {
    log.lines()
        .filter(|l| l.contains(message) && l.contains(uid))
        .count()
}

/// The status of condition `type_` in a PodRestore's status, if it has one.
fn condition_status<'a>(status: &'a serde_json::Value, type_: &str) -> Option<&'a str> {
    status["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)?["status"]
        .as_str()
}

#[tokio::test]
async fn operator_killed_during_a_restore_restores_once() -> Result<()> {
    operator_killed_during_a_restore("restore-opkill", false).await
}

#[tokio::test]
async fn operator_restarted_at_once_during_a_restore_restores_once() -> Result<()> {
    operator_killed_during_a_restore("restore-oprestart", true).await
}

/// Kills the operator while the agent restores; the next operator process
/// starts once the agent recorded the result, or at once (`at_once`), when
/// the restore may still run and the agent attaches the new request to it.
async fn operator_killed_during_a_restore(prefix: &str, at_once: bool) -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let mut s = scenario(&cluster, &client, prefix, Layout::default()).await?;
    let ns = s.setup.ns.name.clone();
    let uid = s
        .create_restore(
            &client,
            "forensic",
            &cluster.node,
            json!({"networkLock": "Skip"}),
        )
        .await?;

    // Kill the operator while the agent restores for this PodRestore: the
    // operator recorded the start and waits on the agent's stream for the
    // result, which it never gets.
    let shim = shim_started(&uid, &s).await?;
    s.setup.operator.kill()?;
    let status = podrestores(&client, &ns).get("forensic").await?.data["status"].clone();
    assert!(
        status["startTime"].is_string(),
        "the start is not recorded: {status}"
    );
    assert_ne!(
        condition_status(&status, kind::RESTORED),
        Some("True"),
        "restored before the operator was killed: {status}"
    );
    eprintln!("killed the operator while shim {shim} ran");

    if !at_once {
        // The agent finishes on its own; its record holds the result before
        // the next operator process asks.
        let record = wait_until("the agent to record the result", RESTORE, || async {
            let record = agent_record(&s.setup, &uid)?;
            Ok((record["state"] != "Running").then_some(record))
        })
        .await
        .with_context(|| s.logs())?;
        assert_eq!(record["state"], "Succeeded", "agent record: {record}");
    }

    // The next operator process resumes the PodRestore: it asks the agent
    // again with the same UID and gets the running restore's result or the
    // recorded one.
    s.setup.restart_operator(&[]).await?;
    let status = s.restored(&client, "forensic").await?;
    let pid = restored_pid(&status)?;
    let record = agent_record(&s.setup, &uid)?;
    assert_eq!(
        record["outcome"]["pid"],
        json!(pid),
        "agent record: {record}"
    );
    assert!(
        start_ticks(pid).is_some(),
        "restored PID {pid} is not running"
    );
    let seen = counters_in(&cluster, &ns, TARGET)?;
    assert_eq!(
        seen.len(),
        1,
        "exactly one restored counter in forensic: {seen:?}"
    );
    let operator_log = s.setup.operator.read_log()?;
    assert!(
        operator_log.contains("resuming the restore"),
        "the operator did not resume\n{}",
        s.logs()
    );
    let agent_log = s.setup.agent.read_log()?;
    assert_eq!(
        log_lines(&agent_log, "restore started", &uid),
        1,
        "the agent started the restore once\n{}",
        s.logs()
    );
    // The second request joined the first: attached to it while it ran, or
    // answered from its record.
    let attached = log_lines(&agent_log, "attaching to the running restore", &uid);
    let replayed = log_lines(&agent_log, "replaying the recorded result", &uid);
    if at_once {
        assert_eq!(
            attached + replayed,
            1,
            "the agent joined the second request to the first\n{}",
            s.logs()
        );
        eprintln!(
            "the second request was {}",
            if attached == 1 {
                "attached to the running restore"
            } else {
                "answered from the record"
            }
        );
    } else {
        assert_eq!(
            (attached, replayed),
            (0, 1),
            "the agent answered the second request from its record\n{}",
            s.logs()
        );
    }

    s.delete_restore(&client, "forensic").await?;
    assert!(counters_in(&cluster, &ns, TARGET)?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_checkpoint_from_another_namespace_is_refused_unless_allowed() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let layout = Layout {
        source_elsewhere: true,
        ..Layout::default()
    };
    let mut s = scenario(&cluster, &client, "restore-xns", layout).await?;
    let ns = s.setup.ns.name.clone();
    let source_ns = s.source_ns().to_owned();
    let api = podrestores(&client, &ns);

    // Pod A's checkpoint, named by a PodRestore in the installation's
    // namespace, is refused: the archive says it comes from another one.
    let uid = s
        .create_restore(
            &client,
            "refused",
            &cluster.node,
            json!({"networkLock": "Skip"}),
        )
        .await?;
    let message = condition(
        &api,
        "refused",
        (
            kind::ACCEPTED,
            "False",
            reason::SOURCE_NAMESPACE_NOT_ALLOWED,
        ),
        CONDITION,
        || s.logs(),
    )
    .await?;
    assert!(
        message.contains(&format!("taken in namespace {source_ns}")),
        "{message}"
    );
    condition(
        &api,
        "refused",
        (kind::RESTORED, "False", reason::NOT_ACCEPTED),
        CONDITION,
        || s.logs(),
    )
    .await?;
    let status = api.get("refused").await?.data["status"].clone();
    assert!(
        status["startTime"].is_null(),
        "refused yet started: {status}"
    );
    let events: Api<Event> = Api::namespaced(client.clone(), &ns);
    wait_until("a SourceNamespaceNotAllowed event", CONDITION, || async {
        let list = events.list(&ListParams::default()).await?;
        Ok(list
            .items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some(reason::SOURCE_NAMESPACE_NOT_ALLOWED)
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("refused")
            })
            .then_some(()))
    })
    .await
    .with_context(|| s.logs())?;

    // Nothing ran on the node: no restore in pod B, no record, no work
    // directory, no shim, not a line about this UID in the agent's log.
    assert!(counters_in(&cluster, &ns, TARGET)?.is_empty());
    for sub in ["restores", "work"] {
        let entries = std::fs::read_dir(s.setup.state().join(sub))?.count();
        assert_eq!(entries, 0, "agent {sub} is not empty");
    }
    assert_eq!(shim_of(&uid), None, "a restore shim runs for {uid}");
    assert!(
        !s.setup.agent.read_log()?.contains(&uid),
        "the agent heard of {uid}\n{}",
        s.logs()
    );

    // A refused PodRestore is tried again (at the latest when an operator
    // starts), so it goes before the operator is allowed more.
    s.delete_restore(&client, "refused").await?;
    s.setup
        .restart_operator(&["--allowed-source-namespaces", &source_ns])
        .await?;

    // Allowed now, a new PodRestore of the same archive restores.
    s.create_restore(
        &client,
        "allowed",
        &cluster.node,
        json!({"networkLock": "Skip"}),
    )
    .await?;
    let status = s.restored(&client, "allowed").await?;
    let restored_at = Instant::now();
    assert_eq!(status["source"]["namespace"], json!(source_ns), "{status}");
    let pid = restored_pid(&status)?;
    check_restored(&cluster, &s, pid, restored_at)
        .await
        .with_context(|| s.logs())?;

    s.delete_restore(&client, "allowed").await?;
    assert!(counters_in(&cluster, &ns, TARGET)?.is_empty());
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
