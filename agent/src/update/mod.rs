//! `kpaas-agent update`: a new bundle applied to the running site, on its
//! master. Checked first, with nothing changed when any check fails: the
//! signature (the site's key) and every digest, the platform, the serial
//! (never back: anti-rollback), a delta's blobs already held, the
//! Kubernetes version the nodes run. Then, each phase journaled in
//! `update.json`: staged (new blobs into the store, the bundle laid out),
//! switched (the node runs it, the seed serves it first and the old one
//! behind it), filled (the platform's registry given what is new), each
//! release changed in wave order with readiness after each wave, removed
//! releases last, and done (the seed serves the new bundle alone, blobs
//! nothing references are freed). A power cut or kill resumes with
//! `--resume`; a release whose upgrade fails is rolled back and the update
//! stops; `--rollback` takes a stopped update back.

pub mod inventory;
pub mod store;

use crate::boot::StepId;
use crate::deploy::Engine;
use crate::deploy::journal::DeployJournal;
use crate::events::{Kind, Sink};
use airgap_bundle::catalog::Catalog;
use airgap_bundle::fsutil::{now_unix, rfc3339};
use airgap_bundle::kinds::Install;
use airgap_bundle::manifest::{BUNDLE_JSON, BundleManifest, CATALOG};
use airgap_bundle::node::NodeConfig;
use airgap_bundle::plan::Step;
use airgap_bundle::reader::BundleSource;
use airgap_bundle::run::{Runner, run};
use airgap_bundle::update::{Change, ReleaseChange, ReleaseDiff};
use airgap_bundle::verify::{Base, SignatureState};
use airgap_bundle::{Digest, sign};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use store::{Installed, Store};

/// The update journal, in the state directory.
pub const UPDATE_FILE: &str = "update.json";
/// The label of a volume an operator attaches with an update on it.
pub const UPDATE_LABEL: &str = "KPAAS-UPDATE";

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Its new blobs are in the store and its bundle laid out.
    Staged,
    /// The node runs it; the seed serves it first, the old one behind.
    Switched,
    /// The platform's registry holds what it brought.
    Filled,
    /// A release failed (a failed upgrade was rolled back): `--resume`
    /// tries again from there, `--rollback` takes the update back.
    Stopped,
    Done,
    RolledBack,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct BundleRef {
    pub platform_version: String,
    pub serial: u64,
    pub bundle: Digest,
}

impl std::fmt::Display for BundleRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (serial {})", self.platform_version, self.serial)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Applied {
    pub change: Change,
    pub detail: String,
    pub at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub from: BundleRef,
    pub to: BundleRef,
    /// Where the update was read from.
    pub source: String,
    pub phase: Phase,
    pub staged_blobs: usize,
    pub staged_bytes: u64,
    /// What a delta left to the site's store.
    pub from_store_bytes: u64,
    pub changes: Vec<ReleaseChange>,
    /// A chart's revision before the update upgraded it (release key).
    #[serde(default)]
    pub revision_before: BTreeMap<String, u32>,
    /// Each release done, by key (`component/release`).
    #[serde(default)]
    pub applied: BTreeMap<String, Applied>,
    /// Components found ready after their changes.
    #[serde(default)]
    pub ready: BTreeSet<String>,
    /// The node as it ran before: the engine of removals and of a rollback.
    pub old: Installed,
    /// `installed.json` as it was (None: the media's bundle).
    pub old_record: Option<Installed>,
    pub new: Installed,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freed: Option<(usize, u64)>,
    pub started: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
}

impl Record {
    pub fn load(state_dir: &Path) -> Result<Option<Record>> {
        crate::state_file::load(&state_dir.join(UPDATE_FILE), "the update journal")
    }

    fn save(&self, state_dir: &Path) -> Result<()> {
        crate::state_file::save(
            &state_dir.join(UPDATE_FILE),
            "the update journal",
            &Some(self),
        )
    }

    pub fn unfinished(&self) -> bool {
        !matches!(self.phase, Phase::Done | Phase::RolledBack)
    }

    /// One line for `status` and the status page.
    pub fn describe(&self) -> String {
        let work = self
            .changes
            .iter()
            .filter(|c| c.change != Change::Unchanged)
            .count();
        let mut s = format!(
            "update {} -> {}: {}; {}/{} release change(s) applied",
            self.from,
            self.to,
            match self.phase {
                Phase::Staged => "staged",
                Phase::Switched => "switched",
                Phase::Filled => "applying releases",
                Phase::Stopped => "STOPPED",
                Phase::Done => "done",
                Phase::RolledBack => "rolled back",
            },
            self.applied.len(),
            work
        );
        if let Some(w) = &self.stopped {
            s.push_str(&format!(
                " ({w}; `kpaas-agent update --resume` or `--rollback`)"
            ));
        }
        s
    }
}

