//! The mock's record of what it received.

use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// One request the mock received, with what it answered.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedRequest {
    /// Order of arrival among all requests (1-based).
    pub seq: u64,
    /// The data request number (1-based) that faults are counted by; `None` for the token
    /// endpoint, `/admin/*` and `/health`.
    pub data_request: Option<u64>,
    /// When it arrived (wall clock).
    pub at: SystemTime,
    /// When it arrived, since the mock started (monotonic).
    pub elapsed: Duration,
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// Headers of interest (auth, signatures, content type, encoding), lower-case names.
    pub headers: Vec<(String, String)>,
    /// The status answered; `0` when the connection was reset instead, or when a `slow`
    /// fault delayed the answer (such requests are logged on arrival).
    pub status: u16,
    /// The injected fault, if any (`rate_limited`, `reset`, ...).
    pub fault: Option<String>,
    /// For a `429`: the earliest time its `Retry-After` allowed the next request.
    pub retry_after_until: Option<SystemTime>,
}

impl LoggedRequest {
    /// A header's value, by lower-case name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A query parameter's (decoded) value.
    pub fn query_param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_bytes())
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The entry as JSON (for `GET /admin/requests`).
    pub fn to_json(&self) -> Value {
        let ms =
            |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        json!({
            "seq": self.seq,
            "data_request": self.data_request,
            "at_unix_ms": ms(self.at),
            "elapsed_ms": self.elapsed.as_millis() as u64,
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "status": self.status,
            "fault": self.fault,
            "retry_after_until_unix_ms": self.retry_after_until.map(ms),
        })
    }
}
