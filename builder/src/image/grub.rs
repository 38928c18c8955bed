//! GRUB for both firmwares, and the FAT images that carry it, built so the
//! same config gives the same bytes: grub-mkimage with a memdisk we tar
//! ourselves (grub-mkstandalone stamps its memdisk with the build time), and
//! mtools/mkfs.vfat under SOURCE_DATE_EPOCH.

use airgap_bundle::run::run;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// The fixed build time stamped wherever a tool insists on a time:
/// 2026-01-01T00:00:00Z. Inode, FAT and ISO times are all clamped to it.
pub const EPOCH: &str = "1767225600";
/// The same instant as xorriso's YYYYMMDDhhmmsscc (GMT).
pub const EPOCH_ISO9660: &str = "2026010100000000";

/// What GRUB needs to find a partition or volume by label and boot Linux
/// from ext4 or ISO 9660, on a serial console and a screen.
const MODULES: &[&str] = &[
    "part_gpt",
    "part_msdos",
    "fat",
    "ext2",
    "iso9660",
    "normal",
    "linux",
    "search",
    "search_label",
    "configfile",
    "serial",
    "terminal",
    "echo",
    "test",
    "memdisk",
    "tar",
    // A framebuffer handed to the kernel on machines with a screen (without
    // it GRUB boots "blind" and the console stays dark until a DRM driver).
    "all_video",
];

/// The BIOS flavour: a core.img for a BIOS-boot partition (disks) or an
/// El Torito no-emulation image (CDs).
#[derive(Clone, Copy)]
pub enum Bios {
    Disk,
    ElTorito,
}

pub struct Images {
    /// EFI/BOOT/BOOTX64.EFI
    pub efi: PathBuf,
    /// core.img or eltorito.img
    pub bios: PathBuf,
}

/// Both boot loaders, each with `cfg` embedded as (memdisk)/boot/grub/grub.cfg.
pub fn images(work: &Path, cfg: &str, bios: Bios) -> Result<Images> {
    let md = work.join("grub-memdisk");
    let cfg_path = md.join("boot/grub/grub.cfg");
    airgap_bundle::fsutil::create_dir(&md.join("boot/grub"))?;
    std::fs::write(&cfg_path, cfg).with_context(|| format!("writing {}", cfg_path.display()))?;
    let tar = work.join("grub-memdisk.tar");
    run("tar")
        .args([
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--sort=name",
            "-C",
        ])
        .arg(&md)
        .arg("-cf")
        .arg(&tar)
        .arg("boot")
        .ok()?;
    let mkimage = |format: &str, out: &Path, extra: &[&str]| {
        run("grub-mkimage")
            .args(["-O", format, "-p", "(memdisk)/boot/grub", "-m"])
            .arg(&tar)
            .arg("-o")
            .arg(out)
            .args(extra)
            .args(MODULES)
            .ok()
    };
    let efi = work.join("BOOTX64.EFI");
    mkimage("x86_64-efi", &efi, &[])?;
    let (format, name) = match bios {
        Bios::Disk => ("i386-pc", "core.img"),
        Bios::ElTorito => ("i386-pc-eltorito", "eltorito.img"),
    };
    let bios = work.join(name);
    mkimage(format, &bios, &["biosdisk"])?;
    Ok(Images { efi, bios })
}

/// A FAT image of `kib` KiB holding `efi` as the removable-media boot path.
/// mkfs.vfat picks FAT12/16/32 from the size.
pub fn esp(out: &Path, efi: &Path, kib: u64, fat32: bool) -> Result<()> {
    // mkfs.vfat -C refuses an existing file; a missing one is the usual case.
    let _ = std::fs::remove_file(out);
    let mut mk = run("mkfs.vfat");
    if fat32 {
        mk = mk.args(["-F", "32", "-s", "1"]);
    }
    mk.args(["-n", "ESP", "-i", "4B504141", "--invariant", "-C"])
        .arg(out)
        .arg(kib.to_string())
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .ok()?;
    run("mmd")
        .arg("-i")
        .arg(out)
        .args(["::/EFI", "::/EFI/BOOT"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .ok()?;
    run("mcopy")
        .arg("-i")
        .arg(out)
        .arg(efi)
        .arg("::/EFI/BOOT/BOOTX64.EFI")
        .env("MTOOLS_SKIP_CHECK", "1")
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .ok()
}
