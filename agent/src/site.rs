//! The site's record of itself, kept by the master: which nodes it has
//! (those the cluster file listed, those added on day 2, those removed),
//! when each joined, and every join credential issued with what became of
//! it. Token ids only, never their secret halves. `status`, the status page
//! and the node endpoint read it; the credential keeper, `node add` and
//! `node remove` change it, each under the record's lock (they are
//! separate processes), written atomically.

use airgap_bundle::fsutil::{parse_rfc3339, rfc3339};
use airgap_bundle::node::NodeEntry;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// In the agent's state directory.
pub const SITE_FILE: &str = "site.json";
const LOCK_FILE: &str = "site.lock";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Site {
    /// The nodes the cluster file listed (from the node config).
    #[serde(default)]
    pub listed: Vec<NodeEntry>,
    /// The seeds' credential: every seed made from the cluster file carries it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seeds: Option<Credential>,
    /// Nodes added on day 2, each with its own credential and seed.
    #[serde(default)]
    pub added: Vec<Added>,
    /// Nodes removed: never waited for again, their credentials revoked.
    #[serde(default)]
    pub removed: Vec<Removed>,
    /// Each node and when it was first seen in the cluster.
    #[serde(default)]
    pub joined: BTreeMap<String, String>,
    /// The addresses Vault's `cp_role` is bound to, as last set (the
    /// deploy) or read back (a follow): the keeper binds it again when the
    /// site's nodes say otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vault_role: Option<Vec<String>>,
}

/// A join credential (a kubeadm bootstrap token) and its fate.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Credential {
    /// The token's public half.
    pub token_id: String,
    /// The nodes it is for.
    pub nodes: Vec<String>,
    pub state: State,
    /// When it lapses (RFC 3339), as last set or read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// When the state last changed, and why.
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub why: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// Issued, not checked yet.
    #[default]
    Issued,
    /// Valid, renewed by the master while its nodes have not joined.
    Kept,
    /// Valid until it lapses, not renewed.
    Valid,
    /// Lapsed, not renewed: a node it was for needs a new seed.
    Lapsed,
    /// Its nodes joined: removed, never made again.
    Removed,
    /// Its node was removed (`node remove`): withdrawn.
    Revoked,
}

impl State {
    /// Whether the master still lets a node join with it.
    pub fn honoured(self) -> bool {
        matches!(self, State::Issued | State::Kept | State::Valid)
    }
}

impl Credential {
    pub fn new(token_id: &str, nodes: Vec<String>, expires: Option<String>, now: u64) -> Self {
        Credential {
            token_id: token_id.into(),
            nodes,
            state: State::Issued,
            expires,
            since: rfc3339(now),
            why: "issued".into(),
        }
    }

    /// Moves to `s`, saying why, if it is not there already.
    pub fn set(&mut self, s: State, why: &str, now: u64) {
        if self.state != s {
            self.state = s;
            self.since = rfc3339(now);
            self.why = why.into();
        }
    }

    /// Whether it has lapsed by `now`.
    pub fn lapsed(&self, now: u64) -> bool {
        self.expires
            .as_deref()
            .and_then(parse_rfc3339)
            .is_some_and(|t| t <= now)
    }

