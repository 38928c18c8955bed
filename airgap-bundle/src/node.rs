//! The node config: what a node's seed (cloud-init `write_files`, or a raw
//! CIDATA volume) tells the first-boot agent. The builder writes it, the agent
//! reads it; both validate it here.

use crate::ident::{normalize_mac, valid_hostname};
use crate::problems::Problems;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

pub const NODE_CONFIG_VERSION: u32 = 1;
/// Where cloud-init's `write_files` puts it.
pub const NODE_CONFIG_PATH: &str = "/etc/kpaas/node.yaml";

/// Kernel modules and sysctls the container runtime, kube-proxy and the CNI
/// need: the image lays them into `/etc` (modules-load.d, sysctl.d) and the
/// agent writes and applies them again at boot (a node installed another
/// way has neither). Defined once for both.
pub const KERNEL_MODULES: &[&str] = &["overlay", "br_netfilter"];
pub const SYSCTLS: &[(&str, &str)] = &[
    ("net.ipv4.ip_forward", "1"),
    ("net.bridge.bridge-nf-call-iptables", "1"),
    ("net.bridge.bridge-nf-call-ip6tables", "1"),
];
/// The name of the file on a CIDATA volume when cloud-init is absent.
pub const CIDATA_FILE: &str = "kpaas-node.yaml";

/// The node disk's layout, as the builder writes it and the ISO's installer
/// grows it: GPT partition numbers and file system labels.
pub const DATA_PARTITION: u32 = 3;
pub const ROOT_PARTITION: u32 = 4;
pub const DATA_LABEL: &str = "KPAAS-DATA";
pub const ROOT_LABEL: &str = "kpaas-root";

/// Where the data partition is mounted (the image's fstab) and the bundle on it.
pub const DATA_MOUNT: &str = "/run/kpaas/data";
pub const BUNDLE_DIR: &str = "/run/kpaas/data/bundle";
/// The bundle's public key, baked into every image.
pub const BUNDLE_KEY_PATH: &str = "/etc/kpaas/bundle.pub";
/// The agent's journal and secrets.
pub const STATE_DIR: &str = "/var/lib/kpaas";
/// The seed registry's port on every node.
pub const SEED_PORT: u16 = 5050;
/// Where the image installs the agent.
pub const AGENT_PATH: &str = "/usr/local/bin/kpaas-agent";

/// The live ISO: its ISO 9660 volume id (GRUB and the agent look for it),
/// the marker file that tells the agent it runs live, and, on the medium,
/// the compressed system image the installer writes and the bundle's tree.
pub const ISO_VOLUME_ID: &str = "KPAAS_LIVE";
pub const LIVE_MARKER: &str = "etc/kpaas/live";
pub const ISO_SYSTEM_IMAGE: &str = "install/system.raw.zst";
pub const ISO_DATA_DIR: &str = "data";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Worker,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    /// K-PaaS 1.4.1 runs CRI-O.
    #[default]
    Crio,
    Containerd,
}

impl Runtime {
    pub fn name(self) -> &'static str {
        match self {
            Runtime::Crio => "crio",
            Runtime::Containerd => "containerd",
        }
    }

    /// The CRI socket kubelet and kubeadm talk to.
    pub fn socket(self) -> &'static str {
        match self {
            Runtime::Crio => "unix:///var/run/crio/crio.sock",
            Runtime::Containerd => "unix:///run/containerd/containerd.sock",
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// Every blob hashed before the registry starts.
    Full,
    /// Signature, manifest and sizes at boot; each blob hashed on first read.
    #[default]
    Fast,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeEntry {
    pub hostname: String,
    pub ip: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    pub role: Role,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub config_version: u32,
    pub cluster: String,
    /// The bundle directory (the mounted KPAAS-DATA partition).
    #[serde(default = "default_bundle")]
    pub bundle: PathBuf,
    /// The public key bundles must be signed with (baked into the image).
    #[serde(default = "default_key")]
    pub bundle_key: PathBuf,
    /// The bundle this seed was made from (`seeds --bundle`): the digest of
    /// its `bundle.json`. A node whose media carries another stops at
    /// verify, naming both, before it forms a cluster from a plan made for
    /// other content. Absent: the seed is not bound to a bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle_digest: Option<crate::Digest>,
    #[serde(default)]
    pub verify: VerifyMode,
    #[serde(default = "default_port")]
    pub seed_port: u16,
    #[serde(default)]
    pub runtime: Runtime,
    #[serde(default = "default_state")]
    pub state_dir: PathBuf,
    /// This node's hostname when the seed is per-node; absent for a universal
    /// seed, where the node finds itself in `nodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    pub nodes: Vec<NodeEntry>,
    /// Running live from the ISO: install to this disk (`auto`: the only
    /// empty disk) and reboot into it. Absent: stay live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_disk: Option<String>,
    /// Lower minimums than K-PaaS's (test labs, small VMs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimums: Option<Minimums>,
    /// Whether preflight stops a node whose firmware runs with Secure Boot off.
    #[serde(default, skip_serializing_if = "SecureBootPolicy::is_default")]
    pub secure_boot: SecureBootPolicy,
    /// The plan's `kubernetes` step, typed: `seeds` makes it from the plan
    /// (validated there), so the agent forms the cluster from what
    /// `kpaas-builder plan` prints. Absent: the node serves its bundle and
    /// forms no cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesStep>,
    /// The plan's other steps, in wave order: what the master deploys once
    /// the cluster is ready (`seeds` copies them from the plan).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platform: Vec<crate::plan::Step>,
    /// The cluster file's join policy: the master keeps the seeds' join
    /// credential by it.
    #[serde(default)]
    pub join: crate::join::JoinPolicy,
    /// The cluster file's network and admin keys: what the master makes a
    /// day-2 seed from (`kpaas-agent node add`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<crate::seed::SiteFacts>,
    /// The cluster file the seeds were made from, its passwords replaced by
    /// a marker (they are in the master's `passwords.yaml`): what the master
    /// re-plans from when it takes an update bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_file: Option<crate::cluster::Cluster>,
}

pub use crate::kube_settings::KubernetesStep;

/// The cluster file's `secure_boot`: `required` makes preflight stop a node
/// booted with UEFI Secure Boot off (or by BIOS); `optional` reports it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SecureBootPolicy {
    #[default]
    Optional,
    Required,
}

