//! The deploy engine: the plan's platform steps (the node config's
//! `platform`, copied from `kpaas-builder plan`) applied from the node's own
//! bundle, each component on a thread of its own as soon as the components
//! it depends on are ready (`schedule` says which may start). Each release (a Helm chart through the bundled
//! helm's `upgrade --install`, a manifest or a kustomization applied
//! server-side with the bundled kubectl) is journaled when it is applied and
//! each component when its readiness holds, so a run after kill -9 or a
//! power cut resumes at the first unfinished release of each component.
//! Before anything is applied, every object still to create is rendered and
//! every image they name is checked against the bundle: a plan that would
//! need the internet is refused whole (the renderer and the verdict are
//! `airgap_bundle::render` and `::offline`, the ones check-offline uses).
//!
//! Install kinds are `airgap_bundle::kinds`, one table; `apply` is
//! generated from it. A kind the table marks `by objects` (manifest,
//! manifest-filled, kustomize, namespace) is applied here from its rendered
//! objects; one marked `by agent` has its `Apply` in a module of its own:
//! `chart`, `handoff` (fill, and its hook), `vault_setup` (vault-init,
//! vault-cluster, their hooks), `secret`, `storage_class`
//! (default-storage-class). A kind without one does not build.
//!
//! Readiness is judged by `crate::k8s::ready` (the cluster step's judge
//! too), reading typed objects through the agent's API client; the pause
//! between looks ends when the API reports a change. Applying stays the
//! bundled kubectl's server-side apply: it is at the cluster's version and
//! handles any kind (CRDs included) without typed models, all under one
//! field manager, `kpaas-agent`.

mod changes;
mod chart;
mod handoff;
pub mod journal;
mod prewave;
mod report;
mod schedule;
mod secret;
mod storage_class;
mod vault_setup;

use crate::boot::StepId;
use crate::boot::cluster::{self, last_line, transient, wait, wait_with};
use crate::events::{Kind, Sink};
use crate::k8s::ready::{self as judge, Outcome};
use crate::kube;
use airgap_bundle::deploy::{Hook, Readiness};
use airgap_bundle::kinds::Install;
use airgap_bundle::manifest::BundleManifest;
use airgap_bundle::node::NodeConfig;
use airgap_bundle::plan::{Release, Step};
use airgap_bundle::render;
use airgap_bundle::run::{Runner, run};
use airgap_bundle::{Digest, fsutil};
use anyhow::{Context, Result, bail};
use journal::DeployJournal;
use schedule::{Finished, Schedule};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// A wave's rendered releases: (component, release, objects' file).
pub type Rendered = Vec<(String, String, PathBuf)>;

/// Blobs pushed at once by the hand-off.
const FILL_JOBS: usize = 4;

/// How long one component's readiness may take by default (a wave of
/// images unpacked under emulation takes minutes).
pub const READY_LIMIT: Duration = Duration::from_secs(30 * 60);

/// The cluster as the admin: kubectl for applying manifests, the API
/// client (`crate::k8s`) for everything read, watched or patched.
pub struct Kube {
    runner: Arc<dyn Runner>,
    kubectl: String,
    kubeconfig: PathBuf,
    pub api: crate::k8s::Api,
}

