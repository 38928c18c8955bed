//! Two TCG guests from one image form a real Kubernetes cluster at first
//! boot, offline: the test kit's kubeadm, kubelet, control plane, CoreDNS,
//! kube-proxy and flannel from the demo bundle, containerd from the image;
//! then the master deploys the demo platform's waves (a Helm release with a
//! hook, local-path storage, a kustomization, real Vault, Harbor's registry
//! filled from the seed, real MariaDB, stand-ins for Keycloak and the
//! portal). Their only network is a private socket network; the host
//! reaches the master's API and two NodePorts through qemu's restricted user
//! network (no route out, which a pod checks). Needs `just setup`.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::ready;
use kpaas_testkit::lab::{
    Lab, NEW_MAC, WORKER_MAC, json, kubectl, node_images, on_node, overlay, pod_on, start_on_node,
    update_volume,
};
use std::collections::BTreeSet;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(40 * 60);
/// A cluster step that failed: the boot stops there until the next one;
/// or the boot stopped before the cluster (its media refused).
const STOPPED: &[&str] = &["the cluster stopped at step", "first boot stopped at step"];

/// A pod on `node` (host network when asked) running `cmd` in `image`,
/// to completion; returns its phase and log.
fn run_pod(
    kc: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    node: &str,
    image: &str,
    cmd: &[&str],
    host_network: bool,
) -> (String, String) {
    let pod = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node,
            "hostNetwork": host_network,
            "restartPolicy": "Never",
            "containers": [{"name": "c", "image": image, "command": cmd, "imagePullPolicy": "IfNotPresent"}],
        },
    });
    let f = dir.join(format!("{name}.json"));
    std::fs::write(&f, pod.to_string()).unwrap();
    kubectl(kc, &["apply", "-f", &f.to_string_lossy()]).unwrap();
    let start = std::time::Instant::now();
    loop {
        let p = json(kc, &["get", "pod", name, "-n", "default"]);
        let phase = p["status"]["phase"].as_str().unwrap_or("").to_string();
        if phase == "Succeeded" || phase == "Failed" {
            let log = kubectl(kc, &["logs", name, "-n", "default"]).unwrap_or_default();
            return (phase, log);
        }
        assert!(
            start.elapsed() < LONG,
            "pod {name} did not finish: {}",
            p["status"]
        );
        std::thread::sleep(Duration::from_secs(5));
    }
}

