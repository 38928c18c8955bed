//! The node's Kubernetes settings: what the cluster steps read (the pod and
//! service networks, the API server's extra name and port, the CNI
//! manifest, the bundle's Kubernetes version, the checks that say the
//! cluster is formed), typed and validated when `kpaas-builder seeds` makes
//! the node configs. A bad value is said on the connected machine, every
//! problem at once, never discovered at a site's first boot.

use crate::cluster::Cidr;
use crate::deploy::{Readiness, Value};
use crate::ident::valid_hostname;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// kubeadm's default API server port.
pub const DEFAULT_API_PORT: u16 = 6443;

fn default_port() -> u16 {
    DEFAULT_API_PORT
}

/// The plan's `kubernetes` step as a node receives it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KubernetesStep {
    /// The bundle's Kubernetes version (its kube-apiserver image's tag),
    /// when the seeds were made from the bundle: the node checks its bundle
    /// holds that version before forming a cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    pub pod_cidr: Cidr,
    pub service_cidr: Cidr,
    /// A name in the API server's certificate besides its own address: an
    /// IPv4 address or a DNS name (the cluster file's `public_ip`).
    pub apiserver_san: String,
    #[serde(default = "default_port")]
    pub apiserver_port: u16,
    /// The bundle's CNI manifest (a file artifact) the cni step applies.
    pub cni_manifest: String,
    /// When the cluster counts as formed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ready: Vec<Readiness>,
}

impl KubernetesStep {
    /// The settings from the plan's `kubernetes` step (its values after the
    /// cluster file's were put in) and the bundle's version; `Err` lists
    /// every problem. Values the agent does not read (the plan's notes for
    /// people: `workers`, `image_source`, ...) stay in the plan.
    pub fn from_plan(
        values: &BTreeMap<String, Value>,
        ready: Vec<Readiness>,
        version: Option<String>,
    ) -> Result<KubernetesStep, Vec<String>> {
        let mut problems = Vec::new();
        let mut text = |key: &str, why: &str| match values.get(key) {
            Some(Value::Text(s)) if !s.trim().is_empty() => s.trim().to_string(),
            Some(v) => {
                problems.push(format!("{key} is {v:?}: it must be {why}"));
                String::new()
            }
            None => {
                problems.push(format!("{key} is missing: it must be {why}"));
                String::new()
            }
        };
        let pod = text("pod_cidr", "an IPv4 network such as 10.233.64.0/18");
        let svc = text("service_cidr", "an IPv4 network such as 10.233.0.0/18");
        let apiserver_san = text(
            "apiserver_san",
            "the API server's other address (an IPv4 address or a DNS name)",
        );
        let cni_manifest = text(
            "cni_manifest",
            "the bundle's CNI manifest (a file artifact; the agent lays flannel's)",
        );
        let apiserver_port = match values.get("apiserver_port") {
            None => DEFAULT_API_PORT,
            Some(Value::Int(p)) => match u16::try_from(*p) {
                Ok(p) if p > 0 => p,
                _ => {
                    problems.push(format!("apiserver_port is {p}: it must be 1 to 65535"));
                    DEFAULT_API_PORT
                }
            },
            Some(v) => {
                problems.push(format!("apiserver_port is {v:?}: it must be a port number"));
                DEFAULT_API_PORT
            }
        };
        let cidr = |key: &str, s: &str, problems: &mut Vec<String>| {
            Cidr::try_from(s.to_string())
                .map_err(|e| {
                    if !s.is_empty() {
                        problems.push(format!("{key} {s:?}: {e}"));
                    }
                })
                .ok()
        };
        let (pod_cidr, service_cidr) = (
            cidr("pod_cidr", &pod, &mut problems),
            cidr("service_cidr", &svc, &mut problems),
        );
        match (pod_cidr, service_cidr) {
            (Some(pod_cidr), Some(service_cidr)) if problems.is_empty() => {
                let k = KubernetesStep {
                    version,
                    pod_cidr,
                    service_cidr,
                    apiserver_san,
                    apiserver_port,
                    cni_manifest,
                    ready,
                };
                match k.problems() {
                    p if p.is_empty() => Ok(k),
                    p => Err(p),
                }
            }
            _ => Err(problems),
        }
    }

