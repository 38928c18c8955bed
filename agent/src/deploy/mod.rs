//! The deploy engine: the plan's platform steps (the node config's
//! `platform`, copied from `kpaas-builder plan`) applied wave by wave from
//! the node's own bundle. Each release (a Helm chart through the bundled
//! helm's `upgrade --install`, a manifest or a kustomization applied
//! server-side with the bundled kubectl) is journaled when it is applied and
//! each component when its readiness holds, so a run after kill -9 or a
//! power cut resumes at the first unfinished release. Before anything of a
//! wave is applied, every object it would create is rendered and every image
//! they name is checked against the bundle: a wave that would need the
//! internet is refused whole.
//!
//! kubectl rather than kube-rs for applying: the bundle carries it at the
//! cluster's version, server-side apply through it handles any kind
//! (CRDs included) without typed models, and the agent stays free of a
//! Kubernetes client's build weight.

mod checks;
pub mod journal;
mod report;

use crate::boot::StepId;
use crate::boot::cluster::{self, last_line, transient, wait};
use crate::events::{Kind, Sink};
use crate::{fill, kube, mirrors, vault};
use airgap_bundle::deploy::{Hook, Readiness};
use airgap_bundle::manifest::BLOBS_DIR;
use airgap_bundle::manifest::BundleManifest;
use airgap_bundle::node::NodeConfig;
use airgap_bundle::offline::{Held, Verdict};
use airgap_bundle::plan::{Release, Step};
use airgap_bundle::render::{self, Renderer};
use airgap_bundle::run::{Runner, run};
use airgap_bundle::{Digest, fsutil};
use anyhow::{Context, Result, bail};
use checks::Outcome;
use journal::DeployJournal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Blobs pushed at once by the hand-off.
const FILL_JOBS: usize = 4;

/// How long one component's readiness may take by default (a wave of
/// images unpacked under emulation takes minutes).
pub const READY_LIMIT: Duration = Duration::from_secs(30 * 60);

/// kubectl with the admin's kubeconfig.
pub struct Kube {
    runner: Arc<dyn Runner>,
    kubectl: String,
    kubeconfig: PathBuf,
}

