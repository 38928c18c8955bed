//! At every boot of the master after Vault was initialised: Vault comes
//! back sealed when its pod restarts; the agent unseals it with the key it
//! kept (`crate::vault`), without anyone typing. Bounded: the cluster and
//! Vault's pod come up first.

use super::cluster::{on_master, wait_every};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use crate::vault;
use anyhow::{Context, Result};
use std::time::Duration;

pub const STEP: Step = Step {
    id: StepId::Unseal,
    rerun: Rerun::EveryBoot,
    applies: kept,
    run: work,
};

/// After a reboot: kubelet, the control plane, then Vault's pod.
const UNSEAL_WAIT: Duration = Duration::from_secs(45 * 60);

fn kept(ctx: &Ctx) -> bool {
    on_master(ctx) && vault::key_path(&ctx.cfg.state_dir).is_file()
}

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let path = vault::key_path(&ctx.cfg.state_dir);
    let address = vault::read_kept(&path)?.address;
    let rt = ctx.rt.clone();
    wait_every(
        events,
        StepId::Unseal,
        &format!("Vault at {address} to answer"),
        UNSEAL_WAIT,
        super::cluster::CHEAP_PROBE_EVERY,
        || {
            rt.block_on(vault::status(&address))
                .map(Some)
                .map_err(|e| super::cluster::last_line(&e))
        },
    )?;
    rt.block_on(vault::unseal(&path))
        .with_context(|| format!("with the key kept in {}", path.display()))
}
