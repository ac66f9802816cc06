//! `podrestore-agent plan`: the restore request as JSON, and runc's errors with
//! exit status 1. The version-less run asks the real CRIU (needs root and CRIU).

#![allow(clippy::unwrap_used)]

mod common;

use std::process::{Command, Output};

use serde_json::{Value, json};

fn plan(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podrestore-agent"))
        .arg("plan")
        .args(args)
        .env_remove("PODRESTORE_CRIU_VERSION")
        .output()
        .unwrap()
}

fn plan_json(args: &[&str]) -> Value {
    let out = plan(args);
    assert!(
        out.status.success(),
        "plan {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs `plan` expecting runc's error `message`, alone on stderr, status 1.
fn plan_error(args: &[&str], message: &str) {
    let out = plan(args);
    assert_eq!(out.status.code(), Some(1), "plan {args:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), format!("{message}\n"));
    assert!(out.stdout.is_empty());
}

#[test]
fn prints_the_restore_request() {
    let got = plan_json(&[
        "--criu-version",
        "40101",
        "--ns",
        "network=/proc/self/ns/net",
        "--ns",
        "pid",
        "--ns",
        "ipc=/proc/9/ns/ipc",
        "--manage-cgroups-mode",
        "soft",
    ]);
    let want = json!({
        "auto_dedup": false,
        "config_file": "/etc/criu/runc.conf",
        "empty_ns": 0x4000_0000,
        "evasive_devices": true,
        "ext_unix_sk": false,
        "file_locks": false,
        "inherit_fd": [{"key": "extRootNetNS", "fd": 4}],
        "join_ns": [{"ns": "ipc", "ns_file": "/proc/9/ns/ipc"}],
        "lazy_pages": false,
        "log_file": "restore.log",
        "log_level": 4,
        "manage_cgroups": true,
        "manage_cgroups_mode": "SOFT",
        // Beyond runc: without --tcp-established the agent asks for no lock.
        "network_lock": "SKIP",
        "notify_scripts": true,
        "orphan_pts_master": true,
        "rst_sibling": true,
        "shell_job": false,
        "tcp_established": false
    });
    assert_eq!(got, want);
}

#[test]
fn namespace_fds_then_stdio_pipes() {
    let dir = tempfile::tempdir().unwrap();
    let descriptors = dir.path().join("descriptors.json");
    std::fs::write(&descriptors, r#"["/dev/null","pipe:[111]","pipe:[222]"]"#).unwrap();
    let got = plan_json(&[
        "--criu-version",
        "40201",
        "--ns",
        "pid=/proc/self/ns/pid",
        "--ns",
        "network=/proc/self/ns/net",
        "--ns",
        "uts=/proc/self/ns/uts",
        "--ns",
        "mount",
        "--ns",
        "time=/proc/self/ns/time",
        "--descriptors",
        descriptors.to_str().unwrap(),
        "--criu-config",
        "",
        "--network-lock",
        "skip",
        "--root",
        "/run/x/criu-root",
        "--tcp-established",
    ]);
    assert_eq!(
        got["inherit_fd"],
        json!([
            {"key": "extRootPidNS", "fd": 4},
            {"key": "extRootNetNS", "fd": 5},
            {"key": "pipe:[111]", "fd": 1},
            {"key": "pipe:[222]", "fd": 2}
        ])
    );
    assert_eq!(
        got["join_ns"],
        json!([
            {"ns": "uts", "ns_file": "/proc/self/ns/uts"},
            {"ns": "time", "ns_file": "/proc/self/ns/time"}
        ])
    );
    assert_eq!(got["network_lock"], json!("SKIP"));
    assert_eq!(got["manage_cgroups_mode"], json!("DEFAULT"));
    assert_eq!(got["root"], json!("/run/x/criu-root"));
    assert_eq!(got["tcp_established"], json!(true));
    assert!(got.get("config_file").is_none(), "{got}");
    assert!(got.get("images_dir_fd").is_none(), "{got}");
}

#[test]
fn rule_errors_are_runc_texts() {
    let cases: &[(&[&str], &str)] = &[
        (
            &[
                "--criu-version",
                "40201",
                "--ns",
                "network=/run/netns/podrestore-missing",
            ],
            "Requested network namespace /run/netns/podrestore-missing does not exist",
        ),
        (
            &[
                "--criu-version",
                "40201",
                "--ns",
                "pid=/proc/999999999/ns/pid",
            ],
            "Requested network namespace /proc/999999999/ns/pid does not exist",
        ),
        (
            &["--criu-version", "31099", "--ns", "network"],
            "criu lacks support for external net namespace during the restoration process (old criu version?)",
        ),
        (
            &["--criu-version", "31400", "--ns", "network", "--ns", "pid"],
            "criu lacks support for external pid namespace during the restoration process (old criu version?)",
        ),
        (
            &[
                "--criu-version",
                "40201",
                "--ns",
                "cgroup=/proc/self/ns/cgroup",
            ],
            "Do not know how to handle namespace NEWCGROUP",
        ),
        (
            &[
                "--criu-version",
                "40201",
                "--ns",
                "ipc",
                "--ns",
                "ipc=/proc/self/ns/ipc",
            ],
            r#"malformed spec file: duplicated ns {"ipc" "/proc/self/ns/ipc"}"#,
        ),
        (
            &["--criu-version", "40201", "--ns", "net=/proc/self/ns/net"],
            r#"namespace {"net" "/proc/self/ns/net"} does not exist"#,
        ),
        (
            &["--criu-version", "40201", "--manage-cgroups-mode", "hard"],
            "invalid manage-cgroups-mode value",
        ),
        (
            &["--criu-version", "29900"],
            "CRIU version 29900 must be 30000 or higher",
        ),
        (
            &["--criu-version", "31500", "--lsm-profile", "apparmor:x"],
            "--lsm-profile requires at least CRIU 3.16",
        ),
    ];
    for (args, message) in cases {
        plan_error(args, message);
    }
}

#[test]
fn asks_the_installed_criu_for_its_version() {
    common::require_root();
    let criu = common::criu_binary();
    let out = Command::new(env!("CARGO_BIN_EXE_podrestore-agent"))
        .args(["plan", "--criu"])
        .arg(&criu)
        .args(["--ns", "pid", "--ns", "network=/proc/self/ns/net"])
        .env_remove("PODRESTORE_CRIU_VERSION")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(got["inherit_fd"], json!([{"key": "extRootNetNS", "fd": 4}]));

    // A CRIU that cannot run is an error, not a guess.
    let out = plan(&["--criu", "/nonexistent/criu", "--ns", "pid"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with("cannot start /nonexistent/criu: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
