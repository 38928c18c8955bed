//! A two-node lab for cluster tests and the cluster bench: the demo bundle,
//! seeds and one raw image; a master and workers on a private socket
//! network whose default route leads nowhere, the master with a second NIC
//! on qemu's restricted user network (its API forwarded to a host loopback
//! port, nothing out); a host kubeconfig signed by the site's CA; a worker
//! seed that pins the wrong CA.

#![allow(clippy::unwrap_used)] // test tooling: a panic is the failure report

use crate::vm::{self, Firmware, HostLink, Vm, VmSpec};
use anyhow::{Result, bail};
use base64::Engine;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The lab: containerd (the image has no CRI-O), a gateway for the default
/// route Kubernetes and flannel choose addresses by (nothing is at
/// 10.10.0.1: the route leads nowhere), small-VM minimums.
pub const CLUSTER: &str = "cluster_version: 1\nname: lab\nplatform: demo\ncontainer_manager: containerd\nmaster: {hostname: kpaas-master, private_ip: 10.10.0.10, mac: \"52:54:00:12:34:10\"}\nworkers:\n  - {hostname: kpaas-worker1, private_ip: 10.10.0.11, mac: \"52:54:00:12:34:11\"}\nnetwork: {node_cidr: 10.10.0.0/24, gateway: 10.10.0.1}\nstorage: {type: nfs, nfs: {server: 10.10.0.20}}\nminimums: {memory_mib: 1200, root_free_mib: 100}\njoin: {credential_ttl: 2m}\n";

pub const MASTER_MAC: &str = "52:54:00:12:34:10";
pub const WORKER_MAC: &str = "52:54:00:12:34:11";
/// Where the image installs the agent (airgap_bundle::node::AGENT_PATH).
pub const AGENT: &str = "/usr/local/bin/kpaas-agent";
/// A machine the cluster file does not list (day 2).
pub const NEW_MAC: &str = "52:54:00:12:34:12";
/// The master's second NIC, on the host's restricted user network.
pub const HOST_LINK_MAC: &str = "52:54:00:12:34:99";
const HOST_LINK_IP: &str = "10.0.2.15";

/// An 8 GiB copy-on-write disk over `base`: what a guest writes survives
/// its power cut, and the base image stays as built.
pub fn overlay(base: &Path, out: &Path) -> PathBuf {
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F"])
        .arg(if base.extension().is_some_and(|e| e == "qcow2") {
            "qcow2"
        } else {
            "raw"
        })
        .arg("-b")
        // qemu-img resolves a relative backing file from the overlay's
        // directory, not from here.
        .arg(std::fs::canonicalize(base).unwrap_or_else(|_| base.to_path_buf()))
        .arg(out)
        // Room for the images containerd unpacks: cloud-init's growpart
        // gives root the rest of the disk at first boot.
        .arg("8G")
        .status()
        .unwrap();
    assert!(st.success());
    out.to_path_buf()
}

/// A point-to-point UDP link on loopback, from `local` to `remote`.
fn dgram(local: u16, remote: u16) -> String {
    format!(
        "dgram,id=n0,local.type=inet,local.host=127.0.0.1,local.port={local},remote.type=inet,remote.host=127.0.0.1,remote.port={remote}"
    )
}

/// The guests' network: a hub on loopback with three places (the master,
/// a worker, a day-2 node). Each guest's NIC is a point-to-point UDP link
/// (`-netdev dgram`) to its own port of the hub, which repeats every frame
/// to the other places. Datagrams, not a stream: a guest that loses power
/// and boots again is on the same network as before, as with a real
/// switch (a `socket`/`stream` connection is gone for good when its
/// listener dies). A place with no guest drops what is sent to it.
#[derive(Clone, Debug)]
pub struct Net {
    /// Each place's guest port (its `local`) and hub port (its `remote`).
    pub places: [(u16, u16); 3],
}

