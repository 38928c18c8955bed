//! The agent's one way to read, wait on and change Kubernetes objects:
//! kube-rs over the node's kubeconfig (the admin's on the master, kubelet's
//! on a worker), typed objects from k8s-openapi, and outcomes typed by what
//! the caller should do (`Failure`), not by the words of an error.
//!
//! Every request is bounded (connect, read and the whole call): an API
//! server that accepts a connection and never answers fails the request at
//! its bound, so a wait built on it fails at the wait's own bound, naming
//! what it waited for. The boot steps and the deploy engine are synchronous,
//! so each `Api` drives its client on a small runtime of its own.
//!
//! Applying manifests of arbitrary kinds (CRDs, the CNI, rendered charts)
//! stays the bundled kubectl's server-side apply and helm stays the bundled
//! helm: both are at the cluster's version and handle any kind without
//! typed models. Everything they do not do goes through here.

pub mod ready;

use anyhow::{Context, Result};
use futures_util::StreamExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{
    DeleteParams, DynamicObject, ListParams, LogParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::discovery::{ApiResource, Discovery};
use kube::{Client, Config, Resource};
use serde::de::DeserializeOwned;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The bound on one request unless a caller asks for a shorter one: longer
/// than any answer a busy control plane under emulation gives (seen: 10 s),
/// short enough that a hung one is reported within a progress line.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Room for the kernel's SYN retries (sent after 1, 3 and 7 s) when an
/// overloaded API server's accept queue drops the first: seen on an
/// emulated master just after its platform deployed, where 5 s failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Requests made by this process (each was a kubectl process before the
/// agent had a client): said beside the processes it spawned.
static REQUESTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

pub fn requests() -> u64 {
    REQUESTS.load(std::sync::atomic::Ordering::Relaxed)
}

/// Why a request did not give its answer, by what the caller does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Failure {
    /// The object (or its kind) is not there: it may come, or the caller
    /// knows that means "not done".
    NotFound(String),
    /// The API server is away, starting or overloaded (connection refused
    /// or reset, 429, 5xx): the same request may succeed later.
    Transient(String),
    /// The request itself was refused (401, 403, 400, 409, 422) or the
    /// answer made no sense: asking again changes nothing.
    Refused(String),
    /// No answer within the request's bound.
    TimedOut(String),
}

impl Failure {
    /// Whether asking again later can help.
    pub fn passes(&self) -> bool {
        !matches!(self, Failure::Refused(_))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::NotFound(w) => write!(f, "{w}: not found"),
            Failure::Transient(w) => write!(f, "{w}: the API server is away or busy"),
            Failure::Refused(w) => write!(f, "{w}: refused"),
            Failure::TimedOut(w) => write!(f, "{w}: timed out"),
        }
    }
}

/// A failed request's outcome, from kube-rs's error: the API's own status
/// code where there is one, else the transport's failure (always
/// transient: the server was not reached or did not finish answering).
fn classify(what: &str, e: kube::Error) -> Failure {
    let w = |detail: &dyn fmt::Display| format!("{what} ({detail})");
    match e {
        kube::Error::Api(s) => {
            let detail = if s.message.is_empty() {
                s.reason.clone()
            } else {
                s.message.trim().to_string()
            };
            match s.code {
                404 => Failure::NotFound(what.to_string()),
                429 | 500..=599 => Failure::Transient(w(&detail)),
                _ => Failure::Refused(w(&format!("{} {detail}", s.code))),
            }
        }
        kube::Error::SerdeError(e) => Failure::Refused(w(&format!("its answer: {e}"))),
        kube::Error::BuildRequest(e) => Failure::Refused(w(&e)),
        // Connection refused or reset, TLS, a read timeout of the transport:
        // its causes say which ("client error (Connect)" alone does not).
        e => Failure::Transient(w(&chain(&e))),
    }
}

/// An error with its causes, each once.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        let c_text = c.to_string();
        if !s.contains(&c_text) {
            s.push_str(": ");
            s.push_str(&c_text);
        }
        src = c.source();
    }
    s
}

/// A client of one cluster, as one identity.
#[derive(Clone)]
pub struct Api {
    client: Client,
    rt: Arc<tokio::runtime::Runtime>,
    timeout: Duration,
    /// Kinds found by discovery, by the name a check uses for them.
    kinds: Arc<Mutex<Vec<(String, ApiResource)>>>,
}

