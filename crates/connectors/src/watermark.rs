//! Guards on incremental watermarks, shared by the HTTP and SQL sources.
//!
//! A watermark only moves forward, so one bad value would end incremental reading for
//! good: a record stamped `2999-01-01` (an upstream clock or record gone wrong) makes every
//! later run ask for records newer than that, and a value of another type than the
//! watermark's (`"not a date"` among timestamps) is sent back to the upstream, which
//! refuses it. A value later than the run's start plus `future_tolerance`, or not of the
//! watermark's type, therefore never becomes the watermark: its record is still delivered,
//! and the source reports it as `contract_changed`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value;
use std::cmp::Ordering;
use std::time::Duration;

/// Times without a zone may be local times, up to 14 hours ahead of UTC: they get this
/// much more room before they count as in the future.
const LOCAL_TIME_ALLOWANCE: i64 = 14 * 3600;

/// The type of a watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An RFC 3339 timestamp, a date, or a date and time without a zone.
    Time,
    /// A number (an id, a version, Unix seconds).
    Number,
    /// Any other text (compared as text).
    Text,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Time => "a timestamp",
            Kind::Number => "a number",
            Kind::Text => "text",
        }
    }
}

/// A watermark value read for comparing.
#[derive(Debug, Clone, PartialEq)]
enum Parsed {
    /// The instant, and whether the text had no zone (a local time, maybe).
    Time(DateTime<Utc>, bool),
    Number(f64),
    Text(String),
}

impl Parsed {
    fn of(v: &Value) -> Option<Parsed> {
        match v {
            Value::Number(n) => n.as_f64().map(Parsed::Number),
            Value::String(s) => Some(
                parse_time(s)
                    .map(|(t, naive)| Parsed::Time(t, naive))
                    .or_else(|| s.trim().parse::<f64>().ok().map(Parsed::Number))
                    .unwrap_or_else(|| Parsed::Text(s.clone())),
            ),
            _ => None,
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Parsed::Time(..) => Kind::Time,
            Parsed::Number(_) => Kind::Number,
            Parsed::Text(_) => Kind::Text,
        }
    }
}

/// A timestamp as a watermark holds it: RFC 3339, a date and time without a zone (read
/// as UTC; the flag says so), or a date.
pub(crate) fn parse_time(s: &str) -> Option<(DateTime<Utc>, bool)> {
    let s = s.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some((t.with_timezone(&Utc), false));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Some((t.and_utc(), true));
        }
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| (t.and_utc(), true))
}

/// How two watermark values compare: times by instant, numbers by value, text by its
/// order; `None` for values of different types.
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (Parsed::of(a)?, Parsed::of(b)?) {
        (Parsed::Time(x, _), Parsed::Time(y, _)) => Some(x.cmp(&y)),
        (Parsed::Number(x), Parsed::Number(y)) => x.partial_cmp(&y),
        (Parsed::Text(x), Parsed::Text(y)) => Some(x.cmp(&y)),
        _ => None,
    }
}

/// The later of two watermarks. Of two values of different types, a timestamp or a number
/// wins over text, and otherwise the first is kept.
pub(crate) fn newer(a: Option<Value>, b: Option<Value>) -> Option<Value> {
    let (a, b) = match (a.filter(|v| !v.is_null()), b.filter(|v| !v.is_null())) {
        (None, x) | (x, None) => return x,
        (Some(a), Some(b)) => (a, b),
    };
    let later = match compare(&a, &b) {
        Some(o) => o == Ordering::Less,
        None => {
            let text = |v: &Value| Parsed::of(v).is_none_or(|p| p.kind() == Kind::Text);
            text(&a) && !text(&b)
        }
    };
    Some(if later { b } else { a })
}

/// Decides which values may become the watermark, and keeps what it left out for a report.
#[derive(Debug)]
pub(crate) struct Guard {
    /// The field or column, for messages.
    field: String,
    /// The watermark's type: declared, or learned from the first values read.
    kind: Option<Kind>,
    /// The type was declared (by a schema or `initial`): values never change it.
    declared: bool,
    /// Numbers are Unix seconds (a column declared as a timestamp): bounded like times.
    seconds: bool,
    /// The latest instant a zoned value may hold: the run's start plus the tolerance.
    limit: DateTime<Utc>,
    tolerance: Duration,
    ahead: Vec<String>,
    ahead_count: usize,
    odd: Vec<String>,
    odd_count: usize,
}

