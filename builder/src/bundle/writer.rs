//! Writing a bundle: a directory, or a deterministic `.tar` / `.tar.zst`,
//! optionally split into volumes. Output appears under its final name only
//! once complete; blobs are re-hashed on their way out of the cache.

use super::ctx::Ctx;
use airgap_bundle::digest::Hasher;
use airgap_bundle::manifest::BundleManifest;
use airgap_bundle::reader::VOLUMES_SUFFIX;
use airgap_bundle::{Digest, fsutil};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// The metadata files, in the order they are written.
pub type Files = Vec<(String, Vec<u8>)>;

/// Metadata files plus every unique blob (digest → size).
pub type Contents = (Files, BTreeMap<Digest, u64>);

pub struct Output;

impl Output {
    pub fn is_archive(out: &str) -> bool {
        out.ends_with(".tar") || out.ends_with(".tar.zst")
    }
}

/// `4G`, `700M`, `512K` or plain bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1u64 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(format!("{s:?}: unknown unit (use K, M, G or T)")),
            };
            (&s[..i], m)
        }
        _ => (s, 1),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size such as 4G or 700M"))?;
    let v = n
        .checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))?;
    if v < 1 << 20 {
        return Err(format!("{s:?}: volumes must be at least 1M"));
    }
    Ok(v)
}

/// Puts one cached blob into a bundle directory. A hard link when the cache
/// shares the file system (no bytes written twice: the bundle is often staged
/// next to the cache before it is burned), else a kernel-side copy. Either way
/// the entry is hashed first unless this process already verified it, so a
/// corrupt cache entry never reaches a bundle.
fn place_blob(ctx: &Ctx, d: &Digest, blobs_dir: &Path) -> Result<()> {
    ctx.cache.verify_entry(d)?;
    let src = ctx.cache.path(d);
    let dest = blobs_dir.join(d.hex());
    if std::fs::hard_link(&src, &dest).is_err() {
        std::fs::copy(&src, &dest).with_context(|| format!("copying blob {d} into the bundle"))?;
        File::open(&dest)?.sync_data()?;
    }
    Ok(())
}

fn sync_dir(p: &Path) -> Result<()> {
    File::open(p)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("syncing {}", p.display()))
}

fn sibling_tmp(out: &Path) -> Result<PathBuf> {
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = out
        .file_name()
        .context("--out has no file name")?
        .to_string_lossy()
        .to_string();
    Ok(dir.join(format!(".{name}.partial-{}", std::process::id())))
}

pub fn write_bundle(
    ctx: &Ctx,
    out: &Path,
    (files, blobs): &Contents,
    _m: &BundleManifest,
    mtime: u64,
    volume_size: Option<u64>,
    level: i32,
) -> Result<()> {
    let s = out.to_string_lossy().to_string();
    if !Output::is_archive(&s) {
        return write_dir(ctx, out, files, blobs);
    }
    let tmp = sibling_tmp(out)?;
    std::fs::create_dir_all(&tmp)?;
    let r = (|| -> Result<Vec<(PathBuf, Digest, u64)>> {
        let name = out
            .file_name()
            .context("--out has no file name")?
            .to_string_lossy()
            .to_string();
        let mut sink = Volumes::new(tmp.clone(), name, volume_size);
        if s.ends_with(".zst") {
            let mut z =
                zstd::stream::write::Encoder::new(&mut sink, level).context("starting zstd")?;
            write_tar(ctx, &mut z, files, blobs, mtime)?;
            z.finish()?;
        } else {
            write_tar(ctx, &mut sink, files, blobs, mtime)?;
        }
        sink.finish()
    })();
    let parts = match r {
        Ok(p) => p,
        Err(e) => {
            // Cleanup on the error path: the error that brought us here matters.
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
    };
    let dir = tmp.parent().unwrap_or(Path::new(".")).to_path_buf();
    if volume_size.is_some() {
        let mut list = String::from(
            "# kpaas bundle volumes: <sha256>  <bytes>  <file>; read them in this order\n",
        );
        for (p, d, n) in &parts {
            let fname = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            std::fs::rename(p, dir.join(&fname))?;
            list.push_str(&format!("{}  {n}  {fname}\n", d.hex()));
        }
        // The list goes last: until it exists the volume set is not complete.
        fsutil::write_atomic(
            &PathBuf::from(format!("{s}{VOLUMES_SUFFIX}")),
            list.as_bytes(),
        )?;
    } else if let Some((p, _, _)) = parts.first() {
        std::fs::rename(p, out)
            .with_context(|| format!("moving the bundle to {}", out.display()))?;
    }
    // The parts were renamed out of it; what is left is empty scaffolding.
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

fn header(path: &str, size: u64, mtime: u64) -> Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)
        .with_context(|| format!("tar path {path}"))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(mtime);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(h)
}

