//! `kpaas-builder image`: a bootable node image (raw, qcow2 or ISO) with
//! the bundle and the agent, and its build report.

use crate::bundle::cache::Cache;
use crate::image::profile::Profile;
use crate::image::report::{self, Report};
use crate::image::{Format, Inputs, build, ext4};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// OS profile (images/*.yaml).
    #[arg(long)]
    pub profile: PathBuf,
    /// The bundle directory to put on the KPAAS-DATA partition.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The bundle's public key, baked in as /etc/kpaas/bundle.pub.
    #[arg(long)]
    pub bundle_key: PathBuf,
    /// raw, qcow2 or iso (hybrid BIOS + UEFI, runs live).
    #[arg(long, value_enum, default_value = "raw")]
    pub format: Format,
    #[arg(long, short)]
    pub out: PathBuf,
    /// The kpaas-agent binary to install (default: next to this builder).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    #[arg(long, env = "KPAAS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Never download: the rootfs must already be cached.
    #[arg(long)]
    pub offline: bool,
    /// Where to unpack and assemble the root tree (default: /dev/shm when it
    /// has room, else beside --out).
    #[arg(long, env = "KPAAS_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Also write the build report (stages, times, sizes, sha256) as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let start = Instant::now();
    let p = Profile::load(&a.profile)?;
    if !p.outputs.iter().any(|o| o == a.format.name()) {
        bail!(
            "--format {}: profile {} lists outputs {}",
            a.format.name(),
            p.name,
            p.outputs.join(", ")
        );
    }
    let agent = match &a.agent {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .context("finding this program (the agent is looked for beside it)")?
            .with_file_name("kpaas-agent"),
    };
    let inputs = Inputs {
        bundle: a.bundle.clone(),
        bundle_key: a.bundle_key.clone(),
        agent,
        cache: Cache::open(a.cache_dir.as_deref())?.root().to_path_buf(),
        offline: a.offline,
        work_dir: a.work_dir.clone(),
    };
    let built = build(a.format, &p, &inputs, &a.out)?;
    let mut stages = built.stages;
    let meta = std::fs::metadata(&a.out).with_context(|| format!("reading {}", a.out.display()))?;
    let sha256 = report::sha256(&a.out, &mut stages)?;
    let why = ext4::reproducible();
    let r = Report {
        image: &a.out,
        format: a.format.name(),
        profile: &p.name,
        seconds: start.elapsed().as_secs_f64(),
        bytes: meta.len(),
        allocated: std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
        sha256,
        reproducible: why.is_none(),
        not_reproducible_because: why,
        stages: &stages,
        installed: &built.installed,
        boot_chain: &built.boot_chain,
    };
    eprint!("{}", r.render());
    if let Some(path) = &a.report {
        airgap_bundle::fsutil::write_atomic(path, &serde_json::to_vec_pretty(&r)?)?;
    }
    Ok(())
}
