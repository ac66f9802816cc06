//! Reaching the agent on a node: find its pod through the API, dial it over mutual TLS with
//! the server name `podrestore-agent.<node>`, and call the agent API.
//!
//! The controller talks to agents through the [`Agents`] trait, so reconcile tests replace
//! the network with a fake.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client, api::ListParams};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use podrestore_proto::agent::{self as pb, agent_client::AgentClient};

use crate::{certs::CertManager, pki};

/// Errors reaching or calling an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No running agent pod on the node.
    #[error("no running podrestore agent on node {node} (pods matching {selector} in {namespace})")]
    NoAgent {
        /// The node.
        node: String,
        /// The selector used.
        selector: String,
        /// The namespace searched.
        namespace: String,
    },
    /// The operator cannot dial yet (no client certificate, node not yet in the agents'
    /// certificate).
    #[error("cannot dial the agent on node {node} yet: {reason}")]
    NotReady {
        /// The node.
        node: String,
        /// Why.
        reason: String,
    },
    /// Looking up the agent's pod failed.
    #[error("look up the agent of node {node}: {source}")]
    Lookup {
        /// The node.
        node: String,
        /// The error.
        #[source]
        source: kube::Error,
    },
    /// The connection or the TLS handshake failed.
    #[error("connect to the agent of node {node} at {address}: {message}")]
    Connect {
        /// The node.
        node: String,
        /// The address dialed.
        address: String,
        /// What failed.
        message: String,
    },
    /// The agent answered with an error.
    #[error("agent on node {node}: {}", status.message())]
    Rpc {
        /// The node.
        node: String,
        /// The agent's status.
        status: tonic::Status,
    },
}

impl AgentError {
    /// The gRPC code when the agent answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Self::Rpc { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    /// Whether the agent itself refused the request (asking again gives the same answer),
    /// as opposed to the agent being unreachable or busy.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self.code(),
            Some(
                tonic::Code::InvalidArgument
                    | tonic::Code::NotFound
                    | tonic::Code::PermissionDenied
                    | tonic::Code::AlreadyExists
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::Unimplemented
            )
        )
    }

    fn rpc(node: &str, status: tonic::Status) -> Self {
        Self::Rpc {
            node: node.to_owned(),
            status,
        }
    }
}

/// A server stream of restore events.
pub type RestoreEvents = BoxStream<'static, Result<pb::RestoreEvent, AgentError>>;

/// The agent API as the controller uses it.
#[async_trait::async_trait]
pub trait Agents: Send + Sync {
    /// Reads where an archive on `node` was taken.
    async fn inspect(
        &self,
        node: &str,
        request: pb::InspectRequest,
    ) -> Result<pb::InspectResponse, AgentError>;

    /// Starts (or re-attaches to) a restore on `node`.
    async fn restore(
        &self,
        node: &str,
        request: pb::RestoreRequest,
        timeout: Duration,
    ) -> Result<RestoreEvents, AgentError>;

    /// Stops and cleans up a restore on `node`.
    async fn cleanup(
        &self,
        node: &str,
        request: pb::CleanupRequest,
    ) -> Result<pb::CleanupResponse, AgentError>;

    /// The host:port where the agent on `node` serves, for a peer agent to pull from.
    async fn endpoint(&self, node: &str) -> Result<String, AgentError> {
        Err(AgentError::NotReady {
            node: node.to_owned(),
            reason: "no endpoint lookup".into(),
        })
    }
}

/// The real agents: found through the API, dialed over mutual TLS.
pub struct GrpcAgents {
    client: Client,
    namespace: String,
    selector: String,
    port: u16,
    endpoints: BTreeMap<String, String>,
    certs: Arc<CertManager>,
}

impl GrpcAgents {
    /// Agents whose pods match `selector` in `namespace`, listening on `port`; `endpoints`
    /// overrides the address per node.
    pub fn new(
        client: Client,
        namespace: String,
        selector: String,
        port: u16,
        endpoints: BTreeMap<String, String>,
        certs: Arc<CertManager>,
    ) -> Self {
        Self {
            client,
            namespace,
            selector,
            port,
            endpoints,
            certs,
        }
    }

