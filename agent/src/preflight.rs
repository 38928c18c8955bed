//! Preflight: does this machine meet the node's needs? Every check reports
//! pass/fail, what it measured and what to do. Nothing here changes the
//! machine. `/proc` and `/sys` are read under a root so the logic can be
//! exercised against prepared trees as well as the live system.

use airgap_bundle::node::{NodeEntry, Role};
use serde::Serialize;
use std::net::{IpAddr, TcpListener};
use std::path::Path;

#[derive(Debug, Serialize, Clone)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub measured: String,
    pub want: String,
    /// What to do when it fails.
    pub fix: String,
}

pub struct Needs {
    pub cpus: u64,
    pub memory_mib: u64,
    pub root_free_mib: u64,
    pub data_free_mib: u64,
    pub ports: Vec<u16>,
    /// The cluster file's `secure_boot: required`.
    pub secure_boot: bool,
}

impl Needs {
    /// A lab's lower minimums, where the cluster file sets them.
    pub fn lowered(mut self, m: Option<&airgap_bundle::node::Minimums>) -> Needs {
        if let Some(m) = m {
            self.cpus = m.cpus.unwrap_or(self.cpus);
            self.memory_mib = m.memory_mib.unwrap_or(self.memory_mib);
            self.root_free_mib = m.root_free_mib.unwrap_or(self.root_free_mib);
        }
        self
    }

    /// The cluster file's Secure Boot policy.
    pub fn secure_boot(mut self, p: airgap_bundle::node::SecureBootPolicy) -> Needs {
        self.secure_boot = p == airgap_bundle::node::SecureBootPolicy::Required;
        self
    }

    /// K-PaaS minimums: control plane 2 vCPU / 8 GB; workers 1 vCPU / 4 GB
    /// (kubeadm's floor is 2 vCPU / 1.7 GB on the control plane).
    pub fn for_role(role: Role, seed_port: u16) -> Needs {
        match role {
            Role::Master => Needs {
                cpus: 2,
                memory_mib: 7_600,
                root_free_mib: 20_480,
                data_free_mib: 0,
                ports: vec![seed_port, 6443, 2379, 2380, 10250, 10257, 10259],
                secure_boot: false,
            },
            Role::Worker => Needs {
                cpus: 1,
                memory_mib: 3_800,
                root_free_mib: 20_480,
                data_free_mib: 0,
                ports: vec![seed_port, 10250],
                secure_boot: false,
            },
        }
    }
}

fn read(root: &Path, p: &str) -> Option<String> {
    std::fs::read_to_string(root.join(p.trim_start_matches('/'))).ok()
}

fn check(name: &str, ok: bool, measured: String, want: &str, fix: &str) -> Check {
    Check {
        name: name.into(),
        ok,
        measured,
        want: want.into(),
        fix: if ok { String::new() } else { fix.into() },
    }
}

fn free_mib(p: &Path) -> Option<u64> {
    let s = nix::sys::statvfs::statvfs(p).ok()?;
    Some(s.blocks_available() * s.fragment_size() / (1 << 20))
}

