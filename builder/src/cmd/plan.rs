//! `kpaas-builder plan`: what the agent will deploy, in which order, with
//! which values, and what it needs of the machines. Works offline.

use crate::bundle::resolve::load_catalog;
use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest};
use airgap_bundle::reader::BundleSource;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Platform catalog: a built-in name or a catalog.yaml path.
    #[arg(long, short)]
    pub platform: String,
    #[arg(long)]
    pub cluster: PathBuf,
    /// A built bundle, for real sizes in the capacity plan.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let catalog = load_catalog(&a.platform)?;
    let cluster = crate::cmd::cluster::load(&a.cluster)?;
    let bundle = match &a.bundle {
        Some(b) => Some(BundleManifest::from_bytes(
            &BundleSource::open(b)?.read_file(BUNDLE_JSON)?,
        )?),
        None => None,
    };
    let plan = airgap_bundle::plan::build(&catalog, &cluster, bundle.as_ref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", plan.render());
    }
    Ok(())
}
