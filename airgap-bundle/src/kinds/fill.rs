//! The `fill` kind (the Harbor hand-off): every image and chart of the
//! bundle pushed into the platform's registry, then every node's runtime
//! mirrors switched to it (the seed behind it). Its hook
//! `harbor-holds-bundle` reads everything back.

use super::{Kind, Templated, field};
use crate::cluster::Cluster;
use crate::deploy::valid_namespace;
use crate::readiness::Hook;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Fill {
    /// `host:port` of the registry's plain-HTTP endpoint (a NodePort);
    /// may hold placeholders (`{cluster.public_ip}:30002`).
    pub registry: String,
    /// The project (Harbor) or path prefix every repository goes under.
    pub project: String,
    /// Harbor: make the project with its API, as its admin, first.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub harbor_api: bool,
}

impl Kind for Fill {
    const HOOKS: &'static [Hook] = &[Hook::HarborHoldsBundle];

    fn name(&self) -> String {
        "fill".into()
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.registry.is_empty() || self.registry.contains('/') {
            p.push(format!(
                "registry: {:?} must be host:port (the project goes in `project`)",
                self.registry
            ));
        }
        if !valid_namespace(&self.project) {
            p.push(format!(
                "project: {:?} must be a lowercase DNS label (a Harbor project name)",
                self.project
            ));
        }
        p
    }

    fn templated(&self) -> Vec<Templated> {
        vec![Templated::text("registry", &self.registry)]
    }

    fn resolve(&self, c: &Cluster) -> Result<Self, String> {
        Ok(Fill {
            registry: field("registry", &self.registry, c)?,
            ..self.clone()
        })
    }

    fn describe(&self, _artifact: &str) -> String {
        format!(
            "push the bundle's images and charts into {}/{}{}, then switch the nodes' mirrors to it",
            self.registry,
            self.project,
            if self.harbor_api {
                " (Harbor project made first)"
            } else {
                ""
            }
        )
    }
}
