//! What each SMTP outcome means to the iSchedule sender: the request-status
//! and response-description of a recipient reached by mail (DESIGN.md
//! "Status mapping"). The defaults ship in `bridge-rules/status-map.toml`;
//! an admin's copy replaces them whole.

use std::str::FromStr;

use toml::{Table, Value};

use super::outcome::{AcceptedBy, Outcome};
use super::reply::{status_part, EnhancedStatus, ReplyCode, SmtpReply};
use crate::ischedule::RequestStatus;

/// The shipped map, built into the binary.
const EMBEDDED_TOML: &str = include_str!("../../bridge-rules/status-map.toml");
/// How the embedded map is named in messages.
pub const EMBEDDED_NAME: &str = "bridge-rules/status-map.toml (embedded)";

/// A status map error: which file, which key (`permanent[2].status`; array
/// indexes count from 0) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {}{why}", if key.is_empty() { String::new() } else { format!("{key}: ") })]
pub struct StatusMapError {
    pub file: String,
    pub key: String,
    pub why: String,
}

/// SMTP outcome -> iSchedule request-status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusMap {
    relay: RequestStatus,
    mx: RequestStatus,
    written: RequestStatus,
    temporary: RequestStatus,
    /// Ends with a catch-all (checked by `parse`).
    permanent: Vec<Rule>,
}

/// One `[[permanent]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    enhanced: Option<EnhancedPrefix>,
    code: Option<ReplyCode>,
    status: RequestStatus,
}

impl Rule {
    fn matches(&self, reply: &SmtpReply) -> bool {
        let code_ok = self.code.is_none_or(|c| c == reply.code);
        let enhanced_ok = match (&self.enhanced, reply.enhanced) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(prefix), Some(status)) => prefix.matches(status),
        };
        code_ok && enhanced_ok
    }

    fn is_catch_all(&self) -> bool {
        self.enhanced.is_none() && self.code.is_none()
    }
}

impl StatusMap {
    /// The shipped `bridge-rules/status-map.toml`.
    pub fn embedded() -> StatusMap {
        StatusMap::parse(EMBEDDED_TOML, EMBEDDED_NAME)
            .unwrap_or_else(|e| panic!("the shipped status map is broken: {e}"))
    }

    /// Reads a complete map; `source` names it in errors (usually the path).
    /// Every key is required, unknown keys are errors, and the `[[permanent]]`
    /// rules must end with a catch-all (a rule with neither `enhanced` nor
    /// `code`), with nothing after it.
    pub fn parse(text: &str, source: &str) -> Result<StatusMap, StatusMapError> {
        let err = |key: &str, why: String| StatusMapError {
            file: source.to_string(),
            key: key.to_string(),
            why,
        };
        let root: Table = text.parse().map_err(|e: toml::de::Error| {
            let line = e
                .span()
                .map(|s| format!("line {}: ", text[..s.start].lines().count().max(1)))
                .unwrap_or_default();
            err("", format!("{line}{}", e.message().trim_end()))
        })?;
        only_keys(&root, "", &["accepted", "temporary", "permanent"], &err)?;

        let accepted = table(&root, "accepted", &err)?;
        only_keys(accepted, "accepted.", &["relay", "mx", "written"], &err)?;
        let temporary = table(&root, "temporary", &err)?;
        only_keys(temporary, "temporary.", &["status"], &err)?;
        let success = |t: &Table, name: &str, key: &str| {
            let s = status(t, name, key, &err)?;
            if s.code.is_success() {
                Ok(s)
            } else {
                Err(err(
                    key,
                    format!("{s} is a failure: the message is on its way, so use 1.x or 2.x"),
                ))
            }
        };

        let relay = success(accepted, "relay", "accepted.relay")?;
        let mx = success(accepted, "mx", "accepted.mx")?;
        let written = success(accepted, "written", "accepted.written")?;
        let temporary = success(temporary, "status", "temporary.status")?;

        let Some(rules) = root.get("permanent") else {
            return Err(err(
                "permanent",
                "missing: list the [[permanent]] rules".into(),
            ));
        };
        let Value::Array(rules) = rules else {
            return Err(err("permanent", "must be [[permanent]] tables".into()));
        };
        let mut permanent: Vec<Rule> = Vec::with_capacity(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let key = format!("permanent[{i}]");
            if let Some(before) = permanent.iter().position(Rule::is_catch_all) {
                return Err(err(
                    &key,
                    format!("never used: permanent[{before}] before it matches every reply"),
                ));
            }
            let Value::Table(rule) = rule else {
                return Err(err(&key, "must be a table".into()));
            };
            only_keys(
                rule,
                &format!("{key}."),
                &["enhanced", "code", "status"],
                &err,
            )?;
            let enhanced = match rule.get("enhanced") {
                None => None,
                Some(v) => Some(
                    enhanced_prefix(v)
                        .map_err(|why| err(&format!("{key}.enhanced"), why.to_string()))?,
                ),
            };
            let code = match rule.get("code") {
                None => None,
                Some(Value::Integer(c)) if (500..=599).contains(c) => ReplyCode::new(*c as u16),
                Some(v) => {
                    return Err(err(
                        &format!("{key}.code"),
                        format!("{v} is not a 5xx reply code (500 to 599)"),
                    ))
                }
            };
            let status = status(rule, "status", &format!("{key}.status"), &err)?;
            if status.code.is_success() {
                return Err(err(
                    &format!("{key}.status"),
                    format!("{status} is a success: the mail was refused, so use 3.x, 4.x or 5.x"),
                ));
            }
            permanent.push(Rule {
                enhanced,
                code,
                status,
            });
        }
        if !permanent.iter().any(Rule::is_catch_all) {
            return Err(err(
                "permanent",
                "no catch-all: end with a [[permanent]] rule that has only `status`".into(),
            ));
        }

        Ok(StatusMap {
            relay,
            mx,
            written,
            temporary,
            permanent,
        })
    }

