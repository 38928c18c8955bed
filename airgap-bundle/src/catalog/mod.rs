//! The platform catalog: every artifact a platform needs, grouped into
//! components the agent deploys in dependency order.
//!
//! Parsing is two-stage so that *every* mistake is reported at once: the YAML
//! is first read untyped, then each component and artifact is typed on its
//! own and the semantic checks run over everything that parsed.

mod artifact;

pub use artifact::{ARCHES, Artifact, ChartArtifact, FileArtifact, ImageArtifact};

use crate::deploy::{Deploy, Install};
use crate::kinds::Reads;
use crate::problems::Problems;
use artifact::artifact_problems;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PlatformInfo {
    pub name: String,
    pub version: String,
    /// Raised by one for every build a site may take as an update: a site
    /// refuses a bundle whose serial is not above its own (anti-rollback).
    #[serde(default = "first_serial")]
    pub serial: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

fn first_serial() -> u64 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Optional components are bundled but deployed only when the cluster asks.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub optional: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// How the agent deploys it; entries differ by `when`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deploy: Vec<Deploy>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    pub schema_version: u32,
    pub platform: PlatformInfo,
    pub components: Vec<Component>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    schema_version: serde_json::Value,
    platform: serde_json::Value,
    #[serde(default)]
    components: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    name: serde_json::Value,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    depends_on: Vec<String>,
    #[serde(default)]
    optional: bool,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    artifacts: Vec<serde_json::Value>,
    #[serde(default)]
    deploy: Vec<serde_json::Value>,
}

