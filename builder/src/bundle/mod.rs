//! The bundle side: catalog + lock -> one verified, deduplicated bundle.
//! Resolving pins digests, fetching fills the content-addressed cache,
//! the writer lays out the directory or archive.

use crate::bundle::fetch::{Source, Want, fetch_all};
use crate::bundle::progress::count;
use crate::bundle::resolve::{ensure_lock, manifest_by_digest};
use crate::bundle::writer::{Contents, Files};
use airgap_bundle::catalog::{Artifact, Catalog};
use airgap_bundle::lock::LockedArtifact;
use airgap_bundle::manifest::*;
use airgap_bundle::oci::{self, Descriptor, LayoutIndex, Parsed};
use airgap_bundle::oci_walk::Platforms;
use airgap_bundle::{Digest, ImageRef, fsutil, sbom, sign};
use anyhow::{Context, Result, bail};
pub use ctx::{Common, Ctx};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::time::Instant;

pub mod cache;
mod ctx;
pub mod fetch;
pub mod progress;
pub mod registry;
pub mod resolve;
pub mod supply;
pub mod writer;

/// What one bundle build writes, and how.
#[derive(Debug)]
pub struct Options {
    pub lock: PathBuf,
    /// Re-resolve every artifact instead of using the lock.
    pub update: bool,
    pub out: PathBuf,
    /// `os/arch` platforms of images to keep, or `all`.
    pub platforms: Vec<String>,
    pub sign_key: Option<PathBuf>,
    pub volume_size: Option<u64>,
    pub zstd_level: i32,
    /// A delta: the site's inventory; what it holds is left out.
    pub since: Option<airgap_bundle::inventory::Inventory>,
}

/// One artifact, planned: its top manifest and every blob under it.
struct Planned {
    component: String,
    artifact: Artifact,
    locked: LockedArtifact,
    top: Descriptor,
    platforms: Vec<String>,
    /// (digest, size) of every blob, manifests included.
    blobs: Vec<(Digest, u64)>,
    /// Which of `blobs` are manifests or indexes: a delta always carries
    /// them, so it can be walked and verified without its base.
    manifests: BTreeSet<Digest>,
}

/// Walks an image (or OCI chart) from its locked digest; returns planned blobs and wanted fetches.
async fn plan_image(
    ctx: &Ctx,
    r: &ImageRef,
    l: &LockedArtifact,
    want_platforms: &[String],
    label: &str,
) -> Result<(Vec<(Digest, u64)>, Vec<Want>, Vec<String>, BTreeSet<Digest>)> {
    let top = manifest_by_digest(&ctx.net, &ctx.cache, r, &l.digest, label).await?;
    let mut blobs = vec![(l.digest.clone(), top.len() as u64)];
    let mut manifest_set = BTreeSet::from([l.digest.clone()]);
    let mut wants = Vec::new();
    let mut chosen = Vec::new();
    let mut manifests = Vec::new();
    match oci::parse_manifest(&top, &l.media_type)
        .with_context(|| format!("{label}: manifest {}", l.digest))?
    {
        Parsed::Index(children) => {
            // The children the bundle's one walk follows (`oci_walk`): so
            // what is fetched here is what verify and the node then expect.
            let policy = if want_platforms.iter().any(|p| p == "all") {
                Platforms::All
            } else {
                Platforms::Only(want_platforms)
            };
            let mut available = Vec::new();
            for c in children {
                let label_p = c
                    .platform
                    .as_ref()
                    .map(|p| p.label())
                    .unwrap_or_else(|| "unknown".into());
                available.push(label_p.clone());
                // Attestation manifests (buildkit's unknown/unknown) ride
                // along only with `all`.
                if policy.wants(&c) {
                    chosen.push(label_p);
                    manifests.push(c);
                }
            }
            if manifests.is_empty() {
                bail!(
                    "{label}: no manifest for {} (the index has {})",
                    want_platforms.join(", "),
                    available.join(", ")
                );
            }
        }
        Parsed::Manifest { config, layers } => {
            for d in std::iter::once(config).chain(layers) {
                blobs.push((d.digest.clone(), d.size));
                wants.push(Want {
                    digest: d.digest,
                    size: d.size,
                    source: crate::bundle::fetch::Source::Registry(r.clone()),
                    artifact: label.into(),
                });
            }
        }
    }
    for m in manifests {
        let b = manifest_by_digest(&ctx.net, &ctx.cache, r, &m.digest, label).await?;
        blobs.push((m.digest.clone(), b.len() as u64));
        manifest_set.insert(m.digest.clone());
        match oci::parse_manifest(&b, &m.media_type)
            .with_context(|| format!("{label}: manifest {}", m.digest))?
        {
            Parsed::Manifest { config, layers } => {
                for d in std::iter::once(config).chain(layers) {
                    blobs.push((d.digest.clone(), d.size));
                    wants.push(Want {
                        digest: d.digest,
                        size: d.size,
                        source: Source::Registry(r.clone()),
                        artifact: label.into(),
                    });
                }
            }
            Parsed::Index(_) => bail!("{label}: nested index {} is not supported", m.digest),
        }
    }
    Ok((blobs, wants, chosen, manifest_set))
}

