//! Running live from the ISO: find the whole device whose ISO 9660 volume
//! id is the appliance's, mount it read-only, and point the bundle path at
//! its copy of the bundle. Before preflight, so preflight can measure it.
//! Every boot: a mount lives only until the next one.

use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use airgap_bundle::fsutil::create_dir;
use airgap_bundle::node::{ISO_DATA_DIR, ISO_VOLUME_ID, LIVE_MARKER};
use airgap_bundle::run::run;
use anyhow::{Context, Result, bail};
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// Where the medium is mounted (below the root).
pub const ISO_MOUNT: &str = "run/kpaas/iso";

pub const STEP: Step = Step {
    id: StepId::Live,
    rerun: Rerun::EveryBoot,
    applies,
    run: work,
};

fn applies(ctx: &Ctx) -> bool {
    ctx.root.join(LIVE_MARKER).exists()
}

fn work(ctx: &mut Ctx, _: &mut Sink) -> Result<String> {
    let name = find_medium(&ctx.root)?;
    let dev = ctx.root.join("dev").join(&name);
    let mnt = ctx.root.join(ISO_MOUNT);
    let bundle = &ctx.cfg.bundle;
    let data = bundle.parent().unwrap_or(bundle);
    // A restart after a crash finds the medium mounted already.
    if !mnt.join(ISO_DATA_DIR).exists() {
        create_dir(&mnt)?;
        run("mount")
            .args(["-t", "iso9660", "-o", "ro"])
            .arg(&dev)
            .arg(&mnt)
            .ok_on(ctx.runner.as_ref())?;
        if let Some(parent) = data.parent() {
            create_dir(parent)?;
        }
        // The image's empty mount point for the data partition, if any:
        // live, the data comes from the medium instead.
        let _ = std::fs::remove_dir(data);
        std::os::unix::fs::symlink(mnt.join(ISO_DATA_DIR), data)
            .with_context(|| format!("linking {}", data.display()))?;
    }
    ctx.live = Some(name);
    Ok(format!("bundle from {}", dev.display()))
}

/// The whole device carrying the appliance's ISO 9660 volume id.
fn find_medium(root: &Path) -> Result<String> {
    let mut seen = Vec::new();
    let block = root.join("sys/block");
    for e in std::fs::read_dir(&block)
        .with_context(|| format!("listing {}", block.display()))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        let mut id = [0u8; 32];
        // The primary volume descriptor is at 32 KiB; its volume id at +40.
        let ok = std::fs::File::open(root.join("dev").join(&name))
            .and_then(|mut f| {
                f.seek(SeekFrom::Start(32768 + 40))?;
                f.read_exact(&mut id)
            })
            .is_ok();
        let vol = String::from_utf8_lossy(&id).trim().to_string();
        if ok && vol == ISO_VOLUME_ID {
            return Ok(name);
        }
        seen.push(format!("{name}={vol}"));
    }
    bail!(
        "running live, but no device holds the {ISO_VOLUME_ID} volume (seen: {})",
        seen.join(", ")
    )
}
