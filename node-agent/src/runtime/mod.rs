//! The container runtime, seen from the node agent: the target pod's sandbox
//! and container found through CRI, with what a restore into them needs,
//! exactly as the runtime handed it to runc.
//!
//! [`Runtime::find_target`] asks the runtime's CRI socket (containerd or
//! CRI-O; the socket is configurable) for the pod's ready sandbox and its
//! running container, then reads the verbose container status ([`spec`]): the
//! init's host PID, the OCI spec's root, mounts, namespace list and cgroup.
//! Where the runtime says nothing, the same facts come from elsewhere, in this
//! order:
//! - the PID from the container's cgroup ([`procfs::find_init_by_cgroup`]);
//! - the spec from the OCI bundle's `config.json`, found through the shim or
//!   conmon that started the init ([`procfs::find_bundle`]);
//! - without any spec: the namespace list from the inodes of
//!   `/proc/<pid>/ns/*` compared with the sandbox process's and the node's
//!   ([`namespaces::from_inodes`]), the bind mounts from CRI's mount list, and
//!   the root as `/proc/<pid>/root`.
//!
//! [`TargetContainer::provenance`] says where each fact came from.
//!
//! # The namespace list and runc's rules
//!
//! The input to runc's rules ([`crate::namespaces::restore_namespaces`]) is
//! the list the runtime gave runc, in its order, unchanged
//! ([`TargetContainer::restore_namespaces`]). runc's input is the restored
//! container's config, and a container the runtime would start in this pod
//! gets exactly this list. For an ordinary pod that yields an external
//! network namespace (the sandbox's, by path) and joined ipc and uts
//! namespaces; with `shareProcessNamespace: true` the pid entry carries the
//! sandbox's path too and becomes an external pid namespace.
//!
//! Entries without a path (containerd: `pid` of an ordinary pod, `mount`)
//! mean "a new namespace" to runc and stay path-less. Filling in the target's
//! own `/proc/<pid>/ns/<x>` would change what the rules produce: a pid path
//! turns into an external pid namespace (`extRootPidNS`), which only a
//! checkpoint dumped with an external pid namespace can use, and CRIU would
//! recreate the checkpoint's PIDs, PID 1 included, inside the target's pid
//! namespace; a mount path turns into `join_ns mnt`, placing the restored tree
//! in the target container's mount namespace instead of the one CRIU rebuilds
//! from the images over the target's root file system. Where the new pid
//! namespace is created (nested under the target's, so the restored processes
//! show in the pod) is decided by the namespace CRIU itself runs in, not by
//! this list; [`TargetContainer::own_namespaces`] gives the target's actual
//! namespace files for that.
//!
//! # Paths and mount namespaces
//!
//! The rootfs, the bundle and mount sources are paths in the runtime's mount
//! namespace. An agent in the host's mount namespace (a DaemonSet with the
//! host's paths mounted) sees them as they are; one elsewhere must enter the
//! runtime's mount namespace first ([`TargetContainer::runtime_mount_namespace`]).
//! Namespace paths under `/proc` are valid from any mount namespace that
//! shows the host's PIDs.

pub mod client;
pub mod namespaces;
pub mod procfs;
pub mod spec;

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use podrestore_proto::cri;

use crate::namespaces::{Namespace, NamespaceError, NamespaceType};

pub use client::{CONTAINERD_SOCKET, CRIO_SOCKET, CriClient, socket_path};
pub use procfs::CgroupEntry;
pub use spec::{Flavor, InfoError, Mount};

/// The label the kubelet puts on every sandbox: the pod's name.
pub const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
/// The label the kubelet puts on every sandbox: the pod's namespace.
pub const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";

