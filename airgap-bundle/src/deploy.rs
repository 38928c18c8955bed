//! What deploying a component means, as data: the catalog's `deploy:`
//! entries name the release, the values, the readiness checks and where the
//! appliance differs from upstream. Strings may hold `template` placeholders;
//! the plan resolves them against the cluster file, so an engine can run the
//! resolved form and the text plan only renders it.

use crate::cluster::Cluster;
use crate::ident::valid_hostname;
use crate::template::{Expanded, Template};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One way to deploy a component; a component with several has them differ
/// by `when` (storage nfs or rook-ceph), and at most one applies.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Deploy {
    /// Applies only when the cluster file matches, e.g. `{storage: nfs}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub when: BTreeMap<String, String>,
    /// The Helm release; absent for plain manifests or several releases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    /// What the manifests and charts are rendered with. Secrets never appear:
    /// `{secret.KEY}` says only whether the site gave one.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub values: BTreeMap<String, Value>,
    /// How the agent puts it on the cluster, in order; each item is one
    /// release it journals. Absent: images only, nothing to apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub install: Vec<Install>,
    /// Checked in order; the next wave starts when all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready: Vec<Readiness>,
    /// Where this appliance deliberately differs from the upstream scripts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

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

    fn problems(&self) -> Vec<String> {
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

/// The password a chart value stands for when the value is exactly
/// `{secret.KEY}`: the plan keeps it so, and the master fills it from the
/// site's `passwords.yaml` when it writes the values file (0600), so no
/// password is in a plan, a node config or a log.
pub fn secret_key(s: &str) -> Option<&str> {
    let key = s.strip_prefix("{secret.")?.strip_suffix('}')?;
    crate::cluster::PASSWORD_KEYS
        .iter()
        .find(|k| **k == key)
        .copied()
}

/// Chart values from dotted paths: `{a.b: 1, a.c: x}` → `{a: {b: 1, c: x}}`.
pub fn chart_values(set: &BTreeMap<String, Value>) -> serde_json::Value {
    let mut root = serde_json::Map::new();
    for (path, v) in set {
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

/// A value as YAML writes it; a template naming a list resolves to a list.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Value {
    Bool(bool),
    Int(i64),
    Text(String),
    List(Vec<Value>),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Text(s) => f.write_str(s),
            // Comma-joined, as the upstream variables files write lists.
            Value::List(v) => {
                let items: Vec<String> = v.iter().map(Value::to_string).collect();
                f.write_str(&items.join(","))
            }
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum WorkloadKind {
    Deployment,
    StatefulSet,
    DaemonSet,
}

/// Checks no Kubernetes object expresses; the engine implements each.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum Hook {
    VaultUnsealed,
    VaultClusterSecret,
    HarborHoldsBundle,
}

/// When a component counts as deployed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "check", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Readiness {
    NodesReady,
    Rollout {
        kind: WorkloadKind,
        namespace: String,
        name: String,
    },
    JobComplete {
        namespace: String,
        name: String,
    },
    /// Every Deployment and StatefulSet in these namespaces; `knative-*`
    /// takes every namespace with that prefix.
    Workloads {
        namespaces: Vec<String>,
    },
    /// A custom resource's `status.phase`, e.g. a CephFilesystem `Ready`.
    Phase {
        resource: String,
        namespace: String,
        name: String,
        phase: String,
    },
    DefaultStorageClass {
        name: String,
    },
    Http {
        url: String,
        expect_status: u16,
    },
    Hook {
        name: Hook,
    },
}

impl fmt::Display for Readiness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Readiness::NodesReady => write!(f, "every node Ready"),
            Readiness::Rollout {
                kind,
                namespace,
                name,
            } => {
                let kind = format!("{kind:?}").to_lowercase();
                write!(f, "{namespace}: {kind} {name} Available")
            }
            Readiness::JobComplete { namespace, name } => {
                write!(f, "{namespace}: job {name} Complete")
            }
            Readiness::Workloads { namespaces } => match namespaces.as_slice() {
                [one] => write!(f, "{one}: every Deployment and StatefulSet Available"),
                all => write!(
                    f,
                    "every Deployment and StatefulSet in {} Available",
                    all.join(", ")
                ),
            },
            Readiness::Phase {
                resource,
                namespace,
                name,
                phase,
            } => write!(f, "{namespace}: {resource} {name} {phase}"),
            Readiness::DefaultStorageClass { name } => {
                write!(f, "storageclass {name} is default")
            }
            Readiness::Http { url, expect_status } => {
                write!(f, "GET {url} answers {expect_status}")
            }
            Readiness::Hook { name } => f.write_str(match name {
                Hook::VaultUnsealed => "vault: vault-0 Running and unsealed",
                Hook::VaultClusterSecret => "secret/data/cluster/host-cluster written",
                Hook::HarborHoldsBundle => {
                    "every image and chart of the bundle in project cp-portal-repository, digests equal"
                }
            }),
        }
    }
}

