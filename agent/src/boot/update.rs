//! On the master, at every boot with an unfinished update: one a power cut
//! or a restart stopped in the middle is taken to its end from its journal
//! (`crate::update`), as the deploy resumes; one a failed release stopped
//! is named and left for the operator (`kpaas-agent update --resume` or
//! `--rollback`).

use super::cluster::on_master;
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use anyhow::Result;

pub const STEP: Step = Step {
    id: StepId::Update,
    rerun: Rerun::EveryBoot,
    applies: pending,
    run: work,
};

fn pending(ctx: &Ctx) -> bool {
    on_master(ctx) && crate::update::unfinished(&ctx.cfg.state_dir)
}

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    crate::update::at_boot(&ctx.root, &ctx.cfg, ctx.runner.clone(), events)
}
