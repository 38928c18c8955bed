//! Where an update's content lives on the master, and which bundle the node
//! runs. The media's data partition stays read-only and whole (it is what
//! the site boots and re-images from); an update adds to the state
//! directory:
//!
//! - `store/oci/blobs/sha256/<hex>`: the blobs updates brought, each hashed
//!   while copied and renamed into place (never half-written under its
//!   digest);
//! - `store/gen/<serial>-<digest>/`: one installed bundle, laid out as any
//!   bundle directory (metadata as signed, a link per blob into the media
//!   or the store), so every reader of a bundle reads it unchanged;
//! - `installed.json`: the bundle the node runs, when it is not the
//!   media's, with the plan re-made from it; the node config is read
//!   through it (`apply`), so every step and command follows the update;
//! - `serving.json`: what the seed registry serves (the new bundle first,
//!   the old one behind it while an update runs).

use airgap_bundle::manifest::{
    BLOBS_DIR, BUNDLE_JSON, BundleManifest, CHECKSUMS, parse_checksum_list,
};
use airgap_bundle::node::{KubernetesStep, NodeConfig};
use airgap_bundle::plan::Step;
use airgap_bundle::reader::BundleSource;
use airgap_bundle::{Digest, fsutil};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STORE_DIR: &str = "store";
pub const INSTALLED_FILE: &str = "installed.json";
pub const SERVING_FILE: &str = "serving.json";
/// What the seed registry last took up from `serving.json`.
pub const SERVED_FILE: &str = "served.json";
const GEN_DIR: &str = "gen";

/// The bundle the node runs when an update put it there.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Installed {
    /// Its directory (a generation in the store).
    pub bundle: PathBuf,
    pub bundle_digest: Digest,
    pub platform_version: String,
    pub serial: u64,
    /// The plan re-made from its catalog and the site's cluster file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<KubernetesStep>,
    #[serde(default)]
    pub platform: Vec<Step>,
    pub at: String,
    /// The media's bundle and the digest the node's seed is bound to: what
    /// a day-2 node boots (its media is the site's image, not an update).
    pub media: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_digest: Option<Digest>,
}

