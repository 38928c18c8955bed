//! Reads a bundle in any of its shapes — a directory, one `.tar`, one
//! `.tar.zst`, or a set of volumes — as one stream of (path, bytes) entries.

use crate::digest::{Digest, hash_reader};
use anyhow::{Context, Result, bail};
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

pub const VOLUMES_SUFFIX: &str = ".volumes";

#[derive(Debug, Clone)]
pub enum BundleSource {
    Dir(PathBuf),
    Tar { parts: Vec<PathBuf>, zstd: bool },
}

/// One volume of a split bundle, as listed in `<bundle>.volumes`.
#[derive(Debug, Clone)]
pub struct Volume {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
}

/// Reads `<bundle>.volumes`: lines of `<sha256>  <size>  <file name>`.
pub fn read_volume_list(list: &Path) -> Result<Vec<Volume>> {
    let text =
        std::fs::read_to_string(list).with_context(|| format!("reading {}", list.display()))?;
    let dir = list.parent().unwrap_or(Path::new("."));
    let mut v = Vec::new();
    for (i, line) in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .enumerate()
    {
        let mut it = line.split_whitespace();
        let (Some(h), Some(s), Some(n), None) = (it.next(), it.next(), it.next(), it.next()) else {
            bail!(
                "{} line {}: want `<sha256>  <size>  <file>`",
                list.display(),
                i + 1
            );
        };
        if n.contains('/') {
            bail!(
                "{} line {}: volume name {n:?} must be a plain file name",
                list.display(),
                i + 1
            );
        }
        v.push(Volume {
            path: dir.join(n),
            digest: Digest::from_hex(h)
                .with_context(|| format!("{} line {}", list.display(), i + 1))?,
            size: s
                .parse()
                .with_context(|| format!("{} line {}: size", list.display(), i + 1))?,
        });
    }
    if v.is_empty() {
        bail!("{} lists no volumes", list.display());
    }
    Ok(v)
}

/// Finds the volume list for `path`: the list itself, the bundle name it was
/// split from, or any one volume (`bundle.tar.zst.003`).
pub fn find_volume_list(path: &Path) -> Option<PathBuf> {
    let s = path.to_string_lossy();
    if s.ends_with(VOLUMES_SUFFIX) && path.is_file() {
        return Some(path.to_path_buf());
    }
    let cand = PathBuf::from(format!("{s}{VOLUMES_SUFFIX}"));
    if cand.is_file() {
        return Some(cand);
    }
    let (base, ext) = s.rsplit_once('.')?;
    if ext.len() == 3 && ext.bytes().all(|b| b.is_ascii_digit()) {
        let cand = PathBuf::from(format!("{base}{VOLUMES_SUFFIX}"));
        if cand.is_file() {
            return Some(cand);
        }
    }
    None
}

impl BundleSource {
    pub fn open(path: &Path) -> Result<BundleSource> {
        if path.is_dir() {
            return Ok(BundleSource::Dir(path.to_path_buf()));
        }
        let (parts, name) = if let Some(list) = find_volume_list(path) {
            let vols = read_volume_list(&list)?;
            let name = list
                .to_string_lossy()
                .trim_end_matches(VOLUMES_SUFFIX)
                .to_string();
            (vols.into_iter().map(|v| v.path).collect(), name)
        } else if path.is_file() {
            (vec![path.to_path_buf()], path.to_string_lossy().to_string())
        } else {
            bail!(
                "{}: no such bundle (want a bundle directory, a .tar, a .tar.zst, or a volume set with its .volumes list)",
                path.display()
            );
        };
        let zstd = if name.ends_with(".zst") {
            true
        } else if name.ends_with(".tar") {
            false
        } else {
            // Sniff the zstd magic rather than trusting a name.
            let mut magic = [0u8; 4];
            let f =
                File::open(&parts[0]).with_context(|| format!("opening {}", parts[0].display()))?;
            let n = f.take(4).read(&mut magic)?;
            n == 4 && magic == [0x28, 0xb5, 0x2f, 0xfd]
        };
        Ok(BundleSource::Tar { parts, zstd })
    }

