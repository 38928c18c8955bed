//! `kpaas-builder check-offline`: proves every image the bundle's objects
//! ask for is in the bundle; lists any that would need the internet. Every
//! file artifact whose content is a manifest is read as it is; with the
//! cluster file, every release of the plan is rendered exactly as the agent
//! renders it before a wave (`airgap_bundle::render`: charts at the
//! bundle's Kubernetes version, manifests with their placeholders filled,
//! kustomizations with no network) and judged by the same verdict.
//! Without the cluster file the verdict is partial and the exit status
//! says so unless `--allow-partial`.

use crate::bundle::resolve::load_catalog;
use airgap_bundle::fsutil;
use airgap_bundle::kinds::{Install, chart::Chart};
use airgap_bundle::manifest::{BLOBS_DIR, BUNDLE_JSON, BundleManifest};
use airgap_bundle::offline::{self, Held, Verdict};
use airgap_bundle::plan::Release;
use airgap_bundle::reader::BundleSource;
use airgap_bundle::render::{self, Renderer};
use airgap_bundle::run::Host;
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    pub bundle: PathBuf,
    /// Render the plan's releases with this cluster file's values, as the
    /// site will. Without it charts get their defaults, kustomizations are
    /// not rendered, and the verdict is partial.
    #[arg(long)]
    pub cluster: Option<PathBuf>,
    /// Platform catalog for the plan (default: the cluster file's).
    #[arg(long, short)]
    pub platform: Option<String>,
    /// Exit 0 on a partial verdict when nothing it read is missing.
    #[arg(long)]
    pub allow_partial: bool,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let src = BundleSource::open(&a.bundle)?;
    let m = BundleManifest::from_bytes(&src.read_file(BUNDLE_JSON)?)?;
    let (scan, files) = offline::check(&src)?;
    let (rendered, failed) = render_releases(&a, &src, &m, &scan.held)?;
    let missing = files.missing.len() + rendered.missing.len();
    let partial = !rendered.partial.is_empty();
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "manifests": files,
                "rendered": rendered,
                "failed": failed,
                "verdict": if missing > 0 || !failed.is_empty() { "missing" } else if partial { "partial" } else { "complete" },
            }))?
        );
    } else {
        for f in files.missing.iter().chain(&rendered.missing) {
            eprintln!("MISSING {} in {} at {}: {}", f.image, f.file, f.at, f.why);
        }
        for f in &failed {
            eprintln!("NOT RENDERED {f}");
        }
        for n in &rendered.partial {
            eprintln!("partial: {n}");
        }
        println!(
            "{}: {} manifest file(s), {} image reference(s), {} missing",
            a.bundle.display(),
            files.checked.len(),
            files.references,
            files.missing.len()
        );
        println!(
            "{}: {} release(s) rendered, {} image reference(s), {} missing",
            a.bundle.display(),
            rendered.checked.len(),
            rendered.references,
            rendered.missing.len()
        );
        let verdict = if missing > 0 || !failed.is_empty() {
            format!(
                "FAILS: {missing} image reference(s) missing, {} release(s) not rendered",
                failed.len()
            )
        } else if partial {
            "PARTIAL: it does not cover what the site will apply (see above)".to_string()
        } else {
            "complete: every release of the plan rendered as the site will, nothing missing"
                .to_string()
        };
        println!("{}: verdict {verdict}", a.bundle.display());
    }
    let mut problems = Vec::new();
    if missing > 0 {
        problems.push(format!(
            "{missing} image reference(s) are not in the bundle"
        ));
    }
    if !failed.is_empty() {
        problems.push(format!("{} release(s) could not be rendered", failed.len()));
    }
    if partial && !a.allow_partial {
        problems.push(
            "the verdict is partial: give --cluster FILE (the site's cluster file) for the complete one, or --allow-partial to accept it"
                .into(),
        );
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("; "));
    }
    Ok(())
}

/// (component, release) pairs to render.
type Todo = Vec<(String, Release)>;

