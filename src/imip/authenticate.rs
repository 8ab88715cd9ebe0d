//! Sender authentication of inbound iMIP mail from remote domains: DKIM (the
//! first [`MAX_DKIM_SIGNATURES`] signatures), SPF for the MAIL FROM identity (the HELO identity for the null
//! sender) and DMARC for the RFC 5322.From domain, through `mail-auth`.
//!
//! The outcome is a [`Verdict`] whose `reason` is written for the admin who
//! reads the 550 5.7.x reply or the log line. Only this one question is
//! answered here: "did the From domain vouch for this message?". Whether a rule
//! needs that answer at all (local clients by allow-list or SMTP AUTH, reply
//! tokens in edge mode) is decided by the caller.
//!
//! Alignment is DMARC's (RFC 9989 as implemented by mail-auth: relaxed
//! alignment via the DNS tree walk, no public suffix list). A From domain
//! without any DMARC record in its tree counts as authenticated when a DKIM
//! signature with exactly that `d=` passes (its Organizational Domain is then
//! the domain itself); SPF alone is not enough there, because without a
//! record the domain never said that its SPF covers the From address.
//!
//! When the answer hinges on a DNS failure (timeout, SERVFAIL) `verify`
//! returns [`AuthError::Temporary`] instead of a negative verdict, so that the
//! caller can answer 4xx and the sending MTA retries.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mail_auth::common::crypto::CryptoError;
use mail_auth::dkim::DkimError;
use mail_auth::dmarc::verify::DmarcParameters;
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;

use crate::discovery::resolver::resolver_builder;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, DnsError,
    MessageAuthenticator, SpfOutput, SpfResult,
};

/// DKIM signatures checked per mail, topmost first. Each costs DNS lookups,
/// a public-key operation and possibly a hash over the whole body, so a
/// mail with thousands of them must not get thousands of checks; honest
/// mail carries one to three.
pub const MAX_DKIM_SIGNATURES: usize = 5;

/// What the checks found, in words an admin can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// RFC5322.From domain, lower case.
    pub from_domain: Option<String>,
    /// Every DKIM signature as (`d=`, passed).
    pub dkim: Vec<(String, bool)>,
    /// (domain checked, result); `None` when there was no identity to check.
    pub spf: Option<(String, SpfResult)>,
    /// DMARC pass (aligned DKIM or aligned SPF passes, whatever the policy),
    /// or no DMARC record for the From domain but a DKIM pass for exactly it.
    pub dmarc_pass: bool,
    /// e.g. "DMARC pass for example.org (aligned DKIM d=example.org)".
    pub reason: String,
}

impl Verdict {
    pub fn authenticated(&self) -> bool {
        self.dmarc_pass
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The DNS resolver could not be built (bad system configuration).
    #[error("cannot build the DNS resolver for mail authentication: {0}")]
    Resolver(String),
    /// The message has no RFC 5322 header section.
    #[error("message is not parseable as RFC 5322: no header fields")]
    Unparseable,
    /// DNS failed where the answer could have changed the outcome: nothing
    /// may be concluded; answer 451 4.7.0 (or 4.4.3) so the sender retries.
    #[error("sender authentication could not complete: {0}")]
    Temporary(String),
}

/// DKIM/SPF/DMARC checks against one resolver (hickory caches the answers,
/// positive and negative, for their TTL). Cheap to clone: clones share the
/// resolver and its cache.
#[derive(Clone)]
pub struct Authenticator {
    inner: MessageAuthenticator,
}

impl Authenticator {
    /// `nameservers` empty = system resolver; else those (IP:port), UDP and TCP.
    /// `timeout` is per DNS query (two attempts).
    pub fn new(nameservers: &[SocketAddr], timeout: Duration) -> Result<Authenticator, AuthError> {
        let failed = |e: &dyn std::fmt::Display| AuthError::Resolver(e.to_string());
        let mut builder = resolver_builder(nameservers, timeout).map_err(|e| failed(&e))?;
        let opts = builder.options_mut();
        // EDNS (hickory's default, kept explicit): a 2048-bit DKIM key does
        // not fit a 512-byte answer. Each server is also reachable over TCP.
        opts.edns0 = true;
        let resolver = builder.build().map_err(|e| failed(&e))?;
        Ok(Authenticator {
            inner: MessageAuthenticator(resolver),
        })
    }

