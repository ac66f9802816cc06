//! The Helm chart (`charts/podrestore`), the way an administrator and a user meet it:
//! `helm lint`, the rendered objects against the API server (`kubectl apply
//! --dry-run=server`), the RBAC the chart grants against the list in its README, an
//! installation whose operator and agent pods become ready and serve a PodRestore that
//! restores a checkpoint into a forensic pod, and `helm uninstall` leaving nothing of what
//! it created.
//!
//! The installing scenarios import the operator and agent images first
//! (`e2e/images/build-podrestore-images.sh --import`, which builds the release binaries
//! when they are stale).

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api,
    api::{DynamicObject, ListParams, PostParams},
};
use podrestore_crds::condition::{kind, reason};
use podrestore_e2e::{
    Cluster, TestNamespace, cluster, e2e_dir,
    install::{delete_podrestore, podrestores},
    pods::{CHECKPOINT, MAIN, POD_START, checkpoint, count, exec, start_pod},
    wait_until,
};
use serde::Deserialize;
use serde_json::{Value, json};

const RESTORE: Duration = Duration::from_secs(120);
/// The release name the README's RBAC table is written for.
const README_RELEASE: &str = "podrestore";
/// The counter's loop: the value lives in the shell's memory and is written to a file in
/// the container every second, through a rename so that a reader never finds it empty.
const COUNTER: &str = "i=0; while true; do i=$((i+1)); echo $i > /tmp/count.new; mv /tmp/count.new /tmp/count; sleep 1; done";

fn chart_dir() -> PathBuf {
    e2e_dir().join("../charts/podrestore")
}

fn chart() -> Result<String> {
    chart_dir()
        .to_str()
        .map(str::to_owned)
        .context("chart path is not UTF-8")
}

fn readme() -> Result<String> {
    let path = chart_dir().join("README.md");
    std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))
}

/// Every YAML document of `text` as JSON, empty documents left out.
fn documents(text: &str) -> Result<Vec<Value>> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(text) {
        let value = Value::deserialize(doc).context("rendered chart is not YAML")?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `helm template` of the chart as release `release` in `namespace`, with `--set` values.
fn render(cluster: &Cluster, release: &str, namespace: &str, sets: &[String]) -> Result<String> {
    let chart = chart()?;
    let mut args = vec![
        "template",
        release,
        chart.as_str(),
        "--namespace",
        namespace,
        "--include-crds",
    ];
    for set in sets {
        args.extend(["--set", set.as_str()]);
    }
    cluster.helm(&args)
}

/// The local cluster's node paths for the agent's host path values: the node's runtime
/// socket and directories, and a state directory of the release's own.
fn local_node_values(cluster: &Cluster, release: &str) -> Result<Vec<String>> {
    let state = std::env::var("PODRESTORE_E2E_STATE").context("PODRESTORE_E2E_STATE is not set")?;
    let node = Path::new(&state).join("nodes").join(&cluster.node);
    let kubelet = &cluster.kubelet_root;
    let path = |p: PathBuf| -> Result<String> {
        p.to_str()
            .map(str::to_owned)
            .context("node path is not UTF-8")
    };
    Ok(vec![
        format!(
            "agent.hostPaths.runtimeSocket={}",
            path(node.join("containerd.sock"))?
        ),
        format!(
            "agent.hostPaths.checkpointDir={}",
            path(kubelet.join("checkpoints"))?
        ),
        format!(
            "agent.hostPaths.stateDir={}",
            path(node.join(format!("podrestore-{release}")))?
        ),
        format!(
            "agent.hostPaths.runtimeStateDir={}",
            path(node.join("containerd/state"))?
        ),
        format!(
            "agent.hostPaths.runtimeRootDir={}",
            path(node.join("containerd/root"))?
        ),
        format!(
            "agent.hostPaths.kubeletPodsDir={}",
            path(kubelet.join("pods"))?
        ),
    ])
}

/// A name unique to this run, for releases and their cluster-wide objects.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!(
        "{prefix}-{:x}{:x}",
        std::process::id() & 0xfff,
        nanos & 0xffff
    )
}

