#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
use super::ready::{Outcome, Workload, job, judge, nodes_not_ready};
use super::*;
use crate::boot::StepId;
use crate::boot::cluster::wait;
use crate::events::Sink;
use airgap_bundle::deploy::{Readiness, WorkloadKind};
use std::time::Instant;

/// A kubeconfig for `server` with no credentials (a loopback listener).
pub fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let p = dir.join("kubeconfig");
    std::fs::write(
        &p,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    p
}

/// An API server that accepts connections and never answers: each request
/// ends at its bound, typed as such, and a wait on a readiness check fails
/// at the wait's bound, naming what it waited for.
#[test]
fn a_silent_api_server_fails_a_wait_at_its_bound_naming_it() {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            keep.lock().unwrap().push(c);
        }
    });
    let t = tempfile::tempdir().unwrap();
    let api = Api::from_kubeconfig(&kubeconfig(t.path(), &format!("http://{addr}")))
        .unwrap()
        .bounded(Duration::from_millis(400));
    assert!(matches!(api.readyz(), Err(Failure::TimedOut(w)) if w.contains("/readyz")));
    let check = Readiness::Rollout {
        kind: WorkloadKind::DaemonSet,
        namespace: "kube-system".into(),
        name: "kube-proxy".into(),
    };
    let mut events = Sink::open(&t.path().join("state")).unwrap().quiet();
    let start = Instant::now();
    let e = wait(
        &mut events,
        StepId::Ready,
        "kube-system/daemonset/kube-proxy to roll out",
        Duration::from_secs(2),
        || match judge(&api, &check, &[]) {
            Outcome::Holds => Ok(Some(())),
            Outcome::Waiting(w) | Outcome::Failed(w) => Err(w),
        },
    )
    .unwrap_err()
    .to_string();
    let took = start.elapsed();
    assert!(
        e.contains("kube-system/daemonset/kube-proxy to roll out") && e.contains("timed out"),
        "{e}"
    );
    // At its bound: the 2 s wait plus at most one request's bound.
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert!(
        !held.lock().unwrap().is_empty(),
        "the client never connected"
    );
}

/// Nothing listening: the request is transient (the API server may come),
/// not refused.
#[test]
fn an_absent_api_server_is_transient() {
    let t = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let api =
        Api::from_kubeconfig(&kubeconfig(t.path(), &format!("http://127.0.0.1:{port}"))).unwrap();
    let f = api
        .get_cluster::<k8s_openapi::api::core::v1::Node>("m")
        .unwrap_err();
    assert!(matches!(f, Failure::Transient(_)) && f.passes(), "{f:?}");
    // The transport's causes, down to the refused connection.
    assert!(
        f.to_string().starts_with("node/m") && f.to_string().contains("refused"),
        "{f}"
    );
}

#[test]
fn api_status_codes_become_outcomes() {
    let status = |code: u16| {
        kube::Error::Api(Box::new(kube::core::Status {
            code,
            message: "m".into(),
            ..Default::default()
        }))
    };
    assert_eq!(classify("x", status(404)), Failure::NotFound("x".into()));
    assert!(matches!(classify("x", status(503)), Failure::Transient(_)));
    assert!(matches!(classify("x", status(429)), Failure::Transient(_)));
    assert!(matches!(classify("x", status(403)), Failure::Refused(w) if w.contains("403 m")));
    assert!(matches!(classify("x", status(422)), Failure::Refused(_)));
}

#[test]
fn nodes_not_ready_or_absent_are_named() {
    let nodes: Vec<k8s_openapi::api::core::v1::Node> = serde_json::from_str(
        r#"[
        {"metadata":{"name":"m"},"status":{"conditions":[{"type":"Ready","status":"True"}]}},
        {"metadata":{"name":"w1"},"status":{"conditions":[{"type":"Ready","status":"False"}]}}]"#,
    )
    .unwrap();
    let want = ["m", "w1", "w2"].map(String::from);
    assert_eq!(nodes_not_ready(&nodes, &want), ["w1", "w2"]);
    assert!(nodes_not_ready(&nodes, &want[..1]).is_empty());
    assert_eq!(nodes_not_ready(&[], &want[..1]), ["m"]);
}

