//! The catalog's template syntax for deploy data that depends on the cluster
//! file. `{master.private_ip}` is replaced by the cluster's value,
//! `{portal.iaas_type|upper}` upper-cases it, `{portal.domain|or:TEXT}` gives
//! TEXT when the cluster leaves it out; `{{` and `}}` are literal braces.
//! A placeholder that names a list (`{workers.hostname}`) makes the value a
//! list: the text once per item, so `"{nodes.private_ip}/32"` gives one CIDR
//! per node. The set of placeholders is closed, so a typo is a catalog error
//! rather than a literal `{...}` reaching a chart.

use crate::cluster::{Cluster, PASSWORD_KEYS};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    ClusterName,
    PublicIp,
    MasterHostname,
    MasterPrivateIp,
    PodCidr,
    ServiceCidr,
    StorageType,
    NfsServer,
    NfsPath,
    ProviderType,
    IaasType,
    Domain,
    ContainerManager,
    SeedPort,
    SeedEndpoint,
    /// Never the password itself: only whether the site gave one.
    Secret(&'static str),
    WorkersHostname,
    WorkersPrivateIp,
    NodesPrivateIp,
    RookDevices,
}

const FIELDS: &[(&str, Field)] = &[
    ("cluster.name", Field::ClusterName),
    ("cluster.public_ip", Field::PublicIp),
    ("cluster.container_manager", Field::ContainerManager),
    ("master.hostname", Field::MasterHostname),
    ("master.private_ip", Field::MasterPrivateIp),
    ("network.pod_cidr", Field::PodCidr),
    ("network.service_cidr", Field::ServiceCidr),
    ("storage.type", Field::StorageType),
    ("storage.nfs.server", Field::NfsServer),
    ("storage.nfs.path", Field::NfsPath),
    ("storage.rook_ceph.devices", Field::RookDevices),
    ("portal.provider_type", Field::ProviderType),
    ("portal.iaas_type", Field::IaasType),
    ("portal.domain", Field::Domain),
    ("seed.port", Field::SeedPort),
    ("seed.endpoint", Field::SeedEndpoint),
    ("workers.hostname", Field::WorkersHostname),
    ("workers.private_ip", Field::WorkersPrivateIp),
    ("nodes.private_ip", Field::NodesPrivateIp),
];

/// What a placeholder stands for in one cluster.
enum Found {
    One(Option<String>),
    Many(Vec<String>),
}

impl Field {
    fn lookup(name: &str) -> Option<Field> {
        if let Some(key) = name.strip_prefix("secret.") {
            return PASSWORD_KEYS
                .iter()
                .find(|k| **k == key)
                .map(|k| Field::Secret(k));
        }
        FIELDS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    fn family(self) -> Option<&'static str> {
        match self {
            Field::WorkersHostname | Field::WorkersPrivateIp => Some("workers"),
            Field::NodesPrivateIp => Some("nodes"),
            Field::RookDevices => Some("storage.rook_ceph.devices"),
            _ => None,
        }
    }

