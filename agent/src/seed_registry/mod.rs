//! The seed registry: a read-only OCI Distribution API over the bundle's OCI
//! layout, serving every artifact under its upstream name
//! (`/v2/<source-registry>/<repository>`), so runtime mirrors need no
//! rewriting. Manifests are hashed when the server loads; every other blob is
//! hashed before its first byte is served, and a blob that fails is never
//! served.

use airgap_bundle::manifest::{BLOBS_DIR, LAYOUT_INDEX};
use airgap_bundle::oci::{self, LayoutIndex, Parsed};
use airgap_bundle::{Digest, ImageRef};
use anyhow::{Context, Result, bail};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// One repository: its tags and every digest it may serve.
#[derive(Default)]
struct Repo {
    tags: BTreeMap<String, Digest>,
    digests: HashSet<Digest>,
}

pub struct Seed {
    root: PathBuf,
    repos: BTreeMap<String, Repo>,
    /// Manifest bytes (small, verified at load) and their media types.
    manifests: HashMap<Digest, (Vec<u8>, String)>,
    /// Which artifacts use a blob, for naming them in logs.
    users: HashMap<Digest, BTreeSet<String>>,
    verified: Mutex<HashSet<Digest>>,
    bad: Mutex<HashSet<Digest>>,
    inflight: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
}

