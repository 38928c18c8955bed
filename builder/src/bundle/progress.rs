//! Progress for humans (bars on a terminal, plain lines otherwise) and for
//! programs (`--json`: one JSON event per line on stdout).

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    Bars,
    Plain,
    Json,
    Quiet,
}

pub struct Progress {
    mode: Mode,
    multi: Option<MultiProgress>,
    overall: std::sync::OnceLock<ProgressBar>,
    pub fetched: AtomicU64,
    pub reused: AtomicU64,
    pub retries: AtomicU64,
    lock: Mutex<()>,
}

pub struct Transfer {
    bar: Option<ProgressBar>,
}

impl Transfer {
    pub fn advance(&self, n: u64, p: &Progress) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if let Some(o) = p.overall.get() {
            o.inc(n);
        }
    }

    pub fn reset(&self, p: &Progress, back: u64) {
        if let Some(b) = &self.bar {
            b.set_position(0);
        }
        if let Some(o) = p.overall.get() {
            o.set_position(o.position().saturating_sub(back));
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Progress {
    pub fn new(json: bool, quiet: bool) -> Progress {
        let mode = if json {
            Mode::Json
        } else if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars
        } else {
            Mode::Plain
        };
        let multi = (mode == Mode::Bars)
            .then(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()));
        Progress {
            mode,
            multi,
            overall: std::sync::OnceLock::new(),
            fetched: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            lock: Mutex::new(()),
        }
    }

    pub fn event(&self, kind: &str, mut fields: serde_json::Value) {
        match self.mode {
            Mode::Json => {
                fields["event"] = json!(kind);
                let _g = self.lock.lock();
                println!("{fields}");
            }
            Mode::Quiet => {}
            Mode::Plain | Mode::Bars => {
                if let Some(msg) = fields.get("message").and_then(|m| m.as_str()) {
                    self.line(msg);
                }
            }
        }
    }

    /// A human line, kept clear of the bars.
    pub fn line(&self, msg: &str) {
        match (&self.multi, self.mode) {
            (Some(m), _) => {
                let _ = m.println(msg);
            }
            (None, Mode::Plain) => eprintln!("{msg}"),
            _ => {}
        }
    }

    pub fn start_overall(&self, total_bytes: u64, blobs: u64) {
        if let Some(m) = &self.multi {
            let b = m.add(ProgressBar::new(total_bytes));
            b.set_style(
                ProgressStyle::with_template(
                    "{prefix:>8} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_prefix("fetch");
            let _ = self.overall.set(b);
        }
        self.event(
            "fetch_start",
            json!({"blobs": blobs, "bytes": total_bytes, "message": format!("fetching {blobs} blobs, {}", human(total_bytes))}),
        );
    }

    pub fn transfer(&self, what: &str, size: u64) -> Transfer {
        let bar = self.multi.as_ref().map(|m| {
            let b = m.add(ProgressBar::new(size));
            b.set_style(
                ProgressStyle::with_template("{prefix:>8} {msg:40!} {bytes:>10}/{total_bytes:10}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_prefix("blob");
            b.set_message(what.to_string());
            b
        });
        Transfer { bar }
    }

    pub fn finish(&self) {
        if let Some(o) = self.overall.get() {
            o.finish_and_clear();
        }
    }
}

pub fn human(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn count(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}
