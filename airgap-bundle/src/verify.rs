//! Full verification of a bundle: signature, checksum list, every blob's
//! digest, and that every artifact's manifests and blobs are present. Every
//! problem names the artifact(s) it breaks, and all are reported at once.

use crate::digest::{Digest, HashingWriter};
use crate::manifest::*;
use crate::oci::{self, LayoutIndex};
use crate::oci_walk::{self, Bad, Platforms, Visit};
use crate::reader::{BundleSource, check_volumes, find_volume_list};
use crate::sign;
use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

/// Files whose bytes verification keeps (all small).
const METADATA: &[&str] = &[
    BUNDLE_JSON,
    SIGNATURE,
    CHECKSUMS,
    SBOM,
    CATALOG,
    LAYOUT_INDEX,
    LAYOUT_MARKER,
];
/// Blobs this small that look like JSON are kept, to walk manifests.
const KEEP_JSON_BLOB: u64 = 4 << 20;

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum SignatureState {
    Verified { key_id: String },
    NotChecked,
    Missing,
    Bad,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub ok: bool,
    pub signature: SignatureState,
    pub artifacts: usize,
    pub blobs: usize,
    pub bytes: u64,
    /// Each problem, with the artifacts it affects (empty: the bundle as a whole).
    pub problems: Vec<Problem>,
    pub warnings: Vec<String>,
    /// For a delta: its base, and what comes from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delta: Option<DeltaReport>,
}

#[derive(Debug, Serialize)]
pub struct DeltaReport {
    pub base: BaseRef,
    /// Blobs (and their bytes) the delta leaves to its base.
    pub from_base: usize,
    pub from_base_bytes: u64,
    /// What was checked against: a base given, or nothing.
    pub base_checked: Option<String>,
}

/// Where a delta's left-out blobs may be found: a site's inventory (its
/// list of digests) or bundle directories (the base bundle, a node's store).
pub enum Base {
    Inventory(Box<crate::inventory::Inventory>),
    Dirs(Vec<std::path::PathBuf>),
}

impl Base {
    /// Reads `--base`: an inventory file, or a bundle directory.
    pub fn open(path: &Path) -> Result<Base> {
        if path.is_dir() {
            Ok(Base::Dirs(vec![path.to_path_buf()]))
        } else {
            crate::inventory::Inventory::from_file(path).map(|i| Base::Inventory(Box::new(i)))
        }
    }

    pub fn holds(&self, d: &Digest, size: u64) -> bool {
        match self {
            Base::Inventory(i) => i.blobs.contains(d),
            Base::Dirs(dirs) => dirs.iter().any(|b| {
                std::fs::metadata(b.join(BLOBS_DIR).join(d.hex()))
                    .is_ok_and(|m| m.is_file() && m.len() == size)
            }),
        }
    }

    fn describe(&self) -> String {
        match self {
            Base::Inventory(i) => {
                format!("the inventory of site {} (taken {})", i.cluster, i.taken)
            }
            Base::Dirs(d) => d
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

#[derive(Debug, Serialize, Clone)]
pub struct Problem {
    pub artifacts: Vec<String>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.artifacts.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.artifacts.join(", "), self.message)
        }
    }
}

impl Report {
    /// The report when the bundle is good; every problem, one per line, when not.
    pub fn into_result(self) -> anyhow::Result<Report> {
        if self.ok {
            return Ok(self);
        }
        let list: Vec<String> = self.problems.iter().map(|p| p.to_string()).collect();
        anyhow::bail!(
            "the bundle failed verification:\n  - {}",
            list.join("\n  - ")
        )
    }
}

struct Seen {
    digest: Digest,
    size: u64,
    bytes: Option<Vec<u8>>,
}

pub fn verify(path: &Path, key: Option<&ed25519_dalek::VerifyingKey>) -> Result<Report> {
    verify_with_base(path, key, None)
}

