//! The swrk client against the real CRIU: VERSION, FEATURE_CHECK, and a DUMP of
//! a counter in one sandbox restored into another sandbox's namespaces with
//! runc's rules (external net/pid through inherit_fd, ipc/uts joined).
//!
//! Needs root and CRIU 4.2.1 (e2e/setup/criu.sh); fails when either is missing.

#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread::sleep;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use podrestore_agent::criu::ops::{self, DumpRequest, RestoreRequest};
use podrestore_agent::criu::options::{
    DumpOptions, RestoreOptions, RestorePlan, dump_opts, restore_plan,
};
use podrestore_agent::criu::{Criu, CriuCall, CriuError, HandlerError, Notification};
use podrestore_agent::namespaces::{Namespace, NamespaceType};
use podrestore_agent::sys::Host;
use podrestore_proto::criu as rpc;

use common::{Sandbox, counter_script, read_counter, require_root, wait_for};

fn criu() -> Criu {
    require_root();
    Criu::new(common::criu_binary())
}

fn sandbox_namespaces(sandbox: &Sandbox, kinds: &[(&str, &str)]) -> Vec<Namespace> {
    kinds
        .iter()
        .map(|(oci, proc_name)| {
            Namespace::from_oci(oci, Some(sandbox.ns_path(proc_name).to_str().unwrap())).unwrap()
        })
        .collect()
}

/// The target namespaces a pod gives a restored container: its pid, network,
/// ipc and uts namespaces.
fn pod_namespaces(sandbox: &Sandbox) -> Vec<Namespace> {
    sandbox_namespaces(
        sandbox,
        &[
            ("pid", "pid"),
            ("network", "net"),
            ("ipc", "ipc"),
            ("uts", "uts"),
        ],
    )
}

#[test]
fn version_rpc_reports_installed_criu() {
    let version = criu().version().unwrap();
    assert_eq!(version.number(), 40201, "{version:?}");
    assert_eq!(version.to_string(), "4.2.1");
}

#[test]
fn feature_check_round_trip() {
    let wanted = rpc::CriuFeatures {
        mem_track: Some(true),
        lazy_pages: Some(true),
        pidfd_store: Some(true),
    };
    let got = criu().feature_check(wanted).unwrap();
    // CRIU answers every feature it was asked about, true or false.
    assert!(got.mem_track.is_some(), "{got:?}");
    assert!(got.lazy_pages.is_some(), "{got:?}");
    assert!(got.pidfd_store.is_some(), "{got:?}");
}

/// Records notification names; fails at `fail_at` if set.
struct Recorder {
    seen: Vec<(String, i32)>,
    fail_at: Option<&'static str>,
}

impl podrestore_agent::criu::NotifyHandler for Recorder {
    fn notify(&mut self, n: Notification) -> Result<(), HandlerError> {
        self.seen.push((n.script.clone(), n.pid));
        if self.fail_at == Some(n.script.as_str()) {
            return Err(format!("refusing {}", n.script).into());
        }
        Ok(())
    }
}

/// Dumps `pid` out of `source` with runc's options (ops::dump), returning the
/// notifications seen.
fn dump(criu: &Criu, source: &Sandbox, pid: i32, images: &Path) -> Vec<(String, i32)> {
    let version = criu.version().unwrap().number();
    let options = DumpOptions {
        pid,
        ..Default::default()
    };
    // runc's externals: the source's own net and pid namespaces by inode.
    let opts = dump_opts(&Host, version, &pod_namespaces(source), &options).unwrap();
    let inode = |kind: &str| std::fs::metadata(source.ns_path(kind)).unwrap().ino();
    assert_eq!(
        opts.external,
        [
            format!("net[{}]:extRootNetNS", inode("net")),
            format!("pid[{}]:extRootPidNS", inode("pid")),
        ]
    );
    let mut recorder = Recorder {
        seen: Vec::new(),
        fail_at: None,
    };
    let request = DumpRequest {
        images_dir: images.to_owned(),
        work_dir: None,
        namespaces: pod_namespaces(source),
        options,
    };
    ops::dump(criu, version, request, &mut recorder).unwrap();
    recorder.seen
}