/// What `status` and the status page show of the last update.
#[derive(Debug, Serialize)]
pub struct View {
    pub line: String,
    pub phase: Phase,
    pub from: BundleRef,
    pub to: BundleRef,
    pub staged_bytes: u64,
    pub from_store_bytes: u64,
    pub releases: Vec<ViewRelease>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub freed_bytes: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ViewRelease {
    pub wave: usize,
    pub release: String,
    pub change: Change,
    /// done, or pending.
    pub state: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Record {
    pub fn view(&self) -> View {
        View {
            line: self.describe(),
            phase: self.phase,
            from: self.from.clone(),
            to: self.to.clone(),
            staged_bytes: self.staged_bytes,
            from_store_bytes: self.from_store_bytes,
            releases: self
                .changes
                .iter()
                .filter(|c| c.change != Change::Unchanged)
                .map(|c| {
                    let a = self.applied.get(&key(c));
                    ViewRelease {
                        wave: c.wave,
                        release: key(c),
                        change: c.change,
                        state: if a.is_some() { "done" } else { "pending" }.into(),
                        detail: a.map(|a| a.detail.clone()),
                    }
                })
                .collect(),
            freed_bytes: self.freed.map(|f| f.1),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Args {
    pub path: Option<PathBuf>,
    pub check: bool,
    pub resume: bool,
    pub rollback: bool,
    /// How long one release or component may take to be ready.
    pub limit: std::time::Duration,
}

fn emit(events: &mut Sink, line: &str) -> Result<()> {
    events.emit(StepId::Update, Kind::Progress, line)
}

/// Held while an update runs: the command and a boot's resume never run
/// one update twice at once.
struct Held(#[allow(dead_code)] nix::fcntl::Flock<std::fs::File>);

fn hold(state_dir: &Path) -> Result<Held> {
    airgap_bundle::fsutil::create_dir(state_dir)?;
    let p = state_dir.join("update.lock");
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .with_context(|| format!("opening {}", p.display()))?;
    nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock)
        .map(Held)
        .map_err(|(_, e)| {
            anyhow::anyhow!(
                "an update is running now (another kpaas-agent holds {}: {e}); `kpaas-agent status` shows it",
                p.display()
            )
        })
}

/// At the master's boot: an update a power cut stopped in the middle is
/// taken to its end, as the deploy is; one a failure stopped waits for the
/// operator (`--resume` or `--rollback`) and is named.
pub fn at_boot(
    root: &Path,
    cfg: &NodeConfig,
    runner: Arc<dyn Runner>,
    events: &mut Sink,
) -> Result<String> {
    let _held = hold(&cfg.state_dir)?;
    let Some(rec) = Record::load(&cfg.state_dir)?.filter(Record::unfinished) else {
        return Ok("no unfinished update".into());
    };
    if rec.phase == Phase::Stopped {
        return Ok(format!(
            "{} (left as it is for the operator)",
            rec.describe()
        ));
    }
    emit(
        events,
        &format!(
            "resuming the update {} -> {} a power cut or a restart stopped",
            rec.from, rec.to
        ),
    )?;
    apply(root, cfg, runner, rec, crate::deploy::READY_LIMIT, events)
}

/// Whether this node has an unfinished update (the boot step's rule).
pub fn unfinished(state_dir: &Path) -> bool {
    Record::load(state_dir)
        .ok()
        .flatten()
        .is_some_and(|r| r.unfinished())
}

/// The update command. Returns the closing line.
pub fn run_update(
    root: &Path,
    cfg: &NodeConfig,
    runner: Arc<dyn Runner>,
    a: &Args,
) -> Result<String> {
    let mut events = Sink::open(&cfg.state_dir)?;
    let _held = hold(&cfg.state_dir)?;
    let rec = Record::load(&cfg.state_dir)?;
    if a.rollback {
        let rec = rec.filter(Record::unfinished).context(
            "no unfinished update to take back (`kpaas-agent status` shows the last one)",
        )?;
        let r = rollback(root, cfg, runner, rec, a.limit, &mut events);
        return done(&mut events, r);
    }
    if a.resume {
        let rec = rec
            .filter(Record::unfinished)
            .context("no unfinished update to resume")?;
        let r = apply(root, cfg, runner, rec, a.limit, &mut events);
        return done(&mut events, r);
    }
    if let Some(r) = rec.filter(Record::unfinished) {
        bail!(
            "{}: finish it first (`kpaas-agent update --resume`) or take it back (`kpaas-agent update --rollback`)",
            r.describe()
        );
    }
    let mounted = locate(root, a.path.as_deref(), runner.as_ref(), &mut events)?;
    let src = mounted.path.clone();
    let p = prepare(cfg, &src)?;
    let plan_text = p.describe();
    if !p.refusals.is_empty() {
        let line = format!(
            "update from {} refused, nothing changed:\n  - {}",
            src.display(),
            p.refusals.join("\n  - ")
        );
        let _ = events.emit(StepId::Update, Kind::Failed, &line);
        bail!("{line}");
    }
    if a.check {
        return Ok(format!("{plan_text}\n(--check: nothing changed)"));
    }
    emit(
        &mut events,
        &format!("update {} -> {} from {}", p.from, p.to, src.display()),
    )?;
    let store = Store::of(cfg)?;
    let staged = store.stage(&src)?;
    drop(mounted);
    let generation = store.generation(&staged, &p.m, &p.digest)?;
    let new = Installed {
        bundle: generation.clone(),
        ..p.new.clone()
    };
    // Every release of the new plan rendered and its images checked
    // against the new bundle before the node switches to it.
    let mut new_cfg = cfg.clone();
    new.apply(&mut new_cfg);
    let eng = engine(root, &new_cfg, &runner, a.limit, "new")?;
    let touched = touched_steps(&new_cfg.platform, &p.diff);
    eng.render_all(&touched)
        .context("the new plan cannot be rendered offline; nothing was switched")?;
    let rec = Record {
        from: p.from.clone(),
        to: p.to.clone(),
        source: src.display().to_string(),
        phase: Phase::Staged,
        staged_blobs: staged.blobs,
        staged_bytes: staged.bytes,
        from_store_bytes: p.m.delta.as_ref().map_or(0, |d| d.omitted_bytes()),
        changes: p.diff.changes.clone(),
        revision_before: BTreeMap::new(),
        applied: BTreeMap::new(),
        ready: BTreeSet::new(),
        old: p.old.clone(),
        old_record: Installed::load(&cfg.state_dir)?,
        new,
        stopped: None,
        freed: None,
        started: rfc3339(now_unix()),
        finished: None,
    };
    rec.save(&cfg.state_dir)?;
    emit(
        &mut events,
        &format!(
            "staged: {} new blob(s), {} bytes copied in; {} bytes already held; {}",
            staged.blobs,
            staged.bytes,
            rec.from_store_bytes,
            generation.display()
        ),
    )?;
    let r = apply(root, cfg, runner, rec, a.limit, &mut events);
    done(&mut events, r)
}

/// The command's outcome, as the `update` step's event.
fn done(events: &mut Sink, r: Result<String>) -> Result<String> {
    if let Ok(line) = &r {
        events.emit(StepId::Update, Kind::Done, line)?;
    }
    r
}

/// Where the update is: the path given (a bundle directory, an archive,
/// or a block device), or a volume labelled KPAAS-UPDATE, mounted
/// read-only for as long as the returned value lives.
pub struct Mounted<'a> {
    pub path: PathBuf,
    mount: Option<(PathBuf, &'a dyn Runner)>,
}

impl Drop for Mounted<'_> {
    fn drop(&mut self) {
        if let Some((m, r)) = &self.mount
            && let Err(e) = run("umount").arg(m).ok_on(*r)
        {
            eprintln!("kpaas-agent: update: {e:#}");
        }
    }
}

fn locate<'a>(
    root: &Path,
    path: Option<&Path>,
    r: &'a dyn Runner,
    events: &mut Sink,
) -> Result<Mounted<'a>> {
    let dev = match path {
        Some(p) if p.is_dir() || p.is_file() => {
            return Ok(Mounted {
                path: p.to_path_buf(),
                mount: None,
            });
        }
        Some(p) if p.exists() => p.to_path_buf(),
        Some(p) => bail!(
            "{}: no such update (give a bundle directory, a .tar or .tar.zst, or a device; or attach a volume labelled {UPDATE_LABEL} and give no path)",
            p.display()
        ),
        None => {
            let d = root.join("dev/disk/by-label").join(UPDATE_LABEL);
            if !d.exists() {
                bail!(
                    "no update given and no volume labelled {UPDATE_LABEL} is attached: give a bundle directory or archive, or attach the volume"
                );
            }
            d
        }
    };
    let mnt = root.join("run/kpaas/update");
    airgap_bundle::fsutil::create_dir(&mnt)?;
    run("mount")
        .args(["-o", "ro"])
        .arg(&dev)
        .arg(&mnt)
        .ok_on(r)?;
    let mut m = Mounted {
        path: mnt.clone(),
        mount: Some((mnt.clone(), r)),
    };
    m.path = find_bundle(&mnt)?;
    let inside = m.path.clone();
    emit(
        events,
        &format!(
            "found the update on {} ({}), read-only at {}",
            std::fs::canonicalize(&dev).unwrap_or(dev.clone()).display(),
            dev.display(),
            inside.display()
        ),
    )?;
    Ok(m)
}

/// The bundle on a mounted volume: the volume itself when it holds
/// bundle.json, else its one archive.
fn find_bundle(dir: &Path) -> Result<PathBuf> {
    if dir.join(BUNDLE_JSON).is_file() {
        return Ok(dir.to_path_buf());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".tar.zst") || n.ends_with(".tar") || n.ends_with(".volumes")
        })
        .collect();
    found.sort();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "the {UPDATE_LABEL} volume holds no bundle (bundle.json at its top, or one .tar.zst)"
        ),
        many => bail!(
            "the {UPDATE_LABEL} volume holds {} bundles ({}): leave one",
            many.len(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// An update, checked and planned; nothing changed yet.
struct Prepared {
    m: BundleManifest,
    digest: Digest,
    from: BundleRef,
    to: BundleRef,
    old: Installed,
    /// The new plan (its bundle path is set once staged).
    new: Installed,
    diff: ReleaseDiff,
    refusals: Vec<String>,
}

impl Prepared {
    fn describe(&self) -> String {
        let mut out = vec![format!(
            "update {} -> {}: {} upgraded, {} installed, {} removed, {} unchanged",
            self.from,
            self.to,
            self.diff.count(Change::Upgrade),
            self.diff.count(Change::Install),
            self.diff.count(Change::Remove),
            self.diff.count(Change::Unchanged)
        )];
        if let Some(d) = &self.m.delta {
            out.push(format!(
                "a delta built against {}: {} blob(s), {} bytes, come from this site's store",
                d.base,
                d.omitted.len(),
                d.omitted_bytes()
            ));
        }
        for c in self.diff.work() {
            out.push(format!(
                "  wave {} {}/{}: {:?}{}",
                c.wave,
                c.component,
                c.release,
                c.change,
                if c.why.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", c.why.join(", "))
                }
            ));
        }
        out.join("\n")
    }
}

fn prepare(cfg: &NodeConfig, src: &Path) -> Result<Prepared> {
    let key_text = std::fs::read_to_string(&cfg.bundle_key)
        .with_context(|| format!("reading the site's bundle key {}", cfg.bundle_key.display()))?;
    let key =
        sign::parse_public(&key_text).with_context(|| cfg.bundle_key.display().to_string())?;
    let store = Store::of(cfg)?;
    let report =
        airgap_bundle::verify::verify_with_base(src, Some(&key), Some(&Base::Dirs(store.bases())))?;
    let mut refusals: Vec<String> = report
        .problems
        .iter()
        .map(|p| format!("verification: {p}"))
        .collect();
    match &report.signature {
        SignatureState::Verified { .. } => {}
        SignatureState::Missing => {
            refusals.push("the update is not signed (bundle.json.sig missing)".into())
        }
        SignatureState::NotChecked | SignatureState::Bad => {}
    }
    let source = BundleSource::open(src)?;
    let bytes = source.read_file(BUNDLE_JSON)?;
    let m = BundleManifest::from_bytes(&bytes)?;
    let digest = Digest::of(&bytes);
    let (old_m, old_digest) = inventory::running(cfg)?;
    let old = Installed {
        bundle: cfg.bundle.clone(),
        bundle_digest: old_digest.clone(),
        platform_version: old_m.platform_version.clone(),
        serial: old_m.serial,
        kubernetes: cfg.kubernetes.clone(),
        platform: cfg.platform.clone(),
        at: rfc3339(now_unix()),
        media: store.media.clone(),
        media_digest: match Installed::load(&cfg.state_dir)? {
            Some(i) => i.media_digest,
            None => cfg.bundle_digest.clone().or(Some(old_digest.clone())),
        },
    };
    // The new plan: the update's catalog with the site's own cluster file.
    let replanned = (|| -> Result<airgap_bundle::plan::node::NodePlan> {
        let cluster = cfg.cluster_file.as_ref().context(
            "this node's config has no copy of the cluster file (seeds made before updates existed): make the seeds again with this version of kpaas-builder",
        )?;
        let text = source
            .read_file(CATALOG)
            .context("the update carries no catalog.json (built before updates existed)")?;
        let catalog = Catalog::from_yaml(&String::from_utf8_lossy(&text), CATALOG)?;
        airgap_bundle::plan::node::node_plan(&catalog, cluster, !cfg.platform.is_empty(), Some(&m))
    })();
    let (new_plan, new_k8s) = match replanned {
        Ok(p) => {
            let k = p.kubernetes.as_ref().and_then(|k| k.version.clone());
            (Some(p), k)
        }
        Err(e) => {
            refusals.push(format!("re-planning from the update: {e:#}"));
            (None, None)
        }
    };
    // What the site runs, as the rules read it (no Helm needed).
    let site = inventory::base(cfg, &old_m, &old_digest);
    refusals.extend(airgap_bundle::update::refusals(
        &site,
        &m,
        &digest,
        new_k8s.as_deref(),
        &|d| store.find(d).is_some(),
    ));
    let (kubernetes, platform) = match new_plan {
        Some(p) => (p.kubernetes, p.platform),
        None => (cfg.kubernetes.clone(), cfg.platform.clone()),
    };
    let diff = airgap_bundle::update::diff(&cfg.platform, &old_m, &platform, &m);
    let new = Installed {
        bundle: PathBuf::new(),
        bundle_digest: digest.clone(),
        platform_version: m.platform_version.clone(),
        serial: m.serial,
        kubernetes,
        platform,
        at: rfc3339(now_unix()),
        media: old.media.clone(),
        media_digest: old.media_digest.clone(),
    };
    Ok(Prepared {
        from: BundleRef {
            platform_version: old_m.platform_version.clone(),
            serial: old_m.serial,
            bundle: old_digest,
        },
        to: BundleRef {
            platform_version: m.platform_version.clone(),
            serial: m.serial,
            bundle: digest.clone(),
        },
        m,
        digest,
        old,
        new,
        diff,
        refusals,
    })
}

/// The new plan's steps with a release to install or upgrade.
fn touched_steps<'a>(platform: &'a [Step], diff: &ReleaseDiff) -> Vec<&'a Step> {
    platform
        .iter()
        .filter(|s| {
            diff.work()
                .any(|c| c.component == s.component && c.change != Change::Remove)
        })
        .collect()
}

