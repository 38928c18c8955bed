//! Before the deploy: every release still to apply rendered with the renderer
//! check-offline uses (`airgap_bundle::render`, at the bundle's Kubernetes
//! version, from the node's verified blob store, the site's passwords filled
//! into chart values on the master only) and judged by the same verdict
//! (`airgap_bundle::offline`); a plan naming an image the seed does not
//! hold is refused whole before anything of it is applied.

use super::Engine;
use super::journal::DeployJournal;
use crate::boot::cluster;
use airgap_bundle::fsutil;
use airgap_bundle::kinds::By;
use airgap_bundle::manifest::BLOBS_DIR;
use airgap_bundle::offline::{Held, Verdict};
use airgap_bundle::plan::{Release, Step};
use airgap_bundle::render::{self, Renderer};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

impl Engine {
    /// Renders every release of `steps` still to apply and checks every
    /// image the objects name against the bundle (the same rendering and
    /// verdict as `kpaas-builder check-offline`); refuses them all, naming
    /// each release, object and image, before anything is applied.
    pub(super) fn render_steps(
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
                "deploy refused before anything of it was applied: {} image reference(s) the seed does not hold:\n  {}",
                verdict.missing.len(),
                verdict.missing_lines().join("\n  ")
            );
        }
        Ok(out)
    }

    /// The renderer `check-offline` uses too, at the bundle's Kubernetes
    /// version, with this node's tools.
    pub(super) fn renderer(&self) -> Result<Renderer<'_>> {
        Ok(Renderer {
            runner: self.runner.as_ref(),
            helm: self.helm.clone(),
            kustomize: Some(self.kustomize.clone()),
            work: self.work.clone(),
            kube_version: render::kubernetes_version(&self.manifest)?,
        })
    }

    /// Writes what a release applies and returns the rendered objects' file.
    pub(super) fn render(&self, s: &Step, r: &Release) -> Result<PathBuf> {
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
        if let (By::Objects, Some(ns)) = (r.item.by(), &s.namespace) {
            let mut with =
                format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n---\n")
                    .into_bytes();
            with.extend(yaml);
            yaml = with;
        }
        fsutil::write_atomic(&out, &yaml)?;
        Ok(out)
    }
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
