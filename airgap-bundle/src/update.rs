//! Updates, as pure rules: whether a site may take a bundle (same platform,
//! a serial above its own, every blob a delta left out already held, the
//! Kubernetes version it runs), and what the update changes, release by
//! release, from the plan the site runs to the plan of the new bundle.
//! The master applies the result; the builder and tests read it too.

use crate::Digest;
use crate::inventory::Inventory;
use crate::manifest::BundleManifest;
use crate::plan::Step;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// Every reason the site must refuse `new` (empty: it may take it). All are
/// named at once, and the caller changes nothing when any is given.
/// `holds` says whether the site's store has a blob; `new_kubernetes` is the
/// Kubernetes version the new bundle's plan forms.
pub fn refusals(
    site: &Inventory,
    new: &BundleManifest,
    new_digest: &Digest,
    new_kubernetes: Option<&str>,
    holds: &dyn Fn(&Digest) -> bool,
) -> Vec<String> {
    let mut out = Vec::new();
    if new.platform != site.platform {
        out.push(format!(
            "the bundle is for platform {:?}; this site runs {:?} (an update keeps the platform)",
            new.platform, site.platform
        ));
    }
    if *new_digest == site.bundle {
        out.push(format!(
            "the bundle is the one this site runs ({} serial {})",
            site.platform_version, site.serial
        ));
    } else if new.serial <= site.serial {
        out.push(format!(
            "the bundle's serial {} ({}) is not above this site's serial {} ({}): a site never goes back to an older or equal build (anti-rollback); build from a catalog with `serial: {}` or more",
            new.serial,
            new.platform_version,
            site.serial,
            site.platform_version,
            site.serial + 1
        ));
    }
    if let Some(d) = &new.delta {
        let missing: Vec<&Digest> = d
            .omitted
            .iter()
            .map(|b| &b.digest)
            .filter(|b| !holds(b))
            .collect();
        if !missing.is_empty() {
            let shown: Vec<String> = missing.iter().take(5).map(|d| d.to_string()).collect();
            out.push(format!(
                "the delta was built against {} and leaves out {} blob(s) this site does not hold ({}{}): bring the full bundle, or a delta built with `--since` from this site's inventory",
                d.base,
                missing.len(),
                shown.join(", "),
                if missing.len() > 5 { ", …" } else { "" }
            ));
        }
    }
    if let (Some(run), Some(new_k)) = (site.kubernetes.as_deref(), new_kubernetes)
        && run != new_k
    {
        out.push(format!(
            "the bundle forms Kubernetes {new_k}; this site runs {run}: an update does not upgrade nodes (out of scope: re-image the site, or build the update with Kubernetes {run})"
        ));
    }
    out
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Left as it is (a Helm release keeps its revision).
    Unchanged,
    /// Upgraded (`helm upgrade`) or re-applied.
    Upgrade,
    Install,
    /// Uninstalled: the new version no longer has it.
    Remove,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReleaseChange {
    pub component: String,
    pub release: String,
    /// The wave it runs in: the new plan's, or the old one's for a removal.
    pub wave: usize,
    pub change: Change,
    /// What differs ("chart artifact", "values", "image …"), for the report.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
}

/// What an update does, release by release: installs and upgrades in the
/// new plan's wave order, then removals in reverse wave order of the old
/// plan (what depends on a component goes before it).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ReleaseDiff {
    pub changes: Vec<ReleaseChange>,
}

impl ReleaseDiff {
    pub fn count(&self, c: Change) -> usize {
        self.changes.iter().filter(|x| x.change == c).count()
    }

    /// The releases that change, in the order they are applied.
    pub fn work(&self) -> impl Iterator<Item = &ReleaseChange> {
        self.changes
            .iter()
            .filter(|c| c.change != Change::Unchanged)
    }
}

