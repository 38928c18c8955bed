//! `kpaas-builder seeds`: per-node and universal NoCloud seeds from a cluster
//! file, bound with `--bundle` to the bundle the nodes will boot with: planned
//! from its own manifest (its platform, its artifacts) and naming its digest
//! in every node config, so a mismatch is found here, on the connected side,
//! or at the node's verify step, never as a failed deploy at the site.

use crate::bundle::resolve::load_catalog;
use crate::seeds::{NodePlan, node_plan, plan, secrets, write_seed};
use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest};
use airgap_bundle::node::VerifyMode;
use airgap_bundle::reader::BundleSource;
use airgap_bundle::{Digest, catalog::Catalog};
use anyhow::{Result, bail};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub cluster: PathBuf,
    /// Platform catalog (a built-in name or a catalog.yaml path) whose plan
    /// tells the nodes how to form the cluster; default: the cluster file's
    /// platform.
    #[arg(long, short)]
    pub platform: Option<String>,
    #[arg(long, short)]
    pub out: PathBuf,
    /// The bundle the nodes boot with (directory, .tar.zst or volume set):
    /// the plan is checked against its content and every node config names
    /// its digest (a node with other media stops at verify).
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// Seed registry port (default: the cluster file's)
    #[arg(long)]
    pub seed_port: Option<u16>,
    /// Verification at boot: fast (default) or full.
    #[arg(long, default_value = "fast")]
    pub verify: String,
    /// The nodes verify the bundle, serve the seed registry and point their
    /// mirrors at it, then stop: no cluster is formed (staging media, a lab
    /// that only needs the registry, a site that forms its cluster by other
    /// means). The node configs then carry no kubernetes step.
    #[arg(long)]
    pub seed_only: bool,
    /// The nodes form the cluster and stop once it is ready: the master
    /// deploys none of the platform's waves (`kpaas-agent deploy` can,
    /// later). The node configs then carry no platform steps.
    #[arg(long, conflicts_with = "seed_only")]
    pub cluster_only: bool,
}

pub fn run(a: Args) -> Result<()> {
    let c = crate::cmd::cluster::load(&a.cluster)?;
    let verify = match a.verify.as_str() {
        "fast" => VerifyMode::Fast,
        "full" => VerifyMode::Full,
        v => bail!("--verify {v}: fast or full"),
    };
    airgap_bundle::fsutil::create_dir(&a.out)?;
    let catalog = load_catalog(a.platform.as_deref().unwrap_or(&c.platform))?;
    let bundle = a.bundle.as_deref().map(bound_bundle).transpose()?;
    if let Some((m, _)) = &bundle {
        same_platform(&catalog, m)?;
    }
    let mut todo = if a.seed_only {
        NodePlan::default()
    } else {
        node_plan(
            &catalog,
            &c,
            !a.cluster_only,
            bundle.as_ref().map(|(m, _)| m),
        )?
    };
    todo.bundle_digest = bundle.as_ref().map(|(_, d)| d.clone());
    let s = secrets(&a.out.join("secrets"), &c)?;
    let seeds = plan(&c, &todo, &s, a.seed_port.unwrap_or(c.seed_port), verify)?;
    for seed in &seeds {
        write_seed(&a.out, seed)?;
    }
    println!(
        "seeds for {} nodes and one universal seed in {} ({{node}}.iso / .vfat, label CIDATA); secrets in {}/secrets (0600)",
        seeds.len() - 1,
        a.out.display(),
        a.out.display()
    );
    match &bundle {
        Some((m, d)) => println!(
            "bound to bundle {d} ({} {}): a node booted with other media stops at verify",
            m.platform, m.platform_version
        ),
        None => eprintln!(
            "note: these seeds are not bound to a bundle (--bundle): a catalog/bundle mismatch would be found only when a node deploys"
        ),
    }
    Ok(())
}

/// The bundle's manifest and its digest (what node configs name).
fn bound_bundle(path: &std::path::Path) -> Result<(BundleManifest, Digest)> {
    let src = BundleSource::open(path)?;
    let bytes = src.read_file(BUNDLE_JSON)?;
    Ok((BundleManifest::from_bytes(&bytes)?, Digest::of(&bytes)))
}

/// The catalog the plan comes from must be the one the bundle was built
/// from: its releases name that bundle's artifacts.
fn same_platform(catalog: &Catalog, m: &BundleManifest) -> Result<()> {
    let (c, v) = (&catalog.platform.name, &catalog.platform.version);
    if (c, v) != (&m.platform, &m.platform_version) {
        bail!(
            "the bundle is {} {}, the catalog {c} {v}: seeds are planned from the catalog the bundle was built from (--platform)",
            m.platform,
            m.platform_version
        );
    }
    Ok(())
}