impl Guard {
    /// A guard for a run that started at `started`.
    pub(crate) fn new(field: &str, started: DateTime<Utc>, tolerance: Duration) -> Guard {
        let limit = chrono::Duration::from_std(tolerance)
            .ok()
            .and_then(|d| started.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        Guard {
            field: field.to_owned(),
            kind: None,
            declared: false,
            seconds: false,
            limit,
            tolerance,
            ahead: Vec::new(),
            ahead_count: 0,
            odd: Vec::new(),
            odd_count: 0,
        }
    }

    /// Declares the watermark's type (a column type, the form of `initial`); `seconds`:
    /// numbers are Unix seconds.
    pub(crate) fn declare(&mut self, kind: Kind, seconds: bool) {
        self.kind = Some(kind);
        self.declared = true;
        self.seconds = seconds;
    }

    /// Declares the type a value has (`initial`), if it has one.
    pub(crate) fn declare_like(&mut self, v: &Value) {
        if let Some(p) = Parsed::of(v) {
            self.declare(p.kind(), false);
        }
    }

    /// The watermark's type, when known.
    #[cfg(test)]
    pub(crate) fn kind(&self) -> Option<Kind> {
        self.kind
    }

    /// Learns the type from a set of values when it is not known yet: a timestamp if any
    /// is one, else a number if any is one, else text.
    pub(crate) fn learn<'a>(&mut self, values: impl Iterator<Item = &'a Value>) {
        if self.kind.is_some() {
            return;
        }
        let mut best: Option<Kind> = None;
        for v in values {
            best = match (best, Parsed::of(v).map(|p| p.kind())) {
                (_, Some(Kind::Time)) | (Some(Kind::Time), _) => Some(Kind::Time),
                (_, Some(Kind::Number)) | (Some(Kind::Number), _) => Some(Kind::Number),
                (b, k) => b.or(k),
            };
        }
        self.kind = best;
    }

    /// Why a value may not be the watermark, or `None` when it may.
    pub(crate) fn refuse(&self, v: &Value) -> Option<Refusal> {
        let p = Parsed::of(v)?;
        let kind = self.kind.unwrap_or(p.kind());
        let ahead = |t: DateTime<Utc>, naive: bool| {
            let extra = if naive { LOCAL_TIME_ALLOWANCE } else { 0 };
            t.timestamp() > self.limit.timestamp().saturating_add(extra)
        };
        match (&p, kind) {
            (Parsed::Time(t, naive), Kind::Time) => ahead(*t, *naive).then_some(Refusal::Ahead),
            (Parsed::Number(n), Kind::Number) => {
                (self.seconds && *n > self.limit.timestamp() as f64).then_some(Refusal::Ahead)
            }
            (Parsed::Number(n), Kind::Time) if self.seconds => {
                (*n > self.limit.timestamp() as f64).then_some(Refusal::Ahead)
            }
            (Parsed::Text(_), Kind::Text) => None,
            _ => Some(Refusal::Odd),
        }
    }

    /// Whether a value read may become the watermark; a value that may not is kept for
    /// [`Guard::report`]. Nulls and missing values never count, silently.
    pub(crate) fn admit(&mut self, v: &Value) -> bool {
        if v.is_null() {
            return false;
        }
        if self.kind.is_none() {
            self.learn(std::iter::once(v));
        } else if !self.declared
            && self.kind == Some(Kind::Text)
            && Parsed::of(v).is_some_and(|p| p.kind() != Kind::Text)
        {
            // Text came first, but the values are timestamps or numbers.
            self.kind = Parsed::of(v).map(|p| p.kind());
        }
        let shown = || match v {
            Value::String(s) => format!("`{}`", crate::cut(s, 60)),
            other => format!("`{}`", crate::cut(&other.to_string(), 60)),
        };
        match self.refuse(v) {
            None => true,
            Some(Refusal::Ahead) => {
                self.ahead_count += 1;
                if self.ahead.len() < 3 {
                    self.ahead.push(shown());
                }
                false
            }
            Some(Refusal::Odd) => {
                self.odd_count += 1;
                if self.odd.len() < 3 {
                    self.odd.push(shown());
                }
                false
            }
        }
    }

