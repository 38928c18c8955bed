//! The `vault-init` kind: Vault initialised (K-PaaS: 1 share, threshold
//! 1), its unseal key and root token kept on the master (0600), unsealed;
//! unsealed again at every boot of the master. Its hook: `vault-unsealed`.

use super::{Kind, Templated, field};
use crate::cluster::Cluster;
use crate::readiness::Hook;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VaultInit {
    /// Vault's API, e.g. `http://{cluster.public_ip}:31654` (its NodePort).
    pub address: String,
    #[serde(default = "one_share")]
    pub shares: usize,
    #[serde(default = "one_share")]
    pub threshold: usize,
}

fn one_share() -> usize {
    1
}

/// Vault's address as both Vault kinds take it: its NodePort's plain HTTP
/// API (the problem, if not).
pub(super) fn address_problem(address: &str) -> Option<String> {
    (!address.starts_with("http://"))
        .then(|| format!("address: {address:?} must be Vault's plain http:// API (its NodePort)"))
}

impl Kind for VaultInit {
    const HOOKS: &'static [Hook] = &[Hook::VaultUnsealed];

    fn name(&self) -> String {
        "vault-init".into()
    }

    fn problems(&self) -> Vec<String> {
        let mut p: Vec<String> = address_problem(&self.address).into_iter().collect();
        if self.threshold == 0 || self.threshold > self.shares {
            p.push(format!(
                "threshold: {} must be between 1 and shares ({})",
                self.threshold, self.shares
            ));
        }
        p
    }

    fn templated(&self) -> Vec<Templated> {
        vec![Templated::text("address", &self.address)]
    }

    fn resolve(&self, c: &Cluster) -> Result<Self, String> {
        Ok(VaultInit {
            address: field("address", &self.address, c)?,
            ..self.clone()
        })
    }

    fn describe(&self, _artifact: &str) -> String {
        format!(
            "initialise Vault at {} ({} share(s), threshold {}), keep its key on the master (0600), unseal it",
            self.address, self.shares, self.threshold
        )
    }
}
