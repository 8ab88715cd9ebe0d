//! Which requests are the bridge's own, decided on the path as a receiver
//! would read it, not as sent: `/ischedule/`, `//ischedule`, `/%69schedule`
//! and `/./ischedule` all mean the receiver path to some server, so none may
//! slip past the bridge to the origin (with the shared-secret header still
//! on them). What is passed through keeps its original path.

/// How a path relates to one of the bridge's own paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The path itself, once normalised.
    Exact,
    /// Below it, or the same but for letter case: the bridge's name space,
    /// answered 404 rather than passed through.
    Near,
    /// Unrelated: the origin's.
    None,
}

/// RFC 3986 normalisation as far as it can change what a path names:
/// percent-encoded unreserved characters decoded (6.2.2.2), dot segments
/// removed (5.2.4), empty segments dropped (servers commonly merge
/// slashes), no trailing slash. Other escapes, `%2F` among them, stay.
pub fn normalize(path: &str) -> String {
    let decoded = decode_unreserved(path);
    let mut segments: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

/// How `path` (already normalised) relates to the bridge's own `own`.
pub fn claim(path: &str, own: &str) -> Claim {
    if path == own {
        return Claim::Exact;
    }
    let folded = path.to_ascii_lowercase();
    let own = own.to_ascii_lowercase();
    let below = folded
        .strip_prefix(&own)
        .is_some_and(|rest| rest.starts_with('/'));
    if folded == own || below {
        Claim::Near
    } else {
        Claim::None
    }
}

fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| path.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok())
            .filter(|b| b.is_ascii_alphanumeric() || b"-._~".contains(b));
        match escaped {
            Some(b) => {
                out.push(char::from(b));
                i += 3;
            }
            None => {
                // Paths from the HTTP parser are ASCII; anything else is
                // copied as is, character by character.
                let c = path[i..].chars().next().unwrap_or('\u{fffd}');
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variants_of_the_receiver_path_are_the_receiver_path() {
        for variant in [
            "/ischedule",
            "/ischedule/",
            "//ischedule",
            "/%69schedule",
            "/%69%73chedule//",
            "/./ischedule",
            "/x/../ischedule",
            "/../ischedule",
        ] {
            assert_eq!(normalize(variant), "/ischedule", "{variant}");
            assert_eq!(claim(&normalize(variant), "/ischedule"), Claim::Exact);
        }
        assert_eq!(
            normalize("/.well-known/ischedule/"),
            "/.well-known/ischedule"
        );
    }

    #[test]
    fn near_misses_stay_with_the_bridge_and_the_rest_goes_to_the_origin() {
        assert_eq!(claim("/ISchedule", "/ischedule"), Claim::Near);
        assert_eq!(claim("/ischedule/x", "/ischedule"), Claim::Near);
        assert_eq!(claim("/ischedules", "/ischedule"), Claim::None);
        assert_eq!(claim("/dav/calendars", "/ischedule"), Claim::None);
        // An encoded slash is not a separator: it stays encoded.
        assert_eq!(normalize("/ischedule%2Fx"), "/ischedule%2Fx");
        assert_eq!(normalize("/caf%C3%A9"), "/caf%C3%A9");
        assert_eq!(normalize("/"), "/");
    }
}
