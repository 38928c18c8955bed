//! The hybrid ISO (BIOS + UEFI, also writable to a USB stick): the node's
//! whole root tree as a zstd initramfs that runs live from RAM, the kernel,
//! and the bundle beside them. xorriso assembles it the way grub-mkrescue
//! would, but from our own GRUB images and without its build-time stamps,
//! so the same inputs give the same ISO.

use crate::image::{link_tree, size_of};
use airgap_bundle::run::run;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

pub const ISO_LABEL: &str = "KPAAS_LIVE";

pub const GRUB_CFG: &str = "set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --label --set=root KPAAS_LIVE
linux /live/vmlinuz rdinit=/sbin/init console=tty0 console=ttyS0,115200 net.ifnames=0 quiet
initrd /live/initrd.zst
boot
";

/// newc cpio writer: enough for a root tree (files, dirs, symlinks, devices).
fn cpio_entry(
    w: &mut impl Write,
    ino: &mut u32,
    name: &str,
    meta: &std::fs::Metadata,
    data: &[u8],
) -> Result<()> {
    *ino += 1;
    let (maj, min) = (
        (meta.rdev() >> 8) & 0xfff,
        (meta.rdev() & 0xff) | ((meta.rdev() >> 12) & 0xfff00),
    );
    let hdr = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        *ino,
        meta.mode(),
        meta.uid(),
        meta.gid(),
        1,
        0, // mtime 0: the tree's own times do not matter in RAM
        data.len(),
        0,
        0,
        maj,
        min,
        name.len() + 1,
        0
    );
    w.write_all(hdr.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    let pad = |n: usize| (4 - n % 4) % 4;
    w.write_all(&vec![0u8; pad(110 + name.len() + 1)])?;
    w.write_all(data)?;
    w.write_all(&vec![0u8; pad(data.len())])?;
    Ok(())
}

pub fn initramfs(root: &Path, out: &Path) -> Result<()> {
    let f = std::fs::File::create(out)?;
    let mut z =
        zstd::stream::write::Encoder::new(std::io::BufWriter::with_capacity(1 << 20, f), 3)?;
    let mut ino = 0u32;
    let mut stack = vec![root.to_path_buf()];
    let mut entries = Vec::new();
    while let Some(d) = stack.pop() {
        let mut names: Vec<_> = std::fs::read_dir(&d)?.flatten().map(|e| e.path()).collect();
        names.sort();
        for p in names {
            let rel = p
                .strip_prefix(root)
                .unwrap_or(&p)
                .to_string_lossy()
                .to_string();
            // The kernel boots from the ISO; it need not be in RAM too.
            if rel == "boot" || rel.starts_with("boot/") {
                continue;
            }
            let m = std::fs::symlink_metadata(&p)?;
            if m.is_dir() {
                stack.push(p.clone());
            }
            entries.push((rel, p, m));
        }
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    for (rel, p, m) in entries {
        let data = if m.file_type().is_symlink() {
            std::fs::read_link(&p)?
                .to_string_lossy()
                .as_bytes()
                .to_vec()
        } else if m.is_file() {
            std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?
        } else {
            Vec::new()
        };
        cpio_entry(&mut z, &mut ino, &rel, &m, &data)?;
    }
    // The trailer.
    let hdr = format!(
        "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 11, 0
    );
    z.write_all(hdr.as_bytes())?;
    z.write_all(b"TRAILER!!!\0")?;
    z.write_all(&[0u8; 3])?;
    z.finish()?.flush()?;
    Ok(())
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
    std::fs::write(root.join("etc/fstab"), b"")?;
    std::fs::write(root.join("etc/kpaas/live"), b"running live from the ISO\n")?;
    let iso = work.join("iso");
    for d in ["boot", "live", "install", "data"] {
        std::fs::create_dir_all(iso.join(d))?;
    }
    std::fs::rename(system, iso.join("install/system.raw.zst"))?;
    let kernel = std::fs::read_dir(root.join("boot"))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no /boot/vmlinuz-* in the root tree")?;
    std::fs::copy(&kernel, iso.join("live/vmlinuz"))?;
    initramfs(root, &iso.join("live/initrd.zst"))?;
    stage(
        "live initrd",
        size_of(&iso.join("live/initrd.zst")),
        "root tree as zstd cpio".into(),
    );
    link_tree(bundle, &iso.join("data/bundle"))?;
    let grub = crate::grub::images(work, GRUB_CFG, crate::grub::Bios::ElTorito)?;
    std::fs::copy(&grub.bios, iso.join("boot/eltorito.img"))?;
    // The EFI El Torito image, also exposed as a GPT partition for sticks.
    crate::grub::esp(&iso.join("boot/efi.img"), &grub.efi, 4096, false)?;
    std::fs::set_permissions(&iso, std::fs::Permissions::from_mode(0o755))?;
    run("xorriso")
        .args(["-as", "mkisofs", "-quiet", "-iso-level", "3", "-r"])
        .args(["-volid", ISO_LABEL])
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
        .args(["--set_all_file_dates", crate::grub::EPOCH_ISO9660])
        .arg("-o")
        .arg(out)
        .arg(&iso)
        // Volume and file times, and the GPT's GUIDs, from the fixed epoch.
        .env("SOURCE_DATE_EPOCH", crate::grub::EPOCH)
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
