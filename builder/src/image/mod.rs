//! The image side: a bootable node from a profile and a bundle. Three
//! outputs share one root tree: a raw disk, the same disk as qcow2, and the
//! hybrid ISO that runs live and installs that disk.
//!
//! rootfs (cached base tree) -> tree (our files, the bundle's binaries) ->
//! ext4 (file systems) -> disk (GPT + GRUB) -> raw | qcow2 | iso.

pub mod cpio;
pub mod disk;
pub mod ext4;
pub mod grub;
pub mod iso;
pub mod profile;
pub mod report;
pub mod rootfs;
pub mod signed;
pub mod tree;

use airgap_bundle::fsutil::create_dir;
use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest};
use airgap_bundle::node::{DATA_LABEL, DATA_PARTITION, ROOT_LABEL, ROOT_PARTITION};
use airgap_bundle::problems::Problems;
use airgap_bundle::run::run;
use anyhow::{Context, Result};
use disk::{Layout, PART_UUID_PREFIX};
use profile::Profile;
use report::{Stage, Stages};
use std::fs::File;
use std::path::{Path, PathBuf};
use tree::size_of;

pub const MIB: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Raw,
    Qcow2,
    /// Hybrid BIOS + UEFI; runs live, installs to a disk when asked.
    Iso,
}

impl Format {
    /// The media its UEFI chain boots from.
    fn media(self) -> &'static [signed::Media] {
        match self {
            Format::Iso => &[signed::Media::Disk, signed::Media::Cd],
            _ => &[signed::Media::Disk],
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
            Format::Iso => "iso",
        }
    }
}

/// What goes into an image besides the profile.
pub struct Inputs {
    pub bundle: PathBuf,
    pub bundle_key: PathBuf,
    pub agent: PathBuf,
    /// The content cache holding the rootfs.
    pub cache: PathBuf,
    pub offline: bool,
    pub work_dir: Option<PathBuf>,
}

pub struct Built {
    pub stages: Vec<Stage>,
    pub installed: Vec<String>,
    /// The UEFI chain's files and who signed each.
    pub boot_chain: Vec<signed::SignedFile>,
}

/// The inputs read and checked, every problem reported at once.
struct Checked {
    manifest: BundleManifest,
    key: Vec<u8>,
}

fn check(format: Format, p: &Profile, i: &Inputs) -> Result<Checked> {
    let manifest = std::fs::read(i.bundle.join(BUNDLE_JSON))
        .map_err(anyhow::Error::from)
        .and_then(|b| BundleManifest::from_bytes(&b));
    let key = std::fs::read(&i.bundle_key)
        .map_err(anyhow::Error::from)
        .and_then(|k| airgap_bundle::sign::parse_public(&String::from_utf8_lossy(&k)).map(|_| k));
    let mut problems = Vec::new();
    match &manifest {
        Err(e) => {
            let b = i.bundle.display();
            problems.push(format!("--bundle {b}: not a bundle directory ({e:#})"));
        }
        Ok(m) => {
            let missing = p.runtime.missing_from(m, &p.architecture);
            if !missing.is_empty() {
                problems.push(format!(
                    "profile {}: runtime {} from the bundle, but the bundle ({} {}) installs no {} for {}: use a bundle whose catalog carries it (k-paas-1.4.1 carries CRI-O's release tarball and runc) or a profile with `runtime: {{name: containerd, from: packages}}`",
                    p.name,
                    p.runtime.name.name(),
                    m.platform,
                    m.platform_version,
                    missing.join(", "),
                    p.architecture
                ));
            }
        }
    }
    if let Err(e) = &key {
        let k = i.bundle_key.display();
        problems.push(format!("--bundle-key {k}: not a bundle public key ({e:#})"));
    }
    if let Err(e) = signed::Chain::check(format.media()) {
        problems.push(format!("{e:#}"));
    }
    if !i.agent.is_file() {
        let a = i.agent.display();
        problems.push(format!(
            "--agent {a}: no such file (build kpaas-agent, or name it)"
        ));
    }
    match (manifest, key) {
        (Ok(manifest), Ok(key)) if problems.is_empty() => Ok(Checked { manifest, key }),
        _ => Err(Problems {
            file: "kpaas-builder image".into(),
            problems,
        }
        .into()),
    }
}

