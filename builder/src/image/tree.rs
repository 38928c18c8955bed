//! The node's root tree: our files laid into the profile's base tree (the
//! agent, its unit, the bundle's key, mounts, kernel settings) and the
//! bundle's node binaries at their catalog install paths.

use super::MIB;
use airgap_bundle::fsutil::{create_dir, set_mode};
use airgap_bundle::manifest::BundleManifest;
use airgap_bundle::node::{AGENT_PATH, BUNDLE_KEY_PATH, DATA_LABEL, DATA_MOUNT, ROOT_LABEL};
use airgap_bundle::run::run;
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Only the cloud-init modules a node needs: no package installs, mirrors or
/// NTP reaching out, and less time before the node is up. growpart and
/// resizefs give root the rest of a disk larger than the image.
pub const CLOUD_CFG: &str = include_str!("../../../images/files/cloud.cfg");

/// The agent's unit. It waits for cloud-init's local stage only (static
/// addressing), not its network stage (write_files, host keys: seconds under
/// emulation), and has no start timeout: the ISO installer's fill of
/// KPAAS-DATA outlasts systemd's default 90 s (the file says more).
pub const AGENT_UNIT: &str = include_str!("../../../images/files/kpaas-agent.service");

/// The parent directories of `p`.
fn mkdirs(p: &Path) -> Result<()> {
    p.parent().map_or(Ok(()), create_dir)
}

fn write(root: &Path, path: &str, data: &[u8], mode: u32) -> Result<()> {
    let p = root.join(path.trim_start_matches('/'));
    mkdirs(&p)?;
    std::fs::write(&p, data).with_context(|| format!("writing {}", p.display()))?;
    set_mode(&p, mode)
}

fn symlink(root: &Path, link: &str, target: &str) -> Result<()> {
    let p = root.join(link.trim_start_matches('/'));
    mkdirs(&p)?;
    // A package may have put a file where our link goes: ours wins.
    let _ = std::fs::remove_file(&p);
    std::os::unix::fs::symlink(target, &p).with_context(|| format!("linking {}", p.display()))
}

/// A file the image gets from us (not from a package or the bundle).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeFile {
    File {
        path: &'static str,
        mode: u32,
        text: String,
    },
    Link {
        path: &'static str,
        target: &'static str,
    },
}

/// Every file we lay into a node's tree besides the agent binary, the
/// bundle's key and the bundle's node binaries: pure, snapshot-tested.
pub fn node_files() -> Vec<NodeFile> {
    let f = |path, mode, text: &str| NodeFile::File {
        path,
        mode,
        text: text.to_string(),
    };
    let l = |path, target| NodeFile::Link { path, target };
    vec![
        f("/etc/systemd/system/kpaas-agent.service", 0o644, AGENT_UNIT),
        l(
            "/etc/systemd/system/multi-user.target.wants/kpaas-agent.service",
            "/etc/systemd/system/kpaas-agent.service",
        ),
        // networkd renders cloud-init's network-config (minbase has no ifupdown).
        l(
            "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
            "/lib/systemd/system/systemd-networkd.service",
        ),
        l(
            "/etc/systemd/system/sockets.target.wants/systemd-networkd.socket",
            "/lib/systemd/system/systemd-networkd.socket",
        ),
        // Seconds at every boot for nothing a node needs.
        l("/etc/systemd/system/e2scrub_reap.service", "/dev/null"),
        f(
            "/etc/fstab",
            0o644,
            &format!(
                "LABEL={ROOT_LABEL} / ext4 defaults 0 1\nLABEL={DATA_LABEL} {DATA_MOUNT} ext4 ro,nofail 0 2\n"
            ),
        ),
        f(
            "/etc/modules-load.d/kpaas.conf",
            0o644,
            &airgap_bundle::node::KERNEL_MODULES
                .iter()
                .map(|m| format!("{m}\n"))
                .collect::<String>(),
        ),
        f(
            "/etc/sysctl.d/90-kpaas.conf",
            0o644,
            &airgap_bundle::node::SYSCTLS
                .iter()
                .map(|(k, v)| format!("{k} = {v}\n"))
                .collect::<String>(),
        ),
        f("/etc/cloud/cloud.cfg.d/90-kpaas.cfg", 0o644, CLOUD_CFG),
        f("/etc/hostname", 0o644, "localhost\n"),
        // Empty machine-id: systemd makes a new one per node at first boot.
        f("/etc/machine-id", 0o444, ""),
    ]
}

