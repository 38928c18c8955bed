//! Done when the plan's `kubernetes` readiness holds: on the master, every
//! node of the cluster Ready and kube-system's workloads (kube-proxy,
//! CoreDNS, the CNI) rolled out; on a worker, its own node Ready. Bounded;
//! while waiting, a progress line says what is not ready yet. Once.

use super::cluster::{self, forms_cluster, kubectl, wait};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use crate::kube;
use airgap_bundle::deploy::{CheckSite, Readiness, WorkloadKind};
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

/// Which of `want` are Ready in a node list (or a single Node), and which not.
pub fn nodes_ready(json: &[u8], want: &[String]) -> Result<Vec<String>, String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("the API's node list: {e}"))?;
    let one = std::slice::from_ref(&v);
    let ready: Vec<&str> = v["items"]
        .as_array()
        .map_or(one, |a| a.as_slice())
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

/// Whether a workload has rolled out, by the rules `kubectl rollout status`
/// applies, from the object itself: its controller saw the latest spec and
/// every wanted pod is updated and available. `Err` says what is short.
pub fn rolled_out(kind: WorkloadKind, json: &[u8]) -> Result<(), String> {
    let v: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| format!("the API's answer: {e}"))?;
    let n = |p: &str| v.pointer(p).and_then(|x| x.as_i64()).unwrap_or(0);
    if n("/status/observedGeneration") < n("/metadata/generation") {
        return Err("its controller has not seen the latest spec".into());
    }
    let (want, updated, available) = match kind {
        WorkloadKind::Deployment => (
            v.pointer("/spec/replicas")
                .and_then(|x| x.as_i64())
                .unwrap_or(1),
            n("/status/updatedReplicas"),
            n("/status/availableReplicas"),
        ),
        WorkloadKind::StatefulSet => (
            v.pointer("/spec/replicas")
                .and_then(|x| x.as_i64())
                .unwrap_or(1),
            n("/status/updatedReplicas"),
            n("/status/readyReplicas"),
        ),
        WorkloadKind::DaemonSet => (
            n("/status/desiredNumberScheduled"),
            n("/status/updatedNumberScheduled"),
            n("/status/numberAvailable"),
        ),
    };
    if updated < want || available < want {
        return Err(format!(
            "{updated} of {want} pod(s) updated, {available} available"
        ));
    }
    if kind == WorkloadKind::Deployment && n("/status/replicas") > updated {
        return Err("old pods are still terminating".into());
    }
    Ok(())
}

/// The API path of a workload: read with `kubectl get --raw`, which skips
/// the API discovery every plain `kubectl get` does first (dozens of
/// requests a poll, a real load on a control plane under emulation).
pub fn workload_path(kind: WorkloadKind, namespace: &str, name: &str) -> String {
    let plural = match kind {
        WorkloadKind::Deployment => "deployments",
        WorkloadKind::StatefulSet => "statefulsets",
        WorkloadKind::DaemonSet => "daemonsets",
    };
    format!("/apis/apps/v1/namespaces/{namespace}/{plural}/{name}")
}

/// One readiness check now: None when it holds, else what is missing.
fn pending(ctx: &Ctx, check: &Readiness, nodes: &[String], kubeconfig: &str) -> Option<String> {
    let get = |path: &str| {
        kubectl(ctx, kubeconfig, &["get", "--raw", path]).map_err(|e| cluster::last_line(&e))
    };
    match check {
        Readiness::NodesReady => {
            // A node's credentials may read its own Node only.
            let path = match nodes {
                [one] if kubeconfig == kube::KUBELET_CONF => format!("/api/v1/nodes/{one}"),
                _ => "/api/v1/nodes".to_string(),
            };
            match get(&path).and_then(|out| nodes_ready(&out, nodes)) {
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
            let what = format!("{namespace}/{}/{name}", format!("{kind:?}").to_lowercase());
            match get(&workload_path(*kind, namespace, name))
                .and_then(|out| rolled_out(*kind, &out))
            {
                Ok(()) => None,
                Err(e) => Some(format!("{what} not rolled out ({e})")),
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
    wait(
        events,
        StepId::Ready,
        "the cluster to be ready",
        READY_WAIT,
        || {
            let mut missing = Vec::new();
            for c in &checks {
                let Some(why) = pending(ctx, c, &nodes, kubeconfig) else {
                    continue;
                };
                if why.contains("Unable to connect") {
                    // The API does not answer: no other check can, and on
                    // the master what its containers do says more.
                    missing = vec![why];
                    if me.role == Role::Master {
                        missing.push(format!("containers: {}", cluster::containers(ctx)));
                    }
                    break;
                }
                missing.push(why);
            }
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
        // A worker reads its own Node, not a list.
        let own = br#"{"metadata":{"name":"w1"},"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#;
        assert!(nodes_ready(own, &want[1..2]).unwrap().is_empty());
    }

    #[test]
    fn rollouts_follow_kubectls_rules() {
        let ds = |observed: i64, desired: i64, updated: i64, avail: i64| {
            format!(
                r#"{{"metadata":{{"generation":2}},"status":{{"observedGeneration":{observed},"desiredNumberScheduled":{desired},"updatedNumberScheduled":{updated},"numberAvailable":{avail}}}}}"#
            )
        };
        assert!(rolled_out(WorkloadKind::DaemonSet, ds(2, 2, 2, 2).as_bytes()).is_ok());
        assert_eq!(
            rolled_out(WorkloadKind::DaemonSet, ds(2, 2, 2, 1).as_bytes()).unwrap_err(),
            "2 of 2 pod(s) updated, 1 available"
        );
        assert!(rolled_out(WorkloadKind::DaemonSet, ds(1, 2, 2, 2).as_bytes()).is_err());
        let dep = |replicas: i64, updated: i64, avail: i64| {
            format!(
                r#"{{"metadata":{{"generation":1}},"spec":{{"replicas":2}},"status":{{"observedGeneration":1,"replicas":{replicas},"updatedReplicas":{updated},"availableReplicas":{avail}}}}}"#
            )
        };
        assert!(rolled_out(WorkloadKind::Deployment, dep(2, 2, 2).as_bytes()).is_ok());
        assert!(rolled_out(WorkloadKind::Deployment, dep(2, 2, 1).as_bytes()).is_err());
        assert_eq!(
            rolled_out(WorkloadKind::Deployment, dep(3, 2, 2).as_bytes()).unwrap_err(),
            "old pods are still terminating"
        );
        // A Deployment without status yet is not rolled out.
        assert!(
            rolled_out(
                WorkloadKind::Deployment,
                br#"{"metadata":{"generation":1}}"#
            )
            .is_err()
        );
        assert!(rolled_out(WorkloadKind::StatefulSet, b"not json").is_err());
    }
}