impl Installed {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(INSTALLED_FILE)
    }

    pub fn load(state_dir: &Path) -> Result<Option<Installed>> {
        let p = Self::path(state_dir);
        match std::fs::read(&p) {
            Ok(b) => Ok(Some(serde_json::from_slice(&b).with_context(|| {
                format!("parsing the installed bundle's record {}", p.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    }

    pub fn save(&self, state_dir: &Path) -> Result<()> {
        crate::state_file::save(
            &Self::path(state_dir),
            "the installed bundle's record",
            self,
        )
    }

    /// The node config as the update left it: its bundle, binding and plan.
    pub fn apply(&self, cfg: &mut NodeConfig) {
        cfg.bundle = self.bundle.clone();
        cfg.bundle_digest = Some(self.bundle_digest.clone());
        cfg.kubernetes = self.kubernetes.clone();
        cfg.platform = self.platform.clone();
    }
}

/// The config a new node gets: the site's as it is now, but bound to the
/// media every node boots from (an update lives only on the master).
pub fn for_new_node(cfg: &NodeConfig) -> Result<NodeConfig> {
    let mut c = cfg.clone();
    if let Some(i) = Installed::load(&cfg.state_dir)? {
        c.bundle = i.media;
        c.bundle_digest = i.media_digest;
    }
    Ok(c)
}

/// The node config with the installed update applied, if there is one.
pub fn installed_view(mut cfg: NodeConfig) -> Result<NodeConfig> {
    if let Some(i) = Installed::load(&cfg.state_dir)? {
        i.apply(&mut cfg);
    }
    Ok(cfg)
}

pub struct Store {
    pub root: PathBuf,
    /// The media's bundle (read-only).
    pub media: PathBuf,
}

/// What staging read from an update: its metadata files, and the blobs it
/// copied in.
pub struct Staged {
    pub meta: BTreeMap<String, Vec<u8>>,
    pub blobs: usize,
    pub bytes: u64,
}

impl Store {
    pub fn new(state_dir: &Path, media: &Path) -> Store {
        Store {
            root: state_dir.join(STORE_DIR),
            media: media.to_path_buf(),
        }
    }

    /// For the node as configured: the media is the seed's bundle.
    pub fn of(cfg: &NodeConfig) -> Result<Store> {
        let media = match Installed::load(&cfg.state_dir)? {
            Some(i) => i.media,
            None => cfg.bundle.clone(),
        };
        Ok(Store::new(&cfg.state_dir, &media))
    }

    fn blob_dir(&self) -> PathBuf {
        self.root.join(BLOBS_DIR)
    }

    /// Where a held blob is: the store's copy, else the media's.
    pub fn find(&self, d: &Digest) -> Option<PathBuf> {
        [self.blob_dir(), self.media.join(BLOBS_DIR)]
            .into_iter()
            .map(|dir| dir.join(d.hex()))
            .find(|p| p.is_file())
    }

    /// The directories holding blobs, as `verify --base` reads them.
    pub fn bases(&self) -> Vec<PathBuf> {
        vec![self.root.clone(), self.media.clone()]
    }

    /// Every blob the node holds: the media's and the store's.
    pub fn held(&self) -> Result<BTreeSet<Digest>> {
        let mut out = BTreeSet::new();
        for dir in [self.media.join(BLOBS_DIR), self.blob_dir()] {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
            };
            for e in rd {
                let name = e?.file_name();
                // Temp files of a staging cut short are not blobs.
                if let Ok(d) = Digest::from_hex(&name.to_string_lossy()) {
                    out.insert(d);
                }
            }
        }
        Ok(out)
    }

    /// Reads the update once: keeps its metadata files, and copies in every
    /// blob the node does not hold, hashed on the way (a blob whose bytes
    /// are not its digest is never renamed into place).
    pub fn stage(&self, src: &Path) -> Result<Staged> {
        let dir = self.blob_dir();
        fsutil::create_dir(&dir)?;
        let mut meta = BTreeMap::new();
        let (mut blobs, mut bytes) = (0, 0);
        BundleSource::open(src)?.for_each(|p, _, r| {
            let Some(hex) = p.strip_prefix(BLOBS_DIR) else {
                let mut v = Vec::new();
                r.read_to_end(&mut v)
                    .with_context(|| format!("reading {p}"))?;
                meta.insert(p.to_string(), v);
                return Ok(());
            };
            let d = Digest::from_hex(hex).with_context(|| format!("{p}: not a sha256 blob"))?;
            if self.find(&d).is_some() {
                return Ok(());
            }
            let mut tmp = tempfile::NamedTempFile::new_in(&dir)
                .with_context(|| format!("making a temp file in {}", dir.display()))?;
            let mut w = airgap_bundle::digest::HashingWriter::new(tmp.as_file_mut());
            let n = std::io::copy(r, &mut w).with_context(|| format!("copying {p}"))?;
            w.flush()?;
            let (_, got, _) = w.finish();
            if got != d {
                bail!("{p}: its content hashes to {got}; nothing of it was kept");
            }
            tmp.as_file().sync_all()?;
            tmp.persist(dir.join(d.hex()))
                .with_context(|| format!("storing {p}"))?;
            blobs += 1;
            bytes += n;
            Ok(())
        })?;
        fsutil::fsync_dir(&dir)?;
        Ok(Staged { meta, blobs, bytes })
    }

    /// Lays out the bundle of `m` as a directory: its metadata files as
    /// staged, a link per blob (every blob SHA256SUMS lists and every blob a
    /// delta left out). Made under a temp name and renamed: a generation
    /// that exists is whole.
    pub fn generation(
        &self,
        staged: &Staged,
        m: &BundleManifest,
        digest: &Digest,
    ) -> Result<PathBuf> {
        let name = format!("{}-{}", m.serial, &digest.hex()[..12]);
        let gens = self.root.join(GEN_DIR);
        let done = gens.join(&name);
        if done.is_dir() {
            return Ok(done);
        }
        let tmp = gens.join(format!(".{name}.tmp"));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).with_context(|| format!("clearing {}", tmp.display()))?;
        }
        fsutil::create_dir(&tmp.join(BLOBS_DIR))?;
        // Every file and directory entry synced before the rename: a
        // generation that exists after a power cut is whole (seen without:
        // an empty bundle.json at the next boot, minutes after the write).
        let mut dirs: BTreeSet<PathBuf> =
            [tmp.clone(), tmp.join("oci"), tmp.join(BLOBS_DIR)].into();
        for (p, bytes) in &staged.meta {
            let to = tmp.join(p);
            if let Some(d) = to.parent() {
                fsutil::create_dir(d)?;
                dirs.insert(d.to_path_buf());
            }
            let mut f =
                std::fs::File::create(&to).with_context(|| format!("creating {}", to.display()))?;
            f.write_all(bytes)
                .and_then(|_| f.sync_all())
                .with_context(|| format!("writing {}", to.display()))?;
        }
        let sums = staged
            .meta
            .get(CHECKSUMS)
            .context("the update has no SHA256SUMS")?;
        let listed = parse_checksum_list(&String::from_utf8_lossy(sums))?;
        let mut want: BTreeSet<Digest> = listed
            .keys()
            .filter_map(|p| p.strip_prefix(BLOBS_DIR))
            .filter_map(|h| Digest::from_hex(h).ok())
            .collect();
        want.extend(
            m.delta
                .iter()
                .flat_map(|d| d.omitted.iter().map(|b| b.digest.clone())),
        );
        let mut missing = Vec::new();
        for d in &want {
            match self.find(d) {
                Some(from) => std::os::unix::fs::symlink(&from, tmp.join(BLOBS_DIR).join(d.hex()))
                    .with_context(|| format!("linking blob {d}"))?,
                None => missing.push(d.to_string()),
            }
        }
        if !missing.is_empty() {
            bail!(
                "{} blob(s) of the update are neither in it nor held here: {}",
                missing.len(),
                missing.join(", ")
            );
        }
        if !staged.meta.contains_key(BUNDLE_JSON) {
            bail!("the update has no bundle.json");
        }
        // Deepest first, so each parent's entry names a synced directory.
        for d in dirs.iter().rev() {
            fsutil::fsync_dir(d)?;
        }
        std::fs::rename(&tmp, &done).with_context(|| format!("renaming {}", tmp.display()))?;
        fsutil::fsync_dir(&gens)?;
        Ok(done)
    }

    /// After a finished update: every other generation is removed, and
    /// every store blob `keep` does not link. Returns (blobs, bytes) freed.
    pub fn collect(&self, keep: &Path) -> Result<(usize, u64)> {
        self.remove_generations(|p| p != keep)?;
        self.sweep()
    }

    /// After a rolled-back update: its generation is removed, and every
    /// store blob no other generation links. Returns (blobs, bytes) freed.
    pub fn discard(&self, generation: &Path) -> Result<(usize, u64)> {
        self.remove_generations(|p| p == generation)?;
        self.sweep()
    }

    fn remove_generations(&self, doomed: impl Fn(&Path) -> bool) -> Result<()> {
        let gens = self.root.join(GEN_DIR);
        let rd = match std::fs::read_dir(&gens) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e).with_context(|| format!("listing {}", gens.display())),
        };
        for e in rd {
            let p = e?.path();
            if doomed(&p) {
                std::fs::remove_dir_all(&p).with_context(|| format!("removing {}", p.display()))?;
            }
        }
        fsutil::fsync_dir(&gens)
    }

    /// Removes every store blob no generation links.
    fn sweep(&self) -> Result<(usize, u64)> {
        let gens = self.root.join(GEN_DIR);
        let mut linked = BTreeSet::new();
        if gens.is_dir() {
            for g in
                std::fs::read_dir(&gens).with_context(|| format!("listing {}", gens.display()))?
            {
                let blobs = g?.path().join(BLOBS_DIR);
                for e in std::fs::read_dir(&blobs)
                    .with_context(|| format!("listing {}", blobs.display()))?
                {
                    if let Ok(t) = std::fs::read_link(e?.path()) {
                        linked.insert(t);
                    }
                }
            }
        }
        let (mut n, mut bytes) = (0, 0);
        let dir = self.blob_dir();
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for e in rd {
            let p = e?.path();
            if !linked.contains(&p) {
                bytes += p.metadata().map(|m| m.len()).unwrap_or(0);
                std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
                n += 1;
            }
        }
        fsutil::fsync_dir(&dir)?;
        Ok((n, bytes))
    }
}

