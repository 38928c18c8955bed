//! Images and seeds, checked with standard tools and booted under qemu (TCG):
//! UEFI and BIOS, per-node and universal seeds. Needs `just setup` (qemu,
//! OVMF, GRUB, mtools, xorriso, and the cached debian-12 rootfs).

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

mod common;

use common::*;
use kpaas_testkit::DemoEnv;
use kpaas_testkit::vm::{self, Firmware, VmSpec};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const LAB: &str = "cluster_version: 1\nname: lab\nplatform: demo\nmaster: {hostname: kpaas-master, private_ip: 10.10.0.10, mac: \"52:54:00:12:34:10\"}\nworkers:\n  - {hostname: kpaas-worker1, private_ip: 10.10.0.11, mac: \"52:54:00:12:34:11\"}\nnetwork: {node_cidr: 10.10.0.0/24}\nstorage: {type: nfs, nfs: {server: 10.10.0.20}}\nminimums: {cpus: 1, memory_mib: 700, root_free_mib: 100}\n";

fn slice(img: &Path, part: &serde_json::Value, out: &Path) {
    let (start, size) = (
        part["start"].as_u64().unwrap() * 512,
        part["size"].as_u64().unwrap() * 512,
    );
    let mut f = std::fs::File::open(img).unwrap();
    use std::io::{Read, Seek};
    f.seek(std::io::SeekFrom::Start(start)).unwrap();
    let mut o = std::fs::File::create(out).unwrap();
    std::io::copy(&mut f.take(size), &mut o).unwrap();
}

/// qemu-img with these arguments must succeed.
fn qemu_img(args: &[&dyn AsRef<std::ffi::OsStr>]) {
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let o = Command::new("qemu-img").args(&args).output().unwrap();
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// The GPT of a raw disk as sfdisk reads it; sfdisk must not complain (a
/// backup table left mid-disk shows here as a size mismatch).
fn partitions(raw: &Path) -> Vec<serde_json::Value> {
    let o = Command::new("sfdisk")
        .arg("--json")
        .arg(raw)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success() && !err.contains("mismatch"), "{err}");
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    j["partitiontable"]["partitions"]
        .as_array()
        .unwrap()
        .clone()
}

/// A qcow2 disk's partitions, read from a raw copy at `raw`.
fn qcow2_partitions(disk: &Path, raw: &Path) -> Vec<serde_json::Value> {
    qemu_img(&[&"convert", &"-O", &"raw", &disk, &raw]);
    partitions(raw)
}

/// Root is the last partition and reaches the end of a 4 GiB disk.
fn assert_root_fills_4g(parts: &[serde_json::Value]) -> &serde_json::Value {
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bios", "esp", "kpaas-data", "root"]);
    let root = &parts[3];
    let end = root["start"].as_u64().unwrap() + root["size"].as_u64().unwrap();
    let sectors = (4u64 << 30) / 512;
    assert!(
        sectors - end < 2048,
        "root ends at sector {end} of {sectors}: not grown to the disk's end"
    );
    root
}

