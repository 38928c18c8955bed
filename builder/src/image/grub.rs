//! GRUB for BIOS boot, and the FAT images that carry the UEFI chain, built
//! so the same config gives the same bytes: grub-mkimage with a memdisk we
//! tar ourselves (grub-mkstandalone stamps its memdisk with the build time),
//! and mtools/mkfs.vfat under SOURCE_DATE_EPOCH. UEFI boots the
//! distribution's signed chain instead (signed.rs).

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

/// The BIOS boot loader (core.img or eltorito.img) with `cfg` embedded as
/// (memdisk)/boot/grub/grub.cfg.
pub fn bios(work: &Path, cfg: &str, bios: Bios) -> Result<PathBuf> {
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
    let (format, name) = match bios {
        Bios::Disk => ("i386-pc", "core.img"),
        Bios::ElTorito => ("i386-pc-eltorito", "eltorito.img"),
    };
    let bios = work.join(name);
    mkimage(format, &bios, &["biosdisk"])?;
    Ok(bios)
}

/// A FAT image of `kib` KiB holding `files` (source, path in the image).
/// mkfs.vfat picks FAT12/16/32 from the size.
pub fn esp(out: &Path, files: &[(&Path, &str)], kib: u64, fat32: bool) -> Result<()> {
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
    // Every directory the files need, parents first, each once.
    let mut dirs: Vec<String> = Vec::new();
    for (_, at) in files {
        let parts: Vec<&str> = at.split('/').collect();
        for n in 1..parts.len() {
            let d = format!("::/{}", parts[..n].join("/"));
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
    let mtools = |tool: &str| {
        run(tool)
            .arg("-i")
            .arg(out)
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", EPOCH)
    };
    if !dirs.is_empty() {
        mtools("mmd").args(&dirs).ok()?;
    }
    for (from, at) in files {
        mtools("mcopy").arg(from).arg(format!("::/{at}")).ok()?;
    }
    Ok(())
}
