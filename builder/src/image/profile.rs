//! OS image profiles (`images/*.yaml`): base distribution, mirror, packages,
//! kernel, partition sizes, outputs. Validated like the catalog.

use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Partitions {
    pub esp_mib: u64,
    /// 0: sized from the root tree.
    #[serde(default)]
    pub root_mib: u64,
    /// 0: sized from the bundle.
    #[serde(default)]
    pub data_mib: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub profile_version: u32,
    pub name: String,
    pub distribution: String,
    pub suite: String,
    pub mirror: String,
    pub architecture: String,
    pub kernel: String,
    pub packages: Vec<String>,
    pub partitions: Partitions,
    pub outputs: Vec<String>,
}

const DISTS: &[(&str, &[&str])] = &[
    ("debian", &["bookworm", "trixie"]),
    ("ubuntu", &["focal", "jammy", "noble"]),
];

impl Profile {
    pub fn load(path: &Path) -> Result<Profile> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{file}: cannot read: {e}"))?;
        let p: Profile =
            serde_saphyr::from_str(&text).map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
        let problems = p.problems();
        if !problems.is_empty() {
            anyhow::bail!(
                "{file}: {} problem(s)\n  - {}",
                problems.len(),
                problems.join("\n  - ")
            );
        }
        Ok(p)
    }

    fn problems(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.profile_version != 1 {
            v.push(format!(
                "profile_version: {} is not supported (want 1)",
                self.profile_version
            ));
        }
        match DISTS.iter().find(|(d, _)| *d == self.distribution) {
            None => v.push(format!(
                "distribution: {:?} must be debian or ubuntu",
                self.distribution
            )),
            Some((_, suites)) if !suites.contains(&self.suite.as_str()) => v.push(format!(
                "suite: {:?} is not a {} suite this builder knows ({})",
                self.suite,
                self.distribution,
                suites.join(", ")
            )),
            _ => {}
        }
        if !(self.mirror.starts_with("http://")
            || self.mirror.starts_with("https://")
            || self.mirror.starts_with("file:/"))
        {
            v.push(format!(
                "mirror: {:?} must be an http(s):// or file:/ URL",
                self.mirror
            ));
        }
        match self.architecture.as_str() {
            "amd64" => {}
            // Validating what cannot boot only defers the failure to a site.
            "arm64" => v.push(
                "architecture: \"arm64\" cannot be booted yet: the image lays GRUB's x86 targets only (i386-pc, x86_64-efi); use amd64".into(),
            ),
            other => v.push(format!("architecture: {other:?} must be amd64")),
        }
        if self.kernel.trim().is_empty() {
            v.push("kernel: name the kernel package, e.g. linux-image-cloud-amd64".into());
        }
        for p in &self.packages {
            if p.is_empty()
                || !p
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
            {
                v.push(format!("packages: {p:?} is not a Debian package name"));
            }
        }
        for needed in ["systemd", "udev", "initramfs-tools"] {
            if !self.packages.iter().any(|p| p == needed) {
                v.push(format!("packages: {needed} is required to boot"));
            }
        }
        if self.partitions.esp_mib < 64 {
            v.push(format!(
                "partitions.esp_mib: {} is too small (at least 64 for a FAT32 ESP)",
                self.partitions.esp_mib
            ));
        }
        // The formats `image --format` builds, named once (`Format`).
        use clap::ValueEnum;
        let names: Vec<&str> = super::Format::value_variants()
            .iter()
            .map(|f| f.name())
            .collect();
        for o in &self.outputs {
            if !names.contains(&o.as_str()) {
                v.push(format!(
                    "outputs: {o:?} must be one of {}",
                    names.join(", ")
                ));
            }
        }
        v
    }

    /// Whether this machine can build it: the Ubuntu archive is out of reach here.
    pub fn buildable_here(&self) -> bool {
        self.distribution == "debian"
    }

    /// Every package mmdebstrap installs, kernel included, sorted and unique.
    pub fn include_list(&self) -> String {
        let mut pk: Vec<&str> = self
            .packages
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(self.kernel.as_str()))
            .collect();
        pk.sort();
        pk.dedup();
        pk.join(",")
    }

    /// The rootfs cache key: a hash of everything that shapes the tree.
    pub fn rootfs_key(&self) -> String {
        let s = format!(
            "kpaas-rootfs-v1\nsuite={}\nmirror={}\narch={}\nvariant=minbase\npackages={}\n",
            self.suite,
            self.mirror,
            self.architecture,
            self.include_list()
        );
        airgap_bundle::Digest::of(s.as_bytes()).hex().to_string()
    }
}