#[test]
fn rollouts_follow_kubectls_rules() {
    let rolled = |kind, json: &str| Workload::from_json(kind, json.as_bytes())?.rolled_out();
    let ds = |observed: i64, desired: i64, updated: i64, avail: i64| {
        format!(
            r#"{{"metadata":{{"generation":2}},"status":{{"observedGeneration":{observed},"desiredNumberScheduled":{desired},"updatedNumberScheduled":{updated},"numberAvailable":{avail}}}}}"#
        )
    };
    assert!(rolled(WorkloadKind::DaemonSet, &ds(2, 2, 2, 2)).is_ok());
    assert_eq!(
        rolled(WorkloadKind::DaemonSet, &ds(2, 2, 2, 1)).unwrap_err(),
        "2 of 2 pod(s) updated, 1 available"
    );
    assert!(rolled(WorkloadKind::DaemonSet, &ds(1, 2, 2, 2)).is_err());
    let dep = |replicas: i64, updated: i64, avail: i64| {
        format!(
            r#"{{"metadata":{{"generation":1}},"spec":{{"replicas":2,"selector":{{}},"template":{{}}}},"status":{{"observedGeneration":1,"replicas":{replicas},"updatedReplicas":{updated},"availableReplicas":{avail}}}}}"#
        )
    };
    assert!(rolled(WorkloadKind::Deployment, &dep(2, 2, 2)).is_ok());
    assert!(rolled(WorkloadKind::Deployment, &dep(2, 2, 1)).is_err());
    assert_eq!(
        rolled(WorkloadKind::Deployment, &dep(3, 2, 2)).unwrap_err(),
        "old pods are still terminating"
    );
    // A Deployment without status yet is not rolled out.
    assert!(rolled(WorkloadKind::Deployment, r#"{"metadata":{"generation":1}}"#).is_err());
    assert!(rolled(WorkloadKind::StatefulSet, "not json").is_err());
}

#[test]
fn jobs_complete_fail_or_wait() {
    let j = |conds: &str| -> k8s_openapi::api::batch::v1::Job {
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

/// An API server answering each request from `script` in turn (status and
/// body; `None` holds the request unanswered), logging "METHOD path".
fn scripted(script: Vec<Option<(u16, String)>>) -> (String, Arc<Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let seen = log.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let mut script = script.into_iter();
        for c in l.incoming().flatten() {
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            let mut len = 0;
            loop {
                let mut h = String::new();
                r.read_line(&mut h).unwrap();
                if h.trim().is_empty() {
                    break;
                }
                if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            r.read_exact(&mut vec![0; len]).unwrap();
            let mut words = line.split(' ');
            let (method, path) = (words.next().unwrap(), words.next().unwrap());
            seen.lock().unwrap().push(format!("{method} {path}"));
            match script.next().flatten() {
                Some((code, body)) => {
                    let mut c = c;
                    write!(
                        c,
                        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .unwrap();
                }
                None => held.push(c),
            }
        }
    });
    (format!("http://{addr}"), log)
}

/// A day-2 credential's secret is made even when the API server is busy at
/// first, or answers too late: a request that timed out is looked for
/// before it is made again; one that exists before we ask is refused.
#[test]
fn an_own_object_is_made_through_a_busy_api_server_and_once() {
    use k8s_openapi::api::core::v1::Secret;
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "bootstrap-token-abcdef", "namespace": "kube-system"}
    }))
    .unwrap();
    let body = serde_json::to_string(&secret).unwrap();
    let status = |code: u16, reason: &str| {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": reason, "reason": reason, "code": code})
        .to_string()
    };
    let t = tempfile::tempdir().unwrap();
    let api = |server: &str| {
        Api::from_kubeconfig(&kubeconfig(t.path(), server))
            .unwrap()
            .bounded(Duration::from_millis(800))
    };
    let post = "POST /api/v1/namespaces/kube-system/secrets?";
    let get = "GET /api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef";
    let calls = |log: &Arc<Mutex<Vec<String>>>| -> Vec<String> {
        log.lock()
            .unwrap()
            .iter()
            .map(|l| {
                if l.starts_with("POST") {
                    post.into()
                } else {
                    l.clone()
                }
            })
            .collect()
    };
    // Busy, then not there, then made.
    let (server, log) = scripted(vec![
        Some((500, status(500, "InternalError"))),
        Some((404, status(404, "NotFound"))),
        Some((201, body.clone())),
    ]);
    let made = api(&server)
        .create_own("kube-system", &secret, Duration::from_secs(30))
        .unwrap();
    assert_eq!(made.metadata.name, secret.metadata.name);
    assert_eq!(calls(&log), [post, get, post]);
    // No answer in time, yet done: found, not made twice.
    let (server, log) = scripted(vec![None, Some((200, body.clone()))]);
    api(&server)
        .create_own("kube-system", &secret, Duration::from_secs(30))
        .unwrap();
    assert_eq!(calls(&log), [post, get]);
    // There before we asked: not ours, refused at once.
    let (server, log) = scripted(vec![Some((409, status(409, "AlreadyExists")))]);
    let f = api(&server)
        .create_own("kube-system", &secret, Duration::from_secs(30))
        .unwrap_err();
    assert!(matches!(f, Failure::Refused(_)), "{f:?}");
    assert_eq!(calls(&log), [post]);
    // Busy throughout: the last failure, once its time is up.
    let (server, _) = scripted(vec![Some((500, status(500, "InternalError")))]);
    let f = api(&server)
        .create_own("kube-system", &secret, Duration::from_secs(1))
        .unwrap_err();
    assert!(matches!(f, Failure::Transient(_)), "{f:?}");
}
