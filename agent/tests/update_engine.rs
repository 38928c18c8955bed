//! An update against a real control plane on loopback (the kit's etcd,
//! kube-apiserver, controller-manager, scheduler; kwok runs two fake
//! nodes' pods): the demo's 0.1.0 deployed, its inventory read, the 0.2.0
//! delta built against it by kpaas-builder, then `kpaas-agent update`:
//! what it refuses with nothing changed (a replay, a tampered delta), the
//! release diff it plans, a failing upgrade rolled back and `--rollback`,
//! `kill -9` in the middle and `--resume`, and what the site runs after.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use airgap_bundle::catalog::Catalog;
use airgap_bundle::cluster::Cluster;
use airgap_bundle::manifest::BundleManifest;
use airgap_bundle::node::NodeConfig;
use airgap_bundle::{Digest, sign};
use kpaas_testkit::control_plane::ControlPlane;
use kpaas_testkit::{DemoEnv, have_tools, workspace_bin};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use support::{Node, text};

mod support;

const CLUSTER: &str = "cluster_version: 1\nname: lab\nplatform: demo\nmaster: {hostname: kpaas-master, private_ip: 10.10.0.10}\nnetwork: {node_cidr: 10.10.0.0/24}\nstorage: {type: nfs, nfs: {server: 10.10.0.20}}\n";

/// The components a loopback control plane can run (kwok's pods; no node
/// ports, no volumes): 0.1.0 has pipelines, 0.2.0 has extras instead.
const KEEP: &[&str] = &[
    "kubernetes",
    "core",
    "apps",
    "storage",
    "pipelines",
    "extras",
];

/// A built-in demo catalog (`demo` or `demo-0.2.0`) cut to [`KEEP`],
/// written as a file (JSON is YAML) for `kpaas-builder --platform`.
fn catalog(builtin: &str, dir: &Path) -> PathBuf {
    let mut v: serde_json::Value =
        serde_saphyr::from_str(airgap_bundle::platforms::builtin(builtin).unwrap()).unwrap();
    v["components"]
        .as_array_mut()
        .unwrap()
        .retain(|c| KEEP.contains(&c["name"].as_str().unwrap()));
    let p = dir.join(format!("{builtin}.yaml"));
    std::fs::write(&p, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    p
}

fn builder(args: &[&str]) -> String {
    let o = Command::new(workspace_bin("kpaas-builder"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "kpaas-builder {args:?}: {}", text(&o));
    text(&o)
}

fn bundle(env: &DemoEnv, t: &Path, catalog: &Path, out: &str, extra: &[&str]) -> PathBuf {
    let p = |n: &str| t.join(n).to_string_lossy().to_string();
    let lock = p(&format!("{out}.lock"));
    let mut a: Vec<String> = vec![
        "bundle".into(),
        "-q".into(),
        "--platform".into(),
        catalog.to_string_lossy().to_string(),
        "--lock".into(),
        lock,
        "--cache-dir".into(),
        p("cache"),
        "--out".into(),
        p(out),
        "--sign-key".into(),
        p("k.key"),
    ];
    a.extend(env.mirror_args());
    a.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    builder(&args);
    t.join(out)
}

fn update_json(node: &Node) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(node.state.join("update.json")).unwrap_or_default())
        .unwrap_or_default()
}

/// The demo release's chart, e.g. `demo-app-0.2.0`.
fn chart(node: &Node) -> String {
    let l: serde_json::Value =
        serde_json::from_str(&node.helm(&["list", "-n", "demo", "-a", "-o", "json"])).unwrap();
    l[0]["chart"].as_str().unwrap_or("").to_string()
}

