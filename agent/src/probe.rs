//! The one HTTP client for probes and health checks of peers (a registry's
//! `/v2/`, a plan's `http` check, the master's node endpoint): reqwest,
//! every request bounded, no proxy (a site has none, and a proxy variable
//! left in a node's environment must not send its health checks elsewhere).

use std::net::SocketAddr;
use std::time::Duration;

/// A client whose every request ends within `timeout`.
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .build()
        .unwrap_or_default()
}

/// `GET url`: its status code, or why there is none.
pub async fn status(url: &str, timeout: Duration) -> Result<u16, String> {
    client(timeout)
        .get(url)
        .header(reqwest::header::USER_AGENT, "kpaas-agent")
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| describe(url, &e))
}

/// As [`status`], from synchronous code (the deploy engine's checks), on
/// a runtime of its own; only `http://` (a site's health endpoints).
pub fn status_blocking(url: &str, timeout: Duration) -> Result<u16, String> {
    if !url.starts_with("http://") {
        return Err("only http:// is implemented".to_string());
    }
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the async runtime: {e}"))?
        .block_on(status(url, timeout))
}

/// `GET url`: its body when it answers 200.
pub async fn get(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    let r = client(timeout)
        .get(url)
        .header(reqwest::header::USER_AGENT, "kpaas-agent")
        .send()
        .await
        .map_err(|e| describe(url, &e))?;
    let code = r.status();
    if !code.is_success() {
        return Err(format!("GET {url} answered {code}"));
    }
    r.bytes()
        .await
        .map(|b| b.to_vec())
        .map_err(|e| describe(url, &e))
}

/// reqwest's error with its cause (the top line alone says only "error
/// sending request").
fn describe(url: &str, e: &reqwest::Error) -> String {
    let mut s = format!("GET {url}: {e}");
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(&format!(": {c}"));
        src = c.source();
    }
    if e.is_timeout() {
        s.push_str(" (timed out)");
    }
    s
}

/// True when `GET /v2/` at `addr` answers 200 within 3 s.
pub async fn registry(addr: SocketAddr) -> bool {
    status(&format!("http://{addr}/v2/"), Duration::from_secs(3)).await == Ok(200)
}

/// Workers will join the master and pull from its registries: say early
/// whether it can be reached (not a boot step: the master may come later).
pub async fn watch_master(addr: SocketAddr) {
    for _ in 0..60 {
        if registry(addr).await {
            eprintln!("kpaas-agent: master seed registry reachable at {addr}");
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!("kpaas-agent: master seed registry at {addr} not reachable after 2 minutes");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that accepts and never answers: the probe ends at its bound.
    #[tokio::test]
    async fn a_silent_server_ends_the_probe_at_its_bound() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _held = tokio::spawn(async move {
            let mut conns = Vec::new();
            loop {
                if let Ok((c, _)) = l.accept().await {
                    conns.push(c);
                }
            }
        });
        let e = status(&format!("http://{addr}/x"), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(!registry(addr).await);
    }

    #[test]
    fn http_health_reads_the_status_line() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            for code in ["200 OK", "503 Service Unavailable"] {
                let (mut c, _) = l.accept().unwrap();
                // The whole head before answering: closing a socket with
                // unread bytes resets it, and the client sees no answer.
                let mut req = Vec::new();
                let mut buf = [0u8; 512];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = c.read(&mut buf).unwrap();
                    assert!(n > 0, "the request ended early");
                    req.extend_from_slice(&buf[..n]);
                }
                assert!(String::from_utf8_lossy(&req).starts_with("GET /api/v2.0/health HTTP/1.1"));
                write!(c, "HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/api/v2.0/health");
        assert_eq!(status_blocking(&url, Duration::from_secs(5)).unwrap(), 200);
        assert_eq!(status_blocking(&url, Duration::from_secs(5)).unwrap(), 503);
        server.join().unwrap();
        // Nothing listening: an error, not a status.
        drop(std::net::TcpListener::bind("127.0.0.1:0"));
        assert!(status_blocking("http://127.0.0.1:1/x", Duration::from_secs(5)).is_err());
        assert!(status_blocking("https://127.0.0.1/x", Duration::from_secs(5)).is_err());
    }
}
