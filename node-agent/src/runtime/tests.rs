//! The lookup against a fake CRI runtime on a unix socket, fed with the
//! verbose status containerd 2.4 gave for a real pod, and a fake `/proc`.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use podrestore_proto::cri::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};

use super::*;
use crate::namespaces::NamespaceType::{Ipc, Mount as Mnt, Network, Pid, Uts};

const SANDBOX: &str = "f01659133097e92f9ab8f56479347424be4c3c8764b06f5170747908c82e5545";
const CONTAINER: &str = "b3665d779a897a8564cf7bb1d0098f67b66c899aaeda5965a1aabca3e61d6641";
const POD_UID: &str = "e84dd63e-d437-483e-b9d0-66afa4da770d";
const PID: i32 = 18502;
const SANDBOX_PID: i32 = 18479;
const SHIM_PID: i32 = 18456;

#[derive(Default)]
struct FakeCri {
    sandboxes: Vec<cri::PodSandbox>,
    sandbox_info: HashMap<String, String>,
    containers: Vec<cri::Container>,
    container_info: HashMap<String, String>,
    container_mounts: Vec<cri::Mount>,
}

fn info_map(json: Option<&String>) -> HashMap<String, String> {
    json.map(|j| HashMap::from([(spec::INFO_KEY.to_owned(), j.clone())]))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl RuntimeService for FakeCri {
    async fn version(
        &self,
        _: Request<cri::VersionRequest>,
    ) -> Result<Response<cri::VersionResponse>, Status> {
        Ok(Response::new(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: "fake".into(),
            runtime_version: "1.0".into(),
            runtime_api_version: "v1".into(),
        }))
    }

    async fn pod_sandbox_status(
        &self,
        request: Request<cri::PodSandboxStatusRequest>,
    ) -> Result<Response<cri::PodSandboxStatusResponse>, Status> {
        let request = request.into_inner();
        let sandbox = self
            .sandboxes
            .iter()
            .find(|s| s.id == request.pod_sandbox_id)
            .ok_or_else(|| Status::not_found("no sandbox"))?;
        Ok(Response::new(cri::PodSandboxStatusResponse {
            status: Some(cri::PodSandboxStatus {
                id: sandbox.id.clone(),
                metadata: sandbox.metadata.clone(),
                network: Some(cri::PodSandboxNetworkStatus {
                    ip: "10.201.0.3".into(),
                    additional_ips: vec![],
                }),
                ..Default::default()
            }),
            info: if request.verbose {
                info_map(self.sandbox_info.get(&sandbox.id))
            } else {
                HashMap::new()
            },
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: Request<cri::ListPodSandboxRequest>,
    ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let items = self
            .sandboxes
            .iter()
            .filter(|s| filter.state.is_none_or(|v| v.state == s.state))
            .filter(|s| {
                filter
                    .label_selector
                    .iter()
                    .all(|(k, v)| s.labels.get(k) == Some(v))
            })
            .cloned()
            .collect();
        Ok(Response::new(cri::ListPodSandboxResponse { items }))
    }

    async fn list_containers(
        &self,
        request: Request<cri::ListContainersRequest>,
    ) -> Result<Response<cri::ListContainersResponse>, Status> {
        let filter = request.into_inner().filter.unwrap_or_default();
        let containers = self
            .containers
            .iter()
            .filter(|c| {
                filter.pod_sandbox_id.is_empty() || c.pod_sandbox_id == filter.pod_sandbox_id
            })
            .filter(|c| filter.state.is_none_or(|v| v.state == c.state))
            .cloned()
            .collect();
        Ok(Response::new(cri::ListContainersResponse { containers }))
    }

    async fn container_status(
        &self,
        request: Request<cri::ContainerStatusRequest>,
    ) -> Result<Response<cri::ContainerStatusResponse>, Status> {
        let request = request.into_inner();
        let container = self
            .containers
            .iter()
            .find(|c| c.id == request.container_id)
            .ok_or_else(|| Status::not_found("no container"))?;
        Ok(Response::new(cri::ContainerStatusResponse {
            status: Some(cri::ContainerStatus {
                id: container.id.clone(),
                metadata: container.metadata.clone(),
                state: container.state,
                mounts: self.container_mounts.clone(),
                ..Default::default()
            }),
            info: if request.verbose {
                info_map(self.container_info.get(&container.id))
            } else {
                HashMap::new()
            },
        }))
    }
}

fn sandbox(id: &str, namespace: &str, name: &str, ready: bool) -> cri::PodSandbox {
    cri::PodSandbox {
        id: id.into(),
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: POD_UID.into(),
            namespace: namespace.into(),
            attempt: 0,
        }),
        state: if ready {
            cri::PodSandboxState::SandboxReady
        } else {
            cri::PodSandboxState::SandboxNotready
        }
        .into(),
        labels: HashMap::from([
            (POD_NAMESPACE_LABEL.to_owned(), namespace.to_owned()),
            (POD_NAME_LABEL.to_owned(), name.to_owned()),
        ]),
        ..Default::default()
    }
}

fn container(id: &str, sandbox: &str, name: &str, running: bool) -> cri::Container {
    cri::Container {
        id: id.into(),
        pod_sandbox_id: sandbox.into(),
        metadata: Some(cri::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        state: if running {
            cri::ContainerState::ContainerRunning
        } else {
            cri::ContainerState::ContainerExited
        }
        .into(),
        ..Default::default()
    }
}

/// The pod `rt-explore/plain` as containerd described it, plus an exited
/// older sandbox and a not-ready one of another pod.
fn containerd_pod(with_info: bool) -> FakeCri {
    let mut fake = FakeCri {
        sandboxes: vec![
            sandbox("old", "rt-explore", "plain", false),
            sandbox(SANDBOX, "rt-explore", "plain", true),
            sandbox("other", "rt-explore", "other", true),
        ],
        containers: vec![
            container("exited", SANDBOX, "main", false),
            container(CONTAINER, SANDBOX, "main", true),
        ],
        container_mounts: vec![cri::Mount {
            container_path: "/data".into(),
            host_path: "/pods/x/volumes/kubernetes.io~empty-dir/data".into(),
            readonly: false,
            ..Default::default()
        }],
        ..Default::default()
    };
    if with_info {
        fake.sandbox_info.insert(
            SANDBOX.into(),
            include_str!("testdata/containerd-sandbox.json").into(),
        );
        fake.container_info.insert(
            CONTAINER.into(),
            include_str!("testdata/containerd-container.json").into(),
        );
    }
    fake
}

async fn serve(fake: FakeCri, socket: &Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(socket).unwrap();
    let service = RuntimeServiceServer::from_arc(Arc::new(fake));
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(UnixListenerStream::new(listener))
            .await
            .unwrap();
    })
}