impl Kube {
    pub fn exec(&self, args: &[&str]) -> Result<Vec<u8>> {
        run(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output_on(self.runner.as_ref())
    }
}

/// Whether an apply failure goes away by trying again: the API server busy
/// or away, or a custom resource applied in the same run as its CRD, which
/// the API serves a moment later (Kubeflow's manifests; upstream loops
/// `kustomize build | kubectl apply` until it passes), or a NodePort a
/// power cut leaked: the API server had allocated it for a Service it never
/// stored (seen: Harbor's 30002 after a cut during its apply), and its
/// repair loop frees such ports within minutes (every 3 in 1.25), well
/// inside the apply's bound.
fn retryable(err: &str) -> bool {
    transient(err)
        || err.contains("ensure CRDs are installed first")
        || err.contains("no matches for kind")
        || err.contains("provided port is already allocated")
}

pub struct Engine {
    /// The system's root (`/` on a node; tests use a tree).
    root: PathBuf,
    cfg: NodeConfig,
    runner: Arc<dyn Runner>,
    kube: Kube,
    helm: String,
    kustomize: String,
    manifest: BundleManifest,
    /// Where charts, values and rendered objects are written (state dir).
    pub(crate) work: PathBuf,
    /// Per component, for its readiness.
    pub limit: Duration,
    /// This node's seed registry when it runs in this process (first
    /// boot): the blobs it has hashed need no second hash in the hand-off.
    pub seed: Option<Arc<crate::seed_registry::Seed>>,
}

/// What a run does besides resuming.
#[derive(Debug, Default, Clone, Copy)]
pub struct Options {
    /// Forget the journal from this wave on: those waves run again (Helm
    /// releases are upgraded, manifests re-applied).
    pub from: Option<usize>,
}

impl Engine {
    pub fn new(root: &Path, cfg: NodeConfig, runner: Arc<dyn Runner>) -> Result<Engine> {
        let manifest = cluster::bundle_manifest(&cfg)?;
        let tool = |name: &str| -> Result<String> {
            let a = manifest
                .install_path(name)
                .with_context(|| {
                    format!("the bundle installs no {name} (a file artifact with an install_path): it cannot deploy the platform")
                })?;
            Ok(root
                .join(a.trim_start_matches('/'))
                .to_string_lossy()
                .to_string())
        };
        let kubeconfig = root.join(kube::ADMIN_CONF);
        let kube = Kube {
            runner: runner.clone(),
            kubectl: tool("kubectl")?,
            api: crate::k8s::Api::from_kubeconfig(&kubeconfig)?,
            kubeconfig,
        };
        Ok(Engine {
            helm: tool("helm")?,
            kustomize: tool("kustomize")?,
            work: cfg.state_dir.join("deploy"),
            root: root.to_path_buf(),
            cfg,
            runner,
            kube,
            manifest,
            limit: READY_LIMIT,
            seed: None,
        })
    }

