//! The `vault-init` and `vault-cluster` install kinds and their hooks
//! `vault-unsealed` and `vault-cluster-secret`: Vault initialised with the
//! plan's shares (the key kept 0600, never in an event), unsealed, then set
//! up for the portal as K-PaaS does it (`crate::vault` speaks Vault's API).

use super::{Apply, At, Engine, Outcome, block_on, hook_item, runtime};
use crate::boot::StepId;
use crate::boot::cluster::{CHEAP_PROBE_EVERY, last_line, wait_every};
use crate::events::Sink;
use crate::vault;
use airgap_bundle::deploy::Hook;
use airgap_bundle::kinds::Install;
use airgap_bundle::kinds::vault_cluster::VaultCluster;
use airgap_bundle::kinds::vault_init::VaultInit;
use airgap_bundle::plan::Step;
use anyhow::{Context, Result};

/// The k8sadmin token's life: upstream's `--duration=999999h`.
const TOKEN_SECONDS: i64 = 999_999 * 3600;

impl Engine {
    /// Vault's first start: waits until its API answers, initialises it
    /// with the plan's shares, keeps the key, unseals.
    fn vault_init(&self, events: &mut Sink, v: &VaultInit) -> Result<String> {
        let VaultInit {
            address,
            shares,
            threshold,
        } = v;
        let rt = runtime("Vault")?;
        wait_every(
            events,
            StepId::Deploy,
            &format!("Vault at {address} to answer"),
            self.limit,
            CHEAP_PROBE_EVERY,
            || {
                rt.block_on(vault::status(address))
                    .map(Some)
                    .map_err(|e| last_line(&e))
            },
        )?;
        rt.block_on(vault::init_and_unseal(
            address,
            *shares,
            *threshold,
            &vault::key_path(&self.cfg.state_dir),
        ))
    }

    /// `vault-unsealed`: the step's Vault answers and is not sealed.
    pub(super) fn vault_unsealed(&self, s: &Step) -> Outcome {
        let address = match hook_item(s, Hook::VaultUnsealed, |r| match r {
            Install::VaultInit(v) => Some(&v.address),
            _ => None,
        }) {
            Ok(a) => a,
            Err(o) => return o,
        };
        match block_on(vault::status(address)) {
            Ok((true, false)) => Outcome::Holds,
            Ok((init, sealed)) => Outcome::Waiting(format!(
                "Vault at {address}: initialized {init}, sealed {sealed}"
            )),
            Err(e) => Outcome::Waiting(last_line(&e)),
        }
    }

    /// K-PaaS's Vault setup for the portal: a cluster-admin ServiceAccount
    /// `kube-system/k8sadmin` and a long-lived token of it (upstream's
    /// `--duration=999999h`), then Vault's approle, kv-v2, the cluster's
    /// secret, policy and role (`vault::setup_cluster`). The token goes
    /// from the TokenRequest API's answer to Vault, never to a file or a log.
    fn vault_cluster(&self, v: &VaultCluster) -> Result<String> {
        let api_url = &v.api_url;
        // The site's nodes now (day-2 nodes in, removed ones out).
        let bound_cidrs = &crate::grow::bound_cidrs(
            &v.bound_cidrs,
            &self.cfg.nodes,
            &crate::grow::site_nodes(&self.cfg),
        );
        let sa = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "ServiceAccount",
                 "metadata": {"name": "k8sadmin", "namespace": "kube-system"}},
                {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                 "metadata": {"name": "k8sadmin"},
                 "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                 "subjects": [{"kind": "ServiceAccount", "name": "k8sadmin", "namespace": "kube-system"}]},
            ],
        });
        self.apply_stdin(&sa)
            .context("making ServiceAccount kube-system/k8sadmin (cluster-admin)")?;
        let token = self
            .kube
            .api
            .token("kube-system", "k8sadmin", TOKEN_SECONDS)
            .map_err(|f| anyhow::anyhow!("making a token for kube-system/k8sadmin: {f}"))?;
        let done = block_on(vault::setup_cluster(
            &vault::key_path(&self.cfg.state_dir),
            &vault::ClusterSecret {
                api_url,
                token: &token,
                bound_cidrs,
            },
            &self.cfg.state_dir.join(vault::APPROLE_FILE),
        ))?;
        // What the role is bound to, for the master's keeper to follow
        // the site's nodes from (crate::grow::follow).
        crate::site::Site::update(&self.cfg.state_dir, |s| {
            s.vault_role = Some(bound_cidrs.clone());
            Ok(())
        })?;
        Ok(done)
    }

    /// `vault-cluster-secret`: the step's Vault holds the cluster's secret
    /// with its API URL, and the portal's role.
    pub(super) fn vault_cluster_secret(&self, s: &Step) -> Outcome {
        let api_url = match hook_item(s, Hook::VaultClusterSecret, |r| match r {
            Install::VaultCluster(v) => Some(&v.api_url),
            _ => None,
        }) {
            Ok(a) => a,
            Err(o) => return o,
        };
        match block_on(vault::cluster_secret_missing(
            &vault::key_path(&self.cfg.state_dir),
            api_url,
        )) {
            Ok(None) => Outcome::Holds,
            Ok(Some(w)) => Outcome::Waiting(w),
            Err(e) => Outcome::Waiting(last_line(&e)),
        }
    }
}

impl Apply for VaultInit {
    fn apply(&self, e: &Engine, events: &mut Sink, _at: &At) -> Result<String> {
        e.vault_init(events, self)
    }
}

impl Apply for VaultCluster {
    fn apply(&self, e: &Engine, _events: &mut Sink, _at: &At) -> Result<String> {
        e.vault_cluster(self)
    }
}
