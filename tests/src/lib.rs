//! Test fixtures for kpaas-appliance: deterministic OCI images, Helm charts
//! and files built in-process, and the real peers (Debian's `docker-registry`,
//! `nginx-light`, `skopeo`) started on loopback. Nothing here reaches the
//! internet; the demo platform's content comes from here.

pub mod content;
pub mod control_plane;
pub mod http;
pub mod kit;
pub mod lab;
pub mod limit;
pub mod servers;
pub mod vm;

use std::path::{Path, PathBuf};

/// When set (CI does), a missing peer tool fails the test instead of skipping it.
pub const REQUIRE_ENV: &str = "KPAAS_REQUIRE_ALL_TIERS";

/// True when every tool is on PATH. Otherwise prints why the test is skipped,
/// or panics when [`REQUIRE_ENV`] is set.
pub fn have_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| which(t).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip(&format!(
        "SKIPPED {test}: missing {} (run `just setup`)",
        missing.join(", ")
    ));
    false
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Where `just setup` puts content fetched once (the arm64 busybox).
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("KPAAS_FIXTURES_DIR")
        .map_or_else(|| PathBuf::from("/var/cache/kpaas-fixtures"), PathBuf::from)
}

/// The demo platform's servers, running and filled.
pub struct DemoEnv {
    pub demo: content::Demo,
    pub registry: servers::Server,
    pub files: servers::Server,
    pub work: tempfile::TempDir,
}

/// The catalog's made-up hosts; `--mirror` sends them to the loopback servers.
pub const DEMO_REGISTRY: &str = "registry.demo.kpaas.test";
pub const DEMO_FILES: &str = "http://files.demo.kpaas.test";
/// The kit's images keep their upstream registry's name (Kubernetes' own,
/// and Docker Hub for flannel's); the demo registry holds them under it.
pub const KIT_REGISTRIES: &[&str] = &["registry.k8s.io", "docker.io"];

impl DemoEnv {
    pub fn start() -> anyhow::Result<DemoEnv> {
        Self::start_with(&servers::RegistryOpts::default(), None)
    }

    pub fn start_with(
        opts: &servers::RegistryOpts,
        creds: Option<&str>,
    ) -> anyhow::Result<DemoEnv> {
        let work = tempfile::tempdir()?;
        let demo = content::build_demo(work.path(), &fixtures_dir().join("arm64/busybox"))?;
        let registry = servers::registry(opts)?;
        let files = servers::nginx(&demo.www)?;
        if opts.tls.is_some() {
            anyhow::bail!(
                "fill a TLS registry through a plain one; start_with takes plain registries"
            );
        }
        for p in &demo.pushes {
            servers::push_as(&p.layout, &p.r, &registry.addr, &p.dest, creds, p.format)?;
        }
        Ok(DemoEnv {
            demo,
            registry,
            files,
            work,
        })
    }

    /// Builder arguments that point the demo catalog at these servers.
    pub fn mirror_args(&self) -> Vec<String> {
        self.mirror_args_to(&self.registry.addr, &self.files.addr)
    }

    pub fn mirror_args_to(&self, registry: &str, files: &str) -> Vec<String> {
        let mut a = vec!["--mirror".into(), format!("{DEMO_REGISTRY}={registry}")];
        for r in KIT_REGISTRIES {
            a.extend(["--mirror".into(), format!("{r}={registry}/{r}")]);
        }
        a.extend([
            "--insecure-registry".into(),
            registry.split('/').next().unwrap_or(registry).into(),
            "--mirror".into(),
            format!("{DEMO_FILES}=http://{files}"),
        ]);
        a
    }
}

/// The Python venv `just setup` makes with real Helm (helm-python-sdk, Helm
/// SDK v4) and the SPDX validator (spdx-tools); None (or a panic under
/// [`REQUIRE_ENV`]) when it is missing.
pub fn venv_bin(test: &str, tool: &str) -> Option<PathBuf> {
    let p = fixtures_dir().join("venv/bin").join(tool);
    if p.is_file() {
        return Some(p);
    }
    skip(&format!(
        "SKIPPED part of {test}: {} is missing (run `just setup`)",
        p.display()
    ));
    None
}

