//! The one walk of an artifact's OCI graph, from its root manifest or index
//! to its blobs, for every place that follows one: bundle verification,
//! taking in a supplied OCI layout, the seed registry's index of what it
//! serves and the Harbor hand-off.
//!
//! One policy:
//! - an index's child is followed when its platform is one the walk wants
//!   ([`Platforms`]; a child that names no platform is always followed);
//!   the others are reported [`Visit::Skipped`] and never read;
//! - a followed manifest the store does not hold is [`Visit::Missing`]: the
//!   root is always an error; a child is one for the bundle's verifier,
//!   which knows the platforms the bundle was made for, and is passed over
//!   by readers that run after it (the seed registry, the hand-off);
//! - every manifest's bytes are checked against their digest before they
//!   are parsed ([`Visit::Bad`] otherwise), and a graph deeper than
//!   [`MAX_DEPTH`] is refused;
//! - config and layer blobs are reported ([`Visit::Blob`]), never read:
//!   their digests are checked where their bytes are read; so is a node
//!   whose media type says it is no manifest ([`Visit::Leaf`]);
//! - a manifest is visited after everything below it (children first), the
//!   order a registry accepts them in.

use crate::digest::Digest;
use crate::oci::{self, Descriptor, Parsed};

/// Indexes inside indexes deeper than this are refused (no real image
/// nests more than one).
pub const MAX_DEPTH: usize = 4;

/// Which children of an index a walk follows.
#[derive(Debug, Clone, Copy)]
pub enum Platforms<'a> {
    All,
    /// `os/arch[/variant]` each (`linux/amd64`).
    Only(&'a [String]),
}

impl Platforms<'_> {
    /// The rule for a bundle artifact: its recorded platforms, or every
    /// one when the bundle was made for all (`all`) or recorded none.
    pub fn of<'a>(bundle_platforms: &[String], artifact: &'a [String]) -> Platforms<'a> {
        if artifact.is_empty() || bundle_platforms.iter().any(|p| p == "all") {
            Platforms::All
        } else {
            Platforms::Only(artifact)
        }
    }

    pub fn wants(&self, child: &Descriptor) -> bool {
        match (self, &child.platform) {
            (Platforms::All, _) | (_, None) => true,
            (Platforms::Only(want), Some(p)) => want.iter().any(|w| p.matches(w)),
        }
    }
}

/// What a walk meets.
#[derive(Debug)]
pub enum Visit<'a> {
    /// A manifest or index, its bytes checked and parsed; `media_type` is
    /// what it declares about itself, else what its parent said.
    Manifest {
        digest: &'a Digest,
        media_type: &'a str,
        bytes: &'a [u8],
    },
    /// A config or layer blob a manifest names.
    Blob(&'a Descriptor),
    /// A node whose media type says it is not a manifest or an index (an
    /// index's entry for a plain blob): not read.
    Leaf {
        digest: &'a Digest,
        media_type: &'a str,
    },
    /// An index child outside the walk's platforms.
    Skipped(&'a Descriptor),
    /// A followed manifest the store does not hold.
    Missing { digest: &'a Digest, root: bool },
    /// A manifest that cannot be used.
    Bad { digest: &'a Digest, why: Bad },
}

/// Why a manifest cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum Bad {
    Unreadable(String),
    /// Its bytes hash to another digest (a torn or altered file).
    NotItsDigest,
    NotAManifest(String),
    TooDeep,
}

impl std::fmt::Display for Bad {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Bad::Unreadable(e) => write!(f, "reading it: {e}"),
            Bad::NotItsDigest => write!(f, "its bytes do not match its digest"),
            Bad::NotAManifest(e) => write!(f, "{e}"),
            Bad::TooDeep => write!(f, "nested more than {MAX_DEPTH} indexes deep"),
        }
    }
}

