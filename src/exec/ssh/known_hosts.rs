//! known_hosts lines, read and matched as OpenSSH 9.2 does (`hostfile.c`, `match.c`).
//!
//! - **Markers.** `@revoked` and `@cert-authority` are recognised; a line with any other
//!   `@…` word is malformed and skipped, as OpenSSH skips it.
//! - **Plain host fields** are comma-separated patterns: `*` matches any run of characters,
//!   `?` exactly one, and a leading `!` negates. A line matches a name when some positive
//!   pattern matches it and no negated one does: a negated match makes the line not match,
//!   whatever else it lists (`[host]:2222,!*` matches nothing). Patterns and the name are
//!   compared in ASCII lower case.
//! - **Hashed host fields** (`|1|salt|hash`, as `HashKnownHosts` writes them) match when the
//!   HMAC-SHA1 of the name, keyed with the salt, equals the hash.
//!
//! Which name a connection is looked up under, and what a match means for trust, is
//! [`super::hostkey`]'s business; `docs/ssh-host-keys.md` compares the whole rule with
//! OpenSSH's observed behaviour.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// A line's marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Marker {
    /// An ordinary trusted key.
    None,
    /// `@revoked`: this key must never be accepted for the hosts the line names.
    Revoked,
    /// `@cert-authority`: the key signs host certificates; it is not a host key itself.
    CertAuthority,
}

/// One well-formed known_hosts line.
#[derive(Debug, Clone)]
pub struct Line<'a> {
    /// Its marker.
    pub marker: Marker,
    /// The host field: patterns, or a hashed name.
    pub hosts: &'a str,
    /// The key type as written, e.g. `ssh-ed25519`.
    pub key_type: &'a str,
    /// The public key blob (the base64 field, decoded).
    pub blob: Vec<u8>,
}

impl Line<'_> {
    /// Whether the host field is hashed.
    pub fn is_hashed(&self) -> bool {
        self.hosts.starts_with('|')
    }

    /// Whether the line applies to `name` (already lower-cased, in OpenSSH's lookup form:
    /// `host` or `[host]:port`). A malformed hashed field matches nothing.
    pub fn matches(&self, name: &str) -> bool {
        if self.is_hashed() {
            hashed_matches(self.hosts, name)
        } else {
            pattern_list(name, self.hosts) == PatternMatch::Positive
        }
    }
}

/// Parse one line. `None` for blank lines, comments, and anything malformed: an unknown
/// or repeated marker, missing fields, bad base64, or a blob whose embedded type differs
/// from the type field.
pub fn parse(line: &str) -> Option<Line<'_>> {
    let mut rest = line.trim_start_matches([' ', '\t']);
    if rest.is_empty() || rest.starts_with('#') {
        return None;
    }
    let mut marker = Marker::None;
    if rest.starts_with('@') {
        let (word, after) = split_field(rest)?;
        marker = match word {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => Marker::CertAuthority,
            _ => return None,
        };
        rest = after;
        if rest.starts_with('@') {
            return None;
        }
    }
    let (hosts, rest) = split_field(rest)?;
    let (key_type, rest) = split_field(rest)?;
    let b64 = rest.split([' ', '\t']).next().filter(|s| !s.is_empty())?;
    let blob = base64::engine::general_purpose::STANDARD
        .decode(b64.trim_end_matches(['\r', '\n']))
        .ok()?;
    if blob_type(&blob)? != key_type.as_bytes() {
        return None;
    }
    Some(Line {
        marker,
        hosts,
        key_type,
        blob,
    })
}

/// The next whitespace-delimited field, and the text after the whitespace that ends it.
fn split_field(s: &str) -> Option<(&str, &str)> {
    let end = s.find([' ', '\t'])?;
    let (field, rest) = s.split_at(end);
    Some((field, rest.trim_start_matches([' ', '\t'])))
}

/// The key type string a public key blob starts with (an SSH `string`).
pub fn blob_type(blob: &[u8]) -> Option<&[u8]> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    blob.get(4..4usize.checked_add(len)?)
}

/// The outcome of matching a name against a comma-separated pattern list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternMatch {
    /// No pattern matched.
    None,
    /// A positive pattern matched, and no negated one did.
    Positive,
    /// A negated pattern matched.
    Negated,
}

/// OpenSSH's `match_pattern_list` with lower-casing: a negated match wins over any
/// positive one, and a sub-pattern of 1024 bytes or more fails the whole list.
fn pattern_list(name: &str, list: &str) -> PatternMatch {
    let mut positive = false;
    for sub in list.split(',') {
        let (negated, pat) = match sub.strip_prefix('!') {
            Some(p) => (true, p),
            None => (false, sub),
        };
        if pat.len() >= 1023 {
            return PatternMatch::None;
        }
        if wildcard(name.as_bytes(), pat.to_ascii_lowercase().as_bytes()) {
            if negated {
                return PatternMatch::Negated;
            }
            positive = true;
        }
    }
    if positive {
        PatternMatch::Positive
    } else {
        PatternMatch::None
    }
}

