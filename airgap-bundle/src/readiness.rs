//! Readiness checks, as data: when a component counts as deployed (the
//! catalog's `ready:`), their validation, how a plan and a report print them,
//! and where the agent can run each ([`Readiness::unsupported`]: the one
//! rule `plan`, `seeds` and the agent share).

use crate::deploy::valid_namespace;
use crate::ident::valid_hostname;
use serde::{Deserialize, Serialize};
use std::fmt;

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

/// Where a readiness check runs: the cluster step at first boot (before
/// any platform exists, on the node's own credentials) or a platform step
/// (the master's deploy engine).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CheckSite {
    Cluster,
    Platform,
}

impl Readiness {
    /// Why the agent cannot run this check at `site`, or None. The one rule
    /// `plan` and `seeds` refuse by and the agent runs by, so a check it
    /// cannot run is never first found at a site.
    pub fn unsupported(&self, site: CheckSite) -> Option<String> {
        match (site, self) {
            (CheckSite::Cluster, Readiness::NodesReady | Readiness::Rollout { .. }) => None,
            (CheckSite::Cluster, other) => Some(format!(
                "{other}: the cluster step runs only nodes-ready and rollout checks at first boot"
            )),
            (CheckSite::Platform, Readiness::Http { url, .. }) if !url.starts_with("http://") => {
                Some(format!(
                    "{self}: only plain http:// health checks are implemented"
                ))
            }
            (CheckSite::Platform, _) => None,
        }
    }
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

impl Readiness {
    pub(crate) fn problems(&self) -> Vec<String> {
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
