//! The node config: cloud-init's copy when it has written one (every boot
//! after the first), else the seed volume's own `kpaas-node.yaml`. At first
//! boot the agent starts before cloud-init's network stage has run
//! write_files (that stage costs seconds the seed registry need not wait).

use airgap_bundle::node::{self, NodeConfig};
use airgap_bundle::run::{Runner, run};
use anyhow::{Context, Result, bail};
use std::path::Path;

pub fn load(config: &Path, root: &Path, r: &dyn Runner) -> Result<NodeConfig> {
    if config.is_file() {
        let text = std::fs::read_to_string(config)
            .with_context(|| format!("reading {}", config.display()))?;
        return Ok(NodeConfig::from_yaml(&text, &config.display().to_string())?);
    }
    let dev = root.join("dev/disk/by-label/CIDATA");
    if !dev.exists() {
        bail!(
            "{} does not exist and no CIDATA volume is attached",
            config.display()
        );
    }
    let mnt = root.join("run/kpaas/cidata");
    let file = mnt.join(node::CIDATA_FILE);
    // A restart after a crash may find it mounted already.
    if !file.is_file() {
        airgap_bundle::fsutil::create_dir(&mnt)?;
        run("mount")
            .args(["-o", "ro"])
            .arg(&dev)
            .arg(&mnt)
            .ok_on(r)?;
    }
    let text = std::fs::read_to_string(&file);
    // Read once and let go: cloud-init reads the same volume. A volume left
    // mounted read-only harms nothing (cloud-init mounts it again elsewhere),
    // so a failure here is said, not fatal.
    if let Err(e) = run("umount").arg(&mnt).ok_on(r) {
        eprintln!("kpaas-agent: config: {e:#}");
    }
    let text =
        text.with_context(|| format!("reading {} on the CIDATA volume", node::CIDATA_FILE))?;
    Ok(NodeConfig::from_yaml(
        &text,
        &format!("{} ({})", node::CIDATA_FILE, dev.display()),
    )?)
}
