//! Checkpointing through a `PodCheckpoint` and restoring it through a
//! `PodRestore` that names it, the way a user does it: a counter runs in pod
//! `counter`; a PodCheckpoint asks the operator (a host process) to checkpoint
//! it through the kubelet; the operator records the archive's path and, from
//! the node's agent, its sha256 and size; a PodRestore naming the
//! PodCheckpoint restores the counter into pod `forensic`, and its status
//! records the chain from the checkpointed pod to the restored one.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use podrestore_crds::{
    condition::{kind, reason},
    podcheckpoint::condition as pcp,
};
use podrestore_e2e::{
    cluster,
    host::sha256,
    install::{
        AgentPlace, checkpointed, condition, install, install_checkpoint_crd, podcheckpoint,
        podcheckpoints, podrestore, podrestores,
    },
    pods::{
        MAIN, PodOptions, apply_forensic_pod, count, counted_to, create_pod, exec, running, sh,
        start_pod,
    },
};
use serde_json::json;

const STEP: Duration = Duration::from_secs(120);

/// The counter's loop: the value lives in the shell's memory and is written
/// to `/tmp/count` every second.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done";
/// A piece of the counter's command line that `ps` shows.
const COUNTER_MARK: &str = "i=$((i+1))";

#[tokio::test]
async fn checkpoint_through_podcheckpoint_and_restore_it_by_name() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    install_checkpoint_crd(&cluster)?;
    let setup = install(&cluster, &client, "e2e-pcp", AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    start_pod(&cluster, &pods, "counter", COUNTER).await?;
    start_pod(&cluster, &pods, "forensic", "exec sleep 3600").await?;
    counted_to(&cluster, &ns, ("counter", MAIN), 3, Duration::from_secs(60)).await?;

    // The PodCheckpoint reaches Checkpointed with the archive's facts.
    let (status, archive) = checkpointed(
        &client,
        &ns,
        ("snap", json!({"podName": "counter"})),
        STEP,
        || setup.logs(),
    )
    .await?;
    let path = archive.0.display().to_string();
    assert!(
        archive.0.starts_with(&setup.checkpoints),
        "archive {path} is outside {}",
        setup.checkpoints.display()
    );
    assert_eq!(status["nodeName"], json!(cluster.node));
    assert_eq!(status["pod"]["name"], json!("counter"));
    assert_eq!(status["pod"]["namespace"], json!(ns));
    assert_eq!(status["container"], json!("main"));
    let on_disk = sha256(&archive.0)?;
    assert_eq!(status["sha256"], json!(on_disk), "{status}");
    let size = std::fs::metadata(&archive.0)?.len();
    assert_eq!(status["size"].as_u64(), Some(size), "{status}");
    assert!(status["checkpointTime"].is_string(), "{status}");
    // The checkpoint leaves the counter running.
    assert_eq!(
        pods.get("counter")
            .await?
            .status
            .and_then(|s| s.phase)
            .as_deref(),
        Some("Running")
    );

    // A PodRestore naming the PodCheckpoint restores its archive.
    let restores = podrestores(&client, &ns);
    let spec = json!({
        "checkpoint": {"podCheckpoint": {"name": "snap"}},
        "target": {"podName": "forensic"},
    });
    restores
        .create(&PostParams::default(), &podrestore(&ns, "from-snap", spec)?)
        .await?;
    condition(
        &restores,
        "from-snap",
        (kind::RESTORED, "True", reason::RESTORE_SUCCEEDED),
        STEP,
        || setup.logs(),
    )
    .await?;
    let status = restores.get("from-snap").await?.data["status"].clone();
    let chain = &status["provenance"];
    assert_eq!(chain["podCheckpoint"], json!("snap"), "{status}");
    assert_eq!(chain["sourcePod"], json!("counter"), "{status}");
    assert_eq!(chain["sourceNamespace"], json!(ns), "{status}");
    assert_eq!(chain["sourceContainer"], json!("main"), "{status}");
    assert_eq!(chain["sourceNode"], json!(cluster.node), "{status}");
    assert_eq!(chain["targetPod"], json!("forensic"), "{status}");
    assert_eq!(chain["targetNode"], json!(cluster.node), "{status}");
    assert_eq!(chain["archiveSha256"], json!(on_disk), "{status}");
    assert!(chain["restoreTime"].is_string(), "{status}");
    assert!(chain["checkpointTime"].is_string(), "{status}");

    // The counter runs on in the forensic pod.
    let ps = exec(&cluster, &ns, ("forensic", MAIN), &["ps"])?;
    assert!(
        ps.lines().any(|l| l.contains(COUNTER_MARK)),
        "no counter in pod forensic:\n{ps}"
    );
    let first = count(&cluster, &ns, ("forensic", MAIN))?;
    counted_to(
        &cluster,
        &ns,
        ("forensic", MAIN),
        first + 1,
        Duration::from_secs(30),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn podrestore_waits_for_a_missing_podcheckpoint() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    install_checkpoint_crd(&cluster)?;
    let setup = install(&cluster, &client, "e2e-pcp-wait", AgentPlace::Host).await?;
    let ns = setup.ns.name.clone();
    let restores = podrestores(&client, &ns);
    let spec = json!({
        "checkpoint": {"podCheckpoint": {"name": "not-yet"}},
        "target": {"podName": "forensic"},
    });
    restores
        .create(&PostParams::default(), &podrestore(&ns, "waiting", spec)?)
        .await?;
    let message = condition(
        &restores,
        "waiting",
        (kind::ACCEPTED, "False", reason::CHECKPOINT_NOT_FOUND),
        STEP,
        || setup.logs(),
    )
    .await?;
    assert!(message.contains("not-yet"), "{message}");

    // Both sources at once is refused by the schema.
    let both = json!({
        "checkpoint": {
            "podCheckpoint": {"name": "x"},
            "archive": {"nodeName": cluster.node, "path": "/var/lib/kubelet/checkpoints/x.tar"},
        },
        "target": {"podName": "forensic"},
    });
    let err = restores
        .create(&PostParams::default(), &podrestore(&ns, "both", both)?)
        .await
        .expect_err("two sources");
    assert!(
        err.to_string().contains("exactly one checkpoint source"),
        "{err}"
    );

    // A PodCheckpoint of a pod that does not exist waits with a reason, and its spec
    // cannot change.
    let checkpoints = podcheckpoints(&client, &ns);
    let spec = json!({"podName": "ghost"});
    checkpoints
        .create(&PostParams::default(), &podcheckpoint(&ns, "ghost", spec)?)
        .await?;
    let message = condition(
        &checkpoints,
        "ghost",
        (pcp::CHECKPOINTED, "False", pcp::reason::POD_NOT_FOUND),
        STEP,
        || setup.logs(),
    )
    .await?;
    assert!(message.contains("ghost"), "{message}");
    let patch = json!({"spec": {"podName": "other"}});
    let err = checkpoints
        .patch(
            "ghost",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await
        .expect_err("spec is immutable");
    assert!(err.to_string().contains("spec is immutable"), "{err}");
    Ok(())
}

#[tokio::test]
async fn restore_into_forensic_pod() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    install_checkpoint_crd(&cluster)?;
    let setup = install(&cluster, &client, "e2e-forensic", AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // The suspect: a counter, and a server the test tries to reach.
    let web = "while true; do echo reached | nc -l -p 8080; done";
    let suspect = [(MAIN, COUNTER), ("web", web)];
    create_pod(&cluster, &pods, "suspect", &suspect, PodOptions::default()).await?;
    start_pod(&cluster, &pods, "probe", "exec sleep 3600").await?;
    // The documented pod, placed on the node the one agent serves.
    apply_forensic_pod(&cluster, &ns, &cluster.node)?;
    let suspect_ip = running(&pods, "suspect").await?.ip;
    running(&pods, "forensic").await?;
    counted_to(&cluster, &ns, ("suspect", MAIN), 3, Duration::from_secs(60)).await?;
    // An ordinary pod reaches the suspect's server: the negative check below means
    // something.
    let reach = format!("nc -w 3 {suspect_ip} 8080 </dev/null");
    let reached = sh(&cluster, &ns, ("probe", MAIN), &reach)?;
    assert!(reached.contains("reached"), "probe got {reached:?}");

    let (_, _archive) = checkpointed(
        &client,
        &ns,
        (
            "suspect",
            json!({"podName": "suspect", "container": "main"}),
        ),
        STEP,
        || setup.logs(),
    )
    .await?;

    let restores = podrestores(&client, &ns);
    let spec = json!({
        "checkpoint": {"podCheckpoint": {"name": "suspect"}},
        "target": {"podName": "forensic", "container": "main"},
    });
    restores
        .create(&PostParams::default(), &podrestore(&ns, "suspect", spec)?)
        .await?;
    condition(
        &restores,
        "suspect",
        (kind::RESTORED, "True", reason::RESTORE_SUCCEEDED),
        STEP,
        || setup.logs(),
    )
    .await?;

    // The restored counter runs on in the forensic pod...
    let ps = sh(&cluster, &ns, ("forensic", MAIN), "ps")?;
    assert!(
        ps.lines().any(|l| l.contains(COUNTER_MARK)),
        "no counter in pod forensic:\n{ps}"
    );
    let first = count(&cluster, &ns, ("forensic", MAIN))?;
    counted_to(
        &cluster,
        &ns,
        ("forensic", MAIN),
        first + 1,
        Duration::from_secs(30),
    )
    .await?;
    // ...in a network namespace that reaches nothing: not the suspect's address...
    let blocked = sh(&cluster, &ns, ("forensic", MAIN), &reach);
    assert!(
        !blocked.as_ref().is_ok_and(|out| out.contains("reached")),
        "the forensic pod reached the suspect: {blocked:?}"
    );
    // ...with only loopback up...
    let links = sh(&cluster, &ns, ("forensic", MAIN), "ip -o link show up")?;
    let up: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .collect();
    assert_eq!(up, ["lo"], "interfaces up in the forensic pod:\n{links}");
    // ...without a ServiceAccount token, and with read-only volumes.
    let token = sh(
        &cluster,
        &ns,
        ("forensic", MAIN),
        "ls -A /var/run/secrets/kubernetes.io/serviceaccount",
    );
    assert_eq!(
        token.as_ref().map(|s| s.trim()).ok(),
        Some(""),
        "the ServiceAccount path in the forensic pod holds something: {token:?}"
    );
    let write = sh(&cluster, &ns, ("forensic", MAIN), "echo x > /evidence/x");
    assert!(write.is_err(), "the evidence volume is writable: {write:?}");
    Ok(())
}
