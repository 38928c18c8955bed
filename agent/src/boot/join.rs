//! A worker: wait for the master's API (bounded backoff, a progress line),
//! then `kubeadm join` by the bootstrap token with discovery pinned to the
//! CA hash from the seed, so nothing the network says about the cluster is
//! trusted unless that CA signed it. A refused join (wrong token, wrong CA
//! hash) is reset at once, so nothing half-joined stays, and the reason is
//! the step's failure. Once; a power cut mid-join is reset and rejoined at
//! the next boot, a finished join is never redone.

use super::cluster::{self, at, kubeadm_config, on_worker, tools, wait_every};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::{Kind, Sink};
use crate::kube;
use airgap_bundle::node::{NodeEntry, Role};
use airgap_bundle::run::run;
use anyhow::{Result, anyhow};
use k8s_openapi::api::core::v1::Node;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const STEP: Step = Step {
    id: StepId::Join,
    rerun: Rerun::Once,
    applies: on_worker,
    run: work,
};

/// Workers may boot long before the master's control plane is up.
pub const MASTER_WAIT: Duration = Duration::from_secs(45 * 60);
const RESUME_WAIT: Duration = Duration::from_secs(3 * 60);
/// Joins that time out on a busy master are tried this often in all.
const JOIN_ATTEMPTS: u32 = 5;
/// Between them: the master catches its breath (none in unit tests).
const JOIN_PAUSE: Duration = if cfg!(test) {
    Duration::ZERO
} else {
    Duration::from_secs(15)
};

/// kubeadm 1.25's words when the cluster has no signature for the token
/// (it lapsed, was removed, or never existed) or one it cannot verify
/// (the token's secret half differs).
const UNKNOWN_TOKEN: &str = "could not find a JWS signature in the cluster-info ConfigMap";
const BAD_SIGNATURE: &str = "failed to verify JWS signature";

/// The master's node endpoint is asked this often (its agent may be
/// restarting); no answer leaves the verdict to kubeadm.
const ASK_ATTEMPTS: u32 = if cfg!(test) { 1 } else { 3 };

/// The master's own word on this seed's credential, from its node
/// endpoint: why it no longer honours it, or None (it does, it does not
/// know it yet, or it does not answer: kubeadm's discovery decides).
fn masters_word(ctx: &Ctx, token_id: &str) -> Option<String> {
    let m = ctx.cfg.nodes.iter().find(|n| n.role == Role::Master)?;
    let url = format!(
        "http://{}:{}{}/{token_id}",
        m.ip,
        ctx.cfg.seed_port,
        crate::node_api::JOIN_PATH
    );
    for _ in 0..ASK_ATTEMPTS {
        match ctx
            .rt
            .block_on(crate::probe::get(&url, Duration::from_secs(10)))
            .and_then(|b| crate::node_api::Join::parse(&b))
        {
            Ok(j) if j.honoured == Some(false) => return Some(j.detail),
            Ok(_) => return None,
            Err(_) => std::thread::sleep(JOIN_PAUSE / 3),
        }
    }
    None
}

/// The refusal an operator can act on: what happened and the day-2 seed
/// that lets this machine join.
pub fn no_longer_honoured(me: &NodeEntry, why: &str) -> String {
    format!(
        "the master no longer honours this seed's join credential: {why}. This machine joins with a day-2 seed instead: on the master run `kpaas-agent node add --hostname {} --ip {}{}` and boot this machine with the seed it writes",
        me.hostname,
        me.ip,
        me.mac
            .as_deref()
            .map(|m| format!(" --mac {m}"))
            .unwrap_or_else(|| " --mac <its MAC>".into())
    )
}

