//! kubelet: the bundle's binary at its catalog path, its unit and kubeadm's
//! drop-in laid as Kubespray lays them, the node IP from the node config,
//! swap checked off. Neither started nor enabled here: kubeadm starts it,
//! and init or join enable it once the node is in the cluster, so a power
//! cut mid-init does not leave kubelet running a half-made control plane
//! at the next boot, beside the reset that undoes it. Once.

use super::cluster::{at, forms_cluster, tools, write_file};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use crate::kube;
use airgap_bundle::run::run;
use anyhow::{Context, Result, bail};

pub const STEP: Step = Step {
    id: StepId::Kubelet,
    rerun: Rerun::Once,
    applies: forms_cluster,
    run: work,
};

/// The swap devices in use, from /proc/swaps (its first line is a header).
pub fn swaps(proc_swaps: &str) -> Vec<String> {
    proc_swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

fn work(ctx: &mut Ctx, _: &mut Sink) -> Result<String> {
    let p = at(ctx, "proc/swaps");
    let on =
        swaps(&std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?);
    if !on.is_empty() {
        bail!(
            "swap is on ({}): kubelet refuses to run with swap; turn it off (`swapoff -a`, and remove it from /etc/fstab) and reboot",
            on.join(", ")
        );
    }
    let kubelet = tools(&ctx.cfg)?.kubelet;
    if !at(ctx, kubelet.trim_start_matches('/')).is_file() {
        bail!("{kubelet} (the bundle's kubelet, at its catalog install_path) is not in this image");
    }
    let me = ctx.me()?.clone();
    write_file(
        &at(ctx, kube::KUBELET_UNIT),
        &kube::kubelet_unit(&kubelet, ctx.cfg.runtime),
    )?;
    write_file(
        &at(ctx, kube::KUBELET_DROPIN),
        &kube::kubelet_dropin(&kubelet),
    )?;
    write_file(&at(ctx, kube::KUBELET_ENV), &kube::kubelet_env(&me))?;
    let host = std::fs::read_to_string(at(ctx, "etc/resolv.conf")).unwrap_or_default();
    write_file(
        &at(ctx, kube::KUBELET_RESOLV),
        &kube::resolv_conf(&host, &me),
    )?;
    let r = ctx.runner.as_ref();
    run("systemctl").arg("daemon-reload").ok_on(r)?;
    Ok(format!(
        "{kubelet}: unit and kubeadm drop-in laid, node IP {}, swap off",
        me.ip
    ))
}
