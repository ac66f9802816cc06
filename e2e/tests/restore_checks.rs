//! What a restore into a pod must guarantee beyond "the process runs again",
//! checked on the local cluster with the operator and the agent placed as on
//! a real node (the agent in the node's mount namespace, see
//! `podrestore_e2e::install`):
//!
//! - a restored server's listening socket answers on the target pod's IP, and
//!   the restored process is charged to the target container's cgroups;
//! - a checkpoint whose bind mounts the target lacks is refused, with the
//!   missing destinations listed, and nothing is restored;
//! - an archive whose writable layer tries to leave the container's root
//!   (`..`, an absolute path, a symlink pointing out) is refused and changes
//!   nothing outside that root.

use std::{
    io::Read,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use podrestore_crds::condition::{kind, reason};
use podrestore_e2e::{
    Cluster,
    install::{AgentPlace, Installation, condition, install, podrestore, podrestores},
    wait_until,
};
use serde_json::{Value, json};

const POD_START: Duration = Duration::from_secs(120);
const RESTORE: Duration = Duration::from_secs(120);

/// A container that only waits.
const IDLE: &str = "exec sleep 3600";
/// The server's port.
const PORT: &str = "8080";
/// A server whose state lives in the shell's memory: each connection gets
/// `answer <n>`, and `n` goes up by one per connection. Between connections
/// the shell waits for `nc`, which holds the listening socket.
const SERVER: &str = "i=0; while true; do i=$((i+1)); echo \"answer $i\" > /tmp/reply; nc -l -p 8080 -e cat /tmp/reply; done";
/// What `ps` shows of the server's listener.
const LISTENER_MARK: &str = "nc -l -p 8080";

fn cluster() -> Cluster {
    match Cluster::from_env() {
        Ok(c) => c,
        Err(e) => panic!("no local cluster: {e:#}"),
    }
}

/// Starts a busybox pod `name` on the cluster's node with one container
/// `main` running `script`, with an emptyDir volume at `/data` when `data`,
/// and waits until it runs; returns the container's ID (`containerd://...`)
/// and the pod's IP.
async fn start_pod(
    cluster: &Cluster,
    pods: &Api<Pod>,
    name: &str,
    script: &str,
    data: bool,
) -> Result<(String, String)> {
    let mut container = json!({
        "name": "main",
        "image": cluster.busybox_image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", script],
    });
    let mut spec = json!({
        "terminationGracePeriodSeconds": 1,
        "nodeName": cluster.node,
        "containers": [],
    });
    if data {
        container["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
        spec["volumes"] = json!([{"name": "data", "emptyDir": {}}]);
    }
    spec["containers"] = json!([container]);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec}))?;
    pods.create(&PostParams::default(), &pod).await?;
    wait_until(&format!("pod {name} running"), POD_START, || async {
        let pod = pods.get(name).await?;
        let status = pod.status.unwrap_or_default();
        if status.phase.as_deref() != Some("Running") {
            return Ok(None);
        }
        let id = status
            .container_statuses
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.name == "main")
            .and_then(|c| c.container_id);
        Ok(id.zip(status.pod_ip))
    })
    .await
}

/// Checkpoints container `main` of `pod` through the kubelet's API (through
/// the API server's node proxy); returns the archive's path on the node.
async fn checkpoint(client: &kube::Client, node: &str, ns: &str, pod: &str) -> Result<Archive> {
    let path = format!("/api/v1/nodes/{node}/proxy/checkpoint/{ns}/{pod}/main?timeout=60");
    let request = http::Request::post(path).body(Vec::new())?;
    let reply: Value = client
        .request(request)
        .await
        .context("kubelet checkpoint API")?;
    let archive = reply["items"][0]
        .as_str()
        .with_context(|| format!("no archive in the kubelet's reply {reply}"))?;
    Ok(Archive(PathBuf::from(archive)))
}

/// A checkpoint archive, removed when the scenario ends.
struct Archive(PathBuf);