/// The plan's releases; without a cluster file, every bundled chart with
/// its defaults, and why that is partial.
fn releases(a: &Args, m: &BundleManifest, partial: &mut Vec<String>) -> Result<Todo> {
    let Some(path) = &a.cluster else {
        partial.push("no --cluster: charts rendered with their default values, kustomizations not rendered (the plan names their paths), manifests read without their placeholders filled".into());
        return Ok(m
            .artifacts
            .iter()
            .filter(|x| x.kind == "chart")
            .map(|x| {
                let short = x.name.rsplit('/').next().unwrap_or(&x.name);
                let release = short.split(':').next().unwrap_or(short).to_string();
                (
                    x.component.clone(),
                    Release {
                        item: Install::Chart(Chart {
                            chart: release.clone(),
                            release,
                            namespace: "default".into(),
                            set: Default::default(),
                        }),
                        artifact: x.name.clone(),
                    },
                )
            })
            .collect());
    };
    let cluster = crate::cmd::cluster::load(path)?;
    let catalog = load_catalog(a.platform.as_deref().unwrap_or(&cluster.platform))?;
    let plan = airgap_bundle::plan::build(&catalog, &cluster, Some(m))?;
    Ok(plan
        .steps
        .into_iter()
        .flat_map(|s| {
            let c = s.component;
            s.releases.into_iter().map(move |r| (c.clone(), r))
        })
        .collect())
}

/// The release's blobs, out of the bundle (one pass).
struct Extracted(BTreeMap<String, PathBuf>);

impl render::Inputs for Extracted {
    fn artifact(&self, name: &str) -> Result<Vec<u8>> {
        let p = self.0.get(name).with_context(|| {
            format!("{name} is listed in bundle.json but its blob is not in the bundle")
        })?;
        std::fs::read(p).with_context(|| format!("reading {}", p.display()))
    }
}

/// The plan's releases rendered and judged, and the ones that could not be
/// rendered (each with why: all are reported, not the first).
fn render_releases(
    a: &Args,
    src: &BundleSource,
    m: &BundleManifest,
    held: &Held,
) -> Result<(Verdict, Vec<String>)> {
    let mut verdict = Verdict::default();
    let todo = releases(a, m, &mut verdict.partial)?;
    let mut failed = Vec::new();
    // Only releases rendered from an artifact need the tools, and only
    // they can name an image.
    if !todo.iter().any(|(_, r)| r.artifact().is_some()) {
        return Ok((verdict, failed));
    }
    let kube_version = render::kubernetes_version(m)?;
    if kube_version.is_none() {
        verdict.partial.push(format!(
            "the bundle carries no {} image: charts were rendered at helm's default Kubernetes version, not the cluster's",
            render::APISERVER
        ));
    }
    // The tools are run here: this machine's architecture's.
    let arch = airgap_bundle::manifest::native_arch();
    let tool = |name: &str| m.file(name, arch).map(|x| x.name.clone());
    let helm = tool("helm").with_context(|| {
        format!("the bundle carries no helm for {arch}: its charts cannot be rendered here")
    })?;
    let kustomize = tool("kustomize");
    let mut want: Vec<String> = vec![helm.clone()];
    want.extend(kustomize.clone());
    want.extend(
        todo.iter()
            .filter_map(|(_, r)| r.artifact().map(str::to_string)),
    );
    let dir = tempfile::tempdir()?;
    let paths = extract(src, m, &want, &dir.path().join("blobs"))?;
    let exe = |name: &str| -> Result<String> {
        let p = paths.get(name).with_context(|| {
            format!("{name} is listed in bundle.json but its blob is not in the bundle")
        })?;
        fsutil::set_mode(p, 0o755)?;
        Ok(p.to_string_lossy().to_string())
    };
    let renderer = Renderer {
        runner: &Host,
        helm: exe(&helm)?,
        kustomize: kustomize.as_deref().map(exe).transpose()?,
        work: dir.path().join("work"),
        kube_version,
    };
    let inputs = Extracted(paths);
    for (component, r) in &todo {
        let Some(artifact) = r.artifact() else {
            continue;
        };
        let label = format!("{component}: {}", r.item.label(artifact));
        match renderer.release(&inputs, component, r) {
            Ok(Some(out)) => {
                verdict.read(held, &label, &String::from_utf8_lossy(&out.objects));
            }
            Ok(None) => {}
            Err(e) => failed.push(format!("{label}: {e:#}")),
        }
    }
    Ok((verdict, failed))
}

/// Copies the content blobs of the named artifacts out of the bundle (one
/// pass: a `.tar.zst` is read once), each to `dir/<hex>`.
fn extract(
    src: &BundleSource,
    m: &BundleManifest,
    names: &[String],
    dir: &Path,
) -> Result<BTreeMap<String, PathBuf>> {
    fsutil::create_dir(dir)?;
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
            let hex = path.rsplit('/').next().unwrap_or(path);
            if airgap_bundle::Digest::of(&bytes).hex() != hex {
                bail!("{path} in the bundle does not match its digest: the bundle is damaged (run verify)");
            }
            std::fs::write(&to, &bytes).with_context(|| format!("writing {}", to.display()))?;
            for n in names {
                out.insert(n.clone(), to.clone());
            }
        }
        Ok(())
    })?;
    Ok(out)
}
