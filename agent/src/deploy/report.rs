//! What a failed component leaves for the person at the console: in each
//! namespace its checks name, the pods that are not running well (with
//! why), the latest warning events, and the last log lines of the first
//! failing pod. Best effort: what cannot be read is said, never fatal.

use super::Kube;
use airgap_bundle::deploy::Readiness;
use airgap_bundle::plan::Step;
use std::collections::BTreeSet;

const EVENTS: usize = 6;
const LOG_LINES: &str = "12";

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
        out.push(namespace_report(kube, &ns));
    }
    out.join("\n")
}

/// A pod's trouble, or None when it runs (or ran) as it should.
pub fn pod_trouble(p: &serde_json::Value) -> Option<String> {
    let phase = p["status"]["phase"].as_str().unwrap_or("?");
    if phase == "Succeeded" {
        return None;
    }
    let statuses = p["status"]["initContainerStatuses"]
        .as_array()
        .into_iter()
        .chain(p["status"]["containerStatuses"].as_array())
        .flatten();
    let mut why = Vec::new();
    let mut all_ready = phase == "Running";
    for c in statuses {
        let name = c["name"].as_str().unwrap_or("?");
        let ready = c["ready"].as_bool().unwrap_or(false);
        let st = &c["state"];
        if let Some(w) = st.get("waiting") {
            why.push(format!(
                "{name} waiting: {} {}",
                w["reason"].as_str().unwrap_or(""),
                w["message"].as_str().unwrap_or("")
            ));
        } else if let Some(t) = st.get("terminated")
            && t["exitCode"].as_i64().unwrap_or(0) != 0
        {
            why.push(format!(
                "{name} exited {}: {}",
                t["exitCode"],
                t["reason"].as_str().unwrap_or("")
            ));
        }
        if c["restartCount"].as_i64().unwrap_or(0) > 0 {
            why.push(format!("{name} restarted {} time(s)", c["restartCount"]));
        }
        if !ready
            && p["status"]["containerStatuses"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x["name"] == c["name"]))
        {
            all_ready = false;
        }
    }
    if all_ready && why.is_empty() {
        return None;
    }
    if why.is_empty() {
        why.push(format!("phase {phase}"));
        if let Some(m) = p["status"]["conditions"].as_array().and_then(|c| {
            c.iter()
                .find(|c| c["status"] == "False" && c["message"].is_string())
                .and_then(|c| c["message"].as_str())
        }) {
            why.push(m.to_string());
        }
    }
    Some(why.join("; ").trim().to_string())
}

fn namespace_report(kube: &Kube, ns: &str) -> String {
    let mut lines = vec![format!("namespace {ns}:")];
    let mut first_bad: Option<String> = None;
    match kube.json(&format!("/api/v1/namespaces/{ns}/pods")) {
        Ok(v) => {
            for p in v["items"].as_array().map_or(&[][..], |a| a.as_slice()) {
                let name = p["metadata"]["name"].as_str().unwrap_or("?").to_string();
                if let Some(t) = pod_trouble(p) {
                    lines.push(format!("  pod {name}: {t}"));
                    first_bad.get_or_insert(name);
                }
            }
        }
        Err(e) => lines.push(format!("  pods: {e}")),
    }
    match kube.json(&format!("/api/v1/namespaces/{ns}/events")) {
        Ok(v) => {
            let mut ev: Vec<&serde_json::Value> = v["items"]
                .as_array()
                .map_or(&[][..], |a| a.as_slice())
                .iter()
                .filter(|e| e["type"] == "Warning")
                .collect();
            let when = |e: &serde_json::Value| {
                e["lastTimestamp"]
                    .as_str()
                    .or(e["eventTime"].as_str())
                    .unwrap_or("")
                    .to_string()
            };
            ev.sort_by_key(|e| when(e));
            for e in ev.iter().rev().take(EVENTS).rev() {
                lines.push(format!(
                    "  event {}/{}: {}: {}",
                    e["involvedObject"]["kind"].as_str().unwrap_or("?"),
                    e["involvedObject"]["name"].as_str().unwrap_or("?"),
                    e["reason"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("").trim()
                ));
            }
        }
        Err(e) => lines.push(format!("  events: {e}")),
    }
    if let Some(pod) = first_bad {
        match kube.run(&[
            "logs",
            "-n",
            ns,
            &pod,
            "--all-containers",
            "--tail",
            LOG_LINES,
        ]) {
            Ok(out) => {
                let text = String::from_utf8_lossy(&out);
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
        let p = |s: &str| -> serde_json::Value { serde_json::from_str(s).unwrap() };
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
