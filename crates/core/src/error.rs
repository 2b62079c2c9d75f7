//! The failure taxonomy: error classes and what Sluice does about each.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The class of a failure. Every error Sluice meets is mapped to exactly one class;
/// the class, not the error text, decides what happens next.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// DNS failure, connection refused or reset, TLS failure, timeout.
    Network,
    /// 401, an expired token, a bad signature.
    Auth,
    /// 403: the credentials are valid but not allowed to do this.
    Permission,
    /// 400, 404, 422, bad parameters, a malformed record.
    InvalidRequest,
    /// 429 or an exhausted quota.
    RateLimited,
    /// 500/502/503/504, a database or broker that is down.
    Dependency,
    /// 413, a 504 on a large body, a Kafka message too large, too many bind parameters.
    PayloadTooLarge,
    /// An upstream field was added, removed or retyped (schema drift).
    ContractChanged,
    /// A bug, a panic in a transform.
    Internal,
}

impl ErrorClass {
    /// Every class, in the order of the documentation.
    pub const ALL: [ErrorClass; 9] = [
        ErrorClass::Network,
        ErrorClass::Auth,
        ErrorClass::Permission,
        ErrorClass::InvalidRequest,
        ErrorClass::RateLimited,
        ErrorClass::Dependency,
        ErrorClass::PayloadTooLarge,
        ErrorClass::ContractChanged,
        ErrorClass::Internal,
    ];

    /// The name used in YAML, logs, the state store and the CLI (`rate_limited`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Network => "network",
            ErrorClass::Auth => "auth",
            ErrorClass::Permission => "permission",
            ErrorClass::InvalidRequest => "invalid_request",
            ErrorClass::RateLimited => "rate_limited",
            ErrorClass::Dependency => "dependency",
            ErrorClass::PayloadTooLarge => "payload_too_large",
            ErrorClass::ContractChanged => "contract_changed",
            ErrorClass::Internal => "internal",
        }
    }

    /// What Sluice does with a failure of this class unless the pipeline says otherwise.
    ///
    /// `auth` is retried because the retry first refreshes the credentials (once);
    /// `contract_changed` fails by default because silently evolving a schema is a choice
    /// the pipeline must make (`on_error: { contract_changed: evolve }`-style policies
    /// live in the source's schema policy).
    pub fn default_disposition(self) -> Disposition {
        match self {
            ErrorClass::Network | ErrorClass::RateLimited | ErrorClass::Dependency => {
                Disposition::Retry
            }
            ErrorClass::Auth => Disposition::Retry,
            ErrorClass::Permission => Disposition::Fail,
            ErrorClass::InvalidRequest => Disposition::Quarantine,
            ErrorClass::PayloadTooLarge => Disposition::Split,
            ErrorClass::ContractChanged => Disposition::Fail,
            ErrorClass::Internal => Disposition::Fail,
        }
    }

    /// Whether another attempt of the same request may succeed without anything changing
    /// on our side. Used by connectors' own retry loops.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorClass::Network | ErrorClass::RateLimited | ErrorClass::Dependency
        )
    }

    /// Whether a failure of this class should raise an alert even when it is handled.
    pub fn alerts(self) -> bool {
        matches!(
            self,
            ErrorClass::Auth
                | ErrorClass::Permission
                | ErrorClass::InvalidRequest
                | ErrorClass::ContractChanged
                | ErrorClass::Internal
        )
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name did not match any error class.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown error class `{0}` (expected one of: network, auth, permission, invalid_request, rate_limited, dependency, payload_too_large, contract_changed, internal)"
)]
pub struct UnknownErrorClass(pub String);

impl FromStr for ErrorClass {
    type Err = UnknownErrorClass;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorClass::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| UnknownErrorClass(s.to_owned()))
    }
}

/// What to do with a failed node or batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Disposition {
    /// Try again with backoff, within the node's retry policy.
    Retry,
    /// Split the batch in halves and retry each, down to single records.
    Split,
    /// Keep the batch (or record) in the failed-batch store for `sluice replay`, go on.
    Quarantine,
    /// Drop the batch, count it, go on. Only when the pipeline asks for it explicitly.
    Skip,
    /// Fail the node, and so the run; compensations run and an alert fires.
    Fail,
}

impl Disposition {
    /// Every disposition, in the order of the documentation.
    pub const ALL: [Disposition; 5] = [
        Disposition::Retry,
        Disposition::Split,
        Disposition::Quarantine,
        Disposition::Skip,
        Disposition::Fail,
    ];

    /// The name used in YAML and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Retry => "retry",
            Disposition::Split => "split",
            Disposition::Quarantine => "quarantine",
            Disposition::Skip => "skip",
            Disposition::Fail => "fail",
        }
    }
}

impl fmt::Display for Disposition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message a panic was raised with (a caught panic's payload, as `catch_unwind` or a
/// join error gives it).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_from_str_and_serde() {
        for class in ErrorClass::ALL {
            assert_eq!(class.as_str().parse::<ErrorClass>().unwrap(), class);
            let json = serde_json::to_string(&class).unwrap();
            assert_eq!(json, format!("\"{}\"", class.as_str()));
        }
        for d in Disposition::ALL {
            let json = serde_json::to_string(&d).unwrap();
            assert_eq!(json, format!("\"{}\"", d.as_str()));
        }
    }

    #[test]
    fn unknown_class_lists_the_valid_ones() {
        let err = "timeout".parse::<ErrorClass>().unwrap_err();
        assert!(err.to_string().contains("rate_limited"), "{err}");
    }

    #[test]
    fn default_dispositions_follow_the_architecture_table() {
        use Disposition::*;
        use ErrorClass::*;
        let expected = [
            (Network, Retry),
            (Auth, Retry),
            (Permission, Fail),
            (InvalidRequest, Quarantine),
            (RateLimited, Retry),
            (Dependency, Retry),
            (PayloadTooLarge, Split),
            (ContractChanged, Fail),
            (Internal, Fail),
        ];
        for (class, disposition) in expected {
            assert_eq!(class.default_disposition(), disposition, "{class}");
        }
    }
}
