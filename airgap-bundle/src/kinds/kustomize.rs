//! The `kustomize` kind: a kustomization inside one of the component's
//! `.tar.gz` file artifacts, rendered with the bundled kustomize (remote
//! resources refused by name, no network), applied server-side.

use super::{Kind, Reads, RenderAt};
use crate::fsutil;
use crate::render::{Rendered, kustomization};
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Kustomize {
    /// The file artifact's name.
    pub file: String,
    /// The kustomization's directory inside the archive.
    pub path: String,
}

impl Kind for Kustomize {
    fn name(&self) -> String {
        format!("{}/{}", self.file, self.path)
    }

    fn problems(&self) -> Vec<String> {
        if self.path.starts_with('/') || self.path.split('/').any(|s| s == "..") {
            vec![format!(
                "path: {:?} must be relative and inside the archive",
                self.path
            )]
        } else {
            Vec::new()
        }
    }

    fn reads(&self) -> Option<Reads<'_>> {
        Some(Reads::File(&self.file))
    }

    fn describe(&self, _artifact: &str) -> String {
        format!(
            "apply kustomize build {} of {} (server-side)",
            self.path, self.file
        )
    }

    fn label(&self, _artifact: &str) -> String {
        format!("kustomization {}/{}", self.file, self.path)
    }

    fn render(&self, at: &RenderAt) -> Result<Option<Rendered>> {
        let r = at.renderer;
        let kustomize = r.kustomize.as_deref().with_context(|| {
            format!(
                "the bundle carries no kustomize to render {}/{} with",
                self.file, self.path
            )
        })?;
        let tgz = at.dir.join(&self.file);
        fsutil::write_atomic(&tgz, &at.inputs.artifact(at.artifact)?)?;
        let objects = kustomization(
            r.runner,
            kustomize,
            &tgz,
            &at.dir.join(format!("{}.d", self.file)),
            &self.path,
        )?;
        Ok(Some(Rendered {
            objects,
            chart: None,
        }))
    }
}
