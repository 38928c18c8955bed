//! `bundle.json`: what the bundle holds, signed as a whole. Everything else in
//! the bundle is reachable from it by digest.

use crate::digest::Digest;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// 2: a serial, the catalog, and deltas. A reader takes any version up to its own.
pub const BUNDLE_VERSION: u32 = 2;
pub const BUNDLE_JSON: &str = "bundle.json";
pub const SIGNATURE: &str = "bundle.json.sig";
pub const CHECKSUMS: &str = "SHA256SUMS";
pub const SBOM: &str = "sbom.spdx.json";
/// The catalog the bundle was built from (JSON), so a site can re-plan from
/// an update without the connected side's files.
pub const CATALOG: &str = "catalog.json";
pub const LAYOUT_INDEX: &str = "oci/index.json";
pub const LAYOUT_MARKER: &str = "oci/oci-layout";
pub const BLOBS_DIR: &str = "oci/blobs/sha256/";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BundleManifest {
    pub bundle_version: u32,
    pub platform: String,
    pub platform_version: String,
    /// The catalog's serial: a site takes a bundle only with a serial above
    /// the one it runs (signed with the rest, so no rollback). 0: a bundle
    /// made before serials, which no site takes as an update.
    #[serde(default)]
    pub serial: u64,
    /// From the lock, so rebuilding gives the same bytes.
    pub created: String,
    /// Image platforms bundled (`linux/amd64`, or `all`).
    pub image_platforms: Vec<String>,
    pub artifacts: Vec<BundleArtifact>,
    /// Digests of the bundle's other metadata files, covered by the signature.
    pub files: BTreeMap<String, Digest>,
    pub totals: Totals,
    /// A delta: the blobs a site already held were left out. The manifest
    /// still describes the whole version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<Delta>,
}

/// What a delta was built against, and what it left out (signed, so a
/// verifier knows which absent blobs are meant to be absent).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    pub base: BaseRef,
    /// Every blob of this version the bundle does not carry: the base has it.
    pub omitted: Vec<OmittedBlob>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BaseRef {
    pub platform: String,
    pub platform_version: String,
    pub serial: u64,
    /// The digest of the base's `bundle.json`.
    pub bundle: Digest,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
pub struct OmittedBlob {
    pub digest: Digest,
    pub size: u64,
}

impl Delta {
    pub fn omitted_bytes(&self) -> u64 {
        self.omitted.iter().map(|b| b.size).sum()
    }
}

impl std::fmt::Display for BaseRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} serial {} (bundle.json {})",
            self.platform, self.platform_version, self.serial, self.bundle
        )
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BundleArtifact {
    pub kind: String,
    pub component: String,
    /// The `org.opencontainers.image.ref.name` in `oci/index.json`.
    pub name: String,
    /// Where it came from: image reference, chart reference or URL.
    pub source: String,
    /// Top manifest (or index) in the layout.
    pub digest: Digest,
    pub media_type: String,
    /// Bytes of every blob this artifact uses, counting shared ones.
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// sha256 of the file or chart archive itself (files and charts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    /// Archive member -> install path (files that are archives).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extract: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    pub artifacts: u64,
    pub blobs: u64,
    /// Bytes on disk: every blob once.
    pub unique_bytes: u64,
    /// Sum of artifact sizes: what the bundle would weigh without dedup.
    pub referenced_bytes: u64,
}

impl BundleArtifact {
    /// The blob holding the file or the chart archive: its content digest,
    /// or for a chart stored as an OCI artifact, the chart layer its
    /// manifest names (`read` gives a blob's bytes by digest).
    pub fn content_blob(&self, read: impl FnOnce(&Digest) -> Result<Vec<u8>>) -> Result<Digest> {
        if let Some(d) = &self.content_digest {
            return Ok(d.clone());
        }
        if self.kind != "chart" {
            anyhow::bail!("{} is not a file or a chart", self.name);
        }
        let m: serde_json::Value = serde_json::from_slice(&read(&self.digest)?)
            .with_context(|| format!("{}: its manifest is not JSON", self.name))?;
        let layer = m["layers"]
            .as_array()
            .and_then(|l| l.iter().find(|l| l["mediaType"] == crate::oci::HELM_CHART))
            .and_then(|l| l["digest"].as_str())
            .with_context(|| format!("{}: its manifest has no Helm chart layer", self.name))?;
        layer
            .parse()
            .map_err(|e| anyhow::anyhow!("{}: chart layer digest {layer}: {e}", self.name))
    }
}

/// The ref name a file artifact gets in the layout: its catalog name and
/// arch (`any` for arch-independent files) under a reserved registry.
pub fn file_ref_name(name: &str, arch: &str) -> String {
    format!("{FILES_REGISTRY}/{name}:{arch}")
}

const FILES_REGISTRY: &str = "files.kpaas.local";

impl BundleArtifact {
    /// A file artifact's catalog name (`kubeadm`), from its ref name.
    pub fn file_name(&self) -> Option<&str> {
        if self.kind != "file" {
            return None;
        }
        let rest = self.name.strip_prefix(FILES_REGISTRY)?.strip_prefix('/')?;
        Some(rest.rsplit_once(':').map_or(rest, |(n, _)| n))
    }
}

/// This build's architecture as catalogs name it: the node files the agent
/// installs and runs, and the helm/kustomize check-offline runs, are this
/// one's (one place, not a literal per caller).
pub fn native_arch() -> &'static str {
    if cfg!(target_arch = "aarch64") {
        "arm64"
    } else {
        "amd64"
    }
}

impl BundleManifest {
    /// Where the catalog installs file `name` for this machine's arch.
    pub fn install_path(&self, name: &str) -> Option<&str> {
        self.file(name, native_arch())?.install_path.as_deref()
    }

    /// The file artifact of that catalog name for `arch` (or for any arch).
    pub fn file(&self, name: &str, arch: &str) -> Option<&BundleArtifact> {
        self.artifacts.iter().find(|a| {
            a.file_name() == Some(name)
                && (a.name.ends_with(&format!(":{arch}")) || a.name.ends_with(":any"))
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let m: BundleManifest = serde_json::from_slice(b).context("parsing bundle.json")?;
        if m.bundle_version > BUNDLE_VERSION {
            anyhow::bail!(
                "bundle.json: bundle_version {} is newer than this program reads ({BUNDLE_VERSION}): use a newer kpaas-builder or agent",
                m.bundle_version
            );
        }
        Ok(m)
    }
}

/// `sha256sum -c` compatible lines, sorted by path.
pub fn checksum_list(files: &BTreeMap<String, (Digest, u64)>) -> Vec<u8> {
    let mut out = String::new();
    for (path, (d, _)) in files {
        out.push_str(&format!("{}  {path}\n", d.hex()));
    }
    out.into_bytes()
}

pub fn parse_checksum_list(text: &str) -> Result<BTreeMap<String, Digest>> {
    let mut m = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (hex, path) = line
            .split_once("  ")
            .with_context(|| format!("SHA256SUMS line {}: not `<sha256>  <path>`", i + 1))?;
        let d = Digest::from_hex(hex).with_context(|| format!("SHA256SUMS line {}", i + 1))?;
        m.insert(path.to_string(), d);
    }
    Ok(m)
}