    /// The status and a response-description quoting what the mail system
    /// said, e.g. `3.7;Invalid calendar user` and
    /// `mail to reject@x.test refused: 550 5.1.1 No such user here`.
    pub fn status(&self, outcome: &Outcome, recipient: &str) -> (RequestStatus, String) {
        match outcome {
            Outcome::Accepted {
                by: AcceptedBy::Relay,
                reply,
            } => (
                self.relay.clone(),
                format!("mail to {recipient} accepted by the relay: {reply}"),
            ),
            Outcome::Accepted {
                by: AcceptedBy::Mx,
                reply,
            } => (
                self.mx.clone(),
                format!("mail to {recipient} accepted by its domain's mail server: {reply}"),
            ),
            Outcome::Written { .. } => (
                self.written.clone(),
                format!("mail to {recipient} written to the outbox, not sent: no mail server is configured"),
            ),
            Outcome::Temporary { reason } => (
                self.temporary.clone(),
                format!("mail to {recipient} deferred, will retry: {reason}"),
            ),
            Outcome::Permanent { reply } => {
                let status = self
                    .permanent
                    .iter()
                    .find(|r| r.matches(reply))
                    .map(|r| r.status.clone())
                    // parse() guarantees a catch-all; this only keeps `status` total.
                    .unwrap_or_else(RequestStatus::service_unavailable);
                (status, format!("mail to {recipient} refused: {reply}"))
            }
        }
    }
}

fn only_keys(
    t: &Table,
    prefix: &str,
    allowed: &[&str],
    err: &impl Fn(&str, String) -> StatusMapError,
) -> Result<(), StatusMapError> {
    match t.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(err(
            &format!("{prefix}{k}"),
            format!("unknown key (expected one of: {})", allowed.join(", ")),
        )),
    }
}

fn table<'a>(
    root: &'a Table,
    name: &str,
    err: &impl Fn(&str, String) -> StatusMapError,
) -> Result<&'a Table, StatusMapError> {
    match root.get(name) {
        Some(Value::Table(t)) => Ok(t),
        Some(_) => Err(err(name, format!("must be a [{name}] table"))),
        None => Err(err(
            name,
            format!("missing: the map needs a [{name}] table"),
        )),
    }
}

fn status(
    t: &Table,
    name: &str,
    key: &str,
    err: &impl Fn(&str, String) -> StatusMapError,
) -> Result<RequestStatus, StatusMapError> {
    match t.get(name) {
        Some(Value::String(s)) => RequestStatus::from_str(s).map_err(|e| err(key, e.to_string())),
        Some(v) => Err(err(key, format!("{v} is not a string like \"1.1;Sent\""))),
        None => Err(err(key, "missing".into())),
    }
}

/// The leading parts of an enhanced status code a rule names: "5.1." (or
/// "5.1") matches 5.1.x, "5.3.4" only itself. Parts compare as numbers, so
/// "5.1" does not match 5.10.x.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct EnhancedPrefix {
    class: u8,
    subject: Option<u16>,
    /// Only with `subject`.
    detail: Option<u16>,
}

impl EnhancedPrefix {
    fn matches(self, status: EnhancedStatus) -> bool {
        self.class == status.class()
            && self.subject.is_none_or(|s| s == status.subject())
            && self.detail.is_none_or(|d| d == status.detail())
    }
}

