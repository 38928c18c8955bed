//! qemu guests for boot tests: software emulation (TCG) always, because
//! /dev/kvm on these machines initialises and then hangs guests. Each VM's
//! serial console goes to a file the test reads; the VM dies with the value.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
pub const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";
/// OVMF built with Secure Boot (it needs SMM), and variables with
/// Microsoft's keys enrolled and Secure Boot on: what a server ships with.
pub const OVMF_CODE_SECBOOT: &str = "/usr/share/OVMF/OVMF_CODE_4M.secboot.fd";
pub const OVMF_VARS_MS: &str = "/usr/share/OVMF/OVMF_VARS_4M.ms.fd";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    Uefi,
    /// UEFI with Secure Boot on and Microsoft's keys enrolled.
    SecureBoot,
    Bios,
}

pub struct Vm {
    child: Child,
    pub serial: PathBuf,
    pub started: Instant,
    /// qemu's QMP socket, when the spec asked for hot-plug.
    qmp: Option<PathBuf>,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct VmSpec<'a> {
    pub name: &'a str,
    pub firmware: Firmware,
    /// Boot disk (raw or qcow2), attached with snapshot=on so it stays
    /// pristine unless `writable`.
    pub disk: &'a Path,
    /// Extra read-only disks (seed ISO or vfat).
    pub extra: Vec<&'a Path>,
    pub mac: &'a str,
    /// `-netdev` for the NIC: a socket network between guests, never the host's.
    pub netdev: String,
    pub memory_mib: u32,
    /// vCPUs. Each is a host thread under TCG: a lab's guests share this
    /// machine's two cores, so a worker gets one (K-PaaS's worker minimum)
    /// and leaves the control plane room.
    pub cpus: u32,
    /// An empty disk to install to; it boots first once something is on it.
    pub blank: Option<&'a Path>,
    /// Let the guest reboot (installs) instead of exiting on reboot.
    pub allow_reboot: bool,
    /// Attach the boot disk as a CD-ROM (virtio-scsi) instead of a disk.
    pub cdrom: bool,
    /// Write to the boot disk itself (an overlay the test made) instead of
    /// a throw-away snapshot.
    pub writable: bool,
    /// The host's way in: a second NIC on qemu's user network,
    /// `restrict=on` (nothing on it reaches outside), with forwarded ports.
    pub host_link: Option<HostLink>,
    /// A SCSI controller and a QMP socket: disks can be attached while the
    /// guest runs ([`Vm::attach`]), as an operator plugs a USB stick in.
    pub hotplug: bool,
    /// A server's devices instead of virtio: an Intel e1000e NIC, and the
    /// install target on NVMe.
    pub server: bool,
}

/// A second NIC on qemu's user network (slirp, 10.0.2.0/24) with
/// `restrict=on`: only the forwarded loopback ports come in, nothing goes
/// out. Its own NIC, not a hub port on the guests' network: slirp answers
/// every TCP SYN it sees that it cannot forward with a reset, so on a shared
/// segment it would refuse the guests' connections to each other.
pub struct HostLink {
    pub mac: String,
    /// (host loopback port, guest ip:port) pairs; the guest's address is
    /// on 10.0.2.0/24 (its seed gives the NIC one).
    pub forwards: Vec<(u16, String)>,
}

impl<'a> VmSpec<'a> {
    /// A node booting `disk` with `seed` attached, its NIC on a private socket
    /// network of its own (listening on a free loopback port), 1 GiB of RAM.
    pub fn node(
        name: &'a str,
        firmware: Firmware,
        disk: &'a Path,
        seed: &'a Path,
        mac: &'a str,
    ) -> VmSpec<'a> {
        VmSpec {
            name,
            firmware,
            disk,
            extra: vec![seed],
            mac,
            netdev: format!(
                "socket,id=n0,listen=127.0.0.1:{}",
                crate::servers::free_port()
            ),
            memory_mib: 1024,
            cpus: 2,
            blank: None,
            allow_reboot: false,
            cdrom: false,
            writable: false,
            host_link: None,
            hotplug: false,
            server: false,
        }
    }

    /// A server's hardware, as far as qemu has it: an e1000e NIC and an
    /// NVMe install target, which only a kernel with their drivers finds.
    pub fn server(mut self) -> Self {
        self.server = true;
        self
    }

    /// Disks may be attached while it runs ([`Vm::attach`]).
    pub fn hotplug(mut self) -> Self {
        self.hotplug = true;
        self
    }

    /// Give the guest a second NIC on the host's restricted user network.
    pub fn host_link(mut self, l: HostLink) -> Self {
        self.host_link = Some(l);
        self
    }

    pub fn memory(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }

    pub fn cpus(mut self, n: u32) -> Self {
        self.cpus = n;
        self
    }

    /// Join another guest's socket network instead of starting one.
    pub fn netdev(mut self, netdev: String) -> Self {
        self.netdev = netdev;
        self
    }

    /// Keep what the guest writes to its boot disk.
    pub fn writable(mut self) -> Self {
        self.writable = true;
        self
    }

    /// Boot from the medium as a CD (El Torito) rather than as a stick.
    pub fn cdrom(mut self) -> Self {
        self.cdrom = true;
        self
    }

    /// Attach an empty disk to install to, and let the guest reboot into it.
    pub fn install_to(mut self, blank: &'a Path) -> Self {
        self.blank = Some(blank);
        self.allow_reboot = true;
        self
    }
}

