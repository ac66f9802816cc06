//! The podrestore operator: reconciles `PodRestore` objects and drives the node agents.
//!
//! - [`controller`]: the reconcile loop (finalizer, apply, cleanup, error policy).
//! - [`checkpoint`]: the PodCheckpoint controller (kubelet checkpoint API, archive digest).
//! - [`validate`] and [`status`]: the pure checks and status transitions it uses.
//! - [`agent`]: finding and calling the agent on a node over mutual TLS.
//! - [`pki`] and [`certs`]: the CA and certificates, and their Secrets and rotation.
//! - [`leader`]: leader election on a Lease.
//! - [`metrics`] and [`http`]: Prometheus metrics and the probe endpoints.
//! - [`config`]: the command line.

pub mod agent;
pub mod certs;
pub mod checkpoint;
pub mod config;
pub mod controller;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod pki;
pub mod status;
pub mod validate;