fn key(c: &ReleaseChange) -> String {
    crate::deploy::journal::release_key(&c.component, &c.release)
}

/// The engine for one side of an update (`side`: new or old), its waits
/// bounded by `limit`. Each side renders into a directory of its own: a
/// rollback applies the old side's objects, never the new side's written
/// over them.
fn engine(
    root: &Path,
    cfg: &NodeConfig,
    runner: &Arc<dyn Runner>,
    limit: std::time::Duration,
    side: &str,
) -> Result<Engine> {
    let mut e = Engine::new(root, cfg.clone(), runner.clone())?;
    e.limit = limit;
    e.work = cfg.state_dir.join("update-work").join(side);
    airgap_bundle::fsutil::create_dir(&e.work)?;
    airgap_bundle::fsutil::set_mode(&e.work, 0o700)?;
    Ok(e)
}

fn config_of(cfg: &NodeConfig, i: &Installed) -> NodeConfig {
    let mut c = cfg.clone();
    i.apply(&mut c);
    c
}

/// Runs (or resumes) an update from its journal's phase to the end.
fn apply(
    root: &Path,
    cfg: &NodeConfig,
    runner: Arc<dyn Runner>,
    mut rec: Record,
    limit: std::time::Duration,
    events: &mut Sink,
) -> Result<String> {
    let state = cfg.state_dir.clone();
    if rec.phase == Phase::Staged {
        // The switch: the node runs the new bundle from here on, and the
        // seed registry serves it first with the old one behind it.
        rec.new.save(&state)?;
        let both = [rec.new.bundle.clone(), rec.old.bundle.clone()];
        store::set_serving(&state, &both)?;
        served(events, &state, &both)?;
        rec.phase = Phase::Switched;
        rec.save(&state)?;
        emit(
            events,
            &format!(
                "switched: the node runs {}; the seed serves it, and {} behind it until the update is done",
                rec.to, rec.from
            ),
        )?;
    }
    let new_cfg = config_of(cfg, &rec.new);
    let old_cfg = config_of(cfg, &rec.old);
    let eng_new = engine(root, &new_cfg, &runner, limit, "new")?;
    if rec.phase == Phase::Switched {
        let line = match eng_new.refill(events)? {
            Some(d) => format!("filled: {d}"),
            None => "no platform registry to fill (the plan has no `fill`)".into(),
        };
        rec.phase = Phase::Filled;
        rec.save(&state)?;
        emit(events, &line)?;
    }
    if matches!(rec.phase, Phase::Filled | Phase::Stopped) {
        rec.phase = Phase::Filled;
        rec.stopped = None;
        rec.save(&state)?;
        let eng_old = engine(root, &old_cfg, &runner, limit, "old")?;
        if let Err(e) = releases(&eng_new, &eng_old, &old_cfg, &mut rec, events) {
            let why = crate::boot::cluster::last_line(&e);
            rec.phase = Phase::Stopped;
            rec.stopped = Some(why);
            rec.save(&state)?;
            let _ = events.emit(StepId::Update, Kind::Failed, &rec.describe());
            return Err(e.context(format!(
                "the update stopped; the site runs a mix `kpaas-agent status` states: `kpaas-agent update --resume` tries again, `kpaas-agent update --rollback` goes back to {}",
                rec.from
            )));
        }
    }
    // Done: the deploy journal says what now runs, the seed serves the new
    // bundle alone, and what nothing references is freed.
    let mut j = DeployJournal::open(&state)?;
    for c in &rec.changes {
        match c.change {
            Change::Remove => j.forget(&c.component, &c.release)?,
            Change::Install | Change::Upgrade => {
                if let Some(a) = rec.applied.get(&key(c)) {
                    j.mark_applied(&c.component, &c.release, c.wave, &a.detail)?;
                }
            }
            Change::Unchanged => {}
        }
    }
    let new = std::slice::from_ref(&rec.new.bundle);
    store::set_serving(&state, new)?;
    served(events, &state, new)?;
    let freed = Store::of(&new_cfg)?.collect(&rec.new.bundle)?;
    inventory::add_history(
        &state,
        airgap_bundle::inventory::Installed {
            platform_version: rec.from.platform_version.clone(),
            serial: rec.from.serial,
            bundle: rec.from.bundle.clone(),
            at: "first boot".into(),
        },
        airgap_bundle::inventory::Installed {
            platform_version: rec.to.platform_version.clone(),
            serial: rec.to.serial,
            bundle: rec.to.bundle.clone(),
            at: rfc3339(now_unix()),
        },
    )?;
    rec.freed = Some(freed);
    rec.phase = Phase::Done;
    rec.finished = Some(rfc3339(now_unix()));
    rec.save(&state)?;
    let line = format!(
        "update {} -> {} done: {} upgraded, {} installed, {} removed, {} unchanged; {} bytes brought in, {} blob(s) ({} bytes) no longer referenced freed from the store",
        rec.from,
        rec.to,
        count(&rec, Change::Upgrade),
        count(&rec, Change::Install),
        count(&rec, Change::Remove),
        count(&rec, Change::Unchanged),
        rec.staged_bytes,
        freed.0,
        freed.1
    );
    Ok(line)
}

