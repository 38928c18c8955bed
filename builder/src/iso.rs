//! The hybrid ISO (BIOS + UEFI, also writable to a USB stick): the node's
//! whole root tree as a zstd initramfs that runs live from RAM, the kernel,
//! and the bundle beside them. grub-mkrescue (xorriso) assembles it.

use crate::runner::run;
use anyhow::{Context, Result, bail};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

pub const ISO_LABEL: &str = "KPAAS_LIVE";

pub const GRUB_CFG: &str = "set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
menuentry 'K-PaaS appliance (live)' {
  linux /live/vmlinuz rdinit=/sbin/init console=tty0 console=ttyS0,115200 net.ifnames=0
  initrd /live/initrd.zst
}
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

/// Builds the ISO from a customized root tree and a bundle directory.
pub fn build(root: &Path, bundle: &Path, work: &Path, system: &Path, out: &Path) -> Result<()> {
    // Live: the ISO itself carries the bundle. The agent mounts it (by its
    // volume id, on whichever whole device it is: CD, USB stick, virtual
    // disk), because the hybrid layout's partitions hide it from by-label.
    std::fs::write(root.join("etc/fstab"), b"")?;
    std::fs::write(root.join("etc/kpaas/live"), b"running live from the ISO\n")?;
    let iso = work.join("iso");
    std::fs::create_dir_all(iso.join("boot/grub"))?;
    std::fs::create_dir_all(iso.join("live"))?;
    std::fs::create_dir_all(iso.join("install"))?;
    std::fs::create_dir_all(iso.join("data"))?;
    std::fs::rename(system, iso.join("install/system.raw.zst"))?;
    std::fs::write(iso.join("boot/grub/grub.cfg"), GRUB_CFG)?;
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
    if run("cp")
        .arg("-al")
        .arg(bundle)
        .arg(iso.join("data/bundle"))
        .ok()
        .is_err()
    {
        run("cp")
            .arg("-a")
            .arg(bundle)
            .arg(iso.join("data/bundle"))
            .ok()?;
    }
    std::fs::set_permissions(&iso, std::fs::Permissions::from_mode(0o755))?;
    run("grub-mkrescue")
        .arg("-o")
        .arg(out)
        .arg(&iso)
        .args(["--", "-volid", ISO_LABEL])
        .ok()?;
    if !out.is_file() {
        bail!("grub-mkrescue wrote no {}", out.display());
    }
    Ok(())
}
