//! The closed vocabularies the state store keeps as text: a run's status and trigger, an
//! alert's kind and severity. Callers use the enums; the names exist only in the store's
//! SQL, in the CLI's output and in JSON, and all of them come from one table per enum.

use serde::{Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// A name read from the state store (or given by a caller) that is none of its enum's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown {what} `{name}` (expected one of: {expected}); was the state store written by a newer sluice?"
)]
pub struct UnknownName {
    /// What was parsed: `run status`, `trigger`, ...
    pub what: &'static str,
    /// The name found.
    pub name: String,
    /// The names allowed, comma-separated.
    pub expected: String,
}

/// Gives an enum its stored names: `as_str`, `ALL`, `Display` (which honours width and
/// alignment, for the CLI's tables), `FromStr` and `Serialize`, all from one list, so
/// that writing and reading cannot disagree.
macro_rules! stored_names {
    ($ty:ident, $what:literal, { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl $ty {
            /// Every value, in the order of the declaration.
            pub const ALL: &'static [$ty] = &[$($ty::$variant),+];

            /// The name kept in the state store and shown by the CLI.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($ty::$variant => $name),+
                }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownName;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok($ty::$variant),)+
                    other => Err(UnknownName {
                        what: $what,
                        name: other.to_owned(),
                        expected: [$($name),+].join(", "),
                    }),
                }
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }
    };
}

/// The status of a run (and of a node within it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RunStatus {
    /// Still going.
    Running,
    /// Every batch was delivered.
    Succeeded,
    /// Done, but something was quarantined for replay.
    PartiallySucceeded,
    /// A node failed.
    Failed,
    /// Stopped by a signal or a user.
    Cancelled,
    /// Not run because an upstream node failed (nodes only).
    Skipped,
    /// Parked: an API's quota is used up until a time later than the node may wait. The
    /// node kept its checkpoint; the next run after the resume time goes on from there.
    RateLimited,
}

stored_names!(RunStatus, "run status", {
    Running => "running",
    Succeeded => "succeeded",
    PartiallySucceeded => "partially_succeeded",
    Failed => "failed",
    Cancelled => "cancelled",
    Skipped => "skipped",
    RateLimited => "rate_limited",
});

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// `sluice run` of a pipeline without a schedule.
    Manual,
    /// A pipeline's `schedule: { cron: ... }`.
    Cron,
    /// A pipeline's `schedule: realtime`: runs one after another.
    Realtime,
    /// `sluice replay`: failed batches delivered again. A replay belongs to no load.
    Replay,
}

stored_names!(Trigger, "trigger", {
    Manual => "manual",
    Cron => "cron",
    Realtime => "realtime",
    Replay => "replay",
});

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A run failed; the alert's message is the failing node's error.
    RunFailed,
    /// A run ended with records quarantined (the rest was delivered).
    RunPartiallySucceeded,
    /// `sluice health --watch` found a link down; the alert's class says why.
    LinkDown,
    /// A link found down before answers again.
    LinkRecovered,
    /// A source's records drifted from its schema and its `schema_policy: warn` let them
    /// through.
    SchemaDrift,
    /// `sluice replay` finished: how many batches it delivered, how many still fail.
    ReplayFinished,
    /// The pipeline has not succeeded within its `freshness:` bound.
    Stale,
    /// A condition alerted before (a failing pipeline, a stale one) cleared.
    Recovered,
    /// Every attempt to deliver alerts to one of the pipeline's channels failed.
    ChannelFailed,
    /// A node's backlog in the buffer is above the buffer's `max_lag`.
    Backlog,
    /// `sluice serve` found a pipeline file that does not validate.
    PipelineInvalid,
    /// A source's API quota is used up until a reset later than the node may wait
    /// (`rate_limit.max_retry_after`): the source is parked until then.
    QuotaExhausted,
    /// A circuit breaker of an HTTP node stayed open longer than `alerts.breaker_open_for`.
    BreakerOpen,
}

stored_names!(AlertKind, "alert kind", {
    RunFailed => "run_failed",
    RunPartiallySucceeded => "run_partially_succeeded",
    LinkDown => "link_down",
    LinkRecovered => "link_recovered",
    SchemaDrift => "schema_drift",
    ReplayFinished => "replay_finished",
    Stale => "stale",
    Recovered => "recovered",
    ChannelFailed => "channel_failed",
    Backlog => "backlog",
    PipelineInvalid => "pipeline_invalid",
    QuotaExhausted => "quota_exhausted",
    BreakerOpen => "breaker_open",
});

/// How urgent an alert is: the same names as the severities a pipeline's `alerts.routes`
/// filter on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AlertSeverity {
    /// For the record: a recovered link.
    Info,
    /// Handled, but someone should look.
    Warning,
    /// A run failed or a link is down: act now.
    Critical,
}

stored_names!(AlertSeverity, "alert severity", {
    Info => "info",
    Warning => "warning",
    Critical => "critical",
});

/// How the delivery of an alert to one channel ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryStatus {
    /// The channel took it (a 2xx answer, a program that exited 0, a log line).
    Sent,
    /// Every attempt failed; the delivery's error says the last reason.
    Failed,
}

stored_names!(DeliveryStatus, "delivery status", {
    Sent => "sent",
    Failed => "failed",
});

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trips<T>(all: &[T])
    where
        T: Copy + PartialEq + fmt::Debug + fmt::Display + FromStr<Err = UnknownName> + Serialize,
    {
        for &value in all {
            let name = value.to_string();
            assert_eq!(name.parse::<T>().unwrap(), value);
            assert_eq!(
                serde_json::to_value(value).unwrap(),
                serde_json::Value::from(name)
            );
        }
    }

    #[test]
    fn every_name_round_trips() {
        round_trips(RunStatus::ALL);
        round_trips(Trigger::ALL);
        round_trips(AlertKind::ALL);
        round_trips(AlertSeverity::ALL);
        round_trips(DeliveryStatus::ALL);
    }

    #[test]
    fn names_are_the_stored_ones() {
        assert_eq!(
            RunStatus::PartiallySucceeded.as_str(),
            "partially_succeeded"
        );
        assert_eq!(RunStatus::RateLimited.as_str(), "rate_limited");
        assert_eq!(Trigger::Cron.as_str(), "cron");
        assert_eq!(AlertKind::RunFailed.as_str(), "run_failed");
        assert_eq!(AlertSeverity::Critical.as_str(), "critical");
    }

    #[test]
    fn an_unknown_name_says_what_it_expected() {
        let e = "paused".parse::<RunStatus>().unwrap_err();
        assert_eq!(e.what, "run status");
        assert!(e.to_string().contains("`paused`"), "{e}");
        assert!(e.to_string().contains("rate_limited"), "{e}");
    }

    /// The CLI prints these in aligned columns (`{:<20}`).
    #[test]
    fn display_honours_width() {
        assert_eq!(format!("{:<8}|", Trigger::Manual), "manual  |");
        assert_eq!(format!("{:>7}|", RunStatus::Failed), " failed|");
    }
}
