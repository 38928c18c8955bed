//! The `namespace` kind: a namespace with labels, as upstream's scripts
//! make one before a component (`kubectl create namespace` then `kubectl
//! label`, e.g. `istio-injection=enabled`). Rendered to its object here, so
//! the agent applies it server-side like any manifest: this kind is one
//! module and one line of the table, nothing in the agent.

use super::{Kind, RenderAt};
use crate::deploy::valid_namespace;
use crate::ident::valid_hostname;
use crate::render::Rendered;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Namespace {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A label value (and a key's name part): at most 63 characters,
/// alphanumerics with '-', '_' or '.' between; a value may be empty.
fn label_part(s: &str) -> bool {
    s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_none_or(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_none_or(|b| b.is_ascii_alphanumeric())
}

/// A label key: `[prefix/]name`, the prefix a DNS subdomain.
fn label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    !name.is_empty() && label_part(name) && prefix.is_none_or(valid_hostname)
}

impl Kind for Namespace {
    fn name(&self) -> String {
        format!("namespace/{}", self.name)
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !valid_namespace(&self.name) {
            p.push(format!(
                "name: {:?} is not a Kubernetes namespace",
                self.name
            ));
        }
        for (k, v) in &self.labels {
            if !label_key(k) {
                p.push(format!(
                    "labels: {k:?} is not a label key ([prefix/]name, the name at most 63 alphanumerics, '-', '_', '.')"
                ));
            }
            if !label_part(v) {
                p.push(format!(
                    "labels.{k}: {v:?} is not a label value (at most 63 alphanumerics, '-', '_', '.', starting and ending alphanumeric)"
                ));
            }
        }
        p
    }

    fn describe(&self, _artifact: &str) -> String {
        if self.labels.is_empty() {
            format!("namespace {} (server-side)", self.name)
        } else {
            format!(
                "namespace {} labelled {} (server-side)",
                self.name,
                self.labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    }

    fn render(&self, _at: &RenderAt) -> Result<Option<Rendered>> {
        let object = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": self.name, "labels": self.labels},
        });
        let objects = serde_saphyr::to_string(&object)
            .with_context(|| format!("writing namespace {}", self.name))?;
        Ok(Some(Rendered {
            objects: objects.into_bytes(),
            chart: None,
        }))
    }
}
