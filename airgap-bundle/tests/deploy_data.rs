//! The catalog's `deploy:` entries: validated with the rest of the catalog,
//! and resolved by the plan against the cluster file.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use airgap_bundle::catalog::Catalog;
use airgap_bundle::cluster::{Cluster, EXAMPLE};
use airgap_bundle::deploy::{Readiness, Value, WorkloadKind};
use airgap_bundle::plan;

fn builtin(name: &str) -> Catalog {
    Catalog::from_yaml(airgap_bundle::platforms::builtin(name).unwrap(), name).unwrap()
}

fn catalog_with(deploy: &str) -> String {
    format!(
        "schema_version: 1\nplatform: {{name: t, version: \"1\"}}\ncomponents:\n  - name: web\n    deploy:\n{deploy}"
    )
}

#[test]
fn an_unknown_placeholder_is_named_with_its_component_and_key() {
    let y = catalog_with(
        "      - values:\n          url: \"https://{cluster.domain}/\"\n        ready:\n          - {check: http, url: \"http://{master.ip}/\", expect_status: 200}\n",
    );
    let e = Catalog::from_yaml(&y, "t.yaml").unwrap_err();
    let all = e.to_string();
    assert!(all.starts_with("t.yaml: 2 problem(s)"), "{all}");
    for needle in [
        "components[0] (web).deploy[0].values.url: \"https://{cluster.domain}/\": unknown placeholder {cluster.domain} (known: cluster.name,",
        "components[0] (web).deploy[0].ready[0].url: \"http://{master.ip}/\": unknown placeholder {master.ip}",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn deploy_mistakes_are_reported_with_the_rest() {
    let y = catalog_with(concat!(
        "      - when: {storage: nfs}\n",
        "        release: Not_A_Label\n",
        "        colour: blue\n",
        "      - when: {storage: nfs}\n",
        "        values: {Bad-Key: 1, hosts: \"{workers.hostname}\"}\n",
        "        ready:\n",
        "          - {check: rollout, kind: Deployment, namespace: Web, name: \"{workers.hostname}\"}\n",
        "          - {check: http, url: \"ftp://x\", expect_status: 99}\n",
    ));
    let all = Catalog::from_yaml(&y, "t.yaml").unwrap_err().to_string();
    for needle in [
        "(web).deploy[0]: unknown field `colour`",
        "(web).deploy[1].values.Bad-Key: a value's name is lowercase",
        "(web).deploy[1].ready[0].namespace: \"Web\" is not a Kubernetes namespace",
        "(web).deploy[1].ready[0].name: \"{workers.hostname}\" names a list; only values may",
        "(web).deploy[1].ready[1].url: \"ftp://x\" must be an http",
        "(web).deploy[1].ready[1].expect_status: 99 is not an HTTP status",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
    // The hook error comes from serde and hides the rest of that entry.
    let y = catalog_with(
        "      - ready:\n          - {check: hook, name: make-coffee}\n      - {release: Not_A_Label}\n",
    );
    let all = Catalog::from_yaml(&y, "t.yaml").unwrap_err().to_string();
    for needle in [
        "(web).deploy[0]: unknown variant `make-coffee`",
        "(web).deploy[1].release: \"Not_A_Label\" must be a lowercase DNS label",
    ] {
        assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
    }
}

#[test]
fn deploy_entries_must_differ_by_when() {
    for (entries, want) in [
        (
            "      - when: {storage: nfs}\n      - when: {storage: nfs}\n",
            "(web).deploy[1].when: the same as an earlier entry's",
        ),
        (
            "      - when: {storage: nfs}\n      - release: web\n",
            "(web).deploy: with several entries, each needs a `when`",
        ),
    ] {
        let all = Catalog::from_yaml(&catalog_with(entries), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

fn step<'a>(p: &'a plan::Plan, component: &str) -> &'a plan::Step {
    p.steps.iter().find(|s| s.component == component).unwrap()
}

#[test]
fn the_seed_port_comes_from_the_cluster_file() {
    let c = Cluster::from_yaml(&format!("{EXAMPLE}seed_port: 5151\n"), "c").unwrap();
    let p = plan::build(&builtin("k-paas-1.4.1"), &c, None).unwrap();
    let source = step(&p, "kubernetes").values["image_source"].to_string();
    assert_eq!(
        source,
        "the node's seed registry (127.0.0.1:5151), no upstream fallback"
    );
    assert!(!p.render().contains(":5050"), "{}", p.render());
}

#[test]
fn the_demo_kubernetes_waits_for_what_kubeadm_and_flannel_deploy() {
    let c = Cluster::from_yaml(
        &EXAMPLE.replace("platform: k-paas-1.4.1", "platform: demo"),
        "c",
    )
    .unwrap();
    let p = plan::build(&builtin("demo"), &c, None).unwrap();
    let k = step(&p, "kubernetes");
    let rollout = |kind, name: &str| Readiness::Rollout {
        kind,
        namespace: "kube-system".into(),
        name: name.into(),
    };
    assert_eq!(
        k.readiness,
        [
            Readiness::NodesReady,
            rollout(WorkloadKind::DaemonSet, "kube-proxy"),
            rollout(WorkloadKind::DaemonSet, "kube-flannel-ds"),
            rollout(WorkloadKind::Deployment, "coredns"),
        ]
    );
    // The agent finds flannel's manifest among the component's file artifacts.
    assert_eq!(
        k.values["cni_manifest"],
        Value::Text("kube-flannel.yml".into())
    );
    assert!(
        k.artifacts
            .iter()
            .any(|a| a.starts_with("file:files.kpaas.local/kube-flannel.yml:")),
        "{:?}",
        k.artifacts
    );
    assert!(k.notes.is_empty(), "K-PaaS's notes are not the demo's");
    assert_eq!(
        k.values["workers"],
        Value::List(vec![
            Value::Text("kpaas-worker1=10.10.0.11".into()),
            Value::Text("kpaas-worker2=10.10.0.12".into()),
            Value::Text("kpaas-worker3=10.10.0.13".into()),
        ])
    );
    assert!(
        step(&p, "core").readiness.is_empty(),
        "images only: nothing to wait for"
    );
}

#[test]
fn a_portal_domain_replaces_the_fallback() {
    let c = Cluster::from_yaml(
        &EXAMPLE.replace(
            "  # domain: portal.example.internal",
            "  domain: portal.example.internal",
        ),
        "c",
    )
    .unwrap();
    let p = plan::build(&builtin("k-paas-1.4.1"), &c, None).unwrap();
    assert_eq!(
        step(&p, "portal").values["domain"],
        Value::Text("portal.example.internal".into())
    );
    assert_eq!(step(&p, "mariadb").values["node_port"], Value::Int(31306));
}