impl Net {
    pub fn start() -> Net {
        let port = crate::servers::free_port;
        let places = [(port(), port()), (port(), port()), (port(), port())];
        let sockets: Vec<Arc<std::net::UdpSocket>> = places
            .iter()
            .map(|(_, hub)| Arc::new(std::net::UdpSocket::bind(("127.0.0.1", *hub)).unwrap()))
            .collect();
        for i in 0..places.len() {
            let sockets = sockets.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 65_536];
                loop {
                    let Ok(n) = sockets[i].recv(&mut buf) else {
                        continue;
                    };
                    for (j, (guest, _)) in places.iter().enumerate() {
                        if j != i {
                            // From the receiver's own hub port: what its
                            // link expects to hear from.
                            let _ = sockets[j].send_to(&buf[..n], ("127.0.0.1", *guest));
                        }
                    }
                }
            });
        }
        Net { places }
    }

    fn link(&self, place: usize) -> String {
        let (guest, hub) = self.places[place];
        dgram(guest, hub)
    }
}

pub struct Lab {
    pub dir: PathBuf,
    pub raw: PathBuf,
    pub seeds: PathBuf,
    pub bundle: PathBuf,
    /// The guests' network: the master, one worker and one day-2 node at a time.
    pub net: Net,
    pub api_port: u16,
    /// The platform's NodePorts on the host: the in-cluster registry
    /// (Harbor's place, 30002) and Vault (31654).
    pub registry_port: u16,
    pub vault_port: u16,
    /// Whether the seeds deploy the platform (else the cluster only).
    pub platform: bool,
}

