//! Growing and shrinking a running site from its master, offline:
//! `kpaas-agent node add` checks a new machine against the site, issues it
//! a join credential of its own (expiring, for that node only), and writes
//! its NoCloud seed (a directory and a CIDATA disk image) with the same
//! renderer the builder's seeds use; `node remove` takes a node out (Vault's
//! role first, then drain, delete, and its credentials withdrawn); `node
//! list` prints the site's record. Each change is recorded in the site's
//! record under its lock, and what the plan derived from the node list
//! (Vault's `cp_role` addresses) follows it.

use crate::boot::credential::{Token, bootstrap_secret, secret_name};
use crate::events::{Kind, Sink};
use crate::k8s::{Api, Failure};
use crate::site::{Added, Credential, Removed, Site, State};
use crate::{kube, vault};
use airgap_bundle::day2::{self, NewNode};
use airgap_bundle::fsutil::{self, rfc3339};
use airgap_bundle::join::Span;
use airgap_bundle::kinds::Install;
use airgap_bundle::node::{NodeConfig, NodeEntry, Role};
use airgap_bundle::run::{Runner, run};
use airgap_bundle::seed::Renderer;
use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Node, Secret};
use std::path::{Path, PathBuf};

/// Where seeds go unless told: beside the site's record, root only.
pub const SEEDS_DIR: &str = "seeds";

pub struct AddArgs {
    pub node: NewNode,
    pub valid_for: Span,
    pub out: Option<PathBuf>,
}

fn wall_clock() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The site's nodes: the record's once the keeper has written it, else
/// the node config's.
pub fn site_nodes(cfg: &NodeConfig) -> Vec<NodeEntry> {
    match Site::load(&cfg.state_dir) {
        Ok(s) if !s.listed.is_empty() => s.nodes(),
        _ => cfg.nodes.clone(),
    }
}

/// The nodes the cluster must have Ready (`Site::members`).
pub fn ready_nodes(cfg: &NodeConfig) -> Vec<NodeEntry> {
    match Site::load(&cfg.state_dir) {
        Ok(s) if !s.listed.is_empty() => s.members(),
        _ => cfg.nodes.clone(),
    }
}

fn admin(root: &Path) -> Result<Api> {
    Api::from_kubeconfig(&root.join(kube::ADMIN_CONF))
        .context("node add and node remove run on the master, as root (they read /etc/kubernetes/admin.conf)")
}

fn must_be_master(cfg: &NodeConfig, root: &Path) -> Result<()> {
    let me = crate::boot::identity::whoami(cfg, root)?;
    if me.role != Role::Master {
        bail!(
            "this is {} ({:?}): node add and node remove run on the master",
            me.hostname,
            me.role
        );
    }
    Ok(())
}

