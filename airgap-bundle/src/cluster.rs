//! `cluster.yaml`: the one file a site fills in. It mirrors K-PaaS's
//! `cp-cluster-vars.sh` and the portal variables, and is validated as a whole:
//! every problem is reported with its field.

use crate::ident::{normalize_mac, valid_hostname};
use crate::node::Minimums;
use crate::problems::Problems;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;

pub const CLUSTER_VERSION: u32 = 1;

/// An IPv4 network, `10.233.64.0/18`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - self.prefix)
        }
    }
    pub fn network(&self) -> u32 {
        u32::from(self.addr) & self.mask()
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.network()
    }
    pub fn overlaps(&self, o: &Cidr) -> bool {
        let m = self.mask() & o.mask();
        self.network() & m == o.network() & m
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;
    fn try_from(s: String) -> Result<Cidr, String> {
        let bad = || format!("{s:?} is not an IPv4 CIDR such as 10.233.64.0/18");
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        let c = Cidr { addr, prefix };
        if u32::from(addr) != c.network() {
            return Err(format!(
                "{s:?} has host bits set (the network is {}/{prefix})",
                Ipv4Addr::from(c.network())
            ));
        }
        Ok(c)
    }
}

impl From<Cidr> for String {
    fn from(c: Cidr) -> String {
        c.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Master {
    pub hostname: String,
    pub private_ip: Ipv4Addr,
    /// Defaults to the private IP (K-PaaS: "or the private IP if none").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Worker {
    pub hostname: String,
    pub private_ip: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The nodes' own network; pod and service ranges must stay clear of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cidr: Option<Cidr>,
    /// The nodes' default gateway. Kubernetes picks addresses and flannel
    /// its interface by the default route, so a site without one still
    /// names a next hop here (it need not lead anywhere).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default = "default_pods")]
    pub pod_cidr: Cidr,
    #[serde(default = "default_services")]
    pub service_cidr: Cidr,
}

fn default_pods() -> Cidr {
    Cidr {
        addr: Ipv4Addr::new(10, 233, 64, 0),
        prefix: 18,
    }
}
fn default_services() -> Cidr {
    Cidr {
        addr: Ipv4Addr::new(10, 233, 0, 0),
        prefix: 18,
    }
}

impl Default for Network {
    fn default() -> Self {
        Network {
            node_cidr: None,
            gateway: None,
            pod_cidr: default_pods(),
            service_cidr: default_services(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nfs: Option<Nfs>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rook_ceph: Option<Rook>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Nfs {
    pub server: Option<Ipv4Addr>,
    #[serde(default = "default_nfs_path")]
    pub path: String,
}

fn default_nfs_path() -> String {
    "/home/share/nfs".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Rook {
    /// Raw, unused disks on every worker (Rook's useAllDevices would take any).
    #[serde(default)]
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Portal {
    /// `standalone` or `service` (adds the service broker).
    #[serde(default = "default_provider")]
    pub provider_type: String,
    /// `openstack` or `aws` (HOST_CLUSTER_IAAS_TYPE).
    #[serde(default = "default_iaas")]
    pub iaas_type: String,
    /// Portal domain, when ingress is reached by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
}

impl Default for Portal {
    fn default() -> Self {
        Portal {
            provider_type: default_provider(),
            iaas_type: default_iaas(),
            domain: None,
        }
    }
}

fn default_provider() -> String {
    "standalone".into()
}
fn default_iaas() -> String {
    "openstack".into()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Cluster {
    pub cluster_version: u32,
    pub name: String,
    pub platform: String,
    pub master: Master,
    #[serde(default)]
    pub workers: Vec<Worker>,
    #[serde(default)]
    pub network: Network,
    pub storage: Storage,
    #[serde(default)]
    pub portal: Portal,
    /// Optional components to deploy too (pipeline, source-control, kubeflow-runtimes).
    #[serde(default)]
    pub enable: Vec<String>,
    /// Passwords; any left out are generated when the seeds are made, and never printed.
    #[serde(default)]
    pub passwords: BTreeMap<String, String>,
    /// Lower the node minimums (labs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minimums: Option<Minimums>,
    /// `required`: every node must boot with UEFI Secure Boot on (its
    /// preflight stops otherwise); `optional` (default): reported only.
    #[serde(
        default,
        skip_serializing_if = "crate::node::SecureBootPolicy::is_default"
    )]
    pub secure_boot: crate::node::SecureBootPolicy,
    /// Booted from the ISO, install to this disk (`auto`: the only empty one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_disk: Option<String>,
    /// SSH public keys for the `kpaas` admin user on every node.
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// The seed registry's port on every node. The plan names it and the
    /// seeds configure the agent with it, so both agree from one file.
    #[serde(default = "default_seed_port")]
    pub seed_port: u16,
    /// The nodes' container runtime (Kubespray's `container_manager`): crio,
    /// as K-PaaS, or containerd.
    #[serde(default)]
    pub container_manager: crate::node::Runtime,
    /// How long the seeds' join credential stays valid, and whether the
    /// master keeps it valid until every listed node has joined.
    #[serde(default)]
    pub join: crate::join::JoinPolicy,
}

fn default_seed_port() -> u16 {
    crate::node::SEED_PORT
}

pub const PASSWORD_KEYS: &[&str] = &[
    "harbor_admin",
    "keycloak_admin",
    "mariadb_root",
    "portal_admin",
];

/// What a node config's copy of the cluster file has for each password
/// (a plan says only whether one was given; the values stay in the seed's
/// `passwords.yaml`).
pub const PASSWORD_KEPT: &str = "(in the master's passwords.yaml)";

impl Cluster {
    /// This cluster file with every password replaced by `PASSWORD_KEPT`:
    /// re-planning from it gives the same plan, and it holds no secret.
    pub fn without_passwords(&self) -> Cluster {
        let mut c = self.clone();
        for v in c.passwords.values_mut() {
            *v = PASSWORD_KEPT.into();
        }
        c
    }

    pub fn from_yaml(text: &str, file: &str) -> Result<Cluster, Problems> {
        let fail = |problems| Problems {
            file: file.into(),
            problems,
        };
        let c: Cluster = serde_saphyr::from_str(text).map_err(|e| fail(vec![e.to_string()]))?;
        let p = c.problems();
        if p.is_empty() { Ok(c) } else { Err(fail(p)) }
    }

    pub fn public_ip(&self) -> Ipv4Addr {
        self.master.public_ip.unwrap_or(self.master.private_ip)
    }

    /// Settings that select catalog variants (`when:`).
    pub fn settings(&self) -> BTreeMap<String, String> {
        BTreeMap::from([("storage".to_string(), self.storage.kind.clone())])
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.cluster_version != CLUSTER_VERSION {
            p.push(format!(
                "cluster_version: {} is not supported (want {CLUSTER_VERSION})",
                self.cluster_version
            ));
        }
        if !valid_hostname(&self.name) {
            p.push(format!(
                "name: {:?} must be a lowercase DNS name",
                self.name
            ));
        }
        // Every node: hostname, IP, MAC unique and well formed.
        let mut nodes: Vec<(String, &str, Ipv4Addr, Option<&String>)> = vec![(
            "master".into(),
            &self.master.hostname,
            self.master.private_ip,
            self.master.mac.as_ref(),
        )];
        for (i, w) in self.workers.iter().enumerate() {
            nodes.push((
                format!("workers[{i}]"),
                &w.hostname,
                w.private_ip,
                w.mac.as_ref(),
            ));
        }
        let (mut hosts, mut ips, mut macs) = (BTreeMap::new(), BTreeMap::new(), BTreeMap::new());
        for (at, h, ip, mac) in &nodes {
            if !valid_hostname(h) {
                p.push(format!(
                    "{at}.hostname: {h:?} must be lowercase letters, digits and '-' (a DNS name)"
                ));
            }
            if let Some(first) = hosts.insert(h.to_string(), at.clone()) {
                p.push(format!("{at}.hostname: {h} is also {first}.hostname"));
            }
            if let Some(first) = ips.insert(*ip, at.clone()) {
                p.push(format!("{at}.private_ip: {ip} is also {first}.private_ip"));
            }
            if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                p.push(format!("{at}.private_ip: {ip} cannot be a node address"));
            }
            if let Some(m) = mac {
                match normalize_mac(m) {
                    None => p.push(format!(
                        "{at}.mac: {m:?} is not a MAC address (want aa:bb:cc:dd:ee:ff)"
                    )),
                    Some(n) => {
                        if let Some(first) = macs.insert(n.clone(), at.clone()) {
                            p.push(format!("{at}.mac: {n} is also {first}.mac"));
                        }
                    }
                }
            }
            if let Some(nc) = &self.network.node_cidr
                && !nc.contains(*ip)
            {
                p.push(format!(
                    "{at}.private_ip: {ip} is outside network.node_cidr {nc}"
                ));
            }
        }
        // Ranges: pods, services, and the node network must not meet.
        let net = &self.network;
        if net.pod_cidr.overlaps(&net.service_cidr) {
            p.push(format!(
                "network: pod_cidr {} overlaps service_cidr {}",
                net.pod_cidr, net.service_cidr
            ));
        }
        if let (Some(gw), Some(nc)) = (net.gateway, &net.node_cidr)
            && !nc.contains(gw)
        {
            p.push(format!(
                "network.gateway: {gw} is outside network.node_cidr {nc}"
            ));
        }
        for (name, c) in [
            ("pod_cidr", net.pod_cidr),
            ("service_cidr", net.service_cidr),
        ] {
            if let Some(nc) = &net.node_cidr
                && c.overlaps(nc)
            {
                p.push(format!(
                    "network.{name}: {c} overlaps the node network {nc}"
                ));
            }
            for (at, _, ip, _) in &nodes {
                if c.contains(*ip) {
                    p.push(format!("network.{name}: {c} contains {at}'s address {ip}"));
                }
            }
            if c.prefix > 24 {
                p.push(format!(
                    "network.{name}: /{} is too small (Kubespray gives each node a /24)",
                    c.prefix
                ));
            }
        }
        if let Some(pip) = self.master.public_ip
            && (pip.is_loopback() || pip.is_unspecified())
        {
            p.push(format!(
                "master.public_ip: {pip} cannot be reached by anyone"
            ));
        }
        match self.storage.kind.as_str() {
            "nfs" => match &self.storage.nfs {
                Some(Nfs { server: Some(_), path }) => {
                    if !path.starts_with('/') {
                        p.push(format!("storage.nfs.path: {path:?} must be an absolute export path"));
                    }
                }
                _ => p.push("storage.nfs.server: required when storage.type is nfs (the NFS server's private IP)".into()),
            },
            "rook-ceph" => {
                if self.workers.len() < 3 {
                    p.push(format!("storage.type: rook-ceph needs at least 3 workers for Ceph's 3 monitors (there are {})", self.workers.len()));
                }
                match &self.storage.rook_ceph {
                    Some(r) if !r.devices.is_empty() => {
                        for d in &r.devices {
                            if !d.starts_with("/dev/") {
                                p.push(format!("storage.rook_ceph.devices: {d:?} must be a /dev path"));
                            }
                        }
                    }
                    _ => p.push("storage.rook_ceph.devices: name the raw, unused disk(s) on each worker, e.g. [/dev/vdb]".into()),
                }
            }
            other => p.push(format!("storage.type: {other:?} must be nfs or rook-ceph")),
        }
        if !["standalone", "service"].contains(&self.portal.provider_type.as_str()) {
            p.push(format!(
                "portal.provider_type: {:?} must be standalone or service",
                self.portal.provider_type
            ));
        }
        if !["openstack", "aws"].contains(&self.portal.iaas_type.as_str()) {
            p.push(format!(
                "portal.iaas_type: {:?} must be openstack or aws",
                self.portal.iaas_type
            ));
        }
        let optional: BTreeSet<&str> = ["pipeline", "source-control", "kubeflow-runtimes"].into();
        for e in &self.enable {
            if !optional.contains(e.as_str()) {
                p.push(format!(
                    "enable: {e:?} is not an optional component (choose from {})",
                    optional.iter().copied().collect::<Vec<_>>().join(", ")
                ));
            }
        }
        if self.seed_port == 0 {
            p.push(format!(
                "seed_port: must be 1-65535 (default {})",
                crate::node::SEED_PORT
            ));
        }
        p.extend(self.join.problems("join"));
        if let Some(d) = &self.install_disk
            && d != "auto"
            && !d.starts_with("/dev/")
        {
            p.push(format!("install_disk: {d:?} must be auto or a /dev path"));
        }
        for (k, v) in &self.passwords {
            if !PASSWORD_KEYS.contains(&k.as_str()) {
                p.push(format!(
                    "passwords.{k}: unknown (known: {})",
                    PASSWORD_KEYS.join(", ")
                ));
            } else if v.len() < 12 {
                p.push(format!(
                    "passwords.{k}: at least 12 characters (or leave it out to have one generated)"
                ));
            }
        }
        p
    }
}

/// A commented example for `kpaas-builder cluster init`.
pub const EXAMPLE: &str = r#"# cluster.yaml: the one file a site fills in (K-PaaS cp-cluster-vars.sh + portal variables).
cluster_version: 1
name: kpaas
platform: k-paas-1.4.1

# The control plane (K-PaaS: MASTER_NODE_HOSTNAME / _PUBLIC_IP / _PRIVATE_IP).
# public_ip defaults to private_ip. A MAC lets one image find its node by itself.
master:
  hostname: kpaas-master
  private_ip: 10.10.0.10
  # public_ip: 203.0.113.10
  # mac: "52:54:00:10:00:10"

# At least one; three or more for rook-ceph (WORKER{n}_NODE_HOSTNAME / _PRIVATE_IP).
workers:
  - {hostname: kpaas-worker1, private_ip: 10.10.0.11}
  - {hostname: kpaas-worker2, private_ip: 10.10.0.12}
  - {hostname: kpaas-worker3, private_ip: 10.10.0.13}

# K-PaaS defaults; they must not overlap each other or the node network.
network:
  node_cidr: 10.10.0.0/24
  # gateway: 10.10.0.1    # the nodes' default route
  pod_cidr: 10.233.64.0/18
  service_cidr: 10.233.0.0/18

# STORAGE_TYPE: nfs (needs a server exporting the path) or rook-ceph (raw disks on workers).
storage:
  type: nfs
  nfs:
    server: 10.10.0.20
    path: /home/share/nfs
  # type: rook-ceph
  # rook_ceph:
  #   devices: [/dev/vdb]

portal:
  provider_type: standalone   # or service (adds the service broker)
  iaas_type: openstack        # or aws
  # domain: portal.example.internal

# Optional components: pipeline, source-control, kubeflow-runtimes.
enable: []

# The seed registry's port on every node (the agent serves the bundle there).
# seed_port: 5050

# The nodes' container runtime: crio (K-PaaS's) or containerd.
# container_manager: crio

# The join credential every seed carries (a kubeadm bootstrap token): valid
# credential_ttl at a time. renew: until-joined (the master renews it while a
# listed node has not joined, then removes it) or never (kubeadm's own: it
# lapses credential_ttl after the cluster forms). A node not listed here
# joins later with a day-2 seed: kpaas-agent node add, on the master.
# join: {credential_ttl: 2h, renew: until-joined}

# Left out, each password is generated when the seeds are made and never printed.
passwords: {}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_is_valid() {
        let c = Cluster::from_yaml(EXAMPLE, "example").unwrap();
        assert_eq!(c.public_ip(), Ipv4Addr::new(10, 10, 0, 10));
        assert_eq!(c.settings()["storage"], "nfs");
    }

    #[test]
    fn left_out_sections_take_their_defaults() {
        let c = Cluster::from_yaml(
            "cluster_version: 1\nname: lab\nplatform: demo\nmaster: {hostname: m, private_ip: 10.0.0.1}\nstorage: {type: nfs, nfs: {server: 10.0.0.2}}\n",
            "min",
        )
        .unwrap();
        assert_eq!(
            (c.portal.provider_type.as_str(), c.portal.iaas_type.as_str()),
            ("standalone", "openstack")
        );
        assert_eq!(c.network.pod_cidr.to_string(), "10.233.64.0/18");
    }

    #[test]
    fn cidr_arithmetic() {
        let c = |s: &str| Cidr::try_from(s.to_string()).unwrap();
        assert!(c("10.233.64.0/18").overlaps(&c("10.233.100.0/24")));
        assert!(!c("10.233.64.0/18").overlaps(&c("10.233.0.0/18")));
        assert!(c("10.0.0.0/8").overlaps(&c("10.233.0.0/18")));
        assert!(c("0.0.0.0/0").contains(Ipv4Addr::new(1, 2, 3, 4)));
        assert!(
            Cidr::try_from("10.233.64.1/18".to_string())
                .unwrap_err()
                .contains("host bits")
        );
        assert!(Cidr::try_from("10.233.64.0/33".to_string()).is_err());
    }
}
