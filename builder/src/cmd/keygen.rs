//! `kpaas-builder keygen`: an ed25519 key pair for signing bundles.

use airgap_bundle::{fsutil, sign};
use anyhow::{Result, bail};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Writes PREFIX.key (secret, mode 0600) and PREFIX.pub.
    #[arg(long, default_value = "kpaas-bundle")]
    pub out: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: Args) -> Result<()> {
    let secret = PathBuf::from(format!("{}.key", a.out.display()));
    let public = PathBuf::from(format!("{}.pub", a.out.display()));
    if !a.force && (secret.exists() || public.exists()) {
        bail!(
            "{} or {} exists; pass --force to replace it (a lost key cannot sign updates)",
            secret.display(),
            public.display()
        );
    }
    let (s, p) = sign::generate()?;
    fsutil::write_atomic(&secret, s.as_bytes())?;
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600))?;
    fsutil::write_atomic(&public, p.as_bytes())?;
    let id = sign::key_id(&sign::parse_public(&p)?);
    println!(
        "key {id}: secret {} (keep it off the media), public {}",
        secret.display(),
        public.display()
    );
    Ok(())
}
