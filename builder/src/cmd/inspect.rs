//! `kpaas-builder inspect`: what a bundle holds, without verifying it.

use crate::bundle::progress::human;
use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest};
use airgap_bundle::reader::BundleSource;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub bundle: PathBuf,
    /// Print bundle.json's content as JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let src = BundleSource::open(&a.bundle)?;
    let m = BundleManifest::from_bytes(&src.read_file(BUNDLE_JSON)?)?;
    let t = &m.totals;
    if a.json {
        let mut v = serde_json::to_value(&m)?;
        v["totals"]["dedup_saved_bytes"] = t.referenced_bytes.saturating_sub(t.unique_bytes).into();
        if let Some(d) = &m.delta {
            v["delta"]["omitted_bytes"] = d.omitted_bytes().into();
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!(
        "{} {} serial {} (created {}, image platforms {})",
        m.platform,
        m.platform_version,
        m.serial,
        m.created,
        m.image_platforms.join(",")
    );
    if let Some(d) = &m.delta {
        println!(
            "a delta: needs the base {}; leaves out {} blob(s), {} ({} of the version's {} carried)",
            d.base,
            d.omitted.len(),
            human(d.omitted_bytes()),
            human(t.unique_bytes.saturating_sub(d.omitted_bytes())),
            human(t.unique_bytes)
        );
    }
    println!(
        "{:<6} {:<14} {:>10}  {:<19}  {:<24} NAME",
        "KIND", "COMPONENT", "SIZE", "DIGEST", "PLATFORMS"
    );
    for x in &m.artifacts {
        println!(
            "{:<6} {:<14} {:>10}  {:<19}  {:<24} {}{}",
            x.kind,
            x.component,
            human(x.size),
            x.digest.short(),
            if x.platforms.is_empty() {
                "-".to_string()
            } else {
                x.platforms.join(",")
            },
            x.name,
            if x.unverified { "  (unverified)" } else { "" }
        );
    }
    println!(
        "{} artifacts, {} blobs: {} on disk, {} referenced, {} saved by dedup",
        t.artifacts,
        t.blobs,
        human(t.unique_bytes),
        human(t.referenced_bytes),
        human(t.referenced_bytes.saturating_sub(t.unique_bytes))
    );
    Ok(())
}
