//! A minimal HTTP/1.1 client over `TcpStream`, for hostile-input tests (it
//! sends exactly the bytes asked for) and load generation without pulling an
//! HTTP stack into the test kit.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Duration;

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Sends `raw` (a whole request) and reads one response to its end.
pub fn raw(addr: &str, raw: &[u8]) -> Result<Reply> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(raw)?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .with_context(|| format!("bad status line {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let len: Option<usize> = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse().ok());
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let mut body = Vec::new();
    let head_req = raw.starts_with(b"HEAD ");
    if head_req || status == 204 || status == 304 {
    } else if chunked {
        loop {
            line.clear();
            r.read_line(&mut line)?;
            let n = usize::from_str_radix(line.trim(), 16).context("chunk size")?;
            if n == 0 {
                break;
            }
            let mut c = vec![0u8; n + 2];
            r.read_exact(&mut c)?;
            body.extend_from_slice(&c[..n]);
        }
    } else if let Some(n) = len {
        body.resize(n, 0);
        r.read_exact(&mut body)?;
    } else {
        r.read_to_end(&mut body)?;
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

pub fn request(addr: &str, method: &str, path: &str, extra: &[(&str, &str)]) -> Result<Reply> {
    exchange(addr, method, path, extra, None)
}

/// A request with a body, sent with its Content-Length (also when empty).
pub fn send(
    addr: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply> {
    exchange(addr, method, path, extra, Some(body))
}

fn exchange(
    addr: &str,
    method: &str,
    path: &str,
    extra: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Reply> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in extra {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut req = req.into_bytes();
    req.extend_from_slice(body.unwrap_or_default());
    raw(addr, &req)
}

pub fn get(addr: &str, path: &str) -> Result<Reply> {
    let r = request(
        addr,
        "GET",
        path,
        &[(
            "Accept",
            "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json",
        )],
    )?;
    Ok(r)
}

/// Waits until `GET /v2/` answers 200.
pub fn wait_registry(addr: &str, child: &mut std::process::Child) -> Result<()> {
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(20) {
        if let Ok(r) = get(addr, "/v2/")
            && r.status == 200
        {
            return Ok(());
        }
        if let Some(s) = child.try_wait()? {
            bail!("the registry exited with {s}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("no registry answered on {addr} within 20 s")
}
