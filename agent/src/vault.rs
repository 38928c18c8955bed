//! Vault's first start and every restart, over its HTTP API: initialised
//! with K-PaaS's share settings (1 share, threshold 1), the unseal key(s)
//! and root token kept on the master (`<state>/secrets/vault-init.json`,
//! 0600 in a 0700 directory, root only, never logged or in an event), then
//! unsealed; after a reboot the agent unseals it again with the kept key.
//! Upstream writes the key to a temp file and deletes it, so its Vault stays
//! sealed after the first restart.

use airgap_bundle::fsutil::{create_dir, now_unix, rfc3339, set_mode, write_atomic};
use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the key is kept, under the agent's state directory.
pub const KEY_FILE: &str = "secrets/vault-init.json";

pub fn key_path(state_dir: &Path) -> PathBuf {
    state_dir.join(KEY_FILE)
}

/// What `PUT /v1/sys/init` gave, kept as it came (plus where and when).
#[derive(Serialize, Deserialize)]
pub struct Kept {
    pub address: String,
    pub keys_base64: Vec<String>,
    pub root_token: String,
    pub threshold: usize,
    pub at: String,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default()
}

/// `GET /v1/sys/seal-status`: (initialized, sealed).
pub async fn status(address: &str) -> Result<(bool, bool)> {
    let r = client()
        .get(format!("{address}/v1/sys/seal-status"))
        .send()
        .await
        .with_context(|| format!("asking Vault at {address} whether it is sealed"))?;
    if !r.status().is_success() {
        bail!("Vault at {address}: seal-status answered {}", r.status());
    }
    let v: serde_json::Value = serde_json::from_slice(&r.bytes().await?)
        .with_context(|| format!("Vault at {address}: seal-status is not JSON"))?;
    Ok((
        v["initialized"].as_bool().unwrap_or(false),
        v["sealed"].as_bool().unwrap_or(true),
    ))
}

/// Writes the kept secrets: the directory 0700, the file 0600, atomically
/// (a half-written key file would lose Vault for good).
fn keep(path: &Path, k: &Kept) -> Result<()> {
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
        set_mode(dir, 0o700)?;
    }
    let bytes = serde_json::to_vec_pretty(k).context("encoding Vault's keys")?;
    // The directory is 0700 before the key is written: no other user can
    // reach the file while it is still being made 0600.
    write_atomic(path, &bytes)
        .with_context(|| format!("keeping Vault's keys in {}", path.display()))?;
    set_mode(path, 0o600)
}

pub fn read_kept(path: &Path) -> Result<Kept> {
    let b = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&b).with_context(|| format!("parsing {}", path.display()))
}

