//! The ISO's installer: live, with `install_disk` set, write the medium's
//! system image to the target disk, grow its root to the disk's end, fill
//! its data partition from the medium's bundle, and reboot into it. Once.

use super::live::ISO_MOUNT;
use super::{Ctx, Rerun, Step, StepId};
use crate::events::Sink;
use airgap_bundle::node::{self, ISO_DATA_DIR, ISO_SYSTEM_IMAGE};
use airgap_bundle::run::{Runner, run};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

pub const STEP: Step = Step {
    id: StepId::Install,
    rerun: Rerun::Once,
    applies,
    run: work,
};

fn applies(ctx: &Ctx) -> bool {
    ctx.live.is_some() && ctx.cfg.install_disk.is_some()
}

fn work(ctx: &mut Ctx, events: &mut Sink) -> Result<String> {
    let (Some(live), Some(want)) = (&ctx.live, &ctx.cfg.install_disk) else {
        bail!("install runs only live from the ISO with install_disk set");
    };
    let disk = target(&ctx.root, want, live)?;
    install(&ctx.root, &disk, ctx.runner.as_ref(), events)?;
    ctx.halt = true;
    Ok(format!("installed to /dev/{disk}"))
}

/// The disk to install to: the one named (it must be a whole disk here and
/// not the live medium; what is on it is overwritten, as asked), or the only
/// whole disk that is empty (its first MiB all zeros) and is not the live
/// medium.
pub fn target(root: &Path, want: &str, live: &str) -> Result<String> {
    let block = root.join("sys/block");
    if want != "auto" {
        let name = want.trim_start_matches("/dev/");
        if name == live {
            bail!("install_disk {want} is the live medium this system runs from");
        }
        if !block.join(name).exists() {
            bail!("install_disk {want} is not a whole disk on this machine (see /sys/block)");
        }
        return Ok(name.to_string());
    }
    let mut empty = Vec::new();
    for e in std::fs::read_dir(&block)
        .with_context(|| format!("listing {}", block.display()))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().to_string();
        let virtual_or_optical = ["loop", "ram", "sr", "zram"]
            .iter()
            .any(|p| name.starts_with(p));
        if name == live || virtual_or_optical {
            continue;
        }
        let mut head = vec![0u8; 1 << 20];
        // An unreadable disk is not a candidate: it cannot be shown empty.
        let ok = std::fs::File::open(root.join("dev").join(&name)).and_then(|mut f| {
            use std::io::Read;
            f.read_exact(&mut head)
        });
        if ok.is_ok() && head.iter().all(|b| *b == 0) {
            empty.push(name);
        }
    }
    empty.sort();
    match empty.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!("install_disk is auto, but no empty disk is attached"),
        many => bail!(
            "install_disk is auto, but several disks are empty ({}); name one in the cluster file",
            many.join(", ")
        ),
    }
}

/// `vda` 3 -> vda3; `nvme0n1` 3 -> nvme0n1p3.
fn partition(root: &Path, disk: &str, n: u32) -> PathBuf {
    let sep = if disk.chars().last().is_some_and(|c| c.is_ascii_digit()) {
        "p"
    } else {
        ""
    };
    root.join("dev").join(format!("{disk}{sep}{n}"))
}