/// YAML reads an unquoted all-digit digest or a version like 1.20 as a number.
fn quote_hint(e: &serde_json::Error) -> &'static str {
    if e.to_string().starts_with("invalid type: floating point")
        || e.to_string().starts_with("invalid type: integer")
    {
        " (quote digests and versions: YAML reads bare digits as a number)"
    } else {
        ""
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_'))
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Catalog {
    /// Reads and validates a catalog; `file` names it in every error.
    pub fn from_yaml(text: &str, file: &str) -> Result<Catalog, Problems> {
        let fail = |problems: Vec<String>| Problems {
            file: file.to_string(),
            problems,
        };
        let raw: RawCatalog =
            serde_saphyr::from_str(text).map_err(|e| fail(vec![e.to_string()]))?;
        let mut problems = Vec::new();
        let schema_version = match raw.schema_version.as_u64() {
            Some(v) if v == u64::from(SCHEMA_VERSION) => SCHEMA_VERSION,
            _ => {
                problems.push(format!(
                    "schema_version: {} is not supported (this builder reads schema_version {SCHEMA_VERSION})",
                    raw.schema_version
                ));
                SCHEMA_VERSION
            }
        };
        let platform = match serde_json::from_value::<PlatformInfo>(raw.platform) {
            Ok(p) => {
                if !valid_name(&p.name) {
                    problems.push(format!(
                        "platform.name: {:?} must be lowercase letters, digits, '.', '_' or '-'",
                        p.name
                    ));
                }
                if p.version.trim().is_empty() {
                    problems.push("platform.version: must not be empty".into());
                }
                if p.serial == 0 {
                    problems.push(
                        "platform.serial: must be 1 or more (0 is a bundle made before serials)"
                            .into(),
                    );
                }
                Some(p)
            }
            Err(e) => {
                problems.push(format!("platform: {e}"));
                None
            }
        };
        let mut components = Vec::new();
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (ci, value) in raw.components.into_iter().enumerate() {
            let at = format!("components[{ci}]");
            let rc: RawComponent = match serde_json::from_value(value) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("{at}: {e}"));
                    continue;
                }
            };
            let name = match rc.name {
                serde_json::Value::String(s) => s,
                other => {
                    problems.push(format!("{at}.name: {other} must be a string"));
                    continue;
                }
            };
            let at = format!("{at} ({name})");
            let mut artifacts = Vec::new();
            for (ai, value) in rc.artifacts.into_iter().enumerate() {
                let here = format!("{at}.artifacts[{ai}]");
                match serde_json::from_value::<Artifact>(value) {
                    Ok(a) => {
                        problems.extend(
                            artifact_problems(&a)
                                .into_iter()
                                .map(|p| format!("{here}: {p}")),
                        );
                        if let Some(first) = seen.insert(a.key(), here.clone()) {
                            problems.push(format!(
                                "{here}: duplicate artifact {} (first at {first})",
                                a.key()
                            ));
                        }
                        artifacts.push(a)
                    }
                    Err(e) => problems.push(format!("{here}: {e}{}", quote_hint(&e))),
                }
            }
            let mut deploy = Vec::new();
            for (di, value) in rc.deploy.into_iter().enumerate() {
                let here = format!("{at}.deploy[{di}]");
                match serde_json::from_value::<Deploy>(value) {
                    Ok(d) => {
                        problems.extend(d.problems().into_iter().map(|p| format!("{here}.{p}")));
                        for (ii, x) in d.install.iter().enumerate() {
                            if let Err(e) = install_artifact(x, &artifacts) {
                                problems.push(format!("{here}.install[{ii}]: {e}"));
                            }
                        }
                        deploy.push(d);
                    }
                    Err(e) => problems.push(format!("{here}: {e}")),
                }
            }
            // Exactly one entry must apply for any cluster, so the plan never guesses.
            let whens: Vec<_> = deploy.iter().map(|d| &d.when).collect();
            if whens.len() > 1 && whens.iter().any(|w| w.is_empty()) {
                problems.push(format!(
                    "{at}.deploy: with several entries, each needs a `when`"
                ));
            } else if let Some(i) = (1..whens.len()).find(|&i| whens[..i].contains(&whens[i])) {
                problems.push(format!(
                    "{at}.deploy[{i}].when: the same as an earlier entry's"
                ));
            }
            components.push(Component {
                name,
                namespace: rc.namespace,
                depends_on: rc.depends_on,
                optional: rc.optional,
                description: rc.description,
                artifacts,
                deploy,
            });
        }
        let catalog = Catalog {
            schema_version,
            platform: platform.unwrap_or(PlatformInfo {
                name: String::new(),
                version: String::new(),
                serial: first_serial(),
                description: None,
            }),
            components,
        };
        problems.extend(catalog.semantic_problems());
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(fail(problems))
        }
    }

    pub fn from_file(path: &Path) -> Result<Catalog, Problems> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Problems {
            file: file.clone(),
            problems: vec![format!("cannot read: {e}")],
        })?;
        Catalog::from_yaml(&text, &file)
    }

    fn semantic_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let mut names = BTreeSet::new();
        for (ci, c) in self.components.iter().enumerate() {
            let at = format!("components[{ci}] ({})", c.name);
            if !valid_name(&c.name) {
                problems.push(format!(
                    "{at}.name: must be lowercase letters, digits, '.', '_' or '-' (at most 63)"
                ));
            }
            if !names.insert(c.name.as_str()) {
                problems.push(format!(
                    "{at}.name: component {:?} is defined twice",
                    c.name
                ));
            }
            if let Some(ns) = &c.namespace
                && !valid_dns_label(ns)
            {
                problems.push(format!(
                    "{at}.namespace: {ns:?} is not a Kubernetes namespace (lowercase DNS label)"
                ));
            }
        }
        for (ci, c) in self.components.iter().enumerate() {
            for d in &c.depends_on {
                if d == &c.name {
                    problems.push(format!(
                        "components[{ci}] ({}).depends_on: depends on itself",
                        c.name
                    ));
                } else if !names.contains(d.as_str()) {
                    problems.push(format!(
                        "components[{ci}] ({}).depends_on: {d:?} is not a component of this catalog (known: {})",
                        c.name,
                        names.iter().copied().collect::<Vec<_>>().join(", ")
                    ));
                }
            }
        }
        if let Some(cycle) = self.find_cycle() {
            problems.push(format!(
                "components: dependency cycle {}",
                cycle.join(" -> ")
            ));
        }
        problems
    }

    fn find_cycle(&self) -> Option<Vec<String>> {
        let deps: BTreeMap<&str, &Vec<String>> = self
            .components
            .iter()
            .map(|c| (c.name.as_str(), &c.depends_on))
            .collect();
        // 0 = unvisited, 1 = on stack, 2 = done
        fn visit<'a>(
            n: &'a str,
            deps: &BTreeMap<&'a str, &'a Vec<String>>,
            state: &mut BTreeMap<&'a str, u8>,
            stack: &mut Vec<&'a str>,
        ) -> Option<Vec<String>> {
            match state.get(n) {
                Some(2) => return None,
                Some(1) => {
                    let start = stack.iter().position(|s| *s == n).unwrap_or(0);
                    let mut cyc: Vec<String> =
                        stack[start..].iter().map(|s| s.to_string()).collect();
                    cyc.push(n.to_string());
                    return Some(cyc);
                }
                _ => {}
            }
            state.insert(n, 1);
            stack.push(n);
            for d in deps.get(n).map(|v| v.iter()).into_iter().flatten() {
                if d != n
                    && deps.contains_key(d.as_str())
                    && let Some(c) = visit(d.as_str(), deps, state, stack)
                {
                    return Some(c);
                }
            }
            stack.pop();
            state.insert(n, 2);
            None
        }
        let mut state = BTreeMap::new();
        for n in deps.keys() {
            if let Some(c) = visit(n, &deps, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
        None
    }

    /// Every artifact with the component that holds it, in catalog order.
    pub fn artifacts(&self) -> impl Iterator<Item = (&Component, &Artifact)> {
        self.components
            .iter()
            .flat_map(|c| c.artifacts.iter().map(move |a| (c, a)))
    }
}

