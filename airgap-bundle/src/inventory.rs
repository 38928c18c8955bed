//! The site's inventory: what a running site holds, as its master states it
//! (`kpaas-agent inventory`, the node endpoint's `/node/v1/inventory`). The
//! operator carries it to the connected side, where `kpaas-builder bundle
//! --since` builds a delta of only the blobs the site lacks. Nothing in it
//! is secret: digests, names, revisions and addresses.

use crate::Digest;
use crate::manifest::BaseRef;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::Path;

pub const INVENTORY_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    pub inventory_version: u32,
    pub cluster: String,
    /// When the master gathered it (RFC 3339).
    pub taken: String,
    pub platform: String,
    pub platform_version: String,
    pub serial: u64,
    /// The digest of the installed `bundle.json`.
    pub bundle: Digest,
    /// The Kubernetes version the nodes run (an update keeps it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<String>,
    /// Every bundle the site has run, oldest first.
    #[serde(default)]
    pub history: Vec<Installed>,
    /// Every blob the master's store holds, sorted.
    pub blobs: BTreeSet<Digest>,
    pub releases: Vec<InstalledRelease>,
    /// Why `releases` may be short (Helm could not be asked), if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases_note: Option<String>,
    pub nodes: Vec<InventoryNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Installed {
    pub platform_version: String,
    pub serial: u64,
    pub bundle: Digest,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InstalledRelease {
    pub component: String,
    /// The release's name in the journal (`demo`, `portal.yaml`).
    pub release: String,
    pub wave: usize,
    /// Helm's revision, for charts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct InventoryNode {
    pub hostname: String,
    pub ip: std::net::IpAddr,
    pub role: crate::node::Role,
    /// listed (in the seeds), added (day 2), joined, removed.
    pub state: String,
}

impl Inventory {
    /// Reads an inventory file; errors name the file.
    pub fn from_file(path: &Path) -> Result<Inventory> {
        let text =
            std::fs::read(path).with_context(|| format!("reading inventory {}", path.display()))?;
        let inv: Inventory = serde_json::from_slice(&text).with_context(|| {
            format!(
                "{}: not a site inventory (write one on the master with `kpaas-agent inventory --out FILE`)",
                path.display()
            )
        })?;
        if inv.inventory_version > INVENTORY_VERSION {
            bail!(
                "{}: inventory_version {} is newer than this program reads ({INVENTORY_VERSION})",
                path.display(),
                inv.inventory_version
            );
        }
        Ok(inv)
    }

    /// The bundle the site runs, as a delta's base names it.
    pub fn base(&self) -> BaseRef {
        BaseRef {
            platform: self.platform.clone(),
            platform_version: self.platform_version.clone(),
            serial: self.serial,
            bundle: self.bundle.clone(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }
}
