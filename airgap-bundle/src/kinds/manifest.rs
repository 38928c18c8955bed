//! The `manifest` kind: one of the component's file artifacts (YAML
//! documents), applied server-side as bundled.

use super::{Kind, Reads, RenderAt};
use crate::render::Rendered;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// The file artifact's name (`- manifest: NAME` in the catalog).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Manifest(pub String);

impl Kind for Manifest {
    fn name(&self) -> String {
        self.0.clone()
    }

    fn problems(&self) -> Vec<String> {
        if self.0.is_empty() {
            vec!["a file artifact's name".into()]
        } else {
            Vec::new()
        }
    }

    fn reads(&self) -> Option<Reads<'_>> {
        Some(Reads::File(&self.0))
    }

    fn describe(&self, _artifact: &str) -> String {
        format!("apply {} (server-side)", self.0)
    }

    fn label(&self, artifact: &str) -> String {
        format!("manifest {artifact}")
    }

    fn render(&self, at: &RenderAt) -> Result<Option<Rendered>> {
        text(at, &[])
    }
}

/// The artifact's text with each `(from, to)` replaced, as the objects.
pub(super) fn text(at: &RenderAt, replace: &[(&str, &str)]) -> Result<Option<Rendered>> {
    let mut text = String::from_utf8(at.inputs.artifact(at.artifact)?)
        .with_context(|| format!("{} is not UTF-8 text", at.artifact))?;
    for (from, to) in replace {
        text = text.replace(from, to);
    }
    Ok(Some(Rendered {
        objects: text.into_bytes(),
        chart: None,
    }))
}