    /// DKIM (the first [`MAX_DKIM_SIGNATURES`]), SPF for MAIL FROM (HELO domain if the null
    /// sender), DMARC for the From domain, aligned per DMARC relaxed alignment.
    ///
    /// `mail_from` may be given with or without angle brackets; "" and "<>"
    /// are the null sender. `mta_hostname` is this host's name (SPF `%{r}`).
    pub async fn verify(
        &self,
        message: &[u8],
        client_ip: IpAddr,
        helo: &str,
        mail_from: &str,
        mta_hostname: &str,
    ) -> Result<Verdict, AuthError> {
        let raw = crlf(message);
        let (raw, dropped) = first_signatures(&raw, MAX_DKIM_SIGNATURES);
        if dropped > 0 {
            tracing::info!(target: "ischedule::mail", dropped, kept = MAX_DKIM_SIGNATURES, "DKIM signatures beyond the limit not checked");
        }
        let message = AuthenticatedMessage::parse(&raw).ok_or(AuthError::Unparseable)?;
        let from = from_finding(&message);

        let dkim_output = self.inner.verify_dkim(&message).await;
        let mut dkim: Vec<SigFinding> = malformed_signatures(&message);
        dkim.extend(
            dkim_output
                .iter()
                .filter(|o| o.signature().is_some())
                .map(sig_finding),
        );

        let spf_output = self
            .spf_output(client_ip, helo, mail_from, mta_hostname)
            .await;
        let spf = spf_finding(&spf_output, client_ip);

        let dmarc = match &from {
            FromFinding::One(_) => {
                let output = self
                    .inner
                    .verify_dmarc(DmarcParameters::new(
                        &message,
                        &dkim_output,
                        spf_output.domain(),
                        &spf_output,
                    ))
                    .await;
                dmarc_finding(&output)
            }
            _ => DmarcFinding::NotChecked,
        };

        decide(&Findings {
            from,
            dkim,
            spf,
            dmarc,
        })
    }
}

impl Authenticator {
    /// Whether SPF passes for the MAIL FROM domain of `mail_from` (not the
    /// HELO name): what lets the bridge believe the envelope sender is where
    /// a delivery status notification may go. The null sender never passes.
    pub async fn spf_passes_for_mail_from(
        &self,
        client_ip: IpAddr,
        helo: &str,
        mail_from: &str,
        mta_hostname: &str,
    ) -> (bool, String) {
        if envelope_sender(mail_from).is_empty() {
            return (false, "the null sender has no SPF identity".into());
        }
        let output = self
            .spf_output(client_ip, helo, mail_from, mta_hostname)
            .await;
        let result = output.result();
        let why = spf_text(spf_finding(&output, client_ip).as_ref(), None);
        (result == SpfResult::Pass, why)
    }

    /// SPF for the MAIL FROM identity, the HELO identity for the null sender.
    async fn spf_output(
        &self,
        client_ip: IpAddr,
        helo: &str,
        mail_from: &str,
        mta_hostname: &str,
    ) -> SpfOutput {
        let helo = helo.trim().trim_end_matches('.');
        let sender = envelope_sender(mail_from);
        // The MAIL FROM domain, else (null sender, or no domain part) the HELO name.
        let identity = sender.rsplit_once('@').map_or(helo, |(_, domain)| domain);
        if !is_domain(identity) {
            // An address literal or a bare word is no SPF identity.
            SpfOutput::new(identity.to_string()).with_result(SpfResult::None)
        } else if sender.is_empty() {
            self.inner
                .verify_spf(SpfParameters::verify_ehlo(client_ip, helo, mta_hostname))
                .await
        } else {
            self.inner
                .verify_spf(SpfParameters::verify_mail_from(
                    client_ip,
                    helo,
                    mta_hostname,
                    sender,
                ))
                .await
        }
    }
}

/// `mail_from` without spaces or angle brackets; "" for the null sender.
fn envelope_sender(mail_from: &str) -> &str {
    mail_from
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
}

/// The message with only the first `keep` DKIM-Signature header fields,
/// and how many were dropped. Dropped before parsing, because parsing
/// already hashes the body once per distinct signature.
fn first_signatures(message: &[u8], keep: usize) -> (Cow<'_, [u8]>, usize) {
    let header_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message.len(), |i| i + 2);
    let (header, body) = message.split_at(header_end);
    // Header fields with their continuation lines, CRLF included.
    let mut fields: Vec<&[u8]> = Vec::new();
    for line in header.split_inclusive(|&b| b == b'\n') {
        match fields.last_mut() {
            Some(field) if line.starts_with(b" ") || line.starts_with(b"\t") => {
                let start = field.as_ptr() as usize - header.as_ptr() as usize;
                *field = &header[start..start + field.len() + line.len()];
            }
            _ => fields.push(line),
        }
    }
    let is_signature = |field: &[u8]| {
        field
            .get(..15)
            .is_some_and(|name| name.eq_ignore_ascii_case(b"dkim-signature:"))
    };
    let total = fields.iter().filter(|f| is_signature(f)).count();
    if total <= keep {
        return (Cow::Borrowed(message), 0);
    }
    let mut seen = 0;
    let mut out = Vec::with_capacity(message.len());
    for field in fields {
        if is_signature(field) {
            seen += 1;
            if seen > keep {
                continue;
            }
        }
        out.extend_from_slice(field);
    }
    out.extend_from_slice(body);
    (Cow::Owned(out), total - keep)
}

/// Looks like a host name with at least two labels (not `[192.0.2.1]`, not `localhost`).
fn is_domain(name: &str) -> bool {
    name.contains('.')
        && name.parse::<IpAddr>().is_err()
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b >= 0x80)
        })
}