impl Kube {
    pub fn exec(&self, args: &[&str]) -> Result<Vec<u8>> {
        run(&self.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output_on(self.runner.as_ref())
    }

    /// As [`Kube::exec`], the error as its last line (for progress lines).
    pub fn run(&self, args: &[&str]) -> Result<Vec<u8>, String> {
        self.exec(args).map_err(|e| last_line(&e))
    }

    /// An object or list by API path.
    pub fn raw(&self, path: &str) -> Result<Vec<u8>, String> {
        self.run(&["get", "--raw", path])
    }

    pub fn json(&self, path: &str) -> Result<serde_json::Value, String> {
        serde_json::from_slice(&self.raw(path)?).map_err(|e| format!("{path}: {e}"))
    }
}

/// Whether an apply failure goes away by trying again: the API server busy
/// or away, or a custom resource applied in the same run as its CRD, which
/// the API serves a moment later (Kubeflow's manifests; upstream loops
/// `kustomize build | kubectl apply` until it passes).
fn retryable(err: &str) -> bool {
    transient(err)
        || err.contains("ensure CRDs are installed first")
        || err.contains("no matches for kind")
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
    work: PathBuf,
    /// Per component, for its readiness.
    pub limit: Duration,
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
                .file(name, "amd64")
                .and_then(|a| a.install_path.clone())
                .with_context(|| {
                    format!("the bundle installs no {name} (a file artifact with an install_path): it cannot deploy the platform")
                })?;
            Ok(root
                .join(a.trim_start_matches('/'))
                .to_string_lossy()
                .to_string())
        };
        let kube = Kube {
            runner: runner.clone(),
            kubectl: tool("kubectl")?,
            kubeconfig: root.join(kube::ADMIN_CONF),
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
        })
    }

    fn steps_in(&self, wave: usize) -> Vec<&Step> {
        self.cfg
            .platform
            .iter()
            .filter(|s| s.wave == wave)
            .collect()
    }

    /// Every wave in order; returns the summary "done" records.
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
        // Every check the plan asks for must be one this agent runs: said
        // before anything is applied, all at once.
        let unsupported: Vec<String> = self
            .cfg
            .platform
            .iter()
            .flat_map(|s| {
                s.readiness.iter().filter_map(move |r| {
                    checks::unsupported(r).map(|e| format!("{}: {e}", s.component))
                })
            })
            .collect();
        if !unsupported.is_empty() {
            bail!(
                "the plan asks for readiness checks this agent cannot run, so nothing was deployed:\n  {}",
                unsupported.join("\n  ")
            );
        }
        fsutil::create_dir(&self.work)?;
        let waves = self.cfg.platform.iter().map(|s| s.wave).max();
        let mut summary = Vec::new();
        for wave in self.cfg.platform.iter().map(|s| s.wave).min().unwrap_or(0)..=waves.unwrap_or(0)
        {
            let steps = self.steps_in(wave);
            if steps.is_empty() {
                continue;
            }
            let names: Vec<&str> = steps.iter().map(|s| s.component.as_str()).collect();
            if steps.iter().all(|s| j.is_ready(&s.component)) {
                events.emit(
                    StepId::Deploy,
                    Kind::Progress,
                    &format!(
                        "wave {wave} ({}): ready at an earlier run",
                        names.join(", ")
                    ),
                )?;
                continue;
            }
            let t = Instant::now();
            events.emit(
                StepId::Deploy,
                Kind::Progress,
                &format!("wave {wave}: {}", names.join(", ")),
            )?;
            let rendered = self.render_wave(&steps, &j, opts.from.is_some())?;
            for s in &steps {
                if j.is_ready(&s.component) {
                    continue;
                }
                self.component(events, &mut j, s, &rendered, opts.from.is_some())?;
            }
            summary.push(format!("wave {wave} {:.0} s", t.elapsed().as_secs_f64()));
        }
        Ok(format!(
            "platform ready: {} component(s) in {} wave(s) ({}) in {:.0} s",
            self.cfg.platform.len(),
            summary.len(),
            summary.join(", "),
            start.elapsed().as_secs_f64()
        ))
    }

    /// Renders every release of the wave still to apply and checks every
    /// image the objects name against the bundle (the same rendering and
    /// verdict as `kpaas-builder check-offline`); refuses the wave, naming
    /// each release, object and image, before anything of it is applied.
    fn render_wave(
        &self,
        steps: &[&Step],
        j: &DeployJournal,
        redo: bool,
    ) -> Result<Vec<(String, String, PathBuf)>> {
        let held = Held::of(
            &self.manifest,
            |d| cluster::read_blob(&self.cfg, "an image index", d).ok(),
            |d| self.cfg.bundle.join(BLOBS_DIR).join(d.hex()).is_file(),
        );
        let mut out = Vec::new();
        let mut verdict = Verdict::default();
        for s in steps {
            for r in &s.releases {
                if !redo && j.applied(&s.component, &r.name()).is_some() {
                    continue;
                }
                let file = self
                    .render(s, r)
                    .with_context(|| format!("{}: rendering {}", s.component, r.describe()))?;
                let yaml = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                verdict.read(&held, &format!("{}/{}", s.component, r.name()), &yaml);
                out.push((s.component.clone(), r.name(), file));
            }
        }
        if !verdict.missing.is_empty() {
            bail!(
                "wave refused before anything of it was applied: {} image reference(s) the seed does not hold:\n  {}",
                verdict.missing.len(),
                verdict.missing_lines().join("\n  ")
            );
        }
        Ok(out)
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

    fn helm(&self) -> airgap_bundle::run::Cmd {
        render::helm_cmd(&self.helm, &self.work.join("helm"))
            .arg("--kubeconfig")
            .arg(&self.kube.kubeconfig)
    }

    /// The renderer `check-offline` uses too, at the bundle's Kubernetes
    /// version, with this node's tools.
    fn renderer(&self) -> Result<Renderer<'_>> {
        Ok(Renderer {
            runner: self.runner.as_ref(),
            helm: self.helm.clone(),
            kustomize: Some(self.kustomize.clone()),
            work: self.work.clone(),
            kube_version: render::kubernetes_version(&self.manifest)?,
        })
    }

    /// Writes what a release applies and returns the rendered objects' file.
    fn render(&self, s: &Step, r: &Release) -> Result<PathBuf> {
        let dir = self.work.join(&s.component);
        fsutil::create_dir(&dir)?;
        let out = dir.join(format!("{}.yaml", r.name().replace('/', "_")));
        // Releases that apply no objects an image check could read render empty.
        let mut yaml = self
            .renderer()?
            .release(self, &s.component, r)?
            .map(|x| x.objects)
            .unwrap_or_default();
        // Plain objects land in the component's namespace: make it first.
        if let (Release::Manifest { .. } | Release::Kustomize { .. }, Some(ns)) = (r, &s.namespace)
        {
            let mut with =
                format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n")
                    .into_bytes();
            with.extend(yaml);
            yaml = with;
        }
        fsutil::write_atomic(&out, &yaml)?;
        Ok(out)
    }

    /// Every value that is exactly `{secret.KEY}` becomes the site's
    /// password (only in the values file, 0600).
    fn fill_secrets(&self, v: &mut serde_json::Value) -> Result<()> {
        match v {
            serde_json::Value::String(s) => {
                if let Some(key) = airgap_bundle::deploy::secret_key(s) {
                    *s = self.password(key)?;
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().try_for_each(|x| self.fill_secrets(x))?,
            serde_json::Value::Object(o) => {
                o.values_mut().try_for_each(|x| self.fill_secrets(x))?
            }
            _ => {}
        }
        Ok(())
    }

    /// The chart archive and its values file (0600: it may carry a site's
    /// password) in the work directory, as the renderer writes them.
    fn chart_files(
        &self,
        s: &Step,
        release: &str,
        artifact: &str,
        values: &serde_json::Value,
    ) -> Result<(PathBuf, PathBuf)> {
        self.renderer()?
            .chart_files(self, &s.component, release, artifact, values)
    }

    /// Applies the component's releases not yet applied, then waits for its
    /// readiness; journals each.
    fn component(
        &self,
        events: &mut Sink,
        j: &mut DeployJournal,
        s: &Step,
        rendered: &[(String, String, PathBuf)],
        redo: bool,
    ) -> Result<()> {
        let t = Instant::now();
        for r in &s.releases {
            let name = r.name();
            if !redo && let Some(rec) = j.applied(&s.component, &name) {
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
            let detail = match self.apply(events, s, r, file, redo) {
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
            j.mark_applied(&s.component, &name, s.wave, &detail)?;
            if let Release::Fill {
                registry, project, ..
            } = r
            {
                j.set_registry(&format!("{registry}/{project}"))?;
            }
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
        // The images this component's pods unpacked are on disk before the
        // next wave starts: containerd writes unpacked layers without
        // syncing, and a power cut can leave their files empty (seen at
        // kubeadm init). The journal says ready only for what would survive.
        run("sync")
            .ok_on(self.runner.as_ref())
            .context("flushing the unpacked images to disk")?;
        j.mark_ready(&s.component, s.wave, &detail)?;
        events.emit(
            StepId::Deploy,
            Kind::Progress,
            &format!("{}: {detail}", s.component),
        )
    }

    fn apply(
        &self,
        events: &mut Sink,
        s: &Step,
        r: &Release,
        file: &Path,
        redo: bool,
    ) -> Result<String> {
        if let Release::Fill {
            registry,
            project,
            harbor_api,
        } = r
        {
            return self.hand_off(events, registry, project, *harbor_api);
        }
        if let Release::VaultInit {
            address,
            shares,
            threshold,
        } = r
        {
            return self.vault_init(events, address, *shares, *threshold);
        }
        if let Release::Secret {
            namespace,
            name,
            password,
        } = r
        {
            return self.secret(namespace, name, password);
        }
        if let Release::DefaultStorageClass { name } = r {
            return self.default_class(events, name);
        }
        if let Release::VaultCluster {
            api_url,
            bound_cidrs,
            ..
        } = r
        {
            return self.vault_cluster(api_url, bound_cidrs);
        }
        if let Release::Chart {
            release,
            namespace,
            artifact,
            values,
        } = r
        {
            // Helm can run long (it waits for a hook Job): it runs beside a
            // loop that says what the release's namespace is waiting for.
            let start = Instant::now();
            loop {
                let label = format!("{}: helm release {namespace}/{release}", s.component);
                let tried = self.beside(events, &label, namespace, || {
                    self.helm_release(s, release, namespace, artifact, values, redo)
                })?;
                match tried {
                    Err(e)
                        if retryable(&format!("{e:#}"))
                            && start.elapsed() < cluster::APPLY_WAIT =>
                    {
                        events.emit(
                            StepId::Deploy,
                            Kind::Progress,
                            &format!("{label}: the API server is away ({}); again", last_line(&e)),
                        )?;
                        std::thread::sleep(Duration::from_secs(10));
                    }
                    other => return other,
                }
            }
        }
        let what = format!("{}: the API server to take {}", s.component, r.name());
        wait(events, StepId::Deploy, &what, cluster::APPLY_WAIT, || {
            let tried = match r {
                Release::Chart {
                    release,
                    namespace,
                    artifact,
                    values,
                } => self.helm_release(s, release, namespace, artifact, values, redo),
                // Manifests and kustomizations (the hand-off returned above).
                _ => self
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
                    }),
            };
            match tried {
                Ok(d) => Ok(Some(Ok(d))),
                Err(e) if retryable(&format!("{e:#}")) => Err(last_line(&e)),
                Err(e) => Ok(Some(Err(e))),
            }
        })?
    }

    /// `helm upgrade --install`, after clearing what an interrupted run
    /// left: a release stuck `pending-install` (power cut during install) is
    /// uninstalled and installed again, one stuck `pending-upgrade` rolled
    /// back first; a release already `deployed` that the journal missed
    /// (cut between Helm's end and the journal's write) is not installed a
    /// second time unless `redo`.
    fn helm_release(
        &self,
        s: &Step,
        release: &str,
        namespace: &str,
        artifact: &str,
        values: &serde_json::Value,
        redo: bool,
    ) -> Result<String> {
        let status = self
            .helm()
            .args([
                "status",
                release,
                "--namespace",
                namespace,
                "--output",
                "json",
            ])
            .output_on(self.runner.as_ref());
        let (state, revision) = match &status {
            Ok(out) => {
                let v: serde_json::Value = serde_json::from_slice(out).unwrap_or_default();
                (
                    v["info"]["status"].as_str().unwrap_or("").to_string(),
                    v["version"].as_i64().unwrap_or(0),
                )
            }
            Err(e) if format!("{e:#}").contains("release: not found") => (String::new(), 0),
            Err(e) => return Err(anyhow::anyhow!("{e:#}")).context("reading the release's state"),
        };
        match state.as_str() {
            "deployed" if !redo => {
                return Ok(format!(
                    "helm release {namespace}/{release} found deployed (revision {revision}); not installed again"
                ));
            }
            "pending-install" | "failed" if revision <= 1 => {
                self.helm()
                    .args(["uninstall", release, "--namespace", namespace, "--wait"])
                    .ok_on(self.runner.as_ref())
                    .context("removing the release an interrupted install left")?;
            }
            "pending-upgrade" | "pending-rollback" => {
                self.helm()
                    .args(["rollback", release, "--namespace", namespace, "--wait"])
                    .ok_on(self.runner.as_ref())
                    .context("rolling back the upgrade an interrupted run left")?;
            }
            _ => {}
        }
        let (tgz, vals) = self.chart_files(s, release, artifact, values)?;
        let out = self
            .helm()
            .args(["upgrade", "--install", release])
            .arg(&tgz)
            .args(["--namespace", namespace, "--create-namespace", "--values"])
            .arg(&vals)
            // A hook (a pre-install Job) runs inside `helm upgrade`: Helm
            // waits for it as long as a component may take.
            .args([
                "--timeout",
                &format!("{}s", self.limit.as_secs()),
                "--output",
                "json",
            ])
            .output_on(self.runner.as_ref())?;
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
        Ok(format!(
            "helm release {namespace}/{release} {} (revision {})",
            v["info"]["status"].as_str().unwrap_or("?"),
            v["version"].as_i64().unwrap_or(0)
        ))
    }

    /// Every readiness check of the step, bounded by `limit`; a failure
    /// carries the report (the object, its events, the failing pod's log).
    fn await_ready(&self, events: &mut Sink, s: &Step) -> Result<()> {
        if s.readiness.is_empty() {
            return Ok(());
        }
        let nodes: Vec<String> = self.cfg.nodes.iter().map(|n| n.hostname.clone()).collect();
        let what = format!("{} to be ready", s.component);
        let mut failed: Option<String> = None;
        let r = wait(events, StepId::Deploy, &what, self.limit, || {
            let mut short = Vec::new();
            for c in &s.readiness {
                let now = match c {
                    Readiness::Hook {
                        name: Hook::HarborHoldsBundle,
                    } => self.holds_bundle(s),
                    Readiness::Hook {
                        name: Hook::VaultUnsealed,
                    } => self.vault_unsealed(s),
                    Readiness::Hook {
                        name: Hook::VaultClusterSecret,
                    } => self.vault_cluster_secret(s),
                    _ => checks::check(&self.kube, c, &nodes),
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
        });
        let why = match (r, failed) {
            (Ok(()), None) => return Ok(()),
            (_, Some(f)) => f,
            (Err(e), None) => format!("{e:#}"),
        };
        bail!("{why}\n{}", report::report(&self.kube, s))
    }

    /// The site's password for `key` (the seed's `passwords.yaml`, 0600 on
    /// the master); never logged.
    fn password(&self, key: &str) -> Result<String> {
        let p = self.root.join(kube::SECRETS_DIR).join("passwords.yaml");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let all: std::collections::BTreeMap<String, String> =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        all.get(key)
            .cloned()
            .with_context(|| format!("{} has no {key}", p.display()))
    }

    fn target(&self, registry: &str, project: &str, harbor_api: bool) -> Result<fill::Target> {
        Ok(fill::Target {
            base: format!("http://{registry}"),
            project: project.to_string(),
            auth: if harbor_api {
                Some(("admin".into(), self.password("harbor_admin")?))
            } else {
                None
            },
        })
    }

    /// The hand-off: waits for the registry, (Harbor) makes the project,
    /// pushes the bundle, then points this node's runtime at the registry,
    /// the seed behind it.
    fn hand_off(
        &self,
        events: &mut Sink,
        registry: &str,
        project: &str,
        harbor_api: bool,
    ) -> Result<String> {
        let t = self.target(registry, project, harbor_api)?;
        wait(
            events,
            StepId::Deploy,
            &format!("the registry at {registry} to answer"),
            self.limit,
            || match checks::http_status(&format!("{}/v2/", t.base)) {
                Ok(200 | 401) => Ok(Some(())),
                Ok(s) => Err(format!("/v2/ answered {s}")),
                Err(e) => Err(e),
            },
        )?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime for the hand-off")?;
        if harbor_api {
            rt.block_on(fill::ensure_project(&t))?;
        }
        let report = rt.block_on(fill::fill(&self.cfg.bundle, &t, FILL_JOBS))?;
        // The yardstick, in the same run on the same node: how fast the
        // seed itself serves the same bytes (the largest blobs, up to as
        // much as was pushed). A failure here is reported, not fatal.
        let seed = format!("127.0.0.1:{}", self.cfg.seed_port);
        let yardstick = match rt.block_on(fill::seed_read_rate(
            &self.cfg.bundle,
            &seed,
            report.bytes_sent.max(64 << 20),
        )) {
            Ok((_, rate)) => {
                let push = report.bytes_sent as f64 / report.secs.max(0.001);
                format!(
                    "; the seed reads at {:.1} MiB/s here: push/read {:.2}",
                    rate / (1 << 20) as f64,
                    push / rate.max(1.0)
                )
            }
            Err(e) => format!(
                "; the seed's read rate could not be measured: {}",
                last_line(&e)
            ),
        };
        let hosts = mirrors::registries(
            self.manifest
                .artifacts
                .iter()
                .filter(|a| a.kind == "image")
                .map(|a| &a.name),
        );
        let platform = format!("{registry}/{project}");
        let changed = mirrors::write_all(&self.root, &hosts, &seed, Some(&platform))?;
        if self.cfg.runtime == airgap_bundle::node::Runtime::Crio {
            // CRI-O reads registries.conf at start and on reload.
            run("systemctl")
                .args(["reload", "crio"])
                .ok_on(self.runner.as_ref())?;
        }
        Ok(format!(
            "hand-off: {}{yardstick}; this node's mirrors now {platform} first, the seed behind it ({} file(s))",
            report.summary(),
            changed.len()
        ))
    }

    /// `harbor-holds-bundle`: every image and chart of the bundle reads back
    /// from the step's hand-off registry with the bundle's digest.
    fn holds_bundle(&self, s: &Step) -> Outcome {
        let found = hook_item(s, "harbor-holds-bundle", "fill", |r| match r {
            Release::Fill {
                registry,
                project,
                harbor_api,
            } => Some((registry, project, *harbor_api)),
            _ => None,
        });
        let (registry, project, harbor_api) = match found {
            Ok(x) => x,
            Err(o) => return o,
        };
        let checked = self
            .target(registry, project, harbor_api)
            .and_then(|t| block_on(fill::verify(&self.cfg.bundle, &t)));
        match checked {
            Ok(w) if w.is_empty() => Outcome::Holds,
            Ok(w) => Outcome::Waiting(format!(
                "{} artifact(s) not in {registry}/{project} as bundled: {}",
                w.len(),
                w.iter().take(3).cloned().collect::<Vec<_>>().join("; ")
            )),
            Err(e) => Outcome::Waiting(last_line(&e)),
        }
    }

    /// Vault's first start: waits until its API answers, initialises it
    /// with the plan's shares, keeps the key, unseals.
    fn vault_init(
        &self,
        events: &mut Sink,
        address: &str,
        shares: usize,
        threshold: usize,
    ) -> Result<String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the async runtime for Vault")?;
        wait(
            events,
            StepId::Deploy,
            &format!("Vault at {address} to answer"),
            self.limit,
            || {
                rt.block_on(vault::status(address))
                    .map(Some)
                    .map_err(|e| last_line(&e))
            },
        )?;
        rt.block_on(vault::init_and_unseal(
            address,
            shares,
            threshold,
            &vault::key_path(&self.cfg.state_dir),
        ))
    }

    /// `vault-unsealed`: the step's Vault answers and is not sealed.
    fn vault_unsealed(&self, s: &Step) -> Outcome {
        let address = match hook_item(s, "vault-unsealed", "vault-init", |r| match r {
            Release::VaultInit { address, .. } => Some(address),
            _ => None,
        }) {
            Ok(a) => a,
            Err(o) => return o,
        };
        match block_on(vault::status(address)) {
            Ok((true, false)) => Outcome::Holds,
            Ok((init, sealed)) => Outcome::Waiting(format!(
                "Vault at {address}: initialized {init}, sealed {sealed}"
            )),
            Err(e) => Outcome::Waiting(last_line(&e)),
        }
    }

    /// K-PaaS's Vault setup for the portal: a cluster-admin ServiceAccount
    /// `kube-system/k8sadmin` and a long-lived token of it (upstream's
    /// `--duration=999999h`), then Vault's approle, kv-v2, the cluster's
    /// secret, policy and role (`vault::setup_cluster`). The token goes
    /// from kubectl's stdout to Vault, never to a file or a log.
    fn vault_cluster(&self, api_url: &str, bound_cidrs: &[String]) -> Result<String> {
        let sa = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "k8sadmin", "namespace": "kube-system"}},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": "k8sadmin"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                 "subjects": [{"kind": "ServiceAccount", "name": "k8sadmin", "namespace": "kube-system"}]},
            ],
        });
        self.apply_stdin(&sa)
            .context("making ServiceAccount kube-system/k8sadmin (cluster-admin)")?;
        let token = self
            .kubectl()
            .args([
                "create",
                "token",
                "k8sadmin",
                "-n",
                "kube-system",
                "--duration=999999h",
            ])
            .output_on(self.runner.as_ref())
            .context("making a token for kube-system/k8sadmin")?;
        let token = String::from_utf8_lossy(&token).trim().to_string();
        if token.is_empty() {
            bail!("kubectl create token k8sadmin printed no token");
        }
        block_on(vault::setup_cluster(
            &vault::key_path(&self.cfg.state_dir),
            &vault::ClusterSecret {
                api_url,
                token: &token,
                bound_cidrs,
            },
            &self.cfg.state_dir.join(vault::APPROLE_FILE),
        ))
    }

    /// StorageClass `name` annotated as the default, as upstream patches it
    /// (waiting while its manifest's class is not there yet).
    fn default_class(&self, events: &mut Sink, name: &str) -> Result<String> {
        let patch = r#"{"metadata":{"annotations":{"storageclass.kubernetes.io/is-default-class":"true"}}}"#;
        wait(
            events,
            StepId::Deploy,
            &format!("StorageClass {name} to exist"),
            cluster::APPLY_WAIT,
            || {
                self.kubectl()
                    .args([
                        "patch",
                        "storageclass",
                        name,
                        "--type",
                        "merge",
                        "-p",
                        patch,
                    ])
                    .ok_on(self.runner.as_ref())
                    .map(Some)
                    .map_err(|e| last_line(&e))
            },
        )?;
        Ok(format!("StorageClass {name} is the default"))
    }

    /// `vault-cluster-secret`: the step's Vault holds the cluster's secret
    /// with its API URL, and the portal's role.
    fn vault_cluster_secret(&self, s: &Step) -> Outcome {
        let api_url = match hook_item(s, "vault-cluster-secret", "vault-cluster", |r| match r {
            Release::VaultCluster { api_url, .. } => Some(api_url),
            _ => None,
        }) {
            Ok(a) => a,
            Err(o) => return o,
        };
        match block_on(vault::cluster_secret_missing(
            &vault::key_path(&self.cfg.state_dir),
            api_url,
        )) {
            Ok(None) => Outcome::Holds,
            Ok(Some(w)) => Outcome::Waiting(w),
            Err(e) => Outcome::Waiting(last_line(&e)),
        }
    }

    /// The bundled kubectl with the admin kubeconfig.
    fn kubectl(&self) -> airgap_bundle::run::Cmd {
        run(&self.kube.kubectl)
            .arg("--kubeconfig")
            .arg(&self.kube.kubeconfig)
    }

    /// Objects applied server-side from stdin (what may hold a secret never
    /// goes to a file or an argument).
    fn apply_stdin(&self, objects: &serde_json::Value) -> Result<()> {
        self.kubectl()
            .args([
                "apply",
                "--server-side",
                "--force-conflicts",
                "--field-manager=kpaas-agent",
                "-f",
                "-",
            ])
            .stdin(objects.to_string())
            .ok_on(self.runner.as_ref())
    }

    /// A Secret with one of the site's passwords, applied server-side from
    /// stdin (never a file, an argument or a log line); its namespace first.
    fn secret(&self, namespace: &str, name: &str, password: &str) -> Result<String> {
        let value = self.password(password)?;
        let list = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": namespace},
                    "type": "Opaque",
                    "stringData": {"password": value},
                },
            ],
        });
        self.apply_stdin(&list)
            .with_context(|| format!("making secret {namespace}/{name}"))?;
        Ok(format!(
            "secret {namespace}/{name} holds the site's {password} (key `password`; value not shown)"
        ))
    }

    /// Runs `f` on its own thread while this one says, every 30 s, how long
    /// it has run and what is not running well in `namespace` (a hook Job's
    /// pod that cannot be scheduled, an image that does not pull).
    fn beside<T: Send>(
        &self,
        events: &mut Sink,
        label: &str,
        namespace: &str,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T> {
        std::thread::scope(|sc| {
            let h = sc.spawn(f);
            let start = Instant::now();
            let mut said = Instant::now();
            while !h.is_finished() {
                std::thread::sleep(Duration::from_millis(200));
                if said.elapsed() >= Duration::from_secs(30) {
                    said = Instant::now();
                    let pods = match self
                        .kube
                        .json(&format!("/api/v1/namespaces/{namespace}/pods"))
                    {
                        Ok(v) => {
                            let trouble: Vec<String> = v["items"]
                                .as_array()
                                .map_or(&[][..], |a| a.as_slice())
                                .iter()
                                .filter_map(|p| {
                                    let t = report::pod_trouble(p)?;
                                    Some(format!(
                                        "{}: {t}",
                                        p["metadata"]["name"].as_str().unwrap_or("?")
                                    ))
                                })
                                .collect();
                            if trouble.is_empty() {
                                "no pod in trouble".to_string()
                            } else {
                                trouble.join("; ")
                            }
                        }
                        Err(e) => e,
                    };
                    events.emit(
                        StepId::Deploy,
                        Kind::Progress,
                        &format!(
                            "{label}: still running ({} s): {pods}",
                            start.elapsed().as_secs()
                        ),
                    )?;
                }
            }
            h.join()
                .map_err(|_| anyhow::anyhow!("{label}: the thread running it panicked"))
        })
    }
}

/// Runs one async call (the registry's and Vault's clients are async) on a
/// runtime of its own: the engine itself is synchronous.
fn block_on<T>(f: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

/// The install item a hook reads (its registry, Vault's address) from the
/// same component; without one the hook cannot hold, said so.
fn hook_item<'a, T>(
    s: &'a Step,
    hook: &str,
    item: &str,
    pick: impl Fn(&'a Release) -> Option<T>,
) -> Result<T, Outcome> {
    s.releases.iter().find_map(pick).ok_or_else(|| {
        Outcome::Failed(format!(
            "{}: the hook {hook} needs a `{item}` install item in the same component",
            s.component
        ))
    })
}

/// The engine renders from the node's blob store, the site's passwords
/// filled into chart values (on the master only, 0600).
impl render::Inputs for Engine {
    fn artifact(&self, name: &str) -> Result<Vec<u8>> {
        Engine::artifact(self, name)
    }

    fn values(&self, v: &serde_json::Value) -> Result<serde_json::Value> {
        let mut v = v.clone();
        self.fill_secrets(&mut v)?;
        Ok(v)
    }
}
