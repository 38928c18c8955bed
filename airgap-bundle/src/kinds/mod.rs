//! The install kinds: what the agent applies for a component, one module
//! per kind. Each module owns its catalog schema and checks, the strings
//! that may hold placeholders and how they resolve, the artifact it reads,
//! how the plan and the reports describe it, and its offline rendering
//! (used by `kpaas-builder check-offline` and by the agent before a wave).
//! The agent's apply of a kind lives in the agent (`deploy`), dispatched
//! from the same table.
//!
//! The table ([`install_kinds!`](crate::install_kinds)) is the one list of
//! kinds: it names each kind's catalog key, its type and who applies it
//! (`objects`: the agent applies the rendered objects server-side, nothing
//! else to write; `agent`: the agent has an apply of its own for it). The
//! catalog's [`Install`] enum and every dispatch over it are generated from
//! it, here and in the agent, so every match is exhaustive and a new kind is
//! a new module plus one line of the table. A planned [`Release`] is the
//! resolved item itself plus the artifact it reads: no second enum that must
//! agree with this one.

pub mod chart;
pub mod default_storage_class;
pub mod fill;
pub mod kustomize;
pub mod manifest;
pub mod manifest_filled;
pub mod namespace;
pub mod secret;
pub mod vault_cluster;
pub mod vault_init;

use crate::cluster::Cluster;
use crate::deploy::Value;
use crate::readiness::Hook;
use crate::render::{Inputs, Rendered, Renderer};
use crate::template::{Expanded, Template};
use anyhow::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Every install kind: `"catalog key" => Variant(type) by objects|agent`.
/// Invokes `$then!` with the table, so each crate generates its own
/// dispatch from this one list.
#[macro_export]
macro_rules! install_kinds {
    ($then:ident) => {
        $then! {
            /// `helm upgrade --install` of one of the component's charts.
            "chart" => Chart($crate::kinds::chart::Chart) by agent,
            /// One of the component's file artifacts (YAML documents),
            /// applied server-side.
            "manifest" => Manifest($crate::kinds::manifest::Manifest) by objects,
            /// A file artifact with upstream's placeholders replaced first,
            /// as its scripts `sed` them, applied server-side.
            "manifest-filled" => ManifestFilled($crate::kinds::manifest_filled::ManifestFilled) by objects,
            /// StorageClass NAME made the cluster's default.
            "default-storage-class" => DefaultStorageClass($crate::kinds::default_storage_class::DefaultStorageClass) by agent,
            /// A kustomization inside one of the component's `.tar.gz` file
            /// artifacts, rendered with the bundled kustomize, applied
            /// server-side.
            "kustomize" => Kustomize($crate::kinds::kustomize::Kustomize) by objects,
            /// The Harbor hand-off: the bundle pushed into the platform's
            /// registry, then every node's mirrors switched to it.
            "fill" => Fill($crate::kinds::fill::Fill) by agent,
            /// Vault initialised, its key kept on the master, unsealed.
            "vault-init" => VaultInit($crate::kinds::vault_init::VaultInit) by agent,
            /// K-PaaS's Vault setup for the portal.
            "vault-cluster" => VaultCluster($crate::kinds::vault_cluster::VaultCluster) by agent,
            /// A Secret holding one of the site's passwords.
            "secret" => Secret($crate::kinds::secret::Secret) by agent,
            /// A namespace with labels, as upstream's scripts make them
            /// before a component (`kubectl create namespace` + `label`).
            "namespace" => Namespace($crate::kinds::namespace::Namespace) by objects,
        }
    };
}

/// Who applies a kind's releases on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The agent applies the rendered objects server-side.
    Objects,
    /// The agent has an apply of its own for the kind.
    Agent,
}

#[doc(hidden)]
#[macro_export]
macro_rules! __by {
    (objects) => {
        $crate::kinds::By::Objects
    };
    (agent) => {
        $crate::kinds::By::Agent
    };
}

/// One kind of install item. Everything about a kind that is not the
/// agent's apply is here; the defaults fit a kind with no placeholders, no
/// artifact and nothing to render.
pub trait Kind: Clone {
    /// The readiness hooks its apply makes hold.
    const HOOKS: &'static [Hook] = &[];

    /// Its name in the journal and every report: unique within a component.
    fn name(&self) -> String;

    /// Its schema problems, each prefixed with its field.
    fn problems(&self) -> Vec<String> {
        Vec::new()
    }

    /// Its strings that may hold the catalog's placeholders.
    fn templated(&self) -> Vec<Templated> {
        Vec::new()
    }

    /// This item with the cluster's values filled in; an error names the
    /// field.
    fn resolve(&self, _c: &Cluster) -> Result<Self, String> {
        Ok(self.clone())
    }

    /// The component artifact it reads, if any.
    fn reads(&self) -> Option<Reads<'_>> {
        None
    }

    /// One line for the text plan and the agent's reports; `artifact` is
    /// the bundle artifact it reads (empty when none).
    fn describe(&self, artifact: &str) -> String;

    /// What `check-offline` calls it when it reports on its objects.
    fn label(&self, _artifact: &str) -> String {
        self.name()
    }

    /// The objects it will create, rendered without a network; None for a
    /// kind that creates none an image check could read.
    fn render(&self, _at: &RenderAt) -> Result<Option<Rendered>> {
        Ok(None)
    }
}

