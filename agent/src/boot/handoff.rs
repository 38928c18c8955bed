//! On a worker, the Harbor hand-off's second half: once the master has
//! filled the platform's registry (its status page names it), this node's
//! runtime mirrors point there first, the seed behind it. Waits as long as
//! the master's deploy may take, saying so; once.

use super::cluster::{on_worker, wait};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use crate::mirrors;
use airgap_bundle::node::{Role, Runtime};
use airgap_bundle::plan::Release;
use airgap_bundle::run::run;
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
        && ctx
            .cfg
            .platform
            .iter()
            .any(|s| s.releases.iter().any(|r| matches!(r, Release::Fill { .. })))
}

/// `deploy.registry` of a status page, once the hand-off recorded it.
pub fn registry_of(status_json: &[u8]) -> Result<Option<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(status_json).map_err(|e| format!("the master's status: {e}"))?;
    Ok(v["deploy"]["registry"].as_str().map(str::to_string))
}

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let master = ctx
        .cfg
        .nodes
        .iter()
        .find(|n| n.role == Role::Master)
        .context("the node config names no master")?;
    let url = format!("http://{}:{}/status.json", master.ip, ctx.cfg.seed_port);
    let rt = ctx.rt.clone();
    let get = || -> Result<Vec<u8>, String> {
        rt.block_on(async {
            let r = reqwest::Client::new()
                .get(&url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .map_err(|e| e.to_string())?;
            r.bytes()
                .await
                .map(|b| b.to_vec())
                .map_err(|e| e.to_string())
        })
    };
    let platform = wait(
        events,
        StepId::Handoff,
        &format!("the master ({url}) to fill the platform's registry"),
        HANDOFF_WAIT,
        || match get().and_then(|b| registry_of(&b)) {
            Ok(Some(r)) => Ok(Some(r)),
            Ok(None) => Err("not filled yet".into()),
            Err(e) => Err(e),
        },
    )?;
    let hosts = mirrors::registries(ctx.seed()?.repositories());
    let seed = format!("127.0.0.1:{}", ctx.cfg.seed_port);
    let changed = mirrors::write_all(&ctx.root, &hosts, &seed, Some(&platform))?;
    if ctx.cfg.runtime == Runtime::Crio {
        run("systemctl")
            .args(["reload", "crio"])
            .ok_on(ctx.runner.as_ref())?;
    }
    Ok(format!(
        "mirrors now {platform} first, the seed behind it ({} file(s))",
        changed.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_is_read_from_the_masters_status() {
        assert_eq!(
            registry_of(br#"{"deploy":{"registry":"10.10.0.10:30002/cp-portal-repository"}}"#),
            Ok(Some("10.10.0.10:30002/cp-portal-repository".into()))
        );
        assert_eq!(registry_of(br#"{"deploy":null}"#), Ok(None));
        assert!(registry_of(b"<html>").is_err());
    }
}
