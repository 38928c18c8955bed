//! The seed registry: a read-only OCI Distribution API over the bundle's OCI
//! layout, serving every artifact under its upstream name
//! (`/v2/<source-registry>/<repository>`), so runtime mirrors need no
//! rewriting. Manifests are hashed when the server loads; every other blob is
//! hashed before its first byte is served, and a blob that fails is never
//! served.

use airgap_bundle::manifest::{BLOBS_DIR, LAYOUT_INDEX};
use airgap_bundle::oci::{self, LayoutIndex};
use airgap_bundle::oci_walk::{self, Bad, Platforms, Visit};
use airgap_bundle::{Digest, ImageRef};
use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One repository: its tags and every digest it may serve.
#[derive(Default)]
struct Repo {
    tags: BTreeMap<String, Digest>,
    digests: HashSet<Digest>,
}

pub struct Seed {
    /// The bundles served, in order: a blob is read from the first that
    /// has it (while an update runs, the new bundle and the old one).
    roots: Vec<PathBuf>,
    repos: BTreeMap<String, Repo>,
    /// Manifest bytes (small, verified at load) and their media types.
    manifests: HashMap<Digest, (Vec<u8>, String)>,
    /// Which artifacts use a blob, for naming them in logs.
    users: HashMap<Digest, BTreeSet<String>>,
    verified: Mutex<HashSet<Digest>>,
    bad: Mutex<HashSet<Digest>>,
    inflight: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

/// What a walk of one artifact found, kept until the walk is over.
enum Found {
    Manifest(Digest, Vec<u8>, String),
    Blob(Digest),
}

impl Seed {
    /// Loads the layout: every named artifact, every manifest (hashed now).
    pub fn load(bundle: &Path) -> Result<Seed> {
        let idx_path = bundle.join(LAYOUT_INDEX);
        let idx: LayoutIndex = serde_json::from_slice(
            &std::fs::read(&idx_path).with_context(|| format!("reading {}", idx_path.display()))?,
        )
        .with_context(|| format!("parsing {}", idx_path.display()))?;
        let mut seed = Seed {
            roots: vec![bundle.to_path_buf()],
            repos: BTreeMap::new(),
            manifests: HashMap::new(),
            users: HashMap::new(),
            verified: Mutex::default(),
            bad: Mutex::default(),
            inflight: Mutex::default(),
        };
        let mut problems = Vec::new();
        for d in &idx.manifests {
            let Some(name) = d.annotations.get(oci::ANN_REF_NAME) else {
                continue;
            };
            let r = match ImageRef::parse(name) {
                Ok(r) => r,
                Err(e) => {
                    problems.push(format!("{name}: {e}"));
                    continue;
                }
            };
            let repo_name = r.name();
            let mut digests = HashSet::new();
            // Walk the artifact (the bundle's one walk): manifests are
            // loaded and hashed now, blobs' sizes checked, their contents
            // on first read. Every platform is followed; an index child the
            // bundle was not made for is passed over (verify, which ran
            // before, holds the bundle to its platforms).
            let root = bundle.join("oci");
            let mut found = Vec::new();
            oci_walk::walk(
                &d.digest,
                &d.media_type,
                Platforms::All,
                &mut oci_walk::read_layout(&root),
                &mut |v| match v {
                    Visit::Manifest {
                        digest,
                        media_type,
                        bytes,
                    } => found.push(Found::Manifest(
                        digest.clone(),
                        bytes.to_vec(),
                        media_type.to_string(),
                    )),
                    Visit::Blob(l) => {
                        match std::fs::metadata(root.join(l.digest.blob_path())) {
                            Err(_) => {
                                problems.push(format!("{name}: blob {} is missing", l.digest))
                            }
                            Ok(m) if m.len() != l.size => problems.push(format!(
                                "{name}: blob {} is {} bytes, its descriptor says {}",
                                l.digest,
                                m.len(),
                                l.size
                            )),
                            Ok(_) => {}
                        }
                        found.push(Found::Blob(l.digest.clone()));
                    }
                    Visit::Leaf { digest, .. } => found.push(Found::Blob(digest.clone())),
                    Visit::Skipped(_) | Visit::Missing { root: false, .. } => {}
                    Visit::Missing { digest, root: true } => {
                        problems.push(format!("{name}: manifest {digest} is not in the bundle"))
                    }
                    Visit::Bad {
                        digest,
                        why: Bad::NotItsDigest,
                    } => problems.push(format!("{name}: manifest {digest} is corrupt")),
                    Visit::Bad { digest, why } => {
                        problems.push(format!("{name}: manifest {digest}: {why}"))
                    }
                },
            );
            for f in found {
                let dg = match f {
                    Found::Blob(dg) => dg,
                    Found::Manifest(dg, bytes, mt) => {
                        seed.verified
                            .lock()
                            .map_err(|_| anyhow::anyhow!("lock poisoned"))?
                            .insert(dg.clone());
                        seed.manifests.insert(dg.clone(), (bytes, mt));
                        dg
                    }
                };
                seed.users
                    .entry(dg.clone())
                    .or_default()
                    .insert(name.clone());
                digests.insert(dg);
            }
            let repo = seed.repos.entry(repo_name).or_default();
            if let Some(t) = &r.tag {
                repo.tags.insert(t.clone(), d.digest.clone());
            }
            repo.digests.extend(digests);
        }
        if !problems.is_empty() {
            bail!(
                "the bundle cannot be served:\n  - {}",
                problems.join("\n  - ")
            );
        }
        Ok(seed)
    }

