//! The forensic use case across two real nodes: a suspect counter on node `a`
//! is checkpointed through a `PodCheckpoint`; a `PodRestore` naming it restores
//! the counter on node `b` into the network-isolated forensic pod of
//! `e2e/testdata/forensic/target.yaml`. `b`'s agent pulls the archive from
//! `a`'s agent and verifies it; the PodRestore's provenance shows the chain and
//! the archive's sha256 equals the one the PodCheckpoint recorded on `a`.
//!
//! Needs the cluster with two nodes: `PODRESTORE_E2E_NODES="a b" e2e/cluster up`.

use std::time::Duration;

use anyhow::Result;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use podrestore_crds::condition::{kind, reason};
use podrestore_e2e::{
    cluster_with_nodes,
    host::sha256,
    install::{
        checkpointed, condition, install_checkpoint_crd, install_two_nodes, kubelet_root,
        podrestore, podrestores,
    },
    pods::{MAIN, PodOptions, apply_forensic_pod, count, counted_to, create_pod, running, sh},
};
use serde_json::json;

const STEP: Duration = Duration::from_secs(180);
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done";
const COUNTER_MARK: &str = "i=$((i+1))";

#[tokio::test]
async fn forensic_migration_across_nodes() -> Result<()> {
    let cluster = cluster_with_nodes(&["a", "b"]);
    let client = cluster.client().await?;
    install_checkpoint_crd(&cluster)?;
    let setup = install_two_nodes(&cluster, &client, "e2e-forensic-ab").await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // The suspect on node a: a counter and a server; a probe pod next to it.
    let on_a = PodOptions {
        node: Some("a"),
        ..PodOptions::default()
    };
    let web = "while true; do echo reached | nc -l -p 8080; done";
    let suspect = [(MAIN, COUNTER), ("web", web)];
    create_pod(&cluster, &pods, "suspect", &suspect, on_a).await?;
    create_pod(&cluster, &pods, "probe", &[(MAIN, "exec sleep 3600")], on_a).await?;
    // The forensic pod of the documented recipe, on node b.
    apply_forensic_pod(&cluster, &ns, "b")?;
    let suspect_ip = running(&pods, "suspect").await?.ip;
    running(&pods, "probe").await?;
    running(&pods, "forensic").await?;
    counted_to(&cluster, &ns, ("suspect", MAIN), 3, Duration::from_secs(60)).await?;
    let reach = format!("nc -w 3 {suspect_ip} 8080 </dev/null");
    let reached = sh(&cluster, &ns, ("probe", MAIN), &reach)?;
    assert!(reached.contains("reached"), "probe got {reached:?}");

    // Checkpoint on a through a PodCheckpoint.
    let (taken, archive) = checkpointed(
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
    assert_eq!(taken["nodeName"], json!("a"), "{taken}");
    assert!(archive.0.starts_with(kubelet_root("a")?), "{taken}");
    let on_a = sha256(&archive.0)?;
    assert_eq!(taken["sha256"], json!(on_a), "{taken}");

    // Restore on b through a PodRestore naming it.
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
    let status = restores.get("suspect").await?.data["status"].clone();
    let chain = &status["provenance"];
    assert_eq!(chain["podCheckpoint"], json!("suspect"), "{status}");
    assert_eq!(chain["sourcePod"], json!("suspect"), "{status}");
    assert_eq!(chain["sourceNode"], json!("a"), "{status}");
    assert_eq!(chain["targetPod"], json!("forensic"), "{status}");
    assert_eq!(chain["targetNode"], json!("b"), "{status}");
    // The archive b restored from is the one taken on a.
    assert_eq!(chain["archiveSha256"], json!(on_a), "{status}");

    // The counter goes on in the forensic pod on b, which reaches nothing.
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
    let blocked = sh(&cluster, &ns, ("forensic", MAIN), &reach);
    assert!(
        !blocked.as_ref().is_ok_and(|out| out.contains("reached")),
        "the forensic pod reached the suspect: {blocked:?}"
    );
    Ok(())
}
