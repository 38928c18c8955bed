//! The offline completeness check: every image a manifest in the bundle will
//! ask for must be in the bundle, by tag or by digest. Anything else would
//! need the internet at the site. One verdict for `kpaas-builder
//! check-offline` and the agent's refusal before a wave.
//!
//! Where an image is read ([`image_refs`]): every `image` field holding a
//! reference, or a structured one (`image: {registry, repository, tag,
//! digest}`, as custom resources write it); every env value whose name ends
//! in `IMAGE` or starts with `RELATED_IMAGE_` (the Operator Lifecycle
//! Manager's convention for images an operator pulls later); the same in
//! manifests a ConfigMap carries under a `.yaml`/`.yml` key.

use crate::manifest::{BLOBS_DIR, BUNDLE_JSON, BundleManifest};
use crate::reader::BundleSource;
use crate::{Digest, ImageRef};
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

/// An image written as a structure (`{registry, repository, tag,
/// digest}`, the shape Helm values and custom resources use) as one
/// reference; None when it has no repository.
fn structured_image(m: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let text = |k: &str| m.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    let repository = text("repository")?;
    let mut s = match text("registry") {
        Some(r) => format!("{}/{repository}", r.trim_end_matches('/')),
        None => repository.to_string(),
    };
    if let Some(t) = text("tag") {
        s = format!("{s}:{t}");
    }
    if let Some(d) = text("digest") {
        let d = if d.contains(':') {
            d.to_string()
        } else {
            format!("sha256:{d}")
        };
        s = format!("{s}@{d}");
    }
    Some(s)
}

/// Whether an env variable of this name holds an image reference.
fn env_names_image(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    n.ends_with("IMAGE") || n.starts_with("RELATED_IMAGE_")
}

