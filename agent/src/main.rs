//! `kpaas-agent`: the first-boot agent on every node. It finds the node in the
//! inventory, checks the machine, verifies the bundle, serves it as a
//! read-only seed registry and points the container runtime at it, recording
//! each step so that a crash or reboot resumes where it stopped.

mod facts;
mod journal;
mod mirrors;
mod preflight;
mod seed_registry;

use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest, SIGNATURE};
use airgap_bundle::node::{self, NodeConfig, NodeEntry};
use airgap_bundle::{Digest, sign};
use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use journal::{Journal, State};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "kpaas-agent",
    version,
    about = "K-PaaS appliance first-boot agent",
    max_term_width = 80
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args, Clone)]
struct ConfigArg {
    /// Node config (cloud-init writes it; else read from a CIDATA volume).
    #[arg(long, default_value = node::NODE_CONFIG_PATH)]
    config: PathBuf,
    /// Root of the system to inspect and configure (tests use a temp tree).
    #[arg(long, default_value = "/")]
    root: PathBuf,
}

#[derive(Subcommand)]
enum Cmd {
    /// The first boot: identity, preflight, verify, serve, mirrors (journaled).
    Run {
        #[command(flatten)]
        c: ConfigArg,
        /// Return once the seed registry is ready instead of serving on.
        #[arg(long)]
        no_wait: bool,
    },
    /// Check the machine against this node's needs.
    Preflight {
        #[command(flatten)]
        c: ConfigArg,
        #[arg(long)]
        json: bool,
    },
    /// Say which inventory node this machine is.
    Identity {
        #[command(flatten)]
        c: ConfigArg,
    },
    /// Serve a bundle as a read-only OCI registry.
    Serve {
        #[arg(long)]
        bundle: PathBuf,
        /// Address to listen on (repeatable).
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        /// Hash every blob before serving, instead of on first read.
        #[arg(long)]
        full_verify: bool,
    },
    /// Write the runtime mirror configuration for a bundle.
    Mirrors {
        #[arg(long)]
        bundle: PathBuf,
        /// The seed registry as host:port.
        #[arg(long, default_value = "127.0.0.1:5050")]
        seed: String,
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Show each first-boot step's state.
    Status {
        #[arg(long, default_value = "/var/lib/kpaas")]
        state_dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Reads the node config: cloud-init's copy when it has written one (every
/// boot after the first), else the seed volume's own `kpaas-node.yaml`. At
/// first boot the agent starts before cloud-init's network stage has run
/// write_files (that stage costs seconds the seed registry need not wait).
fn load_config(c: &ConfigArg) -> Result<NodeConfig> {
    if c.config.is_file() {
        let text = std::fs::read_to_string(&c.config)
            .with_context(|| format!("reading {}", c.config.display()))?;
        return Ok(NodeConfig::from_yaml(
            &text,
            &c.config.display().to_string(),
        )?);
    }
    let dev = c.root.join("dev/disk/by-label/CIDATA");
    if !dev.exists() {
        bail!(
            "{} does not exist and no CIDATA volume is attached",
            c.config.display()
        );
    }
    let mnt = c.root.join("run/kpaas/cidata");
    let file = mnt.join(node::CIDATA_FILE);
    // A restart after a crash may find it mounted already.
    if !file.is_file() {
        std::fs::create_dir_all(&mnt)?;
        let st = std::process::Command::new("mount")
            .args(["-o", "ro"])
            .arg(&dev)
            .arg(&mnt)
            .status()
            .context("running mount")?;
        if !st.success() {
            bail!(
                "mount -o ro {} {} failed with {st}",
                dev.display(),
                mnt.display()
            );
        }
    }
    let text = std::fs::read_to_string(&file);
    // Read once and let go: cloud-init reads the same volume.
    let _ = std::process::Command::new("umount").arg(&mnt).status();
    let text =
        text.with_context(|| format!("reading {} on the CIDATA volume", node::CIDATA_FILE))?;
    Ok(NodeConfig::from_yaml(
        &text,
        &format!("{} ({})", node::CIDATA_FILE, dev.display()),
    )?)
}

/// Waits (bounded) for the node's address to be on an interface: networkd
/// applies cloud-init's network config moments after the agent may start.
/// Preflight reports it if it never comes.
fn wait_for_address(root: &Path, ip: std::net::IpAddr, max: std::time::Duration) -> bool {
    let t = std::time::Instant::now();
    loop {
        if ip.is_loopback() || facts::local_ips(root).contains(&ip) {
            return true;
        }
        if t.elapsed() > max {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

fn whoami<'a>(cfg: &'a NodeConfig, root: &Path) -> Result<&'a NodeEntry> {
    node::identify(cfg, &facts::gather(root)).map_err(|e| anyhow::anyhow!(e))
}

fn bundle_created(bundle: &Path) -> Option<u64> {
    let b = std::fs::read(bundle.join(BUNDLE_JSON)).ok()?;
    airgap_bundle::fsutil::parse_rfc3339(&BundleManifest::from_bytes(&b).ok()?.created)
}

fn print_checks(checks: &[preflight::Check], json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(checks).unwrap_or_default()
        );
        return;
    }
    for c in checks {
        println!(
            "{} {:<34} {:<28} want {}{}",
            if c.ok { "PASS" } else { "FAIL" },
            c.name,
            c.measured,
            c.want,
            if c.fix.is_empty() {
                String::new()
            } else {
                format!("  -> {}", c.fix)
            }
        );
    }
}

/// Signature, bundle.json and its files, then (fast mode) manifests and sizes
/// through loading the seed; blobs are hashed on first read.
fn verify_bundle(cfg: &NodeConfig) -> Result<(Arc<seed_registry::Seed>, String)> {
    let b = &cfg.bundle;
    let key_text = std::fs::read_to_string(&cfg.bundle_key)
        .with_context(|| format!("reading the bundle key {}", cfg.bundle_key.display()))?;
    let key =
        sign::parse_public(&key_text).with_context(|| format!("{}", cfg.bundle_key.display()))?;
    if cfg.verify == node::VerifyMode::Full {
        let r = airgap_bundle::verify::verify(b, Some(&key))?.into_result()?;
        let seed = seed_registry::Seed::load(b)?;
        seed.trust_all();
        return Ok((
            Arc::new(seed),
            format!("full: {} artifacts, {} blobs hashed", r.artifacts, r.blobs),
        ));
    }
    let bj = std::fs::read(b.join(BUNDLE_JSON))
        .with_context(|| format!("reading {}", b.join(BUNDLE_JSON).display()))?;
    let sig = std::fs::read_to_string(b.join(SIGNATURE))
        .context("the bundle is not signed (bundle.json.sig missing)")?;
    let id = sign::verify(&key, &bj, &sig)?;
    let m = BundleManifest::from_bytes(&bj)?;
    for (f, d) in &m.files {
        let got = Digest::of(&std::fs::read(b.join(f)).with_context(|| format!("reading {f}"))?);
        if &got != d {
            bail!("{f} was changed after signing (content {got}, bundle.json says {d})");
        }
    }
    let seed = seed_registry::Seed::load(b)?;
    Ok((
        Arc::new(seed),
        format!(
            "fast: signature by key {id}, {} artifacts, manifests and sizes checked; blobs hashed on first read",
            m.artifacts.len()
        ),
    ))
}

fn notify_ready(msg: &str) {
    // systemd Type=notify: tell it we are up (a no-op outside systemd).
    if let Some(sock) = std::env::var_os("NOTIFY_SOCKET")
        && let Ok(s) = std::os::unix::net::UnixDatagram::unbound()
    {
        let _ = s.send_to(format!("READY=1\nSTATUS={msg}").as_bytes(), sock);
    }
}

/// Running live from the ISO: find the whole device whose ISO 9660 volume id
/// is the appliance's, mount it, and point the data path at its bundle.
/// Returns the live medium's device name.
fn mount_live(root: &Path, bundle: &Path) -> Result<Option<String>> {
    if !root.join("etc/kpaas/live").exists() {
        return Ok(None);
    }
    let iso_mnt = root.join("run/kpaas/iso");
    let data = bundle.parent().unwrap_or(bundle);
    let mut seen = Vec::new();
    for e in std::fs::read_dir(root.join("sys/block"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        let dev = root.join("dev").join(&name);
        let mut id = [0u8; 32];
        let ok = std::fs::File::open(&dev)
            .and_then(|mut f| {
                use std::io::{Read, Seek};
                f.seek(std::io::SeekFrom::Start(32768 + 40))?;
                f.read_exact(&mut id)
            })
            .is_ok();
        let vol = String::from_utf8_lossy(&id).trim().to_string();
        seen.push(format!("{name}={vol}"));
        if ok && vol == "KPAAS_LIVE" {
            // A restart after a crash finds the medium mounted already.
            if !iso_mnt.join("data").exists() {
                std::fs::create_dir_all(&iso_mnt)?;
                let st = std::process::Command::new("mount")
                    .args(["-t", "iso9660", "-o", "ro"])
                    .arg(&dev)
                    .arg(&iso_mnt)
                    .status()
                    .context("running mount")?;
                if !st.success() {
                    bail!(
                        "mount -t iso9660 -o ro {} {} failed with {st}",
                        dev.display(),
                        iso_mnt.display()
                    );
                }
                if let Some(parent) = data.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let _ = std::fs::remove_dir(data);
                std::os::unix::fs::symlink(iso_mnt.join("data"), data)
                    .with_context(|| format!("linking {}", data.display()))?;
            }
            eprintln!("kpaas-agent: live: bundle from {}", dev.display());
            return Ok(Some(name));
        }
    }
    bail!(
        "running live, but no device holds the KPAAS_LIVE volume (seen: {})",
        seen.join(", ")
    )
}

/// The disk to install to: the one named (it must be a whole disk here and
/// not the live medium; what is on it is overwritten, as asked), or the only
/// whole disk that is empty (its first MiB all zeros) and is not the live
/// medium.
fn install_target(root: &Path, want: &str, live: &str) -> Result<String> {
    if want != "auto" {
        let name = want.trim_start_matches("/dev/");
        if name == live {
            bail!("install_disk {want} is the live medium this system runs from");
        }
        if !root.join("sys/block").join(name).exists() {
            bail!("install_disk {want} is not a whole disk on this machine (see /sys/block)");
        }
        return Ok(name.to_string());
    }
    let mut empty = Vec::new();
    for e in std::fs::read_dir(root.join("sys/block"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        if name == live
            || name.starts_with("loop")
            || name.starts_with("ram")
            || name.starts_with("sr")
            || name.starts_with("zram")
        {
            continue;
        }
        let mut head = vec![0u8; 1 << 20];
        let ok = std::fs::File::open(root.join("dev").join(&name)).and_then(|mut f| {
            use std::io::Read;
            f.read_exact(&mut head)
        });
        if ok.is_ok() && head.iter().all(|b| *b == 0) {
            empty.push(name);
        }
    }
    empty.sort();
    match empty.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("install_disk is auto, but no empty disk is attached"),
        many => bail!(
            "install_disk is auto, but several disks are empty ({}); name one in the cluster file",
            many.join(", ")
        ),
    }
}

/// Writes the ISO's system image to `disk`, fills its data partition from the
/// ISO's bundle, and reboots into it.
fn install(root: &Path, disk: &str) -> Result<()> {
    let dev = root.join("dev").join(disk);
    let img = root.join("run/kpaas/iso/install/system.raw.zst");
    eprintln!(
        "kpaas-agent: install: writing the system to {}",
        dev.display()
    );
    {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .open(&dev)
            .with_context(|| format!("opening {}", dev.display()))?;
        let mut dec = zstd::stream::read::Decoder::new(
            std::fs::File::open(&img).with_context(|| format!("opening {}", img.display()))?,
        )?;
        std::io::copy(&mut dec, &mut out).with_context(|| format!("writing {}", dev.display()))?;
        out.sync_all()?;
    }
    // The image is as small as its contents and the disk is usually larger:
    // the backup GPT goes to the disk's end and root (the last partition:
    // container images, etcd, kubelet) takes the rest.
    let root_no = node::ROOT_PARTITION.to_string();
    sh("sfdisk", &["--relocate", "gpt-bak-std"], &dev, None)?;
    sh(
        "sfdisk",
        &["--no-reread", "-N", &root_no],
        &dev,
        Some(", +\n"),
    )?;
    let _ = std::process::Command::new("partx")
        .arg("-u")
        .arg(&dev)
        .status();
    let _ = std::process::Command::new("blockdev")
        .arg("--rereadpt")
        .arg(&dev)
        .status();
    let part = |n: u32| {
        // nvme0n1 -> nvme0n1p3; vda -> vda3
        let sep = if disk.chars().last().is_some_and(|c| c.is_ascii_digit()) {
            "p"
        } else {
            ""
        };
        root.join("dev").join(format!("{disk}{sep}{n}"))
    };
    let (data, sysroot) = (part(node::DATA_PARTITION), part(node::ROOT_PARTITION));
    for _ in 0..50 {
        if data.exists() && sysroot.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // resize2fs wants a freshly checked file system before it grows one.
    sh("e2fsck", &["-fy"], &sysroot, None)?;
    sh("resize2fs", &[], &sysroot, None)?;
    eprintln!(
        "kpaas-agent: install: {} grown to the disk's end; filling {} with the bundle",
        sysroot.display(),
        data.display()
    );
    let bundle_dir = root.join("run/kpaas/iso/data");
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            node::DATA_LABEL,
            "-d",
            &bundle_dir.to_string_lossy(),
        ],
        &data,
        None,
    )?;
    let _ = std::process::Command::new("sync").status();
    eprintln!(
        "kpaas-agent: install: done; rebooting into {}",
        dev.display()
    );
    let _ = std::process::Command::new("systemctl")
        .arg("reboot")
        .status();
    Ok(())
}

/// Runs `tool args dev` (stdin `input`), failing with what it said.
fn sh(tool: &str, args: &[&str], dev: &Path, input: Option<&str>) -> Result<()> {
    use std::io::Write;
    let mut c = std::process::Command::new(tool);
    c.args(args)
        .arg(dev)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().with_context(|| format!("running {tool}"))?;
    if let Some(mut i) = child.stdin.take() {
        i.write_all(input.unwrap_or_default().as_bytes())?;
    }
    let o = child.wait_with_output()?;
    if !o.status.success() {
        bail!(
            "{tool} {} {} failed with {}: {}",
            args.join(" "),
            dev.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// True when `GET /v2/` at `addr` answers 200.
async fn probe_registry(addr: SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    tokio::time::timeout(std::time::Duration::from_secs(3), fut)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

async fn run_boot(c: &ConfigArg, no_wait: bool) -> Result<()> {
    let cfg = load_config(c)?;
    let mut j = Journal::open(&cfg.state_dir)?;
    let say = |m: &str| eprintln!("kpaas-agent: {m}");
    // identity (cheap, so always recomputed; recorded once)
    let me = match whoami(&cfg, &c.root) {
        Ok(n) => n.clone(),
        Err(e) => {
            j.record("identity", State::Failed, &format!("{e:#}"))?;
            return Err(e);
        }
    };
    let who = format!("{} ({:?}, {})", me.hostname, me.role, me.ip).to_lowercase();
    if !j.done("identity") {
        j.record("identity", State::Done, &who)?;
    }
    say(&format!("identity: {who}"));
    if !wait_for_address(&c.root, me.ip, std::time::Duration::from_secs(30)) {
        say(&format!(
            "network: {} is not on any interface after 30 s",
            me.ip
        ));
    }
    // Live from the ISO: the bundle's medium is mounted read-only first, so
    // that preflight can measure it.
    let live = match mount_live(&c.root, &cfg.bundle) {
        Ok(l) => l,
        Err(e) => {
            j.record("preflight", State::Failed, &format!("{e:#}"))?;
            return Err(e);
        }
    };
    if !j.done("preflight") {
        let needs =
            preflight::Needs::for_role(me.role, cfg.seed_port).lowered(cfg.minimums.as_ref());
        let checks = preflight::run(
            &c.root,
            &me,
            &needs,
            &facts::local_ips(&c.root),
            &cfg.bundle,
            bundle_created(&cfg.bundle),
        );
        let failed: Vec<&preflight::Check> = checks.iter().filter(|c| !c.ok).collect();
        if !failed.is_empty() {
            print_checks(&checks, false);
            let list = failed
                .iter()
                .map(|c| format!("{} ({})", c.name, c.measured))
                .collect::<Vec<_>>()
                .join(", ");
            j.record("preflight", State::Failed, &list)?;
            bail!("preflight failed, nothing was changed: {list}");
        }
        j.record(
            "preflight",
            State::Done,
            &format!("{} checks passed", checks.len()),
        )?;
        say("preflight: all checks passed");
    }
    // The bundle is checked on every boot (media can change between boots);
    // the journal keeps the first result.
    let (seed, detail) = match verify_bundle(&cfg) {
        Ok(x) => x,
        Err(e) => {
            j.record("verify", State::Failed, &format!("{e:#}"))?;
            return Err(e.context("verifying the bundle"));
        }
    };
    if !j.done("verify") {
        j.record("verify", State::Done, &detail)?;
    }
    say(&format!("verify: {detail}"));
    if let (Some(live), Some(want)) = (&live, &cfg.install_disk) {
        let disk = install_target(&c.root, want, live)?;
        return install(&c.root, &disk);
    }
    let mut listen: Vec<SocketAddr> = vec![SocketAddr::from(([127, 0, 0, 1], cfg.seed_port))];
    if facts::local_ips(&c.root).contains(&me.ip) && !me.ip.is_loopback() {
        listen.push(SocketAddr::new(me.ip, cfg.seed_port));
    }
    let handles = seed_registry::serve(seed.clone(), &listen).await?;
    let ready = format!(
        "seed registry ready on {}",
        listen
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if !j.done("serve") {
        j.record("serve", State::Done, &ready)?;
    }
    say(&ready);
    if !j.done("mirrors") {
        let hosts = mirrors::registries(seed.repositories());
        let changed = mirrors::write_all(&c.root, &hosts, &format!("127.0.0.1:{}", cfg.seed_port))?;
        j.record(
            "mirrors",
            State::Done,
            &format!(
                "{} registries sent to the seed ({} files written)",
                hosts.len(),
                changed.len()
            ),
        )?;
        say(&format!(
            "mirrors: {} registries sent to the seed",
            hosts.len()
        ));
    }
    notify_ready(&ready);
    if no_wait {
        return Ok(());
    }
    // Workers will join the master and pull from its registries: say early
    // whether it can be reached (not a boot step: the master may come later).
    if me.role == node::Role::Worker
        && let Some(m) = cfg.nodes.iter().find(|n| n.role == node::Role::Master)
    {
        let addr = SocketAddr::new(m.ip, cfg.seed_port);
        tokio::spawn(async move {
            for _ in 0..60 {
                if probe_registry(addr).await {
                    eprintln!("kpaas-agent: master seed registry reachable at {addr}");
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
            }
            eprintln!("kpaas-agent: master seed registry at {addr} not reachable after 2 minutes");
        });
    }
    for h in handles {
        let _ = h.await;
    }
    Ok(())
}

async fn real_main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run { c, no_wait } => run_boot(&c, no_wait).await,
        Cmd::Preflight { c, json } => {
            let cfg = load_config(&c)?;
            let me = whoami(&cfg, &c.root)?;
            let checks = preflight::run(
                &c.root,
                me,
                &preflight::Needs::for_role(me.role, cfg.seed_port).lowered(cfg.minimums.as_ref()),
                &facts::local_ips(&c.root),
                &cfg.bundle,
                bundle_created(&cfg.bundle),
            );
            print_checks(&checks, json);
            let failed = checks.iter().filter(|c| !c.ok).count();
            if failed > 0 {
                bail!("{failed} preflight check(s) failed");
            }
            Ok(())
        }
        Cmd::Identity { c } => {
            let cfg = load_config(&c)?;
            let me = whoami(&cfg, &c.root)?;
            println!("{} {:?} {}", me.hostname, me.role, me.ip);
            Ok(())
        }
        Cmd::Serve {
            bundle,
            listen,
            full_verify,
        } => {
            let seed = seed_registry::Seed::load(&bundle)?;
            if full_verify {
                airgap_bundle::verify::verify(&bundle, None)?.into_result()?;
                seed.trust_all();
            }
            let seed = Arc::new(seed);
            let handles = seed_registry::serve(seed, &listen).await?;
            eprintln!(
                "kpaas-agent: seed registry ready on {}",
                listen
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            notify_ready("seed registry ready");
            for h in handles {
                let _ = h.await;
            }
            Ok(())
        }
        Cmd::Mirrors { bundle, seed, root } => {
            let s = seed_registry::Seed::load(&bundle)?;
            let hosts = mirrors::registries(s.repositories());
            for p in mirrors::write_all(&root, &hosts, &seed)? {
                println!("wrote {}", p.display());
            }
            Ok(())
        }
        Cmd::Status { state_dir, json } => {
            let j = Journal::open(&state_dir)?;
            let rows = j.status();
            if json {
                let v: Vec<_> = rows.iter().map(|(s, st, at, d)| serde_json::json!({"step": s, "state": st, "at": at, "detail": d})).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (s, st, at, d) in rows {
                    println!("{s:<10} {st:<8} {at:<21} {d}");
                }
            }
            Ok(())
        }
    }
}

fn main() {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(real_main()) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    /// A root with these whole disks; `true` = first MiB all zeros.
    fn disks(list: &[(&str, bool)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (name, empty) in list {
            std::fs::create_dir_all(t.path().join("sys/block").join(name)).unwrap();
            std::fs::create_dir_all(t.path().join("dev")).unwrap();
            let mut head = vec![0u8; 1 << 20];
            if !empty {
                head[510] = 0x55;
            }
            std::fs::write(t.path().join("dev").join(name), head).unwrap();
        }
        t
    }

    #[test]
    fn the_install_target_is_the_only_empty_disk_or_the_named_one() {
        let t = disks(&[
            ("vda", false),
            ("vdb", true),
            ("sr0", true),
            ("loop0", true),
        ]);
        // The live medium, CDs and loop devices never count as empty disks.
        assert_eq!(install_target(t.path(), "auto", "vda").unwrap(), "vdb");
        let t = disks(&[("vda", false), ("vdb", true), ("vdc", true)]);
        let e = format!("{:#}", install_target(t.path(), "auto", "vda").unwrap_err());
        assert!(e.contains("vdb, vdc") && e.contains("name one"), "{e}");
        let t = disks(&[("vda", false), ("vdb", false)]);
        let e = format!("{:#}", install_target(t.path(), "auto", "vda").unwrap_err());
        assert!(e.contains("no empty disk"), "{e}");
        // Named: taken even when not empty, but never the medium or a ghost.
        assert_eq!(install_target(t.path(), "/dev/vdb", "vda").unwrap(), "vdb");
        let e = format!(
            "{:#}",
            install_target(t.path(), "/dev/vda", "vda").unwrap_err()
        );
        assert!(e.contains("live medium"), "{e}");
        let e = format!(
            "{:#}",
            install_target(t.path(), "/dev/sdz", "vda").unwrap_err()
        );
        assert!(e.contains("not a whole disk"), "{e}");
    }
}
