//! OCI and Docker media types, and just enough manifest parsing to walk from
//! an index or manifest to the blobs it needs. Manifests are never
//! re-serialised: their bytes are kept exactly as fetched (digests must hold).

use crate::digest::Digest;
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const HELM_CONFIG: &str = "application/vnd.cncf.helm.config.v1+json";
pub const HELM_CHART: &str = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";
/// Our artifact type for plain files (binaries, tarballs, manifests).
pub const KPAAS_FILE: &str = "application/vnd.kpaas.file.v1";
pub const OCTET: &str = "application/octet-stream";

pub const ANN_REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const ANN_TITLE: &str = "org.opencontainers.image.title";

/// Every manifest type we accept, for registry `Accept` headers.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

pub fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

pub fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    pub fn label(&self) -> String {
        match &self.variant {
            Some(v) => format!("{}/{}/{}", self.os, self.architecture, v),
            None => format!("{}/{}", self.os, self.architecture),
        }
    }

    /// `linux/arm64` matches `linux/arm64/v8`; a wanted variant must match exactly.
    pub fn matches(&self, want: &str) -> bool {
        let mut it = want.split('/');
        let (os, arch, var) = (it.next(), it.next(), it.next());
        Some(self.os.as_str()) == os
            && Some(self.architecture.as_str()) == arch
            && (var.is_none() || var == self.variant.as_deref())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The same descriptor with one more annotation.
    pub fn annotated(mut self, key: &str, value: &str) -> Descriptor {
        self.annotations.insert(key.to_string(), value.to_string());
        self
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
}

/// What a manifest or index points at.
#[derive(Debug)]
pub enum Parsed {
    Index(Vec<Descriptor>),
    Manifest {
        config: Descriptor,
        layers: Vec<Descriptor>,
    },
}

/// Parses manifest bytes; `media_type` is what the registry or descriptor said,
/// used when the document omits its own `mediaType`.
pub fn parse_manifest(bytes: &[u8], media_type: &str) -> Result<Parsed> {
    let m: AnyManifest = serde_json::from_slice(bytes).context("parsing manifest JSON")?;
    let mt = m.media_type.as_deref().unwrap_or(media_type);
    if let Some(list) = m.manifests {
        if !is_index(mt) && !mt.is_empty() && !is_manifest(mt) {
            bail!("unexpected media type {mt} for an index");
        }
        return Ok(Parsed::Index(list));
    }
    match (m.config, m.layers) {
        (Some(config), layers) => Ok(Parsed::Manifest {
            config,
            layers: layers.unwrap_or_default(),
        }),
        _ => bail!(
            "manifest ({mt}) has neither `manifests` nor `config`; schema 1 manifests are not supported"
        ),
    }
}

/// The media type a manifest declares about itself, if any.
pub fn declared_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct M {
        media_type: Option<String>,
    }
    serde_json::from_slice::<M>(bytes).ok()?.media_type
}

/// What a manifest that names no `mediaType` is, judged by its shape (OCI
/// makes the field optional; umoci and older buildah leave it out). Only a
/// Docker image config tells a Docker schema 2 manifest from an OCI one.
pub fn media_type_from_shape(bytes: &[u8]) -> Option<&'static str> {
    let m: AnyManifest = serde_json::from_slice(bytes).ok()?;
    match (m.manifests, m.config, m.layers) {
        (Some(_), _, _) => Some(OCI_INDEX),
        (None, Some(c), Some(_)) if c.media_type == DOCKER_CONFIG => Some(DOCKER_MANIFEST),
        (None, Some(_), Some(_)) => Some(OCI_MANIFEST),
        _ => None,
    }
}

/// The OCI layout `index.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LayoutIndex {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
}

pub const OCI_LAYOUT_FILE: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Builds a single-layer artifact manifest (ORAS style) deterministically.
pub fn artifact_manifest(
    artifact_type: Option<&str>,
    config: &Descriptor,
    layer: &Descriptor,
    annotations: &BTreeMap<String, String>,
) -> Vec<u8> {
    let mut m = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config,
        "layers": [layer],
    });
    if let Some(t) = artifact_type {
        m["artifactType"] = serde_json::Value::String(t.to_string());
    }
    if !annotations.is_empty() {
        m["annotations"] = serde_json::to_value(annotations).unwrap_or_default();
    }
    // serde_json's map is ordered by key, so the bytes are stable.
    serde_json::to_vec(&m).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_index_and_manifest() {
        let d = Digest::of(b"x");
        let idx = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{{"mediaType":"{OCI_MANIFEST}","digest":"{d}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}}]}}"#
        );
        match parse_manifest(idx.as_bytes(), "").unwrap() {
            Parsed::Index(m) => {
                let p = m[0].platform.as_ref().unwrap();
                assert!(p.matches("linux/arm64") && p.matches("linux/arm64/v8"));
                assert!(!p.matches("linux/amd64") && !p.matches("linux/arm64/v7"));
            }
            other => panic!("{other:?}"),
        }
        let man = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"a","digest":"{d}","size":1}},"layers":[]}}"#
        );
        assert!(matches!(
            parse_manifest(man.as_bytes(), OCI_MANIFEST).unwrap(),
            Parsed::Manifest { .. }
        ));
        assert!(parse_manifest(br#"{"schemaVersion":1,"fsLayers":[]}"#, "").is_err());
    }

    #[test]
    fn a_manifest_without_media_type_is_known_by_its_shape() {
        let d = Digest::of(b"x");
        let desc = |mt: &str| format!(r#"{{"mediaType":"{mt}","digest":"{d}","size":1}}"#);
        let index = format!(
            r#"{{"schemaVersion":2,"manifests":[{}]}}"#,
            desc(OCI_MANIFEST)
        );
        let image = |config: &str| {
            format!(
                r#"{{"schemaVersion":2,"config":{},"layers":[{}]}}"#,
                desc(config),
                desc("application/vnd.oci.image.layer.v1.tar+gzip")
            )
        };
        let oci_config = "application/vnd.oci.image.config.v1+json";
        assert_eq!(media_type_from_shape(index.as_bytes()), Some(OCI_INDEX));
        assert_eq!(
            media_type_from_shape(image(oci_config).as_bytes()),
            Some(OCI_MANIFEST)
        );
        assert_eq!(
            media_type_from_shape(image(DOCKER_CONFIG).as_bytes()),
            Some(DOCKER_MANIFEST)
        );
        // A config alone, schema 1, other JSON and non-JSON are none of these.
        for other in [
            format!(r#"{{"schemaVersion":2,"config":{}}}"#, desc(oci_config)),
            r#"{"schemaVersion":1,"fsLayers":[]}"#.to_string(),
            "[]".to_string(),
            "not json".to_string(),
        ] {
            assert_eq!(media_type_from_shape(other.as_bytes()), None, "{other}");
        }
    }
}