/// Helm's OCI config is the chart's Chart.yaml as JSON.
fn chart_config(tgz: &[u8], label: &str) -> Result<Vec<u8>> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(tgz));
    for e in ar
        .entries()
        .with_context(|| format!("{label}: reading chart archive"))?
    {
        let mut e = e?;
        let path = e.path()?.to_string_lossy().to_string();
        if path.split('/').count() == 2 && path.ends_with("/Chart.yaml") {
            let mut s = String::new();
            e.read_to_string(&mut s)?;
            let v: serde_json::Value =
                serde_saphyr::from_str(&s).with_context(|| format!("{label}: parsing {path}"))?;
            return Ok(serde_json::to_vec(&v)?);
        }
    }
    bail!("{label}: the chart archive has no <chart>/Chart.yaml")
}

/// Stores a small JSON blob in the cache and describes it.
fn put_json_blob(ctx: &Ctx, media_type: &str, bytes: &[u8]) -> Result<Descriptor> {
    let d = Digest::of(bytes);
    ctx.cache.put(&d, bytes)?;
    Ok(Descriptor::new(media_type, d, bytes.len() as u64))
}

/// Files and HTTP charts become single-layer OCI artifacts, built from cached content.
fn synthesize(
    ctx: &Ctx,
    a: &Artifact,
    l: &LockedArtifact,
    label: &str,
) -> Result<(Descriptor, Vec<(Digest, u64)>)> {
    let (config, layer, artifact_type) = match a {
        Artifact::File(f) => (
            put_json_blob(ctx, oci::OCI_EMPTY, b"{}")?,
            Descriptor::new(oci::OCTET, l.digest.clone(), l.size)
                .annotated(oci::ANN_TITLE, &f.name()),
            Some(oci::KPAAS_FILE),
        ),
        Artifact::Chart(c) => {
            let tgz = ctx.cache.read(&l.digest)?;
            let title = format!(
                "{}-{}.tgz",
                c.chart_name(),
                c.version.as_deref().unwrap_or_default()
            );
            (
                put_json_blob(ctx, oci::HELM_CONFIG, &chart_config(&tgz, label)?)?,
                Descriptor::new(oci::HELM_CHART, l.digest.clone(), l.size)
                    .annotated(oci::ANN_TITLE, &title),
                None,
            )
        }
        Artifact::Image(_) => bail!("{label}: images are not synthesized"),
    };
    let m = oci::artifact_manifest(artifact_type, &config, &layer, &BTreeMap::new());
    let top = put_json_blob(ctx, oci::OCI_MANIFEST, &m)?;
    let blobs = vec![
        (top.digest.clone(), top.size),
        (config.digest, config.size),
        (layer.digest, layer.size),
    ];
    Ok((top, blobs))
}

pub struct Built {
    pub manifest: BundleManifest,
    pub fetched: u64,
    pub reused: u64,
    /// Seconds spent resolving and planning, fetching blobs, writing the output.
    pub phases: [f64; 3],
}

