//! What every command that resolves and fetches shares: its options and
//! the network, cache and progress they make.

use super::{cache, progress, registry, supply};
use anyhow::Result;
use std::path::PathBuf;
use std::sync::Arc;

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