impl Lab {
    /// `platform`: the master deploys the platform's waves once the cluster
    /// is ready; else the nodes stop there (`seeds --cluster-only`).
    pub fn build(t: &Path, platform: bool) -> Result<Lab> {
        let env = crate::DemoEnv::start()?;
        let (bundle, key) = crate::demo_bundle(&env, t)?;
        let lab = t.join("lab.yaml");
        std::fs::write(&lab, CLUSTER)?;
        let seeds = t.join("seeds");
        let raw = t.join("node.raw");
        let s = |p: &Path| p.to_string_lossy().to_string();
        let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/../images/debian-12.yaml");
        let cache = s(&crate::fixtures_dir().join("cache"));
        let (lab_s, seeds_s) = (s(&lab), s(&seeds));
        let bundle_s = s(&bundle);
        let mut seed_args = vec![
            "seeds",
            "--cluster",
            &lab_s,
            "--bundle",
            &bundle_s,
            "--out",
            &seeds_s,
        ];
        if !platform {
            seed_args.push("--cluster-only");
        }
        for args in [
            seed_args,
            vec![
                "image",
                "--profile",
                profile,
                "--bundle",
                &s(&bundle),
                "--bundle-key",
                &s(&key),
                "--format",
                "raw",
                "--out",
                &s(&raw),
                "--cache-dir",
                &cache,
                "--offline",
            ],
        ] {
            let o = Command::new(crate::workspace_bin("kpaas-builder"))
                .args(&args)
                .output()?;
            if !o.status.success() {
                bail!(
                    "kpaas-builder {args:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
        }
        Ok(Lab {
            dir: t.to_path_buf(),
            raw,
            seeds,
            bundle,
            net: Net::start(),
            api_port: crate::servers::free_port(),
            registry_port: crate::servers::free_port(),
            vault_port: crate::servers::free_port(),
            platform,
        })
    }

    /// The master, on its own disk, listening for the guests' network, with
    /// the host link (the API forwarded to `api_port`). Volumes (an update's
    /// KPAAS-UPDATE) are plugged in while it runs ([`Vm::attach`]).
    pub fn master(&self, disk: &Path) -> Vm {
        let seed = self.host_link_seed();
        let spec = VmSpec::node("master", Firmware::Uefi, disk, &seed, MASTER_MAC)
            .memory(2560)
            .writable()
            .hotplug()
            .netdev(self.net.link(0))
            .host_link(HostLink {
                mac: HOST_LINK_MAC.into(),
                forwards: vec![
                    (self.api_port, format!("{HOST_LINK_IP}:6443")),
                    (self.registry_port, format!("{HOST_LINK_IP}:30002")),
                    (self.vault_port, format!("{HOST_LINK_IP}:31654")),
                ],
            });
        vm::start(&self.dir, &spec).unwrap()
    }

    /// The universal seed plus an address for the master's host-link NIC: a
    /// test harness's NIC, not the site's network, so it is added here.
    pub fn host_link_seed(&self) -> PathBuf {
        let iso = self.dir.join("universal-host-link.iso");
        if iso.exists() {
            return iso;
        }
        let files = edited_seed(
            &self.seeds.join("universal"),
            &self.dir.join("universal-host-link"),
            |f, text| {
                if f == "network-config" {
                    text + &format!(
                        "  host-link:\n    match:\n      macaddress: \"{HOST_LINK_MAC}\"\n    addresses: [\"{HOST_LINK_IP}/24\"]\n"
                    )
                } else {
                    text
                }
            },
        );
        cidata(&files, &iso);
        iso
    }

    /// The listed worker's machine, on the network's second place.
    pub fn worker(&self, name: &str, disk: &Path, seed: &Path) -> Vm {
        self.worker_at(name, disk, seed, WORKER_MAC, 1)
    }

    /// A machine the cluster file does not list, booted from `seed` (a
    /// day-2 seed's CIDATA image), on the network's third place.
    pub fn day2(&self, name: &str, disk: &Path, seed: &Path) -> Vm {
        self.worker_at(name, disk, seed, NEW_MAC, 2)
    }

    /// A worker-sized guest: one vCPU (see [`VmSpec::cpus`]), on its own
    /// disk, at network place `link`.
    fn worker_at(&self, name: &str, disk: &Path, seed: &Path, mac: &str, link: usize) -> Vm {
        vm::start(
            &self.dir,
            &VmSpec::node(name, Firmware::Uefi, disk, seed, mac)
                .memory(1536)
                .cpus(1)
                .writable()
                .netdev(self.net.link(link)),
        )
        .unwrap()
    }

    /// A kubeconfig for the host: a client certificate the site's CA (from
    /// the seeds' secrets) signs for system:masters, the API through the
    /// forwarded port, the server's name as its certificate says.
    pub fn kubeconfig(&self) -> PathBuf {
        let d = self.dir.join("admin");
        std::fs::create_dir_all(&d).unwrap();
        // openssl runs in `d`: the CA's paths must not be relative (the
        // demo's output directory is).
        let s = std::fs::canonicalize(self.seeds.join("secrets")).unwrap();
        let sh = |args: &[&str]| {
            let o = Command::new("openssl")
                .args(args)
                .current_dir(&d)
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        sh(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "admin.key",
            "-subj",
            "/O=system:masters/CN=kpaas-test",
            "-out",
            "admin.csr",
        ]);
        let ca = s.join("ca.crt");
        let cakey = s.join("ca.key");
        // Signed with `openssl ca` to backdate it: `x509 -req` starts a
        // certificate at this second, and a guest's clock (set from the RTC
        // at boot, to the second) can be behind ours, so the API server
        // would answer 401 to a certificate that is not yet valid for it.
        std::fs::write(
            d.join("ca.cnf"),
            "[ca]\ndefault_ca = lab\n[lab]\ndatabase = index.txt\nnew_certs_dir = .\nserial = serial\ndefault_md = sha256\npolicy = any\nunique_subject = no\nx509_extensions = client\n[any]\norganizationName = supplied\ncommonName = supplied\n[client]\nkeyUsage = critical, digitalSignature, keyEncipherment\nextendedKeyUsage = clientAuth\n",
        )
        .unwrap();
        std::fs::write(d.join("index.txt"), "").unwrap();
        std::fs::write(d.join("serial"), "01\n").unwrap();
        sh(&[
            "ca",
            "-batch",
            "-config",
            "ca.cnf",
            "-cert",
            &ca.to_string_lossy(),
            "-keyfile",
            &cakey.to_string_lossy(),
            "-in",
            "admin.csr",
            "-out",
            "admin.crt",
            "-notext",
            "-startdate",
            "20000101000000Z",
            "-enddate",
            "20991231000000Z",
        ]);
        let b64 =
            |p: &Path| base64::engine::general_purpose::STANDARD.encode(std::fs::read(p).unwrap());
        let kc = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: lab\n  cluster:\n    server: https://127.0.0.1:{}\n    tls-server-name: 10.10.0.10\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: lab\n  context: {{cluster: lab, user: admin}}\ncurrent-context: lab\n",
            self.api_port,
            b64(&ca),
            b64(&d.join("admin.crt")),
            b64(&d.join("admin.key"))
        );
        let p = d.join("kubeconfig");
        std::fs::write(&p, kc).unwrap();
        p
    }

    /// A worker's seed whose CA hash pins a CA the cluster does not have.
    pub fn wrong_ca_seed(&self) -> PathBuf {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let real = std::fs::read_to_string(self.seeds.join("secrets/ca-cert-hash")).unwrap();
        let wrong = format!("sha256:{}\n", "ab".repeat(32));
        let files = edited_seed(
            &self.seeds.join("kpaas-worker1"),
            &self.dir.join("wrong-ca"),
            |f, text| {
                if f == "user-data" {
                    assert!(
                        text.contains(&b64(&real)),
                        "the worker's seed carries the CA hash"
                    );
                    text.replace(&b64(&real), &b64(&wrong))
                } else {
                    text
                }
            },
        );
        let iso = self.dir.join("wrong-ca.iso");
        cidata(&files, &iso);
        iso
    }
}

/// A copy of every file of the seed `src` (as `kpaas-builder seeds` wrote
/// it: its node config too, which the agent reads from the volume before
/// cloud-init has run) into `dir`, each passed through `edit`.
fn edited_seed(src: &Path, dir: &Path, edit: impl Fn(&str, String) -> String) -> Vec<PathBuf> {
    std::fs::create_dir_all(dir).unwrap();
    let mut files = Vec::new();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if !e.file_type().unwrap().is_file() {
            continue;
        }
        let f = e.file_name().to_string_lossy().to_string();
        let text = edit(&f, std::fs::read_to_string(e.path()).unwrap());
        std::fs::write(dir.join(&f), text).unwrap();
        files.push(dir.join(&f));
    }
    files.sort();
    files
}

