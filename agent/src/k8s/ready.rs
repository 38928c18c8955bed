//! The one readiness judge: whether a plan's check holds now, from typed
//! objects read through [`Api`]. The cluster step (nodes Ready, kube-system
//! rolled out) and the deploy engine (every component's checks) ask it; a
//! check it cannot judge from the API (a hook) is the engine's, and a check
//! the agent cannot run at all is refused by `plan`/`seeds` before a node
//! ever boots (`Readiness::unsupported`).

use super::{Api, Failure};
use airgap_bundle::deploy::{Readiness, WorkloadKind};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::api::storage::v1::StorageClass;
use std::time::Duration;

/// A check's state now.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Holds,
    /// Not yet: what is missing.
    Waiting(String),
    /// It will not hold by waiting (a Job that failed): why.
    Failed(String),
}

/// One check now. `nodes`: the nodes `nodes-ready` wants; a single node is
/// read by name (a node's own credentials may read only its own Node).
pub fn judge(api: &Api, r: &Readiness, nodes: &[String]) -> Outcome {
    match try_judge(api, r, nodes) {
        Ok(o) => o,
        Err(f) => Outcome::Waiting(f.to_string()),
    }
}

fn try_judge(api: &Api, r: &Readiness, nodes: &[String]) -> Result<Outcome, Failure> {
    let waiting = |what: String| Ok(Outcome::Waiting(what));
    match r {
        Readiness::NodesReady => {
            let seen: Vec<Node> = match nodes {
                [one] => vec![api.get_cluster::<Node>(one)?],
                _ => api.list_cluster::<Node>()?,
            };
            let missing = nodes_not_ready(&seen, nodes);
            if missing.is_empty() {
                Ok(Outcome::Holds)
            } else {
                waiting(format!("node(s) not Ready: {}", missing.join(", ")))
            }
        }
        Readiness::Rollout {
            kind,
            namespace,
            name,
        } => {
            let what = format!("{namespace}/{}/{name}", kind_name(*kind));
            match Workload::get(api, *kind, namespace, name)?.rolled_out() {
                Ok(()) => Ok(Outcome::Holds),
                Err(e) => waiting(format!("{what} not rolled out ({e})")),
            }
        }
        Readiness::JobComplete { namespace, name } => Ok(job(
            &api.get::<Job>(namespace, name)?,
            &format!("{namespace}/job/{name}"),
        )),
        Readiness::Workloads { namespaces } => {
            let mut short = Vec::new();
            for ns in matching_namespaces(api, namespaces)? {
                for kind in [WorkloadKind::Deployment, WorkloadKind::StatefulSet] {
                    for (name, w) in Workload::list(api, kind, &ns)? {
                        if let Err(e) = w.rolled_out() {
                            short.push(format!("{ns}/{}/{name} ({e})", kind_name(kind)));
                        }
                    }
                }
            }
            if short.is_empty() {
                Ok(Outcome::Holds)
            } else {
                waiting(format!("not rolled out: {}", short.join(", ")))
            }
        }
        Readiness::Phase {
            resource,
            namespace,
            name,
            phase,
        } => {
            let now = api.phase(resource, namespace, name)?;
            if &now == phase {
                Ok(Outcome::Holds)
            } else {
                waiting(format!(
                    "{namespace}/{resource}/{name} is {now:?}, not {phase}"
                ))
            }
        }
        Readiness::DefaultStorageClass { name } => {
            let sc = api.get_cluster::<StorageClass>(name)?;
            let default = sc
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("storageclass.kubernetes.io/is-default-class"))
                .is_some_and(|v| v == "true");
            if default {
                Ok(Outcome::Holds)
            } else {
                waiting(format!("storageclass {name} is not marked default"))
            }
        }
        Readiness::Http { url, expect_status } => {
            match crate::probe::status_blocking(url, Duration::from_secs(5)) {
                Ok(s) if s == *expect_status => Ok(Outcome::Holds),
                Ok(s) => waiting(format!("GET {url} answered {s}, not {expect_status}")),
                Err(e) => waiting(format!("GET {url}: {e}")),
            }
        }
        // The engine runs hooks itself (they need the step's fill or
        // Vault's address); one reaching here is a defect, said as such.
        Readiness::Hook { .. } => Ok(Outcome::Failed(format!(
            "{r}: a hook is run by the deploy engine, not judged from the API"
        ))),
    }
}