    /// What was left out of the watermark since the last report, `at` a place (`page 3`),
    /// in sentences for `contract_changed` events.
    pub(crate) fn report(&mut self, at: &str) -> Vec<String> {
        let mut out = Vec::new();
        if self.ahead_count > 0 {
            out.push(format!(
                "{} record(s) at {at} have `{}` later than the run's start plus future_tolerance ({}): {}; they are delivered, but the watermark does not move to them (an upstream clock or record gone wrong?), so the next run reads them again",
                self.ahead_count,
                self.field,
                duration_text(self.tolerance),
                self.ahead.join(", ")
            ));
        }
        if self.odd_count > 0 {
            out.push(format!(
                "{} record(s) at {at} have `{}` that is not {} like the watermark: {}; they are delivered, but the watermark does not move to them",
                self.odd_count,
                self.field,
                self.kind.unwrap_or(Kind::Text).name(),
                self.odd.join(", ")
            ));
        }
        self.ahead.clear();
        self.ahead_count = 0;
        self.odd.clear();
        self.odd_count = 0;
        out
    }
}

/// `1h`, `5m`, `90s`: a duration the way a pipeline writes it.
fn duration_text(d: Duration) -> String {
    let s = d.as_secs();
    if s > 0 && s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s > 0 && s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Why a value may not be the watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Later than the run's start plus the tolerance.
    Ahead,
    /// Not of the watermark's type.
    Odd,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn guard() -> Guard {
        let started = parse_time("2025-06-01T12:00:00Z").unwrap().0;
        Guard::new("updated_at", started, Duration::from_secs(3600))
    }

    #[test]
    fn a_far_future_value_is_left_out_and_reported() {
        let mut g = guard();
        assert!(g.admit(&json!("2025-06-01T11:00:00Z")));
        assert!(
            g.admit(&json!("2025-06-01T12:59:00Z")),
            "within the tolerance"
        );
        assert!(!g.admit(&json!("2999-01-01T00:00:00Z")));
        assert!(!g.admit(&json!(null)));
        // A time without a zone may be local: it gets 14 hours more.
        assert!(g.admit(&json!("2025-06-01 20:00:00")));
        assert!(!g.admit(&json!("2025-06-02 04:00:00")));
        let r = g.report("page 3");
        assert_eq!(r.len(), 1, "{r:?}");
        assert!(r[0].starts_with("2 record(s) at page 3"), "{r:?}");
        assert!(r[0].contains("`2999-01-01T00:00:00Z`"), "{r:?}");
        assert!(g.report("page 4").is_empty());
    }

    #[test]
    fn a_value_of_another_type_is_left_out() {
        let mut g = guard();
        g.learn([json!("not a date"), json!("2025-01-01T00:00:00Z")].iter());
        assert_eq!(g.kind(), Some(Kind::Time));
        assert!(!g.admit(&json!("not a date")));
        assert!(g.admit(&json!("2025-01-01T00:00:00Z")));
        assert!(g.report("page 1")[0].contains("not a timestamp"));

        // Learned from single values: text first, then timestamps take over.
        let mut g = guard();
        assert!(g.admit(&json!("soon")));
        assert!(g.admit(&json!("2025-01-01")));
        assert!(!g.admit(&json!("later")));

        // Declared numbers (ids): no bound, text refused.
        let mut g = guard();
        g.declare_like(&json!("0"));
        assert!(g.admit(&json!(99_999_999_999_i64)));
        assert!(!g.admit(&json!("x")));
        // Declared Unix seconds: bounded.
        let mut g = guard();
        g.declare(Kind::Time, true);
        assert!(g.admit(&json!(1_700_000_000)));
        assert!(!g.admit(&json!(32_503_680_000_i64)));
    }

    #[test]
    fn newer_compares_by_type() {
        let n = |a: Value, b: Value| newer(Some(a), Some(b)).unwrap();
        assert_eq!(
            n(
                json!("2024-01-01T10:00:00+02:00"),
                json!("2024-01-01T09:00:00Z")
            ),
            json!("2024-01-01T09:00:00Z")
        );
        assert_eq!(
            n(json!("0"), json!(5)),
            json!(5),
            "`initial: 0` gives way to ids"
        );
        assert_eq!(n(json!(9), json!(10)), json!(10));
        assert_eq!(
            n(json!("not a date"), json!("2024-01-01")),
            json!("2024-01-01")
        );
        assert_eq!(
            n(json!("2024-01-01"), json!("not a date")),
            json!("2024-01-01")
        );
        assert_eq!(newer(None, Some(json!(null))), None);
    }
}