#[test]
fn an_update_is_checked_planned_rolled_back_resumed_and_applied() {
    if !have_tools(
        "update_engine",
        &["docker-registry", "nginx", "skopeo", "busybox"],
    ) {
        return;
    }
    let Some(mut cp) = ControlPlane::start("update_engine").unwrap() else {
        return;
    };
    cp.add_nodes(2).unwrap();
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let tp = t.path();
    builder(&["keygen", "--out", &tp.join("k").to_string_lossy()]);
    let (one, two) = (catalog("demo", tp), catalog("demo-0.2.0", tp));
    let base = bundle(&env, tp, &one, "base", &[]);
    let media_blobs = std::fs::read_dir(base.join("oci/blobs/sha256"))
        .unwrap()
        .count();

    // The master as its seed leaves it: the 0.1.0 plan, the cluster file
    // (no passwords), bound to its media's bundle.
    let node = Node::new(tp, &base, &cp);
    let c = Cluster::from_yaml(CLUSTER, "lab.yaml").unwrap();
    let bj = std::fs::read(base.join("bundle.json")).unwrap();
    let m = BundleManifest::from_bytes(&bj).unwrap();
    let cat = Catalog::from_file(&one).unwrap();
    let plan = airgap_bundle::plan::node::node_plan(&cat, &c, true, Some(&m)).unwrap();
    node.write(&NodeConfig {
        bundle_key: tp.join("k.pub"),
        bundle_digest: Some(Digest::of(&bj)),
        kubernetes: plan.kubernetes,
        platform: plan.platform,
        cluster_file: Some(c.without_passwords()),
        ..node.base_config()
    });
    let o = node.deploy(&["--timeout", "300"]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(node.release(), (1, "deployed".to_string()));

    // 1. The inventory, as the operator carries it out.
    let inv_path = tp.join("inventory.json");
    let o = node
        .agent("inventory", &["--out", &inv_path.to_string_lossy()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let inv: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&inv_path).unwrap()).unwrap();
    assert_eq!(inv["serial"], 1);
    assert_eq!(inv["platform_version"], "0.1.0");
    assert_eq!(inv["blobs"].as_array().unwrap().len(), media_blobs);
    assert_eq!(inv["kubernetes"], "v1.25.6");
    let demo = inv["releases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["component"] == "apps" && r["release"] == "demo")
        .unwrap();
    assert_eq!(demo["revision"], 1, "{inv}");
    assert!(!inv.to_string().contains(support::PORTAL_ADMIN));

    // 2. The 0.2.0 delta, built against it.
    let delta = bundle(
        &env,
        tp,
        &two,
        "delta",
        &["--since", &inv_path.to_string_lossy()],
    );
    let d = delta.to_string_lossy().to_string();
    let unchanged = || {
        assert!(!node.state.join("installed.json").exists());
        assert!(!node.state.join("update.json").exists());
        assert_eq!(node.release(), (1, "deployed".to_string()));
    };

    // 3. Refused with nothing changed: the bundle the site runs, and a
    //    delta one of whose blobs changed after signing.
    let o = node
        .agent("update", &[&base.to_string_lossy()])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("the one this site runs"),
        "{out}"
    );
    let tampered = tp.join("tampered");
    assert!(
        Command::new("cp")
            .args(["-a", &d, &tampered.to_string_lossy()])
            .status()
            .unwrap()
            .success()
    );
    let dm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(delta.join("bundle.json")).unwrap()).unwrap();
    let omitted: Vec<String> = dm["delta"]["omitted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["digest"].as_str().unwrap()[7..].to_string())
        .collect();
    // The largest blob it carries (the new chart, the new layer).
    let carried = std::fs::read_dir(delta.join("oci/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let victim = tampered
        .join("oci/blobs/sha256")
        .join(carried.file_name().unwrap());
    let mut bytes = std::fs::read(&victim).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&victim, bytes).unwrap();
    let o = node
        .agent("update", &[&tampered.to_string_lossy()])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(
        !o.status.success()
            && out.contains("refused, nothing changed")
            && out.contains("is corrupt"),
        "{out}"
    );
    unchanged();

    // 4. The plan: the chart upgraded, extras installed, pipelines removed,
    //    the rest untouched.
    let o = node.agent("update", &[&d, "--check"]).output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    for want in [
        "update 0.1.0 (serial 1) -> 0.2.0 (serial 2)",
        "apps/demo: Upgrade",
        "extras/extras.yaml: Install",
        "pipelines/demo-kustomize.tar.gz/demo-kustomize/overlays/demo: Remove",
        &format!("{} blob(s)", omitted.len()),
    ] {
        assert!(out.contains(want), "{want:?} in:\n{out}");
    }
    assert!(
        !out.contains("storage/") && !out.contains("demo-app.yaml"),
        "storage and the unchanged manifest are left alone:\n{out}"
    );
    unchanged();

    // 5. A failing upgrade (its pre-upgrade hook cannot be scheduled): the
    //    chart goes back to its revision, the update stops, and --rollback
    //    takes the update back.
    cp.kubectl(&["taint", "nodes", "--all", "kpaas-test=hold:NoSchedule"])
        .unwrap();
    let o = node
        .agent("update", &[&d, "--timeout", "20"])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(!o.status.success(), "{out}");
    assert!(
        out.contains("the update stopped") && out.contains("rolled back to revision 1"),
        "{out}"
    );
    assert_eq!(update_json(&node)["phase"], "stopped");
    assert_eq!(chart(&node), "demo-app-0.1.0");
    let st = Command::new(env!("CARGO_BIN_EXE_kpaas-agent"))
        .args(["status", "--state-dir"])
        .arg(&node.state)
        .output()
        .unwrap();
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(st.contains("STOPPED") && st.contains("apps/demo"), "{st}");
    cp.kubectl(&["taint", "nodes", "--all", "kpaas-test-"])
        .unwrap();
    let o = node.agent("update", &["--rollback"]).output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("rolled back") && out.contains("the node runs 0.1.0 (serial 1) again"),
        "{out}"
    );
    assert_eq!(update_json(&node)["phase"], "rolled-back");
    assert!(!node.state.join("installed.json").exists());
    assert_eq!(chart(&node), "demo-app-0.1.0");
    assert!(
        std::fs::read_dir(node.state.join("store/oci/blobs/sha256"))
            .unwrap()
            .next()
            .is_none(),
        "what the update staged is freed"
    );

    // 6. Again, killed (-9) once the chart is upgraded; --resume finishes
    //    without upgrading it twice.
    let rev_before = node.release().0;
    let mut child = node
        .agent("update", &[&d, "--timeout", "300"])
        .spawn()
        .unwrap();
    let start = Instant::now();
    loop {
        if update_json(&node)["applied"]["apps/demo"].is_object() {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the update ended early"
        );
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "{}",
            update_json(&node)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(update_json(&node)["phase"], "filled");
    let o = node.agent("update", &[&d]).output().unwrap();
    let out = text(&o);
    assert!(
        !o.status.success() && out.contains("--resume"),
        "an unfinished update is finished first: {out}"
    );
    let o = node
        .agent("update", &["--resume", "--timeout", "300"])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("update 0.1.0 (serial 1) -> 0.2.0 (serial 2) done"),
        "{out}"
    );
    assert_eq!(
        node.release(),
        (rev_before + 1, "deployed".to_string()),
        "upgraded once"
    );
    assert_eq!(chart(&node), "demo-app-0.2.0");
    let values: serde_json::Value =
        serde_json::from_str(&node.helm(&["get", "values", "demo", "-n", "demo", "-o", "json"]))
            .unwrap();
    assert_eq!(values["banner"], "0.2.0", "{values}");
    assert_eq!(values["admin_password"], support::PORTAL_ADMIN);
    let image = cp
        .kubectl(&[
            "get",
            "deployment",
            "demo",
            "-n",
            "demo",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .unwrap();
    assert_eq!(image, "registry.demo.kpaas.test/demo/app-a:2.0");
    assert!(
        cp.kubectl(&["get", "deployment", "demo-extra", "-n", "extras"])
            .is_ok()
    );
    assert!(
        cp.kubectl(&["get", "deployment", "demo-pipeline", "-n", "ml"])
            .is_err(),
        "pipelines is gone"
    );
    // The untouched components were not applied again.
    let u = update_json(&node);
    assert_eq!(u["phase"], "done");
    let applied: Vec<&String> = u["applied"].as_object().unwrap().keys().collect();
    assert_eq!(
        applied,
        [
            "apps/demo",
            "extras/extras.yaml",
            "pipelines/demo-kustomize.tar.gz/demo-kustomize/overlays/demo"
        ],
        "only what changed was applied"
    );
    assert!(
        !std::fs::read_to_string(node.state.join("events.jsonl"))
            .unwrap()
            .contains(support::PORTAL_ADMIN)
    );
    // The node runs 0.2.0; the media is untouched.
    let inv = node.agent("inventory", &[]).output().unwrap();
    let inv: serde_json::Value = serde_json::from_slice(&inv.stdout).unwrap();
    assert_eq!(
        (inv["serial"].as_u64(), inv["platform_version"].as_str()),
        (Some(2), Some("0.2.0"))
    );
    let h: Vec<&str> = inv["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["platform_version"].as_str().unwrap())
        .collect();
    assert_eq!(h, ["0.1.0", "0.2.0"], "{inv}");
    assert_eq!(
        std::fs::read_dir(base.join("oci/blobs/sha256"))
            .unwrap()
            .count(),
        media_blobs
    );
    let journal = node.journal();
    assert!(
        journal["releases"]["extras/extras.yaml"].is_object()
            && !journal["releases"]["pipelines/demo-kustomize.tar.gz/demo-kustomize/overlays/demo"]
                .is_object(),
        "{journal}"
    );

    // 7. Never back: the 0.1.0 bundle and the delta again are refused.
    for (b, why) in [(&base, "anti-rollback"), (&delta, "the one this site runs")] {
        let o = node
            .agent("update", &[&b.to_string_lossy()])
            .output()
            .unwrap();
        let out = text(&o);
        assert!(!o.status.success() && out.contains(why), "{why}: {out}");
    }
    // A bundle signed with another key is not the site's.
    builder(&["keygen", "--out", &tp.join("other").to_string_lossy()]);
    let sig = sign::sign(
        &std::fs::read_to_string(tp.join("other.key")).unwrap(),
        &std::fs::read(delta.join("bundle.json")).unwrap(),
    )
    .unwrap();
    std::fs::write(tampered.join("bundle.json.sig"), sig).unwrap();
    std::fs::copy(&carried, &victim).unwrap();
    let o = node
        .agent("update", &[&tampered.to_string_lossy()])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(!o.status.success() && out.contains("signature"), "{out}");
}
