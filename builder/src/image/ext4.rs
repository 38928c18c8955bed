//! ext4 file systems made from directories (`mkfs.ext4 -d`): no loop
//! devices, no mounts, byte-identical from the same inputs.

use super::grub::EPOCH;
use airgap_bundle::run::run;
use anyhow::{Context, Result};
use std::path::Path;

/// ext4 features pinned here rather than taken from the host's
/// /etc/mke2fs.conf: the same image on every build host, and nothing GRUB 2.06
/// or the guest's e2fsck (1.47.0) cannot read (newer hosts default to
/// metadata_csum_seed and orphan_file).
const MKE2FS_CONF: &str = include_str!("../../../images/files/mke2fs.conf");

/// An ext4 image of `dir`. e2fsprogs >= 1.47.1 clamps every inode time to
/// SOURCE_DATE_EPOCH; older ones copy ctime from the build tree (see
/// `reproducible`).
pub fn mkext4(
    work: &Path,
    dir: &Path,
    out: &Path,
    label: &str,
    uuid: &str,
    mib: u64,
) -> Result<()> {
    let conf = work.join("mke2fs.conf");
    if !conf.exists() {
        std::fs::write(&conf, MKE2FS_CONF)
            .with_context(|| format!("writing {}", conf.display()))?;
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
