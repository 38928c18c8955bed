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
}
