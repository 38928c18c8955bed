//! OS image profiles (`images/*.yaml`): base distribution, mirror, packages,
//! kernel, partition sizes, outputs. Validated like the catalog.

use airgap_bundle::manifest::BundleManifest;
use airgap_bundle::node::Runtime;
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

/// Where the image's container runtime comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeFrom {
    /// The distribution's packages (Debian's containerd and runc).
    Packages,
    /// The bundle's file artifacts, laid into the image at their install
    /// paths (K-PaaS's CRI-O release tarball and runc, as its Kubespray
    /// installs them).
    Bundle,
}

/// The container runtime the image carries: the one place a profile says
/// which, and where it comes from; checked against the packages when the
/// profile loads and against the bundle when an image is built.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ProfileRuntime {
    pub name: Runtime,
    pub from: RuntimeFrom,
}

impl ProfileRuntime {
    /// What must be on the node for the runtime to run: packages (from
    /// packages) or absolute paths (from the bundle).
    pub fn needs(self) -> &'static [&'static str] {
        match (self.name, self.from) {
            (Runtime::Containerd, RuntimeFrom::Packages) => &["containerd", "runc"],
            (Runtime::Crio, RuntimeFrom::Packages) => &["cri-o", "runc"],
            (Runtime::Containerd, RuntimeFrom::Bundle) => &[
                "/usr/local/bin/containerd",
                "/usr/local/bin/containerd-shim-runc-v2",
                "/usr/local/bin/runc",
                "/etc/systemd/system/containerd.service",
            ],
            (Runtime::Crio, RuntimeFrom::Bundle) => &[
                "/usr/local/bin/crio",
                "/usr/local/bin/conmon",
                "/usr/local/bin/pinns",
                "/usr/local/bin/runc",
                "/etc/systemd/system/crio.service",
            ],
        }
    }

    /// With the runtime from the bundle: the paths it needs that the
    /// bundle's files for `arch` do not install (empty when all are there,
    /// or when the runtime comes from packages).
    pub fn missing_from(self, m: &BundleManifest, arch: &str) -> Vec<&'static str> {
        if self.from != RuntimeFrom::Bundle {
            return Vec::new();
        }
        let installed: Vec<&str> = m
            .artifacts
            .iter()
            .filter(|a| a.kind == "file")
            .filter(|a| a.arch.as_deref().is_none_or(|x| x == arch || x == "any"))
            .flat_map(|a| {
                a.install_path
                    .iter()
                    .chain(a.extract.values())
                    .map(String::as_str)
            })
            .collect();
        self.needs()
            .iter()
            .copied()
            .filter(|p| !installed.contains(p))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub profile_version: u32,
    pub name: String,
    pub distribution: String,
    pub suite: String,
    pub mirror: String,
    /// The archive's components packages come from; `main` unless set
    /// (Debian's firmware for bare metal is in `non-free-firmware`).
    #[serde(default = "main_only", skip_serializing_if = "is_main_only")]
    pub components: Vec<String>,
    pub architecture: String,
    pub kernel: String,
    pub packages: Vec<String>,
    pub runtime: ProfileRuntime,
    pub partitions: Partitions,
    pub outputs: Vec<String>,
}

fn main_only() -> Vec<String> {
    vec!["main".into()]
}

fn is_main_only(c: &[String]) -> bool {
    c == ["main"]
}

