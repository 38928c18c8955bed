//! The node disk: GPT with BIOS-boot, ESP, KPAAS-DATA and root, GRUB for
//! both UEFI (removable-media path on the ESP) and legacy BIOS (core.img in
//! the BIOS-boot partition). File system images are written at their
//! offsets: no loop devices and no mounts, so it runs in CI and containers.

use super::MIB;
use super::profile::Partitions;
use airgap_bundle::run::run;
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

/// The disk's boot menu. `quiet`: the kernel's and systemd's chatter on the
/// serial console cost ~1.5 s of a boot under emulation; failed units and
/// the agent's own lines still reach the console.
pub const GRUB_CFG: &str = include_str!("../../../images/files/grub-disk.cfg");

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
    pub fn plan(p: &Partitions, root_used: u64, bundle: u64) -> Layout {
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

/// Copies `src` into `dst` at `offset`, leaving all-zero MiBs as holes.
fn write_at(dst: &mut File, offset: u64, src: &Path) -> std::io::Result<()> {
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

/// The file systems and boot images that make a disk.
pub struct Parts<'a> {
    pub esp: &'a Path,
    pub root: &'a Path,
    /// None: the data partition stays empty (the ISO's installer fills it).
    pub data: Option<&'a Path>,
    /// GRUB's core.img for the BIOS-boot partition.
    pub bios_core: &'a Path,
}

/// Writes the whole disk to `out`: table, file systems, boot code.
pub fn assemble(layout: &Layout, parts: &Parts, out: &Path) -> Result<()> {
    let ctx = || format!("writing the disk {}", out.display());
    File::create(out)
        .and_then(|f| f.set_len(layout.total_mib() * MIB))
        .with_context(ctx)?;
    run("sfdisk")
        .args(["--quiet", "--no-reread", "--no-tell-kernel"])
        .arg(out)
        .stdin(layout.sfdisk_script())
        .ok()?;
    let mut disk = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(out)
        .with_context(ctx)?;
    let mut place = |start_mib: u64, src: &Path| {
        write_at(&mut disk, start_mib * MIB, src)
            .with_context(|| format!("writing {} into {}", src.display(), out.display()))
    };
    place(Layout::ESP_START_MIB, parts.esp)?;
    place(layout.root_start_mib(), parts.root)?;
    if let Some(data) = parts.data {
        place(layout.data_start_mib(), data)?;
    }
    // BIOS: boot.img's code into the MBR (the partition table stays), core.img
    // at the BIOS-boot partition, and the two sector numbers GRUB needs.
    let bios_lba = Layout::BIOS_START_MIB * 2048;
    let mut mbr = std::fs::read("/usr/lib/grub/i386-pc/boot.img")
        .context("reading GRUB's boot.img (grub-pc-bin)")?;
    mbr[0x5c..0x64].copy_from_slice(&bios_lba.to_le_bytes());
    let mut core = std::fs::read(parts.bios_core)
        .with_context(|| format!("reading {}", parts.bios_core.display()))?;
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
    disk.seek(SeekFrom::Start(0))
        .and_then(|_| disk.write_all(&mbr[..440]))
        .and_then(|_| disk.seek(SeekFrom::Start(bios_lba * 512)))
        .and_then(|_| disk.write_all(&core))
        .and_then(|_| disk.sync_all())
        .with_context(ctx)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use crate::image::profile::Profile;

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
        crate::image::tree::tests::snap("disk-layout.sfdisk", &l.sfdisk_script());
    }

    #[test]
    fn zero_mebibytes_stay_holes_and_the_rest_lands_at_its_offset() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("fs.img");
        let mut data = vec![0u8; 3 * MIB as usize];
        data[5] = 1; // first MiB: data
        data[2 * MIB as usize + 7] = 2; // second MiB all zeros: a hole
        std::fs::write(&src, &data).unwrap();
        let dst = t.path().join("disk");
        let mut f = File::create(&dst).unwrap();
        f.set_len(8 * MIB).unwrap();
        write_at(&mut f, 4 * MIB, &src).unwrap();
        drop(f);
        let disk = std::fs::read(&dst).unwrap();
        assert_eq!(&disk[4 * MIB as usize..7 * MIB as usize], &data[..]);
        assert!(disk[..4 * MIB as usize].iter().all(|b| *b == 0));
        let alloc = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&dst).unwrap()) * 512;
        assert!(
            alloc <= 2 * MIB + 64 * 1024,
            "the zero MiB was written: {alloc}"
        );
    }
}
