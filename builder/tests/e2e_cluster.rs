//! Two TCG guests from one image form a real Kubernetes cluster at first
//! boot, offline: the test kit's kubeadm, kubelet, control plane, CoreDNS,
//! kube-proxy and flannel from the demo bundle, containerd from the image.
//! Their only network is a private socket network; the host reaches the
//! master's API through qemu's restricted user network (no route out).
//! Needs `just setup`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::ready;
use kpaas_testkit::lab::{Lab, json, kubectl, overlay};
use std::collections::BTreeSet;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(40 * 60);
/// A cluster step that failed: the boot stops there until the next one.
const STOPPED: &[&str] = &["the cluster stopped at step"];

/// Every image reference a node holds, by tag or by digest, as the node's
/// status lists them (containerd's image store through kubelet).
fn node_images(nodes: &serde_json::Value) -> BTreeSet<String> {
    nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|n| {
            n["status"]["images"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .flat_map(|i| i["names"].as_array().cloned().unwrap_or_default())
        .filter_map(|n| n.as_str().map(str::to_string))
        .collect()
}

#[test]
fn a_master_and_a_worker_form_a_cluster_offline_through_a_power_cut_and_a_wrong_ca() {
    if !ready("cluster") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lab = Lab::build(t.path(), false).unwrap();
    let mdisk = overlay(&lab.raw, &t.path().join("master.qcow2"));

    // Power cut during kubeadm init: the control plane's manifests are
    // written, nothing after.
    let mut m = lab.master(&mdisk);
    m.wait_unless(
        "kpaas-agent: init: kubeadm phase control-plane all: done",
        STOPPED,
        LONG,
    )
    .unwrap();
    drop(m);
    let mut m = lab.master(&mdisk);
    m.wait_unless("a half-done kubeadm init was found", STOPPED, LONG)
        .unwrap();
    m.wait_unless("kpaas-agent: cni: ", STOPPED, LONG).unwrap();
    assert!(!m.console().contains("cni: FAILED"), "{}", m.console());
    let kc = lab.kubeconfig();
    kubectl(&kc, &["get", "--raw", "/readyz"]).unwrap();

    // A worker whose seed pins another CA: refused, says so, leaves nothing.
    let bad_disk = overlay(&lab.raw, &t.path().join("bad.qcow2"));
    let mut bad = lab.worker("bad-worker", &bad_disk, &lab.wrong_ca_seed());
    bad.wait_for("kpaas-agent: join: FAILED", LONG).unwrap();
    let c = bad.console();
    assert!(
        c.contains("was refused")
            && c.contains("pinned")
            && c.contains("nothing half-joined is left"),
        "{c}"
    );
    drop(bad);
    let nodes = json(&kc, &["get", "nodes"]);
    let names: Vec<&str> = nodes["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str())
        .collect();
    assert_eq!(
        names,
        ["kpaas-master"],
        "the refused worker is not in the cluster"
    );
    kubectl(&kc, &["get", "--raw", "/readyz"]).expect("the master is unharmed");

    // The real worker, from the universal seed.
    let wdisk = overlay(&lab.raw, &t.path().join("worker.qcow2"));
    let mut w = lab.worker("worker", &wdisk, &lab.seeds.join("universal.iso"));
    w.wait_unless("kpaas-agent: join: joined the cluster", STOPPED, LONG)
        .unwrap();
    w.wait_unless(
        "kpaas-agent: ready: node kpaas-worker1 Ready",
        STOPPED,
        LONG,
    )
    .unwrap();
    m.wait_unless(
        "kpaas-agent: ready: cluster ready: 2 node(s) Ready",
        STOPPED,
        LONG,
    )
    .unwrap();

    // From the host: both nodes Ready, kube-system Running.
    let nodes = json(&kc, &["get", "nodes"]);
    for n in nodes["items"].as_array().unwrap() {
        let ready = n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        assert!(ready, "{} is not Ready", n["metadata"]["name"]);
    }
    let pods = json(&kc, &["-n", "kube-system", "get", "pods"]);
    let mut running = BTreeSet::new();
    for p in pods["items"].as_array().unwrap() {
        let name = p["metadata"]["name"].as_str().unwrap().to_string();
        assert_eq!(p["status"]["phase"], "Running", "{name}: {}", p["status"]);
        running.insert(name.split('-').take(2).collect::<Vec<_>>().join("-"));
    }
    for want in [
        "coredns-",
        "kube-proxy",
        "kube-flannel",
        "etcd-kpaas",
        "kube-apiserver",
    ] {
        assert!(
            running
                .iter()
                .any(|r| r.starts_with(want.trim_end_matches('-'))),
            "no {want} pod running: {running:?}"
        );
    }

    // Every image the nodes hold came from the seed: each tag is a bundled
    // reference, each digest a bundled artifact's.
    let bj: serde_json::Value =
        serde_json::from_slice(&std::fs::read(lab.bundle.join("bundle.json")).unwrap()).unwrap();
    let arts = bj["artifacts"].as_array().unwrap();
    let names: BTreeSet<&str> = arts
        .iter()
        .filter(|a| a["kind"] == "image")
        .filter_map(|a| a["name"].as_str())
        .collect();
    let digests: BTreeSet<&str> = arts.iter().filter_map(|a| a["digest"].as_str()).collect();
    let held = node_images(&nodes);
    assert!(held.len() >= 8, "{held:?}");
    for r in &held {
        match r.split_once('@') {
            Some((_, d)) => assert!(
                digests.contains(d),
                "{r}: a digest the bundle does not hold"
            ),
            None => assert!(names.contains(r.as_str()), "{r}: not a bundled image"),
        }
    }
}
