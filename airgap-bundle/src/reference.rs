//! Container image references, normalised the way Docker and containerd do it
//! (`busybox` → `docker.io/library/busybox:latest`), because the seed registry
//! serves every image under its source registry's name.

use crate::digest::Digest;
use std::fmt;

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<Digest>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{input:?} is not a valid image reference: {why}")]
pub struct BadReference {
    pub input: String,
    pub why: String,
}

fn valid_component(c: &str) -> bool {
    // distribution's path-component grammar: [a-z0-9]+ separated by . _ __ or -+
    !c.is_empty()
        && c.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
        && c.as_bytes()[0].is_ascii_alphanumeric()
        && c.as_bytes()[c.len() - 1].is_ascii_alphanumeric()
}

fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// True for a repository name the distribution spec accepts (`a/b-c/d`).
pub fn valid_repository(r: &str) -> bool {
    !r.is_empty() && r.len() <= 255 && r.split('/').all(valid_component)
}

impl ImageRef {
    pub fn parse(input: &str) -> Result<Self, BadReference> {
        let bad = |why: &str| BadReference {
            input: input.to_string(),
            why: why.to_string(),
        };
        let (rest, digest) = match input.split_once('@') {
            Some((r, d)) => (r, Some(Digest::parse(d).map_err(|e| bad(&e.to_string()))?)),
            None => (input, None),
        };
        // A ':' after the last '/' starts the tag; one before it is a registry port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].find(':') {
            Some(i) => (
                &rest[..last_slash + i],
                Some(rest[last_slash + i + 1..].to_string()),
            ),
            None => (rest, None),
        };
        if let Some(t) = &tag
            && !valid_tag(t)
        {
            return Err(bad(
                "the tag may hold only letters, digits, '_', '.', '-' (at most 128)",
            ));
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => ("docker.io".to_string(), name.to_string()),
        };
        // Docker Hub's legacy name: containerd and CRI-O treat it as docker.io.
        let registry = if registry == "index.docker.io" {
            "docker.io".to_string()
        } else {
            registry
        };
        let repository = if registry == "docker.io" && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        if !valid_repository(&repository) {
            return Err(bad(
                "the repository must be lowercase path components of [a-z0-9] joined by '.', '_' or '-'",
            ));
        }
        if registry.is_empty() || registry.contains(['/', '@', ' ']) {
            return Err(bad("the registry host is malformed"));
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// What to ask the registry for: the digest when pinned, else the tag.
    pub fn reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_string(),
        }
    }
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_like_docker() {
        let r = ImageRef::parse("busybox").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
        let r = ImageRef::parse("calico/node:v3.24.5").unwrap();
        assert_eq!(r.to_string(), "docker.io/calico/node:v3.24.5");
        for legacy in [
            "index.docker.io/calico/node:v3.24.5",
            "index.docker.io/library/busybox",
        ] {
            let r = ImageRef::parse(legacy).unwrap();
            assert_eq!(r.registry, "docker.io", "{legacy}");
        }
        let r = ImageRef::parse("index.docker.io/busybox:1.35").unwrap();
        assert_eq!(r.to_string(), "docker.io/library/busybox:1.35");
        let r = ImageRef::parse("127.0.0.1:5000/a/b/c:1.0").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str()),
            ("127.0.0.1:5000", "a/b/c")
        );
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r = ImageRef::parse(&format!(
            "registry.k8s.io/ingress-nginx/controller:v1.5.1@{d}"
        ))
        .unwrap();
        assert_eq!(r.tag.as_deref(), Some("v1.5.1"));
        assert_eq!(r.reference(), d);
        let r = ImageRef::parse(&format!("localhost/x@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.registry, "localhost");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "Upper/Case:1",
            "a//b",
            "a:b:c",
            "x@sha256:zz",
            "reg.io/-a:1",
            "a:",
        ] {
            assert!(ImageRef::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
