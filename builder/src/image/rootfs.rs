//! A profile's base tree: built once with mmdebstrap from the profile's
//! archive and cached as a tar keyed by everything that shapes it, so image
//! builds (and tests) run offline.

use super::MIB;
use super::grub::EPOCH;
use super::profile::Profile;
use airgap_bundle::run::run;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

fn rootfs_cache(cache: &Path, p: &Profile) -> PathBuf {
    cache.join("rootfs").join(format!("{}.tar", p.rootfs_key()))
}

/// The base tree, from the cache or built once with mmdebstrap.
pub fn cached(cache: &Path, p: &Profile, offline: bool) -> Result<PathBuf> {
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
    let dir = tar.parent().unwrap_or(cache);
    airgap_bundle::fsutil::create_dir(dir)?;
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
        .arg(format!("--components={}", p.components.join(",")))
        .arg(format!("--architectures={}", p.architecture))
        .args(["--format=tar", &p.suite])
        .arg(&partial)
        .arg(&p.mirror)
        .env("SOURCE_DATE_EPOCH", EPOCH)
        .ok()?;
    std::fs::rename(&partial, &tar)
        .with_context(|| format!("moving {} into place", tar.display()))?;
    Ok(tar)
}

/// The size of a built tar, for the `rootfs` command's line.
pub fn mib(tar: &Path) -> Result<u64> {
    Ok(std::fs::metadata(tar)
        .with_context(|| format!("reading {}", tar.display()))?
        .len()
        / MIB)
}
