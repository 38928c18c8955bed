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

/// The EFI global variables' GUID (UEFI spec), under efivarfs.
const EFI_GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// Whether the firmware booted this node with UEFI Secure Boot enforcing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecureBoot {
    On,
    Off,
    /// No platform key enrolled: the firmware checks nothing.
    SetupMode,
    /// Booted by BIOS (or CSM): there is no Secure Boot.
    Bios,
    /// UEFI, but efivarfs is not mounted: the variables cannot be read.
    Unknown,
}

impl SecureBoot {
    pub fn describe(self) -> &'static str {
        match self {
            SecureBoot::On => "on",
            SecureBoot::Off => "off (the firmware does not check boot loaders)",
            SecureBoot::SetupMode => "off: the firmware is in setup mode (no platform key)",
            SecureBoot::Bios => "not available: booted by BIOS",
            SecureBoot::Unknown => "unknown: efivarfs is not mounted",
        }
    }
}

/// Read from the firmware's variables (`SecureBoot`, `SetupMode`): four
/// attribute bytes, then the value.
pub fn secure_boot(root: &Path) -> SecureBoot {
    let efi = root.join("sys/firmware/efi");
    if !efi.is_dir() {
        return SecureBoot::Bios;
    }
    let vars = efi.join("efivars");
    let var = |name: &str| {
        std::fs::read(vars.join(format!("{name}-{EFI_GLOBAL}")))
            .ok()
            .and_then(|b| b.get(4).copied())
    };
    match (var("SecureBoot"), var("SetupMode")) {
        (Some(1), _) => SecureBoot::On,
        (_, Some(1)) => SecureBoot::SetupMode,
        (Some(_), _) => SecureBoot::Off,
        // A firmware without Secure Boot has no such variable; an unmounted
        // efivarfs has no variables at all.
        (None, _) if std::fs::read_dir(&vars).is_ok_and(|mut d| d.next().is_some()) => {
            SecureBoot::Off
        }
        (None, _) => SecureBoot::Unknown,
    }
}

#[cfg(test)]
mod secure_boot_tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    fn firmware(vars: &[(&str, u8)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("sys/firmware/efi/efivars");
        std::fs::create_dir_all(&d).unwrap();
        for (name, v) in vars {
            std::fs::write(d.join(format!("{name}-{EFI_GLOBAL}")), [6, 0, 0, 0, *v]).unwrap();
        }
        t
    }

    #[test]
    fn secure_boot_is_read_from_the_firmware_variables() {
        let on = firmware(&[("SecureBoot", 1), ("SetupMode", 0)]);
        assert_eq!(secure_boot(on.path()), SecureBoot::On);
        let off = firmware(&[("SecureBoot", 0), ("SetupMode", 0)]);
        assert_eq!(secure_boot(off.path()), SecureBoot::Off);
        let setup = firmware(&[("SecureBoot", 0), ("SetupMode", 1)]);
        assert_eq!(secure_boot(setup.path()), SecureBoot::SetupMode);
        let no_sb = firmware(&[("BootOrder", 0)]);
        assert_eq!(secure_boot(no_sb.path()), SecureBoot::Off);
        let unmounted = firmware(&[]);
        assert_eq!(secure_boot(unmounted.path()), SecureBoot::Unknown);
        let bios = tempfile::tempdir().unwrap();
        assert_eq!(secure_boot(bios.path()), SecureBoot::Bios);
    }
}
