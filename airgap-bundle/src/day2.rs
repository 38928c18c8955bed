//! A node added on day 2 (`kpaas-agent node add`), checked against the
//! site before anything is issued for it: every problem with its flag, all
//! at once, as the cluster file is checked.

use crate::cluster::Cidr;
use crate::ident::{normalize_mac, valid_hostname};
use crate::node::{NodeEntry, Role};
use crate::seed::SiteFacts;
use std::net::{IpAddr, Ipv4Addr};

/// What the operator says of the new machine.
#[derive(Debug, Clone, PartialEq)]
pub struct NewNode {
    pub hostname: String,
    pub ip: Ipv4Addr,
    pub mac: String,
}

impl NewNode {
    /// Its inventory entry (the MAC normalised): a worker.
    pub fn entry(&self) -> NodeEntry {
        NodeEntry {
            hostname: self.hostname.clone(),
            ip: IpAddr::V4(self.ip),
            mac: Some(normalize_mac(&self.mac).unwrap_or_else(|| self.mac.clone())),
            role: Role::Worker,
        }
    }
}

/// Every reason the site cannot take `new`: its hostname, address and MAC
/// against the site's nodes, its network, gateway and the cluster's pod
/// and service ranges.
pub fn problems(
    new: &NewNode,
    nodes: &[NodeEntry],
    site: &SiteFacts,
    pod_cidr: Option<Cidr>,
    service_cidr: Option<Cidr>,
) -> Vec<String> {
    let mut p = Vec::new();
    let h = &new.hostname;
    if !valid_hostname(h) {
        p.push(format!(
            "--hostname {h:?}: lowercase letters, digits and '-' (a DNS name, as Kubernetes names nodes)"
        ));
    }
    if let Some(n) = nodes.iter().find(|n| &n.hostname == h) {
        p.push(format!(
            "--hostname {h}: the site has a node of that name ({})",
            n.ip
        ));
    }
    let ip = new.ip;
    if ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        p.push(format!("--ip {ip}: cannot be a node address"));
    }
    if let Some(n) = nodes.iter().find(|n| n.ip == IpAddr::V4(ip)) {
        p.push(format!("--ip {ip}: already {}'s address", n.hostname));
    }
    if let Some(nc) = site.node_cidr {
        if !nc.contains(ip) {
            p.push(format!("--ip {ip}: outside the node network {nc}"));
        } else if nc.prefix < 31 {
            let host = u32::from(ip) & !mask(nc.prefix);
            if host == 0 {
                p.push(format!("--ip {ip}: the node network {nc}'s own address"));
            } else if host == !mask(nc.prefix) {
                p.push(format!(
                    "--ip {ip}: the node network {nc}'s broadcast address"
                ));
            }
        }
    }
    if site.gateway == Some(ip) {
        p.push(format!("--ip {ip}: the nodes' gateway"));
    }
    for (name, c) in [("pod", pod_cidr), ("service", service_cidr)] {
        if let Some(c) = c.filter(|c| c.contains(ip)) {
            p.push(format!("--ip {ip}: inside the cluster's {name} range {c}"));
        }
    }
    match normalize_mac(&new.mac) {
        None => p.push(format!(
            "--mac {:?}: not a MAC address (want aa:bb:cc:dd:ee:ff)",
            new.mac
        )),
        Some(m) => {
            if let Some(n) = nodes
                .iter()
                .find(|n| n.mac.as_deref().and_then(normalize_mac).as_deref() == Some(&m))
            {
                p.push(format!("--mac {m}: already {}'s", n.hostname));
            }
        }
    }
    p
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    fn cidr(s: &str) -> Cidr {
        Cidr::try_from(s.to_string()).unwrap()
    }

    fn site() -> (Vec<NodeEntry>, SiteFacts) {
        let n = |h: &str, ip: &str, mac: &str, role| NodeEntry {
            hostname: h.into(),
            ip: ip.parse().unwrap(),
            mac: Some(mac.into()),
            role,
        };
        (
            vec![
                n(
                    "kpaas-master",
                    "10.10.0.10",
                    "52:54:00:12:34:10",
                    Role::Master,
                ),
                n(
                    "kpaas-worker1",
                    "10.10.0.11",
                    "52:54:00:12:34:11",
                    Role::Worker,
                ),
            ],
            SiteFacts {
                node_cidr: Some(cidr("10.10.0.0/24")),
                gateway: Some("10.10.0.1".parse().unwrap()),
                ssh_authorized_keys: Vec::new(),
            },
        )
    }

    fn check(h: &str, ip: &str, mac: &str) -> Vec<String> {
        let (nodes, s) = site();
        problems(
            &NewNode {
                hostname: h.into(),
                ip: ip.parse().unwrap(),
                mac: mac.into(),
            },
            &nodes,
            &s,
            Some(cidr("10.233.64.0/18")),
            Some(cidr("10.233.0.0/18")),
        )
    }

    #[test]
    fn a_good_node_passes_and_its_mac_is_normalised() {
        assert!(check("kpaas-worker2", "10.10.0.12", "52-54-00-12-34-12").is_empty());
        let n = NewNode {
            hostname: "w".into(),
            ip: "10.10.0.12".parse().unwrap(),
            mac: "52-54-00-AB-34-12".into(),
        };
        assert_eq!(n.entry().mac.as_deref(), Some("52:54:00:ab:34:12"));
        assert_eq!(n.entry().role, Role::Worker);
    }

    #[test]
    fn every_problem_is_named_at_once_with_its_flag() {
        let p = check("Kpaas_Worker", "10.10.0.11", "52:54:00:12:34:10");
        assert_eq!(
            p,
            [
                "--hostname \"Kpaas_Worker\": lowercase letters, digits and '-' (a DNS name, as Kubernetes names nodes)",
                "--ip 10.10.0.11: already kpaas-worker1's address",
                "--mac 52:54:00:12:34:10: already kpaas-master's",
            ]
        );
        let p = check("kpaas-master", "10.10.0.1", "nope");
        assert_eq!(
            p,
            [
                "--hostname kpaas-master: the site has a node of that name (10.10.0.10)",
                "--ip 10.10.0.1: the nodes' gateway",
                "--mac \"nope\": not a MAC address (want aa:bb:cc:dd:ee:ff)",
            ]
        );
        assert_eq!(
            check("w", "10.233.64.5", "52:54:00:00:00:01"),
            [
                "--ip 10.233.64.5: outside the node network 10.10.0.0/24",
                "--ip 10.233.64.5: inside the cluster's pod range 10.233.64.0/18",
            ]
        );
        assert_eq!(
            check("w", "10.10.0.255", "52:54:00:00:00:01"),
            ["--ip 10.10.0.255: the node network 10.10.0.0/24's broadcast address"]
        );
        assert_eq!(
            check("w", "10.10.0.0", "52:54:00:00:00:01"),
            ["--ip 10.10.0.0: the node network 10.10.0.0/24's own address"]
        );
        assert_eq!(
            check("w", "127.0.0.1", "52:54:00:00:00:01"),
            [
                "--ip 127.0.0.1: cannot be a node address",
                "--ip 127.0.0.1: outside the node network 10.10.0.0/24"
            ]
        );
    }
}