/// Errors of the runtime lookup.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The configured endpoint is not a unix socket path.
    #[error("runtime endpoint {0:?} is not a unix socket path (unix:///path or /path)")]
    BadEndpoint(String),
    /// The socket does not answer.
    #[error("cannot connect to the container runtime at {}: {source}", socket.display())]
    Connect {
        /// The socket.
        socket: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// A CRI call failed.
    #[error("the container runtime's {call} failed: {}: {}", status.code(), status.message())]
    Call {
        /// The CRI method.
        call: &'static str,
        /// The runtime's answer.
        status: Box<tonic::Status>,
    },
    /// No ready sandbox of that pod on this node.
    #[error("pod {namespace}/{name} has no ready sandbox on this node")]
    PodNotFound {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
    },
    /// The pod has no running container of that name.
    #[error("pod {namespace}/{name} has no running container {container:?} (running: {running:?})")]
    ContainerNotFound {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
        /// The container asked for (empty: any).
        container: String,
        /// The names of the pod's running containers.
        running: Vec<String>,
    },
    /// No container named, and the pod runs several.
    #[error(
        "pod {namespace}/{name} runs several containers {running:?}: name the target container"
    )]
    AmbiguousContainer {
        /// The pod's namespace.
        namespace: String,
        /// The pod's name.
        name: String,
        /// The names of the pod's running containers.
        running: Vec<String>,
    },
    /// The runtime's verbose status is not JSON of the expected shape.
    #[error(transparent)]
    Info(#[from] InfoError),
    /// The runtime's namespace list holds a type runc does not know.
    #[error("the namespace list of container {container}: {source}")]
    Namespace {
        /// The container's ID.
        container: String,
        /// runc's error.
        #[source]
        source: NamespaceError,
    },
    /// Neither the runtime nor the cgroups name the container's init.
    #[error(
        "cannot find the init process of container {0}: the runtime gives no pid and no cgroup is named after it"
    )]
    NoPid(String),
    /// The spec's root is relative and the bundle it is relative to was not found.
    #[error(
        "the root of container {container} is {root:?}, relative to a bundle that was not found"
    )]
    NoBundle {
        /// The container's ID.
        container: String,
        /// `root.path` of the spec.
        root: String,
    },
    /// A `/proc` or bundle file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A bundle's `config.json` is not an OCI spec.
    #[error("{} is not an OCI runtime spec: {source}", path.display())]
    BadBundleSpec {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

impl RuntimeError {
    /// The gRPC code the agent's API answers this error with.
    pub fn code(&self) -> tonic::Code {
        match self {
            Self::BadEndpoint(_) => tonic::Code::InvalidArgument,
            Self::Connect { .. } => tonic::Code::Unavailable,
            Self::Call { status, .. } => match status.code() {
                tonic::Code::NotFound => tonic::Code::NotFound,
                _ => tonic::Code::Unavailable,
            },
            Self::PodNotFound { .. } | Self::ContainerNotFound { .. } => tonic::Code::NotFound,
            Self::AmbiguousContainer { .. } => tonic::Code::InvalidArgument,
            Self::Info(_)
            | Self::Namespace { .. }
            | Self::NoPid(_)
            | Self::NoBundle { .. }
            | Self::Read { .. }
            | Self::BadBundleSpec { .. } => tonic::Code::FailedPrecondition,
        }
    }
}

/// Where a fact about the target came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    /// The runtime's verbose container status.
    Runtime,
    /// The OCI bundle's `config.json`.
    Bundle,
    /// CRI's own fields (the kubelet's mount list).
    Cri,
    /// `/proc` and the cgroup file system.
    Procfs,
}

/// Where each fact of a [`TargetContainer`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// The init's PID.
    pub pid: Source,
    /// The root file system.
    pub rootfs: Source,
    /// The mounts.
    pub mounts: Source,
    /// The namespace list.
    pub namespaces: Source,
}

