//! The test kit's Kubernetes: the real upstream programs that `just setup`
//! builds from their Go modules at the versions K-PaaS 1.4.1 pins
//! (`tests/go/build.sh`, cached under `<fixtures>/go`), and the container
//! images assembled from them under their upstream names. No Docker daemon
//! exists here, so images are written as an OCI layout directly; their
//! digests differ from registry.k8s.io's (the K-PaaS catalog keeps the real
//! pins).

mod layers;

use crate::content::{Layout, sha256_hex};
use anyhow::{Context, Result, bail};
use layers::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Where `tests/go/build.sh` links every program it built.
pub fn bin_dir() -> PathBuf {
    crate::fixtures_dir().join("go/bin")
}

/// A built program, or None after saying why (panics under
/// [`crate::REQUIRE_ENV`], like every missing peer).
pub fn program(test: &str, name: &str) -> Option<PathBuf> {
    let p = bin_dir().join(name);
    if p.is_file() {
        return Some(p);
    }
    crate::skip(&format!(
        "SKIPPED {test}: {} is not built (run `just setup`)",
        p.display()
    ));
    None
}

/// True when every program is built (otherwise as [`program`]).
pub fn have_programs(test: &str, names: &[&str]) -> bool {
    names.iter().all(|n| program(test, n).is_some())
}

/// The pinned versions, and the command that prints each (checked by a test;
/// K-PaaS 1.4.1 pins them in `../shared/kpaas/binaries.tsv`).
pub const VERSIONS: &[(&str, &[&str], &str)] = &[
    ("kubeadm", &["version", "-o", "short"], "v1.25.6"),
    ("kubelet", &["--version"], "Kubernetes v1.25.6"),
    (
        "kubectl",
        &["version", "--client", "-o", "yaml"],
        "gitVersion: v1.25.6",
    ),
    ("kube-apiserver", &["--version"], "Kubernetes v1.25.6"),
    (
        "kube-controller-manager",
        &["--version"],
        "Kubernetes v1.25.6",
    ),
    ("kube-scheduler", &["--version"], "Kubernetes v1.25.6"),
    ("kube-proxy", &["--version"], "Kubernetes v1.25.6"),
];

/// kwok is a test tool only (fake nodes for the loopback tier), not part of
/// K-PaaS (tests/go/kwok/go.mod says why this version).
pub const KWOK_VERSION: &str = "v0.4.0";

/// The node binaries the demo platform carries as file artifacts:
/// (program, install path on the node).
pub const NODE_FILES: &[(&str, &str)] = &[
    ("kubeadm", "/usr/local/bin/kubeadm"),
    ("kubelet", "/usr/local/bin/kubelet"),
    ("kubectl", "/usr/local/bin/kubectl"),
    ("crictl", "/usr/local/bin/crictl"),
    ("helm", "/usr/local/bin/helm"),
    ("kustomize", "/usr/local/bin/kustomize"),
];

/// The CNI plugins packed like upstream's cni-plugins tarball (members at the
/// top level, unpacked into /opt/cni/bin).
pub const CNI_PLUGINS: &[&str] = &["bridge", "host-local", "loopback", "portmap"];

/// The CNI tarball's name, as upstream names it.
pub const CNI_TGZ: &str = "cni-plugins-linux-amd64-v1.2.0.tgz";

/// An image of the kit: the layout's ref name and the upstream reference.
pub struct KitImage {
    pub layout_ref: &'static str,
    pub reference: &'static str,
}

/// kubeadm v1.25.6's `config images list` (etcd's tag is its default for
/// 1.25), kube-proxy included.
pub const KUBEADM_IMAGES: &[KitImage] = &[
    KitImage {
        layout_ref: "kube-apiserver",
        reference: "registry.k8s.io/kube-apiserver:v1.25.6",
    },
    KitImage {
        layout_ref: "kube-controller-manager",
        reference: "registry.k8s.io/kube-controller-manager:v1.25.6",
    },
    KitImage {
        layout_ref: "kube-scheduler",
        reference: "registry.k8s.io/kube-scheduler:v1.25.6",
    },
    KitImage {
        layout_ref: "kube-proxy",
        reference: "registry.k8s.io/kube-proxy:v1.25.6",
    },
    KitImage {
        layout_ref: "etcd",
        reference: "registry.k8s.io/etcd:3.5.6-0",
    },
    KitImage {
        layout_ref: "coredns",
        reference: "registry.k8s.io/coredns/coredns:v1.9.3",
    },
    KitImage {
        layout_ref: "pause",
        reference: "registry.k8s.io/pause:3.8",
    },
];

