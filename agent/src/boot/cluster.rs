//! What the cluster-forming steps share: whether they apply, the bundle's
//! Kubernetes tools at their catalog paths, the cluster secrets from the
//! seed, bounded waits that say what they wait for, the kubectl that
//! applies manifests, and the client that reads the API (`crate::k8s`).

use super::{Ctx, StepId};
use crate::events::{Kind, Sink};
use crate::kube::{self, Inputs};
use airgap_bundle::manifest::{BLOBS_DIR, BUNDLE_JSON, BundleManifest};
use airgap_bundle::node::{NodeConfig, Role};
use airgap_bundle::run::run;
use airgap_bundle::{Digest, fsutil};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The cluster steps run on nodes whose seed carries the plan's
/// `kubernetes` step (a seed from an older builder serves the bundle only).
pub fn forms_cluster(ctx: &Ctx) -> bool {
    ctx.cfg.kubernetes.is_some()
}

pub fn on_master(ctx: &Ctx) -> bool {
    forms_cluster(ctx) && ctx.me.as_ref().is_some_and(|m| m.role == Role::Master)
}

pub fn on_worker(ctx: &Ctx) -> bool {
    forms_cluster(ctx) && ctx.me.as_ref().is_some_and(|m| m.role == Role::Worker)
}

/// The repository whose tag is the cluster's Kubernetes version.
const APISERVER_REPO: &str = "registry.k8s.io/kube-apiserver";

/// The cluster's inputs: the node config's Kubernetes settings, this node,
/// and the Kubernetes version the bundle carries (the API server image's
/// tag), which must be the one the seeds were made for.
pub fn inputs(ctx: &Ctx) -> Result<Inputs> {
    let tags = ctx.seed()?.tags(APISERVER_REPO);
    let version = match tags.as_slice() {
        [one] => one.clone(),
        [] => bail!("the bundle holds no {APISERVER_REPO} image: it cannot form a cluster"),
        many => bail!(
            "the bundle holds {APISERVER_REPO} at {}: one Kubernetes version per bundle",
            many.join(", ")
        ),
    };
    Inputs::new(&ctx.cfg, ctx.me()?, &version).context("the node config's kubernetes step")
}

/// The bundle's node binaries, at the paths the catalog installs them to.
pub struct Tools {
    pub kubeadm: String,
    pub kubectl: String,
    pub kubelet: String,
    pub crictl: String,
}

pub fn bundle_manifest(cfg: &NodeConfig) -> Result<BundleManifest> {
    let p = cfg.bundle.join(BUNDLE_JSON);
    BundleManifest::from_bytes(
        &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
    )
}

pub fn tools(cfg: &NodeConfig) -> Result<Tools> {
    let m = bundle_manifest(cfg)?;
    let path = |name: &str| m.install_path(name).map(str::to_string);
    let names = ["kubeadm", "kubectl", "kubelet", "crictl"];
    let missing: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| path(n).is_none())
        .collect();
    if !missing.is_empty() {
        bail!(
            "the bundle installs no {} (a file artifact with an install_path): it cannot form a cluster",
            missing.join(", ")
        );
    }
    let p = |n: &str| path(n).unwrap_or_default();
    Ok(Tools {
        kubeadm: p("kubeadm"),
        kubectl: p("kubectl"),
        kubelet: p("kubelet"),
        crictl: p("crictl"),
    })
}

/// A file artifact's bytes, from the bundle's blob store, checked against
/// the digest bundle.json gives it.
pub fn bundle_file(cfg: &NodeConfig, name: &str) -> Result<Vec<u8>> {
    let m = bundle_manifest(cfg)?;
    let Some(d) = m
        .file(name, airgap_bundle::manifest::native_arch())
        .and_then(|a| a.content_digest.clone())
    else {
        bail!("the bundle holds no file {name:?}");
    };
    read_blob(cfg, name, &d)
}

/// A blob of the bundle's store, checked against the digest it is stored
/// under (`name` says whose it is in an error).
pub fn read_blob(cfg: &NodeConfig, name: &str, d: &Digest) -> Result<Vec<u8>> {
    let p = cfg.bundle.join(format!("{BLOBS_DIR}{}", d.hex()));
    let bytes = std::fs::read(&p).with_context(|| format!("reading {name} ({})", p.display()))?;
    if Digest::of(&bytes) != *d {
        bail!("{name} ({}) does not match its digest {d}", p.display());
    }
    Ok(bytes)
}

/// Absolute path of a node path under the context's root.
pub fn at(ctx: &Ctx, rel: &str) -> PathBuf {
    ctx.root.join(rel)
}

