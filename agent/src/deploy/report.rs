//! What a failed component leaves for the person at the console: in each
//! namespace its checks name, the pods that are not running well (with
//! why), the latest warning events, and the last log lines of the first
//! failing pod. Best effort: what cannot be read is said, never fatal.

use super::Kube;
use crate::k8s::Api;
use airgap_bundle::deploy::Readiness;
use airgap_bundle::plan::Step;
use k8s_openapi::api::core::v1::{Event, Pod};
use std::collections::BTreeSet;

const EVENTS: usize = 6;
const LOG_LINES: i64 = 12;

pub fn report(kube: &Kube, s: &Step) -> String {
    let mut namespaces: BTreeSet<String> = BTreeSet::new();
    for r in &s.readiness {
        match r {
            Readiness::Rollout { namespace, .. }
            | Readiness::JobComplete { namespace, .. }
            | Readiness::Phase { namespace, .. } => {
                namespaces.insert(namespace.clone());
            }
            Readiness::Workloads { namespaces: ns } => {
                namespaces.extend(ns.iter().filter(|n| !n.ends_with('*')).cloned());
            }
            _ => {}
        }
    }
    if let Some(ns) = &s.namespace {
        namespaces.insert(ns.clone());
    }
    let mut out = Vec::new();
    for ns in namespaces {
        out.push(namespace_report(&kube.api, &ns));
    }
    out.join("\n")
}

/// A pod's trouble, or None when it runs (or ran) as it should.
pub fn pod_trouble(p: &Pod) -> Option<String> {
    let status = p.status.clone().unwrap_or_default();
    let phase = status.phase.as_deref().unwrap_or("?");
    if phase == "Succeeded" {
        return None;
    }
    let main = status.container_statuses.clone().unwrap_or_default();
    let statuses = status
        .init_container_statuses
        .clone()
        .unwrap_or_default()
        .into_iter()
        .chain(main.iter().cloned());
    let mut why = Vec::new();
    let mut all_ready = phase == "Running";
    for c in statuses {
        let st = c.state.clone().unwrap_or_default();
        if let Some(w) = &st.waiting {
            why.push(format!(
                "{} waiting: {} {}",
                c.name,
                w.reason.as_deref().unwrap_or(""),
                w.message.as_deref().unwrap_or("")
            ));
        } else if let Some(t) = st.terminated.as_ref().filter(|t| t.exit_code != 0) {
            why.push(format!(
                "{} exited {}: {}",
                c.name,
                t.exit_code,
                t.reason.as_deref().unwrap_or("")
            ));
        }
        if c.restart_count > 0 {
            why.push(format!("{} restarted {} time(s)", c.name, c.restart_count));
        }
        if !c.ready && main.iter().any(|x| x.name == c.name) {
            all_ready = false;
        }
    }
    if all_ready && why.is_empty() {
        return None;
    }
    if why.is_empty() {
        why.push(format!("phase {phase}"));
        if let Some(m) = status
            .conditions
            .unwrap_or_default()
            .into_iter()
            .find(|c| c.status == "False" && c.message.is_some())
            .and_then(|c| c.message)
        {
            why.push(m);
        }
    }
    Some(why.join("; ").trim().to_string())
}

fn namespace_report(api: &Api, ns: &str) -> String {
    let mut lines = vec![format!("namespace {ns}:")];
    let mut first_bad: Option<String> = None;
    match api.list::<Pod>(Some(ns)) {
        Ok(pods) => {
            for p in &pods {
                let name = p.metadata.name.clone().unwrap_or_else(|| "?".into());
                if let Some(t) = pod_trouble(p) {
                    lines.push(format!("  pod {name}: {t}"));
                    first_bad.get_or_insert(name);
                }
            }
        }
        Err(e) => lines.push(format!("  pods: {e}")),
    }
    match api.list::<Event>(Some(ns)) {
        Ok(all) => {
            let mut ev: Vec<&Event> = all
                .iter()
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .collect();
            let when = |e: &Event| {
                e.last_timestamp
                    .as_ref()
                    .map(|t| t.0.to_string())
                    .or(e.event_time.as_ref().map(|t| t.0.to_string()))
                    .unwrap_or_default()
            };
            ev.sort_by_key(|e| when(e));
            for e in ev.iter().rev().take(EVENTS).rev() {
                lines.push(format!(
                    "  event {}/{}: {}: {}",
                    e.involved_object.kind.as_deref().unwrap_or("?"),
                    e.involved_object.name.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or(""),
                    e.message.as_deref().unwrap_or("").trim()
                ));
            }
        }
        Err(e) => lines.push(format!("  events: {e}")),
    }
    if let Some(pod) = first_bad {
        match api.logs(ns, &pod, LOG_LINES) {
            Ok(text) => {
                lines.push(format!("  last log lines of {pod}:"));
                lines.extend(text.lines().map(|l| format!("    {l}")));
            }
            Err(e) => lines.push(format!("  log of {pod}: {e}")),
        }
    }
    if lines.len() == 1 {
        lines.push("  no failing pod, no warning event".into());
    }
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    #[test]
    fn a_pod_in_trouble_says_why() {
        let p = |s: &str| -> Pod { serde_json::from_str(s).unwrap() };
        assert_eq!(
            pod_trouble(&p(
                r#"{"status":{"phase":"Pending","containerStatuses":[{"name":"app","ready":false,"restartCount":0,"state":{"waiting":{"reason":"ImagePullBackOff","message":"Back-off pulling image \"x\""}}}]}}"#
            ))
            .unwrap(),
            "app waiting: ImagePullBackOff Back-off pulling image \"x\""
        );
        let crash = pod_trouble(&p(
            r#"{"status":{"phase":"Running","containerStatuses":[{"name":"db","ready":false,"restartCount":3,"state":{"terminated":{"exitCode":1,"reason":"Error"}}}]}}"#,
        ))
        .unwrap();
        assert!(
            crash.contains("db exited 1: Error") && crash.contains("restarted 3"),
            "{crash}"
        );
        assert_eq!(
            pod_trouble(&p(
                r#"{"status":{"phase":"Running","containerStatuses":[{"name":"ok","ready":true,"restartCount":0,"state":{"running":{}}}]}}"#
            )),
            None
        );
        assert_eq!(pod_trouble(&p(r#"{"status":{"phase":"Succeeded"}}"#)), None);
        let unscheduled = pod_trouble(&p(
            r#"{"status":{"phase":"Pending","conditions":[{"type":"PodScheduled","status":"False","message":"0/1 nodes are available"}]}}"#,
        ))
        .unwrap();
        assert!(
            unscheduled.contains("0/1 nodes are available"),
            "{unscheduled}"
        );
    }
}