/// A delta is refused before anything is fetched when the site runs
/// another platform or a serial the catalog's is not above.
fn since_problems(catalog: &Catalog, inv: &airgap_bundle::inventory::Inventory) -> Result<()> {
    let mut problems = Vec::new();
    if inv.platform != catalog.platform.name {
        problems.push(format!(
            "--since: the site runs platform {:?}; the catalog is {:?} (a delta keeps the platform)",
            inv.platform, catalog.platform.name
        ));
    }
    if catalog.platform.serial <= inv.serial {
        problems.push(format!(
            "--since: the site runs serial {} ({}); the catalog's serial {} is not above it, so the site would refuse the bundle (raise `platform.serial` to {} or more)",
            inv.serial,
            inv.platform_version,
            catalog.platform.serial,
            inv.serial + 1
        ));
    }
    if !problems.is_empty() {
        bail!("no delta was built:\n  - {}", problems.join("\n  - "));
    }
    Ok(())
}

pub async fn build(ctx: &Ctx, catalog: &Catalog, args: &Options) -> Result<Built> {
    let t0 = Instant::now();
    if let Some(inv) = &args.since {
        since_problems(catalog, inv)?;
    }
    let lock = ensure_lock(ctx, catalog, &args.lock, args.update).await?;
    let platforms = args.platforms.clone();
    // Phase 1: manifests (small, may need the network), planned per artifact.
    let mut errors: Vec<String> = Vec::new();
    let mut planned: Vec<Option<Planned>> = Vec::new();
    let mut wants: Vec<Want> = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(ctx.jobs));
    for (i, (comp, a)) in catalog.artifacts().enumerate() {
        planned.push(None);
        let Some(l) = lock.artifacts.get(&a.key()).cloned() else {
            errors.push(format!("{}: not in the lock", a.key()));
            continue;
        };
        let (ctx, a, comp, sem) = (ctx.clone(), a.clone(), comp.clone(), sem.clone());
        let wanted = match &a {
            Artifact::Image(im) if !im.platforms.is_empty() => im.platforms.clone(),
            _ => platforms.clone(),
        };
        set.spawn(async move {
            let _p = sem.acquire_owned().await;
            let label = format!("{} {}", a.kind(), a.ref_name());
            let r: Result<(Planned, Vec<Want>)> = async {
                // (top, platforms, blobs, wants): images and OCI charts are walked
                // now; files and HTTP charts get their top and blobs once cached.
                let (top, platforms, blobs, wants, manifests) = match &a {
                    Artifact::Image(_) | Artifact::Chart(_) if l.media_type != oci::HELM_CHART => {
                        // The catalog names the source; a supplied image is already cached.
                        let r = match &a {
                            Artifact::Image(i) => ImageRef::parse(&i.reference)?,
                            Artifact::Chart(c) => ImageRef::parse(
                                c.oci
                                    .as_deref()
                                    .unwrap_or_default()
                                    .trim_start_matches("oci://"),
                            )?,
                            Artifact::File(_) => bail!("{label}: a file is not an image"),
                        };
                        let platforms: &[String] = if matches!(a, Artifact::Chart(_)) {
                            &[]
                        } else {
                            &wanted
                        };
                        let (blobs, w, chosen, manifests) =
                            plan_image(&ctx, &r, &l, platforms, &label).await?;
                        (
                            Descriptor::new(&l.media_type, l.digest.clone(), l.size),
                            chosen,
                            blobs,
                            w,
                            manifests,
                        )
                    }
                    _ => {
                        let w = Want {
                            digest: l.digest.clone(),
                            size: l.size,
                            source: Source::Url(l.source.clone()),
                            artifact: label.clone(),
                        };
                        (
                            Descriptor::new("", l.digest.clone(), 0),
                            vec![],
                            vec![],
                            vec![w],
                            BTreeSet::new(),
                        )
                    }
                };
                let planned = Planned {
                    component: comp.name.clone(),
                    artifact: a.clone(),
                    locked: l.clone(),
                    top,
                    platforms,
                    blobs,
                    manifests,
                };
                Ok((planned, wants))
            }
            .await;
            (i, r)
        });
    }
    while let Some(j) = set.join_next().await {
        match j {
            Ok((i, Ok((p, w)))) => {
                wants.extend(w);
                planned[i] = Some(p);
            }
            Ok((_, Err(e))) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(format!("planning task failed: {e}")),
        }
    }
    let t_plan = Instant::now();
    // A delta fetches no image blob the site holds: it is never written.
    // (Files and HTTP charts are fetched anyway: a chart's OCI config is
    // made from its archive.)
    if let Some(inv) = &args.since {
        wants.retain(|w| {
            !(matches!(w.source, Source::Registry(_)) && inv.blobs.contains(&w.digest))
        });
    }
    // Phase 2: every blob, in parallel. Sizes of cached blobs count as reused.
    let missing: Vec<&Want> = wants.iter().filter(|w| !ctx.cache.has(&w.digest)).collect();
    let mut seen_missing = BTreeSet::new();
    let missing_bytes: u64 = missing
        .iter()
        .filter(|w| seen_missing.insert(w.digest.clone()))
        .map(|w| w.size)
        .sum();
    ctx.progress
        .start_overall(missing_bytes, seen_missing.len() as u64);
    let fetch_errors = fetch_all(
        ctx.net.clone(),
        ctx.cache.clone(),
        wants,
        ctx.jobs,
        ctx.progress.clone(),
    )
    .await;
    ctx.progress.finish();
    errors.extend(fetch_errors.into_iter().map(|e| format!("{e:#}")));
    if !errors.is_empty() {
        errors.sort();
        errors.dedup();
        bail!(
            "{} problem(s) while fetching; nothing was written:\n  - {}",
            errors.len(),
            errors.join("\n  - ")
        );
    }
    let t_fetch = Instant::now();
    // Phase 3: synthesize file and chart artifacts now that their content is here.
    let mut done = Vec::new();
    for p in planned.into_iter().flatten() {
        let mut p = p;
        if p.blobs.is_empty() {
            let label = format!("{} {}", p.artifact.kind(), p.artifact.ref_name());
            let (top, blobs) = synthesize(ctx, &p.artifact, &p.locked, &label)?;
            p.manifests = BTreeSet::from([top.digest.clone()]);
            p.top = top;
            p.blobs = blobs;
        }
        done.push(p);
    }
    let created = lock.created.clone();
    let mtime = fsutil::parse_rfc3339(&created)
        .context("lock `created` is not RFC 3339 (YYYY-MM-DDTHH:MM:SSZ)")?;
    let (manifest, files) = assemble(catalog, &done, &platforms, &created, args)?;
    crate::bundle::writer::write_bundle(
        ctx,
        &args.out,
        &files,
        &manifest,
        mtime,
        args.volume_size,
        args.zstd_level,
    )?;
    Ok(Built {
        manifest,
        fetched: count(&ctx.progress.fetched),
        reused: count(&ctx.progress.reused),
        phases: [
            (t_plan - t0).as_secs_f64(),
            (t_fetch - t_plan).as_secs_f64(),
            t_fetch.elapsed().as_secs_f64(),
        ],
    })
}

