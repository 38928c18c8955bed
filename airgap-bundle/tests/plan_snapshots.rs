//! The deploy plan is pure: snapshots of it for the real catalog, one cluster
//! with NFS and one with Rook-Ceph and the optional components. Set
//! UPDATE_SNAPSHOTS=1 to rewrite them after an intended change, then review
//! the diff.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use airgap_bundle::catalog::Catalog;
use airgap_bundle::cluster::{Cluster, EXAMPLE};
use airgap_bundle::plan;

fn snapshot(name: &str, got: &str) {
    kpaas_testkit::snapshot(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots"),
        name,
        got,
    );
}

fn kpaas() -> Catalog {
    Catalog::from_yaml(
        airgap_bundle::platforms::builtin("k-paas-1.4.1").unwrap(),
        "k-paas",
    )
    .unwrap()
}

#[test]
fn nfs_cluster_plan() {
    let c = Cluster::from_yaml(EXAMPLE, "example").unwrap();
    let p = plan::build(&kpaas(), &c, None).unwrap();
    // Upstream deploys nine components one after another; their real
    // dependencies allow five waves, the storage's users side by side.
    assert_eq!(p.waves.len(), 5, "{:?}", p.waves);
    assert_eq!(p.waves[2], ["harbor", "kubeflow", "mariadb", "vault"]);
    assert_eq!(p.waves[4], ["portal"]);
    assert!(
        p.steps
            .iter()
            .flat_map(|s| &s.artifacts)
            .all(|a| !a.contains("rook")),
        "rook artifacts must not be in an nfs plan"
    );
    assert!(
        p.capacity.by_kind.values().all(|k| k.bytes.is_none()),
        "sizes are unknown without a bundle, never guessed"
    );
    snapshot("plan-nfs.txt", &p.render());
}

#[test]
fn rook_cluster_with_optional_components() {
    let text = EXAMPLE
        .replace(
            "  type: nfs\n  nfs:\n    server: 10.10.0.20\n    path: /home/share/nfs\n",
            "  type: rook-ceph\n  rook_ceph:\n    devices: [/dev/vdb]\n",
        )
        .replace("enable: []", "enable: [pipeline, source-control]")
        .replace(
            "passwords: {}",
            "passwords: {harbor_admin: \"a-long-harbor-secret\"}",
        );
    let c = Cluster::from_yaml(&text, "rook").unwrap();
    let p = plan::build(&kpaas(), &c, None).unwrap();
    let last = p.waves.last().unwrap();
    assert_eq!(
        last,
        &["pipeline", "source-control"],
        "independent components share a wave"
    );
    let json = serde_json::to_string_pretty(&p).unwrap();
    assert!(
        !json.contains("a-long-harbor-secret"),
        "a password must never appear in a plan"
    );
    assert!(json.contains("rook-operator.yaml") && !json.contains("nfs-provisioner"));
    snapshot("plan-rook.json", &json);
}

#[test]
fn a_cluster_for_another_platform_is_refused() {
    let c = Cluster::from_yaml(
        &EXAMPLE.replace("platform: k-paas-1.4.1", "platform: demo"),
        "x",
    )
    .unwrap();
    let e = plan::build(&kpaas(), &c, None).unwrap_err().to_string();
    assert!(e.contains("\"demo\"") && e.contains("k-paas-1.4.1"), "{e}");
}

/// A readiness check the agent cannot run is refused when the plan is made
/// (`plan`, `seeds`, `check-offline` all build it), every one at once and
/// named by component, never found at a site after a wait.
#[test]
fn checks_the_agent_cannot_run_are_refused_at_plan_time() {
    let demo = airgap_bundle::platforms::builtin("demo").unwrap();
    // The cluster step runs only nodes-ready and rollouts; an https health
    // check is not implemented; a hook needs its install item.
    let text = demo
        .replacen(
            "          - {check: nodes-ready}\n",
            "          - {check: nodes-ready}\n          - {check: job-complete, namespace: kube-system, name: late}\n",
            1,
        )
        .replacen(
            "url: \"http://{cluster.public_ip}:32703/\"",
            "url: \"https://{cluster.public_ip}:32703/\"",
            1,
        )
        .replacen(
            "          - {check: hook, name: vault-cluster-secret}\n",
            "          - {check: hook, name: vault-cluster-secret}\n          - {check: hook, name: harbor-holds-bundle}\n",
            1,
        );
    assert_ne!(text, demo);
    let cat = Catalog::from_yaml(&text, "demo").unwrap();
    let c = Cluster::from_yaml(
        &EXAMPLE.replace("platform: k-paas-1.4.1", "platform: demo"),
        "example",
    )
    .unwrap();
    let e = plan::build(&cat, &c, None).unwrap_err().to_string();
    for want in [
        "kubernetes: kube-system: job late Complete",
        "the cluster step runs only nodes-ready and rollout checks",
        "only plain http:// health checks are implemented",
        "needs a `fill` install item in the same component",
    ] {
        assert!(e.contains(want), "{want}\nin:\n{e}");
    }
    // The demo as it is plans.
    let cat = Catalog::from_yaml(demo, "demo").unwrap();
    plan::build(&cat, &c, None).unwrap();
}
