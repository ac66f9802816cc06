//! Checkpointing through a `PodCheckpoint` and restoring it through a
//! `PodRestore` that names it, the way a user does it: a counter runs in pod
//! `counter`; a PodCheckpoint asks the operator (a host process) to checkpoint
//! it through the kubelet; the operator records the archive's path and, from
//! the node's agent, its sha256 and size; a PodRestore naming the
//! PodCheckpoint restores the counter into pod `forensic`, and its status
//! records the chain from the checkpointed pod to the restored one.

use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, PostParams},
};
use podrestore_crds::{
    CHART_CHECKPOINT_CRD_PATH,
    condition::{kind, reason},
    podcheckpoint::{PodCheckpoint, condition as pcp},
};
use podrestore_e2e::{
    Cluster,
    install::{AgentPlace, condition, install, podrestore, podrestores},
    wait_until,
};
use serde_json::json;

const POD_START: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(120);

/// The counter's loop: the value lives in the shell's memory and is written
/// to `/tmp/count` every second.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done";
/// A piece of the counter's command line that `ps` shows.
const COUNTER_MARK: &str = "i=$((i+1))";

fn cluster() -> Cluster {
    match Cluster::from_env() {
        Ok(c) => c,
        Err(e) => panic!("no local cluster: {e:#}"),
    }
}

/// Applies the PodCheckpoint CRD from the chart and waits until it is served.
fn install_checkpoint_crd(cluster: &Cluster) -> Result<()> {
    let crd = podrestore_e2e::e2e_dir()
        .join("..")
        .join(CHART_CHECKPOINT_CRD_PATH);
    let crd = crd.to_str().context("path is not UTF-8")?;
    cluster.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crd])?;
    cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/podcheckpoints.podrestore.io",
        "--timeout=60s",
    ])?;
    Ok(())
}

/// Starts a one-container busybox pod running `script` on the cluster's node
/// and waits until it runs.
async fn start_pod(cluster: &Cluster, pods: &Api<Pod>, name: &str, script: &str) -> Result<()> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "nodeName": cluster.node,
            "containers": [{
                "name": "main",
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
        let started = status.phase.as_deref() == Some("Running")
            && status
                .container_statuses
                .unwrap_or_default()
                .iter()
                .any(|c| c.started == Some(true));
        Ok(started.then_some(()))
    })
    .await
}

/// The counter's value in a pod (its `/tmp/count`).
fn count(cluster: &Cluster, ns: &str, pod: &str) -> Result<u64> {
    let out = cluster.kubectl(&["exec", "-n", ns, pod, "--", "cat", "/tmp/count"])?;
    out.trim()
        .parse()
        .with_context(|| format!("/tmp/count in {pod} holds {out:?}"))
}

/// Removes a checkpoint archive when the scenario ends.
struct Archive(std::path::PathBuf);

impl Drop for Archive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `sha256sum` of a file.
fn sha256(path: &std::path::Path) -> Result<String> {
    let out = std::process::Command::new("sha256sum").arg(path).output()?;
    let text = String::from_utf8(out.stdout)?;
    text.split_whitespace()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("sha256sum {}: {text:?}", path.display()))
}

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
    wait_until("the counter to count", Duration::from_secs(60), || async {
        Ok((count(&cluster, &ns, "counter")? >= 3).then_some(()))
    })
    .await?;

    // The PodCheckpoint reaches Checkpointed with the archive's facts.
    let checkpoints = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<PodCheckpoint>(&()),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "podrestore.io/v1alpha1",
        "kind": "PodCheckpoint",
        "metadata": {"name": "snap", "namespace": ns},
        "spec": {"podName": "counter"},
    }))?;
    checkpoints.create(&PostParams::default(), &object).await?;
    condition(
        &checkpoints,
        "snap",
        (pcp::CHECKPOINTED, "True", pcp::reason::CHECKPOINT_SUCCEEDED),
        STEP,
        || setup.logs(),
    )
    .await?;
    let status = checkpoints.get("snap").await?.data["status"].clone();
    let path = status["archivePath"]
        .as_str()
        .with_context(|| format!("no archivePath in {status}"))?;
    let archive = Archive(path.into());
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
    let ps = cluster.kubectl(&["exec", "-n", &ns, "forensic", "--", "ps"])?;
    assert!(
        ps.lines().any(|l| l.contains(COUNTER_MARK)),
        "no counter in pod forensic:\n{ps}"
    );
    let first = count(&cluster, &ns, "forensic")?;
    wait_until(
        "the restored counter to go on",
        Duration::from_secs(30),
        || async { Ok((count(&cluster, &ns, "forensic")? > first).then_some(())) },
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
    let checkpoints = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<PodCheckpoint>(&()),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "podrestore.io/v1alpha1",
        "kind": "PodCheckpoint",
        "metadata": {"name": "ghost", "namespace": ns},
        "spec": {"podName": "ghost"},
    }))?;
    checkpoints.create(&PostParams::default(), &object).await?;
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

/// The forensic target pod of `e2e/testdata/forensic/target.yaml`.
fn forensic_manifest() -> std::path::PathBuf {
    podrestore_e2e::e2e_dir().join("testdata/forensic/target.yaml")
}