    /// Calls `f` for every regular file, with its path relative to the bundle root.
    pub fn for_each(
        &self,
        mut f: impl FnMut(&str, u64, &mut dyn Read) -> Result<()>,
    ) -> Result<()> {
        match self {
            BundleSource::Dir(root) => {
                let mut files = Vec::new();
                walk(root, root, &mut files)?;
                files.sort();
                for rel in files {
                    let p = root.join(&rel);
                    let file =
                        File::open(&p).with_context(|| format!("opening {}", p.display()))?;
                    let len = file.metadata()?.len();
                    f(&rel, len, &mut BufReader::with_capacity(1 << 20, file))?;
                }
                Ok(())
            }
            BundleSource::Tar { parts, zstd } => {
                let chain = Chain::open(parts.clone())?;
                let input: Box<dyn Read> = if *zstd {
                    Box::new(
                        zstd::stream::read::Decoder::new(chain).context("starting zstd decoder")?,
                    )
                } else {
                    Box::new(BufReader::with_capacity(1 << 20, chain))
                };
                let mut ar = tar::Archive::new(input);
                for entry in ar.entries().context("reading bundle archive")? {
                    let mut e = entry.context("reading bundle archive entry")?;
                    if !e.header().entry_type().is_file() {
                        continue;
                    }
                    let path = e
                        .path()?
                        .to_string_lossy()
                        .trim_start_matches("./")
                        .to_string();
                    let len = e.header().size()?;
                    f(&path, len, &mut e)?;
                }
                Ok(())
            }
        }
    }

    /// Reads one small file (bundle.json, index.json) without the rest.
    pub fn read_file(&self, want: &str) -> Result<Vec<u8>> {
        if let BundleSource::Dir(root) = self {
            return std::fs::read(root.join(want))
                .with_context(|| format!("reading {want} from bundle"));
        }
        let mut out = None;
        // Metadata comes first in our archives, so this stops early in practice.
        let r = self.for_each(|path, _, r| {
            if path == want {
                let mut v = Vec::new();
                r.read_to_end(&mut v)?;
                out = Some(v);
                bail!(StopEarly);
            }
            Ok(())
        });
        match (out, r) {
            (Some(v), _) => Ok(v),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => bail!("bundle has no {want}"),
        }
    }
}

#[derive(Debug)]
struct StopEarly;
impl std::fmt::Display for StopEarly {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stop")
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for e in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let e = e?;
        let t = e.file_type()?;
        let p = e.path();
        // A link to a file counts as the file: a site's installed bundle
        // links the blobs it shares with the media instead of copying them.
        let linked_file = t.is_symlink() && p.metadata().is_ok_and(|m| m.is_file());
        if t.is_dir() {
            walk(root, &p, out)?;
        } else if t.is_file() || linked_file {
            out.push(
                p.strip_prefix(root)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .to_string(),
            );
        }
    }
    Ok(())
}

/// Reads several files as one stream (volumes of a split archive).
struct Chain {
    parts: std::vec::IntoIter<PathBuf>,
    cur: Option<File>,
}

impl Chain {
    fn open(parts: Vec<PathBuf>) -> Result<Chain> {
        for p in &parts {
            if !p.is_file() {
                bail!("volume {} is missing", p.display());
            }
        }
        Ok(Chain {
            parts: parts.into_iter(),
            cur: None,
        })
    }
}

impl Read for Chain {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.cur.is_none() {
                match self.parts.next() {
                    Some(p) => self.cur = Some(File::open(p)?),
                    None => return Ok(0),
                }
            }
            let n = self.cur.as_mut().map_or(Ok(0), |f| f.read(buf))?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.cur = None;
        }
    }
}

/// Checks each volume against its listed digest; returns one problem per bad volume.
pub fn check_volumes(list: &Path) -> Result<Vec<String>> {
    let mut problems = Vec::new();
    for v in read_volume_list(list)? {
        match File::open(&v.path) {
            Err(e) => problems.push(format!("volume {}: {e}", v.path.display())),
            Ok(f) => {
                let (d, n) = hash_reader(BufReader::with_capacity(1 << 20, f))?;
                if d != v.digest || n != v.size {
                    problems.push(format!(
                        "volume {}: content is {d} ({n} bytes), the volume list says {} ({} bytes)",
                        v.path.display(),
                        v.digest,
                        v.size
                    ));
                }
            }
        }
    }
    Ok(problems)
}