/// Waits for the node's seed registry to take up what it is to serve, and
/// says whether it did (none runs here: the next boot serves it).
fn served(events: &mut Sink, state: &Path, dirs: &[PathBuf]) -> Result<()> {
    let list = dirs
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", then ");
    if store::await_served(state, dirs, SERVED_WAIT) {
        emit(events, &format!("the seed registry serves {list}"))
    } else {
        emit(
            events,
            &format!(
                "the seed registry did not take up {list} within {} s (is the agent's service running?); the next boot serves it",
                SERVED_WAIT.as_secs()
            ),
        )
    }
}

/// The seed registry looks every 2 s; a few looks are enough.
const SERVED_WAIT: std::time::Duration = std::time::Duration::from_secs(20);

fn count(rec: &Record, c: Change) -> usize {
    rec.changes.iter().filter(|x| x.change == c).count()
}

/// The release changes not yet journaled: installs and upgrades wave by
/// wave (each wave's components checked ready before the next wave), then
/// removals. A failed chart upgrade is rolled back to its revision before
/// the update, and the error returned.
fn releases(
    eng_new: &Engine,
    eng_old: &Engine,
    old_cfg: &NodeConfig,
    rec: &mut Record,
    events: &mut Sink,
) -> Result<()> {
    let state = old_cfg.state_dir.clone();
    let steps = rec.new.platform.clone();
    let step = |c: &str| steps.iter().find(|s| s.component == c);
    let work: Vec<ReleaseChange> = rec
        .changes
        .iter()
        .filter(|c| matches!(c.change, Change::Install | Change::Upgrade))
        .cloned()
        .collect();
    let touched: Vec<&Step> = steps
        .iter()
        .filter(|s| work.iter().any(|c| c.component == s.component))
        .collect();
    let rendered = eng_new.render_all(&touched)?;
    let waves: BTreeSet<usize> = work.iter().map(|c| c.wave).collect();
    for wave in waves {
        let mut components = BTreeSet::new();
        for c in work.iter().filter(|c| c.wave == wave) {
            components.insert(c.component.clone());
            let k = key(c);
            if rec.applied.contains_key(&k) {
                continue;
            }
            let (s, r, file) = release_of(&steps, &rendered, c, "new")?;
            let chart = match &r.item {
                Install::Chart(ch) => Some((ch.namespace.clone(), ch.release.clone())),
                _ => None,
            };
            // Before an upgrade, the revision to go back to; a resumed run
            // finds a chart Helm already took further as done.
            if let (Some((ns, rel)), Change::Upgrade) = (&chart, c.change) {
                let now = eng_new.chart_state(ns, rel)?;
                match (rec.revision_before.get(&k), now) {
                    (None, Some((rev, _))) => {
                        rec.revision_before.insert(k.clone(), rev);
                        rec.save(&state)?;
                    }
                    (Some(before), Some((rev, st))) if rev > *before && st == "deployed" => {
                        let detail = format!(
                            "helm release {ns}/{rel} deployed (revision {rev}), found upgraded"
                        );
                        record_applied(rec, &state, c, &detail, events)?;
                        continue;
                    }
                    _ => {}
                }
            }
            emit(
                events,
                &format!("wave {wave} {k}: {:?} ({})", c.change, c.why.join(", ")),
            )?;
            match eng_new.apply_release(events, s, r, &file) {
                Ok(detail) => record_applied(rec, &state, c, &detail, events)?,
                Err(e) => {
                    if let (Some((ns, rel)), Some(before)) = (&chart, rec.revision_before.get(&k)) {
                        match eng_new.rollback_chart(ns, rel, *before) {
                            Ok(line) => emit(events, &format!("{k}: {line}"))?,
                            Err(re) => emit(
                                events,
                                &format!(
                                    "{k}: the rollback failed too: {}",
                                    crate::boot::cluster::last_line(&re)
                                ),
                            )?,
                        }
                    }
                    return Err(e.context(format!("{k}: the update's {:?} failed", c.change)));
                }
            }
        }
        for comp in components {
            if rec.ready.contains(&comp) {
                continue;
            }
            let s = step(&comp).with_context(|| format!("{comp}: not in the new plan"))?;
            eng_new.ready(events, s)?;
            rec.ready.insert(comp.clone());
            rec.save(&state)?;
            emit(events, &format!("wave {wave} {comp}: ready"))?;
        }
    }
    let removals: Vec<ReleaseChange> = rec
        .changes
        .iter()
        .filter(|c| c.change == Change::Remove)
        .cloned()
        .collect();
    if removals.is_empty() {
        return Ok(());
    }
    let old_steps: Vec<&Step> = old_cfg
        .platform
        .iter()
        .filter(|s| removals.iter().any(|c| c.component == s.component))
        .collect();
    let rendered = eng_old.render_all(&old_steps)?;
    for c in &removals {
        let k = key(c);
        if rec.applied.contains_key(&k) {
            continue;
        }
        let (s, r, file) = release_of(&old_cfg.platform, &rendered, c, "old")?;
        emit(events, &format!("wave {} {k}: removing", c.wave))?;
        let detail = eng_old
            .remove_release(s, r, &file)
            .with_context(|| format!("{k}: removing it"))?;
        record_applied(rec, &state, c, &detail, events)?;
    }
    Ok(())
}

