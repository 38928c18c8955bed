//! `kpaas-builder image`: a bootable node disk (raw, qcow2) from a profile
//! and a bundle: GPT with BIOS-boot, ESP, root and KPAAS-DATA partitions,
//! GRUB for both UEFI and legacy BIOS. Built from directories and written at
//! offsets: no loop devices and no mounts, so it runs in CI and containers.

use crate::profile::Profile;
use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest};
use airgap_bundle::run::run;
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::grub::EPOCH;
const MIB: u64 = 1 << 20;
use airgap_bundle::node::{DATA_LABEL, DATA_PARTITION, ROOT_LABEL, ROOT_PARTITION};

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
    /// Where to unpack and assemble the root tree (default: /dev/shm when it
    /// has room, else beside --out).
    #[arg(long, env = "KPAAS_WORK_DIR")]
    pub work_dir: Option<PathBuf>,
    /// Also write the build report (stages, times, sizes, sha256) as JSON.
    #[arg(long)]
    pub report: Option<PathBuf>,
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
/// NTP reaching out, and less time before the node is up. growpart and
/// resizefs give root the rest of a disk larger than the image.
pub const CLOUD_CFG: &str = "datasource_list: [ NoCloud, None ]
ssh_genkeytypes: [ ed25519 ]
cloud_init_modules: [ seed_random, bootcmd, write_files, growpart, resizefs, set_hostname, update_hostname, update_etc_hosts, users_groups, ssh ]
cloud_config_modules: [ runcmd ]
cloud_final_modules: [ scripts_user, final_message ]
";

pub const AGENT_UNIT: &str = "[Unit]
Description=K-PaaS appliance first-boot agent and seed registry
Documentation=https://kpaas-appliance.invalid/agent
# cloud-init's local stage renders the static network config; the agent
# reads its node config from the seed volume itself and waits for its
# address, so cloud-init's network stage (write_files, host keys: seconds
# under emulation) runs beside it instead of before it. That stage orders
# itself before sysinit.target, so the default dependencies (after
# basic.target) would put the agent behind it: they are spelled out instead.
DefaultDependencies=no
After=local-fs.target systemd-modules-load.service systemd-sysctl.service
After=systemd-journald.socket cloud-init-local.service systemd-networkd.service
RequiresMountsFor=/run/kpaas/data /var/lib/kpaas
Conflicts=shutdown.target
Before=shutdown.target
Before=crio.service containerd.service kubelet.service

[Service]
Type=notify
NotifyAccess=main
# READY comes after the ISO installer wrote the system and filled KPAAS-DATA
# with the bundle: minutes for a large bundle (under emulation, ~2 min for the
# demo's ~460 MiB). systemd's default 90 s killed it half-way, and the restart
# then found a disk that was no longer empty and refused to install.
TimeoutStartSec=infinity
ExecStart=/usr/local/bin/kpaas-agent run
Restart=on-failure
RestartSec=10
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
";

/// A file the image gets from us (not from a package or the bundle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFile {
    File {
        path: &'static str,
        mode: u32,
        text: String,
    },
    Link {
        path: &'static str,
        target: &'static str,
    },
}

