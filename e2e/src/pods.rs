//! The scenarios' workloads: busybox pods started on a node and waited for,
//! commands run in their containers through `kubectl exec`, the counter they
//! often run, and checkpoints taken through the kubelet's checkpoint API.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use serde_json::{Value, json};

use crate::{Cluster, wait_until};

/// How long a pod gets to run all its containers.
pub const POD_START: Duration = Duration::from_secs(120);

/// How long the kubelet gets to write a checkpoint of an ordinary container.
pub const CHECKPOINT: Duration = Duration::from_secs(60);

/// The container of a one-container pod.
pub const MAIN: &str = "main";

/// How a scenario's busybox pod differs from the plain one: on the cluster's
/// node, each container in a process namespace of its own, no volume.
#[derive(Debug, Clone, Copy, Default)]
pub struct PodOptions<'a> {
    /// The node to run on; the cluster's node when `None`.
    pub node: Option<&'a str>,
    /// The containers share one process namespace (`shareProcessNamespace`).
    pub share_process_namespace: bool,
    /// An emptyDir volume `data`, mounted at `/data` in every container.
    pub data_volume: bool,
}

/// A pod whose containers all run.
#[derive(Debug, Clone)]
pub struct RunningPod {
    /// The pod's IP.
    pub ip: String,
    /// The ID of each container (`containerd://<id>`), by name.
    pub containers: BTreeMap<String, String>,
}

impl RunningPod {
    /// The ID of container `name` (`containerd://<id>`).
    pub fn container_id(&self, name: &str) -> Result<&str> {
        self.containers
            .get(name)
            .map(String::as_str)
            .with_context(|| format!("the pod has no container {name}"))
    }
}

/// A container ID without its runtime's prefix (`containerd://`).
pub fn bare_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, id)| id)
}

/// A pod `name` of busybox `containers` (name, `sh -c` script), shaped by
/// `options`.
pub fn busybox_pod(
    cluster: &Cluster,
    name: &str,
    containers: &[(&str, &str)],
    options: PodOptions<'_>,
) -> Result<Pod> {
    let containers: Vec<Value> = containers
        .iter()
        .map(|(name, script)| {
            let mut container = json!({
                "name": name,
                "image": cluster.busybox_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c", script],
            });
            if options.data_volume {
                container["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
            }
            container
        })
        .collect();
    let mut spec = json!({
        "terminationGracePeriodSeconds": 1,
        "nodeName": options.node.unwrap_or(&cluster.node),
        "shareProcessNamespace": options.share_process_namespace,
        "containers": containers,
    });
    if options.data_volume {
        spec["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    }
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name}, "spec": spec}),
    )?)
}

/// Creates the busybox pod `name` (see [`busybox_pod`]) without waiting for it.
pub async fn create_pod(
    cluster: &Cluster,
    pods: &Api<Pod>,
    name: &str,
    containers: &[(&str, &str)],
    options: PodOptions<'_>,
) -> Result<()> {
    let pod = busybox_pod(cluster, name, containers, options)?;
    pods.create(&PostParams::default(), &pod).await?;
    Ok(())
}

/// Starts the busybox pod `name` (see [`busybox_pod`]) and waits until every
/// container runs.
pub async fn start_pod_with(
    cluster: &Cluster,
    pods: &Api<Pod>,
    name: &str,
    containers: &[(&str, &str)],
    options: PodOptions<'_>,
) -> Result<RunningPod> {
    create_pod(cluster, pods, name, containers, options).await?;
    running(pods, name).await
}

/// Starts a busybox pod `name` on the cluster's node whose one container
/// [`MAIN`] runs `script`, and waits until it runs.
pub async fn start_pod(
    cluster: &Cluster,
    pods: &Api<Pod>,
    name: &str,
    script: &str,
) -> Result<RunningPod> {
    start_pod_with(
        cluster,
        pods,
        name,
        &[(MAIN, script)],
        PodOptions::default(),
    )
    .await
}