pub fn kind_name(k: WorkloadKind) -> String {
    format!("{k:?}").to_lowercase()
}

/// Which of `want` are not Ready among `seen` (absent ones included).
pub fn nodes_not_ready(seen: &[Node], want: &[String]) -> Vec<String> {
    let ready: Vec<&str> = seen
        .iter()
        .filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    want.iter()
        .filter(|w| !ready.contains(&w.as_str()))
        .cloned()
        .collect()
}

/// A workload a rollout check reads.
#[derive(Debug)]
pub enum Workload {
    Deployment(Box<Deployment>),
    StatefulSet(Box<StatefulSet>),
    DaemonSet(Box<DaemonSet>),
}

impl Workload {
    pub fn get(api: &Api, kind: WorkloadKind, ns: &str, name: &str) -> Result<Workload, Failure> {
        Ok(match kind {
            WorkloadKind::Deployment => Workload::Deployment(Box::new(api.get(ns, name)?)),
            WorkloadKind::StatefulSet => Workload::StatefulSet(Box::new(api.get(ns, name)?)),
            WorkloadKind::DaemonSet => Workload::DaemonSet(Box::new(api.get(ns, name)?)),
        })
    }

    /// Every workload of a kind in a namespace, by name.
    pub fn list(
        api: &Api,
        kind: WorkloadKind,
        ns: &str,
    ) -> Result<Vec<(String, Workload)>, Failure> {
        fn named<
            K: k8s_openapi::Metadata<Ty = k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>,
        >(
            items: Vec<K>,
            wrap: fn(Box<K>) -> Workload,
        ) -> Vec<(String, Workload)> {
            items
                .into_iter()
                .map(|o| {
                    (
                        o.metadata().name.clone().unwrap_or_default(),
                        wrap(Box::new(o)),
                    )
                })
                .collect()
        }
        Ok(match kind {
            WorkloadKind::Deployment => named(api.list(Some(ns))?, Workload::Deployment),
            WorkloadKind::StatefulSet => named(api.list(Some(ns))?, Workload::StatefulSet),
            WorkloadKind::DaemonSet => named(api.list(Some(ns))?, Workload::DaemonSet),
        })
    }

    /// One from the API's JSON.
    #[cfg(test)]
    pub fn from_json(kind: WorkloadKind, json: &[u8]) -> Result<Workload, String> {
        let e = |e: serde_json::Error| format!("the API's answer: {e}");
        Ok(match kind {
            WorkloadKind::Deployment => {
                Workload::Deployment(serde_json::from_slice(json).map_err(e)?)
            }
            WorkloadKind::StatefulSet => {
                Workload::StatefulSet(serde_json::from_slice(json).map_err(e)?)
            }
            WorkloadKind::DaemonSet => {
                Workload::DaemonSet(serde_json::from_slice(json).map_err(e)?)
            }
        })
    }