/// The CNI the demo deploys: the two images flannel v0.22.0's manifest
/// names ([`FLANNEL_MANIFEST`]).
pub const FLANNEL_IMAGES: &[KitImage] = &[
    KitImage {
        layout_ref: "flannel",
        reference: "docker.io/flannel/flannel:v0.22.0",
    },
    KitImage {
        layout_ref: "flannel-cni-plugin",
        reference: "docker.io/flannel/flannel-cni-plugin:v1.1.2",
    },
];

/// The demo platform's real programs as images, under their upstream
/// names: Vault 1.11.3 and local-path-provisioner (the kit's Go builds),
/// distribution 2.8.2 (Debian's docker-registry: Harbor's registry) and
/// busybox (Debian's static build: the provisioner's helper pods and the
/// stand-in apps' web server).
pub const PLATFORM_IMAGES: &[KitImage] = &[
    KitImage {
        layout_ref: "vault",
        reference: "docker.io/hashicorp/vault:1.11.3",
    },
    KitImage {
        layout_ref: "local-path-provisioner",
        reference: "docker.io/rancher/local-path-provisioner:v0.0.30",
    },
    KitImage {
        layout_ref: "registry",
        reference: "docker.io/library/registry:2.8.2",
    },
    KitImage {
        layout_ref: "busybox",
        reference: "docker.io/library/busybox:1.35",
    },
    KitImage {
        layout_ref: "mariadb",
        reference: "docker.io/library/mariadb:10.11",
    },
];

/// Every image of the kit's layout.
pub fn images() -> impl Iterator<Item = &'static KitImage> {
    KUBEADM_IMAGES
        .iter()
        .chain(FLANNEL_IMAGES)
        .chain(PLATFORM_IMAGES)
}

/// flannel v0.22.0's manifest as the demo deploys it (the file says what
/// differs from upstream's Documentation/kube-flannel.yml).
pub const FLANNEL_MANIFEST: &str = include_str!("../../files/kube-flannel.yml");

/// The demo platform's manifests (`tests/files/platform/`; each file's
/// header says what it is and what differs from upstream), served under
/// [`PLATFORM_FILES_DIR`].
pub const PLATFORM_FILES: &[(&str, &str)] = &[
    (
        "storage.yaml",
        include_str!("../../files/platform/storage.yaml"),
    ),
    (
        "vault.yaml",
        include_str!("../../files/platform/vault.yaml"),
    ),
    (
        "registry.yaml",
        include_str!("../../files/platform/registry.yaml"),
    ),
    (
        "mariadb.yaml",
        include_str!("../../files/platform/mariadb.yaml"),
    ),
    (
        "keycloak-standin.yaml",
        include_str!("../../files/platform/keycloak-standin.yaml"),
    ),
    (
        "portal-standin.yaml",
        include_str!("../../files/platform/portal-standin.yaml"),
    ),
];

/// Where the demo's file server has [`PLATFORM_FILES`].
pub const PLATFORM_FILES_DIR: &str = "files/platform";

/// Where the demo's file server has [`FLANNEL_MANIFEST`].
pub const FLANNEL_MANIFEST_PATH: &str = "files/flannel/v0.22.0/kube-flannel.yml";