/// The cluster secrets cloud-init's `write_files` (network stage) lays a
/// few seconds after the agent starts: waited for, bounded.
pub fn secrets(ctx: &Ctx, events: &mut Sink, step: StepId, names: &[&str]) -> Result<Vec<String>> {
    let dir = at(ctx, kube::SECRETS_DIR);
    // A stat per probe costs nothing, and cloud-init lays the files seconds
    // after the agent starts: a short fixed pause, not the growing one
    // (whose 1-2-4 s steps cost up to 4 s of both nodes' critical path).
    let probe = || {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| !dir.join(n).is_file())
            .collect();
        if missing.is_empty() {
            Ok(Some(()))
        } else {
            Err(format!("{} has no {}", dir.display(), missing.join(", ")))
        }
    };
    wait_every(
        events,
        step,
        "the cluster secrets from the seed",
        SECRETS_WAIT,
        SECRETS_POLL,
        probe,
    )
    .context("cloud-init's write_files (its network stage) did not lay the cluster secrets; check the node's seed (kpaas-builder seeds) and `cloud-init status --long`")?;
    names
        .iter()
        .map(|n| {
            let p = dir.join(n);
            std::fs::read_to_string(&p)
                .map(|s| s.trim().to_string())
                .with_context(|| format!("reading {}", p.display()))
        })
        .collect()
}

pub const SECRETS_WAIT: Duration = Duration::from_secs(180);
const SECRETS_POLL: Duration = Duration::from_millis(200);
/// Between progress lines of a wait.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);
/// How often [`wait_every`]'s callers probe.
pub const CHEAP_PROBE_EVERY: Duration = Duration::from_secs(1);

/// Polls `probe` until it gives a value or `limit` passes, with a growing
/// pause (1 s to 10 s) and a progress line every 30 s saying what it waits
/// for and why it is not there yet. An error names the wait and the last
/// reason.
pub fn wait<T>(
    events: &mut Sink,
    step: StepId,
    what: &str,
    limit: Duration,
    probe: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T> {
    wait_with(events, step, what, limit, probe, std::thread::sleep)
}

/// As [`wait`], probing every `every` without backing off: for a probe
/// that costs one connection or request (a port, an HTTP status), where
/// the backoff's 10 s pauses only add idle time after the thing is there:
/// the waits for Harbor's registry and Vault last over a minute here, so
/// they end in 10 s pauses, 5 s late on average, on the critical path.
pub fn wait_every<T>(
    events: &mut Sink,
    step: StepId,
    what: &str,
    limit: Duration,
    every: Duration,
    probe: impl FnMut() -> Result<Option<T>, String>,
) -> Result<T> {
    wait_with(events, step, what, limit, probe, |d| {
        std::thread::sleep(d.min(every))
    })
}

/// As [`wait`], with the pause between probes given: a watch of what the
/// probe reads ends it early when that changes (`k8s::ready::pause`).
pub fn wait_with<T>(
    events: &mut Sink,
    step: StepId,
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<Option<T>, String>,
    mut pause_for: impl FnMut(Duration),
) -> Result<T> {
    // Its time counts as waiting on others in the step's cost.
    let began = crate::ledger::mark();
    let start = Instant::now();
    let mut last_line = start;
    let mut pause = Duration::from_secs(1);
    let r = loop {
        let why = match probe() {
            Ok(Some(v)) => break Ok(v),
            Ok(None) => "not yet".to_string(),
            Err(why) => why,
        };
        let waited = start.elapsed();
        if waited >= limit {
            break Err(anyhow::anyhow!(
                "{what}: not there after {} s ({why})",
                waited.as_secs()
            ));
        }
        if last_line.elapsed() >= PROGRESS_EVERY {
            last_line = Instant::now();
            if let Err(e) = events.emit(
                step,
                Kind::Progress,
                &format!("waiting for {what} ({} s: {why})", waited.as_secs()),
            ) {
                break Err(e);
            }
        }
        pause_for(pause.min(limit.saturating_sub(waited)));
        pause = (pause * 2).min(Duration::from_secs(10));
    };
    crate::ledger::waited(&began);
    r
}

/// The runtime's containers, one `name=state` each (kubelet's view of the
/// static pods), or why they cannot be listed.
pub fn containers(ctx: &Ctx) -> String {
    let list = tools(&ctx.cfg).and_then(|t| {
        run(&t.crictl)
            .args([
                "--runtime-endpoint",
                ctx.cfg.runtime.socket(),
                "ps",
                "-a",
                "-o",
                "json",
            ])
            .output_on(ctx.runner.as_ref())
    });
    let v: serde_json::Value = match list.map(|o| serde_json::from_slice(&o)) {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return format!("crictl's list: {e}"),
        Err(e) => {
            return last_line(&e);
        }
    };
    let mut seen = std::collections::BTreeSet::new();
    let names: Vec<String> = v["containers"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let name = c["metadata"]["name"].as_str().unwrap_or("?");
            let mut state = c["state"]
                .as_str()
                .unwrap_or("?")
                .trim_start_matches("CONTAINER_")
                .to_lowercase();
            // kubelet restarts a static pod's container that fails its
            // liveness probe: the attempt number shows a crash loop.
            if let Some(n) = c["metadata"]["attempt"].as_u64().filter(|n| *n > 0) {
                state.push_str(&format!(" (attempt {n})"));
            }
            // An exited container's last words, once per name.
            let last = match (state.starts_with("exited"), c["id"].as_str()) {
                (true, Some(id)) if seen.insert(name.to_string()) => last_log(ctx, id),
                _ => String::new(),
            };
            format!("{name}={state}{last}")
        })
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(", ")
    }
}

