//! The demo: start a real registry and file server on loopback, fill them
//! with content built here, then build the demo bundle with `kpaas-builder`,
//! verify it and list it. Needs no internet.

use anyhow::{Context, Result, bail};
use std::process::Command;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let builder =
        get("--builder").context("usage: kpaas-demo --builder PATH --out DIR [--print-pins]")?;
    let out = get("--out").unwrap_or_else(|| "target/demo".into());
    let env = kpaas_testkit::DemoEnv::start()?;
    let d = &env.demo;
    if args.iter().any(|a| a == "--print-pins") {
        println!(
            "pinned image: {}\nmulti index: {}\napp-a: {}\nchart tgz: {}\nkubeadm: {}\nmanifest: {}",
            d.pinned_digest,
            d.multi_digest,
            d.app_a_digest,
            d.chart_tgz_sha256,
            d.kubeadm_sha256,
            d.manifest_sha256
        );
        return Ok(());
    }
    std::fs::create_dir_all(&out)?;
    let key = format!("{out}/demo-signing");
    let run = |args: &[String]| -> Result<()> {
        eprintln!("+ kpaas-builder {}", args.join(" "));
        let s = Command::new(&builder)
            .args(args)
            .status()
            .with_context(|| format!("running {builder}"))?;
        if !s.success() {
            bail!("kpaas-builder {} failed with {s}", args.join(" "));
        }
        Ok(())
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    if !std::path::Path::new(&format!("{key}.key")).exists() {
        run(&s(&["keygen", "--out", &key]))?;
    }
    let cache = format!("{out}/cache");
    let mut b = s(&[
        "bundle",
        "--platform",
        "demo",
        "--lock",
        &format!("{out}/demo.lock"),
        "--cache-dir",
        &cache,
        "--arch",
        "all",
        "--sign-key",
        &format!("{key}.key"),
        "--out",
        &format!("{out}/demo-bundle.tar.zst"),
    ]);
    b.extend(env.mirror_args());
    run(&b)?;
    run(&s(&[
        "verify",
        &format!("{out}/demo-bundle.tar.zst"),
        "--key",
        &format!("{key}.pub"),
    ]))?;
    run(&s(&["inspect", &format!("{out}/demo-bundle.tar.zst")]))?;
    eprintln!("demo bundle: {out}/demo-bundle.tar.zst (public key {key}.pub)");
    Ok(())
}
