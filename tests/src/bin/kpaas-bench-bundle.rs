//! `just bench-bundle`: ~20 images with shared base layers in a local
//! registry, bundled by kpaas-builder and by skopeo (copy --all per image into
//! one OCI layout) in the same run; then a warm re-run, and verify against
//! sha256sum over the same blobs. Prints figures and ratios; asserts nothing.

use anyhow::{Context, Result, bail};
use kpaas_testkit::servers;
use std::process::Command;
use std::time::Instant;

fn timed(what: &str, c: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let o = c.output().with_context(|| format!("running {what}"))?;
    if !o.status.success() {
        bail!("{what} failed: {}", String::from_utf8_lossy(&o.stderr));
    }
    // The builder's own summary line says where its time went.
    for l in String::from_utf8_lossy(&o.stderr)
        .lines()
        .filter(|l| l.starts_with("bundle "))
    {
        eprintln!("  {what}: {l}");
    }
    Ok(t.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let builder = kpaas_testkit::flag("--builder").context("--builder PATH")?;
    let images: usize = std::env::var("BENCH_IMAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let work = tempfile::tempdir()?;
    let w = work.path();
    eprintln!("building {images} images...");
    let l = kpaas_testkit::content::bench_images(&w.join("src"), images)?;
    let mut cat = String::from(
        "schema_version: 1\nplatform: {name: bench, version: \"1\"}\ncomponents:\n  - name: all\n    artifacts:\n",
    );
    for i in 0..images {
        cat.push_str(&format!(
            "      - {{kind: image, ref: bench.test/bench/img{i}:1}}\n"
        ));
    }
    let reg = servers::registry(&Default::default())?;
    for i in 0..images {
        servers::push(
            &l.dir,
            &format!("img{i}"),
            &reg.addr,
            &format!("bench/img{i}:1"),
            None,
        )?;
    }
    std::fs::write(w.join("catalog.yaml"), cat)?;
    let mirror = format!("bench.test={}", reg.addr);
    let ours = |out: &str, cache: &str| {
        let mut c = Command::new(&builder);
        c.args(["bundle", "-q", "--platform"])
            .arg(w.join("catalog.yaml"))
            .arg("--lock")
            .arg(w.join("bench.lock"));
        c.arg("--cache-dir")
            .arg(w.join(cache))
            .arg("--out")
            .arg(w.join(out));
        c.args(["--mirror", &mirror, "--insecure-registry", &reg.addr]);
        c
    };
    // Resolve first so both sides start from pinned references.
    timed(
        "resolve",
        Command::new(&builder)
            .args(["resolve", "-q", "--platform"])
            .arg(w.join("catalog.yaml"))
            .arg("--lock")
            .arg(w.join("bench.lock"))
            .arg("--cache-dir")
            .arg(w.join("cache-resolve"))
            .args(["--mirror", &mirror, "--insecure-registry", &reg.addr]),
    )?;
    let t_ours = timed("kpaas-builder bundle", &mut ours("ours", "cache"))?;
    // An archive always writes every byte (no links into the cache): measured too.
    let t_tar = timed(
        "kpaas-builder bundle .tar",
        &mut ours("ours.tar", "cache-tar"),
    )?;
    let t_sko_start = Instant::now();
    for i in 0..images {
        timed(
            "skopeo copy",
            Command::new("skopeo")
                .args(["copy", "--quiet", "--all", "--src-tls-verify=false"])
                .arg(format!("docker://{}/bench/img{i}:1", reg.addr))
                .arg(format!("oci:{}:img{i}", w.join("skopeo").display())),
        )?;
    }
    let t_sko = t_sko_start.elapsed().as_secs_f64();
    let t_warm = timed("warm re-run", &mut ours("ours-warm", "cache"))?;
    let m: serde_json::Value = serde_json::from_slice(&std::fs::read(w.join("ours/bundle.json"))?)?;
    let on_disk: u64 = std::fs::read_dir(w.join("ours/oci/blobs/sha256"))?
        .map(|e| {
            e.map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .unwrap_or(0)
        })
        .sum();
    let t_verify = timed(
        "verify",
        Command::new(&builder).arg("verify").arg(w.join("ours")),
    )?;
    let t_sum = timed(
        "sha256sum",
        Command::new("sh").arg("-c").arg(format!(
            "cat {}/ours/oci/blobs/sha256/* | sha256sum >/dev/null",
            w.display()
        )),
    )?;
    let mb = on_disk as f64 / 1048576.0;
    println!(
        "images: {images}, unique blob bytes {:.1} MiB, referenced {:.1} MiB",
        mb,
        m["totals"]["referenced_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
    );
    println!(
        "bundle bytes on disk = unique blob bytes: {}",
        on_disk == m["totals"]["unique_bytes"].as_u64().unwrap_or(0)
    );
    println!(
        "cold bundle: kpaas-builder {t_ours:.2}s vs skopeo copy --all per image {t_sko:.2}s -> ratio {:.2} (goal <= 0.5)",
        t_ours / t_sko
    );
    println!(
        "cold bundle as .tar (every byte written): {t_tar:.2}s -> ratio {:.2} vs skopeo",
        t_tar / t_sko
    );
    println!("warm re-run, nothing changed: {t_warm:.2}s (goal <= 2 s, zero blob transfers)");
    println!(
        "verify: {:.0} MiB/s vs sha256sum {:.0} MiB/s -> ratio {:.2} (goal >= 0.9)",
        mb / t_verify,
        mb / t_sum,
        t_sum / t_verify
    );
    Ok(())
}