/// Waits until pod `name` runs, has an IP and every container has started.
pub async fn running(pods: &Api<Pod>, name: &str) -> Result<RunningPod> {
    wait_until(&format!("pod {name} running"), POD_START, || async {
        let status = pods.get(name).await?.status.unwrap_or_default();
        if status.phase.as_deref() != Some("Running") {
            return Ok(None);
        }
        let mut containers = BTreeMap::new();
        for c in status.container_statuses.unwrap_or_default() {
            match c.container_id {
                Some(id) if c.started == Some(true) => containers.insert(c.name, id),
                _ => return Ok(None),
            };
        }
        Ok(status.pod_ip.map(|ip| RunningPod { ip, containers }))
    })
    .await
}

/// Applies the documented forensic target pod
/// (`e2e/testdata/forensic/target.yaml`) into namespace `ns`, placed on
/// `node`; it does not wait for it.
pub fn apply_forensic_pod(cluster: &Cluster, ns: &str, node: &str) -> Result<()> {
    let manifest = std::fs::read_to_string(crate::e2e_dir().join("testdata/forensic/target.yaml"))?;
    let placed = manifest.replacen(
        "spec:\n  # No ServiceAccount",
        &format!("spec:\n  nodeName: {node}\n  # No ServiceAccount"),
        1,
    );
    assert_ne!(
        placed, manifest,
        "target.yaml changed shape; place the pod another way"
    );
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), placed)?;
    let path = file.path().to_str().context("path is not UTF-8")?;
    cluster.kubectl(&["apply", "-n", ns, "-f", path])?;
    Ok(())
}

/// Runs `command` in a container (pod, container name) of namespace `ns`
/// through `kubectl exec`; returns its output, or the failure (a non-zero
/// exit among them) as the error.
pub fn exec(
    cluster: &Cluster,
    ns: &str,
    (pod, container): (&str, &str),
    command: &[&str],
) -> Result<String> {
    let mut args = vec!["exec", "-n", ns, pod, "-c", container, "--"];
    args.extend_from_slice(command);
    cluster.kubectl(&args)
}

/// Runs `script` with `sh -c` in a container (pod, container name), as
/// [`exec`] does.
pub fn sh(cluster: &Cluster, ns: &str, place: (&str, &str), script: &str) -> Result<String> {
    exec(cluster, ns, place, &["sh", "-c", script])
}

/// The value a counter workload keeps in `/tmp/count` of a container (pod,
/// container name).
pub fn count(cluster: &Cluster, ns: &str, place: (&str, &str)) -> Result<u64> {
    let out = exec(cluster, ns, place, &["cat", "/tmp/count"])?;
    out.trim()
        .parse()
        .with_context(|| format!("/tmp/count in {} holds {out:?}", place.0))
}

/// Waits at most `timeout` until the counter in a container (pod, container
/// name) has reached `at_least`; returns what it shows then.
pub async fn counted_to(
    cluster: &Cluster,
    ns: &str,
    place: (&str, &str),
    at_least: u64,
    timeout: Duration,
) -> Result<u64> {
    wait_until(
        &format!("{} to count to {at_least}", place.0),
        timeout,
        || async {
            let n = count(cluster, ns, place)?;
            Ok((n >= at_least).then_some(n))
        },
    )
    .await
}

/// A checkpoint archive on a node, removed when the scenario ends.
#[derive(Debug)]
pub struct Archive(pub PathBuf);

impl Archive {
    /// Where it lies (the node's paths are the host's).
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Archive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Checkpoints a container (pod, container name) of namespace `ns` on `node`
/// through the kubelet's API (`POST /checkpoint/{namespace}/{pod}/{container}`
/// through the API server's node proxy), giving the kubelet `timeout`;
/// returns the archive it wrote.
pub async fn checkpoint(
    client: &kube::Client,
    node: &str,
    ns: &str,
    (pod, container): (&str, &str),
    timeout: Duration,
) -> Result<Archive> {
    let path = format!(
        "/api/v1/nodes/{node}/proxy/checkpoint/{ns}/{pod}/{container}?timeout={}",
        timeout.as_secs()
    );
    let reply: Value = client
        .request(http::Request::post(path).body(Vec::new())?)
        .await
        .with_context(|| format!("kubelet checkpoint API on node {node}"))?;
    let archive = reply["items"][0]
        .as_str()
        .with_context(|| format!("no archive in the kubelet's reply {reply}"))?;
    Ok(Archive(PathBuf::from(archive)))
}