/// A fake `/proc` for the container's init, its shim and the sandbox's pause,
/// and containerd's bundles under `<tmp>/tasks`.
struct FakeNode {
    _tmp: tempfile::TempDir,
    proc_root: PathBuf,
    cgroup_root: PathBuf,
    tasks: PathBuf,
    socket: PathBuf,
}

const CGROUP: &str = "/podrestore-e2e-a/kubepods/besteffort/pode84dd63e-d437-483e-b9d0-66afa4da770d/b3665d779a897a8564cf7bb1d0098f67b66c899aaeda5965a1aabca3e61d6641";

fn process(proc_root: &Path, pid: i32, ppid: i32, start: u64) {
    let dir = proc_root.join(pid.to_string());
    fs::create_dir_all(dir.join("ns")).unwrap();
    fs::write(dir.join("status"), format!("Name:\tx\nPPid:\t{ppid}\n")).unwrap();
    fs::write(
        dir.join("stat"),
        format!("{pid} (x) S {ppid} 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 {start} 0 0"),
    )
    .unwrap();
}

fn fake_node() -> FakeNode {
    let tmp = tempfile::tempdir().unwrap();
    let proc_root = tmp.path().join("proc");
    let tasks = tmp.path().join("tasks");
    process(&proc_root, PID, SHIM_PID, 200);
    process(&proc_root, SHIM_PID, 1, 100);
    process(&proc_root, SANDBOX_PID, SHIM_PID, 150);
    process(&proc_root, 1, 0, 1);
    fs::write(
        proc_root.join(PID.to_string()).join("cgroup"),
        format!("4:memory:{CGROUP}\n1:name=systemd:{CGROUP}\n0::{CGROUP}\n"),
    )
    .unwrap();
    for id in [SANDBOX, CONTAINER] {
        fs::create_dir_all(tasks.join(id)).unwrap();
        fs::write(tasks.join(id).join("config.json"), "{}").unwrap();
    }
    fs::write(tasks.join(CONTAINER).join("init.pid"), PID.to_string()).unwrap();
    symlink(
        tasks.join(SANDBOX),
        proc_root.join(SHIM_PID.to_string()).join("cwd"),
    )
    .unwrap();
    fs::write(
        proc_root.join(SHIM_PID.to_string()).join("cmdline"),
        "containerd-shim-runc-v2\0-namespace\0k8s.io\0",
    )
    .unwrap();
    FakeNode {
        proc_root,
        cgroup_root: tmp.path().join("cgroup"),
        tasks,
        socket: tmp.path().join("cri.sock"),
        _tmp: tmp,
    }
}

