//! Migrating a checkpoint between two real nodes: a counter runs in a pod on
//! node `a` and is checkpointed through the kubelet's API there; a
//! `PodRestore` names a pod on node `b` and the archive on `a`. The operator
//! asks `b`'s agent to restore; `b`'s agent pulls the archive from `a`'s agent
//! over mutual TLS, checks its sha256 against what `a` reported and restores
//! with the real CRIU. Both agents run in their node's mount namespace.
//!
//! Needs the cluster with two nodes: `PODRESTORE_E2E_NODES="a b" e2e/cluster up`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use podrestore_crds::condition::{kind, reason};
use podrestore_e2e::{
    Cluster, cluster_with_nodes,
    host::sha256,
    install::{TwoNodes, condition, install_two_nodes, kubelet_root, podrestore, podrestores},
    pods::{self, Archive, MAIN, PodOptions, checkpoint, count, exec, start_pod_with},
};
use serde_json::json;

const RESTORE: Duration = Duration::from_secs(180);
/// How long the kubelet gets to checkpoint the large counter.
const CHECKPOINT: Duration = Duration::from_secs(120);
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done";
const IDLE: &str = "exec sleep 3600";

/// Starts pod `name` on node `node` whose container `main` runs `script`.
async fn start_pod(
    cluster: &Cluster,
    pods: &Api<Pod>,
    name: &str,
    node: &str,
    script: &str,
) -> Result<()> {
    let options = PodOptions {
        node: Some(node),
        ..PodOptions::default()
    };
    start_pod_with(cluster, pods, name, &[(MAIN, script)], options).await?;
    Ok(())
}

async fn counted_to(cluster: &Cluster, ns: &str, pod: &str, at_least: u64) -> Result<u64> {
    pods::counted_to(cluster, ns, (pod, MAIN), at_least, Duration::from_secs(60)).await
}

/// Where every scenario here starts: a pod `counter` on node `a` checkpointed
/// through the kubelet's API, and an idle pod `forensic` on node `b`.
struct Migration {
    /// The counter's checkpoint, on node `a`.
    archive: Archive,
    setup: TwoNodes,
    ns: String,
    client: kube::Client,
    cluster: Cluster,
}

/// Installs the operator and both agents for a namespace `<prefix>-...`,
/// starts the counter running `script` and the forensic pod, and checkpoints
/// the counter once it has counted to `counted`.
async fn counter_checkpointed_on_a(prefix: &str, script: &str, counted: u64) -> Result<Migration> {
    let cluster = cluster_with_nodes(&["a", "b"]);
    let client = cluster.client().await?;
    let setup = install_two_nodes(&cluster, &client, prefix).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    start_pod(&cluster, &pods, "counter", "a", script).await?;
    start_pod(&cluster, &pods, "forensic", "b", IDLE).await?;
    counted_to(&cluster, &ns, "counter", counted).await?;
    let archive = checkpoint(&client, "a", &ns, ("counter", MAIN), CHECKPOINT).await?;
    if !archive.0.starts_with(kubelet_root("a")?) {
        bail!("archive {} is not on node a", archive.0.display());
    }
    Ok(Migration {
        archive,
        setup,
        ns,
        client,
        cluster,
    })
}

/// Creates PodRestore `name` restoring `archive` from node `a` into pod
/// `forensic` on node `b`; returns its UID.
async fn restore(
    setup: &TwoNodes,
    client: &kube::Client,
    name: &str,
    archive: &Archive,
) -> Result<String> {
    let ns = &setup.ns.name;
    let spec = json!({
        "checkpoint": {"archive": {"nodeName": "a", "path": archive.0.display().to_string()}},
        "target": {"podName": "forensic", "container": "main"},
    });
    let created = podrestores(client, ns)
        .create(&PostParams::default(), &podrestore(ns, name, spec)?)
        .await?;
    created.metadata.uid.context("no uid")
}

#[tokio::test]
async fn a_checkpoint_from_node_a_is_pulled_verified_and_restored_on_node_b() -> Result<()> {
    let Migration {
        archive,
        setup,
        ns,
        client,
        cluster,
    } = counter_checkpointed_on_a("mig", COUNTER, 3).await?;
    let sha_on_a = sha256(&archive.0)?;
    let at_checkpoint = count(&cluster, &ns, ("counter", MAIN))?;
    let uid = restore(&setup, &client, "from-a", &archive).await?;
    let api = podrestores(&client, &ns);
    condition(
        &api,
        "from-a",
        (kind::RESTORED, "True", reason::RESTORE_SUCCEEDED),
        RESTORE,
        || setup.logs(),
    )
    .await?;
    let status = api.get("from-a").await?.data["status"].clone();
    assert_eq!(status["node"], "b", "{status}");
    assert_eq!(
        status["archive"]["sha256"].as_str(),
        Some(sha_on_a.as_str()),
        "the restored archive's sha256 is the one taken on a: {status}"
    );
    let on_b = setup
        .agent_state("b")
        .join("work")
        .join(&uid)
        .join("archive.tar");
    assert_eq!(sha256(&on_b)?, sha_on_a, "the file on b equals a's");
    let agent_b_log = setup.agent_b.read_log()?;
    assert!(
        agent_b_log.contains("archive pulled and verified"),
        "{}",
        setup.logs()
    );
    // The counter goes on on node b from where the checkpoint left it.
    let continued = counted_to(&cluster, &ns, "forensic", at_checkpoint + 2)
        .await
        .with_context(|| setup.logs())?;
    println!(
        "restored on b: sha256 {sha_on_a} on a and b; counter {at_checkpoint} at the checkpoint, {continued} on b"
    );
    Ok(())
}

