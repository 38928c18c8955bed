//! Every external program the builder and the agent call goes through here:
//! discrete arguments (never a shell), and an error that names the program,
//! its arguments, the exit status and the tail of what it printed on stderr.
//!
//! A [`Runner`] executes a [`Cmd`]. [`Host`] runs it on this machine;
//! [`Recording`] only writes it down (and answers from a script), so a unit
//! test can assert which programs a step would run, in which order, without
//! a disk, a kernel or root.

use anyhow::{Context, Result, bail};
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One program with its arguments, environment and standard input.
#[derive(Debug, Clone)]
pub struct Cmd {
    prog: String,
    args: Vec<OsString>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
}

/// Starts a command line: `run("sfdisk").arg("--dump").arg(dev).output()`.
pub fn run(prog: &str) -> Cmd {
    Cmd {
        prog: prog.into(),
        args: Vec::new(),
        env: Vec::new(),
        stdin: None,
    }
}

/// What a finished program printed.
#[derive(Debug, Clone, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Executes commands: on this host, or recorded for a test.
pub trait Runner: Send + Sync {
    /// Runs `cmd` to completion. Fails (naming the command, the status and
    /// stderr) when it cannot start or exits non-zero.
    fn exec(&self, cmd: &Cmd) -> Result<Output>;
}

impl Cmd {
    pub fn arg(mut self, a: impl AsRef<OsStr>) -> Self {
        self.args.push(a.as_ref().to_os_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(mut self, a: I) -> Self {
        self.args
            .extend(a.into_iter().map(|x| x.as_ref().to_os_string()));
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn stdin(mut self, b: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(b.into());
        self
    }

    pub fn program(&self) -> &str {
        &self.prog
    }

    /// The command line as one string, for messages and recordings.
    pub fn line(&self) -> String {
        let mut s = self.prog.clone();
        for a in &self.args {
            s.push(' ');
            s.push_str(&a.to_string_lossy());
        }
        s
    }

    /// Runs on this host; returns stdout.
    pub fn output(self) -> Result<Vec<u8>> {
        self.output_on(&Host)
    }

    /// Runs with `r`; returns stdout.
    pub fn output_on(self, r: &dyn Runner) -> Result<Vec<u8>> {
        r.exec(&self).map(|o| o.stdout)
    }

    /// Stdout then stderr, for tools that print what we want on stderr
    /// (`mke2fs -V`).
    pub fn output_all(self) -> Result<Vec<u8>> {
        Host.exec(&self).map(|o| [o.stdout, o.stderr].concat())
    }

    /// Runs on this host, output discarded.
    pub fn ok(self) -> Result<()> {
        self.ok_on(&Host)
    }

    pub fn ok_on(self, r: &dyn Runner) -> Result<()> {
        r.exec(&self).map(|_| ())
    }
}

/// This machine.
pub struct Host;

/// What the processes of one program cost this program so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Spent {
    /// Processes started.
    pub count: u64,
    /// Wall time from each start to its end, summed.
    pub wall: Duration,
    /// CPU time (user + system, its own children's included), summed; from
    /// `/proc/PID/stat` while the process is a zombie, so a process whose
    /// entry cannot be read counts as none.
    pub cpu: Duration,
}

/// Processes this program has started on the host, by program name: what a
/// step costs in fork/exec and CPU (a real load under emulation) shows in
/// its report.
static SPENT: std::sync::Mutex<std::collections::BTreeMap<String, Spent>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

thread_local! {
    /// The same, for the processes this thread ran (and those other threads
    /// ran for it, added by [`add_here`]): a span's report on one thread is
    /// not charged with what a concurrent thread ran meanwhile.
    static HERE: std::cell::RefCell<std::collections::BTreeMap<String, Spent>> =
        const { std::cell::RefCell::new(std::collections::BTreeMap::new()) };
}

/// What each program's processes have cost so far, by program (its file
/// name), sorted.
pub fn spent() -> std::collections::BTreeMap<String, Spent> {
    SPENT.lock().map(|m| m.clone()).unwrap_or_default()
}

/// As [`spent`], for this thread's processes only.
pub fn spent_here() -> std::collections::BTreeMap<String, Spent> {
    HERE.with(|h| h.borrow().clone())
}

/// Counts processes another thread ran on this one's behalf as this
/// thread's (a helper thread's, once it is joined).
pub fn add_here(more: &std::collections::BTreeMap<String, Spent>) {
    HERE.with(|h| merge(&mut h.borrow_mut(), more));
}

/// Adds `more`'s processes into `into`, program by program.
pub fn merge(
    into: &mut std::collections::BTreeMap<String, Spent>,
    more: &std::collections::BTreeMap<String, Spent>,
) {
    for (k, v) in more {
        into.entry(k.clone()).or_default().add(v);
    }
}

impl Spent {
    pub fn add(&mut self, o: &Spent) {
        self.count += o.count;
        self.wall += o.wall;
        self.cpu += o.cpu;
    }
}

/// The processes started so far, per program (its file name), sorted.
pub fn spawned() -> Vec<(String, u64)> {
    spent().into_iter().map(|(k, v)| (k, v.count)).collect()
}

/// The clock ticks a second of `/proc`'s times is (`AT_CLKTCK` in this
/// process's auxiliary vector; 100 on every Linux architecture we build for
/// when it cannot be read).
pub fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        const AT_CLKTCK: u64 = 17;
        std::fs::read("/proc/self/auxv")
            .ok()
            .and_then(|b| {
                b.chunks_exact(16).find_map(|e| {
                    let k = u64::from_ne_bytes(e[..8].try_into().ok()?);
                    let v = u64::from_ne_bytes(e[8..].try_into().ok()?);
                    (k == AT_CLKTCK && v > 0).then_some(v)
                })
            })
            .unwrap_or(100)
    })
}

