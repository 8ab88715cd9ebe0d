//! iTIP methods and the calendar component kinds that carry them (RFC 5546).

use std::fmt;

/// An iTIP `METHOD` (RFC 5546 section 1.4). Exhaustive: iSchedule tables 1
/// and 2 define a rule for every one of them, and nothing else is scheduling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Publish,
    Request,
    Reply,
    Add,
    Cancel,
    Refresh,
    Counter,
    DeclineCounter,
}

/// Which calendar user in the object a header has to name (spec tables 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Organizer,
    Attendee,
}

impl Method {
    pub const ALL: [Method; 8] = [
        Method::Publish,
        Method::Request,
        Method::Reply,
        Method::Add,
        Method::Cancel,
        Method::Refresh,
        Method::Counter,
        Method::DeclineCounter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Publish => "PUBLISH",
            Method::Request => "REQUEST",
            Method::Reply => "REPLY",
            Method::Add => "ADD",
            Method::Cancel => "CANCEL",
            Method::Refresh => "REFRESH",
            Method::Counter => "COUNTER",
            Method::DeclineCounter => "DECLINECOUNTER",
        }
    }

    /// Case-insensitive, because real clients send `method=request`.
    pub fn parse(s: &str) -> Option<Method> {
        Method::ALL
            .into_iter()
            .find(|m| m.as_str().eq_ignore_ascii_case(s.trim()))
    }

    /// Table 1: whom the `Originator` header must match.
    pub fn originator_role(self) -> Role {
        match self {
            Method::Reply | Method::Refresh | Method::Counter => Role::Attendee,
            _ => Role::Organizer,
        }
    }

    /// Table 2: whom every `Recipient` must match; `None` for PUBLISH, which
    /// has no requirement.
    pub fn recipient_role(self) -> Option<Role> {
        match self {
            Method::Publish => None,
            Method::Reply | Method::Refresh | Method::Counter => Some(Role::Organizer),
            _ => Some(Role::Attendee),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The iCalendar component types iSchedule schedules (spec 10.2.1.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ComponentKind {
    VEvent,
    VTodo,
    VJournal,
    VFreeBusy,
}

impl ComponentKind {
    pub const ALL: [ComponentKind; 4] = [
        ComponentKind::VEvent,
        ComponentKind::VTodo,
        ComponentKind::VJournal,
        ComponentKind::VFreeBusy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::VEvent => "VEVENT",
            ComponentKind::VTodo => "VTODO",
            ComponentKind::VJournal => "VJOURNAL",
            ComponentKind::VFreeBusy => "VFREEBUSY",
        }
    }

    pub fn parse(s: &str) -> Option<ComponentKind> {
        ComponentKind::ALL
            .into_iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(s.trim()))
    }
}

impl fmt::Display for ComponentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_round_trip_case_insensitively() {
        for m in Method::ALL {
            assert_eq!(Method::parse(&m.as_str().to_lowercase()), Some(m));
        }
        assert_eq!(Method::parse("FORWARD"), None);
    }

    #[test]
    fn tables_one_and_two() {
        assert_eq!(Method::Reply.originator_role(), Role::Attendee);
        assert_eq!(Method::Request.originator_role(), Role::Organizer);
        assert_eq!(Method::Counter.recipient_role(), Some(Role::Organizer));
        assert_eq!(
            Method::DeclineCounter.recipient_role(),
            Some(Role::Attendee)
        );
        assert_eq!(Method::Publish.recipient_role(), None);
    }
}
