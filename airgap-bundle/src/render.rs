//! Rendering what a release applies, one implementation for build time
//! (`kpaas-builder check-offline`) and the node (the agent, before a wave).
//! Each install kind renders itself (`crate::kinds`: a chart with the
//! bundled helm's `template` at the bundle's Kubernetes version, a manifest
//! with upstream's placeholders filled, a kustomization with the bundled
//! kustomize from its archive); this module holds the tools and the rules
//! they share. The objects rendered are what the image check
//! ([`crate::offline::Verdict`]) reads.
//!
//! Rendering never reaches a network: the site has none, so a chart or a
//! kustomization that would fetch something renders here as it would fail
//! there. Remote kustomize resources are refused by name before kustomize
//! runs, and both tools run with every proxy variable pointing at a closed
//! loopback port, so a fetch we did not foresee fails instead of succeeding
//! on a connected build host.

use crate::fsutil;
use crate::kinds::RenderAt;
use crate::manifest::BundleManifest;
use crate::plan::Release;
use crate::run::{Cmd, Runner, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The bundle's Kubernetes version: the tag of its one kube-apiserver
/// image (what kubeadm will run). None when the bundle carries none.
pub fn kubernetes_version(m: &BundleManifest) -> Result<Option<String>> {
    let mut tags: Vec<String> = m
        .artifacts
        .iter()
        .filter(|a| a.kind == "image")
        .filter_map(|a| crate::ImageRef::parse(&a.name).ok())
        .filter(|r| r.name() == APISERVER)
        .filter_map(|r| r.tag)
        .collect();
    tags.sort();
    tags.dedup();
    match tags.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.clone())),
        many => bail!(
            "the bundle holds {APISERVER} at {}: one Kubernetes version per bundle",
            many.join(", ")
        ),
    }
}

pub const APISERVER: &str = "registry.k8s.io/kube-apiserver";

/// The API group versions a Kubernetes minor serves out of the box, for
/// `helm template --api-versions` (charts test `.Capabilities.APIVersions`).
/// Only 1.25 is listed: K-PaaS 1.4.1 pins it; another minor renders with
/// `--kube-version` alone and helm's own list.
fn builtin_api_versions(version: &str) -> &'static [&'static str] {
    if version.starts_with("v1.25.") {
        &[
            "v1",
            "admissionregistration.k8s.io/v1",
            "apiextensions.k8s.io/v1",
            "apiregistration.k8s.io/v1",
            "apps/v1",
            "authentication.k8s.io/v1",
            "authorization.k8s.io/v1",
            "autoscaling/v1",
            "autoscaling/v2",
            "autoscaling/v2beta2",
            "batch/v1",
            "certificates.k8s.io/v1",
            "coordination.k8s.io/v1",
            "discovery.k8s.io/v1",
            "events.k8s.io/v1",
            "flowcontrol.apiserver.k8s.io/v1beta1",
            "flowcontrol.apiserver.k8s.io/v1beta2",
            "networking.k8s.io/v1",
            "node.k8s.io/v1",
            "policy/v1",
            "rbac.authorization.k8s.io/v1",
            "scheduling.k8s.io/v1",
            "storage.k8s.io/v1",
            "storage.k8s.io/v1beta1",
        ]
    } else {
        &[]
    }
}

/// A closed loopback port: every fetch a tool tries fails at once.
const NO_NETWORK: &str = "http://127.0.0.1:9";

