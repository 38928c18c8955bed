//! The UEFI boot chain, from the distribution's signed binaries: shim
//! (signed by Microsoft's UEFI CA, so firmware with Microsoft's keys runs
//! it) -> GRUB (signed by the distribution's CA, which shim trusts) -> the
//! profile's kernel (signed by the same CA). Nothing in it is ours, so
//! nothing needs our key in the firmware: a server with Secure Boot on and
//! its factory keys boots the image as it is.
//!
//! The signed GRUB cannot carry our memdisk (that would change its bytes and
//! void the signature); its fixed prefix and built-in config decide where our
//! grub.cfg goes. Debian's `grubx64.efi` has the prefix `/EFI/debian` on the
//! device it was loaded from (the ESP), and reads `$prefix/grub.cfg`; the
//! CD build `gcdx64.efi` finds the medium holding `/.disk/info` and reads
//! `/boot/grub/grub.cfg` there. BIOS boot keeps our own GRUB (grub.rs).

use airgap_bundle::run::run;
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub const SHIM: &str = "/usr/lib/shim/shimx64.efi.signed";
/// MokManager: shim starts it when a key enrolment is pending; without it
/// such a machine stops at shim instead of at a prompt.
pub const MOK_MANAGER: &str = "/usr/lib/shim/mmx64.efi.signed";
pub const GRUB_DISK: &str = "/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";
pub const GRUB_CD: &str = "/usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed";

/// Where the disk's grub.cfg goes on the ESP (the signed GRUB's prefix).
pub const DISK_CFG: &str = "EFI/debian/grub.cfg";
/// Where the CD GRUB reads its config on the ISO, and the file it finds
/// the ISO by.
pub const ISO_CFG: &str = "boot/grub/grub.cfg";
pub const ISO_MARKER: &str = ".disk/info";

#[derive(Clone, Copy)]
pub enum Media {
    Disk,
    Cd,
}

/// The signed binaries on this host, checked present.
pub struct Chain {
    pub shim: PathBuf,
    pub mok: PathBuf,
    pub grub: PathBuf,
}

impl Chain {
    /// Every signed file `media` need that this host lacks, named in one
    /// error (an ISO needs both GRUBs: the CD's, and the disk's in the system
    /// it installs).
    pub fn check(media: &[Media]) -> Result<()> {
        let mut missing: Vec<&str> = Vec::new();
        for p in [SHIM, MOK_MANAGER]
            .into_iter()
            .chain(media.iter().map(|m| Self::grub_of(*m)))
        {
            if !Path::new(p).is_file() && !missing.contains(&p) {
                missing.push(p);
            }
        }
        if !missing.is_empty() {
            bail!(
                "the signed UEFI boot chain is not on this host ({} missing): apt-get install shim-signed grub-efi-amd64-signed",
                missing.join(", ")
            );
        }
        Ok(())
    }