fn media_type_of(bytes: &[u8], fallback: &str) -> String {
    oci::declared_media_type(bytes).unwrap_or_else(|| fallback.to_string())
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
            root: bundle.to_path_buf(),
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
            // Walk the artifact: manifests are loaded and hashed now.
            let mut stack = vec![(d.digest.clone(), d.media_type.clone())];
            while let Some((dg, mt)) = stack.pop() {
                digests.insert(dg.clone());
                seed.users
                    .entry(dg.clone())
                    .or_default()
                    .insert(name.clone());
                if !(oci::is_index(&mt) || oci::is_manifest(&mt)) {
                    continue;
                }
                let p = bundle.join("oci").join(dg.blob_path());
                let bytes = match std::fs::read(&p) {
                    Ok(b) => b,
                    // An index may name platforms the bundle left out: not an error.
                    Err(_) if dg != d.digest => continue,
                    Err(e) => {
                        problems.push(format!("{name}: manifest {dg}: {e}"));
                        continue;
                    }
                };
                if Digest::of(&bytes) != dg {
                    problems.push(format!("{name}: manifest {dg} is corrupt"));
                    continue;
                }
                match oci::parse_manifest(&bytes, &mt) {
                    Ok(Parsed::Index(children)) => {
                        stack.extend(children.into_iter().map(|c| (c.digest, c.media_type)))
                    }
                    Ok(Parsed::Manifest { config, layers }) => {
                        for l in std::iter::once(config).chain(layers) {
                            // Sizes are checked now; contents on first read.
                            match std::fs::metadata(bundle.join("oci").join(l.digest.blob_path())) {
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
                            digests.insert(l.digest.clone());
                            seed.users.entry(l.digest).or_default().insert(name.clone());
                        }
                    }
                    Err(e) => problems.push(format!("{name}: manifest {dg}: {e:#}")),
                }
                let mt = media_type_of(&bytes, &mt);
                seed.verified
                    .lock()
                    .map_err(|_| anyhow::anyhow!("lock poisoned"))?
                    .insert(dg.clone());
                seed.manifests.insert(dg, (bytes, mt));
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

    /// Marks blobs as verified (after a full verification at boot).
    pub fn trust_all(&self) {
        if let Ok(mut v) = self.verified.lock() {
            v.extend(self.users.keys().cloned());
        }
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
        self.root.join(format!("{BLOBS_DIR}{}", d.hex()))
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

/// The distribution spec's error codes the seed answers with (a client
/// branches on them; a code outside the spec's table means nothing to it).
#[derive(Clone, Copy)]
enum Code {
    BlobUnknown,
    DigestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    Unsupported,
}

impl Code {
    fn as_str(self) -> &'static str {
        match self {
            Code::BlobUnknown => "BLOB_UNKNOWN",
            Code::DigestInvalid => "DIGEST_INVALID",
            Code::ManifestUnknown => "MANIFEST_UNKNOWN",
            Code::NameInvalid => "NAME_INVALID",
            Code::NameUnknown => "NAME_UNKNOWN",
            Code::Unsupported => "UNSUPPORTED",
        }
    }
}

fn error(status: StatusCode, code: Code, message: &str) -> Response {
    let body = serde_json::json!({"errors": [{"code": code.as_str(), "message": message, "detail": null}]})
        .to_string();
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .body(Body::from(body))
        .unwrap_or_default()
}

/// `n` and `last` of a tag list request (the spec's pagination).
struct Page {
    n: Option<usize>,
    last: Option<String>,
}

fn query_page(q: Option<&str>) -> Result<Page, String> {
    let mut p = Page {
        n: None,
        last: None,
    };
    for kv in q.unwrap_or_default().split('&').filter(|s| !s.is_empty()) {
        match kv.split_once('=') {
            Some(("n", v)) => {
                p.n = Some(
                    v.parse()
                        .map_err(|_| format!("n={v}: want a whole number of results"))?,
                )
            }
            Some(("last", v)) => p.last = Some(v.to_string()),
            _ => {}
        }
    }
    Ok(p)
}

/// One page of a repository's tags, in lexical order: those after `last`,
/// at most `n`, with the `Link` to the next page when more remain.
fn tag_page(name: &str, tags: &[&String], page: &Page) -> Response {
    let after: Vec<&String> = tags
        .iter()
        .copied()
        .filter(|t| page.last.as_ref().is_none_or(|l| t.as_str() > l.as_str()))
        .collect();
    let n = page.n.unwrap_or(after.len());
    let shown = &after[..n.min(after.len())];
    let mut b = Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header("Docker-Distribution-API-Version", "registry/2.0");
    if let (true, Some(last)) = (shown.len() < after.len() && n > 0, shown.last()) {
        b = b.header(
            header::LINK,
            format!("</v2/{name}/tags/list?n={n}&last={last}>; rel=\"next\""),
        );
    }
    b.body(Body::from(
        serde_json::json!({ "name": name, "tags": shown }).to_string(),
    ))
    .unwrap_or_default()
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 512
        && name.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-:".contains(&b))
        })
}

/// Resolves a requested name to a repository: as given, or under the
/// source registry containerd names in `?ns=` when it mirrors a plain path.
fn find_repo<'a>(seed: &'a Seed, name: &str, ns: Option<&str>) -> Option<(&'a String, &'a Repo)> {
    if let Some(r) = seed.repos.get_key_value(name) {
        return Some(r);
    }
    let ns = ns?;
    seed.repos.get_key_value(&format!("{ns}/{name}"))
}

fn query_ns(q: Option<&str>) -> Option<String> {
    q?.split('&')
        .find_map(|kv| kv.strip_prefix("ns="))
        .map(|v| v.to_string())
}

