//! The test kit's Kubernetes: the programs built from their Go modules print
//! the versions K-PaaS 1.4.1 pins, the kit's images are the ones kubeadm
//! asks for, and a real control plane on loopback (etcd, kube-apiserver,
//! controller-manager, scheduler, kwok nodes) runs what the real kubectl
//! applies and what the demo bundle's own helm installs from the bundle.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use kpaas_testkit::control_plane::ControlPlane;
use kpaas_testkit::{DemoEnv, content, have_tools, kit};
use std::path::{Path, PathBuf};

/// Every program prints its pinned version (or the documented nearest).
#[test]
fn kit_programs_print_their_pinned_versions() {
    let mut checks: Vec<(&str, Vec<&str>, &str)> = kit::VERSIONS
        .iter()
        .map(|(p, a, v)| (*p, a.to_vec(), *v))
        .collect();
    checks.extend([
        ("etcd", vec!["--version"], "etcd Version: 3.5.6"),
        ("etcdctl", vec!["version"], "etcdctl version: 3.5.6"),
        // The nearest the module proxy serves (tests/go/crictl/go.mod).
        ("crictl", vec!["--version"], "crictl version v1.30.0"),
        ("helm", vec!["version", "--short"], "v3.10.3"),
        ("kustomize", vec!["version"], "v5.0.0"),
        ("coredns", vec!["-version"], "CoreDNS-1.9.3"),
        ("bridge", vec![], "CNI bridge plugin v1.2.0"),
        ("pause", vec!["-v"], "pause.c v3.8"),
        ("kwok", vec!["--version"], kit::KWOK_VERSION),
        ("flanneld", vec!["--version"], "v0.22.0"),
        // Built from containernetworking/plugins (tests/go/flannel-cni-plugin/go.mod).
        ("flannel", vec![], "CNI flannel plugin v0.9.1"),
    ]);
    for (program, args, want) in checks {
        let Some(bin) = kit::program("kit_versions", program) else {
            return;
        };
        let out = std::process::Command::new(&bin)
            .args(&args)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            text.contains(want),
            "{program} {args:?} should print {want:?}, printed:\n{text}"
        );
    }
}

/// kubeadm v1.25.6, asked offline (an explicit version: it never looks up
/// "stable" on the internet), lists exactly the kit's images.
#[test]
fn kit_images_are_the_ones_kubeadm_pulls() {
    let Some(kubeadm) = kit::program("kit_images", "kubeadm") else {
        return;
    };
    let out = kit::run(
        &kubeadm,
        &[
            "config",
            "images",
            "list",
            "--kubernetes-version",
            "v1.25.6",
        ],
    )
    .unwrap();
    let listed: Vec<&str> = out
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let mut want: Vec<&str> = kit::KUBEADM_IMAGES.iter().map(|i| i.reference).collect();
    let mut got = listed.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "kubeadm config images list printed:\n{out}");
    // And the cached layout holds each of them (and flannel's) under its ref name.
    let index = std::fs::read_to_string(kit::images_layout().join("index.json")).unwrap();
    for i in kit::images() {
        assert!(
            index.contains(&format!("\"{}\"", i.layout_ref)),
            "{} missing from the kit's layout",
            i.reference
        );
    }
}

#[test]
fn kubectl_applies_the_demo_manifest_on_a_loopback_control_plane() {
    let Some(mut cp) = ControlPlane::start("loopback_kubectl").unwrap() else {
        return;
    };
    cp.add_nodes(2).unwrap();
    cp.kubectl(&["create", "namespace", "demo"]).unwrap();
    let manifest = content::demo_manifest(
        "sha256:0000000000000000000000000000000000000000000000000000000000000000",
    );
    let out = cp.apply(&manifest).unwrap();
    assert!(out.contains("deployment.apps/demo-app created"), "{out}");
    cp.kubectl(&[
        "wait",
        "-n",
        "demo",
        "--for=condition=Available",
        "deployment/demo-app",
        "--timeout=180s",
    ])
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.logs()));
    // The pod really was scheduled onto a kwok node and reported Running.
    let pods = cp
        .kubectl(&["get", "pods", "-n", "demo", "-o", "wide", "--no-headers"])
        .unwrap();
    assert!(
        pods.contains("Running") && pods.contains("kwok-node-"),
        "{pods}"
    );
}

