//! `kpaas-builder check-offline`: proves every image the bundle's objects
//! ask for is in the bundle; lists any that would need the internet. Plain
//! manifests are read as they are; charts are rendered with the bundle's own
//! helm (`helm template`, hooks included) and kustomizations with its own
//! kustomize, with the plan's values when a cluster file is given: the
//! objects checked are the ones the agent will apply.

use crate::bundle::resolve::load_catalog;
use airgap_bundle::manifest::{BLOBS_DIR, BUNDLE_JSON, BundleManifest};
use airgap_bundle::offline::{self, Finding, Held};
use airgap_bundle::plan::Release;
use airgap_bundle::reader::BundleSource;
use airgap_bundle::run::Host;
use airgap_bundle::{fsutil, render};
use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub bundle: PathBuf,
    /// Render the plan's releases with this cluster file's values; without
    /// it every bundled chart is rendered with its defaults (and
    /// kustomizations, whose path the plan names, are not).
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// Platform catalog for the plan (default: the cluster file's).
    #[arg(long, short)]
    pub platform: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct RenderReport {
    /// What was rendered: "chart X as ns/release", "kustomization F/P".
    rendered: Vec<String>,
    references: usize,
    missing: Vec<Finding>,
    /// Why something was not rendered.
    notes: Vec<String>,
}

/// The native architecture's tools: check-offline runs them here.
const HOST_ARCH: &str = "amd64";

pub fn run(a: Args) -> Result<()> {
    let src = BundleSource::open(&a.bundle)?;
    let files = offline::check(&src)?;
    let rendered = render_releases(&a, &src)?;
    let missing = files.missing.len() + rendered.missing.len();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "manifests": files,
                "rendered": rendered,
            }))?
        );
    } else {
        for f in files.missing.iter().chain(&rendered.missing) {
            eprintln!("MISSING {} in {} at {}: {}", f.image, f.file, f.at, f.why);
        }
        for n in &rendered.notes {
            eprintln!("note: {n}");
        }
        println!(
            "{}: {} manifest file(s), {} image reference(s), {} missing",
            a.bundle.display(),
            files.files,
            files.references,
            files.missing.len()
        );
        println!(
            "{}: {} chart(s) and kustomization(s) rendered, {} image reference(s), {} missing",
            a.bundle.display(),
            rendered.rendered.len(),
            rendered.references,
            rendered.missing.len()
        );
    }
    if missing > 0 {
        bail!("{missing} image reference(s) are not in the bundle");
    }
    Ok(())
}

/// The releases to render: the plan's (charts and kustomizations; plain
/// manifests are checked as files), or every chart with its defaults.
/// (component, release) pairs to render, and notes on what is not.
type Todo = (Vec<(String, Release)>, Vec<String>);

fn releases(a: &Args, m: &BundleManifest) -> Result<Todo> {
    let mut notes = Vec::new();
    let Some(path) = &a.cluster else {
        notes.push("no --cluster: charts rendered with their default values; kustomizations need the plan to know their path".into());
        let charts = m
            .artifacts
            .iter()
            .filter(|x| x.kind == "chart")
            .map(|x| {
                let short = x.name.rsplit('/').next().unwrap_or(&x.name);
                let release = short.split(':').next().unwrap_or(short).to_string();
                (
                    x.component.clone(),
                    Release::Chart {
                        release,
                        namespace: "default".into(),
                        artifact: x.name.clone(),
                        values: serde_json::json!({}),
                    },
                )
            })
            .collect();
        return Ok((charts, notes));
    };
    let cluster = crate::cmd::cluster::load(path)?;
    let catalog = load_catalog(a.platform.as_deref().unwrap_or(&cluster.platform))?;
    let plan = airgap_bundle::plan::build(&catalog, &cluster, Some(m))?;
    Ok((
        plan.steps
            .into_iter()
            .flat_map(|s| {
                let c = s.component;
                s.releases
                    .into_iter()
                    .filter(|r| matches!(r, Release::Chart { .. } | Release::Kustomize { .. }))
                    .map(move |r| (c.clone(), r))
            })
            .collect(),
        notes,
    ))
}