    fn eval(self, c: &Cluster) -> Found {
        let one = |s: String| Found::One(Some(s));
        let nfs = c.storage.nfs.as_ref();
        match self {
            Field::ClusterName => one(c.name.clone()),
            Field::PublicIp => one(c.public_ip().to_string()),
            Field::MasterHostname => one(c.master.hostname.clone()),
            Field::MasterPrivateIp => one(c.master.private_ip.to_string()),
            Field::PodCidr => one(c.network.pod_cidr.to_string()),
            Field::ServiceCidr => one(c.network.service_cidr.to_string()),
            Field::StorageType => one(c.storage.kind.clone()),
            Field::NfsServer => Found::One(nfs.and_then(|n| n.server).map(|s| s.to_string())),
            Field::NfsPath => Found::One(nfs.map(|n| n.path.clone())),
            Field::ProviderType => one(c.portal.provider_type.clone()),
            Field::IaasType => one(c.portal.iaas_type.clone()),
            Field::Domain => Found::One(c.portal.domain.clone()),
            Field::SeedPort => one(c.seed_port.to_string()),
            Field::ContainerManager => one(c.container_manager.name().into()),
            Field::SeedEndpoint => one(format!("127.0.0.1:{}", c.seed_port)),
            Field::Secret(k) => one(if c.passwords.contains_key(k) {
                "given".into()
            } else {
                "generated at seed time".into()
            }),
            Field::WorkersHostname => {
                Found::Many(c.workers.iter().map(|w| w.hostname.clone()).collect())
            }
            Field::WorkersPrivateIp => {
                Found::Many(c.workers.iter().map(|w| w.private_ip.to_string()).collect())
            }
            Field::NodesPrivateIp => Found::Many(
                std::iter::once(c.master.private_ip)
                    .chain(c.workers.iter().map(|w| w.private_ip))
                    .map(|ip| ip.to_string())
                    .collect(),
            ),
            Field::RookDevices => Found::Many(
                c.storage
                    .rook_ceph
                    .as_ref()
                    .map(|r| r.devices.clone())
                    .unwrap_or_default(),
            ),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Filter {
    Plain,
    Upper,
    Or(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Slot {
        name: String,
        field: Field,
        filter: Filter,
    },
}

/// A parsed template; `parse` is the catalog's validation of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
    /// The list family it expands over, if any.
    family: Option<&'static str>,
}

/// A template's value in one cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Expanded {
    One(String),
    Many(Vec<String>),
}

fn known() -> String {
    let mut names: Vec<String> = FIELDS.iter().map(|(n, _)| n.to_string()).collect();
    names.extend(PASSWORD_KEYS.iter().map(|k| format!("secret.{k}")));
    names.join(", ")
}

impl Template {
    pub fn parse(s: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut family: Option<&'static str> = None;
        let mut rest = s;
        while let Some(i) = rest.find(['{', '}']) {
            text.push_str(&rest[..i]);
            let tail = &rest[i..];
            if tail.starts_with("{{") || tail.starts_with("}}") {
                text.push_str(&tail[..1]);
                rest = &tail[2..];
                continue;
            }
            let Some(end) = tail.find('}').filter(|_| tail.starts_with('{')) else {
                return Err(format!(
                    "{s:?}: unmatched brace (write a literal brace as {{{{ or }}}})"
                ));
            };
            let inner = &tail[1..end];
            let (name, filter) = match inner.split_once('|') {
                None => (inner, Filter::Plain),
                Some((n, "upper")) => (n, Filter::Upper),
                Some((n, f)) => match f.strip_prefix("or:") {
                    Some(t) => (n, Filter::Or(t.to_string())),
                    None => return Err(format!("{s:?}: unknown filter |{f} (upper or or:TEXT)")),
                },
            };
            let field = Field::lookup(name).ok_or_else(|| {
                format!("{s:?}: unknown placeholder {{{name}}} (known: {})", known())
            })?;
            if let Some(f) = field.family() {
                match family {
                    Some(g) if g != f => {
                        return Err(format!(
                            "{s:?}: mixes the lists {g} and {f} (one list per template)"
                        ));
                    }
                    _ => family = Some(f),
                }
            }
            parts.push(Part::Text(std::mem::take(&mut text)));
            parts.push(Part::Slot {
                name: name.to_string(),
                field,
                filter,
            });
            rest = &tail[end + 1..];
        }
        text.push_str(rest);
        parts.push(Part::Text(text));
        parts.retain(|p| p != &Part::Text(String::new()));
        Ok(Template { parts, family })
    }

    pub fn is_list(&self) -> bool {
        self.family.is_some()
    }

    /// The template's value for this cluster; an error names the placeholder
    /// the cluster file leaves unset.
    pub fn expand(&self, c: &Cluster) -> Result<Expanded, String> {
        // Each placeholder is looked up once, then read per list item.
        let parts: Vec<(&Part, Option<Found>)> = self
            .parts
            .iter()
            .map(|p| match p {
                Part::Text(_) => (p, None),
                Part::Slot { field, .. } => (p, Some(field.eval(c))),
            })
            .collect();
        let items = parts
            .iter()
            .find_map(|(_, f)| match f {
                Some(Found::Many(v)) => Some(v.len()),
                _ => None,
            })
            .unwrap_or(1);
        let mut out = Vec::with_capacity(items);
        for i in 0..items {
            let mut s = String::new();
            for (p, found) in &parts {
                let (name, filter) = match p {
                    Part::Text(t) => {
                        s.push_str(t);
                        continue;
                    }
                    Part::Slot { name, filter, .. } => (name, filter),
                };
                let value = match found {
                    Some(Found::One(v)) => v.clone(),
                    Some(Found::Many(v)) => v.get(i).cloned(),
                    None => None,
                };
                match (value, filter) {
                    (Some(v), Filter::Upper) => s.push_str(&v.to_uppercase()),
                    (Some(v), _) => s.push_str(&v),
                    (None, Filter::Or(t)) => s.push_str(t),
                    (None, _) => {
                        return Err(format!(
                            "{{{name}}} is not set in the cluster file (or give a fallback: {{{name}|or:TEXT}})"
                        ));
                    }
                }
            }
            out.push(s);
        }
        Ok(if self.is_list() {
            Expanded::Many(out)
        } else {
            Expanded::One(out.pop().unwrap_or_default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::EXAMPLE;

    fn cluster() -> Cluster {
        Cluster::from_yaml(EXAMPLE, "example").unwrap()
    }

    fn one(s: &str) -> String {
        match Template::parse(s).unwrap().expand(&cluster()).unwrap() {
            Expanded::One(s) => s,
            Expanded::Many(v) => panic!("{s:?} gave a list {v:?}"),
        }
    }

    #[test]
    fn scalars_filters_and_braces() {
        assert_eq!(
            one("https://{cluster.public_ip}:6443"),
            "https://10.10.0.10:6443"
        );
        assert_eq!(one("{portal.iaas_type|upper}"), "OPENSTACK");
        assert_eq!(
            one("{portal.domain|or:(none: NodePorts)}"),
            "(none: NodePorts)"
        );
        assert_eq!(
            one("{{literal}} {seed.endpoint}"),
            "{literal} 127.0.0.1:5050"
        );
        assert_eq!(one("{secret.harbor_admin}"), "generated at seed time");
    }

    #[test]
    fn a_list_placeholder_repeats_the_text() {
        let t = Template::parse("{workers.hostname}={workers.private_ip}").unwrap();
        assert_eq!(
            t.expand(&cluster()).unwrap(),
            Expanded::Many(vec![
                "kpaas-worker1=10.10.0.11".into(),
                "kpaas-worker2=10.10.0.12".into(),
                "kpaas-worker3=10.10.0.13".into(),
            ])
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (t, want) in [
            ("{cluster.domain}", "unknown placeholder {cluster.domain}"),
            ("{secret.root}", "unknown placeholder {secret.root}"),
            ("{seed.port|lower}", "unknown filter |lower"),
            ("{seed.port", "unmatched brace"),
            ("a } b", "unmatched brace"),
            (
                "{nodes.private_ip} {workers.hostname}",
                "mixes the lists nodes and workers",
            ),
        ] {
            let e = Template::parse(t).unwrap_err();
            assert!(e.contains(want), "{t}: {e}");
        }
        let e = Template::parse("{portal.domain}")
            .unwrap()
            .expand(&cluster())
            .unwrap_err();
        assert!(e.contains("{portal.domain} is not set"), "{e}");
    }
}