impl Drop for Archive {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Runs `command` in container `main` of `pod` and returns its output.
fn exec(cluster: &Cluster, ns: &str, pod: &str, command: &[&str]) -> Result<String> {
    let mut args = vec!["exec", "-n", ns, pod, "-c", "main", "--"];
    args.extend_from_slice(command);
    cluster.kubectl(&args)
}

/// The lines of `ps` in `pod` other than `ps` itself and the container's
/// `sleep`.
fn foreign_processes(cluster: &Cluster, ns: &str, pod: &str) -> Result<Vec<String>> {
    let ps = exec(cluster, ns, pod, &["ps", "-o", "pid,args"])?;
    Ok(ps
        .lines()
        .skip(1)
        .filter(|l| !l.ends_with(" ps -o pid,args") && !l.ends_with(" sleep 3600"))
        .map(str::to_owned)
        .collect())
}

/// What the server at `ip` answers a connection from pod `client`.
fn ask(cluster: &Cluster, ns: &str, client: &str, ip: &str) -> Result<String> {
    let out = exec(cluster, ns, client, &["timeout", "5", "nc", ip, PORT])?;
    Ok(out.trim().to_owned())
}

/// Creates PodRestore `name` restoring `archive` into container `main` of
/// `target` with `options`.
async fn create_restore(
    client: &kube::Client,
    node: &str,
    ns: &str,
    name: &str,
    (archive, target): (&Path, &str),
    options: Value,
) -> Result<()> {
    let spec = json!({
        "checkpoint": {"archive": {"nodeName": node, "path": archive.display().to_string()}},
        "target": {"podName": target, "container": "main"},
        "options": options,
    });
    podrestores(client, ns)
        .create(&PostParams::default(), &podrestore(ns, name, spec)?)
        .await?;
    Ok(())
}

/// Waits until PodRestore `name` failed; returns the Restored condition's
/// message and the status.
async fn refused(
    setup: &Installation,
    client: &kube::Client,
    name: &str,
) -> Result<(String, Value)> {
    let api = podrestores(client, &setup.ns.name);
    let message = condition(
        &api,
        name,
        (kind::RESTORED, "False", reason::RESTORE_FAILED),
        RESTORE,
        || setup.logs(),
    )
    .await?;
    Ok((message, api.get(name).await?.data["status"].clone()))
}

#[tokio::test]
async fn restored_server_answers_on_the_target_pod_ip() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = install(&cluster, &client, "chk-server", AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let (_, source_ip) = start_pod(&cluster, &pods, "server", SERVER, false).await?;
    let (target_id, target_ip) = start_pod(&cluster, &pods, "target", IDLE, false).await?;
    start_pod(&cluster, &pods, "client", IDLE, false).await?;

    // One connection before the checkpoint: the server's count moves to 2.
    let first = wait_until("the server in pod A to answer", POD_START, || async {
        Ok(ask(&cluster, &ns, "client", &source_ip).ok())
    })
    .await?;
    assert_eq!(first, "answer 1");
    let archive = checkpoint(&client, &cluster.node, &ns, "server").await?;

    create_restore(
        &client,
        &cluster.node,
        &ns,
        "server",
        (&archive.0, "target"),
        json!({"networkLock": "Skip"}),
    )
    .await?;
    let api = podrestores(&client, &ns);
    condition(
        &api,
        "server",
        (kind::RESTORED, "True", reason::RESTORE_SUCCEEDED),
        RESTORE,
        || setup.logs(),
    )
    .await?;
    let status = api.get("server").await?.data["status"].clone();
    let pid = status["restoredPID"]
        .as_i64()
        .with_context(|| format!("no restoredPID in {status}"))?;

    // The listening socket lives in pod B's network namespace now: B's IP
    // answers, and with the checkpointed count.
    let answer = ask(&cluster, &ns, "client", &target_ip).with_context(|| setup.logs())?;
    assert_eq!(answer, "answer 2", "pod B ({target_ip}) answered");
    let again = ask(&cluster, &ns, "client", &target_ip)?;
    assert_eq!(again, "answer 3", "pod B ({target_ip}) answered");
    // Pod B shows the restored tree: the server's shell and its listening
    // nc (besides the restore shim, their parent).
    let seen = foreign_processes(&cluster, &ns, "target")?;
    let args = |l: &String| {
        l.trim_start()
            .split_once(' ')
            .map(|(_, args)| args.to_owned())
            .unwrap_or_default()
    };
    let shells = seen
        .iter()
        .filter(|l| args(l) == format!("/bin/sh -c {SERVER}"));
    let listeners = seen.iter().filter(|l| args(l).starts_with(LISTENER_MARK));
    assert_eq!(
        (shells.count(), listeners.count()),
        (1, 1),
        "ps in pod B: {seen:?}"
    );

    // Charged to pod B's container: its cgroup in every hierarchy, memory
    // among them.
    let id = target_id
        .split_once("://")
        .map_or(target_id.as_str(), |(_, id)| id);
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?;
    assert!(
        cgroups.lines().any(|l| l.contains(":memory:")),
        "no memory cgroup for {pid}: {cgroups}"
    );
    for line in cgroups.lines() {
        assert!(line.ends_with(id), "cgroup of {pid}: {line} (target {id})");
    }
    eprintln!("pod B {target_ip} answered {answer:?} then {again:?}; restored PID {pid}");
    Ok(())
}

#[tokio::test]
async fn checkpoint_with_a_bind_mount_the_target_lacks_is_refused() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = install(&cluster, &client, "chk-mounts", AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    start_pod(
        &cluster,
        &pods,
        "holder",
        "echo kept > /data/file; exec sleep 3600",
        true,
    )
    .await?;
    start_pod(&cluster, &pods, "target", IDLE, false).await?;
    let archive = checkpoint(&client, &cluster.node, &ns, "holder").await?;

    create_restore(
        &client,
        &cluster.node,
        &ns,
        "mounts",
        (&archive.0, "target"),
        json!({"networkLock": "Skip"}),
    )
    .await?;
    let (message, status) = refused(&setup, &client, "mounts").await?;
    // Only /data is missing: the runtime's own mounts (/etc/hosts, ...) are
    // there in both pods.
    assert!(
        message.contains("no mount at /data,"),
        "Restored message: {message}"
    );
    assert!(status["restoredPID"].is_null(), "status: {status}");
    let foreign = foreign_processes(&cluster, &ns, "target")?;
    assert!(foreign.is_empty(), "ps in pod B: {foreign:?}");
    eprintln!("refused: {message}");
    Ok(())
}

/// Copies the real archive `from` to `to`, its `rootfs-diff.tar` replaced by
/// `layer`.
fn with_layer(from: &Path, to: &Path, layer: &[u8]) -> Result<()> {
    let mut input = tar::Archive::new(std::fs::File::open(from)?);
    let mut output = tar::Builder::new(std::fs::File::create(to)?);
    for entry in input.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.into_owned();
        let mut header = entry.header().clone();
        let name = path.to_string_lossy();
        if name.trim_start_matches("./") == "rootfs-diff.tar" {
            header.set_size(layer.len() as u64);
            header.set_cksum();
            output.append(&header, layer)?;
        } else {
            let mut data = Vec::new();
            entry.read_to_end(&mut data)?;
            output.append(&header, data.as_slice())?;
        }
    }
    output.finish()?;
    Ok(())
}

