//! `crdgen`: writes the CRDs of podrestore into the Helm chart.
//!
//! `crdgen` rewrites `charts/podrestore/crds/podrestore.io_*.yaml` in the repository this
//! binary was built from; `crdgen -` prints the YAML documents to stdout instead; `crdgen
//! DIR` writes the files (by their chart file names) into DIR.

use std::{path::PathBuf, process::ExitCode};

fn main() -> ExitCode {
    let files = match podrestore_crds::chart_crds() {
        Ok(files) => files,
        Err(err) => {
            eprintln!("cannot render the CRDs: {err}");
            return ExitCode::FAILURE;
        }
    };
    let target = std::env::args().nth(1);
    if target.as_deref() == Some("-") {
        for (_, yaml) in &files {
            print!("{yaml}");
        }
        return ExitCode::SUCCESS;
    }
    for (chart_path, yaml) in files {
        let path = match &target {
            Some(dir) => {
                let name = chart_path.rsplit('/').next().unwrap_or(chart_path);
                PathBuf::from(dir).join(name)
            }
            None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(chart_path),
        };
        if let Err(err) = std::fs::write(&path, yaml) {
            eprintln!("cannot write {}: {err}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
