//! The cluster steps against a recording runner: the order of what they run
//! on a master and a worker, what they write, and how they stop (an image
//! the seed lacks, a refused join, a half-done init found after a power cut).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
use super::*;
use crate::events::read_all;
use airgap_bundle::deploy::{Readiness, WorkloadKind};
use airgap_bundle::node::{NodeConfig, NodeEntry, Role, Runtime};
use airgap_bundle::run::{Cmd, Output, Recording};
use airgap_bundle::{Digest, oci};
use kpaas_testkit::content::Layout;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

const TOKEN: &str = "abcdef.0123456789abcdef";
const IMAGES: &str = "registry.k8s.io/kube-apiserver:v1.25.6\nregistry.k8s.io/pause:3.8\n";
const CNI: &str = "kind: DaemonSet # mounts configMap kube-flannel-cfg\n";

/// A bundle with the two images kubeadm is scripted to ask for, the four
/// node tools at their install paths, and the CNI manifest.
pub(crate) fn bundle(dir: &Path) {
    let mut l = Layout::new(&dir.join("oci")).unwrap();
    for (i, name) in [
        "registry.k8s.io/kube-apiserver:v1.25.6",
        "registry.k8s.io/pause:3.8",
    ]
    .iter()
    .enumerate()
    {
        let layer = vec![i as u8; 10];
        let (m, _) = l
            .image(
                &[(layer.clone(), Digest::of(&layer).to_string())],
                "amd64",
                &[],
            )
            .unwrap();
        l.tag(name, oci::OCI_MANIFEST, &m);
    }
    l.write_index().unwrap();
    let cni = Digest::of(CNI.as_bytes());
    std::fs::write(dir.join(format!("oci/blobs/sha256/{}", cni.hex())), CNI).unwrap();
    let file = |name: &str, path: Option<&str>, d: &Digest| {
        let arch = if path.is_some() { "amd64" } else { "any" };
        json!({"kind": "file", "component": "kubernetes",
               "name": airgap_bundle::manifest::file_ref_name(name, arch), "source": "test",
               "digest": d.to_string(), "media_type": "application/octet-stream", "size": 1,
               "content_digest": d.to_string(), "install_path": path})
    };
    let mut arts: Vec<serde_json::Value> = ["kubeadm", "kubectl", "kubelet", "crictl"]
        .iter()
        .map(|n| {
            file(
                n,
                Some(&format!("/usr/local/bin/{n}")),
                &Digest::of(n.as_bytes()),
            )
        })
        .collect();
    arts.push(file("cni.yaml", None, &cni));
    let bj = json!({"bundle_version": 1, "platform": "t", "platform_version": "1", "created": "",
                    "image_platforms": ["linux/amd64"], "artifacts": arts, "files": {},
                    "totals": {"artifacts": 5, "blobs": 0, "unique_bytes": 0, "referenced_bytes": 0}});
    std::fs::write(dir.join("bundle.json"), serde_json::to_vec(&bj).unwrap()).unwrap();
}

/// Stands in for kubeadm's effects on disk: its kubeconfig phase writes
/// admin.conf, a join writes kubelet.conf (both pointing at the stand-in
/// API server). Everything else is recorded.
struct Kubeadm {
    rec: Arc<Recording>,
    root: PathBuf,
    api: String,
}

impl Runner for Kubeadm {
    fn exec(&self, cmd: &Cmd) -> anyhow::Result<Output> {
        let out = self.rec.exec(cmd)?;
        let line = cmd.line();
        for (when, file) in [
            ("init phase kubeconfig", "etc/kubernetes/admin.conf"),
            ("kubeadm join", "etc/kubernetes/kubelet.conf"),
        ] {
            if line.contains(when) {
                write_kubeconfig(&self.root.join(file), &self.api, "");
            }
        }
        Ok(out)
    }
}