/// One tar entry with a raw name and link name, written as they are (the tar
/// crate refuses to write `..` and absolute names through its path setters);
/// names longer than a header holds go first as GNU long-name entries.
fn raw_entry(
    layer: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) -> Result<()> {
    let long = |layer: &mut tar::Builder<Vec<u8>>, kind: tar::EntryType, value: &str| {
        let mut data = value.as_bytes().to_vec();
        data.push(0);
        let mut header = tar::Header::new_gnu();
        let marker = b"././@LongLink";
        header.as_old_mut().name[..marker.len()].copy_from_slice(marker);
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        layer.append(&header, data.as_slice())
    };
    let mut header = tar::Header::new_gnu();
    let bytes = name.as_bytes();
    if bytes.len() > 100 {
        long(layer, tar::EntryType::GNULongName, name)?;
    }
    let keep = bytes.len().min(100);
    header.as_old_mut().name[..keep].copy_from_slice(&bytes[..keep]);
    if let Some(link) = link {
        let bytes = link.as_bytes();
        if bytes.len() > 100 {
            long(layer, tar::EntryType::GNULongLink, link)?;
        }
        let keep = bytes.len().min(100);
        header.as_old_mut().linkname[..keep].copy_from_slice(&bytes[..keep]);
    }
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_cksum();
    layer.append(&header, data)?;
    Ok(())
}

