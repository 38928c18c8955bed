//! The build report: each stage's time and size, the image's apparent and
//! allocated size, its sha256 and whether this host builds reproducibly.
//! Printed on every build; `--report FILE` writes it as JSON for benches
//! and tests.

use super::MIB;
use anyhow::{Context, Result};
use std::path::Path;
use std::time::Instant;

/// One step of a build: its time, and the size of what it made.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Stage {
    pub name: String,
    pub seconds: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Times stages as they finish.
pub struct Stages {
    pub list: Vec<Stage>,
    t: Instant,
}

impl Stages {
    pub fn new() -> Stages {
        Stages {
            list: Vec::new(),
            t: Instant::now(),
        }
    }

    pub fn done(&mut self, name: &str, bytes: Option<u64>, detail: String) {
        self.list.push(Stage {
            name: name.into(),
            seconds: self.t.elapsed().as_secs_f64(),
            bytes,
            detail,
        });
        self.t = Instant::now();
    }
}

#[derive(serde::Serialize)]
pub struct Report<'a> {
    pub image: &'a Path,
    pub format: &'a str,
    pub profile: &'a str,
    pub seconds: f64,
    /// Apparent size; `allocated` is what a sparse copy takes.
    pub bytes: u64,
    pub allocated: u64,
    pub sha256: String,
    pub reproducible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_reproducible_because: Option<String>,
    pub stages: &'a [Stage],
    pub installed: &'a [String],
    /// UEFI's chain of trust: each file, where it came from, who signed it.
    pub boot_chain: &'a [super::signed::SignedFile],
}

/// The medium's own digest, for whoever copies or burns it; timed as a stage.
pub fn sha256(image: &Path, stages: &mut Vec<Stage>) -> Result<String> {
    let t = Instant::now();
    let f = std::fs::File::open(image).with_context(|| format!("opening {}", image.display()))?;
    let hex =
        airgap_bundle::digest::hash_reader(std::io::BufReader::with_capacity(MIB as usize, f))
            .with_context(|| format!("hashing {}", image.display()))?
            .0
            .hex()
            .to_string();
    stages.push(Stage {
        name: "sha256".into(),
        seconds: t.elapsed().as_secs_f64(),
        bytes: None,
        detail: String::new(),
    });
    Ok(hex)
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / MIB as f64)
}

impl Report<'_> {
    pub fn render(&self) -> String {
        let mut s = format!(
            "image {} ({}, profile {}): {:.1}s, {} ({} allocated), sha256 {}\n",
            self.image.display(),
            self.format,
            self.profile,
            self.seconds,
            mib(self.bytes),
            mib(self.allocated),
            self.sha256
        );
        for st in self.stages {
            s.push_str(&format!(
                "  {:<14} {:>6.1}s  {:>11}  {}\n",
                st.name,
                st.seconds,
                st.bytes.map(mib).unwrap_or_default(),
                st.detail
            ));
        }
        match &self.not_reproducible_because {
            None => s.push_str("reproducible: the same inputs give these bytes again\n"),
            Some(why) => s.push_str(&format!("NOT reproducible on this host: {why}\n")),
        }
        s.push_str(&format!(
            "installed from the bundle: {}\n",
            if self.installed.is_empty() {
                "-".into()
            } else {
                self.installed.join(" ")
            }
        ));
        s.push_str("UEFI Secure Boot chain (BIOS boots our own GRUB, unsigned):\n");
        for f in self.boot_chain {
            s.push_str(&format!(
                "  {} from {}: {}\n",
                f.file,
                f.from,
                if f.signed_by.is_empty() {
                    "UNSIGNED".into()
                } else {
                    f.signed_by.join("; ")
                }
            ));
        }
        s
    }
}
