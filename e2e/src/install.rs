//! podrestore on the local cluster for one scenario: the CRDs, the operator as
//! a host process with the admin kubeconfig, and one agent (`podrestore-agent
//! serve`) it reaches over mutual TLS, either as a plain host process or
//! inside the node's mount namespace, where the container runtime's mounts
//! (container root file systems, volumes) are visible as on a real node; or,
//! on a two-node cluster, an agent in each node's mount namespace.
//!
//! The operator and agent binaries come from the cargo target directory the
//! tests were built in (`cargo build -p podrestore-operator -p podrestore-agent`
//! first), or from `PODRESTORE_OPERATOR_BIN` / `PODRESTORE_AGENT_BIN`.

use std::{
    fs::File,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, PostParams},
};
use podrestore_crds::{
    CHART_CHECKPOINT_CRD_PATH, CHART_CRD_PATH, podcheckpoint::PodCheckpoint,
    podcheckpoint::condition as pcp, v1alpha1::PodRestore,
};
use serde_json::{Value, json};

use crate::{Cluster, TestNamespace, pods::Archive, wait_until};

/// How long the operator gets to issue certificates and report conditions.
pub const CONDITION: Duration = Duration::from_secs(60);

/// A binary of the workspace: from the environment, else next to the running
/// test's executable in the cargo target directory.
pub fn binary(name: &str, env: &str) -> Result<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Ok(path.into());
    }
    let exe = std::env::current_exe()?;
    // <target>/debug/deps/<test>-<hash> -> <target>/debug/<name>
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no target directory")?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build it with `cargo build -p podrestore-operator -p podrestore-agent` (or set {env})",
            path.display()
        );
    }
    Ok(path)
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A host process started by a test; killed (SIGKILL) and reaped on drop.
pub struct Process {
    /// A name for logs.
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `program args` with its output appended to `<dir>/<name>.log`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        kubeconfig: &Path,
        dir: &Path,
    ) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = File::options().create(true).append(true).open(&log)?;
        let child = Command::new(program)
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                "info,podrestore_operator=debug,podrestore_agent=debug",
            )
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The last lines of the process's log, for failure messages.
    pub fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(40);
        format!("--- {} log ---\n{}", self.name, lines[start..].join("\n"))
    }

    /// Everything the process has logged so far (with earlier processes of the same name).
    pub fn read_log(&self) -> Result<String> {
        std::fs::read_to_string(&self.log).with_context(|| format!("read {}", self.log.display()))
    }

    /// Kills it at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends it `signal` (a name `kill` knows, such as `TERM`).
    pub fn signal(&self, signal: &str) -> Result<()> {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -{signal} {} failed", self.pid());
        }
        Ok(())
    }

    /// Waits until it exits (after a signal), at most `timeout`.
    pub async fn exited(&mut self, timeout: Duration) -> Result<()> {
        let deadline = std::time::Instant::now() + timeout;
        while self.child.try_wait()?.is_none() {
            if std::time::Instant::now() >= deadline {
                bail!(
                    "{} did not exit within {timeout:?}\n{}",
                    self.name,
                    self.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Applies the chart's CRD file `path` (idempotent, shared by every scenario)
/// and waits until the API server serves `name`.
fn apply_crd(cluster: &Cluster, path: &str, name: &str) -> Result<()> {
    let crd = crate::e2e_dir().join("..").join(path);
    let crd = crd.to_str().context("path is not UTF-8")?;
    cluster.kubectl(&["apply", "--server-side", "--force-conflicts", "-f", crd])?;
    cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        &format!("crd/{name}"),
        "--timeout=60s",
    ])?;
    Ok(())
}

/// Installs the PodRestore CRD and waits until it is served.
pub fn install_crd(cluster: &Cluster) -> Result<()> {
    apply_crd(cluster, CHART_CRD_PATH, "podrestores.podrestore.io")
}

/// Installs the PodCheckpoint CRD and waits until it is served.
pub fn install_checkpoint_crd(cluster: &Cluster) -> Result<()> {
    apply_crd(
        cluster,
        CHART_CHECKPOINT_CRD_PATH,
        "podcheckpoints.podrestore.io",
    )
}

/// The PodRestores of namespace `ns`.
pub fn podrestores(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<PodRestore>(&()))
}

/// A PodRestore object with `spec`.
pub fn podrestore(ns: &str, name: &str, spec: Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "podrestore.io/v1alpha1",
        "kind": "PodRestore",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))?)
}