/// `kpaas-agent node add`: returns what to tell the operator.
pub fn add(cfg: &NodeConfig, root: &Path, a: &AddArgs, events: &mut Sink) -> Result<String> {
    must_be_master(cfg, root)?;
    let site_facts = cfg.site.clone().unwrap_or_default();
    // A node that never joined and whose credential is gone may be given
    // a new seed under its own name: it is not a collision with itself.
    let site = Site::load(&cfg.state_dir)?;
    let reissue = site.never_joined(&a.node.hostname);
    let nodes: Vec<NodeEntry> = site_nodes(cfg)
        .into_iter()
        .filter(|n| !(reissue && n.hostname == a.node.hostname))
        .collect();
    let (pods, services) = cfg
        .kubernetes
        .as_ref()
        .map_or((None, None), |k| (Some(k.pod_cidr), Some(k.service_cidr)));
    let problems = day2::problems(&a.node, &nodes, &site_facts, pods, services);
    if !problems.is_empty() {
        bail!(
            "node add: {} problem(s), nothing issued or written:\n  {}",
            problems.len(),
            problems.join("\n  ")
        );
    }
    let entry = a.node.entry();
    let name = entry.hostname.clone();
    let ca_hash = std::fs::read_to_string(root.join(kube::SECRETS_DIR).join("ca-cert-hash"))
        .context("reading the cluster's CA hash from the master's seed secrets")?;
    let token = Token::random()?;
    let now = wall_clock();
    let expires = rfc3339(now + a.valid_for.secs());
    // The new node's config: the master's, as that node, knowing the site
    // as it is now and itself.
    let node_cfg = NodeConfig {
        node: Some(name.clone()),
        nodes: nodes.iter().cloned().chain([entry.clone()]).collect(),
        ..crate::update::store::for_new_node(cfg)?
    };
    // Held to the rules a node applies to its config at boot.
    NodeConfig::from_yaml(
        &serde_saphyr::to_string(&node_cfg)?,
        "the new node's config",
    )
    .map_err(|p| anyhow!("{p}"))?;
    let seed = Renderer::new()?.render(
        &name,
        &site_facts,
        Some(&entry),
        &node_cfg,
        &[
            ("bootstrap-token", format!("{}\n", token.text()).as_bytes()),
            ("ca-cert-hash", ca_hash.as_bytes()),
        ],
    )?;
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| cfg.state_dir.join(SEEDS_DIR));
    fsutil::create_dir(&out)?;
    fsutil::set_mode(&out, 0o700)?;
    let dir = out.join(&name);
    let img = out.join(format!("{name}.img"));
    if reissue {
        // Its earlier seed holds a credential that opens nothing now.
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::remove_file(&img);
    }
    if dir.exists() || img.exists() {
        bail!(
            "node add: {} or {} exists already (an earlier seed for {name}): move it away first",
            dir.display(),
            img.display()
        );
    }
    // Written whole before the credential exists: a failure leaves neither.
    let staging = tempfile::Builder::new()
        .prefix(&format!(".{name}-"))
        .tempdir_in(&out)?;
    fsutil::set_mode(staging.path(), 0o700)?;
    for (f, text) in &seed.files {
        fsutil::write_private(&staging.path().join(f), text.as_bytes())?;
    }
    let files: Vec<(&str, &[u8])> = seed.files.iter().map(|(f, t)| (*f, t.as_bytes())).collect();
    airgap_bundle::cidata::write_vfat(&img, &files)?;
    let api = admin(root)?;
    // An operator's command on a busy control plane waits a little rather
    // than failing at the first refused connection.
    let made = api.create_own(
        "kube-system",
        &bootstrap_secret(&token, &expires, &format!("kpaas: day-2 join of {name}")),
        std::time::Duration::from_secs(120),
    );
    if let Err(f) = made {
        let _ = std::fs::remove_file(&img);
        bail!("node add: issuing {name}'s join credential: {f}");
    }
    let recorded = Site::update(&cfg.state_dir, |s| {
        if s.listed.is_empty() {
            s.listed.clone_from(&cfg.nodes);
        }
        s.added.retain(|x| x.node.hostname != name);
        s.removed.retain(|r| r.hostname != name);
        s.added.push(Added {
            node: entry.clone(),
            at: rfc3339(now),
            seed: dir.clone(),
            credential: Credential::new(&token.id, vec![name.clone()], Some(expires.clone()), now),
        });
        Ok(())
    });
    if let Err(e) = recorded {
        let _ = api.delete::<Secret>("kube-system", &secret_name(&token.id));
        let _ = std::fs::remove_file(&img);
        return Err(e.context("node add: recording the new node; its credential was withdrawn"));
    }
    std::fs::rename(staging.keep(), &dir)
        .with_context(|| format!("moving the seed into {}", dir.display()))?;
    let vault = follow(cfg, events);
    let line = format!(
        "node {name} ({}, {}) added: join credential token {} valid until {expires}, for it only; seed in {} and on the CIDATA image {}; {vault}",
        entry.ip,
        entry.mac.as_deref().unwrap_or_default(),
        token.id,
        dir.display(),
        img.display()
    );
    events.emit(crate::boot::StepId::Nodes, Kind::Progress, &line)?;
    Ok(format!(
        "{line}\n\nAttach {} to the new machine (a USB stick: dd if={} of=/dev/sdX; a VM: a second disk) and boot it from the site's node image: it joins as {name}. `kpaas-agent node list` shows when it has.",
        img.display(),
        img.display()
    ))
}