fn install(root: &Path, disk: &str, r: &dyn Runner, events: &mut Sink) -> Result<()> {
    let dev = root.join("dev").join(disk);
    let medium = root.join(ISO_MOUNT);
    let img = medium.join(ISO_SYSTEM_IMAGE);
    events.progress(
        StepId::Install,
        &format!("writing the system to {}", dev.display()),
    )?;
    {
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .open(&dev)
            .with_context(|| format!("opening {}", dev.display()))?;
        let mut dec = zstd::stream::read::Decoder::new(
            std::fs::File::open(&img).with_context(|| format!("opening {}", img.display()))?,
        )
        .with_context(|| format!("reading {}", img.display()))?;
        std::io::copy(&mut dec, &mut out)
            .and_then(|_| out.sync_all())
            .with_context(|| format!("writing {} to {}", img.display(), dev.display()))?;
    }
    // The image is as small as its contents and the disk is usually larger:
    // the backup GPT goes to the disk's end and root (the last partition:
    // container images, etcd, kubelet) takes the rest.
    run("sfdisk")
        .args(["--relocate", "gpt-bak-std"])
        .arg(&dev)
        .ok_on(r)?;
    run("sfdisk")
        .args(["--no-reread", "-N", &node::ROOT_PARTITION.to_string()])
        .arg(&dev)
        .stdin(", +\n")
        .ok_on(r)?;
    // Tell the kernel about the new table. Either tool suffices; both
    // failing means the partitions below never appear, so say why.
    let partx = run("partx").arg("-u").arg(&dev).ok_on(r);
    let reread = run("blockdev").arg("--rereadpt").arg(&dev).ok_on(r);
    if let (Err(a), Err(b)) = (&partx, &reread) {
        bail!("the kernel did not take the new partition table: {a:#}; {b:#}");
    }
    let data = partition(root, disk, node::DATA_PARTITION);
    let sysroot = partition(root, disk, node::ROOT_PARTITION);
    // udev creates the device nodes moments after the kernel learns of them.
    for _ in 0..50 {
        if data.exists() && sysroot.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // resize2fs wants a freshly checked file system before it grows one.
    run("e2fsck").arg("-fy").arg(&sysroot).ok_on(r)?;
    run("resize2fs").arg(&sysroot).ok_on(r)?;
    events.progress(
        StepId::Install,
        &format!(
            "{} grown to the disk's end; filling {} with the bundle",
            sysroot.display(),
            data.display()
        ),
    )?;
    run("mkfs.ext4")
        .args(["-q", "-F", "-L", node::DATA_LABEL, "-d"])
        .arg(medium.join(ISO_DATA_DIR))
        .arg(&data)
        .ok_on(r)?;
    run("sync").ok_on(r)?;
    events.progress(
        StepId::Install,
        &format!("done; rebooting into {}", dev.display()),
    )?;
    run("systemctl").arg("reboot").ok_on(r)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use airgap_bundle::run::Recording;

    /// A root with these whole disks; `true` = first MiB all zeros.
    fn disks(list: &[(&str, bool)]) -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for (name, empty) in list {
            std::fs::create_dir_all(t.path().join("sys/block").join(name)).unwrap();
            std::fs::create_dir_all(t.path().join("dev")).unwrap();
            let mut head = vec![0u8; 1 << 20];
            if !empty {
                head[510] = 0x55;
            }
            std::fs::write(t.path().join("dev").join(name), head).unwrap();
        }
        t
    }

    #[test]
    fn the_install_target_is_the_only_empty_disk_or_the_named_one() {
        let t = disks(&[
            ("vda", false),
            ("vdb", true),
            ("sr0", true),
            ("loop0", true),
        ]);
        // The live medium, CDs and loop devices never count as empty disks.
        assert_eq!(target(t.path(), "auto", "vda").unwrap(), "vdb");
        let t = disks(&[("vda", false), ("vdb", true), ("vdc", true)]);
        let e = format!("{:#}", target(t.path(), "auto", "vda").unwrap_err());
        assert!(e.contains("vdb, vdc") && e.contains("name one"), "{e}");
        let t = disks(&[("vda", false), ("vdb", false)]);
        let e = format!("{:#}", target(t.path(), "auto", "vda").unwrap_err());
        assert!(e.contains("no empty disk"), "{e}");
        // Named: taken even when not empty, but never the medium or a ghost.
        assert_eq!(target(t.path(), "/dev/vdb", "vda").unwrap(), "vdb");
        let e = format!("{:#}", target(t.path(), "/dev/vda", "vda").unwrap_err());
        assert!(e.contains("live medium"), "{e}");
        let e = format!("{:#}", target(t.path(), "/dev/sdz", "vda").unwrap_err());
        assert!(e.contains("not a whole disk"), "{e}");
    }

    /// A root with a medium carrying a 3-byte "system image", a target disk
    /// and its partitions' device nodes.
    fn install_root() -> tempfile::TempDir {
        let t = disks(&[("vdb", true)]);
        let img = t.path().join(ISO_MOUNT).join(ISO_SYSTEM_IMAGE);
        std::fs::create_dir_all(img.parent().unwrap()).unwrap();
        std::fs::write(&img, zstd::encode_all(&b"sys"[..], 3).unwrap()).unwrap();
        for n in [3, 4] {
            std::fs::write(t.path().join(format!("dev/vdb{n}")), b"").unwrap();
        }
        t
    }

    #[test]
    fn the_installer_writes_grows_fills_and_reboots_in_that_order() {
        let t = install_root();
        let r = Recording::new();
        let mut ev = Sink::open(&t.path().join("state")).unwrap().quiet();
        install(t.path(), "vdb", &r, &mut ev).unwrap();
        let d = t.path().join("dev").display().to_string();
        let m = t.path().join(ISO_MOUNT).display().to_string();
        assert_eq!(
            r.lines(),
            [
                format!("sfdisk --relocate gpt-bak-std {d}/vdb"),
                format!("sfdisk --no-reread -N 4 {d}/vdb"),
                format!("partx -u {d}/vdb"),
                format!("blockdev --rereadpt {d}/vdb"),
                format!("e2fsck -fy {d}/vdb4"),
                format!("resize2fs {d}/vdb4"),
                format!("mkfs.ext4 -q -F -L KPAAS-DATA -d {m}/data {d}/vdb3"),
                "sync".into(),
                "systemctl reboot".into(),
            ]
        );
        // The system image's bytes went to the disk's start.
        assert_eq!(
            &std::fs::read(t.path().join("dev/vdb")).unwrap()[..3],
            b"sys"
        );
    }

    #[test]
    fn the_installer_stops_at_the_first_failing_tool() {
        let t = install_root();
        let r = Recording::new().fail("e2fsck", "bad superblock");
        let mut ev = Sink::open(&t.path().join("state")).unwrap().quiet();
        let e = format!("{:#}", install(t.path(), "vdb", &r, &mut ev).unwrap_err());
        assert!(
            e.contains("e2fsck -fy") && e.contains("bad superblock"),
            "{e}"
        );
        assert!(
            !r.lines()
                .iter()
                .any(|l| l.starts_with("mkfs") || l.contains("reboot"))
        );
        // One of partx and blockdev is enough; both failing is an error.
        let r = Recording::new()
            .fail("partx", "no")
            .fail("blockdev", "busy");
        let e = format!("{:#}", install(t.path(), "vdb", &r, &mut ev).unwrap_err());
        assert!(e.contains("partition table") && e.contains("busy"), "{e}");
    }
}
