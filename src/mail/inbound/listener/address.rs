//! The syntax of reverse- and forward-paths (RFC 5321 4.1.2), checked
//! strictly and alone so the rules are easy to see and to test.

/// Longest reverse-path or forward-path, brackets excluded (RFC 5321 4.5.3.1.3).
const MAX_PATH: usize = 256;

/// `s` without `prefix` (ASCII case-insensitive).
pub(super) fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// `<path> params` (space after the colon tolerated) → the address without
/// brackets or source route, and the parameter text. Only the bracket
/// syntax and the length are checked here.
pub(super) fn parse_path(s: &str) -> Option<(String, &str)> {
    let inner = s.trim_start().strip_prefix('<')?;
    let end = inner.find('>')?;
    let (path, after) = (&inner[..end], &inner[end + 1..]);
    if !after.is_empty() && !after.starts_with(' ') {
        return None;
    }
    // RFC 5321 4.1.2: an obsolete source route "@a,@b:" is ignored.
    let address = match path.strip_prefix('@') {
        Some(route) => route.split_once(':')?.1,
        None => path,
    };
    (address.len() <= MAX_PATH).then(|| (address.to_owned(), after.trim()))
}

/// `local@domain` in printable ASCII without spaces; the domain a host name
/// or an address literal.
pub(super) fn valid_mailbox(address: &str) -> bool {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return false;
    };
    let domain_ok = if let Some(literal) = domain.strip_prefix('[') {
        literal.ends_with(']')
            && literal.len() > 1
            && literal
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b".:-]".contains(&b))
    } else {
        domain
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
    };
    !local.is_empty()
        && local.len() <= 64
        && !domain.is_empty()
        && domain.len() <= 255
        && domain_ok
        && local
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'<' && b != b'>')
}

/// Whether the mailbox's domain is an address literal (`user@[192.0.2.1]`,
/// `user@[IPv6:2001:db8::1]`). Valid syntax, but refused at MAIL and RCPT:
/// no calendar user lives at a bare address, and a DSN to one would go to
/// whatever host the sender named, past every DNS-based check (SPF, MX).
pub(super) fn is_address_literal(address: &str) -> bool {
    address
        .rsplit_once('@')
        .is_some_and(|(_, domain)| domain.starts_with('['))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_mailboxes() {
        assert_eq!(parse_path("<a@b.c>"), Some(("a@b.c".into(), "")));
        assert_eq!(
            parse_path(" <a@b.c> SIZE=1  BODY=7BIT"),
            Some(("a@b.c".into(), "SIZE=1  BODY=7BIT"))
        );
        assert_eq!(parse_path("<>"), Some((String::new(), "")));
        assert_eq!(parse_path("<@x,@y:a@b.c>"), Some(("a@b.c".into(), "")));
        assert_eq!(parse_path("a@b.c"), None);
        assert_eq!(parse_path("<a@b.c"), None);
        assert_eq!(parse_path(&format!("<{}@b.c>", "a".repeat(300))), None);
        assert!(valid_mailbox("first.last+tag@sub.example.com"));
        assert!(valid_mailbox("x@[IPv6:2001:db8::1]"));
        for bad in [
            "", "a", "@b.c", "a@", "a b@c.d", "a@b..c", "a@.b", "a@b_c d", "é@b.c",
        ] {
            assert!(!valid_mailbox(bad), "{bad}");
        }
        assert!(is_address_literal("x@[IPv6:2001:db8::1]"));
        assert!(is_address_literal("x@[192.0.2.1]"));
        assert!(!is_address_literal("x@example.com"));
        assert!(!is_address_literal("[x]@example.com"));
        assert!(!is_address_literal("Postmaster"));
        assert_eq!(strip_prefix_ci("from:<x>", "FROM:"), Some("<x>"));
        assert_eq!(strip_prefix_ci("fr", "FROM:"), None);
        assert_eq!(strip_prefix_ci("fröm:", "FROM:"), None);
    }
}
