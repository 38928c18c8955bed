//! The K-PaaS 1.4.1 catalog against the team's fact files
//! (`../shared/kpaas/*.tsv`): every row read in an upstream file (V) must be
//! in the catalog with the same sha256 or digest.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use airgap_bundle::ImageRef;
use airgap_bundle::catalog::{Artifact, Catalog};
use std::collections::BTreeMap;
use std::path::PathBuf;

fn catalog() -> Catalog {
    Catalog::from_yaml(
        airgap_bundle::platforms::builtin("k-paas-1.4.1").unwrap(),
        "k-paas-1.4.1",
    )
    .unwrap()
}

/// The fact files, as copied into the repository so CI is hermetic; when the
/// team's `../shared/kpaas` sits beside the checkout, the copy must match it.
fn tsv(name: &str) -> Option<Vec<BTreeMap<String, String>>> {
    let here =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/kpaas")).join(name);
    let text = std::fs::read_to_string(&here).unwrap();
    let shared =
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/kpaas")).join(name);
    if let Ok(upstream) = std::fs::read_to_string(&shared) {
        assert!(
            upstream == text,
            "{} differs from {}: copy the new facts in and update the catalog",
            here.display(),
            shared.display()
        );
    }
    let mut lines = text.lines();
    let head: Vec<&str> = lines.next().unwrap().split('\t').collect();
    Some(
        lines
            .map(|l| {
                head.iter()
                    .map(|h| h.to_string())
                    .zip(l.split('\t').map(str::to_string))
                    .collect()
            })
            .collect(),
    )
}

#[test]
fn the_catalog_is_valid_and_ordered_like_upstream() {
    let c = catalog();
    let order: Vec<&str> = c.components.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        order,
        [
            "kubernetes",
            "ingress-nginx",
            "storage",
            "kubeflow",
            "kubeflow-runtimes",
            "vault",
            "harbor",
            "mariadb",
            "keycloak",
            "portal",
            "pipeline",
            "source-control"
        ]
    );
    let deps = |n: &str| {
        c.components
            .iter()
            .find(|x| x.name == n)
            .unwrap()
            .depends_on
            .clone()
    };
    // The real dependencies only (what deploys at once waits for nothing
    // else), and upstream's order is one they allow: each component is
    // listed after everything it needs.
    assert_eq!(deps("ingress-nginx"), ["kubernetes"]);
    assert_eq!(deps("storage"), ["kubernetes"]);
    assert_eq!(deps("kubeflow"), ["storage"]);
    assert_eq!(deps("vault"), ["storage"]);
    assert_eq!(deps("keycloak"), ["mariadb", "harbor"]);
    assert_eq!(deps("portal"), ["keycloak", "vault", "harbor"]);
    for (i, n) in order.iter().enumerate() {
        for d in deps(n) {
            assert!(order[..i].contains(&d.as_str()), "{n} is listed before {d}");
        }
    }
    assert!(
        c.components
            .iter()
            .filter(|x| x.optional)
            .map(|x| x.name.as_str())
            .eq(["kubeflow-runtimes", "pipeline", "source-control"])
    );
    // Storage is a choice: every storage artifact names its variant.
    let st = c.components.iter().find(|x| x.name == "storage").unwrap();
    assert!(
        st.artifacts
            .iter()
            .all(|a| a.when().contains_key("storage"))
    );
    // Binaries for both architectures where upstream publishes both.
    let arches = |n: &str| {
        c.artifacts()
            .filter_map(|(_, a)| match a {
                Artifact::File(f) if f.name() == n => Some(f.arch.clone()),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    for n in [
        "kubeadm",
        "kubelet",
        "kubectl",
        "etcd",
        "cri-o",
        "runc",
        "crictl",
        "helm",
        "calicoctl",
        "cni-plugins",
        "skopeo",
    ] {
        assert_eq!(arches(n), ["amd64", "arm64"], "{n}");
    }
}

#[test]
fn every_verified_binary_is_in_the_catalog_with_its_sha256() {
    let Some(rows) = tsv("binaries.tsv") else {
        return;
    };
    let c = catalog();
    let files: BTreeMap<String, Option<String>> = c
        .artifacts()
        .filter_map(|(_, a)| match a {
            Artifact::File(f) => Some((f.url.clone().unwrap_or_default(), f.sha256.clone())),
            _ => None,
        })
        .collect();
    let mut checked = 0;
    for r in rows
        .iter()
        .filter(|r| r["verified"] == "V" && r["url"].starts_with("https://") && r["sha256"] != "-")
    {
        assert_eq!(
            files.get(&r["url"]),
            Some(&Some(r["sha256"].clone())),
            "binaries.tsv row {} {} {}",
            r["name"],
            r["version"],
            r["arch"]
        );
        checked += 1;
    }
    assert!(checked >= 23, "only {checked} rows checked");
}

#[test]
fn every_verified_image_is_in_the_catalog_with_its_digest() {
    let Some(rows) = tsv("images.tsv") else {
        return;
    };
    let c = catalog();
    let images: BTreeMap<String, bool> = c
        .artifacts()
        .filter_map(|(_, a)| match a {
            Artifact::Image(i) => Some((
                ImageRef::parse(&i.reference).unwrap().to_string(),
                i.unverified,
            )),
            _ => None,
        })
        .collect();
    let mut checked = 0;
    for r in rows.iter().filter(|r| r["verified"] == "V") {
        let want = ImageRef::parse(&r["image_ref"]).unwrap();
        if r["pinned_digest"] != "-" {
            assert_eq!(
                want.digest.as_ref().map(|d| d.to_string()),
                Some(r["pinned_digest"].clone()),
                "{}",
                r["image_ref"]
            );
        }
        assert_eq!(
            images.get(&want.to_string()),
            Some(&false),
            "images.tsv row {} is missing or marked unverified",
            r["image_ref"]
        );
        checked += 1;
    }
    assert!(checked > 100, "only {checked} rows checked");
    // Inferred rows are there too, marked as such (or supplied by the vendor).
    for r in rows.iter().filter(|r| {
        r["verified"] == "I"
            && !r["image_ref"].contains('{')
            && !r["image_ref"].contains("TAG_UNKNOWN")
            && !r["image_ref"].contains('<')
    }) {
        let want = ImageRef::parse(&r["image_ref"]).unwrap().to_string();
        assert!(images.contains_key(&want), "inferred row {want} is missing");
    }
}

#[test]
fn every_verified_chart_and_manifest_is_in_the_catalog() {
    let Some(rows) = tsv("charts.tsv") else {
        return;
    };
    let c = catalog();
    let names: Vec<String> = c.artifacts().map(|(_, a)| a.ref_name()).collect();
    for r in rows.iter().filter(|r| r["verified"] == "V") {
        let needle = match r["chart"].as_str() {
            "hashicorp/vault" => "helm.releases.hashicorp.com/vault:0.22.0",
            s if s.contains("ingress-nginx") => "ingress-nginx-deploy.yaml",
            s if s.contains("nfs-subdir") => "nfs-provisioner-deployment.yaml",
            s if s.contains("rook-ceph") => "rook-operator.yaml",
            s if s.contains("Kubeflow") => "cp-deployment-v1.4.1.tar.gz",
            other => panic!("charts.tsv row {other} has no rule here"),
        };
        assert!(
            names.iter().any(|n| n.contains(needle)),
            "charts.tsv row {} ({needle}) missing",
            r["chart"]
        );
    }
}