    fn grub_of(media: Media) -> &'static str {
        match media {
            Media::Disk => GRUB_DISK,
            Media::Cd => GRUB_CD,
        }
    }

    pub fn host(media: Media) -> Result<Chain> {
        Self::check(&[media])?;
        Ok(Chain {
            shim: SHIM.into(),
            mok: MOK_MANAGER.into(),
            grub: Self::grub_of(media).into(),
        })
    }

    /// The ESP's files: (source, path on the ESP). Shim is the removable-
    /// media path and loads `grubx64.efi` from its own directory; there is no
    /// fallback (fbx64.efi) because it would write boot entries and reset.
    pub fn esp_files<'a>(&'a self, cfg: Option<&'a Path>) -> Vec<(&'a Path, &'static str)> {
        let mut f = vec![
            (self.shim.as_path(), "EFI/BOOT/BOOTX64.EFI"),
            (self.grub.as_path(), "EFI/BOOT/grubx64.efi"),
            (self.mok.as_path(), "EFI/BOOT/mmx64.efi"),
        ];
        if let Some(c) = cfg {
            f.push((c, DISK_CFG));
        }
        f
    }

    /// The chain's files as the image report lists them, checking that the
    /// kernel is signed by the CA the GRUB is: shim trusts that CA, so a
    /// kernel signed by another (or unsigned) would be refused with Secure
    /// Boot on. Needs sbverify (sbsigntool).
    pub fn report(&self, kernel: &Path) -> Result<Vec<SignedFile>> {
        let on_esp = |p: &Path, at: &str| -> Result<SignedFile> {
            SignedFile::read(p, format!("ESP:/{at}"), package_of(p))
        };
        let mut out = vec![
            on_esp(&self.shim, "EFI/BOOT/BOOTX64.EFI")?,
            on_esp(&self.grub, "EFI/BOOT/grubx64.efi")?,
            on_esp(&self.mok, "EFI/BOOT/mmx64.efi")?,
        ];
        let name = kernel
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let k = SignedFile::read(
            kernel,
            format!("/boot/{name}"),
            "the profile's rootfs".into(),
        )?;
        let grub_ca = out[1].issuers.clone();
        if !k.issuers.iter().any(|i| grub_ca.contains(i)) {
            bail!(
                "kernel {name}: signed by {}, not by {} as the signed GRUB is: with Secure Boot on, shim would refuse it (use the distribution's signed kernel package)",
                if k.issuers.is_empty() {
                    "nobody".to_string()
                } else {
                    k.issuers.join(", ")
                },
                grub_ca.join(", ")
            );
        }
        out.push(k);
        Ok(out)
    }
}

/// One file of the boot chain: where it sits, where it came from, and who
/// signed it (each signature's signing certificate and its issuer).
#[derive(Debug, Clone, serde::Serialize)]
pub struct SignedFile {
    pub file: String,
    pub from: String,
    pub sha256: String,
    pub signed_by: Vec<String>,
    #[serde(skip)]
    issuers: Vec<String>,
}

impl SignedFile {
    fn read(path: &Path, file: String, from: String) -> Result<SignedFile> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let sha256 = airgap_bundle::digest::Digest::of(&bytes).hex().to_string();
        // Its exit status is no verdict here (an unsigned image fails it):
        // the listing is, and an unsigned file lists no signature.
        let listing = std::process::Command::new("sbverify")
            .arg("--list")
            .arg(path)
            .output()
            .map_err(|e| {
                anyhow::anyhow!(
                    "listing the signatures of {} with sbverify ({e}): apt-get install sbsigntool",
                    path.display()
                )
            })?;
        let sigs = parse_sbverify(&String::from_utf8_lossy(&listing.stdout));
        Ok(SignedFile {
            file,
            from,
            sha256,
            signed_by: sigs
                .iter()
                .map(|s| format!("{} (issued by {})", s.signer, s.issuer))
                .collect(),
            issuers: sigs.into_iter().map(|s| s.issuer).collect(),
        })
    }
}

/// `package version` of a host file, from dpkg; the path when dpkg does not
/// know it.
fn package_of(p: &Path) -> String {
    let owner = run("dpkg-query")
        .arg("-S")
        .arg(p)
        .output()
        .ok()
        .and_then(|o| {
            let o = String::from_utf8_lossy(&o).into_owned();
            o.split(':').next().map(str::trim).map(String::from)
        });
    let Some(pkg) = owner.filter(|o| !o.is_empty()) else {
        return format!("host file {}", p.display());
    };
    match run("dpkg-query")
        .args(["-W", "-f=${Version}", &pkg])
        .output()
    {
        Ok(v) => format!("{pkg} {}", String::from_utf8_lossy(&v).trim()),
        Err(_) => pkg,
    }
}

#[derive(Debug, PartialEq)]
struct Signature {
    /// The signing certificate's CN.
    signer: String,
    /// Its issuer's CN.
    issuer: String,
}

fn cn(dn: &str) -> String {
    dn.rsplit("/CN=")
        .next()
        .filter(|_| dn.contains("/CN="))
        .unwrap_or(dn)
        .trim()
        .to_string()
}

