//! Small network probes the agent makes of its peers.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// True when `GET /v2/` at `addr` answers 200 within 3 s.
pub async fn registry(addr: SocketAddr) -> bool {
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        s.write_all(
            format!("GET /v2/ HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
        let mut buf = [0u8; 32];
        let n = s.read(&mut buf).await.ok()?;
        Some(buf[..n].starts_with(b"HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(3), fut)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
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
