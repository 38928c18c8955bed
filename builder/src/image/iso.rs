//! The hybrid ISO (BIOS + UEFI, also writable to a USB stick): the node's
//! whole root tree as a zstd initramfs that runs live from RAM, the kernel,
//! and the bundle beside them. xorriso assembles it the way grub-mkrescue
//! would, but from our own GRUB images and without its build-time stamps,
//! so the same inputs give the same ISO.

use super::cpio;
use super::grub;
use super::signed;
use super::tree::{link_tree, size_of};
use airgap_bundle::node::{ISO_DATA_DIR, ISO_SYSTEM_IMAGE, ISO_VOLUME_ID, LIVE_MARKER};
use airgap_bundle::run::run;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The live system's boot menu: it finds the medium by its volume id.
pub const GRUB_CFG: &str = include_str!("../../../images/files/grub-iso.cfg");

/// The root tree as a zstd-compressed cpio: the live system's RAM root.
fn initramfs(root: &Path, out: &Path) -> Result<()> {
    let ctx = || format!("writing {}", out.display());
    let f = std::fs::File::create(out).with_context(ctx)?;
    let mut z = zstd::stream::write::Encoder::new(std::io::BufWriter::with_capacity(1 << 20, f), 3)
        .with_context(ctx)?;
    // The kernel boots from the ISO; it need not be in RAM too.
    cpio::write_tree(&mut z, root, |rel| rel == "boot")?;
    z.finish().and_then(|mut w| w.flush()).with_context(ctx)
}

/// Builds the ISO from a customized root tree and a bundle directory;
/// `stage` hears each finished step (name, size, detail).
pub fn build(
    root: &Path,
    bundle: &Path,
    work: &Path,
    system: &Path,
    out: &Path,
    stage: &mut dyn FnMut(&str, Option<u64>, String),
) -> Result<()> {
    // Live: the ISO itself carries the bundle. The agent mounts it (by its
    // volume id, on whichever whole device it is: CD, USB stick, virtual
    // disk), because the hybrid layout's partitions hide it from by-label.
    let put = |p: PathBuf, b: &[u8]| {
        std::fs::write(&p, b).with_context(|| format!("writing {}", p.display()))
    };
    put(root.join("etc/fstab"), b"")?;
    put(root.join(LIVE_MARKER), b"running live from the ISO\n")?;
    let iso = work.join("iso");
    let installed = iso.join(ISO_SYSTEM_IMAGE);
    let dirs = [
        iso.join("boot/grub"),
        iso.join(".disk"),
        iso.join("live"),
        iso.join(ISO_DATA_DIR),
    ];
    for d in dirs.iter().map(PathBuf::as_path).chain(installed.parent()) {
        airgap_bundle::fsutil::create_dir(d)?;
    }
    std::fs::rename(system, &installed)
        .with_context(|| format!("moving {} to {}", system.display(), installed.display()))?;
    let kernel = super::tree::kernel(root)?;
    std::fs::copy(&kernel, iso.join("live/vmlinuz"))
        .with_context(|| format!("copying {}", kernel.display()))?;
    initramfs(root, &iso.join("live/initrd.zst"))?;
    stage(
        "live initrd",
        size_of(&iso.join("live/initrd.zst")),
        "root tree as zstd cpio".into(),
    );
    link_tree(bundle, &iso.join(ISO_DATA_DIR).join("bundle"))?;
    let bios = grub::bios(work, GRUB_CFG, grub::Bios::ElTorito)?;
    std::fs::copy(&bios, iso.join("boot/eltorito.img"))
        .with_context(|| format!("copying {}", bios.display()))?;
    // The signed CD GRUB finds the medium by this file and reads the same
    // menu from it.
    put(iso.join(signed::ISO_CFG), GRUB_CFG.as_bytes())?;
    put(
        iso.join(signed::ISO_MARKER),
        b"kpaas-appliance live and installer medium\n",
    )?;
    // The EFI El Torito image, also exposed as a GPT partition for sticks:
    // shim, the CD GRUB and MokManager (about 5.8 MiB) with room to spare.
    let chain = signed::Chain::host(signed::Media::Cd)?;
    grub::esp(
        &iso.join("boot/efi.img"),
        &chain.esp_files(None),
        8192,
        false,
    )?;
    std::fs::set_permissions(&iso, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("setting the mode of {}", iso.display()))?;
    run("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-iso-level", "3", "-r"])
        .args(["-volid", ISO_VOLUME_ID])
        .args([
            "-b",
            "boot/eltorito.img",
            "-no-emul-boot",
            "-boot-load-size",
            "4",
            "-boot-info-table",
            "--grub2-boot-info",
            "--grub2-mbr",
            "/usr/lib/grub/i386-pc/boot_hybrid.img",
        ])
        .args([
            "--efi-boot",
            "boot/efi.img",
            "-efi-boot-part",
            "--efi-boot-image",
            "--protective-msdos-label",
        ])
        // SOURCE_DATE_EPOCH alone keeps each file's own mtime, which a
        // copy of the same bundle does not share.
        .args(["--set_all_file_dates", grub::EPOCH_ISO9660])
        .arg("-o")
        .arg(out)
        .arg(&iso)
        // Volume and file times, and the GPT's GUIDs, from the fixed epoch.
        .env("SOURCE_DATE_EPOCH", grub::EPOCH)
        .ok()?;
    if !out.is_file() {
        bail!("xorriso wrote no {}", out.display());
    }
    stage(
        "iso",
        size_of(out),
        "hybrid: El Torito BIOS + UEFI, GPT + MBR".into(),
    );
    Ok(())
}