fn render_releases(a: &Args, src: &BundleSource) -> Result<RenderReport> {
    let m = BundleManifest::from_bytes(&src.read_file(BUNDLE_JSON)?)?;
    let (todo, notes) = releases(a, &m)?;
    let mut report = RenderReport {
        rendered: Vec::new(),
        references: 0,
        missing: Vec::new(),
        notes,
    };
    if todo.is_empty() {
        return Ok(report);
    }
    // The blobs needed, by artifact name: the tools and what is rendered.
    let tool = |name: &str| {
        m.file(name, HOST_ARCH)
            .map(|x| x.name.clone())
            .with_context(|| format!("the bundle carries no {name} for {HOST_ARCH}: its charts and kustomizations cannot be rendered here"))
    };
    let mut want: Vec<String> = vec![tool("helm")?];
    let kustomize = todo
        .iter()
        .any(|(_, r)| matches!(r, Release::Kustomize { .. }));
    if kustomize {
        want.push(tool("kustomize")?);
    }
    want.extend(
        todo.iter()
            .filter_map(|(_, r)| r.artifact().map(str::to_string)),
    );
    let dir = tempfile::tempdir()?;
    let paths = extract(src, &m, &want, dir.path())?;
    let path = |name: &str| -> Result<&PathBuf> {
        paths.get(name).with_context(|| {
            format!("{name} is listed in bundle.json but its blob is not in the bundle")
        })
    };
    let helm = path(&want[0])?.to_string_lossy().to_string();
    fsutil::set_mode(Path::new(&helm), 0o755)?;
    let kustomize = if kustomize {
        let k = path(&want[1])?.to_string_lossy().to_string();
        fsutil::set_mode(Path::new(&k), 0o755)?;
        k
    } else {
        String::new()
    };
    let held = Held::of(&m);
    let home = dir.path().join("helm");
    for (component, r) in &todo {
        let (label, yaml) = match r {
            Release::Chart {
                release,
                namespace,
                artifact,
                values,
            } => {
                let vals = dir
                    .path()
                    .join(format!("{component}-{release}.values.json"));
                std::fs::write(&vals, serde_json::to_vec(values)?)?;
                let label = format!("chart {artifact} as {namespace}/{release}");
                let out = render::chart(
                    &Host,
                    &helm,
                    &home,
                    release,
                    namespace,
                    path(artifact)?,
                    &vals,
                )
                .with_context(|| format!("{component}: rendering {label}"))?;
                (label, out)
            }
            Release::Kustomize {
                file,
                path: at,
                artifact,
            } => {
                let label = format!("kustomization {file}/{at}");
                let tree = dir.path().join(format!("{component}-tree"));
                let out = render::kustomization(&Host, &kustomize, path(artifact)?, &tree, at)
                    .with_context(|| format!("{component}: rendering {label}"))?;
                (label, out)
            }
            Release::Manifest { .. }
            | Release::Fill { .. }
            | Release::VaultInit { .. }
            | Release::VaultCluster { .. }
            | Release::DefaultStorageClass { .. }
            | Release::Secret { .. } => continue,
        };
        let (n, missing) = held.findings(
            &format!("{component}: {label}"),
            &String::from_utf8_lossy(&yaml),
        );
        report.references += n;
        report.missing.extend(missing);
        report.rendered.push(label);
    }
    Ok(report)
}

/// Copies the content blobs of the named artifacts out of the bundle (one
/// pass: a `.tar.zst` is read once), each to `dir/<hex>`.
fn extract(
    src: &BundleSource,
    m: &BundleManifest,
    names: &[String],
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>> {
    let mut by_blob: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in names {
        let a = m
            .artifacts
            .iter()
            .find(|a| &a.name == n)
            .with_context(|| format!("the bundle holds no artifact {n}"))?;
        let d = a.content_blob(|d| src.read_file(&format!("{BLOBS_DIR}{}", d.hex())))?;
        by_blob
            .entry(format!("{BLOBS_DIR}{}", d.hex()))
            .or_default()
            .push(n.clone());
    }
    let mut out = BTreeMap::new();
    src.for_each(|path, _, r| {
        if let Some(names) = by_blob.get(path) {
            let to = dir.join(path.rsplit('/').next().unwrap_or(path));
            let mut bytes = Vec::new();
            r.read_to_end(&mut bytes)?;
            std::fs::write(&to, &bytes).with_context(|| format!("writing {}", to.display()))?;
            for n in names {
                out.insert(n.clone(), to.clone());
            }
        }
        Ok(())
    })?;
    Ok(out)
}
