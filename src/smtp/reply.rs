//! The one SMTP/LMTP reply type: what the listener answers, what a relay or
//! an LMTP server answered, and what a delivery report quotes, so that codes
//! are compared and printed the same way everywhere.

use std::fmt;
use std::str::FromStr;

/// A basic reply code (RFC 5321 4.2): three digits, the first 2 to 5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReplyCode(u16);

impl ReplyCode {
    /// `None` outside 200..=599.
    pub const fn new(code: u16) -> Option<ReplyCode> {
        if code >= 200 && code <= 599 {
            Some(ReplyCode(code))
        } else {
            None
        }
    }

    pub const fn get(self) -> u16 {
        self.0
    }

    /// 2 positive, 3 intermediate, 4 transient failure, 5 permanent failure.
    pub const fn class(self) -> u16 {
        self.0 / 100
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:03}", self.0)
    }
}

/// An RFC 3463 enhanced status code, `class.subject.detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EnhancedStatus {
    class: u8,
    subject: u16,
    detail: u16,
}

impl EnhancedStatus {
    /// For codes written into the program (a bad one is a bug, caught at
    /// compile time in a `const`): panics unless `class` is 2, 4 or 5 and
    /// `subject` and `detail` have at most three digits. Codes from the wire
    /// go through [`FromStr`].
    pub const fn new(class: u8, subject: u16, detail: u16) -> EnhancedStatus {
        assert!(matches!(class, 2 | 4 | 5), "enhanced status class");
        assert!(subject <= 999 && detail <= 999, "enhanced status part");
        EnhancedStatus {
            class,
            subject,
            detail,
        }
    }

    pub const fn class(self) -> u8 {
        self.class
    }

    pub const fn subject(self) -> u16 {
        self.subject
    }

    pub const fn detail(self) -> u16 {
        self.detail
    }

    /// The enhanced code that opens a reply's `text`, when its class agrees
    /// with the reply code (RFC 2034 4), and the text after it.
    pub fn split_from(text: &str, code: ReplyCode) -> (Option<EnhancedStatus>, &str) {
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        match word.parse::<EnhancedStatus>() {
            Ok(status) if u16::from(status.class) == code.class() => {
                (Some(status), rest.trim_start())
            }
            _ => (None, text),
        }
    }
}

/// Why text is not an enhanced status code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("'{0}' is not an enhanced status code (2.x.y, 4.x.y or 5.x.y, parts of 1 to 3 digits)")]
pub struct EnhancedStatusError(pub String);

impl FromStr for EnhancedStatus {
    type Err = EnhancedStatusError;

    fn from_str(s: &str) -> Result<EnhancedStatus, EnhancedStatusError> {
        let bad = || EnhancedStatusError(s.to_string());
        let mut parts = s.split('.');
        let (class, subject, detail) =
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(c), Some(s), Some(d), None) => (c, s, d),
                _ => return Err(bad()),
            };
        let class = match class {
            "2" => 2,
            "4" => 4,
            "5" => 5,
            _ => return Err(bad()),
        };
        Ok(EnhancedStatus {
            class,
            subject: status_part(subject).ok_or_else(bad)?,
            detail: status_part(detail).ok_or_else(bad)?,
        })
    }
}

/// A subject or detail: 1 to 3 digits (RFC 3463 2).
pub(crate) fn status_part(s: &str) -> Option<u16> {
    let digits = (1..=3).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    digits.then(|| s.parse().ok()).flatten()
}

impl fmt::Display for EnhancedStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

/// One SMTP/LMTP reply: `250 2.0.0 text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpReply {
    pub code: ReplyCode,
    pub enhanced: Option<EnhancedStatus>,
    /// The text after the codes; multi-line replies joined by spaces.
    pub text: String,
}

impl SmtpReply {
    /// For replies written into the program: panics unless `code` is
    /// 200..=599 (see [`ReplyCode::new`] for codes from elsewhere).
    pub fn new(code: u16, enhanced: Option<EnhancedStatus>, text: impl Into<String>) -> SmtpReply {
        let Some(code) = ReplyCode::new(code) else {
            panic!("{code} is not an SMTP reply code");
        };
        SmtpReply {
            code,
            enhanced,
            text: text.into(),
        }
    }

    /// A reply from its code and its text as received, the enhanced code
    /// (if any) still at the start of the text.
    pub fn from_text(code: ReplyCode, text: &str) -> SmtpReply {
        let (enhanced, text) = EnhancedStatus::split_from(text.trim(), code);
        SmtpReply {
            code,
            enhanced,
            text: text.to_string(),
        }
    }

    /// 2xx: the recipient took the message.
    pub fn is_positive(&self) -> bool {
        self.code.class() == 2
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        self.code.class() == 4
    }

    /// Neither 2xx nor 4xx (5xx, or a code that makes no sense after DATA):
    /// do not try again.
    pub fn is_permanent(&self) -> bool {
        !self.is_positive() && !self.is_transient()
    }
}