/// A running container of a pod, as the runtime handed it to runc.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetContainer {
    /// The pod's namespace.
    pub pod_namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The pod's UID.
    pub pod_uid: String,
    /// The pod's primary IP, if it has one.
    pub pod_ip: Option<String>,
    /// The sandbox's ID.
    pub sandbox_id: String,
    /// The sandbox process's host PID (containerd's pause), if there is one.
    pub sandbox_pid: Option<i32>,
    /// The container's ID.
    pub container_id: String,
    /// The container's name in the pod.
    pub container_name: String,
    /// The host PID of the container's init.
    pub pid: i32,
    /// The process that started the init (containerd's shim, CRI-O's conmon).
    pub parent_pid: Option<i32>,
    /// The OCI bundle, when found.
    pub bundle: Option<PathBuf>,
    /// The root file system as runc got it (its `config.Rootfs`: `root.path`,
    /// relative paths joined to the bundle), or `/proc/<pid>/root` without a spec.
    pub rootfs: PathBuf,
    /// The spec mounts the root read-only.
    pub rootfs_readonly: bool,
    /// The mounts, in the spec's order.
    pub mounts: Vec<Mount>,
    /// The OCI namespace list in the runtime's order, as runc got it.
    pub namespaces: Vec<Namespace>,
    /// `linux.cgroupsPath` of the spec.
    pub cgroups_path: Option<String>,
    /// The init's cgroups (`/proc/<pid>/cgroup`).
    pub cgroups: Vec<CgroupEntry>,
    /// Which runtime described the container.
    pub flavor: Flavor,
    /// Where each fact came from.
    pub provenance: Provenance,
}

impl TargetContainer {
    /// The input to runc's restore rules: the runtime's namespace list,
    /// unchanged (see the module documentation for why path-less entries stay
    /// path-less).
    pub fn restore_namespaces(&self) -> Vec<Namespace> {
        self.namespaces.clone()
    }

    /// The namespaces the container's init is in now, for each type the
    /// runtime listed: `<proc_root>/<pid>/ns/<x>`.
    pub fn own_namespaces(&self, proc_root: &Path) -> Vec<Namespace> {
        namespaces::own_namespaces(&self.namespaces, proc_root, self.pid)
    }

    /// The namespace file of the container's init for one type.
    pub fn own_namespace(&self, proc_root: &Path, kind: NamespaceType) -> PathBuf {
        namespaces::proc_ns_path(proc_root, self.pid, kind)
    }

    /// The bind mounts (runc's definition), in the spec's order.
    pub fn bind_mounts(&self) -> impl Iterator<Item = &Mount> {
        self.mounts.iter().filter(|m| m.is_bind())
    }

    /// The bind mount at `destination`, compared as normalised paths
    /// (`/data/`, `//data` and `/data` are one destination); the last one
    /// wins, as the later mount covers the earlier.
    pub fn bind_mount(&self, destination: &str) -> Option<&Mount> {
        let want = normalise(destination);
        self.bind_mounts()
            .filter(|m| normalise(&m.destination) == want)
            .last()
    }

    /// The cgroup path shared by all of the init's hierarchies, if they agree
    /// (they do with the cgroupfs driver and on cgroup v2).
    pub fn cgroup_path(&self) -> Option<&str> {
        let first = self.cgroups.first()?;
        self.cgroups
            .iter()
            .all(|c| c.path == first.path)
            .then_some(first.path.as_str())
    }

    /// The runtime's mount namespace (that of the shim or conmon), in which
    /// the rootfs and mount sources are valid paths.
    pub fn runtime_mount_namespace(&self, proc_root: &Path) -> Option<PathBuf> {
        self.parent_pid
            .map(|p| namespaces::proc_ns_path(proc_root, p, NamespaceType::Mount))
    }

    /// The container's root reached through its init, valid from any mount
    /// namespace (for reading; the kernel refuses to bind-mount it across
    /// mount namespaces).
    pub fn root_through_proc(&self, proc_root: &Path) -> PathBuf {
        proc_root.join(self.pid.to_string()).join("root")
    }
}

