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

/// How long [`call`] asks again while Vault refuses the connection.
const CONNECT_RETRY: Duration = Duration::from_secs(30);

fn client() -> reqwest::Client {
    client_for(Duration::from_secs(15))
}

/// How long init may take. Init is not idempotent: a client that gives up
/// while Vault is still generating and storing the key can leave a Vault
/// initialised with a key nobody kept, which the next boot can only report
/// ("initialised already"). In the platform lab a loaded TCG guest's Vault
/// did not answer init within 15 s; so init waits as long as a slow node
/// needs.
const INIT_TIMEOUT: Duration = Duration::from_secs(600);

fn client_for(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
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
        let r = client_for(INIT_TIMEOUT)
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

/// Where the portal's approle ids are kept (upstream's
/// `~/.env/cp-vault-vars.sh`, same variables), under the state directory.
pub const APPROLE_FILE: &str = "secrets/cp-vault-vars.sh";

/// K-PaaS's policy for the portal's approle: the kv-v2 mount it reads and
/// writes clusters' secrets in. Inferred from the role's use (the portal
/// keeps cluster credentials under `secret/`); upstream's exact text is not
/// in our sources.
pub const CP_POLICY: &str = "path \"secret/*\" {\n  capabilities = [\"create\", \"read\", \"update\", \"delete\", \"list\"]\n}\n";

/// What the portal's Vault holds about the cluster it runs on.
pub struct ClusterSecret<'a> {
    pub api_url: &'a str,
    /// The token of `kube-system/k8sadmin` (cluster-admin).
    pub token: &'a str,
    pub bound_cidrs: &'a [String],
}

/// One authenticated call with the kept root token; the answer's JSON
/// (null for 204). Vault's error text names the problem and never echoes
/// the token.
async fn call(
    k: &Kept,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value> {
    let started = std::time::Instant::now();
    let r = loop {
        let mut req = client()
            .request(method.clone(), format!("{}/v1/{path}", k.address))
            .header("X-Vault-Token", &k.root_token);
        if let Some(b) = &body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        match req.send().await {
            Ok(r) => break r,
            // No connection, so nothing reached Vault: safe to ask again,
            // for a while. Seen once: Vault running and unsealed, its
            // NodePort refused one call in the middle of the setup.
            Err(e) if e.is_connect() && started.elapsed() < CONNECT_RETRY => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::from(e))
                    .with_context(|| format!("Vault at {}: {method} /v1/{path}", k.address));
            }
        }
    };
    let status = r.status();
    let bytes = r.bytes().await?;
    if !status.is_success() {
        bail!(
            "Vault at {}: {method} /v1/{path}: {status} {}",
            k.address,
            String::from_utf8_lossy(&bytes).trim()
        );
    }
    if bytes.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    serde_json::from_slice(&bytes)
        .with_context(|| format!("Vault at {}: {method} /v1/{path}: not JSON", k.address))
}