/// Lays our files into the tree: agent, unit, key, mounts, kernel settings,
/// and the bundle's node binaries at their catalog install paths.
pub fn customize(
    root: &Path,
    bundle: &Path,
    m: &BundleManifest,
    agent: &Path,
    key: &[u8],
    arch: &str,
) -> Result<Vec<String>> {
    let agent_bytes = std::fs::read(agent)
        .with_context(|| format!("reading the agent binary {}", agent.display()))?;
    write(root, AGENT_PATH, &agent_bytes, 0o755)?;
    write(root, BUNDLE_KEY_PATH, key, 0o644)?;
    for f in node_files() {
        match f {
            NodeFile::File { path, mode, text } => write(root, path, text.as_bytes(), mode)?,
            NodeFile::Link { path, target } => symlink(root, path, target)?,
        }
    }
    let mut installed = Vec::new();
    for a in m.artifacts.iter().filter(|a| a.kind == "file") {
        if a.arch.as_deref().is_some_and(|x| x != arch && x != "any") {
            continue;
        }
        let Some(d) = &a.content_digest else { continue };
        let blob = bundle.join("oci").join(d.blob_path());
        if let Some(ip) = &a.install_path {
            let mode = a
                .mode
                .as_deref()
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .unwrap_or(0o644);
            let bytes = std::fs::read(&blob)
                .with_context(|| format!("reading {} ({})", blob.display(), a.name))?;
            write(root, ip, &bytes, mode)?;
            installed.push(ip.clone());
        }
        if !a.extract.is_empty() {
            installed.extend(
                extract(root, &blob, &a.extract)
                    .with_context(|| format!("installing {}", a.name))?,
            );
        }
    }
    Ok(installed)
}

/// Installs members of a .tar(.gz) archive at their catalog paths.
fn extract(
    root: &Path,
    archive: &Path,
    map: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<String>> {
    let open = || File::open(archive).with_context(|| format!("opening {}", archive.display()));
    let mut head = [0u8; 2];
    open()?
        .read_exact(&mut head)
        .with_context(|| format!("reading {}", archive.display()))?;
    let f = open()?;
    let input: Box<dyn Read> = if head == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(f))
    } else {
        Box::new(f)
    };
    let mut ar = tar::Archive::new(input);
    let mut done = Vec::new();
    let bad = || format!("reading the archive {}", archive.display());
    for e in ar.entries().with_context(bad)? {
        let mut e = e.with_context(bad)?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e
            .path()
            .with_context(bad)?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let dest = match (map.get(&path), map.get("*")) {
            (Some(d), _) => d.clone(),
            (None, Some(dir)) => format!(
                "{}/{}",
                dir.trim_end_matches('/'),
                path.rsplit('/').next().unwrap_or(&path)
            ),
            _ => continue,
        };
        let mut data = Vec::new();
        e.read_to_end(&mut data).with_context(bad)?;
        let mode = e.header().mode().unwrap_or(0o644) & 0o7777;
        write(
            root,
            &dest,
            &data,
            if mode & 0o111 != 0 { 0o755 } else { 0o644 },
        )?;
        done.push(dest);
    }
    let missing: Vec<&String> = map
        .keys()
        .filter(|k| *k != "*" && !done.iter().any(|d| Some(d) == map.get(*k)))
        .collect();
    if !missing.is_empty() {
        bail!(
            "{}: members {:?} are not in the archive",
            archive.display(),
            missing
        );
    }
    Ok(done)
}

/// Bytes in the regular files under `p`: what a file system must hold.
/// Unreadable entries count as empty (the sizes only plan partitions, with
/// headroom; the copy that follows fails loudly on them).
pub fn tree_bytes(p: &Path) -> u64 {
    walkdir::WalkDir::new(p)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
        .sum()
}

/// Where the root tree goes. It is tens of thousands of small files: on a
/// tmpfs unpacking takes a fraction of a second, on some disks many seconds
/// (0.4 s against 11 s for the Debian tree on the machine this was written
/// on). /dev/shm is used when it has room for the tree twice over.
pub fn tree_dir(asked: Option<&Path>, tar_bytes: u64, fallback: &Path) -> PathBuf {
    if let Some(d) = asked {
        return d.to_path_buf();
    }
    let shm = Path::new("/dev/shm");
    let room = nix::sys::statvfs::statvfs(shm)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0);
    if room > tar_bytes.saturating_mul(2) + 512 * MIB {
        shm.to_path_buf()
    } else {
        fallback.to_path_buf()
    }
}

pub fn size_of(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

/// `src` at `dst` as hard links when they share a file system (a bundle of
/// tens of GB costs nothing), else as a copy.
pub fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    mkdirs(dst)?;
    run("cp").arg("-al").arg(src).arg(dst).ok().or_else(|_| {
        // What a failed hard-link copy left; the copy below starts clean.
        let _ = std::fs::remove_dir_all(dst);
        run("cp").arg("-a").arg(src).arg(dst).ok()
    })
}

/// The root tree's kernel, `/boot/vmlinuz-*` (the profile installs one).
pub fn kernel(root: &Path) -> Result<PathBuf> {
    let boot = root.join("boot");
    std::fs::read_dir(&boot)
        .with_context(|| format!("listing {}", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        })
        .context("no /boot/vmlinuz-* in the root tree")
}

