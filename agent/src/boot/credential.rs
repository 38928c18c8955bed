//! The master keeps the seeds' join credential (the kubeadm bootstrap token
//! every worker's seed carries) by the cluster file's join policy: while a
//! node the cluster file lists has not joined, it renews the token before it
//! lapses (on every boot and while it runs; one that lapsed or was cleaned
//! away while the master was off is made again, since the seeds still hold
//! it); once every listed node has joined, it removes the token, for good:
//! a seed copied off the site then opens nothing. A node not listed joins
//! with a day-2 seed of its own.
//!
//! The step starts the keeper and returns: the keeper is a thread beside
//! the rest of the boot, so a worker racked weeks later finds the
//! credential valid whatever the master's other steps are doing. What it
//! did is in the site's record (`crate::site`: token ids only, never the
//! secret halves), which `status`, `node list` and the status page show.

use super::cluster::{self, on_master};
use super::{Ctx, Rerun, Step, StepId};
use crate::events::{Kind, Sink};
use crate::k8s::{Api, Failure};
use crate::kube;
use crate::site::{Credential, Site, State};
use airgap_bundle::fsutil::{parse_rfc3339, rfc3339};
use airgap_bundle::join::{JoinPolicy, Renew};
use airgap_bundle::node::NodeConfig;
use anyhow::{Result, anyhow};
use k8s_openapi::api::core::v1::{Node, Secret};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

pub const STEP: Step = Step {
    id: StepId::Credential,
    rerun: Rerun::EveryBoot,
    applies: on_master,
    run: work,
};

/// What kubeadm init names the seeds' token, and so the keeper when it
/// makes it again.
const SEEDS_DESCRIPTION: &str = "kpaas: the cluster's join token, from the seeds";
const NAMESPACE: &str = "kube-system";
/// kubeadm's group for the tokens it makes: its RBAC lets them post CSRs
/// that the controller-manager approves for nodes.
const GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// A failed check is tried again this soon (a master starting or busy).
const RETRY: Duration = Duration::from_secs(20);
/// Between checks woken by the nodes' own changes (a kubelet's status
/// updates would otherwise wake it every few seconds).
const SETTLE: Duration = Duration::from_secs(5);

/// The token as the seeds carry it: `<id>.<secret>`.
#[derive(Clone)]
pub struct Token {
    pub id: String,
    secret: String,
}

impl Token {
    pub fn parse(text: &str) -> Result<Token> {
        let t = text.trim();
        let ok = |s: &str, n: usize| {
            s.len() == n
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        };
        match t.split_once('.') {
            Some((id, secret)) if ok(id, 6) && ok(secret, 16) => Ok(Token {
                id: id.into(),
                secret: secret.into(),
            }),
            // Never echo it: it is the credential.
            _ => Err(anyhow!(
                "the seed's bootstrap-token is not a kubeadm token ([a-z0-9]{{6}}.[a-z0-9]{{16}})"
            )),
        }
    }

