//! `kpaas-builder bundle`: fetch everything and write the air-gapped bundle.

use crate::bundle::progress::{count, human};
use crate::bundle::resolve::{load_catalog, lock_path};
use crate::bundle::writer::{Output, parse_size};
use crate::bundle::{Common, Ctx, Options, build};
use anyhow::{Result, bail};
use serde_json::json;
use std::path::PathBuf;
use std::time::Instant;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub common: Common,
    /// Where to write: a directory, or a file ending in .tar or .tar.zst.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Image architectures to bundle (comma-separated, e.g. amd64,arm64), or `all`.
    #[arg(long, default_value = "amd64", value_delimiter = ',')]
    pub arch: Vec<String>,
    /// Sign bundle.json with this secret key (from `kpaas-builder keygen`).
    #[arg(long)]
    pub sign_key: Option<PathBuf>,
    /// Split a .tar/.tar.zst into volumes of at most this size (e.g. 4G, 700M).
    #[arg(long, value_parser = parse_size)]
    pub volume_size: Option<u64>,
    /// zstd level for .tar.zst output.
    #[arg(long, default_value_t = 3)]
    pub zstd_level: i32,
    /// Build a delta for the site whose inventory this is (from `kpaas-agent
    /// inventory` on its master): only the blobs the site lacks are carried.
    #[arg(long, value_name = "INVENTORY")]
    pub since: Option<PathBuf>,
}

fn image_platforms(args: &Args) -> Vec<String> {
    if args.arch.iter().any(|a| a == "all") {
        vec!["all".into()]
    } else {
        args.arch
            .iter()
            .map(|a| {
                if a.contains('/') {
                    a.clone()
                } else {
                    format!("linux/{a}")
                }
            })
            .collect()
    }
}

pub async fn run(args: Args) -> Result<()> {
    let start = Instant::now();
    let ctx = Ctx::new(&args.common, args.common.offline)?;
    let catalog = load_catalog(&args.common.platform)?;
    let out = args.out.to_string_lossy().to_string();
    if args.volume_size.is_some() && !Output::is_archive(&out) {
        bail!("--volume-size needs an archive --out (.tar or .tar.zst), not a directory");
    }
    let opts = Options {
        lock: lock_path(&args.common, &catalog),
        update: args.common.update,
        out: args.out.clone(),
        platforms: image_platforms(&args),
        sign_key: args.sign_key.clone(),
        volume_size: args.volume_size,
        zstd_level: args.zstd_level,
        since: match &args.since {
            Some(p) => Some(airgap_bundle::inventory::Inventory::from_file(p)?),
            None => None,
        },
    };
    let b = build(&ctx, &catalog, &opts).await?;
    let t = &b.manifest.totals;
    let summary = json!({
        "out": args.out,
        "artifacts": t.artifacts,
        "blobs": t.blobs,
        "unique_bytes": t.unique_bytes,
        "referenced_bytes": t.referenced_bytes,
        "dedup_saved_bytes": t.referenced_bytes.saturating_sub(t.unique_bytes),
        "fetched_bytes": b.fetched,
        "reused_bytes": b.reused,
        "retries": count(&ctx.progress.retries),
        "seconds": start.elapsed().as_secs_f64(),
        "seconds_plan": b.phases[0],
        "seconds_fetch": b.phases[1],
        "seconds_write": b.phases[2],
        "delta": b.manifest.delta.as_ref().map(|d| json!({
            "base": d.base,
            "omitted_blobs": d.omitted.len(),
            "omitted_bytes": d.omitted_bytes(),
            "carried_bytes": t.unique_bytes.saturating_sub(d.omitted_bytes()),
        })),
    });
    if args.common.json {
        ctx.progress.event("summary", summary);
    } else {
        eprintln!(
            "bundle {}: {} artifacts, {} blobs, {} on disk ({} saved by dedup); fetched {}, reused {} from cache; {:.2}s (plan {:.2}s, fetch {:.2}s, write {:.2}s)",
            args.out.display(),
            t.artifacts,
            t.blobs,
            human(t.unique_bytes),
            human(t.referenced_bytes.saturating_sub(t.unique_bytes)),
            human(b.fetched),
            human(b.reused),
            start.elapsed().as_secs_f64(),
            b.phases[0],
            b.phases[1],
            b.phases[2]
        );
        if let Some(d) = &b.manifest.delta {
            eprintln!(
                "delta against {}: carries {} of the version's {}; {} blob(s), {} left out (the site holds them)",
                d.base,
                human(t.unique_bytes.saturating_sub(d.omitted_bytes())),
                human(t.unique_bytes),
                d.omitted.len(),
                human(d.omitted_bytes())
            );
        }
    }
    Ok(())
}