/// Writes the kit's images into an OCI layout at `out` (ref names are
/// [`KitImage::layout_ref`]); returns (upstream reference, manifest digest).
pub fn build_images(out: &Path) -> Result<Vec<(String, String)>> {
    let mut l = Layout::new(out)?;
    let base = base_layer()?;
    let mut iptables = Vec::new();
    walk(&iptables_root(), "", &mut iptables).context(
        "Debian's iptables for the kube-proxy image (run `just setup`: tests/go/debian-iptables.sh)",
    )?;
    let iptables = tree_layer(iptables)?;
    let busybox = busybox_cp_layer()?;
    let busybox_full = busybox_full_layer()?;
    let mut registry = Vec::new();
    walk(&registry_root(), "", &mut registry).context(
        "Debian's docker-registry for the registry image (run `just setup`: tests/go/debian-registry.sh)",
    )?;
    let registry = tree_layer(registry)?;
    let mut mariadb = Vec::new();
    walk(&mariadb_root(), "", &mut mariadb).context(
        "Debian's MariaDB for the mariadb image (run `just setup`: tests/go/debian-mariadb.sh)",
    )?;
    let mariadb = tree_layer(mariadb)?;
    let mut done = Vec::new();
    for img in images() {
        let (layers, config) = match img.layout_ref {
            "kube-proxy" => (
                vec![
                    base.clone(),
                    iptables.clone(),
                    programs_layer("usr/local/bin", &["kube-proxy"])?,
                ],
                json!({"Env": [PATH_ENV]}),
            ),
            "etcd" => (
                vec![
                    base.clone(),
                    programs_layer("usr/local/bin", &["etcd", "etcdctl"])?,
                ],
                json!({"Env": [PATH_ENV]}),
            ),
            // Upstream's coredns and pause images run their binary at the root
            // as the entrypoint (kubeadm's CoreDNS Deployment gives only args).
            "coredns" => (
                vec![base.clone(), programs_layer("", &["coredns"])?],
                json!({"Entrypoint": ["/coredns"], "Env": [PATH_ENV]}),
            ),
            "pause" => (
                vec![programs_layer("", &["pause"])?],
                json!({"Entrypoint": ["/pause"], "User": "65535:65535"}),
            ),
            // flanneld execs iptables and iptables-restore for its masquerade
            // rules (Debian's, nft backend, as kube-proxy's); the install-cni
            // init container runs `cp` in this image too.
            "flannel" => (
                vec![
                    base.clone(),
                    iptables.clone(),
                    busybox.clone(),
                    programs_layer("opt/bin", &["flanneld"])?,
                ],
                json!({"Entrypoint": ["/opt/bin/flanneld"], "Env": [PATH_ENV]}),
            ),
            // Only for the init container `cp -f /flannel /opt/cni/bin/flannel`.
            "flannel-cni-plugin" => (
                vec![busybox.clone(), programs_layer("", &["flannel"])?],
                json!({"Env": [PATH_ENV]}),
            ),
            // Upstream's image runs `vault server` from a shell entrypoint;
            // the demo's StatefulSet gives the command.
            "vault" => (
                vec![
                    base.clone(),
                    busybox_full.clone(),
                    programs_layer("bin", &["vault"])?,
                ],
                json!({"Env": [PATH_ENV]}),
            ),
            "local-path-provisioner" => (
                vec![
                    base.clone(),
                    programs_layer("usr/bin", &["local-path-provisioner"])?,
                ],
                json!({"Env": [PATH_ENV]}),
            ),
            // As docker.io/library/registry: serve the config it is given.
            "registry" => (
                vec![base.clone(), registry.clone()],
                json!({"Entrypoint": ["/usr/bin/docker-registry"], "Cmd": ["serve", "/etc/docker/registry/config.yml"], "Env": [PATH_ENV]}),
            ),
            "busybox" => (
                vec![base.clone(), busybox_full.clone()],
                json!({"Cmd": ["sh"], "Env": [PATH_ENV]}),
            ),
            // Debian's MariaDB 10.11 server, busybox for the entrypoint's
            // shell and mariadb-install-db's tools.
            "mariadb" => (
                vec![
                    base.clone(),
                    busybox_full.clone(),
                    mariadb.clone(),
                    mariadb_etc_layer()?,
                ],
                json!({"Entrypoint": ["/bin/sh", "/usr/local/bin/mariadb-entrypoint.sh"], "Env": [PATH_ENV], "ExposedPorts": {"3306/tcp": {}}}),
            ),
            bin => (
                vec![base.clone(), programs_layer("usr/local/bin", &[bin])?],
                json!({"Env": [PATH_ENV]}),
            ),
        };
        let (m, d) = l.image_with(&layers, "amd64", config)?;
        l.tag(
            img.layout_ref,
            "application/vnd.oci.image.manifest.v1+json",
            &m,
        );
        done.push((img.reference.to_string(), d));
    }
    l.write_index()?;
    Ok(done)
}

