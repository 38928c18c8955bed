//! The site's inventory, gathered on the master (`kpaas-agent inventory`,
//! `/node/v1/inventory`): the bundle it runs, every blob it holds, its
//! releases with Helm's revisions, its nodes. Nothing secret is in it.

use super::store::Store;
use crate::deploy::Engine;
use crate::site::Site;
use airgap_bundle::Digest;
use airgap_bundle::fsutil::{now_unix, rfc3339};
use airgap_bundle::inventory::{self, INVENTORY_VERSION, Inventory, InventoryNode};
use airgap_bundle::kinds::Install;
use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest};
use airgap_bundle::node::NodeConfig;
use airgap_bundle::run::Runner;
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;

/// Every bundle the site ran, oldest first (`store/history.json`).
pub const HISTORY_FILE: &str = "history.json";

pub fn history(state_dir: &Path) -> Result<Vec<inventory::Installed>> {
    crate::state_file::load(
        &state_dir.join(super::store::STORE_DIR).join(HISTORY_FILE),
        "the site's bundle history",
    )
}

/// Records a finished update: `from` first when the history is empty (the
/// media's bundle, run since the first boot), then `to`.
pub fn add_history(
    state_dir: &Path,
    from: inventory::Installed,
    to: inventory::Installed,
) -> Result<()> {
    let mut h = history(state_dir)?;
    if h.is_empty() {
        h.push(from);
    }
    // A finish cut short and run again records it once.
    if h.last().map(|l| &l.bundle) != Some(&to.bundle) {
        h.push(to);
    }
    crate::state_file::save(
        &state_dir.join(super::store::STORE_DIR).join(HISTORY_FILE),
        "the site's bundle history",
        &h,
    )
}

/// The bundle the node runs: its manifest and the digest of its bundle.json.
pub fn running(cfg: &NodeConfig) -> Result<(BundleManifest, Digest)> {
    let p = cfg.bundle.join(BUNDLE_JSON);
    let bytes = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
    Ok((BundleManifest::from_bytes(&bytes)?, Digest::of(&bytes)))
}

/// The inventory of the site `cfg` (the installed view) describes. Helm is
/// asked for revisions when the cluster answers; else they are left out and
/// `releases_note` says why.
pub fn gather(root: &Path, cfg: &NodeConfig, runner: Arc<dyn Runner>) -> Result<Inventory> {
    let (m, digest) = running(cfg)?;
    let store = Store::of(cfg)?;
    let mut history = history(&cfg.state_dir)?;
    if history.is_empty() {
        history.push(inventory::Installed {
            platform_version: m.platform_version.clone(),
            serial: m.serial,
            bundle: digest.clone(),
            at: "first boot".into(),
        });
    }
    let helm = Engine::new(root, cfg.clone(), runner).and_then(|e| e.helm_releases());
    let (revisions, releases_note) = match helm {
        Ok(r) => (r, None),
        Err(e) => (
            Default::default(),
            Some(format!(
                "Helm's revisions are left out: {}",
                crate::boot::cluster::last_line(&e)
            )),
        ),
    };
    let mut releases = Vec::new();
    for s in &cfg.platform {
        for r in &s.releases {
            let (revision, namespace) = match &r.item {
                Install::Chart(c) => (
                    revisions
                        .get(&(c.namespace.clone(), c.release.clone()))
                        .map(|(rev, _)| *rev),
                    Some(c.namespace.clone()),
                ),
                _ => (None, s.namespace.clone()),
            };
            releases.push(inventory::InstalledRelease {
                component: s.component.clone(),
                release: r.name(),
                wave: s.wave,
                revision,
                namespace,
            });
        }
    }
    let site = Site::load(&cfg.state_dir)?;
    let listed = if site.listed.is_empty() {
        cfg.nodes.clone()
    } else {
        site.listed.clone()
    };
    let mut nodes: Vec<InventoryNode> = Vec::new();
    let state = |h: &str, first: &str| {
        if site.is_removed(h) {
            "removed".to_string()
        } else if site.joined.contains_key(h) {
            "joined".to_string()
        } else {
            first.to_string()
        }
    };
    for n in &listed {
        nodes.push(InventoryNode {
            hostname: n.hostname.clone(),
            ip: n.ip,
            role: n.role,
            state: state(&n.hostname, "listed"),
        });
    }
    for a in &site.added {
        if let Some(n) = nodes.iter_mut().find(|n| n.hostname == a.node.hostname) {
            n.state = state(&a.node.hostname, "added");
            continue;
        }
        nodes.push(InventoryNode {
            hostname: a.node.hostname.clone(),
            ip: a.node.ip,
            role: a.node.role,
            state: state(&a.node.hostname, "added"),
        });
    }
    Ok(Inventory {
        history,
        blobs: store.held()?,
        releases,
        releases_note,
        nodes,
        ..base(cfg, &m, &digest)
    })
}

/// The inventory's head: the bundle the node runs (nothing it holds yet).
pub fn base(cfg: &NodeConfig, m: &BundleManifest, digest: &Digest) -> Inventory {
    Inventory {
        inventory_version: INVENTORY_VERSION,
        cluster: cfg.cluster.clone(),
        taken: rfc3339(now_unix()),
        platform: m.platform.clone(),
        platform_version: m.platform_version.clone(),
        serial: m.serial,
        bundle: digest.clone(),
        kubernetes: cfg.kubernetes.as_ref().and_then(|k| k.version.clone()),
        history: vec![],
        blobs: Default::default(),
        releases: vec![],
        releases_note: None,
        nodes: vec![],
    }
}
