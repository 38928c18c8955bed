//! Talking to the connected world: OCI registries (anonymous, basic and
//! bearer-token auth, private CAs, plain HTTP only where the user says so) and
//! plain HTTP(S) downloads, with mirrors, retries and `Retry-After`.

use airgap_bundle::ImageRef;
use airgap_bundle::oci::MANIFEST_ACCEPT;
use airgap_bundle::run::run;
use anyhow::{Context, Result, bail};
use base64::Engine;
use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Mirror {
    /// `registry.k8s.io=my-nexus.local/k8s`: host and repository prefix.
    Registry {
        from: String,
        host: String,
        prefix: String,
    },
    /// `https://dl.k8s.io=http://files.local/k8s`: URL prefix rewrite.
    Url { from: String, to: String },
}

impl Mirror {
    pub fn parse(s: &str) -> Result<Mirror> {
        let (from, to) = s.split_once('=').with_context(|| {
            format!("--mirror {s:?}: want SOURCE=TARGET, e.g. registry.k8s.io=my-nexus.local/k8s")
        })?;
        if from.is_empty() || to.is_empty() {
            bail!("--mirror {s:?}: both sides must be non-empty");
        }
        if from.contains("://") {
            if !to.contains("://") {
                bail!("--mirror {s:?}: a URL source needs a URL target (http://… or https://…)");
            }
            return Ok(Mirror::Url {
                from: from.trim_end_matches('/').into(),
                to: to.trim_end_matches('/').into(),
            });
        }
        let (host, prefix) = to.split_once('/').unwrap_or((to, ""));
        Ok(Mirror::Registry {
            from: from.into(),
            host: host.into(),
            prefix: prefix.trim_matches('/').into(),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct NetOptions {
    pub mirrors: Vec<Mirror>,
    /// Hosts reached over plain HTTP (and only those).
    pub insecure: Vec<String>,
    pub ca_files: Vec<PathBuf>,
    pub docker_config: Option<PathBuf>,
    pub offline: bool,
    pub max_attempts: u32,
}

#[derive(Clone)]
enum Auth {
    Basic(String),
    Bearer(String),
}

/// What the retry loop tells the caller about, for progress output.
pub type RetryNote = Box<dyn Fn(&str) + Send + Sync>;

pub struct Net {
    http: reqwest::Client,
    opts: NetOptions,
    creds: Creds,
    /// Per (host, repository): the auth that worked last time.
    auth: Mutex<HashMap<String, Auth>>,
    pub on_retry: Option<RetryNote>,
}

/// Where a registry request really goes after mirrors.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub base: String,
    pub host: String,
    pub repository: String,
}

fn docker_config_creds(path: &Path) -> Result<Creds> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Cfg {
        #[serde(default)]
        auths: HashMap<String, Entry>,
        /// Per-registry `docker-credential-<name>` helpers.
        #[serde(default)]
        cred_helpers: HashMap<String, String>,
        /// The helper for every other registry.
        #[serde(default)]
        creds_store: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Entry {
        auth: Option<String>,
        username: Option<String>,
        password: Option<String>,
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let cfg: Cfg =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let mut out = HashMap::new();
    for (k, e) in cfg.auths {
        let host = k
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let host = if host == "index.docker.io" {
            "registry-1.docker.io".to_string()
        } else {
            host
        };
        let pair = match (e.auth, e.username, e.password) {
            (Some(a), _, _) if !a.is_empty() => {
                let dec = base64::engine::general_purpose::STANDARD
                    .decode(a.trim())
                    .with_context(|| format!("{}: auths.{k}.auth is not base64", path.display()))?;
                let s = String::from_utf8(dec)
                    .with_context(|| format!("{}: auths.{k}.auth", path.display()))?;
                let (u, p) = s.split_once(':').with_context(|| {
                    format!("{}: auths.{k}.auth is not user:password", path.display())
                })?;
                (u.to_string(), p.to_string())
            }
            (_, Some(u), Some(p)) => (u, p),
            _ => continue,
        };
        out.insert(host, pair);
    }
    Ok(Creds {
        static_: out,
        helpers: cfg.cred_helpers,
        store: cfg.creds_store,
    })
}

/// Registry credentials from a Docker config; helpers are asked only when a
/// registry actually demands credentials, as docker does.
#[derive(Default)]
struct Creds {
    static_: HashMap<String, (String, String)>,
    helpers: HashMap<String, String>,
    store: Option<String>,
}

impl Creds {
    fn get(&self, host: &str) -> Result<Option<(String, String)>> {
        if let Some(h) = self.helpers.get(host) {
            return credential_helper(h, host);
        }
        if let Some(p) = self.static_.get(host) {
            return Ok(Some(p.clone()));
        }
        match &self.store {
            Some(h) => credential_helper(h, host),
            None => Ok(None),
        }
    }
}

/// Asks `docker-credential-<helper> get` for a host's credentials (the
/// credential-helper protocol: host on stdin, JSON on stdout).
fn credential_helper(helper: &str, host: &str) -> Result<Option<(String, String)>> {
    let prog = format!("docker-credential-{helper}");
    let out = match run(&prog).arg("get").stdin(host).output() {
        Ok(o) => o,
        // The protocol's "no entry" answer, not a failure.
        Err(e) if format!("{e:#}").contains("credentials not found") => return Ok(None),
        Err(e) => return Err(e.context(format!("credential helper for {host}"))),
    };
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "PascalCase")]
    struct Reply {
        username: String,
        secret: String,
    }
    let r: Reply = serde_json::from_slice(&out)
        .with_context(|| format!("{prog}: reply is not {{\"Username\",\"Secret\"}} JSON"))?;
    Ok(Some((r.username, r.secret)))
}

fn default_docker_config() -> Option<PathBuf> {
    let p = match std::env::var_os("DOCKER_CONFIG") {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".docker/config.json"),
    };
    p.is_file().then_some(p)
}

/// `key="value"` pairs of a WWW-Authenticate challenge.
fn challenge_params(h: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = h.split_once(' ').map_or("", |(_, r)| r);
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"').unwrap_or(q.len());
            (q[..end].to_string(), q.get(end + 1..).unwrap_or(""))
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(k, v);
        rest = next.trim_start_matches(',').trim_start();
    }
    out
}