/// `*` (any run, possibly empty) and `?` (one byte) matching, as OpenSSH's
/// `match_pattern`, in O(|s|·|p|) time whatever the pattern: the usual greedy scan that
/// backtracks only to the last `*`, instead of OpenSSH's recursion, which a pattern from
/// a connector could make exponential.
fn wildcard(s: &[u8], p: &[u8]) -> bool {
    let (mut si, mut pi) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            si += 1;
            pi += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether a hashed host field `|1|base64(salt)|base64(hmac)` is the HMAC-SHA1 of `name`
/// keyed with the salt. Any other form is malformed and matches nothing, as in OpenSSH.
fn hashed_matches(field: &str, name: &str) -> bool {
    let Some(rest) = field.strip_prefix("|1|") else {
        return false;
    };
    let Some((salt, hash)) = rest.split_once('|') else {
        return false;
    };
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Ok(salt), Ok(hash)) = (b64.decode(salt), b64.decode(hash)) else {
        return false;
    };
    // OpenSSH insists on a salt of the digest's size.
    if salt.len() != 20 {
        return false;
    }
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(&salt) else {
        return false;
    };
    mac.update(name.as_bytes());
    mac.verify_slice(&hash).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIEXsWh1EUb333DEiJ9NPTBGdZRoYVG4sQEfVdLjLyi7Y";

    fn line(text: &str) -> Line<'_> {
        parse(text).unwrap_or_else(|| panic!("did not parse: {text}"))
    }

    #[test]
    fn markers_comments_and_malformed_lines() {
        assert!(parse("").is_none());
        assert!(parse("   # comment").is_none());
        assert_eq!(line(&format!("h ssh-ed25519 {ED}")).marker, Marker::None);
        assert_eq!(
            line(&format!("@revoked h ssh-ed25519 {ED} c")).marker,
            Marker::Revoked
        );
        assert_eq!(
            line(&format!("@cert-authority\th ssh-ed25519 {ED}")).marker,
            Marker::CertAuthority
        );
        for bad in [
            format!("@foo h ssh-ed25519 {ED}"),
            format!("@revoked @revoked h ssh-ed25519 {ED}"),
            "h ssh-ed25519 not!base64".to_string(),
            // The blob says ssh-ed25519.
            format!("h ssh-rsa {ED}"),
            "h ssh-ed25519".to_string(),
        ] {
            assert!(parse(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn patterns_follow_openssh_match_pattern_list() {
        let m = |name: &str, pats: &str| line(&format!("{pats} ssh-ed25519 {ED}")).matches(name);
        assert!(m("[10.0.0.1]:2222", "[10.0.0.1]:2222"));
        assert!(!m("[10.0.0.1]:2222", "10.0.0.1"));
        assert!(m("10.0.0.1", "a,10.0.0.1,b"));
        // A negated match makes the line not match, whatever else matched.
        assert!(!m("[10.0.0.1]:2222", "[10.0.0.1]:2222,!*"));
        assert!(!m("10.0.0.1", "!10.0.0.1,10.0.0.1"));
        assert!(m("10.0.0.1", "!10.0.0.2,10.0.0.*"));
        // A negation alone never matches.
        assert!(!m("10.0.0.1", "!10.0.0.2"));
        assert!(m("[10.0.0.1]:2222", "*"));
        assert!(m("[10.0.0.1]:2222", "[10.0.0.?]:2222"));
        assert!(m("[10.0.0.1]:2222", "[10.0.0.1]:22*"));
        assert!(!m("[10.0.0.1]:2222", "[10.0.0.1]:22?"));
        assert!(m("host.example", "HOST.Example"));
        assert!(!m("host.example", &"x".repeat(1100)));
    }

    #[test]
    fn wildcard_is_linear_on_hostile_patterns() {
        let s = "a".repeat(200);
        let p = format!("{}b", "*a".repeat(100));
        let t0 = std::time::Instant::now();
        assert!(!wildcard(s.as_bytes(), p.as_bytes()));
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        assert!(wildcard(b"", b"**"));
        assert!(!wildcard(b"", b"?"));
        assert!(wildcard(b"abc", b"a*c"));
        assert!(wildcard(b"abbbc", b"a*b?c"));
        assert!(!wildcard(b"abc", b"a*d"));
    }

    #[test]
    fn hashed_fields_are_hmac_sha1_of_the_name() {
        // Written by `ssh-keygen -H` for the name `[127.0.0.1]:2222`.
        let field = "|1|ABnK0hj3faO73R30pyERPjZdWo0=|aDfc7XwiNB8OWj9122SvJnNVx4M=";
        let text = format!("{field} ssh-ed25519 {ED}");
        let l = line(&text);
        assert!(l.is_hashed());
        assert!(l.matches("[127.0.0.1]:2222"));
        assert!(!l.matches("127.0.0.1"));
        assert!(!l.matches("[127.0.0.1]:2223"));
        for bad in [
            "|2|ABnK0hj3faO73R30pyERPjZdWo0=|aDfc7XwiNB8OWj9122SvJnNVx4M=",
            "|1|ABnK0hj3faO73R30pyERPjZdWo0=",
            "|1|c2FsdA==|aDfc7XwiNB8OWj9122SvJnNVx4M=",
        ] {
            assert!(!line(&format!("{bad} ssh-ed25519 {ED}")).matches("[127.0.0.1]:2222"));
        }
    }
}
