//! What the image and cluster tests share: the builder binary, the cached
//! rootfs, the demo bundle, seeds and images built from them.

#![allow(clippy::unwrap_used, dead_code)] // tests: a panic is the failure report; each test binary uses a part

use kpaas_testkit::{DemoEnv, fixtures_dir, have_tools};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TOOLS: &[&str] = &[
    "docker-registry",
    "nginx",
    "skopeo",
    "qemu-system-x86_64",
    "qemu-img",
    "grub-mkstandalone",
    "grub-mkimage",
    "mkfs.vfat",
    "mcopy",
    "sfdisk",
    "xorriso",
    "mkfs.ext4",
    "e2fsck",
    "fsck.vfat",
    "openssl",
];

pub fn builder(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_kpaas-builder"))
        .args(args)
        .output()
        .unwrap()
}

pub fn ok(args: &[&str]) -> String {
    let o = builder(args);
    assert!(
        o.status.success(),
        "kpaas-builder {args:?}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

pub fn cache() -> PathBuf {
    fixtures_dir().join("cache")
}

pub fn ready(test: &str) -> bool {
    if !have_tools(test, TOOLS) {
        return false;
    }
    let have_rootfs = std::fs::read_dir(cache().join("rootfs"))
        .map(|d| {
            d.flatten()
                .any(|e| e.path().extension().is_some_and(|x| x == "tar"))
        })
        .unwrap_or(false);
    if !have_rootfs {
        kpaas_testkit::skip(&format!(
            "SKIPPED {test}: no debian-12 rootfs in {} (run `just setup`)",
            cache().display()
        ));
        return false;
    }
    true
}

pub fn profile() -> String {
    profile_named("debian-12")
}

/// The repository's profile `images/NAME.yaml`.
pub fn profile_named(name: &str) -> String {
    format!("{}/../images/{name}.yaml", env!("CARGO_MANIFEST_DIR"))
}

/// The signed demo bundle as a directory, and its public key.
pub fn bundle(env: &DemoEnv, t: &Path) -> (PathBuf, PathBuf) {
    kpaas_testkit::demo_bundle(env, t).unwrap()
}

/// The demo bundle, seeds for `cluster` and one image of `format`, built in `t`.
pub fn lab_image(t: &Path, cluster: &str, format: &str) -> (PathBuf, PathBuf) {
    lab_image_from(&profile(), t, cluster, format).0
}

/// [`lab_image`] from `profile`, and what `image` printed.
pub fn lab_image_from(
    profile: &str,
    t: &Path,
    cluster: &str,
    format: &str,
) -> ((PathBuf, PathBuf), String) {
    let env = DemoEnv::start().unwrap();
    let (b, key) = bundle(&env, t);
    let seeds = seeds_only(t, "lab", &b, cluster);
    let img = t.join(format!("node.{format}"));
    let out = image_from(profile, &b, &key, format, &img, &[]);
    ((img, seeds), out)
}

/// Seeds made with `--seed-only` from `cluster` (written to `t/NAME.yaml`)
/// and `bundle`, in `t/NAME-seeds`. The image tier stops at the seed
/// registry: a cluster forming in the background would only take the CPU
/// the other guests need.
pub fn seeds_only(t: &Path, name: &str, bundle: &Path, cluster: &str) -> PathBuf {
    let file = t.join(format!("{name}.yaml"));
    std::fs::write(&file, cluster).unwrap();
    let seeds = t.join(format!("{name}-seeds"));
    ok(&[
        "seeds",
        "--seed-only",
        "--bundle",
        &bundle.to_string_lossy(),
        "--cluster",
        &file.to_string_lossy(),
        "--out",
        &seeds.to_string_lossy(),
    ]);
    seeds
}

/// `kpaas-builder image` from the cached rootfs; returns what it printed.
pub fn image(bundle: &Path, key: &Path, format: &str, out: &Path, extra: &[&str]) -> String {
    image_from(&profile(), bundle, key, format, out, extra)
}

/// [`image`] from `profile`.
pub fn image_from(
    profile: &str,
    bundle: &Path,
    key: &Path,
    format: &str,
    out: &Path,
    extra: &[&str],
) -> String {
    let mut a = vec![
        "image".to_string(),
        "--profile".into(),
        profile.into(),
        "--bundle".into(),
        bundle.to_string_lossy().into(),
        "--bundle-key".into(),
        key.to_string_lossy().into(),
        "--format".into(),
        format.into(),
        "--out".into(),
        out.to_string_lossy().into(),
        "--cache-dir".into(),
        cache().to_string_lossy().into(),
        "--offline".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
}