/// The artifact an install item reads: one of its own component's (a
/// component deploys only what it bundles, so the offline check and the
/// image check see everything it applies). Several with the name (a chart
/// from a repository and from OCI): the first. The hand-off and Vault's
/// init read none.
pub fn install_artifact<'a>(
    x: &Install,
    artifacts: &'a [Artifact],
) -> Result<Option<&'a Artifact>, String> {
    let (kind, name) = match x.reads() {
        Some(Reads::Chart(n)) => ("chart", n),
        Some(Reads::File(n)) => ("file", n),
        None => return Ok(None),
    };
    artifacts
        .iter()
        .find(|a| match (a, kind) {
            (Artifact::Chart(c), "chart") => c.chart_name() == name,
            (Artifact::File(f), "file") => f.name() == name,
            _ => false,
        })
        .map(Some)
        .ok_or_else(|| {
            let have: Vec<String> = artifacts
                .iter()
                .filter_map(|a| match (a, kind) {
                    (Artifact::Chart(c), "chart") => Some(c.chart_name()),
                    (Artifact::File(f), "file") => Some(f.name()),
                    _ => None,
                })
                .collect();
            format!(
                "names {kind} {name:?}, which this component does not bundle (its {kind}s: {})",
                if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                }
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
schema_version: 1
platform: {name: t, version: "1"}
components:
  - name: a
    namespace: kube-system
    artifacts:
      - kind: image
        ref: busybox:1.36
      - kind: file
        url: http://x.test/kubeadm
        sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
        arch: amd64
        install_path: /usr/local/bin/kubeadm
  - name: b
    depends_on: [a]
    artifacts:
      - kind: chart
        repo: http://charts.test/stable
        name: nginx
        version: 1.2.3
      - kind: chart
        oci: oci://reg.test/charts/vault:0.1.0
"#;

    #[test]
    fn good_catalog_parses_with_keys() {
        let c = Catalog::from_yaml(GOOD, "good.yaml").unwrap();
        let keys: Vec<String> = c.artifacts().map(|(_, a)| a.key()).collect();
        assert_eq!(
            keys,
            [
                "image:docker.io/library/busybox:1.36",
                "file:files.kpaas.local/kubeadm:amd64",
                "chart:charts.test/stable/nginx:1.2.3",
                "chart:reg.test/charts/vault:0.1.0"
            ]
        );
    }

    #[test]
    fn reports_every_problem_at_once() {
        let bad = r#"
schema_version: 1
platform: {name: t, version: "1"}
components:
  - name: a
    artifacts:
      - kind: image
        ref: busybox:1.36
        colour: blue
      - kind: image
        ref: busybox:1.36
        digest: sha256:abc
      - kind: image
        ref: docker.io/library/busybox:1.36
      - kind: file
        url: ftp://x/y
        sha256: nothex
  - name: b
    depends_on: [missing]
"#;
        let e = Catalog::from_yaml(bad, "bad.yaml").unwrap_err();
        let all = e.to_string();
        assert!(all.starts_with("bad.yaml: "), "{all}");
        for needle in [
            "components[0] (a).artifacts[0]: unknown field `colour`",
            "artifacts[1]: digest: \"sha256:abc\" is not a valid digest",
            "artifacts[2]: duplicate artifact image:docker.io/library/busybox:1.36 (first at components[0] (a).artifacts[1])",
            "artifacts[3]: url: \"ftp://x/y\" must be an http",
            "artifacts[3]: sha256:",
            "components[1] (b).depends_on: \"missing\" is not a component",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(e.problems.len(), 6, "{all}");
    }

    #[test]
    fn finds_cycles() {
        let y = r#"
schema_version: 1
platform: {name: t, version: "1"}
components:
  - {name: a, depends_on: [c]}
  - {name: b, depends_on: [a]}
  - {name: c, depends_on: [b]}
"#;
        let e = Catalog::from_yaml(y, "c.yaml").unwrap_err().to_string();
        assert!(e.contains("dependency cycle a -> c -> b -> a"), "{e}");
    }
}
