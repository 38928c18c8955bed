//! A node's NoCloud seed, rendered from the handlebars templates in
//! `cloud-init/` in strict mode: `user-data` (the node config and the
//! secrets the node needs, as `write_files`), `meta-data`, `network-config`
//! and the node config alone (for a node without cloud-init). One renderer
//! for `kpaas-builder seeds` on the connected machine and `kpaas-agent node
//! add` on a site's master, so a day-2 seed is the same as a first one.

use crate::ident::normalize_mac;
use crate::node::{CIDATA_FILE, NodeConfig, NodeEntry};
use anyhow::{Context, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::Ipv4Addr;

const USER_DATA: &str = include_str!("../../cloud-init/user-data.hbs");
const META_DATA: &str = include_str!("../../cloud-init/meta-data.hbs");
const NETWORK_CONFIG: &str = include_str!("../../cloud-init/network-config.hbs");

/// What a seed needs of the site besides the node config: the cluster
/// file's network and admin keys. The seeds hand it to every node's config
/// (`site:`), so the master can make a day-2 seed without the cluster file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteFacts {
    /// The nodes' network (its prefix is each node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_cidr: Option<crate::cluster::Cidr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ssh_authorized_keys: Vec<String>,
}

impl SiteFacts {
    /// The nodes' prefix length: the node network's, else a /24.
    pub fn prefix(&self) -> u8 {
        self.node_cidr.map_or(24, |n| n.prefix)
    }
}

/// One seed's files, rendered: what goes on its CIDATA volume.
pub struct Seed {
    pub name: String,
    pub files: Vec<(&'static str, String)>,
}

/// The templates, registered once.
pub struct Renderer(handlebars::Handlebars<'static>);

impl Renderer {
    pub fn new() -> Result<Renderer> {
        let mut h = handlebars::Handlebars::new();
        // A missing variable is an error, never an empty string in a seed.
        h.set_strict_mode(true);
        h.register_escape_fn(handlebars::no_escape);
        h.register_helper(
            "json",
            Box::new(
                |hh: &handlebars::Helper,
                 _: &handlebars::Handlebars,
                 _: &handlebars::Context,
                 _: &mut handlebars::RenderContext,
                 out: &mut dyn handlebars::Output| {
                    let v = hh.param(0).map(|p| p.value().clone()).unwrap_or_default();
                    out.write(&v.to_string())?;
                    Ok(())
                },
            ),
        );
        for (n, t) in [
            ("user-data", USER_DATA),
            ("meta-data", META_DATA),
            ("network-config", NETWORK_CONFIG),
        ] {
            h.register_template_string(n, t)
                .with_context(|| format!("cloud-init/{n}.hbs"))?;
        }
        Ok(Renderer(h))
    }

    /// Renders one seed: `node` for a per-node seed (None: the universal
    /// one, every node of `cfg` finding its address by its MAC), the
    /// secrets it carries by file name (pure: tests call it with fixed
    /// secrets).
    pub fn render(
        &self,
        name: &str,
        site: &SiteFacts,
        node: Option<&NodeEntry>,
        cfg: &NodeConfig,
        secrets: &[(&str, &[u8])],
    ) -> Result<Seed> {
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let gateway = site.gateway.map(|g| g.to_string());
        let prefix = site.prefix();
        let node_yaml = serde_saphyr::to_string(cfg)?;
        let nic = |id: String, n: &NodeEntry| json!({"id": id, "mac": n.mac.as_deref().and_then(normalize_mac), "ip": n.ip.to_string(), "prefix": prefix, "gateway": gateway});
        let nics: Vec<serde_json::Value> = match node {
            Some(n) => vec![nic("eth0".into(), n)],
            // One medium for every node: each finds its address by its MAC.
            None => cfg
                .nodes
                .iter()
                .filter(|n| n.mac.as_deref().and_then(normalize_mac).is_some())
                .map(|n| nic(n.hostname.clone(), n))
                .collect(),
        };
        let data = json!({
            "cluster": cfg.cluster,
            "who": node.map(|n| n.hostname.clone()).unwrap_or_else(|| "every node".into()),
            "hostname": node.map(|n| n.hostname.clone()),
            "instance_id": format!("{}-{}", cfg.cluster, name),
            "ssh_keys": site.ssh_authorized_keys,
            "node_config_b64": b64(node_yaml.as_bytes()),
            "secrets": secrets.iter().map(|(n, b)| json!({"name": n, "b64": b64(b)})).collect::<Vec<_>>(),
            "nics": nics,
        });
        let mut files = Vec::new();
        for t in ["user-data", "meta-data", "network-config"] {
            let text = self
                .0
                .render(t, &data)
                .with_context(|| format!("rendering cloud-init/{t}.hbs for {name}"))?;
            files.push((t, text));
        }
        // Without cloud-init the agent reads this straight from the volume.
        files.push((CIDATA_FILE, node_yaml));
        Ok(Seed {
            name: name.to_string(),
            files,
        })
    }
}