/// Every file we lay into a node's tree besides the agent binary, the
/// bundle's key and the bundle's node binaries: pure, snapshot-tested.
pub fn node_files() -> Vec<NodeFile> {
    let f = |path, mode, text: &str| NodeFile::File {
        path,
        mode,
        text: text.to_string(),
    };
    let l = |path, target| NodeFile::Link { path, target };
    vec![
        f("/etc/systemd/system/kpaas-agent.service", 0o644, AGENT_UNIT),
        l(
            "/etc/systemd/system/multi-user.target.wants/kpaas-agent.service",
            "/etc/systemd/system/kpaas-agent.service",
        ),
        // networkd renders cloud-init's network-config (minbase has no ifupdown).
        l(
            "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
            "/lib/systemd/system/systemd-networkd.service",
        ),
        l(
            "/etc/systemd/system/sockets.target.wants/systemd-networkd.socket",
            "/lib/systemd/system/systemd-networkd.socket",
        ),
        // Seconds at every boot for nothing a node needs.
        l("/etc/systemd/system/e2scrub_reap.service", "/dev/null"),
        f(
            "/etc/fstab",
            0o644,
            &format!(
                "LABEL={ROOT_LABEL} / ext4 defaults 0 1\nLABEL={DATA_LABEL} /run/kpaas/data ext4 ro,nofail 0 2\n"
            ),
        ),
        f(
            "/etc/modules-load.d/kpaas.conf",
            0o644,
            "overlay\nbr_netfilter\n",
        ),
        f(
            "/etc/sysctl.d/90-kpaas.conf",
            0o644,
            "net.ipv4.ip_forward = 1\nnet.bridge.bridge-nf-call-iptables = 1\nnet.bridge.bridge-nf-call-ip6tables = 1\n",
        ),
        f("/etc/cloud/cloud.cfg.d/90-kpaas.cfg", 0o644, CLOUD_CFG),
        f("/etc/hostname", 0o644, "localhost\n"),
        // Empty machine-id: systemd makes a new one per node at first boot.
        f("/etc/machine-id", 0o444, ""),
    ]
}

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
    write(root, "/etc/kpaas/bundle.pub", key, 0o644)?;
    for f in node_files() {
        match f {
            NodeFile::File { path, mode, text } => write(root, path, text.as_bytes(), mode)?,
            NodeFile::Link { path, target } => symlink(root, path, target)?,
        }
    }
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

/// ext4 features pinned here rather than taken from the host's
/// /etc/mke2fs.conf: the same image on every build host, and nothing GRUB 2.06
/// or the guest's e2fsck (1.47.0) cannot read (newer hosts default to
/// metadata_csum_seed and orphan_file).
const MKE2FS_CONF: &str = "[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384
[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
";

/// Where the root tree goes. It is tens of thousands of small files: on a
/// tmpfs unpacking takes a fraction of a second, on some disks many seconds
/// (0.4 s against 11 s for the Debian tree on the machine this was written
/// on). /dev/shm is used when it has room for the tree twice over.
fn tree_dir(asked: Option<&Path>, tar_bytes: u64, fallback: &Path) -> PathBuf {
    if let Some(d) = asked {
        return d.to_path_buf();
    }
    let shm = Path::new("/dev/shm");
    let room = nix::sys::statvfs::statvfs(shm)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0);
    if room > tar_bytes.saturating_mul(2) + 512 * MIB {
        shm.to_path_buf()
    } else {
        fallback.to_path_buf()
    }
}

/// An ext4 image of `dir`. e2fsprogs >= 1.47.1 clamps every inode time to
/// SOURCE_DATE_EPOCH; older ones copy ctime from the build tree (see
/// `reproducible`).
fn mkext4(work: &Path, dir: &Path, out: &Path, label: &str, uuid: &str, mib: u64) -> Result<()> {
    let conf = work.join("mke2fs.conf");
    if !conf.exists() {
        std::fs::write(&conf, MKE2FS_CONF)?;
    }
    run("mkfs.ext4")
        .args(["-q", "-F", "-t", "ext4", "-L", label, "-U", uuid, "-E"])
        .arg(format!("root_owner=0:0,hash_seed={uuid}"))
        .arg("-d")
        .arg(dir)
        .arg(out)
        .arg(format!("{mib}M"))
        .env("MKE2FS_CONFIG", &conf.to_string_lossy())
        .env("E2FSPROGS_FAKE_TIME", EPOCH)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .ok()
}

/// Whether this host's mkfs.ext4 makes byte-identical images: `None` when it
/// does, else why not.
pub fn reproducible() -> Option<String> {
    let v = run("mke2fs").arg("-V").output_all().unwrap_or_default();
    let text = String::from_utf8_lossy(&v);
    let ver = text
        .split_whitespace()
        .nth(1)
        .unwrap_or("unknown")
        .to_string();
    let parts: Vec<u32> = ver.split('.').filter_map(|x| x.parse().ok()).collect();
    if parts.as_slice() >= [1, 47, 1].as_slice() {
        None
    } else {
        Some(format!(
            "mke2fs {ver} copies inode change times from the build tree (1.47.1 or later clamps them to SOURCE_DATE_EPOCH)"
        ))
    }
}

