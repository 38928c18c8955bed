//! The `secret` kind: a Kubernetes Secret holding one of the site's
//! passwords (the seed's `passwords.yaml` on the master), for a workload to
//! read; its value is never in the plan, a log or an event.

use super::Kind;
use crate::deploy::valid_namespace;
use crate::ident::valid_hostname;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Secret {
    pub namespace: String,
    pub name: String,
    /// Which password: one of the cluster file's `passwords` keys.
    pub password: String,
}

impl Kind for Secret {
    fn name(&self) -> String {
        format!("secret/{}/{}", self.namespace, self.name)
    }

    fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !valid_namespace(&self.namespace) {
            p.push(format!(
                "namespace: {:?} is not a Kubernetes namespace",
                self.namespace
            ));
        }
        if !valid_hostname(&self.name) {
            p.push(format!(
                "name: {:?} is not a Kubernetes object name",
                self.name
            ));
        }
        if !crate::cluster::PASSWORD_KEYS.contains(&self.password.as_str()) {
            p.push(format!(
                "password: {:?} is not one of the site's passwords ({})",
                self.password,
                crate::cluster::PASSWORD_KEYS.join(", ")
            ));
        }
        p
    }

    fn describe(&self, _artifact: &str) -> String {
        format!(
            "secret {}/{} from the site's password {}",
            self.namespace, self.name, self.password
        )
    }
}
