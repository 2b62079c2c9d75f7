//! What `sluice doctor` asks of a node kind: for each link, where it is on the network
//! and the checks only the kind can make (its credentials, one real request, its
//! tables), each placed at its step of the troubleshooting flow (docs/troubleshooting.md).
//!
//! The engine (`sluice_engine::doctor`) walks the flow: the symptom from the state store,
//! the network from each [`Endpoint`], then the kind's own [`Probe`], then the transforms
//! on the sample it read and the sample's shape against the stored schema.

use crate::kind::{Link, LinkKind};
use sluice_core::node::BoxFuture;
use sluice_core::{ConnectorError, ErrorClass};
use std::fmt;

/// The steps of the troubleshooting flow, in the order they are walked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// 1. What failed last: the run, its class, its evidence.
    Symptom,
    /// 2. Can this machine reach the other side: DNS, TCP, TLS, proxy, clock.
    Network,
    /// 3. Are the credentials valid, allowed, and within their quota.
    Auth,
    /// 4. Is the request right: one request as the pipeline makes it.
    Parameters,
    /// 5. Are the databases, the broker and the state store up and writable.
    Dependencies,
    /// 6. Do our transforms accept a sample.
    Logic,
    /// 7. Did the upstream change its records' shape.
    Upstream,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 7] = [
        Step::Symptom,
        Step::Network,
        Step::Auth,
        Step::Parameters,
        Step::Dependencies,
        Step::Logic,
        Step::Upstream,
    ];

    /// 1 to 7.
    pub fn number(self) -> usize {
        self as usize + 1
    }

    /// `symptom`, `network`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Symptom => "symptom",
            Step::Network => "network",
            Step::Auth => "auth",
            Step::Parameters => "parameters",
            Step::Dependencies => "dependencies",
            Step::Logic => "logic",
            Step::Upstream => "upstream",
        }
    }

    /// The step where a failure of `class` shows: the one whose checks would catch it.
    pub fn of_class(class: ErrorClass) -> Step {
        match class {
            ErrorClass::Network => Step::Network,
            ErrorClass::Auth | ErrorClass::Permission | ErrorClass::RateLimited => Step::Auth,
            ErrorClass::InvalidRequest | ErrorClass::PayloadTooLarge => Step::Parameters,
            ErrorClass::Dependency => Step::Dependencies,
            ErrorClass::Internal => Step::Logic,
            ErrorClass::ContractChanged => Step::Upstream,
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// An address a link connects to, for the network step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The host name or address, as written.
    pub host: String,
    /// The port.
    pub port: u16,
    /// Whether the connection starts with a TLS handshake (`https://`).
    pub tls: bool,
    /// What listens there, for messages: `HTTP API`, `PostgreSQL`, `Kafka broker`.
    pub service: &'static str,
    /// Whether it is a dependency (a database, a broker: a refused connection means it is
    /// down, class `dependency`) rather than an API (class `network`).
    pub dependency: bool,
}

impl Endpoint {
    /// `host:port`.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The endpoint of a URL (`https://api.example.com/v1`, `postgres://u@db:5432/x`),
    /// `None` when it names no host (a SQLite file).
    pub fn of_url(url: &str, service: &'static str, dependency: bool) -> Option<Endpoint> {
        let parsed = url::Url::parse(url).ok()?;
        if parsed.scheme() == "sqlite" || parsed.scheme() == "file" {
            return None;
        }
        let host = parsed.host_str()?.trim_matches(['[', ']']).to_owned();
        if host.is_empty() {
            return None;
        }
        let tls = parsed.scheme() == "https";
        let port = parsed.port_or_known_default().or(match parsed.scheme() {
            "postgres" | "postgresql" => Some(5432),
            "mysql" | "mariadb" => Some(3306),
            _ => None,
        })?;
        Some(Endpoint {
            host,
            port,
            tls,
            service,
            dependency,
        })
    }
}

/// One check a kind made: where in the flow, what, and how it went.
#[derive(Debug, Clone)]
pub struct Finding {
    /// Its step.
    pub step: Step,
    /// What was checked, without secrets: `OAuth2 token from 127.0.0.1:8080`.
    pub checked: String,
    /// What was found (`200, 50 records at $.data.items`), or the failure.
    pub outcome: Result<String, ConnectorError>,
}

impl Finding {
    /// A check that passed.
    pub fn passed(step: Step, checked: impl Into<String>, found: impl Into<String>) -> Self {
        Finding {
            step,
            checked: checked.into(),
            outcome: Ok(found.into()),
        }
    }

    /// A check that failed, at the step its class belongs to unless `step` is given.
    pub fn failed(step: Option<Step>, checked: impl Into<String>, error: ConnectorError) -> Self {
        Finding {
            step: step.unwrap_or_else(|| Step::of_class(error.class)),
            checked: checked.into(),
            outcome: Err(error),
        }
    }
}

/// What a kind's probe found: its checks in order (the last one the first that failed,
/// if any), and a sample of records when it read some (a source's first page).
#[derive(Debug, Default)]
pub struct ProbeReport {
    /// The checks made, in order; a probe stops at its first failure.
    pub findings: Vec<Finding>,
    /// Records read, as JSON objects (at most a page).
    pub sample: Option<Vec<serde_json::Value>>,
}

/// A link as `sluice doctor` checks it.
pub struct Probe {
    /// What kind of link.
    pub kind: LinkKind,
    /// What is checked, without secrets (as `sluice health` names it).
    pub name: String,
    /// Where it connects (the network step checks each).
    pub endpoints: Vec<Endpoint>,
    /// The kind's own checks (auth, parameters, dependencies), run once the network
    /// step passed.
    pub run: BoxFuture<'static, ProbeReport>,
}

impl fmt::Debug for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Probe")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

impl Probe {
    /// The probe of a `sluice health` link: its check, placed at the step of its class
    /// when it fails (at `dependencies` when it passes), and no endpoint.
    pub fn of_link(link: Link) -> Probe {
        Probe::of_link_at(link, Vec::new())
    }

    /// [`Probe::of_link`] with the link's endpoints for the network step.
    pub fn of_link_at(link: Link, endpoints: Vec<Endpoint>) -> Probe {
        let checked = format!("{} {} answers", link.kind, link.name);
        let check = link.check;
        Probe {
            kind: link.kind,
            name: link.name,
            endpoints,
            run: Box::pin(async move {
                let finding = match check.await {
                    Ok(took) => Finding::passed(
                        Step::Dependencies,
                        checked,
                        format!("answered in {} ms", took.as_millis()),
                    ),
                    Err(e) => Finding::failed(None, checked, e),
                };
                ProbeReport {
                    findings: vec![finding],
                    sample: None,
                }
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_of_urls() {
        let e = Endpoint::of_url("https://api.example.com/v1?x=1", "HTTP API", false).unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.tls),
            ("api.example.com", 443, true)
        );
        let e = Endpoint::of_url("postgres://u:p@127.0.0.1/db", "PostgreSQL", true).unwrap();
        assert_eq!(e.address(), "127.0.0.1:5432");
        assert!(Endpoint::of_url("sqlite://out.db", "SQLite", true).is_none());
    }

    #[test]
    fn each_class_has_its_step() {
        assert_eq!(Step::of_class(ErrorClass::Permission), Step::Auth);
        assert_eq!(Step::of_class(ErrorClass::ContractChanged), Step::Upstream);
        assert_eq!(Step::Upstream.number(), 7);
    }
}
