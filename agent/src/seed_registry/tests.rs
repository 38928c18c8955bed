//! The seed registry's request handler, called directly on a small layout
//! written here: what containerd and CRI-O ask of it, and what it refuses.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
use super::*;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue};
use kpaas_testkit::content::Layout;

#[test]
fn ranges() {
    let h = |s: &str| HeaderValue::from_str(s).ok();
    assert_eq!(parse_range(h("bytes=0-9").as_ref(), 100), Ok(Some((0, 9))));
    assert_eq!(
        parse_range(h("bytes=90-").as_ref(), 100),
        Ok(Some((90, 99)))
    );
    assert_eq!(
        parse_range(h("bytes=-10").as_ref(), 100),
        Ok(Some((90, 99)))
    );
    assert_eq!(
        parse_range(h("bytes=50-500").as_ref(), 100),
        Ok(Some((50, 99)))
    );
    assert_eq!(parse_range(h("bytes=100-").as_ref(), 100), Err(()));
    assert_eq!(parse_range(h("bytes=9-1").as_ref(), 100), Err(()));
    assert_eq!(parse_range(h("items=1-2").as_ref(), 100), Err(()));
    assert_eq!(parse_range(None, 100), Ok(None));
}

#[test]
fn names() {
    assert!(valid_name("registry.k8s.io/ingress-nginx/controller"));
    assert!(valid_name("127.0.0.1:5000/a/b"));
    for bad in ["", "a//b", "../etc", "a/../b", "A/b", "a/b/", "a b"] {
        assert!(!valid_name(bad), "{bad}");
    }
}

/// A bundle layout with one image, `registry.demo.kpaas.test/demo/app:1.0`:
/// a config and one 100-byte layer (bytes 0..100, so ranges are easy to
/// check). Returns the manifest's and the layer's digests.
fn layout(dir: &Path) -> (Digest, Digest) {
    let mut l = Layout::new(&dir.join("oci")).unwrap();
    let layer: Vec<u8> = (0..100u8).collect();
    // The seed serves blobs as they are; the diff id is never looked at.
    let diff_id = Digest::of(&layer).to_string();
    let (manifest, m) = l.image(&[(layer.clone(), diff_id)], "amd64", &[]).unwrap();
    l.tag(
        "registry.demo.kpaas.test/demo/app:1.0",
        oci::OCI_MANIFEST,
        &manifest,
    );
    l.write_index().unwrap();
    (Digest::parse(&m).unwrap(), Digest::of(&layer))
}

async fn call(
    seed: &Arc<Seed>,
    method: &str,
    uri: &str,
    range: Option<&str>,
) -> (u16, HeaderMap, Vec<u8>) {
    let mut b = Request::builder().method(method).uri(uri);
    if let Some(r) = range {
        b = b.header(header::RANGE, r);
    }
    let resp = handle(State(seed.clone()), b.body(Body::empty()).unwrap()).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, headers, body.to_vec())
}

