//! The content-addressed cache shared by every build on this machine: a blob
//! appears under its digest only after its bytes were verified.

use airgap_bundle::Digest;
use airgap_bundle::digest::HashingWriter;
use anyhow::{Context, Result, bail};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Cache {
    root: PathBuf,
    /// Entries whose bytes this process has hashed (on the way in, or since):
    /// they need no second hashing on the way out.
    verified: Arc<Mutex<HashSet<Digest>>>,
    /// One fetch per digest at a time in this process: two artifacts with
    /// the same content (a file under two names) would otherwise append to
    /// one partial file together.
    fetching: Arc<Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>>,
}

/// The right to write a digest's partial file: held by one task of one
/// process (another build may share the cache) until it is dropped.
pub struct Claim {
    _task: tokio::sync::OwnedMutexGuard<()>,
    _file: std::fs::File,
    path: PathBuf,
}

impl Claim {
    /// The blob is stored: its lock file goes. Safe only now: a waiter that
    /// then locks the unlinked file, and one that makes a new one, both find
    /// the blob stored and write nothing. A failed fetch keeps the file.
    pub fn stored(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Cache {
    /// `--cache-dir`, else `$XDG_CACHE_HOME/kpaas`, else `~/.cache/kpaas`.
    pub fn open(dir: Option<&Path>) -> Result<Cache> {
        let root = match dir {
            Some(d) => d.to_path_buf(),
            None => match std::env::var_os("XDG_CACHE_HOME") {
                Some(x) if !x.is_empty() => PathBuf::from(x).join("kpaas"),
                _ => PathBuf::from(
                    std::env::var_os("HOME")
                        .context("neither --cache-dir, XDG_CACHE_HOME nor HOME is set")?,
                )
                .join(".cache/kpaas"),
            },
        };
        for sub in ["blobs/sha256", "partial", "tmp", "locks"] {
            std::fs::create_dir_all(root.join(sub))
                .with_context(|| format!("creating cache {}", root.display()))?;
        }
        Ok(Cache {
            root,
            verified: Arc::default(),
            fetching: Arc::default(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn partial(&self, d: &Digest) -> PathBuf {
        self.root.join("partial").join(d.hex())
    }

    /// Waits until this task alone may write `d`'s partial file: first
    /// among this process's tasks, then among processes (an advisory lock
    /// on `locks/<hex>`). The caller checks [`Cache::has`] again
    /// afterwards: whoever held it before may have stored the blob.
    pub async fn claim(&self, d: &Digest) -> Result<Claim> {
        let m = {
            let mut map = self
                .fetching
                .lock()
                .map_err(|_| anyhow::anyhow!("the cache's fetch table is poisoned"))?;
            map.entry(d.clone()).or_default().clone()
        };
        let task = m.lock_owned().await;
        let path = self.root.join("locks").join(d.hex());
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("locking {}", path.display()));
                }
            }
        }
        Ok(Claim {
            _task: task,
            _file: file,
            path,
        })
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.path(d).is_file()
    }

    pub fn size(&self, d: &Digest) -> Option<u64> {
        std::fs::metadata(self.path(d)).ok().map(|m| m.len())
    }

    pub fn read(&self, d: &Digest) -> Result<Vec<u8>> {
        let b =
            std::fs::read(self.path(d)).with_context(|| format!("reading {d} from the cache"))?;
        if &Digest::of(&b) != d {
            // Best effort: the error below says the entry is corrupt either way.
            let _ = std::fs::remove_file(self.path(d));
            bail!("cache entry {d} was corrupt and has been removed; run again to fetch it anew");
        }
        self.mark_verified(d);
        Ok(b)
    }

    fn mark_verified(&self, d: &Digest) {
        if let Ok(mut v) = self.verified.lock() {
            v.insert(d.clone());
        }
    }

    pub fn is_verified(&self, d: &Digest) -> bool {
        self.verified.lock().is_ok_and(|v| v.contains(d))
    }

    /// Re-hashes an entry this process has not seen verified; a corrupt entry
    /// is removed so the next run fetches it anew.
    pub fn verify_entry(&self, d: &Digest) -> Result<()> {
        if self.is_verified(d) {
            return Ok(());
        }
        let f = std::fs::File::open(self.path(d))
            .with_context(|| format!("blob {d} is not in the cache"))?;
        let (got, _) =
            airgap_bundle::digest::hash_reader(std::io::BufReader::with_capacity(1 << 20, f))?;
        if &got != d {
            // Best effort: the error below says the entry is corrupt either way.
            let _ = std::fs::remove_file(self.path(d));
            bail!(
                "cache entry {d} was corrupt (content {got}); it has been removed, run again to fetch it anew"
            );
        }
        self.mark_verified(d);
        Ok(())
    }

    /// Stores bytes whose digest the caller expects; refuses a mismatch.
    pub fn put(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        if self.is_verified(d) {
            return Ok(());
        }
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
        let mut w = HashingWriter::new(&mut tmp);
        w.write_all(bytes)?;
        let (_, got, _) = w.finish();
        if &got != d {
            bail!("content hashes to {got}, expected {d}");
        }
        // Bundle directories hard-link these: readable by all, like a file a tool wrote.
        tmp.as_file()
            .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
        tmp.persist(self.path(d)).context("storing blob in cache")?;
        self.mark_verified(d);
        Ok(())
    }

    /// Copies a local file into the cache, hashing it on the way; when
    /// `want` is given the content must match it. Returns (digest, size).
    pub fn put_path(&self, path: &Path, want: Option<&Digest>) -> Result<(Digest, u64)> {
        let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut tmp = tempfile::NamedTempFile::new_in(self.root.join("tmp"))?;
        let mut w = HashingWriter::new(std::io::BufWriter::with_capacity(1 << 20, &mut tmp));
        std::io::copy(&mut std::io::BufReader::with_capacity(1 << 20, f), &mut w)
            .with_context(|| format!("reading {}", path.display()))?;
        let (mut bw, got, n) = w.finish();
        bw.flush()?;
        drop(bw);
        if let Some(want) = want
            && want != &got
        {
            bail!(
                "{} has digest {got}, but {want} is expected",
                path.display()
            );
        }
        if !self.has(&got) {
            tmp.as_file()
                .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))?;
            tmp.persist(self.path(&got))
                .context("storing a supplied file in the cache")?;
        }
        self.mark_verified(&got);
        Ok((got, n))
    }

    /// Moves a fully verified partial file into place.
    pub fn commit_partial(&self, d: &Digest) -> Result<()> {
        let p = self.partial(d);
        // Durability only: the content was verified; a failed fsync leaves a
        // blob the next read re-hashes anyway.
        std::fs::File::open(&p).and_then(|f| f.sync_all()).ok();
        std::fs::rename(&p, self.path(d))
            .with_context(|| format!("moving {} into the cache", p.display()))?;
        self.mark_verified(d);
        Ok(())
    }
}
