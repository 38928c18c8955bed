//! The master: `kubeadm init` from the rendered config, phase by phase (a
//! progress line and a time for each), with the seed's CA laid into
//! /etc/kubernetes/pki first so the hash the workers pin is right; then an
//! admin kubeconfig for root. Once. A power cut mid-init leaves a half-done
//! control plane: the next boot finds it, resets it and runs init again; an
//! init that had finished (its last phase's objects exist) is never redone.

use super::cluster::{self, at, kubeadm_config, on_master, tools, wait, write_private};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::{Kind, Sink};
use crate::k8s::Failure;
use crate::kube;
use airgap_bundle::run::run;
use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::DaemonSet;
use std::time::{Duration, Instant};

pub const STEP: Step = Step {
    id: StepId::Init,
    rerun: Rerun::Once,
    applies: on_master,
    run: work,
};

/// `kubeadm init`'s phases in its own order. kubeadm 1.25 has no phase for
/// its wait for the control plane: the agent waits for the API server
/// between `etcd` and `upload-config` itself (bounded, with progress).
pub const PHASES: &[&str] = &[
    "preflight",
    "certs all",
    "kubeconfig all",
    "kubelet-start",
    "control-plane all",
    "etcd local",
    "upload-config all",
    "mark-control-plane",
    "bootstrap-token",
    "kubelet-finalize all",
    "addon all",
];
const WAIT_AFTER: &str = "etcd local";

/// The API server's first answer under emulation takes minutes.
pub const API_WAIT: Duration = Duration::from_secs(15 * 60);
/// After a reboot, how long an existing control plane gets to answer before
/// it is judged half-done.
const RESUME_WAIT: Duration = Duration::from_secs(5 * 60);

/// What a control plane leaves on disk from its first phases on.
const LEFTOVERS: &[&str] = &[
    "etc/kubernetes/manifests/kube-apiserver.yaml",
    "etc/kubernetes/manifests/etcd.yaml",
    "etc/kubernetes/admin.conf",
    "etc/kubernetes/kubelet.conf",
    "var/lib/etcd/member",
];

/// What an earlier `certs all` left in the PKI directory (everything but
/// the seed's CA), sorted.
fn certs_phase_files(ctx: &Ctx) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(at(ctx, kube::PKI_DIR))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "ca.crt" && n != "ca.key")
        .collect();
    v.sort();
    v
}

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let start = Instant::now();
    let i = cluster::inputs(ctx)?;
    let t = tools(&ctx.cfg)?;
    let r = ctx.runner.clone();
    if finalized(ctx) {
        events.emit(
            StepId::Init,
            Kind::Progress,
            "an earlier kubeadm init got to its last phases: checking whether it finished",
        )?;
        // Finished = its last phase's object exists (kube-proxy's DaemonSet).
        let finished = cluster::finished_before(
            ctx,
            events,
            StepId::Init,
            kube::ADMIN_CONF,
            RESUME_WAIT,
            |api| match api.get::<DaemonSet>("kube-system", "kube-proxy") {
                Ok(_) => Ok(Some(true)),
                Err(Failure::NotFound(_)) => Ok(Some(false)),
                Err(f) => Err(f),
            },
        )?;
        if finished {
            finish(ctx)?;
            return Ok(format!(
                "kubeadm init had finished before this boot: not redone; API at {}",
                i.endpoint()
            ));
        }
    }
    cluster::runtime_up(ctx, events, StepId::Init)?;
    let mut left: Vec<String> = LEFTOVERS
        .iter()
        .filter(|p| at(ctx, p).exists())
        .map(|p| p.to_string())
        .collect();
    // The certs phase writes its keys without syncing them: a power cut
    // before the manifests reach the disk can leave an empty apiserver.key
    // that the next `certs all` refuses to load. Anything in the PKI
    // directory but the seed's CA is such a leftover.
    let certs = certs_phase_files(ctx);
    if !certs.is_empty() {
        left.push(format!("{} ({})", kube::PKI_DIR, certs.join(", ")));
    }
    if !left.is_empty() {
        events.emit(
            StepId::Init,
            Kind::Progress,
            &format!(
                "a half-done kubeadm init was found ({}): resetting it and running init again",
                left.join(", ")
            ),
        )?;
        cluster::kubeadm_reset(ctx, &i).context("resetting the half-done kubeadm init")?;
        // kubeadm reset clears the PKI directory only when it can name it
        // (from a cluster that answers, or its default): clear it here too;
        // lay_ca writes the seed's CA again next.
        let pki = at(ctx, kube::PKI_DIR);
        match std::fs::remove_dir_all(&pki) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| format!("removing {}", pki.display()));
            }
            _ => {}
        }
        cluster::forget_images(ctx, events, StepId::Init)?;
    }
    lay_ca(ctx, events)?;
    let config = kubeadm_config(ctx);
    for phase in PHASES {
        let t0 = Instant::now();
        run(&t.kubeadm)
            .args(["init", "phase"])
            .args(phase.split(' '))
            .arg("--config")
            .arg(&config)
            .ok_on(r.as_ref())
            .with_context(|| format!("kubeadm init phase {phase}"))?;
        if *phase == "preflight" {
            // containerd unpacks the images it pulled without syncing: a
            // power cut minutes later can leave their files empty. Flushed
            // now, before anything runs from them.
            run("sync").ok_on(r.as_ref())?;
        }
        events.emit(
            StepId::Init,
            Kind::Progress,
            &format!(
                "kubeadm phase {phase}: done in {:.1} s",
                t0.elapsed().as_secs_f64()
            ),
        )?;
        if *phase == WAIT_AFTER {
            let t0 = Instant::now();
            // admin.conf is written by the kubeconfig phase, before this.
            let api = cluster::api(ctx, kube::ADMIN_CONF)?;
            wait(
                events,
                StepId::Init,
                "the API server to answer /readyz",
                API_WAIT,
                || {
                    api.readyz().map(|_| Some(())).map_err(|f| {
                        // What the control plane's containers are doing
                        // says more than the refused connection.
                        format!(
                            "{}; containers: {}",
                            readyz_failure(&f.to_string()),
                            cluster::containers(ctx)
                        )
                    })
                },
            )
            .map_err(|e| e.context(cluster::kubelet_log(ctx)))?;
            events.emit(
                StepId::Init,
                Kind::Progress,
                &format!(
                    "control plane answering: {:.1} s",
                    t0.elapsed().as_secs_f64()
                ),
            )?;
        }
    }
    finish(ctx)?;
    Ok(format!(
        "kubeadm init: Kubernetes {} control plane at {} in {:.0} s; root's kubeconfig /root/.kube/config",
        i.kubernetes_version,
        i.endpoint(),
        start.elapsed().as_secs_f64()
    ))
}