pub fn run(
    root: &Path,
    node: &NodeEntry,
    needs: &Needs,
    local_ips: &[IpAddr],
    data: &Path,
    bundle_created: Option<u64>,
) -> Vec<Check> {
    let mut out = Vec::new();
    let cpus = read(root, "/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count() as u64)
        .unwrap_or(0);
    out.push(check(
        "cpus",
        cpus >= needs.cpus,
        cpus.to_string(),
        &format!(">= {}", needs.cpus),
        "give the machine more vCPUs",
    ));
    let mem = read(root, "/proc/meminfo")
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024);
    out.push(check(
        "memory",
        mem >= needs.memory_mib,
        format!("{mem} MiB"),
        &format!(">= {} MiB", needs.memory_mib),
        "give the machine more memory",
    ));
    for (name, p, want) in [
        ("root free", Path::new("/"), needs.root_free_mib),
        ("data free", data, needs.data_free_mib),
    ] {
        match free_mib(p) {
            Some(f) => out.push(check(
                name,
                f >= want,
                format!("{f} MiB on {}", p.display()),
                &format!(">= {want} MiB"),
                "grow the partition or free space",
            )),
            None => out.push(check(
                name,
                false,
                format!("{} not readable", p.display()),
                &format!(">= {want} MiB"),
                "mount the data partition (label KPAAS-DATA)",
            )),
        }
    }
    let swaps = read(root, "/proc/swaps")
        .map(|s| s.lines().skip(1).filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    out.push(check(
        "swap off",
        swaps == 0,
        format!("{swaps} swap device(s)"),
        "none",
        "swapoff -a and remove swap from /etc/fstab (kubelet refuses swap)",
    ));
    for m in ["overlay", "br_netfilter"] {
        let loaded = root.join("sys/module").join(m).exists()
            || read(root, "/proc/modules")
                .is_some_and(|t| t.lines().any(|l| l.split_whitespace().next() == Some(m)));
        out.push(check(
            &format!("module {m}"),
            loaded,
            if loaded { "loaded" } else { "not loaded" }.into(),
            "loaded",
            &format!("modprobe {m} (the image lists it in modules-load.d)"),
        ));
    }
    for (key, want) in [
        ("net/ipv4/ip_forward", "1"),
        ("net/bridge/bridge-nf-call-iptables", "1"),
    ] {
        let v = read(root, &format!("/proc/sys/{key}")).map(|s| s.trim().to_string());
        let name = key.replace('/', ".");
        out.push(check(
            &format!("sysctl {name}"),
            v.as_deref() == Some(want),
            v.clone().unwrap_or_else(|| "absent".into()),
            want,
            &format!("sysctl -w {name}={want} (needs br_netfilter for the bridge keys)"),
        ));
    }
    let now = airgap_bundle::fsutil::now_unix();
    let clock_ok = bundle_created.is_none_or(|c| now + 86_400 >= c) && now < 4_102_444_800;
    out.push(check(
        "clock",
        clock_ok,
        airgap_bundle::fsutil::rfc3339(now),
        &format!(
            "not before the bundle ({})",
            bundle_created
                .map(airgap_bundle::fsutil::rfc3339)
                .unwrap_or_else(|| "unknown".into())
        ),
        "set the hardware clock (TLS certificates kubeadm makes depend on it)",
    ));
    let has_ip = local_ips.contains(&node.ip);
    out.push(check(
        "node ip",
        has_ip,
        local_ips
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(" "),
        &node.ip.to_string(),
        "fix network-config in the seed so the inventory address is assigned",
    ));
    let sb = crate::facts::secure_boot(root);
    out.push(check(
        "secure boot",
        !needs.secure_boot || sb == crate::facts::SecureBoot::On,
        sb.describe().into(),
        if needs.secure_boot {
            "on (secure_boot: required)"
        } else {
            "on or off (secure_boot: optional)"
        },
        "boot by UEFI with Secure Boot on (the image's chain is signed for Microsoft's UEFI CA, which most firmware trusts by default), or set secure_boot: optional in the cluster file",
    ));
    for p in &needs.ports {
        let free = TcpListener::bind(("0.0.0.0", *p)).is_ok();
        out.push(check(
            &format!("port {p}"),
            free,
            if free { "free" } else { "in use" }.into(),
            "free",
            &format!("stop whatever listens on {p} (ss -ltnp)"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_prepared_tree() {
        let t = tempfile::tempdir().unwrap();
        let w = |p: &str, s: &str| {
            let f = t.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, s).unwrap();
        };
        w("proc/cpuinfo", "processor\t: 0\nprocessor\t: 1\n");
        w("proc/meminfo", "MemTotal:        8000000 kB\n");
        w(
            "proc/swaps",
            "Filename Type Size Used Priority\n/swapfile file 1 0 -2\n",
        );
        w("proc/modules", "overlay 151552 0 - Live 0x0\n");
        w("proc/sys/net/ipv4/ip_forward", "1\n");
        let node = NodeEntry {
            hostname: "m".into(),
            ip: "10.0.0.1".parse().unwrap(),
            mac: None,
            role: Role::Master,
        };
        let mut needs = Needs::for_role(Role::Master, 0);
        needs.ports.clear();
        let r = run(
            t.path(),
            &node,
            &needs,
            &["10.0.0.1".parse().unwrap()],
            t.path(),
            None,
        );
        let get = |n: &str| r.iter().find(|c| c.name == n).unwrap().clone();
        assert!(
            get("cpus").ok && get("memory").ok && get("module overlay").ok && get("node ip").ok
        );
        assert!(!get("swap off").ok && get("swap off").fix.contains("swapoff"));
        assert!(!get("module br_netfilter").ok);
        assert_eq!(
            get("sysctl net.bridge.bridge-nf-call-iptables").measured,
            "absent"
        );
        assert_eq!(get("memory").measured, "7812 MiB");
        // No firmware variables in the tree: a BIOS boot, fine unless required.
        assert!(get("secure boot").ok);
        let strict = run(
            t.path(),
            &node,
            &needs.secure_boot(airgap_bundle::node::SecureBootPolicy::Required),
            &["10.0.0.1".parse().unwrap()],
            t.path(),
            None,
        );
        let sb = strict.iter().find(|c| c.name == "secure boot").unwrap();
        assert!(!sb.ok && sb.measured.contains("BIOS") && sb.fix.contains("secure_boot: optional"));
    }
}
