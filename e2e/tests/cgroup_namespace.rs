//! A restore into a target whose runtime config gives the container's cgroup
//! namespace a path is refused with runc's message (`Do not know how to
//! handle namespace NEWCGROUP`), and nothing is left behind: no process, shim,
//! mount, temporary file or firewall rule, and not one file of the
//! checkpoint's writable layer in the target's root file system.
//!
//! Neither the kubelet nor containerd ever give a cgroup namespace a path, so
//! the scenario changes the target container's spec in containerd's metadata
//! store with `e2e/tools/cgroupns-path` (built by `e2e/setup/e2e-tools.sh`).
//! CRI's verbose ContainerStatus, where the agent reads the spec, then
//! reports the path; the running container itself is not touched.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::PostParams};
use podrestore_crds::condition::{kind, reason};
use podrestore_e2e::{
    Cluster, cluster,
    host::run_in_netns,
    install::{
        AgentPlace, condition, delete_podrestore, install, node_containerd_socket,
        node_mount_namespace, podrestore, podrestores,
    },
    pods::{self, CHECKPOINT, MAIN, POD_START, bare_container_id, checkpoint, start_pod},
    wait_until,
};
use serde_json::{Value, json};

const RESTORE: Duration = Duration::from_secs(120);

/// runc's refusal, as the operator reports the agent's reason and message.
const REFUSAL: &str = "Unsupported: Do not know how to handle namespace NEWCGROUP";

/// A file both pods write at start, with different content.
const MARKER: &str = "/marker";
/// A file only the checkpointed pod writes: its writable layer carries it.
const WRITTEN_IN_A: &str = "/written-in-a";

/// A counter that also writes into its root file system.
const COUNTER: &str = "echo a > /marker; echo a > /written-in-a; i=0; while true; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done";
/// The target: its own marker, then it only waits.
const TARGET: &str = "echo b > /marker; exec sleep 3600";

/// The program `name` of `e2e/tools`, as `e2e/setup/e2e-tools.sh` links it:
/// `$PODRESTORE_E2E_TOOLS/<name>`, else below the setup cache.
fn e2e_tool(name: &str) -> Result<PathBuf> {
    let dir = match std::env::var_os("PODRESTORE_E2E_TOOLS") {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("PODRESTORE_CACHE")
            .map_or_else(|| "/var/cache/podrestore".into(), PathBuf::from)
            .join("e2e-tools/bin"),
    };
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build it with e2e/setup/e2e-tools.sh (or set PODRESTORE_E2E_TOOLS)",
            path.display()
        );
    }
    Ok(path)
}

/// Runs `command` in container `main` of `pod`.
fn exec(cluster: &Cluster, ns: &str, pod: &str, command: &[&str]) -> Result<String> {
    pods::exec(cluster, ns, (pod, MAIN), command)
}

/// The names in the archive's writable layer (`rootfs-diff.tar`, which
/// containerd writes gzip-compressed; `tar` finds that out itself).
fn layer_names(archive: &Path) -> Result<BTreeSet<String>> {
    let mut outer = tar::Archive::new(std::fs::File::open(archive)?);
    for entry in outer.entries()? {
        let mut entry = entry?;
        if entry.path()?.to_string_lossy().trim_start_matches("./") != "rootfs-diff.tar" {
            continue;
        }
        let mut layer = tempfile::NamedTempFile::new()?;
        std::io::copy(&mut entry, &mut layer)?;
        let out = Command::new("tar").arg("-tf").arg(layer.path()).output()?;
        if !out.status.success() {
            bail!(
                "tar -tf on the layer of {}: {}",
                archive.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        return Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| format!("/{}", l.trim_start_matches("./")))
            .collect());
    }
    bail!("{} has no rootfs-diff.tar", archive.display())
}

