//! The limit the speed benches judge the agent by, measured in the same run
//! on the same guests once the agent is done: what the same work costs
//! when nothing of ours is on the path and every image is already on the
//! node.
//! - the platform's pods: deleted all at once and timed until their
//!   controllers have them Ready again (no apply, no wave order, no pull);
//! - `kubeadm init` alone: on the worker, reset first, the control plane's
//!   images pulled before the clock starts, one `kubeadm init` with the
//!   settings the agent gives the master (its probe patches included, so a
//!   slow start is not counted against the limit).
//!
//! Both take the lab apart (the pods restart, the worker leaves the
//! cluster): benches only, at the end of a run.

#![allow(clippy::unwrap_used)] // test tooling: a panic is the failure report

use crate::lab::{Lines, kubectl, step_secs};
use crate::vm::Vm;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// Our time as a multiple of the limit measured in the same run.
const GOAL: f64 = 1.5;

/// The limit measured at the end of a bench's run.
#[derive(Debug)]
pub struct Limits {
    /// The platform's pods back Ready with their images present: seconds
    /// and how many (platform labs only).
    pub pods: Option<Result<(f64, usize), String>>,
    /// `kubeadm init` on the worker, its images present: seconds.
    pub kubeadm_init: Result<f64, String>,
    /// What the limit does not pay and our run did: every image the
    /// kubelets pulled (platform labs only), read before the limit runs.
    pub pulls: Option<Result<Vec<Pull>, String>>,
    /// The hand-off with no NodePort and no network on the path: the
    /// master's agent filling a registry on the master itself (platform
    /// labs only).
    pub fill: Option<Result<LocalFill, String>>,
    /// The cluster's events of the namespaces whose components wait on a
    /// volume and a registry (platform labs only), read before the limit.
    pub timeline: Option<Result<Vec<Happened>, String>>,
    /// A node added on day 2 (platform labs only), before the limit.
    pub grow: Option<Result<crate::lab::Grow, String>>,
    /// The demo's update (platform labs only), before the limit.
    pub update: Option<Result<crate::lab::Update, String>>,
}

/// The namespaces [`Limits::timeline`] reads: the provisioner's (its
/// helper pods make each volume) and those of the components that wait on
/// a volume.
pub const TIMELINE: &[&str] = &["local-path-storage", "harbor", "vault", "mariadb"];

/// `kpaas-agent fill --verify-first` on the master into the same registry
/// program on the master's own loopback, and the seed's read rate measured
/// beside it.
#[derive(Debug)]
pub struct LocalFill {
    /// The push alone: the agent only reads and sends (every blob was
    /// hashed before it), so this is the registry's intake.
    pub push_bps: f64,
    /// The agent's hashing of the same blobs before the push.
    pub verify_bps: f64,
    pub read_bps: f64,
    pub bytes: u64,
}

/// The registry and the pusher of [`local_fill`], both on the master.
const FILL_PORT: u16 = 5001;

