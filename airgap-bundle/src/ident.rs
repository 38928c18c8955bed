//! Machine identities, as both the cluster file and the node config check
//! them: hostnames (RFC 1123 names, which is also what Kubernetes object
//! names are) and MAC addresses.

/// Normalises a MAC to lowercase colon form; None when it is not one.
pub fn normalize_mac(m: &str) -> Option<String> {
    let hex: String = m
        .chars()
        .filter(|c| c.is_ascii_hexdigit())
        .collect::<String>()
        .to_ascii_lowercase();
    let seps = m
        .chars()
        .filter(|c| !c.is_ascii_hexdigit())
        .all(|c| c == ':' || c == '-');
    if hex.len() != 12 || !seps {
        return None;
    }
    Some(
        hex.as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).to_string())
            .collect::<Vec<_>>()
            .join(":"),
    )
}

pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}