#[tokio::test]
async fn the_handler_serves_what_a_runtime_pulls_and_refuses_the_rest() {
    let t = tempfile::tempdir().unwrap();
    let (m, l) = layout(t.path());
    let seed = Arc::new(Seed::load(t.path()).unwrap());
    let repo = "/v2/registry.demo.kpaas.test/demo/app";
    assert_eq!(call(&seed, "GET", "/v2/", None).await.0, 200);
    // By tag and by digest, GET and HEAD: the digest header, the type, the length.
    let (s, h, body) = call(&seed, "GET", &format!("{repo}/manifests/1.0"), None).await;
    assert_eq!(s, 200);
    assert_eq!(h["docker-content-digest"], m.as_str());
    assert_eq!(h[header::CONTENT_TYPE], oci::OCI_MANIFEST);
    assert_eq!(Digest::of(&body), m);
    let (s, h, body) = call(&seed, "HEAD", &format!("{repo}/manifests/{m}"), None).await;
    assert_eq!((s, body.len()), (200, 0));
    assert_eq!(
        h[header::CONTENT_LENGTH],
        format!(
            "{}",
            std::fs::metadata(t.path().join("oci").join(m.blob_path()))
                .unwrap()
                .len()
        )
    );
    // containerd's mirror form: the upstream registry in ?ns=, the path without it.
    let (s, ..) = call(
        &seed,
        "GET",
        "/v2/demo/app/manifests/1.0?ns=registry.demo.kpaas.test",
        None,
    )
    .await;
    assert_eq!(s, 200);
    // A blob, whole and by range; hashed on first read, so it must be intact.
    let (s, _, body) = call(&seed, "GET", &format!("{repo}/blobs/{l}"), None).await;
    assert_eq!((s, body.len()), (200, 100));
    let (s, h, body) = call(
        &seed,
        "GET",
        &format!("{repo}/blobs/{l}"),
        Some("bytes=10-19"),
    )
    .await;
    assert_eq!((s, body), (206, (10..20u8).collect::<Vec<_>>()));
    assert_eq!(h[header::CONTENT_RANGE], "bytes 10-19/100");
    assert_eq!(
        call(
            &seed,
            "GET",
            &format!("{repo}/blobs/{l}"),
            Some("bytes=100-")
        )
        .await
        .0,
        416
    );
    // What is not there, and what a read-only registry refuses.
    for (method, path, status) in [
        ("GET", format!("{repo}/manifests/2.0"), 404),
        ("GET", "/v2/other/app/manifests/1.0".to_string(), 404),
        (
            "GET",
            format!("{repo}/blobs/sha256:{}", "0".repeat(64)),
            404,
        ),
        ("GET", format!("{repo}/blobs/sha256:zz"), 400),
        ("GET", "/v2/a/../b/manifests/1.0".to_string(), 400),
        ("PUT", format!("{repo}/manifests/1.0"), 405),
        ("POST", format!("{repo}/blobs/uploads/"), 405),
        ("GET", "/metrics".to_string(), 404),
    ] {
        assert_eq!(
            call(&seed, method, &path, None).await.0,
            status,
            "{method} {path}"
        );
    }
    let (_, _, body) = call(&seed, "PUT", &format!("{repo}/manifests/1.0"), None).await;
    assert!(String::from_utf8_lossy(&body).contains("read-only"));
}

#[tokio::test]
async fn a_corrupt_blob_is_refused_not_served() {
    let t = tempfile::tempdir().unwrap();
    let (_, l) = layout(t.path());
    std::fs::write(t.path().join("oci").join(l.blob_path()), vec![7u8; 100]).unwrap();
    let seed = Arc::new(Seed::load(t.path()).unwrap());
    let uri = format!("/v2/registry.demo.kpaas.test/demo/app/blobs/{l}");
    assert_eq!(call(&seed, "GET", &uri, None).await.0, 500);
    // And it stays refused on the next read.
    assert_eq!(call(&seed, "GET", &uri, None).await.0, 500);
}

/// One request over a plain connection, the whole answer as text
/// (blocking: callers run it off the runtime's threads).
fn http(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The status page is served beside the registry, read-only, from the
/// state directory of the moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_is_served_beside_the_registry() {
    let t = tempfile::tempdir().unwrap();
    layout(t.path());
    let state = t.path().join("state");
    let mut sink = crate::events::Sink::open(&state).unwrap().quiet();
    sink.emit(
        crate::boot::StepId::Deploy,
        crate::events::Kind::Started,
        "",
    )
    .unwrap();
    sink.emit(
        crate::boot::StepId::Deploy,
        crate::events::Kind::Progress,
        "wave 2: apps",
    )
    .unwrap();
    let seed = Arc::new(Seed::load(t.path()).unwrap());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let handles = serve(seed, &[addr], Some(&state), None).await.unwrap();
    let get = move |path: &'static str, method: &'static str| http(addr, method, path);
    let json = tokio::task::spawn_blocking(move || get("/status.json", "GET"))
        .await
        .unwrap();
    assert!(json.starts_with("HTTP/1.1 200"), "{json}");
    let body: serde_json::Value =
        serde_json::from_str(json.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["now"]["step"], "deploy");
    assert_eq!(body["now"]["doing"], "wave 2: apps");
    let page = tokio::task::spawn_blocking(move || get("/status", "GET"))
        .await
        .unwrap();
    assert!(
        page.contains("now: deploy for ") && page.contains("text/plain"),
        "{page}"
    );
    // The registry still answers on the same port; the page takes no writes.
    let v2 = tokio::task::spawn_blocking(move || get("/v2/", "GET"))
        .await
        .unwrap();
    assert!(v2.starts_with("HTTP/1.1 200"), "{v2}");
    let post = tokio::task::spawn_blocking(move || get("/status", "POST"))
        .await
        .unwrap();
    assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    for h in handles {
        h.abort();
    }
}

