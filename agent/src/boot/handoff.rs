//! On a worker, the Harbor hand-off's second half: once the master has
//! filled the platform's registry (its node endpoint names it), this node's
//! runtime mirrors point there first, the seed behind it. Waits as long as
//! the master's deploy may take, saying so; once.

use super::cluster::{on_worker, wait};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use crate::{mirrors, node_api, probe};
use airgap_bundle::kinds::Install;
use airgap_bundle::node::Role;
use anyhow::{Context, Result};
use std::time::Duration;

pub const STEP: Step = Step {
    id: StepId::Handoff,
    rerun: Rerun::Once,
    applies: hands_off,
    run: work,
};

/// The master's deploy (every wave up to the hand-off) under emulation.
const HANDOFF_WAIT: Duration = Duration::from_secs(3 * 60 * 60);

/// Workers of a platform whose plan fills a registry.
fn hands_off(ctx: &Ctx) -> bool {
    on_worker(ctx)
        && ctx.cfg.platform.iter().any(|s| {
            s.releases
                .iter()
                .any(|r| matches!(r.item, Install::Fill(_)))
        })
}

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let master = ctx
        .cfg
        .nodes
        .iter()
        .find(|n| n.role == Role::Master)
        .context("the node config names no master")?;
    // The master's node endpoint, not its status page: a contract between
    // agents (crate::node_api), versioned.
    let url = format!(
        "http://{}:{}{}",
        master.ip,
        ctx.cfg.seed_port,
        node_api::HANDOFF_PATH
    );
    let rt = ctx.rt.clone();
    let get = || -> Result<Option<String>, String> {
        let body = rt.block_on(probe::get(&url, Duration::from_secs(10)))?;
        Ok(node_api::Handoff::parse(&body)?.registry)
    };
    let platform = wait(
        events,
        StepId::Handoff,
        &format!("the master ({url}) to fill the platform's registry"),
        HANDOFF_WAIT,
        || match get() {
            Ok(Some(r)) => Ok(Some(r)),
            Ok(None) => Err("not filled yet".into()),
            Err(e) => Err(e),
        },
    )?;
    let hosts = mirrors::registries(ctx.seed()?.repositories());
    let seed = format!("127.0.0.1:{}", ctx.cfg.seed_port);
    let changed = mirrors::write_all(&ctx.root, &hosts, &seed, Some(&platform))?;
    crate::runtime::mirrors_changed(ctx.cfg.runtime, ctx.runner.as_ref())?;
    Ok(format!(
        "mirrors now {platform} first, the seed behind it ({} file(s))",
        changed.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_read_from_the_masters_node_endpoint() {
        let parse = |b: &[u8]| node_api::Handoff::parse(b).map(|h| h.registry);
        assert_eq!(
            parse(br#"{"api":"kpaas.node/v1","registry":"10.10.0.10:30002/cp-portal-repository"}"#),
            Ok(Some("10.10.0.10:30002/cp-portal-repository".into()))
        );
        assert_eq!(
            parse(br#"{"api":"kpaas.node/v1","registry":null}"#),
            Ok(None)
        );
        assert!(parse(b"<html>").is_err());
    }
}
