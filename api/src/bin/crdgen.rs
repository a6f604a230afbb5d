//! Writes the ModelRollout CRD: `crdgen` to stdout, `crdgen --write` into `crds/` (and the chart).

use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let yaml = modelrollout_api::crd::crd_yaml();
    if std::env::args().any(|a| a == "--write") {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        for rel in [modelrollout_api::crd::CRD_PATH, modelrollout_api::crd::CHART_CRD_PATH] {
            let path = root.join(rel);
            std::fs::write(&path, &yaml)?;
            eprintln!("wrote {}", path.display());
        }
    } else {
        print!("{yaml}");
    }
    Ok(())
}
