//! `just bench-seed`: the same content served by our seed registry and by
//! Debian's docker-registry (filesystem storage, read-only mode), pulled by N
//! concurrent clients in the same run. Prints throughput and p99 manifest
//! latency for both, and the ratios; asserts nothing.

use anyhow::{Context, Result, bail};
use kpaas_testkit::servers::{self, RegistryOpts};
use kpaas_testkit::{content, http};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Load {
    bytes: u64,
    secs: f64,
    p99_ms: f64,
    p50_ms: f64,
    errors: usize,
}

/// `clients` threads; each fetches `per_client` images (manifest + every
/// layer), then `manifests` manifest GETs timed one by one.
fn load(
    addr: &str,
    prefix: &str,
    images: &[(String, Vec<String>)],
    clients: usize,
    per_client: usize,
    manifests: usize,
) -> Load {
    let t = Instant::now();
    let results: Vec<(u64, Vec<f64>, usize)> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..clients)
            .map(|c| {
                s.spawn(move || {
                    let (mut bytes, mut lat, mut errors) = (0u64, Vec::new(), 0usize);
                    for k in 0..per_client {
                        let (repo, layers) = &images[(c + k) % images.len()];
                        for p in std::iter::once(format!("/v2/{prefix}{repo}/manifests/1")).chain(
                            layers
                                .iter()
                                .map(|l| format!("/v2/{prefix}{repo}/blobs/{l}")),
                        ) {
                            match http::get(addr, &p) {
                                Ok(r) if r.status == 200 => bytes += r.body.len() as u64,
                                _ => errors += 1,
                            }
                        }
                    }
                    for k in 0..manifests {
                        let (repo, _) = &images[(c + k) % images.len()];
                        let t = Instant::now();
                        match http::get(addr, &format!("/v2/{prefix}{repo}/manifests/1")) {
                            Ok(r) if r.status == 200 => {
                                lat.push(t.elapsed().as_secs_f64() * 1000.0)
                            }
                            _ => errors += 1,
                        }
                    }
                    (bytes, lat, errors)
                })
            })
            .collect();
        hs.into_iter()
            .map(|h| h.join().unwrap_or((0, vec![], 1)))
            .collect()
    });
    let secs = t.elapsed().as_secs_f64();
    let mut lat: Vec<f64> = results.iter().flat_map(|r| r.1.clone()).collect();
    lat.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
            .unwrap_or(f64::NAN)
    };
    Load {
        bytes: results.iter().map(|r| r.0).sum(),
        secs,
        p99_ms: pct(0.99),
        p50_ms: pct(0.50),
        errors: results.iter().map(|r| r.2).sum(),
    }
}

