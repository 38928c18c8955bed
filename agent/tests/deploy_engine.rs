//! The deploy engine against a real control plane on loopback (the kit's
//! etcd, kube-apiserver, controller-manager and scheduler; kwok runs the
//! pods of two fake nodes, completing Job pods): `kpaas-agent deploy` with
//! the demo bundle's own helm, kubectl and kustomize, on the demo plan's
//! waves. Order, the image check before a wave, a bounded wait that fails
//! with a report, resume after kill -9, no release installed twice, and
//! `--from`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use airgap_bundle::catalog::Catalog;
use airgap_bundle::cluster::Cluster;
use airgap_bundle::deploy::{Hook, Readiness, Value};
use airgap_bundle::kinds::Install;
use airgap_bundle::kinds::fill::Fill;
use airgap_bundle::kinds::namespace::Namespace;
use airgap_bundle::node::NodeConfig;
use airgap_bundle::plan::{Release, Step};
use kpaas_testkit::control_plane::ControlPlane;
use kpaas_testkit::{DemoEnv, have_tools};
use support::{Node, PORTAL_ADMIN, text};

mod support;
use std::process::Command;
use std::time::{Duration, Instant};

const CLUSTER: &str = "cluster_version: 1\nname: lab\nplatform: demo\nmaster: {hostname: kpaas-master, private_ip: 10.10.0.10}\nnetwork: {node_cidr: 10.10.0.0/24}\nstorage: {type: nfs, nfs: {server: 10.10.0.20}}\n";

/// The demo plan's platform steps up to Kubeflow's place (the later waves
/// need real pods and node ports: the VM tests run them).
fn platform() -> Vec<Step> {
    let cat =
        Catalog::from_yaml(airgap_bundle::platforms::builtin("demo").unwrap(), "demo").unwrap();
    let c = Cluster::from_yaml(CLUSTER, "lab.yaml").unwrap();
    let plan = airgap_bundle::plan::build(&cat, &c, None).unwrap();
    plan.steps
        .into_iter()
        .filter(|s| ["core", "apps", "storage", "pipelines"].contains(&s.component.as_str()))
        .collect()
}

fn plan(node: &Node, platform: Vec<Step>) {
    node.write(&NodeConfig {
        platform,
        ..node.base_config()
    });
}

fn wave(component: &str) -> usize {
    platform()
        .iter()
        .find(|s| s.component == component)
        .unwrap()
        .wave
}