impl SecureBootPolicy {
    pub fn is_default(&self) -> bool {
        *self == SecureBootPolicy::Optional
    }
}

/// Overrides of the K-PaaS node minimums, for labs and small VMs; every
/// preflight report says when they are in force.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Minimums {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_free_mib: Option<u64>,
}

impl NodeConfig {
    /// A config with every default the YAML would get; the builder fills the
    /// rest. One place, so seeds and the agent cannot drift apart.
    pub fn with_defaults(cluster: &str, nodes: Vec<NodeEntry>) -> NodeConfig {
        NodeConfig {
            config_version: NODE_CONFIG_VERSION,
            cluster: cluster.into(),
            bundle: default_bundle(),
            bundle_key: default_key(),
            bundle_digest: None,
            verify: VerifyMode::default(),
            seed_port: default_port(),
            runtime: Runtime::default(),
            state_dir: default_state(),
            node: None,
            nodes,
            install_disk: None,
            minimums: None,
            secure_boot: SecureBootPolicy::default(),
            kubernetes: None,
            platform: Vec::new(),
            join: Default::default(),
            site: None,
            cluster_file: None,
        }
    }
}

fn default_bundle() -> PathBuf {
    PathBuf::from(BUNDLE_DIR)
}
fn default_key() -> PathBuf {
    PathBuf::from(BUNDLE_KEY_PATH)
}
fn default_port() -> u16 {
    SEED_PORT
}
fn default_state() -> PathBuf {
    PathBuf::from(STATE_DIR)
}

