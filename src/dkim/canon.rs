//! `ischedule-relaxed` header and `simple` body canonicalisation.
//!
//! Headers: the name in lower case; every header of that name joined with
//! commas into one value (HTTP may split a list across lines, and proxies
//! may merge them); whitespace runs collapsed to one space and trimmed; no
//! space left around commas; `name:value` followed by CRLF. The
//! `DKIM-Signature` header comes last, with its `b=` value emptied and no
//! CRLF after it.

use super::HEADER;

/// One request header as received or about to be sent.
pub type Header<'a> = (&'a str, &'a [u8]);

/// The canonical form of one header line, CRLF included.
pub fn header(name: &str, value: &[u8]) -> Vec<u8> {
    let mut line = Vec::with_capacity(name.len() + value.len() + 3);
    line.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
    line.push(b':');
    line.extend(relaxed_value(value));
    line.extend_from_slice(b"\r\n");
    line
}

/// Collapsed whitespace, trimmed, and no space next to a comma.
fn relaxed_value(value: &[u8]) -> Vec<u8> {
    let words: Vec<&[u8]> = value
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    let collapsed = words.join(&b' ');
    let mut out = Vec::with_capacity(collapsed.len());
    for (i, &b) in collapsed.iter().enumerate() {
        let space_by_comma =
            b == b' ' && (collapsed.get(i + 1) == Some(&b',') || out.last() == Some(&b','));
        if !space_by_comma {
            out.push(b);
        }
    }
    out
}

/// Every value of header `name` (case-insensitively), joined with commas;
/// `None` when the request has none.
pub fn joined(headers: &[Header], name: &str) -> Option<Vec<u8>> {
    let values: Vec<&[u8]> = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
        .collect();
    (!values.is_empty()).then(|| values.join(&b','))
}

/// The data the signature covers: each header named in `h=` that the
/// request has (a missing one contributes nothing, so deleting a signed
/// header changes the data), then the `DKIM-Signature` value with its
/// `b=` emptied, without a CRLF.
pub fn signed_data(headers: &[Header], signed: &[String], signature_value: &str) -> Vec<u8> {
    let mut data = Vec::new();
    for name in signed {
        if let Some(value) = joined(headers, name) {
            data.extend(header(name, &value));
        }
    }
    let mut own = header(HEADER, empty_b(signature_value).as_bytes());
    own.truncate(own.len() - 2);
    data.extend(own);
    data
}

/// The signature header value with the `b=` tag's value cut out, every
/// other byte (the whitespace around that value too) kept.
pub fn empty_b(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for (i, tag) in value.split(';').enumerate() {
        if i > 0 {
            out.push(';');
        }
        match tag.split_once('=') {
            Some((name, v)) if name.trim() == "b" => {
                let trimmed = v.trim_matches(|c: char| c.is_ascii_whitespace());
                let start = v.len()
                    - v.trim_start_matches(|c: char| c.is_ascii_whitespace())
                        .len();
                out.push_str(name);
                out.push('=');
                out.push_str(&v[..start]);
                out.push_str(&v[start + trimmed.len()..]);
            }
            _ => out.push_str(tag),
        }
    }
    out
}

/// `simple` body canonicalisation: trailing empty lines removed and one
/// CRLF at the end (also for an empty body).
pub fn body(body: &[u8]) -> Vec<u8> {
    let mut end = body.len();
    while body[..end].ends_with(b"\r\n") {
        end -= 2;
    }
    let mut out = body[..end].to_vec();
    out.extend_from_slice(b"\r\n");
    out
}
