//! The container runtimes' mirrors: every registry the bundle holds images
//! from is sent to the node's seed registry, with no upstream fallback.
//! Once: the files stay.

use super::{Ctx, Rerun, Step, StepId, always};
use crate::events::Sink;
use crate::mirrors;
use anyhow::Result;

pub const STEP: Step = Step {
    id: StepId::Mirrors,
    rerun: Rerun::Once,
    applies: always,
    run: work,
};

fn work(ctx: &mut Ctx, _: &mut Sink) -> Result<String> {
    let hosts = mirrors::registries(ctx.seed()?.repositories());
    let seed = format!("127.0.0.1:{}", ctx.cfg.seed_port);
    let changed = mirrors::write_all(&ctx.root, &hosts, &seed, None)?;
    Ok(format!(
        "{} registries sent to the seed ({} files written)",
        hosts.len(),
        changed.len()
    ))
}