    /// One line for `status`, the status page and the node endpoint.
    pub fn describe(&self) -> String {
        let until = self.expires.as_deref().unwrap_or("no expiry");
        let id = &self.token_id;
        let who = self.nodes.join(", ");
        match self.state {
            State::Issued => format!("token {id} for {who}: issued, valid until {until}"),
            State::Kept => format!("token {id}: valid until {until}, {}", self.why),
            State::Valid => format!("token {id} for {who}: valid until {until}, not renewed"),
            State::Lapsed => format!(
                "token {id} for {who}: lapsed at {until}, not renewed: a node not yet joined needs a day-2 seed (kpaas-agent node add)"
            ),
            State::Removed | State::Revoked => {
                format!("token {id}: withdrawn at {}: {}", self.since, self.why)
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Added {
    pub node: NodeEntry,
    pub at: String,
    /// Where its seed was written (the directory and the CIDATA image).
    pub seed: PathBuf,
    pub credential: Credential,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    pub hostname: String,
    pub at: String,
}

impl Site {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(SITE_FILE)
    }

    /// The record as it is now (absent: empty).
    pub fn load(state_dir: &Path) -> Result<Site> {
        crate::state_file::load(&Self::path(state_dir), "the site's record")
    }

    /// Changes the record under its lock: read, changed by `f`, written
    /// back atomically when `f` succeeds and changed it.
    pub fn update<T>(state_dir: &Path, f: impl FnOnce(&mut Site) -> Result<T>) -> Result<T> {
        airgap_bundle::fsutil::create_dir(state_dir)?;
        let lock = state_dir.join(LOCK_FILE);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock)
            .with_context(|| format!("opening {}", lock.display()))?;
        let _held = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| anyhow::anyhow!("locking {}: {e}", lock.display()))?;
        let mut site = Site::load(state_dir)?;
        let before = site.clone();
        let out = f(&mut site)?;
        if site != before {
            crate::state_file::save(&Self::path(state_dir), "the site's record", &site)?;
        }
        Ok(out)
    }

    /// The site's nodes: the cluster file's, then those added, less those
    /// removed.
    /// A listed node given a day-2 seed (it never joined with the
    /// seeds' credential) is there once, as added.
    pub fn nodes(&self) -> Vec<NodeEntry> {
        let added = |h: &str| self.added.iter().any(|a| a.node.hostname == h);
        self.listed
            .iter()
            .filter(|n| !added(&n.hostname))
            .chain(self.added.iter().map(|a| &a.node))
            .filter(|n| !self.is_removed(&n.hostname))
            .cloned()
            .collect()
    }

    /// The nodes the cluster must have Ready: the listed ones, and those
    /// added that have joined (one whose seed is not yet attached does not
    /// hold up a master's boot or a deploy).
    pub fn members(&self) -> Vec<NodeEntry> {
        let pending = |h: &str| {
            self.added.iter().any(|a| a.node.hostname == h) && !self.joined.contains_key(h)
        };
        self.nodes()
            .into_iter()
            .filter(|n| !pending(&n.hostname))
            .collect()
    }

    /// A node that may be given a (new) day-2 seed under its own name: one
    /// that never joined (a listed worker whose seeds' credential lapsed, an
    /// added one whose credential lapsed or was withdrawn).
    pub fn never_joined(&self, hostname: &str) -> bool {
        !self.joined.contains_key(hostname)
            && self
                .credentials()
                .any(|c| c.nodes.iter().any(|n| n == hostname) && !c.state.honoured())
    }

    pub fn is_removed(&self, hostname: &str) -> bool {
        self.removed.iter().any(|r| r.hostname == hostname)
    }

    /// Every credential issued, the seeds' first.
    pub fn credentials(&self) -> impl Iterator<Item = &Credential> {
        self.seeds
            .iter()
            .chain(self.added.iter().map(|a| &a.credential))
    }

    /// The credential with this token id.
    pub fn credential(&self, token_id: &str) -> Option<&Credential> {
        self.credentials().find(|c| c.token_id == token_id)
    }

    /// Lines for `status` and the status page: each node, then each
    /// credential.
    pub fn describe(&self) -> Vec<String> {
        let mut out = Vec::new();
        {
            for n in self.nodes() {
                let how = if self.added.iter().any(|a| a.node.hostname == n.hostname) {
                    "added on day 2"
                } else {
                    "from the cluster file"
                };
                let joined = self
                    .joined
                    .get(&n.hostname)
                    .map_or("not joined yet".to_string(), |t| format!("joined {t}"));
                out.push(format!(
                    "node {} {} {:?}, {how}: {joined}",
                    n.hostname, n.ip, n.role
                ));
            }
        }
        for r in &self.removed {
            out.push(format!("node {} removed {}", r.hostname, r.at));
        }
        for c in self.credentials() {
            out.push(format!("join credential: {}", c.describe()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use airgap_bundle::node::Role;

    fn entry(h: &str, ip: &str, role: Role) -> NodeEntry {
        NodeEntry {
            hostname: h.into(),
            ip: ip.parse().unwrap(),
            mac: None,
            role,
        }
    }

    #[test]
    fn the_site_is_the_listed_nodes_plus_added_less_removed_and_updates_under_its_lock() {
        let t = tempfile::tempdir().unwrap();
        Site::update(t.path(), |s| {
            s.listed = vec![
                entry("m", "10.0.0.10", Role::Master),
                entry("w1", "10.0.0.11", Role::Worker),
            ];
            s.added.push(Added {
                node: entry("w2", "10.0.0.12", Role::Worker),
                at: rfc3339(0),
                seed: "/seeds/w2".into(),
                credential: Credential::new("abcdef", vec!["w2".into()], None, 0),
            });
            s.removed.push(Removed {
                hostname: "w1".into(),
                at: rfc3339(0),
            });
            Ok(())
        })
        .unwrap();
        // Two writers at once (the keeper and `node add`): each sees the
        // other's change, none is lost.
        let dir = t.path().to_path_buf();
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let d = dir.clone();
                std::thread::spawn(move || {
                    Site::update(&d, |s| {
                        s.joined.insert(format!("n{i}"), rfc3339(i));
                        Ok(())
                    })
                    .unwrap()
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let s = Site::load(t.path()).unwrap();
        assert_eq!(s.joined.len(), 4);
        let names: Vec<String> = s.nodes().into_iter().map(|n| n.hostname).collect();
        assert_eq!(names, ["m", "w2"]);
        assert!(s.credential("abcdef").unwrap().state.honoured());
        let lines = s.describe().join("\n");
        assert!(
            lines.contains("node w2 10.0.0.12 Worker, added on day 2: not joined yet"),
            "{lines}"
        );
        assert!(lines.contains("node w1 removed"), "{lines}");
        // w2 has not joined: it is a node (Vault's role names it) but not
        // one a master's readiness waits for.
        let members: Vec<String> = s.members().into_iter().map(|n| n.hostname).collect();
        assert_eq!(members, ["m"]);
        assert!(!s.never_joined("w2"), "its credential is still good");
        // Its credential lapsed before it joined: it may get a new seed
        // under its name; a listed node given one is there once.
        let mut s2 = s.clone();
        s2.added[0].credential.set(State::Lapsed, "lapsed", 9);
        assert!(s2.never_joined("w2") && !s2.never_joined("m"));
        s2.removed.clear();
        s2.added[0].node.hostname = "w1".into();
        let names: Vec<String> = s2.nodes().into_iter().map(|n| n.hostname).collect();
        assert_eq!(names, ["m", "w1"]);
        // A failed change writes nothing.
        let e: Result<()> = Site::update(t.path(), |s| {
            s.added.clear();
            anyhow::bail!("no")
        });
        assert!(e.is_err());
        assert_eq!(Site::load(t.path()).unwrap().added.len(), 1);
    }
}