/// Runs `script` with `sh -c` in a pod's container; its output, or the error
/// (non-zero exit) as text.
fn sh(cluster: &Cluster, ns: &str, pod: &str, container: &str, script: &str) -> Result<String> {
    cluster.kubectl(&[
        "exec", "-n", ns, pod, "-c", container, "--", "sh", "-c", script,
    ])
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
    let suspect: Pod = serde_json::from_value(json!({
        "metadata": {"name": "suspect"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "nodeName": cluster.node,
            "containers": [
                {"name": "main", "image": cluster.busybox_image, "imagePullPolicy": "IfNotPresent",
                 "command": ["/bin/sh", "-c", COUNTER]},
                {"name": "web", "image": cluster.busybox_image, "imagePullPolicy": "IfNotPresent",
                 "command": ["/bin/sh", "-c", "while true; do echo reached | nc -l -p 8080; done"]},
            ],
        },
    }))?;
    pods.create(&PostParams::default(), &suspect).await?;
    start_pod(&cluster, &pods, "probe", "exec sleep 3600").await?;
    // The documented pod, placed on the node the one agent serves.
    let manifest = std::fs::read_to_string(forensic_manifest())?;
    let placed = manifest.replacen(
        "spec:\n  # No ServiceAccount",
        &format!("spec:\n  nodeName: {}\n  # No ServiceAccount", cluster.node),
        1,
    );
    assert_ne!(
        placed, manifest,
        "target.yaml changed shape; place the pod another way"
    );
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), placed)?;
    let file_path = file.path().to_str().context("path is not UTF-8")?;
    cluster.kubectl(&["apply", "-n", &ns, "-f", file_path])?;
    let suspect_ip = wait_until("pods suspect and forensic running", POD_START, || async {
        let running = |pod: Pod| {
            let status = pod.status.unwrap_or_default();
            let started = status.phase.as_deref() == Some("Running")
                && status
                    .container_statuses
                    .unwrap_or_default()
                    .iter()
                    .all(|c| c.started == Some(true));
            started.then_some(status.pod_ip).flatten()
        };
        let suspect = running(pods.get("suspect").await?);
        let forensic = running(pods.get("forensic").await?);
        Ok(suspect.zip(forensic).map(|(ip, _)| ip))
    })
    .await?;
    wait_until("the counter to count", Duration::from_secs(60), || async {
        Ok((count(&cluster, &ns, "suspect")? >= 3).then_some(()))
    })
    .await?;
    // An ordinary pod reaches the suspect's server: the negative check below means
    // something.
    let reach = format!("nc -w 3 {suspect_ip} 8080 </dev/null");
    let reached = sh(&cluster, &ns, "probe", "main", &reach)?;
    assert!(reached.contains("reached"), "probe got {reached:?}");

    let checkpoints = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        &ns,
        &ApiResource::erase::<PodCheckpoint>(&()),
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "podrestore.io/v1alpha1",
        "kind": "PodCheckpoint",
        "metadata": {"name": "suspect", "namespace": ns},
        "spec": {"podName": "suspect", "container": "main"},
    }))?;
    checkpoints.create(&PostParams::default(), &object).await?;
    condition(
        &checkpoints,
        "suspect",
        (pcp::CHECKPOINTED, "True", pcp::reason::CHECKPOINT_SUCCEEDED),
        STEP,
        || setup.logs(),
    )
    .await?;
    let status = checkpoints.get("suspect").await?.data["status"].clone();
    let _archive = Archive(
        status["archivePath"]
            .as_str()
            .with_context(|| format!("no archivePath in {status}"))?
            .into(),
    );

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
    let ps = sh(&cluster, &ns, "forensic", "main", "ps")?;
    assert!(
        ps.lines().any(|l| l.contains(COUNTER_MARK)),
        "no counter in pod forensic:\n{ps}"
    );
    let first = count(&cluster, &ns, "forensic")?;
    wait_until(
        "the restored counter to go on",
        Duration::from_secs(30),
        || async { Ok((count(&cluster, &ns, "forensic")? > first).then_some(())) },
    )
    .await?;
    // ...in a network namespace that reaches nothing: not the suspect's address...
    let blocked = sh(&cluster, &ns, "forensic", "main", &reach);
    assert!(
        !blocked.as_ref().is_ok_and(|out| out.contains("reached")),
        "the forensic pod reached the suspect: {blocked:?}"
    );
    // ...with only loopback up...
    let links = sh(&cluster, &ns, "forensic", "main", "ip -o link show up")?;
    let up: Vec<&str> = links
        .lines()
        .filter_map(|l| l.split(':').nth(1).map(str::trim))
        .collect();
    assert_eq!(up, ["lo"], "interfaces up in the forensic pod:\n{links}");
    // ...without a ServiceAccount token, and with read-only volumes.
    let token = sh(
        &cluster,
        &ns,
        "forensic",
        "main",
        "ls -A /var/run/secrets/kubernetes.io/serviceaccount",
    );
    assert_eq!(
        token.as_ref().map(|s| s.trim()).ok(),
        Some(""),
        "the ServiceAccount path in the forensic pod holds something: {token:?}"
    );
    let write = sh(&cluster, &ns, "forensic", "main", "echo x > /evidence/x");
    assert!(write.is_err(), "the evidence volume is writable: {write:?}");
    Ok(())
}