/// A kubeconfig for the stand-in API server; `extra` is appended to its
/// user (kubelet.conf's client certificate path after kubelet-finalize).
fn write_kubeconfig(path: &Path, server: &str, extra: &str) {
    let user = if extra.is_empty() {
        "{}".to_string()
    } else {
        format!("\n    {extra}")
    };
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\nusers:\n- name: u\n  user: {user}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\n"
    );
    fsutil::write_atomic(path, text.as_bytes()).unwrap();
}

/// Stands in for the API server the cluster steps read (a stand-in: the
/// real one is the VM tiers' and the deploy engine test's). Every request
/// goes into the runner's log as `GET /path`, so its order against the
/// commands shows; it is answered with the script's output for that line
/// as JSON, or 404 when the script has none.
fn api_server(rec: Arc<Recording>) -> String {
    use axum::http::{StatusCode, Uri, header};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(l).unwrap();
            let app = axum::Router::new().fallback(move |uri: Uri| {
                let rec = rec.clone();
                async move {
                    let json = [(header::CONTENT_TYPE, "application/json")];
                    match rec.exec(&airgap_bundle::run::run("GET").arg(uri.path())) {
                        Ok(o) if !o.stdout.is_empty() => (StatusCode::OK, json, o.stdout),
                        Ok(_) => (
                            StatusCode::NOT_FOUND,
                            json,
                            br#"{"kind":"Status","status":"Failure","reason":"NotFound","code":404}"#
                                .to_vec(),
                        ),
                        Err(e) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            json,
                            json!({"kind": "Status", "status": "Failure", "code": 500,
                                   "message": format!("{e:#}")})
                            .to_string()
                            .into_bytes(),
                        ),
                    }
                }
            });
            axum::serve(l, app).await.unwrap();
        });
    });
    format!("http://{addr}")
}

use airgap_bundle::fsutil;

struct Node {
    _t: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    runner: Arc<Kubeadm>,
    ctx: Ctx,
    rt: tokio::runtime::Runtime,
}

/// A master or worker of a two-node lab, its runner scripted by `script`
/// first (answers are matched in order), then with kubeadm's image list,
/// both nodes Ready and every other kubectl call succeeding.
fn node(role: Role, script: impl FnOnce(Recording, &Path) -> Recording) -> Node {
    // As the agent's: a worker thread drives the I/O (a current-thread
    // runtime's handle cannot, and the join asks the master's endpoint).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let t = tempfile::tempdir().unwrap();
    let (root, state, b) = (
        t.path().join("root"),
        t.path().join("state"),
        t.path().join("bundle"),
    );
    bundle(&b);
    let entry = |h: &str, ip: &str, role| NodeEntry {
        hostname: h.into(),
        ip: ip.parse().unwrap(),
        mac: None,
        role,
    };
    let mut cfg = NodeConfig::with_defaults(
        "lab",
        vec![
            entry("m", "10.10.0.10", Role::Master),
            entry("w", "10.10.0.11", Role::Worker),
        ],
    );
    cfg.bundle = b.clone();
    cfg.state_dir = state.clone();
    cfg.runtime = Runtime::Containerd;
    cfg.kubernetes = Some(crate::kube::lab_settings("10.10.0.10", "cni.yaml"));
    cfg.kubernetes.as_mut().unwrap().ready = vec![
        Readiness::NodesReady,
        Readiness::Rollout {
            kind: WorkloadKind::DaemonSet,
            namespace: "kube-system".into(),
            name: "kube-proxy".into(),
        },
    ];
    let secrets = root.join("etc/kpaas/secrets");
    for (f, v) in [
        ("bootstrap-token", TOKEN),
        ("ca-cert-hash", "sha256:00"),
        ("ca.crt", "CERT"),
        ("ca.key", "KEY"),
    ] {
        fsutil::write_atomic(&secrets.join(f), v.as_bytes()).unwrap();
    }
    fsutil::write_atomic(
        &root.join("proc/swaps"),
        b"Filename Type Size Used Priority\n",
    )
    .unwrap();
    fsutil::write_atomic(&root.join("usr/local/bin/kubelet"), b"").unwrap();
    let me = cfg.nodes.iter().find(|n| n.role == role).cloned();
    let ready = |name: &str| json!({"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let nodes = json!({"items": [ready("m"), ready("w")]});
    let rec = Arc::new(
        script(Recording::new(), &root)
            .answer("/usr/local/bin/kubeadm config images list", IMAGES)
            .answer("GET /readyz", "ok")
            .answer("GET /api/v1/nodes/w", &ready("w").to_string())
            .answer("GET /api/v1/nodes", &nodes.to_string())
            .answer(
                "GET /apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy",
                &json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1,
                    "desiredNumberScheduled": 2, "updatedNumberScheduled": 2, "numberAvailable": 2}})
                .to_string(),
            ),
    );
    let api = api_server(rec.clone());
    let runner = Arc::new(Kubeadm {
        rec,
        root: root.clone(),
        api,
    });
    let mut ctx = Ctx::new(root.clone(), cfg, runner.clone(), rt.handle().clone());
    ctx.me = me;
    ctx.seed = Some(Arc::new(crate::seed_registry::Seed::load(&b).unwrap()));
    Node {
        _t: t,
        root,
        state,
        runner,
        ctx,
        rt,
    }
}

