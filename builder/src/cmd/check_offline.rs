//! `kpaas-builder check-offline`: proves every image the bundle's manifests
//! ask for is in the bundle; lists any that would need the internet.

use airgap_bundle::offline;
use airgap_bundle::reader::BundleSource;
use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub bundle: PathBuf,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let r = offline::check(&BundleSource::open(&a.bundle)?)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for f in &r.missing {
            eprintln!("MISSING {} in {} at {}: {}", f.image, f.file, f.at, f.why);
        }
        println!(
            "{}: {} manifest file(s), {} image reference(s), {} missing",
            a.bundle.display(),
            r.files,
            r.references,
            r.missing.len()
        );
    }
    if !r.missing.is_empty() {
        bail!(
            "{} image reference(s) are not in the bundle",
            r.missing.len()
        );
    }
    Ok(())
}