/// DKIM is defined on CRLF lines (RFC 6376 5.3): a message handed over with
/// bare LF (`ingest`, some LMTP clients) is verified in its CRLF form.
fn crlf(message: &[u8]) -> Cow<'_, [u8]> {
    let bare_lf = message
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\n' && (i == 0 || message[i - 1] != b'\r'));
    if !bare_lf {
        return Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len() + message.len() / 32);
    for (i, &b) in message.iter().enumerate() {
        if b == b'\n' && (i == 0 || message[i - 1] != b'\r') {
            out.push(b'\r');
        }
        out.push(b);
    }
    Cow::Owned(out)
}

// ---------------------------------------------------------------------------
// Findings: what mail-auth reported, in our own terms (testable without DNS).

#[derive(Debug, Clone, PartialEq, Eq)]
enum FromFinding {
    /// Exactly one From header field, all its addresses in this domain.
    One(String),
    /// No From address at all.
    Missing,
    /// Addresses in several domains (DMARC does not apply: refuse).
    SeveralDomains(Vec<String>),
    /// More than one From header field (RFC 7489 6.6.1: refuse).
    SeveralFields(usize, Option<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SigResult {
    Pass,
    Fail,
    PermError,
    TempError,
}

impl SigResult {
    fn word(self) -> &'static str {
        match self {
            SigResult::Pass => "pass",
            SigResult::Fail => "fail",
            SigResult::PermError => "permerror",
            SigResult::TempError => "temperror",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SigFinding {
    /// `d=` in lower case, without a trailing dot ("" when unreadable).
    d: String,
    result: SigResult,
    /// Why it did not pass, e.g. "body hash mismatch".
    detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct SpfFinding {
    domain: String,
    result: SpfResult,
    detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum DmarcFinding {
    /// From problems: DMARC was not evaluated.
    NotChecked,
    /// DMARC pass: which identifiers aligned, and the policy in force.
    Pass {
        dkim: bool,
        spf: bool,
        policy: Policy,
    },
    /// No DMARC record anywhere in the From domain's tree.
    NoRecord,
    /// A record exists and no aligned identifier passed.
    Fail { policy: Policy },
    /// DNS failed where it mattered.
    TempError(mail_auth::Error),
    /// The DMARC evaluation itself failed permanently.
    PermError(mail_auth::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Findings {
    from: FromFinding,
    dkim: Vec<SigFinding>,
    spf: Option<SpfFinding>,
    dmarc: DmarcFinding,
}

fn domain_of(address: &str) -> Option<String> {
    let (_, domain) = address.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then_some(domain)
}

fn from_finding(message: &AuthenticatedMessage<'_>) -> FromFinding {
    let fields = message
        .raw_parsed_headers()
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"from"))
        .count();
    let mut domains: Vec<String> = Vec::new();
    for domain in message.froms().iter().filter_map(|a| domain_of(a)) {
        if !domains.contains(&domain) {
            domains.push(domain);
        }
    }
    if fields > 1 {
        return FromFinding::SeveralFields(fields, domains.into_iter().next());
    }
    match domains.len() {
        0 => FromFinding::Missing,
        1 => FromFinding::One(domains.remove(0)),
        _ => FromFinding::SeveralDomains(domains),
    }
}

/// DKIM-Signature fields mail-auth could not even parse (bad tags, `l=`).
fn malformed_signatures(message: &AuthenticatedMessage<'_>) -> Vec<SigFinding> {
    message
        .errors
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case(b"dkim-signature"))
        .map(|h| SigFinding {
            d: tag_value(h.value, "d").unwrap_or_default(),
            result: SigResult::PermError,
            detail: Some(format!(
                "malformed signature: {}",
                describe_error(&h.header, None)
            )),
        })
        .collect()
}

/// A tag of a raw `tag=value; ...` list, lower case, whitespace removed.
fn tag_value(raw: &[u8], tag: &str) -> Option<String> {
    String::from_utf8_lossy(raw).split(';').find_map(|item| {
        let (name, value) = item.split_once('=')?;
        name.trim().eq_ignore_ascii_case(tag).then(|| {
            value
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .trim_end_matches('.')
                .to_ascii_lowercase()
        })
    })
}

fn sig_finding(output: &DkimOutput<'_>) -> SigFinding {
    let signature = output.signature();
    let d = signature
        .map(|s| s.d.trim_end_matches('.').to_ascii_lowercase())
        .unwrap_or_default();
    let key = signature.map(|s| (s.s.as_str(), s.d.as_str()));
    let (result, err) = match output.result() {
        DkimResult::Pass => (SigResult::Pass, None),
        DkimResult::Neutral(e) => match e {
            // mail-auth says "neutral" for these; RFC 6376 calls them failures.
            mail_auth::Error::Dkim(
                DkimError::FailedBodyHashMatch | DkimError::SignatureExpired,
            ) => (SigResult::Fail, Some(e)),
            _ => (SigResult::PermError, Some(e)),
        },
        DkimResult::Fail(e) => (SigResult::Fail, Some(e)),
        DkimResult::PermError(e) => (SigResult::PermError, Some(e)),
        DkimResult::TempError(e) => (SigResult::TempError, Some(e)),
        DkimResult::None => (SigResult::PermError, None),
    };
    SigFinding {
        d,
        result,
        detail: err.map(|e| describe_error(e, key)),
    }
}

/// mail-auth's error, in a few words; `key` is (selector, domain) for DKIM.
fn describe_error(err: &mail_auth::Error, key: Option<(&str, &str)>) -> String {
    let key_name = key.map(|(s, d)| format!("{s}._domainkey.{}", d.trim_end_matches('.')));
    match err {
        mail_auth::Error::Dkim(e) => match e {
            DkimError::FailedBodyHashMatch => "body hash mismatch".into(),
            DkimError::SignatureExpired => "signature expired".into(),
            DkimError::FailedAuidMatch => "i= is not within d=".into(),
            DkimError::RevokedPublicKey => "key revoked".into(),
            DkimError::SignatureLength => "l= body length limit not accepted".into(),
            DkimError::UnsupportedVersion => "unsupported DKIM version".into(),
            DkimError::UnsupportedAlgorithm => "unsupported algorithm".into(),
            DkimError::UnsupportedCanonicalization => "unsupported canonicalization".into(),
            DkimError::UnsupportedKeyType => "unsupported key type".into(),
        },
        mail_auth::Error::Crypto(CryptoError::FailedVerification) => {
            "signature does not verify (signed header fields changed, or wrong key)".into()
        }
        mail_auth::Error::Crypto(CryptoError::IncompatibleAlgorithms) => {
            "key type does not match the signature algorithm".into()
        }
        mail_auth::Error::Crypto(CryptoError::Library(e)) => format!("crypto error: {e}"),
        mail_auth::Error::Dns(DnsError::RecordNotFound(_)) => match key_name {
            Some(name) => format!("no key at {name}"),
            None => "DNS record not found".into(),
        },
        mail_auth::Error::Dns(DnsError::InvalidRecordType) => match key_name {
            Some(name) => format!("no valid DKIM key record at {name}"),
            None => "no valid record".into(),
        },
        mail_auth::Error::Dns(DnsError::Resolver(e)) if e.is_empty() => "DNS error".into(),
        mail_auth::Error::Dns(DnsError::Resolver(e)) => format!("DNS error: {e}"),
        mail_auth::Error::ParseError => match key_name {
            Some(name) => format!("unparseable key record at {name}"),
            None => "parse error".into(),
        },
        mail_auth::Error::Base64 => "bad base64".into(),
        mail_auth::Error::NotAligned => "not aligned".into(),
        other => other.to_string(),
    }
}

fn spf_finding(output: &SpfOutput, ip: IpAddr) -> Option<SpfFinding> {
    let domain = output.domain().trim_end_matches('.').to_ascii_lowercase();
    if domain.is_empty() {
        return None;
    }
    let result = output.result();
    let detail = match result {
        SpfResult::Pass => None,
        SpfResult::Fail => Some(format!("{ip} not permitted by {domain}")),
        SpfResult::SoftFail => Some(format!("{ip} not permitted by {domain}, ~all")),
        SpfResult::Neutral => Some(format!("{domain} neither permits nor denies {ip}")),
        SpfResult::None if !is_domain(&domain) => Some(format!("{domain} is not a domain")),
        SpfResult::None => Some(format!("no SPF record for {domain}")),
        SpfResult::TempError => Some(format!("DNS error for {domain}")),
        SpfResult::PermError => Some(format!(
            "invalid SPF record for {domain} or too many DNS lookups"
        )),
    };
    let detail = match (detail, output.explanation()) {
        (Some(d), Some(exp)) if !exp.is_empty() => Some(format!("{d}: {exp}")),
        (d, _) => d,
    };
    Some(SpfFinding {
        domain,
        result,
        detail,
    })
}

/// The word Authentication-Results uses (RFC 8601 2.7.2), as mail-auth's
/// own `Display` capitalises it.
fn spf_word(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::None => "none",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
    }
}

fn dmarc_finding(output: &DmarcOutput) -> DmarcFinding {
    let policy = output.policy();
    match output.result() {
        DmarcResult::Pass => DmarcFinding::Pass {
            dkim: *output.dkim_result() == DmarcResult::Pass,
            spf: *output.spf_result() == DmarcResult::Pass,
            policy,
        },
        DmarcResult::TempError(e) => DmarcFinding::TempError(e),
        DmarcResult::PermError(e) => DmarcFinding::PermError(e),
        DmarcResult::Fail(_) => DmarcFinding::Fail { policy },
        DmarcResult::None if output.dmarc_record().is_some() => DmarcFinding::Fail { policy },
        DmarcResult::None => DmarcFinding::NoRecord,
    }
}

// ---------------------------------------------------------------------------
// The decision and its reason text.

fn is_subdomain_or_same(child: &str, parent: &str) -> bool {
    child == parent
        || child
            .strip_suffix(parent)
            .is_some_and(|prefix| prefix.ends_with('.'))
}

/// The passing signature DMARC most likely aligned: d= equal to the From
/// domain, else a parent or child of it, else any passing one.
fn aligned_dkim<'a>(dkim: &'a [SigFinding], from: &str) -> Option<&'a SigFinding> {
    let passing = || dkim.iter().filter(|s| s.result == SigResult::Pass);
    passing()
        .find(|s| s.d == from)
        .or_else(|| {
            passing().find(|s| is_subdomain_or_same(from, &s.d) || is_subdomain_or_same(&s.d, from))
        })
        .or_else(|| passing().next())
}

/// "dkim=fail d=org.test (body hash mismatch)" or "dkim=none".
fn dkim_text(sig: &SigFinding, note: Option<&str>) -> String {
    let d = if sig.d.is_empty() { "?" } else { &sig.d };
    let mut text = format!("dkim={} d={d}", sig.result.word());
    match (&sig.detail, note) {
        (Some(detail), _) => text += &format!(" ({detail})"),
        (None, Some(note)) => text += &format!(" ({note})"),
        (None, None) => {}
    }
    text
}

fn spf_text(spf: Option<&SpfFinding>, note: Option<&str>) -> String {
    match spf {
        None => "spf=none (no identity to check)".into(),
        Some(spf) => {
            let mut text = format!("spf={}", spf_word(spf.result));
            match (&spf.detail, note) {
                (Some(detail), _) => text += &format!(" ({detail})"),
                (None, Some(note)) => text += &format!(" ({}, {note})", spf.domain),
                (None, None) => text += &format!(" ({})", spf.domain),
            }
            text
        }
    }
}

/// All results, passes annotated with `pass_note` (e.g. "not aligned with x").
fn summary(f: &Findings, dkim_pass_note: Option<&str>, spf_pass_note: Option<&str>) -> String {
    let mut parts: Vec<String> = if f.dkim.is_empty() {
        vec!["dkim=none (no signature)".into()]
    } else {
        f.dkim
            .iter()
            .map(|s| dkim_text(s, dkim_pass_note))
            .collect()
    };
    parts.push(spf_text(f.spf.as_ref(), spf_pass_note));
    parts.join(", ")
}

fn decide(f: &Findings) -> Result<Verdict, AuthError> {
    let verdict = |from_domain: Option<&str>, dmarc_pass: bool, reason: String| Verdict {
        from_domain: from_domain.map(str::to_owned),
        dkim: f
            .dkim
            .iter()
            .map(|s| (s.d.clone(), s.result == SigResult::Pass))
            .collect(),
        spf: f.spf.as_ref().map(|s| (s.domain.clone(), s.result)),
        dmarc_pass,
        reason,
    };
    let from = match &f.from {
        FromFinding::One(domain) => domain.as_str(),
        FromFinding::Missing => {
            return Ok(verdict(
                None,
                false,
                format!(
                    "no RFC5322.From address to authenticate: {}",
                    summary(f, None, None)
                ),
            ))
        }
        FromFinding::SeveralDomains(domains) => {
            return Ok(verdict(
                None,
                false,
                format!(
                    "From names addresses in several domains ({}): DMARC cannot vouch for it",
                    domains.join(", ")
                ),
            ))
        }
        FromFinding::SeveralFields(n, domain) => {
            return Ok(verdict(
                domain.as_deref(),
                false,
                format!("message has {n} From header fields (RFC 5322 allows one)"),
            ))
        }
    };
    let not_aligned = format!("not aligned with {from}");
    match &f.dmarc {
        DmarcFinding::Pass { dkim, spf, policy } => {
            let mut aligned = Vec::new();
            let dkim_sig = dkim.then(|| aligned_dkim(&f.dkim, from)).flatten();
            if let Some(sig) = dkim_sig {
                aligned.push(format!("aligned DKIM d={}", sig.d));
            }
            if *spf {
                if let Some(s) = &f.spf {
                    aligned.push(format!("aligned SPF pass for {}", s.domain));
                }
            }
            let mut reason = format!("DMARC pass for {from} ({})", aligned.join(", "));
            // mail-auth's Display words Unspecified as "none" too.
            if matches!(policy, Policy::None | Policy::Unspecified) {
                reason += "; policy p=none, accepted because an aligned check passed";
            }
            let others: Vec<String> = f
                .dkim
                .iter()
                .filter(|s| s.result != SigResult::Pass)
                .map(|s| dkim_text(s, None))
                .chain(
                    f.spf
                        .as_ref()
                        .filter(|s| s.result != SpfResult::Pass)
                        .map(|s| spf_text(Some(s), None)),
                )
                .collect();
            if !others.is_empty() {
                reason += &format!("; also {}", others.join(", "));
            }
            Ok(verdict(Some(from), true, reason))
        }
        DmarcFinding::NoRecord => {
            if let Some(sig) = f
                .dkim
                .iter()
                .find(|s| s.result == SigResult::Pass && s.d == from)
            {
                let reason = format!(
                    "no DMARC record for {from}; authenticated by aligned DKIM d={} \
                     (treated as DMARC pass with policy none)",
                    sig.d
                );
                return Ok(verdict(Some(from), true, reason));
            }
            let summary = summary(
                f,
                Some(&not_aligned),
                Some("SPF alone is not enough without a DMARC record"),
            );
            if let Some(sig) = f
                .dkim
                .iter()
                .find(|s| s.result == SigResult::TempError && s.d == from)
            {
                return Err(AuthError::Temporary(format!(
                    "DKIM key for d={} could not be fetched ({}); {summary}",
                    sig.d,
                    sig.detail.as_deref().unwrap_or("DNS error")
                )));
            }
            Ok(verdict(
                Some(from),
                false,
                format!("no DMARC record for {from} and no DKIM pass for d={from}: {summary}"),
            ))
        }
        DmarcFinding::Fail { policy } => Ok(verdict(
            Some(from),
            false,
            format!(
                "no aligned DKIM or SPF pass for {from}: {} (DMARC policy p={policy})",
                summary(f, Some(&not_aligned), Some(&not_aligned))
            ),
        )),
        DmarcFinding::TempError(e) => Err(AuthError::Temporary(format!(
            "DMARC check for {from} hit a DNS error ({}): {}",
            describe_error(e, None),
            summary(f, None, None)
        ))),
        DmarcFinding::PermError(e) => Ok(verdict(
            Some(from),
            false,
            format!(
                "DMARC check for {from} failed ({}): {}",
                describe_error(e, None),
                summary(f, None, None)
            ),
        )),
        DmarcFinding::NotChecked => Ok(verdict(
            Some(from),
            false,
            format!(
                "DMARC was not evaluated for {from}: {}",
                summary(f, None, None)
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_dkim_signatures_are_kept() {
        let sig = |n: usize| format!("DKIM-Signature: v=1; d=d{n}.test;\r\n\tb=abc\r\n");
        let mut mail = String::from("From: a@b.test\r\n");
        for n in 0..8 {
            mail += &sig(n);
        }
        mail += "dkim-signature: v=1; d=lower.test\r\nSubject: s\r\n\r\nDKIM-Signature: in the body\r\n";
        let (kept, dropped) = first_signatures(mail.as_bytes(), 5);
        let kept = String::from_utf8(kept.into_owned()).unwrap();
        assert_eq!(dropped, 4);
        assert!(
            kept.contains(&sig(4)) && !kept.contains("d5.test") && !kept.contains("lower.test"),
            "{kept}"
        );
        assert!(
            kept.ends_with("Subject: s\r\n\r\nDKIM-Signature: in the body\r\n"),
            "{kept}"
        );
        let few = "From: a@b.test\r\nDKIM-Signature: v=1\r\n\r\nbody";
        assert!(matches!(
            first_signatures(few.as_bytes(), 5),
            (Cow::Borrowed(_), 0)
        ));
    }

    fn sig(d: &str, result: SigResult, detail: Option<&str>) -> SigFinding {
        SigFinding {
            d: d.into(),
            result,
            detail: detail.map(str::to_owned),
        }
    }

    fn spf(domain: &str, result: SpfResult, detail: Option<&str>) -> Option<SpfFinding> {
        Some(SpfFinding {
            domain: domain.into(),
            result,
            detail: detail.map(str::to_owned),
        })
    }

    fn findings(
        from: &str,
        dkim: Vec<SigFinding>,
        spf: Option<SpfFinding>,
        dmarc: DmarcFinding,
    ) -> Findings {
        Findings {
            from: FromFinding::One(from.into()),
            dkim,
            spf,
            dmarc,
        }
    }

    #[test]
    fn pass_by_aligned_dkim_names_the_signature() {
        let f = findings(
            "example.org",
            vec![sig("example.org", SigResult::Pass, None)],
            spf("example.org", SpfResult::Pass, None),
            DmarcFinding::Pass {
                dkim: true,
                spf: true,
                policy: Policy::Reject,
            },
        );
        let v = decide(&f).unwrap();
        assert!(v.authenticated());
        assert_eq!(v.from_domain.as_deref(), Some("example.org"));
        assert_eq!(v.dkim, vec![("example.org".to_string(), true)]);
        assert_eq!(v.spf, Some(("example.org".into(), SpfResult::Pass)));
        assert_eq!(
            v.reason,
            "DMARC pass for example.org (aligned DKIM d=example.org, aligned SPF pass for example.org)"
        );
    }

    #[test]
    fn pass_by_spf_only_says_so_and_lists_the_failed_signature() {
        let f = findings(
            "example.org",
            vec![sig(
                "example.org",
                SigResult::Fail,
                Some("body hash mismatch"),
            )],
            spf("example.org", SpfResult::Pass, None),
            DmarcFinding::Pass {
                dkim: false,
                spf: true,
                policy: Policy::Reject,
            },
        );
        let v = decide(&f).unwrap();
        assert!(v.dmarc_pass);
        assert_eq!(
            v.reason,
            "DMARC pass for example.org (aligned SPF pass for example.org); \
             also dkim=fail d=example.org (body hash mismatch)"
        );
    }

    #[test]
    fn pass_with_policy_none_is_said() {
        let f = findings(
            "mail.example.org",
            vec![
                sig("esp.test", SigResult::Pass, None),
                sig("example.org", SigResult::Pass, None),
            ],
            spf("bounces.esp.test", SpfResult::Pass, None),
            DmarcFinding::Pass {
                dkim: true,
                spf: false,
                policy: Policy::None,
            },
        );
        let v = decide(&f).unwrap();
        assert!(v.dmarc_pass);
        assert_eq!(
            v.reason,
            "DMARC pass for mail.example.org (aligned DKIM d=example.org); \
             policy p=none, accepted because an aligned check passed"
        );
    }

    #[test]
    fn fail_names_what_failed() {
        let f = findings(
            "example.org",
            vec![sig(
                "example.org",
                SigResult::Fail,
                Some("body hash mismatch"),
            )],
            spf(
                "example.org",
                SpfResult::Fail,
                Some("192.0.2.1 not permitted by example.org"),
            ),
            DmarcFinding::Fail {
                policy: Policy::Reject,
            },
        );
        let v = decide(&f).unwrap();
        assert!(!v.authenticated());
        assert_eq!(v.dkim, vec![("example.org".to_string(), false)]);
        assert_eq!(v.spf, Some(("example.org".into(), SpfResult::Fail)));
        assert_eq!(
            v.reason,
            "no aligned DKIM or SPF pass for example.org: dkim=fail d=example.org \
             (body hash mismatch), spf=fail (192.0.2.1 not permitted by example.org) \
             (DMARC policy p=reject)"
        );
    }

    #[test]
    fn fail_without_signature_says_none() {
        let f = findings(
            "org.test",
            vec![],
            spf(
                "org.test",
                SpfResult::SoftFail,
                Some("127.0.0.2 not permitted by org.test, ~all"),
            ),
            DmarcFinding::Fail {
                policy: Policy::Quarantine,
            },
        );
        assert_eq!(
            decide(&f).unwrap().reason,
            "no aligned DKIM or SPF pass for org.test: dkim=none (no signature), \
             spf=softfail (127.0.0.2 not permitted by org.test, ~all) (DMARC policy p=quarantine)"
        );
    }

    #[test]
    fn unaligned_passes_are_called_unaligned() {
        let f = findings(
            "bank.test",
            vec![sig("org.test", SigResult::Pass, None)],
            spf("org.test", SpfResult::Pass, None),
            DmarcFinding::Fail {
                policy: Policy::Reject,
            },
        );
        let v = decide(&f).unwrap();
        assert!(!v.dmarc_pass);
        assert_eq!(v.dkim, vec![("org.test".to_string(), true)]);
        assert_eq!(
            v.reason,
            "no aligned DKIM or SPF pass for bank.test: dkim=pass d=org.test \
             (not aligned with bank.test), spf=pass (org.test, not aligned with bank.test) \
             (DMARC policy p=reject)"
        );
    }

    #[test]
    fn no_record_with_exact_dkim_pass_is_authenticated() {
        let f = findings(
            "plain.test",
            vec![sig("plain.test", SigResult::Pass, None)],
            spf(
                "plain.test",
                SpfResult::None,
                Some("no SPF record for plain.test"),
            ),
            DmarcFinding::NoRecord,
        );
        let v = decide(&f).unwrap();
        assert!(v.authenticated());
        assert_eq!(
            v.reason,
            "no DMARC record for plain.test; authenticated by aligned DKIM d=plain.test \
             (treated as DMARC pass with policy none)"
        );
    }

    #[test]
    fn no_record_and_spf_only_is_not_enough() {
        let f = findings(
            "plain.test",
            vec![sig("other.test", SigResult::Pass, None)],
            spf("plain.test", SpfResult::Pass, None),
            DmarcFinding::NoRecord,
        );
        let v = decide(&f).unwrap();
        assert!(!v.authenticated());
        assert_eq!(
            v.reason,
            "no DMARC record for plain.test and no DKIM pass for d=plain.test: \
             dkim=pass d=other.test (not aligned with plain.test), \
             spf=pass (plain.test, SPF alone is not enough without a DMARC record)"
        );
    }

    #[test]
    fn no_record_dns_failure_on_the_key_is_temporary() {
        let f = findings(
            "plain.test",
            vec![sig(
                "plain.test",
                SigResult::TempError,
                Some("DNS error: timed out"),
            )],
            None,
            DmarcFinding::NoRecord,
        );
        let err = decide(&f).unwrap_err();
        assert!(matches!(err, AuthError::Temporary(_)), "{err:?}");
        assert!(err.to_string().contains("DNS error: timed out"), "{err}");
    }

    #[test]
    fn dmarc_dns_failure_is_temporary() {
        let f = findings(
            "example.org",
            vec![],
            spf(
                "example.org",
                SpfResult::TempError,
                Some("DNS error for example.org"),
            ),
            DmarcFinding::TempError(mail_auth::Error::Dns(DnsError::Resolver(
                "timed out".into(),
            ))),
        );
        let err = decide(&f).unwrap_err();
        assert_eq!(
            err.to_string(),
            "sender authentication could not complete: DMARC check for example.org hit a \
             DNS error (DNS error: timed out): dkim=none (no signature), \
             spf=temperror (DNS error for example.org)"
        );
    }

    #[test]
    fn from_problems_are_refused_with_their_own_reason() {
        let mut f = findings("x.test", vec![], None, DmarcFinding::NotChecked);
        f.from = FromFinding::Missing;
        let v = decide(&f).unwrap();
        assert!(!v.authenticated());
        assert_eq!(v.from_domain, None);
        assert_eq!(
            v.reason,
            "no RFC5322.From address to authenticate: dkim=none (no signature), \
             spf=none (no identity to check)"
        );

        f.from = FromFinding::SeveralDomains(vec!["a.test".into(), "b.test".into()]);
        assert_eq!(
            decide(&f).unwrap().reason,
            "From names addresses in several domains (a.test, b.test): DMARC cannot vouch for it"
        );

        f.from = FromFinding::SeveralFields(2, Some("a.test".into()));
        let v = decide(&f).unwrap();
        assert!(!v.dmarc_pass);
        assert_eq!(v.from_domain.as_deref(), Some("a.test"));
        assert_eq!(
            v.reason,
            "message has 2 From header fields (RFC 5322 allows one)"
        );
    }

    #[test]
    fn error_descriptions() {
        let key = Some(("sel", "org.test"));
        let cases = [
            (
                mail_auth::Error::Dkim(DkimError::FailedBodyHashMatch),
                "body hash mismatch",
            ),
            (
                mail_auth::Error::Crypto(CryptoError::FailedVerification),
                "signature does not verify (signed header fields changed, or wrong key)",
            ),
            (
                mail_auth::Error::Dns(DnsError::RecordNotFound(
                    mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain,
                )),
                "no key at sel._domainkey.org.test",
            ),
            (
                mail_auth::Error::Dns(DnsError::Resolver("timed out".into())),
                "DNS error: timed out",
            ),
            (
                mail_auth::Error::Dkim(DkimError::SignatureExpired),
                "signature expired",
            ),
        ];
        for (err, text) in cases {
            assert_eq!(describe_error(&err, key), text);
        }
    }

    #[test]
    fn bare_lf_becomes_crlf_and_crlf_is_untouched() {
        assert_eq!(&*crlf(b"A: b\r\n\r\nx\r\n"), b"A: b\r\n\r\nx\r\n");
        assert!(matches!(crlf(b"A: b\r\n\r\nx\r\n"), Cow::Borrowed(_)));
        assert_eq!(&*crlf(b"A: b\n\nx\r\ny\n"), b"A: b\r\n\r\nx\r\ny\r\n");
    }

    #[test]
    fn tag_values_of_malformed_signatures() {
        assert_eq!(
            tag_value(b"v=1; a=rsa-sha256; d = Org.Test.;\r\n s=sel", "d").as_deref(),
            Some("org.test")
        );
        assert_eq!(tag_value(b"v=1; s=sel", "d"), None);
    }

    #[test]
    fn from_of_parsed_messages() {
        let one = b"From: A <a@Org.Test>\r\nTo: b@x.test\r\n\r\nhi\r\n";
        let m = AuthenticatedMessage::parse(one).unwrap();
        assert_eq!(from_finding(&m), FromFinding::One("org.test".into()));

        let two = b"From: a@org.test\r\nFrom: a@bank.test\r\n\r\nhi\r\n";
        let m = AuthenticatedMessage::parse(two).unwrap();
        assert_eq!(
            from_finding(&m),
            FromFinding::SeveralFields(2, Some("org.test".into()))
        );

        let several = b"From: a@org.test, b@bank.test\r\n\r\nhi\r\n";
        let m = AuthenticatedMessage::parse(several).unwrap();
        assert_eq!(
            from_finding(&m),
            FromFinding::SeveralDomains(vec!["org.test".into(), "bank.test".into()])
        );

        let none = b"Subject: x\r\n\r\nhi\r\n";
        let m = AuthenticatedMessage::parse(none).unwrap();
        assert_eq!(from_finding(&m), FromFinding::Missing);
    }

    #[test]
    fn resolver_with_explicit_nameservers_builds() {
        let ns: SocketAddr = "127.0.0.1:53".parse().unwrap();
        assert!(Authenticator::new(&[ns], Duration::from_secs(1)).is_ok());
    }

    /// The listener runs `verify` inside spawned tasks.
    #[test]
    fn verify_future_is_send_and_authenticator_is_shareable() {
        fn send<T: Send>(_: &T) {}
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<Authenticator>();
        let ns: SocketAddr = "127.0.0.1:53".parse().unwrap();
        let auth = Authenticator::new(&[ns], Duration::from_secs(1)).unwrap();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let future = auth.verify(b"From: a@b.test\r\n\r\n", ip, "h.test", "", "mta.test");
        send(&future);
    }
}