/// `kpaas-agent node remove NAME`.
pub fn remove(
    cfg: &NodeConfig,
    root: &Path,
    name: &str,
    runner: &dyn Runner,
    events: &mut Sink,
) -> Result<String> {
    must_be_master(cfg, root)?;
    let nodes = site_nodes(cfg);
    // One recorded removed whose drain did not finish may be removed again.
    let again = Site::load(&cfg.state_dir)?.is_removed(name);
    let worker = NodeEntry {
        hostname: name.into(),
        ip: std::net::IpAddr::from([0, 0, 0, 0]),
        mac: None,
        role: Role::Worker,
    };
    let Some(n) = nodes
        .iter()
        .find(|n| n.hostname == name)
        .or(again.then_some(&worker))
    else {
        bail!(
            "node remove: {name:?} is not one of the site's nodes ({})",
            nodes
                .iter()
                .map(|n| n.hostname.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    if n.role == Role::Master {
        bail!("node remove: {name} is the master: a site cannot remove its own control plane");
    }
    let now = wall_clock();
    let api = admin(root)?;
    // Recorded first, so Vault's role and the keeper follow at once; its
    // credentials are withdrawn now, before the node goes.
    let withdrawn = Site::update(&cfg.state_dir, |s| {
        if s.listed.is_empty() {
            s.listed.clone_from(&cfg.nodes);
        }
        s.removed.retain(|r| r.hostname != name);
        s.removed.push(Removed {
            hostname: name.into(),
            at: rfc3339(now),
        });
        let mut ids = Vec::new();
        for a in s.added.iter_mut().filter(|a| a.node.hostname == name) {
            if a.credential.state.honoured() {
                a.credential
                    .set(State::Revoked, &format!("{name} was removed"), now);
                ids.push(a.credential.token_id.clone());
            }
        }
        Ok(ids)
    })?;
    for id in &withdrawn {
        match api.delete::<Secret>("kube-system", &secret_name(id)) {
            Ok(()) | Err(Failure::NotFound(_)) => {}
            Err(f) => bail!("node remove: withdrawing token {id}: {f}"),
        }
    }
    // Vault's role before the drain: Vault may run on this very node.
    let vault = follow(cfg, events);
    let drained = match api.get_cluster::<Node>(name) {
        Err(Failure::NotFound(_)) => "it was not in the cluster".to_string(),
        Err(f) => bail!("node remove: reading node {name}: {f}"),
        Ok(_) => {
            let t = crate::boot::cluster::tools(cfg)?;
            let kc = root.join(kube::ADMIN_CONF);
            run(&t.kubectl)
                .arg("--kubeconfig")
                .arg(&kc)
                .args([
                    "drain",
                    name,
                    "--ignore-daemonsets",
                    "--delete-emptydir-data",
                    "--force",
                    "--timeout=300s",
                ])
                .ok_on(runner)
                .with_context(|| format!("node remove: draining {name}"))?;
            match api.delete_cluster::<Node>(name) {
                Ok(()) | Err(Failure::NotFound(_)) => {}
                Err(f) => bail!("node remove: deleting node {name}: {f}"),
            }
            "drained and deleted".to_string()
        }
    };
    let seeds_still = Site::load(&cfg.state_dir)?
        .seeds
        .filter(|c| c.state.honoured() && c.nodes.iter().any(|x| x != name))
        .map(|c| {
            format!(
                "; note: the seeds' shared credential (token {}) stays valid while {} ha{} not joined, so a copy of a seed from the cluster file still opens the cluster until then",
                c.token_id,
                c.nodes.join(", "),
                if c.nodes.len() == 1 { "s" } else { "ve" }
            )
        })
        .unwrap_or_default();
    let line = format!(
        "node {name} removed: {drained}; {} credential(s) of its own withdrawn; {vault}{seeds_still}",
        withdrawn.len()
    );
    events.emit(crate::boot::StepId::Nodes, Kind::Progress, &line)?;
    Ok(line)
}

/// What the plan derived from the node list, made to follow the site's
/// nodes: Vault's `cp_role` is bound to each node's /32 (and whatever
/// else the plan named, the pod network). Vault not deployed or not
/// answering is said, not fatal: the deploy binds it from the same list.
fn follow(cfg: &NodeConfig, events: &mut Sink) -> String {
    let Some(cidrs) = vault_role_for(cfg, &site_nodes(cfg)) else {
        return "no Vault role to follow".into();
    };
    let kept = vault::key_path(&cfg.state_dir);
    if !kept.exists() {
        return "Vault is not set up yet: its deploy binds cp_role to the site's nodes".into();
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return format!("Vault's role not updated: {e}"),
    };
    match rt.block_on(vault::bind_role(&kept, &cidrs)) {
        Ok(held) => {
            let line = format!("Vault's cp_role now bound to {}", held.join(", "));
            let _ = events.emit(crate::boot::StepId::Nodes, Kind::Progress, &line);
            if let Err(e) = Site::update(&cfg.state_dir, |s| {
                s.vault_role = Some(held.clone());
                Ok(())
            }) {
                return format!("{line} (not recorded: {e:#})");
            }
            line
        }
        Err(e) => format!(
            "Vault's role NOT updated ({e:#}): the master's keeper binds it once Vault answers (or `kpaas-agent node follow`)"
        ),
    }
}

/// The keeper's turn: Vault's role bound again when the site's nodes say
/// otherwise than it was last bound (a node add or remove while Vault was
/// away). Only once the deploy has bound it: before, the deploy binds it
/// from the site's nodes itself. Some(line) when it tried.
pub fn follow_if_stale(cfg: &NodeConfig, events: &mut Sink) -> Option<String> {
    let site = Site::load(&cfg.state_dir).ok()?;
    let held = site.vault_role.as_ref()?;
    let want = vault_role_for(cfg, &site.nodes())?;
    (held != &want).then(|| follow(cfg, events))
}

/// The addresses the plan's Vault role (its `vault-cluster` release) is
/// bound to for these nodes; None when the plan has no such release.
fn vault_role_for(cfg: &NodeConfig, nodes: &[NodeEntry]) -> Option<Vec<String>> {
    let v = cfg
        .platform
        .iter()
        .flat_map(|s| &s.releases)
        .find_map(|r| match &r.item {
            Install::VaultCluster(v) => Some(v),
            _ => None,
        })?;
    Some(bound_cidrs(&v.bound_cidrs, &cfg.nodes, nodes))
}

/// The plan's CIDRs with each listed node's /32 replaced by the site's
/// nodes' (added ones in, removed ones out), the rest kept in order.
pub fn bound_cidrs(plan: &[String], listed: &[NodeEntry], site: &[NodeEntry]) -> Vec<String> {
    let per_node = |n: &NodeEntry| format!("{}/32", n.ip);
    let listed: Vec<String> = listed.iter().map(per_node).collect();
    let mut out: Vec<String> = Vec::new();
    let mut placed = false;
    for c in plan {
        if listed.contains(c) {
            if !placed {
                out.extend(site.iter().map(per_node));
                placed = true;
            }
        } else {
            out.push(c.clone());
        }
    }
    out
}

/// `kpaas-agent node follow`: Vault's role made to follow the site's nodes
/// again (after Vault was away during a node add or remove).
pub fn follow_now(cfg: &NodeConfig, root: &Path, events: &mut Sink) -> Result<String> {
    must_be_master(cfg, root)?;
    let r = follow(cfg, events);
    if r.contains("NOT updated") {
        bail!("{r}");
    }
    Ok(r)
}

/// `kpaas-agent node list`: the site's record.
pub fn list(cfg: &NodeConfig, json: bool) -> Result<String> {
    let site = Site::load(&cfg.state_dir)?;
    if json {
        return Ok(serde_json::to_string_pretty(&site)?);
    }
    if site.listed.is_empty() {
        return Ok(format!(
            "no site record in {} yet (the master writes it once its cluster has formed)",
            cfg.state_dir.display()
        ));
    }
    Ok(site.describe().join("\n"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    fn base64_of(s: &str) -> String {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn vaults_addresses_follow_the_site_nodes_and_keep_the_rest() {
        let n = |h: &str, ip: &str| NodeEntry {
            hostname: h.into(),
            ip: ip.parse().unwrap(),
            mac: None,
            role: Role::Worker,
        };
        let listed = [n("m", "10.0.0.10"), n("w1", "10.0.0.11")];
        let plan: Vec<String> = ["10.0.0.10/32", "10.0.0.11/32", "10.233.64.0/18"]
            .map(String::from)
            .into();
        let site = [n("m", "10.0.0.10"), n("w2", "10.0.0.12")];
        assert_eq!(
            bound_cidrs(&plan, &listed, &site),
            ["10.0.0.10/32", "10.0.0.12/32", "10.233.64.0/18"]
        );
        assert_eq!(bound_cidrs(&plan, &listed, &listed), plan);
    }

    #[test]
    fn the_keeper_follows_vaults_role_only_once_the_deploy_bound_it_and_when_it_is_stale() {
        use airgap_bundle::kinds::vault_cluster::VaultCluster;
        use airgap_bundle::plan::{Release, Step};
        let t = tempfile::tempdir().unwrap();
        let n = |h: &str, ip: &str, role| NodeEntry {
            hostname: h.into(),
            ip: ip.parse().unwrap(),
            mac: None,
            role,
        };
        let mut cfg = NodeConfig::with_defaults(
            "lab",
            vec![
                n("m", "10.0.0.10", Role::Master),
                n("w1", "10.0.0.11", Role::Worker),
            ],
        );
        cfg.state_dir = t.path().to_path_buf();
        let plan = vec!["10.0.0.10/32".to_string(), "10.0.0.11/32".into()];
        cfg.platform = vec![Step {
            wave: 2,
            component: "vault".into(),
            namespace: None,
            release: None,
            depends_on: Vec::new(),
            artifacts: Vec::new(),
            values: Default::default(),
            releases: vec![Release::of(Install::VaultCluster(VaultCluster {
                address: "http://10.0.0.10:31654".into(),
                api_url: "https://10.0.0.10:6443".into(),
                bound_cidrs: plan.clone(),
            }))],
            readiness: Vec::new(),
            notes: Vec::new(),
        }];
        let mut events = Sink::open(t.path()).unwrap().quiet();
        // Not bound by the deploy yet: nothing to follow.
        assert_eq!(follow_if_stale(&cfg, &mut events), None);
        let set = |v: Vec<String>, removed: bool| {
            Site::update(t.path(), |s| {
                s.listed.clone_from(&cfg.nodes);
                s.vault_role = Some(v);
                if removed {
                    s.removed.push(Removed {
                        hostname: "w1".into(),
                        at: rfc3339(0),
                    });
                }
                Ok(())
            })
            .unwrap()
        };
        set(plan.clone(), false);
        assert_eq!(follow_if_stale(&cfg, &mut events), None);
        // w1 removed while Vault was away: stale, so it tries (here Vault
        // was never set up on this tree, and says so).
        set(plan, true);
        let r = follow_if_stale(&cfg, &mut events).unwrap();
        assert!(r.contains("Vault is not set up yet"), "{r}");
    }

    /// `node add` and `node remove` against a real control plane: the
    /// checks first (nothing issued on a bad request), then the credential
    /// in the cluster, the seed on its CIDATA image, the record; the keeper
    /// withdraws the credential once the node joins; remove drains (the
    /// bundled kubectl, scripted here) and deletes the node.
    #[test]
    fn a_node_is_added_with_its_own_credential_and_seed_then_removed() {
        use kpaas_testkit::control_plane::ControlPlane;
        let Some(cp) = ControlPlane::start("node add and remove").unwrap() else {
            return;
        };
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let b = t.path().join("bundle");
        crate::boot::cluster_tests::bundle(&b);
        fsutil::write_atomic(
            &root.join(kube::ADMIN_CONF),
            &std::fs::read(&cp.kubeconfig).unwrap(),
        )
        .unwrap();
        fsutil::write_atomic(
            &root.join(kube::SECRETS_DIR).join("ca-cert-hash"),
            b"sha256:00\n",
        )
        .unwrap();
        let n = |h: &str, ip: &str, mac: &str, role| NodeEntry {
            hostname: h.into(),
            ip: ip.parse().unwrap(),
            mac: Some(mac.into()),
            role,
        };
        let mut cfg = NodeConfig::with_defaults(
            "lab",
            vec![
                n("m", "10.10.0.10", "52:54:00:00:00:10", Role::Master),
                n("w1", "10.10.0.11", "52:54:00:00:00:11", Role::Worker),
            ],
        );
        cfg.node = Some("m".into());
        cfg.bundle = b;
        cfg.state_dir = t.path().join("state");
        cfg.site = Some(airgap_bundle::seed::SiteFacts {
            node_cidr: Some(
                airgap_bundle::cluster::Cidr::try_from("10.10.0.0/24".to_string()).unwrap(),
            ),
            gateway: Some("10.10.0.1".parse().unwrap()),
            ssh_authorized_keys: vec!["ssh-ed25519 AAAA admin@site".into()],
        });
        let mut events = Sink::open(&cfg.state_dir).unwrap().quiet();
        let out = t.path().join("seeds");
        let args = |h: &str, ip: &str, mac: &str| AddArgs {
            node: NewNode {
                hostname: h.into(),
                ip: ip.parse().unwrap(),
                mac: mac.into(),
            },
            valid_for: Span(3600),
            out: Some(out.clone()),
        };
        let api = Api::from_kubeconfig(&cp.kubeconfig).unwrap();
        let tokens = |api: &Api| -> usize {
            api.list::<Secret>(Some("kube-system"))
                .unwrap()
                .iter()
                .filter(|s| s.type_.as_deref() == Some("bootstrap.kubernetes.io/token"))
                .count()
        };
        // Bad: every problem at once, nothing issued or written.
        let e = add(
            &cfg,
            &root,
            &args("w1", "10.10.0.1", "52:54:00:00:00:10"),
            &mut events,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("3 problem(s), nothing issued or written"), "{e}");
        assert_eq!(tokens(&api), 0);
        assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
        // Good.
        let said = add(
            &cfg,
            &root,
            &args("w2", "10.10.0.12", "52:54:00:00:00:12"),
            &mut events,
        )
        .unwrap();
        assert!(
            said.contains("node w2 (10.10.0.12, 52:54:00:00:00:12) added"),
            "{said}"
        );
        assert_eq!(tokens(&api), 1);
        let img = out.join("w2.img");
        use std::os::unix::fs::PermissionsExt;
        for p in [&img, &out.join("w2/user-data")] {
            assert_eq!(
                std::fs::metadata(p).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        // The image carries the node's config: this node, the site, itself.
        let text =
            airgap_bundle::cidata::read_file(&img, airgap_bundle::node::CIDATA_FILE).unwrap();
        let got = NodeConfig::from_yaml(&String::from_utf8(text).unwrap(), "seed").unwrap();
        assert_eq!(got.node.as_deref(), Some("w2"));
        let names: Vec<&str> = got.nodes.iter().map(|n| n.hostname.as_str()).collect();
        assert_eq!(names, ["m", "w1", "w2"]);
        let site = Site::load(&cfg.state_dir).unwrap();
        let id = site.added[0].credential.token_id.clone();
        let user_data = std::fs::read_to_string(out.join("w2/user-data")).unwrap();
        assert!(
            user_data.contains("ssh-ed25519 AAAA admin@site") && user_data.contains("hostname: w2")
        );
        // The credential's secret half is in the seed only: not in what
        // the operator reads, not in the events.
        let secret: Secret = api.get("kube-system", &secret_name(&id)).unwrap();
        let half = String::from_utf8(secret.data.unwrap()["token-secret"].0.clone()).unwrap();
        assert!(user_data.contains(&base64_of(&format!("{id}.{half}\n"))));
        let stream =
            std::fs::read_to_string(cfg.state_dir.join(crate::events::EVENTS_FILE)).unwrap();
        assert!(!said.contains(&half) && !stream.contains(&half) && stream.contains(&id));
        // The same node again: refused by name, address and MAC.
        let e = add(
            &cfg,
            &root,
            &args("w2", "10.10.0.12", "52:54:00:00:00:12"),
            &mut events,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("3 problem(s)"), "{e}");
        // It joins: the keeper withdraws its credential.
        cp.apply("apiVersion: v1\nkind: Node\nmetadata: {name: w2}\n")
            .unwrap();
        let token = crate::boot::credential::Token::parse("abcdef.0123456789abcdef").unwrap();
        Site::update(&cfg.state_dir, |s| {
            crate::boot::credential::check(&api, &token, &cfg.join, &cfg, s, wall_clock())
                .map_err(|f| anyhow!("{f}"))
        })
        .unwrap();
        let site = Site::load(&cfg.state_dir).unwrap();
        assert_eq!(site.added[0].credential.state, State::Removed);
        assert!(matches!(
            api.get::<Secret>("kube-system", &secret_name(&id)),
            Err(Failure::NotFound(_))
        ));
        // Removed: drained with the bundle's kubectl, deleted, recorded.
        let runner = airgap_bundle::run::Recording::new();
        let said = remove(&cfg, &root, "w2", &runner, &mut events).unwrap();
        assert!(
            said.starts_with("node w2 removed: drained and deleted"),
            "{said}"
        );
        assert!(
            runner.lines()[0].contains("drain w2 --ignore-daemonsets"),
            "{:?}",
            runner.lines()
        );
        assert!(matches!(
            api.get_cluster::<Node>("w2"),
            Err(Failure::NotFound(_))
        ));
        let names: Vec<String> = site_nodes(&cfg).into_iter().map(|n| n.hostname).collect();
        assert_eq!(names, ["m", "w1"]);
        assert!(
            remove(&cfg, &root, "m", &runner, &mut events)
                .unwrap_err()
                .to_string()
                .contains("is the master")
        );
    }
}