/// The spec's tag pagination (`n`, `last`, `Link`) and its error codes
/// (the seed once answered `NOT_FOUND`, which is not one of them).
#[tokio::test]
async fn tag_lists_page_and_errors_use_the_specs_codes() {
    let t = tempfile::tempdir().unwrap();
    let mut l = Layout::new(&t.path().join("oci")).unwrap();
    let layer: Vec<u8> = (0..10u8).collect();
    let (manifest, m) = l
        .image(
            &[(layer.clone(), Digest::of(&layer).to_string())],
            "amd64",
            &[],
        )
        .unwrap();
    for tag in ["2.0", "1.0", "1.1", "a"] {
        l.tag(
            &format!("registry.demo.kpaas.test/demo/app:{tag}"),
            oci::OCI_MANIFEST,
            &manifest,
        );
    }
    l.write_index().unwrap();
    let seed = Arc::new(Seed::load(t.path()).unwrap());
    let list = "/v2/registry.demo.kpaas.test/demo/app/tags/list";
    let tags = |body: &[u8]| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        serde_json::from_value(v["tags"].clone()).unwrap()
    };
    let (s, h, body) = call(&seed, "GET", list, None).await;
    assert_eq!(
        (s, tags(&body)),
        (
            200,
            vec!["1.0".into(), "1.1".into(), "2.0".into(), "a".into()]
        )
    );
    assert!(h.get(header::LINK).is_none());
    let (s, h, body) = call(&seed, "GET", &format!("{list}?n=2"), None).await;
    assert_eq!(
        (s, tags(&body)),
        (200, vec!["1.0".to_string(), "1.1".into()])
    );
    assert_eq!(
        h[header::LINK],
        "</v2/registry.demo.kpaas.test/demo/app/tags/list?n=2&last=1.1>; rel=\"next\""
    );
    let (_, h, body) = call(&seed, "GET", &format!("{list}?n=2&last=1.1"), None).await;
    assert_eq!(tags(&body), ["2.0", "a"]);
    assert!(
        h.get(header::LINK).is_none(),
        "nothing remains after the last page"
    );
    let (_, _, body) = call(&seed, "GET", &format!("{list}?last=1.0"), None).await;
    assert_eq!(tags(&body), ["1.1", "2.0", "a"]);
    let (s, h, body) = call(&seed, "GET", &format!("{list}?n=0"), None).await;
    assert_eq!((s, tags(&body).len()), (200, 0));
    assert!(h.get(header::LINK).is_none());
    assert_eq!(
        call(&seed, "GET", &format!("{list}?n=x"), None).await.0,
        400
    );
    let code = |body: &[u8]| -> String {
        let v: serde_json::Value = serde_json::from_slice(body).unwrap();
        v["errors"][0]["code"].as_str().unwrap().to_string()
    };
    let repo = "/v2/registry.demo.kpaas.test/demo/app";
    for (path, status, want) in [
        (format!("{repo}/manifests/9.9"), 404, "MANIFEST_UNKNOWN"),
        (
            "/v2/other/app/manifests/1.0".to_string(),
            404,
            "NAME_UNKNOWN",
        ),
        ("/v2/other/app/tags/list".to_string(), 404, "NAME_UNKNOWN"),
        (
            format!("{repo}/blobs/sha256:{}", "0".repeat(64)),
            404,
            "BLOB_UNKNOWN",
        ),
        (
            format!("{repo}/manifests/sha256:baddigest"),
            400,
            "DIGEST_INVALID",
        ),
        (format!("{repo}/referrers/{m}"), 404, "UNSUPPORTED"),
        ("/v2/what/ever".to_string(), 404, "UNSUPPORTED"),
        ("/metrics".to_string(), 404, "UNSUPPORTED"),
    ] {
        let (s, _, body) = call(&seed, "GET", &path, None).await;
        assert_eq!((s, code(&body).as_str()), (status, want), "GET {path}");
    }
}