/// Each distribution's archive components.
const COMPONENTS: &[(&str, &[&str])] = &[
    (
        "debian",
        &["main", "contrib", "non-free", "non-free-firmware"],
    ),
    ("ubuntu", &["main", "restricted", "universe", "multiverse"]),
];

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
        if let Some((_, known)) = COMPONENTS.iter().find(|(d, _)| *d == self.distribution) {
            if !self.components.iter().any(|c| c == "main") {
                v.push(format!(
                    "components: {:?} must include main (the base system is there)",
                    self.components
                ));
            }
            for c in self
                .components
                .iter()
                .filter(|c| !known.contains(&c.as_str()))
            {
                v.push(format!(
                    "components: {c:?} is not a {} component ({})",
                    self.distribution,
                    known.join(", ")
                ));
            }
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
        if self.runtime.from == RuntimeFrom::Packages {
            for needed in self.runtime.needs() {
                if !self.packages.iter().any(|p| p == needed) {
                    v.push(format!(
                        "runtime: {} from packages needs the package {needed} in packages{}",
                        self.runtime.name.name(),
                        if self.runtime.name == Runtime::Crio {
                            " (Debian and Ubuntu have none: take CRI-O from the bundle, `from: bundle`, as K-PaaS does)"
                        } else {
                            ""
                        }
                    ));
                }
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
        // Only a profile that names other components says so: a `main`
        // profile's cached tree keeps the key it always had.
        let s = if is_main_only(&self.components) {
            s
        } else {
            format!("{s}components={}\n", self.components.join(","))
        };
        airgap_bundle::Digest::of(s.as_bytes()).hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn images() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../images")
    }

    #[test]
    fn each_profile_says_its_runtime_and_where_it_comes_from() {
        let load = |n: &str| Profile::load(&images().join(format!("{n}.yaml"))).unwrap();
        let debian = load("debian-12").runtime;
        assert_eq!(
            (debian.name, debian.from),
            (Runtime::Containerd, RuntimeFrom::Packages)
        );
        // K-PaaS's own target runs its own runtime, from its bundle.
        for u in ["ubuntu-20.04", "ubuntu-22.04"] {
            let r = load(u).runtime;
            assert_eq!(
                (r.name, r.from),
                (Runtime::Crio, RuntimeFrom::Bundle),
                "{u}"
            );
        }
    }

    #[test]
    fn the_metal_profile_takes_firmware_from_its_component_and_keys_its_tree_by_it() {
        let load = |n: &str| Profile::load(&images().join(format!("{n}.yaml"))).unwrap();
        let (cloud, metal) = (load("debian-12"), load("debian-12-metal"));
        assert_eq!(cloud.components, ["main"]);
        assert_eq!(metal.components, ["main", "non-free-firmware"]);
        assert_eq!(metal.kernel, "linux-image-amd64");
        // The same packages from other components are another tree; a
        // profile that says `main` keeps the key it had without the field.
        let mut main_named = cloud.clone();
        main_named.components = vec!["main".into()];
        assert_eq!(main_named.rootfs_key(), cloud.rootfs_key());
        let mut other = cloud.clone();
        other.components = vec!["main".into(), "contrib".into()];
        assert_ne!(other.rootfs_key(), cloud.rootfs_key());
        // Components are the distribution's, and main is one of them.
        let mut bad = metal.clone();
        bad.components = vec!["non-free-firmware".into(), "universe".into()];
        assert_eq!(
            bad.problems(),
            [
                "components: [\"non-free-firmware\", \"universe\"] must include main (the base system is there)",
                "components: \"universe\" is not a debian component (main, contrib, non-free, non-free-firmware)",
            ]
        );
    }

    #[test]
    fn a_runtime_from_the_bundle_needs_its_files_for_the_profiles_architecture() {
        let manifest = |files: serde_json::Value| -> BundleManifest {
            serde_json::from_value(serde_json::json!({
                "bundle_version": 1, "platform": "p", "platform_version": "1", "created": "x",
                "image_platforms": [], "artifacts": files, "files": {},
                "totals": {"artifacts": 0, "blobs": 0, "unique_bytes": 0, "referenced_bytes": 0}
            }))
            .unwrap()
        };
        let file = |name: &str, arch: &str, install: serde_json::Value| {
            let mut a = serde_json::json!({
                "kind": "file", "component": "kubernetes",
                "name": format!("files.kpaas.local/{name}:{arch}"), "source": "s",
                "digest": format!("sha256:{}", "a".repeat(64)),
                "media_type": "application/octet-stream", "size": 1, "arch": arch,
            });
            a.as_object_mut()
                .unwrap()
                .extend(install.as_object().unwrap().clone());
            a
        };
        // As the k-paas-1.4.1 catalog carries them.
        let crio = |arch: &str| {
            file(
                "cri-o",
                arch,
                serde_json::json!({"extract": {
                    "cri-o/bin/crio": "/usr/local/bin/crio",
                    "cri-o/bin/conmon": "/usr/local/bin/conmon",
                    "cri-o/bin/pinns": "/usr/local/bin/pinns",
                    "cri-o/contrib/crio.service": "/etc/systemd/system/crio.service",
                }}),
            )
        };
        let runc = |arch: &str| {
            file(
                "runc",
                arch,
                serde_json::json!({"install_path": "/usr/local/bin/runc"}),
            )
        };
        let rt = ProfileRuntime {
            name: Runtime::Crio,
            from: RuntimeFrom::Bundle,
        };
        let both = manifest(serde_json::json!([crio("amd64"), runc("amd64")]));
        assert!(rt.missing_from(&both, "amd64").is_empty());
        // Another architecture's files do not count.
        assert_eq!(rt.missing_from(&both, "arm64"), rt.needs());
        let no_runc = manifest(serde_json::json!([crio("amd64"), runc("arm64")]));
        assert_eq!(rt.missing_from(&no_runc, "amd64"), ["/usr/local/bin/runc"]);
        // From packages, the bundle is not asked.
        let packages = ProfileRuntime {
            name: Runtime::Containerd,
            from: RuntimeFrom::Packages,
        };
        assert!(
            packages
                .missing_from(&manifest(serde_json::json!([])), "amd64")
                .is_empty()
        );
    }
}