fn normalise(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

/// How to reach the runtime and the kernel's views.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// The runtime's CRI socket.
    pub socket: PathBuf,
    /// The limit on connecting and on each call.
    pub timeout: Duration,
    /// Where `/proc` is (host PIDs).
    pub proc_root: PathBuf,
    /// Where the cgroup file system is.
    pub cgroup_root: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            socket: PathBuf::from(CONTAINERD_SOCKET),
            timeout: Duration::from_secs(10),
            proc_root: PathBuf::from("/proc"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        }
    }
}

/// The container runtime of this node.
#[derive(Debug, Clone)]
pub struct Runtime {
    client: CriClient,
    proc_root: PathBuf,
    cgroup_root: PathBuf,
}

impl Runtime {
    /// Connects to the runtime's socket.
    pub async fn connect(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let client = CriClient::connect(&config.socket, config.timeout).await?;
        Ok(Self {
            client,
            proc_root: config.proc_root,
            cgroup_root: config.cgroup_root,
        })
    }

    /// The CRI client, for calls this type does not wrap.
    pub fn client(&self) -> &CriClient {
        &self.client
    }

    /// The runtime's name and versions.
    pub async fn version(&self) -> Result<cri::VersionResponse, RuntimeError> {
        self.client.version().await
    }

    /// Finds a pod's running container and what a restore into it needs.
    /// Without `container_name` the pod must run exactly one container.
    pub async fn find_target(
        &self,
        pod_namespace: &str,
        pod_name: &str,
        container_name: Option<&str>,
    ) -> Result<TargetContainer, RuntimeError> {
        let sandbox = self.ready_sandbox(pod_namespace, pod_name).await?;
        let container = self
            .running_container(pod_namespace, pod_name, &sandbox.id, container_name)
            .await?;

        let sandbox_status = self.client.pod_sandbox_status(&sandbox.id, true).await?;
        let sandbox_info = spec::parse_sandbox_info(&sandbox_status.info).unwrap_or_else(|e| {
            tracing::warn!(sandbox = %sandbox.id, "{e}");
            spec::SandboxInfo { pid: None }
        });
        let status = self.client.container_status(&container.id, true).await?;
        let info = spec::parse_container_info(&status.info)?;

        let cri_mounts = status
            .status
            .map(|s| s.mounts.into_iter().map(cri_mount).collect())
            .unwrap_or_default();
        let pod_ip = sandbox_status
            .status
            .and_then(|s| s.network)
            .map(|n| n.ip)
            .filter(|ip| !ip.is_empty());
        let found = Found {
            pod_namespace: pod_namespace.to_owned(),
            pod_name: pod_name.to_owned(),
            pod_uid: sandbox
                .metadata
                .as_ref()
                .map(|m| m.uid.clone())
                .unwrap_or_default(),
            pod_ip,
            sandbox_id: sandbox.id,
            sandbox_pid: sandbox_info.pid,
            container_id: container.id,
            container_name: container.metadata.map(|m| m.name).unwrap_or_default(),
            info,
            cri_mounts,
        };
        resolve(found, &self.proc_root, &self.cgroup_root)
    }

    /// The pod's newest ready sandbox.
    async fn ready_sandbox(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<cri::PodSandbox, RuntimeError> {
        let filter = cri::PodSandboxFilter {
            state: Some(cri::PodSandboxStateValue {
                state: cri::PodSandboxState::SandboxReady.into(),
            }),
            label_selector: HashMap::from([
                (POD_NAMESPACE_LABEL.to_owned(), namespace.to_owned()),
                (POD_NAME_LABEL.to_owned(), name.to_owned()),
            ]),
            ..Default::default()
        };
        self.client
            .list_pod_sandboxes(filter)
            .await?
            .into_iter()
            .filter(|s| {
                s.metadata
                    .as_ref()
                    .is_some_and(|m| m.namespace == namespace && m.name == name)
            })
            .max_by_key(|s| s.created_at)
            .ok_or_else(|| RuntimeError::PodNotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            })
    }