pub async fn handle(State(seed): State<Arc<Seed>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let ns = query_ns(req.uri().query());
    let headers = req.headers().clone();
    if path.contains("%") {
        return error(
            StatusCode::BAD_REQUEST,
            Code::NameInvalid,
            "encoded characters are not accepted in names",
        );
    }
    let read = method == Method::GET || method == Method::HEAD;
    let Some(rest) = path
        .strip_prefix("/v2/")
        .or_else(|| (path == "/v2").then_some(""))
    else {
        return error(
            StatusCode::NOT_FOUND,
            Code::Unsupported,
            "not a registry path",
        );
    };
    if !read {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            Code::Unsupported,
            "the seed registry is read-only",
        );
    }
    if rest.is_empty() {
        return Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header("Docker-Distribution-API-Version", "registry/2.0")
            .body(Body::from("{}"))
            .unwrap_or_default();
    }
    if rest == "_catalog" {
        let list: Vec<&String> = seed.repositories().collect();
        return json(serde_json::json!({ "repositories": list }));
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        if !valid_name(name) {
            return error(
                StatusCode::BAD_REQUEST,
                Code::NameInvalid,
                "invalid repository name",
            );
        }
        let page = match query_page(req.uri().query()) {
            Ok(p) => p,
            Err(why) => return error(StatusCode::BAD_REQUEST, Code::Unsupported, &why),
        };
        return match find_repo(&seed, name, ns.as_deref()) {
            Some((_, r)) => tag_page(name, &r.tags.keys().collect::<Vec<_>>(), &page),
            None => error(
                StatusCode::NOT_FOUND,
                Code::NameUnknown,
                "repository name not known to registry",
            ),
        };
    }
    // The referrers API (optional in the spec) is not served: answered as
    // a registry without it answers, so a client falls back to tag schema.
    if rest.contains("/referrers/") {
        return error(
            StatusCode::NOT_FOUND,
            Code::Unsupported,
            "the seed registry does not serve the referrers API",
        );
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        if !valid_name(name) {
            return error(
                StatusCode::BAD_REQUEST,
                Code::NameInvalid,
                "invalid repository name",
            );
        }
        let Some((_, repo)) = find_repo(&seed, name, ns.as_deref()) else {
            return error(
                StatusCode::NOT_FOUND,
                Code::NameUnknown,
                "repository name not known to registry",
            );
        };
        let digest = if reference.starts_with("sha256:") || reference.contains(':') {
            match Digest::parse(reference) {
                Ok(d) if repo.digests.contains(&d) => d,
                Ok(_) => {
                    return error(
                        StatusCode::NOT_FOUND,
                        Code::ManifestUnknown,
                        "manifest unknown",
                    );
                }
                Err(_) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        Code::DigestInvalid,
                        "invalid digest",
                    );
                }
            }
        } else {
            match repo.tags.get(reference) {
                Some(d) => d.clone(),
                None => {
                    return error(
                        StatusCode::NOT_FOUND,
                        Code::ManifestUnknown,
                        "manifest unknown",
                    );
                }
            }
        };
        let Some((bytes, mt)) = seed.manifests.get(&digest) else {
            return error(
                StatusCode::NOT_FOUND,
                Code::ManifestUnknown,
                "manifest unknown",
            );
        };
        let b = Response::builder()
            .header(header::CONTENT_TYPE, mt.as_str())
            .header(header::CONTENT_LENGTH, bytes.len())
            .header("Docker-Content-Digest", digest.as_str())
            .header(header::ETAG, format!("\"{digest}\""))
            .header("Docker-Distribution-API-Version", "registry/2.0");
        let body = if method == Method::HEAD {
            Body::empty()
        } else {
            Body::from(bytes.clone())
        };
        return b.body(body).unwrap_or_default();
    }
    if let Some((name, d)) = rest.rsplit_once("/blobs/") {
        if !valid_name(name) {
            return error(
                StatusCode::BAD_REQUEST,
                Code::NameInvalid,
                "invalid repository name",
            );
        }
        let Ok(digest) = Digest::parse(d) else {
            return error(
                StatusCode::BAD_REQUEST,
                Code::DigestInvalid,
                "invalid digest",
            );
        };
        let Some((_, repo)) = find_repo(&seed, name, ns.as_deref()) else {
            return error(
                StatusCode::NOT_FOUND,
                Code::NameUnknown,
                "repository name not known to registry",
            );
        };
        if !repo.digests.contains(&digest) {
            return error(
                StatusCode::NOT_FOUND,
                Code::BlobUnknown,
                "blob unknown to registry",
            );
        }
        return serve_blob(&seed, &digest, method == Method::HEAD, &headers).await;
    }
    error(
        StatusCode::NOT_FOUND,
        Code::Unsupported,
        "unknown registry path",
    )
}

fn json(v: serde_json::Value) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .header("Docker-Distribution-API-Version", "registry/2.0")
        .body(Body::from(v.to_string()))
        .unwrap_or_default()
}

