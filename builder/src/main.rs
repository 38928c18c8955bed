//! `kpaas-builder`: runs on a connected machine and turns a platform catalog
//! into an air-gapped bundle, bootable node images and per-node seeds. This
//! file is the command line; `cmd/` holds one file per subcommand, `bundle/`
//! and `image/` the two sides they drive.

mod bundle;
mod cmd;
mod image;
mod seeds;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "kpaas-builder",
    version,
    about = "Build air-gapped K-PaaS appliance bundles",
    max_term_width = 80
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Pin every artifact of a platform catalog to a digest (writes the lock).
    Resolve(cmd::resolve::Args),
    /// Fetch everything and write the air-gapped bundle.
    Bundle(cmd::bundle::Args),
    /// Re-hash and check a bundle; names every bad artifact.
    Verify(cmd::verify::Args),
    /// List a bundle's artifacts, sizes, platforms and dedup savings.
    Inspect(cmd::inspect::Args),
    /// Make an ed25519 key pair for signing bundles.
    Keygen(cmd::keygen::Args),
    /// Write or check the site's cluster.yaml.
    #[command(subcommand)]
    Cluster(cmd::cluster::Args),
    /// Show the deploy plan and capacity plan for a cluster (offline).
    Plan(cmd::plan::Args),
    /// Prove every image the bundle's manifests use is in the bundle.
    CheckOffline(cmd::check_offline::Args),
    /// Build a bootable node image (raw or qcow2) with the bundle and the agent.
    Image(cmd::image::Args),
    /// Build (or find) a profile's base rootfs in the cache.
    Rootfs(cmd::rootfs::Args),
    /// Render per-node and universal NoCloud seeds (CIDATA) from a cluster file.
    Seeds(cmd::seeds::Args),
}

fn main() {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    let r = rt.block_on(async {
        match cli.cmd {
            Cmd::Resolve(a) => cmd::resolve::run(a).await,
            Cmd::Bundle(a) => cmd::bundle::run(a).await,
            Cmd::Verify(a) => cmd::verify::run(a),
            Cmd::Inspect(a) => cmd::inspect::run(a),
            Cmd::Keygen(a) => cmd::keygen::run(a),
            Cmd::Cluster(a) => cmd::cluster::run(a),
            Cmd::Plan(a) => cmd::plan::run(a),
            Cmd::CheckOffline(a) => cmd::check_offline::run(a),
            Cmd::Image(a) => cmd::image::run(a),
            Cmd::Rootfs(a) => cmd::rootfs::run(a),
            Cmd::Seeds(a) => cmd::seeds::run(a),
        }
    });
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(if e.downcast_ref::<cmd::verify::Failed>().is_some() {
            1
        } else {
            2
        });
    }
}