/// What a kind renders with: the tools, where its inputs come from, and
/// the component's working directory.
pub struct RenderAt<'a> {
    pub renderer: &'a Renderer<'a>,
    pub inputs: &'a dyn Inputs,
    pub component: &'a str,
    /// The bundle artifact the release reads (empty when none).
    pub artifact: &'a str,
    /// The component's directory under the renderer's work directory.
    pub dir: PathBuf,
}

/// The artifact an install item reads from its own component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads<'a> {
    /// A chart artifact, by its chart name.
    Chart(&'a str),
    /// A file artifact, by its name.
    File(&'a str),
}

/// A field whose strings may hold placeholders: its name (below the item),
/// its value as JSON (every string inside is one), and whether a
/// placeholder may name a list there.
pub struct Templated {
    pub field: String,
    pub value: serde_json::Value,
    pub list_ok: bool,
}

impl Templated {
    pub fn text(field: impl Into<String>, s: &str) -> Templated {
        Templated {
            field: field.into(),
            value: serde_json::Value::String(s.to_string()),
            list_ok: false,
        }
    }
}

/// `s` with its placeholders filled; a list is refused.
pub(crate) fn one(s: &str, c: &Cluster) -> Result<String, String> {
    match Template::parse(s)?.expand(c)? {
        Expanded::One(t) => Ok(t),
        Expanded::Many(_) => Err(format!("{s:?} names a list")),
    }
}

/// A value with the cluster's filled in; a placeholder naming a list
/// becomes a list.
pub(crate) fn value(v: &Value, c: &Cluster) -> Result<Value, String> {
    Ok(match v {
        Value::Text(s) => match Template::parse(s)?.expand(c)? {
            Expanded::One(t) => Value::Text(t),
            Expanded::Many(ts) => Value::List(ts.into_iter().map(Value::Text).collect()),
        },
        Value::List(vs) => Value::List(
            vs.iter()
                .map(|x| value(x, c))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// The field's strings filled, the field named in the error.
pub(crate) fn field(name: &str, s: &str, c: &Cluster) -> Result<String, String> {
    one(s, c).map_err(|e| format!("{name}: {e}"))
}

macro_rules! define_install {
    ($( $(#[$doc:meta])* $tag:literal => $variant:ident($ty:ty) by $by:ident ),* $(,)?) => {
        /// One thing the agent applies for a component, read from the
        /// component's own bundled artifacts (never fetched); the catalog's
        /// `install:` items, and (resolved) the plan's releases.
        #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub enum Install {
            $( $(#[$doc])* #[serde(rename = $tag)] $variant($ty), )*
        }

        impl Install {
            /// Its catalog key (`chart`, `manifest-filled`, ...).
            pub fn tag(&self) -> &'static str {
                match self { $( Install::$variant(_) => $tag, )* }
            }

            /// Who applies it on the node.
            pub fn by(&self) -> By {
                match self { $( Install::$variant(_) => $crate::__by!($by), )* }
            }

            pub fn name(&self) -> String {
                match self { $( Install::$variant(x) => Kind::name(x), )* }
            }

            pub fn problems(&self) -> Vec<String> {
                match self { $( Install::$variant(x) => Kind::problems(x), )* }
            }

            pub fn templated(&self) -> Vec<Templated> {
                match self { $( Install::$variant(x) => Kind::templated(x), )* }
            }

            pub fn resolve(&self, c: &Cluster) -> Result<Install, String> {
                match self { $( Install::$variant(x) => Kind::resolve(x, c).map(Install::$variant), )* }
            }

            pub fn reads(&self) -> Option<Reads<'_>> {
                match self { $( Install::$variant(x) => Kind::reads(x), )* }
            }

            pub fn describe(&self, artifact: &str) -> String {
                match self { $( Install::$variant(x) => Kind::describe(x, artifact), )* }
            }

            pub fn label(&self, artifact: &str) -> String {
                match self { $( Install::$variant(x) => Kind::label(x, artifact), )* }
            }

            /// The readiness hooks its apply makes hold.
            pub fn hooks(&self) -> &'static [Hook] {
                match self { $( Install::$variant(_) => <$ty as Kind>::HOOKS, )* }
            }

            /// The catalog key of the kind whose apply makes `hook` hold.
            pub fn provider(hook: Hook) -> Option<&'static str> {
                $( if <$ty as Kind>::HOOKS.contains(&hook) { return Some($tag); } )*
                None
            }

            pub fn render(&self, at: &RenderAt) -> Result<Option<Rendered>> {
                match self { $( Install::$variant(x) => Kind::render(x, at), )* }
            }
        }
    };
}

install_kinds!(define_install);

/// One thing the agent applies and journals: the install item resolved
/// against the cluster file, and the bundle artifact (`bundle.json` name)
/// it reads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Release {
    #[serde(flatten)]
    pub item: Install,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub artifact: String,
}

impl Release {
    /// A release that reads no artifact.
    pub fn of(item: Install) -> Release {
        Release {
            item,
            artifact: String::new(),
        }
    }

    /// Its name in the journal and in every report: unique in a component.
    pub fn name(&self) -> String {
        self.item.name()
    }

    /// One line for the text plan and the agent's reports.
    pub fn describe(&self) -> String {
        self.item.describe(&self.artifact)
    }

    /// The bundle artifact it reads, if any.
    pub fn artifact(&self) -> Option<&str> {
        (!self.artifact.is_empty()).then_some(self.artifact.as_str())
    }
}

#[cfg(test)]
mod tests;