/// Why kubeadm refused, from its output: its own `error execution phase`
/// line when it printed one, else its last line.
pub fn refusal(kubeadm_error: &str) -> String {
    let lines: Vec<&str> = kubeadm_error
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .rev()
        .find(|l| l.starts_with("error execution phase"))
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_else(|| "kubeadm gave no reason".into())
}

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let start = Instant::now();
    let i = cluster::inputs(ctx)?;
    let t = tools(&ctx.cfg)?;
    let r = ctx.runner.clone();
    let me = i.me.hostname.clone();
    cluster::runtime_up(ctx, events, StepId::Join)?;
    if at(ctx, kube::KUBELET_CONF).exists() {
        // Joined = the cluster lists this node (kubelet registered it).
        let joined = cluster::finished_before(
            ctx,
            events,
            StepId::Join,
            kube::KUBELET_CONF,
            RESUME_WAIT,
            |api| api.get_cluster::<Node>(&me).map(|_| Some(true)),
        )?;
        if joined {
            run("systemctl")
                .args(["enable", "kubelet.service"])
                .ok_on(r.as_ref())?;
            return Ok(format!(
                "joined before this boot: not redone; node {me} is in the cluster"
            ));
        }
        events.emit(
            StepId::Join,
            Kind::Progress,
            "a half-done kubeadm join was found: resetting it and joining again",
        )?;
        cluster::kubeadm_reset(ctx, &i)?;
        cluster::forget_images(ctx, events, StepId::Join)?;
    }
    let api: SocketAddr = i.endpoint().parse()?;
    // Only whether something listens: trust comes from kubeadm's pinned
    // discovery, never from this probe.
    wait_every(
        events,
        StepId::Join,
        &format!("the master's API at {api}"),
        MASTER_WAIT,
        cluster::CHEAP_PROBE_EVERY,
        || {
            TcpStream::connect_timeout(&api, Duration::from_secs(3))
                .map(|_| Some(()))
                .map_err(|e| e.to_string())
        },
    )?;
    let token = super::credential::Token::parse(
        &cluster::secrets(ctx, events, StepId::Join, &["bootstrap-token"])?[0],
    )?;
    if let Some(why) = masters_word(ctx, &token.id) {
        return Err(anyhow!("{}", no_longer_honoured(&i.me, &why)));
    }
    let mut attempt = 1;
    loop {
        let Err(e) = run(&t.kubeadm)
            .args(["join", "--config"])
            .arg(kubeadm_config(ctx))
            .ok_on(r.as_ref())
        else {
            break;
        };
        let why = refusal(&format!("{e:#}"));
        // Nothing half-joined stays: kubelet's config, certificates, the
        // static pod directory go; a next attempt or boot starts clean.
        let undone = match cluster::kubeadm_reset(ctx, &i) {
            Ok(()) => "the node was reset; nothing half-joined is left".to_string(),
            Err(e) => format!("resetting the node failed too: {e:#}"),
        };
        // A master too busy to answer within kubeadm's own timeouts (one
        // request of the join timed out) is not a refusal: join again.
        if cluster::transient(&why) && attempt < JOIN_ATTEMPTS {
            events.emit(
                StepId::Join,
                Kind::Progress,
                &format!(
                    "join attempt {attempt} of {JOIN_ATTEMPTS} timed out on a busy master ({why}); {undone}; joining again"
                ),
            )?;
            attempt += 1;
            std::thread::sleep(JOIN_PAUSE);
            continue;
        }
        if cluster::transient(&why) {
            return Err(anyhow!(
                "kubeadm join to {api} timed out {attempt} times on a busy master: {why} ({undone})"
            ));
        }
        if why.contains(UNKNOWN_TOKEN) || why.contains(BAD_SIGNATURE) {
            return Err(anyhow!(
                "{} ({undone})",
                no_longer_honoured(
                    &i.me,
                    &format!(
                        "the cluster's cluster-info carries no valid signature for token {} (kubeadm: {why})",
                        token.id
                    )
                )
            ));
        }
        return Err(anyhow!(
            "kubeadm join to {api} was refused: {why} ({undone})"
        ));
    }
    // In the cluster: kubelet starts at every boot from now on.
    run("systemctl")
        .args(["enable", "kubelet.service"])
        .ok_on(r.as_ref())?;
    Ok(format!(
        "joined the cluster at {api} as {me} (discovery pinned to the seed's CA hash) in {:.0} s",
        start.elapsed().as_secs_f64()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_kubeadms_own_error_line() {
        let out = "`kubeadm join --config x` failed with exit status: 1:\n[preflight] Running pre-flight checks\nerror execution phase preflight: couldn't validate the identity of the API Server: cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"sha256:ab\" are pinned\nTo see the stack trace of this error execute with --v=5 or higher\n";
        assert!(refusal(out).starts_with("error execution phase preflight: couldn't validate"));
        assert_eq!(refusal("one\nlast\n"), "last");
    }

    #[test]
    fn a_lapsed_or_removed_credential_is_said_with_the_way_out() {
        // kubeadm 1.25's words after its discovery timeout, as it prints them.
        let out = "`kubeadm join --config x` failed with exit status: 1:\n[preflight] Running pre-flight checks\nerror execution phase preflight: couldn't validate the identity of the API Server: could not find a JWS signature in the cluster-info ConfigMap for token ID \"abcdef\"\nTo see the stack trace of this error execute with --v=5 or higher\n";
        assert!(refusal(out).contains(UNKNOWN_TOKEN));
        let me = NodeEntry {
            hostname: "kpaas-worker1".into(),
            ip: "10.10.0.11".parse().unwrap(),
            mac: Some("52:54:00:12:34:11".into()),
            role: Role::Worker,
        };
        let m = no_longer_honoured(&me, "token abcdef: withdrawn");
        assert!(
            m.starts_with(
                "the master no longer honours this seed's join credential: token abcdef: withdrawn."
            ),
            "{m}"
        );
        assert!(m.contains("kpaas-agent node add --hostname kpaas-worker1 --ip 10.10.0.11 --mac 52:54:00:12:34:11"), "{m}");
    }
}