#[test]
fn the_engine_deploys_waves_refuses_unbundled_images_reports_failures_and_resumes() {
    if !have_tools(
        "deploy_engine",
        &["docker-registry", "nginx", "skopeo", "busybox"],
    ) {
        return;
    }
    let Some(mut cp) = ControlPlane::start("deploy_engine").unwrap() else {
        return;
    };
    cp.add_nodes(2).unwrap();
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let (bundle, _) = kpaas_testkit::demo_bundle(&env, t.path()).unwrap();
    let node = Node::new(t.path(), &bundle, &cp);
    plan(&node, platform());

    // 1. A chart whose rendered Deployment names an image the seed does not
    //    hold: the wave is refused before anything of it is applied.
    let mut bad = platform();
    let apps = bad.iter_mut().find(|s| s.component == "apps").unwrap();
    for r in &mut apps.releases {
        if let Install::Chart(c) = &mut r.item {
            c.set.insert(
                "image".into(),
                Value::Text("registry.demo.kpaas.test/demo/not-bundled:1.0".into()),
            );
        }
    }
    plan(&node, bad);
    let o = node.deploy(&["--timeout", "60"]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("refused before anything of it was applied")
            && out.contains("apps/demo: Deployment/demo.spec.template.spec.containers[0].image names registry.demo.kpaas.test/demo/not-bundled:1.0"),
        "the refusal names release, object and image:\n{out}"
    );
    assert!(
        node.helm(&["list", "-A", "-a", "-q"]).trim().is_empty(),
        "nothing installed"
    );
    assert!(
        cp.kubectl(&["get", "namespace", "demo"]).is_err(),
        "not even the namespace"
    );

    // 2. Nodes that take no pods: the hook Job never runs. The wait is
    //    bounded and the failure says what the cluster says.
    plan(&node, platform());
    cp.kubectl(&["taint", "nodes", "--all", "kpaas-test=hold:NoSchedule"])
        .unwrap();
    let o = node.deploy(&["--timeout", "20"]);
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    let failed = node
        .events()
        .into_iter()
        .rfind(|e| e["kind"] == "failed")
        .unwrap();
    let why = failed["detail"].as_str().unwrap();
    for want in [
        "apps: helm release demo/demo",
        "pod demo-pre-install",
        "untolerated taint",
        "FailedScheduling",
    ] {
        assert!(
            why.contains(want),
            "the failure should name {want:?}:\n{why}"
        );
    }
    let status = Command::new(env!("CARGO_BIN_EXE_kpaas-agent"))
        .args(["status", "--json", "--state-dir"])
        .arg(&node.state)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("\"deploy\"") && status.contains("failed"),
        "{status}"
    );

    // 3. Pods run again; a readiness check the test holds back keeps apps
    //    waiting, while pipelines, which does not depend on it, gets ready
    //    beside it; the agent is killed (-9) then.
    cp.kubectl(&["taint", "nodes", "--all", "kpaas-test-"])
        .unwrap();
    let mut held = platform();
    held.iter_mut()
        .find(|s| s.component == "apps")
        .unwrap()
        .readiness
        .push(Readiness::DefaultStorageClass {
            name: "demo-sc".into(),
        });
    // And a last wave, Harbor's place: the hand-off into a real registry
    // (distribution), checked by the `harbor-holds-bundle` hook.
    let registry = kpaas_testkit::servers::registry(&Default::default()).unwrap();
    held.push(Step {
        wave: wave("pipelines") + 1,
        component: "harbor".into(),
        namespace: None,
        release: None,
        depends_on: vec!["pipelines".into()],
        artifacts: Vec::new(),
        values: Default::default(),
        releases: vec![
            Release::of(Install::Fill(Fill {
                registry: registry.addr.clone(),
                project: "cp-portal-repository".into(),
                harbor_api: false,
            })),
            // The kind added by one module and one table line, applied by
            // the agent from its rendered object.
            Release::of(Install::Namespace(Namespace {
                name: "cp-mesh".into(),
                labels: [("istio-injection".to_string(), "enabled".to_string())].into(),
            })),
        ],
        readiness: vec![Readiness::Hook {
            name: Hook::HarborHoldsBundle,
        }],
        notes: Vec::new(),
    });
    plan(&node, held);
    let from_3 = node.events().len();
    let mut child = node.deploy_cmd(&["--timeout", "300"]).spawn().unwrap();
    let start = Instant::now();
    loop {
        let j = node.journal();
        if j["releases"]["apps/demo"].is_object()
            && j["releases"]["apps/demo-app.yaml"].is_object()
            && j["ready"]["pipelines"].is_object()
        {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the deploy ended early:\n{:#?}",
            node.details_since(0)
        );
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "releases not applied or pipelines not ready: {j}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The interrupted install left a failed release (step 2): it was
    // replaced, not upgraded.
    assert_eq!(node.release(), (1, "deployed".to_string()));
    assert!(!node.journal()["ready"]["apps"].is_object());
    cp.apply("apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata:\n  name: demo-sc\n  annotations: {storageclass.kubernetes.io/is-default-class: \"true\"}\nprovisioner: kubernetes.io/no-provisioner\n").unwrap();
    let seen = node.events().len();
    let o = node.deploy(&["--timeout", "300"]);
    assert!(o.status.success(), "{}", text(&o));
    let again = node.details_since(seen);
    for want in [
        "apps: demo applied at an earlier run",
        "apps: demo-app.yaml applied at an earlier run",
    ] {
        assert!(
            again.iter().any(|d| d.contains(want)),
            "{want:?} in {again:#?}"
        );
    }
    assert_eq!(
        node.release(),
        (1, "deployed".to_string()),
        "nothing installed twice"
    );
    // Across both runs, each component started only once what it depends
    // on was ready (at that run or an earlier one); what was ready before
    // the kill is not run again. The kustomization ran (its overlay's
    // prefix, namespace and image).
    assert!(
        again
            .iter()
            .any(|d| d.contains("(pipelines): ready at an earlier run")),
        "{again:#?}"
    );
    let both = node.details_since(from_3);
    let pos = |want: &str| both.iter().position(|d| d.contains(want));
    let ready = |c: &str| {
        pos(&format!("({c}): ready at an earlier run"))
            .into_iter()
            .chain(pos(&format!("{c}: ready in")))
            .min()
            .unwrap_or_else(|| panic!("{c} never ready in {both:#?}"))
    };
    for (c, after) in [
        ("apps", "core"),
        ("pipelines", "storage"),
        ("harbor", "pipelines"),
    ] {
        let started = pos(&format!("{c}: starting (after {after})"))
            .unwrap_or_else(|| panic!("{c} did not start in {both:#?}"));
        assert!(ready(after) < started, "{c} before {after}: {both:#?}");
        assert!(started < ready(c), "{both:#?}");
    }
    // The storage wave's StorageClass is the default.
    let sc = cp
        .kubectl(&[
            "get",
            "storageclass",
            "paasta-cp-storageclass",
            "-o",
            "jsonpath={.metadata.annotations}",
        ])
        .unwrap();
    assert!(
        sc.contains("\"storageclass.kubernetes.io/is-default-class\":\"true\""),
        "{sc}"
    );
    let image = cp
        .kubectl(&[
            "get",
            "deployment",
            "demo-pipeline",
            "-n",
            "ml",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .unwrap();
    assert_eq!(image, "registry.demo.kpaas.test/demo/app-b:1.0");
    let job = cp
        .kubectl(&[
            "get",
            "job",
            "demo-pre-install",
            "-n",
            "demo",
            "-o",
            "jsonpath={.status.succeeded}",
        ])
        .unwrap();
    assert_eq!(job, "1", "the hook Job ran");
    // The chart's `{secret.portal_admin}` value: the site's password in the
    // release, only a placeholder in the node config and the events.
    let values: serde_json::Value =
        serde_json::from_str(&node.helm(&["get", "values", "demo", "-n", "demo", "-o", "json"]))
            .unwrap();
    assert_eq!(values["admin_password"], PORTAL_ADMIN, "{values}");
    let config = std::fs::read_to_string(&node.config).unwrap();
    assert!(
        config.contains("{secret.portal_admin}") && !config.contains(PORTAL_ADMIN),
        "the node config keeps the placeholder"
    );
    assert!(
        !std::fs::read_to_string(node.state.join("events.jsonl"))
            .unwrap()
            .contains(PORTAL_ADMIN),
        "no password in the events"
    );
    // The hand-off: the journal names the registry (workers read it from
    // the status page), this node's mirrors point there first.
    assert_eq!(
        node.journal()["registry"],
        format!("{}/cp-portal-repository", registry.addr)
    );
    let hosts = std::fs::read_to_string(
        node.root
            .join("etc/containerd/certs.d/registry.demo.kpaas.test/hosts.toml"),
    )
    .unwrap();
    assert!(
        hosts.contains(&format!(
            "[host.\"http://{}/v2/cp-portal-repository/registry.demo.kpaas.test\"]",
            registry.addr
        )),
        "{hosts}"
    );
    assert!(
        both.iter().any(|d| d.contains("harbor: hand-off: ")),
        "{both:#?}"
    );
    assert_eq!(
        cp.kubectl(&[
            "get",
            "namespace",
            "cp-mesh",
            "-o",
            "jsonpath={.metadata.labels.istio-injection}",
        ])
        .unwrap(),
        "enabled",
        "the namespace item's object is on the cluster"
    );
    let done = node
        .events()
        .into_iter()
        .rfind(|e| e["kind"] == "done")
        .unwrap();
    assert!(
        done["detail"]
            .as_str()
            .unwrap()
            .starts_with("platform ready"),
        "{done}"
    );

    // 4. A run with everything done changes nothing; --from re-runs from a
    //    wave: Harbor's place only, then from the chart's wave, which
    //    upgrades the release (revision 2).
    let seen = node.events().len();
    assert!(node.deploy(&[]).status.success());
    let d = node.details_since(seen);
    let p = wave("pipelines");
    assert!(
        d.iter()
            .any(|x| x.contains(&format!("wave {p} (pipelines): ready at an earlier run"))),
        "{d:#?}"
    );
    assert_eq!(node.release().0, 1);
    let h = wave("pipelines") + 1;
    let o = node.deploy(&["--from", &h.to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(node.release().0, 1, "apps' wave is before --from {h}");
    let o = node.deploy(&["--from", &wave("apps").to_string()]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        node.release(),
        (2, "deployed".to_string()),
        "--from apps' wave upgrades it"
    );
}
