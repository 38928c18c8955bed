//! The catalog's install items, as data: one variant per install kind the
//! agent applies (chart, manifest, manifest-filled, kustomize, secret,
//! default-storage-class, fill, vault-init, vault-cluster), its schema and
//! its checks. The plan turns each into a `plan::Release`; the agent's
//! `deploy` module applies each kind in a module of its own.

use crate::deploy::{Value, secret_key, valid_namespace};
use crate::ident::valid_hostname;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One thing the agent applies for a component, read from the component's
/// own bundled artifacts (never fetched).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub enum Install {
    /// `helm upgrade --install` of one of the component's charts.
    Chart(ChartInstall),
    /// One of the component's file artifacts (YAML documents), applied
    /// server-side.
    Manifest(String),
    /// A file artifact with upstream's placeholders replaced first, as its
    /// scripts `sed` them (`{NFS_SERVER_PRIVATE_IP}` in K-PaaS's NFS
    /// provisioner), applied server-side.
    ManifestFilled(FilledInstall),
    /// StorageClass NAME made the cluster's default (upstream's `kubectl
    /// patch` after its storage manifests).
    DefaultStorageClass(String),
    /// A kustomization inside one of the component's `.tar.gz` file
    /// artifacts, rendered with the bundled kustomize, applied server-side.
    Kustomize(KustomizeInstall),
    /// The Harbor hand-off: every image and chart of the bundle pushed into
    /// the platform's registry, then every node's runtime mirrors switched
    /// to it (the seed behind it).
    Fill(FillInstall),
    /// Vault initialised (K-PaaS: 1 share, threshold 1), its unseal key and
    /// root token kept on the master (0600), unsealed; unsealed again at
    /// every boot of the master.
    VaultInit(VaultInstall),
    /// K-PaaS's Vault setup for the portal: approle enabled, kv-v2 at
    /// `secret/`, `secret/data/cluster/host-cluster` holding the API URL and
    /// the token of a cluster-admin ServiceAccount `kube-system/k8sadmin`,
    /// policy `cp_policy`, approle role `cp_role` bound to the nodes'
    /// addresses; its role and secret ids kept on the master (0600).
    VaultCluster(VaultClusterInstall),
    /// A Kubernetes Secret holding one of the site's passwords (the seed's
    /// `passwords.yaml` on the master), for a workload to read; its value
    /// is never in the plan, a log or an event.
    Secret(SecretInstall),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SecretInstall {
    pub namespace: String,
    pub name: String,
    /// Which password: one of the cluster file's `passwords` keys.
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VaultInstall {
    /// Vault's API, e.g. `http://{cluster.public_ip}:31654` (its NodePort).
    pub address: String,
    #[serde(default = "one_share")]
    pub shares: usize,
    #[serde(default = "one_share")]
    pub threshold: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilledInstall {
    /// The file artifact's name.
    pub file: String,
    /// Literal text → what replaces it; values may hold the catalog's
    /// placeholders (`{storage.nfs.server}`).
    pub replace: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VaultClusterInstall {
    /// Vault's API (the `vault-init` item's address).
    pub address: String,
    /// What the portal reaches the cluster at, e.g.
    /// `https://{cluster.public_ip}:6443`.
    pub api_url: String,
    /// The CIDRs the approle's secret id and tokens are bound to; each may
    /// name a list (`{nodes.private_ip}/32`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bound_cidrs: Vec<String>,
}

fn one_share() -> usize {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FillInstall {
    /// `host:port` of the registry's plain-HTTP endpoint (a NodePort);
    /// may hold placeholders (`{cluster.public_ip}:30002`).
    pub registry: String,
    /// The project (Harbor) or path prefix every repository goes under.
    pub project: String,
    /// Harbor: make the project with its API, as its admin, first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub harbor_api: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChartInstall {
    /// The chart artifact's name (`name:` or the last part of `oci:`).
    pub chart: String,
    pub release: String,
    pub namespace: String,
    /// Chart values by dotted path (`controller.replicas: 1`); strings may
    /// hold the catalog's placeholders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KustomizeInstall {
    /// The file artifact's name.
    pub file: String,
    /// The kustomization's directory inside the archive.
    pub path: String,
}

impl Install {
    /// What the journal calls it: unique within a component.
    pub fn name(&self) -> String {
        match self {
            Install::Chart(c) => c.release.clone(),
            Install::Manifest(f) => f.clone(),
            Install::ManifestFilled(m) => m.file.clone(),
            Install::DefaultStorageClass(n) => format!("default-storage-class/{n}"),
            Install::Kustomize(k) => format!("{}/{}", k.file, k.path),
            Install::Fill(_) => "fill".into(),
            Install::VaultInit(_) => "vault-init".into(),
            Install::VaultCluster(_) => "vault-cluster".into(),
            Install::Secret(x) => format!("secret/{}/{}", x.namespace, x.name),
        }
    }

    pub(crate) fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        match self {
            Install::Chart(c) => {
                if c.release.len() > 53 || !valid_namespace(&c.release) {
                    p.push(format!(
                        "release: {:?} must be a lowercase DNS label of at most 53 characters (Helm's limit)",
                        c.release
                    ));
                }
                if !valid_namespace(&c.namespace) {
                    p.push(format!(
                        "namespace: {:?} is not a Kubernetes namespace",
                        c.namespace
                    ));
                }
                for (k, v) in &c.set {
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
            }
            Install::Manifest(f) if f.is_empty() => p.push("a file artifact's name".into()),
            Install::Kustomize(k) => {
                if k.path.starts_with('/') || k.path.split('/').any(|s| s == "..") {
                    p.push(format!(
                        "path: {:?} must be relative and inside the archive",
                        k.path
                    ));
                }
            }
            Install::Manifest(_) => {}
            Install::ManifestFilled(m) => {
                if m.file.is_empty() {
                    p.push("file: a file artifact's name".into());
                }
                if m.replace.is_empty() || m.replace.keys().any(String::is_empty) {
                    p.push(format!(
                        "{}: replace: at least one non-empty text to replace (else use `manifest`)",
                        m.file
                    ));
                }
            }
            Install::DefaultStorageClass(n) => {
                if !valid_hostname(n) {
                    p.push(format!(
                        "default-storage-class: {n:?} is not a Kubernetes object name"
                    ));
                }
            }
            Install::Secret(x) => {
                if !valid_namespace(&x.namespace) {
                    p.push(format!(
                        "namespace: {:?} is not a Kubernetes namespace",
                        x.namespace
                    ));
                }
                if !valid_hostname(&x.name) {
                    p.push(format!(
                        "name: {:?} is not a Kubernetes object name",
                        x.name
                    ));
                }
                if !crate::cluster::PASSWORD_KEYS.contains(&x.password.as_str()) {
                    p.push(format!(
                        "password: {:?} is not one of the site's passwords ({})",
                        x.password,
                        crate::cluster::PASSWORD_KEYS.join(", ")
                    ));
                }
            }
            Install::VaultInit(v) => {
                if !v.address.starts_with("http://") {
                    p.push(format!(
                        "address: {:?} must be Vault's plain http:// API (its NodePort)",
                        v.address
                    ));
                }
                if v.threshold == 0 || v.threshold > v.shares {
                    p.push(format!(
                        "threshold: {} must be between 1 and shares ({})",
                        v.threshold, v.shares
                    ));
                }
            }
            Install::VaultCluster(v) => {
                if !v.address.starts_with("http://") {
                    p.push(format!(
                        "address: {:?} must be Vault's plain http:// API (its NodePort)",
                        v.address
                    ));
                }
                if !v.api_url.starts_with("https://") {
                    p.push(format!(
                        "api_url: {:?} must be the API server's https:// URL",
                        v.api_url
                    ));
                }
            }
            Install::Fill(f) => {
                if f.registry.is_empty() || f.registry.contains('/') {
                    p.push(format!(
                        "registry: {:?} must be host:port (the project goes in `project`)",
                        f.registry
                    ));
                }
                if !valid_namespace(&f.project) {
                    p.push(format!(
                        "project: {:?} must be a lowercase DNS label (a Harbor project name)",
                        f.project
                    ));
                }
            }
        }
        p
    }
}
