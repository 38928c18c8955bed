//! How long the cluster's join credential (the kubeadm bootstrap token the
//! seeds carry) stays valid, and who keeps it so. The cluster file states
//! it, `kpaas-builder plan` prints it, the seeds hand it to the master's
//! agent, which keeps the credential valid while a listed node has not
//! joined and removes it once every one has.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A span of time as people write it in the cluster file: `2h`, `90m`,
/// `1h30m`, `45s`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Span(pub u64);

impl Span {
    pub fn secs(self) -> u64 {
        self.0
    }
    pub fn duration(self) -> Duration {
        Duration::from_secs(self.0)
    }
}

impl TryFrom<String> for Span {
    type Error = String;
    fn try_from(s: String) -> Result<Span, String> {
        let bad = || format!("{s:?} is not a span of time such as 2h, 90m, 1h30m, 45s or 7d");
        let (mut total, mut num, mut any) = (0u64, String::new(), false);
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let unit = match c {
                'd' => 86_400,
                'h' => 3_600,
                'm' => 60,
                's' => 1,
                _ => return Err(bad()),
            };
            let n: u64 = num.parse().map_err(|_| bad())?;
            total = n
                .checked_mul(unit)
                .and_then(|v| total.checked_add(v))
                .ok_or_else(bad)?;
            num.clear();
            any = true;
        }
        if !any || !num.is_empty() {
            return Err(bad());
        }
        Ok(Span(total))
    }
}

impl From<Span> for String {
    fn from(s: Span) -> String {
        s.to_string()
    }
}

impl fmt::Display for Span {
    /// The shortest form: `2h`, `1h30m`, `45s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut left = self.0;
        if left == 0 {
            return f.write_str("0s");
        }
        let mut out = String::new();
        for (unit, name) in [(86_400, 'd'), (3_600, 'h'), (60, 'm'), (1, 's')] {
            if left >= unit {
                out.push_str(&format!("{}{name}", left / unit));
                left %= unit;
            }
        }
        f.write_str(&out)
    }
}

/// Whether the master renews the credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Renew {
    /// Renewed while a node the cluster file lists has not joined (on every
    /// boot of the master and while it runs), removed once all have.
    #[default]
    UntilJoined,
    /// kubeadm's own behaviour: valid for `credential_ttl` from `kubeadm
    /// init`, never renewed. A node booted later needs a day-2 seed.
    Never,
}

impl Renew {
    pub fn name(self) -> &'static str {
        match self {
            Renew::UntilJoined => "until-joined",
            Renew::Never => "never",
        }
    }
}

/// The shortest credential a site may choose: the master renews it at a
/// quarter of its life, and a busy master under emulation may take tens of
/// seconds to answer one request.
pub const MIN_TTL: Span = Span(60);
/// The longest: a credential on every seed that outlives a month is one
/// nobody remembers to revoke.
pub const MAX_TTL: Span = Span(30 * 86_400);

/// The cluster file's `join:` section (and the node config's, where the
/// seeds hand it on).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinPolicy {
    /// How long the credential stays valid after each renewal (default 2h:
    /// a seed copied off the site stops working within two hours of the
    /// last listed node joining or the master stopping, while a master
    /// that is rebooted or busy for up to 1.5 h does not let it lapse).
    #[serde(default = "default_ttl")]
    pub credential_ttl: Span,
    #[serde(default)]
    pub renew: Renew,
}

fn default_ttl() -> Span {
    Span(2 * 3_600)
}

impl Default for JoinPolicy {
    fn default() -> Self {
        JoinPolicy {
            credential_ttl: default_ttl(),
            renew: Renew::default(),
        }
    }
}

impl JoinPolicy {
    /// The master renews once a quarter of the credential's life has passed,
    /// so three renewals in a row can fail before it lapses.
    pub fn renew_every(&self) -> Duration {
        Duration::from_secs((self.credential_ttl.secs() / 4).max(1))
    }

    /// Range problems, each naming its field under `at` (`join`).
    pub fn problems(&self, at: &str) -> Vec<String> {
        let t = self.credential_ttl;
        if t < MIN_TTL || t > MAX_TTL {
            vec![format!(
                "{at}.credential_ttl: {t} must be between {MIN_TTL} and {MAX_TTL}"
            )]
        } else {
            Vec::new()
        }
    }

    /// One line for the plan and the status page.
    pub fn describe(&self) -> String {
        match self.renew {
            Renew::UntilJoined => format!(
                "the seeds' join credential is valid {} at a time; the master renews it every {} while a listed node has not joined, then removes it",
                self.credential_ttl,
                Span(self.renew_every().as_secs())
            ),
            Renew::Never => format!(
                "the seeds' join credential is valid {} from the cluster's forming and never renewed; a node booted later needs a day-2 seed (kpaas-agent node add)",
                self.credential_ttl
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests: a panic is the failure report
    use super::*;

    #[test]
    fn spans_read_and_print_as_people_write_them() {
        let s = |t: &str| Span::try_from(t.to_string());
        assert_eq!(s("2h").unwrap(), Span(7200));
        assert_eq!(s("1h30m").unwrap(), Span(5400));
        assert_eq!(s("90m").unwrap().to_string(), "1h30m");
        assert_eq!(s("7d").unwrap().to_string(), "7d");
        assert_eq!(s("45s").unwrap().to_string(), "45s");
        for bad in [
            "",
            "2",
            "h",
            "2 hours",
            "-1h",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(
                s(bad).unwrap_err().contains("such as 2h"),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn the_default_renews_until_joined_every_quarter_of_two_hours() {
        let p = JoinPolicy::default();
        assert_eq!(
            (p.credential_ttl, p.renew),
            (Span(7200), Renew::UntilJoined)
        );
        assert_eq!(p.renew_every(), Duration::from_secs(1800));
        assert!(p.problems("join").is_empty());
        let short = JoinPolicy {
            credential_ttl: Span(30),
            renew: Renew::Never,
        };
        assert_eq!(
            short.problems("join"),
            ["join.credential_ttl: 30s must be between 1m and 30d"]
        );
        assert!(short.describe().contains("never renewed"));
    }
}
