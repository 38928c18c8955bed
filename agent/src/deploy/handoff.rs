//! The `fill` install kind (the Harbor hand-off) and its hook
//! `harbor-holds-bundle`: the bundle pushed into the platform's registry,
//! then this node's runtime mirrors pointed there, the seed behind it.

use super::{Apply, At, Engine, FILL_JOBS, Outcome, block_on, hook_item, runtime};
use crate::boot::StepId;
use crate::boot::cluster::{CHEAP_PROBE_EVERY, last_line, wait_every};
use crate::events::Sink;
use crate::{fill, mirrors};
use airgap_bundle::deploy::Hook;
use airgap_bundle::kinds::Install;
use airgap_bundle::kinds::fill::Fill;
use airgap_bundle::plan::Step;
use anyhow::Result;

impl Engine {
    pub(super) fn target(
        &self,
        registry: &str,
        project: &str,
        harbor_api: bool,
    ) -> Result<fill::Target> {
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
    fn hand_off(&self, events: &mut Sink, f: &Fill) -> Result<String> {
        let Fill {
            registry,
            project,
            harbor_api,
        } = f;
        let t = self.target(registry, project, *harbor_api)?;
        let seed = format!("127.0.0.1:{}", self.cfg.seed_port);
        // The yardstick, in the same run on the same node: how fast the
        // seed itself serves the bytes a fill sends (the largest blobs
        // first), read while the registry's pod is still being made, off
        // the critical path. A blob the seed hashes here is one the fill
        // need not hash. A failure is reported, not fatal.
        let yardstick = {
            let (bundle, seed) = (self.cfg.bundle.clone(), seed.clone());
            std::thread::spawn(move || {
                let budget = fill::bytes_to_send(&bundle)?.max(64 << 20);
                runtime("the seed's read rate")?
                    .block_on(fill::seed_read_rate(&bundle, &seed, budget))
            })
        };
        wait_every(
            events,
            StepId::Deploy,
            &format!("the registry at {registry} to answer"),
            self.limit,
            CHEAP_PROBE_EVERY,
            || match crate::probe::status_blocking(
                &format!("{}/v2/", t.base),
                std::time::Duration::from_secs(5),
            ) {
                Ok(200 | 401) => Ok(Some(())),
                Ok(s) => Err(format!("/v2/ answered {s}")),
                Err(e) => Err(e),
            },
        )?;
        let rt = runtime("the hand-off")?;
        if *harbor_api {
            rt.block_on(fill::ensure_project(&t))?;
        }
        let trusted = self
            .seed
            .as_ref()
            .map(|s| s.verified_blobs())
            .unwrap_or_default();
        let report = rt.block_on(fill::fill(&self.cfg.bundle, &t, FILL_JOBS, &trusted))?;
        let yardstick = match yardstick.join() {
            Ok(Ok((_, rate))) => {
                let push = report.bytes_sent as f64 / report.secs.max(0.001);
                format!(
                    "; the seed reads at {:.1} MiB/s here: push/read {:.2}",
                    rate / (1 << 20) as f64,
                    push / rate.max(1.0)
                )
            }
            Ok(Err(e)) => format!(
                "; the seed's read rate could not be measured: {}",
                last_line(&e)
            ),
            Err(_) => "; the seed's read rate could not be measured: its thread panicked".into(),
        };
        let (platform, changed) = self.point_mirrors(registry, project)?;
        Ok(format!(
            "hand-off: {}{yardstick}; this node's mirrors now {platform} first, the seed behind it ({changed} file(s))",
            report.summary()
        ))
    }

    /// This node's runtime mirrors for every registry the bundle's images
    /// name: the platform's registry first, the seed behind it; the runtime
    /// told each time (a run cut between the write and the reload must not
    /// leave it unread). Returns the registry and how many files changed.
    pub(super) fn point_mirrors(&self, registry: &str, project: &str) -> Result<(String, usize)> {
        let hosts = mirrors::registries(
            self.manifest
                .artifacts
                .iter()
                .filter(|a| a.kind == "image")
                .map(|a| &a.name),
        );
        let seed = format!("127.0.0.1:{}", self.cfg.seed_port);
        let platform = format!("{registry}/{project}");
        let changed = mirrors::write_all(&self.root, &hosts, &seed, Some(&platform))?;
        crate::runtime::mirrors_changed(self.cfg.runtime, self.runner.as_ref())?;
        Ok((platform, changed.len()))
    }

    /// `harbor-holds-bundle`: every image and chart of the bundle reads back
    /// from the step's hand-off registry with the bundle's digest.
    pub(super) fn holds_bundle(&self, s: &Step) -> Outcome {
        let found = hook_item(s, Hook::HarborHoldsBundle, |x| match x {
            Install::Fill(f) => Some(f),
            _ => None,
        });
        let Fill {
            registry,
            project,
            harbor_api,
        } = match found {
            Ok(x) => x,
            Err(o) => return o,
        };
        let checked = self
            .target(registry, project, *harbor_api)
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
}

impl Apply for Fill {
    fn apply(&self, e: &Engine, events: &mut Sink, _at: &At) -> Result<String> {
        e.hand_off(events, self)
    }
}
