//! The kit images' layers: files laid as tar layers with fixed metadata
//! (sorted, root-owned, mtime 0), so the same programs always give the same
//! digests; the distroless-like base, the programs, busybox, MariaDB's tree.

use super::bin_dir;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

/// One tar entry of a layer built from files on disk.
pub(super) enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

/// A gzip'd tar layer with fixed metadata from (path, node, mode) entries;
/// returns (gz bytes, diff_id). Sorted, owned by root, mtime 0: the same
/// inputs always give the same digest.
pub(super) fn tree_layer(mut entries: Vec<(String, Node, u32)>) -> Result<(Vec<u8>, String)> {
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut b = tar::Builder::new(Vec::new());
    for (path, node, mode) in &entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(*mode);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        match node {
            Node::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{path}/"), std::io::empty())?;
            }
            Node::File(data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, path, data.as_slice())?;
            }
            Node::Symlink(target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, target)?;
            }
        }
    }
    crate::content::gzip_layer(&b.into_inner()?)
}

/// Every entry under `root`, as layer entries relative to it.
pub(super) fn walk(root: &Path, rel: &str, out: &mut Vec<(String, Node, u32)>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(rel);
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    names.sort_by_key(|e| e.file_name());
    for e in names {
        let name = e.file_name().to_string_lossy().to_string();
        let path = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let md = std::fs::symlink_metadata(e.path())?;
        let mode = md.permissions().mode() & 0o7777;
        if md.file_type().is_symlink() {
            out.push((path, Node::Symlink(std::fs::read_link(e.path())?), 0o777));
        } else if md.is_dir() {
            out.push((path.clone(), Node::Dir, mode));
            walk(root, &path, out)?;
        } else {
            let data = std::fs::read(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            out.push((path, Node::File(data), mode));
        }
    }
    Ok(())
}

pub(super) fn read_program(name: &str) -> Result<Vec<u8>> {
    let p = bin_dir().join(name);
    std::fs::read(&p).with_context(|| format!("reading {} (run `just setup`)", p.display()))
}

/// What a distroless base holds that these programs need: users, name
/// service order, a world-writable /tmp.
pub(super) fn base_layer() -> Result<(Vec<u8>, String)> {
    tree_layer(vec![
        ("etc".into(), Node::Dir, 0o755),
        (
            "etc/passwd".into(),
            Node::File(b"root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n".to_vec()),
            0o644,
        ),
        (
            "etc/group".into(),
            Node::File(b"root:x:0:\nnogroup:x:65534:\n".to_vec()),
            0o644,
        ),
        (
            "etc/nsswitch.conf".into(),
            Node::File(b"hosts: files dns\n".to_vec()),
            0o644,
        ),
        ("tmp".into(), Node::Dir, 0o1777),
    ])
}

/// A layer holding programs at `dir/<name>`.
pub(super) fn programs_layer(dir: &str, names: &[&str]) -> Result<(Vec<u8>, String)> {
    let mut e = Vec::new();
    let mut at = String::new();
    for part in dir.split('/').filter(|p| !p.is_empty()) {
        at = if at.is_empty() {
            part.to_string()
        } else {
            format!("{at}/{part}")
        };
        e.push((at.clone(), Node::Dir, 0o755));
    }
    for n in names {
        let path = if at.is_empty() {
            n.to_string()
        } else {
            format!("{at}/{n}")
        };
        e.push((path, Node::File(read_program(n)?), 0o755));
    }
    tree_layer(e)
}

/// Debian's static busybox as `cp`: what flannel's init containers run
/// (upstream's images are Alpine's, whose `cp` is busybox too).
pub(super) fn busybox_cp_layer() -> Result<(Vec<u8>, String)> {
    tree_layer(vec![
        ("bin".into(), Node::Dir, 0o755),
        (
            "bin/busybox".into(),
            Node::File(crate::content::host_busybox()?),
            0o755,
        ),
        ("bin/cp".into(), Node::Symlink("busybox".into()), 0o777),
    ])
}

/// Debian's static busybox with a link per applet (`busybox --list`): a
/// shell and the usual tools, `httpd` among them.
pub(super) fn busybox_full_layer() -> Result<(Vec<u8>, String)> {
    let bb = crate::content::host_busybox()?;
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .context("listing busybox's applets")?;
    let mut e = vec![
        ("bin".into(), Node::Dir, 0o755),
        ("bin/busybox".into(), Node::File(bb), 0o755),
    ];
    for a in String::from_utf8_lossy(&list.stdout).lines() {
        let a = a.trim();
        if !a.is_empty() && a != "busybox" && !a.contains('/') {
            e.push((format!("bin/{a}"), Node::Symlink("busybox".into()), 0o777));
        }
    }
    tree_layer(e)
}

/// Where `tests/go/debian-mariadb.sh` unpacks Debian's MariaDB server.
pub fn mariadb_root() -> PathBuf {
    crate::fixtures_dir().join("debian-mariadb/root")
}

/// The MariaDB image's entrypoint (`tests/go/mariadb-entrypoint.sh` says
/// what it does).
pub const MARIADB_ENTRYPOINT: &str = include_str!("../../go/mariadb-entrypoint.sh");

/// The MariaDB image's own files: the `mysql` user (uid 999, as Debian's
/// and the official images make it) and the entrypoint.
pub(super) fn mariadb_etc_layer() -> Result<(Vec<u8>, String)> {
    tree_layer(vec![
        ("etc".into(), Node::Dir, 0o755),
        (
            "etc/passwd".into(),
            Node::File(b"root:x:0:0:root:/root:/sbin/nologin\nmysql:x:999:999:MariaDB:/var/lib/mysql:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n".to_vec()),
            0o644,
        ),
        (
            "etc/group".into(),
            Node::File(b"root:x:0:\nmysql:x:999:\nnogroup:x:65534:\n".to_vec()),
            0o644,
        ),
        ("usr".into(), Node::Dir, 0o755),
        ("usr/local".into(), Node::Dir, 0o755),
        ("usr/local/bin".into(), Node::Dir, 0o755),
        (
            "usr/local/bin/mariadb-entrypoint.sh".into(),
            Node::File(MARIADB_ENTRYPOINT.as_bytes().to_vec()),
            0o755,
        ),
    ])
}

/// Where `tests/go/debian-registry.sh` unpacks Debian's docker-registry.
pub fn registry_root() -> PathBuf {
    crate::fixtures_dir().join("debian-registry/root")
}

pub(super) const PATH_ENV: &str =
    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where `tests/go/debian-iptables.sh` unpacks Debian's iptables and conntrack
/// (and the libraries they load) for the kube-proxy image.
pub fn iptables_root() -> PathBuf {
    crate::fixtures_dir().join("debian-iptables/root")
}