/// Walks from `root` (with the media type its descriptor gives). `read`
/// gives a manifest's bytes, `Ok(None)` when the store does not hold it.
pub fn walk(
    root: &Digest,
    media_type: &str,
    platforms: Platforms,
    read: &mut dyn FnMut(&Digest) -> std::io::Result<Option<Vec<u8>>>,
    visit: &mut dyn FnMut(Visit<'_>),
) {
    go(root, media_type, 0, platforms, read, visit);
}

fn go(
    d: &Digest,
    media_type: &str,
    depth: usize,
    platforms: Platforms,
    read: &mut dyn FnMut(&Digest) -> std::io::Result<Option<Vec<u8>>>,
    visit: &mut dyn FnMut(Visit<'_>),
) {
    let bad = |why: Bad, visit: &mut dyn FnMut(Visit<'_>)| visit(Visit::Bad { digest: d, why });
    if depth > MAX_DEPTH {
        return bad(Bad::TooDeep, visit);
    }
    if !media_type.is_empty() && !oci::is_index(media_type) && !oci::is_manifest(media_type) {
        return visit(Visit::Leaf {
            digest: d,
            media_type,
        });
    }
    let bytes = match read(d) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return visit(Visit::Missing {
                digest: d,
                root: depth == 0,
            });
        }
        Err(e) => return bad(Bad::Unreadable(e.to_string()), visit),
    };
    if Digest::of(&bytes) != *d {
        return bad(Bad::NotItsDigest, visit);
    }
    let parsed = match oci::parse_manifest(&bytes, media_type) {
        Ok(p) => p,
        Err(e) => return bad(Bad::NotAManifest(format!("{e:#}")), visit),
    };
    match &parsed {
        Parsed::Index(children) => {
            for c in children {
                if platforms.wants(c) {
                    go(&c.digest, &c.media_type, depth + 1, platforms, read, visit);
                } else {
                    visit(Visit::Skipped(c));
                }
            }
        }
        Parsed::Manifest { config, layers } => {
            for b in std::iter::once(config).chain(layers) {
                visit(Visit::Blob(b));
            }
        }
    }
    let mt = oci::declared_media_type(&bytes).unwrap_or_else(|| media_type.to_string());
    visit(Visit::Manifest {
        digest: d,
        media_type: &mt,
        bytes: &bytes,
    });
}

/// A store that is an OCI layout directory (its `blobs/sha256/<hex>`):
/// absent files are not held.
pub fn read_layout(
    layout: &std::path::Path,
) -> impl FnMut(&Digest) -> std::io::Result<Option<Vec<u8>>> + use<> {
    let layout = layout.to_path_buf();
    move |d: &Digest| match std::fs::read(layout.join(d.blob_path())) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use std::collections::HashMap;

    fn desc(mt: &str, bytes: &[u8], platform: Option<&str>) -> serde_json::Value {
        let mut v = serde_json::json!({"mediaType": mt, "digest": Digest::of(bytes).to_string(), "size": bytes.len()});
        if let Some(p) = platform {
            let (os, arch) = p.split_once('/').unwrap();
            v["platform"] = serde_json::json!({"os": os, "architecture": arch});
        }
        v
    }

    /// An index of an amd64 and an arm64 image; the store holds the arm64
    /// image only when `with_arm` is set.
    fn store(with_arm: bool) -> (Digest, HashMap<Digest, Vec<u8>>) {
        let mut s = HashMap::new();
        let mut put = |b: Vec<u8>| {
            let d = Digest::of(&b);
            s.insert(d.clone(), b.clone());
            (d, b)
        };
        let (_, cfg) = put(b"{}".to_vec());
        let image = |layer: &[u8]| {
            serde_json::to_vec(
                &serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_MANIFEST,
                "config": desc(oci::DOCKER_CONFIG, &cfg, None),
                "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", layer, None)]}),
            )
            .unwrap()
        };
        let amd = image(b"amd-layer");
        let arm = image(b"arm-layer");
        put(amd.clone());
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "mediaType": oci::OCI_INDEX,
            "manifests": [desc(oci::OCI_MANIFEST, &amd, Some("linux/amd64")), desc(oci::OCI_MANIFEST, &arm, Some("linux/arm64"))]}))
        .unwrap();
        let (root, _) = put(index);
        if with_arm {
            put(arm);
        }
        (root, s)
    }

    fn seen(root: &Digest, s: &HashMap<Digest, Vec<u8>>, p: Platforms) -> Vec<String> {
        let mut out = Vec::new();
        walk(
            root,
            oci::OCI_INDEX,
            p,
            &mut |d| Ok(s.get(d).cloned()),
            &mut |v| {
                out.push(match v {
                    Visit::Manifest { media_type, .. } => format!("manifest {media_type}"),
                    Visit::Blob(b) => format!("blob {}", b.media_type),
                    Visit::Leaf { media_type, .. } => format!("leaf {media_type}"),
                    Visit::Skipped(c) => {
                        format!("skipped {}", c.platform.as_ref().unwrap().label())
                    }
                    Visit::Missing { root, .. } => format!("missing root={root}"),
                    Visit::Bad { why, .. } => format!("bad {why}"),
                })
            },
        );
        out
    }

    #[test]
    fn children_first_by_platform_missing_and_bad_said() {
        let (root, s) = store(false);
        let amd = [String::from("linux/amd64")];
        assert_eq!(
            seen(&root, &s, Platforms::Only(&amd)),
            [
                format!("blob {}", oci::DOCKER_CONFIG),
                "blob application/vnd.oci.image.layer.v1.tar+gzip".into(),
                format!("manifest {}", oci::OCI_MANIFEST),
                "skipped linux/arm64".into(),
                format!("manifest {}", oci::OCI_INDEX),
            ]
        );
        // Every platform wanted: the arm64 image the store lacks is missing.
        assert!(seen(&root, &s, Platforms::All).contains(&"missing root=false".to_string()));
        let (root, s) = store(true);
        assert!(
            !seen(&root, &s, Platforms::All)
                .iter()
                .any(|v| v.starts_with("missing"))
        );
        // A root the store lacks; a manifest whose bytes are not its digest.
        let absent = Digest::of(b"absent");
        assert_eq!(seen(&absent, &s, Platforms::All), ["missing root=true"]);
        let mut out = Vec::new();
        walk(
            &absent,
            oci::OCTET,
            Platforms::All,
            &mut |_| Ok(None),
            &mut |v| out.push(matches!(v, Visit::Leaf { .. })),
        );
        assert_eq!(out, [true]);
        let mut torn = s.clone();
        torn.insert(root.clone(), b"{\"manifests\": []}".to_vec());
        assert_eq!(
            seen(&root, &torn, Platforms::All),
            ["bad its bytes do not match its digest"]
        );
    }

    #[test]
    fn a_bundle_artifacts_platforms_decide() {
        let amd = [String::from("linux/amd64")];
        let d = |p: &str| -> Descriptor {
            serde_json::from_value(desc(oci::OCI_MANIFEST, b"x", Some(p))).unwrap()
        };
        assert!(Platforms::of(&amd, &amd).wants(&d("linux/amd64")));
        assert!(!Platforms::of(&amd, &amd).wants(&d("linux/arm64")));
        assert!(Platforms::of(&["all".into()], &amd).wants(&d("linux/arm64")));
        assert!(Platforms::of(&amd, &[]).wants(&d("linux/arm64")));
    }
}
