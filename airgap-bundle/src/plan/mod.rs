//! The deploy plan: from a catalog and a cluster file, the ordered steps the
//! agent will run: which component, which artifacts, which values, which
//! readiness checks, in waves that may run in parallel. Every step's data
//! comes from the catalog's `deploy:` entries with the cluster file's values
//! filled in, so an engine can execute the plan; the text form only renders
//! it. Pure: the same inputs give the same plan, so it is snapshot-tested.

pub mod node;
mod render;

use crate::catalog::{Artifact, Catalog, install_artifact};
use crate::cluster::Cluster;
use crate::deploy::{Deploy, Readiness, Value};
pub use crate::kinds::Release;
use crate::manifest::BundleManifest;
use anyhow::{Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Serialize)]
pub struct Plan {
    pub platform: String,
    pub cluster: String,
    /// Components by depth in the dependency graph (a component's wave is
    /// one more than its deepest dependency's). The agent starts each
    /// component once its own dependencies are ready, so components of a
    /// wave run side by side and a wave's start may overlap the previous
    /// one's end; a wave is the unit of the offline check and of `--from`.
    pub waves: Vec<Vec<String>>,
    pub steps: Vec<Step>,
    /// Optional components left out, and why.
    pub skipped: Vec<String>,
    pub capacity: Capacity,
    /// The join credential's policy, and the nodes it is kept for.
    pub join: crate::join::JoinPolicy,
    pub listed_nodes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Step {
    pub wave: usize,
    pub component: String,
    pub namespace: Option<String>,
    /// The Helm release, when the component is one.
    pub release: Option<String>,
    pub depends_on: Vec<String>,
    pub artifacts: Vec<String>,
    pub values: BTreeMap<String, Value>,
    /// What the agent applies, in order, each journaled on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub releases: Vec<Release>,
    pub readiness: Vec<Readiness>,
    /// Where this appliance deliberately differs from the upstream scripts.
    pub notes: Vec<String>,
}

/// The catalog component whose step forms the cluster (kubeadm, the CNI);
/// every other step is the platform's.
pub const CLUSTER_STEP: &str = "kubernetes";

impl Step {
    /// Every readiness check of this step the agent could not run, each
    /// named with the component: an unsupported kind of check, or a hook
    /// without the install item it reads (a Harbor fill, Vault's init).
    pub fn unsupported_checks(&self) -> Vec<String> {
        use crate::deploy::CheckSite;
        let site = if self.component == CLUSTER_STEP {
            CheckSite::Cluster
        } else {
            CheckSite::Platform
        };
        self.readiness
            .iter()
            .filter_map(|r| {
                let why = r.unsupported(site).or_else(|| {
                    let Readiness::Hook { name } = r else {
                        return None;
                    };
                    let has = self.releases.iter().any(|x| x.item.hooks().contains(name));
                    (!has).then(|| match crate::kinds::Install::provider(*name) {
                        Some(item) => {
                            format!("{r}: needs a `{item}` install item in the same component")
                        }
                        None => format!("{r}: no install kind makes it hold"),
                    })
                })?;
                Some(format!("{}: {why}", self.component))
            })
            .collect()
    }
}

#[derive(Debug, Serialize, Default)]
pub struct KindTotal {
    pub count: usize,
    /// None until a bundle says (never guessed).
    pub bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct NodeNeed {
    pub node: String,
    pub role: String,
    pub vcpus: u32,
    pub memory_gib: u32,
    pub disk: String,
}

#[derive(Debug, Serialize)]
pub struct Capacity {
    pub by_kind: BTreeMap<String, KindTotal>,
    pub bundle_bytes: Option<u64>,
    pub unverified: usize,
    pub supplied: usize,
    pub nodes: Vec<NodeNeed>,
}

pub fn build(
    catalog: &Catalog,
    cluster: &Cluster,
    bundle: Option<&BundleManifest>,
) -> Result<Plan> {
    if cluster.platform != catalog.platform.name {
        bail!(
            "cluster file is for platform {:?}, the catalog is {:?}",
            cluster.platform,
            catalog.platform.name
        );
    }
    let settings = cluster.settings();
    let enabled: BTreeSet<&str> = cluster.enable.iter().map(String::as_str).collect();
    let included: Vec<&crate::catalog::Component> = catalog
        .components
        .iter()
        .filter(|c| !c.optional || enabled.contains(c.name.as_str()))
        .collect();
    let names: BTreeSet<&str> = included.iter().map(|c| c.name.as_str()).collect();
    let skipped = catalog
        .components
        .iter()
        .filter(|c| !names.contains(c.name.as_str()))
        .map(|c| {
            format!(
                "{} (optional; add it to `enable` in the cluster file)",
                c.name
            )
        })
        .collect();
    for c in &included {
        for d in &c.depends_on {
            if !names.contains(d.as_str()) {
                bail!("component {} needs {d}, which is not enabled", c.name);
            }
        }
    }
    // Kahn's levels: a component's wave is one more than its latest dependency's.
    let mut wave: BTreeMap<&str, usize> = BTreeMap::new();
    while wave.len() < included.len() {
        let before = wave.len();
        for c in &included {
            if wave.contains_key(c.name.as_str()) {
                continue;
            }
            if c.depends_on.iter().all(|d| wave.contains_key(d.as_str())) {
                let w = c
                    .depends_on
                    .iter()
                    .map(|d| wave[d.as_str()] + 1)
                    .max()
                    .unwrap_or(0);
                wave.insert(&c.name, w);
            }
        }
        if wave.len() == before {
            bail!("the components' dependencies form a cycle");
        }
    }
    let sizes: BTreeMap<&str, u64> = bundle
        .map(|b| {
            b.artifacts
                .iter()
                .map(|a| (a.name.as_str(), a.size))
                .collect()
        })
        .unwrap_or_default();
    let mut by_kind: BTreeMap<String, KindTotal> = BTreeMap::new();
    let (mut unverified, mut supplied) = (0, 0);
    let mut steps = Vec::new();
    for c in &included {
        let arts: Vec<&Artifact> = c
            .artifacts
            .iter()
            .filter(|a| a.applies(&settings))
            .collect();
        for a in &arts {
            let k = by_kind.entry(a.kind().to_string()).or_default();
            k.count += 1;
            // A kind's bytes are known only when every one of its artifacts is.
            let size = sizes.get(a.ref_name().as_str()).copied();
            k.bytes = match (k.count, k.bytes, size) {
                (1, _, s) => s,
                (_, Some(b), Some(s)) => Some(b + s),
                _ => None,
            };
            unverified += usize::from(a.unverified());
            supplied += usize::from(a.supplied());
        }
        let deploy: Vec<&Deploy> = c.deploy.iter().filter(|d| d.applies(&settings)).collect();
        let deploy = match deploy.as_slice() {
            [] => Deploy::default(),
            [d] => d
                .resolve(cluster)
                .map_err(|e| anyhow::anyhow!("component {}: deploy: {e}", c.name))?,
            _ => bail!(
                "component {}: {} deploy entries apply to this cluster; their `when`s must tell them apart",
                c.name,
                deploy.len()
            ),
        };
        let own: Vec<Artifact> = arts.iter().map(|a| (*a).clone()).collect();
        let releases = deploy
            .install
            .iter()
            .map(|x| {
                let artifact = install_artifact(x, &own)
                    .map_err(|e| {
                        anyhow::anyhow!("component {}: install {}: {e}", c.name, x.name())
                    })?
                    .map(Artifact::ref_name)
                    .unwrap_or_default();
                Ok(Release {
                    item: x.clone(),
                    artifact,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        steps.push(Step {
            wave: wave[c.name.as_str()],
            component: c.name.clone(),
            namespace: c.namespace.clone(),
            release: deploy.release,
            depends_on: c.depends_on.clone(),
            artifacts: arts.iter().map(|a| a.key()).collect(),
            values: deploy.values,
            releases,
            readiness: deploy.ready,
            notes: deploy.notes,
        });
    }
    // A check the agent cannot run is refused here (plan, seeds,
    // check-offline), all at once, never found at a site.
    let unsupported: Vec<String> = steps.iter().flat_map(Step::unsupported_checks).collect();
    if !unsupported.is_empty() {
        bail!(
            "the plan asks for readiness checks the agent cannot run:\n  {}",
            unsupported.join("\n  ")
        );
    }
    steps.sort_by(|a, b| a.wave.cmp(&b.wave).then(a.component.cmp(&b.component)));
    let max = steps.iter().map(|s| s.wave).max().unwrap_or(0);
    let waves = (0..=max)
        .map(|w| {
            steps
                .iter()
                .filter(|s| s.wave == w)
                .map(|s| s.component.clone())
                .collect()
        })
        .collect();
    let data = match bundle {
        Some(b) => format!(
            "data partition >= {} GiB (the bundle) + 20 GiB root",
            b.totals.unique_bytes.div_ceil(1 << 30)
        ),
        None => "data partition >= the bundle's size (unknown until bundled) + 20 GiB root".into(),
    };
    let mut nodes = vec![NodeNeed {
        node: cluster.master.hostname.clone(),
        role: "master".into(),
        vcpus: 2,
        memory_gib: 8,
        disk: data.clone(),
    }];
    for w in &cluster.workers {
        let disk = match (cluster.storage.kind.as_str(), &cluster.storage.rook_ceph) {
            ("rook-ceph", Some(r)) => format!(
                "{data}; raw unused disk(s) {} for Ceph",
                r.devices.join(", ")
            ),
            _ => data.clone(),
        };
        nodes.push(NodeNeed {
            node: w.hostname.clone(),
            role: "worker".into(),
            vcpus: 2,
            memory_gib: 4,
            disk,
        });
    }
    Ok(Plan {
        platform: format!("{} {}", catalog.platform.name, catalog.platform.version),
        cluster: cluster.name.clone(),
        waves,
        steps,
        skipped,
        join: cluster.join,
        listed_nodes: std::iter::once(&cluster.master.hostname)
            .chain(cluster.workers.iter().map(|w| &w.hostname))
            .cloned()
            .collect(),
        capacity: Capacity {
            by_kind,
            bundle_bytes: bundle.map(|b| b.totals.unique_bytes),
            unverified,
            supplied,
            nodes,
        },
    })
}
