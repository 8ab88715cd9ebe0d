//! A comparable instant taken from iCalendar DATE / DATE-TIME text.

use std::fmt;

/// An iCalendar DATE or DATE-TIME reduced to `YYYYMMDDHHMMSS` as an integer,
/// so capability limits (`min-date-time`, `max-date-time`) compare with `<`.
///
/// Floating and `TZID` times are taken at face value: a time-zone offset
/// moves a value by hours at most, which does not matter against limits
/// that are years apart in practice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp(u64);

impl Stamp {
    /// Parses `YYYYMMDD`, `YYYYMMDDTHHMMSS` or `YYYYMMDDTHHMMSSZ`.
    pub fn parse(s: &str) -> Option<Stamp> {
        let s = s.trim();
        let s = s.strip_suffix('Z').unwrap_or(s);
        let (date, time) = match s.split_once('T') {
            Some((d, t)) => (d, t),
            None => (s, "000000"),
        };
        if date.len() != 8 || time.len() != 6 {
            return None;
        }
        if !date.bytes().chain(time.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let v: u64 = format!("{date}{time}").parse().ok()?;
        Some(Stamp(v))
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = format!("{:014}", self.0);
        write!(f, "{}T{}Z", &s[..8], &s[8..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_date_times_order() {
        let d = Stamp::parse("20070505").unwrap();
        let t = Stamp::parse("20070505T130000Z").unwrap();
        assert!(d < t);
        assert_eq!(t.to_string(), "20070505T130000Z");
        assert_eq!(Stamp::parse("2007-05-05"), None);
        assert_eq!(Stamp::parse("20070505T1300"), None);
    }
}
