//! `kpaas-builder`: runs on a connected machine and turns a platform catalog
//! into an air-gapped bundle (and, later, bootable images and node seeds).

mod bundle;
mod cache;
mod check_offline;
mod cluster_cmd;
mod fetch;
mod grub;
mod image;
mod inspect;
mod iso;
mod keygen;
mod plan_cmd;
mod profile;
mod progress;
mod registry;
mod resolve;
mod seeds;
mod supply;
mod verify;
mod writer;

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

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
    Resolve(resolve::Args),
    /// Fetch everything and write the air-gapped bundle.
    Bundle(bundle::Args),
    /// Re-hash and check a bundle; names every bad artifact.
    Verify(verify::Args),
    /// List a bundle's artifacts, sizes, platforms and dedup savings.
    Inspect(inspect::Args),
    /// Make an ed25519 key pair for signing bundles.
    Keygen(keygen::Args),
    /// Write or check the site's cluster.yaml.
    #[command(subcommand)]
    Cluster(cluster_cmd::Args),
    /// Show the deploy plan and capacity plan for a cluster (offline).
    Plan(plan_cmd::Args),
    /// Prove every image the bundle's manifests use is in the bundle.
    CheckOffline(check_offline::Args),
    /// Build a bootable node image (raw or qcow2) with the bundle and the agent.
    Image(image::Args),
    /// Build (or find) a profile's base rootfs in the cache.
    Rootfs(image::RootfsArgs),
    /// Render per-node and universal NoCloud seeds (CIDATA) from a cluster file.
    Seeds(seeds::Args),
}

/// Options shared by the commands that resolve and fetch.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// Platform catalog: a built-in name (demo), a catalog.yaml, or its directory.
    #[arg(long, short)]
    pub platform: String,
    /// Lock file (default: <platform>.lock in the current directory).
    #[arg(long)]
    pub lock: Option<PathBuf>,
    /// Re-resolve every artifact instead of using the lock.
    #[arg(long)]
    pub update: bool,
    /// Use only the cache; list everything missing instead of fetching.
    #[arg(long)]
    pub offline: bool,
    /// Content-addressed cache (default: $XDG_CACHE_HOME/kpaas).
    #[arg(long, env = "KPAAS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Remap a source: registry.k8s.io=host/prefix, or https://url=http://other-url.
    #[arg(long, value_name = "SRC=DST")]
    pub mirror: Vec<String>,
    /// Reach this registry host over plain HTTP (repeatable).
    #[arg(long, value_name = "HOST")]
    pub insecure_registry: Vec<String>,
    /// Extra CA certificate (PEM) to trust for TLS (repeatable).
    #[arg(long, value_name = "PEM")]
    pub ca_cert: Vec<PathBuf>,
    /// Docker config with registry credentials (default: ~/.docker/config.json).
    #[arg(long, env = "KPAAS_DOCKER_CONFIG")]
    pub docker_config: Option<PathBuf>,
    /// Parallel transfers.
    #[arg(long, short, default_value_t = 8)]
    pub jobs: usize,
    /// Bring an artifact yourself: KEY=PATH, KEY an artifact key or reference
    /// name; PATH an OCI layout or archive, a chart .tgz or a file (repeatable).
    #[arg(long, value_name = "KEY=PATH")]
    pub supply: Vec<String>,
    /// Machine-readable JSON events on stdout.
    #[arg(long)]
    pub json: bool,
    /// No progress output.
    #[arg(long, short)]
    pub quiet: bool,
}

/// What every fetching command shares.
#[derive(Clone)]
pub struct Ctx {
    pub net: Arc<registry::Net>,
    pub cache: cache::Cache,
    pub progress: Arc<progress::Progress>,
    pub jobs: usize,
    pub supplies: std::collections::BTreeMap<String, PathBuf>,
}

impl Ctx {
    pub fn new(c: &Common, offline: bool) -> Result<Ctx> {
        let mut mirrors = Vec::new();
        let mut errs = Vec::new();
        for m in &c.mirror {
            match registry::Mirror::parse(m) {
                Ok(m) => mirrors.push(m),
                Err(e) => errs.push(format!("{e:#}")),
            }
        }
        if !errs.is_empty() {
            anyhow::bail!("{}", errs.join("\n"));
        }
        let progress = Arc::new(progress::Progress::new(c.json, c.quiet));
        let mut net = registry::Net::new(registry::NetOptions {
            mirrors,
            insecure: c.insecure_registry.clone(),
            ca_files: c.ca_cert.clone(),
            docker_config: c.docker_config.clone(),
            offline,
            max_attempts: 0,
        })?;
        let p = progress.clone();
        net.on_retry = Some(Box::new(move |msg: &str| {
            p.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            p.event("retry", serde_json::json!({"message": msg}));
        }));
        Ok(Ctx {
            net: Arc::new(net),
            cache: cache::Cache::open(c.cache_dir.as_deref())?,
            progress,
            jobs: c.jobs.max(1),
            supplies: supply::parse(&c.supply)?,
        })
    }
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
            Cmd::Resolve(a) => resolve::run(a).await,
            Cmd::Bundle(a) => bundle::run(a).await,
            Cmd::Verify(a) => verify::run(a),
            Cmd::Inspect(a) => inspect::run(a),
            Cmd::Keygen(a) => keygen::run(a),
            Cmd::Cluster(a) => cluster_cmd::run(a),
            Cmd::Plan(a) => plan_cmd::run(a),
            Cmd::CheckOffline(a) => check_offline::run(a),
            Cmd::Image(a) => image::run_cmd(a),
            Cmd::Rootfs(a) => image::rootfs_cmd(a),
            Cmd::Seeds(a) => seeds::run_cmd(a),
        }
    });
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(if e.downcast_ref::<verify::Failed>().is_some() {
            1
        } else {
            2
        });
    }
}
