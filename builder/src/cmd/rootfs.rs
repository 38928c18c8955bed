//! `kpaas-builder rootfs`: build (or find) a profile's base tree in the cache.

use crate::image::profile::Profile;
use crate::image::rootfs;
use anyhow::Result;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(long)]
    pub profile: PathBuf,
    #[arg(long, env = "KPAAS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let p = Profile::load(&a.profile)?;
    let cache = crate::bundle::cache::Cache::open(a.cache_dir.as_deref())?
        .root()
        .to_path_buf();
    let t = Instant::now();
    let tar = rootfs::cached(&cache, &p, false)?;
    println!(
        "{} rootfs: {} ({} MiB, {:.1}s)",
        p.name,
        tar.display(),
        rootfs::mib(&tar)?,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
