//! The test kit's Kubernetes, for `just setup` and for whoever updates the
//! demo catalog:
//!   kpaas-kit images   assemble the kit's images (cached in the fixtures dir)
//!   kpaas-kit pins     print the sha256 of every node file the demo serves,
//!                      and of the flannel manifest

use anyhow::{Result, bail};

fn main() -> Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("images") => {
            let t = std::time::Instant::now();
            let dir = kpaas_testkit::kit::ensure_images()?;
            eprintln!(
                "kit images in {} ({:.1} s)",
                dir.display(),
                t.elapsed().as_secs_f64()
            );
        }
        Some("pins") => {
            let t = tempfile::tempdir()?;
            for (name, sum) in kpaas_testkit::kit::serve_files(t.path())? {
                println!("{sum}  {name}");
            }
            println!(
                "{}  {}",
                kpaas_testkit::content::sha256_hex(kpaas_testkit::kit::FLANNEL_MANIFEST.as_bytes()),
                kpaas_testkit::kit::FLANNEL_MANIFEST_PATH
            );
        }
        _ => bail!("usage: kpaas-kit images|pins"),
    }
    Ok(())
}