fn plan_into(target: &Sandbox, version: u32) -> RestorePlan<OwnedFd> {
    let plan = restore_plan(
        &Host,
        version,
        &pod_namespaces(target),
        &RestoreOptions::default(),
    )
    .unwrap();
    let keys: Vec<(&str, i32)> = plan
        .opts
        .inherit_fd
        .iter()
        .map(|i| (i.key.as_str(), i.fd))
        .collect();
    assert_eq!(keys, [("extRootPidNS", 4), ("extRootNetNS", 5)]);
    plan
}

fn restore(
    criu: &Criu,
    plan: &RestorePlan<OwnedFd>,
    images: &File,
    recorder: &mut Recorder,
) -> Result<i32, CriuError> {
    let mut opts = plan.opts.clone();
    opts.images_dir_fd = images.as_raw_fd();
    let call = CriuCall {
        opts,
        inherit: plan.files.iter().map(AsFd::as_fd).collect(),
        ..Default::default()
    };
    criu.restore(call, recorder).map(|r| r.pid)
}

/// The restored root is a child of this process (rst_sibling); reap it.
fn kill_and_reap(pid: i32) -> WaitStatus {
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    waitpid(Pid::from_raw(pid), None).unwrap()
}

#[test]
fn dump_and_restore_into_another_sandbox() {
    let criu = criu();
    let version = criu.version().unwrap().number();
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("count");
    let images_path = dir.path().join("images");

    let a = Sandbox::new();
    let b = Sandbox::new();
    let workload = a.spawn(&counter_script(&counter));
    let vpid = *common::nspids(workload.pid).last().unwrap();
    wait_for("counting", Duration::from_secs(10), || {
        (read_counter(&counter) >= 3).then_some(())
    });

    let dumped = dump(&criu, &a, workload.pid, &images_path);
    // runc's descriptors.json: the workload's stdio was /dev/null.
    let descriptors = std::fs::read_to_string(images_path.join("descriptors.json")).unwrap();
    assert_eq!(descriptors, r#"["/dev/null","/dev/null","/dev/null"]"#);
    let images = File::open(&images_path).unwrap();
    assert!(
        dumped.iter().any(|(s, _)| s == "post-dump"),
        "no post-dump notification: {dumped:?}"
    );
    let workload_pid = workload.pid;
    workload.reap();
    assert!(
        !std::path::Path::new(&format!("/proc/{workload_pid}")).exists(),
        "the dumped workload still runs"
    );
    let at_dump = read_counter(&counter);
    sleep(Duration::from_millis(300));
    assert_eq!(
        read_counter(&counter),
        at_dump,
        "counter moved after the dump"
    );

    // A restore whose post-restore handler fails is rolled back by CRIU, and
    // the target can be restored into afterwards.
    let plan = plan_into(&b, version);
    let mut refusing = Recorder {
        seen: Vec::new(),
        fail_at: Some("post-restore"),
    };
    let err = restore(&criu, &plan, &images, &mut refusing).unwrap_err();
    assert_eq!(err.inner().to_string(), "refusing post-restore");
    let (_, aborted_pid) = refusing
        .seen
        .iter()
        .find(|(s, _)| s == "post-restore")
        .unwrap()
        .clone();
    // CRIU killed what it had restored; rst_sibling made it our child.
    assert!(
        matches!(
            waitpid(Pid::from_raw(aborted_pid), None).unwrap(),
            WaitStatus::Signaled(..)
        ),
        "the aborted restore left its process"
    );
    assert_eq!(read_counter(&counter), at_dump);
    drop(plan);
    let b_pidns = b.ns_id("pid");
    wait_for(
        "the rolled-back tree to go",
        Duration::from_secs(10),
        || (common::processes_in_pidns(&b_pidns) == [b.init]).then_some(()),
    );

    // The real restore, the whole call at once.
    let mut recorder = Recorder {
        seen: Vec::new(),
        fail_at: None,
    };
    let request = RestoreRequest {
        images_dir: images_path.clone(),
        namespaces: pod_namespaces(&b),
        ..Default::default()
    };
    let pid = ops::restore(&criu, version, request, &mut recorder)
        .unwrap()
        .pid;
    let scripts: Vec<&str> = recorder.seen.iter().map(|(s, _)| s.as_str()).collect();
    assert!(scripts.contains(&"post-restore"), "{scripts:?}");
    let post_restore_pid = recorder
        .seen
        .iter()
        .find(|(s, _)| s == "post-restore")
        .unwrap()
        .1;
    assert_eq!(pid, post_restore_pid);

    // It lives in B's namespaces, with the PID it had in A's pidns.
    for kind in ["net", "pid", "ipc", "uts"] {
        assert_eq!(common::ns_id(pid, kind), b.ns_id(kind), "{kind} namespace");
    }
    assert_eq!(*common::nspids(pid).last().unwrap(), vpid);
    // It keeps counting from where it was.
    wait_for("counting after restore", Duration::from_secs(10), || {
        (read_counter(&counter) > at_dump + 2).then_some(())
    });
    // Nothing of it is left in A.
    let a_pidns = a.ns_id("pid");
    wait_for("A to hold only its init", Duration::from_secs(10), || {
        (common::processes_in_pidns(&a_pidns) == [a.init]).then_some(())
    });

    assert!(matches!(kill_and_reap(pid), WaitStatus::Signaled(..)));
}

#[test]
fn failed_restore_reports_errno_and_quotes_the_log() {
    let criu = criu();
    let version = criu.version().unwrap().number();
    let target = Sandbox::new();
    let dir = tempfile::tempdir().unwrap();
    let images = File::open(dir.path()).unwrap();
    // No images at all.
    let plan = plan_into(&target, version);
    let mut recorder = Recorder {
        seen: Vec::new(),
        fail_at: None,
    };
    let err = restore(&criu, &plan, &images, &mut recorder).unwrap_err();
    let text = err.to_string();
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("criu failed: type RESTORE errno "),
        "{text}"
    );
    assert!(
        matches!(err.inner(), CriuError::Failed { kind, .. } if kind == "RESTORE"),
        "{err:?}"
    );
    let header = format!("--- quoting {}", dir.path().join("restore.log").display());
    assert!(text.contains(&header), "{text}");
    assert!(text.contains("Error "), "{text}");
}

