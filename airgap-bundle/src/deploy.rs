//! What deploying a component means, as data: the catalog's `deploy:`
//! entries name the release, the values, the readiness checks and where the
//! appliance differs from upstream. Strings may hold `template` placeholders;
//! the plan resolves them against the cluster file, so an engine can run the
//! resolved form and the text plan only renders it.

use crate::cluster::Cluster;
use crate::ident::valid_hostname;
pub use crate::kinds::Install;
use crate::kinds::{one, value};
pub use crate::readiness::{CheckSite, Hook, Readiness, WorkloadKind};
use crate::template::Template;
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
    /// Checked in order; what depends on the component starts when all hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready: Vec<Readiness>,
    /// Where this appliance deliberately differs from the upstream scripts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
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

/// A namespace (and a Helm release) is one DNS-1123 label; other object
/// names are DNS-1123 subdomains, which is what a hostname is.
pub(crate) fn valid_namespace(s: &str) -> bool {
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
            for t in x.templated() {
                found.push((format!("install[{i}].{}", t.field), t.value, t.list_ok));
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
            .map(|(i, x)| x.resolve(c).map_err(|e| format!("install[{i}].{e}")))
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