/// The hand-off's limit on this lab: Harbor's place (distribution, the
/// bundle's `registry:2.8.2`, with the demo's own registry config) as a pod
/// on the master's host network with an emptyDir, filled by the master's
/// own `kpaas-agent fill` from the bundle
/// on its disk (a privileged pod enters the host), then the seed read the
/// same way. Nothing crosses the NodePort, kube-proxy or flannel. The fill
/// hashes every blob first and then pushes without hashing (the hand-off
/// does not hash what the seed hashed), so the push's rate is what the
/// registry takes in, with the agent only reading and sending.
pub fn local_fill(kubeconfig: &Path, dir: &Path) -> Result<LocalFill, String> {
    let registry = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        // Beside Harbor's place: the image has no config of its own, its
        // ConfigMap (`cp-harbor-registry-config`, the demo's registry.yaml)
        // is mounted as there.
        "metadata": {"name": "kpaas-limit-registry", "namespace": "harbor"},
        "spec": {
            "nodeName": "kpaas-master",
            "hostNetwork": true,
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "registry",
                "image": "docker.io/library/registry:2.8.2",
                "env": [
                    {"name": "REGISTRY_HTTP_ADDR", "value": format!("127.0.0.1:{FILL_PORT}")},
                    {"name": "REGISTRY_STORAGE_FILESYSTEM_ROOTDIRECTORY", "value": "/var/lib/registry"},
                ],
                "volumeMounts": [
                    {"name": "data", "mountPath": "/var/lib/registry"},
                    {"name": "config", "mountPath": "/etc/docker/registry"},
                ],
                // On the host's network the probe's default host is the
                // node's address; the registry listens on loopback only.
                "readinessProbe": {
                    "httpGet": {"host": "127.0.0.1", "path": "/v2/", "port": FILL_PORT},
                    "periodSeconds": 1,
                },
            }],
            "volumes": [
                {"name": "data", "emptyDir": {}},
                {"name": "config", "configMap": {"name": "cp-harbor-registry-config"}},
            ],
        },
    });
    let pusher = on_host(
        "kpaas-limit-fill",
        "harbor",
        "kpaas-master",
        &[
            "/usr/local/bin/kpaas-agent",
            "fill",
            "--verify-first",
            "--bundle",
            "/run/kpaas/data/bundle",
            "--registry",
            &format!("127.0.0.1:{FILL_PORT}"),
            "--seed",
            "127.0.0.1:5050",
        ],
    );
    let file = dir.join("limit-fill.json");
    let apply = |pod: &serde_json::Value| {
        std::fs::write(&file, pod.to_string()).map_err(|e| e.to_string())?;
        kubectl(kubeconfig, &["apply", "-f", &file.to_string_lossy()])
    };
    apply(&registry)?;
    kubectl(
        kubeconfig,
        &[
            "wait",
            "--for=condition=Ready",
            "pod/kpaas-limit-registry",
            "-n",
            "harbor",
            "--timeout=600s",
        ],
    )?;
    apply(&pusher)?;
    let start = Instant::now();
    let phase = loop {
        let p = kubectl(
            kubeconfig,
            &[
                "get",
                "pod",
                "kpaas-limit-fill",
                "-n",
                "harbor",
                "-o",
                "jsonpath={.status.phase}",
            ],
        )?;
        if p == "Succeeded" || p == "Failed" {
            break p;
        }
        if start.elapsed() > Duration::from_secs(20 * 60) {
            return Err(format!("the fill pod still {p:?} after 20 min"));
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let log = kubectl(kubeconfig, &["logs", "kpaas-limit-fill", "-n", "harbor"])?;
    let _ = kubectl(
        kubeconfig,
        &[
            "delete",
            "pod",
            "-n",
            "harbor",
            "kpaas-limit-fill",
            "kpaas-limit-registry",
            "--wait=false",
        ],
    );
    if phase != "Succeeded" {
        return Err(format!(
            "the fill pod {phase}: {}",
            log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
        ));
    }
    // Its report is the JSON object at the end of its output.
    let json = log
        .find("\n{")
        .map(|i| &log[i + 1..])
        .or_else(|| log.starts_with('{').then_some(log.as_str()))
        .ok_or_else(|| format!("no report in the fill's output: {log}"))?;
    let r: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("the fill's report: {e}"))?;
    let bytes = r["bytes_sent"].as_u64().unwrap_or(0);
    let secs = r["secs"].as_f64().unwrap_or(0.0);
    let read_bps = r["seed_read_bytes_per_s"].as_f64().unwrap_or(0.0);
    let (verified, verify_secs) = (
        r["verified_bytes"].as_u64().unwrap_or(0),
        r["verified_secs"].as_f64().unwrap_or(0.0),
    );
    if bytes == 0 || secs <= 0.0 || read_bps <= 0.0 || verified == 0 || verify_secs <= 0.0 {
        return Err(format!("the fill's report has no rates: {r}"));
    }
    Ok(LocalFill {
        push_bps: bytes as f64 / secs,
        verify_bps: verified as f64 / verify_secs,
        read_bps,
        bytes,
    })
}