#[cfg(test)]
pub mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use std::collections::BTreeMap;

    /// The node files as text, for review and snapshots.
    fn render_node_files(files: &[NodeFile]) -> String {
        let mut s = String::new();
        for f in files {
            match f {
                NodeFile::File { path, mode, text } => {
                    s.push_str(&format!("=== {path} (mode {mode:04o})\n{text}"));
                    if !text.is_empty() && !text.ends_with('\n') {
                        s.push('\n');
                    }
                }
                NodeFile::Link { path, target } => s.push_str(&format!("=== {path} -> {target}\n")),
            }
        }
        s
    }

    pub fn snap(name: &str, got: &str) {
        kpaas_testkit::snapshot(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots"),
            name,
            got,
        );
    }

    #[test]
    fn the_files_we_lay_into_every_node() {
        let files = node_files();
        let unit = files
            .iter()
            .find_map(|f| match f {
                NodeFile::File { path, text, .. } if path.ends_with("kpaas-agent.service") => {
                    Some(text.clone())
                }
                _ => None,
            })
            .unwrap();
        // It serves (notify), and waits for cloud-init's local stage only:
        // the later stages would add ~5 s (init) and ~15 s (config, final)
        // before the seed serves.
        assert!(
            unit.contains("Type=notify")
                && unit.contains("DefaultDependencies=no")
                && unit.contains("cloud-init-local.service systemd-networkd.service")
        );
        assert!(
            !unit.contains("cloud-final")
                && !unit.contains("cloud-config.service")
                && !unit.contains(" cloud-init.service")
        );
        // The files under images/files name the contract's values: a change
        // on one side must show here.
        use airgap_bundle::node;
        assert!(unit.contains(&format!("ExecStart={} run", node::AGENT_PATH)));
        assert!(unit.contains(&format!(
            "RequiresMountsFor={} {}",
            node::DATA_MOUNT,
            node::STATE_DIR
        )));
        let disk = crate::image::disk::GRUB_CFG;
        assert!(disk.contains(&format!("--set=root {}", node::ROOT_LABEL)));
        assert!(disk.contains(&format!("root=LABEL={} ", node::ROOT_LABEL)));
        let iso = crate::image::iso::GRUB_CFG;
        assert!(iso.contains(&format!("--set=root {}\n", node::ISO_VOLUME_ID)));
        let text = format!(
            "{}=== grub.cfg (disk)\n{disk}=== grub.cfg (iso)\n{iso}",
            render_node_files(&files),
        );
        snap("node-files.txt", &text);
    }

    /// A .tar (gzip when `gz`) with these (path, mode, bytes) members.
    fn archive(dir: &Path, gz: bool, members: &[(&str, u32, &[u8])]) -> PathBuf {
        let p = dir.join(if gz { "a.tgz" } else { "a.tar" });
        let f = File::create(&p).unwrap();
        let w: Box<dyn std::io::Write> = if gz {
            Box::new(flate2::write::GzEncoder::new(
                f,
                flate2::Compression::fast(),
            ))
        } else {
            Box::new(f)
        };
        let mut b = tar::Builder::new(w);
        for (path, mode, data) in members {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(*mode);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.into_inner().unwrap().flush().unwrap();
        p
    }

    use std::io::Write as _;

    #[test]
    fn extraction_places_named_members_and_a_wildcard_dir_with_their_modes() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        for gz in [false, true] {
            let a = archive(
                t.path(),
                gz,
                &[("./bridge", 0o755, b"elf"), ("doc/README", 0o644, b"text")],
            );
            let all = BTreeMap::from([("*".to_string(), "/opt/cni/bin/".to_string())]);
            let got = extract(&root, &a, &all).unwrap();
            assert_eq!(got, ["/opt/cni/bin/bridge", "/opt/cni/bin/README"]);
            let m = std::fs::metadata(root.join("opt/cni/bin/bridge")).unwrap();
            assert_eq!(
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777,
                0o755
            );
            let one = BTreeMap::from([("doc/README".to_string(), "/usr/share/x".to_string())]);
            assert_eq!(extract(&root, &a, &one).unwrap(), ["/usr/share/x"]);
            assert_eq!(std::fs::read(root.join("usr/share/x")).unwrap(), b"text");
        }
    }

    #[test]
    fn extraction_names_the_members_an_archive_lacks_and_a_broken_archive() {
        let t = tempfile::tempdir().unwrap();
        let a = archive(t.path(), true, &[("kubelet", 0o755, b"elf")]);
        let want = BTreeMap::from([
            ("kubelet".to_string(), "/usr/local/bin/kubelet".to_string()),
            ("kubeadm".to_string(), "/usr/local/bin/kubeadm".to_string()),
        ]);
        let e = format!("{:#}", extract(&t.path().join("r"), &a, &want).unwrap_err());
        assert!(e.contains("kubeadm") && e.contains("a.tgz"), "{e}");
        let bad = t.path().join("bad.tgz");
        std::fs::write(&bad, [0x1f, 0x8b, 8, 0, 1, 2, 3]).unwrap();
        let e = format!(
            "{:#}",
            extract(&t.path().join("r"), &bad, &want).unwrap_err()
        );
        assert!(e.contains("bad.tgz"), "{e}");
    }
}