// ---------------------------------------------------------------------------------------
// lint and render

#[test]
fn helm_lint_passes() -> Result<()> {
    let cluster = cluster();
    let chart = chart()?;
    let out = cluster.helm(&["lint", "--strict", &chart])?;
    assert!(out.contains("0 chart(s) failed"), "helm lint: {out}");
    for variant in [
        "operator.watchNamespace=team-a",
        "networkPolicy.enabled=true",
        "metrics.serviceMonitor.enabled=true",
        "operator.replicas=1",
    ] {
        let out = cluster.helm(&["lint", "--strict", &chart, "--set", variant])?;
        assert!(
            out.contains("0 chart(s) failed"),
            "helm lint {variant}: {out}"
        );
    }
    Ok(())
}

#[test]
fn values_schema_refuses_an_operator_with_privileges() -> Result<()> {
    let cluster = cluster();
    for loosened in [
        "operator.securityContext.privileged=true",
        "operator.securityContext.allowPrivilegeEscalation=true",
        "operator.securityContext.readOnlyRootFilesystem=false",
        "operator.podSecurityContext.runAsNonRoot=false",
        "agent.hostPaths.stateDir=relative/path",
        "operator.replicas=0",
    ] {
        let refused = render(
            &cluster,
            "podrestore",
            "podrestore-system",
            &[loosened.into()],
        );
        let err = match refused {
            Ok(_) => bail!("helm template accepted {loosened}"),
            Err(err) => format!("{err:#}"),
        };
        assert!(
            err.contains("schema"),
            "{loosened} was refused, but not by values.schema.json: {err}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn rendered_chart_passes_server_side_dry_run() -> Result<()> {
    let cluster = cluster();
    let ns = cluster.namespace("chart-dry")?;
    let variants: [&[&str]; 2] = [&[], &["networkPolicy.enabled=true", "operator.replicas=3"]];
    for sets in variants {
        let mut sets: Vec<String> = sets.iter().map(|s| (*s).to_owned()).collect();
        sets.push(format!("operator.watchNamespace={}", ns.name));
        let rendered = render(&cluster, &unique("dry"), &ns.name, &sets)?;
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), &rendered)?;
        let path = file.path().to_str().context("temp path is not UTF-8")?;
        let out = cluster.kubectl(&["apply", "--dry-run=server", "-f", path])?;
        let kinds = documents(&rendered)?.len();
        assert_eq!(
            out.lines()
                .filter(|l| l.ends_with("(server dry run)"))
                .count(),
            kinds,
            "every rendered object passes the dry run:\n{out}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// RBAC against the README

/// One row of the README's RBAC table.
#[derive(Debug)]
struct Grant {
    subject: String,
    kinds: BTreeSet<String>,
    group: String,
    resource: String,
    verbs: BTreeSet<String>,
    names: BTreeSet<String>,
}

fn cell_list(cell: &str) -> BTreeSet<String> {
    cell.split(',')
        .map(|s| s.trim().trim_matches('`').to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The rows of the table under `## RBAC` in the chart README.
fn readme_grants(readme: &str) -> Result<Vec<Grant>> {
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("RBAC"))
        .context("the chart README has no RBAC section")?;
    let mut rows = section.lines().filter(|l| l.starts_with('|')).map(|l| {
        l.trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_owned())
            .collect::<Vec<_>>()
    });
    let header = rows.next().context("RBAC table has no header")?;
    assert_eq!(
        header[..6],
        [
            "Subject",
            "Kind",
            "API group",
            "Resource",
            "Verbs",
            "Resource names"
        ],
        "RBAC table columns"
    );
    let mut grants = Vec::new();
    for row in rows.skip(1) {
        if row.len() < 6 {
            bail!("RBAC row {row:?} has fewer than 6 cells");
        }
        let kinds = row[1]
            .split(|c: char| !c.is_ascii_alphanumeric())
            .filter(|w| *w == "ClusterRole" || *w == "Role")
            .map(str::to_owned)
            .collect();
        grants.push(Grant {
            subject: row[0].clone(),
            kinds,
            group: match row[2].as_str() {
                "core" => String::new(),
                g => g.to_owned(),
            },
            resource: row[3].clone(),
            verbs: cell_list(&row[4]),
            names: cell_list(&row[5]),
        });
    }
    Ok(grants)
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect()
}

/// Checks every rule of every rendered Role and ClusterRole against the README's table,
/// and that only the operator's account is bound to them.
fn check_rbac(docs: &[Value], grants: &[Grant], release_ns: &str) -> Result<usize> {
    let mut checked = 0;
    let operator_account = format!("{README_RELEASE}-operator");
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        match kind {
            "ClusterRole" | "Role" => {
                for rule in doc["rules"].as_array().into_iter().flatten() {
                    let names: BTreeSet<String> =
                        strings(&rule["resourceNames"]).into_iter().collect();
                    for group in strings(&rule["apiGroups"]) {
                        for resource in strings(&rule["resources"]) {
                            let verbs: BTreeSet<String> =
                                strings(&rule["verbs"]).into_iter().collect();
                            assert!(
                                !verbs.contains("*") && group != "*" && resource != "*",
                                "{kind} {name} grants a wildcard: {rule}"
                            );
                            let listed = grants.iter().any(|g| {
                                g.subject == "operator"
                                    && g.kinds.contains(kind)
                                    && g.group == group
                                    && g.resource == resource
                                    && verbs.is_subset(&g.verbs)
                                    && g.names == names
                            });
                            assert!(
                                listed,
                                "{kind} {name} grants {verbs:?} on {group}/{resource} {names:?}, which the chart README's RBAC table does not list"
                            );
                            checked += 1;
                        }
                    }
                }
            }
            "ClusterRoleBinding" | "RoleBinding" => {
                for subject in doc["subjects"].as_array().into_iter().flatten() {
                    assert_eq!(
                        (
                            subject["kind"].as_str(),
                            subject["name"].as_str(),
                            subject["namespace"].as_str()
                        ),
                        (
                            Some("ServiceAccount"),
                            Some(operator_account.as_str()),
                            Some(release_ns)
                        ),
                        "{kind} {name} binds someone else than the operator"
                    );
                }
            }
            _ => {}
        }
    }
    Ok(checked)
}

#[test]
fn rendered_rbac_grants_nothing_beyond_the_readme() -> Result<()> {
    let cluster = cluster();
    let grants = readme_grants(&readme()?)?;
    assert!(
        grants
            .iter()
            .any(|g| g.subject == "agent" && g.verbs.is_empty()),
        "the README lists the agent as having no rights"
    );
    for sets in [
        vec![],
        vec!["operator.watchNamespace=team-a".to_owned()],
        vec!["operator.podCheckpoints.kubeletAccess=false".to_owned()],
    ] {
        let docs = documents(&render(
            &cluster,
            README_RELEASE,
            "podrestore-system",
            &sets,
        )?)?;
        let checked = check_rbac(&docs, &grants, "podrestore-system")?;
        assert!(checked >= 10, "only {checked} rules rendered with {sets:?}");
        let cluster_wide: BTreeSet<String> = docs
            .iter()
            .filter(|d| d["kind"] == "ClusterRole")
            .flat_map(|d| d["rules"].as_array().cloned().unwrap_or_default())
            .flat_map(|rule| strings(&rule["resources"]))
            .collect();
        assert_eq!(
            cluster_wide.contains("nodes/proxy"),
            !sets.iter().any(|s| s.contains("kubeletAccess=false")),
            "nodes/proxy follows operator.podCheckpoints.kubeletAccess"
        );
        if sets.iter().any(|s| s.contains("watchNamespace")) {
            // With a watch namespace, PodRestores, pods and events are granted there only.
            let watch_role = docs
                .iter()
                .any(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == "team-a");
            assert!(watch_role, "no Role in the watch namespace");
            assert_eq!(
                cluster_wide,
                BTreeSet::from(["nodes".to_owned(), "nodes/proxy".to_owned()]),
                "cluster-wide rules with a watch namespace"
            );
        }
    }
    Ok(())
}

#[test]
fn rendered_pods_run_with_what_the_readme_declares() -> Result<()> {
    let cluster = cluster();
    let docs = documents(&render(&cluster, README_RELEASE, "podrestore-system", &[])?)?;
    let spec_of = |kind: &str| -> Result<Value> {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .map(|d| d["spec"]["template"]["spec"].clone())
            .with_context(|| format!("no {kind} rendered"))
    };

    let operator = spec_of("Deployment")?;
    assert_eq!(operator["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        operator["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &operator["containers"][0]["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert!(operator["hostPID"].is_null() && operator["hostNetwork"].is_null());
    assert!(operator["volumes"].is_null(), "the operator mounts nothing");

    let agent = spec_of("DaemonSet")?;
    assert_eq!(agent["hostPID"], true);
    assert!(agent["hostNetwork"].is_null() && agent["hostIPC"].is_null());
    assert_eq!(agent["automountServiceAccountToken"], false);
    assert_eq!(
        agent["containers"][0]["securityContext"]["readOnlyRootFilesystem"],
        true
    );
    // The host paths are exactly the README's table, at the same paths inside.
    let readme = readme()?;
    let mut host_paths = BTreeSet::new();
    for volume in agent["volumes"].as_array().into_iter().flatten() {
        if let Some(path) = volume["hostPath"]["path"].as_str() {
            host_paths.insert(path.to_owned());
            let mount = agent["containers"][0]["volumeMounts"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|m| m["name"] == volume["name"])
                .with_context(|| format!("volume {} is not mounted", volume["name"]))?;
            assert_eq!(
                mount["mountPath"].as_str(),
                Some(path),
                "{path} is mounted elsewhere"
            );
        }
    }
    let documented: BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with("| `agent.hostPaths."))
        .filter_map(|l| l.split('|').nth(2))
        .map(|c| c.trim().trim_matches('`').to_owned())
        .collect();
    assert_eq!(host_paths, documented, "host paths against the README");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// installation

/// Builds and imports the images once per test run.
fn images(cluster: &Cluster) -> Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let script = e2e_dir().join("images/build-podrestore-images.sh");
            let out = Command::new(&script)
                .arg("--import")
                .env("KUBECONFIG", &cluster.kubeconfig)
                .output()
                .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{} --import failed ({}): {}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// The node's mounts shared, as systemd makes them on a real node, so that root file
/// systems of containers started after the agent propagate into its mount namespace
/// (`mountPropagation: HostToContainer`).
fn node_mounts_shared(cluster: &Cluster) -> Result<()> {
    let cmd = std::env::var("PODRESTORE_E2E_CLUSTER_CMD")
        .context("PODRESTORE_E2E_CLUSTER_CMD is not set")?;
    let nodes = std::env::var("PODRESTORE_E2E_NODES").unwrap_or_else(|_| cluster.node.clone());
    for node in nodes.split_whitespace() {
        let status = Command::new(&cmd)
            .args(["node-exec", node, "mount", "--make-rshared", "/"])
            .status()?;
        if !status.success() {
            bail!("cannot make node {node}'s mounts shared");
        }
    }
    Ok(())
}

/// A release of the chart in a namespace of its own, reconciling PodRestores of one
/// other namespace (so that it never meets another installation's objects).
struct Release {
    name: String,
    ns: TestNamespace,
    rendered: Vec<Value>,
}

impl Release {
    async fn install(cluster: &Cluster, workloads: &str, extra: &[&str]) -> Result<Self> {
        images(cluster)?;
        node_mounts_shared(cluster)?;
        let name = unique("chart");
        let ns = cluster.namespace("chart-sys")?;
        let mut sets = local_node_values(cluster, &name)?;
        sets.push(format!("operator.watchNamespace={workloads}"));
        sets.extend(extra.iter().map(|s| (*s).to_owned()));
        let rendered = documents(&render(cluster, &name, &ns.name, &sets)?)?;
        let chart = chart()?;
        let mut args = vec![
            "install",
            name.as_str(),
            chart.as_str(),
            "--namespace",
            ns.name.as_str(),
            "--wait",
            "--timeout",
            "3m",
        ];
        for set in &sets {
            args.extend(["--set", set.as_str()]);
        }
        cluster.helm(&args)?;
        Ok(Self { name, ns, rendered })
    }

    fn fullname(&self) -> String {
        format!("{}-podrestore", self.name)
    }

    fn logs(&self, cluster: &Cluster) -> String {
        let selector = format!("app.kubernetes.io/instance={}", self.name);
        cluster
            .kubectl(&[
                "logs",
                "-n",
                &self.ns.name,
                "-l",
                &selector,
                "--prefix",
                "--tail=40",
            ])
            .unwrap_or_else(|e| format!("no logs: {e:#}"))
    }

    fn uninstall(&self, cluster: &Cluster) -> Result<String> {
        cluster.helm(&[
            "uninstall",
            &self.name,
            "--namespace",
            &self.ns.name,
            "--wait",
            "--timeout",
            "2m",
        ])
    }
}

/// Waits until every pod of the release is Ready; returns (operators, agents).
async fn ready_pods(client: &kube::Client, release: &Release) -> Result<(usize, usize)> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), &release.ns.name);
    let selector = format!("app.kubernetes.io/instance={}", release.name);
    wait_until("the release's pods to be ready", POD_START, || async {
        let list = pods.list(&ListParams::default().labels(&selector)).await?;
        let mut operators = 0;
        let mut agents = 0;
        for pod in &list.items {
            let ready = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            if !ready {
                bail!("pod {:?} is not ready", pod.metadata.name);
            }
            match pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/name"))
                .map(String::as_str)
            {
                Some("podrestore-operator") => operators += 1,
                Some("podrestore-agent") => agents += 1,
                other => bail!("unexpected pod of the release: {other:?}"),
            }
        }
        Ok(Some((operators, agents)))
    })
    .await
}

/// Condition `type_` of a PodRestore, or `Null`.
fn condition_of(object: &DynamicObject, type_: &str) -> Value {
    object.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or_default()
}

/// `kubectl explain` of `path` lists `field`.
fn explains(cluster: &Cluster, path: &str, field: &str) -> Result<bool> {
    let out = cluster.kubectl(&["explain", path])?;
    // Field lines read "  <name>\t<type>".
    Ok(out
        .lines()
        .any(|l| l.split_whitespace().next() == Some(field) && l.contains('<')))
}

#[tokio::test]
async fn helm_install_serves_podrestores_and_uninstall_removes_everything() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let workloads = cluster.namespace("chart-work")?;
    let release = Release::install(&cluster, &workloads.name, &[]).await?;

    // The operator replicas and one agent per node become ready.
    let (operators, agents) = ready_pods(&client, &release)
        .await
        .with_context(|| release.logs(&cluster))?;
    let nodes = cluster
        .kubectl(&["get", "nodes", "-o", "name"])?
        .lines()
        .count();
    assert_eq!(
        (operators, agents),
        (2, nodes),
        "operator replicas and agents"
    );

    // The running pods carry what the chart declares (admission may not have changed it).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &release.ns.name);
    for pod in pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=podrestore-operator"))
        .await?
        .items
    {
        let spec = pod.spec.context("pod without spec")?;
        let sc = spec.containers[0]
            .security_context
            .clone()
            .context("operator container without security context")?;
        assert_eq!(sc.privileged, Some(false));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_ne!(spec.host_pid, Some(true));
    }

    // `kubectl explain` prints every field the README documents.
    let readme = readme()?;
    let fields: Vec<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `spec."))
        .filter_map(|l| l.split('`').next())
        .collect();
    assert!(fields.len() >= 10, "README documents {fields:?}");
    for field in fields {
        let (parent, leaf) = field.rsplit_once('.').unwrap_or(("", field));
        let path = if parent.is_empty() {
            "podrestore.spec".to_owned()
        } else {
            format!("podrestore.spec.{parent}")
        };
        assert!(
            explains(&cluster, &path, leaf)?,
            "kubectl explain {path} does not list {leaf}"
        );
    }

    // A PodRestore reaches the agent through the operator pod over mutual TLS: the
    // operator accepts it, the agent answers, and deleting it resolves the finalizer.
    let workload_pods: Api<Pod> = Api::namespaced(client.clone(), &workloads.name);
    start_pod(&cluster, &workload_pods, "target", "exec sleep 3600").await?;
    let api = podrestores(&client, &workloads.name);
    let missing = format!(
        "{}/checkpoint-missing.tar",
        cluster.kubelet_root.join("checkpoints").display()
    );
    let object: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "podrestore.io/v1alpha1",
        "kind": "PodRestore",
        "metadata": {"name": "missing-archive", "namespace": workloads.name},
        "spec": {
            "checkpoint": {"archive": {"nodeName": cluster.node, "path": missing}},
            "target": {"podName": "target"},
        },
    }))?;
    api.create(&PostParams::default(), &object).await?;
    wait_until(
        "the agent's refusal of a missing archive",
        Duration::from_secs(60),
        || async {
            let accepted = condition_of(&api.get("missing-archive").await?, kind::ACCEPTED);
            if accepted["status"] == "False" && accepted["reason"] == reason::ARCHIVE_NOT_FOUND {
                Ok(Some(()))
            } else {
                bail!("Accepted is {accepted}")
            }
        },
    )
    .await
    .with_context(|| release.logs(&cluster))?;
    delete_podrestore(&api, "missing-archive", Duration::from_secs(60), || {
        release.logs(&cluster)
    })
    .await?;

    // helm uninstall removes every object it created; what stays is what the README says:
    // the operator's Secrets and Lease (and the CRD, which Helm never deletes).
    release.uninstall(&cluster)?;
    for doc in &release.rendered {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if kind == "CustomResourceDefinition" {
            continue;
        }
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        let mut args = vec!["get", kind, name, "--ignore-not-found", "-o", "name"];
        if let Some(ns) = doc["metadata"]["namespace"].as_str() {
            args.extend(["-n", ns]);
        }
        let left = cluster.kubectl(&args)?;
        assert!(left.trim().is_empty(), "helm uninstall left {kind} {name}");
    }
    wait_until(
        "the release's pods to go",
        Duration::from_secs(60),
        || async {
            let left = pods.list(&ListParams::default()).await?.items;
            if left.is_empty() {
                Ok(Some(()))
            } else {
                bail!(
                    "pods left: {:?}",
                    left.iter().map(|p| &p.metadata.name).collect::<Vec<_>>()
                )
            }
        },
    )
    .await?;
    let left = cluster.kubectl(&[
        "get",
        "secrets,leases,configmaps,serviceaccounts,services,deployments,daemonsets",
        "-n",
        &release.ns.name,
        "-o",
        "name",
    ])?;
    let mut left: Vec<&str> = left
        .lines()
        .filter(|l| *l != "serviceaccount/default" && *l != "configmap/kube-root-ca.crt")
        .collect();
    left.sort_unstable();
    let fullname = release.fullname();
    let expected = [
        format!("lease.coordination.k8s.io/{fullname}-operator"),
        format!("secret/{fullname}-agent-tls"),
        format!("secret/{fullname}-ca"),
    ];
    assert_eq!(left, expected, "objects left in the release namespace");
    let cluster_left = cluster.kubectl(&[
        "get",
        "clusterroles,clusterrolebindings",
        "-l",
        &format!("app.kubernetes.io/instance={}", release.name),
        "-o",
        "name",
    ])?;
    assert!(cluster_left.trim().is_empty(), "left: {cluster_left}");
    Ok(())
}

