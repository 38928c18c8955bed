//! The `chart` kind: `helm upgrade --install` of one of the component's
//! charts with values by dotted path; rendered offline with the bundled
//! helm's `template` at the cluster's version.

use super::{Kind, Reads, RenderAt, Templated, value};
use crate::cluster::Cluster;
use crate::deploy::{Value, secret_key, valid_namespace};
use crate::render::Rendered;
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Chart {
    /// The chart artifact's name (`name:` or the last part of `oci:`).
    pub chart: String,
    pub release: String,
    pub namespace: String,
    /// Chart values by dotted path (`controller.replicas: 1`); strings may
    /// hold the catalog's placeholders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, Value>,
}

impl Chart {
    /// The values helm gets: `{a.b: 1, a.c: x}` → `{a: {b: 1, c: x}}`.
    pub fn values(&self) -> serde_json::Value {
        let mut root = serde_json::Map::new();
        for (path, v) in &self.set {
            let parts: Vec<&str> = path.split('.').collect();
            let Some((last, parents)) = parts.split_last() else {
                continue;
            };
            let mut at = &mut root;
            for part in parents {
                let next = at
                    .entry(part.to_string())
                    .or_insert_with(|| serde_json::Value::Object(serde_json::Map::new()));
                if !next.is_object() {
                    *next = serde_json::Value::Object(serde_json::Map::new());
                }
                let serde_json::Value::Object(m) = next else {
                    unreachable!("made an object just above")
                };
                at = m;
            }
            at.insert(
                last.to_string(),
                serde_json::to_value(v).unwrap_or(serde_json::Value::Null),
            );
        }
        serde_json::Value::Object(root)
    }
}

impl Kind for Chart {
    fn name(&self) -> String {
        self.release.clone()
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.release.len() > 53 || !valid_namespace(&self.release) {
            p.push(format!(
                "release: {:?} must be a lowercase DNS label of at most 53 characters (Helm's limit)",
                self.release
            ));
        }
        if !valid_namespace(&self.namespace) {
            p.push(format!(
                "namespace: {:?} is not a Kubernetes namespace",
                self.namespace
            ));
        }
        for (k, v) in &self.set {
            if k.is_empty() || k.split('.').any(str::is_empty) {
                p.push(format!(
                    "set.{k}: a chart value's path is names joined by '.'"
                ));
            }
            if let Value::Text(t) = v
                && t.contains("{secret.")
                && secret_key(t).is_none()
            {
                p.push(format!(
                    "set.{k}: {t:?}: a site's password must be the whole value (\"{{secret.KEY}}\"), filled on the master at deploy time"
                ));
            }
        }
        p
    }

    fn templated(&self) -> Vec<Templated> {
        self.set
            .iter()
            .filter_map(|(k, v)| {
                Some(Templated {
                    field: format!("set.{k}"),
                    value: serde_json::to_value(v).ok()?,
                    list_ok: true,
                })
            })
            .collect()
    }

    fn resolve(&self, c: &Cluster) -> Result<Chart, String> {
        let set = self
            .set
            .iter()
            .map(|(k, v)| {
                // A password stays a placeholder: the master fills it (see
                // `secret_key`).
                if let Value::Text(t) = v
                    && secret_key(t).is_some()
                {
                    return Ok((k.clone(), v.clone()));
                }
                Ok((k.clone(), value(v, c).map_err(|e| format!("set.{k}: {e}"))?))
            })
            .collect::<Result<_, String>>()?;
        Ok(Chart {
            set,
            ..self.clone()
        })
    }

    fn reads(&self) -> Option<Reads<'_>> {
        Some(Reads::Chart(&self.chart))
    }

    fn describe(&self, artifact: &str) -> String {
        let values = self.values();
        let v = match values.as_object() {
            Some(o) if !o.is_empty() => format!(" with {values}"),
            _ => String::new(),
        };
        format!(
            "helm release {}/{} from {artifact}{v}",
            self.namespace, self.release
        )
    }

    fn label(&self, artifact: &str) -> String {
        format!("chart {artifact} as {}/{}", self.namespace, self.release)
    }

    fn render(&self, at: &RenderAt) -> Result<Option<Rendered>> {
        let r = at.renderer;
        let (tgz, vals) = r.chart_files(
            at.inputs,
            at.component,
            &self.release,
            at.artifact,
            &self.values(),
        )?;
        let objects = r.chart(&self.release, &self.namespace, &tgz, &vals)?;
        Ok(Some(Rendered {
            objects,
            chart: Some((tgz, vals)),
        }))
    }
}
