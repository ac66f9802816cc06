//! The agent's view of the container runtime, against the local cluster's real
//! containerd: the agent's CRI client finds a pod's container, its init, root
//! file system, mounts, cgroups and the namespace list containerd gave runc,
//! and runc's restore rules turn that list into CRIU's namespace options: an
//! ordinary pod gives an external network namespace and joined ipc/uts;
//! `shareProcessNamespace: true` adds an external pid namespace.
//!
//! The agent runs on the host, containerd in node `a`'s namespaces: its socket
//! lives in the node's state directory, reachable from the host, while the
//! container's root file system is mounted only in the node's mount namespace,
//! so it is read there through `e2e/cluster node-exec`.

use std::{
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use podrestore_agent::{
    namespaces::{Namespace, NamespaceType, restore_namespaces},
    runtime::{Flavor, Runtime, RuntimeConfig, Source, TargetContainer, proc_namespaces},
    sys::Host,
};
use podrestore_e2e::{Cluster, TestNamespace, cluster, wait_until};
use serde_json::json;

const POD_START: Duration = Duration::from_secs(120);
/// A CRIU version new enough for every rule (4.2.1, the one setup installs).
const CRIU_VERSION: u32 = 40201;

fn env(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: start the local cluster and `eval \"$(e2e/cluster env)\"`")
    })
}

/// containerd's CRI socket of the cluster's first node, as `e2e/cluster` configures it.
fn containerd_socket(cluster: &Cluster) -> Result<PathBuf> {
    let socket = Path::new(&env("PODRESTORE_E2E_STATE")?)
        .join("nodes")
        .join(&cluster.node)
        .join("containerd.sock");
    ensure!(
        socket.exists(),
        "containerd's socket {} does not exist: is the cluster up?",
        socket.display()
    );
    Ok(socket)
}

async fn runtime(cluster: &Cluster) -> Result<Runtime> {
    Ok(Runtime::connect(RuntimeConfig {
        socket: containerd_socket(cluster)?,
        ..Default::default()
    })
    .await?)
}

/// Runs a command in the node's network and mount namespaces.
fn node_exec(cluster: &Cluster, args: &[&str]) -> Result<String> {
    let cmd = env("PODRESTORE_E2E_CLUSTER_CMD")?;
    let out = Command::new(&cmd)
        .arg("node-exec")
        .arg(&cluster.node)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "node-exec {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a busybox pod whose container `main` writes `marker` into its root
/// and into an emptyDir at `/data`, then sleeps; waits until it is ready.
async fn start_pod(
    cluster: &Cluster,
    ns: &TestNamespace,
    name: &str,
    share_pid: bool,
    marker: &str,
) -> Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(cluster.client().await?, &ns.name);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "shareProcessNamespace": share_pid,
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": cluster.busybox_image,
                "imagePullPolicy": "IfNotPresent",
                "command": ["/bin/sh", "-c",
                    format!("echo {marker} > /marker; echo {marker} > /data/marker; exec sleep 100000")],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                "readinessProbe": {"exec": {"command": ["cat", "/data/marker"]}, "periodSeconds": 1},
            }],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    wait_until(&format!("pod {name} ready"), POD_START, || async {
        let pod = pods.get(name).await?;
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        Ok(ready.then_some(pod))
    })
    .await
}

fn inode(path: &Path) -> Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .ino())
}

