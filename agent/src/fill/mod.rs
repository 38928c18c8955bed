//! The Harbor hand-off: every image and chart of the bundle pushed from the
//! node's own bundle (the seed's storage) into the platform's registry,
//! under the K-PaaS project and the seed's naming (`<project>/<source
//! registry>/<repository>`, so one runtime mirror path per source registry
//! serves from either), with the distribution API only:
//! - a blob the registry has is skipped (HEAD), so a second run after a
//!   crash sends only what is missing;
//! - a blob already sent to another repository is mounted from there
//!   (`POST …/blobs/uploads/?mount=&from=`) instead of sent again;
//! - blobs are read from disk and sent whole, or in chunks when large
//!   (bounded memory); a blob the seed registry has already hashed (a node
//!   pulled it) is not hashed again, every other one is hashed while read,
//!   so a corrupt one is never pushed;
//! - manifests are sent byte for byte (their digests must hold), children
//!   before their index, and each is read back: the registry's digest must
//!   be the bundle's;
//! - blobs go `jobs` at a time, then each artifact's mounts and manifests,
//!   `jobs` artifacts at a time: each is a request that waits for its
//!   answer, and one artifact after another those waits add up.
//!
//! Harbor's one extra call (make the project) is in [`ensure_project`]; plain
//! distribution has no projects.

use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest, LAYOUT_INDEX};
use airgap_bundle::oci::{self, LayoutIndex};
use airgap_bundle::oci_walk::{self, Platforms, Visit};
use airgap_bundle::{Digest, ImageRef};
use anyhow::{Context, Result, bail};
use reqwest::StatusCode;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::AsyncReadExt;

/// Blobs up to this size go in one PUT; larger ones in PATCH chunks of it.
const CHUNK: u64 = 32 << 20;

/// Where to push.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://host:port` (the in-cluster registry's NodePort).
    pub base: String,
    /// The K-PaaS project every repository goes under.
    pub project: String,
    /// Basic credentials (Harbor's admin); none for plain distribution.
    pub auth: Option<(String, String)>,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Report {
    pub artifacts: usize,
    pub manifests: usize,
    pub blobs_sent: usize,
    pub blobs_present: usize,
    pub blobs_mounted: usize,
    pub bytes_sent: u64,
    pub secs: f64,
}

impl Report {
    pub fn summary(&self) -> String {
        format!(
            "{} image(s)/chart(s), {} manifest(s) read back equal; blobs: {} sent ({:.1} MiB, {:.1} MiB/s), {} mounted, {} already there; {:.0} s",
            self.artifacts,
            self.manifests,
            self.blobs_sent,
            self.bytes_sent as f64 / (1 << 20) as f64,
            self.bytes_sent as f64 / (1 << 20) as f64 / self.secs.max(0.001),
            self.blobs_mounted,
            self.blobs_present,
            self.secs
        )
    }
}

/// One artifact to push: its repository in the target, the tag (None for
/// digest-only references), its top manifest, and every manifest and blob
/// below it.
#[derive(Debug)]
struct Plan {
    repo: String,
    tag: Option<String>,
    top: Digest,
    /// Children first, the top last: (digest, media type).
    manifests: Vec<(Digest, String)>,
    blobs: Vec<(Digest, u64)>,
}

/// The repository an artifact gets: `<project>/<registry>/<path>`.
pub fn target_repo(project: &str, r: &ImageRef) -> String {
    format!("{project}/{}", r.name())
}

fn plans(bundle: &Path, project: &str) -> Result<Vec<Plan>> {
    let m = BundleManifest::from_bytes(
        &std::fs::read(bundle.join(BUNDLE_JSON)).context("reading bundle.json")?,
    )?;
    let keep: BTreeMap<&str, &[String]> = m
        .artifacts
        .iter()
        .filter(|a| a.kind == "image" || a.kind == "chart")
        .map(|a| (a.name.as_str(), a.platforms.as_slice()))
        .collect();
    let idx: LayoutIndex = serde_json::from_slice(
        &std::fs::read(bundle.join(LAYOUT_INDEX)).context("reading the layout index")?,
    )?;
    let mut out = Vec::new();
    for d in &idx.manifests {
        let Some(name) = d.annotations.get(oci::ANN_REF_NAME) else {
            continue;
        };
        let Some(platforms) = keep.get(name.as_str()) else {
            continue;
        };
        let r = ImageRef::parse(name).with_context(|| format!("bundle artifact {name}"))?;
        let mut manifests = Vec::new();
        let mut blobs = Vec::new();
        walk(
            bundle,
            &d.digest,
            &d.media_type,
            Platforms::of(&m.image_platforms, platforms),
            &mut manifests,
            &mut blobs,
        )
        .with_context(|| format!("walking {name}"))?;
        out.push(Plan {
            repo: target_repo(project, &r),
            tag: r.tag.clone(),
            top: d.digest.clone(),
            manifests,
            blobs,
        });
    }
    Ok(out)
}

