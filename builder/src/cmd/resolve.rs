//! `kpaas-builder resolve`: pin every artifact of a catalog (writes the lock).

use crate::bundle::resolve::{ensure_lock, load_catalog, lock_path};
use crate::bundle::{Common, Ctx};
use anyhow::Result;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
}

pub async fn run(args: Args) -> Result<()> {
    let ctx = Ctx::new(&args.common, false)?;
    let catalog = load_catalog(&args.common.platform)?;
    let path = lock_path(&args.common, &catalog);
    let lock = ensure_lock(&ctx, &catalog, &path, args.common.update).await?;
    println!(
        "{}: {} artifacts pinned",
        path.display(),
        lock.artifacts.len()
    );
    Ok(())
}
