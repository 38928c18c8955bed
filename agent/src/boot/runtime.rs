//! The container runtime for kubelet: kernel modules and sysctls, then
//! containerd's `config.toml` or CRI-O's drop-in (systemd cgroups, the
//! bundle's pause image; the registries are the mirrors step's), restarted,
//! and waited for until its CRI socket answers. Once.

use super::cluster::{self, at, forms_cluster, write_file};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use crate::kube;
use airgap_bundle::run::run;
use anyhow::Result;

pub const STEP: Step = Step {
    id: StepId::Runtime,
    rerun: Rerun::Once,
    applies: forms_cluster,
    run: work,
};

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let r = ctx.runner.as_ref();
    write_file(&at(ctx, kube::MODULES_LOAD), &kube::modules_load())?;
    for m in kube::MODULES {
        run("modprobe").arg(m).ok_on(r)?;
    }
    let sysctl = at(ctx, kube::SYSCTL);
    write_file(&sysctl, &kube::sysctl_conf())?;
    run("sysctl").arg("-p").arg(&sysctl).ok_on(r)?;
    let pause = cluster::pause_image(ctx)?;
    let rt = ctx.cfg.runtime;
    let unit = format!("{}.service", rt.name());
    let (config, text) = crate::runtime::config(rt, &ctx.root, &pause)?;
    write_file(&at(ctx, config), &text)?;
    run("systemctl").args(["enable", &unit]).ok_on(r)?;
    run("systemctl").args(["restart", &unit]).ok_on(r)?;
    let sock = rt.socket();
    cluster::runtime_up(ctx, events, StepId::Runtime)?;
    Ok(format!(
        "{} configured (sandbox {pause}, systemd cgroups, images from the seed) and answering on {sock}",
        rt.name()
    ))
}