/// The fields of `/proc/PID/stat` after the command name (which may hold
/// spaces and parentheses): state first, then ppid, ...
pub fn proc_stat_fields(text: &str) -> Option<Vec<&str>> {
    let (_, rest) = text.rsplit_once(')')?;
    Some(rest.split_whitespace().collect())
}

/// A process's CPU time once it has exited and before it is reaped (its
/// zombie keeps its times; its reaped children's are in cutime/cstime).
/// Waits for the exit: the caller has read its output to the end.
fn exited_cpu(pid: u32) -> Duration {
    let path = format!("/proc/{pid}/stat");
    let mut pause = Duration::from_millis(1);
    loop {
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Duration::ZERO;
        };
        let Some(f) = proc_stat_fields(&text) else {
            return Duration::ZERO;
        };
        if f.first() == Some(&"X") {
            return Duration::ZERO;
        }
        if f.first() == Some(&"Z") {
            // utime, stime, cutime, cstime: fields 14-17 of the line.
            let ticks: u64 = f
                .get(11..15)
                .map(|t| t.iter().filter_map(|x| x.parse::<u64>().ok()).sum())
                .unwrap_or(0);
            return Duration::from_secs_f64(ticks as f64 / clock_ticks() as f64);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

impl Runner for Host {
    fn exec(&self, cmd: &Cmd) -> Result<Output> {
        use std::io::Write;
        let mut c = Command::new(&cmd.prog);
        c.args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &cmd.env {
            c.env(k, v);
        }
        let what = cmd.line();
        let started = Instant::now();
        let mut child = c.spawn().with_context(|| {
            format!(
                "running `{what}` (is {} installed? `just setup` installs it)",
                cmd.prog
            )
        })?;
        if let (Some(b), Some(mut i)) = (&cmd.stdin, child.stdin.take()) {
            i.write_all(b)
                .with_context(|| format!("feeding `{what}`"))?;
        }
        // Its output read to the end (stderr on a thread of its own, so
        // neither pipe fills), then its CPU time read from its zombie,
        // then it is reaped.
        let (mut out, mut err) = (child.stdout.take(), child.stderr.take());
        let stderr = std::thread::spawn(move || {
            let mut b = Vec::new();
            if let Some(e) = err.as_mut() {
                let _ = e.read_to_end(&mut b);
            }
            b
        });
        let mut stdout = Vec::new();
        if let Some(o) = out.as_mut() {
            o.read_to_end(&mut stdout)
                .with_context(|| format!("reading what `{what}` wrote"))?;
        }
        let stderr = stderr.join().unwrap_or_default();
        let cpu = exited_cpu(child.id());
        let status = child
            .wait()
            .with_context(|| format!("waiting for `{what}`"))?;
        let name = std::path::Path::new(&cmd.prog)
            .file_name()
            .map_or(cmd.prog.clone(), |n| n.to_string_lossy().to_string());
        let this = Spent {
            count: 1,
            wall: started.elapsed(),
            cpu,
        };
        if let Ok(mut m) = SPENT.lock() {
            m.entry(name.clone()).or_default().add(&this);
        }
        add_here(&[(name, this)].into());
        let o = std::process::Output {
            status,
            stdout,
            stderr,
        };
        if !o.status.success() {
            // What it said: stderr, or stdout for tools that answer errors
            // there (docker credential helpers).
            let said = if o.stderr.iter().all(u8::is_ascii_whitespace) {
                &o.stdout
            } else {
                &o.stderr
            };
            bail!(
                "`{what}` failed with {}:\n{}",
                o.status,
                tail(&String::from_utf8_lossy(said), 15)
            );
        }
        Ok(Output {
            stdout: o.stdout,
            stderr: o.stderr,
        })
    }
}

/// The last `n` lines of `s`: where a tool says why it failed.
fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Records every command instead of running it. Commands whose line starts
/// with a scripted prefix get its answer (stdout, or a failure); all others
/// succeed with empty output.
#[derive(Default)]
pub struct Recording {
    lines: Mutex<Vec<String>>,
    script: Vec<(String, std::result::Result<Vec<u8>, String>)>,
}

impl Recording {
    pub fn new() -> Recording {
        Recording::default()
    }

    /// Answers commands starting with `prefix` with `stdout`.
    pub fn answer(mut self, prefix: &str, stdout: &str) -> Recording {
        self.script
            .push((prefix.into(), Ok(stdout.as_bytes().to_vec())));
        self
    }

    /// Fails commands starting with `prefix`, as the program would with `stderr`.
    pub fn fail(mut self, prefix: &str, stderr: &str) -> Recording {
        self.script.push((prefix.into(), Err(stderr.into())));
        self
    }

    /// Every command line run so far, in order.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Runner for Recording {
    fn exec(&self, cmd: &Cmd) -> Result<Output> {
        let line = cmd.line();
        if let Ok(mut l) = self.lines.lock() {
            l.push(line.clone());
        }
        match self
            .script
            .iter()
            .find(|(p, _)| line.starts_with(p.as_str()))
        {
            Some((_, Ok(out))) => Ok(Output {
                stdout: out.clone(),
                stderr: Vec::new(),
            }),
            Some((_, Err(err))) => bail!("`{line}` failed with exit status: 1:\n{err}"),
            None => Ok(Output::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    #[test]
    fn a_failure_names_the_command_its_status_and_stderr() {
        let e = run("sh")
            .args(["-c", "echo one >&2; echo two >&2; exit 3"])
            .output()
            .unwrap_err();
        let e = format!("{e:#}");
        assert!(e.contains("`sh -c echo one"), "{e}");
        assert!(
            e.contains("exit status: 3") && e.ends_with("one\ntwo"),
            "{e}"
        );
        let e = format!("{:#}", run("no-such-program-here").ok().unwrap_err());
        assert!(
            e.contains("no-such-program-here") && e.contains("installed"),
            "{e}"
        );
    }

    #[test]
    fn a_process_is_counted_with_its_cpu_time_and_its_childrens() {
        // A program name no other test runs: the counts are process-wide.
        let t = tempfile::tempdir().unwrap();
        let busy = t.path().join("kpaas-busy-test");
        std::os::unix::fs::symlink("/bin/sh", &busy).unwrap();
        let before = spent().get("kpaas-busy-test").copied().unwrap_or_default();
        // Its CPU is burnt by a child it waits for: that counts too.
        let out = run(&busy.to_string_lossy())
            .args([
                "-c",
                "sh -c 'i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done'; echo done; echo err >&2",
            ])
            .output()
            .unwrap();
        assert_eq!(out, b"done\n");
        let after = spent()["kpaas-busy-test"];
        assert_eq!(after.count, before.count + 1);
        // This thread ran it: its own count has it, another thread's not.
        assert_eq!(spent_here()["kpaas-busy-test"].count, 1);
        let elsewhere = std::thread::spawn(spent_here).join().unwrap();
        assert!(!elsewhere.contains_key("kpaas-busy-test"), "{elsewhere:?}");
        assert!(after.cpu > before.cpu, "{after:?}");
        assert!(after.wall >= after.cpu.mul_f64(0.5), "{after:?}");
        assert_eq!(
            proc_stat_fields("12 (a (b) c) S 1 2 3").unwrap(),
            ["S", "1", "2", "3"]
        );
    }

    #[test]
    fn stdin_and_stdout_pass_through() {
        let out = run("cat").stdin("hello").output().unwrap();
        assert_eq!(out, b"hello");
    }

    #[test]
    fn a_recording_keeps_the_order_and_answers_from_its_script() {
        let r = Recording::new()
            .answer("blkid", "ext4\n")
            .fail("mount", "no medium");
        assert_eq!(
            run("blkid").arg("/dev/vda").output_on(&r).unwrap(),
            b"ext4\n"
        );
        assert!(run("sync").ok_on(&r).is_ok());
        let e = format!("{:#}", run("mount").arg("/dev/sr0").ok_on(&r).unwrap_err());
        assert!(
            e.contains("mount /dev/sr0") && e.contains("no medium"),
            "{e}"
        );
        assert_eq!(r.lines(), ["blkid /dev/vda", "sync", "mount /dev/sr0"]);
    }
}