/// Whether an init got as far as `kubelet-finalize`, which points
/// kubelet.conf at the rotated client certificate: only then can it have
/// finished, and is the API server worth waiting for. Earlier than that, a
/// half-done init is reset without waiting.
fn finalized(ctx: &Ctx) -> bool {
    at(ctx, kube::ADMIN_CONF).exists()
        && std::fs::read_to_string(at(ctx, kube::KUBELET_CONF))
            .is_ok_and(|k| k.contains("kubelet-client-current.pem"))
}

/// The seed's CA as the cluster's: kubeadm keeps an existing CA, so the
/// hash the workers' seeds pin is this CA's.
fn lay_ca(ctx: &Ctx, events: &mut Sink) -> Result<()> {
    let s = cluster::secrets(ctx, events, StepId::Init, &["ca.crt", "ca.key"])?;
    let pki = at(ctx, kube::PKI_DIR);
    cluster::write_file(&pki.join("ca.crt"), &format!("{}\n", s[0]))?;
    write_private(&pki.join("ca.key"), format!("{}\n", s[1]).as_bytes())
}

/// A formed control plane: kubelet starts at every boot from now on, and
/// root gets the admin kubeconfig.
fn finish(ctx: &Ctx) -> Result<()> {
    run("systemctl")
        .args(["enable", "kubelet.service"])
        .ok_on(ctx.runner.as_ref())?;
    root_kubeconfig(ctx)
}

fn root_kubeconfig(ctx: &Ctx) -> Result<()> {
    let src = at(ctx, kube::ADMIN_CONF);
    let bytes = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
    write_private(&at(ctx, kube::ROOT_KUBECONFIG), &bytes)
}

/// The part of a failed `/readyz` worth a progress line: the checks that
/// failed (the API's report, one `[-]` line each; older clients printed it
/// on one line with its newlines escaped), else the error's last line (a
/// refused or timed-out connection).
fn readyz_failure(err: &str) -> String {
    let failed: Vec<&str> = err
        .split(['\n', '"'])
        .flat_map(|l| l.split("\\n"))
        .filter_map(|c| c.trim().strip_prefix("[-]"))
        .collect();
    if failed.is_empty() {
        err.lines().last().unwrap_or_default().to_string()
    } else {
        format!("readyz failing: {}", failed.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::readyz_failure;

    #[test]
    fn a_failed_readyz_is_summed_up_by_its_failing_checks() {
        let e = "running kubectl\nError from server (InternalError): an error on the server (\"[+]ping ok\\n[+]etcd ok\\n[-]poststarthook/rbac/bootstrap-roles failed: reason withheld\\n[+]shutdown ok\\nreadyz check failed\") has prevented the request from succeeding";
        assert_eq!(
            readyz_failure(e),
            "readyz failing: poststarthook/rbac/bootstrap-roles failed: reason withheld"
        );
        assert_eq!(
            readyz_failure(
                "running kubectl\nUnable to connect to the server: net/http: TLS handshake timeout"
            ),
            "Unable to connect to the server: net/http: TLS handshake timeout"
        );
    }
}