/// How many bytes of a transfer reached b.
fn received(partial: &Path) -> u64 {
    std::fs::metadata(partial).map(|m| m.len()).unwrap_or(0)
}

/// Waits until the first bytes of PodRestore `uid`'s archive reach node b,
/// then stops b's agent (SIGSTOP) so that the transfer stands still: a's agent
/// reads the archive only as fast as b takes it, a few MiB of stream window
/// ahead at most. Returns the file the bytes arrive in and how many arrived;
/// the caller resumes b's agent with [`resume_b`] whatever happens next.
async fn hold_transfer_on_b(setup: &TwoNodes, uid: &str) -> Result<(PathBuf, u64)> {
    let partial = setup
        .agent_state("b")
        .join("work")
        .join(uid)
        .join("archive.partial");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while received(&partial) == 0 {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "no bytes arrived on b\n{}",
            setup.logs()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    setup.agent_b.signal("STOP")?;
    let arrived = received(&partial);
    Ok((partial, arrived))
}

/// Lets b's agent go on after [`hold_transfer_on_b`].
fn resume_b(setup: &TwoNodes) -> Result<()> {
    setup.agent_b.signal("CONT")
}

/// A counter whose writable layer holds 96 MiB, so that the archive takes a
/// while to move.
const BIG_COUNTER: &str = "dd if=/dev/urandom of=/ballast bs=1M count=96 2>/dev/null; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done";

#[tokio::test]
async fn killing_the_source_agent_during_the_transfer_fails_clearly_and_a_retry_completes()
-> Result<()> {
    let Migration {
        archive,
        mut setup,
        ns,
        client,
        cluster: _,
    } = counter_checkpointed_on_a("mig-kill", BIG_COUNTER, 2).await?;
    let size = std::fs::metadata(&archive.0)?.len();
    assert!(
        size > 64 << 20,
        "archive of {size} bytes is too small to cut"
    );

    let uid = restore(&setup, &client, "first", &archive).await?;
    // Kill a's agent as soon as bytes arrive on b, while the transfer is held.
    let (partial, cut_at) = hold_transfer_on_b(&setup, &uid).await?;
    let killed = setup.agent_a.kill();
    resume_b(&setup)?;
    killed?;
    println!("killed the agent of node a after {cut_at} of {size} bytes reached b");
    assert!(cut_at < size, "the transfer had already ended");
    let api = podrestores(&client, &ns);
    condition(
        &api,
        "first",
        (kind::RESTORED, "False", reason::ARCHIVE_TRANSFER_FAILED),
        RESTORE,
        || setup.logs(),
    )
    .await?;
    let status = api.get("first").await?.data["status"].clone();
    assert!(
        status["restoredPID"].is_null(),
        "nothing restored: {status}"
    );
    assert!(
        !partial.with_file_name("archive.tar").exists(),
        "no archive in place after a cut transfer"
    );

    // The agent comes back; a new PodRestore completes.
    setup.restart_agent("a").await?;
    restore(&setup, &client, "again", &archive).await?;
    condition(
        &api,
        "again",
        (kind::RESTORED, "True", reason::RESTORE_SUCCEEDED),
        RESTORE,
        || setup.logs(),
    )
    .await?;
    let status = api.get("again").await?.data["status"].clone();
    assert_eq!(
        status["archive"]["sha256"].as_str(),
        Some(sha256(&archive.0)?.as_str()),
        "{status}"
    );
    Ok(())
}

#[tokio::test]
async fn bytes_changed_after_the_source_hashed_them_fail_the_digest_and_nothing_is_restored()
-> Result<()> {
    let Migration {
        archive,
        setup,
        ns,
        client,
        cluster,
    } = counter_checkpointed_on_a("mig-flip", BIG_COUNTER, 2).await?;
    let size = std::fs::metadata(&archive.0)?.len();

    let uid = restore(&setup, &client, "flipped", &archive).await?;
    // Once bytes flow, a's agent has sent the digest of the whole file: flip a
    // byte near its end, so that what b receives differs from what a hashed.
    // The transfer is held meanwhile, so it cannot pass the byte first.
    let (partial, received) = hold_transfer_on_b(&setup, &uid).await?;
    let at = size - 100;
    let flipped = (|| -> Result<()> {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&archive.0)?;
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, at)?;
        byte[0] ^= 0x01;
        file.write_all_at(&byte, at)?;
        Ok(())
    })();
    resume_b(&setup)?;
    flipped?;
    assert!(
        received < at,
        "the transfer passed the flipped byte already ({received} of {size} bytes on b)"
    );

    let api = podrestores(&client, &ns);
    condition(
        &api,
        "flipped",
        (kind::RESTORED, "False", reason::ARCHIVE_DIGEST_MISMATCH),
        RESTORE,
        || setup.logs(),
    )
    .await?;
    let status = api.get("flipped").await?.data["status"].clone();
    println!("flipped byte {at} of {size} after {received} bytes reached b: {status}");
    assert!(
        status["restoredPID"].is_null(),
        "nothing restored: {status}"
    );
    let work = partial.parent().context("work dir")?;
    assert!(
        !work.join("archive.tar").exists() && !partial.exists(),
        "no archive left on b"
    );
    // The target's container still runs only what it ran.
    let ps = exec(&cluster, &ns, ("forensic", MAIN), &["ps"])?;
    assert!(
        !ps.contains("i=$((i+1))"),
        "a counter runs in the target: {ps}"
    );
    Ok(())
}