/// A change's step, release and rendered objects in a plan (`which`: new
/// or old, for the error).
fn release_of<'a>(
    steps: &'a [Step],
    rendered: &crate::deploy::Rendered,
    c: &ReleaseChange,
    which: &str,
) -> Result<(&'a Step, &'a airgap_bundle::plan::Release, PathBuf)> {
    let k = key(c);
    let s = steps
        .iter()
        .find(|s| s.component == c.component)
        .with_context(|| format!("{k}: not in the {which} plan"))?;
    let r = s
        .releases
        .iter()
        .find(|r| r.name() == c.release)
        .with_context(|| format!("{k}: not in the {which} plan"))?;
    let file = rendered
        .iter()
        .find(|(comp, n, _)| comp == &c.component && n == &c.release)
        .map(|(_, _, f)| f.clone())
        .with_context(|| format!("{k} was not rendered"))?;
    Ok((s, r, file))
}

fn record_applied(
    rec: &mut Record,
    state: &Path,
    c: &ReleaseChange,
    detail: &str,
    events: &mut Sink,
) -> Result<()> {
    rec.applied.insert(
        key(c),
        Applied {
            change: c.change,
            detail: detail.to_string(),
            at: rfc3339(now_unix()),
        },
    );
    rec.save(state)?;
    emit(events, &format!("wave {} {}: {detail}", c.wave, key(c)))
}