/// Every image reference in a (multi-document) YAML or JSON manifest, with
/// where it stands: see the module's header for the places read.
pub fn image_refs(yaml: &str) -> Result<Vec<(String, String)>> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(yaml).context("parsing YAML")?;
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, path: String, out: &mut Vec<(String, String)>) {
        match v {
            serde_json::Value::Object(m) => {
                let env_image = m
                    .get("name")
                    .and_then(|n| n.as_str())
                    .is_some_and(env_names_image);
                for (k, x) in m {
                    let p = format!("{path}.{k}");
                    match (k.as_str(), x) {
                        ("image", serde_json::Value::String(s)) => out.push((p, s.clone())),
                        ("image", serde_json::Value::Object(o))
                            if structured_image(o).is_some() =>
                        {
                            out.extend(structured_image(o).map(|s| (p, s)))
                        }
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
    // A `List` (kubectl's way to put many objects in one JSON file) is read
    // as its items, each named by itself.
    let docs: Vec<serde_json::Value> = docs
        .into_iter()
        .flat_map(|d| match d["items"].as_array() {
            Some(items) if d["kind"].as_str().is_some_and(|k| k.ends_with("List")) => items.clone(),
            _ => vec![d],
        })
        .collect();
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

/// The text of a file that is a Kubernetes manifest, decided by content,
/// not by name: UTF-8 text (YAML or JSON) with at least one document that
/// names its `kind` (kubectl would refuse one without an `apiVersion`,
/// but the check is about images, so it reads it too). Binaries are told
/// apart by their first bytes without being parsed.
pub fn manifest_text(bytes: &[u8]) -> Option<&str> {
    if bytes[..bytes.len().min(8192)].contains(&0) {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text).ok()?;
    docs.iter().any(|d| d["kind"].is_string()).then_some(text)
}

/// What a bundle can serve, by `name:tag` and `name@digest`: each image's
/// own digest and, for a multi-platform index, the digest of every
/// platform's manifest the bundle holds (the seed serves those by digest
/// too, and a workload may be pinned to one).
pub struct Held(BTreeSet<String>);

impl Held {
    /// `index` gives an index blob's bytes, `has` whether a blob is held.
    pub fn of(
        m: &BundleManifest,
        index: impl Fn(&Digest) -> Option<Vec<u8>>,
        has: impl Fn(&Digest) -> bool,
    ) -> Held {
        let mut have = BTreeSet::new();
        for a in m.artifacts.iter().filter(|a| a.kind == "image") {
            if let Ok(r) = ImageRef::parse(&a.name) {
                if let Some(t) = &r.tag {
                    have.insert(format!("{}:{t}", r.name()));
                }
                have.insert(format!("{}@{}", r.name(), a.digest));
                if crate::oci::is_index(&a.media_type) {
                    for child in index(&a.digest)
                        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                        .iter()
                        .flat_map(|i| i["manifests"].as_array().into_iter().flatten())
                        .filter_map(|d| d["digest"].as_str()?.parse::<Digest>().ok())
                        .filter(|d| has(d))
                    {
                        have.insert(format!("{}@{child}", r.name()));
                    }
                }
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

/// The verdict on a set of rendered objects: what was read, how many image
/// references, which the bundle cannot serve, and why it is partial (what
/// could not be rendered as the site will). Complete and nothing missing is
/// the only pass.
#[derive(Debug, Default, Serialize)]
pub struct Verdict {
    /// What was read: "chart X as ns/release", "kustomization F/P", files.
    pub checked: Vec<String>,
    pub references: usize,
    pub missing: Vec<Finding>,
    /// Why the verdict does not cover what the site will apply.
    pub partial: Vec<String>,
}

impl Verdict {
    /// Reads the objects `yaml` of `label`.
    pub fn read(&mut self, held: &Held, label: &str, yaml: &str) {
        let (n, missing) = held.findings(label, yaml);
        self.references += n;
        self.missing.extend(missing);
        self.checked.push(label.to_string());
    }

    pub fn passes(&self) -> bool {
        self.missing.is_empty() && self.partial.is_empty()
    }

    /// One line per missing image: where, what, why.
    pub fn missing_lines(&self) -> Vec<String> {
        self.missing
            .iter()
            .map(|f| format!("{}: {} names {} ({})", f.file, f.at, f.image, f.why))
            .collect()
    }
}

/// The blobs of a bundle a check needs in one pass (a `.tar.zst` is read
/// once): every file artifact whose content is a manifest, every
/// multi-platform index, and which blobs are present.
pub struct Scan {
    pub held: Held,
    /// (artifact name, text) of every file artifact that is a manifest.
    pub manifests: Vec<(String, String)>,
}

impl Scan {
    pub fn of(src: &BundleSource, m: &BundleManifest) -> Result<Scan> {
        let files: BTreeMap<String, String> = m
            .artifacts
            .iter()
            .filter(|a| a.kind == "file")
            .filter_map(|a| {
                Some((
                    format!("{BLOBS_DIR}{}", a.content_digest.as_ref()?.hex()),
                    a.name.clone(),
                ))
            })
            .collect();
        let indexes: BTreeSet<String> = m
            .artifacts
            .iter()
            .filter(|a| a.kind == "image" && crate::oci::is_index(&a.media_type))
            .map(|a| format!("{BLOBS_DIR}{}", a.digest.hex()))
            .collect();
        let mut present = BTreeSet::new();
        let mut index_bytes: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut manifests = Vec::new();
        src.for_each(|path, _, r| {
            let Some(hex) = path.strip_prefix(BLOBS_DIR) else {
                return Ok(());
            };
            present.insert(hex.to_string());
            if indexes.contains(path) {
                let mut b = Vec::new();
                r.read_to_end(&mut b)?;
                index_bytes.insert(hex.to_string(), b);
            } else if let Some(name) = files.get(path) {
                // Sniff before reading all: a binary says so in its first bytes.
                let mut head = vec![0u8; 8192];
                let n = read_full(r, &mut head)?;
                head.truncate(n);
                if !head.contains(&0) {
                    r.read_to_end(&mut head)?;
                    if let Some(t) = manifest_text(&head) {
                        manifests.push((name.clone(), t.to_string()));
                    }
                }
            }
            Ok(())
        })?;
        let held = Held::of(
            m,
            |d| index_bytes.get(d.hex()).cloned(),
            |d| present.contains(d.hex()),
        );
        Ok(Scan { held, manifests })
    }
}

/// Reads until `buf` is full or the input ends; the count read.
fn read_full(r: &mut dyn std::io::Read, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Every file artifact that is a manifest, checked as it is.
pub fn check(src: &BundleSource) -> Result<(Scan, Verdict)> {
    let m = BundleManifest::from_bytes(&src.read_file(BUNDLE_JSON)?)?;
    let scan = Scan::of(src, &m)?;
    let mut v = Verdict::default();
    for (file, text) in &scan.manifests {
        v.read(&scan.held, file, text);
    }
    Ok((scan, v))
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

    #[test]
    fn structured_images_and_related_image_env_are_read() {
        let y = r#"apiVersion: example.com/v1
kind: Operand
metadata: {name: x}
spec:
  image: {registry: quay.io, repository: org/app, tag: "1.2"}
  sidecar:
    image: {repository: busybox, digest: "sha256:1111111111111111111111111111111111111111111111111111111111111111"}
  pullPolicy:
    image: {pullPolicy: IfNotPresent}
  template:
    containers:
      - name: op
        image: quay.io/org/operator:1.0
        env:
          - {name: RELATED_IMAGE_DB, value: "docker.io/library/mariadb:10.11"}
          - {name: RELATED_IMAGES_NOTE, value: "not one"}
"#;
        let mut got: Vec<String> = image_refs(y).unwrap().into_iter().map(|(_, i)| i).collect();
        got.sort();
        assert_eq!(
            got,
            [
                "busybox@sha256:1111111111111111111111111111111111111111111111111111111111111111",
                "docker.io/library/mariadb:10.11",
                "quay.io/org/app:1.2",
                "quay.io/org/operator:1.0",
            ]
        );
    }

    #[test]
    fn a_manifest_is_known_by_content_json_included() {
        let json = br#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "busybox:1.35"}]}}"#;
        let t = manifest_text(json).unwrap();
        assert_eq!(image_refs(t).unwrap()[0].1, "busybox:1.35");
        assert!(manifest_text(b"#!/bin/sh\necho hi\n").is_none());
        assert!(manifest_text(b"KEY=value\n").is_none());
        assert!(manifest_text(b"\x7fELF\x02\x01\x01\0\0").is_none());
    }

    #[test]
    fn a_platform_manifest_of_a_held_index_is_held_by_digest() {
        let child = Digest::of(b"amd64 manifest");
        let absent = Digest::of(b"arm64 manifest");
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{{"digest":"{child}"}},{{"digest":"{absent}"}}]}}"#
        );
        let idx = Digest::of(index.as_bytes());
        let m: BundleManifest = serde_json::from_value(serde_json::json!({
            "bundle_version": 1, "platform": "p", "platform_version": "1", "created": "x",
            "image_platforms": ["linux/amd64"], "files": {},
            "totals": {"artifacts": 1, "blobs": 0, "unique_bytes": 0, "referenced_bytes": 0},
            "artifacts": [{
                "kind": "image", "component": "c", "name": "quay.io/org/app:1.0", "source": "s",
                "digest": idx, "media_type": crate::oci::OCI_INDEX, "size": 1
            }]
        }))
        .unwrap();
        let held = Held::of(
            &m,
            |d| (d == &idx).then(|| index.clone().into_bytes()),
            |d| d == &child,
        );
        assert_eq!(held.why_missing(&format!("quay.io/org/app@{child}")), None);
        assert_eq!(held.why_missing(&format!("quay.io/org/app@{idx}")), None);
        assert!(
            held.why_missing(&format!("quay.io/org/app@{absent}"))
                .is_some()
        );
        assert!(
            held.why_missing(&format!("quay.io/org/other@{child}"))
                .is_some()
        );
    }
}
