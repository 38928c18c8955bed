//! A NoCloud seed volume: a small FAT disk image labelled `CIDATA` holding
//! a seed's files, written in-process (fatfs), so the master can write one
//! with nothing but the agent (the node image carries no mkfs or mtools).
//! An operator attaches it to a new machine as a USB stick or a virtual
//! disk; cloud-init and the agent find it by its label.

use anyhow::{Context, Result, bail};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

/// The label cloud-init's NoCloud source looks for.
pub const LABEL: &[u8; 11] = b"CIDATA     ";
/// Room for a seed's files (tens of KiB) with FAT12's smallest clusters.
const IMAGE_BYTES: u64 = 2 << 20;

/// Writes `files` (name, content) into a fresh FAT image at `out` (0600):
/// to a temporary file beside it, renamed into place once complete, so a
/// failure never leaves an image that looks whole.
pub fn write_vfat(out: &Path, files: &[(&str, &[u8])]) -> Result<()> {
    let dir = out.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".cidata-")
        .tempfile_in(dir)
        .with_context(|| format!("a temporary file in {}", dir.display()))?;
    let total: u64 = files.iter().map(|(_, b)| b.len() as u64).sum();
    if total > IMAGE_BYTES / 2 {
        bail!(
            "a seed of {total} bytes does not fit a {} MiB CIDATA volume",
            IMAGE_BYTES >> 20
        );
    }
    {
        let f = tmp.as_file_mut();
        f.set_len(IMAGE_BYTES)?;
        fatfs::format_volume(
            &mut *f,
            fatfs::FormatVolumeOptions::new()
                .fat_type(fatfs::FatType::Fat12)
                .volume_label(*LABEL),
        )
        .context("formatting the CIDATA volume")?;
        label_root_dir(f)?;
        // fatfs reads the volume from where the file stands.
        f.seek(SeekFrom::Start(0))?;
        let fs = fatfs::FileSystem::new(&mut *f, fatfs::FsOptions::new())
            .context("opening the CIDATA volume")?;
        let root = fs.root_dir();
        for (name, body) in files {
            let mut w = root
                .create_file(name)
                .with_context(|| format!("{name} on the CIDATA volume"))?;
            w.truncate()?;
            w.write_all(body)
                .with_context(|| format!("writing {name} on the CIDATA volume"))?;
        }
        drop(root);
        fs.unmount().context("closing the CIDATA volume")?;
    }
    tmp.as_file().sync_all()?;
    crate::fsutil::set_mode(tmp.path(), 0o600)?;
    tmp.persist(out)
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// One file of a CIDATA image, by name.
pub fn read_file(img: &Path, name: &str) -> Result<Vec<u8>> {
    let f = std::fs::File::open(img).with_context(|| format!("opening {}", img.display()))?;
    let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new())
        .with_context(|| format!("{} is not a FAT volume", img.display()))?;
    let mut out = Vec::new();
    std::io::Read::read_to_end(
        &mut fs
            .root_dir()
            .open_file(name)
            .with_context(|| format!("{name} on {}", img.display()))?,
        &mut out,
    )?;
    Ok(out)
}

/// fatfs puts the label in the boot sector only; mkfs.fat also writes it
/// as the root directory's first entry (attribute VOLUME_ID), which is the
/// one Windows and some blkid versions read first. Written here the same
/// way, before any file, so the files' entries follow it.
fn label_root_dir(f: &mut std::fs::File) -> Result<()> {
    use std::io::Read;
    let mut bs = [0u8; 512];
    f.seek(SeekFrom::Start(0))?;
    f.read_exact(&mut bs)?;
    let u16_at = |i: usize| u64::from(u16::from_le_bytes([bs[i], bs[i + 1]]));
    let (sector, reserved, fats, per_fat) = (u16_at(11), u16_at(14), u64::from(bs[16]), u16_at(22));
    if sector == 0 || per_fat == 0 {
        bail!("the formatted CIDATA volume is not FAT12/16");
    }
    let mut entry = [0u8; 32];
    entry[..11].copy_from_slice(LABEL);
    entry[11] = 0x08; // ATTR_VOLUME_ID
    f.seek(SeekFrom::Start((reserved + fats * per_fat) * sector))?;
    f.write_all(&entry)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use std::process::Command;

    #[test]
    fn the_volume_is_labelled_cidata_and_holds_the_files_by_their_long_names() {
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("seed.img");
        let big = "x".repeat(70_000);
        let files: Vec<(&str, &[u8])> = vec![
            ("user-data", b"#cloud-config\n"),
            ("meta-data", b"instance-id: lab-w2\n"),
            ("network-config", big.as_bytes()),
            ("kpaas-node.yaml", b"config_version: 1\n"),
        ];
        write_vfat(&img, &files).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&img).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Read back with fatfs: every file whole, the label in both places.
        let f = std::fs::File::open(&img).unwrap();
        let fs = fatfs::FileSystem::new(f, fatfs::FsOptions::new()).unwrap();
        assert_eq!(fs.volume_label(), "CIDATA");
        assert_eq!(
            fs.read_volume_label_from_root_dir().unwrap().as_deref(),
            Some("CIDATA")
        );
        for (name, body) in &files {
            let mut got = Vec::new();
            std::io::Read::read_to_end(&mut fs.root_dir().open_file(name).unwrap(), &mut got)
                .unwrap();
            assert_eq!(&got, body, "{name}");
        }
        // What the node sees: util-linux's probe finds the label (that is
        // /dev/disk/by-label/CIDATA), and dosfstools finds nothing wrong.
        if let Ok(o) = Command::new("blkid").arg("-p").arg(&img).output() {
            let out = String::from_utf8_lossy(&o.stdout);
            assert!(
                out.contains("LABEL=\"CIDATA\"") && out.contains("TYPE=\"vfat\""),
                "{out}"
            );
        }
        if let Ok(o) = Command::new("fsck.fat")
            .args(["-n", "-v"])
            .arg(&img)
            .output()
        {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        }
        // Too big for the volume: refused, and nothing left at the path.
        let huge = vec![0u8; 3 << 20];
        let out = t.path().join("huge.img");
        assert!(write_vfat(&out, &[("user-data", &huge)]).is_err());
        assert!(!out.exists());
    }
}
