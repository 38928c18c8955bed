//! The deploy plan: from a catalog and a cluster file, the ordered steps the
//! agent will run: which component, which artifacts, which values, which
//! readiness check, in waves that may run in parallel. Pure: the same inputs
//! give the same plan, so it is snapshot-tested.

use crate::catalog::{Artifact, Catalog};
use crate::cluster::Cluster;
use crate::manifest::BundleManifest;
use anyhow::{Result, bail};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Serialize)]
pub struct Plan {
    pub platform: String,
    pub cluster: String,
    /// Components in each wave; a wave starts when the previous one is ready.
    pub waves: Vec<Vec<String>>,
    pub steps: Vec<Step>,
    /// Optional components left out, and why.
    pub skipped: Vec<String>,
    pub capacity: Capacity,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub wave: usize,
    pub component: String,
    pub namespace: Option<String>,
    pub depends_on: Vec<String>,
    pub artifacts: Vec<String>,
    pub values: BTreeMap<String, String>,
    pub readiness: Vec<String>,
    /// Where this appliance deliberately differs from the upstream scripts.
    pub notes: Vec<String>,
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

/// Values each component's manifests and charts are rendered with. Secrets
/// never appear: a password is only `given` or `generated`.
fn values(component: &str, c: &Cluster) -> BTreeMap<String, String> {
    let public = c.public_ip().to_string();
    let v = |pairs: &[(&str, String)]| {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect()
    };
    let secret = |k: &str| {
        if c.passwords.contains_key(k) {
            "given".to_string()
        } else {
            "generated at seed time".to_string()
        }
    };
    match component {
        "kubernetes" => v(&[
            ("master_hostname", c.master.hostname.clone()),
            ("master_private_ip", c.master.private_ip.to_string()),
            ("apiserver_san", public.clone()),
            ("pod_cidr", c.network.pod_cidr.to_string()),
            ("service_cidr", c.network.service_cidr.to_string()),
            (
                "workers",
                c.workers
                    .iter()
                    .map(|w| format!("{}={}", w.hostname, w.private_ip))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("container_manager", "crio".into()),
            (
                "image_source",
                "the node's seed registry (127.0.0.1:5050), no upstream fallback".into(),
            ),
        ]),
        "storage" => match c.storage.kind.as_str() {
            "nfs" => v(&[
                ("storage_type", "nfs".into()),
                (
                    "nfs_server",
                    c.storage
                        .nfs
                        .as_ref()
                        .and_then(|n| n.server)
                        .map(|s| s.to_string())
                        .unwrap_or_default(),
                ),
                (
                    "nfs_path",
                    c.storage
                        .nfs
                        .as_ref()
                        .map(|n| n.path.clone())
                        .unwrap_or_default(),
                ),
                ("storage_class", "paasta-cp-storageclass (default)".into()),
            ]),
            _ => v(&[
                ("storage_type", "rook-ceph".into()),
                (
                    "devices",
                    c.storage
                        .rook_ceph
                        .as_ref()
                        .map(|r| r.devices.join(","))
                        .unwrap_or_default(),
                ),
                (
                    "storage_class",
                    "paasta-cp-storageclass (default, cephfs myfs)".into(),
                ),
            ]),
        },
        "vault" => v(&[
            ("vault_addr", format!("http://{public}:31654")),
            ("cluster_api_url", format!("https://{public}:6443")),
            (
                "approle_bound_cidrs",
                std::iter::once(c.master.private_ip)
                    .chain(c.workers.iter().map(|w| w.private_ip))
                    .map(|ip| format!("{ip}/32"))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            ("storage_class", "paasta-cp-storageclass".into()),
        ]),
        "harbor" => v(&[
            ("harbor_url", format!("http://{public}:30002")),
            ("project", "cp-portal-repository".into()),
            ("crio_insecure_registry", format!("{public}:30002")),
            ("admin_password", secret("harbor_admin")),
        ]),
        "mariadb" => v(&[
            ("node_port", "31306".into()),
            ("root_password", secret("mariadb_root")),
        ]),
        "keycloak" => v(&[
            ("node_port", "32710".into()),
            ("admin_password", secret("keycloak_admin")),
        ]),
        "portal" => v(&[
            ("k8s_master_node_ip", public),
            ("host_cluster_iaas_type", c.portal.iaas_type.to_uppercase()),
            ("provider_type", c.portal.provider_type.clone()),
            (
                "domain",
                c.portal
                    .domain
                    .clone()
                    .unwrap_or_else(|| "(none: NodePorts)".into()),
            ),
            ("admin_password", secret("portal_admin")),
        ]),
        _ => BTreeMap::new(),
    }
}

fn readiness(component: &str, ns: Option<&str>, storage: &str) -> Vec<String> {
    let ns = ns.unwrap_or("default");
    match component {
        "kubernetes" => vec!["every node Ready".into(), "kube-system: coredns, calico-node, nodelocaldns, metrics-server available".into()],
        "ingress-nginx" => vec!["ingress-nginx: deployment ingress-nginx-controller Available".into(), "admission jobs Complete".into()],
        "storage" if storage == "nfs" => vec!["default: deployment nfs-pod-provisioner Available".into(), "storageclass paasta-cp-storageclass is default".into()],
        "storage" => vec!["rook-ceph: operator Running, rook-ceph-osd-0 Running, CephFilesystem myfs Ready".into(), "storageclass paasta-cp-storageclass is default".into()],
        "kubeflow" => vec!["every Deployment and StatefulSet in istio-system, cert-manager, auth, knative-*, kubeflow Available".into()],
        "vault" => vec!["vault: vault-0 Running and unsealed".into(), "secret/data/cluster/host-cluster written".into()],
        "harbor" => vec!["harbor: core, registry, portal Available; /api/v2.0/health healthy".into(), "every image and chart of the bundle in project cp-portal-repository, digests equal".into()],
        _ => vec![format!("{ns}: every Deployment and StatefulSet Available")],
    }
}

fn notes(component: &str) -> Vec<String> {
    let n = |s: &[&str]| s.iter().map(|x| x.to_string()).collect();
    match component {
        "kubernetes" => n(&[
            "no checkout under $HOME or /home/ubuntu: everything is read from the bundle; state under /var/lib/kpaas",
            "no apt, pip or binary downloads: node packages are in the image, binaries in the bundle",
            "serving-certificate CSRs approved as nodes join, not once",
        ]),
        "kubeflow" => n(&[
            "rendered with the bundled kustomize v5.0.0 from the bundled cp-deployment sources; no download, no endless retry loop",
            "istioctl is bundled (upstream's download step is broken and fetched from the internet)",
        ]),
        "vault" => n(&[
            "chart from the bundle, no `helm repo add`",
            "the unseal key and root token are kept, sealed for root only (/var/lib/kpaas/secrets/vault-init.json, 0600), not deleted: upstream deletes them and Vault cannot be unsealed after a restart",
        ]),
        "harbor" => n(&[
            "images and charts pushed from the seed registry as OCI artifacts; no helm cm-push plugin from GitHub",
        ]),
        "keycloak" => n(&[
            "the vendor's Keycloak image from the bundle; no podman build reaching Red Hat, GitHub and Maven",
        ]),
        _ => vec![],
    }
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
        steps.push(Step {
            wave: wave[c.name.as_str()],
            component: c.name.clone(),
            namespace: c.namespace.clone(),
            depends_on: c.depends_on.clone(),
            artifacts: arts.iter().map(|a| a.key()).collect(),
            values: values(&c.name, cluster),
            readiness: readiness(&c.name, c.namespace.as_deref(), &cluster.storage.kind),
            notes: notes(&c.name),
        });
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
        capacity: Capacity {
            by_kind,
            bundle_bytes: bundle.map(|b| b.totals.unique_bytes),
            unverified,
            supplied,
            nodes,
        },
    })
}

fn bytes(b: Option<u64>) -> String {
    match b {
        None => "unknown until bundled".into(),
        Some(n) if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        Some(n) => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
    }
}

impl Plan {
    /// The human form: waves, then each step, then the capacity plan.
    pub fn render(&self) -> String {
        let mut s = format!(
            "deploy plan: {} on cluster {}\n",
            self.platform, self.cluster
        );
        for (i, w) in self.waves.iter().enumerate() {
            s.push_str(&format!("  wave {i}: {}\n", w.join(", ")));
        }
        for st in &self.steps {
            s.push_str(&format!(
                "\n[{}] {} (namespace {}){}\n",
                st.wave,
                st.component,
                st.namespace.as_deref().unwrap_or("-"),
                if st.depends_on.is_empty() {
                    String::new()
                } else {
                    format!(" after {}", st.depends_on.join(", "))
                }
            ));
            s.push_str(&format!("  artifacts: {}\n", st.artifacts.len()));
            for (k, v) in &st.values {
                s.push_str(&format!("  {k} = {v}\n"));
            }
            for r in &st.readiness {
                s.push_str(&format!("  ready when: {r}\n"));
            }
            for n in &st.notes {
                s.push_str(&format!("  differs from upstream: {n}\n"));
            }
        }
        for k in &self.skipped {
            s.push_str(&format!("\nskipped: {k}\n"));
        }
        let c = &self.capacity;
        s.push_str("\ncapacity:\n");
        for (k, t) in &c.by_kind {
            s.push_str(&format!(
                "  {k}: {} artifacts, {}\n",
                t.count,
                bytes(t.bytes)
            ));
        }
        s.push_str(&format!(
            "  bundle: {}\n  unverified artifacts: {}; supplied by the site: {}\n",
            bytes(c.bundle_bytes),
            c.unverified,
            c.supplied
        ));
        for n in &c.nodes {
            s.push_str(&format!(
                "  {} ({}): >= {} vCPU, >= {} GiB RAM, {}\n",
                n.node, n.role, n.vcpus, n.memory_gib, n.disk
            ));
        }
        s
    }
}
