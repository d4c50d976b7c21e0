//! What logs and `Debug` output show of secrets: that they are set, never what they are.

/// What a `Debug` output shows of a secret: whether it is set.
pub fn hidden(secret: &str) -> &'static str {
    if secret.is_empty() { "" } else { "<hidden>" }
}

/// `url` with the password of its user part (`user:password@`) and any
/// `sentinelPassword` parameter replaced, for logs.
pub fn redact_url(url: &str) -> String {
    let mut out = url.to_string();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        // Up to the query, not the path: a password may hold an unencoded `/`.
        let authority_end = out[rest..].find('?').map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@') {
            let user = &out[rest..rest + at];
            if let Some(colon) = user.find(':') {
                out.replace_range(rest + colon + 1..rest + at, "<hidden>");
            }
        }
    }
    if let Some(start) = out.find("sentinelPassword=") {
        let value = start + "sentinelPassword=".len();
        let end = out[value..].find('&').map_or(out.len(), |i| value + i);
        out.replace_range(value..end, "<hidden>");
    }
    out
}
