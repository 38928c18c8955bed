//! Artifacts: the files, images and charts a component needs, how each is
//! named in the lock, the bundle and the seed registry, and their checks.

use super::valid_name;
use crate::digest::Digest;
use crate::reference::ImageRef;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Artifact {
    File(FileArtifact),
    Image(ImageArtifact),
    Chart(ChartArtifact),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileArtifact {
    /// Defaults to the last path segment of `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Where to download it; absent for `supplied` files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Required, except for `unverified` files (pinned in the lock on first
    /// download) and `supplied` ones (pinned from the file given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    #[serde(default = "default_arch")]
    pub arch: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_path: Option<String>,
    /// Octal file mode at the install path, e.g. "0755".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// For archives: member path -> install path on the node (`*` -> a
    /// directory takes the whole archive, as CNI plugins do).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub extract: BTreeMap<String, String>,
    /// The value comes from inference, not an upstream file a person checked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
    /// Not downloadable: the site supplies it (`bundle --supply`), e.g. a vendor's images.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub supplied: bool,
    /// Deployed only when the cluster file matches, e.g. `{storage: nfs}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub when: BTreeMap<String, String>,
}

fn default_arch() -> String {
    "any".to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageArtifact {
    #[serde(rename = "ref")]
    pub reference: String,
    /// Pins the manifest or index; must agree with a digest inside `ref`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// `os/arch[/variant]` to bundle; empty means the build's `--arch`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// The value comes from inference, not an upstream file a person checked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
    /// Not downloadable: the site supplies it (`bundle --supply`), e.g. a vendor's images.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub supplied: bool,
    /// Deployed only when the cluster file matches, e.g. `{storage: nfs}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub when: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ChartArtifact {
    /// Helm HTTP repository base URL (with `index.yaml`); or use `oci`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `oci://registry/path/chart:version`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<String>,
    /// sha256 of the chart `.tgz` (HTTP repos) or the manifest (OCI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// The value comes from inference, not an upstream file a person checked.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
    /// Not downloadable: the site supplies it (`bundle --supply`), e.g. a vendor's images.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub supplied: bool,
    /// Deployed only when the cluster file matches, e.g. `{storage: nfs}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub when: BTreeMap<String, String>,
}

/// How a platform's artifacts name themselves in the lock, the bundle and the seed registry.
impl Artifact {
    pub fn kind(&self) -> &'static str {
        match self {
            Artifact::File(_) => "file",
            Artifact::Image(_) => "image",
            Artifact::Chart(_) => "chart",
        }
    }

    /// Stable identity, unique within a catalog; the lock is keyed by it.
    pub fn key(&self) -> String {
        format!("{}:{}", self.kind(), self.ref_name())
    }

    /// The `org.opencontainers.image.ref.name` the artifact gets in the bundle.
    pub fn ref_name(&self) -> String {
        match self {
            Artifact::Image(i) => ImageRef::parse(&i.reference)
                .map(|r| r.to_string())
                .unwrap_or_else(|_| i.reference.clone()),
            Artifact::Chart(c) => c.ref_name(),
            Artifact::File(f) => crate::manifest::file_ref_name(&f.name(), &f.arch),
        }
    }

    pub fn unverified(&self) -> bool {
        match self {
            Artifact::File(f) => f.unverified,
            Artifact::Image(i) => i.unverified,
            Artifact::Chart(c) => c.unverified,
        }
    }

    pub fn supplied(&self) -> bool {
        match self {
            Artifact::File(f) => f.supplied,
            Artifact::Image(i) => i.supplied,
            Artifact::Chart(c) => c.supplied,
        }
    }

    pub fn when(&self) -> &BTreeMap<String, String> {
        match self {
            Artifact::File(f) => &f.when,
            Artifact::Image(i) => &i.when,
            Artifact::Chart(c) => &c.when,
        }
    }

    /// True when the artifact applies to a cluster with these settings.
    pub fn applies(&self, settings: &BTreeMap<String, String>) -> bool {
        self.when().iter().all(|(k, v)| settings.get(k) == Some(v))
    }
}

impl FileArtifact {
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            let url = self.url.as_deref().unwrap_or_default();
            url.rsplit('/').next().unwrap_or(url).to_ascii_lowercase()
        })
    }
}

impl ChartArtifact {
    pub fn ref_name(&self) -> String {
        if let Some(oci) = &self.oci {
            return oci.trim_start_matches("oci://").to_string();
        }
        let Some(repo) = self.repo.as_deref() else {
            // A supplied chart has no origin to name it by.
            return format!(
                "charts.kpaas.local/{}:{}",
                self.name.as_deref().unwrap_or_default(),
                self.version.as_deref().unwrap_or_default()
            );
        };
        let base = repo
            .split_once("://")
            .map_or(repo, |(_, r)| r)
            .trim_end_matches('/')
            .to_ascii_lowercase();
        format!(
            "{base}/{}:{}",
            self.name.as_deref().unwrap_or_default(),
            self.version.as_deref().unwrap_or_default()
        )
    }

    /// The chart name, from `name` or the last path part of `oci`.
    pub fn chart_name(&self) -> String {
        match (&self.name, &self.oci) {
            (Some(n), _) => n.clone(),
            (None, Some(o)) => {
                let path = o.rsplit('/').next().unwrap_or(o);
                path.split(':').next().unwrap_or(path).to_string()
            }
            _ => String::new(),
        }
    }
}

