//! Failure handling and batching: `retry`, `batching`, `timeouts` and `on_error`, in
//! `defaults:` and on each node.

use crate::de::Spanned;
use crate::values::{ByteSize, Duration};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use sluice_core::{Disposition, ErrorClass};
use std::borrow::Cow;
use std::fmt;

/// How failed attempts are retried. Unset fields come from `defaults.retry`, then from
/// Sluice's defaults.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included: `1` means no retry. At least 1. An HTTP source
    /// spends them per request inside the connector, any other node in the engine: never both.
    #[schemars(range(min = 1), extend("default" = 5), example = 8)]
    pub max_attempts: Option<Spanned<u32>>,
    /// The cap of the first backoff. Each delay is drawn at random below the cap ("full
    /// jitter") so that many clients do not retry in lockstep.
    #[schemars(extend("default" = "200ms"), example = &"1s")]
    pub initial_backoff: Option<Spanned<Duration>>,
    /// No single backoff exceeds this.
    #[schemars(extend("default" = "30s"), example = &"1m")]
    pub max_backoff: Option<Spanned<Duration>>,
    /// Growth of the cap between attempts. At least 1.
    #[schemars(range(min = 1.0), extend("default" = 2.0), example = 3.0)]
    pub multiplier: Option<Spanned<f64>>,
    /// Give up once this much time has passed since the first attempt.
    #[schemars(extend("default" = "5m"), example = &"30m")]
    pub max_elapsed: Option<Spanned<Duration>>,
}

/// How a source cuts records into batches: a batch closes at whichever limit comes
/// first. The nodes after a source carry its batches as they are.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchingSpec {
    /// Records per batch. At least 1.
    #[schemars(range(min = 1), extend("default" = 10000), example = 5000)]
    pub max_rows: Option<Spanned<u64>>,
    /// Bytes per batch, counted as the source reads them (an HTTP page's share of the
    /// response body, a file's text, a Kafka message's payload). At least 1KiB.
    #[schemars(extend("default" = "4MiB"), example = &"1MiB")]
    pub max_bytes: Option<Spanned<ByteSize>>,
    /// How long a partly filled batch waits for more records before it is sent.
    #[schemars(extend("default" = "1s"), example = &"250ms")]
    pub max_wait: Option<Spanned<Duration>>,
}

/// Network timeouts of connectors.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TimeoutsSpec {
    /// Time to establish a connection (TCP and TLS). More than zero.
    #[schemars(extend("default" = "10s"), example = &"5s")]
    pub connect: Option<Spanned<Duration>>,
    /// Time for one whole request or statement, from sending to the last byte of the
    /// answer. More than zero.
    #[schemars(extend("default" = "30s"), example = &"2m")]
    pub request: Option<Spanned<Duration>>,
}

/// What to do per error class: `retry`, `split`, `quarantine`, `skip` or `fail`.
///
/// Written as a mapping from class to disposition, e.g.
/// `on_error: { invalid_request: skip, dependency: retry }`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OnErrorSpec(pub Vec<(Spanned<ErrorClass>, Spanned<Disposition>)>);

impl OnErrorSpec {
    /// The disposition set for `class`, with its position.
    pub fn get(&self, class: ErrorClass) -> Option<&Spanned<Disposition>> {
        self.0
            .iter()
            .find(|(c, _)| c.value == class)
            .map(|(_, d)| d)
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<'de> Deserialize<'de> for OnErrorSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OnErrorSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping from error class to disposition")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OnErrorSpec, A::Error> {
                let mut entries = Vec::new();
                while let Some(class) = map.next_key::<Spanned<ErrorClass>>()? {
                    entries.push((class, map.next_value()?));
                }
                Ok(OnErrorSpec(entries))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for OnErrorSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (class, disposition) in &self.0 {
            map.serialize_entry(class.value.as_str(), disposition.value.as_str())?;
        }
        map.end()
    }
}

impl JsonSchema for OnErrorSpec {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("OnError")
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let disposition = generator.subschema_for::<DispositionName>();
        let mut properties = serde_json::Map::new();
        for class in ErrorClass::ALL {
            let mut schema = disposition.clone();
            schema.insert(
                "description".into(),
                format!(
                    "What to do with `{class}` failures. Sluice's default: `{}`.",
                    class.default_disposition()
                )
                .into(),
            );
            schema.insert(
                "default".into(),
                class.default_disposition().as_str().into(),
            );
            properties.insert(class.as_str().to_owned(), schema.to_value());
        }
        json_schema!({
            "type": "object",
            "description": "What to do per error class. Unset classes inherit `defaults.on_error`, then Sluice's default for the class.",
            "properties": properties,
            "additionalProperties": false,
        })
    }
}

/// The JSON Schema of an error class name.
pub(crate) struct ErrorClassName;

impl JsonSchema for ErrorClassName {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("ErrorClass")
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        json_schema!({
            "type": "string",
            "enum": names,
            "description": "An error class: network, auth, permission, invalid_request, rate_limited, dependency, payload_too_large, contract_changed or internal.",
        })
    }
}

/// The JSON Schema of a disposition name.
pub(crate) struct DispositionName;

impl JsonSchema for DispositionName {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Disposition")
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        let names: Vec<&str> = Disposition::ALL.iter().map(|d| d.as_str()).collect();
        json_schema!({
            "type": "string",
            "enum": names,
            "description": "retry (with backoff), split (the batch in halves, down to single records), quarantine (keep it for `sluice replay`, go on), skip (drop it, count it, go on) or fail (the node, and so the run).",
        })
    }
}

/// Settings every node inherits unless it sets its own.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DefaultsSpec {
    /// Retry policy of every node.
    pub retry: Option<Spanned<RetrySpec>>,
    /// Batch limits of every source (the nodes after a source carry its batches).
    pub batching: Option<Spanned<BatchingSpec>>,
    /// Timeouts of every connector.
    pub timeouts: Option<TimeoutsSpec>,
    /// Disposition per error class for every node. Where a source or a task cannot apply
    /// one (it only retries or fails), it uses `fail`.
    #[serde(default)]
    pub on_error: OnErrorSpec,
}

/// What to do when records' fields differ from the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SchemaPolicy {
    /// Accept it: new columns are added (downstream tables too).
    Evolve,
    /// Accept it and raise a warning alert.
    Warn,
    /// Quarantine the batch (`contract_changed`) and go on.
    Quarantine,
    /// Fail the node (`contract_changed`).
    #[default]
    Fail,
}