/// The node's root tree, customized, and its ext4 image: what every output
/// is built from.
struct Tree {
    /// Holds the ext4 images and the boot loaders; dropped with the build.
    work: tempfile::TempDir,
    /// The unpacked tree (kept until the ISO has packed it).
    _tree: tempfile::TempDir,
    root: PathBuf,
    root_img: PathBuf,
    layout: Layout,
    bundle_bytes: u64,
    installed: Vec<String>,
    boot_chain: Vec<signed::SignedFile>,
}

fn tree(
    format: Format,
    p: &Profile,
    i: &Inputs,
    c: &Checked,
    out_dir: &Path,
    st: &mut Stages,
) -> Result<Tree> {
    let tar = rootfs::cached(&i.cache, p, i.offline)?;
    st.done("rootfs", size_of(&tar), "cached tar".into());
    // Beside the output: the bundle is hard-linked in from there when it
    // shares the file system, and the result is renamed into place.
    let work = tempfile::Builder::new()
        .prefix(".kpaas-image-")
        .tempdir_in(out_dir)
        .with_context(|| format!("making a work directory in {}", out_dir.display()))?;
    let tree_parent = tree::tree_dir(i.work_dir.as_deref(), size_of(&tar).unwrap_or(0), out_dir);
    let tree_dir = tempfile::Builder::new()
        .prefix(".kpaas-root-")
        .tempdir_in(&tree_parent)
        .with_context(|| format!("making the work directory in {}", tree_parent.display()))?;
    let root = tree_dir.path().join("root");
    create_dir(&root)?;
    run("tar")
        .args(["--numeric-owner", "-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&root)
        .ok()?;
    st.done("extract", None, format!("into {}", tree_parent.display()));
    let installed = tree::customize(
        &root,
        &i.bundle,
        &c.manifest,
        &i.agent,
        &c.key,
        &p.architecture,
    )?;
    // Before the file systems are made: a kernel shim would refuse stops
    // the build here. The ISO's report adds its CD GRUB.
    let kernel = tree::kernel(&root)?;
    let mut boot_chain = signed::Chain::host(signed::Media::Disk)?.report(&kernel)?;
    if format == Format::Iso {
        let cd = signed::Chain::host(signed::Media::Cd)?.report(&kernel)?;
        boot_chain.extend(
            cd.into_iter()
                .filter(|f| f.file == "ESP:/EFI/BOOT/grubx64.efi")
                .map(|mut f| {
                    f.file = "ISO El Torito ESP:/EFI/BOOT/grubx64.efi".into();
                    f
                }),
        );
    }
    let used = tree::tree_bytes(&root);
    st.done(
        "customize",
        Some(used),
        format!("{} files from the bundle", installed.len()),
    );
    let bundle_bytes = tree::tree_bytes(&i.bundle);
    let layout = Layout::plan(&p.partitions, used, bundle_bytes);
    let root_img = work.path().join("root.img");
    ext4::mkext4(
        work.path(),
        &root,
        &root_img,
        ROOT_LABEL,
        &format!("{PART_UUID_PREFIX}{ROOT_PARTITION}").to_lowercase(),
        layout.root_mib,
    )?;
    st.done(
        "root fs",
        Some(layout.root_mib * MIB),
        format!("ext4, {} MiB used", used / MIB),
    );
    Ok(Tree {
        work,
        _tree: tree_dir,
        root,
        root_img,
        layout,
        bundle_bytes,
        installed,
        boot_chain,
    })
}

/// The node disk at `out`; with the bundle on its data partition, or (for
/// the ISO's install image) with that partition left for the installer.
fn disk(
    p: &Profile,
    i: &Inputs,
    t: &Tree,
    with_data: bool,
    out: &Path,
    st: &mut Stages,
) -> Result<()> {
    let w = t.work.path();
    let data_img = w.join("data.img");
    if with_data {
        let data = w.join("data");
        tree::link_tree(&i.bundle, &data.join("bundle"))?;
        ext4::mkext4(
            w,
            &data,
            &data_img,
            DATA_LABEL,
            &format!("{PART_UUID_PREFIX}{DATA_PARTITION}").to_lowercase(),
            t.layout.data_mib,
        )?;
    }
    st.done(
        "data fs",
        Some(t.layout.data_mib * MIB),
        format!(
            "ext4, bundle {} MiB{}",
            t.bundle_bytes / MIB,
            if with_data { "" } else { ", filled at install" }
        ),
    );
    // The same grub.cfg in the BIOS loader's memdisk and on the ESP, where
    // the signed GRUB looks.
    let bios = grub::bios(w, disk::GRUB_CFG, grub::Bios::Disk)?;
    let cfg = w.join("grub.cfg");
    std::fs::write(&cfg, disk::GRUB_CFG).with_context(|| format!("writing {}", cfg.display()))?;
    let chain = signed::Chain::host(signed::Media::Disk)?;
    let esp = w.join("esp.img");
    grub::esp(
        &esp,
        &chain.esp_files(Some(&cfg)),
        p.partitions.esp_mib * 1024,
        true,
    )?;
    st.done(
        "boot loaders",
        size_of(&chain.grub),
        "UEFI: shim -> signed GRUB; BIOS: GRUB".into(),
    );
    disk::assemble(
        &t.layout,
        &disk::Parts {
            esp: &esp,
            root: &t.root_img,
            data: with_data.then_some(data_img.as_path()),
            bios_core: &bios,
        },
        out,
    )?;
    st.done(
        "disk",
        Some(t.layout.total_mib() * MIB),
        "GPT: bios, esp, kpaas-data, root".into(),
    );
    Ok(())
}

/// Builds `format` at `out` (written beside it under a temporary name and
/// renamed into place: a failed build leaves nothing that looks complete).
pub fn build(format: Format, p: &Profile, i: &Inputs, out: &Path) -> Result<Built> {
    let mut st = Stages::new();
    let checked = check(format, p, i)?;
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    create_dir(dir)?;
    // Removed on drop, whatever happens: only the final rename publishes.
    let partial = tempfile::Builder::new()
        .prefix(&format!(
            ".{}.partial-",
            out.file_name().unwrap_or_default().to_string_lossy()
        ))
        .tempdir_in(dir)
        .with_context(|| format!("making a work directory in {}", dir.display()))?;
    let t = tree(format, p, i, &checked, partial.path(), &mut st)?;
    let raw = partial.path().join("disk.raw");
    let result = partial.path().join("out");
    match format {
        Format::Raw => disk(p, i, &t, true, &result, &mut st)?,
        Format::Qcow2 => {
            disk(p, i, &t, true, &raw, &mut st)?;
            run("qemu-img")
                .args(["convert", "-f", "raw", "-O", "qcow2", "-c"])
                .args(["-o", "compression_type=zstd"])
                .arg(&raw)
                .arg(&result)
                .ok()?;
            st.done("qcow2", size_of(&result), "zstd-compressed clusters".into());
        }
        Format::Iso => {
            // The ISO's installer fills the data partition from the ISO's own
            // copy of the bundle: its system image leaves it empty instead of
            // carrying the bundle twice.
            disk(p, i, &t, false, &raw, &mut st)?;
            let zst = t.work.path().join("system.raw.zst");
            compress(&raw, &zst)?;
            std::fs::remove_file(&raw).with_context(|| format!("removing {}", raw.display()))?;
            st.done("install image", size_of(&zst), "system.raw.zst".into());
            iso::build(
                &t.root,
                &i.bundle,
                t.work.path(),
                &zst,
                &result,
                &mut |name, bytes, detail| st.done(name, bytes, detail),
            )?;
        }
    }
    std::fs::rename(&result, out)
        .with_context(|| format!("moving the image to {}", out.display()))?;
    Ok(Built {
        stages: st.list,
        installed: t.installed,
        boot_chain: t.boot_chain,
    })
}

fn compress(raw: &Path, zst: &Path) -> Result<()> {
    let ctx = || format!("compressing {} to {}", raw.display(), zst.display());
    let mut enc = zstd::stream::write::Encoder::new(File::create(zst).with_context(ctx)?, 3)
        .with_context(ctx)?;
    std::io::copy(&mut File::open(raw).with_context(ctx)?, &mut enc).with_context(ctx)?;
    enc.finish().and_then(|f| f.sync_all()).with_context(ctx)
}
