//! Done when the plan's `kubernetes` readiness holds: on the master, every
//! node of the cluster Ready and kube-system's workloads (kube-proxy,
//! CoreDNS, the CNI) rolled out; on a worker, its own node Ready. Bounded;
//! while waiting, a progress line says what is not ready yet. Once. The
//! checks are judged by `crate::k8s::ready`, the deploy engine's judge; the
//! pause between looks ends when the API reports a change.

use super::cluster::{self, forms_cluster, wait_with};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use crate::k8s::ready::{Outcome, judge, pause};
use crate::kube;
use airgap_bundle::deploy::{CheckSite, Readiness};
use airgap_bundle::node::Role;
use anyhow::Result;
use std::time::{Duration, Instant};

pub const STEP: Step = Step {
    id: StepId::Ready,
    rerun: Rerun::Once,
    applies: forms_cluster,
    run: work,
};

/// Workers are booted by people: the master waits long for them.
pub const READY_WAIT: Duration = Duration::from_secs(60 * 60);

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let start = Instant::now();
    let me = ctx.me()?.clone();
    let (checks, nodes, kubeconfig): (Vec<Readiness>, Vec<String>, &str) = match me.role {
        Role::Master => (
            ctx.cfg
                .kubernetes
                .as_ref()
                .map(|k| k.ready.clone())
                .unwrap_or_default(),
            // The site's nodes: those added on day 2 in, removed ones out.
            crate::grow::ready_nodes(&ctx.cfg)
                .into_iter()
                .map(|n| n.hostname)
                .collect(),
            kube::ADMIN_CONF,
        ),
        // A node's credentials may read its own Node, not the rest.
        Role::Worker => (
            vec![Readiness::NodesReady],
            vec![me.hostname.clone()],
            kube::KUBELET_CONF,
        ),
    };
    let checks = if checks.is_empty() {
        vec![Readiness::NodesReady]
    } else {
        checks
    };
    // The same rule `plan` and `seeds` refuse by: a node config written by
    // hand is held to it before anything is waited on.
    let refused: Vec<String> = checks
        .iter()
        .filter_map(|c| c.unsupported(CheckSite::Cluster))
        .collect();
    if !refused.is_empty() {
        anyhow::bail!(
            "the plan's kubernetes step asks for checks the agent cannot run: {}",
            refused.join("; ")
        );
    }
    let api = cluster::api(ctx, kubeconfig)?;
    wait_with(
        events,
        StepId::Ready,
        "the cluster to be ready",
        READY_WAIT,
        || {
            // The API does not answer: no check can, and on the master what
            // its containers do says more.
            if let Err(f) = api.readyz() {
                let mut missing = vec![f.to_string()];
                if me.role == Role::Master {
                    missing.push(format!("containers: {}", cluster::containers(ctx)));
                }
                return Err(missing.join("; "));
            }
            let missing: Vec<String> = checks
                .iter()
                .filter_map(|c| match judge(&api, c, &nodes) {
                    Outcome::Holds => None,
                    Outcome::Waiting(w) | Outcome::Failed(w) => Some(w),
                })
                .collect();
            if missing.is_empty() {
                Ok(Some(()))
            } else {
                Err(missing.join("; "))
            }
        },
        |d| pause(&api, &checks, d),
    )?;
    // Where the node's CPU went from power-on to a ready cluster: the
    // critical-path report's first half.
    events.cpu(StepId::Ready)?;
    Ok(match me.role {
        Role::Master => format!(
            "cluster ready: {} node(s) Ready ({}); {} ({:.0} s)",
            nodes.len(),
            nodes.join(", "),
            checks
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join("; "),
            start.elapsed().as_secs_f64()
        ),
        Role::Worker => format!(
            "node {} Ready ({:.0} s)",
            me.hostname,
            start.elapsed().as_secs_f64()
        ),
    })
}
