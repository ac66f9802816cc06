//! Kubernetes API types of podrestore (`podrestore.io/v1alpha1`).
//!
//! The types here are the single source of the CRD schemas: the `crdgen` binary renders them
//! into the Helm chart, and a test fails when the committed YAML drifts from them.

pub mod condition;
pub mod podcheckpoint;
pub mod v1alpha1;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Where the chart keeps the generated CRD, relative to the repository root.
pub const CHART_CRD_PATH: &str = "charts/podrestore/crds/podrestore.io_podrestores.yaml";

/// Where the chart keeps the generated PodCheckpoint CRD, relative to the repository root.
pub const CHART_CHECKPOINT_CRD_PATH: &str =
    "charts/podrestore/crds/podrestore.io_podcheckpoints.yaml";

/// The command that rewrites [`CHART_CRD_PATH`], quoted in failure messages.
pub const REGENERATE_COMMAND: &str = "cargo run -p podrestore-crds --bin crdgen";

/// Renders one CRD as YAML with a header saying the file is generated from `source`.
fn render(crd: &CustomResourceDefinition, source: &str) -> Result<String, serde_yaml::Error> {
    let crd = serde_yaml::to_string(crd)?;
    Ok(format!(
        "# Generated from {source}; do not edit.\n# Regenerate with: {REGENERATE_COMMAND}\n---\n{crd}"
    ))
}

/// Renders the PodRestore CRD as YAML, with a header saying the file is generated.
pub fn crd_yaml() -> Result<String, serde_yaml::Error> {
    render(&v1alpha1::PodRestore::crd(), "crds/src/v1alpha1.rs")
}

/// Renders the PodCheckpoint CRD as YAML, with a header saying the file is generated.
pub fn checkpoint_crd_yaml() -> Result<String, serde_yaml::Error> {
    render(
        &podcheckpoint::PodCheckpoint::crd(),
        "crds/src/podcheckpoint.rs",
    )
}

/// Every generated CRD file: its path in the repository and its content.
pub fn chart_crds() -> Result<Vec<(&'static str, String)>, serde_yaml::Error> {
    Ok(vec![
        (CHART_CRD_PATH, crd_yaml()?),
        (CHART_CHECKPOINT_CRD_PATH, checkpoint_crd_yaml()?),
    ])
}
