//! Writes the CRD manifests into the Helm chart: `cargo run -p callfleet-crds --bin crdgen`.

use std::path::PathBuf;
use std::process::ExitCode;

use callfleet_crds::crdgen::{CHART_CRD_DIR, crd_files};

fn main() -> ExitCode {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(CHART_CRD_DIR);
    let files = match crd_files() {
        Ok(files) => files,
        Err(e) => {
            eprintln!("error: cannot serialize the CRDs: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    for (name, contents) in files {
        let path = dir.join(&name);
        if let Err(e) = std::fs::write(&path, contents) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