/// A container's last log line (crictl prints the log's streams on its own
/// stdout and stderr), as " (line)".
fn last_log(ctx: &Ctx, id: &str) -> String {
    let Ok(t) = tools(&ctx.cfg) else {
        return String::new();
    };
    match ctx.runner.exec(&run(&t.crictl).args([
        "--runtime-endpoint",
        ctx.cfg.runtime.socket(),
        "logs",
        "--tail",
        "1",
        id,
    ])) {
        Ok(o) => {
            let both = [o.stdout, o.stderr].concat();
            let line: String = String::from_utf8_lossy(&both)
                .trim()
                .chars()
                .take(200)
                .collect();
            format!(" ({line})")
        }
        Err(_) => String::new(),
    }
}

/// After a power cut: every image the runtime holds is removed, so the next
/// pull unpacks it again from the seed. containerd writes unpacked layers
/// without syncing them, and a power cut can leave their files empty: the
/// control plane's containers then exit at once without a word (seen here).
/// The seed is on the node, so pulling again costs seconds.
pub fn forget_images(ctx: &Ctx, events: &mut Sink, step: StepId) -> Result<()> {
    let t = tools(&ctx.cfg)?;
    run(&t.crictl)
        .args([
            "--runtime-endpoint",
            ctx.cfg.runtime.socket(),
            "rmi",
            "--all",
        ])
        .ok_on(ctx.runner.as_ref())
        .context("removing the images unpacked before the power cut")?;
    events.emit(
        step,
        Kind::Progress,
        "images unpacked before the power cut removed: they are pulled again from the seed",
    )
}

/// kubelet's last journal lines, for a failure report.
pub fn kubelet_log(ctx: &Ctx) -> String {
    match run("journalctl")
        .args([
            "-u",
            "kubelet.service",
            "-n",
            "12",
            "-o",
            "cat",
            "--no-pager",
        ])
        .output_on(ctx.runner.as_ref())
    {
        Ok(o) => format!(
            "kubelet's last lines:\n{}",
            String::from_utf8_lossy(&o).trim_end()
        ),
        Err(e) => format!("kubelet's journal: {e:#}"),
    }
}

const CRI_WAIT: Duration = Duration::from_secs(180);

/// Waits until the container runtime answers on its CRI socket. At a boot
/// after the runtime step (a resumed init or join) systemd starts the
/// runtime beside the agent, not before it.
pub fn runtime_up(ctx: &Ctx, events: &mut Sink, step: StepId) -> Result<()> {
    let rt = ctx.cfg.runtime;
    let sock = rt.socket();
    let crictl = tools(&ctx.cfg)?.crictl;
    wait(
        events,
        step,
        &format!("{} to answer on {sock}", rt.name()),
        CRI_WAIT,
        || {
            run(&crictl)
                .args(["--runtime-endpoint", sock, "info"])
                .output_on(ctx.runner.as_ref())
                .map(|_| Some(()))
                .map_err(|e| last_line(&e))
        },
    )
    .with_context(|| format!("{}.service did not come up", rt.name()))
}

/// After a reboot into an earlier kubeadm run (init on the master, join on
/// a worker): kubelet is started (it runs what kubeadm made), then the API,
/// as `kubeconfig`'s identity, is asked within `limit` whether that run
/// finished. `probe` says yes (`Some(true)`), no (`Some(false)`: reset and
/// run again) or not yet; no answer in time counts as no.
pub fn finished_before(
    ctx: &Ctx,
    events: &mut Sink,
    step: StepId,
    kubeconfig: &str,
    limit: Duration,
    probe: impl Fn(&crate::k8s::Api) -> Result<Option<bool>, crate::k8s::Failure>,
) -> Result<bool> {
    run("systemctl")
        .args(["start", "kubelet.service"])
        .ok_on(ctx.runner.as_ref())?;
    Ok(wait(
        events,
        step,
        "the cluster to answer for the earlier run",
        limit,
        || {
            // Read again each time: a power cut can leave the kubeconfig (or
            // the certificate it names) torn, which is a "not yet" here that
            // ends as "not finished", never a failed step.
            let api = api(ctx, kubeconfig).map_err(|e| format!("{e:#}"))?;
            match probe(&api) {
                Ok(Some(done)) => Ok(Some(done)),
                Ok(None) => Err("not yet".into()),
                Err(f) => Err(f.to_string()),
            }
        },
    )
    .unwrap_or(false))
}