/// `quiet`: the kernel's and systemd's chatter on the serial console cost
/// ~1.5 s of a boot under emulation; failed units and the agent's own lines
/// still reach the console.
pub const GRUB_CFG: &str = "set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --label --set=root kpaas-root
linux /vmlinuz root=LABEL=kpaas-root ro console=tty0 console=ttyS0,115200 net.ifnames=0 quiet
initrd /initrd.img
boot
";

/// The partition plan: pure, so a change to it shows in a snapshot. GPT with
/// 1 MiB BIOS-boot, ESP, KPAAS-DATA and root, fixed UUIDs (reproducible
/// images; every node gets its own machine-id at first boot instead). Root
/// is last so it can take the rest of a larger disk: cloud-init's growpart
/// does that at a VM's first boot and the ISO's installer at install.
/// Container images, etcd and kubelet state all live on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub esp_mib: u64,
    pub root_mib: u64,
    pub data_mib: u64,
}

pub const PART_UUID_PREFIX: &str = "6B706161-7300-4000-8000-00000000000";

impl Layout {
    pub const BIOS_START_MIB: u64 = 1;
    pub const ESP_START_MIB: u64 = 2;

    /// Sizes from the profile, else from what goes in: root = used x 1.3 +
    /// 256 MiB (it grows with the disk), data = bundle x 1.1 + 64 MiB (ext4
    /// metadata and journal; the bundle is read-only).
    pub fn plan(p: &crate::profile::Partitions, root_used: u64, bundle: u64) -> Layout {
        let or = |set: u64, auto: u64| if set > 0 { set } else { auto };
        Layout {
            esp_mib: p.esp_mib,
            root_mib: or(p.root_mib, root_used * 13 / 10 / MIB + 256),
            data_mib: or(p.data_mib, bundle * 11 / 10 / MIB + 64),
        }
    }

    pub fn data_start_mib(&self) -> u64 {
        Self::ESP_START_MIB + self.esp_mib
    }

    pub fn root_start_mib(&self) -> u64 {
        self.data_start_mib() + self.data_mib
    }

    /// Whole disk, with 1 MiB at the end for the backup GPT.
    pub fn total_mib(&self) -> u64 {
        self.root_start_mib() + self.root_mib + 1
    }

    /// The table as an sfdisk script.
    pub fn sfdisk_script(&self) -> String {
        let s = |mib: u64| mib * 2048;
        let parts = [
            (
                Self::BIOS_START_MIB,
                1,
                "21686148-6449-6E6F-744E-656564454649",
                "bios",
            ),
            (
                Self::ESP_START_MIB,
                self.esp_mib,
                "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
                "esp",
            ),
            (
                self.data_start_mib(),
                self.data_mib,
                "0FC63DAF-8483-4772-8E79-3D69D8477DE4",
                "kpaas-data",
            ),
            // The Discoverable Partitions type for an x86-64 root.
            (
                self.root_start_mib(),
                self.root_mib,
                "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709",
                "root",
            ),
        ];
        let mut out =
            format!("label: gpt\nlabel-id: {PART_UUID_PREFIX}0\nunit: sectors\nfirst-lba: 2048\n");
        for (i, (start, size, ty, name)) in parts.iter().enumerate() {
            out.push_str(&format!(
                "start={}, size={}, type={ty}, uuid={PART_UUID_PREFIX}{}, name=\"{name}\"\n",
                s(*start),
                s(*size),
                i + 1
            ));
        }
        out
    }
}

/// One step of a build: its time, and the size of what it made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stage {
    pub name: String,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Times stages as they finish.
struct Stages {
    list: Vec<Stage>,
    t: Instant,
}

impl Stages {
    fn new() -> Stages {
        Stages {
            list: Vec::new(),
            t: Instant::now(),
        }
    }

    fn done(&mut self, name: &str, bytes: Option<u64>, detail: String) {
        self.list.push(Stage {
            name: name.into(),
            seconds: self.t.elapsed().as_secs_f64(),
            bytes,
            detail,
        });
        self.t = Instant::now();
    }
}

pub(crate) fn size_of(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

/// `src` at `dst` as hard links when they share a file system (a bundle of
/// tens of GB costs nothing), else as a copy.
pub(crate) fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst.parent().unwrap_or(dst))?;
    run("cp").arg("-al").arg(src).arg(dst).ok().or_else(|_| {
        let _ = std::fs::remove_dir_all(dst);
        run("cp").arg("-a").arg(src).arg(dst).ok()
    })
}

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
    pub stages: Vec<Stage>,
    pub installed: Vec<String>,
}