/// The PodCheckpoints of namespace `ns`.
pub fn podcheckpoints(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(
        client.clone(),
        ns,
        &ApiResource::erase::<PodCheckpoint>(&()),
    )
}

/// A PodCheckpoint object with `spec`.
pub fn podcheckpoint(ns: &str, name: &str, spec: Value) -> Result<DynamicObject> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "podrestore.io/v1alpha1",
        "kind": "PodCheckpoint",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))?)
}

/// Creates PodCheckpoint `name` in `ns` with `spec` and waits (at most
/// `timeout`) until it has checkpointed; returns its status and the archive
/// it names, removed when the scenario ends. `logs` is appended to a failure.
pub async fn checkpointed(
    client: &kube::Client,
    ns: &str,
    (name, spec): (&str, Value),
    timeout: Duration,
    logs: impl Fn() -> String,
) -> Result<(Value, Archive)> {
    let checkpoints = podcheckpoints(client, ns);
    checkpoints
        .create(&PostParams::default(), &podcheckpoint(ns, name, spec)?)
        .await?;
    condition(
        &checkpoints,
        name,
        (pcp::CHECKPOINTED, "True", pcp::reason::CHECKPOINT_SUCCEEDED),
        timeout,
        logs,
    )
    .await?;
    let status = checkpoints.get(name).await?.data["status"].clone();
    let path = status["archivePath"]
        .as_str()
        .with_context(|| format!("no archivePath in {status}"))?;
    let archive = Archive(path.into());
    Ok((status, archive))
}

/// Waits until condition `type_` of PodRestore `name` has `status` and
/// `reason`; returns its message. `logs` is appended to a failure.
pub async fn condition(
    api: &Api<DynamicObject>,
    name: &str,
    (type_, status, reason): (&str, &str, &str),
    timeout: Duration,
    logs: impl Fn() -> String,
) -> Result<String> {
    let found = wait_until(
        &format!("{name}: {type_}={status} ({reason})"),
        timeout,
        || async {
            let object = api.get(name).await?;
            let conditions = object.data["status"]["conditions"].clone();
            let found = conditions
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["type"] == type_)
                .cloned();
            match found {
                Some(c) if c["status"] == status && c["reason"] == reason => {
                    Ok(Some(c["message"].as_str().unwrap_or_default().to_owned()))
                }
                other => bail!("conditions now: {conditions}; {type_} is {other:?}"),
            }
        },
    )
    .await;
    found.with_context(logs)
}

/// Deletes PodRestore `name` and waits until it is gone (its finalizer ran).
/// `logs` is appended to a failure.
pub async fn delete_podrestore(
    api: &Api<DynamicObject>,
    name: &str,
    timeout: Duration,
    logs: impl Fn() -> String,
) -> Result<()> {
    api.delete(name, &DeleteParams::default()).await?;
    wait_until(
        &format!("PodRestore {name} to be gone"),
        timeout,
        || async { Ok(api.get_opt(name).await?.is_none().then_some(())) },
    )
    .await
    .with_context(logs)
}

/// Arguments of an operator that serves only `ns` and keeps its Lease and
/// Secrets there, reaching node `node`'s agent at `agent`.
pub fn operator_args(
    ns: &str,
    identity: &str,
    node: &str,
    agent: SocketAddr,
) -> Result<Vec<String>> {
    Ok(vec![
        "--namespace".into(),
        ns.into(),
        "--watch-namespace".into(),
        ns.into(),
        "--identity".into(),
        identity.into(),
        "--listen".into(),
        format!("127.0.0.1:{}", free_port()?),
        "--agent-endpoint".into(),
        format!("{node}={agent}"),
        "--lease-duration-seconds".into(),
        "6".into(),
        "--cert-check-seconds".into(),
        "5".into(),
    ])
}

/// Reads the agents' Secret the operator issued into files the agent reads.
pub async fn agent_tls_files(
    client: &kube::Client,
    ns: &str,
    dir: &Path,
    logs: impl Fn() -> String,
) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = wait_until(
        "the operator to issue podrestore-agent-tls",
        CONDITION,
        || async { Ok(secrets.get_opt("podrestore-agent-tls").await?) },
    )
    .await
    .with_context(logs)?;
    let data = secret.data.unwrap_or_default();
    std::fs::create_dir_all(dir)?;
    for key in ["tls.crt", "tls.key", "ca.crt"] {
        let bytes = data
            .get(key)
            .with_context(|| format!("secret has no {key}"))?;
        std::fs::write(dir.join(key), &bytes.0)?;
    }
    Ok(())
}

