//! The hand-off against a stand-in for Harbor's project API.
#![allow(clippy::unwrap_used)] // tests: a panic is the failure report
use super::*;
use std::io::{Read, Write};

/// A STAND-IN for Harbor's project API (Harbor itself cannot be built
/// here): answers `POST /api/v2.0/projects` with the statuses given, in
/// turn, and hands back each request it saw.
fn harbor_project_api_stand_in(
    answers: &'static [&'static str],
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let h = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for status in answers {
            let (mut c, _) = l.accept().unwrap();
            let mut req = Vec::new();
            let mut buf = [0u8; 4096];
            // Head, then the body its Content-Length announces.
            loop {
                let n = c.read(&mut buf).unwrap();
                req.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&req).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len: usize = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length: ")
                                .map(|v| v.trim().parse().unwrap())
                        })
                        .unwrap_or(0);
                    if req.len() >= end + 4 + len {
                        break;
                    }
                }
            }
            seen.push(String::from_utf8_lossy(&req).to_string());
            write!(
                c,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
        }
        seen
    });
    (addr, h)
}

#[tokio::test]
async fn the_project_is_made_once_as_admin_and_a_refusal_is_named() {
    let (addr, h) =
        harbor_project_api_stand_in(&["201 Created", "409 Conflict", "401 Unauthorized"]);
    let t = Target {
        base: format!("http://{addr}"),
        project: "cp-portal-repository".into(),
        auth: Some(("admin".into(), "s3cret".into())),
    };
    ensure_project(&t).await.unwrap();
    // It exists already: fine.
    ensure_project(&t).await.unwrap();
    let e = ensure_project(&t).await.unwrap_err();
    assert!(
        format!("{e:#}").contains("making Harbor project cp-portal-repository: 401"),
        "{e:#}"
    );
    let seen = h.join().unwrap();
    assert!(
        seen[0].starts_with("POST /api/v2.0/projects HTTP/1.1"),
        "{}",
        seen[0]
    );
    // Basic admin:s3cret, a public project of that name.
    assert!(
        seen[0].contains("authorization: Basic YWRtaW46czNjcmV0"),
        "{}",
        seen[0]
    );
    assert!(
        seen[0].contains(r#"{"metadata":{"public":"true"},"project_name":"cp-portal-repository"}"#),
        "{}",
        seen[0]
    );
}

/// A blob the seed has already hashed is sent without a second hash; if
/// its file was damaged since, the registry's own digest check still keeps
/// it out, and the failure names the blob. Unhashed, the agent finds the
/// damage before it asks the registry to commit anything. Against a real
/// registry (distribution).
#[tokio::test]
async fn a_damaged_blob_is_never_stored_whether_or_not_the_seed_had_hashed_it() {
    if !kpaas_testkit::have_tools("fill_trusted", &["docker-registry"]) {
        return;
    }
    let reg = kpaas_testkit::servers::registry(&Default::default()).unwrap();
    let t = Target {
        base: format!("http://{}", reg.addr),
        project: "p".into(),
        auth: None,
    };
    let c = Client {
        http: reqwest::Client::new(),
        t,
    };
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path();
    let good = b"the bytes the bundle signed".to_vec();
    let d = Digest::of(&good);
    let p = blob_path(bundle, &d);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let size = good.len() as u64;
    // Intact and trusted: sent, stored under its digest.
    std::fs::write(&p, &good).unwrap();
    c.send_blob(bundle, "p/good", &d, size, true).await.unwrap();
    assert!(c.has_blob("p/good", &d).await.unwrap());
    // Damaged, same size.
    let mut bad = good.clone();
    bad[0] ^= 0xff;
    std::fs::write(&p, &bad).unwrap();
    let e = c
        .send_blob(bundle, "p/trusted", &d, size, true)
        .await
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains(d.as_str()) && e.contains("400"), "{e}");
    assert!(!c.has_blob("p/trusted", &d).await.unwrap());
    let e = c
        .send_blob(bundle, "p/hashed", &d, size, false)
        .await
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(e.contains("the bundle is damaged"), "{e}");
    assert!(!c.has_blob("p/hashed", &d).await.unwrap());
}
