use super::*;
use crate::catalog::Catalog;
use crate::run::Host;

/// One item of every kind, as a catalog writes it.
const EVERY_KIND: &str = r#"
- chart: {chart: nginx, release: web, namespace: web, set: {replicas: 1, url: "http://{cluster.public_ip}:80"}}
- manifest: m.yaml
- manifest-filled: {file: f.yaml, replace: {"{IP}": "{cluster.public_ip}"}}
- default-storage-class: sc
- kustomize: {file: k.tar.gz, path: overlays/site}
- fill: {registry: "{cluster.public_ip}:30002", project: cp-portal-repository, harbor_api: true}
- vault-init: {address: "http://{cluster.public_ip}:31654"}
- vault-cluster: {address: "http://{cluster.public_ip}:31654", api_url: "https://{cluster.public_ip}:6443", bound_cidrs: ["{nodes.private_ip}/32"]}
- secret: {namespace: portal, name: admin, password: portal_admin}
- namespace: {name: kubeflow, labels: {istio-injection: enabled}}
"#;

fn cluster() -> Cluster {
    Cluster::from_yaml(
        "cluster_version: 1\nname: lab\nplatform: t\nmaster: {hostname: m, private_ip: 10.0.0.1}\nworkers: [{hostname: w, private_ip: 10.0.0.2}]\nnetwork: {node_cidr: 10.0.0.0/24}\nstorage: {type: nfs, nfs: {server: 10.0.0.9}}\n",
        "lab.yaml",
    )
    .unwrap()
}

#[test]
fn every_kind_parses_resolves_and_round_trips_as_a_release() {
    let items: Vec<Install> = serde_saphyr::from_str(EVERY_KIND).unwrap();
    let tags: Vec<&str> = items.iter().map(Install::tag).collect();
    assert_eq!(
        tags,
        [
            "chart",
            "manifest",
            "manifest-filled",
            "default-storage-class",
            "kustomize",
            "fill",
            "vault-init",
            "vault-cluster",
            "secret",
            "namespace"
        ]
    );
    let c = cluster();
    for x in &items {
        assert_eq!(x.problems(), Vec::<String>::new(), "{}", x.tag());
        let resolved = x.resolve(&c).unwrap();
        assert!(
            !serde_json::to_string(&resolved)
                .unwrap()
                .contains("{cluster."),
            "{}: every placeholder filled",
            x.tag()
        );
        // A release is the resolved item beside its artifact, keyed by the
        // kind's catalog key; it reads back the same.
        let r = Release {
            item: resolved,
            artifact: if x.reads().is_some() {
                "files.test/a".into()
            } else {
                String::new()
            },
        };
        let j = serde_json::to_value(&r).unwrap();
        assert!(j.get(x.tag()).is_some(), "{j}");
        assert_eq!(serde_json::from_value::<Release>(j).unwrap(), r);
        assert_eq!(r.name(), x.name());
    }
    // Who applies what: only the agent-applied kinds need code in the agent.
    let by_objects: Vec<&str> = items
        .iter()
        .filter(|x| x.by() == By::Objects)
        .map(Install::tag)
        .collect();
    assert_eq!(
        by_objects,
        ["manifest", "manifest-filled", "kustomize", "namespace"]
    );
    let Install::VaultCluster(v) = items[7].resolve(&c).unwrap() else {
        panic!()
    };
    assert_eq!(v.bound_cidrs, ["10.0.0.1/32", "10.0.0.2/32"]);
}

#[test]
fn every_hook_is_made_to_hold_by_one_kind() {
    for (hook, kind) in [
        (Hook::HarborHoldsBundle, "fill"),
        (Hook::VaultUnsealed, "vault-init"),
        (Hook::VaultClusterSecret, "vault-cluster"),
    ] {
        assert_eq!(Install::provider(hook), Some(kind), "{hook:?}");
    }
}

#[test]
fn unknown_kinds_and_fields_are_refused_by_name() {
    for (bad, named) in [
        ("{helmfile: x}", "helmfile"),
        ("{namespace: {name: a, colour: blue}}", "colour"),
        (
            "{chart: {chart: c, release: r, namespace: n, values: {}}}",
            "values",
        ),
    ] {
        let e = serde_saphyr::from_str::<Install>(bad).unwrap_err();
        assert!(e.to_string().contains(named), "{bad}: {e}");
    }
}

/// The kind added last (`namespace`) went in as its own module and one
/// line of the table: the catalog takes it, checks it, the plan describes
/// it, and it renders to the object the agent applies.
#[test]
fn a_namespace_item_is_checked_planned_and_rendered() {
    let catalog = |install: &str| {
        Catalog::from_yaml(
            &format!(
                "schema_version: 1\nplatform: {{name: t, version: \"1\"}}\ncomponents:\n  - name: mesh\n    artifacts:\n      - kind: image\n        ref: busybox:1.36\n    deploy:\n      - install:\n          - {install}\n"
            ),
            "t.yaml",
        )
    };
    let bad =
        catalog("namespace: {name: Mesh_1, labels: {\"-x\": ok, istio-injection: \"not ok!\"}}")
            .unwrap_err()
            .to_string();
    for want in [
        "\"Mesh_1\" is not a Kubernetes namespace",
        "\"-x\" is not a label key",
        "labels.istio-injection: \"not ok!\" is not a label value",
    ] {
        assert!(bad.contains(want), "{want:?} in:\n{bad}");
    }
    let cat =
        catalog("namespace: {name: istio-system, labels: {istio-injection: enabled}}").unwrap();
    let plan = crate::plan::build(&cat, &cluster(), None).unwrap();
    let r = &plan.steps[0].releases[0];
    assert_eq!(r.name(), "namespace/istio-system");
    assert!(
        plan.render()
            .contains("  namespace istio-system labelled istio-injection=enabled (server-side)\n"),
        "{}",
        plan.render()
    );
    let t = tempfile::tempdir().unwrap();
    let renderer = Renderer {
        runner: &Host,
        helm: "helm-is-not-needed".into(),
        kustomize: None,
        work: t.path().to_path_buf(),
        kube_version: None,
    };
    struct NoInputs;
    impl Inputs for NoInputs {
        fn artifact(&self, name: &str) -> Result<Vec<u8>> {
            anyhow::bail!("{name}: a namespace reads no artifact")
        }
    }
    let out = renderer.release(&NoInputs, "mesh", r).unwrap().unwrap();
    let object: serde_json::Value =
        serde_saphyr::from_str(std::str::from_utf8(&out.objects).unwrap()).unwrap();
    assert_eq!(
        object,
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "istio-system", "labels": {"istio-injection": "enabled"}}})
    );
}
