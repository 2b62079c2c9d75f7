//! `type: http_sink`: its fields, as read from the pipeline file.

use crate::http::spec::{AuthSpec, RateLimitSpec, is_public, shown_map};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_config::Spanned;
use sluice_config::spec::TimeoutsSpec;
use sluice_config::values::{HttpUrl, SecretMap};

/// `type: http_sink`: batches sent to an HTTP endpoint, one request per batch.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpSinkSpec {
    /// Where batches are sent.
    #[schemars(example = &"https://ingest.example.com/v1/events")]
    pub url: Spanned<HttpUrl>,
    /// The request method.
    #[serde(default)]
    pub method: SinkMethod,
    /// Request headers. Their values never print (unless named in `public`).
    #[serde(default)]
    pub headers: SecretMap,
    /// Names of headers and of `url`'s query parameters whose values are not secret: they
    /// print in `plan`, errors and evidence. Every other such value prints as `***`.
    /// Names match without regard to case.
    #[serde(default)]
    #[schemars(example = &serde_json::json!(["Content-Type"]))]
    pub public: Vec<String>,
    /// How requests authenticate.
    pub auth: Option<Spanned<AuthSpec>>,
    /// How a batch is written in the body: `json_array` or `ndjson`.
    #[serde(default)]
    pub format: SinkFormat,
    /// With `json_array`: wrap the array in an object under this key
    /// (`{"records": [...]}`).
    #[schemars(example = &"records")]
    pub wrap_key: Option<Spanned<String>>,
    /// The name of the header carrying the batch id, sent with every request, so that the
    /// receiver can drop a redelivered batch.
    #[schemars(extend("default" = "Idempotency-Key"), example = &"X-Request-Id")]
    pub idempotency_header: Option<String>,
    /// Limits on the request rate.
    pub rate_limit: Option<RateLimitSpec>,
    /// Timeouts (else `defaults.timeouts`).
    pub timeouts: Option<TimeoutsSpec>,
}

/// Request method of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
pub enum SinkMethod {
    /// `POST`.
    #[default]
    POST,
    /// `PUT`.
    PUT,
    /// `PATCH`.
    PATCH,
}

/// How an HTTP sink writes a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SinkFormat {
    /// A JSON array of records.
    #[default]
    JsonArray,
    /// One JSON record per line.
    Ndjson,
}

impl HttpSinkSpec {
    /// The spec as `plan --json` shows it (see [`HttpSource::shown`]).
    pub(crate) fn shown(&self) -> Result<serde_json::Value, serde_json::Error> {
        let public = |n: &str| is_public(&self.public, n);
        let mut v = serde_json::to_value(self)?;
        if let Some(obj) = v.as_object_mut() {
            obj.insert(
                "url".into(),
                sluice_core::redact::redact_url_except(self.url.value.as_str(), public).into(),
            );
            obj.insert("headers".into(), shown_map(&self.headers, public));
        }
        Ok(v)
    }
}