    /// Several bundles as one registry: the first to name a tag wins it,
    /// every digest of each stays served (an update serves its new bundle
    /// first and the old one behind it until it is done).
    pub fn load_all(bundles: &[PathBuf]) -> Result<Seed> {
        let Some((first, rest)) = bundles.split_first() else {
            bail!("no bundle to serve");
        };
        let mut seed = Seed::load(first)?;
        for b in rest {
            let other = Seed::load(b)?;
            for (name, repo) in other.repos {
                let mine = seed.repos.entry(name).or_default();
                for (t, d) in repo.tags {
                    mine.tags.entry(t).or_insert(d);
                }
                mine.digests.extend(repo.digests);
            }
            for (d, m) in other.manifests {
                seed.manifests.entry(d).or_insert(m);
            }
            for (d, u) in other.users {
                seed.users.entry(d).or_default().extend(u);
            }
            seed.roots.push(b.clone());
        }
        Ok(seed)
    }

    /// The bundles it serves.
    pub fn roots(&self) -> &[PathBuf] {
        &self.roots
    }

    /// Marks blobs as verified (after a full verification at boot).
    pub fn trust_all(&self) {
        if let Ok(mut v) = self.verified.lock() {
            v.extend(self.users.keys().cloned());
        }
    }

    /// The blobs hashed and found intact so far (on first read, or all of
    /// them after a full verification).
    pub fn verified_blobs(&self) -> HashSet<Digest> {
        self.verified.lock().map(|v| v.clone()).unwrap_or_default()
    }

    pub fn repositories(&self) -> impl Iterator<Item = &String> {
        self.repos.keys()
    }

    /// Whether the seed serves `reference` (`registry/repo:tag` or
    /// `registry/repo@sha256:…`) as a runtime would ask for it.
    pub fn holds(&self, reference: &str) -> bool {
        let Ok(r) = ImageRef::parse(reference) else {
            return false;
        };
        let Some(repo) = self.repos.get(&r.name()) else {
            return false;
        };
        match (&r.digest, &r.tag) {
            (Some(d), _) => repo.digests.contains(d),
            (None, Some(t)) => repo.tags.contains_key(t),
            (None, None) => repo.tags.contains_key("latest"),
        }
    }

    /// The tags the seed serves for one repository (`registry/repo`).
    pub fn tags(&self, repository: &str) -> Vec<String> {
        self.repos
            .get(repository)
            .map(|r| r.tags.keys().cloned().collect())
            .unwrap_or_default()
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        let at = |r: &PathBuf| r.join(format!("{BLOBS_DIR}{}", d.hex()));
        self.roots
            .iter()
            .map(at)
            .find(|p| p.is_file())
            .unwrap_or_else(|| at(&self.roots[0]))
    }