/// What one release depends on: its own definition, the bytes of the
/// artifact it reads, and every image of its component (a patched image
/// under the same tag still changes what the release runs).
fn inputs(s: &Step, r: &crate::kinds::Release, m: &BundleManifest) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    out.insert(
        "definition".into(),
        serde_json::to_string(&r.item).unwrap_or_default(),
    );
    out.insert(
        "values".into(),
        serde_json::to_string(&s.values).unwrap_or_default(),
    );
    out.insert("namespace".into(), format!("{:?}", s.namespace));
    let digest_of = |name: &str| {
        m.artifacts
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.digest.to_string())
            .unwrap_or_else(|| "absent".into())
    };
    if let Some(a) = r.artifact() {
        out.insert("artifact".into(), format!("{a}@{}", digest_of(a)));
    }
    // The plan names artifacts by catalog key (`image:<ref>`).
    for a in s.artifacts.iter().filter_map(|a| a.strip_prefix("image:")) {
        out.insert(format!("image {a}"), digest_of(a));
    }
    out
}

/// The release diff between the plan a site runs (`old`, with the manifest
/// it came from) and a new bundle's plan.
pub fn diff(
    old: &[Step],
    old_m: &BundleManifest,
    new: &[Step],
    new_m: &BundleManifest,
) -> ReleaseDiff {
    let key = |s: &Step, r: &crate::kinds::Release| (s.component.clone(), r.name());
    // (wave, place in the old plan, inputs) per release.
    let mut before = BTreeMap::new();
    for s in old {
        for r in &s.releases {
            let place = before.len();
            before.insert(key(s, r), (s.wave, place, inputs(s, r, old_m)));
        }
    }
    let mut changes = Vec::new();
    let mut seen = BTreeSet::new();
    let mut new_sorted: Vec<&Step> = new.iter().collect();
    new_sorted.sort_by_key(|s| s.wave);
    for s in new_sorted {
        for r in &s.releases {
            let k = key(s, r);
            let now = inputs(s, r, new_m);
            let (change, why) = match before.get(&k) {
                None => (Change::Install, vec![]),
                Some((_, _, then)) => {
                    // An image the component gains or loses changes none of
                    // its releases (their definitions name what they run);
                    // one it keeps under another digest does.
                    let image = |k: &str| k.starts_with("image ");
                    let why: Vec<String> = now
                        .iter()
                        .filter(|(k, v)| match then.get(*k) {
                            Some(was) => was != *v,
                            None => !image(k),
                        })
                        .map(|(k, _)| k.clone())
                        .chain(
                            then.keys()
                                .filter(|k| !now.contains_key(*k) && !image(k))
                                .map(|k| format!("{k} (gone)")),
                        )
                        .collect();
                    if why.is_empty() {
                        (Change::Unchanged, why)
                    } else {
                        (Change::Upgrade, why)
                    }
                }
            };
            seen.insert(k.clone());
            changes.push(ReleaseChange {
                component: k.0,
                release: k.1,
                wave: s.wave,
                change,
                why,
            });
        }
    }
    let mut removed: Vec<(usize, usize, ReleaseChange)> = before
        .into_iter()
        .filter(|(k, _)| !seen.contains(k))
        .map(|((component, release), (wave, place, _))| {
            let c = ReleaseChange {
                component,
                release,
                wave,
                change: Change::Remove,
                why: vec![],
            };
            (wave, place, c)
        })
        .collect();
    // Later waves first, and within a component its last release first.
    removed.sort_by_key(|r| std::cmp::Reverse((r.0, r.1)));
    changes.extend(removed.into_iter().map(|(_, _, c)| c));
    ReleaseDiff { changes }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use crate::inventory::INVENTORY_VERSION;
    use crate::manifest::{BaseRef, Delta, OmittedBlob};

    fn dg(n: u8) -> Digest {
        Digest::of(&[n])
    }

    fn manifest(serial: u64, arts: &[(&str, &str, u8)]) -> BundleManifest {
        let artifacts: Vec<serde_json::Value> = arts
            .iter()
            .map(|(kind, name, n)| {
                serde_json::json!({
                    "kind": kind, "component": "c", "name": name, "source": name,
                    "digest": dg(*n), "media_type": "application/vnd.oci.image.manifest.v1+json",
                    "size": 1
                })
            })
            .collect();
        serde_json::from_value(serde_json::json!({
            "bundle_version": 2, "platform": "demo", "platform_version": format!("0.{serial}.0"),
            "serial": serial, "created": "2026-01-01T00:00:00Z", "image_platforms": ["linux/amd64"],
            "artifacts": artifacts, "files": {},
            "totals": {"artifacts": 0, "blobs": 0, "unique_bytes": 0, "referenced_bytes": 0}
        }))
        .unwrap()
    }

    fn site(serial: u64) -> Inventory {
        Inventory {
            inventory_version: INVENTORY_VERSION,
            cluster: "lab".into(),
            taken: "2026-01-02T00:00:00Z".into(),
            platform: "demo".into(),
            platform_version: format!("0.{serial}.0"),
            serial,
            bundle: dg(100),
            kubernetes: Some("v1.25.6".into()),
            history: vec![],
            blobs: [dg(1), dg(2)].into(),
            releases: vec![],
            releases_note: None,
            nodes: vec![],
        }
    }

    #[test]
    fn a_newer_serial_of_the_same_platform_and_kubernetes_is_taken() {
        let m = manifest(2, &[]);
        let r = refusals(&site(1), &m, &dg(101), Some("v1.25.6"), &|_| true);
        assert!(r.is_empty(), "{r:?}");
    }

    #[test]
    fn an_equal_or_older_serial_is_refused_as_a_rollback() {
        for serial in [0, 1, 2] {
            let r = refusals(&site(2), &manifest(serial, &[]), &dg(101), None, &|_| true);
            assert_eq!(r.len(), 1, "{r:?}");
            assert!(r[0].contains("anti-rollback"), "{}", r[0]);
            assert!(r[0].contains("serial: 3"), "{}", r[0]);
        }
        // The very bundle the site runs is named as such.
        let r = refusals(&site(2), &manifest(2, &[]), &dg(100), None, &|_| true);
        assert!(r[0].contains("the one this site runs"), "{r:?}");
    }

    #[test]
    fn every_refusal_is_named_at_once() {
        let mut m = manifest(1, &[]);
        m.platform = "k-paas-1.4.1".into();
        m.delta = Some(Delta {
            base: BaseRef {
                platform: "demo".into(),
                platform_version: "0.0.9".into(),
                serial: 1,
                bundle: dg(99),
            },
            omitted: vec![
                OmittedBlob {
                    digest: dg(1),
                    size: 5,
                },
                OmittedBlob {
                    digest: dg(7),
                    size: 9,
                },
            ],
        });
        let held = site(2).blobs;
        let r = refusals(&site(2), &m, &dg(101), Some("v1.26.0"), &|b| {
            held.contains(b)
        });
        assert_eq!(r.len(), 4, "{r:#?}");
        assert!(r[0].contains("platform \"k-paas-1.4.1\""));
        assert!(r[1].contains("anti-rollback"));
        assert!(r[2].contains("1 blob(s) this site does not hold"));
        assert!(r[2].contains(&dg(7).to_string()) && !r[2].contains(&dg(1).to_string()));
        assert!(r[3].contains("does not upgrade nodes"));
    }

    fn steps(yaml: &str) -> Vec<Step> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    const OLD: &str = r#"
- wave: 1
  component: storage
  namespace: null
  release: null
  depends_on: [kubernetes]
  artifacts: ["file:files.kpaas.local/storage.yaml:any", "image:docker.io/rancher/lpp:v1"]
  values: {}
  releases:
  - manifest: storage.yaml
    artifact: files.kpaas.local/storage.yaml:any
  - default-storage-class: paasta-cp-storageclass
  readiness: []
  notes: []
- wave: 2
  component: apps
  namespace: demo
  release: null
  depends_on: [storage]
  artifacts: ["image:registry.demo.kpaas.test/demo/app-a:1.0", "chart:files.demo.kpaas.test/charts/demo-app:0.1.0"]
  values: {}
  releases:
  - chart: {chart: demo-app, release: demo, namespace: demo, set: {replicas: 1}}
    artifact: files.demo.kpaas.test/charts/demo-app:0.1.0
  readiness: []
  notes: []
- wave: 2
  component: old
  namespace: old
  release: null
  depends_on: [storage]
  artifacts: []
  values: {}
  releases:
  - manifest: a.yaml
  - manifest: b.yaml
  readiness: []
  notes: []
"#;

    const ARTS: &[(&str, &str, u8)] = &[
        ("file", "files.kpaas.local/storage.yaml:any", 1),
        ("image", "docker.io/rancher/lpp:v1", 2),
        ("image", "registry.demo.kpaas.test/demo/app-a:1.0", 3),
        ("chart", "files.demo.kpaas.test/charts/demo-app:0.1.0", 4),
    ];

    fn of(diff: &ReleaseDiff) -> Vec<(String, Change)> {
        diff.changes
            .iter()
            .map(|c| (format!("{}/{}", c.component, c.release), c.change))
            .collect()
    }

    #[test]
    fn the_same_plan_and_content_changes_nothing() {
        let m = manifest(1, ARTS);
        let d = super::diff(&steps(OLD), &m, &steps(OLD), &manifest(2, ARTS));
        assert_eq!(d.work().count(), 0, "{d:#?}");
        assert_eq!(d.count(Change::Unchanged), 5);
    }

    #[test]
    fn a_value_an_image_an_artifact_a_new_and_a_gone_component_are_each_told_apart() {
        // The chart gets a new value; storage's image is patched under the
        // same tag; a component is added in wave 3; `old` is gone.
        let new_yaml = OLD
            .replace("set: {replicas: 1}", "set: {replicas: 1, banner: two}")
            .split("- wave: 2\n  component: old")
            .next()
            .unwrap()
            .to_string()
            + r#"
- wave: 3
  component: extra
  namespace: extra
  release: null
  depends_on: [apps]
  artifacts: []
  values: {}
  releases:
  - manifest: extra.yaml
  readiness: []
  notes: []
"#;
        let mut arts = ARTS.to_vec();
        arts[1].2 = 20;
        let d = super::diff(
            &steps(OLD),
            &manifest(1, ARTS),
            &steps(&new_yaml),
            &manifest(2, &arts),
        );
        assert_eq!(
            of(&d),
            vec![
                ("storage/storage.yaml".into(), Change::Upgrade),
                (
                    "storage/default-storage-class/paasta-cp-storageclass".into(),
                    Change::Upgrade
                ),
                ("apps/demo".into(), Change::Upgrade),
                ("extra/extra.yaml".into(), Change::Install),
                // Removals last, the component's last release first.
                ("old/b.yaml".into(), Change::Remove),
                ("old/a.yaml".into(), Change::Remove),
            ],
            "{d:#?}"
        );
        assert_eq!(d.changes[0].why, vec!["image docker.io/rancher/lpp:v1"]);
        assert_eq!(d.changes[2].why, vec!["definition"]);
        // A new chart archive under the same name is a change of its artifact.
        let mut arts = ARTS.to_vec();
        arts[3].2 = 40;
        let d = super::diff(
            &steps(OLD),
            &manifest(1, ARTS),
            &steps(OLD),
            &manifest(2, &arts),
        );
        assert_eq!(of(&d)[2], ("apps/demo".into(), Change::Upgrade));
        assert_eq!(d.changes[2].why, vec!["artifact"]);
        assert_eq!(d.work().count(), 1);
    }
}