impl Node {
    fn boot(&mut self) -> Result<(), Stopped> {
        let mut s = Sink::open(&self.state).unwrap().quiet();
        let _g = self.rt.enter();
        run(&mut self.ctx, &mut s, CLUSTER_STEPS)
    }

    /// The commands run, with the test's root shown as `/` and the state
    /// directory as `$STATE`.
    fn lines(&self) -> Vec<String> {
        let root = format!("{}/", self.root.display());
        let state = self.state.display().to_string();
        self.runner
            .rec
            .lines()
            .iter()
            .map(|l| l.replace(&state, "$STATE").replace(&root, "/"))
            .collect()
    }

    fn events(&self) -> Vec<String> {
        read_all(&self.state)
            .unwrap()
            .iter()
            .filter(|e| e.kind != crate::events::Kind::Started)
            .map(|e| format!("{} {:?}: {}", e.step, e.kind, e.detail))
            .collect()
    }

    fn mode(&self, rel: &str) -> u32 {
        std::fs::metadata(self.root.join(rel))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    }
}

#[test]
fn a_master_prepares_configures_inits_lays_the_cni_and_waits_for_ready_in_order() {
    let mut n = node(Role::Master, |r, _| r);
    n.boot().unwrap();
    let k = "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf";
    let apply = |f: &str| {
        format!(
            "{k} apply --server-side --force-conflicts --field-manager=kpaas-agent -f $STATE/{f}"
        )
    };
    let phase =
        |p: &str| format!("/usr/local/bin/kubeadm init phase {p} --config $STATE/kubeadm.yaml");
    let mut want = vec![
        "/usr/local/bin/kubeadm config images list --config $STATE/kubeadm-cluster.yaml"
            .to_string(),
        "modprobe overlay".into(),
        "modprobe br_netfilter".into(),
        "sysctl -p /etc/sysctl.d/99-kpaas-kubernetes.conf".into(),
        "systemctl enable containerd.service".into(),
        "systemctl restart containerd.service".into(),
        "/usr/local/bin/crictl --runtime-endpoint unix:///run/containerd/containerd.sock info"
            .into(),
        "systemctl daemon-reload".into(),
        // init waits for the runtime itself: at a resumed boot the runtime
        // step does not run.
        "/usr/local/bin/crictl --runtime-endpoint unix:///run/containerd/containerd.sock info"
            .into(),
    ];
    for p in init::PHASES {
        want.push(phase(p));
        if *p == "preflight" {
            want.push("sync".into());
        }
        if *p == "etcd local" {
            want.push("GET /readyz".into());
        }
    }
    want.extend([
        "systemctl enable kubelet.service".into(),
        // The credential's first check: both listed nodes are in the
        // cluster, so the seeds' token is removed (the stand-in API
        // records a DELETE as its path).
        "GET /api/v1/nodes".into(),
        "GET /api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef".into(),
        apply("cni-settings.yaml"),
        apply("cni.yaml"),
        // Ready: the API answers, then each check reads its object.
        "GET /readyz".into(),
        "GET /api/v1/nodes".into(),
        "GET /apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy".into(),
    ]);
    assert_eq!(n.lines(), want);
    // The files: the token only in the 0600 config, the CA key 0600, the
    // runtime's sandbox image from kubeadm's own list.
    let cfg = std::fs::read_to_string(n.state.join("kubeadm.yaml")).unwrap();
    assert!(cfg.contains(TOKEN) && cfg.contains("kubernetesVersion: v1.25.6"));
    assert_eq!(
        std::fs::metadata(n.state.join("kubeadm.yaml"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(n.mode("etc/kubernetes/pki/ca.key"), 0o600);
    // kubeadm.yaml names the patches that give the control plane patience.
    assert!(cfg.contains(&format!(
        "directory: {}",
        n.state.join("kubeadm-patches").display()
    )));
    assert!(
        n.state
            .join("kubeadm-patches/kube-apiserver+strategic.yaml")
            .exists()
    );
    assert_eq!(n.mode("root/.kube/config"), 0o600);
    let toml = std::fs::read_to_string(n.root.join("etc/containerd/config.toml")).unwrap();
    assert!(toml.contains("sandbox_image = \"registry.k8s.io/pause:3.8\""));
    let ev = n.events();
    assert!(ev.iter().all(|e| !e.contains(TOKEN)), "{ev:?}");
    assert!(
        ev.last()
            .unwrap()
            .starts_with("ready Done: cluster ready: 2 node(s) Ready (m, w)"),
        "{ev:?}"
    );
    assert!(
        ev.iter().any(|e| e.starts_with(
            "credential Done: the seeds' join credential: token abcdef: withdrawn at "
        ) && e.contains("every node the cluster file lists had joined (m, w)")),
        "{ev:?}"
    );
    // A second boot redoes nothing but the credential's check (a node
    // list: a removed credential is never made again).
    let before = n.lines().len();
    n.boot().unwrap();
    assert_eq!(n.lines()[before..], ["GET /api/v1/nodes"]);
}

#[test]
fn an_image_the_seed_lacks_stops_the_boot_before_anything_changes() {
    let mut n = node(Role::Master, |r, _| {
        r.answer(
            "/usr/local/bin/kubeadm config images list",
            "registry.k8s.io/kube-apiserver:v1.25.6\nregistry.k8s.io/etcd:3.5.6-0\nregistry.k8s.io/coredns/coredns:v1.9.3\n",
        )
    });
    assert!(matches!(n.boot(), Err(Stopped::Step(StepId::Prepare))));
    assert_eq!(n.lines().len(), 1, "{:?}", n.lines());
    let ev = n.events();
    let failed = ev.iter().find(|e| e.starts_with("prepare Failed")).unwrap();
    assert!(
        failed.contains("lacks 2 of the 3 images")
            && failed.contains("registry.k8s.io/etcd:3.5.6-0")
            && failed.contains("registry.k8s.io/coredns/coredns:v1.9.3"),
        "{failed}"
    );
    assert!(!n.root.join("etc/containerd/config.toml").exists());
}

/// A worker whose `kubeadm join` fails with `why`, booted until the join
/// step stops it. Something listens where it looks for the master's API
/// (the step waits for that before kubeadm runs).
fn worker_whose_join_fails(why: &str) -> Node {
    let mut n = node(Role::Worker, |r, _| {
        r.fail("/usr/local/bin/kubeadm join", why)
    });
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    n.ctx.cfg.nodes[0].ip = "127.0.0.1".parse().unwrap();
    let port = l.local_addr().unwrap().port();
    n.ctx.cfg.kubernetes.as_mut().unwrap().apiserver_port = port;
    assert!(matches!(n.boot(), Err(Stopped::Step(StepId::Join))));
    n
}

#[test]
fn a_refused_join_is_reset_and_says_why() {
    let why = "error execution phase preflight: couldn't validate the identity of the API Server: cluster CA found in cluster-info ConfigMap is invalid: none of the public keys \"sha256:11\" are pinned";
    let n = worker_whose_join_fails(why);
    let lines = n.lines();
    let join = lines
        .iter()
        .position(|l| l.starts_with("/usr/local/bin/kubeadm join"))
        .unwrap();
    assert_eq!(
        lines[join + 1],
        "/usr/local/bin/kubeadm reset --force --cri-socket unix:///run/containerd/containerd.sock"
    );
    let ev = n.events();
    let failed = ev.iter().find(|e| e.starts_with("join Failed")).unwrap();
    assert!(
        failed.contains("are pinned") && failed.contains("nothing half-joined is left"),
        "{failed}"
    );
}

#[test]
fn a_half_done_init_is_reset_before_init_runs_again() {
    let mut n = node(Role::Master, |r, _| r);
    // A power cut after the control plane's manifests were written, before
    // kubeconfigs: no admin.conf, so nothing to ask.
    fsutil::write_atomic(&n.root.join("etc/kubernetes/manifests/etcd.yaml"), b"x").unwrap();
    n.boot().unwrap();
    let lines = n.lines();
    let at = |s: &str| lines.iter().position(|l| l.contains(s)).unwrap();
    // Reset, then the images a power cut may have left half-written go,
    // then init from the start.
    assert!(at("kubeadm reset --force") < at("containerd.sock rmi --all"));
    assert!(at("rmi --all") < at("init phase preflight"), "{lines:?}");
    assert!(n.events().iter().any(|e| {
        e.contains("a half-done kubeadm init was found (etc/kubernetes/manifests/etcd.yaml)")
    }));
}

#[test]
fn keys_an_earlier_certs_phase_left_are_a_half_done_init() {
    let mut n = node(Role::Master, |r, _| r);
    // A power cut after `certs all`, before anything else reached the disk:
    // an empty apiserver.key (unsynced) and an etcd directory.
    let pki = n.root.join("etc/kubernetes/pki");
    fsutil::write_atomic(&pki.join("apiserver.key"), b"").unwrap();
    fsutil::write_atomic(&pki.join("etcd/server.key"), b"").unwrap();
    n.boot().unwrap();
    let lines = n.lines();
    let at = |s: &str| lines.iter().position(|l| l.contains(s)).unwrap();
    assert!(
        at("kubeadm reset --force") < at("init phase certs all"),
        "{lines:?}"
    );
    assert!(n.events().iter().any(|e| e.contains(
        "a half-done kubeadm init was found (etc/kubernetes/pki (apiserver.key, etcd))"
    )));
    // The torn key is gone; the seed's CA was laid again.
    assert!(!pki.join("apiserver.key").exists() && !pki.join("etcd").exists());
    assert!(pki.join("ca.crt").exists() && pki.join("ca.key").exists());
}

#[test]
fn a_finished_init_found_after_a_power_cut_is_not_redone() {
    let mut n = node(Role::Master, |r, _| r);
    // Power cut after the last phase, before the journal said done.
    let api = n.runner.api.clone();
    write_kubeconfig(&n.root.join("etc/kubernetes/admin.conf"), &api, "");
    write_kubeconfig(
        &n.root.join("etc/kubernetes/kubelet.conf"),
        &api,
        "client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem",
    );
    n.boot().unwrap();
    let lines = n.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("kubeadm init") || l.contains("kubeadm reset")),
        "{lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l == "GET /apis/apps/v1/namespaces/kube-system/daemonsets/kube-proxy")
    );
    assert!(n.events().iter().any(|e| {
        e.starts_with("init Done: kubeadm init had finished before this boot: not redone")
    }));
}

#[test]
fn a_busy_api_server_is_waited_out_and_a_refusal_is_not() {
    use super::cluster::transient;
    assert!(transient(
        "running kubectl\nUnable to connect to the server: net/http: request canceled (Client.Timeout exceeded while awaiting headers)"
    ));
    assert!(transient(
        "Error from server: etcdserver: request timed out"
    ));
    assert!(!transient(
        "Error from server (Invalid): error when creating \"cni.yaml\": DaemonSet.apps \"x\" is invalid"
    ));
    assert!(!transient("Error from server (Forbidden): forbidden"));
}

#[test]
fn a_join_timed_out_on_a_busy_master_is_reset_and_tried_again() {
    let why = "error execution phase kubelet-start: error uploading crisocket: error patching node \"w\" through apiserver: Patch \"https://10.10.0.10:6443/api/v1/nodes/w?timeout=10s\": context deadline exceeded (Client.Timeout exceeded while awaiting headers)";
    let n = worker_whose_join_fails(why);
    let lines = n.lines();
    let joins: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("/usr/local/bin/kubeadm join"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(joins.len(), 5, "{lines:?}");
    for j in joins {
        assert!(lines[j + 1].starts_with("/usr/local/bin/kubeadm reset --force"));
    }
    let ev = n.events();
    assert!(
        ev.iter()
            .any(|e| e.contains("join attempt 1 of 5 timed out on a busy master"))
    );
    let failed = ev.iter().find(|e| e.starts_with("join Failed")).unwrap();
    assert!(
        failed.contains("timed out 5 times") && !failed.contains("refused"),
        "{failed}"
    );
}

#[test]
fn a_join_that_finished_before_a_power_cut_is_not_redone() {
    let mut n = node(Role::Worker, |r, _| r);
    // Power cut after kubeadm join wrote kubelet.conf, before the journal
    // said done: the cluster lists the node, so nothing is joined again.
    let api = n.runner.api.clone();
    write_kubeconfig(&n.root.join("etc/kubernetes/kubelet.conf"), &api, "");
    n.boot().unwrap();
    let lines = n.lines();
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("kubeadm join") || l.contains("kubeadm reset")),
        "{lines:?}"
    );
    let asked = lines
        .iter()
        .position(|l| l == "GET /api/v1/nodes/w")
        .unwrap();
    let started = lines
        .iter()
        .position(|l| l == "systemctl start kubelet.service")
        .unwrap();
    assert!(started < asked, "{lines:?}");
    assert!(n.events().iter().any(|e| {
        e.starts_with("join Done: joined before this boot: not redone; node w is in the cluster")
    }));
}