/// As `verify`; a delta's left-out blobs are looked for in `base` (when
/// given), and each one it lacks is a problem naming its artifacts.
pub fn verify_with_base(
    path: &Path,
    key: Option<&ed25519_dalek::VerifyingKey>,
    base: Option<&Base>,
) -> Result<Report> {
    let mut problems: Vec<Problem> = Vec::new();
    let mut warnings = Vec::new();
    let whole = |m: String| Problem {
        artifacts: vec![],
        message: m,
    };
    if let Some(list) = find_volume_list(path) {
        problems.extend(check_volumes(&list)?.into_iter().map(whole));
    }
    let src = BundleSource::open(path)?;
    let mut seen: BTreeMap<String, Seen> = BTreeMap::new();
    let mut read_error = None;
    let r = src.for_each(|p, size, r| {
        let keep = METADATA.contains(&p) || (p.starts_with(BLOBS_DIR) && size <= KEEP_JSON_BLOB);
        let mut w = HashingWriter::new(Vec::new());
        let mut buf = vec![0u8; if keep { 8192 } else { 1 << 20 }];
        let mut first = true;
        let mut kept = keep;
        let mut sink = HashingWriter::new(std::io::sink());
        loop {
            let n = r.read(&mut buf).with_context(|| format!("reading {p}"))?;
            if n == 0 {
                break;
            }
            if first {
                first = false;
                if p.starts_with(BLOBS_DIR)
                    && buf[..n].iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{')
                {
                    kept = false;
                    sink.write_all(&w.finish().0)?;
                    w = HashingWriter::new(Vec::new());
                }
            }
            if kept {
                w.write_all(&buf[..n])?;
            } else {
                sink.write_all(&buf[..n])?;
            }
        }
        let (digest, n, bytes) = if kept {
            let (v, d, n) = w.finish();
            (d, n, Some(v))
        } else {
            let (_, d, n) = sink.finish();
            (d, n, None)
        };
        seen.insert(
            p.to_string(),
            Seen {
                digest,
                size: n,
                bytes,
            },
        );
        Ok(())
    });
    if let Err(e) = r {
        // A truncated archive still lets us say what is missing.
        read_error = Some(format!("{e:#}"));
    }
    if let Some(e) = read_error {
        problems.push(whole(format!(
            "the bundle could not be read to its end: {e}"
        )));
    }

    let bytes_of = |p: &str| seen.get(p).and_then(|s| s.bytes.as_deref());
    let mut signature = SignatureState::Missing;
    let manifest = match bytes_of(BUNDLE_JSON).map(BundleManifest::from_bytes) {
        None => {
            problems.push(whole("bundle.json is missing".into()));
            None
        }
        Some(Err(e)) => {
            problems.push(whole(format!("bundle.json is unreadable: {e:#}")));
            None
        }
        Some(Ok(m)) => Some(m),
    };
    if let Some(bj) = bytes_of(BUNDLE_JSON) {
        match (bytes_of(SIGNATURE), key) {
            (None, _) => warnings.push("bundle is not signed (no bundle.json.sig)".into()),
            (Some(_), None) => {
                signature = SignatureState::NotChecked;
                warnings
                    .push("signature not checked: pass --key with the bundle's public key".into())
            }
            (Some(sig), Some(k)) => match sign::verify(k, bj, &String::from_utf8_lossy(sig)) {
                Ok(id) => signature = SignatureState::Verified { key_id: id },
                Err(e) => {
                    signature = SignatureState::Bad;
                    problems.push(whole(format!("signature: {e:#}")))
                }
            },
        }
        if key.is_some() && bytes_of(SIGNATURE).is_none() {
            problems.push(whole(
                "bundle.json.sig is missing, but a key was given".into(),
            ));
        }
    }

    // Which artifacts use which blob, for naming them in problems.
    let mut users: BTreeMap<Digest, BTreeSet<String>> = BTreeMap::new();
    let mut blob_problems: BTreeMap<Digest, String> = BTreeMap::new();
    for (p, s) in &seen {
        if let Some(hex) = p.strip_prefix(BLOBS_DIR) {
            match Digest::from_hex(hex) {
                Ok(d) if d == s.digest => {}
                Ok(d) => {
                    blob_problems.insert(
                        d,
                        format!("blob {p} is corrupt: its content hashes to {}", s.digest),
                    );
                }
                Err(_) => problems.push(whole(format!("{p}: not a sha256 blob name"))),
            }
        }
    }

    // SHA256SUMS: every listed file matches, every file is listed.
    match bytes_of(CHECKSUMS).map(|b| parse_checksum_list(&String::from_utf8_lossy(b))) {
        None => problems.push(whole("SHA256SUMS is missing".into())),
        Some(Err(e)) => problems.push(whole(format!("{e:#}"))),
        Some(Ok(list)) => {
            for (p, d) in &list {
                match seen.get(p) {
                    None if p.starts_with(BLOBS_DIR) => {} // reported per artifact below
                    None => {
                        problems.push(whole(format!("{p} is listed in SHA256SUMS but missing")))
                    }
                    Some(s) if &s.digest != d && !p.starts_with(BLOBS_DIR) => {
                        problems.push(whole(format!(
                            "{p} does not match SHA256SUMS (content {}, listed {d})",
                            s.digest
                        )))
                    }
                    Some(_) => {}
                }
            }
            // A delta's left-out blobs may be here too (a site links them
            // from its base): bundle.json, signed, lists them instead.
            let omitted: BTreeSet<&Digest> = manifest
                .iter()
                .flat_map(|m| {
                    m.delta
                        .iter()
                        .flat_map(|d| d.omitted.iter().map(|b| &b.digest))
                })
                .collect();
            let left_out = |p: &str| {
                p.strip_prefix(BLOBS_DIR)
                    .and_then(|h| Digest::from_hex(h).ok())
                    .is_some_and(|d| omitted.contains(&d))
            };
            for p in seen.keys() {
                if p != CHECKSUMS && p != SIGNATURE && !list.contains_key(p) && !left_out(p) {
                    problems.push(whole(format!("{p} is in the bundle but not in SHA256SUMS")));
                }
            }
        }
    }

    let mut artifacts = 0;
    if let Some(m) = &manifest {
        artifacts = m.artifacts.len();
        for (f, d) in &m.files {
            match seen.get(f) {
                None => problems.push(whole(format!("{f} is missing"))),
                Some(s) if &s.digest != d => problems.push(whole(format!(
                    "{f} was changed: bundle.json says {d}, content is {}",
                    s.digest
                ))),
                Some(_) => {}
            }
        }
        let layout: Option<LayoutIndex> =
            bytes_of(LAYOUT_INDEX).and_then(|b| serde_json::from_slice(b).ok());
        if layout.is_none() {
            problems.push(whole("oci/index.json is missing or unreadable".into()));
        }
        for a in &m.artifacts {
            let label = format!("{} {}", a.kind, a.name);
            if let Some(l) = &layout {
                let named = l.manifests.iter().any(|d| {
                    d.digest == a.digest && d.annotations.get(oci::ANN_REF_NAME) == Some(&a.name)
                });
                if !named {
                    problems.push(Problem {
                        artifacts: vec![label.clone()],
                        message: format!("oci/index.json has no entry {} -> {}", a.name, a.digest),
                    });
                }
            }
            // Walk the artifact's tree (the one walk, `oci_walk`), recording
            // every blob it needs: what the bundle was made for must be
            // here, other platforms' children need not.
            let mut needed = BTreeSet::new();
            oci_walk::walk(
                &a.digest,
                &a.media_type,
                Platforms::of(&m.image_platforms, &a.platforms),
                &mut |d| match seen.get(&format!("oci/{}", d.blob_path())) {
                    None => Ok(None),
                    Some(s) => s
                        .bytes
                        .clone()
                        .map(Some)
                        .ok_or_else(|| std::io::Error::other("it is not JSON")),
                },
                &mut |v| match v {
                    Visit::Manifest { digest, .. }
                    | Visit::Leaf { digest, .. }
                    | Visit::Missing { digest, .. } => {
                        needed.insert(digest.clone());
                    }
                    Visit::Blob(b) => {
                        needed.insert(b.digest.clone());
                    }
                    Visit::Skipped(_) => {}
                    // Said once, as the blob's own problem.
                    Visit::Bad {
                        digest,
                        why: Bad::NotItsDigest,
                    } => {
                        needed.insert(digest.clone());
                    }
                    Visit::Bad { digest, why } => {
                        needed.insert(digest.clone());
                        problems.push(Problem {
                            artifacts: vec![label.clone()],
                            message: format!("manifest {digest}: {why}"),
                        });
                    }
                },
            );
            for d in needed {
                users.entry(d).or_default().insert(label.clone());
            }
        }
    }
    // A delta's left-out blobs are its base's, signed as such: absent here
    // is expected; absent from a base given is a problem.
    let omitted: BTreeMap<&Digest, u64> = manifest
        .as_ref()
        .and_then(|m| m.delta.as_ref())
        .map(|d| d.omitted.iter().map(|b| (&b.digest, b.size)).collect())
        .unwrap_or_default();
    let mut delta = None;
    if let Some(d) = manifest.as_ref().and_then(|m| m.delta.as_ref()) {
        delta = Some(DeltaReport {
            base: d.base.clone(),
            from_base: d.omitted.len(),
            from_base_bytes: d.omitted_bytes(),
            base_checked: base.map(Base::describe),
        });
        if base.is_none() {
            warnings.push(format!(
                "a delta: {} blob(s) ({} bytes) come from its base, {}, and were not checked here (pass --base with the base bundle or the site's inventory)",
                d.omitted.len(),
                d.omitted_bytes(),
                d.base
            ));
        }
    }
    for (d, who) in &users {
        let path = format!("oci/{}", d.blob_path());
        if seen.contains_key(&path) {
            continue;
        }
        let message = match (omitted.get(d), base) {
            (Some(_), None) => continue,
            (Some(size), Some(b)) if b.holds(d, *size) => continue,
            (Some(_), Some(b)) => format!(
                "blob {d} is left to the delta's base, but {} does not hold it",
                b.describe()
            ),
            (None, _) => format!("blob {d} is missing"),
        };
        problems.push(Problem {
            artifacts: who.iter().cloned().collect(),
            message,
        });
    }
    for (d, msg) in blob_problems {
        let who = users
            .get(&d)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        problems.push(Problem {
            artifacts: who,
            message: msg,
        });
    }
    let blobs = seen.keys().filter(|p| p.starts_with(BLOBS_DIR)).count();
    let bytes = seen.values().map(|s| s.size).sum();
    Ok(Report {
        ok: problems.is_empty(),
        signature,
        artifacts,
        blobs,
        bytes,
        problems,
        warnings,
        delta,
    })
}