    /// The address of the agent on `node`: a running, ready agent pod's IP.
    async fn address(&self, node: &str) -> Result<String, AgentError> {
        if let Some(address) = self.endpoints.get(node) {
            return Ok(address.clone());
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = pods
            .list(
                &ListParams::default()
                    .labels(&self.selector)
                    .fields(&format!("spec.nodeName={node}")),
            )
            .await
            .map_err(|source| AgentError::Lookup {
                node: node.to_owned(),
                source,
            })?;
        let ip = list
            .items
            .iter()
            .filter(|pod| pod.metadata.deletion_timestamp.is_none())
            .filter_map(|pod| pod.status.as_ref())
            .filter(|status| status.phase.as_deref() == Some("Running"))
            .find_map(|status| status.pod_ip.clone())
            .ok_or_else(|| AgentError::NoAgent {
                node: node.to_owned(),
                selector: self.selector.clone(),
                namespace: self.namespace.clone(),
            })?;
        Ok(if ip.contains(':') {
            format!("[{ip}]:{}", self.port)
        } else {
            format!("{ip}:{}", self.port)
        })
    }

    async fn connect(&self, node: &str) -> Result<AgentClient<Channel>, AgentError> {
        let not_ready = |reason: &str| AgentError::NotReady {
            node: node.to_owned(),
            reason: reason.to_owned(),
        };
        let tls = self
            .certs
            .client_tls()
            .ok_or_else(|| not_ready("the operator has no client certificate yet"))?;
        if !self.certs.covers(node) {
            return Err(not_ready(
                "the agents' certificate does not name this node yet; it is being reissued",
            ));
        }
        let address = self.address(node).await?;
        let connect_error = |message: String| AgentError::Connect {
            node: node.to_owned(),
            address: address.clone(),
            message,
        };
        let config = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&tls.ca_bundle_pem))
            .identity(Identity::from_pem(
                &tls.identity.cert_pem,
                &tls.identity.key_pem,
            ))
            .domain_name(pki::agent_server_name(node));
        let channel = Endpoint::from_shared(format!("https://{address}"))
            .map_err(|err| connect_error(err.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tls_config(config)
            .map_err(|err| connect_error(err.to_string()))?
            .connect()
            .await
            .map_err(|err| connect_error(format!("{err:?}")))?;
        Ok(AgentClient::new(channel))
    }
}

/// Deadline of the short calls.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

#[async_trait::async_trait]
impl Agents for GrpcAgents {
    async fn inspect(
        &self,
        node: &str,
        request: pb::InspectRequest,
    ) -> Result<pb::InspectResponse, AgentError> {
        let mut client = self.connect(node).await?;
        client
            .inspect(with_timeout(request, CALL_TIMEOUT))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| AgentError::rpc(node, status))
    }

    async fn restore(
        &self,
        node: &str,
        request: pb::RestoreRequest,
        timeout: Duration,
    ) -> Result<RestoreEvents, AgentError> {
        let mut client = self.connect(node).await?;
        let stream = client
            .restore(with_timeout(request, timeout))
            .await
            .map_err(|status| AgentError::rpc(node, status))?
            .into_inner();
        let node = node.to_owned();
        Ok(stream
            .map(move |item| item.map_err(|status| AgentError::rpc(&node, status)))
            .boxed())
    }

    async fn cleanup(
        &self,
        node: &str,
        request: pb::CleanupRequest,
    ) -> Result<pb::CleanupResponse, AgentError> {
        let mut client = self.connect(node).await?;
        client
            .cleanup(with_timeout(request, CALL_TIMEOUT))
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| AgentError::rpc(node, status))
    }

    async fn endpoint(&self, node: &str) -> Result<String, AgentError> {
        self.address(node).await
    }
}
