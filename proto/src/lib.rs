//! Generated protocol types of podrestore.
//!
//! - [`criu`]: CRIU's RPC schema (`criu swrk`), proto2, field numbers from CRIU's `images/rpc.proto`.
//! - [`agent`]: the node agent's gRPC API (`agent/agent.proto`), called by the operator.
//! - [`cri`]: the read-only part of the Kubernetes CRI `runtime.v1` the agent calls on the
//!   container runtime (`cri/api.proto`), field numbers from k8s.io/cri-api.

/// CRIU's RPC messages (`criu/rpc.proto`).
#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
pub mod criu {
    include!(concat!(env!("OUT_DIR"), "/criu.rs"));
}

/// The node agent's gRPC API (`agent/agent.proto`, package `podrestore.agent.v1alpha1`).
#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
pub mod agent {
    include!(concat!(env!("OUT_DIR"), "/podrestore.agent.v1alpha1.rs"));
}

/// The Kubernetes CRI `runtime.v1` subset the agent uses to find pods and containers
/// (`cri/api.proto`).
#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
pub mod cri {
    include!(concat!(env!("OUT_DIR"), "/runtime.v1.rs"));
}