/// `Retry-After` as delta-seconds or an IMF-fixdate, capped at a minute so a
/// misbehaving server cannot stall a build.
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let v = h.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let secs = match v.parse::<u64>() {
        Ok(s) => s,
        Err(_) => http_date(v)?.saturating_sub(airgap_bundle::fsutil::now_unix()),
    };
    Some(Duration::from_secs(secs.min(60)))
}

/// Parses `Sun, 06 Nov 1994 08:49:37 GMT` to Unix time.
fn http_date(v: &str) -> Option<u64> {
    let mut it = v.split_whitespace().skip(1);
    let (d, mon, y, t) = (it.next()?, it.next()?, it.next()?, it.next()?);
    let months = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = months.iter().position(|x| *x == mon)? + 1;
    airgap_bundle::fsutil::parse_rfc3339(&format!("{y}-{m:02}-{d:0>2}T{t}Z"))
}

pub fn backoff(attempt: u32) -> Duration {
    Duration::from_millis((200u64 << attempt.min(6)).min(8_000))
}

pub fn transient_status(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT
}

impl Net {
    pub fn new(mut opts: NetOptions) -> Result<Net> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(20))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("kpaas-builder/", env!("CARGO_PKG_VERSION")));
        for f in &opts.ca_files {
            let pem =
                std::fs::read(f).with_context(|| format!("reading CA file {}", f.display()))?;
            for c in reqwest::Certificate::from_pem_bundle(&pem)
                .with_context(|| format!("{}: not a PEM certificate bundle", f.display()))?
            {
                b = b.add_root_certificate(c);
            }
        }
        let http = b.build().context("setting up the HTTP client")?;
        let cfg = opts.docker_config.clone().or_else(default_docker_config);
        let creds = match cfg {
            Some(p) => docker_config_creds(&p)?,
            None => Creds::default(),
        };
        if opts.max_attempts == 0 {
            opts.max_attempts = 6;
        }
        Ok(Net {
            http,
            opts,
            creds,
            auth: Mutex::new(HashMap::new()),
            on_retry: None,
        })
    }

    pub fn offline(&self) -> bool {
        self.opts.offline
    }

    fn scheme(&self, host: &str) -> &'static str {
        if self.opts.insecure.iter().any(|h| h == host) {
            "http"
        } else {
            "https"
        }
    }

    pub fn endpoint(&self, r: &ImageRef) -> Endpoint {
        let (mut host, mut repo) = (r.registry.clone(), r.repository.clone());
        for m in &self.opts.mirrors {
            if let Mirror::Registry {
                from,
                host: h,
                prefix,
            } = m
                && from == &r.registry
            {
                host = h.clone();
                if !prefix.is_empty() {
                    repo = format!("{prefix}/{repo}");
                }
                break;
            }
        }
        if host == "docker.io" {
            host = "registry-1.docker.io".into();
        }
        Endpoint {
            base: format!("{}://{host}/v2/{repo}", self.scheme(&host)),
            host,
            repository: repo,
        }
    }

    pub fn map_url(&self, url: &str) -> String {
        for m in &self.opts.mirrors {
            if let Mirror::Url { from, to } = m
                && let Some(rest) = url.strip_prefix(from.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                return format!("{to}{rest}");
            }
        }
        url.to_string()
    }

    async fn token(&self, params: &HashMap<String, String>, host: &str) -> Result<String> {
        let realm = params
            .get("realm")
            .context("bearer challenge without realm")?;
        let mut req = self.http.get(realm);
        let mut q = Vec::new();
        if let Some(s) = params.get("service") {
            q.push(("service", s.as_str()));
        }
        if let Some(s) = params.get("scope") {
            q.push(("scope", s.as_str()));
        }
        req = req.query(&q);
        if let Some((u, p)) = self.creds.get(host)? {
            req = req.basic_auth(u, Some(p));
        }
        let resp = req
            .send()
            .await
            .with_context(|| format!("requesting a token from {realm}"))?;
        if !resp.status().is_success() {
            bail!("token request to {realm} answered {}", resp.status());
        }
        #[derive(serde::Deserialize)]
        struct T {
            token: Option<String>,
            access_token: Option<String>,
        }
        let t: T = resp.json_bytes().await?;
        t.token
            .or(t.access_token)
            .context("token response holds no token")
    }

    /// Sends a request with auth, retrying transient failures. `scope_key`
    /// keys cached auth (host + repository). Returns any non-transient answer.
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        host: &str,
        scope_key: &str,
        headers: &[(&str, String)],
    ) -> Result<Response> {
        if self.opts.offline {
            bail!("offline: {method} {url} would need the network");
        }
        let mut attempt = 0;
        let mut auth_tried = false;
        loop {
            let mut req = self.http.request(method.clone(), url);
            for (k, v) in headers {
                req = req.header(*k, v);
            }
            let cached = self
                .auth
                .lock()
                .ok()
                .and_then(|m| m.get(scope_key).cloned());
            match &cached {
                Some(Auth::Basic(b)) => req = req.header(AUTHORIZATION, format!("Basic {b}")),
                Some(Auth::Bearer(t)) => req = req.bearer_auth(t),
                None => {}
            }
            let wait = match req.send().await {
                Err(e) => {
                    if attempt + 1 >= self.opts.max_attempts {
                        return Err(anyhow::Error::new(e)
                            .context(format!("{method} {url} (after {} attempts)", attempt + 1)));
                    }
                    self.note(&format!("{method} {url}: {e}; retrying"));
                    backoff(attempt)
                }
                Ok(resp) if resp.status() == StatusCode::UNAUTHORIZED && !auth_tried => {
                    auth_tried = true;
                    let ch = resp
                        .headers()
                        .get(WWW_AUTHENTICATE)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let new = if ch.to_ascii_lowercase().starts_with("bearer") {
                        Auth::Bearer(self.token(&challenge_params(&ch), host).await?)
                    } else {
                        let (u, p) = self.creds.get(host)?.with_context(|| {
                            format!("{host} requires credentials: add them to the Docker config (docker login {host}) or point --docker-config at one")
                        })?;
                        Auth::Basic(
                            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")),
                        )
                    };
                    if let Ok(mut m) = self.auth.lock() {
                        m.insert(scope_key.to_string(), new);
                    }
                    continue;
                }
                Ok(resp)
                    if transient_status(resp.status()) && attempt + 1 < self.opts.max_attempts =>
                {
                    let w = retry_after(resp.headers()).unwrap_or_else(|| backoff(attempt));
                    self.note(&format!(
                        "{method} {url}: {}; retrying in {:.1}s",
                        resp.status(),
                        w.as_secs_f32()
                    ));
                    w
                }
                Ok(resp) => return Ok(resp),
            };
            attempt += 1;
            tokio::time::sleep(wait).await;
        }
    }

    pub fn note(&self, msg: &str) {
        if let Some(f) = &self.on_retry {
            f(msg);
        }
    }

    /// Fetches a manifest or index; returns (bytes, content type).
    pub async fn manifest(&self, r: &ImageRef, reference: &str) -> Result<(Vec<u8>, String)> {
        let ep = self.endpoint(r);
        let url = format!("{}/manifests/{reference}", ep.base);
        let resp = self
            .send(
                Method::GET,
                &url,
                &ep.host,
                &format!("{}/{}", ep.host, ep.repository),
                &[(ACCEPT.as_str(), MANIFEST_ACCEPT.to_string())],
            )
            .await
            .with_context(|| format!("fetching manifest of {r}"))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            bail!(
                "fetching manifest of {r} from {url}: {status}{}",
                short_body(&body)
            );
        }
        let ct = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let bytes = resp
            .bytes()
            .await
            .with_context(|| format!("reading manifest of {r}"))?;
        if bytes.len() > 4 << 20 {
            bail!("manifest of {r} is larger than 4 MiB; refusing it");
        }
        Ok((bytes.to_vec(), ct))
    }

    /// GET a whole small document (index.yaml) by URL, mirrors applied.
    pub async fn get_small(&self, url: &str) -> Result<Vec<u8>> {
        let url = self.map_url(url);
        let host = host_of(&url);
        let resp = self.send(Method::GET, &url, &host, &host, &[]).await?;
        let status = resp.status();
        if !status.is_success() {
            bail!("GET {url}: {status}");
        }
        Ok(resp
            .bytes()
            .await
            .with_context(|| format!("reading {url}"))?
            .to_vec())
    }
}