/// `cmd` with no way out: every proxy variable names a closed port (Go's
/// HTTP client, git and curl all honour them), nothing is exempt.
fn offline(cmd: Cmd) -> Cmd {
    [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .fold(cmd, |c, k| c.env(k, NO_NETWORK))
    .env("NO_PROXY", "")
    .env("no_proxy", "")
    .env("GIT_ALLOW_PROTOCOL", "file")
    .env("GIT_TERMINAL_PROMPT", "0")
}

/// The bundled helm with its state under `home`.
pub fn helm_cmd(helm: &str, home: &Path) -> Cmd {
    let h = home.to_string_lossy();
    run(helm)
        .env("HELM_CACHE_HOME", &format!("{h}/cache"))
        .env("HELM_CONFIG_HOME", &format!("{h}/config"))
        .env("HELM_DATA_HOME", &format!("{h}/data"))
}

/// Where a release's inputs come from: check-offline reads them out of the
/// bundle file, the agent out of the node's verified blob store.
pub trait Inputs {
    /// The artifact's bytes, checked against its digest.
    fn artifact(&self, name: &str) -> Result<Vec<u8>>;
    /// A chart's values as helm gets them (the agent fills the site's
    /// passwords in; the file is written 0600).
    fn values(&self, v: &serde_json::Value) -> Result<serde_json::Value> {
        Ok(v.clone())
    }
}

/// The tools and the settings every rendering shares.
pub struct Renderer<'a> {
    pub runner: &'a dyn Runner,
    pub helm: String,
    /// Needed only when a kustomization is rendered.
    pub kustomize: Option<String>,
    /// Charts, values, trees and helm's state go under it, per component.
    pub work: PathBuf,
    /// The cluster's version (`v1.25.6`): charts see it as
    /// `.Capabilities.KubeVersion`. None: helm's built-in default, which
    /// is why a verdict without it is partial.
    pub kube_version: Option<String>,
}

/// A release rendered: its objects, and the files the agent applies.
pub struct Rendered {
    pub objects: Vec<u8>,
    /// For a chart: the archive and the values file helm installs from.
    pub chart: Option<(PathBuf, PathBuf)>,
}

impl Renderer<'_> {
    /// The objects `r` of `component` will create, or None for a release
    /// that applies no objects of its own (a fill, Vault's setup, ...).
    pub fn release(
        &self,
        inputs: &dyn Inputs,
        component: &str,
        r: &Release,
    ) -> Result<Option<Rendered>> {
        let dir = self.work.join(component);
        fsutil::create_dir(&dir)?;
        r.item.render(&RenderAt {
            renderer: self,
            inputs,
            component,
            artifact: &r.artifact,
            dir,
        })
    }

    /// The chart's archive and values file in the component's directory,
    /// for `helm template` here and `helm upgrade --install` on the node.
    /// The values file is made 0600 before anything is written to it (it
    /// may carry a site's password).
    pub fn chart_files(
        &self,
        inputs: &dyn Inputs,
        component: &str,
        release: &str,
        artifact: &str,
        values: &serde_json::Value,
    ) -> Result<(PathBuf, PathBuf)> {
        let dir = self.work.join(component);
        fsutil::create_dir(&dir)?;
        let tgz = dir.join(format!("{release}.tgz"));
        fsutil::write_atomic(&tgz, &inputs.artifact(artifact)?)?;
        let vals = dir.join(format!("{release}.values.json"));
        let v = inputs.values(values)?;
        fsutil::write_private(&vals, &serde_json::to_vec_pretty(&v)?)?;
        Ok((tgz, vals))
    }

    /// `helm template RELEASE CHART --namespace NS --values VALUES` at the
    /// cluster's version: every object of the chart, its hooks included
    /// (they run images too).
    pub(crate) fn chart(
        &self,
        release: &str,
        namespace: &str,
        tgz: &Path,
        values: &Path,
    ) -> Result<Vec<u8>> {
        let mut cmd = offline(helm_cmd(&self.helm, &self.work.join("helm")))
            .args(["template", release])
            .arg(tgz)
            .args(["--namespace", namespace, "--values"])
            .arg(values);
        if let Some(v) = &self.kube_version {
            cmd = cmd.args(["--kube-version", v]);
            for a in builtin_api_versions(v) {
                cmd = cmd.args(["--api-versions", a]);
            }
        }
        cmd.output_on(self.runner)
    }
}

/// `kustomize build PATH` inside the `.tar.gz` at `archive`, unpacked
/// afresh into `tree`; refused, naming each, when a kustomization in it
/// names a resource the archive does not hold (kustomize would fetch it).
pub fn kustomization(
    r: &dyn Runner,
    kustomize: &str,
    archive: &Path,
    tree: &Path,
    path: &str,
) -> Result<Vec<u8>> {
    if tree.exists() {
        std::fs::remove_dir_all(tree).with_context(|| format!("removing {}", tree.display()))?;
    }
    fsutil::create_dir(tree)?;
    run("tar")
        .arg("-xzf")
        .arg(archive)
        .arg("-C")
        .arg(tree)
        .ok_on(r)?;
    let remote = remote_resources(tree, path)?;
    if !remote.is_empty() {
        bail!(
            "{path} in {} names {} resource(s) outside its archive; kustomize would fetch them over the network, which the site does not have (bundle them and name them by a path inside the archive):\n  {}",
            archive.display(),
            remote.len(),
            remote.join("\n  ")
        );
    }
    offline(run(kustomize))
        .arg("build")
        .arg(tree.join(path))
        .output_on(r)
}

