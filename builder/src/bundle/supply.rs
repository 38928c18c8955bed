//! Artifacts a site brings itself (`--supply KEY=PATH`): a vendor's images
//! from an OCI layout or OCI archive, a chart `.tgz`, a binary. They enter the
//! cache verified, like anything fetched, and the lock records them as
//! `local:` sources.

use crate::bundle::cache::Cache;
use airgap_bundle::catalog::Artifact;
use airgap_bundle::lock::LockedArtifact;
use airgap_bundle::oci::{self, LayoutIndex};
use airgap_bundle::oci_walk::{self, Platforms, Visit};
use airgap_bundle::{Digest, ImageRef};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Parses `--supply KEY=PATH` (KEY: an artifact key or its reference name).
pub fn parse(list: &[String]) -> Result<BTreeMap<String, PathBuf>> {
    let mut m = BTreeMap::new();
    let mut bad = Vec::new();
    for s in list {
        match s.rsplit_once('=') {
            Some((k, p)) if !k.is_empty() && Path::new(p).exists() => {
                m.insert(k.to_string(), PathBuf::from(p));
            }
            Some((_, p)) if !p.is_empty() => bad.push(format!("--supply {s}: {p} does not exist")),
            _ => bad.push(format!("--supply {s}: want KEY=PATH, e.g. image:vendor.k-paas.local/cp-portal-repository/cp-portal-ui:latest=./portal-images/")),
        }
    }
    if !bad.is_empty() {
        bail!("{}", bad.join("\n"));
    }
    Ok(m)
}

/// The supply given for an artifact, by key or reference name.
pub fn find<'a>(supplies: &'a BTreeMap<String, PathBuf>, a: &Artifact) -> Option<&'a PathBuf> {
    supplies
        .get(&a.key())
        .or_else(|| supplies.get(&a.ref_name()))
}

fn local(path: &Path) -> String {
    format!("local:{}", path.display())
}

pub fn supply(cache: &Cache, a: &Artifact, path: &Path) -> Result<LockedArtifact> {
    let label = a.key();
    match a {
        Artifact::File(f) => {
            let want = f.sha256.as_deref().map(Digest::from_hex).transpose()?;
            let (digest, size) = cache
                .put_path(path, want.as_ref())
                .with_context(|| format!("supplying {label}"))?;
            Ok(LockedArtifact {
                digest,
                media_type: oci::OCTET.into(),
                size,
                source: local(path),
            })
        }
        Artifact::Chart(c) => {
            let want = c.digest.as_deref().map(Digest::parse).transpose()?;
            let (digest, size) = cache
                .put_path(path, want.as_ref())
                .with_context(|| format!("supplying {label}"))?;
            Ok(LockedArtifact {
                digest,
                media_type: oci::HELM_CHART.into(),
                size,
                source: local(path),
            })
        }
        Artifact::Image(i) => {
            let r = ImageRef::parse(&i.reference)?;
            // An OCI archive is an OCI layout in a tar: unpack it first.
            let unpacked;
            let dir = if path.is_dir() {
                path.to_path_buf()
            } else {
                unpacked = tempfile::tempdir()?;
                tar::Archive::new(std::fs::File::open(path)?)
                    .unpack(unpacked.path())
                    .with_context(|| {
                        format!(
                            "{label}: {} is neither an OCI layout directory nor an OCI archive",
                            path.display()
                        )
                    })?;
                unpacked.path().to_path_buf()
            };
            let idx: LayoutIndex = serde_json::from_slice(
                &std::fs::read(dir.join("index.json")).with_context(|| {
                    format!(
                        "{label}: {} has no index.json (not an OCI layout)",
                        path.display()
                    )
                })?,
            )?;
            let want_names = [
                r.to_string(),
                r.tag.clone().unwrap_or_default(),
                i.reference.clone(),
            ];
            let named: Vec<_> = idx
                .manifests
                .iter()
                .filter(|d| {
                    d.annotations
                        .get(oci::ANN_REF_NAME)
                        .is_some_and(|n| want_names.contains(n))
                })
                .collect();
            let top = match (named.as_slice(), idx.manifests.as_slice()) {
                ([one], _) => (*one).clone(),
                ([], [only]) => only.clone(),
                _ => bail!(
                    "{label}: {} holds {} images; name the one wanted with the ref name {}",
                    path.display(),
                    idx.manifests.len(),
                    r
                ),
            };
            // Copy the whole tree in (the one walk, every platform), each
            // blob checked against its digest as it is stored.
            let mut copied: Result<()> = Ok(());
            let mut copy = |d: &Digest| {
                if copied.is_ok() {
                    copied = cache
                        .put_path(&dir.join(d.blob_path()), Some(d))
                        .map(|_| ())
                        .with_context(|| format!("{label}: blob {d}"));
                }
            };
            let mut wrong = Vec::new();
            oci_walk::walk(
                &top.digest,
                &top.media_type,
                Platforms::All,
                &mut oci_walk::read_layout(&dir),
                &mut |v| match v {
                    Visit::Manifest { digest, .. } | Visit::Leaf { digest, .. } => copy(digest),
                    Visit::Blob(b) => copy(&b.digest),
                    Visit::Skipped(_) => {}
                    Visit::Missing { digest, .. } => {
                        wrong.push(format!("manifest {digest} is not in {}", path.display()))
                    }
                    Visit::Bad { digest, why } => wrong.push(format!("manifest {digest}: {why}")),
                },
            );
            if !wrong.is_empty() {
                bail!("{label}: {}", wrong.join("; "));
            }
            copied?;
            if let Some(pin) = &i.digest
                && pin != top.digest.as_str()
            {
                bail!(
                    "{label}: the supplied image is {}, the catalog pins {pin}",
                    top.digest
                );
            }
            Ok(LockedArtifact {
                digest: top.digest,
                media_type: top.media_type,
                size: top.size,
                source: local(path),
            })
        }
    }
}
