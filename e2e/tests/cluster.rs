//! The local cluster itself: what podrestore's scenarios rely on works through
//! the real API (scheduler, controller manager, kubelet, kube-proxy, CRDs, helm
//! and the kubelet checkpoint API).

use std::{fs::File, path::Path, time::Duration};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Node, Pod, Service},
};
use kube::{
    Api,
    api::{ListParams, PostParams},
};
use podrestore_e2e::{
    Cluster, TestNamespace, cluster, e2e_dir,
    pods::{CHECKPOINT, POD_START, PodOptions, checkpoint, start_pod_with},
    wait_until,
};
use serde_json::json;

/// A Deployment of one busybox pod labelled `app=<name>` running `script`.
fn deployment(cluster: &Cluster, name: &str, script: &str) -> Result<Deployment> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "main",
                        "image": cluster.busybox_image,
                        "imagePullPolicy": "IfNotPresent",
                        "command": ["/bin/sh", "-c", script],
                    }],
                },
            },
        },
    }))?)
}

/// Waits until the pod labelled `app=<app>` runs and returns its name.
async fn running_pod(client: &kube::Client, ns: &TestNamespace, app: &str) -> Result<String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let selector = ListParams::default().labels(&format!("app={app}"));
    wait_until(&format!("a running pod of {app}"), POD_START, || async {
        let list = pods.list(&selector).await?;
        let mut seen = Vec::new();
        for pod in list.items {
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
            let name = pod.metadata.name.clone().unwrap_or_default();
            if phase.as_deref() == Some("Running") {
                return Ok(Some(name));
            }
            seen.push(format!("{name}: {phase:?}"));
        }
        bail!("pods: {seen:?}")
    })
    .await
}

#[tokio::test]
async fn node_is_ready() -> Result<()> {
    let cluster = cluster();
    let nodes: Api<Node> = Api::all(cluster.client().await?);
    let node = nodes.get(&cluster.node).await?;
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .context("node has no Ready condition")?;
    assert_eq!(
        ready.status, "True",
        "node {} not ready: {ready:?}",
        cluster.node
    );
    Ok(())
}

#[tokio::test]
async fn deployment_pod_runs_and_exec_works() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let ns = cluster.namespace("e2e-deploy")?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    deployments
        .create(
            &PostParams::default(),
            &deployment(&cluster, "sleeper", "exec sleep 3600")?,
        )
        .await?;
    let pod = running_pod(&client, &ns, "sleeper").await?;

    let out = cluster.kubectl(&[
        "exec",
        "-n",
        &ns.name,
        &pod,
        "--",
        "echo",
        "hello from exec",
    ])?;
    assert_eq!(out.trim(), "hello from exec");
    Ok(())
}

#[tokio::test]
async fn service_cluster_ip_answers_from_another_pod() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let ns = cluster.namespace("e2e-svc")?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns.name);
    let server = "mkdir -p /www && echo served-by-busybox > /www/index.html && exec httpd -f -p 8080 -h /www";
    deployments
        .create(
            &PostParams::default(),
            &deployment(&cluster, "web", server)?,
        )
        .await?;
    deployments
        .create(
            &PostParams::default(),
            &deployment(&cluster, "client", "exec sleep 3600")?,
        )
        .await?;
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }))?;
    let ip = services
        .create(&PostParams::default(), &service)
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .context("service has no cluster IP")?;
    running_pod(&client, &ns, "web").await?;
    let client_pod = running_pod(&client, &ns, "client").await?;

    let url = format!("http://{ip}/");
    let body = wait_until("the service to answer", Duration::from_secs(60), || async {
        let out = cluster.kubectl(&[
            "exec",
            "-n",
            &ns.name,
            &client_pod,
            "--",
            // Not wget's own -T: Debian's static busybox crashes with it.
            "timeout",
            "5",
            "wget",
            "-q",
            "-O",
            "-",
            &url,
        ])?;
        Ok(Some(out))
    })
    .await?;
    assert_eq!(body.trim(), "served-by-busybox");
    Ok(())
}