/// What the seed registry serves: the bundles in order (the first wins a
/// tag), or None for the node config's bundle alone.
pub fn serving(state_dir: &Path) -> Result<Option<Vec<PathBuf>>> {
    let p = state_dir.join(SERVING_FILE);
    match std::fs::read(&p) {
        Ok(b) => Ok(Some(
            serde_json::from_slice(&b).with_context(|| format!("parsing {}", p.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

pub fn set_serving(state_dir: &Path, dirs: &[PathBuf]) -> Result<()> {
    crate::state_file::save(
        &state_dir.join(SERVING_FILE),
        "what the seed registry serves",
        &dirs,
    )
}

pub fn set_served(state_dir: &Path, dirs: &[PathBuf]) -> Result<()> {
    crate::state_file::save(
        &state_dir.join(SERVED_FILE),
        "what the seed registry serves",
        &dirs,
    )
}

/// Waits (briefly) for the seed registry to serve `dirs`: true once it
/// says so; false when it does not within `limit` (no agent serving here).
pub fn await_served(state_dir: &Path, dirs: &[PathBuf], limit: std::time::Duration) -> bool {
    let start = std::time::Instant::now();
    loop {
        let got: Option<Vec<PathBuf>> = std::fs::read(state_dir.join(SERVED_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if got.as_deref() == Some(dirs) {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use airgap_bundle::manifest::{BaseRef, Delta, OmittedBlob};

    fn put(dir: &Path, bytes: &[u8]) -> Digest {
        let d = Digest::of(bytes);
        fsutil::create_dir(&dir.join(BLOBS_DIR)).unwrap();
        std::fs::write(dir.join(BLOBS_DIR).join(d.hex()), bytes).unwrap();
        d
    }

    /// An update bundle directory: its bundle.json (serial 2), SHA256SUMS
    /// listing the blobs it carries, and those blobs.
    fn update(dir: &Path, carried: &[&[u8]], omitted: &[&[u8]]) -> (BundleManifest, Digest) {
        let version = dir.file_name().unwrap().to_string_lossy().to_string();
        let mut sums = String::new();
        for b in carried {
            let d = put(dir, b);
            sums.push_str(&format!("{}  oci/blobs/sha256/{}\n", d.hex(), d.hex()));
        }
        let m: BundleManifest = serde_json::from_value(serde_json::json!({
            "bundle_version": 2, "platform": "demo", "platform_version": version, "serial": 2,
            "created": "2026-01-01T00:00:00Z", "image_platforms": ["linux/amd64"],
            "artifacts": [], "files": {},
            "totals": {"artifacts": 0, "blobs": 0, "unique_bytes": 0, "referenced_bytes": 0}
        }))
        .unwrap();
        let m = BundleManifest {
            delta: Some(Delta {
                base: BaseRef {
                    platform: "demo".into(),
                    platform_version: "0.1.0".into(),
                    serial: 1,
                    bundle: Digest::of(b"base"),
                },
                omitted: omitted
                    .iter()
                    .map(|b| OmittedBlob {
                        digest: Digest::of(b),
                        size: b.len() as u64,
                    })
                    .collect(),
            }),
            ..m
        };
        std::fs::write(dir.join(BUNDLE_JSON), m.to_bytes()).unwrap();
        std::fs::write(dir.join(CHECKSUMS), sums).unwrap();
        let d = Digest::of(&m.to_bytes());
        (m, d)
    }

    #[test]
    fn staging_copies_only_what_is_not_held_and_a_generation_links_every_blob() {
        let t = tempfile::tempdir().unwrap();
        let (media, up, state) = (
            t.path().join("media"),
            t.path().join("up"),
            t.path().join("state"),
        );
        let (a, b, c): (&[u8], &[u8], &[u8]) = (b"layer a", b"layer b", b"new layer c");
        put(&media, a);
        put(&media, b);
        // The update carries a (which the node holds) and c; it left b out.
        let (m, digest) = update(&up, &[a, c], &[b]);
        let store = Store::new(&state, &media);
        let staged = store.stage(&up).unwrap();
        assert_eq!((staged.blobs, staged.bytes), (1, c.len() as u64));
        assert!(staged.meta.contains_key(BUNDLE_JSON) && staged.meta.contains_key(CHECKSUMS));
        assert_eq!(
            store.find(&Digest::of(c)).unwrap(),
            state
                .join("store")
                .join(BLOBS_DIR)
                .join(Digest::of(c).hex())
        );
        assert_eq!(store.held().unwrap().len(), 3);
        let g = store.generation(&staged, &m, &digest).unwrap();
        for x in [a, b, c] {
            let link = g.join(BLOBS_DIR).join(Digest::of(x).hex());
            assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
            assert_eq!(std::fs::read(&link).unwrap(), x);
        }
        assert_eq!(std::fs::read(g.join(BUNDLE_JSON)).unwrap(), m.to_bytes());
        // Nothing is freed while the generation links it; once another
        // generation replaces it, the store's blob c is.
        assert_eq!(store.collect(&g).unwrap(), (0, 0));
        let up2 = t.path().join("up2");
        let (m2, d2) = update(&up2, &[a], &[]);
        let s2 = store.stage(&up2).unwrap();
        assert_eq!(s2.blobs, 0);
        let g2 = store.generation(&s2, &m2, &d2).unwrap();
        assert_eq!(store.collect(&g2).unwrap(), (1, c.len() as u64));
        assert!(!g.exists() && g2.exists());
        assert!(
            media.join(BLOBS_DIR).join(Digest::of(a).hex()).exists(),
            "the media is never touched"
        );
        // A rolled-back update takes its generation and its blobs with it.
        let up3 = t.path().join("up3");
        let (m3, d3) = update(&up3, &[c], &[]);
        let s3 = store.stage(&up3).unwrap();
        let g3 = store.generation(&s3, &m3, &d3).unwrap();
        assert_eq!(store.discard(&g3).unwrap(), (1, c.len() as u64));
        assert!(g2.exists() && !g3.exists());
    }

    #[test]
    fn a_blob_that_is_not_its_digest_is_never_stored_and_a_lacking_base_is_named() {
        let t = tempfile::tempdir().unwrap();
        let (media, up, state) = (
            t.path().join("media"),
            t.path().join("up"),
            t.path().join("state"),
        );
        std::fs::create_dir_all(&media).unwrap();
        let (m, digest) = update(&up, &[b"good"], &[b"held nowhere"]);
        let store = Store::new(&state, &media);
        // Left out, but the node does not hold it: no generation.
        let staged = store.stage(&up).unwrap();
        let e = format!("{:#}", store.generation(&staged, &m, &digest).unwrap_err());
        assert!(
            e.contains("neither in it nor held here")
                && e.contains(&Digest::of(b"held nowhere").to_string()),
            "{e}"
        );
        assert!(
            !state
                .join("store/gen")
                .join(format!("2-{}", &digest.hex()[..12]))
                .exists()
        );
        // A carried blob whose bytes changed after signing.
        let bad = Digest::of(b"claimed");
        std::fs::write(up.join(BLOBS_DIR).join(bad.hex()), b"tampered").unwrap();
        let e = format!(
            "{:#}",
            Store::new(&t.path().join("s2"), &media)
                .stage(&up)
                .err()
                .unwrap()
        );
        assert!(
            e.contains("hashes to") && e.contains("nothing of it was kept"),
            "{e}"
        );
        assert!(
            !t.path()
                .join("s2/store")
                .join(BLOBS_DIR)
                .join(bad.hex())
                .exists()
        );
    }

    #[test]
    fn the_installed_record_is_what_the_node_config_reads() {
        let t = tempfile::tempdir().unwrap();
        let mut cfg = NodeConfig::with_defaults("lab", vec![]);
        cfg.state_dir = t.path().to_path_buf();
        cfg.bundle = t.path().join("media");
        cfg.bundle_digest = Some(Digest::of(b"media"));
        assert_eq!(
            installed_view(cfg.clone()).unwrap(),
            cfg,
            "no update: the seed's own"
        );
        let i = Installed {
            bundle: t.path().join("store/gen/2-x"),
            bundle_digest: Digest::of(b"two"),
            platform_version: "0.2.0".into(),
            serial: 2,
            kubernetes: None,
            platform: vec![],
            at: "now".into(),
            media: cfg.bundle.clone(),
            media_digest: cfg.bundle_digest.clone(),
        };
        i.save(t.path()).unwrap();
        let v = installed_view(cfg.clone()).unwrap();
        assert_eq!(v.bundle, i.bundle);
        assert_eq!(v.bundle_digest, Some(Digest::of(b"two")));
        // A day-2 node boots the site's media: its seed is bound to it.
        let n = for_new_node(&v).unwrap();
        assert_eq!(
            (n.bundle, n.bundle_digest),
            (cfg.bundle.clone(), cfg.bundle_digest.clone())
        );
        assert_eq!(Store::of(&v).unwrap().media, cfg.bundle);
    }
}
