//! Resolving: every catalog artifact pinned to a digest in the lock.

use super::ctx::{Common, Ctx};
use crate::bundle::cache::Cache;
use crate::bundle::fetch::{DigestMismatch, Source, Want, fetch_one};
use crate::bundle::progress::Progress;
use crate::bundle::registry::Net;
use airgap_bundle::catalog::{Artifact, Catalog};
use airgap_bundle::lock::{LOCK_VERSION, Lock, LockedArtifact};
use airgap_bundle::{Digest, ImageRef, fsutil, oci, platforms};
use anyhow::{Context, Result, bail};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A catalog from `--platform`: a built-in name, a catalog file, or a directory holding `catalog.yaml`.
pub fn load_catalog(platform: &str) -> Result<Catalog> {
    let p = Path::new(platform);
    let file = if p.is_dir() {
        p.join("catalog.yaml")
    } else {
        p.to_path_buf()
    };
    if file.is_file() {
        return Ok(Catalog::from_file(&file)?);
    }
    match platforms::builtin(platform) {
        Some(y) => Ok(Catalog::from_yaml(
            y,
            &format!("built-in platform {platform}"),
        )?),
        None => bail!(
            "--platform {platform:?}: no such catalog file or directory, and no built-in platform of that name (built in: {})",
            platforms::BUILTIN
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

pub fn lock_path(common: &Common, catalog: &Catalog) -> PathBuf {
    common
        .lock
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.lock", catalog.platform.name)))
}

/// Fetches a manifest by digest, from the cache when it is there.
pub async fn manifest_by_digest(
    net: &Net,
    cache: &Cache,
    r: &ImageRef,
    d: &Digest,
    artifact: &str,
) -> Result<Vec<u8>> {
    Ok(manifest_and_type_by_digest(net, cache, r, d, artifact)
        .await?
        .0)
}

/// [`manifest_by_digest`] with the registry's Content-Type, which is empty
/// when the cache answered (the cache keeps bytes, not headers).
async fn manifest_and_type_by_digest(
    net: &Net,
    cache: &Cache,
    r: &ImageRef,
    d: &Digest,
    artifact: &str,
) -> Result<(Vec<u8>, String)> {
    if cache.has(d) {
        return Ok((cache.read(d)?, String::new()));
    }
    if net.offline() {
        bail!(
            "not in the cache: manifest {d} of {artifact}; run without --offline on a connected machine"
        );
    }
    let (bytes, ct) = net.manifest(r, d.as_str()).await?;
    let got = Digest::of(&bytes);
    if &got != d {
        return Err(DigestMismatch {
            artifact: artifact.into(),
            source_name: r.name(),
            want: d.clone(),
            got,
        }
        .into());
    }
    cache.put(d, &bytes)?;
    Ok((bytes, ct))
}

/// What a fetched manifest is: its own `mediaType`, else the registry's
/// Content-Type `ct` (empty when the cache answered), else its shape.
fn manifest_media_type(bytes: &[u8], ct: String, label: &str) -> Result<String> {
    let valid = |mt: &str| oci::is_index(mt) || oci::is_manifest(mt);
    let media_type = match oci::declared_media_type(bytes) {
        Some(mt) => mt,
        // OCI makes the field optional (umoci and older buildah leave it
        // out): the registry's Content-Type then says what it is, and when
        // there is none (a cached manifest) or it is generic, the shape does.
        None if valid(&ct) => ct,
        None => match oci::media_type_from_shape(bytes) {
            Some(mt) => mt.to_string(),
            None => bail!(
                "{label}: the manifest names no mediaType, there is no manifest Content-Type to go by ({ct:?}), and it has neither `manifests` (an index) nor `config` and `layers` (an image manifest); valid media types: {}",
                oci::MANIFEST_ACCEPT
            ),
        },
    };
    if !valid(&media_type) {
        bail!(
            "{label}: {media_type:?} is not an image manifest or index media type (valid: {})",
            oci::MANIFEST_ACCEPT
        );
    }
    Ok(media_type)
}

async fn resolve_image(
    net: &Net,
    cache: &Cache,
    r: &ImageRef,
    pinned: Option<Digest>,
    label: &str,
) -> Result<LockedArtifact> {
    let (bytes, ct, digest) = match pinned.or(r.digest.clone()) {
        Some(d) => {
            let (b, ct) = manifest_and_type_by_digest(net, cache, r, &d, label).await?;
            (b, ct, d)
        }
        None => {
            let tag = r.tag.clone().unwrap_or_else(|| "latest".into());
            let (b, ct) = net.manifest(r, &tag).await?;
            let d = Digest::of(&b);
            cache.put(&d, &b)?;
            (b, ct, d)
        }
    };
    let media_type = manifest_media_type(&bytes, ct, label)?;
    Ok(LockedArtifact {
        digest,
        media_type,
        size: bytes.len() as u64,
        source: r.to_string(),
    })
}

#[derive(serde::Deserialize)]
struct RepoIndex {
    entries: BTreeMap<String, Vec<RepoEntry>>,
}

#[derive(serde::Deserialize)]
struct RepoEntry {
    version: String,
    #[serde(default)]
    urls: Vec<String>,
    #[serde(default)]
    digest: Option<String>,
}

fn join_url(base: &str, rel: &str) -> String {
    if rel.contains("://") {
        rel.to_string()
    } else {
        format!(
            "{}/{}",
            base.trim_end_matches('/'),
            rel.trim_start_matches('/')
        )
    }
}

/// Downloads a URL whose digest is known into the cache (verified).
async fn fetch_url(
    net: &Net,
    cache: &Cache,
    d: &Digest,
    url: &str,
    label: &str,
    p: &Progress,
) -> Result<()> {
    let w = Want {
        digest: d.clone(),
        size: 0,
        source: Source::Url(url.to_string()),
        artifact: label.to_string(),
    };
    fetch_one(net, cache, &w, p).await
}

pub async fn resolve_artifact(
    net: &Net,
    cache: &Cache,
    a: &Artifact,
    p: &Progress,
) -> Result<LockedArtifact> {
    let label = format!("{} {}", a.kind(), a.ref_name());
    match a {
        Artifact::Image(i) => {
            let r = ImageRef::parse(&i.reference)?;
            let pinned = i.digest.as_deref().map(Digest::parse).transpose()?;
            resolve_image(net, cache, &r, pinned, &label).await
        }
        Artifact::Chart(c) if c.oci.is_some() => {
            let r = ImageRef::parse(
                c.oci
                    .as_deref()
                    .unwrap_or_default()
                    .trim_start_matches("oci://"),
            )?;
            let pinned = c.digest.as_deref().map(Digest::parse).transpose()?;
            resolve_image(net, cache, &r, pinned, &label).await
        }
        Artifact::Chart(c) => {
            let repo = c.repo.as_deref().unwrap_or_default();
            let (name, version) = (
                c.name.as_deref().unwrap_or_default(),
                c.version.as_deref().unwrap_or_default(),
            );
            let idx_url = join_url(repo, "index.yaml");
            let text = net
                .get_small(&idx_url)
                .await
                .with_context(|| format!("resolving {label}"))?;
            let idx: RepoIndex =
                serde_saphyr::from_slice(&text).with_context(|| format!("parsing {idx_url}"))?;
            let entries = idx
                .entries
                .get(name)
                .with_context(|| format!("{label}: chart {name:?} is not in {idx_url}"))?;
            let e = entries
                .iter()
                .find(|e| e.version == version)
                .with_context(|| {
                    format!(
                        "{label}: version {version} is not in {idx_url} (it has {})",
                        entries
                            .iter()
                            .map(|e| e.version.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?;
            let url = join_url(
                repo,
                e.urls
                    .first()
                    .with_context(|| format!("{label}: index entry has no urls"))?,
            );
            let from_index = e
                .digest
                .as_deref()
                .map(Digest::from_hex)
                .transpose()
                .with_context(|| format!("{label}: digest in {idx_url}"))?;
            let from_catalog = c.digest.as_deref().map(Digest::parse).transpose()?;
            if let (Some(a), Some(b)) = (&from_index, &from_catalog)
                && a != b
            {
                bail!("{label}: the catalog pins {b} but {idx_url} lists {a}");
            }
            let digest = match from_catalog.or(from_index) {
                Some(d) => {
                    fetch_url(net, cache, &d, &url, &label, p).await?;
                    d
                }
                None => {
                    // Neither side names a digest: trust on first use, pinned from now on.
                    let b = net.get_small(&url).await?;
                    let d = Digest::of(&b);
                    cache.put(&d, &b)?;
                    d
                }
            };
            let size = cache.size(&digest).unwrap_or(0);
            Ok(LockedArtifact {
                digest,
                media_type: oci::HELM_CHART.into(),
                size,
                source: url,
            })
        }
        Artifact::File(f) => {
            let url = f
                .url
                .clone()
                .with_context(|| format!("{label} has no url"))?;
            let d = match &f.sha256 {
                Some(h) => {
                    let d = Digest::from_hex(h)?;
                    fetch_url(net, cache, &d, &url, &label, p).await?;
                    d
                }
                None => {
                    // An unverified file without a known digest: pinned on
                    // first download, from then on held to it by the lock.
                    let b = net
                        .get_small(&url)
                        .await
                        .with_context(|| format!("resolving {label}"))?;
                    let d = Digest::of(&b);
                    cache.put(&d, &b)?;
                    p.event("warning", json!({"artifact": label, "message": format!("warning: {label} has no sha256 in the catalog; pinned {} on first download", d.short())}));
                    d
                }
            };
            let size = cache.size(&d).unwrap_or(0);
            Ok(LockedArtifact {
                digest: d,
                media_type: oci::OCTET.into(),
                size,
                source: url,
            })
        }
    }
}

/// Whether a lock entry still answers the catalog's artifact.
fn still_valid(a: &Artifact, l: &LockedArtifact) -> bool {
    let pinned = match a {
        Artifact::Image(i) => i
            .digest
            .clone()
            .or_else(|| ImageRef::parse(&i.reference).ok()?.digest.map(String::from)),
        Artifact::Chart(c) => c.digest.clone(),
        Artifact::File(f) => f.sha256.as_ref().map(|h| format!("sha256:{h}")),
    };
    pinned.is_none_or(|p| p == l.digest.as_str())
}

/// Loads the lock (when present and not `--update`), resolving whatever the
/// catalog holds that the lock does not, and writes it back if it changed.
pub async fn ensure_lock(ctx: &Ctx, catalog: &Catalog, path: &Path, update: bool) -> Result<Lock> {
    let old = if !update && path.exists() {
        Some(Lock::read(path)?)
    } else {
        None
    };
    let mut lock = old.clone().unwrap_or_else(|| Lock {
        lock_version: LOCK_VERSION,
        platform: catalog.platform.name.clone(),
        platform_version: catalog.platform.version.clone(),
        created: fsutil::rfc3339(fsutil::now_unix()),
        artifacts: BTreeMap::new(),
    });
    let mut todo = Vec::new();
    let mut keep = BTreeMap::new();
    let mut unsupplied = Vec::new();
    for (_, a) in catalog.artifacts() {
        // A supply given now wins over the lock: the site brings its own.
        if let Some(path) = crate::bundle::supply::find(&ctx.supplies, a) {
            let l = crate::bundle::supply::supply(&ctx.cache, a, path)?;
            ctx.progress.event("supplied", json!({"artifact": a.key(), "digest": l.digest, "message": format!("supplied {} -> {}", a.key(), l.digest.short())}));
            keep.insert(a.key(), l);
            continue;
        }
        match lock.artifacts.get(&a.key()) {
            Some(l) if still_valid(a, l) => {
                keep.insert(a.key(), l.clone());
            }
            _ if a.supplied() => {
                unsupplied.push(format!("  - {} (--supply {}=PATH)", a.key(), a.key()))
            }
            _ => todo.push(a.clone()),
        }
    }
    let known: std::collections::BTreeSet<String> = catalog
        .artifacts()
        .flat_map(|(_, a)| [a.key(), a.ref_name()])
        .collect();
    let stray: Vec<&String> = ctx
        .supplies
        .keys()
        .filter(|k| !known.contains(*k))
        .collect();
    if !stray.is_empty() {
        bail!(
            "--supply {} matches no artifact of {} (use an artifact key such as {})",
            stray
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            catalog.platform.name,
            catalog
                .artifacts()
                .next()
                .map(|(_, a)| a.key())
                .unwrap_or_default()
        );
    }
    if !unsupplied.is_empty() {
        bail!(
            "{} artifact(s) cannot be downloaded and were not supplied; give each with --supply (an OCI layout or archive, a chart .tgz, a file):\n{}",
            unsupplied.len(),
            unsupplied.join("\n")
        );
    }
    if !todo.is_empty() && ctx.net.offline() {
        let list: Vec<String> = todo.iter().map(|a| format!("  - {}", a.key())).collect();
        bail!(
            "offline, and the lock {} does not pin these artifacts:\n{}",
            path.display(),
            list.join("\n")
        );
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(ctx.jobs));
    let mut set = tokio::task::JoinSet::new();
    for a in todo {
        let (net, cache, p, sem) = (
            ctx.net.clone(),
            ctx.cache.clone(),
            ctx.progress.clone(),
            sem.clone(),
        );
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let r = resolve_artifact(&net, &cache, &a, &p).await;
            if let Ok(l) = &r {
                p.event("resolved", json!({"artifact": a.key(), "digest": l.digest, "message": format!("resolved {} -> {}", a.key(), l.digest.short())}));
            }
            (a.key(), r)
        });
    }
    let mut errors = Vec::new();
    while let Some(j) = set.join_next().await {
        match j {
            Ok((k, Ok(l))) => {
                keep.insert(k, l);
            }
            Ok((k, Err(e))) => errors.push(format!("{k}: {e:#}")),
            Err(e) => errors.push(format!("resolve task failed: {e}")),
        }
    }
    if !errors.is_empty() {
        errors.sort();
        bail!(
            "could not resolve {} artifact(s):\n  - {}",
            errors.len(),
            errors.join("\n  - ")
        );
    }
    lock.artifacts = keep;
    lock.platform_version = catalog.platform.version.clone();
    if old.as_ref() != Some(&lock) {
        lock.write(path)?;
        ctx.progress.event(
            "lock_written",
            json!({"path": path, "message": format!("wrote {}", path.display())}),
        );
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    #[test]
    fn the_field_wins_then_the_content_type_then_the_shape() {
        let image = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
        let typed = |ct: &str| manifest_media_type(image, ct.into(), "image x").unwrap();
        // A manifest type from the registry beats the shape: the registry
        // checked the bytes against it at push, and a client pulls it so.
        assert_eq!(typed(oci::DOCKER_MANIFEST), oci::DOCKER_MANIFEST);
        for unhelpful in ["", "application/json", "application/octet-stream"] {
            assert_eq!(typed(unhelpful), oci::OCI_MANIFEST, "{unhelpful}");
        }
        let declared = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        assert_eq!(
            manifest_media_type(declared, oci::OCI_MANIFEST.into(), "image x").unwrap(),
            oci::OCI_INDEX
        );
        let e = manifest_media_type(br#"{"schemaVersion":1}"#, "".into(), "image x")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("image x: the manifest names no mediaType") && e.contains(oci::OCI_INDEX),
            "{e}"
        );
        let e = manifest_media_type(br#"{"mediaType":"text/plain"}"#, "".into(), "image x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"text/plain\" is not an image manifest"), "{e}");
    }
}
