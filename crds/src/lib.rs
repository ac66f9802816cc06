//! Kubernetes API types of podrestore (`podrestore.io/v1alpha1`).
//!
//! The types here are the single source of the CRD schemas: the `crdgen` binary renders them
//! into the Helm chart, and a test fails when the committed YAML drifts from them.

pub mod condition;
pub mod v1alpha1;

use kube::CustomResourceExt;

/// Where the chart keeps the generated CRD, relative to the repository root.
pub const CHART_CRD_PATH: &str = "charts/podrestore/crds/podrestore.io_podrestores.yaml";

/// The command that rewrites [`CHART_CRD_PATH`], quoted in failure messages.
pub const REGENERATE_COMMAND: &str = "cargo run -p podrestore-crds --bin crdgen";

/// Renders every CRD of the API group as one YAML document stream, with a header saying the
/// file is generated.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    let crd = serde_yaml::to_string(&v1alpha1::PodRestore::crd())?;
    Ok(format!(
        "# Generated from crds/src/v1alpha1.rs; do not edit.\n# Regenerate with: {REGENERATE_COMMAND}\n---\n{crd}"
    ))
}