/// K-PaaS's Vault steps after init (upstream's play 10 over curl), each
/// safe to run again: approle enabled, kv-v2 mounted at `secret/`, the
/// cluster's secret written, policy `cp_policy`, role `cp_role` bound to
/// `bound_cidrs`; then the role id and one secret id kept in `vars`
/// (0600), made once: a resumed deploy does not mint another. Returns what
/// to record (no secret in it).
pub async fn setup_cluster(kept: &Path, cs: &ClusterSecret<'_>, vars: &Path) -> Result<String> {
    use reqwest::Method;
    let k = read_kept(kept)?;
    let auths = call(&k, Method::GET, "sys/auth", None).await?;
    if auths["data"]["approle/"].is_null() && auths["approle/"].is_null() {
        call(
            &k,
            Method::POST,
            "sys/auth/approle",
            Some(serde_json::json!({"type": "approle"})),
        )
        .await?;
    }
    let mounts = call(&k, Method::GET, "sys/mounts", None).await?;
    let m = if mounts["data"]["secret/"].is_null() {
        &mounts["secret/"]
    } else {
        &mounts["data"]["secret/"]
    };
    if m.is_null() {
        call(
            &k,
            Method::POST,
            "sys/mounts/secret",
            Some(serde_json::json!({"type": "kv", "options": {"version": "2"}})),
        )
        .await?;
    } else if m["type"] != "kv" || m["options"]["version"] != "2" {
        bail!(
            "Vault at {}: secret/ is mounted already as {} (options {}), not kv version 2: the portal reads kv-v2 there; unmount it or reinstall Vault",
            k.address,
            m["type"],
            m["options"]
        );
    }
    let secret = serde_json::json!({"data": {
        "clusterApiUrl": cs.api_url,
        "clusterId": "host-cluster",
        "clusterToken": cs.token,
    }});
    // A kv-v2 mount made a moment ago may refuse writes while it upgrades
    // its backend ("Upgrading from non-versioned to versioned data").
    let mut tries = 0;
    loop {
        match call(
            &k,
            Method::POST,
            "secret/data/cluster/host-cluster",
            Some(secret.clone()),
        )
        .await
        {
            Ok(_) => break,
            Err(_) if tries < 30 => {
                tries += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
    call(
        &k,
        Method::PUT,
        "sys/policies/acl/cp_policy",
        Some(serde_json::json!({ "policy": CP_POLICY })),
    )
    .await?;
    write_role(&k, cs.bound_cidrs).await?;
    let made = if vars.exists() {
        false
    } else {
        let role = call(&k, Method::GET, "auth/approle/role/cp_role/role-id", None).await?;
        let sid = call(
            &k,
            Method::POST,
            "auth/approle/role/cp_role/secret-id",
            None,
        )
        .await?;
        let (Some(role_id), Some(secret_id)) = (
            role["data"]["role_id"].as_str(),
            sid["data"]["secret_id"].as_str(),
        ) else {
            bail!(
                "Vault at {}: cp_role answered without a role id or secret id",
                k.address
            );
        };
        if let Some(dir) = vars.parent() {
            create_dir(dir)?;
            set_mode(dir, 0o700)?;
        }
        write_atomic(
            vars,
            format!("export VAULT_ROLE_ID=\"{role_id}\"\nexport VAULT_SECRET_ID=\"{secret_id}\"\n")
                .as_bytes(),
        )
        .with_context(|| format!("keeping the portal's approle ids in {}", vars.display()))?;
        set_mode(vars, 0o600)?;
        true
    };
    Ok(format!(
        "Vault set up for the portal: approle, kv-v2 at secret/, secret/data/cluster/host-cluster for {}, policy cp_policy, role cp_role bound to {}; role and secret ids {} {} (0600)",
        cs.api_url,
        if cs.bound_cidrs.is_empty() {
            "any address".to_string()
        } else {
            cs.bound_cidrs.join(", ")
        },
        if made { "kept in" } else { "kept already in" },
        vars.display()
    ))
}

/// Role `cp_role`: the portal's policy, its secret ids and tokens bound to
/// `bound_cidrs`. One writer for the setup and for a node list's change.
async fn write_role(k: &Kept, bound_cidrs: &[String]) -> Result<()> {
    call(
        k,
        reqwest::Method::POST,
        "auth/approle/role/cp_role",
        Some(serde_json::json!({
            "token_policies": ["cp_policy"],
            "secret_id_bound_cidrs": bound_cidrs,
            "token_bound_cidrs": bound_cidrs,
        })),
    )
    .await
    .map(|_| ())
}

/// Binds role `cp_role` to `bound_cidrs` (the site's nodes changed) and
/// returns the addresses Vault holds for it now, read back.
pub async fn bind_role(kept: &Path, bound_cidrs: &[String]) -> Result<Vec<String>> {
    use reqwest::Method;
    let k = read_kept(kept)?;
    write_role(&k, bound_cidrs).await?;
    let role = call(&k, Method::GET, "auth/approle/role/cp_role", None).await?;
    // Vault answers a single address without its /32: said as given.
    Ok(role["data"]["token_bound_cidrs"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c.as_str())
                .map(|c| {
                    if c.contains('/') {
                        c.to_string()
                    } else {
                        format!("{c}/32")
                    }
                })
                .collect()
        })
        .unwrap_or_default())
}

/// The hook `vault-cluster-secret`: the cluster's secret reads back with
/// `api_url` and a token, and role `cp_role` exists. None when it holds;
/// else what is missing.
pub async fn cluster_secret_missing(kept: &Path, api_url: &str) -> Result<Option<String>> {
    use reqwest::Method;
    let k = read_kept(kept)?;
    let got = match call(&k, Method::GET, "secret/data/cluster/host-cluster", None).await {
        Ok(v) => v,
        Err(e) => return Ok(Some(format!("{e:#}"))),
    };
    let d = &got["data"]["data"];
    if d["clusterApiUrl"] != api_url || d["clusterToken"].as_str().unwrap_or("").is_empty() {
        return Ok(Some(format!(
            "secret/data/cluster/host-cluster holds clusterApiUrl {} (want {api_url}) and {} token",
            d["clusterApiUrl"],
            if d["clusterToken"].as_str().unwrap_or("").is_empty() {
                "no"
            } else {
                "a"
            }
        )));
    }
    if let Err(e) = call(&k, Method::GET, "auth/approle/role/cp_role", None).await {
        return Ok(Some(format!("{e:#}")));
    }
    Ok(None)
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

    /// A refused connection is asked again: Vault started only after the
    /// first call was refused still answers that call.
    #[tokio::test]
    async fn a_call_refused_before_vault_listens_is_made_again() {
        let Some(bin) = kpaas_testkit::kit::program("vault_connect_retry", "vault") else {
            return;
        };
        let t = tempfile::tempdir().unwrap();
        let port = kpaas_testkit::servers::free_port();
        let k = Kept {
            address: format!("http://127.0.0.1:{port}"),
            keys_base64: vec![],
            root_token: "unused".into(),
            threshold: 1,
            at: String::new(),
        };
        // Refused now: nothing listens on the port.
        assert!(status(&k.address).await.is_err());
        let dir = t.path().to_path_buf();
        let later = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            start(&bin, &dir, port)
        });
        let v = call(&k, reqwest::Method::GET, "sys/seal-status", None)
            .await
            .unwrap();
        assert_eq!(v["initialized"], false, "{v}");
        drop(later.join().unwrap());
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

    /// An approle login from this host with the kept ids: the client token,
    /// or Vault's refusal.
    async fn login(address: &str, vars: &Path) -> Result<String, String> {
        let text = std::fs::read_to_string(vars).unwrap();
        let id = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("export {name}=\"")))
                .and_then(|v| v.strip_suffix('"'))
                .unwrap()
                .to_string()
        };
        let r = client()
            .post(format!("{address}/v1/auth/approle/login"))
            .body(
                serde_json::json!({"role_id": id("VAULT_ROLE_ID"), "secret_id": id("VAULT_SECRET_ID")})
                    .to_string(),
            )
            .send()
            .await
            .unwrap();
        let status = r.status();
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        match v["auth"]["client_token"].as_str() {
            Some(t) if status.is_success() => Ok(t.to_string()),
            _ => Err(format!("{status} {v}")),
        }
    }

    #[tokio::test]
    async fn vault_is_set_up_for_the_portal_once_and_its_approle_reads_the_cluster_secret() {
        let Some(bin) = kpaas_testkit::kit::program("vault_setup", "vault") else {
            return;
        };
        let t = tempfile::tempdir().unwrap();
        let port = kpaas_testkit::servers::free_port();
        let address = format!("http://127.0.0.1:{port}");
        let state = t.path().join("state");
        let key = key_path(&state);
        let vars = state.join(APPROLE_FILE);
        let _server = start(&bin, t.path(), port);
        until_up(&address).await;
        init_and_unseal(&address, 1, 1, &key).await.unwrap();
        let api = "https://192.0.2.10:6443";
        assert!(
            cluster_secret_missing(&key, api).await.unwrap().is_some(),
            "nothing is written yet"
        );
        let here = vec!["127.0.0.1/32".to_string()];
        let cs = ClusterSecret {
            api_url: api,
            token: "k8sadmin-token-for-the-test",
            bound_cidrs: &here,
        };
        let said = setup_cluster(&key, &cs, &vars).await.unwrap();
        assert!(!said.contains("k8sadmin-token-for-the-test"), "{said}");
        assert_eq!(cluster_secret_missing(&key, api).await.unwrap(), None);
        let wrong = cluster_secret_missing(&key, "https://192.0.2.99:6443")
            .await
            .unwrap()
            .unwrap();
        assert!(wrong.contains("want https://192.0.2.99:6443"), "{wrong}");
        assert_eq!(
            std::fs::metadata(&vars).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // The portal's way in: the kept ids log in from a bound address and
        // the policy lets the token read the cluster's secret.
        let token = login(&address, &vars).await.unwrap();
        let r = client()
            .get(format!("{address}/v1/secret/data/cluster/host-cluster"))
            .header("X-Vault-Token", token)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        let v: serde_json::Value = serde_json::from_slice(&r.bytes().await.unwrap()).unwrap();
        assert_eq!(
            v["data"]["data"]["clusterToken"],
            "k8sadmin-token-for-the-test"
        );
        assert_eq!(v["data"]["data"]["clusterId"], "host-cluster");
        // Again (a resumed deploy): every step holds, no second secret id.
        let before = std::fs::read(&vars).unwrap();
        let again = setup_cluster(&key, &cs, &vars).await.unwrap();
        assert!(again.contains("kept already"), "{again}");
        assert_eq!(std::fs::read(&vars).unwrap(), before);
        // Bound elsewhere: this host's login is refused.
        let away = vec!["192.0.2.10/32".to_string()];
        let cs = ClusterSecret {
            bound_cidrs: &away,
            ..cs
        };
        setup_cluster(&key, &cs, &vars).await.unwrap();
        let refused = login(&address, &vars).await.unwrap_err();
        assert!(
            refused.contains("400") || refused.contains("403"),
            "{refused}"
        );
        // The site's nodes changed (node add): the role follows, as Vault
        // reads it back, and this host's address logs in again.
        let nodes = vec!["127.0.0.1/32".to_string(), "192.0.2.12/32".to_string()];
        let held = bind_role(&key, &nodes).await.unwrap();
        assert_eq!(held, nodes);
        login(&address, &vars).await.unwrap();
    }
}