    /// Whether it has rolled out, by the rules `kubectl rollout status`
    /// applies: its controller saw the latest spec and every wanted pod is
    /// updated and available. `Err` says what is short.
    pub fn rolled_out(&self) -> Result<(), String> {
        let n = |x: Option<i32>| i64::from(x.unwrap_or(0));
        let (generation, observed, want, updated, available, replicas) = match self {
            Workload::Deployment(d) => {
                let s = d.status.clone().unwrap_or_default();
                (
                    d.metadata.generation,
                    s.observed_generation,
                    i64::from(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
                    n(s.updated_replicas),
                    n(s.available_replicas),
                    n(s.replicas),
                )
            }
            Workload::StatefulSet(d) => {
                let s = d.status.clone().unwrap_or_default();
                (
                    d.metadata.generation,
                    s.observed_generation,
                    i64::from(d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)),
                    n(s.updated_replicas),
                    n(s.ready_replicas),
                    0,
                )
            }
            Workload::DaemonSet(d) => {
                let s = d.status.clone().unwrap_or_default();
                (
                    d.metadata.generation,
                    s.observed_generation,
                    i64::from(s.desired_number_scheduled),
                    n(s.updated_number_scheduled),
                    n(s.number_available),
                    0,
                )
            }
        };
        if observed.unwrap_or(0) < generation.unwrap_or(0) {
            return Err("its controller has not seen the latest spec".into());
        }
        if updated < want || available < want {
            return Err(format!(
                "{updated} of {want} pod(s) updated, {available} available"
            ));
        }
        if matches!(self, Workload::Deployment(_)) && replicas > updated {
            return Err("old pods are still terminating".into());
        }
        Ok(())
    }
}

/// A Job by its conditions: Complete holds, Failed will not get better.
pub fn job(j: &Job, what: &str) -> Outcome {
    let status = j.status.clone().unwrap_or_default();
    let conds = status.conditions.unwrap_or_default();
    let has = |t: &str| conds.iter().find(|c| c.type_ == t && c.status == "True");
    if has("Complete").is_some() {
        return Outcome::Holds;
    }
    if let Some(c) = has("Failed") {
        return Outcome::Failed(format!(
            "{what} failed: {} {}",
            c.reason.as_deref().unwrap_or(""),
            c.message.as_deref().unwrap_or("")
        ));
    }
    let n = |x: Option<i32>| x.unwrap_or(0);
    Outcome::Waiting(format!(
        "{what} not complete ({} active, {} succeeded, {} failed)",
        n(status.active),
        n(status.succeeded),
        n(status.failed)
    ))
}

/// The namespaces a `workloads` check names; `prefix-*` takes every
/// namespace with that prefix (listed from the API).
fn matching_namespaces(api: &Api, wanted: &[String]) -> Result<Vec<String>, Failure> {
    if !wanted.iter().any(|w| w.ends_with("-*")) {
        return Ok(wanted.to_vec());
    }
    let names: Vec<String> = api
        .list_cluster::<Namespace>()?
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    Ok(wanted
        .iter()
        .flat_map(|w| match w.strip_suffix('*') {
            Some(prefix) => names
                .iter()
                .filter(|n| n.starts_with(prefix))
                .cloned()
                .collect(),
            None => vec![w.clone()],
        })
        .collect())
}

/// Blocks until something a set of checks reads may have changed, or
/// `most` passes: the pause of a wait on them, cut short by the API's own
/// news (a watch) rather than a fixed sleep and a process per look.
pub fn pause(api: &Api, checks: &[Readiness], most: Duration) {
    // One watch: the first check's kind (a component's checks are mostly
    // of one kind; any change is a reason to judge all of them again).
    match checks.first() {
        Some(Readiness::NodesReady) => api.changes_cluster::<Node>(most),
        Some(Readiness::Rollout {
            kind: WorkloadKind::DaemonSet,
            namespace,
            ..
        }) => api.changes::<DaemonSet>(Some(namespace), most),
        Some(Readiness::Rollout {
            kind: WorkloadKind::StatefulSet,
            namespace,
            ..
        }) => api.changes::<StatefulSet>(Some(namespace), most),
        Some(Readiness::Rollout { namespace, .. }) => {
            api.changes::<Deployment>(Some(namespace), most)
        }
        Some(Readiness::JobComplete { namespace, .. }) => api.changes::<Job>(Some(namespace), most),
        Some(Readiness::Workloads { namespaces })
            if namespaces.len() == 1 && !namespaces[0].ends_with('*') =>
        {
            api.changes::<k8s_openapi::api::core::v1::Pod>(Some(&namespaces[0]), most)
        }
        _ => std::thread::sleep(most),
    }
}