/// Takes an unfinished update back: what it applied is undone in reverse
/// (an upgraded chart rolled back to its revision, an upgraded manifest
/// applied again from the old bundle, an installed release removed, a
/// removed one applied again), the node runs the old bundle again, and
/// what the update staged is freed.
fn rollback(
    root: &Path,
    cfg: &NodeConfig,
    runner: Arc<dyn Runner>,
    mut rec: Record,
    limit: std::time::Duration,
    events: &mut Sink,
) -> Result<String> {
    let state = cfg.state_dir.clone();
    emit(
        events,
        &format!("rolling back the update {} -> {}", rec.from, rec.to),
    )?;
    let old_cfg = config_of(cfg, &rec.old);
    let new_cfg = config_of(cfg, &rec.new);
    let mut undone = 0;
    if !rec.applied.is_empty() {
        let eng_old = engine(root, &old_cfg, &runner, limit, "old")?;
        let eng_new = engine(root, &new_cfg, &runner, limit, "new")?;
        let old_rendered = eng_old.render_all(&old_cfg.platform.iter().collect::<Vec<_>>())?;
        let new_rendered = eng_new.render_all(&new_cfg.platform.iter().collect::<Vec<_>>())?;
        let mut touched = BTreeSet::new();
        for c in rec.changes.iter().rev() {
            let k = key(c);
            if !rec.applied.contains_key(&k) {
                continue;
            }
            let line = match c.change {
                Change::Upgrade => {
                    let (s, r, f) = release_of(&old_cfg.platform, &old_rendered, c, "old")?;
                    touched.insert(c.component.clone());
                    match (&r.item, rec.revision_before.get(&k)) {
                        (Install::Chart(ch), Some(rev)) => {
                            eng_new.rollback_chart(&ch.namespace, &ch.release, *rev)?
                        }
                        _ => eng_old.apply_release(events, s, r, &f)?,
                    }
                }
                Change::Install => {
                    let (s, r, f) = release_of(&new_cfg.platform, &new_rendered, c, "new")?;
                    eng_new.remove_release(s, r, &f)?
                }
                Change::Remove => {
                    let (s, r, f) = release_of(&old_cfg.platform, &old_rendered, c, "old")?;
                    touched.insert(c.component.clone());
                    eng_old.apply_release(events, s, r, &f)?
                }
                Change::Unchanged => continue,
            };
            rec.applied.remove(&k);
            rec.save(&state)?;
            undone += 1;
            emit(events, &format!("{k}: {line}"))?;
        }
        for comp in touched {
            if let Some(s) = old_cfg.platform.iter().find(|s| s.component == comp) {
                eng_old.ready(events, s)?;
            }
        }
    }
    match &rec.old_record {
        Some(i) => i.save(&state)?,
        None => match std::fs::remove_file(Installed::path(&state)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).context("removing the installed bundle's record"),
        },
    }
    let old = std::slice::from_ref(&rec.old.bundle);
    store::set_serving(&state, old)?;
    served(events, &state, old)?;
    let freed = Store::of(&old_cfg)?.discard(&rec.new.bundle)?;
    rec.phase = Phase::RolledBack;
    rec.finished = Some(rfc3339(now_unix()));
    rec.stopped = None;
    rec.save(&state)?;
    let line = format!(
        "update {} -> {} rolled back: {undone} release change(s) undone; the node runs {} again; {} blob(s) ({} bytes) the update staged freed",
        rec.from, rec.to, rec.from, freed.0, freed.1
    );
    Ok(line)
}