#[test]
fn a_master_and_a_worker_form_a_cluster_and_deploy_the_platform_offline_through_power_cuts() {
    if !ready("cluster") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let lab = Lab::build(t.path(), true).unwrap();
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
    // The agent found its node config on the seed volume at once: no
    // failed first run waiting out a restart for cloud-init's copy.
    assert!(!m.console().contains("CIDATA volume"), "{}", m.console());
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

    // The real worker, racked late: powered on only once the credential
    // kubeadm init made (the lab's cluster file gives it 2 minutes) would
    // have lapsed. The master kept it valid for the listed worker.
    let kept = m.console();
    let first = kept
        .lines()
        .find_map(|l| {
            l.split("kpaas-agent: credential: the seeds' join credential: token ")
                .nth(1)?
                .split("valid until ")
                .nth(1)
        })
        .and_then(|t| airgap_bundle::fsutil::parse_rfc3339(t.get(..20)?))
        .unwrap_or_else(|| panic!("no credential line with its expiry:\n{kept}"));
    let unix = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    while unix() <= first + 5 {
        std::thread::sleep(Duration::from_secs(2));
    }
    let kept = m.console();
    let renewed: Vec<u64> = kept
        .lines()
        .filter_map(|l| {
            l.split("kpaas-agent: credential: join credential: token ")
                .nth(1)?
                .split("valid until ")
                .nth(1)
        })
        .filter_map(|t| airgap_bundle::fsutil::parse_rfc3339(t.get(..20)?))
        .collect();
    assert!(
        renewed.iter().any(|t| *t > first + 30),
        "the master renewed the credential past kubeadm's expiry {first}: {renewed:?}\n{kept}"
    );
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
    // Every listed node joined: the seeds' credential is gone for good.
    m.wait_unless(
        "every node the cluster file lists had joined (kpaas-master, kpaas-worker1)",
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

    // The platform: the master deploys every component once those it
    // depends on are ready, side by side. Once Vault is ready, it restarts
    // (its pod deleted: it comes back sealed, as after any restart) and the
    // power is cut while the rest runs (Harbor's fill, MariaDB, Keycloak,
    // the portal: what depends on Vault has not started): the next boot
    // unseals Vault with the key it kept (nobody types), then resumes at
    // what was not finished.
    m.wait_unless("kpaas-agent: deploy: vault: ready in", STOPPED, LONG)
        .unwrap();
    let first = m.console();
    kubectl(
        &kc,
        &[
            "delete",
            "pod",
            "vault-0",
            "-n",
            "vault",
            "--grace-period=1",
            "--timeout=300s",
        ],
    )
    .unwrap();
    drop(m);
    let mut m = lab.master(&mdisk);
    m.wait_unless("kpaas-agent: deploy: platform ready", STOPPED, LONG)
        .unwrap();
    let c = m.console();
    // Every component ready before the cut is not run again; the portal
    // (after Vault) was not, so something resumed.
    let before: Vec<&str> = first
        .lines()
        .filter_map(|l| {
            l.split("kpaas-agent: deploy: ")
                .nth(1)?
                .split_once(": ready in ")
        })
        .map(|(component, _)| component)
        .collect();
    assert!(before.contains(&"vault"), "{first}");
    for component in &before {
        assert!(
            c.contains(&format!("({component}): ready at an earlier run")),
            "the second boot resumes, it does not start over ({component}):\n{c}"
        );
    }
    assert!(!before.contains(&"portal"), "{first}");
    assert!(c.contains("kpaas-agent: deploy: portal: ready in"), "{c}");
    let unsealed = c
        .find("kpaas-agent: unseal: Vault at http://10.10.0.10:31654 unsealed")
        .expect("the agent unseals Vault after the reboot");
    assert!(
        !c.contains("31654 unsealed already"),
        "Vault restarted sealed: the agent unsealed it, it did not find it open:\n{c}"
    );
    assert!(
        unsealed < c.find("kpaas-agent: deploy: ").unwrap(),
        "unsealed before the deploy resumed"
    );
    assert!(
        !c.contains("keys_base64") && !c.contains("root_token"),
        "Vault's key is never on the console"
    );
    let kc = lab.kubeconfig();
    // Helm's view: the hook chart installed once.
    let helm = std::process::Command::new(kpaas_testkit::kit::bin_dir().join("helm"))
        .args(["list", "-A", "-o", "json", "--kubeconfig"])
        .arg(&kc)
        .env("HELM_CACHE_HOME", t.path().join("helm"))
        .env("HELM_CONFIG_HOME", t.path().join("helm"))
        .env("HELM_DATA_HOME", t.path().join("helm"))
        .output()
        .unwrap();
    let releases: serde_json::Value = serde_json::from_slice(&helm.stdout).unwrap();
    assert_eq!(releases[0]["name"], "demo", "{releases}");
    assert_eq!(releases[0]["status"], "deployed", "{releases}");
    assert_eq!(releases[0]["revision"], "1", "installed once: {releases}");
    // Storage: the provisioner bound Vault's, the registry's and MariaDB's
    // volumes on the default class.
    let pvcs = json(&kc, &["get", "pvc", "-A"]);
    let bound: Vec<String> = pvcs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["status"]["phase"] == "Bound")
        .map(|p| {
            format!(
                "{}/{}",
                p["metadata"]["namespace"].as_str().unwrap(),
                p["metadata"]["name"].as_str().unwrap()
            )
        })
        .collect();
    for want in [
        "vault/data-vault-0",
        "harbor/cp-harbor-registry",
        "mariadb/data-cp-mariadb-0",
    ] {
        assert!(
            bound.iter().any(|b| b == want),
            "{want} not bound: {bound:?}"
        );
    }
    // Harbor's place holds every image and chart of the bundle under the
    // project, with the bundle's digests.
    let registry = format!("127.0.0.1:{}", lab.registry_port);
    let pushed: Vec<&serde_json::Value> = arts
        .iter()
        .filter(|a| a["kind"] == "image" || a["kind"] == "chart")
        .collect();
    for a in &pushed {
        let r = airgap_bundle::ImageRef::parse(a["name"].as_str().unwrap()).unwrap();
        let reference = r
            .tag
            .clone()
            .unwrap_or_else(|| a["digest"].as_str().unwrap().to_string());
        let reply = kpaas_testkit::http::send(
            &registry,
            "HEAD",
            &format!(
                "/v2/cp-portal-repository/{}/manifests/{reference}",
                r.name()
            ),
            &[("Accept", airgap_bundle::oci::MANIFEST_ACCEPT)],
            b"",
        )
        .unwrap();
        assert_eq!(reply.status, 200, "{} not in the registry", a["name"]);
        assert_eq!(
            reply.header("docker-content-digest").unwrap_or_default(),
            a["digest"].as_str().unwrap(),
            "{}",
            a["name"]
        );
    }
    // The worker switched its mirrors to the registry (after the master's
    // status page named it); a pod made now on the worker, with an image no
    // node has pulled, comes through the registry: its access log shows it.
    w.wait_unless(
        "kpaas-agent: handoff: mirrors now 10.10.0.10:30002/cp-portal-repository first",
        STOPPED,
        LONG,
    )
    .unwrap();
    let (phase, _) = run_pod(
        &kc,
        t.path(),
        "through-harbor",
        "kpaas-worker1",
        "registry.demo.kpaas.test/demo/app-b-docker:1.0",
        &["/bin/true"],
        false,
    );
    assert_eq!(phase, "Succeeded");
    let log = kubectl(&kc, &["logs", "-n", "harbor", "deploy/cp-harbor-registry"]).unwrap();
    // The hand-off only HEADs and PUTs; a GET is a runtime pulling.
    assert!(
        log.lines().any(|l| l.contains(
            "\"GET /v2/cp-portal-repository/registry.demo.kpaas.test/demo/app-b-docker/"
        )),
        "the worker's pull did not come through the registry:\n{log}"
    );
    // No route out: from the worker's own network, the outside is unreachable.
    let (phase, log) = run_pod(
        &kc,
        t.path(),
        "no-route-out",
        "kpaas-worker1",
        "docker.io/library/busybox:1.35",
        &["wget", "-T", "5", "-q", "-O", "-", "http://1.1.1.1/"],
        true,
    );
    assert_eq!(phase, "Failed", "the outside answered: {log}");
    // Vault is unsealed; MariaDB answers; the stand-ins are named so.
    let vault = format!("127.0.0.1:{}", lab.vault_port);
    let seal = kpaas_testkit::http::send(&vault, "GET", "/v1/sys/seal-status", &[], b"").unwrap();
    let seal: serde_json::Value = serde_json::from_slice(&seal.body).unwrap();
    assert_eq!(
        (seal["initialized"].as_bool(), seal["sealed"].as_bool()),
        (Some(true), Some(false)),
        "{seal}"
    );
    // Vault set up for the portal as K-PaaS does it: its cluster-admin
    // ServiceAccount exists, the hook read the cluster's secret back.
    assert!(
        first.contains("vault: Vault set up for the portal: approle, kv-v2 at secret/")
            && first.contains("vault: ready in"),
        "{first}"
    );
    kubectl(
        &kc,
        &["get", "serviceaccount", "k8sadmin", "-n", "kube-system"],
    )
    .expect("the portal's cluster-admin account");
    let standins = json(
        &kc,
        &["get", "deploy", "-A", "-l", "kpaas.io/stand-in=true"],
    );
    assert_eq!(standins["items"].as_array().unwrap().len(), 2, "{standins}");

    // Day 2, at the master's console (here through the API, as root on
    // the master): a machine the cluster file does not list. A request
    // with three problems names them all and issues nothing.
    let agent = kpaas_testkit::lab::AGENT;
    let bad = on_node(
        &kc,
        t.path(),
        "node-add-bad",
        "kpaas-master",
        &[
            agent,
            "node",
            "add",
            "--hostname",
            "kpaas-worker1",
            "--ip",
            "10.10.0.1",
            "--mac",
            WORKER_MAC,
        ],
    )
    .unwrap_err();
    assert!(
        bad.contains("3 problem(s), nothing issued or written"),
        "{bad}"
    );
    let added = on_node(
        &kc,
        t.path(),
        "node-add",
        "kpaas-master",
        &[
            agent,
            "node",
            "add",
            "--hostname",
            "kpaas-worker2",
            "--ip",
            "10.10.0.12",
            "--mac",
            NEW_MAC,
        ],
    )
    .unwrap();
    assert!(
        added.contains("node kpaas-worker2 (10.10.0.12, 52:54:00:12:34:12) added"),
        "{added}"
    );
    // Vault's role now admits it (as Vault reads it back).
    assert!(
        added.contains("Vault's cp_role now bound to 10.10.0.10/32, 10.10.0.11/32, 10.10.0.12/32, 10.233.64.0/18"),
        "{added}"
    );
    let b64 = on_node(
        &kc,
        t.path(),
        "seed-out",
        "kpaas-master",
        &["base64", "-w0", "/var/lib/kpaas/seeds/kpaas-worker2.img"],
    )
    .unwrap();
    let img = t.path().join("kpaas-worker2.img");
    {
        use base64::Engine;
        std::fs::write(
            &img,
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .unwrap(),
        )
        .unwrap();
    }
    // The same node image boots with it, joins, takes the registry.
    let fresh = lab.unheld_image(&kc).unwrap();
    let ndisk = overlay(&lab.raw, &t.path().join("worker2.qcow2"));
    let mut w2 = lab.day2("worker2", &ndisk, &img);
    w2.wait_unless("kpaas-agent: join: joined the cluster", STOPPED, LONG)
        .unwrap();
    w2.wait_unless(
        "kpaas-agent: ready: node kpaas-worker2 Ready",
        STOPPED,
        LONG,
    )
    .unwrap();
    w2.wait_unless(
        "kpaas-agent: handoff: mirrors now 10.10.0.10:30002/cp-portal-repository first",
        STOPPED,
        LONG,
    )
    .unwrap();
    m.wait_for("kpaas-worker2 joined", LONG).unwrap();
    // A pod on it, of a bundled image no node has: pulled through the
    // in-cluster registry (its access log shows the GET).
    let repo = airgap_bundle::ImageRef::parse(&fresh).unwrap().name();
    pod_on(&kc, t.path(), "day2-pull", "kpaas-worker2", &fresh).unwrap();
    // Whatever the image runs, its pull is what is asked: read in the
    // registry's access log (the hand-off only HEADs and PUTs).
    let want = format!("\"GET /v2/cp-portal-repository/{repo}/");
    let start = std::time::Instant::now();
    while !kubectl(&kc, &["logs", "-n", "harbor", "deploy/cp-harbor-registry"])
        .unwrap_or_default()
        .contains(&want)
    {
        assert!(
            start.elapsed() < Duration::from_secs(10 * 60),
            "kpaas-worker2's pull of {fresh} did not come through the registry: {}",
            json(&kc, &["get", "pod", "day2-pull", "-n", "default"])["status"]
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    // The day-2 worker goes again: Vault's role first, then drained and
    // deleted, its credential withdrawn. (The listed worker stays: it holds
    // the platform's volumes, node-local in the lab.) The update then runs
    // with two guests, not three: the emulated control plane shares two
    // host cores with them.
    let removed = on_node(
        &kc,
        t.path(),
        "node-remove",
        "kpaas-master",
        &[agent, "node", "remove", "kpaas-worker2"],
    )
    .unwrap();
    assert!(
        removed.contains("node kpaas-worker2 removed: drained and deleted"),
        "{removed}"
    );
    assert!(
        removed
            .contains("Vault's cp_role now bound to 10.10.0.10/32, 10.10.0.11/32, 10.233.64.0/18"),
        "{removed}"
    );
    let names: BTreeSet<String> = json(&kc, &["get", "nodes"])["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["kpaas-master".into(), "kpaas-worker1".into()])
    );
    let record = on_node(
        &kc,
        t.path(),
        "node-list",
        "kpaas-master",
        &[agent, "node", "list"],
    )
    .unwrap();
    assert!(
        record.contains("node kpaas-worker1 10.10.0.11 Worker, from the cluster file: joined ")
            && record.contains("node kpaas-worker2 removed "),
        "{record}"
    );
    // Its machine, made afresh and booted with its seed again: refused
    // with the reason and the way back, never a bare kubeadm error.
    drop(w2);
    let odisk = overlay(&lab.raw, &t.path().join("old-seed.qcow2"));
    let mut old = lab.day2("old-seed", &odisk, &img);
    old.wait_for("kpaas-agent: join: FAILED", LONG).unwrap();
    let c = old.console();
    assert!(
        c.contains("the master no longer honours this seed's join credential")
            && c.contains("kpaas-agent node add --hostname kpaas-worker2 --ip 10.10.0.12"),
        "{c}"
    );
    drop(old);
    let _m = update(&lab, t.path(), &kc, m, &mdisk);
    drop(w);
}

/// The demo release `demo`'s (revision, status, chart), as Helm says.
fn helm_demo(kc: &std::path::Path, dir: &std::path::Path) -> (String, String, String) {
    let o = std::process::Command::new(kpaas_testkit::kit::bin_dir().join("helm"))
        .args(["list", "-n", "demo", "-a", "-o", "json", "--kubeconfig"])
        .arg(kc)
        .env("HELM_CACHE_HOME", dir.join("helm"))
        .env("HELM_CONFIG_HOME", dir.join("helm"))
        .env("HELM_DATA_HOME", dir.join("helm"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let s = |k: &str| v[0][k].as_str().unwrap_or("").to_string();
    (s("revision"), s("status"), s("chart"))
}

/// Day 2, part 2: the site takes the demo's 0.2.0 from a delta built on the
/// host against the inventory its master gives, delivered on a volume
/// labelled KPAAS-UPDATE; the power is cut in the middle; never back.
/// Returns the master, running.
fn update(
    lab: &Lab,
    dir: &std::path::Path,
    kc: &std::path::Path,
    m: kpaas_testkit::vm::Vm,
    mdisk: &std::path::Path,
) -> kpaas_testkit::vm::Vm {
    let agent = kpaas_testkit::lab::AGENT;
    let inv = on_node(kc, dir, "inventory", "kpaas-master", &[agent, "inventory"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&inv).unwrap();
    let media: BTreeSet<String> = std::fs::read_dir(lab.bundle.join("oci/blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(
        (v["serial"].as_u64(), v["blobs"].as_array().unwrap().len()),
        (Some(1), media.len()),
        "{v}"
    );
    let states: Vec<String> = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{} {}",
                n["hostname"].as_str().unwrap(),
                n["state"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        states.contains(&"kpaas-worker2 removed".to_string())
            && states.contains(&"kpaas-worker1 joined".to_string()),
        "{states:?}"
    );
    let inv_path = dir.join("inventory.json");
    std::fs::write(&inv_path, &inv).unwrap();
    // The delta, on the connected side: only what the site lacks.
    let env = kpaas_testkit::DemoEnv::start().unwrap();
    let p = |n: &str| dir.join(n).to_string_lossy().to_string();
    let mut a: Vec<String> = [
        "bundle",
        "-q",
        "--platform",
        "demo-0.2.0",
        "--arch",
        "all",
        "--since",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.extend([
        p("inventory.json"),
        "--lock".into(),
        p("next.lock"),
        "--cache-dir".into(),
        p("cache"),
        "--out".into(),
        p("delta"),
        "--sign-key".into(),
        p("key.key"),
    ]);
    a.extend(env.mirror_args());
    let o = std::process::Command::new(kpaas_testkit::workspace_bin("kpaas-builder"))
        .args(&a)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    drop(env);
    let delta = dir.join("delta");
    let mut new_bytes = 0;
    let mut largest = (0, String::new());
    for e in std::fs::read_dir(delta.join("oci/blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let (name, len) = (
            e.file_name().to_string_lossy().to_string(),
            e.metadata().unwrap().len(),
        );
        if !media.contains(&name) {
            new_bytes += len;
            largest = largest.max((len, name));
            continue;
        }
        // What the site holds is carried only as a manifest.
        let b: serde_json::Value =
            serde_json::from_slice(&std::fs::read(e.path()).unwrap()).unwrap_or_default();
        assert!(
            b["manifests"].is_array() || b["layers"].is_array(),
            "{name} ({len} bytes): the site holds it, yet the delta carries it"
        );
    }
    let dm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(delta.join("bundle.json")).unwrap()).unwrap();
    let left: u64 = dm["delta"]["omitted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["size"].as_u64().unwrap())
        .sum();
    assert!(
        new_bytes > 0 && new_bytes < left / 10,
        "the delta's new blobs ({new_bytes} bytes) against what it left to the site ({left})"
    );
    let vol = dir.join("update.img");
    update_volume(&delta, &vol).unwrap();
    // What no release change may touch: these objects' generations.
    let keep = [
        ("statefulset", "vault", "vault"),
        ("deployment", "harbor", "cp-harbor-registry"),
        ("statefulset", "mariadb", "cp-mariadb"),
        ("deployment", "demo", "demo-app"),
    ];
    let generation = |(kind, ns, name): (&str, &str, &str)| {
        json(kc, &["get", kind, name, "-n", ns])["metadata"]["generation"].clone()
    };
    let before: Vec<serde_json::Value> = keep.iter().map(|k| generation(*k)).collect();
    assert!(before.iter().all(|g| g.is_u64()), "{keep:?}: {before:?}");

    // The operator plugs the volume into the running master (as a USB
    // stick; a restart with it attached finds it the same way, by label).
    m.attach("update", &vol).unwrap();
    // A copy whose largest new blob changed after signing: refused, and
    // nothing changed.
    let orig = std::fs::read(delta.join("oci/blobs/sha256").join(&largest.1)).unwrap();
    let at = orig.len() / 2;
    let other = if orig[at] == b'x' { "y" } else { "x" };
    let script = format!(
        "set -e; l=/dev/disk/by-label/KPAAS-UPDATE; i=0; \
         while [ ! -e $l ] && [ $i -lt 120 ]; do sleep 1; i=$((i+1)); done; \
         mkdir -p /run/kpaas/t; mount -o ro $l /run/kpaas/t; \
         rm -rf /var/tmp/tampered; cp -a /run/kpaas/t /var/tmp/tampered; umount /run/kpaas/t; \
         printf {other} | dd of=/var/tmp/tampered/oci/blobs/sha256/{} bs=1 seek={at} conv=notrunc 2>/dev/null; \
         exec {agent} update /var/tmp/tampered",
        largest.1
    );
    let e = on_node(
        kc,
        dir,
        "update-tampered",
        "kpaas-master",
        &["sh", "-c", &script],
    )
    .unwrap_err();
    assert!(
        e.contains("refused, nothing changed") && e.contains("is corrupt"),
        "{e}"
    );
    assert_eq!(helm_demo(kc, dir).0, "1");
    // The update, found by its volume's label; the power is cut once the
    // chart is upgraded.
    start_on_node(kc, dir, "update-run", "kpaas-master", &[agent, "update"]).unwrap();
    let start = std::time::Instant::now();
    while helm_demo(kc, dir).0 != "2" || helm_demo(kc, dir).1 != "deployed" {
        assert!(
            start.elapsed() < LONG,
            "the chart was not upgraded: {:?}",
            helm_demo(kc, dir)
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    drop(m);
    // The next boot (without the volume: what it brought is staged)
    // finishes the update.
    let mut m = lab.master(mdisk);
    m.wait_unless(
        "kpaas-agent: update: update 0.1.0 (serial 1) -> 0.2.0 (serial 2) done",
        STOPPED,
        LONG,
    )
    .unwrap();
    let c = m.console();
    assert!(
        c.contains("resuming the update 0.1.0 (serial 1) -> 0.2.0 (serial 2)"),
        "{c}"
    );
    assert!(
        c.contains("the seed registry serves /var/lib/kpaas/store/gen/2-"),
        "{c}"
    );
    // The chart upgraded once, with its new value; what did not change
    // was not touched; the new component is ready; the removed one gone.
    assert_eq!(
        helm_demo(kc, dir),
        ("2".into(), "deployed".into(), "demo-app-0.2.0".into())
    );
    let after: Vec<serde_json::Value> = keep.iter().map(|k| generation(*k)).collect();
    assert_eq!(before, after, "{keep:?}");
    let extra = json(kc, &["get", "deployment", "demo-extra", "-n", "extras"]);
    assert_eq!(
        extra["status"]["availableReplicas"], 1,
        "{}",
        extra["status"]
    );
    let annot = json(kc, &["get", "deployment", "demo", "-n", "demo"]);
    assert_eq!(
        annot["spec"]["template"]["metadata"]["annotations"]["kpaas.demo/banner"],
        "0.2.0"
    );
    let start = std::time::Instant::now();
    while kubectl(kc, &["get", "namespace", "ml"]).is_ok() {
        assert!(start.elapsed() < Duration::from_secs(600), "ml is not gone");
        std::thread::sleep(Duration::from_secs(3));
    }
    let status = on_node(kc, dir, "update-status", "kpaas-master", &[agent, "status"]).unwrap();
    assert!(
        status.contains(
            "update 0.1.0 (serial 1) -> 0.2.0 (serial 2): done; 3/3 release change(s) applied"
        ),
        "{status}"
    );
    // The worker runs the changed image (the upgraded chart's hook and
    // pods, a pod of ours), pulled through the in-cluster registry,
    // which the update filled: its access log has the GET of app-a 2.0's
    // manifest by digest (a runtime HEADs the tag, then GETs the digest;
    // the NodePort's SNAT hides which node asked).
    let a2 = dm["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "registry.demo.kpaas.test/demo/app-a:2.0")
        .unwrap()["digest"]
        .as_str()
        .unwrap()
        .to_string();
    pod_on(
        kc,
        dir,
        "update-pull",
        "kpaas-worker1",
        "registry.demo.kpaas.test/demo/app-a:2.0",
    )
    .unwrap();
    let want = format!(
        "\"GET /v2/cp-portal-repository/registry.demo.kpaas.test/demo/app-a/manifests/{a2}"
    );
    let start = std::time::Instant::now();
    loop {
        let log =
            kubectl(kc, &["logs", "-n", "harbor", "deploy/cp-harbor-registry"]).unwrap_or_default();
        let nodes = json(kc, &["get", "node", "kpaas-worker1"]);
        let held = node_images(&serde_json::json!({"items": [nodes]}));
        if log.contains(&want) && held.contains("registry.demo.kpaas.test/demo/app-a:2.0") {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(600),
            "app-a 2.0 did not come to kpaas-worker1 through the registry (GET {a2} seen: {})",
            log.contains(&want)
        );
        std::thread::sleep(Duration::from_secs(3));
    }
    // Never back: the 0.1.0 bundle on the master's own media is refused.
    let e = on_node(
        kc,
        dir,
        "update-replay",
        "kpaas-master",
        &[agent, "update", "/run/kpaas/data/bundle"],
    )
    .unwrap_err();
    assert!(
        e.contains("anti-rollback") && e.contains("nothing changed"),
        "{e}"
    );
    assert_eq!(helm_demo(kc, dir).0, "2");
    m
}