fn blob_path(bundle: &Path, d: &Digest) -> PathBuf {
    bundle.join("oci").join(d.blob_path())
}

/// An artifact's manifests (children first) and blobs, by the bundle's
/// one walk (`airgap_bundle::oci_walk`). An index child of a platform the
/// bundle was not made for is passed over (bundle verification, which ran
/// before, holds the bundle to its platforms).
fn walk(
    bundle: &Path,
    d: &Digest,
    media_type: &str,
    platforms: Platforms,
    manifests: &mut Vec<(Digest, String)>,
    blobs: &mut Vec<(Digest, u64)>,
) -> Result<()> {
    let mut problems = Vec::new();
    oci_walk::walk(
        d,
        media_type,
        platforms,
        &mut oci_walk::read_layout(&bundle.join("oci")),
        &mut |v| match v {
            Visit::Manifest {
                digest, media_type, ..
            } => manifests.push((digest.clone(), media_type.to_string())),
            Visit::Blob(b) => {
                if !blobs.iter().any(|(x, _)| x == &b.digest) {
                    blobs.push((b.digest.clone(), b.size));
                }
            }
            // Pushed with the blobs (a plain blob an index names).
            Visit::Leaf { digest, .. } => {
                if !blobs.iter().any(|(x, _)| x == digest) {
                    let size = std::fs::metadata(bundle.join("oci").join(digest.blob_path()))
                        .map_or(0, |m| m.len());
                    blobs.push((digest.clone(), size));
                }
            }
            Visit::Skipped(_) | Visit::Missing { root: false, .. } => {}
            Visit::Missing { digest, root: true } => {
                problems.push(format!("manifest {digest} is not in the bundle"))
            }
            Visit::Bad { digest, why } => problems.push(format!("manifest {digest}: {why}")),
        },
    );
    if problems.is_empty() {
        Ok(())
    } else {
        bail!("{}", problems.join("; "))
    }
}

struct Client {
    http: reqwest::Client,
    t: Target,
}

