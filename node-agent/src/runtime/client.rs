//! A CRI `RuntimeService` client over the runtime's unix socket
//! (containerd's `/run/containerd/containerd.sock`, CRI-O's
//! `/var/run/crio/crio.sock`), with the read-only calls the agent makes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use podrestore_proto::cri;
use podrestore_proto::cri::runtime_service_client::RuntimeServiceClient;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::RuntimeError;

/// containerd's default CRI socket.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// CRI-O's default CRI socket.
pub const CRIO_SOCKET: &str = "/var/run/crio/crio.sock";
/// The largest answer accepted: the kubelet's limit, since a node's container
/// list can exceed gRPC's default 4 MiB.
const MAX_MESSAGE: usize = 16 * 1024 * 1024;
/// The CRI version the agent speaks, sent in `Version`.
const CRI_VERSION: &str = "v1";

/// The socket path of a runtime endpoint as the kubelet names it:
/// `unix:///run/containerd/containerd.sock` or a plain absolute path.
pub fn socket_path(endpoint: &str) -> Result<PathBuf, RuntimeError> {
    let path = endpoint.strip_prefix("unix://").unwrap_or(endpoint);
    if path.starts_with('/') {
        Ok(PathBuf::from(path))
    } else {
        Err(RuntimeError::BadEndpoint(endpoint.to_owned()))
    }
}

/// A connected CRI client. Cloning is cheap and shares the connection.
#[derive(Debug, Clone)]
pub struct CriClient {
    inner: RuntimeServiceClient<Channel>,
    socket: PathBuf,
}

impl CriClient {
    /// Connects to the runtime's socket; every call then fails after `timeout`.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Self, RuntimeError> {
        let path = socket.to_owned();
        // The URI is required by tonic but unused: every connection is the socket.
        let channel =
            Endpoint::from_static("http://cri.local")
                .connect_timeout(timeout)
                .timeout(timeout)
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                    }
                }))
                .await
                .map_err(|source| RuntimeError::Connect {
                    socket: socket.to_owned(),
                    source,
                })?;
        Ok(Self {
            inner: RuntimeServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE),
            socket: socket.to_owned(),
        })
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The runtime's name and versions.
    pub async fn version(&self) -> Result<cri::VersionResponse, RuntimeError> {
        let request = cri::VersionRequest {
            version: CRI_VERSION.to_owned(),
        };
        let response = self.inner.clone().version(request).await;
        Ok(response.map_err(call("Version"))?.into_inner())
    }

    /// The pod sandboxes that pass `filter`.
    pub async fn list_pod_sandboxes(
        &self,
        filter: cri::PodSandboxFilter,
    ) -> Result<Vec<cri::PodSandbox>, RuntimeError> {
        let request = cri::ListPodSandboxRequest {
            filter: Some(filter),
        };
        let response = self.inner.clone().list_pod_sandbox(request).await;
        Ok(response.map_err(call("ListPodSandbox"))?.into_inner().items)
    }

    /// A sandbox's status; `verbose` adds the runtime's JSON in `info`.
    pub async fn pod_sandbox_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::PodSandboxStatusResponse, RuntimeError> {
        let request = cri::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_owned(),
            verbose,
        };
        let response = self.inner.clone().pod_sandbox_status(request).await;
        Ok(response.map_err(call("PodSandboxStatus"))?.into_inner())
    }

    /// The containers that pass `filter`.
    pub async fn list_containers(
        &self,
        filter: cri::ContainerFilter,
    ) -> Result<Vec<cri::Container>, RuntimeError> {
        let request = cri::ListContainersRequest {
            filter: Some(filter),
        };
        let response = self.inner.clone().list_containers(request).await;
        Ok(response
            .map_err(call("ListContainers"))?
            .into_inner()
            .containers)
    }

    /// A container's status; `verbose` adds the runtime's JSON in `info`.
    pub async fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse, RuntimeError> {
        let request = cri::ContainerStatusRequest {
            container_id: id.to_owned(),
            verbose,
        };
        let response = self.inner.clone().container_status(request).await;
        Ok(response.map_err(call("ContainerStatus"))?.into_inner())
    }
}

fn call(name: &'static str) -> impl FnOnce(tonic::Status) -> RuntimeError {
    move |status| RuntimeError::Call {
        call: name,
        status: Box::new(status),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn endpoints() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").unwrap(),
            PathBuf::from(CONTAINERD_SOCKET)
        );
        assert_eq!(
            socket_path("/var/run/crio/crio.sock").unwrap(),
            PathBuf::from(CRIO_SOCKET)
        );
        for bad in ["tcp://1.2.3.4:1", "unix://relative.sock", "x.sock", ""] {
            let err = socket_path(bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "runtime endpoint {bad:?} is not a unix socket path (unix:///path or /path)"
                )
            );
        }
    }
}