impl fmt::Display for SmtpReply {
    /// `250 2.0.0 text` (`250 text` without an enhanced code); control
    /// characters in the text become spaces, so a reply is always one line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(enhanced) = self.enhanced {
            write!(f, " {enhanced}")?;
        }
        if !self.text.is_empty() {
            f.write_str(" ")?;
            for c in self.text.chars() {
                let c = if c.is_control() { ' ' } else { c };
                fmt::Write::write_char(f, c)?;
            }
        }
        Ok(())
    }
}

/// Why a line is not an SMTP reply line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a reply: {line}")]
pub struct ReplyLineError {
    pub line: String,
}

/// One line of a server reply as read: `550-5.1.1 text` (more lines follow)
/// or `550 5.1.1 text` (the last one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    pub code: ReplyCode,
    pub last: bool,
    /// After the code and its separator, enhanced code included.
    pub text: &'a str,
}

impl<'a> ReplyLine<'a> {
    /// `line` without its CRLF.
    pub fn parse(line: &'a str) -> Result<ReplyLine<'a>, ReplyLineError> {
        let bad = || ReplyLineError {
            line: line.to_string(),
        };
        let code = line
            .get(..3)
            .filter(|d| d.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|d| d.parse().ok())
            .and_then(ReplyCode::new)
            .ok_or_else(bad)?;
        let (last, text) = match line.as_bytes().get(3) {
            None => (true, ""),
            Some(b' ') => (true, &line[4..]),
            Some(b'-') => (false, &line[4..]),
            Some(_) => return Err(bad()),
        };
        Ok(ReplyLine { code, last, text })
    }
}

impl FromStr for SmtpReply {
    type Err = ReplyLineError;

    /// A one-line reply, or the first line of a longer one.
    fn from_str(line: &str) -> Result<SmtpReply, ReplyLineError> {
        let line = ReplyLine::parse(line)?;
        Ok(SmtpReply::from_text(line.code, line.text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(line: &str) -> Option<(u16, Option<String>)> {
        let reply: SmtpReply = line.parse().ok()?;
        Some((reply.code.get(), reply.enhanced.map(|e| e.to_string())))
    }

    #[test]
    fn replies_and_enhanced_codes() {
        let some = |code, e: &str| Some((code, Some(e.to_string())));
        assert_eq!(parsed("550 5.1.1 No such user here"), some(550, "5.1.1"));
        assert_eq!(parsed("550-5.1.1 first line"), some(550, "5.1.1"));
        assert_eq!(parsed("452 4.3.1 Insufficient"), some(452, "4.3.1"));
        assert_eq!(parsed("250 2.0.0 Ok: queued"), some(250, "2.0.0"));
        assert_eq!(parsed("556 5.1.10 null MX"), some(556, "5.1.10"));
        assert_eq!(parsed("554 5.123.999 x"), some(554, "5.123.999"));
        for no_enhanced in [
            "550 Mailbox unavailable",
            "550",
            "550 4.1.1 class disagrees",
            "550 5.1 too short",
            "550 5.1.1.1 too long",
            "550 5.1234.1 part too long",
            "550 3.1.1 bad class",
        ] {
            assert_eq!(parsed(no_enhanced), Some((550, None)), "{no_enhanced}");
        }
        for bad in ["5501 x", "abc", "150 x", "600 x", ""] {
            assert_eq!(parsed(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_text_keeps_what_is_not_a_code() {
        let r: SmtpReply = "550 5.1.1 No such user".parse().unwrap();
        assert_eq!(r.text, "No such user");
        let r: SmtpReply = "550 4.1.1 class disagrees".parse().unwrap();
        assert_eq!(
            (r.enhanced, r.text.as_str()),
            (None, "4.1.1 class disagrees")
        );
        let line = ReplyLine::parse("250-PIPELINING").unwrap();
        assert_eq!(
            (line.code.get(), line.last, line.text),
            (250, false, "PIPELINING")
        );
    }

    #[test]
    fn display_is_one_line() {
        let e = |c, s, d| Some(EnhancedStatus::new(c, s, d));
        assert_eq!(
            SmtpReply::new(250, e(2, 0, 0), "ok").to_string(),
            "250 2.0.0 ok"
        );
        assert_eq!(SmtpReply::new(250, None, "ok").to_string(), "250 ok");
        assert_eq!(SmtpReply::new(221, None, "").to_string(), "221");
        assert_eq!(
            SmtpReply::new(550, e(5, 7, 1), "a\r\nb").to_string(),
            "550 5.7.1 a  b"
        );
    }

    #[test]
    fn classes() {
        let r = |code| SmtpReply::new(code, None, "");
        assert!(r(250).is_positive() && !r(250).is_permanent());
        assert!(r(451).is_transient() && !r(451).is_permanent());
        assert!(r(550).is_permanent());
        assert!(r(354).is_permanent(), "not 2xx/4xx is permanent");
    }
}