#[tokio::test]
async fn restore_into_forensic_pod_through_the_chart() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let workloads = cluster.namespace("chart-demo")?;
    let release = Release::install(&cluster, &workloads.name, &["operator.replicas=1"]).await?;
    ready_pods(&client, &release)
        .await
        .with_context(|| release.logs(&cluster))?;
    let ns = workloads.name.as_str();

    // The demo's flow: a counter, its checkpoint through the kubelet, a forensic pod, a
    // PodRestore, and the counter counting on inside the forensic pod.
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    start_pod(&cluster, &pods, "counter", COUNTER).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = count(&cluster, ns, ("counter", MAIN))?;
    let archive = checkpoint(&client, &cluster.node, ns, ("counter", MAIN), CHECKPOINT).await?;
    start_pod(&cluster, &pods, "forensic", "exec sleep 3600").await?;
    let manifest = json!({
        "apiVersion": "podrestore.io/v1alpha1",
        "kind": "PodRestore",
        "metadata": {"name": "counter-restore", "namespace": ns},
        "spec": {
            "checkpoint": {"archive": {"nodeName": cluster.node, "path": archive.path()}},
            "target": {"podName": "forensic"},
        },
    });
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), manifest.to_string())?;
    cluster.kubectl(&[
        "apply",
        "-f",
        file.path().to_str().context("temp path is not UTF-8")?,
    ])?;

    let api = podrestores(&client, ns);
    // A final failure ends the wait at once (as a decided outcome), not at the timeout.
    let decided = wait_until("Restored to be decided", RESTORE, || async {
        let object = api.get("counter-restore").await?;
        let restored = condition_of(&object, kind::RESTORED);
        Ok(match restored["status"].as_str() {
            Some("True") => Some(Ok(object)),
            Some("False") if restored["reason"] != reason::IN_PROGRESS => Some(Err(format!(
                "the restore ended without success: {}",
                object.data["status"]["conditions"]
            ))),
            _ => None,
        })
    })
    .await?;
    let object = match decided {
        Ok(object) => object,
        Err(failure) => bail!("{failure}\n{}", release.logs(&cluster)),
    };
    let pid = object.data["status"]["restoredPID"].as_i64();
    assert!(
        pid.is_some_and(|p| p > 0),
        "status: {}",
        object.data["status"]
    );

    let ps = exec(&cluster, ns, ("forensic", MAIN), &["ps"])?;
    assert!(
        ps.contains("i=$((i+1))"),
        "the counter is not in the forensic pod:\n{ps}"
    );
    let first = count(&cluster, ns, ("forensic", MAIN))?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = count(&cluster, ns, ("forensic", MAIN))?;
    assert!(
        first >= before && second > first,
        "the restored counter does not count on: {before} before the checkpoint, then {first}, {second}"
    );

    // Deleting the PodRestore stops the restored tree; then uninstall.
    delete_podrestore(&api, "counter-restore", Duration::from_secs(60), || {
        release.logs(&cluster)
    })
    .await?;
    let ps = exec(&cluster, ns, ("forensic", MAIN), &["ps"])?;
    assert!(
        !ps.contains("i=$((i+1))"),
        "the restored counter still runs after its PodRestore was deleted:\n{ps}"
    );
    release.uninstall(&cluster)?;
    Ok(())
}
