//! The `secret` install kind: a Secret holding one of the site's passwords
//! (the seed's `passwords.yaml`, on the master only), applied from stdin so
//! the value never reaches a file, an argument or a log line.

use super::{Apply, At, Engine};
use crate::events::Sink;
use crate::kube;
use airgap_bundle::kinds::secret::Secret;
use anyhow::{Context, Result};

impl Apply for Secret {
    /// A Secret with one of the site's passwords, applied server-side from
    /// stdin (never a file, an argument or a log line); its namespace first.
    fn apply(&self, e: &Engine, _events: &mut Sink, _at: &At) -> Result<String> {
        let Secret {
            namespace,
            name,
            password,
        } = self;
        let value = e.password(password)?;
        let list = serde_json::json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": namespace},
                    "type": "Opaque",
                    "stringData": {"password": value},
                },
            ],
        });
        e.apply_stdin(&list)
            .with_context(|| format!("making secret {namespace}/{name}"))?;
        Ok(format!(
            "secret {namespace}/{name} holds the site's {password} (key `password`; value not shown)"
        ))
    }
}

impl Engine {
    /// The site's password for `key` (the seed's `passwords.yaml`, 0600 on
    /// the master); never logged.
    pub(super) fn password(&self, key: &str) -> Result<String> {
        let p = self.root.join(kube::SECRETS_DIR).join("passwords.yaml");
        let text =
            std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let all: std::collections::BTreeMap<String, String> =
            serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", p.display()))?;
        all.get(key)
            .cloned()
            .with_context(|| format!("{} has no {key}", p.display()))
    }
}