/// Where [`skip`] also writes its message, one line each, so that `just
/// test` can list every skip at its end (cargo hides a passing test's
/// output, and a skipped test passes).
pub const SKIP_LOG_ENV: &str = "KPAAS_SKIP_LOG";

/// Says why a test (or part of one) is skipped; panics instead under
/// [`REQUIRE_ENV`], where every tier must run.
pub fn skip(msg: &str) {
    if std::env::var_os(REQUIRE_ENV).is_some() {
        panic!("{msg}, and {REQUIRE_ENV} is set");
    }
    eprintln!("{msg}");
    if let Some(log) = std::env::var_os(SKIP_LOG_ENV)
        && let Err(e) = append_line(Path::new(&log), msg)
    {
        eprintln!(
            "(could not record the skip in {}: {e})",
            log.to_string_lossy()
        );
    }
}

/// One write in append mode: lines from parallel tests do not interleave.
fn append_line(log: &Path, msg: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?
        .write_all(format!("{}\n", msg.replace('\n', " ")).as_bytes())
}

/// A binary of another workspace package, built next to the running test
/// (`cargo test --workspace` builds every package's binaries first).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // A tool binary sits beside it (target/<profile>/<tool>); a test one
    // level down (target/<profile>/deps/<test>).
    let beside = exe.with_file_name(name);
    let p = if beside.is_file() {
        beside
    } else {
        exe.parent()
            .and_then(|d| d.parent())
            .map(|d| d.join(name))
            .unwrap_or_default()
    };
    assert!(
        p.is_file(),
        "{} is not built: run `cargo build --workspace` (or `just test`)",
        p.display()
    );
    p
}

/// Builds the demo bundle (all platforms, signed) with kpaas-builder into
/// `dir/bundle`; returns (bundle dir, public key path).
pub fn demo_bundle(env: &DemoEnv, dir: &std::path::Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let b = workspace_bin("kpaas-builder");
    let run = |args: &[String]| -> anyhow::Result<()> {
        let o = std::process::Command::new(&b).args(args).output()?;
        if !o.status.success() {
            anyhow::bail!(
                "kpaas-builder {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        }
        Ok(())
    };
    let d = |p: &str| dir.join(p).to_string_lossy().to_string();
    run(&["keygen".into(), "--out".into(), d("key")])?;
    let mut a: Vec<String> = ["bundle", "-q", "--platform", "demo", "--arch", "all"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend([
        "--lock".into(),
        d("demo.lock"),
        "--cache-dir".into(),
        d("cache"),
        "--out".into(),
        d("bundle"),
        "--sign-key".into(),
        d("key.key"),
    ]);
    a.extend(env.mirror_args());
    run(&a)?;
    Ok((dir.join("bundle"), dir.join("key.pub")))
}

/// Compares `got` with the snapshot `<dir>/<name>`; with UPDATE_SNAPSHOTS=1
/// it rewrites the snapshot instead (then review the diff).
pub fn snapshot(dir: &std::path::Path, name: &str, got: &str) {
    let path = dir.join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::create_dir_all(dir).expect("creating the snapshot directory");
        std::fs::write(&path, got).expect("writing the snapshot");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing: run with UPDATE_SNAPSHOTS=1 and review it",
            path.display()
        )
    });
    assert!(
        want == got,
        "{name} changed; if intended, rerun with UPDATE_SNAPSHOTS=1 and review the diff.\n--- got ---\n{got}"
    );
}

/// The value after `--flag` on this process's command line (the bench and
/// demo binaries take a few paths and nothing else).
pub fn flag(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    #[test]
    fn skip_lines_from_many_threads_stay_whole() {
        let t = tempfile::tempdir().unwrap();
        let log = t.path().join("skipped.log");
        std::thread::scope(|s| {
            for i in 0..8 {
                let log = &log;
                s.spawn(move || append_line(log, &format!("SKIPPED t{i}: missing\nqemu")).unwrap());
            }
        });
        let mut lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        lines.sort();
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[3], "SKIPPED t3: missing qemu");
    }
}
