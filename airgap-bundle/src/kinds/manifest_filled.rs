//! The `manifest-filled` kind: a file artifact with upstream's
//! placeholders replaced first, as its scripts `sed` them
//! (`{NFS_SERVER_PRIVATE_IP}` in K-PaaS's NFS provisioner), applied
//! server-side. Journaled under the file's name, as a plain manifest is.

use super::{Kind, Reads, RenderAt, Templated, field};
use crate::cluster::Cluster;
use crate::render::Rendered;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ManifestFilled {
    /// The file artifact's name.
    pub file: String,
    /// Literal text → what replaces it; values may hold the catalog's
    /// placeholders (`{storage.nfs.server}`).
    pub replace: BTreeMap<String, String>,
}

impl Kind for ManifestFilled {
    fn name(&self) -> String {
        self.file.clone()
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.file.is_empty() {
            p.push("file: a file artifact's name".into());
        }
        if self.replace.is_empty() || self.replace.keys().any(String::is_empty) {
            p.push(format!(
                "{}: replace: at least one non-empty text to replace (else use `manifest`)",
                self.file
            ));
        }
        p
    }

    fn templated(&self) -> Vec<Templated> {
        self.replace
            .iter()
            .map(|(k, v)| Templated::text(format!("replace[{k:?}]"), v))
            .collect()
    }

    fn resolve(&self, c: &Cluster) -> Result<Self, String> {
        Ok(ManifestFilled {
            file: self.file.clone(),
            replace: self
                .replace
                .iter()
                .map(|(k, v)| Ok((k.clone(), field(&format!("replace[{k:?}]"), v, c)?)))
                .collect::<Result<_, String>>()?,
        })
    }

    fn reads(&self) -> Option<Reads<'_>> {
        Some(Reads::File(&self.file))
    }

    fn describe(&self, _artifact: &str) -> String {
        format!(
            "apply {} with {} (server-side)",
            self.file,
            self.replace
                .iter()
                .map(|(k, v)| format!("{k} → {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn label(&self, artifact: &str) -> String {
        format!("manifest {artifact}")
    }

    fn render(&self, at: &RenderAt) -> Result<Option<Rendered>> {
        let pairs: Vec<(&str, &str)> = self
            .replace
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        super::manifest::text(at, &pairs)
    }
}