    /// The platform's components, each started once every component it
    /// depends on (the plan's `depends_on`) is ready, beside whatever else
    /// is running: the plan is a DAG and only its edges order the work. A
    /// dependency outside the platform (the cluster step) is met. Every
    /// release still to apply is rendered and its images checked first, so
    /// a plan that would need the internet is refused before anything of it
    /// is applied (not only the wave that would pull). After a failure
    /// nothing new starts; what runs is let finish, and every failure is
    /// reported at once. Returns the summary "done" record, with the
    /// critical path.
    pub fn run(&self, events: &mut Sink, opts: Options) -> Result<String> {
        let start = Instant::now();
        let mut j = DeployJournal::open(&self.cfg.state_dir)?;
        if let Some(from) = opts.from {
            let n = j.forget_from(from)?;
            events.emit(
                StepId::Deploy,
                Kind::Progress,
                &format!("--from {from}: {n} journal record(s) of wave {from} and later forgotten; they run again"),
            )?;
        }
        // Every check the plan asks for must be one this agent runs (`plan`
        // and `seeds` refuse others by the same rule; a node config written
        // by hand is held to it here): said before anything is applied.
        let unsupported: Vec<String> = self
            .cfg
            .platform
            .iter()
            .flat_map(|s| s.unsupported_checks())
            .collect();
        if !unsupported.is_empty() {
            bail!(
                "the plan asks for readiness checks this agent cannot run, so nothing was deployed:\n  {}",
                unsupported.join("\n  ")
            );
        }
        fsutil::create_dir(&self.work)?;
        let redo = opts.from.is_some();
        let mut steps: Vec<&Step> = self.cfg.platform.iter().collect();
        steps.sort_by(|a, b| a.wave.cmp(&b.wave).then(a.component.cmp(&b.component)));
        let mut sched = Schedule::new(&steps);
        for s in &steps {
            if j.is_ready(&s.component) {
                sched.ready.insert(&s.component);
                events.emit(
                    StepId::Deploy,
                    Kind::Progress,
                    &format!("wave {} ({}): ready at an earlier run", s.wave, s.component),
                )?;
            }
        }
        let todo: Vec<&Step> = steps
            .iter()
            .filter(|s| !sched.ready.contains(s.component.as_str()))
            .copied()
            .collect();
        let rendered = self.render_steps(&todo, &j, redo)?;
        let j = Mutex::new(j);
        let mut announced = BTreeSet::new();
        let (tx, rx) = mpsc::channel::<Finished>();
        std::thread::scope(|sc| -> Result<()> {
            let mut running = 0;
            loop {
                while sched.failures.is_empty()
                    && let Some(i) = sched.next()
                {
                    let s = steps[i];
                    if announced.insert(s.wave) {
                        let names: Vec<&str> = todo
                            .iter()
                            .filter(|x| x.wave == s.wave)
                            .map(|x| x.component.as_str())
                            .collect();
                        events.emit(
                            StepId::Deploy,
                            Kind::Progress,
                            &format!("wave {}: {}", s.wave, names.join(", ")),
                        )?;
                    }
                    sched.start(i);
                    events.emit(
                        StepId::Deploy,
                        Kind::Progress,
                        &format!("{}: starting{}", s.component, sched.after(i)),
                    )?;
                    let mut ev = events.fork(&s.component)?;
                    let (tx, j, r) = (tx.clone(), &j, &rendered);
                    sc.spawn(move || {
                        let m = crate::ledger::mark();
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.component(&mut ev, j, s, r, redo)
                        }))
                        .unwrap_or_else(|_| {
                            Err(anyhow::anyhow!("{}: its thread panicked", s.component))
                        });
                        // The receiver lives until every sender's thread ends.
                        let _ = tx.send(Finished {
                            step: i,
                            result,
                            account: m.account(),
                            at: Instant::now(),
                        });
                    });
                    running += 1;
                }
                if running == 0 {
                    return Ok(());
                }
                let f = rx
                    .recv()
                    .context("a component's thread ended without a word")?;
                running -= 1;
                sched.finish(f);
            }
        })?;
        if !sched.failures.is_empty() {
            bail!("{}", sched.failures.join("\n"));
        }
        if let Some(w) = sched.waiting() {
            bail!("nothing was left running, yet {w}: the plan's dependencies cannot be met");
        }
        let (path, spent) = sched.critical_path(start);
        crate::ledger::absorb(&spent);
        Ok(format!(
            "platform ready: {} component(s) in {} wave(s) in {:.0} s; critical path {}",
            self.cfg.platform.len(),
            announced.len(),
            start.elapsed().as_secs_f64(),
            if path.is_empty() {
                "none (everything ready at an earlier run)".to_string()
            } else {
                path
            }
        ))
    }

    /// An artifact's bytes from the bundle's blob store, checked against
    /// the digest bundle.json gives it.
    fn artifact(&self, name: &str) -> Result<Vec<u8>> {
        let a = self
            .manifest
            .artifacts
            .iter()
            .find(|a| a.name == name)
            .with_context(|| format!("the bundle holds no artifact {name}"))?;
        let blob = |d: &Digest| cluster::read_blob(&self.cfg, name, d);
        blob(&a.content_blob(blob)?)
    }

    /// Helm's releases in the cluster: (namespace, name) → (revision, status).
    pub fn helm_releases(&self) -> Result<BTreeMap<(String, String), (u32, String)>> {
        let out = self
            .helm()
            .args(["list", "--all-namespaces", "--all", "--output", "json"])
            .output_on(self.runner.as_ref())?;
        let v: Vec<serde_json::Value> =
            serde_json::from_slice(&out).context("parsing `helm list --output json`")?;
        Ok(v.iter()
            .filter_map(|r| {
                let ns = r["namespace"].as_str()?.to_string();
                let name = r["name"].as_str()?.to_string();
                // Helm writes the revision as a string.
                let rev = match &r["revision"] {
                    serde_json::Value::String(s) => s.parse().ok()?,
                    n => u32::try_from(n.as_u64()?).ok()?,
                };
                let status = r["status"].as_str().unwrap_or("").to_string();
                Some(((ns, name), (rev, status)))
            })
            .collect())
    }

    fn helm(&self) -> airgap_bundle::run::Cmd {
        render::helm_cmd(&self.helm, &self.work.join("helm"))
            .arg("--kubeconfig")
            .arg(&self.kube.kubeconfig)
    }

    /// Applies the component's releases not yet applied, then waits for its
    /// readiness; journals each.
    fn component(
        &self,
        events: &mut Sink,
        j: &Mutex<DeployJournal>,
        s: &Step,
        rendered: &Rendered,
        redo: bool,
    ) -> Result<()> {
        let t = Instant::now();
        let cost = crate::ledger::mark();
        let journal = || {
            j.lock()
                .map_err(|_| anyhow::anyhow!("the deploy journal's lock"))
        };
        for r in &s.releases {
            let name = r.name();
            let earlier = journal()?.applied(&s.component, &name).cloned();
            if !redo && let Some(rec) = earlier {
                events.emit(
                    StepId::Deploy,
                    Kind::Progress,
                    &format!(
                        "{}: {name} applied at an earlier run ({})",
                        s.component, rec.detail
                    ),
                )?;
                continue;
            }
            let Some((_, _, file)) = rendered
                .iter()
                .find(|(c, n, _)| c == &s.component && n == &name)
            else {
                bail!("{}: {name} was not rendered", s.component);
            };
            let at = At { s, r, file, redo };
            let detail = match self.apply(events, &at) {
                Ok(d) => d,
                // What the cluster says about it helps more than the
                // tool's last words alone (a hook Job that never ran).
                Err(e) => bail!(
                    "{}: {}: {e:#}\n{}",
                    s.component,
                    r.describe(),
                    report::report(&self.kube, s)
                ),
            };
            let mut j = journal()?;
            j.mark_applied(&s.component, &name, s.wave, &detail)?;
            if let Install::Fill(f) = &r.item {
                j.set_registry(&format!("{}/{}", f.registry, f.project))?;
            }
            drop(j);
            events.emit(
                StepId::Deploy,
                Kind::Progress,
                &format!("{}: {detail}", s.component),
            )?;
        }
        self.await_ready(events, s)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", s.component))?;
        let detail = format!(
            "ready in {:.0} s{}",
            t.elapsed().as_secs_f64(),
            if s.readiness.is_empty() {
                " (the plan names no check)".to_string()
            } else {
                format!(
                    ": {}",
                    s.readiness
                        .iter()
                        .map(|r| r.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        );
        // The images this component's pods unpacked are on disk before
        // what depends on it starts: containerd writes unpacked layers without
        // syncing, and a power cut can leave their files empty (seen at
        // kubeadm init). The journal says ready only for what would survive.
        run("sync")
            .ok_on(self.runner.as_ref())
            .context("flushing the unpacked images to disk")?;
        journal()?.mark_ready(&s.component, s.wave, &detail)?;
        events.progress_took(StepId::Deploy, &format!("{}: {detail}", s.component), &cost)
    }

    /// The rendered objects of a kind applied `by objects` (a manifest, a
    /// kustomization, a namespace), server-side with the bundled kubectl
    /// (one field manager for all), again while the API server is away or
    /// a CRD it needs is not served.
    fn apply_objects(&self, events: &mut Sink, at: &At) -> Result<String> {
        let (s, r, file) = (at.s, at.r, at.file);
        let what = format!("{}: the API server to take {}", s.component, r.name());
        wait(events, StepId::Deploy, &what, cluster::APPLY_WAIT, || {
            let tried = self
                .kube
                .exec(&[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=kpaas-agent",
                    "-f",
                    &file.to_string_lossy(),
                ])
                .map(|out| {
                    let n = String::from_utf8_lossy(&out).lines().count();
                    format!("{} applied server-side ({n} object(s))", r.name())
                });
            match tried {
                Ok(d) => Ok(Some(Ok(d))),
                Err(e) if retryable(&format!("{e:#}")) => Err(last_line(&e)),
                Err(e) => Ok(Some(Err(e))),
            }
        })?
    }

    /// Every readiness check of the step, bounded by `limit`; a failure
    /// carries the report (the object, its events, the failing pod's log).
    fn await_ready(&self, events: &mut Sink, s: &Step) -> Result<()> {
        if s.readiness.is_empty() {
            return Ok(());
        }
        let nodes: Vec<String> = crate::grow::ready_nodes(&self.cfg)
            .into_iter()
            .map(|n| n.hostname)
            .collect();
        let what = format!("{} to be ready", s.component);
        let mut failed: Option<String> = None;
        let r = wait_with(
            events,
            StepId::Deploy,
            &what,
            self.limit,
            || {
                let mut short = Vec::new();
                for c in &s.readiness {
                    // Hooks belong to their install kind's module.
                    let now = match c {
                        Readiness::Hook { name } => match name {
                            Hook::HarborHoldsBundle => self.holds_bundle(s),
                            Hook::VaultUnsealed => self.vault_unsealed(s),
                            Hook::VaultClusterSecret => self.vault_cluster_secret(s),
                        },
                        _ => judge::judge(&self.kube.api, c, &nodes),
                    };
                    match now {
                        Outcome::Holds => {}
                        Outcome::Waiting(w) => short.push(w),
                        Outcome::Failed(f) => {
                            failed = Some(f.clone());
                            return Ok(Some(()));
                        }
                    }
                }
                if short.is_empty() {
                    Ok(Some(()))
                } else {
                    Err(short.join("; "))
                }
            },
            |d| judge::pause(&self.kube.api, &s.readiness, d),
        );
        let why = match (r, failed) {
            (Ok(()), None) => return Ok(()),
            (_, Some(f)) => f,
            (Err(e), None) => format!("{e:#}"),
        };
        bail!("{why}\n{}", report::report(&self.kube, s))
    }

    /// The bundled kubectl with the admin kubeconfig.
    fn kubectl(&self) -> airgap_bundle::run::Cmd {
        run(&self.kube.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kube.kubeconfig)
    }

    /// Objects applied server-side from stdin (what may hold a secret never
    /// goes to a file or an argument), again while the API server is away
    /// or busy (idempotent, as a manifest's apply), up to the apply's bound.
    fn apply_stdin(&self, objects: &serde_json::Value) -> Result<()> {
        let start = Instant::now();
        loop {
            let tried = self
                .kubectl()
                .args([
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager=kpaas-agent",
                    "-f",
                    "-",
                ])
                .stdin(objects.to_string())
                .ok_on(self.runner.as_ref());
            match tried {
                Err(e) if retryable(&format!("{e:#}")) && start.elapsed() < cluster::APPLY_WAIT => {
                    std::thread::sleep(Duration::from_secs(5));
                }
                done => return done,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::retryable;

    #[test]
    fn what_a_later_try_mends_is_retried_a_bad_object_is_not() {
        for e in [
            "The Service \"cp-harbor-registry\" is invalid: spec.ports[0].nodePort: Invalid value: 30002: provided port is already allocated",
            "error: resource mapping not found for name: \"x\": no matches for kind \"Profile\" in version \"kubeflow.org/v1\"\nensure CRDs are installed first",
            "The connection to the server 10.10.0.10:6443 was refused - did you specify the right host or port?",
            "Error from server (InternalError): Internal error occurred: resource quota evaluation timed out",
        ] {
            assert!(retryable(e), "{e}");
        }
        assert!(!retryable(
            "The Service \"x\" is invalid: spec.ports[0].nodePort: Invalid value: 99999: provided port is not in the valid range"
        ));
    }
}

/// One release to apply, as the engine hands it to its kind.
pub(super) struct At<'a> {
    pub s: &'a Step,
    pub r: &'a Release,
    /// Its rendered objects (empty for a kind that renders none).
    pub file: &'a Path,
    /// Applied again although the journal has it (`--from`).
    pub redo: bool,
}

/// The apply of a kind the table marks `by agent`; its module in this
/// directory implements it.
trait Apply {
    fn apply(&self, e: &Engine, events: &mut Sink, at: &At) -> Result<String>;
}

/// `Engine::apply`, generated from the table of install kinds
/// (`airgap_bundle::install_kinds!`): one arm per kind, `by objects` ones
/// applied from their rendered objects, `by agent` ones through their
/// `Apply` (a kind without one does not build).
macro_rules! dispatch {
    ($( $(#[$doc:meta])* $tag:literal => $variant:ident($ty:ty) by $by:ident ),* $(,)?) => {
        impl Engine {
            fn apply(&self, events: &mut Sink, at: &At) -> Result<String> {
                match &at.r.item {
                    $( Install::$variant(x) => by!($by, self, x, events, at), )*
                }
            }
        }
    };
}

macro_rules! by {
    (objects, $e:expr, $x:expr, $events:expr, $at:expr) => {{
        let _ = $x;
        $e.apply_objects($events, $at)
    }};
    (agent, $e:expr, $x:expr, $events:expr, $at:expr) => {
        Apply::apply($x, $e, $events, $at)
    };
}

airgap_bundle::install_kinds!(dispatch);

/// A runtime for the async clients (the registry's, Vault's): the engine
/// itself is synchronous.
fn runtime(what: &str) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("starting the async runtime for {what}"))
}

/// Runs one async call on a runtime of its own.
fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    runtime("a call")?.block_on(f)
}

/// The install item a hook reads (its registry, Vault's address) from the
/// same component; without one the hook cannot hold, said so.
fn hook_item<'a, T>(
    s: &'a Step,
    hook: Hook,
    pick: impl Fn(&'a Install) -> Option<T>,
) -> Result<T, Outcome> {
    s.releases
        .iter()
        .find_map(|r| pick(&r.item))
        .ok_or_else(|| {
            // The hook as the catalog spells it (`harbor-holds-bundle`).
            let name = serde_json::to_value(hook)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| format!("{hook:?}"));
            Outcome::Failed(format!(
                "{}: the hook {name} needs a `{}` install item in the same component",
                s.component,
                Install::provider(hook).unwrap_or("?")
            ))
        })
}
