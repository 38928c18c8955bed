//! Before anything changes for Kubernetes: the cluster secrets from the
//! seed, the kubeadm config rendered from the plan's `kubernetes` step, and
//! every image kubeadm will pull checked against the seed. A missing image
//! stops the boot here, naming all of them, with nothing yet changed. Once:
//! the config stays for the steps after it (and for a rerun after a reboot).

use super::cluster::{self, IMAGES_FILE, forms_cluster, kubeadm_config, tools, write_private};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use crate::kube;
use airgap_bundle::node::Role;
use airgap_bundle::run::run;
use anyhow::{Context, Result, bail};

pub const STEP: Step = Step {
    id: StepId::Prepare,
    rerun: Rerun::Once,
    applies: forms_cluster,
    run: work,
};

/// What each role needs from the seed's secrets.
pub const MASTER_SECRETS: &[&str] = &["bootstrap-token", "ca.crt", "ca.key"];
pub const WORKER_SECRETS: &[&str] = &["bootstrap-token", "ca-cert-hash"];

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let i = cluster::inputs(ctx)?;
    let role = ctx.me()?.role;
    let names = match role {
        Role::Master => MASTER_SECRETS,
        Role::Worker => WORKER_SECRETS,
    };
    let got = cluster::secrets(ctx, events, StepId::Prepare, names)?;
    let config = match role {
        Role::Master => {
            let dir = ctx.cfg.state_dir.join(kube::PATCHES_DIR);
            for (name, body) in kube::control_plane_patches() {
                cluster::write_file(&dir.join(name), &body)?;
            }
            kube::init_config(&i, &got[0], &dir)
        }
        Role::Worker => kube::join_config(&i, &got[0], &got[1]),
    };
    let path = kubeadm_config(ctx);
    write_private(&path, config.as_bytes())?;
    // The image list from the cluster part alone: a JoinConfiguration is
    // not what `config images list` reads.
    let listing = ctx.cfg.state_dir.join("kubeadm-cluster.yaml");
    write_private(&listing, kube::cluster_config(&i).as_bytes())?;
    let t = tools(&ctx.cfg)?;
    let out = run(&t.kubeadm)
        .args(["config", "images", "list", "--config"])
        .arg(&listing)
        .output_on(ctx.runner.as_ref())
        .context("listing the images kubeadm needs")?;
    let images: Vec<String> = String::from_utf8_lossy(&out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if images.is_empty() {
        bail!("`kubeadm config images list` named no image");
    }
    let seed = ctx.seed()?;
    let missing: Vec<&String> = images.iter().filter(|r| !seed.holds(r)).collect();
    if !missing.is_empty() {
        bail!(
            "the seed lacks {} of the {} images kubeadm {} needs (nothing was changed; rebuild the bundle with them):\n  - {}",
            missing.len(),
            images.len(),
            i.kubernetes_version,
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  - ")
        );
    }
    cluster::write_file(
        &ctx.cfg.state_dir.join(IMAGES_FILE),
        &format!("{}\n", images.join("\n")),
    )?;
    Ok(format!(
        "Kubernetes {} as {:?}, {} runtime; kubeadm config {}; all {} images kubeadm needs are in the seed",
        i.kubernetes_version,
        role,
        ctx.cfg.runtime.name(),
        path.display(),
        images.len()
    ))
}
