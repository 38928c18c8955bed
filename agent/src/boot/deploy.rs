//! On the master, once the cluster is ready: the platform's waves from the
//! node config, through the deploy engine (`crate::deploy`), which journals
//! each release on its own: this step is "once", and a boot after a failure
//! or a power cut runs it again, the engine skipping what it finished.

use super::cluster::on_master;
use super::{Ctx, Rerun, Step, StepId};
use crate::deploy::{Engine, Options};
use crate::events::Sink;
use anyhow::Result;

pub const STEP: Step = Step {
    id: StepId::Deploy,
    rerun: Rerun::Once,
    applies: deploys,
    run: work,
};

fn deploys(ctx: &Ctx) -> bool {
    on_master(ctx) && !ctx.cfg.platform.is_empty()
}

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let mut engine = Engine::new(&ctx.root, ctx.cfg.clone(), ctx.runner.clone())?;
    engine.seed = ctx.seed.clone();
    let done = engine.run(events, Options::default())?;
    // What this boot cost in processes and API requests, from the agent's
    // start (power-on, on a first boot) to here: the figure the speed work
    // is measured by.
    events.cpu(StepId::Deploy)?;
    let spawned = airgap_bundle::run::spawned();
    let total: u64 = spawned.iter().map(|(_, n)| n).sum();
    let by: Vec<String> = spawned.iter().map(|(p, n)| format!("{p} {n}")).collect();
    Ok(format!(
        "{done}; since the agent started: {total} process(es) spawned ({}), {} API request(s)",
        by.join(", "),
        crate::k8s::requests()
    ))
}