/// Why a rule's `enhanced` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum PrefixError {
    #[error("{0} is not a string like \"5.1.\"")]
    NotAString(String),
    #[error("'{0}' is not an enhanced status code or prefix like \"5.1.\" or \"5.3.4\"")]
    Syntax(String),
    #[error("'{0}' never matches: refusals carry class 5 enhanced codes (5.x.y)")]
    NotClass5(String),
}

fn enhanced_prefix(v: &Value) -> Result<EnhancedPrefix, PrefixError> {
    let Value::String(s) = v else {
        return Err(PrefixError::NotAString(v.to_string()));
    };
    let bad = || PrefixError::Syntax(s.clone());
    let parts: Vec<u16> = s
        .strip_suffix('.')
        .unwrap_or(s)
        .split('.')
        .map(status_part)
        .collect::<Option<_>>()
        .ok_or_else(bad)?;
    let (class, subject, detail) = match parts[..] {
        [class] => (class, None, None),
        [class, subject] => (class, Some(subject), None),
        [class, subject, detail] => (class, Some(subject), Some(detail)),
        _ => return Err(bad()),
    };
    if class != 5 {
        return Err(PrefixError::NotClass5(s.clone()));
    }
    Ok(EnhancedPrefix {
        class: 5,
        subject,
        detail,
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::ischedule::StatusCode;
    use crate::smtp::outcome::Deferral;

    fn e(class: u8, subject: u16, detail: u16) -> Option<EnhancedStatus> {
        Some(EnhancedStatus::new(class, subject, detail))
    }

    fn permanent(code: u16, enhanced: Option<EnhancedStatus>, text: &str) -> Outcome {
        Outcome::Permanent {
            reply: SmtpReply::new(code, enhanced, text),
        }
    }

    fn status_of(map: &StatusMap, outcome: &Outcome) -> String {
        map.status(outcome, "x@y.test").0.to_string()
    }

    #[test]
    fn embedded_map_parses_and_follows_the_design_table() {
        let map = StatusMap::embedded();
        let accepted = |by| Outcome::Accepted {
            by,
            reply: SmtpReply::new(250, None, "OK"),
        };
        assert_eq!(status_of(&map, &accepted(AcceptedBy::Relay)), "1.1;Sent");
        assert_eq!(status_of(&map, &accepted(AcceptedBy::Mx)), "1.2;Delivered");
        let written = Outcome::Written {
            path: PathBuf::from("/o/1.eml"),
        };
        assert_eq!(status_of(&map, &written), "1.0;Pending");
        let temporary = Outcome::Temporary {
            reason: Deferral::Failure("relay down".into()),
        };
        assert_eq!(status_of(&map, &temporary), "1.0;Pending");
        for (code, enhanced, want) in [
            (550, e(5, 1, 1), "3.7;Invalid calendar user"),
            (553, e(5, 1, 10), "3.7;Invalid calendar user"),
            (550, e(5, 7, 1), "3.8;No authority"),
            (552, None, "3.10;Request entity too large"),
            (552, e(5, 2, 2), "3.10;Request entity too large"),
            (554, e(5, 3, 4), "3.10;Request entity too large"),
            (554, e(5, 3, 40), "5.1;Service unavailable"),
            (554, e(5, 6, 0), "5.1;Service unavailable"),
            (550, None, "5.1;Service unavailable"),
        ] {
            assert_eq!(
                status_of(&map, &permanent(code, enhanced, "x")),
                want,
                "{code} {enhanced:?}"
            );
        }
    }

    #[test]
    fn descriptions_quote_the_mail_system() {
        let map = StatusMap::embedded();
        let (status, text) = map.status(
            &permanent(550, e(5, 1, 1), "No such user here"),
            "reject@x.test",
        );
        assert_eq!(status.code, StatusCode::INVALID_USER);
        assert_eq!(
            text,
            "mail to reject@x.test refused: 550 5.1.1 No such user here"
        );
        let (_, text) = map.status(
            &Outcome::Temporary {
                reason: Deferral::Reply(SmtpReply::new(
                    451,
                    Some(EnhancedStatus::new(4, 3, 0)),
                    "Temporary failure, try later",
                )),
            },
            "t@x.test",
        );
        assert_eq!(
            text,
            "mail to t@x.test deferred, will retry: 451 4.3.0 Temporary failure, try later"
        );
        let (_, text) = map.status(
            &Outcome::Written {
                path: PathBuf::from("/var/secret/outbox/1.eml"),
            },
            "w@x.test",
        );
        assert!(
            !text.contains("secret"),
            "no local paths to remote senders: {text}"
        );
    }

    #[test]
    fn rules_combine_code_and_enhanced_and_first_match_wins() {
        let map = StatusMap::parse(
            r#"
            [accepted]
            relay = "2.0;Success"
            mx = "2.0;Success"
            written = "1.0;Pending"
            [temporary]
            status = "1.0;Pending"
            [[permanent]]
            code = 550
            enhanced = "5.1.1"
            status = "3.7;No such user"
            [[permanent]]
            enhanced = "5.1"
            status = "3.7;Bad address"
            [[permanent]]
            status = "5.3;Elsewhere"
            "#,
            "t.toml",
        )
        .unwrap();
        assert_eq!(
            status_of(&map, &permanent(550, e(5, 1, 1), "")),
            "3.7;No such user"
        );
        assert_eq!(
            status_of(&map, &permanent(553, e(5, 1, 1), "")),
            "3.7;Bad address"
        );
        assert_eq!(
            status_of(&map, &permanent(550, e(5, 10, 1), "")),
            "5.3;Elsewhere",
            "5.1 is not a text prefix of 5.10"
        );
        assert_eq!(status_of(&map, &permanent(550, None, "")), "5.3;Elsewhere");
    }

    fn parse_error(text: &str) -> StatusMapError {
        StatusMap::parse(text, "admin.toml").unwrap_err()
    }

    const HEAD: &str = r#"
        [accepted]
        relay = "1.1;Sent"
        mx = "1.2;Delivered"
        written = "1.0;Pending"
        [temporary]
        status = "1.0;Pending"
    "#;

    #[test]
    fn errors_name_file_key_and_reason() {
        let e = parse_error(&format!(
            "{HEAD}[[permanent]]\nenhanced = \"5.1.\"\nstatus = \"3.7;x\"\n[[permanent]]\ncode = 552\nstatus = \"3.10;x\"\n[[permanent]]\nstatus = \"bogus\"\n"
        ));
        assert_eq!(e.file, "admin.toml");
        assert_eq!(e.key, "permanent[2].status");
        assert!(e.why.contains("bogus"), "{e}");
        assert!(
            e.to_string()
                .starts_with("admin.toml: permanent[2].status: "),
            "{e}"
        );

        let e = parse_error(&format!(
            "{HEAD}[[permanent]]\nenhanced = \"5.1.\"\nstatus = \"3.7;x\"\n"
        ));
        assert_eq!(e.key, "permanent");
        assert!(e.why.contains("catch-all"), "{e}");

        let e = parse_error(&format!(
            "{HEAD}[[permanent]]\nstatus = \"5.1;x\"\n[[permanent]]\ncode = 552\nstatus = \"3.10;x\"\n"
        ));
        assert_eq!(e.key, "permanent[1]");
        assert!(e.why.contains("permanent[0]"), "{e}");

        for (rule, key, why) in [
            (
                "enhanced = \"4.1.\"",
                "permanent[0].enhanced",
                "never matches",
            ),
            (
                "enhanced = \"5.x\"",
                "permanent[0].enhanced",
                "not an enhanced",
            ),
            (
                "enhanced = \"5.1.1.1\"",
                "permanent[0].enhanced",
                "not an enhanced",
            ),
            ("enhanced = 5", "permanent[0].enhanced", "not a string"),
            ("code = 451", "permanent[0].code", "5xx"),
            ("code = \"550\"", "permanent[0].code", "5xx"),
            ("colour = 1", "permanent[0].colour", "unknown key"),
        ] {
            let e = parse_error(&format!(
                "{HEAD}[[permanent]]\n{rule}\nstatus = \"3.7;x\"\n[[permanent]]\nstatus = \"5.1;x\"\n"
            ));
            assert_eq!((e.key.as_str(), e.why.contains(why)), (key, true), "{e}");
        }

        let e = parse_error(&format!("{HEAD}[[permanent]]\nstatus = \"2.0;Success\"\n"));
        assert_eq!(e.key, "permanent[0].status");
        assert!(e.why.contains("success"), "{e}");

        let e = parse_error(&HEAD.replace("1.1;Sent", "5.1;Oops"));
        assert_eq!(e.key, "accepted.relay");
        let e = parse_error(&HEAD.replace("mx = \"1.2;Delivered\"", ""));
        assert_eq!((e.key.as_str(), e.why.as_str()), ("accepted.mx", "missing"));
        let e = parse_error(&HEAD.replace("[temporary]", "[temporarily]"));
        assert_eq!(e.key, "temporarily");
        let e = parse_error(&format!("permanent = 3\n{HEAD}"));
        assert_eq!(e.key, "permanent");
        let e = parse_error("[accepted\n");
        assert_eq!(e.key, "");
        assert!(e.why.starts_with("line 1: "), "{e}");
    }
}