/// The kit's image layout, built once per set of inputs and cached in the
/// fixtures directory (`just setup` makes it; tests only read it).
pub fn images_layout() -> PathBuf {
    crate::fixtures_dir().join("k8s-images")
}

/// A key over every input of [`build_images`]: the programs' and busybox's
/// bytes, and the iptables tree (paths, modes, contents).
pub fn images_key() -> Result<String> {
    let mut h = String::new();
    for n in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
        "etcd",
        "etcdctl",
        "coredns",
        "pause",
        "flanneld",
        "flannel",
        "vault",
        "local-path-provisioner",
    ] {
        h.push_str(&sha256_hex(&read_program(n)?));
    }
    h.push_str(&sha256_hex(&crate::content::host_busybox()?));
    let mut t = Vec::new();
    walk(&iptables_root(), "", &mut t)?;
    walk(&registry_root(), "", &mut t)?;
    walk(&mariadb_root(), "", &mut t)?;
    h.push_str(&sha256_hex(MARIADB_ENTRYPOINT.as_bytes()));
    for (p, n, m) in &t {
        let len = match n {
            Node::File(d) => sha256_hex(d),
            Node::Symlink(s) => s.display().to_string(),
            Node::Dir => String::new(),
        };
        h.push_str(&format!("{p}:{m:o}:{len}\n"));
    }
    Ok(sha256_hex(h.as_bytes()))
}

/// Builds [`images_layout`] unless it already holds the images of these
/// inputs; writes a fresh layout beside it and renames it into place.
pub fn ensure_images() -> Result<PathBuf> {
    let dir = images_layout();
    let key = images_key()?;
    let stamp = dir.join("kit-inputs.sha256");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(key.as_str()) {
        return Ok(dir);
    }
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    build_images(&tmp)?;
    std::fs::write(tmp.join("kit-inputs.sha256"), &key)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::rename(&tmp, &dir).with_context(|| format!("renaming into {}", dir.display()))?;
    Ok(dir)
}

/// The CNI plugins as a deterministic `.tgz` (members at the top level, like
/// upstream's cni-plugins-linux-amd64 archive).
pub fn cni_tgz() -> Result<Vec<u8>> {
    let mut e = Vec::new();
    for n in CNI_PLUGINS {
        e.push((format!("./{n}"), Node::File(read_program(n)?), 0o755));
    }
    Ok(tree_layer(e)?.0)
}

/// Lays the kit's node binaries and the CNI tarball into `dir` for the file
/// server (symlinks to the fixtures cache: nginx follows them, and nothing
/// of a few hundred MB is copied per test); returns name -> sha256.
pub fn serve_files(dir: &Path) -> Result<BTreeMap<String, String>> {
    std::fs::create_dir_all(dir)?;
    let mut sums = BTreeMap::new();
    for (name, _) in NODE_FILES {
        let src = bin_dir().join(name);
        let bytes = std::fs::read(&src)
            .with_context(|| format!("reading {} (run `just setup`)", src.display()))?;
        std::os::unix::fs::symlink(&src, dir.join(name))?;
        sums.insert(name.to_string(), sha256_hex(&bytes));
    }
    let tgz = cni_tgz()?;
    std::fs::write(dir.join(CNI_TGZ), &tgz)?;
    sums.insert(CNI_TGZ.to_string(), sha256_hex(&tgz));
    Ok(sums)
}

/// Runs `program args` and returns stdout+stderr, failing with both on a
/// non-zero exit.
pub fn run(program: &Path, args: &[&str]) -> Result<String> {
    let o = std::process::Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {}", program.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    if !o.status.success() {
        bail!(
            "{} {args:?} exited with {}: {text}",
            program.display(),
            o.status
        );
    }
    Ok(text)
}