    /// A fresh token (`node add`): kubeadm's alphabet, from the kernel's
    /// random source.
    pub fn random() -> Result<Token> {
        let a = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let mut raw = [0u8; 22];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut raw)?;
        let s: String = raw
            .iter()
            .map(|b| a[*b as usize % a.len()] as char)
            .collect();
        Ok(Token {
            id: s[..6].into(),
            secret: s[6..].into(),
        })
    }

    /// `<id>.<secret>`: what a seed carries.
    pub fn text(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// One check, under the site's lock: which of the site's nodes the cluster
/// has, then each credential made, renewed, left to lapse or withdrawn.
/// Returns a line for each change. `now` is Unix seconds.
pub fn check(
    api: &Api,
    seeds_token: &Token,
    policy: &JoinPolicy,
    cfg: &NodeConfig,
    site: &mut Site,
    now: u64,
) -> Result<Vec<String>, Failure> {
    let present: BTreeSet<String> = api
        .list_cluster::<Node>()?
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    site.listed.clone_from(&cfg.nodes);
    for n in site.nodes() {
        if present.contains(&n.hostname) {
            site.joined
                .entry(n.hostname.clone())
                .or_insert_with(|| rfc3339(now));
        }
    }
    let mut lines = Vec::new();
    let listed: Vec<String> = cfg
        .nodes
        .iter()
        .filter(|n| !site.is_removed(&n.hostname))
        .map(|n| n.hostname.clone())
        .collect();
    let mut seeds = match site.seeds.take() {
        Some(c) if c.token_id == seeds_token.id => c,
        _ => Credential::new(&seeds_token.id, listed.clone(), None, now),
    };
    seeds.nodes.clone_from(&listed);
    let before = seeds.clone();
    let r = keep_seeds(api, seeds_token, policy, &present, &mut seeds, now);
    if seeds != before {
        lines.push(seeds.describe());
    }
    site.seeds = Some(seeds);
    r?;
    for a in &mut site.added {
        let c = &mut a.credential;
        if !c.state.honoured() {
            continue;
        }
        let before = c.state;
        if present.contains(&a.node.hostname) {
            match api.delete::<Secret>(NAMESPACE, &secret_name(&c.token_id)) {
                Ok(()) | Err(Failure::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
            c.set(State::Removed, &format!("{} joined", a.node.hostname), now);
        } else if c.lapsed(now) {
            c.set(State::Lapsed, "lapsed before its node joined", now);
        } else {
            c.set(State::Valid, "issued by kpaas-agent node add", now);
        }
        if c.state != before {
            lines.push(c.describe());
        }
    }
    Ok(lines)
}

/// The seeds' credential by the policy: removed once every listed node
/// has joined, else renewed (or left to lapse, `renew: never`).
fn keep_seeds(
    api: &Api,
    token: &Token,
    policy: &JoinPolicy,
    present: &BTreeSet<String>,
    c: &mut Credential,
    now: u64,
) -> Result<(), Failure> {
    if !c.state.honoured() && c.state != State::Lapsed {
        return Ok(());
    }
    let name = secret_name(&token.id);
    let waiting: Vec<&String> = c.nodes.iter().filter(|n| !present.contains(*n)).collect();
    if waiting.is_empty() {
        match api.delete::<Secret>(NAMESPACE, &name) {
            Ok(()) | Err(Failure::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        c.expires = None;
        c.set(
            State::Removed,
            &format!(
                "every node the cluster file lists had joined ({}); a node added from now on needs a day-2 seed",
                c.nodes.join(", ")
            ),
            now,
        );
        return Ok(());
    }
    let ttl = policy.credential_ttl.secs();
    let until = rfc3339(now + ttl);
    let kept = format!(
        "kept valid while {} ha{} not joined",
        waiting
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if waiting.len() == 1 { "s" } else { "ve" }
    );
    let expires = match api.get::<Secret>(NAMESPACE, &name) {
        Ok(s) => Some(expiration(&s)),
        Err(Failure::NotFound(_)) => None,
        Err(e) => return Err(e),
    };
    if policy.renew == Renew::Never {
        if let Some(Some(e)) = &expires {
            c.expires = Some(e.clone());
        }
        if expires.is_none() || c.lapsed(now) {
            c.set(State::Lapsed, "not renewed (renew: never)", now);
        } else {
            c.set(State::Valid, "not renewed (renew: never)", now);
        }
        return Ok(());
    }
    match expires {
        None => {
            api.create(
                NAMESPACE,
                &bootstrap_secret(token, &until, SEEDS_DESCRIPTION),
            )?;
            c.expires = Some(until);
            c.set(State::Kept, "", now);
            c.why = format!("made again (it had lapsed or been deleted), {kept}");
        }
        // Due once a quarter of its life has passed; one with no
        // expiration, or one kubeadm wrote in a zone this cannot read, is
        // given one now.
        Some(e) => match e.as_deref().and_then(parse_rfc3339) {
            Some(t) if t > now && t - now > ttl - policy.renew_every().as_secs() => {
                c.expires = e;
                c.set(State::Kept, "", now);
                c.why.clone_from(&kept);
            }
            _ => {
                api.merge_patch::<Secret>(
                    NAMESPACE,
                    &name,
                    &serde_json::json!({"stringData": {"expiration": until}}),
                )?;
                c.expires = Some(until);
                c.set(State::Kept, "", now);
                c.why = format!("renewed, {kept}");
            }
        },
    }
    Ok(())
}

pub fn secret_name(token_id: &str) -> String {
    format!("bootstrap-token-{token_id}")
}

/// The token's `expiration` (None: it never expires).
fn expiration(s: &Secret) -> Option<String> {
    s.data
        .as_ref()?
        .get("expiration")
        .map(|b| String::from_utf8_lossy(&b.0).to_string())
}

/// The Secret kubeadm would make for the token (bootstrap token format:
/// `bootstrap.kubernetes.io/token`).
pub fn bootstrap_secret(token: &Token, expiration: &str, description: &str) -> Secret {
    let data: BTreeMap<String, String> = [
        ("description", description),
        ("token-id", token.id.as_str()),
        ("token-secret", token.secret.as_str()),
        ("expiration", expiration),
        ("usage-bootstrap-authentication", "true"),
        ("usage-bootstrap-signing", "true"),
        ("auth-extra-groups", GROUP),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Secret {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(secret_name(&token.id)),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        type_: Some("bootstrap.kubernetes.io/token".into()),
        string_data: Some(data),
        ..Default::default()
    }
}

fn wall_clock() -> u64 {
    // Not `now_unix`: SOURCE_DATE_EPOCH must never set a credential's life.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let token =
        Token::parse(&cluster::secrets(ctx, events, StepId::Credential, &["bootstrap-token"])?[0])?;
    let kubeconfig = cluster::at(ctx, kube::ADMIN_CONF);
    let cfg = ctx.cfg.clone();
    // The first check here, so the step says where the credential stands;
    // one that fails (the API still starting after a reboot) is the
    // keeper's to retry: the boot goes on either way.
    let first = Api::from_kubeconfig(&kubeconfig).and_then(|api| {
        Site::update(&cfg.state_dir, |site| {
            check(&api, &token, &cfg.join, &cfg, site, wall_clock()).map_err(|f| anyhow!("{f}"))?;
            Ok(site
                .seeds
                .as_ref()
                .map(Credential::describe)
                .unwrap_or_default())
        })
    });
    let mut sink = events.fork("keeper")?;
    std::thread::Builder::new()
        .name("join-credential".into())
        .spawn(move || keep(&kubeconfig, &cfg, &token, &mut sink))?;
    Ok(match first {
        Ok(seeds) => {
            format!("the seeds' join credential: {seeds}; the keeper runs beside the boot")
        }
        Err(e) => format!(
            "the first check failed ({e:#}); the keeper tries again every {} s",
            RETRY.as_secs()
        ),
    })
}

/// The keeper's loop: a check at once, then whenever a node changes (one
/// joins; settled) or a renewal falls due. It runs as long as the agent.
fn keep(kubeconfig: &Path, cfg: &NodeConfig, token: &Token, events: &mut Sink) {
    let say = |events: &mut Sink, line: &str| {
        // The stream may be full or gone: the keeper carries on regardless.
        let _ = events.emit(StepId::Credential, Kind::Progress, line);
    };
    let api = loop {
        match Api::from_kubeconfig(kubeconfig) {
            Ok(a) => break a,
            Err(e) => {
                say(
                    events,
                    &format!(
                        "the keeper cannot read the admin kubeconfig yet ({e:#}); trying again in {} s",
                        RETRY.as_secs()
                    ),
                );
                std::thread::sleep(RETRY);
            }
        }
    };
    let mut last_failure: Option<String> = None;
    let mut last_follow: Option<String> = None;
    // The step made the first check.
    std::thread::sleep(SETTLE);
    until_due(&api, cfg.join.renew_every().saturating_sub(SETTLE));
    loop {
        let r = Site::update(&cfg.state_dir, |site| {
            check(&api, token, &cfg.join, cfg, site, wall_clock())
                .map_err(|f| anyhow::anyhow!("{f}"))
        });
        match r {
            Ok(lines) => {
                last_failure = None;
                for l in lines {
                    say(events, &format!("join credential: {l}"));
                }
                // What the plan derived from the node list follows it.
                // Said once per reason, as a failed check is.
                match crate::grow::follow_if_stale(cfg, events) {
                    Some(r) if r.contains("NOT updated") => {
                        if last_follow.as_deref() != Some(r.as_str()) {
                            say(events, &r);
                        }
                        last_follow = Some(r);
                    }
                    _ => last_follow = None,
                }
                std::thread::sleep(SETTLE);
                until_due(&api, cfg.join.renew_every().saturating_sub(SETTLE));
            }
            Err(e) => {
                let why = format!("{e:#}");
                // Said once per reason: a master busy for minutes would
                // otherwise fill the console.
                if last_failure.as_deref() != Some(why.as_str()) {
                    say(
                        events,
                        &format!(
                            "could not check the join credentials ({why}); trying again every {} s",
                            RETRY.as_secs()
                        ),
                    );
                }
                last_failure = Some(why);
                std::thread::sleep(RETRY);
            }
        }
    }
}

/// Waits out `most`, cut short when a node changes (one joins). A watch
/// lasts under five minutes, so a long wait is several.
fn until_due(api: &Api, most: Duration) {
    const WATCH: Duration = Duration::from_secs(280);
    let due = std::time::Instant::now() + most;
    loop {
        let left = due.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        let chunk = left.min(WATCH);
        let began = std::time::Instant::now();
        api.changes_cluster::<Node>(chunk);
        // `changes_cluster` sleeps out its bound unless a change woke it.
        if began.elapsed() + Duration::from_millis(500) < chunk {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use crate::site::Added;
    use airgap_bundle::join::Span;
    use airgap_bundle::node::{NodeEntry, Role};
    use k8s_openapi::api::core::v1::ConfigMap;
    use kpaas_testkit::control_plane::ControlPlane;

    const TOKEN: &str = "abcdef.0123456789abcdef";

    fn entry(h: &str, ip: &str, role: Role) -> NodeEntry {
        NodeEntry {
            hostname: h.into(),
            ip: ip.parse().unwrap(),
            mac: None,
            role,
        }
    }

    fn node(cp: &ControlPlane, name: &str) {
        cp.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {name}}}\n"
        ))
        .unwrap();
    }

    /// What kubeadm join needs of a token, asked of the real API server:
    /// whether it authenticates (403 on a Secret list: known, not allowed;
    /// 401: unknown or lapsed) and whether the bootstrap signer has signed
    /// the cluster-info ConfigMap with it (what discovery reads). Both
    /// follow the Secret through informers on their own schedule: read
    /// until they are `want` or 30 s pass; the last reading is returned.
    fn honoured(cp: &ControlPlane, admin: &Api, token: &str, want: bool) -> (bool, bool) {
        let kc = cp.dir().join(format!("as-{}.conf", &token[..6]));
        let server = &cp.server;
        std::fs::write(
            &kc,
            format!("apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: {token}}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"),
        )
        .unwrap();
        let api = Api::from_kubeconfig(&kc).unwrap();
        let key = format!("jws-kubeconfig-{}", &token[..6]);
        let mut seen = (!want, !want);
        for _ in 0..60 {
            let auth = match api.list::<Secret>(Some(NAMESPACE)) {
                Err(Failure::Refused(w)) if w.contains("403") => true,
                Err(Failure::Refused(w)) if w.contains("401") => false,
                other => panic!("unexpected answer to a bootstrap token: {other:?}"),
            };
            let cm: ConfigMap = admin.get("kube-public", "cluster-info").unwrap();
            seen = (auth, cm.data.unwrap_or_default().contains_key(&key));
            if seen == (want, want) {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        seen
    }

    #[test]
    fn the_keeper_renews_until_every_listed_node_joins_then_removes_it_for_good() {
        let Some(cp) = ControlPlane::start("join credential keeper").unwrap() else {
            return;
        };
        let admin = Api::from_kubeconfig(&cp.kubeconfig).unwrap();
        cp.apply("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cluster-info, namespace: kube-public}\ndata: {kubeconfig: \"apiVersion: v1\\nkind: Config\\n\"}\n").unwrap();
        node(&cp, "m");
        let mut cfg = NodeConfig::with_defaults(
            "lab",
            vec![
                entry("m", "10.0.0.10", Role::Master),
                entry("w1", "10.0.0.11", Role::Worker),
            ],
        );
        cfg.join = JoinPolicy {
            credential_ttl: Span(120),
            renew: Renew::UntilJoined,
        };
        let token = Token::parse(TOKEN).unwrap();
        let mut site = Site::default();
        let expiry = |api: &Api| -> Option<u64> {
            let s: Secret = api.get(NAMESPACE, &secret_name("abcdef")).ok()?;
            parse_rfc3339(&expiration(&s)?)
        };
        // kubeadm init made none here: the keeper makes it, valid 2 min.
        let t0 = wall_clock();
        let lines = check(&admin, &token, &cfg.join, &cfg, &mut site, t0).unwrap();
        let seeds = site.seeds.clone().unwrap();
        assert_eq!((seeds.state, seeds.nodes.len()), (State::Kept, 2));
        assert!(
            lines[0].contains("kept valid while w1 has not joined"),
            "{lines:?}"
        );
        assert_eq!(expiry(&admin), Some(t0 + 120));
        assert_eq!(site.joined.keys().collect::<Vec<_>>(), ["m"]);
        assert_eq!(honoured(&cp, &admin, TOKEN, true), (true, true));
        // Not due before a quarter of its life; due after.
        check(&admin, &token, &cfg.join, &cfg, &mut site, t0 + 20).unwrap();
        assert_eq!(expiry(&admin), Some(t0 + 120));
        check(&admin, &token, &cfg.join, &cfg, &mut site, t0 + 31).unwrap();
        assert_eq!(expiry(&admin), Some(t0 + 151));
        // Cleaned away (as the token cleaner does once it lapses while
        // the master is off): made again, the seeds still carry it.
        admin
            .delete::<Secret>(NAMESPACE, &secret_name("abcdef"))
            .unwrap();
        check(&admin, &token, &cfg.join, &cfg, &mut site, t0 + 40).unwrap();
        assert_eq!(expiry(&admin), Some(t0 + 160));
        // renew: never leaves it to lapse, and says so.
        let never = JoinPolicy {
            renew: Renew::Never,
            ..cfg.join
        };
        check(&admin, &token, &never, &cfg, &mut site, t0 + 200).unwrap();
        assert_eq!(site.seeds.as_ref().unwrap().state, State::Lapsed);
        assert!(
            site.seeds
                .as_ref()
                .unwrap()
                .describe()
                .contains("needs a day-2 seed")
        );
        // A day-2 credential of its own for w2: valid, not renewed.
        let day2 = Token::random().unwrap();
        admin
            .create(
                NAMESPACE,
                &bootstrap_secret(&day2, &rfc3339(t0 + 600), "test"),
            )
            .unwrap();
        site.added.push(Added {
            node: entry("w2", "10.0.0.12", Role::Worker),
            at: rfc3339(t0),
            seed: "/seeds/w2".into(),
            credential: Credential::new(&day2.id, vec!["w2".into()], Some(rfc3339(t0 + 600)), t0),
        });
        check(&admin, &token, &cfg.join, &cfg, &mut site, t0 + 50).unwrap();
        assert_eq!(site.added[0].credential.state, State::Valid);
        assert_eq!(site.seeds.as_ref().unwrap().state, State::Kept);
        assert_eq!(honoured(&cp, &admin, &day2.text(), true), (true, true));
        // Every listed node joined: the seeds' token is removed; the
        // cluster no longer lets it in, and the signer drops its signature.
        node(&cp, "w1");
        let lines = check(&admin, &token, &cfg.join, &cfg, &mut site, t0 + 60).unwrap();
        assert_eq!(site.seeds.as_ref().unwrap().state, State::Removed);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("every node the cluster file lists had joined (m, w1)")),
            "{lines:?}"
        );
        assert_eq!(expiry(&admin), None);
        assert_eq!(honoured(&cp, &admin, TOKEN, false), (false, false));
        // For good: a listed node gone again does not bring it back.
        cp.kubectl(&["delete", "node", "w1"]).unwrap();
        check(&admin, &token, &cfg.join, &cfg, &mut site, t0 + 70).unwrap();
        assert_eq!(expiry(&admin), None);
        assert_eq!(site.seeds.as_ref().unwrap().state, State::Removed);
        // w2 joins: its own credential goes too.
        node(&cp, "w2");
        check(&admin, &token, &cfg.join, &cfg, &mut site, t0 + 80).unwrap();
        assert_eq!(site.added[0].credential.state, State::Removed);
        assert_eq!(honoured(&cp, &admin, &day2.text(), false), (false, false));
        // The node endpoint says so, by token id, from the record.
        let t = tempfile::tempdir().unwrap();
        Site::update(t.path(), |s| {
            *s = site.clone();
            Ok(())
        })
        .unwrap();
        let j = crate::node_api::Join::of(t.path(), "abcdef");
        assert_eq!(j.honoured, Some(false));
        assert!(j.detail.contains("withdrawn"), "{}", j.detail);
        assert_eq!(
            crate::node_api::Join::of(t.path(), "zzzzzz").honoured,
            Some(false)
        );
    }
}
