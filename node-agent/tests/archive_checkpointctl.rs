//! An archive the agent writes from real CRIU images is accepted by
//! `checkpointctl show` and `checkpointctl inspect`, and `podrestore-agent
//! inspect` reads the same process tree from it.
//!
//! Needs root, CRIU (`/usr/local/sbin/criu`, or `PODRESTORE_CRIU`) and
//! checkpointctl (`/usr/local/bin/checkpointctl`, or
//! `PODRESTORE_CHECKPOINTCTL`), which `e2e/setup/criu.sh` and
//! `e2e/setup/checkpointctl.sh` install. A missing tool fails the test.

mod archive_support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use archive_support::Scratch;
use podrestore_agent::archive::metadata::ContainerConfig;
use podrestore_agent::archive::summary::summarize_file;
use podrestore_agent::archive::writer::{CheckpointContents, write_archive_file};
use podrestore_agent::archive::{Limits, extract_checkpoint};

fn tool(env: &str, default: &str, setup: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(env).unwrap_or_else(|_| default.to_string()));
    assert!(
        path.is_file(),
        "{} not found (set {env} or run e2e/setup/{setup})",
        path.display()
    );
    path
}

/// A `sleep` that is pid 1 and session leader of its own pid namespace, so
/// CRIU can dump it on its own.
struct Sleeper {
    unshare: Child,
    pid: u32,
}

impl Sleeper {
    fn start() -> Self {
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "setsid", "sh", "-c", "exec sleep 1000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("unshare runs");
        let children = format!("/proc/{0}/task/{0}/children", unshare.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = loop {
            let listed = fs::read_to_string(&children).unwrap_or_default();
            if let Some(pid) = listed.split_whitespace().next() {
                let pid: u32 = pid.parse().expect("pid");
                // Wait for the exec, so CRIU sees sleep and not sh.
                let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                if comm.trim() == "sleep" {
                    break pid;
                }
            }
            assert!(Instant::now() < deadline, "sleeper did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Self { unshare, pid }
    }
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        // CRIU's dump ends the tree; this covers a failed dump.
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.unshare.wait();
    }
}

fn criu_version(criu: &Path) -> String {
    let out = Command::new(criu)
        .arg("--version")
        .output()
        .expect("criu --version");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .expect("criu prints its version")
        .trim()
        .to_string()
}

#[test]
fn checkpointctl_accepts_an_archive_the_agent_wrote() {
    let criu = tool("PODRESTORE_CRIU", "/usr/local/sbin/criu", "criu.sh");
    let checkpointctl = tool(
        "PODRESTORE_CHECKPOINTCTL",
        "/usr/local/bin/checkpointctl",
        "checkpointctl.sh",
    );
    let scratch = Scratch::new();
    let images = scratch.path().join("images");
    fs::create_dir(&images).expect("mkdir images");
    let log = scratch.path().join("dump.log");

    let sleeper = Sleeper::start();
    let dump = Command::new(&criu)
        .arg("dump")
        .args(["-t", &sleeper.pid.to_string()])
        .arg("-D")
        .arg(&images)
        .args(["-v4", "-o"])
        .arg(&log)
        .output()
        .expect("criu runs");
    drop(sleeper);
    assert!(
        dump.status.success(),
        "criu dump failed: {}\n{}",
        String::from_utf8_lossy(&dump.stderr),
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(images.join("pstree.img").is_file());

    let config = ContainerConfig {
        id: "4f1c0b7e2d9a4e6f8b3c5d7e9f1a2b3c".into(),
        name: "counter".into(),
        rootfs_image_name: "docker.io/library/busybox:1.36".into(),
        runtime: "runc".into(),
        created_time: Some("2025-01-02T03:04:05Z".into()),
        checkpointed_time: Some("2025-01-02T04:00:00Z".into()),
        ..ContainerConfig::default()
    };
    let spec = br#"{
        "ociVersion": "1.2.0",
        "process": {"args": ["sleep", "1000"], "cwd": "/", "env": ["PATH=/bin"]},
        "linux": {"namespaces": [{"type": "pid"}, {"type": "network", "path": "/var/run/netns/cni-x"}]},
        "annotations": {
            "io.kubernetes.cri.container-name": "counter",
            "io.kubernetes.cri.sandbox-name": "pod-a",
            "io.kubernetes.cri.sandbox-namespace": "default",
            "io.kubernetes.cri.sandbox-uid": "6d1c"
        }
    }"#;
    let archive = scratch.path().join("checkpoint.tar");
    let digest = write_archive_file(
        &CheckpointContents {
            images_dir: &images,
            config: &config,
            spec_dump: spec,
            rootfs_diff: None,
            dump_log: Some(&log),
            stats_dump: None,
            extra_files: vec![],
        },
        &archive,
    )
    .expect("writes");

    let show = Command::new(&checkpointctl)
        .arg("show")
        .arg(&archive)
        .output()
        .expect("checkpointctl runs");
    let show_out = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.status.success(),
        "checkpointctl show failed: {}{}",
        show_out,
        String::from_utf8_lossy(&show.stderr)
    );
    println!("checkpointctl show:{show_out}");
    for want in ["counter", "4f1c0b7e2d9a", "runc", "containerd", "busybox"] {
        assert!(show_out.contains(want), "{want} missing from:\n{show_out}");
    }

    let tree = Command::new(&checkpointctl)
        .arg("inspect")
        .arg(&archive)
        .arg("--ps-tree")
        .output()
        .expect("checkpointctl runs");
    let tree_out = String::from_utf8_lossy(&tree.stdout);
    assert!(
        tree.status.success() && tree_out.contains("sleep"),
        "checkpointctl inspect --ps-tree: {tree_out}{}",
        String::from_utf8_lossy(&tree.stderr)
    );

    let summary = summarize_file(&archive, &Limits::default()).expect("summarizes");
    assert_eq!(summary.archive, digest);
    assert_eq!(summary.criu_version, Some(criu_version(&criu)));
    assert_eq!(summary.processes.len(), 1);
    assert_eq!(summary.processes[0].pid, 1);
    assert_eq!(summary.processes[0].comm.as_deref(), Some("sleep"));
    assert_eq!(
        summary.inventory.as_ref().and_then(|i| i.img_version),
        Some(2)
    );
    assert!(summary.sizes.pages_bytes > 0);
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);

    let agent = Command::new(env!("CARGO_BIN_EXE_podrestore-agent"))
        .arg("inspect")
        .arg(&archive)
        .output()
        .expect("podrestore-agent runs");
    let table = String::from_utf8_lossy(&agent.stdout);
    assert!(
        agent.status.success(),
        "inspect failed: {}",
        String::from_utf8_lossy(&agent.stderr)
    );
    println!("podrestore-agent inspect:\n{table}");
    for want in [
        "Pod:              default/pod-a",
        "Engine:           containerd",
        &format!("CRIU version:     {}", criu_version(&criu)),
        &format!("SHA-256:          {}", digest.sha256),
        "Restore policy:   ok",
        "sleep",
    ] {
        assert!(table.contains(want), "{want:?} missing from:\n{table}");
    }

    let dest = scratch.path().join("extracted");
    let checkpoint = extract_checkpoint(&archive, &dest, &Limits::default()).expect("extracts");
    assert_eq!(checkpoint.extracted.digest, digest);
    for entry in fs::read_dir(&images).expect("list images") {
        let entry = entry.expect("entry");
        assert_eq!(
            fs::read(dest.join("checkpoint").join(entry.file_name())).expect("extracted"),
            fs::read(entry.path()).expect("source"),
            "{:?}",
            entry.file_name()
        );
    }
}