#[tokio::test]
async fn archive_escaping_the_root_changes_nothing_outside() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let setup = install(&cluster, &client, "chk-escape", AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    start_pod(&cluster, &pods, "source", IDLE, false).await?;
    start_pod(&cluster, &pods, "target", IDLE, false).await?;
    let real = checkpoint(&client, &cluster.node, &ns, "source").await?;

    // A file outside every container's root, in a directory the agent sees
    // at the same path (its own state lives next to it).
    let outside = tempfile::tempdir_in(setup.dir.path())?;
    let sentinel = outside.path().join("sentinel");
    std::fs::write(&sentinel, "untouched\n")?;
    let before = std::fs::metadata(&sentinel)?.modified()?;
    let dir = outside
        .path()
        .to_str()
        .context("path is not UTF-8")?
        .to_owned();
    let up = "../".repeat(32);
    let relative = dir.trim_start_matches('/');

    type Case<'a> = (
        &'a str,
        Vec<(String, tar::EntryType, Option<String>, &'a [u8])>,
    );
    let regular = tar::EntryType::Regular;
    let cases: Vec<Case> = vec![
        (
            "dotdot",
            vec![(
                format!("{up}{relative}/sentinel"),
                regular,
                None,
                b"escaped\n",
            )],
        ),
        (
            "absolute",
            vec![(format!("{dir}/sentinel"), regular, None, b"escaped\n")],
        ),
        (
            "symlink",
            vec![
                (
                    "out".into(),
                    tar::EntryType::Symlink,
                    Some(dir.clone()),
                    b"",
                ),
                ("out/sentinel".into(), regular, None, b"escaped\n"),
            ],
        ),
        (
            "hardlink",
            vec![
                (
                    "stolen".into(),
                    tar::EntryType::Link,
                    Some(format!("{up}{relative}/sentinel")),
                    b"",
                ),
                ("stolen".into(), regular, None, b"escaped\n"),
            ],
        ),
    ];
    let mut archives = Vec::new();
    for (name, entries) in cases {
        let mut layer = tar::Builder::new(Vec::new());
        for (path, kind, link, data) in entries {
            raw_entry(&mut layer, &path, kind, link.as_deref(), data)?;
        }
        let layer = layer.into_inner()?;
        let crafted = Archive(setup.checkpoints.join(format!("escape-{name}-{ns}.tar")));
        with_layer(&real.0, &crafted.0, &layer)?;
        create_restore(
            &client,
            &cluster.node,
            &ns,
            &format!("escape-{name}"),
            (&crafted.0, "target"),
            json!({"networkLock": "Skip"}),
        )
        .await?;
        archives.push((name, crafted));
    }

    for (name, _) in &archives {
        let (message, status) = refused(&setup, &client, &format!("escape-{name}")).await?;
        assert!(status["restoredPID"].is_null(), "{name}: status {status}");
        eprintln!("{name}: refused: {message}");
        let text = std::fs::read_to_string(&sentinel)?;
        assert_eq!(text, "untouched\n", "{name}: the sentinel changed");
    }
    assert_eq!(std::fs::metadata(&sentinel)?.modified()?, before);
    let names: Vec<_> = std::fs::read_dir(outside.path())?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()?;
    assert_eq!(names, vec![std::ffi::OsString::from("sentinel")]);
    let foreign = foreign_processes(&cluster, &ns, "target")?;
    assert!(foreign.is_empty(), "ps in pod B: {foreign:?}");
    Ok(())
}