/// sbverify --list: per `signature N`, its issuers, then its certificates
/// as `- subject:` / `issuer:` pairs, the signing certificate first.
fn parse_sbverify(text: &str) -> Vec<Signature> {
    let mut out = Vec::new();
    let mut first_in_sig = false;
    let mut subject: Option<String> = None;
    for l in text.lines() {
        let t = l.trim();
        if t.starts_with("signature ") {
            first_in_sig = true;
        } else if let Some(s) = t.strip_prefix("- subject:") {
            subject = Some(cn(s));
        } else if let Some(i) = t.strip_prefix("issuer:")
            && let (true, Some(s)) = (first_in_sig, subject.take())
        {
            out.push(Signature {
                signer: s,
                issuer: cn(i),
            });
            first_in_sig = false;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_signature_names_its_signing_certificate_and_issuer() {
        let shim = "signature 1\nimage signature issuers:\n - /C=US/O=Microsoft Corporation/CN=Microsoft Corporation UEFI CA 2011\nimage signature certificates:\n - subject: /C=US/O=Microsoft Corporation/CN=Microsoft Windows UEFI Driver Publisher\n   issuer:  /C=US/O=Microsoft Corporation/CN=Microsoft Corporation UEFI CA 2011\n - subject: /C=US/O=Microsoft Corporation/CN=Microsoft Corporation UEFI CA 2011\n   issuer:  /C=US/O=Microsoft Corporation/CN=Microsoft Corporation Third Party Marketplace Root\nsignature 2\nimage signature issuers:\n - /C=US/O=Microsoft Corporation/CN=Microsoft UEFI CA 2023\nimage signature certificates:\n - subject: /C=US/O=Microsoft Corporation/CN=Microsoft UEFI CA 2023 signer\n   issuer:  /C=US/O=Microsoft Corporation/CN=Microsoft UEFI CA 2023\n";
        assert_eq!(
            parse_sbverify(shim),
            [
                Signature {
                    signer: "Microsoft Windows UEFI Driver Publisher".into(),
                    issuer: "Microsoft Corporation UEFI CA 2011".into()
                },
                Signature {
                    signer: "Microsoft UEFI CA 2023 signer".into(),
                    issuer: "Microsoft UEFI CA 2023".into()
                }
            ]
        );
    }

    /// The host's signed files, or a recorded skip (`just setup` installs them).
    fn host_chain() -> Option<Chain> {
        match Chain::host(Media::Disk) {
            Ok(c)
                if std::process::Command::new("sbverify")
                    .arg("--help")
                    .output()
                    .is_ok() =>
            {
                Some(c)
            }
            _ => {
                kpaas_testkit::skip(
                    "SKIPPED signed chain: no shim-signed, grub-efi-amd64-signed or sbsigntool (run `just setup`)",
                );
                None
            }
        }
    }

    #[test]
    fn a_kernel_not_signed_by_grubs_ca_is_refused_and_a_signed_one_is_reported() {
        let Some(chain) = host_chain() else { return };
        let t = tempfile::tempdir().unwrap();
        // Debian's GRUB stands in for a kernel signed by the same CA (both
        // are PE images signed by it); the same bytes with the signature
        // taken off stand in for an unsigned kernel.
        let signed = t.path().join("vmlinuz-signed");
        std::fs::copy(GRUB_DISK, &signed).unwrap();
        let r = chain.report(&signed).unwrap();
        assert_eq!(r.len(), 4);
        assert!(
            r[0].signed_by
                .iter()
                .any(|s| s.contains("Microsoft Corporation UEFI CA 2011"))
        );
        assert!(
            r[3].signed_by
                .iter()
                .all(|s| s.contains("Debian Secure Boot CA"))
        );
        assert!(r[0].from.starts_with("shim-signed "), "{}", r[0].from);
        let bare = t.path().join("vmlinuz-bare");
        std::fs::copy(GRUB_DISK, &bare).unwrap();
        run("sbattach").arg("--remove").arg(&bare).ok().unwrap();
        let e = format!("{:#}", chain.report(&bare).unwrap_err());
        assert!(
            e.contains("vmlinuz-bare: signed by nobody, not by Debian Secure Boot CA")
                && e.contains("shim would refuse it"),
            "{e}"
        );
    }

    #[test]
    fn an_unsigned_file_has_no_signature() {
        assert!(parse_sbverify("No signature table present\n").is_empty());
    }
}