pub fn start(dir: &Path, spec: &VmSpec) -> Result<Vm> {
    let serial = dir.join(format!("{}.serial.log", spec.name));
    // A console left by an earlier run in the same directory would answer
    // wait_for before this guest has printed anything.
    std::fs::write(&serial, b"").context("clearing the serial log")?;
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-M",
        // The Secure Boot firmware keeps its variables in SMM, where the OS
        // cannot write them.
        if spec.firmware == Firmware::SecureBoot {
            "q35,smm=on"
        } else {
            "q35"
        },
        "-nodefaults",
        "-accel",
        "tcg",
        "-smp",
        &spec.cpus.to_string(),
        "-m",
        &spec.memory_mib.to_string(),
    ]);
    let uefi = match spec.firmware {
        Firmware::Uefi => Some((OVMF_CODE, OVMF_VARS)),
        Firmware::SecureBoot => {
            c.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
            Some((OVMF_CODE_SECBOOT, OVMF_VARS_MS))
        }
        Firmware::Bios => None,
    };
    if let Some((code, vars_template)) = uefi {
        let vars = dir.join(format!("{}.vars.fd", spec.name));
        std::fs::copy(vars_template, &vars).context("copying OVMF vars (apt-get install ovmf)")?;
        c.arg("-drive")
            .arg(format!("if=pflash,format=raw,readonly=on,file={code}"));
        c.arg("-drive")
            .arg(format!("if=pflash,format=raw,file={}", vars.display()));
    }
    // Explicit devices so the boot order is ours, not the firmware's guess:
    // an install target boots first once something is on it (the firmware
    // skips it while it is blank), then the medium.
    if spec.cdrom {
        c.args(["-device", "virtio-scsi-pci,id=scsi0", "-drive"])
            .arg(format!(
                "if=none,id=boot,media=cdrom,readonly=on,format=raw,file={}",
                spec.disk.display()
            ))
            .args(["-device", "scsi-cd,bus=scsi0.0,drive=boot,bootindex=1"]);
    } else {
        drive(
            &mut c,
            "boot",
            format!(
                "file={},format={}{}",
                spec.disk.display(),
                format_of(spec.disk),
                if spec.writable { "" } else { ",snapshot=on" }
            ),
            Some(1),
        );
    }
    for (i, e) in spec.extra.iter().enumerate() {
        drive(
            &mut c,
            &format!("extra{i}"),
            format!("file={},format=raw,readonly=on", e.display()),
            None,
        );
    }
    if let Some(blank) = spec.blank {
        let opts = format!("file={},format={}", blank.display(), format_of(blank));
        if spec.server {
            c.arg("-drive").arg(format!("if=none,id=target,{opts}"));
            c.args([
                "-device",
                "nvme,serial=kpaas-nvme0,drive=target,bootindex=0",
            ]);
        } else {
            drive(&mut c, "target", opts, Some(0));
        }
    }
    let nic = if spec.server {
        "e1000e"
    } else {
        "virtio-net-pci"
    };
    c.arg("-netdev").arg(&spec.netdev);
    c.arg("-device")
        .arg(format!("{nic},netdev=n0,mac={}", spec.mac));
    if let Some(l) = &spec.host_link {
        let mut user = String::from("user,id=u0,restrict=on,net=10.0.2.0/24");
        for (host, guest) in &l.forwards {
            user.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host}-{guest}"));
        }
        c.arg("-netdev").arg(user);
        c.arg("-device")
            .arg(format!("virtio-net-pci,netdev=u0,mac={}", l.mac));
    }
    let qmp = spec.hotplug.then(|| dir.join(format!("{}.qmp", spec.name)));
    if let Some(q) = &qmp {
        let _ = std::fs::remove_file(q);
        // SCSI takes a disk while the guest runs without PCI hot-plug
        // (q35's root bus has none); the guest's virtio-scsi rescans.
        c.args(["-device", "virtio-scsi-pci,id=hot"]);
        c.arg("-qmp")
            .arg(format!("unix:{},server=on,wait=off", q.display()));
    }
    c.args(["-display", "none", "-monitor", "none"]);
    if !spec.allow_reboot {
        c.arg("-no-reboot");
    }
    c.arg("-serial").arg(format!("file:{}", serial.display()));
    let log = std::fs::File::create(dir.join(format!("{}.qemu.log", spec.name)))?;
    let child = c
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting qemu-system-x86_64")?;
    Ok(Vm {
        child,
        serial,
        started: Instant::now(),
        qmp,
    })
}

