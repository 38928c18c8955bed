//! `kpaas-builder image`: a bootable node disk (raw, qcow2) from a profile
//! and a bundle: GPT with BIOS-boot, ESP, root and KPAAS-DATA partitions,
//! GRUB for both UEFI and legacy BIOS. Built from directories and written at
//! offsets: no loop devices and no mounts, so it runs in CI and containers.

use crate::profile::Profile;
use crate::runner::run;
use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest};
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A fixed build time for mmdebstrap and mkfs. The rootfs tar repeats byte
/// for byte; whole images do not yet (GRUB's standalone memdisk, FAT and
/// ext4 metadata still carry build-time state).
const EPOCH: &str = "1767225600";
const MIB: u64 = 1 << 20;
const ROOT_LABEL: &str = "kpaas-root";
pub const DATA_LABEL: &str = "KPAAS-DATA";

#[derive(clap::Args, Debug)]
pub struct Args {
    /// OS profile (images/*.yaml).
    #[arg(long)]
    pub profile: PathBuf,
    /// The bundle directory to put on the KPAAS-DATA partition.
    #[arg(long)]
    pub bundle: PathBuf,
    /// The bundle's public key, baked in as /etc/kpaas/bundle.pub.
    #[arg(long)]
    pub bundle_key: PathBuf,
    /// raw, qcow2 or iso (hybrid BIOS + UEFI, runs live).
    #[arg(long, default_value = "raw")]
    pub format: String,
    #[arg(long, short)]
    pub out: PathBuf,
    /// The kpaas-agent binary to install (default: next to this builder).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    #[arg(long, env = "KPAAS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Never download: the rootfs must already be cached.
    #[arg(long)]
    pub offline: bool,
}

#[derive(clap::Args, Debug)]
pub struct RootfsArgs {
    #[arg(long)]
    pub profile: PathBuf,
    #[arg(long, env = "KPAAS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
}

