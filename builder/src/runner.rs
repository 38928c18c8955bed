//! Every external tool is called through here: discrete arguments (never a
//! shell), and an error that names the tool, its arguments, the exit status
//! and what it printed on stderr.

use anyhow::{Context, Result, bail};
use std::ffi::OsStr;
use std::process::{Command, Stdio};

pub struct Run<'a> {
    prog: &'a str,
    args: Vec<std::ffi::OsString>,
    env: Vec<(String, String)>,
    stdin: Option<Vec<u8>>,
}

pub fn run(prog: &str) -> Run<'_> {
    Run {
        prog,
        args: Vec::new(),
        env: Vec::new(),
        stdin: None,
    }
}

impl<'a> Run<'a> {
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

    fn describe(&self) -> String {
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| a.to_string_lossy().to_string())
            .collect();
        format!("{} {}", self.prog, args.join(" "))
    }

    /// Runs to completion; returns stdout. Fails with the whole story.
    pub fn output(self) -> Result<Vec<u8>> {
        self.finish().map(|o| o.stdout)
    }

    /// Stdout then stderr, for tools that print what we want on stderr
    /// (`mke2fs -V`).
    pub fn output_all(self) -> Result<Vec<u8>> {
        self.finish().map(|o| [o.stdout, o.stderr].concat())
    }

    fn finish(self) -> Result<std::process::Output> {
        use std::io::Write;
        let mut c = Command::new(self.prog);
        c.args(&self.args).stdin(if self.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        let what = self.describe();
        let mut child = c.spawn().with_context(|| {
            format!(
                "running `{what}` (is {} installed? `just setup` installs it)",
                self.prog
            )
        })?;
        if let (Some(b), Some(mut i)) = (&self.stdin, child.stdin.take()) {
            i.write_all(b)
                .with_context(|| format!("feeding `{what}`"))?;
        }
        let o = child.wait_with_output()?;
        if !o.status.success() {
            let err = String::from_utf8_lossy(&o.stderr);
            let tail: Vec<&str> = err
                .lines()
                .rev()
                .take(15)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            bail!("`{what}` failed with {}:\n{}", o.status, tail.join("\n"));
        }
        Ok(o)
    }

    pub fn ok(self) -> Result<()> {
        self.output().map(|_| ())
    }
}
