//! What this machine is: hostname, MAC addresses, IP addresses, read from
//! the kernel's own files (no tools needed at first boot).

use airgap_bundle::node::HostFacts;
use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

pub fn gather(root: &Path) -> HostFacts {
    let hostname = std::fs::read_to_string(root.join("proc/sys/kernel/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let mut macs = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("sys/class/net")) {
        for e in rd.flatten() {
            if e.file_name() == "lo" {
                continue;
            }
            if let Ok(m) = std::fs::read_to_string(e.path().join("address")) {
                let m = m.trim().to_string();
                if !m.is_empty() && m != "00:00:00:00:00:00" {
                    macs.push(m);
                }
            }
        }
    }
    macs.sort();
    Facts {
        hostname,
        macs,
        ips: local_ips(root),
    }
    .into()
}

struct Facts {
    hostname: String,
    macs: Vec<String>,
    ips: Vec<IpAddr>,
}

impl From<Facts> for HostFacts {
    fn from(f: Facts) -> HostFacts {
        HostFacts {
            hostname: f.hostname,
            macs: f.macs,
            ips: f.ips,
        }
    }
}

/// Local addresses: IPv4 from `/proc/net/fib_trie` (the `/32 host LOCAL`
/// entries), IPv6 from `/proc/net/if_inet6`.
pub fn local_ips(root: &Path) -> Vec<IpAddr> {
    let mut ips = Vec::new();
    if let Ok(t) = std::fs::read_to_string(root.join("proc/net/fib_trie")) {
        let mut last: Option<IpAddr> = None;
        for l in t.lines() {
            let l = l.trim();
            if let Some(a) = l.strip_prefix("|-- ") {
                last = a.parse().ok();
            } else if l.starts_with("/32 host LOCAL")
                && let Some(ip) = last
                && !ips.contains(&ip)
            {
                ips.push(ip);
            }
        }
    }
    if let Ok(t) = std::fs::read_to_string(root.join("proc/net/if_inet6")) {
        for l in t.lines() {
            let Some(h) = l.split_whitespace().next() else {
                continue;
            };
            if let Ok(v) = u128::from_str_radix(h, 16) {
                let ip = IpAddr::V6(Ipv6Addr::from(v));
                if !ips.contains(&ip) {
                    ips.push(ip);
                }
            }
        }
    }
    ips
}