    /// Hashes a blob before its first byte leaves; one hashing per blob even
    /// with many clients asking at once.
    async fn ensure_verified(&self, d: &Digest) -> Result<(), String> {
        let done = |s: &Mutex<HashSet<Digest>>| s.lock().map(|v| v.contains(d)).unwrap_or(false);
        if done(&self.verified) {
            return Ok(());
        }
        let gate = {
            let mut m = self
                .inflight
                .lock()
                .map_err(|_| "lock poisoned".to_string())?;
            m.entry(d.clone()).or_default().clone()
        };
        let _g = gate.lock().await;
        if done(&self.verified) {
            return Ok(());
        }
        let who = self
            .users
            .get(d)
            .map(|u| u.iter().cloned().collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        if done(&self.bad) {
            return Err(format!("blob {d} ({who}) failed verification"));
        }
        let p = self.blob_path(d);
        let r = tokio::task::spawn_blocking(move || -> Result<Digest> {
            let f = std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?;
            let (d, _) =
                airgap_bundle::digest::hash_reader(std::io::BufReader::with_capacity(1 << 20, f))
                    .with_context(|| format!("reading {}", p.display()))?;
            Ok(d)
        })
        .await
        .map_err(|e| e.to_string())?;
        match r {
            Ok(got) if &got == d => {
                if let Ok(mut v) = self.verified.lock() {
                    v.insert(d.clone());
                }
                Ok(())
            }
            other => {
                let why = match other {
                    Ok(got) => format!("content hashes to {got}"),
                    Err(e) => format!("{e:#}"),
                };
                eprintln!("kpaas-agent: seed registry: REFUSING blob {d} used by {who}: {why}");
                if let Ok(mut b) = self.bad.lock() {
                    b.insert(d.clone());
                }
                Err(format!("blob {d} ({who}) failed verification"))
            }
        }
    }
}

/// The node's status page beside the registry: `/status` (text) and
/// `/status.json`, read-only, built from the state directory at each
/// request (nothing secret is in it: see `crate::status`).
fn status_routes(state_dir: std::path::PathBuf) -> axum::Router {
    let page = |dir: std::path::PathBuf, as_json: bool| async move {
        let snap = tokio::task::spawn_blocking(move || crate::status::snapshot(&dir)).await;
        let (ctype, body) = match snap {
            Ok(Ok(s)) if as_json => (
                "application/json",
                serde_json::to_string_pretty(&s).unwrap_or_default(),
            ),
            Ok(Ok(s)) => ("text/plain; charset=utf-8", crate::status::text(&s)),
            Ok(Err(e)) => (
                "text/plain; charset=utf-8",
                format!("status unreadable: {e:#}\n"),
            ),
            Err(e) => (
                "text/plain; charset=utf-8",
                format!("status unreadable: {e}\n"),
            ),
        };
        Response::builder()
            .header(header::CONTENT_TYPE, ctype)
            .header(header::CACHE_CONTROL, "no-store")
            .body(Body::from(body))
            .unwrap_or_default()
    };
    let (a, b) = (state_dir.clone(), state_dir);
    axum::Router::new()
        .route(
            "/status",
            axum::routing::get(move || page(a.clone(), false)),
        )
        .route(
            "/status.json",
            axum::routing::get(move || page(b.clone(), true)),
        )
}

/// Serves on every address until the process ends; returns once all listen.
/// With a state directory, the node's status page too.
pub async fn serve(
    seed: Arc<Seed>,
    listen: &[std::net::SocketAddr],
    state_dir: Option<&std::path::Path>,
    inventory: Option<crate::node_api::InventoryFn>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut handles = Vec::new();
    let served = Arc::new(Served::new(seed.clone()));
    if let Some(d) = state_dir {
        handles.push(tokio::spawn(follow_updates(
            served.clone(),
            d.to_path_buf(),
        )));
    }
    for a in listen {
        let l = tokio::net::TcpListener::bind(a)
            .await
            .with_context(|| format!("seed registry: listening on {a}"))?;
        let app = match state_dir {
            Some(d) => status_routes(d.to_path_buf())
                .merge(crate::node_api::routes(d.to_path_buf(), inventory.clone()))
                .merge(api::router_served(served.clone())),
            None => router(seed.clone()),
        };
        handles.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(l, app).await {
                eprintln!("kpaas-agent: seed registry stopped: {e}");
            }
        }));
    }
    Ok(handles)
}

/// The seed the registry serves now, swapped when an update changes what
/// it serves (`crate::update::store::SERVING_FILE`).
pub struct Served(std::sync::RwLock<Arc<Seed>>);

impl Served {
    pub fn new(seed: Arc<Seed>) -> Served {
        Served(std::sync::RwLock::new(seed))
    }

    pub fn current(&self) -> Arc<Seed> {
        match self.0.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn swap(&self, seed: Arc<Seed>) {
        match self.0.write() {
            Ok(mut s) => *s = seed,
            Err(p) => *p.into_inner() = seed,
        }
    }
}

/// How often the registry looks whether an update changed what it serves.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves what `serving.json` lists once an update writes it, and says so
/// in `served.json` (the update waits for that word).
async fn follow_updates(served: Arc<Served>, state_dir: PathBuf) {
    use crate::update::store;
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let want = match store::serving(&state_dir) {
            Ok(Some(w)) => w,
            Ok(None) => continue,
            Err(e) => {
                eprintln!("kpaas-agent: seed registry: {e:#}");
                continue;
            }
        };
        if served.current().roots() == want.as_slice() {
            continue;
        }
        let list = want.clone();
        match tokio::task::spawn_blocking(move || Seed::load_all(&list)).await {
            Ok(Ok(seed)) => {
                served.swap(Arc::new(seed));
                eprintln!(
                    "kpaas-agent: seed registry: now serving {}",
                    want.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", then ")
                );
                if let Err(e) = store::set_served(&state_dir, &want) {
                    eprintln!("kpaas-agent: seed registry: {e:#}");
                }
            }
            Ok(Err(e)) => eprintln!("kpaas-agent: seed registry: cannot serve the update: {e:#}"),
            Err(e) => eprintln!("kpaas-agent: seed registry: {e}"),
        }
    }
}

mod api;
pub use api::router;
#[cfg(test)]
use api::{handle, parse_range, valid_name};

#[cfg(test)]
mod tests;
