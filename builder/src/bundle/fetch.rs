//! The fetch engine: blobs are fetched in parallel (blob-level, bounded),
//! hashed while they stream, resumed with HTTP Range after an interruption,
//! and renamed into the cache only once their digest is proven.

use crate::bundle::cache::Cache;
use crate::bundle::progress::Progress;
use crate::bundle::registry::{Net, backoff, host_of};
use airgap_bundle::digest::Hasher;
use airgap_bundle::{Digest, ImageRef};
use anyhow::{Context, Result, bail};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::Ordering;

#[derive(Debug, Clone)]
pub enum Source {
    Registry(ImageRef),
    Url(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Registry(r) => write!(f, "{}", r.name()),
            Source::Url(u) => f.write_str(u),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Want {
    pub digest: Digest,
    /// Expected size when known (descriptors); 0 = unknown.
    pub size: u64,
    pub source: Source,
    /// The artifact that needs it, for error messages.
    pub artifact: String,
}

#[derive(thiserror::Error, Debug)]
#[error(
    "digest mismatch for {artifact}: {source_name} served content with digest {got}, expected {want}"
)]
pub struct DigestMismatch {
    pub artifact: String,
    pub source_name: String,
    pub want: Digest,
    pub got: Digest,
}

pub async fn fetch_one(net: &Net, cache: &Cache, w: &Want, p: &Progress) -> Result<()> {
    if cache.has(&w.digest) {
        // Fetched earlier in this same run (while resolving) is not "reused".
        if !cache.is_verified(&w.digest) {
            p.reused
                .fetch_add(cache.size(&w.digest).unwrap_or(w.size), Ordering::Relaxed);
        }
        return Ok(());
    }
    if net.offline() {
        bail!(
            "not in the cache: {} ({} from {}); run without --offline on a connected machine",
            w.digest,
            w.artifact,
            w.source
        );
    }
    let (url, host, scope) = match &w.source {
        Source::Registry(r) => {
            let ep = net.endpoint(r);
            (
                format!("{}/blobs/{}", ep.base, w.digest),
                ep.host.clone(),
                format!("{}/{}", ep.host, ep.repository),
            )
        }
        Source::Url(u) => {
            let u = net.map_url(u);
            let h = host_of(&u);
            (u, h.clone(), h)
        }
    };
    // Two artifacts with one content (fetched at once while resolving) or
    // two builds sharing the cache: one writes the partial file, the others
    // wait and then find the blob stored.
    let claim = cache.claim(&w.digest).await?;
    if cache.has(&w.digest) {
        return Ok(());
    }
    let partial = cache.partial(&w.digest);
    let t = p.transfer(&format!("{} {}", w.digest.short(), w.artifact), w.size);
    let mut attempt = 0u32;
    loop {
        // Resume: hash what is already on disk, then ask for the rest.
        let mut hasher = Hasher::new();
        let mut have = 0u64;
        if let Ok(mut f) = std::fs::File::open(&partial) {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                have += n as u64;
            }
        }
        if w.size > 0 && have > w.size {
            std::fs::remove_file(&partial).ok();
            continue;
        }
        let mut headers = Vec::new();
        if have > 0 {
            headers.push(("range", format!("bytes={have}-")));
        }
        let resp = net
            .send(Method::GET, &url, &host, &scope, &headers)
            .await
            .with_context(|| {
                format!("fetching {} of {} from {}", w.digest, w.artifact, w.source)
            })?;
        let status = resp.status();
        let mut out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&partial)?;
        match status {
            StatusCode::PARTIAL_CONTENT if have > 0 => {}
            StatusCode::OK => {
                if have > 0 {
                    // The server ignored Range: start over.
                    out.set_len(0)?;
                    t.reset(p, have);
                    hasher = Hasher::new();
                    have = 0;
                }
            }
            StatusCode::RANGE_NOT_SATISFIABLE => {
                std::fs::remove_file(&partial).ok();
                continue;
            }
            s => {
                let body = resp.text().await.unwrap_or_default();
                bail!(
                    "fetching {} of {} from {url}: {s}{}",
                    w.digest,
                    w.artifact,
                    if body.trim().is_empty() {
                        String::new()
                    } else {
                        format!(" ({})", body.trim().chars().take(200).collect::<String>())
                    }
                );
            }
        }
        let mut resp = resp;
        let mut broke = None;
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    out.write_all(&c)?;
                    hasher.update(&c);
                    have += c.len() as u64;
                    p.fetched.fetch_add(c.len() as u64, Ordering::Relaxed);
                    t.advance(c.len() as u64, p);
                    if w.size > 0 && have > w.size {
                        broke = Some(format!(
                            "server sent more than the expected {} bytes",
                            w.size
                        ));
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    broke = Some(format!("{e}"));
                    break;
                }
            }
        }
        out.flush()?;
        drop(out);
        if let Some(why) = broke {
            attempt += 1;
            p.retries.fetch_add(1, Ordering::Relaxed);
            if attempt >= 6 {
                bail!(
                    "fetching {} of {} from {}: interrupted {attempt} times, last: {why}",
                    w.digest,
                    w.artifact,
                    w.source
                );
            }
            net.note(&format!(
                "{} of {}: interrupted after {have} bytes ({why}); resuming",
                w.digest.short(),
                w.artifact
            ));
            tokio::time::sleep(backoff(attempt)).await;
            continue;
        }
        let got = hasher.finish();
        if got != w.digest {
            std::fs::remove_file(&partial).ok();
            return Err(DigestMismatch {
                artifact: w.artifact.clone(),
                source_name: w.source.to_string(),
                want: w.digest.clone(),
                got,
            }
            .into());
        }
        if w.size > 0 && have != w.size {
            std::fs::remove_file(&partial).ok();
            bail!(
                "{} of {}: got {have} bytes, the descriptor says {}",
                w.digest,
                w.artifact,
                w.size
            );
        }
        cache.commit_partial(&w.digest)?;
        claim.stored();
        p.event(
            "blob_done",
            json!({"digest": w.digest, "bytes": have, "artifact": w.artifact}),
        );
        return Ok(());
    }
}

/// Fetches every wanted blob (each digest once), `jobs` at a time. Returns
/// every failure, not just the first.
pub async fn fetch_all(
    net: Arc<Net>,
    cache: Cache,
    wants: Vec<Want>,
    jobs: usize,
    p: Arc<Progress>,
) -> Vec<anyhow::Error> {
    let mut unique: BTreeMap<Digest, Want> = BTreeMap::new();
    for w in wants {
        unique.entry(w.digest.clone()).or_insert(w);
    }
    let sem = Arc::new(tokio::sync::Semaphore::new(jobs.max(1)));
    let mut set = tokio::task::JoinSet::new();
    // Largest first: the long transfers start early and the tail is short.
    let mut list: Vec<Want> = unique.into_values().collect();
    list.sort_by(|a, b| b.size.cmp(&a.size).then(a.digest.cmp(&b.digest)));
    for w in list {
        let (net, cache, p, sem) = (net.clone(), cache.clone(), p.clone(), sem.clone());
        set.spawn(async move {
            let _permit = sem.acquire_owned().await;
            fetch_one(&net, &cache, &w, &p).await
        });
    }
    let mut errors = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(anyhow::anyhow!("fetch task failed: {e}")),
        }
    }
    errors
}
