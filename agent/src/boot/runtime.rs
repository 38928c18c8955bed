//! The container runtime for kubelet: kernel modules and sysctls, then
//! containerd's `config.toml` or CRI-O's drop-in (systemd cgroups, the
//! bundle's pause image; the registries are the mirrors step's), restarted,
//! and waited for until its CRI socket answers. Once.

use super::cluster::{self, at, forms_cluster, write_file};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use crate::kube;
use airgap_bundle::node::Runtime;
use airgap_bundle::run::run;
use anyhow::{Result, bail};

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
    match rt {
        Runtime::Containerd => write_file(
            &at(ctx, kube::CONTAINERD_CONFIG),
            &kube::containerd_config(&pause),
        )?,
        Runtime::Crio => {
            if !["usr/bin/crio", "usr/local/bin/crio"]
                .iter()
                .any(|p| at(ctx, p).exists())
            {
                bail!(
                    "the cluster file's container_manager is crio, but this image has no CRI-O (no /usr/bin/crio or /usr/local/bin/crio; Debian has no CRI-O package): build the image with CRI-O, or set container_manager: containerd"
                );
            }
            write_file(&at(ctx, kube::CRIO_DROPIN), &kube::crio_dropin(&pause))?
        }
    }
    run("systemctl").args(["enable", &unit]).ok_on(r)?;
    run("systemctl").args(["restart", &unit]).ok_on(r)?;
    let sock = rt.socket();
    cluster::runtime_up(ctx, events, StepId::Runtime)?;
    Ok(format!(
        "{} configured (sandbox {pause}, systemd cgroups, images from the seed) and answering on {sock}",
        rt.name()
    ))
}