pub fn host_of(url: &str) -> String {
    url.split_once("://")
        .map_or(url, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string()
}

fn short_body(b: &str) -> String {
    let b = b.trim();
    if b.is_empty() {
        String::new()
    } else {
        format!(" ({})", b.chars().take(200).collect::<String>())
    }
}

trait JsonBytes {
    async fn json_bytes<T: serde::de::DeserializeOwned>(self) -> Result<T>;
}

impl JsonBytes for Response {
    async fn json_bytes<T: serde::de::DeserializeOwned>(self) -> Result<T> {
        let b = self.bytes().await?;
        serde_json::from_slice(&b).context("parsing JSON response")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges_and_mirrors() {
        let p = challenge_params(
            r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull""#,
        );
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["scope"], "repository:a/b:pull");
        let net = Net::new(NetOptions {
            mirrors: vec![
                Mirror::parse("registry.k8s.io=my-nexus.local/k8s").unwrap(),
                Mirror::parse("https://dl.k8s.io=http://127.0.0.1:8080/k8s").unwrap(),
            ],
            insecure: vec!["my-nexus.local".into()],
            ..Default::default()
        })
        .unwrap();
        let ep = net.endpoint(&ImageRef::parse("registry.k8s.io/pause:3.8").unwrap());
        assert_eq!(ep.base, "http://my-nexus.local/v2/k8s/pause");
        let ep = net.endpoint(&ImageRef::parse("busybox").unwrap());
        assert_eq!(ep.base, "https://registry-1.docker.io/v2/library/busybox");
        assert_eq!(
            net.map_url("https://dl.k8s.io/v1/kubeadm"),
            "http://127.0.0.1:8080/k8s/v1/kubeadm"
        );
        assert_eq!(
            net.map_url("https://dl.k8s.io.evil/x"),
            "https://dl.k8s.io.evil/x"
        );
        assert!(Mirror::parse("nonsense").is_err());
        assert_eq!(
            http_date("Wed, 25 Nov 2026 00:00:01 GMT"),
            Some(1_795_564_801)
        );
        assert_eq!(http_date("garbage"), None);
    }
}
