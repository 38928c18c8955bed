//! Points the container runtime at the seed registry: containerd's
//! `certs.d/<host>/hosts.toml` and CRI-O's (containers-image)
//! `registries.conf.d` drop-in. Neither leaves a path to the internet:
//! containerd's `server` is the seed itself, and CRI-O gets a
//! prefix → location rewrite rather than a mirror (a failed mirror lookup
//! there falls back to the source registry).

use airgap_bundle::fsutil::write_atomic;
use anyhow::Result;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Registries every node mirrors, whatever the bundle holds.
pub const DEFAULT_REGISTRIES: &[&str] = &[
    "registry.k8s.io",
    "docker.io",
    "quay.io",
    "gcr.io",
    "ghcr.io",
];

pub const CONTAINERD_CERTS_D: &str = "etc/containerd/certs.d";
pub const CRIO_DROPIN: &str = "etc/containers/registries.conf.d/50-kpaas-seed.conf";

/// The registries to send to the seed: the defaults plus every source
/// registry the bundle serves.
pub fn registries<'a>(from_bundle: impl Iterator<Item = &'a String>) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = DEFAULT_REGISTRIES.iter().map(|r| r.to_string()).collect();
    for name in from_bundle {
        if let Some((reg, _)) = name.split_once('/') {
            s.insert(reg.to_string());
        }
    }
    s
}

/// containerd's `hosts.toml` for `host`: the platform's registry first when
/// there is one (`host:port/project`, after the Harbor hand-off), then the
/// seed; `server` (the last resort) is the seed too, so nothing falls
/// through to the internet.
pub fn containerd_hosts_toml(host: &str, seed: &str, platform: Option<&str>) -> String {
    // override_path: containerd must not add its own /v2 (the path names the
    // source registry).
    let mut s = match platform {
        None => format!(
            "# Written by kpaas-agent: {host} is served by the node's seed registry only.\n"
        ),
        Some(p) => format!(
            "# Written by kpaas-agent: {host} is served by the platform's registry ({p}), the node's seed registry behind it.\n"
        ),
    };
    s.push_str(&format!(
        "server = \"http://{seed}/v2/{host}\"\noverride_path = true\n"
    ));
    if let Some(p) = platform {
        let (addr, project) = p.split_once('/').unwrap_or((p, ""));
        s.push_str(&format!(
            "\n[host.\"http://{addr}/v2/{project}/{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n"
        ));
    }
    s.push_str(&format!(
        "\n[host.\"http://{seed}/v2/{host}\"]\n  capabilities = [\"pull\", \"resolve\"]\n  override_path = true\n"
    ));
    s
}

/// CRI-O's drop-in: each source registry rewritten to the seed; after the
/// hand-off the platform's registry is its mirror, which CRI-O tries first
/// and falls back from to `location`, the seed (never the internet).
pub fn crio_registries_conf(
    hosts: &BTreeSet<String>,
    seed: &str,
    platform: Option<&str>,
) -> String {
    let mut s = String::from(match platform {
        None => "# Written by kpaas-agent: every image comes from the node's seed registry.\n",
        Some(_) => {
            "# Written by kpaas-agent: every image comes from the platform's registry, the node's seed registry behind it.\n"
        }
    });
    for h in hosts {
        s.push_str(&format!(
            "\n[[registry]]\nprefix = \"{h}\"\nlocation = \"{seed}/{h}\"\ninsecure = true\n"
        ));
        if let Some(p) = platform {
            s.push_str(&format!(
                "\n[[registry.mirror]]\nlocation = \"{p}/{h}\"\ninsecure = true\n"
            ));
        }
    }
    s
}

/// Writes `data` unless the file already holds exactly that; true if written.
fn write_if_changed(path: &Path, data: &str) -> Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == data.as_bytes()) {
        return Ok(false);
    }
    write_atomic(path, data.as_bytes())?;
    Ok(true)
}

/// Writes both runtimes' configuration under `root` (`/` on a node), each
/// file atomically (a pull reads the old file or the new one, never half).
pub fn write_all(
    root: &Path,
    hosts: &BTreeSet<String>,
    seed: &str,
    platform: Option<&str>,
) -> Result<Vec<PathBuf>> {
    let mut changed = Vec::new();
    for h in hosts {
        let p = root.join(CONTAINERD_CERTS_D).join(h).join("hosts.toml");
        if write_if_changed(&p, &containerd_hosts_toml(h, seed, platform))? {
            changed.push(p);
        }
    }
    let p = root.join(CRIO_DROPIN);
    if write_if_changed(&p, &crio_registries_conf(hosts, seed, platform))? {
        changed.push(p);
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewriting_the_same_config_is_a_no_op() {
        let t = tempfile::tempdir().unwrap();
        let names = ["registry.demo.test/a/b".to_string()];
        let hosts = registries(names.iter());
        assert!(hosts.contains("registry.demo.test") && hosts.contains("docker.io"));
        let first = write_all(t.path(), &hosts, "127.0.0.1:5050", None).unwrap();
        assert_eq!(first.len(), hosts.len() + 1);
        assert!(
            write_all(t.path(), &hosts, "127.0.0.1:5050", None)
                .unwrap()
                .is_empty()
        );
        let changed = write_all(t.path(), &hosts, "127.0.0.1:5051", None).unwrap();
        assert_eq!(changed.len(), hosts.len() + 1);
        let crio = std::fs::read_to_string(t.path().join(CRIO_DROPIN)).unwrap();
        assert!(crio.contains("prefix = \"docker.io\"\nlocation = \"127.0.0.1:5051/docker.io\""));
        assert!(
            !crio.contains("mirror"),
            "a mirror entry would fall back to the internet"
        );
        // The hand-off: the platform's registry first, the seed behind it,
        // nothing upstream; every file rewritten.
        let p = Some("10.10.0.10:30002/cp-portal-repository");
        let changed = write_all(t.path(), &hosts, "127.0.0.1:5051", p).unwrap();
        assert_eq!(changed.len(), hosts.len() + 1);
        let toml = std::fs::read_to_string(
            t.path()
                .join(CONTAINERD_CERTS_D)
                .join("docker.io/hosts.toml"),
        )
        .unwrap();
        let platform = toml
            .find("[host.\"http://10.10.0.10:30002/v2/cp-portal-repository/docker.io\"]")
            .unwrap();
        let seed = toml
            .find("[host.\"http://127.0.0.1:5051/v2/docker.io\"]")
            .unwrap();
        assert!(platform < seed, "{toml}");
        assert!(
            toml.contains("server = \"http://127.0.0.1:5051/v2/docker.io\""),
            "{toml}"
        );
        let crio = std::fs::read_to_string(t.path().join(CRIO_DROPIN)).unwrap();
        assert!(crio.contains("prefix = \"docker.io\"\nlocation = \"127.0.0.1:5051/docker.io\"\ninsecure = true\n\n[[registry.mirror]]\nlocation = \"10.10.0.10:30002/cp-portal-repository/docker.io\""), "{crio}");
        assert!(
            !crio.contains("docker.io\"\nlocation = \"docker.io"),
            "{crio}"
        );
    }
}
