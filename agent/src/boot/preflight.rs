//! The machine against this node's needs (CPU, memory, disk, kernel
//! modules and settings, ports, the bundle's medium). Once: a failure
//! changes nothing and names every failed check.

use super::{Ctx, Rerun, Step, StepId, always};
use crate::events::Sink;
use crate::{facts, preflight};
use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest};
use airgap_bundle::node::{NodeConfig, NodeEntry};
use anyhow::{Result, bail};
use std::path::Path;

pub const STEP: Step = Step {
    id: StepId::Preflight,
    rerun: Rerun::Once,
    applies: always,
    run: work,
};

fn work(ctx: &mut Ctx, _: &mut Sink) -> Result<String> {
    let all = checks(&ctx.root, &ctx.cfg, ctx.me()?);
    let failed: Vec<&preflight::Check> = all.iter().filter(|c| !c.ok).collect();
    if !failed.is_empty() {
        print_checks(&all, false);
        let list = failed
            .iter()
            .map(|c| format!("{} ({})", c.name, c.measured))
            .collect::<Vec<_>>()
            .join(", ");
        bail!("preflight failed, nothing was changed: {list}");
    }
    // Said at every first boot (the console and events carry it): whether
    // the firmware checked what booted this node.
    let sb = all
        .iter()
        .find(|c| c.name == "secure boot")
        .map_or("unknown", |c| c.measured.as_str());
    Ok(format!("{} checks passed; Secure Boot {sb}", all.len()))
}

/// Every check for `me` on this machine (the boot step and `kpaas-agent
/// preflight` share it).
pub fn checks(root: &Path, cfg: &NodeConfig, me: &NodeEntry) -> Vec<preflight::Check> {
    let needs = preflight::Needs::for_role(me.role, cfg.seed_port)
        .lowered(cfg.minimums.as_ref())
        .secure_boot(cfg.secure_boot);
    preflight::run(
        root,
        me,
        &needs,
        &facts::local_ips(root),
        &cfg.bundle,
        bundle_created(&cfg.bundle),
    )
}

fn bundle_created(bundle: &Path) -> Option<u64> {
    let b = std::fs::read(bundle.join(BUNDLE_JSON)).ok()?;
    airgap_bundle::fsutil::parse_rfc3339(&BundleManifest::from_bytes(&b).ok()?.created)
}

/// `kpaas-agent preflight`: every check, printed; an error when any failed.
pub fn report(root: &Path, cfg: &NodeConfig, me: &NodeEntry, json: bool) -> Result<()> {
    let all = checks(root, cfg, me);
    print_checks(&all, json);
    let failed = all.iter().filter(|c| !c.ok).count();
    if failed > 0 {
        bail!("{failed} preflight check(s) failed");
    }
    Ok(())
}

fn print_checks(checks: &[preflight::Check], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(checks).unwrap_or_default()
        );
        return;
    }
    for c in checks {
        println!(
            "{} {:<34} {:<28} want {}{}",
            if c.ok { "PASS" } else { "FAIL" },
            c.name,
            c.measured,
            c.want,
            if c.fix.is_empty() {
                String::new()
            } else {
                format!("  -> {}", c.fix)
            }
        );
    }
}
