//! The plan as the nodes receive it: the typed `kubernetes` step and the
//! platform's steps, made by `kpaas-builder seeds` for a first boot and by
//! the master when it re-plans for an update (one function, so both agree).

use crate::Digest;
use crate::catalog::Catalog;
use crate::cluster::Cluster;
use crate::manifest::BundleManifest;
use crate::node::KubernetesStep;
use crate::plan::CLUSTER_STEP as KUBERNETES;
use anyhow::{Result, bail};

/// What the nodes are told to do after the seed registry serves: form the
/// cluster with the plan's `kubernetes` step, then (the master) deploy the
/// plan's other steps. Empty: stop at the registry.
#[derive(Debug, Default)]
pub struct NodePlan {
    pub kubernetes: Option<KubernetesStep>,
    pub platform: Vec<crate::plan::Step>,
    /// The bundle the plan was checked against, by digest.
    pub bundle_digest: Option<Digest>,
}

/// The plan for this cluster as the nodes receive it (the same data
/// `kpaas-builder plan` prints); `platform: false` stops at a ready cluster.
/// With the bundle, every artifact a release reads must be in it (all that
/// are not are named at once).
pub fn node_plan(
    catalog: &Catalog,
    c: &Cluster,
    platform: bool,
    bundle: Option<&BundleManifest>,
) -> Result<NodePlan> {
    let plan = crate::plan::build(catalog, c, bundle)?;
    if let Some(m) = bundle {
        let missing: Vec<String> = plan
            .steps
            .iter()
            .flat_map(|s| {
                s.releases.iter().filter_map(move |r| {
                    let a = r.artifact()?;
                    (!m.artifacts.iter().any(|x| x.name == a))
                        .then(|| format!("{}: {} reads {a}", s.component, r.name()))
                })
            })
            .collect();
        if !missing.is_empty() {
            bail!(
                "the bundle lacks {} artifact(s) the plan's releases read (rebuild it from this catalog):\n  {}",
                missing.len(),
                missing.join("\n  ")
            );
        }
    }
    let (kube, rest): (Vec<_>, Vec<_>) = plan
        .steps
        .into_iter()
        .partition(|s| s.component == KUBERNETES);
    let Some(k) = kube.into_iter().next() else {
        bail!(
            "platform {}: the catalog has no {KUBERNETES:?} component, so the nodes would not know how to form the cluster",
            catalog.platform.name
        );
    };
    // Typed and checked here, on the connected machine: a node never finds
    // a bad CIDR or a missing CNI manifest at its first boot.
    let version = match bundle {
        Some(m) => crate::render::kubernetes_version(m)?,
        None => None,
    };
    let kubernetes = KubernetesStep::from_plan(&k.values, k.readiness, version).map_err(|p| {
        anyhow::anyhow!(
            "platform {}: the plan's {KUBERNETES:?} step cannot form a cluster:\n  {}",
            catalog.platform.name,
            p.join("\n  ")
        )
    })?;
    Ok(NodePlan {
        kubernetes: Some(kubernetes),
        platform: if platform { rest } else { Vec::new() },
        bundle_digest: None,
    })
}
