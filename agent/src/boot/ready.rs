//! Done when the plan's `kubernetes` readiness holds: on the master, every
//! node of the cluster Ready and kube-system's workloads (kube-proxy,
//! CoreDNS, the CNI) rolled out; on a worker, its own node Ready. Bounded;
//! while waiting, a progress line says what is not ready yet. Once.

use super::cluster::{forms_cluster, kubectl, wait};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use crate::kube;
use airgap_bundle::deploy::Readiness;
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

/// Which of `want` are Ready in `kubectl get nodes -o json`, and which not.
pub fn nodes_ready(json: &[u8], want: &[String]) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("kubectl's node list: {e}"))?;
    let ready: Vec<&str> = v["items"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .filter(|n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    Ok(want
        .iter()
        .filter(|w| !ready.contains(&w.as_str()))
        .cloned()
        .collect())
}

/// One readiness check now: None when it holds, else what is missing.
fn pending(ctx: &Ctx, check: &Readiness, nodes: &[String], kubeconfig: &str) -> Option<String> {
    let err = |e: anyhow::Error| {
        Some(
            format!("{e:#}")
                .lines()
                .last()
                .unwrap_or_default()
                .to_string(),
        )
    };
    match check {
        Readiness::NodesReady => {
            let out = match kubectl(ctx, kubeconfig, &["get", "nodes", "-o", "json"]) {
                Ok(o) => o,
                Err(e) => return err(e),
            };
            match nodes_ready(&out, nodes) {
                Ok(m) if m.is_empty() => None,
                Ok(m) => Some(format!("node(s) not Ready: {}", m.join(", "))),
                Err(e) => Some(e),
            }
        }
        Readiness::Rollout {
            kind,
            namespace,
            name,
        } => {
            let what = format!("{}/{name}", format!("{kind:?}").to_lowercase());
            match kubectl(
                ctx,
                kubeconfig,
                &["-n", namespace, "rollout", "status", &what, "--timeout=1s"],
            ) {
                Ok(_) => None,
                Err(_) => Some(format!("{namespace}/{what} not rolled out")),
            }
        }
        other => Some(format!("{other}: not a check the agent runs at first boot")),
    }
}

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let start = Instant::now();
    let me = ctx.me()?.clone();
    let (checks, nodes, kubeconfig): (Vec<Readiness>, Vec<String>, &str) = match me.role {
        Role::Master => (
            ctx.cfg.kubernetes.ready.clone(),
            ctx.cfg.nodes.iter().map(|n| n.hostname.clone()).collect(),
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
    for c in &checks {
        if let other @ (Readiness::JobComplete { .. }
        | Readiness::Workloads { .. }
        | Readiness::Phase { .. }
        | Readiness::DefaultStorageClass { .. }
        | Readiness::Http { .. }
        | Readiness::Hook { .. }) = c
        {
            anyhow::bail!(
                "the plan's kubernetes step asks for {other}: not a check the agent runs at first boot"
            );
        }
    }
    wait(
        events,
        StepId::Ready,
        "the cluster to be ready",
        READY_WAIT,
        || {
            let missing: Vec<String> = checks
                .iter()
                .filter_map(|c| pending(ctx, c, &nodes, kubeconfig))
                .collect();
            if missing.is_empty() {
                Ok(Some(()))
            } else {
                Err(missing.join("; "))
            }
        },
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_not_ready_or_absent_are_named() {
        let json = br#"{"items":[
            {"metadata":{"name":"m"},"status":{"conditions":[{"type":"Ready","status":"True"}]}},
            {"metadata":{"name":"w1"},"status":{"conditions":[{"type":"Ready","status":"False"}]}}]}"#;
        let want = ["m", "w1", "w2"].map(String::from);
        assert_eq!(nodes_ready(json, &want).unwrap(), ["w1", "w2"]);
        assert!(nodes_ready(json, &want[..1]).unwrap().is_empty());
        assert!(nodes_ready(b"{", &want).is_err());
    }
}
