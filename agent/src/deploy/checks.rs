//! The plan's readiness checks, judged from what the API returns. Objects
//! are read by path (`kubectl get --raw`: no API discovery per poll); each
//! check says what it still waits for, or that waiting is pointless (a Job
//! that failed).

use super::Kube;
use crate::boot::ready::{nodes_ready, rolled_out, workload_path};
use airgap_bundle::deploy::{Readiness, WorkloadKind};
use std::time::Duration;

/// A check's state now.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    Holds,
    /// Not yet: what is missing.
    Waiting(String),
    /// It will not hold by waiting (a Job failed): why.
    Failed(String),
}

/// One check now. `nodes`: every node of the cluster, for `nodes-ready`.
pub fn check(kube: &Kube, r: &Readiness, nodes: &[String]) -> Outcome {
    match judge(kube, r, nodes) {
        Ok(o) => o,
        Err(why) => Outcome::Waiting(why),
    }
}

fn judge(kube: &Kube, r: &Readiness, nodes: &[String]) -> Result<Outcome, String> {
    let waiting = |what: String| Ok(Outcome::Waiting(what));
    match r {
        Readiness::NodesReady => {
            let missing = nodes_ready(&kube.raw("/api/v1/nodes")?, nodes)?;
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
        } => Ok(rollout(kube, *kind, namespace, name)),
        Readiness::JobComplete { namespace, name } => {
            let v = kube.json(&format!(
                "/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
            ))?;
            Ok(job(&v, &format!("{namespace}/job/{name}")))
        }
        Readiness::Workloads { namespaces } => {
            let mut short = Vec::new();
            for ns in matching_namespaces(kube, namespaces)? {
                for kind in [WorkloadKind::Deployment, WorkloadKind::StatefulSet] {
                    let list = kube.json(workload_path(kind, &ns, "").trim_end_matches('/'))?;
                    for item in list["items"].as_array().map_or(&[][..], |a| a.as_slice()) {
                        let name = item["metadata"]["name"].as_str().unwrap_or("?");
                        let bytes = serde_json::to_vec(item).unwrap_or_default();
                        if let Err(e) = rolled_out(kind, &bytes) {
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
            let out = kube.run(&[
                "get",
                resource,
                name,
                "-n",
                namespace,
                "-o",
                "jsonpath={.status.phase}",
            ])?;
            let now = String::from_utf8_lossy(&out).trim().to_string();
            if &now == phase {
                Ok(Outcome::Holds)
            } else {
                waiting(format!(
                    "{namespace}/{resource}/{name} is {now:?}, not {phase}"
                ))
            }
        }
        Readiness::DefaultStorageClass { name } => {
            let v = kube.json(&format!("/apis/storage.k8s.io/v1/storageclasses/{name}"))?;
            let default =
                v["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"]
                    .as_str()
                    == Some("true");
            if default {
                Ok(Outcome::Holds)
            } else {
                waiting(format!("storageclass {name} is not marked default"))
            }
        }
        Readiness::Http { url, expect_status } => match http_status(url) {
            Ok(s) if s == *expect_status => Ok(Outcome::Holds),
            Ok(s) => waiting(format!("GET {url} answered {s}, not {expect_status}")),
            Err(e) => waiting(format!("GET {url}: {e}")),
        },
        // The engine runs hooks itself (they need the step's fill or
        // Vault's address); one reaching here is a defect, said as such.
        Readiness::Hook { .. } => Ok(Outcome::Failed(format!(
            "{r}: a hook is run by the deploy engine, not judged from the API"
        ))),
    }
}

fn kind_name(k: WorkloadKind) -> String {
    format!("{k:?}").to_lowercase()
}

fn rollout(kube: &Kube, kind: WorkloadKind, namespace: &str, name: &str) -> Outcome {
    let what = format!("{namespace}/{}/{name}", kind_name(kind));
    match kube.raw(&workload_path(kind, namespace, name)) {
        Ok(out) => match rolled_out(kind, &out) {
            Ok(()) => Outcome::Holds,
            Err(e) => Outcome::Waiting(format!("{what} not rolled out ({e})")),
        },
        Err(e) => Outcome::Waiting(format!("{what}: {e}")),
    }
}

/// A Job by its conditions: Complete holds, Failed will not get better.
pub fn job(v: &serde_json::Value, what: &str) -> Outcome {
    let conds = v["status"]["conditions"]
        .as_array()
        .map_or(&[][..], |a| a.as_slice());
    let has = |t: &str| {
        conds
            .iter()
            .find(|c| c["type"] == t && c["status"] == "True")
    };
    if has("Complete").is_some() {
        return Outcome::Holds;
    }
    if let Some(c) = has("Failed") {
        return Outcome::Failed(format!(
            "{what} failed: {} {}",
            c["reason"].as_str().unwrap_or(""),
            c["message"].as_str().unwrap_or("")
        ));
    }
    let n = |k: &str| v["status"][k].as_i64().unwrap_or(0);
    Outcome::Waiting(format!(
        "{what} not complete ({} active, {} succeeded, {} failed)",
        n("active"),
        n("succeeded"),
        n("failed")
    ))
}

/// The namespaces a `workloads` check names; `prefix-*` takes every
/// namespace with that prefix (listed from the API).
fn matching_namespaces(kube: &Kube, wanted: &[String]) -> Result<Vec<String>, String> {
    if !wanted.iter().any(|w| w.ends_with("-*")) {
        return Ok(wanted.to_vec());
    }
    let all = kube.json("/api/v1/namespaces")?;
    let names: Vec<String> = all["items"]
        .as_array()
        .map_or(&[][..], |a| a.as_slice())
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
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

/// The status code of `GET url` within 5 s, through the agent's one probe
/// client (the engine's checks run outside an async runtime).
pub fn http_status(url: &str) -> Result<u16, String> {
    if !url.starts_with("http://") {
        return Err("only http:// is implemented".to_string());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?
        .block_on(crate::probe::status(url, Duration::from_secs(5)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    /// K-PaaS's own plan (both storage kinds, every optional component)
    /// asks for no check this agent cannot run: its deploy is not refused.
    #[test]
    fn the_k_paas_plan_asks_for_nothing_this_agent_cannot_run() {
        let cat = airgap_bundle::catalog::Catalog::from_yaml(
            airgap_bundle::platforms::builtin("k-paas-1.4.1").unwrap(),
            "k-paas-1.4.1",
        )
        .unwrap();
        for storage in [
            "{type: nfs, nfs: {server: 10.0.0.9}}",
            "{type: rook-ceph, rook_ceph: {devices: [/dev/sdb]}}",
        ] {
            let c = airgap_bundle::cluster::Cluster::from_yaml(
                &format!("cluster_version: 1\nname: lab\nplatform: k-paas-1.4.1\nmaster: {{hostname: m, private_ip: 10.0.0.1}}\nworkers: [{{hostname: w1, private_ip: 10.0.0.2}}, {{hostname: w2, private_ip: 10.0.0.3}}, {{hostname: w3, private_ip: 10.0.0.4}}]\nnetwork: {{node_cidr: 10.0.0.0/24}}\nstorage: {storage}\nenable: [pipeline, source-control, kubeflow-runtimes]\n"),
                "lab.yaml",
            )
            .unwrap();
            let plan = airgap_bundle::plan::build(&cat, &c, None).unwrap();
            let refused: Vec<String> = plan
                .steps
                .iter()
                .flat_map(|s| s.unsupported_checks())
                .collect();
            assert_eq!(refused, Vec::<String>::new(), "{storage}");
            assert!(plan.steps.iter().any(|s| !s.releases.is_empty()));
        }
    }

    #[test]
    fn jobs_complete_fail_or_wait() {
        let j = |conds: &str| -> serde_json::Value {
            serde_json::from_str(&format!(
                r#"{{"status":{{"active":1,"conditions":{conds}}}}}"#
            ))
            .unwrap()
        };
        assert_eq!(
            job(&j(r#"[{"type":"Complete","status":"True"}]"#), "x"),
            Outcome::Holds
        );
        assert!(matches!(
            job(&j(r#"[{"type":"Failed","status":"True","reason":"BackoffLimitExceeded","message":"Job has reached the specified backoff limit"}]"#), "ns/job/x"),
            Outcome::Failed(m) if m.contains("BackoffLimitExceeded") && m.contains("ns/job/x")
        ));
        assert_eq!(
            job(&j("[]"), "ns/job/x"),
            Outcome::Waiting("ns/job/x not complete (1 active, 0 succeeded, 0 failed)".into())
        );
    }

    #[test]
    fn http_health_reads_the_status_line() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for code in ["200 OK", "503 Service Unavailable"] {
                let (mut c, _) = l.accept().unwrap();
                // The whole head before answering: closing a socket with
                // unread bytes resets it, and the client sees no answer.
                let mut req = Vec::new();
                let mut buf = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = c.read(&mut buf).unwrap();
                    assert!(n > 0, "the request ended early");
                    req.extend_from_slice(&buf[..n]);
                }
                assert!(String::from_utf8_lossy(&req).starts_with("GET /api/v2.0/health HTTP/1.1"));
                write!(c, "HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/api/v2.0/health");
        assert_eq!(http_status(&url).unwrap(), 200);
        assert_eq!(http_status(&url).unwrap(), 503);
        server.join().unwrap();
        // Nothing listening: an error, not a status.
        drop(std::net::TcpListener::bind("127.0.0.1:0"));
        assert!(http_status("http://127.0.0.1:1/x").is_err());
        assert!(http_status("https://127.0.0.1/x").is_err());
    }
}