/// Initialises Vault (unless this node already did: the kept file says so),
/// then unseals it. Returns what to record (no secret in it).
pub async fn init_and_unseal(
    address: &str,
    shares: usize,
    threshold: usize,
    path: &Path,
) -> Result<String> {
    let (initialized, _) = status(address).await?;
    let made = if path.exists() {
        false
    } else if initialized {
        bail!(
            "Vault at {address} is initialised already, but its unseal key is not in {}: it was initialised by something else; unseal it by hand, or reinstall Vault with empty storage",
            path.display()
        );
    } else {
        let r = client()
            .put(format!("{address}/v1/sys/init"))
            .header("Content-Type", "application/json")
            .body(
                serde_json::json!({"secret_shares": shares, "secret_threshold": threshold})
                    .to_string(),
            )
            .send()
            .await
            .with_context(|| format!("initialising Vault at {address}"))?;
        if !r.status().is_success() {
            bail!(
                "initialising Vault at {address}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await?)?;
        let keys: Vec<String> = v["keys_base64"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        let token = v["root_token"].as_str().unwrap_or_default().to_string();
        if keys.len() < threshold || token.is_empty() {
            bail!("Vault at {address} answered init without {threshold} key(s) and a root token");
        }
        keep(
            path,
            &Kept {
                address: address.to_string(),
                keys_base64: keys,
                root_token: token,
                threshold,
                at: rfc3339(now_unix()),
            },
        )?;
        true
    };
    let unsealed = unseal(path).await?;
    Ok(format!(
        "{}{unsealed}; unseal key and root token kept in {} (0600)",
        if made {
            format!("initialised ({shares} share(s), threshold {threshold}); ")
        } else {
            String::new()
        },
        path.display()
    ))
}

/// Unseals the Vault the kept file names, with its keys; a Vault that is
/// unsealed already is left alone.
pub async fn unseal(path: &Path) -> Result<String> {
    let k = read_kept(path)?;
    let (_, sealed) = status(&k.address).await?;
    if !sealed {
        return Ok(format!("Vault at {} unsealed already", k.address));
    }
    for key in k.keys_base64.iter().take(k.threshold.max(1)) {
        let r = client()
            .put(format!("{}/v1/sys/unseal", k.address))
            .header("Content-Type", "application/json")
            .body(serde_json::json!({ "key": key }).to_string())
            .send()
            .await
            .with_context(|| format!("unsealing Vault at {}", k.address))?;
        if !r.status().is_success() {
            // Vault's answer names the problem (a wrong key); it never
            // echoes the key.
            bail!(
                "unsealing Vault at {}: {} {}",
                k.address,
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
    }
    let (_, sealed) = status(&k.address).await?;
    if sealed {
        bail!(
            "Vault at {} is still sealed after the kept key(s) from {}",
            k.address,
            path.display()
        );
    }
    Ok(format!("Vault at {} unsealed", k.address))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Child, Command, Stdio};

    /// Real Vault 1.11.3 (the kit's build) with file storage on loopback.
    struct Server(Child);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn start(bin: &Path, dir: &Path, port: u16) -> Server {
        let cfg = dir.join("vault.hcl");
        std::fs::write(
            &cfg,
            format!(
                "storage \"file\" {{ path = \"{}\" }}\nlistener \"tcp\" {{\n  address = \"127.0.0.1:{port}\"\n  tls_disable = 1\n}}\ndisable_mlock = true\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let child = Command::new(bin)
            .args(["server", "-config"])
            .arg(&cfg)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("vault.log")).unwrap())
            .spawn()
            .unwrap();
        Server(child)
    }

    async fn until_up(address: &str) {
        for _ in 0..150 {
            if status(address).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!("Vault at {address} did not answer");
    }

    #[tokio::test]
    async fn vault_is_initialised_once_its_key_kept_and_it_unseals_after_a_restart() {
        let Some(bin) = kpaas_testkit::kit::program("vault_unseal", "vault") else {
            return;
        };
        let t = tempfile::tempdir().unwrap();
        let port = kpaas_testkit::servers::free_port();
        let address = format!("http://127.0.0.1:{port}");
        let key = key_path(&t.path().join("state"));
        let server = start(&bin, t.path(), port);
        until_up(&address).await;
        assert_eq!(status(&address).await.unwrap(), (false, true));
        let said = init_and_unseal(&address, 1, 1, &key).await.unwrap();
        assert_eq!(status(&address).await.unwrap(), (true, false));
        // Kept root-only, and nothing secret in what is recorded.
        let kept = read_kept(&key).unwrap();
        assert_eq!(kept.keys_base64.len(), 1);
        assert!(
            !said.contains(&kept.keys_base64[0]) && !said.contains(&kept.root_token),
            "{said}"
        );
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::metadata(key.parent().unwrap())
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o700
        );
        // A restart (the pod after a reboot): sealed; the kept key unseals.
        drop(server);
        let _server = start(&bin, t.path(), port);
        until_up(&address).await;
        assert_eq!(status(&address).await.unwrap(), (true, true));
        assert!(unseal(&key).await.unwrap().ends_with("unsealed"));
        assert_eq!(status(&address).await.unwrap(), (true, false));
        // Run again (a resumed deploy): not initialised twice.
        let again = init_and_unseal(&address, 1, 1, &key).await.unwrap();
        assert!(
            again.contains("unsealed already") && !again.contains("initialised ("),
            "{again}"
        );
        // A Vault this node did not initialise: said, and nothing is tried.
        let other = t.path().join("elsewhere/vault-init.json");
        let e = init_and_unseal(&address, 1, 1, &other).await.unwrap_err();
        assert!(
            format!("{e:#}").contains("initialised by something else"),
            "{e:#}"
        );
    }
}