/// One image pull as the kubelet reported it (its `Pulled` event).
#[derive(Debug)]
pub struct Pull {
    pub namespace: String,
    pub node: String,
    pub image: String,
    /// Pull and unpack, as the kubelet timed it.
    pub secs: f64,
}

/// The cluster's events, every namespace, as the API gives them: read
/// once at the end of a run for [`pulls`] and [`timeline`].
pub fn cluster_events(kubeconfig: &Path) -> Result<serde_json::Value, String> {
    let out = kubectl(kubeconfig, &["get", "events", "-A", "-o", "json"])?;
    serde_json::from_str(&out).map_err(|e| e.to_string())
}

/// Every pull the kubelets' events report with its duration
/// (`Successfully pulled image "X" in 1.5s`), longest first.
pub fn pulls(v: &serde_json::Value) -> Vec<Pull> {
    let mut all: Vec<Pull> = v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|e| {
                    let msg = e["message"].as_str()?;
                    let rest = msg.strip_prefix("Successfully pulled image \"")?;
                    let (image, after) = rest.split_once('"')?;
                    let secs = parse_go_duration(after.strip_prefix(" in ")?.split(' ').next()?)?;
                    Some(Pull {
                        namespace: e["metadata"]["namespace"].as_str()?.to_string(),
                        node: e["source"]["host"].as_str().unwrap_or("?").to_string(),
                        image: image.to_string(),
                        secs,
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort_by(|a, b| b.secs.total_cmp(&a.secs));
    all
}

/// One event of the cluster's, at its time since the master's power-on.
#[derive(Debug)]
pub struct Happened {
    pub secs: f64,
    pub namespace: String,
    /// `Kind/name` of what it is about.
    pub object: String,
    pub reason: String,
    pub message: String,
}

/// The events of `namespaces` (the kubelets', the scheduler's, the
/// controllers' and the provisioner's), oldest first, at their time since
/// `powered_on` (the host's clock at the master's power-on; the guests'
/// clocks start from the host's, so within a second or so of it): where a
/// component's wait went (its volume provisioned, its pod scheduled,
/// pulled, started, ready).
pub fn timeline(
    v: &serde_json::Value,
    namespaces: &[&str],
    powered_on: std::time::SystemTime,
) -> Result<Vec<Happened>, String> {
    let zero = powered_on
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs_f64();
    let mut all: Vec<Happened> = v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|e| {
                    let ns = e["metadata"]["namespace"].as_str()?;
                    if !namespaces.contains(&ns) {
                        return None;
                    }
                    // The scheduler writes eventTime only, the kubelet
                    // firstTimestamp only.
                    let at = e["firstTimestamp"]
                        .as_str()
                        .or_else(|| e["eventTime"].as_str())
                        .and_then(unix_secs)?;
                    let o = &e["involvedObject"];
                    Some(Happened {
                        secs: at - zero,
                        namespace: ns.to_string(),
                        object: format!(
                            "{}/{}",
                            o["kind"].as_str().unwrap_or("?"),
                            o["name"].as_str().unwrap_or("?")
                        ),
                        reason: e["reason"].as_str().unwrap_or("?").to_string(),
                        message: e["message"].as_str().unwrap_or("").to_string(),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    all.sort_by(|a, b| a.secs.total_cmp(&b.secs));
    Ok(all)
}

/// An RFC 3339 UTC time (`2026-12-07T08:10:12Z`, `…12.123456Z`) as
/// seconds since the Unix epoch.
fn unix_secs(t: &str) -> Option<f64> {
    let t = t.strip_suffix('Z')?;
    let (date, time) = t.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let mut c = time.split(':');
    let (h, mi) = (
        c.next()?.parse::<i64>().ok()?,
        c.next()?.parse::<i64>().ok()?,
    );
    let sec: f64 = c.next()?.parse().ok()?;
    // Days from the civil date (the proleptic Gregorian calendar).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + h * 3600 + mi * 60) as f64 + sec)
}

/// A Go duration as the kubelet prints it: `1m2.5s`, `12.345s`, `850ms`.
fn parse_go_duration(d: &str) -> Option<f64> {
    let (mut total, mut num) = (0.0, String::new());
    let mut chars = d.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let unit = match (c, chars.peek()) {
            ('m', Some('s')) => {
                chars.next();
                0.001
            }
            ('µ' | 'u', Some('s')) => {
                chars.next();
                0.000_001
            }
            ('n', Some('s')) => {
                chars.next();
                0.000_000_001
            }
            ('h', _) => 3600.0,
            ('m', _) => 60.0,
            ('s', _) => 1.0,
            _ => return None,
        };
        total += num.parse::<f64>().ok()? * unit;
        num.clear();
    }
    num.is_empty().then_some(total)
}

/// Our time against the limit: the master's `init` step (its cost line in
/// `master`) against `kubeadm init` alone, and, on a platform lab, cluster
/// ready -> platform ready (`waves`) against the platform's pods restarted.
pub fn print(l: &Limits, master: &Lines, waves: Option<f64>) {
    println!("  the limit, measured in the same run on the same guests:");
    let ratio = |ours: f64, limit: f64| {
        let r = ours / limit.max(0.001);
        format!(
            "{r:.2}x the limit (goal <= {GOAL}x: {})",
            if r <= GOAL { "met" } else { "not met" }
        )
    };
    match (&l.kubeadm_init, step_secs(master, "init")) {
        (Ok(k), Some(i)) => println!(
            "    kubeadm init, images present (worker): {k:.0} s; the master's init step {i:.0} s: {}",
            ratio(i, *k)
        ),
        (Ok(k), None) => println!(
            "    kubeadm init, images present: {k:.0} s; no init cost line from the master"
        ),
        (Err(e), _) => println!("    kubeadm init, images present: not measured: {e}"),
    }
    match (&l.pods, waves) {
        (Some(Ok((p, n))), Some(w)) => println!(
            "    the platform's {n} pods restarted, images present (Vault's kept: it restarts sealed): {p:.0} s; cluster ready -> platform ready {w:.0} s: {}",
            ratio(w, *p)
        ),
        (Some(Err(e)), _) => println!("    the platform's pods: not measured: {e}"),
        _ => {}
    }
    match &l.pulls {
        Some(Ok(p)) => {
            let sum: f64 = p.iter().map(|x| x.secs).sum();
            println!(
                "    what the limit does not pay: {} image pull(s) by the kubelets, {sum:.0} s summed (pull and unpack, overlapping), the longest:",
                p.len()
            );
            for x in p.iter().take(8) {
                println!(
                    "      {:>5.1} s  {:<12} {:<16} {}",
                    x.secs, x.namespace, x.node, x.image
                );
            }
        }
        Some(Err(e)) => println!("    image pulls: not read: {e}"),
        None => {}
    }
    let mib = |b: f64| b / f64::from(1 << 20);
    match &l.fill {
        Some(Ok(f)) => {
            println!(
                "    the hand-off's limit here: the registry on the master's own loopback (no NodePort, no network) took in {:.1} MiB/s for {:.1} MiB from a client that only read and sent (it had hashed them first at {:.1} MiB/s); the seed read beside it {:.1} MiB/s: intake/read {:.2}",
                mib(f.push_bps),
                mib(f.bytes as f64),
                mib(f.verify_bps),
                mib(f.read_bps),
                f.push_bps / f.read_bps
            );
            if let Some(ours) = handoff(master).and_then(|h| h.push_mib_s) {
                println!(
                    "    the hand-off in the run pushed {ours:.1} MiB/s: {:.2}x the registry's local intake",
                    ours / mib(f.push_bps).max(0.001)
                );
            }
        }
        Some(Err(e)) => println!("    the hand-off's limit: not measured: {e}"),
        None => {}
    }
}

/// The master's hand-off line (`hand-off: … sent (235.6 MiB, 7.9 MiB/s)
/// …; the seed reads at 80.7 MiB/s here: push/read 0.10; …`), read once
/// for every figure the benches print from it.
#[derive(Debug, Clone)]
pub struct HandOff {
    /// What follows `hand-off: `.
    pub detail: String,
    /// The push rate, MiB/s.
    pub push_mib_s: Option<f64>,
    /// Push rate over the seed's read rate, as the agent measured both.
    pub push_read: Option<f64>,
}

pub fn handoff(master: &Lines) -> Option<HandOff> {
    let lines = master.lock().ok()?;
    let detail = lines
        .iter()
        .find_map(|(_, l)| l.split("hand-off: ").nth(1))?
        .to_string();
    let push_mib_s = detail
        .split(" sent (")
        .nth(1)
        .and_then(|s| s.split(", ").nth(1))
        .and_then(|s| s.split(" MiB/s").next())
        .and_then(|s| s.parse().ok());
    let push_read = detail
        .split("push/read ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .and_then(|r| r.trim().parse().ok());
    Some(HandOff {
        detail,
        push_mib_s,
        push_read,
    })
}

/// Namespaces whose pods are not restarted for the limit: the cluster's
/// own, and Vault's (a restarted Vault is sealed until the agent unseals
/// it, so it would never be Ready by itself).
const KEEP: &[&str] = &["kube-system", "kube-flannel", "vault"];

/// The platform's pods (those of the namespaces outside [`KEEP`] that a
/// controller other than a Job keeps), deleted at once; the seconds until
/// a new pod is Ready for each, and how many there were.
pub fn platform_pods(kubeconfig: &Path, timeout: Duration) -> Result<(f64, usize), String> {
    let kept = |p: &serde_json::Value| {
        let ns = p["metadata"]["namespace"].as_str().unwrap_or_default();
        let by_job = p["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|o| o.iter().any(|r| r["kind"] == "Job"));
        !KEEP.contains(&ns) && !by_job && p["status"]["phase"] != "Succeeded"
    };
    let pods = all_pods(kubeconfig)?;
    let old: Vec<&serde_json::Value> = pods["items"]
        .as_array()
        .map(|v| v.iter().filter(|p| kept(p)).collect())
        .unwrap_or_default();
    if old.is_empty() {
        return Err("no platform pods to restart".into());
    }
    let uids: BTreeSet<String> = old
        .iter()
        .map(|p| {
            p["metadata"]["uid"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    let namespaces: BTreeSet<&str> = old
        .iter()
        .filter_map(|p| p["metadata"]["namespace"].as_str())
        .collect();
    let start = Instant::now();
    for ns in &namespaces {
        let names: Vec<&str> = old
            .iter()
            .filter(|p| p["metadata"]["namespace"] == *ns)
            .filter_map(|p| p["metadata"]["name"].as_str())
            .collect();
        let mut args = vec!["delete", "pod", "-n", ns, "--wait=false"];
        args.extend(&names);
        kubectl(kubeconfig, &args)?;
    }
    loop {
        let now = all_pods(kubeconfig)?;
        let ready = now["items"]
            .as_array()
            .map(|v| {
                v.iter()
                    .filter(|p| kept(p))
                    .filter(|p| {
                        !uids.contains(p["metadata"]["uid"].as_str().unwrap_or_default())
                            && p["metadata"]["deletionTimestamp"].is_null()
                            && p["status"]["conditions"].as_array().is_some_and(|c| {
                                c.iter()
                                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
                            })
                    })
                    .count()
            })
            .unwrap_or_default();
        if ready >= uids.len() {
            return Ok((start.elapsed().as_secs_f64(), uids.len()));
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "{ready} of {} platform pods Ready again after {} s",
                uids.len(),
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Every pod, as JSON; an error (not a panic: a bench's run is long) when
/// kubectl fails.
fn all_pods(kubeconfig: &Path) -> Result<serde_json::Value, String> {
    let out = kubectl(kubeconfig, &["get", "pods", "-A", "-o", "json"])?;
    serde_json::from_str(&out).map_err(|e| format!("kubectl get pods: {e}"))
}

/// A pod that runs `command` once on `node`'s host itself (privileged,
/// every namespace of its PID 1 entered).
pub fn on_host(name: &str, namespace: &str, node: &str, command: &[&str]) -> serde_json::Value {
    let mut argv = vec![
        "/bin/busybox",
        "nsenter",
        "-t",
        "1",
        "-m",
        "-u",
        "-i",
        "-n",
        "-p",
        "--",
    ];
    argv.extend(command);
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "hostPID": true,
            "restartPolicy": "Never",
            "tolerations": [{"operator": "Exists"}],
            "containers": [{
                "name": "host",
                // The bundle's busybox (the static one: it has nsenter).
                "image": "docker.io/library/busybox:1.35",
                "securityContext": {"privileged": true},
                "command": argv,
            }],
        },
    })
}

/// The worker's `kubeadm init` with its images present, run on the worker
/// itself (a privileged pod starts it as a transient systemd unit of the
/// host, so the reset that removes the pod does not stop it); its time is
/// read from the worker's console.
pub fn kubeadm_init(kubeconfig: &Path, worker: &mut Vm, dir: &Path) -> Result<f64, String> {
    let pod = dir.join("limit-pod.json");
    let manifest = on_host(
        "kpaas-limit",
        "kube-system",
        "kpaas-worker1",
        &[
            "systemd-run",
            "--unit=kpaas-limit",
            "--collect",
            "/bin/sh",
            "-c",
            SCRIPT,
        ],
    );
    std::fs::write(&pod, manifest.to_string()).map_err(|e| e.to_string())?;
    kubectl(kubeconfig, &["apply", "-f", &pod.to_string_lossy()])?;
    let deadline = worker.started.elapsed() + Duration::from_secs(20 * 60);
    let waited = worker.wait_unless(
        "kpaas-limit: kubeadm init took",
        &["kpaas-limit: FAILED"],
        deadline,
    );
    let console = worker.console();
    if let Err(e) = waited {
        // The script's own lines say which command failed and how.
        let said: Vec<&str> = console
            .lines()
            .filter_map(|l| l.split("kpaas-limit: ").nth(1))
            .collect();
        return Err(format!(
            "{}; the worker said: {}",
            format!("{e:#}").lines().next().unwrap_or_default(),
            said.join(" | ")
        ));
    }
    console
        .lines()
        .find_map(|l| l.split("kpaas-limit: kubeadm init took ").nth(1))
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no time in the limit's line".to_string())
}

/// On the worker, as root, in the host's namespaces. The settings are the
/// master's (`agent/src/kube.rs`: cluster_config and the probe patches),
/// the address and name the worker's.
const SCRIPT: &str = r#"
say() { echo "kpaas-limit: $*" > /dev/console; }
d=/run/kpaas-limit
mkdir -p $d/patches
cp /etc/kubernetes/resolv.conf $d/resolv.conf 2>/dev/null || cp /etc/resolv.conf $d/resolv.conf
cat > $d/kubeadm.yaml <<EOF
apiVersion: kubeadm.k8s.io/v1beta3
kind: InitConfiguration
localAPIEndpoint: {advertiseAddress: 10.10.0.11}
nodeRegistration: {name: kpaas-worker1, criSocket: "unix:///run/containerd/containerd.sock"}
patches: {directory: $d/patches}
---
apiVersion: kubeadm.k8s.io/v1beta3
kind: ClusterConfiguration
clusterName: limit
kubernetesVersion: v1.25.6
imageRepository: registry.k8s.io
networking: {dnsDomain: cluster.local, podSubnet: 10.233.64.0/18, serviceSubnet: 10.233.0.0/18}
apiServer: {timeoutForControlPlane: 15m0s}
controllerManager: {extraArgs: {leader-elect: "false"}}
scheduler: {extraArgs: {leader-elect: "false"}}
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
failSwapOn: true
resolvConf: $d/resolv.conf
EOF
for c in kube-apiserver etcd kube-controller-manager kube-scheduler; do
  printf 'spec:\n  containers:\n    - name: %s\n      startupProbe:\n        failureThreshold: 60\n      livenessProbe:\n        failureThreshold: 24\n' $c > $d/patches/$c+strategic.yaml
done
say "pulling the control plane's images (not timed)"
kubeadm config images pull --config $d/kubeadm.yaml > $d/pull.log 2>&1 || { say "FAILED: image pull: $(tail -n 2 $d/pull.log | tr '\n' ' ')"; exit 1; }
kubeadm reset -f > $d/reset.log 2>&1 || { say "FAILED: kubeadm reset: $(tail -n 2 $d/reset.log | tr '\n' ' ')"; exit 1; }
say "kubeadm init starts"
t0=$(cut -d' ' -f1 /proc/uptime)
if kubeadm init --config $d/kubeadm.yaml --ignore-preflight-errors=all > $d/init.log 2>&1; then
  t1=$(cut -d' ' -f1 /proc/uptime)
  say "kubeadm init took $(awk "BEGIN{printf \"%.1f\", $t1-$t0}") s"
else
  say "FAILED: kubeadm init: $(tail -n 3 $d/init.log | tr '\n' ' ')"
fi
"#;

#[cfg(test)]
mod tests {
    use super::{handoff, parse_go_duration, unix_secs};
    use std::sync::{Arc, Mutex};

    #[test]
    fn the_kubelets_durations_read_as_seconds() {
        assert_eq!(parse_go_duration("12.5s"), Some(12.5));
        assert_eq!(parse_go_duration("1m2.5s"), Some(62.5));
        assert_eq!(parse_go_duration("850ms"), Some(0.85));
        assert_eq!(parse_go_duration("12.5"), None);
        assert_eq!(parse_go_duration("5x"), None);
    }

    #[test]
    fn the_hand_off_line_gives_its_rate_and_ratio() {
        let lines = Arc::new(Mutex::new(vec![
            (300.0, "kpaas-agent: deploy: harbor: starting".to_string()),
            (340.0, "kpaas-agent: deploy: harbor: hand-off: 14 image(s)/chart(s), 15 manifest(s) read back equal; blobs: 40 sent (235.6 MiB, 7.9 MiB/s), 3 mounted, 0 already there; 30 s; the seed reads at 80.7 MiB/s here: push/read 0.10; this node's mirrors now x first".to_string()),
        ]));
        let h = handoff(&lines).unwrap();
        assert_eq!(h.push_mib_s, Some(7.9));
        assert_eq!(h.push_read, Some(0.10));
        assert!(h.detail.starts_with("14 image(s)"));
        // A line without the yardstick still gives the rate.
        let lines = Arc::new(Mutex::new(vec![(1.0, "x: hand-off: 1 image(s)/chart(s), 1 manifest(s) read back equal; blobs: 1 sent (1.0 MiB, 2.5 MiB/s), 0 mounted, 0 already there; 1 s; the seed's read rate could not be measured: refused".to_string())]));
        let h = handoff(&lines).unwrap();
        assert_eq!((h.push_mib_s, h.push_read), (Some(2.5), None));
        assert!(handoff(&Arc::new(Mutex::new(Vec::new()))).is_none());
    }

    #[test]
    fn rfc3339_times_read_as_unix_seconds() {
        assert_eq!(unix_secs("1970-01-01T00:00:00Z"), Some(0.0));
        // `date -u -d 2026-12-07T08:10:12Z +%s`
        assert_eq!(unix_secs("2026-12-07T08:10:12Z"), Some(1_796_631_012.0));
        assert_eq!(unix_secs("2000-02-29T00:00:00.5Z"), Some(951_782_400.5));
        assert_eq!(unix_secs("2026-12-07 08:10:12"), None);
    }
}