/// Where the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentPlace {
    /// A plain host process serving a temporary checkpoint directory: enough
    /// for everything the agent refuses before it restores.
    Host,
    /// Inside the node's mount namespace (`e2e/cluster node-exec` without the
    /// network), serving the kubelet's checkpoint directory and finding
    /// targets through the node's containerd: what a real restore needs.
    Node,
}

/// The cluster's state directory, from `e2e/cluster env`.
fn cluster_state() -> Result<PathBuf> {
    let state = std::env::var("PODRESTORE_E2E_STATE")
        .context("PODRESTORE_E2E_STATE is not set: eval \"$(e2e/cluster env)\" first")?;
    Ok(state.into())
}

/// The node's mount namespace file, from `e2e/cluster env`.
pub fn node_mount_namespace(node: &str) -> Result<PathBuf> {
    Ok(cluster_state()?.join("ns").join(format!("{node}-mnt")))
}

/// The node's containerd socket, from `e2e/cluster env`.
pub fn node_containerd_socket(node: &str) -> Result<PathBuf> {
    Ok(cluster_state()?
        .join("nodes")
        .join(node)
        .join("containerd.sock"))
}

/// The node's kubelet root directory, from `e2e/cluster env`; checkpoints
/// land in its `checkpoints/`.
pub fn kubelet_root(node: &str) -> Result<PathBuf> {
    Ok(cluster_state()?.join("nodes").join(node).join("kubelet"))
}

/// The CRIU binary the node's containerd uses (`PODRESTORE_CRIU` overrides).
pub fn criu_binary() -> PathBuf {
    std::env::var_os("PODRESTORE_CRIU").map_or_else(|| "/usr/local/sbin/criu".into(), PathBuf::from)
}

/// The operator and one agent, running for one namespace.
pub struct Installation {
    /// The scenario's namespace.
    pub ns: TestNamespace,
    /// Logs, TLS files and the agent's state.
    pub dir: tempfile::TempDir,
    /// The operator.
    pub operator: Process,
    /// The agent.
    pub agent: Process,
    /// The directory the agent serves archives from.
    pub checkpoints: PathBuf,
    operator_program: PathBuf,
    operator_args: Vec<String>,
    agent_program: PathBuf,
    agent_args: Vec<String>,
    agent_addr: SocketAddr,
    kubeconfig: PathBuf,
}

impl Installation {
    /// The last lines of the operator's and the agent's logs.
    pub fn logs(&self) -> String {
        format!("{}\n{}", self.operator.tail(), self.agent.tail())
    }

    /// The agent's state directory.
    pub fn state(&self) -> PathBuf {
        self.dir.path().join("agent-state")
    }

    /// Starts the agent again with the same arguments and state (after it was
    /// killed) and waits until it listens.
    pub async fn restart_agent(&mut self) -> Result<()> {
        let _ = self.agent.kill();
        self.agent = Process::spawn(
            "agent",
            &self.agent_program,
            &self.agent_args,
            &self.kubeconfig,
            self.dir.path(),
        )?;
        wait_listening(self.agent_addr, &self.agent).await
    }

    /// Starts the operator again with its first arguments plus `extra` (after it was
    /// killed, or killing it now) and waits until it leads. It keeps its identity, as a
    /// restarted container of the same pod would, so it renews the Lease it held at once.
    pub async fn restart_operator(&mut self, extra: &[&str]) -> Result<()> {
        let _ = self.operator.kill();
        let mut args = self.operator_args.clone();
        args.extend(extra.iter().map(|a| (*a).to_owned()));
        self.operator = Process::spawn(
            "operator",
            &self.operator_program,
            &args,
            &self.kubeconfig,
            self.dir.path(),
        )?;
        let listen = operator_listen(&args)?;
        let operator = &self.operator;
        wait_until("the operator to lead", CONDITION, || async {
            Ok(leading(listen)?.then_some(()))
        })
        .await
        .with_context(|| operator.tail())
    }
}

/// The address of the operator's HTTP listener in its arguments.
fn operator_listen(args: &[String]) -> Result<SocketAddr> {
    let value = args
        .iter()
        .skip_while(|a| *a != "--listen")
        .nth(1)
        .context("the operator's arguments name no --listen address")?;
    Ok(value.parse()?)
}

