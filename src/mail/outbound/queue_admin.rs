//! Queue administration shared by the `queue` command and the running
//! bridge's admin endpoint, so both say the same thing.

use serde::{Deserialize, Serialize};

use crate::store::{Store, StoreError, UnixTime};

/// One queued message as an admin sees it (without the message bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub id: u64,
    pub recipient: String,
    pub envelope_from: String,
    pub attempts: u32,
    pub queued_at: UnixTime,
    pub next_attempt: UnixTime,
    pub last_error: Option<String>,
    pub bytes: usize,
}

/// What an admin asks of the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    List,
    Retry(u64),
    Drop(u64),
}

/// What the queue answers; the admin endpoint sends it as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    List(Vec<Entry>),
    Done { id: u64, done: bool },
}

pub fn run(store: &dyn Store, action: Action, now: UnixTime) -> Result<Answer, StoreError> {
    Ok(match action {
        Action::List => Answer::List(list(store)?),
        Action::Retry(id) => Answer::Done {
            id,
            done: retry(store, id, now)?,
        },
        Action::Drop(id) => Answer::Done {
            id,
            done: drop(store, id)?,
        },
    })
}

/// The admin endpoint's path for an action (the running bridge's side).
pub const ADMIN_PATH: &str = "/.ischedule-bridge/queue";

impl Action {
    /// `GET /.ischedule-bridge/queue`, `POST …/ID/retry`, `DELETE …/ID`.
    /// Whole segments only: `…/queue7` is another path, not item 7, and
    /// goes to the origin like any path that is not the bridge's.
    pub fn from_http(method: &str, path: &str) -> Option<Action> {
        let parts: Vec<&str> = match path.strip_prefix(ADMIN_PATH)? {
            "" => Vec::new(),
            rest => rest.strip_prefix('/')?.split('/').collect(),
        };
        match (method, parts.as_slice()) {
            ("GET", []) => Some(Action::List),
            ("POST", [id, "retry"]) => id.parse().ok().map(Action::Retry),
            ("DELETE", [id]) => id.parse().ok().map(Action::Drop),
            _ => None,
        }
    }

    pub fn to_http(self) -> (&'static str, String) {
        match self {
            Action::List => ("GET", ADMIN_PATH.to_string()),
            Action::Retry(id) => ("POST", format!("{ADMIN_PATH}/{id}/retry")),
            Action::Drop(id) => ("DELETE", format!("{ADMIN_PATH}/{id}")),
        }
    }
}

pub fn list(store: &dyn Store) -> Result<Vec<Entry>, StoreError> {
    Ok(store
        .list()?
        .into_iter()
        .map(|(id, m)| Entry {
            id,
            recipient: m.recipient,
            envelope_from: m.envelope_from,
            attempts: m.attempts,
            queued_at: m.queued_at,
            next_attempt: m.next_attempt,
            last_error: m.last_error,
            bytes: m.message.len(),
        })
        .collect())
}

/// Makes a message due now; `false` if there is no such message.
pub fn retry(store: &dyn Store, id: u64, now: UnixTime) -> Result<bool, StoreError> {
    let Some(mail) = store.get(id)? else {
        return Ok(false);
    };
    let last = mail.last_error.unwrap_or_default();
    store.reschedule(id, now, mail.attempts, &last)?;
    Ok(true)
}

/// Removes a message without sending it; `false` if there is no such message.
pub fn drop(store: &dyn Store, id: u64) -> Result<bool, StoreError> {
    Ok(store.remove(id)?.is_some())
}

/// The text table `queue list` prints.
pub fn table(entries: &[Entry], now: UnixTime) -> String {
    if entries.is_empty() {
        return "queue is empty\n".into();
    }
    let mut out = format!(
        "{:>6}  {:>8}  {:>9}  {:<32}  last error\n",
        "id", "attempts", "next in", "recipient"
    );
    for e in entries {
        let next = e.next_attempt.saturating_sub(now);
        out += &format!(
            "{:>6}  {:>8}  {:>8}s  {:<32}  {}\n",
            e.id,
            e.attempts,
            next,
            e.recipient,
            e.last_error.as_deref().unwrap_or("-")
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_round_trip_through_http() {
        for a in [Action::List, Action::Retry(7), Action::Drop(12)] {
            let (method, path) = a.to_http();
            assert_eq!(Action::from_http(method, &path), Some(a));
        }
        assert_eq!(Action::from_http("GET", "/.ischedule-bridge/queue/x"), None);
        assert_eq!(Action::from_http("POST", "/ischedule"), None);
    }

    #[test]
    fn only_whole_segments_name_the_queue() {
        assert_eq!(Action::from_http("GET", "/.ischedule-bridge/queued"), None);
        assert_eq!(
            Action::from_http("DELETE", "/.ischedule-bridge/queue7"),
            None
        );
        assert_eq!(
            Action::from_http("POST", "/.ischedule-bridge/queue7/retry"),
            None
        );
        assert_eq!(
            Action::from_http("DELETE", "/.ischedule-bridge/queue//7"),
            None
        );
    }
}