#[test]
fn images_check_clean_and_boot_uefi_and_bios_to_a_ready_seed_registry() {
    if !ready("image_boot") {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let (b, key) = bundle(&env, t.path());
    let seeds = seeds_only(t.path(), "lab", &b, LAB);
    // Workers get the join token and CA hash, never the CA key.
    let worker = std::fs::read_to_string(seeds.join("kpaas-worker1/user-data")).unwrap();
    assert!(worker.contains("/etc/kpaas/secrets/bootstrap-token") && !worker.contains("ca.key"));
    let master = std::fs::read_to_string(seeds.join("kpaas-master/user-data")).unwrap();
    assert!(
        master.contains("/etc/kpaas/secrets/ca.key") && master.contains("permissions: \"0600\"")
    );
    // cloud-init's own validator accepts every rendered user-data.
    for n in ["kpaas-master", "kpaas-worker1", "universal"] {
        let o = Command::new("cloud-init")
            .args(["schema", "--config-file"])
            .arg(seeds.join(n).join("user-data"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "{n}: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(seeds.join("kpaas-master.iso"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    let blk = Command::new("xorriso")
        .args([
            "-indev",
            &seeds.join("kpaas-master.iso").to_string_lossy(),
            "-pvd_info",
        ])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&blk.stdout).contains("CIDATA"),
        "{}",
        String::from_utf8_lossy(&blk.stdout)
    );

    let raw = t.path().join("node.raw");
    let report = t.path().join("raw.report.json");
    let out = image(
        &b,
        &key,
        "raw",
        &raw,
        &["--report", &report.to_string_lossy()],
    );
    assert!(
        out.contains("installed from the bundle: /usr/local/bin/kubeadm"),
        "{out}"
    );
    // The UEFI chain is the distribution's signed one, and the report says
    // who signed each link.
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let chain: Vec<(String, String)> = r["boot_chain"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["file"].as_str().unwrap().to_string(),
                f["signed_by"].to_string(),
            )
        })
        .collect();
    let signer = |file: &str| {
        chain
            .iter()
            .find(|(f, _)| f.starts_with(file))
            .unwrap_or_else(|| panic!("{file} not in {chain:?}"))
            .1
            .clone()
    };
    assert!(signer("ESP:/EFI/BOOT/BOOTX64.EFI").contains("Microsoft Corporation UEFI CA 2011"));
    assert!(signer("ESP:/EFI/BOOT/grubx64.efi").contains("Debian Secure Boot CA"));
    assert!(signer("/boot/vmlinuz-").contains("Debian Secure Boot CA"));
    // Standard tools agree with what we wrote.
    let parts = partitions(&raw);
    let names: Vec<&str> = parts.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bios", "esp", "kpaas-data", "root"]);
    assert_eq!(parts[1]["type"], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    slice(&raw, &parts[1], &t.path().join("esp.img"));
    let o = Command::new("fsck.vfat")
        .arg("-n")
        .arg(t.path().join("esp.img"))
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "fsck.vfat: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    for (i, what) in [(2, "data"), (3, "root")] {
        let p = t.path().join(format!("{what}.img"));
        slice(&raw, &parts[i], &p);
        let o = Command::new("e2fsck").arg("-fn").arg(&p).output().unwrap();
        assert!(
            o.status.success(),
            "e2fsck {what}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        std::fs::remove_file(&p).unwrap();
    }
    let q = t.path().join("node.qcow2");
    image(&b, &key, "qcow2", &q, &[]);
    qemu_img(&[&"check", &q]);

    // UEFI with Secure Boot on and Microsoft's keys (a server's factory
    // state), qcow2, per-node seed: the node is who its seed says. The image
    // sits under a 4 GiB overlay, as a VM's disk larger than the image.
    let disk = t.path().join("vm-disk.qcow2");
    qemu_img(&[
        &"create", &"-q", &"-f", &"qcow2", &"-F", &"qcow2", &"-b", &q, &disk, &"4G",
    ]);
    let master_iso = seeds.join("kpaas-master.iso");
    let mut m = vm::start(
        t.path(),
        &VmSpec::node(
            "uefi",
            Firmware::SecureBoot,
            &disk,
            &master_iso,
            "52:54:00:12:34:10",
        )
        .writable(),
    )
    .unwrap();
    let secs = m
        .wait_for("seed registry ready", Duration::from_secs(300))
        .unwrap();
    let c = m.console();
    assert!(
        c.contains("identity: kpaas-master (master, 10.10.0.10)"),
        "{c}"
    );
    assert!(c.contains("verify: fast: signature by key"), "{c}");
    assert!(
        c.contains("seed registry ready on 127.0.0.1:5050, 10.10.0.10:5050"),
        "{c}"
    );
    // The firmware checked shim, shim checked GRUB, GRUB the kernel, and the
    // agent read it from the firmware's variables.
    assert!(c.contains("checks passed; Secure Boot on"), "{c}");
    assert!(
        !c.contains("Failed to start"),
        "a unit failed at boot:\n{c}"
    );
    eprintln!("UEFI power-on to seed registry ready: {secs:.1}s");
    // Seeded with --seed-only: the node stops at the registry.
    m.wait_for("no cluster formed", Duration::from_secs(120))
        .unwrap();
    // cloud-init gave root the rest of the disk (growpart, resizefs) while
    // the agent served; its last stage says when it is done.
    m.wait_for("Cloud-init v.", Duration::from_secs(300))
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while !m.console().contains(" finished at ") {
        assert!(
            std::time::Instant::now() < deadline,
            "cloud-init never finished:\n{}",
            m.console()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(m);
    let grown = t.path().join("vm-disk.raw");
    assert_root_fills_4g(&qcow2_partitions(&disk, &grown));
    std::fs::remove_file(&grown).unwrap();

    // The same disk with its boot loader altered after signing (one byte of
    // shim's code): the Secure Boot firmware refuses it, so nothing of ours
    // ever runs.
    let bad = t.path().join("tampered.raw");
    let cp = Command::new("cp")
        .args(["--sparse=always"])
        .arg(&raw)
        .arg(&bad)
        .status()
        .unwrap();
    assert!(cp.success());
    let esp_at = format!(
        "{}@@{}",
        bad.display(),
        parts[1]["start"].as_u64().unwrap() * 512
    );
    let shim = t.path().join("shim.efi");
    let mtools = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let o = Command::new(args[0])
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };
    mtools(&[&"mcopy", &"-i", &esp_at, &"::/EFI/BOOT/BOOTX64.EFI", &shim]);
    let mut code = std::fs::read(&shim).unwrap();
    let mid = code.len() / 3;
    code[mid] ^= 0xff;
    std::fs::write(&shim, code).unwrap();
    mtools(&[
        &"mcopy",
        &"-o",
        &"-i",
        &esp_at,
        &shim,
        &"::/EFI/BOOT/BOOTX64.EFI",
    ]);
    let mut v = vm::start(
        t.path(),
        &VmSpec::node(
            "tampered",
            Firmware::SecureBoot,
            &bad,
            &master_iso,
            "52:54:00:12:34:10",
        ),
    )
    .unwrap();
    v.wait_for("Access Denied", Duration::from_secs(120))
        .unwrap();
    let c = v.console();
    assert!(
        c.contains("failed to load Boot0001")
            && !c.contains("Welcome to GRUB")
            && !c.contains("Linux version"),
        "{c}"
    );
    drop(v);
    std::fs::remove_file(&bad).unwrap();

    // BIOS, raw, universal seed: the node finds itself by its MAC. Its
    // cluster file requires Secure Boot, which a BIOS boot cannot give:
    // preflight stops it, naming the check.
    let strict = seeds_only(
        t.path(),
        "strict",
        &b,
        &format!("{LAB}secure_boot: required\n"),
    );
    let uni = strict.join("universal.iso");
    let mut w = vm::start(
        t.path(),
        &VmSpec::node("bios", Firmware::Bios, &raw, &uni, "52:54:00:12:34:11"),
    )
    .unwrap();
    w.wait_for("preflight failed", Duration::from_secs(300))
        .unwrap();
    let c = w.console();
    assert!(
        c.contains("identity: kpaas-worker1 (worker, 10.10.0.11)")
            && c.contains("secure boot (not available: booted by BIOS)")
            && !c.contains("seed registry ready"),
        "{c}"
    );
}

#[test]
fn bad_profiles_and_inputs_write_no_image() {
    let t = tempfile::tempdir().unwrap();
    let bad = t.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "profile_version: 1\nname: bad\ndistribution: fedora\nsuite: bookworm\nmirror: ftp://x\narchitecture: s390x\nkernel: ''\npackages: [systemd, 'Not A Package']\nruntime: {name: crio, from: packages}\npartitions: {esp_mib: 8}\noutputs: [vmdk]\n",
    )
    .unwrap();
    let out = t.path().join("x.raw");
    let o = builder(&[
        "image",
        "--profile",
        &bad.to_string_lossy(),
        "--bundle",
        "/nonexistent",
        "--bundle-key",
        "/nonexistent",
        "--out",
        &out.to_string_lossy(),
        "--offline",
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    for n in [
        "bad.yaml",
        "distribution: \"fedora\"",
        "mirror: \"ftp://x\"",
        "architecture: \"s390x\"",
        "kernel:",
        "packages: \"Not A Package\"",
        "packages: udev is required",
        "runtime: crio from packages needs the package cri-o",
        "partitions.esp_mib: 8",
        "outputs: \"vmdk\"",
    ] {
        assert!(e.contains(n), "missing {n:?} in:\n{e}");
    }
    assert!(!out.exists());
    // A good profile with a bad key: nothing looking like an image is left.
    let dir = t.path().join("out");
    std::fs::create_dir_all(&dir).unwrap();
    let o = builder(&[
        "image",
        "--profile",
        &profile(),
        "--bundle",
        &t.path().to_string_lossy(),
        "--bundle-key",
        &bad.to_string_lossy(),
        "--out",
        &dir.join("n.raw").to_string_lossy(),
        "--offline",
        "--cache-dir",
        &t.path().join("c").to_string_lossy(),
    ]);
    assert!(!o.status.success());
    // Both inputs are checked before anything is built, and both named: the
    // key (a profile is not a public key) as well as the bundle.
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains(&format!(
            "--bundle-key {}: not a bundle public key",
            bad.display()
        )) && e.contains("--bundle ")
            && e.contains("not a bundle directory"),
        "{e}"
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "a failed build left files behind"
    );
    // A cluster file with mistakes: every one named, no seed written.
    let cluster = t.path().join("cluster.yaml");
    std::fs::write(
        &cluster,
        "cluster_version: 1\nname: lab\nplatform: demo\nmaster: {hostname: Bad_Name, private_ip: 10.10.0.300}\nstorage: {type: nfs}\n",
    )
    .unwrap();
    let seeds = t.path().join("seeds");
    let o = builder(&[
        "seeds",
        "--cluster",
        &cluster.to_string_lossy(),
        "--out",
        &seeds.to_string_lossy(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{e}");
    for n in ["cluster.yaml", "Bad_Name", "10.10.0.300", "nfs"] {
        assert!(e.contains(n), "missing {n:?} in:\n{e}");
    }
    assert!(
        !seeds.exists(),
        "a failed seeds run wrote {}",
        seeds.display()
    );
    // The Ubuntu profiles validate here even though their archive is out of reach.
    for p in ["ubuntu-20.04", "ubuntu-22.04"] {
        let o = builder(&[
            "rootfs",
            "--profile",
            &format!("{}/../images/{p}.yaml", env!("CARGO_MANIFEST_DIR")),
            "--cache-dir",
            &t.path().join("c").to_string_lossy(),
        ]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success() && e.contains("validated and planned here"),
            "{p}: {e}"
        );
    }
}

#[test]
fn two_vms_from_one_image_and_one_universal_seed_find_themselves_and_each_other() {
    if !ready("two_vms") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let (raw, seeds) = lab_image(t.path(), LAB, "raw");
    let uni = seeds.join("universal.iso");
    // A private socket network between the two guests: nothing else is on it.
    let port = kpaas_testkit::servers::free_port();
    let mut m = vm::start(
        t.path(),
        &VmSpec::node(
            "master",
            Firmware::SecureBoot,
            &raw,
            &uni,
            "52:54:00:12:34:10",
        )
        .netdev(format!("socket,id=n0,listen=127.0.0.1:{port}")),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut w = vm::start(
        t.path(),
        &VmSpec::node("worker", Firmware::Uefi, &raw, &uni, "52:54:00:12:34:11")
            .netdev(format!("socket,id=n0,connect=127.0.0.1:{port}")),
    )
    .unwrap();
    m.wait_for("registries sent to the seed", Duration::from_secs(400))
        .unwrap();
    w.wait_for(
        "master seed registry reachable at 10.10.0.10:5050",
        Duration::from_secs(400),
    )
    .unwrap();
    let (mc, wc) = (m.console(), w.console());
    assert!(mc.contains("identity: kpaas-master (master, 10.10.0.10)"));
    assert!(wc.contains("identity: kpaas-worker1 (worker, 10.10.0.11)"));
    // One image, two firmwares: the raw disk boots with Secure Boot on and
    // off, and each agent says which (the cluster file leaves it optional).
    assert!(mc.contains("checks passed; Secure Boot on"), "{mc}");
    assert!(wc.contains("checks passed; Secure Boot off"), "{wc}");
}

#[test]
fn the_hybrid_iso_runs_live_from_a_stick_under_uefi_and_from_a_cd_under_bios() {
    if !ready("iso_live") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let ((iso, seeds), built) = lab_image_from(&profile(), t.path(), LAB, "iso");
    // The cloud profile's size, beside the metal one's (README).
    eprintln!("{}", built.lines().next().unwrap_or_default());
    let r = Command::new("xorriso")
        .args([
            "-indev",
            &iso.to_string_lossy(),
            "-report_el_torito",
            "plain",
        ])
        .output()
        .unwrap();
    let rep = String::from_utf8_lossy(&r.stdout).to_string() + &String::from_utf8_lossy(&r.stderr);
    assert!(
        rep.contains("BIOS  y") && rep.contains("UEFI  y") && rep.contains("GPT"),
        "{rep}"
    );
    // Written to a stick (a virtio disk here), booted by UEFI firmware: the
    // live system finds the bundle on its own medium.
    let seed = seeds.join("kpaas-master.iso");
    let mut v = vm::start(
        t.path(),
        // Live, the whole root is in RAM (the kernel's rootfs gets half of
        // it): with the node's Kubernetes binaries and containerd that is
        // ~1 GiB, and preflight wants 100 MiB free.
        // Secure Boot on: shim, the signed CD GRUB, the signed kernel.
        &VmSpec::node(
            "live",
            Firmware::SecureBoot,
            &iso,
            &seed,
            "52:54:00:12:34:10",
        )
        .memory(3072),
    )
    .unwrap();
    v.wait_for("registries sent to the seed", Duration::from_secs(400))
        .unwrap();
    let c = v.console();
    assert!(
        c.contains("live: bundle from /dev/vda")
            && c.contains("identity: kpaas-master (master")
            && c.contains("checks passed; Secure Boot on"),
        "{c}"
    );
    drop(v);
    // Burnt to a CD, booted by a legacy BIOS (El Torito), the worker's seed.
    let seed = seeds.join("kpaas-worker1.iso");
    let mut v = vm::start(
        t.path(),
        &VmSpec::node("cd", Firmware::Bios, &iso, &seed, "52:54:00:12:34:11")
            .memory(3072)
            .cdrom(),
    )
    .unwrap();
    v.wait_for("registries sent to the seed", Duration::from_secs(400))
        .unwrap();
    let c = v.console();
    assert!(
        c.contains("live: bundle from /dev/sr0")
            && c.contains("identity: kpaas-worker1 (worker, 10.10.0.11)")
            && c.contains("verify: fast: signature by key"),
        "{c}"
    );
}

#[test]
fn the_iso_installs_itself_to_the_empty_disk_and_reboots_into_it() {
    if !ready("iso_install") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    // The bare-metal profile's ISO, on a server's devices: an e1000e NIC
    // and an NVMe disk, which the cloud kernel has no drivers for.
    let ((iso, seeds), built) = lab_image_from(
        &profile_named("debian-12-metal"),
        t.path(),
        &format!("{LAB}install_disk: auto\n"),
        "iso",
    );
    let blank = t.path().join("blank.qcow2");
    qemu_img(&[&"create", &"-q", &"-f", &"qcow2", &blank, &"4G"]);
    let seed = seeds.join("kpaas-master.iso");
    let mut v = vm::start(
        t.path(),
        // The live system holds its root tree (the Kubernetes node binaries
        // and the generic kernel's modules) in RAM while it decompresses the
        // system image.
        &VmSpec::node(
            "install",
            Firmware::SecureBoot,
            &iso,
            &seed,
            "52:54:00:12:34:10",
        )
        .memory(4096)
        .server()
        .install_to(&blank),
    )
    .unwrap();
    v.wait_for("install: done; rebooting", Duration::from_secs(400))
        .unwrap();
    // The generic kernel (the report's boot chain names it), which has the
    // drivers: the NVMe disk was found and written, the e1000e NIC has the
    // node's address.
    assert!(
        built.contains("/boot/vmlinuz-") && !built.contains("cloud-amd64"),
        "{built}"
    );
    eprintln!("{}", built.lines().next().unwrap_or_default());
    let c = v.console();
    assert!(
        c.contains("writing the system to /dev/nvme0n1")
            && c.contains("rebooting into /dev/nvme0n1")
            && c.contains("| True |         10.10.0.10 "),
        "{c}"
    );
    // The second boot is from the disk: the agent's first boot there, with the
    // bundle on the disk's own KPAAS-DATA partition.
    let deadline = std::time::Instant::now() + Duration::from_secs(400);
    loop {
        let c = v.console();
        let after = &c[c.find("install: done; rebooting").unwrap()..];
        if after.contains("registries sent to the seed") {
            let before = &c[..c.find("install: done; rebooting").unwrap()];
            assert!(before.contains("checks passed; Secure Boot on"), "{before}");
            // The installer and the installed disk both booted with
            // Secure Boot on.
            assert!(
                after.contains("identity: kpaas-master (master, 10.10.0.10)")
                    && !after.contains("live: bundle from")
                    && after.contains("checks passed; Secure Boot on"),
                "{after}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the installed system never got ready:\n{after}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    drop(v);
    // Root (the last partition) was grown to the end of the 4 GiB disk and
    // the backup GPT moved there: sfdisk reads the table clean.
    let raw = t.path().join("installed.raw");
    let parts = qcow2_partitions(&blank, &raw);
    let root = assert_root_fills_4g(&parts);
    // ... and its file system with it (read from the superblock: the guest
    // was running when it was stopped, so a full check would see a live,
    // unreplayed journal).
    let p = t.path().join("root.img");
    slice(&raw, root, &p);
    let o = Command::new("dumpe2fs").arg("-h").arg(&p).output().unwrap();
    let h = String::from_utf8_lossy(&o.stdout);
    let blocks: u64 = h
        .lines()
        .find_map(|l| l.strip_prefix("Block count:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(blocks * 4096 > 3 << 30, "root fs is {blocks} blocks:\n{h}");
}

/// Same inputs, same bytes: two builds of each format, the second from a copy
/// of the bundle made later (new inodes and times), in another directory.
#[test]
fn the_same_inputs_give_the_same_image_bytes() {
    if !ready("reproducible") {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let (b, key) = bundle(&env, t.path());
    let copy = t.path().join("copy/bundle");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(
        Command::new("cp")
            .arg("-r")
            .arg(&b)
            .arg(&copy)
            .status()
            .unwrap()
            .success()
    );
    for fmt in ["raw", "qcow2", "iso"] {
        let sums: Vec<String> = [(&b, "one"), (&copy, "two")]
            .iter()
            .map(|(bundle, dir)| {
                let out = t.path().join(dir).join(format!("node.{fmt}"));
                std::fs::create_dir_all(out.parent().unwrap()).unwrap();
                let report = out.with_extension("json");
                let printed = image(
                    bundle,
                    &key,
                    fmt,
                    &out,
                    &["--report", &report.to_string_lossy()],
                );
                assert!(
                    printed.contains("reproducible: the same inputs"),
                    "{printed}"
                );
                let r: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
                // The report's digest is the file's.
                let o = Command::new("sha256sum").arg(&out).output().unwrap();
                let sum = String::from_utf8_lossy(&o.stdout)[..64].to_string();
                assert_eq!(r["sha256"].as_str().unwrap(), sum);
                let names: Vec<&str> = r["stages"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["name"].as_str().unwrap())
                    .collect();
                assert!(
                    names.contains(&"root fs") && names.contains(&"disk"),
                    "{names:?}"
                );
                sum
            })
            .collect();
        assert_eq!(
            sums[0], sums[1],
            "{fmt}: two builds from the same inputs differ"
        );
    }
}

/// A build that fails half-way (root file system too small for the tree)
/// names the tool and what it said, and leaves nothing behind: no image, no
/// partial file, no work directory.
#[test]
fn a_build_that_fails_midway_leaves_nothing_behind() {
    if !ready("midway") {
        return;
    }
    let env = DemoEnv::start().unwrap();
    let t = tempfile::tempdir().unwrap();
    let (b, key) = bundle(&env, t.path());
    let small = t.path().join("small.yaml");
    let text = std::fs::read_to_string(profile()).unwrap();
    assert!(text.contains("root_mib: 0"));
    std::fs::write(&small, text.replace("root_mib: 0", "root_mib: 64")).unwrap();
    let (out, work) = (t.path().join("out"), t.path().join("work"));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    for fmt in ["raw", "qcow2", "iso"] {
        let o = builder(&[
            "image",
            "--profile",
            &small.to_string_lossy(),
            "--bundle",
            &b.to_string_lossy(),
            "--bundle-key",
            &key.to_string_lossy(),
            "--format",
            fmt,
            "--out",
            &out.join(format!("node.{fmt}")).to_string_lossy(),
            "--cache-dir",
            &cache().to_string_lossy(),
            "--offline",
            "--work-dir",
            &work.to_string_lossy(),
        ]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{fmt}: a 64 MiB root took the tree:\n{e}"
        );
        assert!(e.contains("mkfs.ext4") && e.contains("64M"), "{fmt}: {e}");
        for d in [&out, &work] {
            let left: Vec<_> = std::fs::read_dir(d)
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .collect();
            assert!(
                left.is_empty(),
                "{fmt}: left behind in {}: {left:?}",
                d.display()
            );
        }
    }
}