/// A layout with one image under `tag`, its layer's bytes `fill`.
fn layout_tagged(dir: &Path, tag: &str, fill: u8) -> Digest {
    let mut l = Layout::new(&dir.join("oci")).unwrap();
    let layer = vec![fill; 64];
    let diff_id = Digest::of(&layer).to_string();
    let (manifest, m) = l.image(&[(layer, diff_id)], "amd64", &[]).unwrap();
    l.tag(tag, oci::OCI_MANIFEST, &manifest);
    l.write_index().unwrap();
    Digest::parse(&m).unwrap()
}

/// An update's switch: the registry serves what `serving.json` lists (the
/// new bundle first, the old behind it), says so in `served.json`, then
/// the new one alone; the master's inventory is on the node endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_follows_an_update_and_the_master_answers_its_inventory() {
    let t = tempfile::tempdir().unwrap();
    let (old, new) = (t.path().join("old"), t.path().join("new"));
    let old_m = layout_tagged(&old, "registry.demo.kpaas.test/demo/app:1.0", 1);
    let new_m = layout_tagged(&new, "registry.demo.kpaas.test/demo/app:2.0", 2);
    let state = t.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let inv: serde_json::Value = serde_json::json!({
        "inventory_version": 1, "cluster": "lab", "taken": "2026-01-01T00:00:00Z",
        "platform": "demo", "platform_version": "0.1.0", "serial": 1,
        "bundle": Digest::of(b"b"), "history": [], "blobs": [], "releases": [], "nodes": []
    });
    let answer: airgap_bundle::inventory::Inventory = serde_json::from_value(inv.clone()).unwrap();
    let f: crate::node_api::InventoryFn = Arc::new(move || Ok(answer.clone()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let seed = Arc::new(Seed::load(&old).unwrap());
    let handles = serve(seed, &[addr], Some(&state), Some(f)).await.unwrap();
    let get = move |path: String| http(addr, "GET", &path);
    let status = move |tag: &str| {
        let p = format!("/v2/registry.demo.kpaas.test/demo/app/manifests/{tag}");
        let out = get(p);
        out.split(' ').nth(1).unwrap_or("").to_string()
    };
    let body = tokio::task::spawn_blocking(move || get("/node/v1/inventory".into()))
        .await
        .unwrap();
    let got: serde_json::Value =
        serde_json::from_str(body.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(got, inv);
    let wait_served = |want: Vec<PathBuf>| {
        let state = state.clone();
        async move {
            let ok = tokio::task::spawn_blocking(move || {
                crate::update::store::await_served(
                    &state,
                    &want,
                    std::time::Duration::from_secs(20),
                )
            })
            .await
            .unwrap();
            assert!(ok, "the registry did not take up the new list");
        }
    };
    let (o, n) = (old.clone(), new.clone());
    assert_eq!(
        tokio::task::spawn_blocking(move || (status("1.0"), status("2.0")))
            .await
            .unwrap(),
        ("200".to_string(), "404".to_string())
    );
    crate::update::store::set_serving(&state, &[n.clone(), o.clone()]).unwrap();
    wait_served(vec![n.clone(), o.clone()]).await;
    let by_digest = format!("{old_m}");
    assert_eq!(
        tokio::task::spawn_blocking(move || (status("1.0"), status("2.0"), status(&by_digest)))
            .await
            .unwrap(),
        ("200".to_string(), "200".to_string(), "200".to_string()),
        "the new bundle first, the old one behind it"
    );
    crate::update::store::set_serving(&state, std::slice::from_ref(&n)).unwrap();
    wait_served(vec![n]).await;
    let by_digest = format!("{new_m}");
    assert_eq!(
        tokio::task::spawn_blocking(move || (status("1.0"), status(&by_digest)))
            .await
            .unwrap(),
        ("404".to_string(), "200".to_string()),
        "done: the new bundle alone"
    );
    for h in handles {
        h.abort();
    }
}