async fn runtime(node: &FakeNode) -> Runtime {
    Runtime::connect(RuntimeConfig {
        socket: node.socket.clone(),
        timeout: Duration::from_secs(5),
        proc_root: node.proc_root.clone(),
        cgroup_root: node.cgroup_root.clone(),
    })
    .await
    .unwrap()
}

fn ns(list: &[(NamespaceType, Option<&str>)]) -> Vec<Namespace> {
    list.iter().map(|(k, p)| Namespace::new(*k, *p)).collect()
}

#[tokio::test]
async fn containerd_pod_from_the_runtime_status() {
    let node = fake_node();
    let _server = serve(containerd_pod(true), &node.socket).await;
    let rt = runtime(&node).await;
    assert_eq!(rt.version().await.unwrap().runtime_name, "fake");

    let target = rt
        .find_target("rt-explore", "plain", Some("main"))
        .await
        .unwrap();
    assert_eq!(target.pod_uid, POD_UID);
    assert_eq!(target.pod_ip.as_deref(), Some("10.201.0.3"));
    assert_eq!(target.sandbox_id, SANDBOX);
    assert_eq!(target.sandbox_pid, Some(SANDBOX_PID));
    assert_eq!(target.container_id, CONTAINER);
    assert_eq!(target.container_name, "main");
    assert_eq!(target.pid, PID);
    assert_eq!(target.parent_pid, Some(SHIM_PID));
    assert_eq!(target.flavor, Flavor::Containerd);
    assert_eq!(target.bundle, Some(node.tasks.join(CONTAINER)));
    assert_eq!(target.rootfs, node.tasks.join(CONTAINER).join("rootfs"));
    assert!(!target.rootfs_readonly);
    assert_eq!(
        target.namespaces,
        ns(&[
            (Pid, None),
            (Ipc, Some("/proc/18479/ns/ipc")),
            (Uts, Some("/proc/18479/ns/uts")),
            (Mnt, None),
            (Network, Some("/proc/18479/ns/net")),
        ])
    );
    assert_eq!(target.restore_namespaces(), target.namespaces);
    assert_eq!(target.cgroups_path.as_deref(), Some(CGROUP));
    assert_eq!(target.cgroup_path(), Some(CGROUP));
    assert_eq!(target.cgroups.len(), 3);
    assert_eq!(
        target.provenance,
        Provenance {
            pid: Source::Runtime,
            rootfs: Source::Runtime,
            mounts: Source::Runtime,
            namespaces: Source::Runtime,
        }
    );
    let data = target.bind_mount("/data/").unwrap();
    assert!(data.source.ends_with("kubernetes.io~empty-dir/data"));
    assert!(
        target.bind_mount("/proc").is_none(),
        "proc is no bind mount"
    );
    assert_eq!(
        target
            .bind_mounts()
            .map(|m| m.destination.as_str())
            .collect::<Vec<_>>(),
        [
            "/data",
            "/etc/hosts",
            "/dev/termination-log",
            "/etc/hostname",
            "/etc/resolv.conf",
            "/dev/shm",
            "/var/run/secrets/kubernetes.io/serviceaccount"
        ]
    );
    assert_eq!(
        target.runtime_mount_namespace(Path::new("/proc")),
        Some(PathBuf::from("/proc/18456/ns/mnt"))
    );
    assert_eq!(
        target.own_namespace(Path::new("/proc"), Pid),
        PathBuf::from("/proc/18502/ns/pid")
    );

    // Without a name the only running container is the target.
    let only = rt.find_target("rt-explore", "plain", None).await.unwrap();
    assert_eq!(only.container_id, CONTAINER);
}

