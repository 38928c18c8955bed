//! Detached ed25519 signatures over `bundle.json`. Keys and signatures are one
//! line of text each, so they can be printed, diffed and baked into images.

use crate::digest::Digest;
use anyhow::{Context, Result, bail};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use std::io::Read;

const SECRET_TAG: &str = "kpaas-ed25519-secret-key";
const PUBLIC_TAG: &str = "kpaas-ed25519-public-key";
const SIG_TAG: &str = "kpaas-ed25519-signature";

/// First 16 hex digits of sha256(public key): enough to tell keys apart in messages.
pub fn key_id(public: &VerifyingKey) -> String {
    Digest::of(public.as_bytes()).hex()[..16].to_string()
}

fn parse_tagged<const N: usize>(text: &str, tag: &str, what: &str) -> Result<[u8; N]> {
    let line = text.trim();
    let hex = line
        .strip_prefix(tag)
        .map(str::trim)
        .with_context(|| format!("not a {what} (expected a line starting with {tag:?})"))?;
    let bytes = hex::decode(hex).with_context(|| format!("{what}: not hex"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("{what}: wrong length (want {N} bytes)"))
}

/// Makes a new key pair from the kernel's random source; returns (secret, public) text.
pub fn generate() -> Result<(String, String)> {
    let mut seed = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut seed))
        .context("reading /dev/urandom for a new key")?;
    let sk = SigningKey::from_bytes(&seed);
    Ok((
        format!("{SECRET_TAG} {}\n", hex::encode(seed)),
        format!(
            "{PUBLIC_TAG} {}\n",
            hex::encode(sk.verifying_key().as_bytes())
        ),
    ))
}

pub fn parse_public(text: &str) -> Result<VerifyingKey> {
    let b = parse_tagged::<32>(text, PUBLIC_TAG, "public key")?;
    VerifyingKey::from_bytes(&b).context("public key is not a valid ed25519 point")
}

pub fn public_of_secret(secret_text: &str) -> Result<VerifyingKey> {
    Ok(
        SigningKey::from_bytes(&parse_tagged::<32>(secret_text, SECRET_TAG, "secret key")?)
            .verifying_key(),
    )
}

/// Signs `data`; the result names the key so a wrong key is reported as such.
pub fn sign(secret_text: &str, data: &[u8]) -> Result<String> {
    let sk = SigningKey::from_bytes(&parse_tagged::<32>(secret_text, SECRET_TAG, "secret key")?);
    let sig = sk.sign(data);
    Ok(format!(
        "{SIG_TAG} key={} sig={}\n",
        key_id(&sk.verifying_key()),
        hex::encode(sig.to_bytes())
    ))
}

/// Checks a signature; on success returns the key id.
pub fn verify(public: &VerifyingKey, data: &[u8], sig_text: &str) -> Result<String> {
    let line = sig_text.trim();
    let rest = line
        .strip_prefix(SIG_TAG)
        .with_context(|| format!("signature file does not start with {SIG_TAG:?}"))?;
    let mut key = None;
    let mut sig = None;
    for part in rest.split_whitespace() {
        match part.split_once('=') {
            Some(("key", v)) => key = Some(v),
            Some(("sig", v)) => sig = Some(v),
            _ => bail!("signature file: unexpected field {part:?}"),
        }
    }
    let want = key_id(public);
    let signed_by = key.context("signature file names no key")?;
    if signed_by != want {
        bail!("bundle was signed by key {signed_by}, but the key given is {want}");
    }
    let bytes: [u8; 64] = hex::decode(sig.context("signature file holds no sig")?)
        .ok()
        .and_then(|b| b.try_into().ok())
        .context("signature is not 64 hex-encoded bytes")?;
    public
        .verify_strict(data, &Signature::from_bytes(&bytes))
        .map_err(|_| {
            anyhow::anyhow!(
                "signature by key {want} does not match bundle.json (it was changed after signing)"
            )
        })?;
    Ok(want)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_refuse() {
        let (sk, pk) = generate().unwrap();
        let (_, other) = generate().unwrap();
        let pk = parse_public(&pk).unwrap();
        assert_eq!(public_of_secret(&sk).unwrap(), pk);
        let s = sign(&sk, b"bundle").unwrap();
        assert_eq!(verify(&pk, b"bundle", &s).unwrap(), key_id(&pk));
        let e = verify(&pk, b"bundlE", &s).unwrap_err().to_string();
        assert!(e.contains("does not match"), "{e}");
        let e = verify(&parse_public(&other).unwrap(), b"bundle", &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("signed by key"), "{e}");
        assert!(parse_public("garbage").is_err());
    }
}