fn write_tar(
    ctx: &Ctx,
    w: &mut dyn Write,
    files: &Files,
    blobs: &BTreeMap<Digest, u64>,
    mtime: u64,
) -> Result<()> {
    let mut b = tar::Builder::new(w);
    for (path, bytes) in files {
        b.append(&header(path, bytes.len() as u64, mtime)?, bytes.as_slice())?;
    }
    for (d, size) in blobs {
        let path = format!("oci/{}", d.blob_path());
        // The size is read from the cache: descriptors can lie, the file cannot.
        let real = ctx
            .cache
            .size(d)
            .with_context(|| format!("blob {d} is not in the cache"))?;
        if real != *size {
            bail!("blob {d}: {real} bytes in the cache, {size} in its descriptor");
        }
        let h = header(&path, real, mtime)?;
        let f = File::open(ctx.cache.path(d))?;
        let mut check = CheckingReader {
            inner: io::BufReader::with_capacity(1 << 20, f),
            hasher: Hasher::new(),
            left: real,
        };
        b.append(&h, &mut check)?;
        let got = check.hasher.finish();
        if &got != d {
            // Best effort: the bundle fails below; the next build re-fetches.
            let _ = std::fs::remove_file(ctx.cache.path(d));
            bail!(
                "cache entry {d} was corrupt (content {got}); it has been removed, run again to fetch it anew"
            );
        }
    }
    b.into_inner()?.flush()?;
    Ok(())
}

struct CheckingReader<R> {
    inner: R,
    hasher: Hasher,
    left: u64,
}

impl<R: Read> Read for CheckingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.left = self.left.saturating_sub(n as u64);
        Ok(n)
    }
}

fn write_dir(ctx: &Ctx, out: &Path, files: &Files, blobs: &BTreeMap<Digest, u64>) -> Result<()> {
    let tmp = sibling_tmp(out)?;
    let r = (|| -> Result<()> {
        std::fs::create_dir_all(tmp.join("oci/blobs/sha256"))?;
        for (path, bytes) in files {
            let mut f = File::create(tmp.join(path)).with_context(|| format!("writing {path}"))?;
            f.write_all(bytes)?;
            f.sync_data()?;
        }
        // Hashing dominates for reused entries: spread it over the cores.
        let list: Vec<&Digest> = blobs.keys().collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let blobs_dir = tmp.join("oci/blobs/sha256");
        let workers = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 8);
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    s.spawn(|| -> Result<()> {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(d) = list.get(i) else { return Ok(()) };
                            place_blob(ctx, d, &blobs_dir)?;
                        }
                    })
                })
                .collect();
            let mut first_err = None;
            for h in handles {
                match h.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => first_err = first_err.or(Some(e)),
                    Err(_) => {
                        first_err =
                            first_err.or(Some(anyhow::anyhow!("a blob writer thread panicked")))
                    }
                }
            }
            first_err.map_or(Ok(()), Err)
        })?;
        for d in [
            blobs_dir.as_path(),
            &tmp.join("oci/blobs"),
            &tmp.join("oci"),
            &tmp,
        ] {
            sync_dir(d)?;
        }
        Ok(())
    })();
    if let Err(e) = r {
        // Cleanup on the error path: the error that brought us here matters.
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    // Swap in the finished directory; an old bundle is removed only afterwards.
    let old = tmp.with_extension("old");
    if out.exists() {
        std::fs::rename(out, &old)
            .with_context(|| format!("moving the old {} aside", out.display()))?;
    }
    std::fs::rename(&tmp, out)
        .with_context(|| format!("moving the bundle to {}", out.display()))?;
    if old.exists() {
        std::fs::remove_dir_all(&old).ok();
    }
    Ok(())
}

/// Splits one byte stream into numbered files of at most `limit` bytes.
struct Volumes {
    dir: PathBuf,
    name: String,
    limit: Option<u64>,
    cur: Option<(BufWriter<File>, PathBuf, Hasher, u64)>,
    done: Vec<(PathBuf, Digest, u64)>,
}

impl Volumes {
    fn new(dir: PathBuf, name: String, limit: Option<u64>) -> Volumes {
        Volumes {
            dir,
            name,
            limit,
            cur: None,
            done: Vec::new(),
        }
    }

    fn close(&mut self) -> io::Result<()> {
        if let Some((w, p, h, n)) = self.cur.take() {
            w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            self.done.push((p, h.finish(), n));
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<(PathBuf, Digest, u64)>> {
        if self.cur.is_none() && self.done.is_empty() {
            self.open()?;
        }
        self.close()?;
        Ok(self.done)
    }

    fn open(&mut self) -> io::Result<()> {
        let p = match self.limit {
            Some(_) => self
                .dir
                .join(format!("{}.{:03}", self.name, self.done.len() + 1)),
            None => self.dir.join(&self.name),
        };
        self.cur = Some((
            BufWriter::with_capacity(1 << 20, File::create(&p)?),
            p,
            Hasher::new(),
            0,
        ));
        Ok(())
    }
}

impl Write for Volumes {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if let (Some(limit), Some((_, _, _, n))) = (self.limit, &self.cur)
            && *n >= limit
        {
            self.close()?;
        }
        if self.cur.is_none() {
            self.open()?;
        }
        let limit = self.limit;
        let Some((w, _, h, n)) = self.cur.as_mut() else {
            return Ok(0);
        };
        let take = match limit {
            Some(l) => buf.len().min((l - *n) as usize),
            None => buf.len(),
        };
        w.write_all(&buf[..take])?;
        h.update(&buf[..take]);
        *n += take as u64;
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.cur.as_mut() {
            Some((w, ..)) => w.flush(),
            None => Ok(()),
        }
    }
}