    /// The sandbox's running container of that name (or its only one).
    async fn running_container(
        &self,
        namespace: &str,
        name: &str,
        sandbox_id: &str,
        container_name: Option<&str>,
    ) -> Result<cri::Container, RuntimeError> {
        let filter = cri::ContainerFilter {
            pod_sandbox_id: sandbox_id.to_owned(),
            state: Some(cri::ContainerStateValue {
                state: cri::ContainerState::ContainerRunning.into(),
            }),
            ..Default::default()
        };
        let running = self.client.list_containers(filter).await?;
        pick_container(namespace, name, running, container_name)
    }
}

/// Picks the target among a sandbox's running containers.
fn pick_container(
    namespace: &str,
    name: &str,
    running: Vec<cri::Container>,
    container_name: Option<&str>,
) -> Result<cri::Container, RuntimeError> {
    let name_of = |c: &cri::Container| {
        c.metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default()
    };
    let mut names: Vec<String> = running.iter().map(name_of).collect();
    names.sort();
    names.dedup();
    match container_name {
        Some(wanted) => running
            .into_iter()
            .filter(|c| name_of(c) == wanted)
            .max_by_key(|c| c.created_at)
            .ok_or_else(|| RuntimeError::ContainerNotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                container: wanted.to_owned(),
                running: names,
            }),
        None if names.len() > 1 => Err(RuntimeError::AmbiguousContainer {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            running: names,
        }),
        None => running
            .into_iter()
            .max_by_key(|c| c.created_at)
            .ok_or_else(|| RuntimeError::ContainerNotFound {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                container: String::new(),
                running: Vec::new(),
            }),
    }
}

/// A kubelet mount from CRI's status, as the bind mount runtimes make of it.
fn cri_mount(m: cri::Mount) -> Mount {
    Mount {
        destination: m.container_path,
        kind: "bind".to_owned(),
        source: m.host_path,
        options: vec![
            "rbind".to_owned(),
            if m.readonly { "ro" } else { "rw" }.to_owned(),
        ],
    }
}

/// What the CRI calls gave.
struct Found {
    pod_namespace: String,
    pod_name: String,
    pod_uid: String,
    pod_ip: Option<String>,
    sandbox_id: String,
    sandbox_pid: Option<i32>,
    container_id: String,
    container_name: String,
    info: spec::ContainerInfo,
    cri_mounts: Vec<Mount>,
}