fn main() -> Result<()> {
    let get = kpaas_testkit::flag;
    let builder = get("--builder").context("--builder PATH --agent PATH")?;
    let agent = get("--agent").context("--builder PATH --agent PATH")?;
    let n_images = 8;
    let clients: usize = get("--clients").and_then(|c| c.parse().ok()).unwrap_or(16);
    let work = tempfile::tempdir()?;
    let w = work.path();
    eprintln!("building {n_images} images, filling a registry, bundling...");
    let l = content::bench_images(&w.join("src"), n_images)?;
    let src = servers::registry(&RegistryOpts::default())?;
    let mut cat = String::from(
        "schema_version: 1\nplatform: {name: bench, version: \"1\"}\ncomponents:\n  - name: all\n    artifacts:\n",
    );
    for i in 0..n_images {
        servers::push(
            &l.dir,
            &format!("img{i}"),
            &src.addr,
            &format!("bench/img{i}:1"),
            None,
        )?;
        cat.push_str(&format!(
            "      - {{kind: image, ref: bench.test/bench/img{i}:1}}\n"
        ));
    }
    std::fs::write(w.join("catalog.yaml"), cat)?;
    let o = Command::new(&builder)
        .args(["bundle", "-q", "--platform"])
        .arg(w.join("catalog.yaml"))
        .arg("--lock")
        .arg(w.join("l"))
        .arg("--cache-dir")
        .arg(w.join("c"))
        .arg("--out")
        .arg(w.join("b"))
        .args([
            "--mirror",
            &format!("bench.test={}", src.addr),
            "--insecure-registry",
            &src.addr,
        ])
        .output()?;
    if !o.status.success() {
        bail!("bundle: {}", String::from_utf8_lossy(&o.stderr));
    }
    // docker-registry, read-only, over the same storage the images were pushed to.
    let data = src.data_dir().context("registry data dir")?;
    let ro_data = w.join("ro-data");
    assert!(
        Command::new("cp")
            .arg("-a")
            .arg(&data)
            .arg(&ro_data)
            .status()?
            .success()
    );
    drop(src);
    let reg = servers::registry(&RegistryOpts {
        readonly_data: Some(ro_data),
        ..Default::default()
    })?;
    let port = servers::free_port();
    let seed_addr = format!("127.0.0.1:{port}");
    let mut seed = Command::new(&agent)
        .args(["serve", "--bundle"])
        .arg(w.join("b"))
        .args(["--listen", &seed_addr])
        .stderr(Stdio::null())
        .spawn()?;
    http::wait_registry(&seed_addr, &mut seed)?;
    let images: Vec<(String, Vec<String>)> = (0..n_images)
        .map(|i| {
            let r = http::get(&reg.addr, &format!("/v2/bench/img{i}/manifests/1"))?;
            let m: serde_json::Value = serde_json::from_slice(&r.body)?;
            let layers = m["layers"]
                .as_array()
                .into_iter()
                .flatten()
                .chain(std::iter::once(&m["config"]))
                .filter_map(|d| d["digest"].as_str().map(String::from))
                .collect();
            Ok((format!("bench/img{i}"), layers))
        })
        .collect::<Result<_>>()?;
    // Warm both (page cache, our first-read verification) so the runs compare serving.
    for (addr, prefix) in [(&seed_addr, "bench.test/"), (&reg.addr, "")] {
        let _ = load(addr, prefix, &images, 2, n_images / 2, 1);
    }
    let mut rows = Vec::new();
    for round in 0..2 {
        for (name, addr, prefix) in [
            ("kpaas seed", &seed_addr, "bench.test/"),
            ("docker-registry", &reg.addr, ""),
        ] {
            let r = load(addr, prefix, &images, clients, 3, 100);
            eprintln!(
                "round {round} {name}: {:.0} MiB in {:.2}s, p50 {:.2} ms p99 {:.2} ms, errors {}",
                r.bytes as f64 / 1048576.0,
                r.secs,
                r.p50_ms,
                r.p99_ms,
                r.errors
            );
            rows.push((name, r));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let best = |n: &str| {
        rows.iter()
            .filter(|(k, _)| *k == n)
            .map(|(_, r)| r)
            .max_by(|a, b| (a.bytes as f64 / a.secs).total_cmp(&(b.bytes as f64 / b.secs)))
            .map(|r| (r.bytes as f64 / 1048576.0 / r.secs, r.p99_ms, r.errors))
    };
    let (ours, theirs) = (
        best("kpaas seed").context("no rows")?,
        best("docker-registry").context("no rows")?,
    );
    let _ = seed.kill();
    println!("clients: {clients}, images: {n_images} (3 layers, 6-24 MiB each)");
    println!(
        "throughput: kpaas seed {:.0} MiB/s vs docker-registry {:.0} MiB/s -> ratio {:.2} (goal >= 1.5)",
        ours.0,
        theirs.0,
        ours.0 / theirs.0
    );
    println!(
        "p99 manifest latency: kpaas seed {:.2} ms vs docker-registry {:.2} ms -> ratio {:.2} (goal <= 1.0)",
        ours.1,
        theirs.1,
        ours.1 / theirs.1
    );
    println!(
        "errors: kpaas seed {}, docker-registry {}",
        ours.2, theirs.2
    );
    Ok(())
}