fn valid_platform(p: &str) -> bool {
    let parts: Vec<&str> = p.split('/').collect();
    (2..=3).contains(&parts.len()) && parts.iter().all(|s| valid_name(s))
}

fn valid_http_url(u: &str) -> bool {
    (u.starts_with("http://") || u.starts_with("https://"))
        && u.split_once("://").is_some_and(|(_, r)| {
            let host = r.split('/').next().unwrap_or_default();
            !host.is_empty() && !r.contains(char::is_whitespace)
        })
}

pub const ARCHES: &[&str] = &["amd64", "arm64", "any"];

pub(super) fn artifact_problems(a: &Artifact) -> Vec<String> {
    let mut p = Vec::new();
    match a {
        Artifact::File(f) => {
            match (&f.url, f.supplied) {
                (Some(u), _) if !valid_http_url(u) => {
                    p.push(format!("url: {u:?} must be an http:// or https:// URL"))
                }
                (None, false) => p.push("url: required (or mark the file `supplied: true`)".into()),
                _ => {}
            }
            match &f.sha256 {
                Some(h) => {
                    if let Err(e) = Digest::from_hex(h) {
                        p.push(format!(
                            "sha256: {e}; write the 64 hex digits of the file's sha256"
                        ));
                    }
                }
                None if !f.unverified && !f.supplied => p.push(
                    "sha256: required (only `unverified` or `supplied` files may leave it out)"
                        .into(),
                ),
                None => {}
            }
            if !valid_name(&f.name()) {
                p.push(format!(
                    "name: {:?} must be lowercase letters, digits, '.', '_' or '-' (set `name` when the URL ends otherwise)",
                    f.name()
                ));
            }
            if !ARCHES.contains(&f.arch.as_str()) {
                p.push(format!(
                    "arch: {:?} must be one of {}",
                    f.arch,
                    ARCHES.join(", ")
                ));
            }
            if let Some(ip) = &f.install_path
                && (!ip.starts_with('/') || ip.split('/').any(|s| s == ".." || s == "."))
            {
                p.push(format!(
                    "install_path: {ip:?} must be an absolute path without '.' or '..'"
                ));
            }
            for (member, dest) in &f.extract {
                if member.is_empty()
                    || member.starts_with('/')
                    || member.split('/').any(|c| c == "..")
                {
                    p.push(format!("extract: member {member:?} must be a relative path inside the archive (or *)"));
                }
                if !dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
                    p.push(format!(
                        "extract.{member}: {dest:?} must be an absolute path without '..'"
                    ));
                }
            }
            if let Some(m) = &f.mode
                && (m.len() != 4 || u32::from_str_radix(m, 8).is_err())
            {
                p.push(format!(
                    "mode: {m:?} must be four octal digits such as \"0755\""
                ));
            }
        }
        Artifact::Image(i) => match ImageRef::parse(&i.reference) {
            Err(e) => p.push(format!("ref: {e}")),
            Ok(r) => {
                if let Some(d) = &i.digest {
                    match Digest::parse(d) {
                        Err(e) => p.push(format!("digest: {e}")),
                        Ok(d) if r.digest.as_ref().is_some_and(|rd| rd != &d) => p.push(format!(
                            "digest: {d} disagrees with the digest inside ref {}",
                            i.reference
                        )),
                        Ok(_) => {}
                    }
                }
                for pl in &i.platforms {
                    if pl != "all" && !valid_platform(pl) {
                        p.push(format!(
                            "platforms: {pl:?} must be os/arch[/variant] such as linux/amd64, or all"
                        ));
                    }
                }
            }
        },
        Artifact::Chart(c) => {
            match (&c.repo, &c.oci) {
                (None, None) if c.supplied => {
                    if c.name.as_deref().is_none_or(|n| !valid_name(n)) || c.version.as_deref().is_none_or(|v| v.trim().is_empty()) {
                        p.push("name/version: a supplied chart needs both".into());
                    }
                }
                (_, _) if c.supplied => p.push("repo/oci: a supplied chart has no upstream location".into()),
                (Some(_), Some(_)) => p.push("set either repo (with name and version) or oci, not both".into()),
                (None, None) => p.push("set repo (a Helm HTTP repository URL, with name and version) or oci (oci://registry/path/chart:version)".into()),
                (Some(repo), None) => {
                    if !valid_http_url(repo) {
                        p.push(format!("repo: {repo:?} must be an http:// or https:// URL"));
                    }
                    if c.name.as_deref().is_none_or(|n| !valid_name(n)) {
                        p.push("name: a chart name (lowercase letters, digits, '-') is required with repo".into());
                    }
                    if c.version.as_deref().is_none_or(|v| v.trim().is_empty()) {
                        p.push("version: an exact chart version is required".into());
                    }
                }
                (None, Some(oci)) => match oci.strip_prefix("oci://").map(ImageRef::parse) {
                    None => p.push(format!("oci: {oci:?} must start with oci://")),
                    Some(Err(e)) => p.push(format!("oci: {e}")),
                    Some(Ok(r)) if r.tag.is_none() || oci.rsplit('/').next().is_some_and(|l| !l.contains(':')) => {
                        p.push(format!("oci: {oci:?} must name the chart version as its tag"))
                    }
                    Some(Ok(_)) => {
                        if c.name.is_some() || c.version.is_some() {
                            p.push("name/version: not used with oci (the reference names the chart and version)".into());
                        }
                    }
                },
            }
            if let Some(d) = &c.digest
                && let Err(e) = Digest::parse(d)
            {
                p.push(format!("digest: {e}"));
            }
        }
    }
    p
}
