//! The offline completeness check: every image a manifest in the bundle will
//! ask for must be in the bundle, by tag or by digest. Anything else would
//! need the internet at the site.

use crate::ImageRef;
use crate::manifest::{BLOBS_DIR, BUNDLE_JSON, BundleManifest};
use crate::reader::BundleSource;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Serialize, PartialEq)]
pub struct Finding {
    /// The manifest file artifact.
    pub file: String,
    /// Where in it: document number and field path.
    pub at: String,
    pub image: String,
    pub why: String,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub files: usize,
    pub references: usize,
    pub missing: Vec<Finding>,
}

/// Every image reference in a (multi-document) YAML manifest: values of
/// `image` keys, and env values whose name ends in IMAGE.
pub fn image_refs(yaml: &str) -> Result<Vec<(String, String)>> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).context("parsing YAML")?;
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                let env_image = m
                    .get("name")
                    .and_then(|n| n.as_str())
                    .is_some_and(|n| n.to_ascii_uppercase().ends_with("IMAGE"));
                for (k, x) in m {
                    let p = format!("{path}.{k}");
                    match (k.as_str(), x) {
                        ("image", serde_json::Value::String(s)) => out.push((p, s.clone())),
                        ("value", serde_json::Value::String(s)) if env_image => {
                            out.push((p, s.clone()))
                        }
                        _ => walk(x, p, out),
                    }
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    walk(x, format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    for (i, d) in docs.iter().enumerate() {
        // Named by the object when it says what it is (a report then reads
        // `Deployment/web.spec…`), else by its place in the file.
        let at = match (d["kind"].as_str(), d["metadata"]["name"].as_str()) {
            (Some(k), Some(n)) => format!("{k}/{n}"),
            _ => format!("doc[{i}]"),
        };
        walk(d, at.clone(), &mut out);
        // A ConfigMap can carry a manifest its workload creates later
        // (local-path-provisioner's helper pod): read those too.
        if d["kind"] == "ConfigMap"
            && let Some(data) = d["data"].as_object()
        {
            for (k, v) in data {
                let (true, Some(text)) = (k.ends_with(".yaml") || k.ends_with(".yml"), v.as_str())
                else {
                    continue;
                };
                if let Ok(inner) = serde_saphyr::from_multiple::<serde_json::Value>(text) {
                    for (j, x) in inner.iter().enumerate() {
                        walk(x, format!("{at}.data[{k}].doc[{j}]"), &mut out);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn is_manifest_name(n: &str) -> bool {
    let n = n.rsplit_once(':').map_or(n, |(a, _)| a);
    n.ends_with(".yaml") || n.ends_with(".yml")
}

/// What a bundle can serve, by `name:tag` and `name@digest`.
pub struct Held(BTreeSet<String>);

impl Held {
    pub fn of(m: &BundleManifest) -> Held {
        let mut have = BTreeSet::new();
        for a in m.artifacts.iter().filter(|a| a.kind == "image") {
            if let Ok(r) = ImageRef::parse(&a.name) {
                if let Some(t) = &r.tag {
                    have.insert(format!("{}:{t}", r.name()));
                }
                have.insert(format!("{}@{}", r.name(), a.digest));
            }
        }
        Held(have)
    }

    /// Why `image` (as a manifest writes it) cannot be served, or None.
    pub fn why_missing(&self, image: &str) -> Option<String> {
        match ImageRef::parse(image) {
            Err(_) => {
                Some("not a plain image reference (templated?); it cannot be checked".to_string())
            }
            Ok(r) => {
                let by_digest = r
                    .digest
                    .as_ref()
                    .is_some_and(|d| self.0.contains(&format!("{}@{d}", r.name())));
                let by_tag = r.digest.is_none()
                    && r.tag
                        .as_ref()
                        .is_some_and(|t| self.0.contains(&format!("{}:{t}", r.name())));
                (!by_digest && !by_tag)
                    .then(|| "not in the bundle: the site would need the internet".to_string())
            }
        }
    }

    /// Every image reference in `yaml` the bundle cannot serve, as findings
    /// of `file`; a file that is not YAML is one finding.
    pub fn findings(&self, file: &str, yaml: &str) -> (usize, Vec<Finding>) {
        match image_refs(yaml) {
            Err(e) => (
                0,
                vec![Finding {
                    file: file.to_string(),
                    at: "-".into(),
                    image: "-".into(),
                    why: format!("{e:#}"),
                }],
            ),
            Ok(refs) => {
                let n = refs.len();
                let missing = refs
                    .into_iter()
                    .filter_map(|(at, image)| {
                        let why = self.why_missing(&image)?;
                        Some(Finding {
                            file: file.to_string(),
                            at,
                            image,
                            why,
                        })
                    })
                    .collect();
                (n, missing)
            }
        }
    }
}

pub fn check(src: &BundleSource) -> Result<Report> {
    let m = BundleManifest::from_bytes(&src.read_file(BUNDLE_JSON)?)?;
    let held = Held::of(&m);
    let wanted: BTreeMap<String, String> = m
        .artifacts
        .iter()
        .filter(|a| a.kind == "file" && is_manifest_name(&a.name))
        .filter_map(|a| {
            Some((
                format!("{BLOBS_DIR}{}", a.content_digest.as_ref()?.hex()),
                a.name.clone(),
            ))
        })
        .collect();
    let mut texts = Vec::new();
    src.for_each(|path, _, r| {
        if let Some(name) = wanted.get(path) {
            let mut s = String::new();
            r.read_to_string(&mut s)
                .with_context(|| format!("{name} is not text"))?;
            texts.push((name.clone(), s));
        }
        Ok(())
    })?;
    let mut report = Report {
        files: texts.len(),
        references: 0,
        missing: Vec::new(),
    };
    for (file, text) in texts {
        let (n, missing) = held.findings(&file, &text);
        report.references += n;
        report.missing.extend(missing);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_images_in_containers_and_env() {
        let y = "apiVersion: apps/v1\nkind: Deployment\nspec:\n  template:\n    spec:\n      initContainers: [{name: i, image: 'busybox:1.28'}]\n      containers:\n        - name: c\n          image: registry.k8s.io/pause:3.8\n          env:\n            - {name: TENSORBOARD_IMAGE, value: 'tensorflow/tensorflow:2.5.1'}\n            - {name: OTHER, value: 'not-an-image'}\n---\nkind: ConfigMap\ndata: {x: y}\n";
        let r = image_refs(y).unwrap();
        let mut imgs: Vec<&str> = r.iter().map(|(_, i)| i.as_str()).collect();
        imgs.sort();
        assert_eq!(
            imgs,
            [
                "busybox:1.28",
                "registry.k8s.io/pause:3.8",
                "tensorflow/tensorflow:2.5.1"
            ]
        );
        assert!(r.iter().any(|(at, i)| i == "registry.k8s.io/pause:3.8"
            && at == "doc[0].spec.template.spec.containers[0].image"));
    }

    #[test]
    fn a_manifest_inside_a_configmap_is_read_too() {
        let y = "kind: ConfigMap\nmetadata: {name: local-path-config}\ndata:\n  setup: 'mkdir -p $VOL_DIR'\n  helperPod.yaml: |-\n    kind: Pod\n    spec:\n      containers:\n      - name: helper-pod\n        image: docker.io/library/busybox:1.35\n";
        let r = image_refs(y).unwrap();
        assert_eq!(
            r,
            [(
                "ConfigMap/local-path-config.data[helperPod.yaml].doc[0].spec.containers[0].image"
                    .to_string(),
                "docker.io/library/busybox:1.35".to_string()
            )]
        );
    }
}