/// The kustomization file kustomize reads in `dir`.
fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Every entry of `resources`, `bases` and `components` in the
/// kustomization at `tree/path` and the ones it includes that is not a
/// file or directory inside `tree`: "file: entry" for each.
fn remote_resources(tree: &Path, path: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![tree.join(path)];
    let mut seen = std::collections::BTreeSet::new();
    let root = tree
        .canonicalize()
        .with_context(|| format!("reading {}", tree.display()))?;
    while let Some(dir) = todo.pop() {
        let Some(file) = kustomization_file(&dir) else {
            continue;
        };
        if !seen.insert(file.clone()) {
            continue;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let k: serde_json::Value =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", file.display()))?;
        let rel = file
            .strip_prefix(tree)
            .unwrap_or(&file)
            .display()
            .to_string();
        for key in ["resources", "bases", "components"] {
            for entry in k[key].as_array().into_iter().flatten() {
                let Some(e) = entry.as_str() else { continue };
                let local = dir.join(e);
                // Inside the archive: a path that exists and does not climb
                // out of the tree (kustomize's load restrictor agrees).
                match local.canonicalize() {
                    Ok(p) if p.starts_with(&root) => {
                        if p.is_dir() {
                            todo.push(p);
                        }
                    }
                    _ => out.push(format!("{rel}: {key}: {e}")),
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_and_missing_resources_are_named_local_ones_pass() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("base");
        std::fs::create_dir_all(base.join("sub")).unwrap();
        std::fs::write(
            base.join("kustomization.yaml"),
            "resources:\n  - deploy.yaml\n  - sub\n  - https://example.invalid/x.yaml\n  - github.com/kubeflow/manifests//common?ref=v1.7.0\ncomponents: [../outside]\n",
        )
        .unwrap();
        std::fs::write(base.join("deploy.yaml"), "kind: ConfigMap\n").unwrap();
        std::fs::write(
            base.join("sub/kustomization.yml"),
            "bases: [git::https://example.invalid/repo.git]\nresources: [../deploy.yaml]\n",
        )
        .unwrap();
        std::fs::create_dir_all(t.path().join("outside")).unwrap();
        let mut got = remote_resources(&base, ".").unwrap();
        got.sort();
        assert_eq!(
            got,
            [
                "kustomization.yaml: components: ../outside",
                "kustomization.yaml: resources: github.com/kubeflow/manifests//common?ref=v1.7.0",
                "kustomization.yaml: resources: https://example.invalid/x.yaml",
                "sub/kustomization.yml: bases: git::https://example.invalid/repo.git",
            ]
        );
    }

    #[test]
    fn the_apiserver_tag_is_the_kubernetes_version() {
        let mut m: BundleManifest = serde_json::from_value(serde_json::json!({
            "bundle_version": 1, "platform": "p", "platform_version": "1", "created": "x",
            "image_platforms": [], "artifacts": [], "files": {},
            "totals": {"artifacts": 0, "blobs": 0, "unique_bytes": 0, "referenced_bytes": 0}
        }))
        .unwrap();
        assert_eq!(kubernetes_version(&m).unwrap(), None);
        let art = |name: &str| {
            serde_json::from_value(serde_json::json!({
                "kind": "image", "component": "k", "name": name, "source": "s",
                "digest": format!("sha256:{}", "a".repeat(64)),
                "media_type": "application/vnd.oci.image.manifest.v1+json", "size": 1
            }))
            .unwrap()
        };
        m.artifacts
            .push(art("registry.k8s.io/kube-apiserver:v1.25.6"));
        m.artifacts.push(art("registry.k8s.io/pause:3.8"));
        assert_eq!(kubernetes_version(&m).unwrap().as_deref(), Some("v1.25.6"));
        m.artifacts
            .push(art("registry.k8s.io/kube-apiserver:v1.26.0"));
        let e = kubernetes_version(&m).unwrap_err().to_string();
        assert!(e.contains("v1.25.6, v1.26.0"), "{e}");
    }
}