fn assemble(
    catalog: &Catalog,
    done: &[Planned],
    platforms: &[String],
    created: &str,
    args: &Options,
) -> Result<(BundleManifest, Contents)> {
    let mut unique: BTreeMap<Digest, u64> = BTreeMap::new();
    let mut artifacts = Vec::new();
    let mut index = Vec::new();
    for p in done {
        let mut mine = BTreeMap::new();
        for (d, s) in &p.blobs {
            mine.insert(d.clone(), *s);
            unique.insert(d.clone(), *s);
        }
        let name = p.artifact.ref_name();
        index.push(p.top.clone().annotated(oci::ANN_REF_NAME, &name));
        let (content_digest, install_path, mode, arch) = match &p.artifact {
            Artifact::File(f) => (
                Some(p.locked.digest.clone()),
                f.install_path.clone(),
                f.mode.clone(),
                Some(f.arch.clone()),
            ),
            Artifact::Chart(_) if p.locked.media_type == oci::HELM_CHART => {
                (Some(p.locked.digest.clone()), None, None, None)
            }
            _ => (None, None, None, None),
        };
        artifacts.push(BundleArtifact {
            kind: p.artifact.kind().into(),
            component: p.component.clone(),
            name,
            source: p.locked.source.clone(),
            digest: p.top.digest.clone(),
            media_type: p.top.media_type.clone(),
            size: mine.values().sum(),
            platforms: p.platforms.clone(),
            content_digest,
            install_path,
            mode,
            arch,
            extract: match &p.artifact {
                Artifact::File(f) => f.extract.clone(),
                _ => BTreeMap::new(),
            },
            unverified: p.artifact.unverified(),
        });
    }
    // A delta leaves out what the site holds, except manifests.
    let manifests: BTreeSet<&Digest> = done.iter().flat_map(|p| &p.manifests).collect();
    let delta = args.since.as_ref().map(|inv| Delta {
        base: inv.base(),
        omitted: unique
            .iter()
            .filter(|(d, _)| inv.blobs.contains(*d) && !manifests.contains(d))
            .map(|(d, s)| OmittedBlob {
                digest: d.clone(),
                size: *s,
            })
            .collect(),
    });
    let layout = LayoutIndex {
        schema_version: 2,
        media_type: Some(oci::OCI_INDEX.into()),
        manifests: index,
    };
    let mut layout_bytes = serde_json::to_vec_pretty(&layout)?;
    layout_bytes.push(b'\n');
    let totals = Totals {
        artifacts: artifacts.len() as u64,
        blobs: unique.len() as u64,
        unique_bytes: unique.values().sum(),
        referenced_bytes: artifacts.iter().map(|a| a.size).sum(),
    };
    let mut m = BundleManifest {
        bundle_version: BUNDLE_VERSION,
        platform: catalog.platform.name.clone(),
        platform_version: catalog.platform.version.clone(),
        serial: catalog.platform.serial,
        created: created.into(),
        image_platforms: platforms.to_vec(),
        artifacts,
        files: BTreeMap::new(),
        totals,
        delta,
    };
    let catalog_bytes = {
        let mut v = serde_json::to_vec_pretty(catalog)?;
        v.push(b'\n');
        v
    };
    let bundle_id = Digest::of(&serde_json::to_vec(&m.artifacts)?);
    let sbom_bytes = {
        let mut v = serde_json::to_vec_pretty(&sbom::spdx(&m, &bundle_id.hex()[..16]))?;
        v.push(b'\n');
        v
    };
    m.files
        .insert(LAYOUT_INDEX.into(), Digest::of(&layout_bytes));
    m.files
        .insert(LAYOUT_MARKER.into(), Digest::of(oci::OCI_LAYOUT_FILE));
    m.files.insert(SBOM.into(), Digest::of(&sbom_bytes));
    m.files.insert(CATALOG.into(), Digest::of(&catalog_bytes));
    let bj = m.to_bytes();
    let mut files: Files = vec![(BUNDLE_JSON.into(), bj.clone())];
    if let Some(k) = &args.sign_key {
        let secret = std::fs::read_to_string(k)
            .with_context(|| format!("reading --sign-key {}", k.display()))?;
        files.push((
            SIGNATURE.into(),
            sign::sign(&secret, &bj)
                .with_context(|| format!("--sign-key {}", k.display()))?
                .into_bytes(),
        ));
    }
    let mut sums: BTreeMap<String, (Digest, u64)> = BTreeMap::new();
    sums.insert(BUNDLE_JSON.into(), (Digest::of(&bj), bj.len() as u64));
    sums.insert(SBOM.into(), (Digest::of(&sbom_bytes), 0));
    sums.insert(CATALOG.into(), (Digest::of(&catalog_bytes), 0));
    sums.insert(LAYOUT_INDEX.into(), (Digest::of(&layout_bytes), 0));
    sums.insert(LAYOUT_MARKER.into(), (Digest::of(oci::OCI_LAYOUT_FILE), 0));
    if let Some(d) = &m.delta {
        for b in &d.omitted {
            unique.remove(&b.digest);
        }
    }
    for (d, s) in &unique {
        sums.insert(format!("oci/{}", d.blob_path()), (d.clone(), *s));
    }
    files.push((CHECKSUMS.into(), checksum_list(&sums)));
    files.push((SBOM.into(), sbom_bytes));
    files.push((CATALOG.into(), catalog_bytes));
    files.push((LAYOUT_MARKER.into(), oci::OCI_LAYOUT_FILE.to_vec()));
    files.push((LAYOUT_INDEX.into(), layout_bytes));
    Ok((m, (files, unique)))
}
