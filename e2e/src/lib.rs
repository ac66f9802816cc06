//! Helpers shared by the end-to-end scenarios: the local cluster's kubeconfig,
//! per-test namespaces and `kubectl`.
//!
//! The scenarios run against the cluster `e2e/cluster up` starts; they read it
//! from the variables `e2e/cluster env` prints and fail (never skip) when they
//! are missing.

use std::{
    future::Future,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result, bail};

pub mod host;
pub mod install;
pub mod pods;

const HOW_TO_START: &str =
    "start the local cluster first: `e2e/cluster up && eval \"$(e2e/cluster env)\"`";

/// The local cluster the scenarios run against, as described by `e2e/cluster env`.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// Path of the admin kubeconfig.
    pub kubeconfig: PathBuf,
    /// Name of the node pods are scheduled on.
    pub node: String,
    /// The kubelet's root directory on that node; checkpoints land in `checkpoints/`.
    pub kubelet_root: PathBuf,
    /// Reference of the busybox image the cluster imported for test workloads.
    pub busybox_image: String,
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is not set: {HOW_TO_START}"))
}

impl Cluster {
    /// Reads the cluster from the environment and checks that its kubeconfig and
    /// `kubectl` are there.
    pub fn from_env() -> Result<Self> {
        let cluster = Self {
            kubeconfig: env("KUBECONFIG")?.into(),
            node: env("PODRESTORE_E2E_NODE")?,
            kubelet_root: env("PODRESTORE_E2E_KUBELET_ROOT")?.into(),
            busybox_image: env("PODRESTORE_E2E_BUSYBOX_IMAGE")?,
        };
        if !cluster.kubeconfig.is_file() {
            bail!(
                "kubeconfig {} does not exist: {HOW_TO_START}",
                cluster.kubeconfig.display()
            );
        }
        cluster
            .kubectl(&["version", "--client"])
            .context("kubectl is not usable")?;
        Ok(cluster)
    }

    /// A client authenticated as the cluster's admin.
    pub async fn client(&self) -> Result<kube::Client> {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Runs `kubectl` with the admin kubeconfig and returns its standard output.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.tool("kubectl", args)
    }

    /// Runs `helm` with the admin kubeconfig and returns its standard output.
    pub fn helm(&self, args: &[&str]) -> Result<String> {
        self.tool("helm", args)
    }

    fn tool(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = Command::new(program)
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .output()
            .with_context(|| format!("cannot run {program} (is it on PATH? {HOW_TO_START})"))?;
        if !out.status.success() {
            bail!(
                "{program} {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Creates a namespace of its own for one scenario; it is deleted on drop.
    pub fn namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("{prefix}-{:x}{:x}", std::process::id() & 0xfff, nanos);
        self.kubectl(&["create", "namespace", &name])?;
        Ok(TestNamespace {
            name,
            kubeconfig: self.kubeconfig.clone(),
        })
    }
}

/// A namespace owned by one scenario; dropping it deletes the namespace and
/// everything in it (without waiting), also when the scenario panicked.
#[derive(Debug)]
pub struct TestNamespace {
    /// The namespace's name.
    pub name: String,
    kubeconfig: PathBuf,
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .args([
                "delete",
                "namespace",
                &self.name,
                "--wait=false",
                "--ignore-not-found",
            ])
            .env("KUBECONFIG", &self.kubeconfig)
            .output();
    }
}

/// The cluster from the environment; a scenario without it fails (never
/// skips), saying how to start it.
pub fn cluster() -> Cluster {
    match Cluster::from_env() {
        Ok(c) => c,
        Err(e) => panic!("no local cluster: {e:#}"),
    }
}

/// The cluster from the environment, which must have the nodes `names`
/// (`PODRESTORE_E2E_NODES="a b" e2e/cluster up`).
pub fn cluster_with_nodes(names: &[&str]) -> Cluster {
    let cluster = cluster();
    let nodes = std::env::var("PODRESTORE_E2E_NODES").unwrap_or_default();
    let nodes: Vec<&str> = nodes.split_whitespace().collect();
    assert!(
        names.iter().all(|n| nodes.contains(n)),
        "this test needs nodes {names:?}: PODRESTORE_E2E_NODES=\"{}\" e2e/cluster up (nodes now: {nodes:?})",
        names.join(" ")
    );
    cluster
}

/// Polls `probe` until it returns `Some`, failing after `timeout` with the last
/// error or observation it reported.
pub async fn wait_until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no observation");
    loop {
        match probe().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The directory of the end-to-end crate, for test data.
pub fn e2e_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}
