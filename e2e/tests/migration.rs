//! Migrating a checkpoint between two real nodes: a counter runs in a pod on
//! node `a` and is checkpointed through the kubelet's API there; a
//! `PodRestore` names a pod on node `b` and the archive on `a`. The operator
//! asks `b`'s agent to restore; `b`'s agent pulls the archive from `a`'s agent
//! over mutual TLS, checks its sha256 against what `a` reported and restores
//! with the real CRIU. Both agents run in their node's mount namespace.
//!
//! Needs the cluster with two nodes: `PODRESTORE_E2E_NODES="a b" e2e/cluster up`.

use std::{
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use podrestore_crds::condition::{kind, reason};
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
const RESTORE: Duration = Duration::from_secs(180);
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done";
const IDLE: &str = "exec sleep 3600";

fn cluster() -> Cluster {
    let cluster = match Cluster::from_env() {
        Ok(c) => c,
        Err(e) => panic!("no local cluster: {e:#}"),
    };
    let nodes = std::env::var("PODRESTORE_E2E_NODES").unwrap_or_default();
    let nodes: Vec<&str> = nodes.split_whitespace().collect();
    assert!(
        nodes.contains(&"a") && nodes.contains(&"b"),
        "the migration test needs nodes a and b: PODRESTORE_E2E_NODES=\"a b\" e2e/cluster up (nodes now: {nodes:?})"
    );
    cluster
}

fn kubelet_root(node: &str) -> Result<PathBuf> {
    let state = std::env::var("PODRESTORE_E2E_STATE").context("PODRESTORE_E2E_STATE is not set")?;
    Ok(Path::new(&state).join("nodes").join(node).join("kubelet"))
}

fn sha256_of(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("run sha256sum")?;
    if !out.status.success() {
        bail!(
            "sha256sum {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .map(str::to_owned)
        .context("no digest from sha256sum")
}

/// Starts `podrestore-agent serve` for `node` in the node's mount namespace
/// (host network, loopback `addr`).
fn start_agent(node: &str, addr: SocketAddr, dir: &Path, kubeconfig: &Path) -> Result<Process> {
    let tls = dir.join("tls");
    let checkpoints = kubelet_root(node)?.join("checkpoints");
    std::fs::create_dir_all(&checkpoints)?;
    let agent = binary("podrestore-agent", "PODRESTORE_AGENT_BIN")?;
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
        tls.join("tls.crt").display().to_string(),
        "--tls-key".into(),
        tls.join("tls.key").display().to_string(),
        "--client-ca".into(),
        tls.join("ca.crt").display().to_string(),
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

async fn listening(addr: SocketAddr, agent: &Process) -> Result<()> {
    wait_until("the agent to listen", Duration::from_secs(60), || async {
        Ok(TcpStream::connect(addr).ok().map(|_| ()))
    })
    .await
    .with_context(|| agent.tail())
}

async fn start_pod(
    cluster: &Cluster,
    pods: &Api<Pod>,
    name: &str,
    node: &str,
    script: &str,
) -> Result<()> {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "nodeName": node,
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
        Ok((status.phase.as_deref() == Some("Running")).then_some(()))
    })
    .await
}

fn count(cluster: &Cluster, ns: &str, pod: &str) -> Result<u64> {
    let out = cluster.kubectl(&[
        "exec",
        "-n",
        ns,
        pod,
        "-c",
        "main",
        "--",
        "cat",
        "/tmp/count",
    ])?;
    out.trim()
        .parse()
        .with_context(|| format!("/tmp/count in {pod} holds {out:?}"))
}

async fn counted_to(cluster: &Cluster, ns: &str, pod: &str, at_least: u64) -> Result<u64> {
    wait_until(
        &format!("{pod} to count to {at_least}"),
        Duration::from_secs(60),
        || async {
            let n = count(cluster, ns, pod).unwrap_or(0);
            Ok((n >= at_least).then_some(n))
        },
    )
    .await
}

/// Removes a checkpoint archive when the test ends.
struct Archive(PathBuf);

impl Drop for Archive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The operator and the agents of nodes `a` and `b`, for one namespace.
struct Setup {
    ns: podrestore_e2e::TestNamespace,
    dir: tempfile::TempDir,
    operator: Process,
    agent_a: Process,
    agent_b: Process,
    addr_a: SocketAddr,
    kubeconfig: PathBuf,
}

impl Setup {
    async fn start(cluster: &Cluster, client: &kube::Client, prefix: &str) -> Result<Self> {
        install_crd(cluster)?;
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
        listening(addr_a, &agent_a).await?;
        listening(addr_b, &agent_b).await?;
        Ok(Self {
            ns,
            dir,
            operator,
            agent_a,
            agent_b,
            addr_a,
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

    /// Checkpoints pod `counter` on node `a` through the kubelet's API.
    async fn checkpoint(&self, client: &kube::Client) -> Result<Archive> {
        let path = format!(
            "/api/v1/nodes/a/proxy/checkpoint/{}/counter/main?timeout=120",
            self.ns.name
        );
        let reply: serde_json::Value = client
            .request(http::Request::post(path).body(Vec::new())?)
            .await
            .context("kubelet checkpoint API on node a")?;
        let archive =
            Archive(PathBuf::from(reply["items"][0].as_str().with_context(
                || format!("no archive in the kubelet's reply {reply}"),
            )?));
        if !archive.0.starts_with(kubelet_root("a")?) {
            bail!("archive {} is not on node a", archive.0.display());
        }
        Ok(archive)
    }

    /// Creates PodRestore `name` restoring `archive` from node `a` into pod
    /// `forensic` on node `b`; returns its UID.
    async fn restore(
        &self,
        client: &kube::Client,
        name: &str,
        archive: &Archive,
    ) -> Result<String> {
        let spec = json!({
            "checkpoint": {"archive": {"nodeName": "a", "path": archive.0.display().to_string()}},
            "target": {"podName": "forensic", "container": "main"},
        });
        let created = podrestores(client, &self.ns.name)
            .create(
                &PostParams::default(),
                &podrestore(&self.ns.name, name, spec)?,
            )
            .await?;
        created.metadata.uid.context("no uid")
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

#[tokio::test]
async fn a_checkpoint_from_node_a_is_pulled_verified_and_restored_on_node_b() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = Setup::start(&cluster, &client, "mig").await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    start_pod(&cluster, &pods, "counter", "a", COUNTER).await?;
    start_pod(&cluster, &pods, "forensic", "b", IDLE).await?;
    counted_to(&cluster, &ns, "counter", 3).await?;

    let archive = setup.checkpoint(&client).await?;
    let sha_on_a = sha256_of(&archive.0)?;
    let at_checkpoint = count(&cluster, &ns, "counter")?;
    let uid = setup.restore(&client, "from-a", &archive).await?;
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
        .dir
        .path()
        .join("state-b")
        .join("work")
        .join(&uid)
        .join("archive.tar");
    assert_eq!(sha256_of(&on_b)?, sha_on_a, "the file on b equals a's");
    let agent_b_log = std::fs::read_to_string(setup.dir.path().join("agent-b.log"))?;
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

/// A counter whose writable layer holds 96 MiB, so that the archive takes a
/// while to move.
const BIG_COUNTER: &str = "dd if=/dev/urandom of=/ballast bs=1M count=96 2>/dev/null; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done";

#[tokio::test]
async fn killing_the_source_agent_during_the_transfer_fails_clearly_and_a_retry_completes()
-> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let mut setup = Setup::start(&cluster, &client, "mig-kill").await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    start_pod(&cluster, &pods, "counter", "a", BIG_COUNTER).await?;
    start_pod(&cluster, &pods, "forensic", "b", IDLE).await?;
    counted_to(&cluster, &ns, "counter", 2).await?;
    let archive = setup.checkpoint(&client).await?;
    let size = std::fs::metadata(&archive.0)?.len();
    assert!(
        size > 64 << 20,
        "archive of {size} bytes is too small to cut"
    );

    let uid = setup.restore(&client, "first", &archive).await?;
    let partial = setup
        .dir
        .path()
        .join("state-b")
        .join("work")
        .join(&uid)
        .join("archive.partial");
    // Kill a's agent as soon as bytes arrive on b.
    wait_until("bytes to arrive on b", Duration::from_secs(120), || async {
        let len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        Ok((len > 0).then_some(()))
    })
    .await
    .with_context(|| setup.logs())?;
    setup.agent_a.kill()?;
    let cut_at = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
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
    setup.agent_a = start_agent("a", setup.addr_a, setup.dir.path(), &cluster.kubeconfig)?;
    listening(setup.addr_a, &setup.agent_a).await?;
    setup.restore(&client, "again", &archive).await?;
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
        Some(sha256_of(&archive.0)?.as_str()),
        "{status}"
    );
    Ok(())
}

#[tokio::test]
async fn bytes_changed_after_the_source_hashed_them_fail_the_digest_and_nothing_is_restored()
-> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = Setup::start(&cluster, &client, "mig-flip").await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    start_pod(&cluster, &pods, "counter", "a", BIG_COUNTER).await?;
    start_pod(&cluster, &pods, "forensic", "b", IDLE).await?;
    counted_to(&cluster, &ns, "counter", 2).await?;
    let archive = setup.checkpoint(&client).await?;
    let size = std::fs::metadata(&archive.0)?.len();

    let uid = setup.restore(&client, "flipped", &archive).await?;
    let partial = setup
        .dir
        .path()
        .join("state-b")
        .join("work")
        .join(&uid)
        .join("archive.partial");
    // Once bytes flow, a's agent has sent the digest of the whole file: flip a
    // byte near its end, so that what b receives differs from what a hashed.
    wait_until("bytes to arrive on b", Duration::from_secs(120), || async {
        let len = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
        Ok((len > 0).then_some(()))
    })
    .await
    .with_context(|| setup.logs())?;
    let at = size - 100;
    {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&archive.0)?;
        let mut byte = [0u8; 1];
        file.read_exact_at(&mut byte, at)?;
        byte[0] ^= 0x01;
        file.write_all_at(&byte, at)?;
    }
    let received = std::fs::metadata(&partial).map(|m| m.len()).unwrap_or(0);
    assert!(
        received < at,
        "the transfer passed the flipped byte already"
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
    let ps = cluster.kubectl(&["exec", "-n", &ns, "forensic", "-c", "main", "--", "ps"])?;
    assert!(
        !ps.contains("i=$((i+1))"),
        "a counter runs in the target: {ps}"
    );
    Ok(())
}
