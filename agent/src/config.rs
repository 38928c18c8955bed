//! The node config: cloud-init's copy when it has written one (every boot
//! after the first), else the seed volume's own `kpaas-node.yaml`, else the
//! copy its `user-data` would write (a seed made by hand may lack the file).
//! At first boot the agent starts before cloud-init's network stage has run
//! write_files (that stage costs seconds the seed registry need not wait).

use airgap_bundle::node::{self, NodeConfig};
use airgap_bundle::run::{Runner, run};
use anyhow::{Context, Result, bail};
use std::path::Path;

/// The node config, as an installed update left it (`crate::update::store`):
/// every step and command then reads the bundle and plan the node runs.
pub fn load(config: &Path, root: &Path, r: &dyn Runner) -> Result<NodeConfig> {
    crate::update::store::installed_view(load_seed(config, root, r)?)
}

/// The node config as its seed gave it.
fn load_seed(config: &Path, root: &Path, r: &dyn Runner) -> Result<NodeConfig> {
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
    let user_data = mnt.join("user-data");
    // A restart after a crash may find it mounted already.
    if !file.is_file() && !user_data.is_file() {
        airgap_bundle::fsutil::create_dir(&mnt)?;
        run("mount")
            .args(["-o", "ro"])
            .arg(&dev)
            .arg(&mnt)
            .ok_on(r)?;
    }
    let text = std::fs::read_to_string(&file).or_else(|e| match e.kind() {
        std::io::ErrorKind::NotFound => from_user_data(&user_data).ok_or(e),
        _ => Err(e),
    });
    // Read once and let go: cloud-init reads the same volume. A volume left
    // mounted read-only harms nothing (cloud-init mounts it again elsewhere),
    // so a failure here is said, not fatal.
    if let Err(e) = run("umount").arg(&mnt).ok_on(r) {
        eprintln!("kpaas-agent: config: {e:#}");
    }
    let text = text.with_context(|| {
        format!(
            "the CIDATA volume holds neither {} nor a user-data that writes {}",
            node::CIDATA_FILE,
            node::NODE_CONFIG_PATH
        )
    })?;
    Ok(NodeConfig::from_yaml(
        &text,
        &format!("{} ({})", node::CIDATA_FILE, dev.display()),
    )?)
}

/// The node config a NoCloud `user-data` writes (its `write_files` entry
/// for the config's path, plain or base64), or None.
fn from_user_data(path: &Path) -> Option<String> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).ok()?;
    let doc: serde_json::Value = serde_saphyr::from_str(&text).ok()?;
    let entry = doc["write_files"]
        .as_array()?
        .iter()
        .find(|f| f["path"] == node::NODE_CONFIG_PATH)?;
    let content = entry["content"].as_str()?;
    match entry["encoding"].as_str() {
        None | Some("text/plain") => Some(content.to_string()),
        Some("b64" | "base64") => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(content.trim())
                .ok()?;
            String::from_utf8(bytes).ok()
        }
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use airgap_bundle::run::Recording;

    /// A root with the CIDATA device and the volume's files already where
    /// the mount would put them (the recording runner mounts nothing).
    fn volume(files: &[(&str, &str)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("dev/disk/by-label")).unwrap();
        std::fs::write(t.path().join("dev/disk/by-label/CIDATA"), "").unwrap();
        let mnt = t.path().join("run/kpaas/cidata");
        std::fs::create_dir_all(&mnt).unwrap();
        for (f, text) in files {
            std::fs::write(mnt.join(f), text).unwrap();
        }
        t
    }

    #[test]
    fn a_volume_with_only_user_data_still_gives_the_config() {
        use base64::Engine;
        let cfg = NodeConfig::with_defaults(
            "lab",
            vec![node::NodeEntry {
                hostname: "kpaas-master".into(),
                ip: "10.10.0.10".parse().unwrap(),
                mac: None,
                role: node::Role::Master,
            }],
        );
        let yaml = serde_saphyr::to_string(&cfg).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&yaml);
        let ud = format!(
            "#cloud-config\nwrite_files:\n  - path: /etc/other\n    content: x\n  - path: {}\n    encoding: b64\n    content: {b64}\n",
            node::NODE_CONFIG_PATH
        );
        let t = volume(&[("user-data", &ud)]);
        let got = load(
            &t.path().join("etc/kpaas/node.yaml"),
            t.path(),
            &Recording::new(),
        )
        .unwrap();
        assert_eq!(got.cluster, "lab");
        let t = volume(&[("user-data", "#cloud-config\nhostname: x\n")]);
        let e = load(
            &t.path().join("etc/kpaas/node.yaml"),
            t.path(),
            &Recording::new(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("neither kpaas-node.yaml nor a user-data"), "{e}");
    }
}
