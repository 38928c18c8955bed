//! The demo: start a real registry and file server on loopback, fill them
//! with content built here, then build the demo bundle with `kpaas-builder`,
//! verify it and list it; then a node image and a seed, booted under qemu
//! (TCG) with no route out, to a single-node Kubernetes cluster the agent
//! forms from the image's own bundle, shown with kubectl from the host.
//! Needs no internet.

use anyhow::{Context, Result, bail};
use std::process::Command;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let get = kpaas_testkit::flag;
    let builder =
        get("--builder").context("usage: kpaas-demo --builder PATH --out DIR [--print-pins]")?;
    let out = get("--out").unwrap_or_else(|| "target/demo".into());
    let env = kpaas_testkit::DemoEnv::start()?;
    let d = &env.demo;
    if args.iter().any(|a| a == "--print-pins") {
        println!(
            "pinned image: {}\nmulti index: {}\napp-a: {}\nchart tgz: {}\nmanifest: {}\nkube-flannel.yml: {}\n0.2.0 chart tgz: {}\n0.2.0 extras.yaml: {}",
            d.pinned_digest,
            d.multi_digest,
            d.app_a_digest,
            d.chart_tgz_sha256,
            d.manifest_sha256,
            d.flannel_manifest_sha256,
            d.chart2_tgz_sha256,
            d.extras_sha256
        );
        for (name, sum) in &d.file_sha256 {
            println!("{name}: {sum}");
        }
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
        &format!("{out}/demo-bundle"),
    ]);
    b.extend(env.mirror_args());
    run(&b)?;
    run(&s(&[
        "verify",
        &format!("{out}/demo-bundle"),
        "--key",
        &format!("{key}.pub"),
    ]))?;
    run(&s(&["inspect", &format!("{out}/demo-bundle")]))?;
    // The appliance: a node image with the bundle and the agent, a seed for
    // the master, and a boot under qemu (software emulation) to a formed
    // cluster. containerd: the Debian image has no CRI-O.
    let lab = format!("{out}/lab-cluster.yaml");
    std::fs::write(
        &lab,
        "cluster_version: 1\nname: lab\nplatform: demo\ncontainer_manager: containerd\nmaster: {hostname: kpaas-master, private_ip: 10.10.0.10, mac: \"52:54:00:12:34:10\"}\nnetwork: {node_cidr: 10.10.0.0/24, gateway: 10.10.0.1}\nstorage: {type: nfs, nfs: {server: 10.10.0.20}}\n# a lab VM is smaller than K-PaaS's minimums\nminimums: {cpus: 2, memory_mib: 1200, root_free_mib: 100}\n",
    )?;
    // The complete verdict: every release of the lab's plan rendered as the
    // node will render it.
    run(&s(&[
        "check-offline",
        &format!("{out}/demo-bundle"),
        "--cluster",
        &lab,
    ]))?;
    eprintln!("demo bundle: {out}/demo-bundle (public key {key}.pub)");
    if args.iter().any(|a| a == "--no-boot") {
        return Ok(());
    }
    run(&s(&[
        "seeds",
        "--cluster",
        &lab,
        "--bundle",
        &format!("{out}/demo-bundle"),
        "--out",
        &format!("{out}/seeds"),
    ]))?;
    let fx = kpaas_testkit::fixtures_dir();
    run(&s(&[
        "image",
        "--profile",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../images/debian-12.yaml"),
        "--bundle",
        &format!("{out}/demo-bundle"),
        "--bundle-key",
        &format!("{key}.pub"),
        "--format",
        "qcow2",
        "--out",
        &format!("{out}/node.qcow2"),
        "--cache-dir",
        &fx.join("cache").to_string_lossy(),
        "--offline",
    ]))?;
    eprintln!(
        "+ booting {out}/node.qcow2 under qemu (TCG, UEFI) with the master's seed; no route out (its gateway leads nowhere; a second NIC on qemu's restricted user network carries only the API to the host)..."
    );
    let dir = std::path::PathBuf::from(&out);
    let lab = kpaas_testkit::lab::Lab {
        dir: dir.clone(),
        raw: dir.join("node.qcow2"),
        seeds: dir.join("seeds"),
        bundle: dir.join("demo-bundle"),
        net: kpaas_testkit::lab::Net::start(),
        api_port: kpaas_testkit::servers::free_port(),
        registry_port: kpaas_testkit::servers::free_port(),
        vault_port: kpaas_testkit::servers::free_port(),
        platform: true,
    };
    let disk = kpaas_testkit::lab::overlay(&lab.raw, &dir.join("demo-master.qcow2"));
    let mut vm = lab.master(&disk);
    let seed_ready = vm.wait_for(
        "registries sent to the seed",
        std::time::Duration::from_secs(300),
    )?;
    eprintln!(
        "+ seed registry ready {seed_ready:.0} s after power-on; forming the cluster (minutes under emulation)..."
    );
    let secs = vm.wait_for(
        "kpaas-agent: ready: cluster ready",
        std::time::Duration::from_secs(30 * 60),
    )?;
    eprintln!(
        "+ cluster ready {secs:.0} s after power-on; deploying the platform's waves (storage, Kubeflow's place, Vault, Harbor's registry, MariaDB, stand-ins)..."
    );
    let platform = vm.wait_for(
        "kpaas-agent: deploy: platform ready",
        std::time::Duration::from_secs(60 * 60),
    )?;
    println!(
        "the node's serial console ({secs:.0} s from power-on to a ready cluster, {platform:.0} s to the platform ready):"
    );
    for l in vm.console().lines().filter(|l| l.contains("kpaas-agent[")) {
        println!("  {}", l.split("]: ").nth(1).unwrap_or(l).trim());
    }
    let kc = lab.kubeconfig();
    for args in [
        &["get", "nodes", "-o", "wide"][..],
        &["get", "pods", "-A"],
        &["get", "pvc", "-A"],
    ] {
        println!("$ kubectl {}", args.join(" "));
        print!(
            "{}",
            kpaas_testkit::lab::kubectl(&kc, args).map_err(anyhow::Error::msg)?
        );
    }
    println!("$ helm list -A");
    let helm = std::process::Command::new(kpaas_testkit::kit::bin_dir().join("helm"))
        .args(["list", "-A", "--kubeconfig"])
        .arg(&kc)
        .env("HELM_CACHE_HOME", dir.join("helm"))
        .env("HELM_CONFIG_HOME", dir.join("helm"))
        .env("HELM_DATA_HOME", dir.join("helm"))
        .output()?;
    print!("{}", String::from_utf8_lossy(&helm.stdout));
    let reg = kpaas_testkit::http::send(
        &format!("127.0.0.1:{}", lab.registry_port),
        "GET",
        "/v2/_catalog?n=1000",
        &[],
        b"",
    )?;
    println!(
        "in-cluster registry (Harbor's place) catalog: {}",
        String::from_utf8_lossy(&reg.body).trim()
    );
    let vault = kpaas_testkit::http::send(
        &format!("127.0.0.1:{}", lab.vault_port),
        "GET",
        "/v1/sys/seal-status",
        &[],
        b"",
    )?;
    println!(
        "Vault seal status: {}",
        String::from_utf8_lossy(&vault.body).trim()
    );
    Ok(())
}