/// The demo's flannel manifest, with a kube-flannel-cfg ConfigMap of the
/// shape the first-boot agent makes (upstream's cni-conf.json, net-conf.json
/// with the pod CIDR), is valid for the v1.25 API: its DaemonSet rolls out on
/// every node (kwok runs the pods) and its service account may do what
/// `flanneld --kube-subnet-mgr` does.
#[test]
fn the_flannel_manifest_rolls_out_on_a_loopback_control_plane() {
    let Some(mut cp) = ControlPlane::start("loopback_flannel").unwrap() else {
        return;
    };
    cp.add_nodes(2).unwrap();
    let cfg = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kube-flannel-cfg, namespace: kube-system}\ndata:\n  cni-conf.json: '{\"name\": \"cbr0\", \"cniVersion\": \"0.3.1\", \"plugins\": [{\"type\": \"flannel\", \"delegate\": {\"hairpinMode\": true, \"isDefaultGateway\": true}}, {\"type\": \"portmap\", \"capabilities\": {\"portMappings\": true}}]}'\n  net-conf.json: '{\"Network\": \"10.244.0.0/16\", \"Backend\": {\"Type\": \"vxlan\"}}'\n";
    cp.apply(cfg).unwrap();
    let out = cp.apply(kit::FLANNEL_MANIFEST).unwrap();
    for made in [
        "clusterrole.rbac.authorization.k8s.io/flannel created",
        "clusterrolebinding.rbac.authorization.k8s.io/flannel created",
        "serviceaccount/flannel created",
        "daemonset.apps/kube-flannel-ds created",
    ] {
        assert!(out.contains(made), "{out}");
    }
    cp.kubectl(&[
        "rollout",
        "status",
        "-n",
        "kube-system",
        "daemonset/kube-flannel-ds",
        "--timeout=180s",
    ])
    .unwrap_or_else(|e| panic!("{e:#}\n{}", cp.logs()));
    let ready = cp
        .kubectl(&[
            "get",
            "daemonset",
            "kube-flannel-ds",
            "-n",
            "kube-system",
            "-o",
            "jsonpath={.status.numberReady}",
        ])
        .unwrap();
    assert_eq!(ready.trim(), "2");
    // --kube-subnet-mgr reads nodes and patches their status.
    let sa = "system:serviceaccount:kube-system:flannel";
    // (kubectl reads "nodes/status" as the node named status: --subresource.)
    for (verb, sub) in [("list", ""), ("watch", ""), ("patch", "status")] {
        let a = [
            "auth",
            "can-i",
            verb,
            "nodes",
            "--subresource",
            sub,
            "--as",
            sa,
        ];
        // kit::run gives stderr too: kubectl warns that nodes have no namespace.
        let can = cp.kubectl(&a).unwrap();
        assert_eq!(can.lines().next(), Some("yes"), "{a:?}: {can}");
    }
}

/// The file a bundle holds for `name` (files and charts are blobs of the
/// one OCI layout; bundle.json says which).
fn bundled(bundle: &Path, kind: &str, name: &str) -> PathBuf {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("bundle.json")).unwrap()).unwrap();
    let a = m["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| {
            // Names keep the reference: files.kpaas.local/helm:amd64,
            // charts…/demo-app:0.1.0.
            let n = a["name"].as_str().unwrap_or_default();
            let last = n.rsplit('/').next().unwrap_or_default();
            a["kind"] == kind && last.split(':').next() == Some(name)
        })
        .unwrap_or_else(|| panic!("no {kind} {name} in the bundle"));
    let d = a["content_digest"]
        .as_str()
        .unwrap_or_else(|| a["digest"].as_str().unwrap());
    bundle.join("oci/blobs/sha256").join(&d[7..])
}

#[test]
fn helm_from_the_demo_bundle_installs_the_demo_chart() {
    if !have_tools(
        "loopback_helm",
        &["docker-registry", "nginx", "skopeo", "busybox"],
    ) {
        return;
    }
    let Some(mut cp) = ControlPlane::start("loopback_helm").unwrap() else {
        return;
    };
    cp.add_nodes(1).unwrap();
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let (bundle, _) = kpaas_testkit::demo_bundle(&env, t.path()).unwrap();
    // helm out of the bundle, as a node would install it.
    let helm = t.path().join("helm");
    std::fs::copy(bundled(&bundle, "file", "helm"), &helm).unwrap();
    std::fs::set_permissions(&helm, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let chart = t.path().join("demo-app-0.1.0.tgz");
    std::fs::copy(bundled(&bundle, "chart", "demo-app"), &chart).unwrap();
    let helm_cmd = |args: &[&str]| {
        let mut c = std::process::Command::new(&helm);
        c.args(args)
            .arg("--kubeconfig")
            .arg(&cp.kubeconfig)
            // Helm's own state stays in the test's directory.
            .env("HELM_CACHE_HOME", t.path().join("helm-cache"))
            .env("HELM_CONFIG_HOME", t.path().join("helm-config"))
            .env("HELM_DATA_HOME", t.path().join("helm-data"));
        c.output().unwrap()
    };
    let chart_s = chart.to_string_lossy().to_string();
    let o = helm_cmd(&[
        "install",
        "demo",
        &chart_s,
        "-n",
        "demo",
        "--create-namespace",
        "--wait",
        "--timeout",
        "180s",
    ]);
    assert!(
        o.status.success(),
        "helm install: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        cp.logs()
    );
    let list = helm_cmd(&["list", "-n", "demo", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list[0]["name"], "demo", "{list}");
    assert_eq!(list[0]["status"], "deployed", "{list}");
    assert_eq!(list[0]["chart"], "demo-app-0.1.0", "{list}");
    let ready = cp
        .kubectl(&[
            "get",
            "deployment",
            "demo",
            "-n",
            "demo",
            "-o",
            "jsonpath={.status.availableReplicas}",
        ])
        .unwrap();
    assert_eq!(ready.trim(), "1");
    // A bad value: Helm itself refuses it, and says what is wrong.
    let o = helm_cmd(&[
        "install",
        "bad",
        &chart_s,
        "-n",
        "demo",
        "--set",
        "replicas=many",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "a non-numeric replicas must fail");
    assert!(
        err.starts_with("Error: ") && err.contains("replicas"),
        "helm's message should name the field: {err}"
    );
    // Helm records the refused release as failed; the good one is untouched.
    let list = helm_cmd(&["list", "-n", "demo", "--deployed", "-q"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "demo");
    let list = helm_cmd(&["list", "-n", "demo", "--failed", "-q"]);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "bad");
}
