//! The forensic use case across two real nodes: a suspect counter on node `a`
//! is checkpointed through a `PodCheckpoint`; a `PodRestore` naming it restores
//! the counter on node `b` into the network-isolated forensic pod of
//! `e2e/testdata/forensic/target.yaml`. `b`'s agent pulls the archive from
//! `a`'s agent and verifies it; the PodRestore's provenance shows the chain and
//! the archive's sha256 equals the one the PodCheckpoint recorded on `a`.
//!
//! Needs the cluster with two nodes: `PODRESTORE_E2E_NODES="a b" e2e/cluster up`.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

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
    install::{
        Process, agent_tls_files, binary, condition, criu_binary, free_port, install_crd,
        node_containerd_socket, node_mount_namespace, operator_args, podrestore, podrestores,
    },
    wait_until,
};
use serde_json::json;

const POD_START: Duration = Duration::from_secs(120);
const STEP: Duration = Duration::from_secs(180);
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done";
const COUNTER_MARK: &str = "i=$((i+1))";

fn cluster() -> Cluster {
    let cluster = match Cluster::from_env() {
        Ok(c) => c,
        Err(e) => panic!("no local cluster: {e:#}"),
    };
    let nodes = std::env::var("PODRESTORE_E2E_NODES").unwrap_or_default();
    let nodes: Vec<&str> = nodes.split_whitespace().collect();
    assert!(
        nodes.contains(&"a") && nodes.contains(&"b"),
        "this test needs nodes a and b: PODRESTORE_E2E_NODES=\"a b\" e2e/cluster up (nodes now: {nodes:?})"
    );
    cluster
}

fn kubelet_root(node: &str) -> Result<PathBuf> {
    let state = std::env::var("PODRESTORE_E2E_STATE").context("PODRESTORE_E2E_STATE is not set")?;
    Ok(Path::new(&state).join("nodes").join(node).join("kubelet"))
}

/// The agent of `node`, in the node's mount namespace, serving the kubelet's
/// checkpoint directory.
fn start_agent(node: &str, addr: SocketAddr, dir: &Path, kubeconfig: &Path) -> Result<Process> {
    let tls = dir.join("tls");
    let checkpoints = kubelet_root(node)?.join("checkpoints");
    std::fs::create_dir_all(&checkpoints)?;
    let agent = binary("podrestore-agent", "PODRESTORE_AGENT_BIN")?;
    let file = |name: &str| tls.join(name).display().to_string();
    let args: Vec<String> = vec![
        format!("--mount={}", node_mount_namespace(node)?.display()),
        "--".into(),
        agent.display().to_string(),
        "serve".into(),
        "--node-name".into(),
        node.into(),
        "--listen".into(),
        addr.to_string(),
        "--probe-listen".into(),
        format!("127.0.0.1:{}", free_port()?),
        "--tls-cert".into(),
        file("tls.crt"),
        "--tls-key".into(),
        file("tls.key"),
        "--client-ca".into(),
        file("ca.crt"),
        "--state-dir".into(),
        dir.join(format!("state-{node}")).display().to_string(),
        "--checkpoint-dir".into(),
        checkpoints.display().to_string(),
        "--runtime-endpoint".into(),
        node_containerd_socket(node)?.display().to_string(),
        "--criu".into(),
        criu_binary().display().to_string(),
    ];
    Process::spawn(
        &format!("agent-{node}"),
        Path::new("nsenter"),
        &args,
        kubeconfig,
        dir,
    )
}

/// The operator and the agents of nodes `a` and `b`, for one namespace.
struct Setup {
    ns: podrestore_e2e::TestNamespace,
    _dir: tempfile::TempDir,
    operator: Process,
    agent_a: Process,
    agent_b: Process,
    kubeconfig: PathBuf,
}

impl Setup {
    async fn start(cluster: &Cluster, client: &kube::Client, prefix: &str) -> Result<Self> {
        install_crd(cluster)?;
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
        let ns = cluster.namespace(prefix)?;
        let dir = tempfile::tempdir()?;
        let addr_a: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let addr_b: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;
        let mut args = operator_args(&ns.name, "op-1", "a", addr_a)?;
        args.extend(["--agent-endpoint".into(), format!("b={addr_b}")]);
        let operator = Process::spawn(
            "operator",
            &binary("podrestore-operator", "PODRESTORE_OPERATOR_BIN")?,
            &args,
            &cluster.kubeconfig,
            dir.path(),
        )?;
        agent_tls_files(client, &ns.name, &dir.path().join("tls"), || {
            operator.tail()
        })
        .await?;
        let agent_a = start_agent("a", addr_a, dir.path(), &cluster.kubeconfig)?;
        let agent_b = start_agent("b", addr_b, dir.path(), &cluster.kubeconfig)?;
        for (addr, agent) in [(addr_a, &agent_a), (addr_b, &agent_b)] {
            wait_until("the agent to listen", Duration::from_secs(60), || async {
                Ok(TcpStream::connect(addr).ok().map(|_| ()))
            })
            .await
            .with_context(|| agent.tail())?;
        }
        Ok(Self {
            ns,
            _dir: dir,
            operator,
            agent_a,
            agent_b,
            kubeconfig: cluster.kubeconfig.clone(),
        })
    }