#[test]
fn restore_refuses_a_cgroup_namespace_path_before_running_criu() {
    require_root();
    let target = Sandbox::new();
    let mut namespaces = pod_namespaces(&target);
    namespaces.push(Namespace::new(
        NamespaceType::Cgroup,
        Some(target.ns_path("cgroup")),
    ));
    let err = restore_plan(&Host, 40201, &namespaces, &RestoreOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Do not know how to handle namespace NEWCGROUP"
    );
}

#[test]
fn listening_tcp_socket_answers_in_the_target() {
    let criu = criu();
    let version = criu.version().unwrap().number();
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("images");
    let a = Sandbox::new();
    let b = Sandbox::new();
    a.loopback_up();
    b.loopback_up();
    let server = a.spawn(&common::tcp_server_script(8080));
    let first = wait_for("the server in A", Duration::from_secs(10), || a.ask(8080));
    assert_eq!(first, "hello 1");

    dump(&criu, &a, server.pid, &images);
    server.reap();
    assert_eq!(a.ask(8080), None, "the server still answers in A");

    let request = RestoreRequest {
        images_dir: images,
        namespaces: pod_namespaces(&b),
        ..Default::default()
    };
    let mut recorder = Recorder {
        seen: Vec::new(),
        fail_at: None,
    };
    let pid = ops::restore(&criu, version, request, &mut recorder)
        .unwrap()
        .pid;
    // Same process state: the connection count goes on from A.
    assert_eq!(b.ask(8080).as_deref(), Some("hello 2"));
    assert_eq!(common::ns_id(pid, "net"), b.ns_id("net"));
    assert_eq!(a.ask(8080), None);
    assert!(matches!(kill_and_reap(pid), WaitStatus::Signaled(..)));
}