#[tokio::test]
async fn server_side_apply_of_crd_and_custom_object() -> Result<()> {
    let cluster = cluster();
    let ns = cluster.namespace("e2e-crd")?;
    let crd = e2e_dir().join("testdata/crd/widgets.yaml");
    let crd = crd.to_str().context("path is not UTF-8")?;
    cluster.kubectl(&["apply", "--server-side", "-f", crd])?;
    let result = async {
        cluster.kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/widgets.e2e.podrestore.io",
            "--timeout=60s",
        ])?;
        let widget = json!({
            "apiVersion": "e2e.podrestore.io/v1",
            "kind": "Widget",
            "metadata": {"name": "w1", "namespace": ns.name},
            "spec": {"size": 3, "colour": "teal"},
        });
        let file = std::env::temp_dir().join(format!("{}-widget.json", ns.name));
        std::fs::write(&file, widget.to_string())?;
        let applied = cluster.kubectl(&[
            "apply",
            "--server-side",
            "--field-manager=podrestore-e2e",
            "-f",
            file.to_str().context("path is not UTF-8")?,
        ]);
        let _ = std::fs::remove_file(&file);
        applied?;
        let colour = cluster.kubectl(&[
            "get",
            "widget",
            "w1",
            "-n",
            &ns.name,
            "-o",
            "jsonpath={.spec.colour}/{.metadata.managedFields[0].manager}",
        ])?;
        assert_eq!(colour, "teal/podrestore-e2e");
        Ok(())
    }
    .await;
    cluster.kubectl(&["delete", "-f", crd, "--wait=false"])?;
    result
}

#[tokio::test]
async fn helm_installs_a_chart() -> Result<()> {
    let cluster = cluster();
    let ns = cluster.namespace("e2e-helm")?;
    let chart = e2e_dir().join("testdata/trivial-chart");
    let chart = chart.to_str().context("path is not UTF-8")?;
    cluster.helm(&[
        "install",
        "demo",
        chart,
        "--namespace",
        &ns.name,
        "--set",
        "greeting=hi-from-helm",
        "--wait",
        "--timeout",
        "60s",
    ])?;
    let greeting = cluster.kubectl(&[
        "get",
        "configmap",
        "demo-trivial",
        "-n",
        &ns.name,
        "-o",
        "jsonpath={.data.greeting}",
    ])?;
    assert_eq!(greeting, "hi-from-helm");
    let releases = cluster.helm(&["list", "--namespace", &ns.name, "--short"])?;
    assert_eq!(releases.trim(), "demo");
    cluster.helm(&["uninstall", "demo", "--namespace", &ns.name])?;
    Ok(())
}

/// Whether a checkpoint archive holds CRIU's image inventory.
fn has_criu_inventory(archive: &Path) -> Result<bool> {
    let mut tar = tar::Archive::new(File::open(archive)?);
    for entry in tar.entries()? {
        let entry = entry?;
        if entry.path()?.ends_with("checkpoint/inventory.img") {
            return Ok(true);
        }
    }
    Ok(false)
}

#[tokio::test]
async fn kubelet_checkpoint_api_writes_archive() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let ns = cluster.namespace("e2e-ckpt")?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let counter = "i=0; while true; do i=$((i+1)); echo $i; sleep 1; done";
    let containers = [("count", counter)];
    start_pod_with(
        &cluster,
        &pods,
        "counter",
        &containers,
        PodOptions::default(),
    )
    .await?;

    // The kubelet API through the API server's node proxy.
    let taken = checkpoint(
        &client,
        &cluster.node,
        &ns.name,
        ("counter", "count"),
        CHECKPOINT,
    )
    .await?;
    let archive = taken.path();
    assert!(
        archive.starts_with(cluster.kubelet_root.join("checkpoints")),
        "archive {} is not under the kubelet's checkpoints directory",
        archive.display()
    );
    let size = std::fs::metadata(archive)
        .with_context(|| format!("archive {}", archive.display()))?
        .len();
    assert!(size > 0, "archive {} is empty", archive.display());
    assert!(
        has_criu_inventory(archive)?,
        "archive {} has no CRIU inventory",
        archive.display()
    );

    // A checkpoint leaves the container running.
    let phase = pods.get("counter").await?.status.and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Running"));
    Ok(())
}