#[tokio::test]
async fn silent_runtime_falls_back_to_bundle_and_cgroup() {
    let node = fake_node();
    // The bundle's config.json is the spec containerd gave runc.
    let info: serde_json::Value =
        serde_json::from_str(include_str!("testdata/containerd-container.json")).unwrap();
    fs::write(
        node.tasks.join(CONTAINER).join("config.json"),
        serde_json::to_vec(&info["runtimeSpec"]).unwrap(),
    )
    .unwrap();
    // The init is found in the container's cgroup (cgroupfs layout, v1).
    let cg = node
        .cgroup_root
        .join("pids")
        .join(CGROUP.trim_start_matches('/'));
    fs::create_dir_all(&cg).unwrap();
    fs::write(cg.join("cgroup.procs"), format!("{PID}\n")).unwrap();
    let _server = serve(containerd_pod(false), &node.socket).await;

    let target = runtime(&node)
        .await
        .find_target("rt-explore", "plain", Some("main"))
        .await
        .unwrap();
    assert_eq!(target.pid, PID);
    assert_eq!(target.flavor, Flavor::Unknown);
    assert_eq!(target.rootfs, node.tasks.join(CONTAINER).join("rootfs"));
    assert_eq!(target.namespaces.len(), 5);
    assert_eq!(target.cgroups_path.as_deref(), Some(CGROUP));
    assert_eq!(
        target.provenance,
        Provenance {
            pid: Source::Procfs,
            rootfs: Source::Bundle,
            mounts: Source::Bundle,
            namespaces: Source::Bundle,
        }
    );
}