    fn logs(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.operator.tail(),
            self.agent_a.tail(),
            self.agent_b.tail()
        )
    }
}

impl Drop for Setup {
    /// Deletes the PodRestores while the operator and the agents run, so the
    /// finalizers are served.
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "podrestores.podrestore.io",
                "--all",
                "-n",
                &self.ns.name,
                "--timeout=60s",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .status();
    }
}

/// Removes a checkpoint archive when the scenario ends.
struct Archive(PathBuf);

impl Drop for Archive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn sh(cluster: &Cluster, ns: &str, pod: &str, container: &str, script: &str) -> Result<String> {
    cluster.kubectl(&[
        "exec", "-n", ns, pod, "-c", container, "--", "sh", "-c", script,
    ])
}

fn count(cluster: &Cluster, ns: &str, pod: &str) -> Result<u64> {
    let out = sh(cluster, ns, pod, "main", "cat /tmp/count")?;
    out.trim()
        .parse()
        .with_context(|| format!("/tmp/count in {pod} holds {out:?}"))
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum").arg(path).output()?;
    let text = String::from_utf8(out.stdout)?;
    text.split_whitespace()
        .next()
        .map(str::to_owned)
        .with_context(|| format!("sha256sum {}: {text:?}", path.display()))
}

/// The pod IP once every container of pod `name` has started.
async fn running(pods: &Api<Pod>, name: &str) -> Result<String> {
    wait_until(&format!("pod {name} running"), POD_START, || async {
        let status = pods.get(name).await?.status.unwrap_or_default();
        let started = status.phase.as_deref() == Some("Running")
            && status
                .container_statuses
                .unwrap_or_default()
                .iter()
                .all(|c| c.started == Some(true));
        Ok(started.then_some(status.pod_ip).flatten())
    })
    .await
}

#[tokio::test]
async fn forensic_migration_across_nodes() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = Setup::start(&cluster, &client, "e2e-forensic-ab").await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);

    // The suspect on node a: a counter and a server; a probe pod next to it.
    let container = |name: &str, script: &str| {
        json!({"name": name, "image": cluster.busybox_image, "imagePullPolicy": "IfNotPresent",
               "command": ["/bin/sh", "-c", script]})
    };
    for (name, containers) in [
        (
            "suspect",
            vec![
                container("main", COUNTER),
                container("web", "while true; do echo reached | nc -l -p 8080; done"),
            ],
        ),
        ("probe", vec![container("main", "exec sleep 3600")]),
    ] {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 1, "nodeName": "a", "containers": containers},
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
    }
    // The forensic pod of the documented recipe, on node b.
    let manifest =
        std::fs::read_to_string(podrestore_e2e::e2e_dir().join("testdata/forensic/target.yaml"))?;
    let on_b = manifest.replacen(
        "spec:\n  # No ServiceAccount",
        "spec:\n  nodeName: b\n  # No ServiceAccount",
        1,
    );
    assert_ne!(
        on_b, manifest,
        "target.yaml changed shape; place the pod on b another way"
    );
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), on_b)?;
    let file_path = file.path().to_str().context("path is not UTF-8")?;
    cluster.kubectl(&["apply", "-n", &ns, "-f", file_path])?;
    let suspect_ip = running(&pods, "suspect").await?;
    running(&pods, "probe").await?;
    running(&pods, "forensic").await?;
    wait_until("the counter to count", Duration::from_secs(60), || async {
        Ok((count(&cluster, &ns, "suspect")? >= 3).then_some(()))
    })
    .await?;
    let reach = format!("nc -w 3 {suspect_ip} 8080 </dev/null");
    let reached = sh(&cluster, &ns, "probe", "main", &reach)?;
    assert!(reached.contains("reached"), "probe got {reached:?}");

    // Checkpoint on a through a PodCheckpoint.
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
    let taken = checkpoints.get("suspect").await?.data["status"].clone();
    assert_eq!(taken["nodeName"], json!("a"), "{taken}");
    let archive = Archive(
        taken["archivePath"]
            .as_str()
            .with_context(|| format!("no archivePath in {taken}"))?
            .into(),
    );
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
    let blocked = sh(&cluster, &ns, "forensic", "main", &reach);
    assert!(
        !blocked.as_ref().is_ok_and(|out| out.contains("reached")),
        "the forensic pod reached the suspect: {blocked:?}"
    );
    Ok(())
}
