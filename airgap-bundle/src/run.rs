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
use std::process::{Command, Stdio};
use std::sync::Mutex;

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

/// Processes this program has started on the host, by program name: what a
/// step costs in fork/exec (a real load under emulation) shows in its report.
static SPAWNED: std::sync::Mutex<std::collections::BTreeMap<String, u64>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// The processes started so far, per program (its file name), sorted.
pub fn spawned() -> Vec<(String, u64)> {
    SPAWNED
        .lock()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect())
        .unwrap_or_default()
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
        if let Ok(mut m) = SPAWNED.lock() {
            let name = std::path::Path::new(&cmd.prog)
                .file_name()
                .map_or(cmd.prog.clone(), |n| n.to_string_lossy().to_string());
            *m.entry(name).or_default() += 1;
        }
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
        let o = child
            .wait_with_output()
            .with_context(|| format!("waiting for `{what}`"))?;
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
