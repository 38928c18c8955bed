//! The `vault-cluster` kind: K-PaaS's Vault setup for the portal — approle
//! enabled, kv-v2 at `secret/`, `secret/data/cluster/host-cluster` holding
//! the API URL and the token of a cluster-admin ServiceAccount
//! `kube-system/k8sadmin`, policy `cp_policy`, approle role `cp_role` bound
//! to the nodes' addresses; its role and secret ids kept on the master
//! (0600). Its hook: `vault-cluster-secret`.

use super::{Kind, Templated, field};
use crate::cluster::Cluster;
use crate::readiness::Hook;
use crate::template::{Expanded, Template};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VaultCluster {
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

impl Kind for VaultCluster {
    const HOOKS: &'static [Hook] = &[Hook::VaultClusterSecret];

    fn name(&self) -> String {
        "vault-cluster".into()
    }

    fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = super::vault_init::address_problem(&self.address)
            .into_iter()
            .collect();
        if !self.api_url.starts_with("https://") {
            p.push(format!(
                "api_url: {:?} must be the API server's https:// URL",
                self.api_url
            ));
        }
        p
    }

    fn templated(&self) -> Vec<Templated> {
        let mut t = vec![
            Templated::text("address", &self.address),
            Templated::text("api_url", &self.api_url),
        ];
        for (n, s) in self.bound_cidrs.iter().enumerate() {
            t.push(Templated {
                list_ok: true,
                ..Templated::text(format!("bound_cidrs[{n}]"), s)
            });
        }
        t
    }

    fn resolve(&self, c: &Cluster) -> Result<Self, String> {
        let mut bound = Vec::new();
        for (n, s) in self.bound_cidrs.iter().enumerate() {
            let at = |e: String| format!("bound_cidrs[{n}]: {e}");
            match Template::parse(s).map_err(at)?.expand(c).map_err(at)? {
                Expanded::One(t) => bound.push(t),
                Expanded::Many(ts) => bound.extend(ts),
            }
        }
        Ok(VaultCluster {
            address: field("address", &self.address, c)?,
            api_url: field("api_url", &self.api_url, c)?,
            bound_cidrs: bound,
        })
    }

    fn describe(&self, _artifact: &str) -> String {
        format!(
            "set Vault at {} up for the portal: approle, kv-v2 at secret/, secret/data/cluster/host-cluster ({}, token of kube-system/k8sadmin), policy cp_policy, role cp_role bound to {}",
            self.address,
            self.api_url,
            if self.bound_cidrs.is_empty() {
                "any address".to_string()
            } else {
                self.bound_cidrs.join(", ")
            }
        )
    }
}
