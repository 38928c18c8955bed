//! The `chart` install kind's apply: `helm upgrade --install` with the
//! bundled helm from the chart archive and values the renderer wrote (the
//! site's passwords filled in, 0600), clearing what an interrupted run left,
//! beside a progress line naming the namespace's pods in trouble.

use super::{Apply, At, Engine, report, retryable};
use crate::boot::StepId;
use crate::boot::cluster::{self, last_line};
use crate::events::{Kind, Sink};
use airgap_bundle::kinds::chart::Chart;
use airgap_bundle::plan::Step;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use std::time::{Duration, Instant};

impl Apply for Chart {
    fn apply(&self, e: &Engine, events: &mut Sink, at: &At) -> Result<String> {
        e.chart(events, at.s, self, &at.r.artifact, at.redo)
    }
}

impl Engine {
    /// A chart release: Helm can run long (it waits for a hook Job), so it
    /// runs beside a loop that says what the release's namespace is waiting
    /// for; tried again while the API server is away.
    fn chart(
        &self,
        events: &mut Sink,
        s: &Step,
        c: &Chart,
        artifact: &str,
        redo: bool,
    ) -> Result<String> {
        let start = Instant::now();
        loop {
            let label = format!(
                "{}: helm release {}/{}",
                s.component, c.namespace, c.release
            );
            let tried = self.beside(events, &label, &c.namespace, || {
                self.helm_release(s, c, artifact, redo)
            })?;
            match tried {
                Err(e) if retryable(&format!("{e:#}")) && start.elapsed() < cluster::APPLY_WAIT => {
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

    /// `helm upgrade --install`, after clearing what an interrupted run
    /// left: a release stuck `pending-install` (power cut during install) is
    /// uninstalled and installed again, one stuck `pending-upgrade` rolled
    /// back first; a release already `deployed` that the journal missed
    /// (cut between Helm's end and the journal's write) is not installed a
    /// second time unless `redo`.
    fn helm_release(&self, s: &Step, c: &Chart, artifact: &str, redo: bool) -> Result<String> {
        let (release, namespace) = (c.release.as_str(), c.namespace.as_str());
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
        let (tgz, vals) =
            self.renderer()?
                .chart_files(self, &s.component, release, artifact, &c.values())?;
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

    /// Every value that is exactly `{secret.KEY}` becomes the site's
    /// password (only in the values file, 0600).
    pub(super) fn fill_secrets(&self, v: &mut serde_json::Value) -> Result<()> {
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

    /// Runs `f` on its own thread while this one says, every 30 s, how long
    /// it has run and what is not running well in `namespace` (a hook Job's
    /// pod that cannot be scheduled, an image that does not pull).
    pub(super) fn beside<T: Send>(
        &self,
        events: &mut Sink,
        label: &str,
        namespace: &str,
        f: impl FnOnce() -> T + Send,
    ) -> Result<T> {
        std::thread::scope(|sc| {
            // Its processes are this thread's (the component's) once joined.
            let h = sc.spawn(|| {
                let m = crate::ledger::mark();
                let out = f();
                (out, m.account())
            });
            let start = Instant::now();
            let mut said = Instant::now();
            while !h.is_finished() {
                std::thread::sleep(Duration::from_millis(200));
                if said.elapsed() >= Duration::from_secs(30) {
                    said = Instant::now();
                    let pods = match self.kube.api.list::<Pod>(Some(namespace)) {
                        Ok(pods) => {
                            let trouble: Vec<String> = pods
                                .iter()
                                .filter_map(|p| {
                                    let t = report::pod_trouble(p)?;
                                    Some(format!(
                                        "{}: {t}",
                                        p.metadata.name.as_deref().unwrap_or("?")
                                    ))
                                })
                                .collect();
                            if trouble.is_empty() {
                                "no pod in trouble".to_string()
                            } else {
                                trouble.join("; ")
                            }
                        }
                        Err(e) => e.to_string(),
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
            let (out, spent) = h
                .join()
                .map_err(|_| anyhow::anyhow!("{label}: the thread running it panicked"))?;
            crate::ledger::absorb(&spent);
            Ok(out)
        })
    }
}