/// Sizes the file systems and builds the disk at `out` (for `--format iso`,
/// the ISO at `out`, carrying the disk compressed as its install image).
pub fn build_raw(a: &Args, p: &Profile, cache: &Path, out: &Path) -> Result<Built> {
    let mut st = Stages::new();
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
    st.done("rootfs", size_of(&tar), "cached tar".into());
    let out_dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    // Beside the output: the bundle is hard-linked in from there when it
    // shares the file system, and the result is renamed into place.
    let work = tempfile::Builder::new()
        .prefix(".kpaas-image-")
        .tempdir_in(out_dir)?;
    let w = work.path();
    let tree_parent = tree_dir(a.work_dir.as_deref(), size_of(&tar).unwrap_or(0), out_dir);
    let tree = tempfile::Builder::new()
        .prefix(".kpaas-root-")
        .tempdir_in(&tree_parent)
        .with_context(|| format!("making the work directory in {}", tree_parent.display()))?;
    let root = tree.path().join("root");
    std::fs::create_dir_all(&root)?;
    run("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .ok()?;
    st.done("extract", None, format!("into {}", tree_parent.display()));
    let installed = customize(&root, &a.bundle, &m, &agent, &key, &p.architecture)?;
    let used = tree_bytes(&root);
    st.done(
        "customize",
        Some(used),
        format!("{} files from the bundle", installed.len()),
    );
    let bundle_bytes = tree_bytes(&a.bundle);
    let layout = Layout::plan(&p.partitions, used, bundle_bytes);
    mkext4(
        w,
        &root,
        &w.join("root.img"),
        ROOT_LABEL,
        &format!("{PART_UUID_PREFIX}{ROOT_PARTITION}").to_lowercase(),
        layout.root_mib,
    )?;
    st.done(
        "root fs",
        Some(layout.root_mib * MIB),
        format!("ext4, {} MiB used", used / MIB),
    );
    // The ISO's installer fills the data partition from the ISO's own copy of
    // the bundle: its system image leaves it empty instead of carrying it twice.
    let iso = a.format == "iso";
    if !iso {
        let data = w.join("data");
        link_tree(&a.bundle, &data.join("bundle"))?;
        mkext4(
            w,
            &data,
            &w.join("data.img"),
            DATA_LABEL,
            &format!("{PART_UUID_PREFIX}{DATA_PARTITION}").to_lowercase(),
            layout.data_mib,
        )?;
    }
    st.done(
        "data fs",
        Some(layout.data_mib * MIB),
        format!(
            "ext4, bundle {} MiB{}",
            bundle_bytes / MIB,
            if iso { ", filled at install" } else { "" }
        ),
    );
    // UEFI: GRUB as the removable-media path on the ESP; BIOS: core.img in
    // the BIOS-boot partition. The same grub.cfg in each one's memdisk.
    let boot = crate::grub::images(w, GRUB_CFG, crate::grub::Bios::Disk)?;
    let esp = w.join("esp.img");
    crate::grub::esp(&esp, &boot.efi, p.partitions.esp_mib * 1024, true)?;
    st.done("boot loaders", size_of(&boot.efi), "GRUB EFI + BIOS".into());
    let partial = w.join("disk.raw");
    File::create(&partial)?.set_len(layout.total_mib() * MIB)?;
    run("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(&partial)
        .stdin(layout.sfdisk_script())
        .ok()?;
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&partial)?;
    write_at(&mut disk, Layout::ESP_START_MIB * MIB, &esp)?;
    write_at(
        &mut disk,
        layout.root_start_mib() * MIB,
        &w.join("root.img"),
    )?;
    if !iso {
        write_at(
            &mut disk,
            layout.data_start_mib() * MIB,
            &w.join("data.img"),
        )?;
    }
    // BIOS: boot.img's code into the MBR (the partition table stays), core.img
    // at the BIOS-boot partition, and the two sector numbers GRUB needs.
    let bios_lba = Layout::BIOS_START_MIB * 2048;
    let mut mbr = std::fs::read("/usr/lib/grub/i386-pc/boot.img")
        .context("reading GRUB's boot.img (grub-pc-bin)")?;
    mbr[0x5c..0x64].copy_from_slice(&bios_lba.to_le_bytes());
    disk.seek(SeekFrom::Start(0))?;
    disk.write_all(&mbr[..440])?;
    let mut core = std::fs::read(&boot.bios)?;
    let sectors = core.len().div_ceil(512) as u16;
    if u64::from(sectors) > 2048 {
        bail!(
            "GRUB's core.img ({} bytes) does not fit the 1 MiB BIOS-boot partition",
            core.len()
        );
    }
    core[0x1f4..0x1fc].copy_from_slice(&(bios_lba + 1).to_le_bytes());
    core[0x1fc..0x1fe].copy_from_slice(&(sectors - 1).to_le_bytes());
    core[0x1fe..0x200].copy_from_slice(&0x820u16.to_le_bytes());
    disk.seek(SeekFrom::Start(bios_lba * 512))?;
    disk.write_all(&core)?;
    disk.sync_all()?;
    drop(disk);
    st.done(
        "disk",
        Some(layout.total_mib() * MIB),
        "GPT: bios, esp, kpaas-data, root".into(),
    );
    if iso {
        let zst = w.join("system.raw.zst");
        {
            let mut enc = zstd::stream::write::Encoder::new(File::create(&zst)?, 3)?;
            std::io::copy(&mut File::open(&partial)?, &mut enc)?;
            enc.finish()?.sync_all()?;
        }
        std::fs::remove_file(&partial)?;
        st.done("install image", size_of(&zst), "system.raw.zst".into());
        crate::iso::build(
            &root,
            &a.bundle,
            w,
            &zst,
            out,
            &mut |name, bytes, detail| st.done(name, bytes, detail),
        )?;
        return Ok(Built {
            stages: st.list,
            installed,
        });
    }
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving the image to {}", out.display()))?;
    Ok(Built {
        stages: st.list,
        installed,
    })
}

#[derive(serde::Serialize)]
struct Report<'a> {
    image: &'a Path,
    format: &'a str,
    profile: &'a str,
    seconds: f64,
    /// Apparent size; `allocated` is what a sparse copy takes.
    bytes: u64,
    allocated: u64,
    sha256: String,
    reproducible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    not_reproducible_because: Option<String>,
    stages: &'a [Stage],
    installed: &'a [String],
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
    let partial = |what: &str| {
        dir.join(format!(
            ".{}.{what}.partial-{}",
            a.out.file_name().unwrap_or_default().to_string_lossy(),
            std::process::id()
        ))
    };
    let raw_tmp = partial("raw");
    let built = match build_raw(&a, &p, &cache, &raw_tmp) {
        Ok(b) => b,
        Err(e) => {
            let _ = std::fs::remove_file(&raw_tmp);
            return Err(e);
        }
    };
    let mut stages = built.stages;
    if a.format == "qcow2" {
        let t = Instant::now();
        let tmp = partial("qcow2");
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
        if let Err(e) = r {
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        std::fs::rename(&tmp, &a.out)?;
        stages.push(Stage {
            name: "qcow2".into(),
            seconds: t.elapsed().as_secs_f64(),
            bytes: size_of(&a.out),
            detail: "zstd-compressed clusters".into(),
        });
    } else {
        std::fs::rename(&raw_tmp, &a.out)?;
    }
    let meta = std::fs::metadata(&a.out)?;
    let t = Instant::now();
    // The medium's own digest, for whoever copies or burns it.
    let sha256 = airgap_bundle::digest::hash_reader(std::io::BufReader::with_capacity(
        MIB as usize,
        File::open(&a.out)?,
    ))?
    .0
    .hex()
    .to_string();
    stages.push(Stage {
        name: "sha256".into(),
        seconds: t.elapsed().as_secs_f64(),
        bytes: None,
        detail: String::new(),
    });
    let why = reproducible();
    let report = Report {
        image: &a.out,
        format: &a.format,
        profile: &p.name,
        seconds: start.elapsed().as_secs_f64(),
        bytes: meta.len(),
        allocated: std::os::unix::fs::MetadataExt::blocks(&meta) * 512,
        sha256,
        reproducible: why.is_none(),
        not_reproducible_because: why,
        stages: &stages,
        installed: &built.installed,
    };
    eprint!("{}", render_report(&report));
    if let Some(path) = &a.report {
        airgap_bundle::fsutil::write_atomic(path, &serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

fn render_report(r: &Report) -> String {
    let mut s = format!(
        "image {} ({}, profile {}): {:.1}s, {} ({} allocated), sha256 {}\n",
        r.image.display(),
        r.format,
        r.profile,
        r.seconds,
        mib(r.bytes),
        mib(r.allocated),
        r.sha256
    );
    for st in r.stages {
        s.push_str(&format!(
            "  {:<14} {:>6.1}s  {:>11}  {}\n",
            st.name,
            st.seconds,
            st.bytes.map(mib).unwrap_or_default(),
            st.detail
        ));
    }
    match &r.not_reproducible_because {
        None => s.push_str("reproducible: the same inputs give these bytes again\n"),
        Some(why) => s.push_str(&format!("NOT reproducible on this host: {why}\n")),
    }
    s.push_str(&format!(
        "installed from the bundle: {}\n",
        if r.installed.is_empty() {
            "-".into()
        } else {
            r.installed.join(" ")
        }
    ));
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    /// The node files as text, for review and snapshots.
    fn render_node_files(files: &[NodeFile]) -> String {
        let mut s = String::new();
        for f in files {
            match f {
                NodeFile::File { path, mode, text } => {
                    s.push_str(&format!("=== {path} (mode {mode:04o})\n{text}"));
                    if !text.is_empty() && !text.ends_with('\n') {
                        s.push('\n');
                    }
                }
                NodeFile::Link { path, target } => s.push_str(&format!("=== {path} -> {target}\n")),
            }
        }
        s
    }

    fn snap(name: &str, got: &str) {
        kpaas_testkit::snapshot(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots"),
            name,
            got,
        );
    }

    #[test]
    fn the_partition_plan_for_the_debian_profile() {
        let p =
            Profile::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../images/debian-12.yaml"))
                .unwrap();
        // 400 MiB of root tree, a 13 MiB bundle (the demo's sizes).
        let l = Layout::plan(&p.partitions, 400 * MIB, 13 * MIB);
        assert_eq!((l.esp_mib, l.root_mib, l.data_mib), (128, 776, 78));
        // Contiguous, MiB-aligned, backup GPT room at the end.
        assert_eq!(l.data_start_mib(), 130);
        assert_eq!(l.root_start_mib(), 130 + 78);
        assert_eq!(l.total_mib(), 130 + 78 + 776 + 1);
        // Root last: it is the one that grows into a larger disk.
        let script = l.sfdisk_script();
        assert!(script.trim_end().ends_with("name=\"root\""), "{script}");
        // A size set in the profile wins over the computed one.
        let mut fixed = p.partitions.clone();
        fixed.data_mib = 4096;
        assert_eq!(Layout::plan(&fixed, 400 * MIB, 13 * MIB).data_mib, 4096);
        snap("disk-layout.sfdisk", &l.sfdisk_script());
    }

    #[test]
    fn the_files_we_lay_into_every_node() {
        let files = node_files();
        let unit = files
            .iter()
            .find_map(|f| match f {
                NodeFile::File { path, text, .. } if path.ends_with("kpaas-agent.service") => {
                    Some(text.clone())
                }
                _ => None,
            })
            .unwrap();
        // It serves (notify), and waits for cloud-init's local stage only:
        // the later stages would add ~5 s (init) and ~15 s (config, final)
        // before the seed serves.
        assert!(
            unit.contains("Type=notify")
                && unit.contains("DefaultDependencies=no")
                && unit.contains("cloud-init-local.service systemd-networkd.service")
        );
        assert!(
            !unit.contains("cloud-final")
                && !unit.contains("cloud-config.service")
                && !unit.contains(" cloud-init.service")
        );
        let text = format!(
            "{}=== grub.cfg (disk)\n{GRUB_CFG}=== grub.cfg (iso)\n{}",
            render_node_files(&files),
            crate::iso::GRUB_CFG
        );
        snap("node-files.txt", &text);
    }
}
