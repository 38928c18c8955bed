//! Real peers on loopback: Debian's `docker-registry` (distribution 2.8) and
//! `nginx-light`, plus a small fault-injecting HTTP proxy. Each is stopped
//! when dropped.

use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn wait_port(port: u16, child: &mut Child, what: &str) -> Result<()> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if let Some(s) = child.try_wait()? {
            bail!("{what} exited early with {s}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    bail!("{what} did not listen on 127.0.0.1:{port} within 15 s")
}

pub struct Server {
    child: Child,
    pub port: u16,
    pub addr: String,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// The storage directory of a registry this kit started.
    pub fn data_dir(&self) -> Option<PathBuf> {
        self._dir.as_ref().map(|d| d.path().join("data"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Default, Clone)]
pub struct RegistryOpts {
    /// (user, password) for htpasswd basic auth.
    pub basic_auth: Option<(String, String)>,
    /// (cert, key) PEM files for TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Serve this existing storage directory read-only (distribution's
    /// maintenance mode) instead of a fresh one.
    pub readonly_data: Option<PathBuf>,
}

/// Starts `docker-registry` with filesystem storage in a temp dir.
pub fn registry(opts: &RegistryOpts) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let data = opts
        .readonly_data
        .clone()
        .unwrap_or_else(|| dir.path().join("data"));
    let ro = if opts.readonly_data.is_some() {
        "  maintenance: {readonly: {enabled: true}}\n"
    } else {
        ""
    };
    let mut cfg = format!(
        "version: 0.1\nlog: {{level: error, accesslog: {{disabled: true}}}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\n{ro}http:\n  addr: 127.0.0.1:{port}\n  secret: kpaas-test\n",
        data.display()
    );
    if let Some((cert, key)) = &opts.tls {
        cfg.push_str(&format!(
            "  tls: {{certificate: {}, key: {}}}\n",
            cert.display(),
            key.display()
        ));
    }
    if let Some((u, p)) = &opts.basic_auth {
        let out = Command::new("htpasswd")
            .args(["-Bbn", u, p])
            .output()
            .context("running htpasswd (apache2-utils)")?;
        if !out.status.success() {
            bail!("htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let hp = dir.path().join("htpasswd");
        std::fs::write(&hp, out.stdout)?;
        cfg.push_str(&format!(
            "auth:\n  htpasswd: {{realm: kpaas-test, path: {}}}\n",
            hp.display()
        ));
    }
    let conf = dir.path().join("config.yml");
    std::fs::write(&conf, cfg)?;
    let log = std::fs::File::create(dir.path().join("registry.log"))?;
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(&conf)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting docker-registry")?;
    wait_port(port, &mut child, "docker-registry")?;
    Ok(Server {
        child,
        port,
        addr: format!("127.0.0.1:{port}"),
        _dir: Some(dir),
    })
}

/// Serves `root` with nginx (Range requests work, as on real file servers).
pub fn nginx(root: &Path) -> Result<Server> {
    let dir = tempfile::tempdir()?;
    let port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\nevents {{ worker_connections 256; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {d}/body;\n  proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fcgi;\n  uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  types {{ application/octet-stream tgz; text/yaml yaml; }}\n  server {{\n    listen 127.0.0.1:{port};\n    root {root};\n  }}\n}}\n",
            d = dir.path().display(),
            root = root.display()
        ),
    )?;
    let mut child = Command::new("nginx")
        .args(["-p", &dir.path().to_string_lossy(), "-c"])
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx (nginx-light)")?;
    wait_port(port, &mut child, "nginx")?;
    Ok(Server {
        child,
        port,
        addr: format!("127.0.0.1:{port}"),
        _dir: Some(dir),
    })
}

/// `skopeo copy --all oci:<layout>:<ref> docker://<registry>/<dest>` (plain HTTP).
pub fn push(layout: &Path, r: &str, registry: &str, dest: &str, creds: Option<&str>) -> Result<()> {
    push_as(layout, r, registry, dest, creds, None)
}

/// [`push`] with a manifest format for skopeo (`v2s2` = Docker schema 2).
pub fn push_as(
    layout: &Path,
    r: &str,
    registry: &str,
    dest: &str,
    creds: Option<&str>,
    format: Option<&str>,
) -> Result<()> {
    let mut c = Command::new("skopeo");
    c.args(["copy", "--quiet", "--all", "--dest-tls-verify=false"]);
    if let Some(f) = format {
        c.args(["--format", f]);
    }
    if let Some(cr) = creds {
        c.args(["--dest-creds", cr]);
    }
    let out = c
        .arg(format!("oci:{}:{r}", layout.display()))
        .arg(format!("docker://{registry}/{dest}"))
        .output()
        .context("running skopeo")?;
    if !out.status.success() {
        bail!(
            "skopeo copy {r} -> {registry}/{dest}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A self-signed CA and a server certificate for 127.0.0.1, made with openssl.
pub fn make_tls(dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let run = |args: &[&str]| -> Result<()> {
        let o = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .context("running openssl")?;
        if !o.status.success() {
            bail!("openssl {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=kpaas-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    ])?;
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    std::fs::write(
        dir.join("san.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    ])?;
    Ok((
        dir.join("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    ))
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    /// Close the connection halfway through the first response for each blob.
    ResetMidBlob,
    /// Answer 500 to the first request for each path.
    ServerErrorOnce,
    /// Answer 429 with `Retry-After: 1` to the first request for each path.
    TooManyOnce,
    /// Pass everything, but send bodies slowly (for kill-mid-fetch tests).
    Slow,
    /// Act as a token-auth registry front (the Docker Hub / Harbor flow): 401
    /// with a Bearer challenge, a token endpoint at /token that wants basic
    /// credentials kpaas:s3cret, and only requests with that token pass.
    BearerAuth,
}

/// A one-request-per-connection HTTP proxy that injects `fault`.
pub struct FaultProxy {
    pub addr: String,
    pub faults_injected: Arc<AtomicUsize>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

pub fn fault_proxy(upstream: &str, fault: Fault) -> Result<FaultProxy> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?.to_string();
    let injected = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen: Arc<Mutex<std::collections::HashSet<String>>> = Arc::default();
    let (up, inj, st, me) = (
        upstream.to_string(),
        injected.clone(),
        stop.clone(),
        addr.clone(),
    );
    std::thread::spawn(move || {
        for conn in l.incoming() {
            if st.load(Ordering::SeqCst) {
                break;
            }
            let Ok(c) = conn else { continue };
            let (up, inj, seen, me) = (up.clone(), inj.clone(), seen.clone(), me.clone());
            std::thread::spawn(move || {
                let _ = proxy_one(c, &up, fault, &inj, &seen, &me);
            });
        }
    });
    Ok(FaultProxy {
        addr,
        faults_injected: injected,
        stop,
    })
}

fn proxy_one(
    client: TcpStream,
    upstream: &str,
    fault: Fault,
    inj: &AtomicUsize,
    seen: &Mutex<std::collections::HashSet<String>>,
    me: &str,
) -> Result<()> {
    let mut r = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    let mut line = String::new();
    r.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
    head.push_str(&line);
    let mut authorization = String::new();
    loop {
        line.clear();
        r.read_line(&mut line)?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("authorization:") {
            authorization = line["authorization:".len()..].trim().to_string();
            continue;
        }
        if lower.starts_with("connection:") || lower.starts_with("host:") {
            continue;
        }
        head.push_str(&line);
    }
    if fault == Fault::BearerAuth {
        let mut c = client.try_clone()?;
        if path.starts_with("/token") {
            // base64("kpaas:s3cret")
            if authorization != "Basic a3BhYXM6czNjcmV0" {
                c.write_all(
                    b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                return Ok(());
            }
            let body = br#"{"token":"kpaas-test-token"}"#;
            c.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len()).as_bytes())?;
            c.write_all(body)?;
            return Ok(());
        }
        if authorization != "Bearer kpaas-test-token" {
            inj.fetch_add(1, Ordering::SeqCst);
            let repo = path
                .trim_start_matches("/v2/")
                .split("/manifests/")
                .next()
                .unwrap_or("")
                .split("/blobs/")
                .next()
                .unwrap_or("");
            c.write_all(format!("HTTP/1.1 401 Unauthorized\r\nWww-Authenticate: Bearer realm=\"http://{me}/token\",service=\"kpaas-test\",scope=\"repository:{repo}:pull\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").as_bytes())?;
            return Ok(());
        }
    }
    head.push_str(&format!("Host: {upstream}\r\nConnection: close\r\n\r\n"));
    let first = seen
        .lock()
        .map(|mut s| s.insert(path.clone()))
        .unwrap_or(false);
    let mut client = client;
    match fault {
        Fault::ServerErrorOnce if first => {
            inj.fetch_add(1, Ordering::SeqCst);
            client.write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        Fault::TooManyOnce if first => {
            inj.fetch_add(1, Ordering::SeqCst);
            client.write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
            return Ok(());
        }
        _ => {}
    }
    let mut u = TcpStream::connect(upstream)?;
    u.write_all(head.as_bytes())?;
    let mut ur = BufReader::new(u);
    // Copy the response head, learn the body length.
    let mut len: Option<u64> = None;
    let mut resp_head = Vec::new();
    loop {
        line.clear();
        ur.read_line(&mut line)?;
        resp_head.extend_from_slice(line.as_bytes());
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok();
        }
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    client.write_all(&resp_head)?;
    let is_blob =
        path.contains("/blobs/sha256:") || path.ends_with(".tgz") || path.contains("/files/");
    let cut = match (fault, len) {
        (Fault::ResetMidBlob, Some(n)) if first && is_blob && n > 1 => Some(n / 2),
        _ => None,
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut sent = 0u64;
    loop {
        let want = match cut {
            Some(c) => buf.len().min((c - sent) as usize),
            None => buf.len(),
        };
        if want == 0 {
            inj.fetch_add(1, Ordering::SeqCst);
            // Reset, not a clean close: the client must notice the short body.
            let _ = client.shutdown(std::net::Shutdown::Both);
            return Ok(());
        }
        let n = ur.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        client.write_all(&buf[..n])?;
        sent += n as u64;
        if fault == Fault::Slow && is_blob {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Ok(())
}