/// Runs `program args` inside the node's mount namespace (where the node's
/// containerd and the agent live) and returns its standard output.
fn in_node(node: &str, program: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("nsenter")
        .arg(format!("--mount={}", node_mount_namespace(node)?.display()))
        .arg("--")
        .arg(program)
        .args(args)
        .output()
        .with_context(|| format!("run {} in node {node}", program.display()))?;
    if !out.status.success() {
        bail!(
            "{} {} in node {node} failed ({}): {}",
            program.display(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The mounts of the node's mount namespace, one `mountinfo` line each.
fn node_mounts(node: &str) -> Result<BTreeSet<String>> {
    let text = in_node(node, Path::new("cat"), &["/proc/self/mountinfo"])?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// The firewall of the network namespace `netns`: `iptables-save`,
/// `ip6tables-save` and `nft list ruleset`, without comments (they carry the
/// time) and chain counters (they move with traffic).
fn firewall(netns: &Path) -> Result<String> {
    let mut all = String::new();
    for command in [
        &["iptables-save"][..],
        &["ip6tables-save"],
        &["nft", "list", "ruleset"],
    ] {
        let out = run_in_netns(netns, command)?;
        all.push_str(&format!("## {}\n", command.join(" ")));
        for line in out.lines() {
            if line.starts_with('#') {
                continue;
            }
            let line = match line.rsplit_once(" [") {
                Some((chain, counters)) if line.starts_with(':') && counters.ends_with(']') => {
                    chain
                }
                _ => line,
            };
            all.push_str(line);
            all.push('\n');
        }
    }
    Ok(all)
}

/// Host processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.parse::<u32>().is_ok())
        })
        .filter_map(|e| {
            let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            cmdline
                .contains(needle)
                .then(|| format!("{}: {}", e.file_name().to_string_lossy(), cmdline.trim()))
        })
        .collect()
}

/// Every path below `dir` (relative), directories included.
fn tree(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            out.push(path.strip_prefix(dir)?.display().to_string());
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// What the scenario compares before and after the refused restore.
#[derive(Debug, PartialEq, Eq)]
struct TargetState {
    /// `ps` in the target pod.
    ps: Vec<String>,
    /// The target's marker file.
    marker: String,
    /// The names in the target's `/`.
    root: String,
    /// The firewall of the target's network namespace.
    firewall: String,
}

fn target_state(cluster: &Cluster, ns: &str, netns: &Path) -> Result<TargetState> {
    let ps = exec(cluster, ns, "target", &["ps", "-o", "pid,args"])?
        .lines()
        .skip(1)
        .filter(|l| !l.ends_with(" ps -o pid,args"))
        .map(str::to_owned)
        .collect();
    Ok(TargetState {
        ps,
        marker: exec(cluster, ns, "target", &["cat", MARKER])?,
        root: exec(cluster, ns, "target", &["ls", "-a", "/"])?,
        firewall: firewall(netns)?,
    })
}

#[tokio::test]
async fn restore_into_a_target_with_a_cgroup_namespace_path_is_refused() -> Result<()> {
    let cluster = cluster();
    let client = cluster.client().await?;
    let tool = e2e_tool("cgroupns-path")?;
    let setup = install(&cluster, &client, "cgns", AgentPlace::Node).await?;
    let ns = setup.ns.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    start_pod(&cluster, &pods, "counter", COUNTER).await?;
    let target = start_pod(&cluster, &pods, "target", TARGET).await?;
    let target_id = bare_container_id(target.container_id(MAIN)?);
    wait_until("the counter to count", POD_START, || async {
        let count = exec(&cluster, &ns, "counter", &["cat", "/tmp/count"]).unwrap_or_default();
        Ok((count.trim().parse::<u32>().unwrap_or(0) >= 2).then_some(()))
    })
    .await?;
    let archive = checkpoint(&client, &cluster.node, &ns, ("counter", MAIN), CHECKPOINT).await?;
    // The layer would overwrite the target's marker and add a file.
    let layer = layer_names(&archive.0)?;
    for path in [MARKER, WRITTEN_IN_A] {
        assert!(
            layer.contains(path),
            "{path} is not in the layer: {layer:?}"
        );
    }

    // The target's spec now carries its own cgroup namespace as a path, and
    // CRI reports it (the tool checks that before it answers).
    let socket = node_containerd_socket(&cluster.node)?;
    let socket = socket.to_str().context("socket path is not UTF-8")?;
    let changed: Value = serde_json::from_str(&in_node(
        &cluster.node,
        &tool,
        &["-address", socket, target_id],
    )?)?;
    let path = changed["path"]
        .as_str()
        .context("no path in the tool's answer")?;
    let pid: u32 = path
        .strip_prefix("/proc/")
        .and_then(|p| p.strip_suffix("/ns/cgroup"))
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("not a namespace path of a PID: {path}"))?;
    eprintln!(
        "target {target_id} (PID {pid}): namespaces now {}",
        changed["namespaces"]
    );
    let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));

    let before = target_state(&cluster, &ns, &netns)?;
    assert_eq!(before.marker.trim(), "b");
    assert!(
        before.ps.iter().all(|l| l.ends_with(" sleep 3600")),
        "{before:?}"
    );
    let mounts_before = node_mounts(&cluster.node)?;

    let spec = json!({
        "checkpoint": {"archive": {"nodeName": cluster.node, "path": archive.0.display().to_string()}},
        "target": {"podName": "target", "container": "main"},
        "options": {"networkLock": "Iptables"},
    });
    let api = podrestores(&client, &ns);
    let created = api
        .create(&PostParams::default(), &podrestore(&ns, "cgroupns", spec)?)
        .await?;
    let uid = created
        .metadata
        .uid
        .clone()
        .context("the PodRestore has no UID")?;
    let message = condition(
        &api,
        "cgroupns",
        (kind::RESTORED, "False", reason::RESTORE_FAILED),
        RESTORE,
        || setup.logs(),
    )
    .await?;
    assert_eq!(message, REFUSAL, "{}", setup.logs());
    let status = api.get("cgroupns").await?.data["status"].clone();
    assert!(status["restoredPID"].is_null(), "status: {status}");

    // The target is as it was, its root file system included: the writable
    // layer was never applied. Nothing of the restore remains either: no shim
    // or other process for it, no file in the agent's work directories, no
    // mount of its work directory or of the target's root.
    let after = target_state(&cluster, &ns, &netns)?;
    assert_eq!(after, before, "the target changed");
    let check = format!("test -e {WRITTEN_IN_A} && echo present || echo absent");
    let written = exec(&cluster, &ns, "target", &["sh", "-c", &check])?;
    assert_eq!(written.trim(), "absent", "{WRITTEN_IN_A} in the target");
    let shims = processes_mentioning(&uid);
    assert!(shims.is_empty(), "processes of restore {uid}: {shims:?}");
    let work = setup.state().join("work");
    let files: Vec<String> = tree(&work)?
        .into_iter()
        .filter(|p| !work.join(p).is_dir())
        .collect();
    assert!(files.is_empty(), "left in {}: {files:?}", work.display());
    let state = setup.state().display().to_string();
    let mounts_after = node_mounts(&cluster.node)?;
    let new_mounts: Vec<&String> = mounts_after
        .difference(&mounts_before)
        .filter(|m| m.contains(&state) || m.contains(target_id))
        .collect();
    assert!(new_mounts.is_empty(), "new mounts: {new_mounts:?}");

    // Deleting the PodRestore removes the agent's record of it.
    delete_podrestore(&api, "cgroupns", RESTORE, || setup.logs()).await?;
    assert_eq!(
        tree(&work)?,
        Vec::<String>::new(),
        "left in {}",
        work.display()
    );
    eprintln!("refused: {message}");
    Ok(())
}