/// `bytes=a-b`, `bytes=a-` or `bytes=-n` against a length; None = whole body.
fn parse_range(h: Option<&HeaderValue>, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(v) = h.and_then(|v| v.to_str().ok()) else {
        return Ok(None);
    };
    let spec = v.trim().strip_prefix("bytes=").ok_or(())?;
    if spec.contains(',') {
        return Ok(None); // multi-range: serve it whole, as RFC 9110 allows
    }
    let (a, b) = spec.split_once('-').ok_or(())?;
    let (start, end) = match (a.trim(), b.trim()) {
        ("", n) => {
            let n: u64 = n.parse().map_err(|_| ())?;
            if n == 0 {
                return Err(());
            }
            (len.saturating_sub(n), len.saturating_sub(1))
        }
        (s, "") => (s.parse().map_err(|_| ())?, len.saturating_sub(1)),
        (s, e) => (
            s.parse().map_err(|_| ())?,
            e.parse::<u64>().map_err(|_| ())?.min(len.saturating_sub(1)),
        ),
    };
    if start >= len || start > end {
        return Err(());
    }
    Ok(Some((start, end)))
}

async fn serve_blob(seed: &Seed, d: &Digest, head: bool, headers: &HeaderMap) -> Response {
    let p = seed.blob_path(d);
    let len = match tokio::fs::metadata(&p).await {
        Ok(m) => m.len(),
        Err(_) => {
            return error(
                StatusCode::NOT_FOUND,
                Code::BlobUnknown,
                "blob unknown to registry",
            );
        }
    };
    let base = |b: axum::http::response::Builder| {
        b.header(header::CONTENT_TYPE, "application/octet-stream")
            .header("Docker-Content-Digest", d.as_str())
            .header(header::ACCEPT_RANGES, "bytes")
            .header(header::ETAG, format!("\"{d}\""))
            .header("Docker-Distribution-API-Version", "registry/2.0")
    };
    if head {
        return base(Response::builder())
            .header(header::CONTENT_LENGTH, len)
            .body(Body::empty())
            .unwrap_or_default();
    }
    let range = match parse_range(headers.get(header::RANGE), len) {
        Ok(r) => r,
        Err(()) => {
            return Response::builder()
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header(header::CONTENT_RANGE, format!("bytes */{len}"))
                .body(Body::empty())
                .unwrap_or_default();
        }
    };
    if let Err(why) = seed.ensure_verified(d).await {
        return error(StatusCode::INTERNAL_SERVER_ERROR, Code::BlobUnknown, &why);
    }
    let mut f = match tokio::fs::File::open(&p).await {
        Ok(f) => f,
        Err(_) => {
            return error(
                StatusCode::NOT_FOUND,
                Code::BlobUnknown,
                "blob unknown to registry",
            );
        }
    };
    let (status, start, n) = match range {
        Some((s, e)) => (StatusCode::PARTIAL_CONTENT, s, e - s + 1),
        None => (StatusCode::OK, 0, len),
    };
    if start > 0 && f.seek(std::io::SeekFrom::Start(start)).await.is_err() {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            Code::BlobUnknown,
            "seek failed",
        );
    }
    // Streamed in 256 KiB reads: memory stays flat however many clients pull.
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(n), 256 * 1024);
    let mut b = base(Response::builder())
        .status(status)
        .header(header::CONTENT_LENGTH, n);
    if status == StatusCode::PARTIAL_CONTENT {
        b = b.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{len}", start + n - 1),
        );
    }
    b.body(Body::from_stream(stream)).unwrap_or_default()
}

pub fn router(seed: Arc<Seed>) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(seed)
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
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut handles = Vec::new();
    for a in listen {
        let l = tokio::net::TcpListener::bind(a)
            .await
            .with_context(|| format!("seed registry: listening on {a}"))?;
        let app = match state_dir {
            Some(d) => status_routes(d.to_path_buf()).merge(router(seed.clone())),
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

#[cfg(test)]
mod tests;
