//! A JSON state file the agent keeps (the first-boot journal, the deploy
//! journal): read whole, absent means empty, written atomically (temp file,
//! fsync, rename, fsync dir), so a power cut leaves the old content or the
//! new, never a mix. Errors name the file and what it is.

use airgap_bundle::fsutil::write_atomic;
use anyhow::{Context, Result};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;

/// `what` is in `path`, or its default when the file does not exist yet.
pub fn load<T: DeserializeOwned + Default>(path: &Path, what: &str) -> Result<T> {
    match std::fs::read(path) {
        Ok(b) => {
            serde_json::from_slice(&b).with_context(|| format!("parsing {what} {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(e).with_context(|| format!("reading {what} {}", path.display())),
    }
}

pub fn save<T: Serialize>(path: &Path, what: &str, v: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(v).with_context(|| format!("encoding {what}"))?;
    write_atomic(path, &bytes)
}