impl Api {
    /// A client from a kubeconfig file (its server, CA and credentials).
    pub fn from_kubeconfig(path: &Path) -> Result<Api> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the Kubernetes client's runtime")?;
        let kc = kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading the kubeconfig {}", path.display()))?;
        let mut config = rt
            .block_on(Config::from_custom_kubeconfig(kc, &Default::default()))
            .with_context(|| format!("the kubeconfig {}", path.display()))?;
        config.connect_timeout = Some(CONNECT_TIMEOUT);
        config.read_timeout = Some(REQUEST_TIMEOUT);
        config.write_timeout = Some(REQUEST_TIMEOUT);
        // Nothing on a node goes through a proxy: the API is on the site.
        config.proxy_url = None;
        // The client's request queue is a task on this runtime.
        let client = {
            let _in = rt.enter();
            Client::try_from(config).with_context(|| format!("a client from {}", path.display()))?
        };
        Ok(Api {
            client,
            rt: Arc::new(rt),
            timeout: REQUEST_TIMEOUT,
            kinds: Arc::default(),
        })
    }

    /// The same client with a shorter bound on each request.
    #[cfg(test)]
    pub fn bounded(&self, timeout: Duration) -> Api {
        Api {
            timeout: timeout.min(self.timeout),
            ..self.clone()
        }
    }

    /// Runs one request to its bound.
    fn call<T>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = kube::Result<T>>,
    ) -> Result<T, Failure> {
        REQUESTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // The timer is made inside the runtime (it needs its clock).
        match self
            .rt
            .block_on(async { tokio::time::timeout(self.timeout, f).await })
        {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(classify(what, e)),
            Err(_) => Err(Failure::TimedOut(format!(
                "{what} (no answer in {:.1} s)",
                self.timeout.as_secs_f64()
            ))),
        }
    }

    fn ns<K>(&self, namespace: &str) -> kube::Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        kube::Api::namespaced(self.client.clone(), namespace)
    }

    fn all<K: Resource<DynamicType = ()>>(&self) -> kube::Api<K> {
        kube::Api::all(self.client.clone())
    }

    /// A namespaced object.
    pub fn get<K>(&self, namespace: &str, name: &str) -> Result<K, Failure>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + DeserializeOwned
            + Clone
            + fmt::Debug,
    {
        let what = format!("{namespace}/{}/{name}", K::kind(&()).to_lowercase());
        self.call(&what, self.ns::<K>(namespace).get(name))
    }

    /// A cluster-scoped object (a Node, a StorageClass).
    pub fn get_cluster<K>(&self, name: &str) -> Result<K, Failure>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + Clone + fmt::Debug,
    {
        let what = format!("{}/{name}", K::kind(&()).to_lowercase());
        self.call(&what, self.all::<K>().get(name))
    }

    /// Every object of a kind in a namespace, or in the cluster (`None`).
    pub fn list<K>(&self, namespace: Option<&str>) -> Result<Vec<K>, Failure>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + DeserializeOwned
            + Clone
            + fmt::Debug,
    {
        let kind = K::plural(&()).to_string();
        let (api, what) = match namespace {
            Some(ns) => (self.ns::<K>(ns), format!("{kind} of {ns}")),
            None => (self.all::<K>(), kind),
        };
        self.call(&what, api.list(&ListParams::default()))
            .map(|l| l.items)
    }

    /// Every object of a cluster-scoped kind (Nodes, Namespaces).
    pub fn list_cluster<K>(&self) -> Result<Vec<K>, Failure>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + Clone + fmt::Debug,
    {
        let what = K::plural(&()).to_string();
        self.call(&what, self.all::<K>().list(&ListParams::default()))
            .map(|l| l.items)
    }

    /// A merge patch of a cluster-scoped object.
    pub fn merge_patch_cluster<K>(
        &self,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<K, Failure>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + Clone + fmt::Debug,
    {
        let what = format!("patching {}/{name}", K::kind(&()).to_lowercase());
        self.call(
            &what,
            self.all::<K>()
                .patch(name, &PatchParams::default(), &Patch::Merge(patch)),
        )
    }

    /// Makes a namespaced object (409 if it exists: `Refused`).
    pub fn create<K>(&self, namespace: &str, object: &K) -> Result<K, Failure>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + DeserializeOwned
            + serde::Serialize
            + Clone
            + fmt::Debug,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let what = format!("making {namespace}/{}/{name}", K::kind(&()).to_lowercase());
        self.call(
            &what,
            self.ns::<K>(namespace)
                .create(&PostParams::default(), object),
        )
    }

    /// Makes a namespaced object whose name is this caller's alone (a
    /// fresh token's secret), asking again for up to `within` while the
    /// API server is away or busy. A request that timed out may have been
    /// done: before asking again, the object is looked for, and found is
    /// made.
    pub fn create_own<K>(&self, namespace: &str, object: &K, within: Duration) -> Result<K, Failure>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + DeserializeOwned
            + serde::Serialize
            + Clone
            + fmt::Debug,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let start = std::time::Instant::now();
        loop {
            let failed = match self.create(namespace, object) {
                Err(f @ (Failure::Transient(_) | Failure::TimedOut(_))) => f,
                done => return done,
            };
            loop {
                if start.elapsed() >= within {
                    return Err(failed);
                }
                std::thread::sleep(Duration::from_secs(3));
                match self.get::<K>(namespace, &name) {
                    Ok(made) => return Ok(made),
                    Err(Failure::NotFound(_)) => break,
                    Err(Failure::Refused(r)) => return Err(Failure::Refused(r)),
                    Err(_) => {}
                }
            }
        }
    }

    /// A merge patch of a namespaced object.
    pub fn merge_patch<K>(
        &self,
        namespace: &str,
        name: &str,
        patch: &serde_json::Value,
    ) -> Result<K, Failure>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + DeserializeOwned
            + Clone
            + fmt::Debug,
    {
        let what = format!(
            "patching {namespace}/{}/{name}",
            K::kind(&()).to_lowercase()
        );
        self.call(
            &what,
            self.ns::<K>(namespace)
                .patch(name, &PatchParams::default(), &Patch::Merge(patch)),
        )
    }

    /// Deletes a namespaced object; one already gone is `NotFound`.
    pub fn delete<K>(&self, namespace: &str, name: &str) -> Result<(), Failure>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + DeserializeOwned
            + Clone
            + fmt::Debug,
    {
        let what = format!(
            "deleting {namespace}/{}/{name}",
            K::kind(&()).to_lowercase()
        );
        self.call(
            &what,
            self.ns::<K>(namespace)
                .delete(name, &DeleteParams::default()),
        )
        .map(|_| ())
    }

    /// Deletes a cluster-scoped object (a Node); one already gone is `NotFound`.
    pub fn delete_cluster<K>(&self, name: &str) -> Result<(), Failure>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + Clone + fmt::Debug,
    {
        let what = format!("deleting {}/{name}", K::kind(&()).to_lowercase());
        self.call(
            &what,
            self.all::<K>().delete(name, &DeleteParams::default()),
        )
        .map(|_| ())
    }

    /// The API server's own readiness (`/readyz`): `Err` carries its
    /// report of the checks that fail.
    pub fn readyz(&self) -> Result<(), Failure> {
        let req = http::Request::get("/readyz")
            .body(Vec::new())
            .map_err(|e| Failure::Refused(format!("GET /readyz ({e})")))?;
        self.call("GET /readyz", self.client.request_text(req))
            .map(|_| ())
    }

    /// A ServiceAccount's token for `seconds` (the TokenRequest API).
    pub fn token(&self, namespace: &str, account: &str, seconds: i64) -> Result<String, Failure> {
        let req = TokenRequest {
            spec: TokenRequestSpec {
                expiration_seconds: Some(seconds),
                ..Default::default()
            },
            ..Default::default()
        };
        let what = format!("a token of {namespace}/serviceaccount/{account}");
        let made: TokenRequest = self.call(
            &what,
            self.ns::<ServiceAccount>(namespace).create_subresource(
                "token",
                account,
                &PostParams::default(),
                &req,
            ),
        )?;
        made.status
            .map(|s| s.token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| Failure::Refused(format!("{what}: the answer holds no token")))
    }

    /// A pod's last log lines, every container's.
    pub fn logs(&self, namespace: &str, pod: &str, tail: i64) -> Result<String, Failure> {
        let api = self.ns::<Pod>(namespace);
        let p: Pod = self.get(namespace, pod)?;
        // Init containers too: a pod stuck in one says why there.
        let names: Vec<String> = p
            .spec
            .map(|s| {
                s.init_containers
                    .unwrap_or_default()
                    .into_iter()
                    .chain(s.containers)
                    .map(|c| c.name)
                    .collect()
            })
            .unwrap_or_default();
        let mut out = String::new();
        for c in names {
            let lp = LogParams {
                container: Some(c.clone()),
                tail_lines: Some(tail),
                ..Default::default()
            };
            let what = format!("the log of {namespace}/pod/{pod} ({c})");
            // A container that never started has no log: said, not fatal.
            match self.call(&what, api.logs(pod, &lp)) {
                Ok(text) => out.push_str(&text),
                Err(f) => out.push_str(&format!("{f}\n")),
            }
        }
        Ok(out)
    }

    /// A custom resource's `status.phase`, its kind named as a check names
    /// it (`CephFilesystem`): found once by discovery, then read directly.
    pub fn phase(&self, kind: &str, namespace: &str, name: &str) -> Result<String, Failure> {
        let ar = self.kind(kind)?;
        let api: kube::Api<DynamicObject> =
            kube::Api::namespaced_with(self.client.clone(), namespace, &ar);
        let what = format!("{namespace}/{kind}/{name}");
        let o = self.call(&what, api.get(name))?;
        Ok(o.data
            .pointer("/status/phase")
            .and_then(|p| p.as_str())
            .unwrap_or("")
            .to_string())
    }

    fn kind(&self, kind: &str) -> Result<ApiResource, Failure> {
        let known = |k: &Vec<(String, ApiResource)>| {
            k.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(kind))
                .map(|(_, a)| a.clone())
        };
        if let Some(a) = self.kinds.lock().ok().and_then(|k| known(&k)) {
            return Ok(a);
        }
        let d = self.call(
            &format!("the API's kinds (looking for {kind})"),
            Discovery::new(self.client.clone()).run(),
        )?;
        let found: Vec<(String, ApiResource)> = d
            .groups()
            .flat_map(|g| g.recommended_resources())
            .flat_map(|(ar, _)| [(ar.kind.clone(), ar.clone()), (ar.plural.clone(), ar)])
            .collect();
        let a = known(&found);
        if let Ok(mut k) = self.kinds.lock() {
            *k = found;
        }
        // A kind its CRD has not brought yet: it may come.
        a.ok_or_else(|| Failure::NotFound(format!("the kind {kind}")))
    }

    /// Blocks until an object of kind `K` in `namespace` (every namespace:
    /// `None`) changes, or `most` passes: a wait's pause between judging,
    /// cut short by the API's own news instead of a fixed sleep. A watch
    /// that cannot be opened just sleeps out `most`.
    pub fn changes<K>(&self, namespace: Option<&str>, most: Duration)
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + DeserializeOwned
            + Clone
            + fmt::Debug
            + Send
            + 'static,
    {
        let api = match namespace {
            Some(ns) => self.ns::<K>(ns),
            None => self.all::<K>(),
        };
        watch_once(&self.rt, api, most);
    }

    /// As [`Api::changes`], for a cluster-scoped kind (Nodes).
    pub fn changes_cluster<K>(&self, most: Duration)
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + Clone + fmt::Debug + Send + 'static,
    {
        watch_once(&self.rt, self.all::<K>(), most);
    }
}

/// The first event after now of a watch (its initial list skipped by
/// starting at the list's resourceVersion), or `most`.
fn watch_once<K>(rt: &tokio::runtime::Runtime, api: kube::Api<K>, most: Duration)
where
    K: Resource + DeserializeOwned + Clone + fmt::Debug + Send + 'static,
{
    let work = async {
        let lp = ListParams::default().limit(1);
        let Ok(list) = api.list_metadata(&lp).await else {
            return false;
        };
        let version = list.metadata.resource_version.unwrap_or_default();
        let wp = WatchParams::default().timeout(most.as_secs().clamp(1, 290) as u32);
        let Ok(stream) = api.watch(&wp, &version).await else {
            return false;
        };
        let mut stream = Box::pin(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(WatchEvent::Bookmark(_)) => continue,
                Ok(WatchEvent::Error(_)) | Err(_) => return false,
                Ok(_) => return true,
            }
        }
        false
    };
    let start = std::time::Instant::now();
    let woken = rt
        .block_on(async { tokio::time::timeout(most, work).await })
        .unwrap_or(false);
    if !woken {
        std::thread::sleep(most.saturating_sub(start.elapsed()));
    }
}

#[cfg(test)]
mod tests;
