//! `just bench-image`: image build stages from a warm rootfs cache, and
//! power-on to "seed registry ready" under TCG, against the goals
//! (raw <= 60 s, power-on to ready <= 20 s). Prints figures; asserts nothing.

use anyhow::{Context, Result, bail};
use kpaas_testkit::vm::{self, Firmware, VmSpec};
use std::process::Command;
use std::time::{Duration, Instant};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let builder = args
        .iter()
        .position(|a| a == "--builder")
        .and_then(|i| args.get(i + 1))
        .context("--builder PATH")?
        .clone();
    let fx = kpaas_testkit::fixtures_dir();
    let env = kpaas_testkit::DemoEnv::start()?;
    let work = tempfile::tempdir()?;
    let w = work.path();
    let (b, key) = kpaas_testkit::demo_bundle(&env, w)?;
    let profile = concat!(env!("CARGO_MANIFEST_DIR"), "/../images/debian-12.yaml");
    let lab = w.join("lab.yaml");
    std::fs::write(
        &lab,
        "cluster_version: 1\nname: lab\nplatform: demo\nmaster: {hostname: kpaas-master, private_ip: 10.10.0.10, mac: \"52:54:00:12:34:10\"}\nstorage: {type: nfs, nfs: {server: 10.10.0.20}}\nminimums: {cpus: 1, memory_mib: 700, root_free_mib: 100}\n",
    )?;
    let run = |a: &[&str]| -> Result<(f64, String)> {
        let t = Instant::now();
        let o = Command::new(&builder).args(a).output()?;
        if !o.status.success() {
            bail!(
                "kpaas-builder {a:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok((
            t.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
        ))
    };
    let s = |p: &std::path::Path| p.to_string_lossy().to_string();
    let (t_seeds, _) = run(&[
        "seeds",
        "--cluster",
        &s(&lab),
        "--out",
        &s(&w.join("seeds")),
    ])?;
    let cache = s(&fx.join("cache"));
    let mut rows = Vec::new();
    for fmt in ["raw", "qcow2", "iso"] {
        let out = w.join(format!("node.{fmt}"));
        let (secs, line) = run(&[
            "image",
            "--profile",
            profile,
            "--bundle",
            &s(&b),
            "--bundle-key",
            &s(&key),
            "--format",
            fmt,
            "--out",
            &s(&out),
            "--cache-dir",
            &cache,
            "--offline",
        ])?;
        println!("{line}");
        rows.push((fmt, secs, std::fs::metadata(&out)?.len()));
    }
    let iso = w.join("seeds/kpaas-master.iso");
    let raw = w.join("node.raw");
    let mut v = vm::start(
        w,
        &VmSpec::node("bench", Firmware::Uefi, &raw, &iso, "52:54:00:12:34:10"),
    )?;
    let wall = v.wait_for("seed registry ready", Duration::from_secs(300))?;
    let console = v.console();
    let guest = console
        .lines()
        .find(|l| l.contains("seed registry ready"))
        .and_then(|l| {
            l.split(']')
                .next()?
                .trim_start_matches('[')
                .trim()
                .parse::<f64>()
                .ok()
        });
    println!("seeds: {t_seeds:.2}s");
    for (fmt, secs, size) in &rows {
        println!(
            "image {fmt}: {secs:.1}s from a warm rootfs cache, {} MiB (goal raw <= 60 s)",
            size >> 20
        );
    }
    println!(
        "power-on to \"seed registry ready\" (UEFI, TCG, 2 vCPUs): {wall:.1}s wall, {} guest uptime (goal <= 20 s)",
        guest
            .map(|g| format!("{g:.1}s"))
            .unwrap_or_else(|| "?".into())
    );
    Ok(())
}
