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
    /// Parses `YYYYMMDD`, `YYYYMMDDTHHMMSS` or `YYYYMMDDTHHMMSSZ`; `None`
    /// for a date or time that does not exist (RFC 5545 3.3.4, 3.3.12; a
    /// leap second 60 is allowed).
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
        let num = |s: &str| s.parse::<u64>().ok();
        let (year, month, day) = (num(&date[..4])?, num(&date[4..6])?, num(&date[6..])?);
        let (hour, minute, second) = (num(&time[..2])?, num(&time[2..4])?, num(&time[4..])?);
        let valid = (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day)
            && hour <= 23
            && minute <= 59
            && second <= 60;
        valid.then(|| {
            Stamp(
                ((year * 100 + month) * 100 + day) * 1_000_000
                    + (hour * 100 + minute) * 100
                    + second,
            )
        })
    }
    /// The UTC instant `secs` after the Unix epoch (for DTSTAMP values the
    /// bridge writes itself).
    pub fn from_unix(secs: u64) -> Stamp {
        let (year, month, day) = civil_from_days((secs / 86_400) as i64);
        let rem = secs % 86_400;
        let date = (year as u64) * 10_000 + u64::from(month) * 100 + u64::from(day);
        let time = (rem / 3600) * 10_000 + (rem % 3600 / 60) * 100 + rem % 60;
        Stamp(date * 1_000_000 + time)
    }
}

/// The Gregorian `(year, month, day)` of a day counted from 1970-01-01,
/// after H. Hinnant's public-domain `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

fn days_in_month(year: u64, month: u64) -> u64 {
    match month {
        2 if year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400)) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
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

    #[test]
    fn impossible_dates_and_times_are_refused() {
        for bad in [
            "20301301",
            "20300230",
            "20290229",
            "20300100",
            "20300101T240000Z",
            "20300101T256199Z",
            "20300101T006100",
        ] {
            assert_eq!(Stamp::parse(bad), None, "{bad}");
        }
        for good in [
            "20280229",
            "20000229",
            "20301231T235960Z",
            "20300101T000000",
        ] {
            assert!(Stamp::parse(good).is_some(), "{good}");
        }
    }

    #[test]
    fn unix_time_becomes_a_utc_stamp() {
        assert_eq!(Stamp::from_unix(0).to_string(), "19700101T000000Z");
        assert_eq!(
            Stamp::from_unix(951_782_400).to_string(),
            "20000229T000000Z"
        );
        assert_eq!(
            Stamp::from_unix(1_795_263_903).to_string(),
            "20261121T122503Z"
        );
    }
}