fn show(list: &[Namespace]) -> String {
    list.iter()
        .map(|ns| match ns.path() {
            Some(p) => format!("{}={}", ns.kind.oci_name(), p.display()),
            None => ns.kind.oci_name().to_owned(),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What every target must satisfy, whatever the pod: the facts come from
/// containerd itself, describe the running container, and agree with what
/// `/proc` and the node's mount namespace show.
fn check_common(
    cluster: &Cluster,
    pod: &Pod,
    target: &TargetContainer,
    marker: &str,
) -> Result<()> {
    let meta_uid = pod.metadata.uid.clone().unwrap_or_default();
    ensure!(
        target.pod_uid == meta_uid,
        "pod uid {} != {meta_uid}",
        target.pod_uid
    );
    let pod_ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
    ensure!(
        target.pod_ip == pod_ip,
        "pod ip {:?} != {pod_ip:?}",
        target.pod_ip
    );
    ensure!(target.container_name == "main");
    ensure!(
        target.flavor == Flavor::Containerd,
        "flavor {:?}",
        target.flavor
    );
    ensure!(
        [
            target.provenance.pid,
            target.provenance.rootfs,
            target.provenance.mounts,
            target.provenance.namespaces
        ]
        .iter()
        .all(|s| *s == Source::Runtime),
        "provenance {:?}",
        target.provenance
    );

    // The PID is the container's init: `sleep`, in the container's cgroup.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", target.pid))?;
    ensure!(
        String::from_utf8_lossy(&cmdline).starts_with("sleep\0"),
        "pid {} runs {:?}",
        target.pid,
        String::from_utf8_lossy(&cmdline)
    );
    ensure!(!target.cgroups.is_empty());
    for cg in &target.cgroups {
        ensure!(
            cg.path.ends_with(&target.container_id),
            "cgroup {cg:?} is not the container's"
        );
    }
    let spec_cgroup = target.cgroups_path.as_deref().context("no cgroupsPath")?;
    ensure!(
        target.cgroup_path() == Some(spec_cgroup),
        "cgroups {:?}",
        target.cgroups
    );

    // The init's parent is containerd's shim, whose mount namespace is the
    // node's, where the runtime's paths are valid.
    let shim = target.parent_pid.context("no parent pid")?;
    let shim_cmd = std::fs::read(format!("/proc/{shim}/cmdline"))?;
    ensure!(
        String::from_utf8_lossy(&shim_cmd).contains("containerd-shim-runc-v2"),
        "parent {shim} is not a containerd shim"
    );
    let node_mnt = Path::new(&env("PODRESTORE_E2E_STATE")?)
        .join("ns")
        .join(format!("{}-mnt", cluster.node));
    let runtime_mnt = target
        .runtime_mount_namespace(Path::new("/proc"))
        .context("no runtime mount namespace")?;
    ensure!(
        inode(&runtime_mnt)? == inode(&node_mnt)?,
        "{} is not the node's mount namespace",
        runtime_mnt.display()
    );

    // The root is runc's: `<bundle>/rootfs`; it holds what the container wrote.
    let bundle = target.bundle.as_deref().context("no bundle")?;
    ensure!(
        bundle.ends_with(&target.container_id),
        "bundle {}",
        bundle.display()
    );
    ensure!(
        target.rootfs == bundle.join("rootfs"),
        "rootfs {}",
        target.rootfs.display()
    );
    let rootfs = target.rootfs.to_string_lossy();
    let written = node_exec(cluster, &["cat", &format!("{rootfs}/marker")])?;
    ensure!(written.trim() == marker, "rootfs marker {written:?}");
    let through_proc =
        std::fs::read_to_string(target.root_through_proc(Path::new("/proc")).join("marker"))?;
    ensure!(through_proc.trim() == marker);

    // The emptyDir is a bind mount whose source holds the container's file.
    let data = target.bind_mount("/data").context("no /data bind mount")?;
    ensure!(
        data.source
            .ends_with("/volumes/kubernetes.io~empty-dir/data"),
        "/data source {}",
        data.source
    );
    let written = node_exec(cluster, &["cat", &format!("{}/marker", data.source)])?;
    ensure!(written.trim() == marker, "emptyDir marker {written:?}");

    // Every namespace path names the namespace the init is in, and the same
    // list follows from /proc alone.
    for ns in &target.namespaces {
        let own = target.own_namespace(Path::new("/proc"), ns.kind);
        if let Some(path) = ns.path() {
            ensure!(
                inode(path)? == inode(&own)?,
                "{} is not the init's",
                path.display()
            );
        }
    }
    let from_proc = proc_namespaces(Path::new("/proc"), target.pid, target.sandbox_pid, shim)?;
    ensure!(
        from_proc == target.namespaces,
        "from /proc: {} != containerd: {}",
        show(&from_proc),
        show(&target.namespaces)
    );
    Ok(())
}

/// What runc's rules make of a namespace list: inherit_fd keys with their fd
/// numbers, and the joined namespace types.
struct Rules {
    inherit: Vec<(String, i32)>,
    join: Vec<String>,
}

/// runc's rules over the target's list.
fn rules(target: &TargetContainer) -> Result<Rules> {
    let plan = restore_namespaces(&Host, CRIU_VERSION, &target.restore_namespaces())?;
    for (fd, path) in plan.inherit_fd.iter().zip(&plan.opened) {
        eprintln!(
            "  inherit_fd {} = fd {} ({})",
            fd.key,
            fd.fd,
            path.display()
        );
    }
    for j in &plan.join_ns {
        eprintln!("  join_ns {} {}", j.ns, j.ns_file);
    }
    Ok(Rules {
        inherit: plan
            .inherit_fd
            .iter()
            .map(|f| (f.key.clone(), f.fd))
            .collect(),
        join: plan.join_ns.iter().map(|j| j.ns.clone()).collect(),
    })
}

fn kinds(target: &TargetContainer) -> Vec<(&'static str, bool)> {
    target
        .namespaces
        .iter()
        .map(|ns| (ns.kind.oci_name(), ns.path().is_some()))
        .collect()
}

#[tokio::test]
async fn runtime_describes_an_ordinary_pod_container() -> Result<()> {
    let cluster = cluster();
    let ns = cluster.namespace("e2e-runtime")?;
    let marker = format!("plain-{}", ns.name);
    let pod = start_pod(&cluster, &ns, "plain", false, &marker).await?;
    let rt = runtime(&cluster).await?;
    let version = rt.version().await?;
    eprintln!(
        "runtime: {} {} ({})",
        version.runtime_name, version.runtime_version, version.runtime_api_version
    );

    let target = rt.find_target(&ns.name, "plain", Some("main")).await?;
    eprintln!(
        "ordinary pod, pid {}: {}",
        target.pid,
        show(&target.namespaces)
    );
    check_common(&cluster, &pod, &target, &marker)?;

    // containerd's order; shared namespaces are the sandbox's, by path.
    assert_eq!(
        kinds(&target),
        [
            ("pid", false),
            ("ipc", true),
            ("uts", true),
            ("mount", false),
            ("network", true)
        ]
    );
    let sandbox_pid = target.sandbox_pid.context("no sandbox pid")?;
    for kind in [
        NamespaceType::Ipc,
        NamespaceType::Uts,
        NamespaceType::Network,
    ] {
        let path = podrestore_agent::namespaces::path_of(&target.namespaces, kind);
        assert_eq!(
            path,
            Some(Path::new(&format!(
                "/proc/{sandbox_pid}/ns/{}",
                kind.proc_name()
            ))),
            "{kind}"
        );
    }
    // The container has a pid namespace of its own.
    let own_pid = target.own_namespace(Path::new("/proc"), NamespaceType::Pid);
    assert_ne!(
        inode(&own_pid)?,
        inode(Path::new(&format!("/proc/{sandbox_pid}/ns/pid")))?
    );

    // runc's rules: external network namespace, joined ipc and uts.
    let Rules { inherit, join } = rules(&target)?;
    assert_eq!(inherit, [("extRootNetNS".to_owned(), 4)]);
    assert_eq!(join, ["ipc", "uts"]);
    Ok(())
}

#[tokio::test]
async fn runtime_describes_a_shared_pid_namespace_pod_container() -> Result<()> {
    let cluster = cluster();
    let ns = cluster.namespace("e2e-runtime-pid")?;
    let marker = format!("shared-{}", ns.name);
    let pod = start_pod(&cluster, &ns, "shared", true, &marker).await?;
    let rt = runtime(&cluster).await?;

    let target = rt.find_target(&ns.name, "shared", None).await?;
    eprintln!(
        "shareProcessNamespace pod, pid {}: {}",
        target.pid,
        show(&target.namespaces)
    );
    check_common(&cluster, &pod, &target, &marker)?;

    assert_eq!(
        kinds(&target),
        [
            ("pid", true),
            ("ipc", true),
            ("uts", true),
            ("mount", false),
            ("network", true)
        ]
    );
    let sandbox_pid = target.sandbox_pid.context("no sandbox pid")?;
    assert_eq!(
        podrestore_agent::namespaces::path_of(&target.namespaces, NamespaceType::Pid),
        Some(Path::new(&format!("/proc/{sandbox_pid}/ns/pid")))
    );

    // runc's rules: external pid and network namespaces, in the list's order.
    let Rules { inherit, join } = rules(&target)?;
    assert_eq!(
        inherit,
        [
            ("extRootPidNS".to_owned(), 4),
            ("extRootNetNS".to_owned(), 5)
        ]
    );
    assert_eq!(join, ["ipc", "uts"]);
    Ok(())
}

#[tokio::test]
async fn runtime_lookup_names_what_is_missing() -> Result<()> {
    let cluster = cluster();
    let ns = cluster.namespace("e2e-runtime-missing")?;
    let pod = start_pod(&cluster, &ns, "only", false, "x").await?;
    let rt = runtime(&cluster).await?;

    let err = rt.find_target(&ns.name, "absent", None).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("pod {}/absent has no ready sandbox on this node", ns.name)
    );
    let err = rt
        .find_target(&ns.name, "only", Some("sidecar"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            r#"pod {}/only has no running container "sidecar" (running: ["main"])"#,
            ns.name
        )
    );
    assert!(pod.metadata.uid.is_some());
    Ok(())
}