/// A CIDATA ISO of `files`, as `kpaas-builder seeds` writes them.
fn cidata(files: &[PathBuf], iso: &Path) {
    let st = Command::new("xorriso")
        .args([
            "-as", "mkisofs", "-quiet", "-volid", "CIDATA", "-joliet", "-rock", "-o",
        ])
        .arg(iso)
        .args(files)
        .status()
        .unwrap();
    assert!(st.success(), "xorriso writing {}", iso.display());
}

/// What an emulated control plane answers when it is busy, not wrong: the
/// lab's master shares two host cores with its workers, so etcd or the API
/// server may miss a deadline that real hardware never would. Narrower
/// than the agent's `boot::cluster::transient`: a master that is down
/// (refused, unreachable) is an answer the tests poll for, not a retry.
const BUSY: &[&str] = &[
    "etcdserver: request timed out",
    "etcdserver: leader changed",
    "TLS handshake timeout",
    "resource quota evaluation timed out",
    "the server was unable to return a response in the time allotted",
    "the server is currently unable to handle the request",
    "Client.Timeout exceeded",
];

/// How long a request is asked again while the control plane is busy.
const BUSY_WAIT: Duration = Duration::from_secs(3 * 60);

/// The kit's kubectl against the lab; a request the busy control plane
/// could not serve is asked again (every verb the tests use may be: they
/// apply, get, delete or read logs) for up to [`BUSY_WAIT`].
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String, String> {
    let start = Instant::now();
    loop {
        let o = Command::new(crate::fixtures_dir().join("go/bin/kubectl"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if o.status.success() {
            return Ok(String::from_utf8_lossy(&o.stdout).to_string());
        }
        let e = String::from_utf8_lossy(&o.stderr).to_string();
        if !BUSY.iter().any(|b| e.contains(b)) || start.elapsed() > BUSY_WAIT {
            return Err(e);
        }
        eprintln!(
            "kubectl {}: the control plane is busy, asking again: {}",
            args.join(" "),
            e.trim()
        );
        std::thread::sleep(Duration::from_secs(5));
    }
}

pub fn json(kubeconfig: &Path, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.extend(["-o", "json"]);
    serde_json::from_str(&kubectl(kubeconfig, &a).unwrap()).unwrap()
}

/// Lines of a guest's serial console with the seconds since power-on at
/// which each first appeared (polled every 100 ms).
pub fn watch(
    serial: PathBuf,
    start: Instant,
    stop: Arc<AtomicBool>,
) -> Arc<Mutex<Vec<(f64, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    std::thread::spawn(move || {
        let mut done = 0;
        while !stop.load(Ordering::SeqCst) {
            let text =
                String::from_utf8_lossy(&std::fs::read(&serial).unwrap_or_default()).to_string();
            // Only whole lines; the last one may still be arriving.
            let lines: Vec<&str> = text
                .split_inclusive('\n')
                .filter(|l| l.ends_with('\n'))
                .collect();
            if lines.len() > done {
                let t = start.elapsed().as_secs_f64();
                if let Ok(mut s) = seen.lock() {
                    for l in &lines[done..] {
                        s.push((t, l.trim_end().to_string()));
                    }
                }
                done = lines.len();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    out
}

pub fn first(lines: &Mutex<Vec<(f64, String)>>, marker: &str) -> Option<f64> {
    lines
        .lock()
        .ok()?
        .iter()
        .find(|(_, l)| l.contains(marker))
        .map(|(t, _)| *t)
}

/// The critical-path report of one node from its console: each step's
/// and each component's outcome at its time since power-on, with where its
/// time went (the agent's `cost:` line: its own work, waiting on others,
/// the processes it ran with their CPU), then the node's CPU by process
/// kind at the cluster ready and the platform ready (`cpu:` lines).
pub fn print_costs(who: &str, lines: &Lines) {
    let lines = lines.lock().map(|l| l.clone()).unwrap_or_default();
    println!("  {who}: power-on -> each step (s), what its time went to");
    let mut last: Option<(f64, String)> = None;
    for (t, l) in &lines {
        let Some(rest) = l.split("kpaas-agent: ").nth(1) else {
            continue;
        };
        let Some((step, what)) = rest.split_once(": ") else {
            continue;
        };
        if let Some(cost) = what.strip_prefix("cost: ") {
            // The outcome the cost belongs to: the step's line before it
            // (a component's readiness names the component first).
            let label = match &last {
                Some((_, prev)) if step == "deploy" => {
                    let c = prev.split(": ").next().unwrap_or(prev);
                    format!("deploy/{c}")
                }
                _ => step.to_string(),
            };
            let at = last.as_ref().map_or(*t, |(t, _)| *t);
            println!("    {at:>7.0}  {label:<22} {cost}");
        } else if let Some(cpu) = what.strip_prefix("cpu: ") {
            println!("    {t:>7.0}  cpu at {step:<15} {cpu}");
        } else {
            last = Some((*t, what.to_string()));
        }
    }
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The console lines of a guest, with the seconds since its power-on.
pub type Lines = Arc<Mutex<Vec<(f64, String)>>>;

impl Lab {
    /// Run `run` of a bench: a master and a worker (universal seed) on fresh
    /// overlays of the image, powered on together, their consoles watched
    /// until the master prints `until` (or `limit` passes); then the limit
    /// measured on the same guests. Returns the master's and the worker's
    /// lines and the limit.
    pub fn race(
        &self,
        work: &Path,
        run: usize,
        until: &str,
        limit: Duration,
    ) -> Result<(Lines, Lines, crate::limit::Limits)> {
        let md = overlay(&self.raw, &work.join(format!("m{run}.qcow2")));
        let wd = overlay(&self.raw, &work.join(format!("w{run}.qcow2")));
        let stop = Arc::new(AtomicBool::new(false));
        let powered_on = std::time::SystemTime::now();
        let mut m = self.master(&md);
        std::thread::sleep(Duration::from_millis(300));
        let mut w = self.worker("worker", &wd, &self.seeds.join("universal.iso"));
        let ml = watch(m.serial.clone(), m.started, stop.clone());
        let wl = watch(w.serial.clone(), w.started, stop.clone());
        // A step that failed stops the run at once (it would otherwise sit
        // out the whole limit: seen, a bench still waiting for "platform
        // ready" long after the deploy had stopped).
        let res = m.wait_unless(until, &["kpaas-agent: the cluster stopped at step"], limit);
        // The console can show the marker before its line ends: the
        // watcher keeps whole lines only, so it is stopped once it holds
        // the marker's line (seen: a run whose "platform ready" line was
        // never recorded, its total read as 0 s).
        let seen = Instant::now();
        while res.is_ok() && first(&ml, until).is_none() && seen.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_millis(200));
        }
        stop.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(300));
        res.map_err(|e| anyhow::anyhow!("run {run}: {e:#}"))?;
        let kc = self.kubeconfig();
        // Read before the limit restarts the pods (its own events say
        // "already present").
        let events = self.platform.then(|| crate::limit::cluster_events(&kc));
        let pulls = events
            .as_ref()
            .map(|e| e.as_ref().map(crate::limit::pulls).map_err(Clone::clone));
        let timeline = events.as_ref().map(|e| {
            e.as_ref()
                .map_err(Clone::clone)
                .and_then(|e| crate::limit::timeline(e, crate::limit::TIMELINE, powered_on))
        });
        let pods = self
            .platform
            .then(|| crate::limit::platform_pods(&kc, Duration::from_secs(15 * 60)));
        // The hand-off's limit reads the first bundle's blobs from the
        // seed: before the update, after which the seed serves the next.
        let fill = self
            .platform
            .then(|| crate::limit::local_fill(&kc, &self.dir));
        // Day 2 before the limit takes the lab apart: the worker must
        // still serve the registry and Vault.
        let grow = self.platform.then(|| self.grow(work, run, &kc));
        // The update, on the same master, before the limit too.
        let update = self.platform.then(|| self.update(work, run, &kc, &m, &ml));
        let measured = crate::limit::Limits {
            pulls,
            pods,
            fill,
            timeline,
            grow,
            update,
            kubeadm_init: crate::limit::kubeadm_init(&kc, &mut w, &self.dir),
        };
        Ok((ml, wl, measured))
    }
}

/// A node added on day 2, timed from its power-on (the host's clock).
#[derive(Debug, Clone)]
pub struct Grow {
    /// `node add` on the master, seed fetched: before power-on.
    pub add_s: f64,
    pub joined_s: f64,
    pub ready_s: f64,
    /// Its first platform pod (a bundled image no node held, pinned to
    /// it, made once it joined) started: pulled and running.
    pub pod_s: f64,
    pub image: String,
}

impl Lab {
    /// `node add` on the master, the seed fetched, and a new guest booted
    /// with it on the network's third place: its power-on to joined, to
    /// Ready and to its first platform pod started. The guest is powered
    /// off after.
    pub fn grow(&self, work: &Path, run: usize, kc: &Path) -> Result<Grow, String> {
        let name = format!("kpaas-grow{run}");
        let ip = format!("10.10.0.{}", 20 + run);
        let t0 = Instant::now();
        on_node(
            kc,
            &self.dir,
            &format!("bench-add-{run}"),
            "kpaas-master",
            &[
                AGENT,
                "node",
                "add",
                "--hostname",
                &name,
                "--ip",
                &ip,
                "--mac",
                NEW_MAC,
            ],
        )?;
        let b64 = on_node(
            kc,
            &self.dir,
            &format!("bench-seed-{run}"),
            "kpaas-master",
            &["base64", "-w0", &format!("/var/lib/kpaas/seeds/{name}.img")],
        )?;
        let img = work.join(format!("{name}.img"));
        std::fs::write(
            &img,
            base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        let add_s = t0.elapsed().as_secs_f64();
        let image = self.unheld_image(kc)?;
        let disk = overlay(&self.raw, &work.join(format!("g{run}.qcow2")));
        let mut g = self.day2(&format!("grow{run}"), &disk, &img);
        let limit = Duration::from_secs(30 * 60);
        let joined_s = g
            .wait_unless(
                "kpaas-agent: join: joined the cluster",
                &["kpaas-agent: join: FAILED"],
                limit,
            )
            .map_err(|e| format!("{e:#}"))?;
        // A bundled image no node holds, in a pod bound to the new node
        // once it is in the cluster (the pod garbage collector deletes one
        // bound to a node that does not exist yet).
        pod_on(kc, work, &format!("grow-{run}"), &name, &image)?;
        let ready_s = g
            .wait_unless(
                &format!("kpaas-agent: ready: node {name} Ready"),
                &["FAILED"],
                limit,
            )
            .map_err(|e| format!("{e:#}"))?;
        let pod_s = loop {
            let p = kubectl(
                kc,
                &[
                    "get",
                    "pod",
                    &format!("grow-{run}"),
                    "-n",
                    "default",
                    "-o",
                    "json",
                ],
            )
            .unwrap_or_default();
            let p: serde_json::Value = serde_json::from_str(&p).unwrap_or_default();
            let st = &p["status"]["containerStatuses"][0]["state"];
            if st["running"]["startedAt"].is_string() || st["terminated"]["startedAt"].is_string() {
                break g.started.elapsed().as_secs_f64();
            }
            if g.started.elapsed() > limit {
                return Err(format!("pod grow-{run} never started: {}", p["status"]));
            }
            std::thread::sleep(Duration::from_secs(1));
        };
        drop(g);
        Ok(Grow {
            add_s,
            joined_s,
            ready_s,
            pod_s,
            image,
        })
    }
}

/// The demo's update, measured on a running platform lab.
#[derive(Debug, Clone)]
pub struct Update {
    /// The 0.2.0 delta built against the master's inventory, and the full
    /// 0.2.0 bundle, on disk.
    pub delta_bytes: u64,
    pub full_bytes: u64,
    /// `kpaas-agent update` on the master (found the volume, verified,
    /// staged, switched, filled, every release change, done), timed from
    /// the host around the privileged pod that runs it.
    pub apply_s: f64,
    /// The first boot's deploy of the component the update upgrades
    /// (apps: its start to its readiness), on the same master.
    pub fresh_s: f64,
    pub summary: String,
}

impl Lab {
    /// The master's inventory, the demo's 0.2.0 built as a delta against it
    /// and as a full bundle, the delta hot-plugged to the master on a
    /// KPAAS-UPDATE volume, and `kpaas-agent update` run there.
    pub fn update(
        &self,
        work: &Path,
        run: usize,
        kc: &Path,
        m: &Vm,
        ml: &Lines,
    ) -> Result<Update, String> {
        let e = |e: anyhow::Error| format!("{e:#}");
        let inv = on_node(
            kc,
            &self.dir,
            &format!("bench-inventory-{run}"),
            "kpaas-master",
            &[AGENT, "inventory"],
        )?;
        let inv_path = work.join(format!("inventory{run}.json"));
        std::fs::write(&inv_path, &inv).map_err(|e| e.to_string())?;
        let env = crate::DemoEnv::start().map_err(e)?;
        let build = |out: &Path, since: bool| -> Result<u64, String> {
            let s = |p: &Path| p.to_string_lossy().to_string();
            let mut a: Vec<String> = ["bundle", "-q", "--platform", "demo-0.2.0", "--arch", "all"]
                .iter()
                .map(|x| x.to_string())
                .collect();
            if since {
                a.extend(["--since".into(), s(&inv_path)]);
            }
            a.extend([
                "--lock".into(),
                s(&self.dir.join("next.lock")),
                "--cache-dir".into(),
                s(&self.dir.join("cache")),
                "--out".into(),
                s(out),
                "--sign-key".into(),
                s(&self.dir.join("key.key")),
            ]);
            a.extend(env.mirror_args());
            let o = Command::new(crate::workspace_bin("kpaas-builder"))
                .args(&a)
                .output()
                .map_err(|e| e.to_string())?;
            if !o.status.success() {
                return Err(format!(
                    "kpaas-builder {a:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
            walkdir_size(out).map_err(e)
        };
        let delta = work.join(format!("delta{run}"));
        let delta_bytes = build(&delta, true)?;
        let full_bytes = build(&work.join(format!("full{run}")), false)?;
        drop(env);
        let vol = work.join(format!("update{run}.img"));
        update_volume(&delta, &vol).map_err(e)?;
        m.attach(&format!("update{run}"), &vol).map_err(e)?;
        // Timed here: the privileged pod's start (seconds) is in it.
        let t0 = Instant::now();
        let out = on_node(
            kc,
            &self.dir,
            &format!("bench-update-{run}"),
            "kpaas-master",
            &[AGENT, "update"],
        )?;
        let apply_s = t0.elapsed().as_secs_f64();
        let fresh_s = match (
            first(ml, "kpaas-agent: deploy: apps: starting"),
            first(ml, "kpaas-agent: deploy: apps: ready in"),
        ) {
            (Some(a), Some(b)) => b - a,
            _ => return Err("the first boot's console has no apps start and ready".into()),
        };
        Ok(Update {
            delta_bytes,
            full_bytes,
            apply_s,
            fresh_s,
            summary: out.lines().last().unwrap_or_default().to_string(),
        })
    }
}

/// Every image reference a node holds, by tag or by digest, as the nodes'
/// status lists them (the runtime's image store through kubelet).
pub fn node_images(nodes: &serde_json::Value) -> std::collections::BTreeSet<String> {
    nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
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

/// A pod `name` in `default`, bound to `node` (which may not exist yet),
/// running `image` once.
pub fn pod_on(kc: &Path, dir: &Path, name: &str, node: &str, image: &str) -> Result<(), String> {
    let pod = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"nodeName": node, "restartPolicy": "Never",
                 "containers": [{"name": "c", "image": image, "command": ["/bin/true"]}]},
    });
    let f = dir.join(format!("{name}.json"));
    std::fs::write(&f, pod.to_string()).map_err(|e| e.to_string())?;
    kubectl(kc, &["apply", "-f", &f.to_string_lossy()]).map(|_| ())
}

impl Lab {
    /// A bundled image of the demo's own registry that no node holds: a
    /// pull of it shows where a node pulls from.
    pub fn unheld_image(&self, kc: &Path) -> Result<String, String> {
        let nodes: serde_json::Value =
            serde_json::from_str(&kubectl(kc, &["get", "nodes", "-o", "json"])?)
                .map_err(|e| e.to_string())?;
        let held = node_images(&nodes);
        let bj: serde_json::Value = serde_json::from_slice(
            &std::fs::read(self.bundle.join("bundle.json")).map_err(|e| e.to_string())?,
        )
        .map_err(|e| e.to_string())?;
        bj["artifacts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["kind"] == "image")
            .filter_map(|a| a["name"].as_str())
            .find(|n| !held.contains(*n) && n.starts_with("registry.demo.kpaas.test/"))
            .map(str::to_string)
            .ok_or_else(|| format!("every bundled image is held already: {held:?}"))
    }
}

/// The seconds a step's `cost:` line gives (`kpaas-agent: STEP: cost: 131.5
/// s: ...`): the step's own duration as the agent measured it.
pub fn step_secs(lines: &Lines, step: &str) -> Option<f64> {
    let marker = format!("kpaas-agent: {step}: cost: ");
    let lines = lines.lock().ok()?;
    lines.iter().find_map(|(_, l)| {
        l.split(&marker)
            .nth(1)?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Starts `command` on `node`'s host as root (as [`on_node`]) and returns
/// at once: what runs on is the node's (a power cut may end it).
pub fn start_on_node(
    kubeconfig: &Path,
    dir: &Path,
    name: &str,
    node: &str,
    command: &[&str],
) -> Result<(), String> {
    let pod = dir.join(format!("{name}.json"));
    let manifest = crate::limit::on_host(name, "kube-system", node, command);
    std::fs::write(&pod, manifest.to_string()).map_err(|e| e.to_string())?;
    kubectl(kubeconfig, &["apply", "-f", &pod.to_string_lossy()]).map(|_| ())
}

/// A read-only volume labelled KPAAS-UPDATE holding the bundle directory
/// `bundle` at its top: what an operator attaches to the master with an
/// update on it (ext4, made from the directory by mkfs.ext4 -d).
pub fn update_volume(bundle: &Path, out: &Path) -> Result<()> {
    let size: u64 = walkdir_size(bundle)?;
    let mib = (size * 2 / (1 << 20)).max(16) + 16;
    let f = std::fs::File::create(out)?;
    f.set_len(mib << 20)?;
    let o = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "KPAAS-UPDATE", "-d"])
        .arg(bundle)
        .arg(out)
        .output()?;
    if !o.status.success() {
        bail!("mkfs.ext4: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}

fn walkdir_size(dir: &Path) -> Result<u64> {
    let mut n = 0;
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let m = e.metadata()?;
        n += if m.is_dir() {
            walkdir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(n)
}

/// Runs `command` on `node`'s host as root, through the cluster's API (a
/// privileged pod that enters the host's namespaces): what an operator
/// types at that node's console. Its output, or why it failed with it.
pub fn on_node(
    kubeconfig: &Path,
    dir: &Path,
    name: &str,
    node: &str,
    command: &[&str],
) -> Result<String, String> {
    start_on_node(kubeconfig, dir, name, node, command)?;
    let start = Instant::now();
    let phase = loop {
        let p = kubectl(
            kubeconfig,
            &[
                "get",
                "pod",
                name,
                "-n",
                "kube-system",
                "-o",
                "jsonpath={.status.phase}",
            ],
        )
        .unwrap_or_default();
        if p == "Succeeded" || p == "Failed" {
            break p;
        }
        if start.elapsed() > Duration::from_secs(15 * 60) {
            return Err(format!(
                "{name} on {node}: not done after 15 min (phase {p:?})"
            ));
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let log = kubectl(kubeconfig, &["logs", name, "-n", "kube-system"])?;
    let _ = kubectl(
        kubeconfig,
        &["delete", "pod", name, "-n", "kube-system", "--wait=false"],
    );
    if phase == "Succeeded" {
        Ok(log)
    } else {
        Err(log)
    }
}