impl NodeConfig {
    pub fn from_yaml(text: &str, file: &str) -> Result<NodeConfig, Problems> {
        let fail = |problems| Problems {
            file: file.to_string(),
            problems,
        };
        let c: NodeConfig = serde_saphyr::from_str(text).map_err(|e| fail(vec![e.to_string()]))?;
        let p = c.problems();
        if p.is_empty() { Ok(c) } else { Err(fail(p)) }
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.config_version != NODE_CONFIG_VERSION {
            p.push(format!(
                "config_version: {} is not supported (want {NODE_CONFIG_VERSION})",
                self.config_version
            ));
        }
        if self.nodes.is_empty() {
            p.push("nodes: the inventory is empty".into());
        }
        let (mut hosts, mut ips, mut macs) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
        for (i, n) in self.nodes.iter().enumerate() {
            let at = format!("nodes[{i}] ({})", n.hostname);
            if !valid_hostname(&n.hostname) {
                p.push(format!("{at}.hostname: must be lowercase letters, digits and '-' in dot-separated labels"));
            }
            if !hosts.insert(&n.hostname) {
                p.push(format!("{at}.hostname: {} appears twice", n.hostname));
            }
            if !ips.insert(n.ip) {
                p.push(format!("{at}.ip: {} appears twice", n.ip));
            }
            if let Some(m) = &n.mac {
                match normalize_mac(m) {
                    None => p.push(format!(
                        "{at}.mac: {m:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)"
                    )),
                    Some(m) => {
                        if !macs.insert(m.clone()) {
                            p.push(format!("{at}.mac: {m} appears twice"));
                        }
                    }
                }
            }
        }
        if !self.nodes.iter().any(|n| n.role == Role::Master) {
            p.push("nodes: no node has role master".into());
        }
        if let Some(n) = &self.node
            && !self.nodes.iter().any(|e| &e.hostname == n)
        {
            p.push(format!(
                "node: {n:?} is not in nodes (known: {})",
                self.nodes
                    .iter()
                    .map(|e| e.hostname.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.seed_port == 0 {
            p.push("seed_port: must be 1-65535".into());
        }
        p.extend(self.join.problems("join"));
        p
    }
}

/// What a machine knows about itself.
#[derive(Debug, Clone, Default)]
pub struct HostFacts {
    pub hostname: String,
    pub macs: Vec<String>,
    pub ips: Vec<IpAddr>,
}

/// Finds this node in the inventory: by MAC, then hostname, then IP; exactly
/// one match at the first level that matches anything.
pub fn identify<'a>(cfg: &'a NodeConfig, facts: &HostFacts) -> Result<&'a NodeEntry, String> {
    if let Some(n) = &cfg.node {
        return cfg
            .nodes
            .iter()
            .find(|e| &e.hostname == n)
            .ok_or_else(|| format!("node {n:?} is not in the inventory"));
    }
    let macs: Vec<String> = facts.macs.iter().filter_map(|m| normalize_mac(m)).collect();
    let by_mac: Vec<&NodeEntry> = cfg
        .nodes
        .iter()
        .filter(|e| {
            e.mac
                .as_deref()
                .and_then(normalize_mac)
                .is_some_and(|m| macs.contains(&m))
        })
        .collect();
    let by_host: Vec<&NodeEntry> = cfg
        .nodes
        .iter()
        .filter(|e| e.hostname == facts.hostname)
        .collect();
    let by_ip: Vec<&NodeEntry> = cfg
        .nodes
        .iter()
        .filter(|e| facts.ips.contains(&e.ip))
        .collect();
    for (how, found) in [("MAC", by_mac), ("hostname", by_host), ("IP", by_ip)] {
        match found.len() {
            0 => continue,
            1 => return Ok(found[0]),
            _ => {
                return Err(format!(
                    "this machine matches several inventory nodes by {how}: {}",
                    found
                        .iter()
                        .map(|e| e.hostname.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
    }
    Err(format!(
        "this machine (hostname {:?}, MACs {}, IPs {}) matches no inventory node ({}); set `node:` in the seed or fix the inventory",
        facts.hostname,
        if macs.is_empty() {
            "none".into()
        } else {
            macs.join(" ")
        },
        if facts.ips.is_empty() {
            "none".into()
        } else {
            facts
                .ips
                .iter()
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        },
        cfg.nodes
            .iter()
            .map(|e| format!(
                "{} {}{}",
                e.hostname,
                e.ip,
                e.mac
                    .as_deref()
                    .map(|m| format!(" {m}"))
                    .unwrap_or_default()
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NodeConfig {
        NodeConfig::from_yaml(
            "config_version: 1\ncluster: c\nnodes:\n  - {hostname: m1, ip: 10.0.0.1, mac: 'AA-BB-CC-00-00-01', role: master}\n  - {hostname: w1, ip: 10.0.0.2, mac: 'aa:bb:cc:00:00:02', role: worker}\n  - {hostname: w2, ip: 10.0.0.3, role: worker}\n",
            "node.yaml",
        )
        .unwrap()
    }

    #[test]
    fn identity_by_mac_then_hostname_then_ip() {
        let c = cfg();
        let f = |h: &str, m: &[&str], i: &[&str]| HostFacts {
            hostname: h.into(),
            macs: m.iter().map(|s| s.to_string()).collect(),
            ips: i.iter().map(|s| s.parse().unwrap()).collect(),
        };
        // MAC wins over a hostname that names another node.
        assert_eq!(
            identify(&c, &f("w2", &["aa:bb:cc:00:00:01"], &[]))
                .unwrap()
                .hostname,
            "m1"
        );
        assert_eq!(
            identify(&c, &f("w2", &["02:00:00:00:00:09"], &[]))
                .unwrap()
                .hostname,
            "w2"
        );
        assert_eq!(
            identify(&c, &f("localhost", &[], &["10.0.0.2"]))
                .unwrap()
                .hostname,
            "w1"
        );
        let e = identify(
            &c,
            &f("x", &["aa:bb:cc:00:00:01", "aa:bb:cc:00:00:02"], &[]),
        )
        .unwrap_err();
        assert!(e.contains("several") && e.contains("m1, w1"), "{e}");
        let e = identify(&c, &f("x", &[], &["192.0.2.1"])).unwrap_err();
        assert!(
            e.contains("matches no inventory node") && e.contains("w2 10.0.0.3"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_every_problem() {
        let e = NodeConfig::from_yaml(
            "config_version: 2\ncluster: c\nnode: nope\nnodes:\n  - {hostname: A_b, ip: 10.0.0.1, mac: zz, role: worker}\n  - {hostname: w, ip: 10.0.0.1, role: worker}\n",
            "n.yaml",
        )
        .unwrap_err()
        .to_string();
        for n in [
            "config_version: 2",
            "nodes[0] (A_b).hostname",
            "nodes[0] (A_b).mac",
            "nodes[1] (w).ip: 10.0.0.1 appears twice",
            "no node has role master",
            "node: \"nope\"",
        ] {
            assert!(e.contains(n), "missing {n:?} in {e}");
        }
    }
}
