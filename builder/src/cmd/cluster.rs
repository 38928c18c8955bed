//! `kpaas-builder cluster init | check`: the site's cluster file.

use airgap_bundle::cluster::{Cluster, EXAMPLE};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Write a commented example cluster.yaml to fill in.
    Init {
        #[arg(long, default_value = "cluster.yaml")]
        out: PathBuf,
        #[arg(long)]
        force: bool,
    },
    /// Validate a cluster file; reports every problem at once.
    Check { file: PathBuf },
}

pub fn load(path: &Path) -> Result<Cluster> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Cluster::from_yaml(&text, &path.display().to_string())?)
}

pub fn run(a: Args) -> Result<()> {
    match a {
        Args::Init { out, force } => {
            if out.exists() && !force {
                bail!("{} exists; pass --force to replace it", out.display());
            }
            airgap_bundle::fsutil::write_atomic(&out, EXAMPLE.as_bytes())?;
            println!(
                "wrote {}: fill in the nodes, storage and portal settings",
                out.display()
            );
            Ok(())
        }
        Args::Check { file } => {
            let c = load(&file)?;
            println!(
                "{}: OK ({} master, {} workers, storage {})",
                file.display(),
                1,
                c.workers.len(),
                c.storage.kind
            );
            Ok(())
        }
    }
}
