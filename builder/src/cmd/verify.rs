//! `kpaas-builder verify`: the full check of a bundle, as the site would run it.

use airgap_bundle::{sign, verify};
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A bundle directory, .tar, .tar.zst, or a volume set (.volumes or any volume).
    pub bundle: PathBuf,
    /// Public key the bundle must be signed with.
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// For a delta: where its left-out blobs are (the base bundle's directory,
    /// or the site's inventory); each one absent there is a problem.
    #[arg(long, value_name = "DIR|INVENTORY")]
    pub base: Option<PathBuf>,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Verification found problems (exit status 1, not 2).
#[derive(Debug, thiserror::Error)]
#[error("bundle verification failed with {0} problem(s)")]
pub struct Failed(pub usize);

pub fn run(a: Args) -> Result<()> {
    let key = match &a.key {
        Some(k) => Some(
            sign::parse_public(
                &std::fs::read_to_string(k)
                    .with_context(|| format!("reading --key {}", k.display()))?,
            )
            .with_context(|| format!("--key {}", k.display()))?,
        ),
        None => None,
    };
    let base = match &a.base {
        Some(b) => Some(verify::Base::open(b).with_context(|| format!("--base {}", b.display()))?),
        None => None,
    };
    let r = verify::verify_with_base(&a.bundle, key.as_ref(), base.as_ref())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else {
        for w in &r.warnings {
            eprintln!("warning: {w}");
        }
        for p in &r.problems {
            eprintln!("BAD  {p}");
        }
        let sig = match &r.signature {
            verify::SignatureState::Verified { key_id } => format!("signature OK (key {key_id})"),
            verify::SignatureState::NotChecked => "signature not checked".into(),
            verify::SignatureState::Missing => "unsigned".into(),
            verify::SignatureState::Bad => "signature BAD".into(),
        };
        if let Some(d) = &r.delta {
            println!(
                "a delta of {}: {} blob(s), {} bytes, come from the base{}",
                d.base,
                d.from_base,
                d.from_base_bytes,
                match &d.base_checked {
                    Some(b) => format!(" (checked against {b})"),
                    None => " (not checked: no --base)".into(),
                }
            );
        }
        println!(
            "{}: {} artifacts, {} blobs, {} bytes; {sig}; {}",
            a.bundle.display(),
            r.artifacts,
            r.blobs,
            r.bytes,
            if r.ok {
                "OK".to_string()
            } else {
                format!("{} problem(s)", r.problems.len())
            }
        );
    }
    if r.ok {
        Ok(())
    } else {
        Err(Failed(r.problems.len()).into())
    }
}