/// A cheap probe is asked again every `every`, not after a growing pause:
/// over a 300 ms limit at 20 ms it is asked many times (the backoff's first
/// pause alone, 1 s, would let it be asked once), and the failure names
/// what was waited for and the probe's last word.
#[test]
fn a_cheap_probe_is_asked_at_its_pace_without_backing_off() {
    use super::cluster::wait_every;
    use std::time::Duration;
    let t = tempfile::tempdir().unwrap();
    let mut events = crate::events::Sink::open(t.path()).unwrap().quiet();
    let mut asked = 0;
    let e = wait_every(
        &mut events,
        StepId::Join,
        "the master's API at 192.0.2.1:6443",
        Duration::from_millis(300),
        Duration::from_millis(20),
        || -> Result<Option<()>, String> {
            asked += 1;
            Err("connection refused".into())
        },
    )
    .unwrap_err()
    .to_string();
    assert!(asked >= 5, "asked {asked} time(s)");
    assert!(
        e.contains("the master's API at 192.0.2.1:6443") && e.contains("connection refused"),
        "{e}"
    );
    // And it ends at the first yes.
    let mut asked = 0;
    let got = wait_every(
        &mut events,
        StepId::Join,
        "x",
        Duration::from_secs(60),
        Duration::from_millis(1),
        || {
            asked += 1;
            Ok((asked == 3).then_some(asked))
        },
    )
    .unwrap();
    assert_eq!((got, asked), (3, 3));
}