/// Whether the operator listening on `addr` holds the leader Lease, as its
/// `/metrics` say.
fn leading(addr: SocketAddr) -> Result<bool> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: operator\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    Ok(reply
        .lines()
        .any(|l| l.trim() == "podrestore_operator_leader 1"))
}

/// Deletes the PodRestores of namespace `ns` and waits (at most a minute)
/// until their finalizers ran; for the drop of an installation, while its
/// operator and agents still run (a failed scenario must not leave a restored
/// tree or a namespace stuck terminating).
fn delete_podrestores(kubeconfig: &Path, ns: &str) {
    let _ = Command::new("kubectl")
        .args([
            "delete",
            "podrestores.podrestore.io",
            "--all",
            "-n",
            ns,
            "--timeout=60s",
        ])
        .env("KUBECONFIG", kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

impl Drop for Installation {
    /// Deletes the scenario's PodRestores while the operator and the agent
    /// still run, so that their finalizers are served.
    fn drop(&mut self) {
        delete_podrestores(&self.kubeconfig, &self.ns.name);
    }
}

async fn wait_listening(addr: SocketAddr, agent: &Process) -> Result<()> {
    wait_until("the agent to listen", Duration::from_secs(60), || async {
        Ok(TcpStream::connect(addr).ok().map(|_| ()))
    })
    .await
    .with_context(|| agent.tail())
}

/// Installs the CRD, creates a namespace `<prefix>-...` and starts the operator
/// and an agent placed as `place` says.
pub async fn install(
    cluster: &Cluster,
    client: &kube::Client,
    prefix: &str,
    place: AgentPlace,
) -> Result<Installation> {
    install_crd(cluster)?;
    let ns = cluster.namespace(prefix)?;
    let dir = tempfile::tempdir()?;
    let checkpoints = match place {
        AgentPlace::Host => {
            let dir = dir.path().join("checkpoints");
            std::fs::create_dir_all(&dir)?;
            dir
        }
        AgentPlace::Node => cluster.kubelet_root.join("checkpoints"),
    };
    let agent_addr: SocketAddr = format!("127.0.0.1:{}", free_port()?).parse()?;

    let operator_program = binary("podrestore-operator", "PODRESTORE_OPERATOR_BIN")?;
    let operator_args = operator_args(&ns.name, "op-1", &cluster.node, agent_addr)?;
    let operator = Process::spawn(
        "operator",
        &operator_program,
        &operator_args,
        &cluster.kubeconfig,
        dir.path(),
    )?;
    let tls = dir.path().join("tls");
    agent_tls_files(client, &ns.name, &tls, || operator.tail()).await?;
    let state = dir.path().join("agent-state");
    let agent_bin = binary("podrestore-agent", "PODRESTORE_AGENT_BIN")?;
    let serve = serve_args(&cluster.node, agent_addr, &tls, &state, &checkpoints)?;
    let (agent_program, agent_args) = match place {
        AgentPlace::Host => (agent_bin, serve),
        AgentPlace::Node => {
            std::fs::create_dir_all(&checkpoints)?;
            in_node(&cluster.node, &agent_bin, serve)?
        }
    };
    let agent = Process::spawn(
        "agent",
        &agent_program,
        &agent_args,
        &cluster.kubeconfig,
        dir.path(),
    )?;
    wait_listening(agent_addr, &agent).await?;
    Ok(Installation {
        ns,
        dir,
        operator,
        agent,
        checkpoints,
        operator_program,
        operator_args,
        agent_program,
        agent_args,
        agent_addr,
        kubeconfig: cluster.kubeconfig.clone(),
    })
}

/// The arguments of `podrestore-agent serve` for node `node`, listening on
/// `addr` with the TLS files the operator issued in `tls`.
fn serve_args(
    node: &str,
    addr: SocketAddr,
    tls: &Path,
    state: &Path,
    checkpoints: &Path,
) -> Result<Vec<String>> {
    Ok(vec![
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
        state.display().to_string(),
        "--checkpoint-dir".into(),
        checkpoints.display().to_string(),
    ])
}

/// The program and arguments that run `agent serve` inside node `node`'s
/// mount namespace, with the node's containerd and CRIU.
fn in_node(node: &str, agent: &Path, mut serve: Vec<String>) -> Result<(PathBuf, Vec<String>)> {
    serve.extend([
        "--runtime-endpoint".into(),
        node_containerd_socket(node)?.display().to_string(),
        "--criu".into(),
        criu_binary().display().to_string(),
    ]);
    // Only the mount namespace: the agent keeps the host's network, so the
    // operator reaches it on the loopback interface.
    let mut args = vec![
        format!("--mount={}", node_mount_namespace(node)?.display()),
        "--".into(),
        agent.display().to_string(),
    ];
    args.extend(serve);
    Ok((PathBuf::from("nsenter"), args))
}

/// The operator and the agents of nodes `a` and `b` of a two-node cluster,
/// each agent in its node's mount namespace serving the kubelet's checkpoint
/// directory, running for one namespace.
pub struct TwoNodes {
    /// The scenario's namespace.
    pub ns: TestNamespace,
    /// Logs, TLS files and the agents' state directories.
    pub dir: tempfile::TempDir,
    /// The operator.
    pub operator: Process,
    /// The agent of node `a`.
    pub agent_a: Process,
    /// The agent of node `b`.
    pub agent_b: Process,
    addr_a: SocketAddr,
    addr_b: SocketAddr,
    kubeconfig: PathBuf,
}

impl TwoNodes {
    /// The last lines of the operator's and both agents' logs.
    pub fn logs(&self) -> String {
        format!(
            "{}\n{}\n{}",
            self.operator.tail(),
            self.agent_a.tail(),
            self.agent_b.tail()
        )
    }

    /// The state directory of node `node`'s agent.
    pub fn agent_state(&self, node: &str) -> PathBuf {
        agent_state(self.dir.path(), node)
    }

    /// Starts the agent of node `node` again with the same arguments and
    /// state (after it was killed) and waits until it listens.
    pub async fn restart_agent(&mut self, node: &str) -> Result<()> {
        let (agent, addr) = match node {
            "a" => (&mut self.agent_a, self.addr_a),
            "b" => (&mut self.agent_b, self.addr_b),
            other => bail!("no agent of node {other}: the installation has nodes a and b"),
        };
        let _ = agent.kill();
        *agent = start_node_agent(node, addr, self.dir.path(), &self.kubeconfig)?;
        wait_listening(addr, agent).await
    }
}

impl Drop for TwoNodes {
    /// Deletes the scenario's PodRestores while the operator and the agents
    /// still run, so that their finalizers are served.
    fn drop(&mut self) {
        delete_podrestores(&self.kubeconfig, &self.ns.name);
    }
}

/// The state directory of node `node`'s agent below `dir`.
fn agent_state(dir: &Path, node: &str) -> PathBuf {
    dir.join(format!("state-{node}"))
}

/// Starts `podrestore-agent serve` for `node` in the node's mount namespace
/// (on the host's network, listening on the loopback `addr`), with the TLS
/// files in `<dir>/tls` and its state in `<dir>/state-<node>`.
fn start_node_agent(
    node: &str,
    addr: SocketAddr,
    dir: &Path,
    kubeconfig: &Path,
) -> Result<Process> {
    let checkpoints = kubelet_root(node)?.join("checkpoints");
    std::fs::create_dir_all(&checkpoints)?;
    let agent = binary("podrestore-agent", "PODRESTORE_AGENT_BIN")?;
    let serve = serve_args(
        node,
        addr,
        &dir.join("tls"),
        &agent_state(dir, node),
        &checkpoints,
    )?;
    let (program, args) = in_node(node, &agent, serve)?;
    Process::spawn(&format!("agent-{node}"), &program, &args, kubeconfig, dir)
}

/// Installs the CRD, creates a namespace `<prefix>-...` and starts the operator
/// and the agents of nodes `a` and `b` of a two-node cluster.
pub async fn install_two_nodes(
    cluster: &Cluster,
    client: &kube::Client,
    prefix: &str,
) -> Result<TwoNodes> {
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
    let agent_a = start_node_agent("a", addr_a, dir.path(), &cluster.kubeconfig)?;
    let agent_b = start_node_agent("b", addr_b, dir.path(), &cluster.kubeconfig)?;
    wait_listening(addr_a, &agent_a).await?;
    wait_listening(addr_b, &agent_b).await?;
    Ok(TwoNodes {
        ns,
        dir,
        operator,
        agent_a,
        agent_b,
        addr_a,
        addr_b,
        kubeconfig: cluster.kubeconfig.clone(),
    })
}
