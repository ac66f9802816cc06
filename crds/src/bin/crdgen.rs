//! `crdgen`: writes the CRDs of podrestore into the Helm chart.
//!
//! `crdgen` rewrites `charts/podrestore/crds/podrestore.io_podrestores.yaml` in the repository
//! this binary was built from; `crdgen -` prints the YAML to stdout instead; `crdgen PATH`
//! writes it to PATH.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let yaml = match podrestore_crds::crd_yaml() {
        Ok(yaml) => yaml,
        Err(err) => {
            eprintln!("cannot render the CRD: {err}");
            return ExitCode::FAILURE;
        }
    };
    let target = std::env::args().nth(1);
    if target.as_deref() == Some("-") {
        print!("{yaml}");
        return ExitCode::SUCCESS;
    }
    let path = target.map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(podrestore_crds::CHART_CRD_PATH)
    });
    if let Err(err) = std::fs::write(&path, yaml) {
        eprintln!("cannot write {}: {err}", path.display());
        return ExitCode::FAILURE;
    }
    eprintln!("wrote {}", path.display());
    ExitCode::SUCCESS
}