#[tokio::test]
async fn no_spec_at_all_reads_namespaces_from_proc() {
    let node = fake_node();
    // No bundle: the shim runs somewhere without one.
    fs::remove_file(node.tasks.join(CONTAINER).join("config.json")).unwrap();
    let cg = node
        .cgroup_root
        .join("pids")
        .join(CGROUP.trim_start_matches('/'));
    fs::create_dir_all(&cg).unwrap();
    fs::write(cg.join("cgroup.procs"), format!("{PID}\n")).unwrap();
    let sandbox_cg = cg.parent().unwrap().join(SANDBOX);
    fs::create_dir_all(&sandbox_cg).unwrap();
    fs::write(sandbox_cg.join("cgroup.procs"), format!("{SANDBOX_PID}\n")).unwrap();
    // Namespace files: hard links share an inode, as shared namespaces do.
    let ns_dir = |pid: i32| node.proc_root.join(pid.to_string()).join("ns");
    for kind in NamespaceType::ALL {
        let name = kind.proc_name();
        fs::write(ns_dir(SHIM_PID).join(name), "").unwrap();
        fs::write(ns_dir(SANDBOX_PID).join(name), "").unwrap();
        let source = match kind {
            Ipc | Uts | Network => Some(ns_dir(SANDBOX_PID).join(name)),
            NamespaceType::User | NamespaceType::Cgroup | NamespaceType::Time => {
                Some(ns_dir(SHIM_PID).join(name))
            }
            _ => None,
        };
        match source {
            Some(s) => fs::hard_link(s, ns_dir(PID).join(name)).unwrap(),
            None => fs::write(ns_dir(PID).join(name), "").unwrap(),
        }
    }
    let _server = serve(containerd_pod(false), &node.socket).await;

    let target = runtime(&node)
        .await
        .find_target("rt-explore", "plain", Some("main"))
        .await
        .unwrap();
    let sandbox_ns = |x: &str| format!("{}/{SANDBOX_PID}/ns/{x}", node.proc_root.display());
    assert_eq!(target.sandbox_pid, Some(SANDBOX_PID));
    assert_eq!(
        target.namespaces,
        vec![
            Namespace::new(Pid, None::<PathBuf>),
            Namespace::new(Ipc, Some(sandbox_ns("ipc"))),
            Namespace::new(Uts, Some(sandbox_ns("uts"))),
            Namespace::new(Mnt, None::<PathBuf>),
            Namespace::new(Network, Some(sandbox_ns("net"))),
        ]
    );
    assert_eq!(
        target.rootfs,
        node.proc_root.join(PID.to_string()).join("root")
    );
    assert_eq!(target.mounts.len(), 1);
    assert_eq!(target.mounts[0].options, ["rbind", "rw"]);
    assert_eq!(target.cgroups_path, None);
    assert_eq!(
        target.provenance,
        Provenance {
            pid: Source::Procfs,
            rootfs: Source::Procfs,
            mounts: Source::Cri,
            namespaces: Source::Procfs,
        }
    );
}

#[tokio::test]
async fn lookup_errors() {
    let node = fake_node();
    let mut fake = containerd_pod(true);
    fake.containers
        .push(container("side", SANDBOX, "sidecar", true));
    let _server = serve(fake, &node.socket).await;
    let rt = runtime(&node).await;

    let err = rt
        .find_target("rt-explore", "gone", None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pod rt-explore/gone has no ready sandbox on this node"
    );
    assert_eq!(err.code(), tonic::Code::NotFound);

    let err = rt
        .find_target("rt-explore", "plain", Some("nope"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"pod rt-explore/plain has no running container "nope" (running: ["main", "sidecar"])"#
    );

    let err = rt
        .find_target("rt-explore", "plain", None)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"pod rt-explore/plain runs several containers ["main", "sidecar"]: name the target container"#
    );
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // The sidecar has no verbose info and no cgroup: its init cannot be found.
    let err = rt
        .find_target("rt-explore", "plain", Some("sidecar"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot find the init process of container side: the runtime gives no pid and no cgroup is named after it"
    );
}

#[tokio::test]
async fn unreachable_socket() {
    let tmp = tempfile::tempdir().unwrap();
    let socket = tmp.path().join("none.sock");
    let err = Runtime::connect(RuntimeConfig {
        socket: socket.clone(),
        timeout: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with(&format!(
            "cannot connect to the container runtime at {}: ",
            socket.display()
        )),
        "{err}"
    );
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

#[test]
fn rootfs_as_runc_resolves_it() {
    let bundle = Path::new("/run/tasks/c1");
    assert_eq!(
        rootfs_path("c1", "rootfs", Some(bundle)).unwrap(),
        PathBuf::from("/run/tasks/c1/rootfs")
    );
    assert_eq!(
        rootfs_path("c1", "/var/lib/containers/storage/overlay/l/merged", None).unwrap(),
        PathBuf::from("/var/lib/containers/storage/overlay/l/merged")
    );
    assert_eq!(
        rootfs_path("c1", "rootfs", None).unwrap_err().to_string(),
        r#"the root of container c1 is "rootfs", relative to a bundle that was not found"#
    );
}

#[test]
fn destinations_compare_as_paths() {
    assert_eq!(normalise("/data/"), "/data");
    assert_eq!(normalise("//a/./b//"), "/a/b");
    assert_eq!(normalise("/"), "/");
}