pub fn rootfs_cmd(a: RootfsArgs) -> Result<()> {
    let p = Profile::load(&a.profile)?;
    let cache = crate::cache::Cache::open(a.cache_dir.as_deref())?
        .root()
        .to_path_buf();
    let t = Instant::now();
    let tar = rootfs(&cache, &p, false)?;
    println!(
        "{} rootfs: {} ({} MiB, {:.1}s)",
        p.name,
        tar.display(),
        std::fs::metadata(&tar)?.len() / MIB,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

fn rootfs_cache(cache: &Path, p: &Profile) -> PathBuf {
    cache.join("rootfs").join(format!("{}.tar", p.rootfs_key()))
}

/// The base tree, from the cache or built once with mmdebstrap.
pub fn rootfs(cache: &Path, p: &Profile, offline: bool) -> Result<PathBuf> {
    let tar = rootfs_cache(cache, p);
    if tar.is_file() {
        return Ok(tar);
    }
    if offline {
        bail!(
            "the {} rootfs is not cached ({}); build it once without --offline on a machine that reaches {}",
            p.name,
            tar.display(),
            p.mirror
        );
    }
    if !p.buildable_here() {
        bail!(
            "profile {}: {} images are validated and planned here, but its archive is not reachable from this machine",
            p.name,
            p.distribution
        );
    }
    std::fs::create_dir_all(tar.parent().unwrap_or(cache))?;
    let partial = tar.with_extension("tar.partial");
    eprintln!(
        "building the {} rootfs with mmdebstrap (cached as {})",
        p.name,
        tar.display()
    );
    run("mmdebstrap")
        .args([
            "--variant=minbase",
            "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        ])
        .args([
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
        ])
        .arg(format!("--include={}", p.include_list()))
        .arg(format!("--architectures={}", p.architecture))
        .args(["--format=tar", &p.suite])
        .arg(&partial)
        .arg(&p.mirror)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .ok()?;
    std::fs::rename(&partial, &tar)?;
    Ok(tar)
}

fn write(root: &Path, path: &str, data: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let p = root.join(path.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap_or(root))?;
    std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn symlink(root: &Path, link: &str, target: &str) -> Result<()> {
    let p = root.join(link.trim_start_matches('/'));
    std::fs::create_dir_all(p.parent().unwrap_or(root))?;
    let _ = std::fs::remove_file(&p);
    std::os::unix::fs::symlink(target, &p).with_context(|| format!("linking {}", p.display()))
}

/// Only the cloud-init modules a node needs: no package installs, mirrors or
/// NTP reaching out, and less time before the node is up.
pub const CLOUD_CFG: &str = "datasource_list: [ NoCloud, None ]
ssh_genkeytypes: [ ed25519 ]
cloud_init_modules: [ seed_random, bootcmd, write_files, set_hostname, update_hostname, update_etc_hosts, users_groups, ssh ]
cloud_config_modules: [ runcmd ]
cloud_final_modules: [ scripts_user, final_message ]
";

pub const AGENT_UNIT: &str = "[Unit]
Description=K-PaaS appliance first-boot agent and seed registry
Documentation=https://kpaas-appliance.invalid/agent
# The seed's node config arrives through cloud-init's init stage
# (write_files); the agent waits for nothing later than that.
After=local-fs.target systemd-networkd.service cloud-init.service
Wants=cloud-init.service
Before=crio.service containerd.service kubelet.service

[Service]
Type=notify
NotifyAccess=main
ExecStart=/usr/local/bin/kpaas-agent run
Restart=on-failure
RestartSec=10
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

/// Lays our files into the tree: agent, unit, key, mounts, kernel settings,
/// and the bundle's node binaries at their catalog install paths.
fn customize(
    root: &Path,
    bundle: &Path,
    m: &BundleManifest,
    agent: &Path,
    key: &[u8],
    arch: &str,
) -> Result<Vec<String>> {
    let agent_bytes = std::fs::read(agent)
        .with_context(|| format!("reading the agent binary {}", agent.display()))?;
    write(root, "/usr/local/bin/kpaas-agent", &agent_bytes, 0o755)?;
    write(
        root,
        "/etc/systemd/system/kpaas-agent.service",
        AGENT_UNIT.as_bytes(),
        0o644,
    )?;
    symlink(
        root,
        "/etc/systemd/system/multi-user.target.wants/kpaas-agent.service",
        "/etc/systemd/system/kpaas-agent.service",
    )?;
    // networkd renders cloud-init's network-config (minbase has no ifupdown).
    symlink(
        root,
        "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
        "/lib/systemd/system/systemd-networkd.service",
    )?;
    symlink(
        root,
        "/etc/systemd/system/sockets.target.wants/systemd-networkd.socket",
        "/lib/systemd/system/systemd-networkd.socket",
    )?;
    // Seconds at every boot for nothing a node needs.
    symlink(
        root,
        "/etc/systemd/system/e2scrub_reap.service",
        "/dev/null",
    )?;
    write(root, "/etc/kpaas/bundle.pub", key, 0o644)?;
    write(root, "/etc/fstab", format!("LABEL={ROOT_LABEL} / ext4 defaults 0 1\nLABEL={DATA_LABEL} /run/kpaas/data ext4 ro,nofail 0 2\n").as_bytes(), 0o644)?;
    write(
        root,
        "/etc/modules-load.d/kpaas.conf",
        b"overlay\nbr_netfilter\n",
        0o644,
    )?;
    write(root, "/etc/sysctl.d/90-kpaas.conf", b"net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\n", 0o644)?;
    write(
        root,
        "/etc/cloud/cloud.cfg.d/90-kpaas.cfg",
        CLOUD_CFG.as_bytes(),
        0o644,
    )?;
    write(root, "/etc/hostname", b"localhost\n", 0o644)?;
    // Empty machine-id: systemd makes a new one per node at first boot.
    write(root, "/etc/machine-id", b"", 0o444)?;
    let mut installed = Vec::new();
    for a in m.artifacts.iter().filter(|a| a.kind == "file") {
        if a.arch.as_deref().is_some_and(|x| x != arch && x != "any") {
            continue;
        }
        let Some(d) = &a.content_digest else { continue };
        let blob = bundle.join("oci").join(d.blob_path());
        if let Some(ip) = &a.install_path {
            let mode = a
                .mode
                .as_deref()
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .unwrap_or(0o644);
            write(root, ip, &std::fs::read(&blob)?, mode)?;
            installed.push(ip.clone());
        }
        if !a.extract.is_empty() {
            installed.extend(
                extract(root, &blob, &a.extract)
                    .with_context(|| format!("installing {}", a.name))?,
            );
        }
    }
    Ok(installed)
}

/// Installs members of a .tar(.gz) archive at their catalog paths.
fn extract(
    root: &Path,
    archive: &Path,
    map: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let mut head = [0u8; 2];
    File::open(archive)?.read_exact(&mut head)?;
    let f = File::open(archive)?;
    let input: Box<dyn Read> = if head == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut ar = tar::Archive::new(input);
    let mut done = Vec::new();
    for e in ar.entries()? {
        let mut e = e?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e
            .path()?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let dest = match (map.get(&path), map.get("*")) {
            (Some(d), _) => d.clone(),
            (None, Some(dir)) => format!(
                "{}/{}",
                dir.trim_end_matches('/'),
                path.rsplit('/').next().unwrap_or(&path)
            ),
            _ => continue,
        };
        let mut data = Vec::new();
        e.read_to_end(&mut data)?;
        let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
        write(
            root,
            &dest,
            &data,
            if mode & 0o111 != 0 { 0o755 } else { 0o644 },
        )?;
        done.push(dest);
    }
    let missing: Vec<&String> = map
        .keys()
        .filter(|k| *k != "*" && !done.iter().any(|d| Some(d) == map.get(*k)))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: members {:?} are not in the archive",
            archive.display(),
            missing
        );
    }
    Ok(done)
}

fn tree_bytes(p: &Path) -> u64 {
    let mut n = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => n += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    n
}

fn mkext4(dir: &Path, out: &Path, label: &str, uuid: &str, mib: u64) -> Result<()> {
    run("mkfs.ext4")
        .args(["-q", "-F", "-b", "4096", "-L", label, "-U", uuid, "-E"])
        .arg(format!("root_owner=0:0,hash_seed={uuid}"))
        .arg("-d")
        .arg(dir)
        .arg(out)
        .arg(format!("{mib}M"))
        .env("E2FSPROGS_FAKE_TIME", EPOCH)
        .ok()
}

pub const GRUB_CFG: &str = "set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --label --set=root kpaas-root
linux /vmlinuz root=LABEL=kpaas-root ro console=tty0 console=ttyS0,115200 net.ifnames=0
initrd /initrd.img
boot
";

const GRUB_MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "normal",
    "linux",
    "search",
    "search_label",
    "configfile",
    "serial",
    "terminal",
    "echo",
    "test",
];

/// Copies `src` into `dst` at `offset`, leaving all-zero MiBs as holes.
fn write_at(dst: &mut File, offset: u64, src: &Path) -> Result<()> {
    let mut f = File::open(src)?;
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = offset;
    loop {
        let mut n = 0;
        while n < buf.len() {
            let k = f.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
        }
        if n == 0 {
            break;
        }
        if buf[..n].iter().any(|b| *b != 0) {
            dst.seek(SeekFrom::Start(pos))?;
            dst.write_all(&buf[..n])?;
        }
        pos += n as u64;
    }
    Ok(())
}

pub struct Built {
    pub stages: Vec<(String, f64)>,
    pub installed: Vec<String>,
}

pub fn build_raw(a: &Args, p: &Profile, cache: &Path, out: &Path) -> Result<Built> {
    let mut stages = Vec::new();
    let mut t = Instant::now();
    let mut lap = |name: &str, t: &mut Instant| {
        stages.push((name.to_string(), t.elapsed().as_secs_f64()));
        *t = Instant::now();
    };
    let m = BundleManifest::from_bytes(
        &std::fs::read(a.bundle.join(BUNDLE_JSON))
            .with_context(|| format!("{} is not a bundle directory", a.bundle.display()))?,
    )?;
    let key = std::fs::read(&a.bundle_key)
        .with_context(|| format!("reading --bundle-key {}", a.bundle_key.display()))?;
    airgap_bundle::sign::parse_public(&String::from_utf8_lossy(&key))
        .with_context(|| format!("--bundle-key {}", a.bundle_key.display()))?;
    let agent = match &a.agent {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("kpaas-agent"),
    };
    let tar = rootfs(cache, p, a.offline)?;
    lap("rootfs", &mut t);
    let work = tempfile::Builder::new()
        .prefix(".kpaas-image-")
        .tempdir_in(
            out.parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )?;
    let w = work.path();
    let root = w.join("root");
    std::fs::create_dir_all(&root)?;
    run("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .ok()?;
    lap("extract", &mut t);
    let installed = customize(&root, &a.bundle, &m, &agent, &key, &p.architecture)?;
    lap("customize", &mut t);
    // Root, sized from the tree unless the profile says.
    let root_mib = if p.partitions.root_mib > 0 {
        p.partitions.root_mib
    } else {
        tree_bytes(&root) * 13 / 10 / MIB + 256
    };
    mkext4(
        &root,
        &w.join("root.img"),
        ROOT_LABEL,
        "6b706161-7300-4000-8000-000000000003",
        root_mib,
    )?;
    lap("root fs", &mut t);
    // Data: the bundle, linked in (same file system) rather than copied.
    let data = w.join("data");
    run("cp")
        .arg("-al")
        .arg(&a.bundle)
        .arg(data.join("bundle"))
        .ok()
        .or_else(|_| {
            std::fs::create_dir_all(&data)?;
            run("cp")
                .arg("-a")
                .arg(&a.bundle)
                .arg(data.join("bundle"))
                .ok()
        })?;
    let data_mib = if p.partitions.data_mib > 0 {
        p.partitions.data_mib
    } else {
        tree_bytes(&data) * 11 / 10 / MIB + 64
    };
    // The ISO's installer fills the data partition from the ISO's own copy of
    // the bundle: its system image leaves it empty instead of carrying it twice.
    let iso = a.format == "iso";
    if !iso {
        mkext4(
            &data,
            &w.join("data.img"),
            DATA_LABEL,
            "6b706161-7300-4000-8000-000000000004",
            data_mib,
        )?;
    }
    lap("data fs", &mut t);
    // UEFI: a standalone GRUB as the removable-media path; BIOS: core.img in
    // the BIOS-boot partition, with the same grub.cfg in a memdisk.
    std::fs::write(w.join("grub.cfg"), GRUB_CFG)?;
    run("grub-mkstandalone")
        .args(["-O", "x86_64-efi", "--locales=", "--themes=", "--fonts="])
        .arg(format!("--modules={}", GRUB_MODULES.join(" ")))
        .arg("-o")
        .arg(w.join("BOOTX64.EFI"))
        .arg(format!(
            "boot/grub/grub.cfg={}",
            w.join("grub.cfg").display()
        ))
        .ok()?;
    let esp = w.join("esp.img");
    run("mkfs.vfat")
        .args([
            "-F",
            "32",
            "-s",
            "1",
            "-n",
            "ESP",
            "-i",
            "4B504141",
            "--invariant",
            "-C",
        ])
        .arg(&esp)
        .arg((p.partitions.esp_mib * 1024).to_string())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .ok()?;
    run("mmd")
        .arg("-i")
        .arg(&esp)
        .args(["::/EFI", "::/EFI/BOOT"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .ok()?;
    run("mcopy")
        .arg("-i")
        .arg(&esp)
        .arg(w.join("BOOTX64.EFI"))
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .env("MTOOLS_SKIP_CHECK", "1")
        .ok()?;
    std::fs::create_dir_all(w.join("memdisk/boot/grub"))?;
    std::fs::copy(w.join("grub.cfg"), w.join("memdisk/boot/grub/grub.cfg"))?;
    run("tar")
        .args(["--mtime=@0", "--owner=0", "--group=0", "-C"])
        .arg(w.join("memdisk"))
        .arg("-cf")
        .arg(w.join("memdisk.tar"))
        .arg("boot")
        .ok()?;
    run("grub-mkimage")
        .args(["-O", "i386-pc", "-p", "(memdisk)/boot/grub", "-m"])
        .arg(w.join("memdisk.tar"))
        .arg("-o")
        .arg(w.join("core.img"))
        .args(["biosdisk", "memdisk", "tar"])
        .args(GRUB_MODULES)
        .ok()?;
    lap("boot loaders", &mut t);
    // GPT: 1 MiB BIOS-boot, ESP, root, data; fixed UUIDs for reproducibility.
    let (bios_start, esp_start): (u64, u64) = (1, 2);
    let root_start = esp_start + p.partitions.esp_mib;
    let data_start = root_start + root_mib;
    let total = data_start + data_mib + 1;
    let script = format!(
        "label: gpt\nlabel-id: 6B706161-7300-4000-8000-000000000000\nunit: sectors\nfirst-lba: 2048\n\
start={}, size={}, type=21686148-6449-6E6F-744E-656564454649, uuid=6B706161-7300-4000-8000-000000000001, name=\"bios\"\n\
start={}, size={}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=6B706161-7300-4000-8000-000000000002, name=\"esp\"\n\
start={}, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6B706161-7300-4000-8000-000000000003, name=\"root\"\n\
start={}, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6B706161-7300-4000-8000-000000000004, name=\"kpaas-data\"\n",
        bios_start * 2048,
        2048,
        esp_start * 2048,
        p.partitions.esp_mib * 2048,
        root_start * 2048,
        root_mib * 2048,
        data_start * 2048,
        data_mib * 2048
    );
    let partial = w.join("disk.raw");
    File::create(&partial)?.set_len(total * MIB)?;
    run("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&partial)
        .stdin(script)
        .ok()?;
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&partial)?;
    write_at(&mut disk, esp_start * MIB, &esp)?;
    write_at(&mut disk, root_start * MIB, &w.join("root.img"))?;
    if !iso {
        write_at(&mut disk, data_start * MIB, &w.join("data.img"))?;
    }
    // BIOS: boot.img's code into the MBR (the partition table stays), core.img
    // at the BIOS-boot partition, and the two sector numbers GRUB needs.
    let mut boot = std::fs::read("/usr/lib/grub/i386-pc/boot.img")
        .context("reading GRUB's boot.img (grub-pc-bin)")?;
    boot[0x5c..0x64].copy_from_slice(&(bios_start * 2048).to_le_bytes());
    disk.seek(SeekFrom::Start(0))?;
    disk.write_all(&boot[..440])?;
    let mut core = std::fs::read(w.join("core.img"))?;
    let sectors = core.len().div_ceil(512) as u16;
    if u64::from(sectors) > 2048 {
        bail!(
            "GRUB's core.img ({} bytes) does not fit the 1 MiB BIOS-boot partition",
            core.len()
        );
    }
    core[0x1f4..0x1fc].copy_from_slice(&(bios_start * 2048 + 1).to_le_bytes());
    core[0x1fc..0x1fe].copy_from_slice(&(sectors - 1).to_le_bytes());
    core[0x1fe..0x200].copy_from_slice(&0x820u16.to_le_bytes());
    disk.seek(SeekFrom::Start(bios_start * MIB))?;
    disk.write_all(&core)?;
    disk.sync_all()?;
    drop(disk);
    lap("disk", &mut t);
    if iso {
        let zst = w.join("system.raw.zst");
        {
            let mut enc = zstd::stream::write::Encoder::new(File::create(&zst)?, 3)?;
            std::io::copy(&mut File::open(&partial)?, &mut enc)?;
            enc.finish()?.sync_all()?;
        }
        std::fs::remove_file(&partial)?;
        crate::iso::build(&root, &a.bundle, w, &zst, out)?;
        lap("iso", &mut t);
        return Ok(Built { stages, installed });
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving the image to {}", out.display()))?;
    Ok(Built { stages, installed })
}

pub fn run_cmd(a: Args) -> Result<()> {
    let start = Instant::now();
    let p = Profile::load(&a.profile)?;
    if !["raw", "qcow2", "iso"].contains(&a.format.as_str()) {
        bail!("--format {}: raw, qcow2 or iso", a.format);
    }
    if !p.outputs.contains(&a.format) {
        bail!(
            "--format {}: profile {} lists outputs {}",
            a.format,
            p.name,
            p.outputs.join(", ")
        );
    }
    let cache = crate::cache::Cache::open(a.cache_dir.as_deref())?
        .root()
        .to_path_buf();
    let dir = a
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let raw_tmp = dir.join(format!(
        ".{}.raw.partial-{}",
        a.out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    let built = build_raw(&a, &p, &cache, &raw_tmp);
    let built = match built {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&raw_tmp);
            return Err(e);
        }
    };
    let mut stages = built.stages;
    if a.format == "qcow2" {
        let t = Instant::now();
        let tmp = dir.join(format!(
            ".{}.partial-{}",
            a.out.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ));
        let r = run("qemu-img")
            .args([
                "convert",
                "-f",
                "raw",
                "-O",
                "qcow2",
                "-c",
                "-o",
                "compression_type=zstd",
            ])
            .arg(&raw_tmp)
            .arg(&tmp)
            .ok();
        let _ = std::fs::remove_file(&raw_tmp);
        r?;
        std::fs::rename(&tmp, &a.out)?;
        stages.push(("qcow2".into(), t.elapsed().as_secs_f64()));
    } else {
        std::fs::rename(&raw_tmp, &a.out)?;
    }
    let size = std::fs::metadata(&a.out)?.len();
    eprintln!(
        "image {} ({}, {} MiB apparent): {:.1}s ({})",
        a.out.display(),
        a.format,
        size / MIB,
        start.elapsed().as_secs_f64(),
        stages
            .iter()
            .map(|(n, s)| format!("{n} {s:.1}s"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    eprintln!(
        "installed from the bundle: {}",
        if built.installed.is_empty() {
            "-".into()
        } else {
            built.installed.join(" ")
        }
    );
    Ok(())
}
