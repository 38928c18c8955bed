//! The engine's part in an update (`crate::update`): one release applied
//! again or for the first time, one taken away, a chart put back to the
//! revision it had, a component's readiness, and the platform's registry
//! filled with a new bundle. The update decides which and in what order,
//! and journals each.

use super::{At, Engine, FILL_JOBS, Rendered, runtime};
use crate::boot::StepId;
use crate::events::{Kind, Sink};
use crate::fill;
use airgap_bundle::kinds::{By, Install};
use airgap_bundle::plan::{Release, Step};
use anyhow::{Context, Result};
use std::path::Path;

impl Engine {
    /// Renders every release of `steps` and checks their images against
    /// this engine's bundle: an update is refused before anything of it is
    /// applied when the new plan would need an image it does not carry.
    pub fn render_all(&self, steps: &[&Step]) -> Result<Rendered> {
        let none = super::journal::DeployJournal::default();
        super::fsutil::create_dir(&self.work)?;
        self.render_steps(steps, &none, true)
    }

    /// Applies one release now, whatever Helm or the journal says: an
    /// upgrade (`helm upgrade`, objects re-applied server-side) or a first
    /// install.
    pub fn apply_release(
        &self,
        events: &mut Sink,
        s: &Step,
        r: &Release,
        file: &Path,
    ) -> Result<String> {
        let at = At {
            s,
            r,
            file,
            redo: true,
        };
        self.apply(events, &at).map_err(|e| {
            anyhow::anyhow!(
                "{}: {}: {e:#}\n{}",
                s.component,
                r.describe(),
                super::report::report(&self.kube, s)
            )
        })
    }

    /// Takes a release away: a chart is uninstalled, rendered objects
    /// deleted, a Secret deleted. What other kinds did (Vault's setup, a
    /// registry's content, the default StorageClass) is left, and said so.
    pub fn remove_release(&self, s: &Step, r: &Release, file: &Path) -> Result<String> {
        match (&r.item, r.item.by()) {
            (Install::Chart(c), _) => {
                let out = self
                    .helm()
                    .args([
                        "uninstall",
                        &c.release,
                        "--namespace",
                        &c.namespace,
                        "--wait",
                    ])
                    .output_on(self.runner.as_ref());
                match out {
                    Ok(_) => Ok(format!(
                        "helm release {}/{} uninstalled",
                        c.namespace, c.release
                    )),
                    Err(e) if format!("{e:#}").contains("not found") => Ok(format!(
                        "helm release {}/{} was not installed",
                        c.namespace, c.release
                    )),
                    Err(e) => Err(e),
                }
            }
            (_, By::Objects) => {
                let out = self.kube.exec(&[
                    "delete",
                    "--ignore-not-found",
                    "--wait=true",
                    "--timeout=300s",
                    "-f",
                    &file.to_string_lossy(),
                ])?;
                let n = String::from_utf8_lossy(&out).lines().count();
                Ok(format!("{}: {n} object(s) deleted", r.name()))
            }
            (Install::Secret(x), _) => {
                self.kube.exec(&[
                    "delete",
                    "secret",
                    "--ignore-not-found",
                    "--namespace",
                    &x.namespace,
                    &x.name,
                ])?;
                Ok(format!("secret {}/{} deleted", x.namespace, x.name))
            }
            _ => Ok(format!(
                "{}: {} is left as it is (its kind has nothing to take away)",
                s.component,
                r.describe()
            )),
        }
    }

    /// A chart release's revision and status, or None when Helm has none.
    pub fn chart_state(&self, namespace: &str, release: &str) -> Result<Option<(u32, String)>> {
        Ok(self
            .helm_releases()?
            .remove(&(namespace.to_string(), release.to_string())))
    }

    /// `helm rollback` to the revision a release had before an update.
    pub fn rollback_chart(&self, namespace: &str, release: &str, revision: u32) -> Result<String> {
        self.helm()
            .args([
                "rollback",
                release,
                &revision.to_string(),
                "--namespace",
                namespace,
                "--wait",
                "--timeout",
                &format!("{}s", self.limit.as_secs()),
            ])
            .ok_on(self.runner.as_ref())
            .with_context(|| format!("rolling back helm release {namespace}/{release}"))?;
        let now = self
            .chart_state(namespace, release)?
            .map_or("?".to_string(), |(r, s)| format!("{s}, revision {r}"));
        Ok(format!(
            "helm release {namespace}/{release} rolled back to revision {revision} ({now})"
        ))
    }

    /// Every readiness check of a step, as at first boot.
    pub fn ready(&self, events: &mut Sink, s: &Step) -> Result<()> {
        self.await_ready(events, s)
            .map_err(|e| anyhow::anyhow!("{}: {e:#}", s.component))
    }

    /// The platform's registry (the plan's `fill`) given every artifact of
    /// this engine's bundle it lacks, and this node's mirrors written for
    /// any registry the bundle newly names. None: the plan has no registry.
    pub fn refill(&self, events: &mut Sink) -> Result<Option<String>> {
        let Some(f) = self.cfg.platform.iter().find_map(|s| {
            s.releases.iter().find_map(|r| match &r.item {
                Install::Fill(f) => Some(f.clone()),
                _ => None,
            })
        }) else {
            return Ok(None);
        };
        let t = self.target(&f.registry, &f.project, f.harbor_api)?;
        events.emit(
            StepId::Update,
            Kind::Progress,
            &format!(
                "filling {}/{} with what the update brings",
                f.registry, f.project
            ),
        )?;
        let report = runtime("the update's fill")?.block_on(fill::fill(
            &self.cfg.bundle,
            &t,
            FILL_JOBS,
            &Default::default(),
        ))?;
        let (platform, changed) = self.point_mirrors(&f.registry, &f.project)?;
        Ok(Some(format!(
            "{platform}: {}; {changed} mirror file(s) changed",
            report.summary()
        )))
    }
}