impl Client {
    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let url = if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.t.base)
        };
        let r = self.http.request(method, url);
        match &self.t.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    async fn has_blob(&self, repo: &str, d: &Digest) -> Result<bool> {
        let r = self
            .req(reqwest::Method::HEAD, &format!("/v2/{repo}/blobs/{d}"))
            .send()
            .await
            .with_context(|| format!("HEAD blob {d} in {repo}"))?;
        Ok(r.status() == StatusCode::OK)
    }

    /// Mounts `d` from `from`; false when the registry started an upload
    /// instead (it may refuse mounts), which is then cancelled.
    async fn mount(&self, repo: &str, d: &Digest, from: &str) -> Result<bool> {
        let r = self
            .req(
                reqwest::Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?mount={d}&from={from}"),
            )
            .send()
            .await
            .with_context(|| format!("mounting {d} into {repo}"))?;
        match r.status() {
            StatusCode::CREATED => Ok(true),
            StatusCode::ACCEPTED => {
                if let Some(loc) = location(&r) {
                    let _ = self.req(reqwest::Method::DELETE, &loc).send().await;
                }
                Ok(false)
            }
            s => bail!(
                "mounting {d} into {repo}: {s} {}",
                r.text().await.unwrap_or_default()
            ),
        }
    }

    /// Sends a blob from the bundle, hashing it as it is read unless it is
    /// `trusted` (already hashed by the seed registry on this node).
    async fn send_blob(
        &self,
        bundle: &Path,
        repo: &str,
        d: &Digest,
        size: u64,
        trusted: bool,
    ) -> Result<()> {
        let r = self
            .req(reqwest::Method::POST, &format!("/v2/{repo}/blobs/uploads/"))
            .send()
            .await
            .with_context(|| format!("starting the upload of {d} to {repo}"))?;
        if r.status() != StatusCode::ACCEPTED {
            bail!(
                "starting the upload of {d} to {repo}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        let mut loc = location(&r).with_context(|| format!("upload of {d}: no Location"))?;
        let path = blob_path(bundle, d);
        let mut f = tokio::fs::File::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))?;
        let mut hasher = airgap_bundle::digest::Hasher::new();
        let mut sent = 0u64;
        let mut last: Vec<u8> = Vec::new();
        loop {
            let mut buf = Vec::with_capacity(CHUNK.min(size.max(1)) as usize);
            (&mut f).take(CHUNK).read_to_end(&mut buf).await?;
            if !trusted {
                hasher.update(&buf);
            }
            let end = sent + buf.len() as u64 >= size;
            if end {
                last = buf;
                break;
            }
            if buf.is_empty() {
                break;
            }
            // The chunk moves into the request (no copy of up to 32 MiB):
            // only its length is needed after.
            let len = buf.len() as u64;
            let r = self
                .req(reqwest::Method::PATCH, &loc)
                .header("Content-Type", "application/octet-stream")
                .header("Content-Range", format!("{sent}-{}", sent + len - 1))
                .body(buf)
                .send()
                .await
                .with_context(|| format!("sending a chunk of {d}"))?;
            if r.status() != StatusCode::ACCEPTED {
                bail!(
                    "sending a chunk of {d} to {repo}: {} {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
            loc = location(&r).unwrap_or(loc);
            sent += len;
        }
        sent += last.len() as u64;
        // A trusted blob's digest was proved by the seed; its size is
        // still checked (the registry checks the digest on the PUT too).
        let got = if trusted { d.clone() } else { hasher.finish() };
        if &got != d || sent != size {
            bail!(
                "{} holds {sent} bytes hashing to {got}, not {size} bytes of {d}: the bundle is damaged; nothing of it was pushed",
                path.display()
            );
        }
        let sep = if loc.contains('?') { '&' } else { '?' };
        self.put_created(
            &format!("{loc}{sep}digest={d}"),
            "application/octet-stream",
            last,
            &format!("finishing the upload of {d} to {repo}"),
        )
        .await
    }

    /// A PUT the registry must answer 201 Created (a blob upload's end, a
    /// manifest); anything else fails with its status and body.
    async fn put_created(
        &self,
        url: &str,
        content_type: &str,
        body: Vec<u8>,
        what: &str,
    ) -> Result<()> {
        let r = self
            .req(reqwest::Method::PUT, url)
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .with_context(|| what.to_string())?;
        if r.status() != StatusCode::CREATED {
            bail!(
                "{what}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    async fn put_manifest(
        &self,
        bundle: &Path,
        repo: &str,
        d: &Digest,
        mt: &str,
        reference: &str,
    ) -> Result<()> {
        let bytes = tokio::fs::read(blob_path(bundle, d)).await?;
        if &Digest::of(&bytes) != d {
            bail!("manifest {d} in the bundle is damaged");
        }
        self.put_created(
            &format!("/v2/{repo}/manifests/{reference}"),
            mt,
            bytes,
            &format!("putting manifest {d} as {repo}:{reference}"),
        )
        .await
    }

    /// The digest the registry gives `repo:reference` now.
    async fn digest_of(&self, repo: &str, reference: &str, mt: &str) -> Result<String> {
        let r = self
            .req(
                reqwest::Method::HEAD,
                &format!("/v2/{repo}/manifests/{reference}"),
            )
            .header("Accept", format!("{mt}, {}", oci::MANIFEST_ACCEPT))
            .send()
            .await
            .with_context(|| format!("reading {repo}:{reference} back"))?;
        if r.status() != StatusCode::OK {
            bail!("reading {repo}:{reference} back: {}", r.status());
        }
        Ok(r.headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string())
    }
}

fn location(r: &reqwest::Response) -> Option<String> {
    r.headers()
        .get("Location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Harbor only: makes the project (public, so nodes pull without
/// credentials); one that exists is fine.
pub async fn ensure_project(t: &Target) -> Result<()> {
    let c = Client {
        http: reqwest::Client::new(),
        t: t.clone(),
    };
    let r = c
        .req(reqwest::Method::POST, "/api/v2.0/projects")
        .header("Content-Type", "application/json")
        .body(
            serde_json::json!({"project_name": t.project, "metadata": {"public": "true"}})
                .to_string(),
        )
        .send()
        .await
        .with_context(|| format!("making Harbor project {}", t.project))?;
    match r.status() {
        StatusCode::CREATED | StatusCode::CONFLICT => Ok(()),
        s => bail!(
            "making Harbor project {}: {s} {}",
            t.project,
            r.text().await.unwrap_or_default()
        ),
    }
}

/// Pushes every image and chart of the bundle into `t`, `jobs` requests at
/// a time, and reads every manifest back. Blobs in `trusted` were hashed
/// by this node's seed registry already and are not hashed again.
pub async fn fill(
    bundle: &Path,
    t: &Target,
    jobs: usize,
    trusted: &HashSet<Digest>,
) -> Result<Report> {
    let start = Instant::now();
    let plans = plans(bundle, &t.project)?;
    let c = Arc::new(Client {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(jobs.max(1))
            .build()
            .context("making the HTTP client")?,
        t: t.clone(),
    });
    let mut report = Report {
        artifacts: plans.len(),
        ..Report::default()
    };
    // Each blob's first repository gets the bytes; the others mount it.
    let mut first: BTreeMap<Digest, (String, u64)> = BTreeMap::new();
    for p in &plans {
        for (d, size) in &p.blobs {
            first.entry(d.clone()).or_insert((p.repo.clone(), *size));
        }
    }
    // 1. Every distinct blob once, `jobs` at a time.
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (d, (repo, size)) in first.clone() {
        let (c, sem, bundle) = (c.clone(), sem.clone(), bundle.to_path_buf());
        let trusted = trusted.contains(&d);
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            if c.has_blob(&repo, &d).await? {
                return Ok::<_, anyhow::Error>(Pushed::present());
            }
            c.send_blob(&bundle, &repo, &d, size, trusted).await?;
            Ok(Pushed::sent(size))
        });
    }
    collect(&mut tasks, &mut report, "blob(s) could not be pushed").await?;
    // 2. Per artifact, `jobs` at a time: its blobs whose bytes went to
    // another repository are mounted from there (sent if the registry
    // refuses), then its manifests, children first, each read back. An
    // artifact's manifests wait only for its own blobs, which phase 1
    // stored.
    let (first, trusted) = (Arc::new(first), Arc::new(trusted.clone()));
    for p in plans {
        let (c, sem, bundle) = (c.clone(), sem.clone(), bundle.to_path_buf());
        let (first, trusted) = (first.clone(), trusted.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let mut done = Pushed::default();
            for (d, size) in &p.blobs {
                let from = &first[d].0;
                if from == &p.repo || c.has_blob(&p.repo, d).await? {
                    done.present += usize::from(from != &p.repo);
                } else if c.mount(&p.repo, d, from).await? {
                    done.mounted += 1;
                } else {
                    c.send_blob(&bundle, &p.repo, d, *size, trusted.contains(d))
                        .await?;
                    done.sent += 1;
                    done.bytes += size;
                }
            }
            for (d, mt) in &p.manifests {
                let reference = match (&p.tag, d == &p.top) {
                    (Some(tag), true) => tag.clone(),
                    _ => d.to_string(),
                };
                c.put_manifest(&bundle, &p.repo, d, mt, &reference).await?;
                let got = c.digest_of(&p.repo, &reference, mt).await?;
                if got != d.as_str() {
                    bail!(
                        "{}:{reference} reads back as {got:?}, not {d}: the registry changed the manifest",
                        p.repo
                    );
                }
                done.manifests += 1;
            }
            Ok(done)
        });
    }
    collect(
        &mut tasks,
        &mut report,
        "image(s)/chart(s) could not be finished",
    )
    .await?;
    report.secs = start.elapsed().as_secs_f64();
    Ok(report)
}

/// Hashes every blob [`fill`] would send from `bundle`, `jobs` at a time,
/// and returns them as proven (for `fill`'s `trusted`), with the bytes
/// hashed and the seconds it took. Every damaged blob is named at once.
/// The `fill` subcommand's `--verify-first`: the push that follows does
/// nothing but read and send, so its rate is the registry's ingest with the
/// thinnest client this agent has.
pub async fn verify_first(bundle: &Path, jobs: usize) -> Result<(HashSet<Digest>, u64, f64)> {
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (d, size) in distinct_blobs(bundle)? {
        let (sem, path) = (sem.clone(), blob_path(bundle, &d));
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let shown = path.display().to_string();
            let (got, len) = tokio::task::spawn_blocking(move || {
                airgap_bundle::digest::hash_reader(std::fs::File::open(&path)?)
            })
            .await?
            .with_context(|| format!("reading {shown}"))?;
            if got != d || len != size {
                bail!("{shown} holds {len} bytes hashing to {got}, not {size} bytes of {d}");
            }
            Ok((d, size))
        });
    }
    let (mut proven, mut bytes, mut errors) = (HashSet::new(), 0, Vec::new());
    while let Some(r) = tasks.join_next().await {
        match r.map_err(anyhow::Error::from).and_then(|x| x) {
            Ok((d, size)) => {
                bytes += size;
                proven.insert(d);
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!(
            "{} blob(s) of the bundle are damaged or unreadable; nothing was pushed:\n  {}",
            errors.len(),
            errors.join("\n  ")
        );
    }
    Ok((proven, bytes, start.elapsed().as_secs_f64()))
}

/// What one task of [`fill`] did.
#[derive(Debug, Default)]
struct Pushed {
    sent: usize,
    bytes: u64,
    present: usize,
    mounted: usize,
    manifests: usize,
}

impl Pushed {
    fn present() -> Pushed {
        Pushed {
            present: 1,
            ..Pushed::default()
        }
    }

    fn sent(bytes: u64) -> Pushed {
        Pushed {
            sent: 1,
            bytes,
            ..Pushed::default()
        }
    }
}

/// Every task's outcome into `report`; all failures at once, after every
/// task has ended (none is left running against the registry).
async fn collect(
    tasks: &mut tokio::task::JoinSet<Result<Pushed>>,
    report: &mut Report,
    what: &str,
) -> Result<()> {
    let mut errors = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.map_err(anyhow::Error::from).and_then(|x| x) {
            Ok(p) => {
                report.blobs_sent += p.sent;
                report.bytes_sent += p.bytes;
                report.blobs_present += p.present;
                report.blobs_mounted += p.mounted;
                report.manifests += p.manifests;
            }
            Err(e) => errors.push(format!("{e:#}")),
        }
    }
    if !errors.is_empty() {
        bail!("{} {what}:\n  {}", errors.len(), errors.join("\n  "));
    }
    Ok(())
}

/// The bytes a fill into an empty registry sends: every distinct blob of
/// the bundle's images and charts once.
pub fn bytes_to_send(bundle: &Path) -> Result<u64> {
    Ok(distinct_blobs(bundle)?.values().sum())
}

/// Every distinct blob of the bundle's images and charts, with its size.
fn distinct_blobs(bundle: &Path) -> Result<BTreeMap<Digest, u64>> {
    let mut all = BTreeMap::new();
    for p in plans(bundle, "")? {
        all.extend(p.blobs);
    }
    Ok(all)
}

/// How fast the node's own seed registry serves the bundle's blobs (the
/// largest first, up to `budget` bytes, through its `/v2/<source
/// registry>/<repository>` paths), in bytes per second: the yardstick the
/// hand-off's push rate is judged against, measured in the same run.
pub async fn seed_read_rate(bundle: &Path, seed: &str, budget: u64) -> Result<(u64, f64)> {
    let plans = plans(bundle, "")?;
    let mut blobs: Vec<(u64, String, Digest)> = Vec::new();
    let mut seen = BTreeSet::new();
    for p in &plans {
        // The project prefix is empty here: the repo is `/<registry>/<path>`.
        let repo = p.repo.trim_start_matches('/').to_string();
        for (d, size) in &p.blobs {
            if seen.insert(d.clone()) {
                blobs.push((*size, repo.clone(), d.clone()));
            }
        }
    }
    blobs.sort_by_key(|b| std::cmp::Reverse(b.0));
    let http = reqwest::Client::new();
    let start = Instant::now();
    let mut read = 0u64;
    for (_, repo, d) in blobs {
        if read >= budget {
            break;
        }
        let mut r = http
            .get(format!("http://{seed}/v2/{repo}/blobs/{d}"))
            .send()
            .await
            .with_context(|| format!("reading {d} from the seed"))?;
        if !r.status().is_success() {
            bail!("reading {d} from the seed: {}", r.status());
        }
        while let Some(chunk) = r.chunk().await? {
            read += chunk.len() as u64;
        }
    }
    Ok((read, read as f64 / start.elapsed().as_secs_f64().max(0.001)))
}

/// Which of the bundle's images and charts the registry does not give back
/// with the bundle's digest (empty: it holds the whole bundle).
pub async fn verify(bundle: &Path, t: &Target) -> Result<Vec<String>> {
    let plans = plans(bundle, &t.project)?;
    let c = Client {
        http: reqwest::Client::new(),
        t: t.clone(),
    };
    let mut wrong = Vec::new();
    for p in &plans {
        let reference = p.tag.clone().unwrap_or_else(|| p.top.to_string());
        let mt = &p
            .manifests
            .last()
            .map(|(_, m)| m.clone())
            .unwrap_or_default();
        match c.digest_of(&p.repo, &reference, mt).await {
            Ok(d) if d == p.top.as_str() => {}
            Ok(d) => wrong.push(format!("{}:{reference} is {d}, not {}", p.repo, p.top)),
            Err(e) => wrong.push(format!("{e:#}")),
        }
    }
    Ok(wrong)
}

#[cfg(test)]
mod tests;