/// Completes the runtime's answer from `/proc`, the cgroups and the bundle.
fn resolve(
    found: Found,
    proc_root: &Path,
    cgroup_root: &Path,
) -> Result<TargetContainer, RuntimeError> {
    let id = found.container_id.clone();
    let (pid, pid_source) = match found.info.pid {
        Some(pid) => (pid, Source::Runtime),
        None => (
            procfs::find_init_by_cgroup(proc_root, cgroup_root, &id)
                .ok_or_else(|| RuntimeError::NoPid(id.clone()))?,
            Source::Procfs,
        ),
    };
    let sandbox_pid = found
        .sandbox_pid
        .or_else(|| procfs::find_init_by_cgroup(proc_root, cgroup_root, &found.sandbox_id));
    let parent_pid = procfs::parent_pid(proc_root, pid).ok();
    let bundle = parent_pid.and_then(|p| procfs::find_bundle(proc_root, p, &id, pid));

    let (spec, spec_source) = match (found.info.spec, &bundle) {
        (Some(spec), _) => (Some(spec), Source::Runtime),
        (None, Some(dir)) => {
            let path = dir.join("config.json");
            let bytes = fs::read(&path).map_err(|source| RuntimeError::Read {
                path: path.clone(),
                source,
            })?;
            let spec = spec::parse_spec(&bytes)
                .map_err(|source| RuntimeError::BadBundleSpec { path, source })?;
            (Some(spec), Source::Bundle)
        }
        (None, None) => (None, Source::Procfs),
    };

    let cgroups = procfs::cgroups(proc_root, pid).map_err(|source| RuntimeError::Read {
        path: proc_root.join(pid.to_string()).join("cgroup"),
        source,
    })?;

    let (rootfs, rootfs_readonly, rootfs_source) = match spec.as_ref().and_then(|s| s.root.as_ref())
    {
        Some(root) => (
            rootfs_path(&id, &root.path, bundle.as_deref())?,
            root.readonly,
            spec_source,
        ),
        None => (
            proc_root.join(pid.to_string()).join("root"),
            false,
            Source::Procfs,
        ),
    };

    let (mounts, mounts_source) = match &spec {
        Some(spec) => (spec.mounts.clone(), spec_source),
        None => (found.cri_mounts, Source::Cri),
    };

    let (namespace_list, namespaces_source) = match spec.as_ref().filter(|s| s.linux.is_some()) {
        Some(spec) => (
            namespaces::from_oci(spec.namespaces()).map_err(|source| RuntimeError::Namespace {
                container: id.clone(),
                source,
            })?,
            spec_source,
        ),
        None => (
            proc_namespaces(proc_root, pid, sandbox_pid, parent_pid.unwrap_or(1))?,
            Source::Procfs,
        ),
    };

    Ok(TargetContainer {
        pod_namespace: found.pod_namespace,
        pod_name: found.pod_name,
        pod_uid: found.pod_uid,
        pod_ip: found.pod_ip,
        sandbox_id: found.sandbox_id,
        sandbox_pid,
        container_id: found.container_id,
        container_name: found.container_name,
        pid,
        parent_pid,
        bundle,
        rootfs,
        rootfs_readonly,
        mounts,
        namespaces: namespace_list,
        cgroups_path: spec
            .as_ref()
            .and_then(|s| s.cgroups_path())
            .map(str::to_owned),
        cgroups,
        flavor: found.info.flavor,
        provenance: Provenance {
            pid: pid_source,
            rootfs: rootfs_source,
            mounts: mounts_source,
            namespaces: namespaces_source,
        },
    })
}

/// runc's `config.Rootfs`: `root.path`, joined to the bundle when relative
/// (runc runs in the bundle directory).
pub fn rootfs_path(
    container: &str,
    root: &str,
    bundle: Option<&Path>,
) -> Result<PathBuf, RuntimeError> {
    let root_path = Path::new(root);
    if root_path.is_absolute() {
        return Ok(root_path.to_owned());
    }
    bundle
        .map(|b| b.join(root_path))
        .ok_or_else(|| RuntimeError::NoBundle {
            container: container.to_owned(),
            root: root.to_owned(),
        })
}

/// The namespace list of `pid` found from `/proc`, compared with the sandbox
/// process and with `node_pid`, a process in the node's namespaces: the
/// runtime's shim or conmon that started the container (PID 1 may be out of
/// reach: its namespaces cannot be read without ptrace access to it).
pub fn proc_namespaces(
    proc_root: &Path,
    pid: i32,
    sandbox_pid: Option<i32>,
    node_pid: i32,
) -> Result<Vec<Namespace>, RuntimeError> {
    let read = |p: i32| {
        procfs::ns_inodes(proc_root, p).map_err(|source| RuntimeError::Read {
            path: proc_root.join(p.to_string()).join("ns"),
            source,
        })
    };
    let container = read(pid)?;
    let node = read(node_pid)?;
    let sandbox = match sandbox_pid {
        Some(p) => Some((p, read(p)?)),
        None => None,
    };
    Ok(namespaces::from_inodes(
        &container,
        sandbox.as_ref().map(|(p, i)| (*p, i)),
        &node,
        proc_root,
    ))
}

#[cfg(test)]
mod tests;
