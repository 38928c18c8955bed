//! `kpaas-builder seeds`: per-node and universal NoCloud seeds from a cluster file.

use crate::bundle::resolve::load_catalog;
use crate::seeds::{NodePlan, node_plan, plan, secrets, write_seed};
use airgap_bundle::node::VerifyMode;
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
    let todo = if a.seed_only {
        NodePlan::default()
    } else {
        node_plan(&catalog, &c, !a.cluster_only)?
    };
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
    Ok(())
}