impl Vm {
    /// Attaches `file` (raw, read-only) as a SCSI disk while the guest runs,
    /// through qemu's QMP (the spec must ask for [`VmSpec::hotplug`]).
    pub fn attach(&self, id: &str, file: &Path) -> Result<()> {
        use std::io::{BufRead, BufReader, Write};
        let q = self
            .qmp
            .as_ref()
            .context("this guest was started without hot-plug")?;
        let stream = std::os::unix::net::UnixStream::connect(q)
            .with_context(|| format!("connecting to {}", q.display()))?;
        stream.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        let mut r = BufReader::new(stream.try_clone()?);
        let mut w = stream;
        let mut greeting = String::new();
        r.read_line(&mut greeting)?;
        // Replies carry "return" or "error"; events may come between.
        let mut call = |cmd: serde_json::Value| -> Result<()> {
            w.write_all(format!("{cmd}\n").as_bytes())?;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line)? == 0 {
                    bail!("qmp: the socket closed");
                }
                let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                if v.get("return").is_some() {
                    return Ok(());
                }
                if let Some(e) = v.get("error") {
                    bail!("qmp {cmd}: {e}");
                }
            }
        };
        call(serde_json::json!({"execute": "qmp_capabilities"}))?;
        call(serde_json::json!({"execute": "blockdev-add", "arguments": {
            "driver": "raw", "node-name": id, "read-only": true,
            "file": {"driver": "file", "filename": file.to_string_lossy(), "read-only": true}}}))?;
        call(serde_json::json!({"execute": "device_add", "arguments": {
            "driver": "scsi-hd", "bus": "hot.0", "drive": id, "id": id}}))
    }

    pub fn console(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.serial).unwrap_or_default()).to_string()
    }

    /// Waits until the console shows `marker`; returns the seconds since power-on.
    pub fn wait_for(&mut self, marker: &str, timeout: Duration) -> Result<f64> {
        self.wait_unless(marker, &[], timeout)
    }

    /// Waits until the console shows `marker`, failing at once when it
    /// shows any of `failures` first (a step's FAILED line).
    pub fn wait_unless(
        &mut self,
        marker: &str,
        failures: &[&str],
        timeout: Duration,
    ) -> Result<f64> {
        loop {
            let console = self.console();
            if console.contains(marker) {
                let t = self.started.elapsed().as_secs_f64();
                // A failed run's output then shows where its time went.
                let name = self
                    .serial
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy();
                let name = name.trim_end_matches(".serial.log");
                eprintln!("[{} {name}, {t:.0}s after power-on] {marker}", clock());
                return Ok(t);
            }
            if let Some(f) = failures.iter().find(|f| console.contains(*f)) {
                bail!(
                    "{f:?} on the console before {marker:?}; console:\n{}",
                    tail(&console)
                );
            }
            if let Some(s) = self.child.try_wait()? {
                bail!(
                    "the VM exited ({s}) before {marker:?}; console:\n{}",
                    tail(&self.console())
                );
            }
            if self.started.elapsed() > timeout {
                bail!(
                    "no {marker:?} on the console within {}s; console:\n{}",
                    timeout.as_secs(),
                    tail(&self.console())
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn drive(c: &mut Command, id: &str, opts: String, bootindex: Option<u8>) {
    c.arg("-drive").arg(format!("if=none,id={id},{opts}"));
    let boot = bootindex
        .map(|i| format!(",bootindex={i}"))
        .unwrap_or_default();
    c.arg("-device")
        .arg(format!("virtio-blk-pci,drive={id}{boot}"));
}

fn format_of(disk: &Path) -> &'static str {
    if disk.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    }
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// The wall clock's time of day (UTC), to line a guest's progress up with
/// the others' and with the host's.
fn clock() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 86_400)
        .unwrap_or(0);
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}