/// A namespace (and a Helm release) is one DNS-1123 label; other object
/// names are DNS-1123 subdomains, which is what a hostname is.
fn valid_namespace(s: &str) -> bool {
    !s.contains('.') && valid_hostname(s)
}

/// Every string inside a JSON value, with its path below `at`.
fn strings<'a>(v: &'a serde_json::Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        serde_json::Value::String(s) => out.push((at, s)),
        serde_json::Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings(x, format!("{at}[{i}]"), out);
            }
        }
        serde_json::Value::Object(o) => {
            for (k, x) in o {
                strings(x, format!("{at}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// A template that must give one value (readiness fields, notes).
fn one(s: &str, c: &Cluster) -> Result<String, String> {
    match Template::parse(s)?.expand(c)? {
        Expanded::One(t) => Ok(t),
        Expanded::Many(_) => Err(format!("{s:?} names a list")),
    }
}

/// Resolves every string in place.
fn resolve_strings(v: &mut serde_json::Value, c: &Cluster) -> Result<(), String> {
    match v {
        serde_json::Value::String(s) => *s = one(s, c)?,
        serde_json::Value::Array(a) => a.iter_mut().try_for_each(|x| resolve_strings(x, c))?,
        serde_json::Value::Object(o) => o.values_mut().try_for_each(|x| resolve_strings(x, c))?,
        _ => {}
    }
    Ok(())
}

impl Readiness {
    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        // Templated fields are checked as templates only.
        let plain = |s: &str| !s.contains('{');
        let namespaces: Vec<(&str, &String)> = match self {
            Readiness::Rollout { namespace, .. }
            | Readiness::JobComplete { namespace, .. }
            | Readiness::Phase { namespace, .. } => vec![("namespace", namespace)],
            Readiness::Workloads { namespaces } if namespaces.is_empty() => {
                p.push("namespaces: name at least one".into());
                vec![]
            }
            Readiness::Workloads { namespaces } => {
                namespaces.iter().map(|n| ("namespaces", n)).collect()
            }
            _ => vec![],
        };
        for (field, n) in namespaces {
            // `knative-*` is a prefix; check the part before the star.
            let bare = match (self, n.strip_suffix("-*")) {
                (Readiness::Workloads { .. }, Some(prefix)) => prefix,
                _ => n,
            };
            if plain(n) && !valid_namespace(bare) {
                p.push(format!("{field}: {n:?} is not a Kubernetes namespace"));
            }
        }
        match self {
            Readiness::Rollout { name, .. }
            | Readiness::JobComplete { name, .. }
            | Readiness::Phase { name, .. }
            | Readiness::DefaultStorageClass { name }
                if plain(name) && !valid_hostname(name) =>
            {
                p.push(format!("name: {name:?} is not a Kubernetes object name"));
            }
            Readiness::Http { url, expect_status } => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    p.push(format!("url: {url:?} must be an http:// or https:// URL"));
                }
                if !(100..=599).contains(expect_status) {
                    p.push(format!(
                        "expect_status: {expect_status} is not an HTTP status"
                    ));
                }
            }
            _ => {}
        }
        p
    }
}

impl Deploy {
    /// True when the entry applies to a cluster with these settings.
    pub fn applies(&self, settings: &BTreeMap<String, String>) -> bool {
        self.when.iter().all(|(k, v)| settings.get(k) == Some(v))
    }

    /// Every problem, each prefixed with the field it is in.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if let Some(r) = &self.release
            && (r.len() > 53 || !valid_namespace(r))
        {
            p.push(format!(
                "release: {r:?} must be a lowercase DNS label of at most 53 characters (Helm's limit)"
            ));
        }
        // (field, JSON form, may its templates name a list?)
        let mut found = Vec::new();
        for (k, v) in &self.values {
            if k.is_empty()
                || !k
                    .bytes()
                    .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_'))
            {
                p.push(format!(
                    "values.{k}: a value's name is lowercase letters, digits and '_'"
                ));
            }
            if let Ok(j) = serde_json::to_value(v) {
                found.push((format!("values.{k}"), j, true));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, x) in self.install.iter().enumerate() {
            p.extend(
                x.problems()
                    .into_iter()
                    .map(|e| format!("install[{i}].{e}")),
            );
            if !names.insert(x.name()) {
                p.push(format!(
                    "install[{i}]: {:?} is installed twice in this entry",
                    x.name()
                ));
            }
            if let Install::Chart(c) = x {
                for (k, v) in &c.set {
                    if let Ok(j) = serde_json::to_value(v) {
                        found.push((format!("install[{i}].set.{k}"), j, true));
                    }
                }
            }
            if let Install::VaultInit(v) = x {
                found.push((
                    format!("install[{i}].address"),
                    serde_json::Value::String(v.address.clone()),
                    false,
                ));
            }
            if let Install::ManifestFilled(m) = x {
                for (k, v) in &m.replace {
                    found.push((
                        format!("install[{i}].replace[{k:?}]"),
                        serde_json::Value::String(v.clone()),
                        false,
                    ));
                }
            }
            if let Install::VaultCluster(v) = x {
                for (f, s) in [("address", &v.address), ("api_url", &v.api_url)] {
                    found.push((
                        format!("install[{i}].{f}"),
                        serde_json::Value::String(s.clone()),
                        false,
                    ));
                }
                for (n, s) in v.bound_cidrs.iter().enumerate() {
                    found.push((
                        format!("install[{i}].bound_cidrs[{n}]"),
                        serde_json::Value::String(s.clone()),
                        true,
                    ));
                }
            }
            if let Install::Fill(f) = x {
                found.push((
                    format!("install[{i}].registry"),
                    serde_json::Value::String(f.registry.clone()),
                    false,
                ));
            }
        }
        for (i, r) in self.ready.iter().enumerate() {
            p.extend(r.problems().into_iter().map(|e| format!("ready[{i}].{e}")));
            if let Ok(j) = serde_json::to_value(r) {
                found.push((format!("ready[{i}]"), j, false));
            }
        }
        let mut texts: Vec<(String, &str, bool)> = Vec::new();
        for (at, j, list_ok) in &found {
            let mut here = Vec::new();
            strings(j, at.clone(), &mut here);
            texts.extend(here.into_iter().map(|(at, s)| (at, s, *list_ok)));
        }
        for (i, n) in self.notes.iter().enumerate() {
            texts.push((format!("notes[{i}]"), n, false));
        }
        for (at, s, list_ok) in texts {
            match Template::parse(s) {
                Err(e) => p.push(format!("{at}: {e}")),
                Ok(t) if t.is_list() && !list_ok => {
                    p.push(format!("{at}: {s:?} names a list; only values may"))
                }
                Ok(_) => {}
            }
        }
        p
    }

    /// This entry with every placeholder replaced by the cluster's value.
    pub fn resolve(&self, c: &Cluster) -> Result<Deploy, String> {
        fn value(v: &Value, c: &Cluster) -> Result<Value, String> {
            Ok(match v {
                Value::Text(s) => match Template::parse(s)?.expand(c)? {
                    Expanded::One(t) => Value::Text(t),
                    Expanded::Many(ts) => Value::List(ts.into_iter().map(Value::Text).collect()),
                },
                Value::List(vs) => Value::List(
                    vs.iter()
                        .map(|x| value(x, c))
                        .collect::<Result<_, String>>()?,
                ),
                other => other.clone(),
            })
        }
        let values = self
            .values
            .iter()
            .map(|(k, v)| {
                Ok((
                    k.clone(),
                    value(v, c).map_err(|e| format!("values.{k}: {e}"))?,
                ))
            })
            .collect::<Result<_, String>>()?;
        let install = self
            .install
            .iter()
            .enumerate()
            .map(|(i, x)| match x {
                Install::Chart(ch) => {
                    let set = ch
                        .set
                        .iter()
                        .map(|(k, v)| {
                            // A password stays a placeholder: the master
                            // fills it (see `secret_key`).
                            if let Value::Text(t) = v
                                && secret_key(t).is_some()
                            {
                                return Ok((k.clone(), v.clone()));
                            }
                            Ok((
                                k.clone(),
                                value(v, c).map_err(|e| format!("install[{i}].set.{k}: {e}"))?,
                            ))
                        })
                        .collect::<Result<_, String>>()?;
                    Ok(Install::Chart(ChartInstall { set, ..ch.clone() }))
                }
                Install::Fill(f) => Ok(Install::Fill(FillInstall {
                    registry: one(&f.registry, c)
                        .map_err(|e| format!("install[{i}].registry: {e}"))?,
                    ..f.clone()
                })),
                Install::VaultInit(v) => Ok(Install::VaultInit(VaultInstall {
                    address: one(&v.address, c)
                        .map_err(|e| format!("install[{i}].address: {e}"))?,
                    ..v.clone()
                })),
                Install::ManifestFilled(m) => Ok(Install::ManifestFilled(FilledInstall {
                    file: m.file.clone(),
                    replace: m
                        .replace
                        .iter()
                        .map(|(k, v)| {
                            Ok((
                                k.clone(),
                                one(v, c)
                                    .map_err(|e| format!("install[{i}].replace[{k:?}]: {e}"))?,
                            ))
                        })
                        .collect::<Result<_, String>>()?,
                })),
                Install::VaultCluster(v) => {
                    let mut bound = Vec::new();
                    for (n, s) in v.bound_cidrs.iter().enumerate() {
                        let at = |e: String| format!("install[{i}].bound_cidrs[{n}]: {e}");
                        match Template::parse(s).map_err(at)?.expand(c).map_err(at)? {
                            Expanded::One(t) => bound.push(t),
                            Expanded::Many(ts) => bound.extend(ts),
                        }
                    }
                    Ok(Install::VaultCluster(VaultClusterInstall {
                        address: one(&v.address, c)
                            .map_err(|e| format!("install[{i}].address: {e}"))?,
                        api_url: one(&v.api_url, c)
                            .map_err(|e| format!("install[{i}].api_url: {e}"))?,
                        bound_cidrs: bound,
                    }))
                }
                other => Ok(other.clone()),
            })
            .collect::<Result<_, String>>()?;
        let ready = self
            .ready
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut j = serde_json::to_value(r).map_err(|e| e.to_string())?;
                resolve_strings(&mut j, c).map_err(|e| format!("ready[{i}]: {e}"))?;
                serde_json::from_value(j).map_err(|e| format!("ready[{i}]: {e}"))
            })
            .collect::<Result<_, String>>()?;
        let notes = self
            .notes
            .iter()
            .enumerate()
            .map(|(i, n)| one(n, c).map_err(|e| format!("notes[{i}]: {e}")))
            .collect::<Result<_, String>>()?;
        Ok(Deploy {
            when: self.when.clone(),
            release: self.release.clone(),
            values,
            install,
            ready,
            notes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_round_trips_through_yaml() {
        let yaml = r#"
- {check: nodes-ready}
- {check: rollout, kind: DaemonSet, namespace: kube-system, name: kube-proxy}
- {check: job-complete, namespace: ingress-nginx, name: ingress-nginx-admission-create}
- {check: workloads, namespaces: [istio-system, knative-*]}
- {check: phase, resource: CephFilesystem, namespace: rook-ceph, name: myfs, phase: Ready}
- {check: default-storage-class, name: paasta-cp-storageclass}
- {check: http, url: "http://{cluster.public_ip}:30002/api/v2.0/health", expect_status: 200}
- {check: hook, name: vault-unsealed}
"#;
        let ready: Vec<Readiness> = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(ready.len(), 8);
        assert_eq!(
            ready[1],
            Readiness::Rollout {
                kind: WorkloadKind::DaemonSet,
                namespace: "kube-system".into(),
                name: "kube-proxy".into()
            }
        );
        assert_eq!(
            ready[1].to_string(),
            "kube-system: daemonset kube-proxy Available"
        );
        assert_eq!(
            ready[3].to_string(),
            "every Deployment and StatefulSet in istio-system, knative-* Available"
        );
        let again = serde_saphyr::to_string(&ready).unwrap();
        let back: Vec<Readiness> = serde_saphyr::from_str(&again).unwrap();
        assert_eq!(back, ready, "{again}");
        assert!(ready.iter().all(|r| r.problems().is_empty()));
    }

    #[test]
    fn unknown_checks_hooks_and_fields_are_refused() {
        for (bad, named) in [
            (
                "{check: rollout, kind: Deployment, namespace: a, name: b, colour: blue}",
                "colour",
            ),
            ("{check: hook, name: make-coffee}", "make-coffee"),
            (
                "{check: rollout, kind: ReplicaSet, namespace: a, name: b}",
                "ReplicaSet",
            ),
            ("{check: nodes-are-fine}", "nodes-are-fine"),
        ] {
            let e = serde_saphyr::from_str::<Readiness>(bad).unwrap_err();
            assert!(e.to_string().contains(named), "{bad}: {e}");
        }
    }

    #[test]
    fn passwords_stay_placeholders_and_filled_manifests_resolve() {
        let d: Deploy = serde_saphyr::from_str(
            r#"
install:
  - chart: {chart: c, release: r, namespace: n, set: {admin: "{secret.harbor_admin}", url: "http://{cluster.public_ip}:30002"}}
  - manifest-filled: {file: d.yaml, replace: {"{NFS_SERVER_PRIVATE_IP}": "{storage.nfs.server}"}}
  - default-storage-class: paasta-cp-storageclass
  - vault-cluster: {address: "http://{cluster.public_ip}:31654", api_url: "https://{cluster.public_ip}:6443", bound_cidrs: ["{nodes.private_ip}/32"]}
"#,
        )
        .unwrap();
        assert_eq!(d.problems(), Vec::<String>::new());
        let c = Cluster::from_yaml(
            "cluster_version: 1\nname: lab\nplatform: demo\nmaster: {hostname: m, private_ip: 10.0.0.1}\nworkers: [{hostname: w, private_ip: 10.0.0.2}]\nnetwork: {node_cidr: 10.0.0.0/24}\nstorage: {type: nfs, nfs: {server: 10.0.0.9}}\n",
            "lab.yaml",
        )
        .unwrap();
        let r = d.resolve(&c).unwrap();
        let Install::Chart(ch) = &r.install[0] else {
            panic!()
        };
        // The password is filled on the master, never in the plan.
        assert_eq!(ch.set["admin"], Value::Text("{secret.harbor_admin}".into()));
        assert_eq!(ch.set["url"], Value::Text("http://10.0.0.1:30002".into()));
        let Install::ManifestFilled(m) = &r.install[1] else {
            panic!()
        };
        assert_eq!(m.replace["{NFS_SERVER_PRIVATE_IP}"], "10.0.0.9");
        let Install::VaultCluster(v) = &r.install[3] else {
            panic!()
        };
        assert_eq!(v.bound_cidrs, ["10.0.0.1/32", "10.0.0.2/32"]);
        // A password inside a longer value, an unknown password, a filled
        // manifest with nothing to fill, a bad class and a non-https API:
        // all reported at once.
        let bad: Deploy = serde_saphyr::from_str(
            r#"
install:
  - chart: {chart: c, release: r, namespace: n, set: {a: "pw={secret.harbor_admin}", b: "{secret.root}"}}
  - manifest-filled: {file: d.yaml, replace: {}}
  - default-storage-class: Not_A_Name
  - vault-cluster: {address: "http://v:1", api_url: "http://k:6443"}
"#,
        )
        .unwrap();
        let p = bad.problems().join("\n");
        for want in [
            "install[0].set.a: \"pw={secret.harbor_admin}\": a site's password must be the whole value",
            "unknown placeholder {secret.root}",
            "install[1].d.yaml: replace: at least one",
            "install[2].default-storage-class: \"Not_A_Name\"",
            "install[3].api_url: \"http://k:6443\" must be the API server's https:// URL",
        ] {
            assert!(p.contains(want), "{want:?} in:\n{p}");
        }
    }
}