/// `kubeadm reset` of this node's half-done init or join.
pub fn kubeadm_reset(ctx: &Ctx, i: &Inputs) -> Result<()> {
    run(&tools(&ctx.cfg)?.kubeadm)
        .args(["reset", "--force", "--cri-socket", i.runtime.socket()])
        .ok_on(ctx.runner.as_ref())
}

/// The API as the identity of `kubeconfig` (a path under the root).
pub fn api(ctx: &Ctx, kubeconfig: &str) -> Result<crate::k8s::Api> {
    crate::k8s::Api::from_kubeconfig(&at(ctx, kubeconfig))
}

/// `kubectl --kubeconfig <root>/<kubeconfig> args…` through the runner:
/// for applying manifests only (reads and waits go through [`api`]).
pub fn kubectl(ctx: &Ctx, kubeconfig: &str, args: &[&str]) -> Result<Vec<u8>> {
    let t = tools(&ctx.cfg)?;
    run(&t.kubectl)
        .arg("--kubeconfig")
        .arg(at(ctx, kubeconfig))
        .args(args)
        .output_on(ctx.runner.as_ref())
}

/// The last line of an error with its causes: for a failed command, the
/// program's own last words (what a progress line or status should show).
pub fn last_line(e: &anyhow::Error) -> String {
    format!("{e:#}")
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// Whether a kubectl failure is the API server being busy or away (it comes
/// back; the same request then succeeds) rather than a refusal of the
/// request itself.
pub fn transient(err: &str) -> bool {
    [
        "Unable to connect to the server",
        "TLS handshake timeout",
        "connection refused",
        // kubectl's own words for it.
        "was refused - did you specify the right host or port",
        "Client.Timeout exceeded",
        "i/o timeout",
        "the server is currently unable to handle the request",
        "etcdserver: request timed out",
        "context deadline exceeded",
        "the server was unable to return a response in the time allotted",
        // An overloaded API server's admission (a 500), seen on an emulated
        // master during the platform's deploy.
        "resource quota evaluation timed out",
    ]
    .iter()
    .any(|m| err.contains(m))
}

/// How long a server-side apply waits out an API server that is busy or
/// restarting (right after init, under load, it can be away a minute).
pub const APPLY_WAIT: Duration = Duration::from_secs(10 * 60);

/// `kubectl apply --server-side -f path` with the admin's kubeconfig, under
/// the field manager the deploy engine applies with (one for everything),
/// again while the API server is away (server-side apply is idempotent); a
/// refusal of the objects themselves fails at once.
pub fn apply(ctx: &Ctx, events: &mut Sink, step: StepId, path: &Path) -> Result<()> {
    let p = path.to_string_lossy();
    let what = format!("the API server to take {p}");
    let outcome = wait(events, step, &what, APPLY_WAIT, || {
        match kubectl(
            ctx,
            kube::ADMIN_CONF,
            &[
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=kpaas-agent",
                "-f",
                &p,
            ],
        ) {
            Ok(_) => Ok(Some(Ok(()))),
            Err(e) if transient(&format!("{e:#}")) => Err(last_line(&e)),
            Err(e) => Ok(Some(Err(e))),
        }
    })?;
    outcome.with_context(|| format!("applying {p}"))
}

// Writes a file 0600 (it may hold a token or a key).
pub use airgap_bundle::fsutil::write_private;

/// Writes a file unless it already holds exactly that.
pub fn write_file(path: &Path, data: &str) -> Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == data.as_bytes()) {
        return Ok(());
    }
    fsutil::write_atomic(path, data.as_bytes())
}

/// The kubeadm config's path: with the agent's state (0700), since it holds
/// the bootstrap token.
pub fn kubeadm_config(ctx: &Ctx) -> PathBuf {
    ctx.cfg.state_dir.join(kube::KUBEADM_CONFIG)
}

/// The images kubeadm pulls, as the prepare step recorded them.
pub const IMAGES_FILE: &str = "kubeadm-images.txt";

pub fn pause_image(ctx: &Ctx) -> Result<String> {
    let p = ctx.cfg.state_dir.join(IMAGES_FILE);
    let text = std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
    text.lines()
        .find(|l| l.contains("/pause:"))
        .map(str::to_string)
        .with_context(|| format!("{} names no pause image", p.display()))
}
