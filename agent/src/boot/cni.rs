//! The pod network, on the master once the control plane is up: the CNI
//! manifest the plan names (`cni_manifest`, a file in the bundle, its images
//! in the seed), applied with the bundle's kubectl, after its
//! cluster-specific settings (the plan's pod CIDR). Once.

use super::cluster::{self, bundle_file, on_master, write_file};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use crate::kube;
use anyhow::{Result, bail};

pub const STEP: Step = Step {
    id: StepId::Cni,
    rerun: Rerun::Once,
    applies: on_master,
    run: work,
};

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let i = cluster::inputs(ctx)?;
    let name = ctx
        .cfg
        .kubernetes
        .as_ref()
        .map(|k| k.cni_manifest.clone())
        .unwrap_or_default();
    let manifest = bundle_file(&ctx.cfg, &name)?;
    let text = String::from_utf8_lossy(&manifest);
    // The only CNI the agent configures today: flannel reads its network
    // from a ConfigMap the manifest mounts but does not carry.
    if !text.contains("kube-flannel-cfg") {
        bail!(
            "{name}: not a CNI the agent can configure (it knows flannel's kube-flannel-cfg); the pod network would stay down"
        );
    }
    let dir = &ctx.cfg.state_dir;
    let settings = dir.join("cni-settings.yaml");
    write_file(&settings, &kube::flannel_config("kube-system", &i.pod_cidr))?;
    let body = dir.join(&name);
    write_file(&body, &text)?;
    for f in [&settings, &body] {
        cluster::apply(ctx, events, StepId::Cni, f)?;
    }
    Ok(format!(
        "{name} applied (flannel, pod network {}, host-gw)",
        i.pod_cidr
    ))
}
