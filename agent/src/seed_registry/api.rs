//! The seed registry's HTTP side: the read-only part of the OCI
//! distribution API (pull and content discovery) over a loaded [`Seed`],
//! with the spec's error codes, tag-list pagination and byte ranges. Every
//! other method is refused as a read-only registry refuses it.

use super::{Repo, Seed};
use airgap_bundle::Digest;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

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

pub(super) fn valid_name(name: &str) -> bool {
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
pub(super) fn parse_range(h: Option<&HeaderValue>, len: u64) -> Result<Option<(u64, u64)>, ()> {
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

/// As [`router`], over the seed an update may swap.
pub fn router_served(served: Arc<super::Served>) -> axum::Router {
    axum::Router::new()
        .fallback(
            |State(s): State<Arc<super::Served>>, req: Request| async move {
                handle(State(s.current()), req).await
            },
        )
        .with_state(served)
}
