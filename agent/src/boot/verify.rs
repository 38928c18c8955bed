//! The bundle against the baked-in key: signature, bundle.json and its
//! files, then (fast mode) manifests and sizes while loading the seed, with
//! blobs hashed on first read; full mode hashes every blob first. Every
//! boot: media can change between boots.

use super::{Ctx, Rerun, Step, StepId, always};
use crate::events::Sink;
use crate::seed_registry::Seed;
use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest, SIGNATURE};
use airgap_bundle::node::{NodeConfig, VerifyMode};
use airgap_bundle::{Digest, sign};
use anyhow::{Context, Result, bail};
use std::sync::Arc;

pub const STEP: Step = Step {
    id: StepId::Verify,
    rerun: Rerun::EveryBoot,
    applies: always,
    run: work,
};

fn work(ctx: &mut Ctx, _: &mut Sink) -> Result<String> {
    let (seed, detail) = verify_bundle(&ctx.cfg).context("verifying the bundle")?;
    // An unfinished update serves the bundle it replaces behind its own.
    let seed = match crate::update::store::serving(&ctx.cfg.state_dir)? {
        Some(list) if list.len() > 1 && list[0] == ctx.cfg.bundle => {
            Seed::load_all(&list).context("serving an unfinished update's bundles")?
        }
        _ => seed,
    };
    ctx.seed = Some(Arc::new(seed));
    Ok(detail)
}

fn verify_bundle(cfg: &NodeConfig) -> Result<(Seed, String)> {
    let b = &cfg.bundle;
    let bj_path = b.join(BUNDLE_JSON);
    let bj = std::fs::read(&bj_path).with_context(|| format!("reading {}", bj_path.display()))?;
    // Before any hashing: a seed made for other content plans releases and
    // images this bundle may not hold.
    if let Some(want) = &cfg.bundle_digest {
        let got = Digest::of(&bj);
        if &got != want {
            bail!(
                "this node's media carries bundle {got}, but its seed was made for bundle {want}: boot it with the media its seed was made for, or make the seeds from this bundle (kpaas-builder seeds --bundle)"
            );
        }
    }
    let key_text = std::fs::read_to_string(&cfg.bundle_key)
        .with_context(|| format!("reading the bundle key {}", cfg.bundle_key.display()))?;
    let key =
        sign::parse_public(&key_text).with_context(|| format!("{}", cfg.bundle_key.display()))?;
    if cfg.verify == VerifyMode::Full {
        let r = airgap_bundle::verify::verify(b, Some(&key))?.into_result()?;
        let seed = Seed::load(b)?;
        seed.trust_all();
        return Ok((
            seed,
            format!("full: {} artifacts, {} blobs hashed", r.artifacts, r.blobs),
        ));
    }
    let sig = std::fs::read_to_string(b.join(SIGNATURE))
        .context("the bundle is not signed (bundle.json.sig missing)")?;
    let id = sign::verify(&key, &bj, &sig)?;
    let m = BundleManifest::from_bytes(&bj)?;
    for (f, d) in &m.files {
        let p = b.join(f);
        let got =
            Digest::of(&std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?);
        if &got != d {
            bail!("{f} was changed after signing (content {got}, bundle.json says {d})");
        }
    }
    let seed = Seed::load(b)?;
    Ok((
        seed,
        format!(
            "fast: signature by key {id}, {} artifacts, manifests and sizes checked; blobs hashed on first read",
            m.artifacts.len()
        ),
    ))
}