    /// What is wrong with settings read from a node config (also those a
    /// person wrote by hand): every problem at once.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.pod_cidr.overlaps(&self.service_cidr) {
            p.push(format!(
                "pod_cidr {} overlaps service_cidr {}: pods and services need networks of their own",
                self.pod_cidr, self.service_cidr
            ));
        }
        if self.apiserver_san.parse::<Ipv4Addr>().is_err() && !valid_hostname(&self.apiserver_san) {
            p.push(format!(
                "apiserver_san {:?}: not an IPv4 address or a DNS name",
                self.apiserver_san
            ));
        }
        if self.apiserver_port == 0 {
            p.push("apiserver_port is 0: it must be 1 to 65535".into());
        }
        if self.cni_manifest.trim().is_empty() {
            p.push("cni_manifest is empty: it must name the bundle's CNI manifest".into());
        }
        if let Some(v) = &self.version {
            let bare = v.strip_prefix('v').unwrap_or_default();
            let parts: Vec<&str> = bare.split('.').collect();
            if parts.len() != 3 || parts.iter().any(|n| n.parse::<u32>().is_err()) {
                p.push(format!(
                    "version {v:?}: not a Kubernetes version such as v1.25.6"
                ));
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    fn values(pairs: &[(&str, Value)]) -> BTreeMap<String, Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    }

    fn t(s: &str) -> Value {
        Value::Text(s.into())
    }

    #[test]
    fn a_plans_values_become_typed_settings() {
        let k = KubernetesStep::from_plan(
            &values(&[
                ("pod_cidr", t("10.233.64.0/18")),
                ("service_cidr", t("10.233.0.0/18")),
                ("apiserver_san", t("203.0.113.10")),
                ("cni_manifest", t("kube-flannel.yml")),
                ("workers", t("w1=10.0.0.2")),
            ]),
            vec![Readiness::NodesReady],
            Some("v1.25.6".into()),
        )
        .unwrap();
        assert_eq!(k.apiserver_port, DEFAULT_API_PORT);
        assert_eq!(k.pod_cidr.to_string(), "10.233.64.0/18");
        assert!(k.problems().is_empty());
        // A node config round-trips; unknown fields are refused.
        let yaml = serde_saphyr::to_string(&k).unwrap();
        assert_eq!(serde_saphyr::from_str::<KubernetesStep>(&yaml).unwrap(), k);
        assert!(
            serde_saphyr::from_str::<KubernetesStep>(&format!("{yaml}values: {{}}\n")).is_err()
        );
    }

    #[test]
    fn every_bad_value_is_said_at_once() {
        let e = KubernetesStep::from_plan(
            &values(&[
                ("pod_cidr", t("10.233.64.0/33")),
                ("service_cidr", Value::Int(3)),
                ("apiserver_port", Value::Int(70000)),
            ]),
            vec![],
            None,
        )
        .unwrap_err();
        let all = e.join("\n");
        for want in [
            "pod_cidr \"10.233.64.0/33\"",
            "service_cidr is Int(3)",
            "apiserver_san is missing",
            "cni_manifest is missing",
            "apiserver_port is 70000",
        ] {
            assert!(all.contains(want), "{want} in:\n{all}");
        }
        let e = KubernetesStep::from_plan(
            &values(&[
                ("pod_cidr", t("10.0.0.0/8")),
                ("service_cidr", t("10.96.0.0/12")),
                ("apiserver_san", t("not a name!")),
                ("cni_manifest", t("cni.yaml")),
            ]),
            vec![],
            Some("1.25".into()),
        )
        .unwrap_err()
        .join("\n");
        assert!(e.contains("overlaps service_cidr"), "{e}");
        assert!(e.contains("apiserver_san \"not a name!\""), "{e}");
        assert!(e.contains("version \"1.25\""), "{e}");
    }
}
