//! The `type: http` source: pages in, batches out, with checkpoints.

use super::auth::Auth;
use super::breaker::BreakerRegistry;
use super::classify::{Redactor, evidence, host_of};
use super::config::{
    BadRecordPolicy, ColumnType, HttpMethod, HttpSourceConfig, RecordsConfig, SchemaConfig,
    SchemaPolicy,
};
use super::fetch::{Fetched, Fetcher, RequestSpec};
use super::origin::{Origins, origin_text};
use super::pagination::{PageMeta, Pager, Position, refill};
use super::ratelimit::Limiter;
use super::records::{
    BadRecord, Converter, ExtractError, FastPage, RawAt, RecordTexts, RecordsAt, extract, field,
    locate,
};
use super::template::{render_json, render_str};
use crate::watermark::{Guard, Kind, newer};
use async_trait::async_trait;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use sluice_core::redact::is_template_only;
use sluice_core::{
    Batch, ConnectorError, ConnectorEvent, ErrorClass, QuarantinedRecords, Secret, Source,
    SourceBatch,
};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use url::Url;

/// Where a source runs and where it left off: what the engine hands the constructor.
#[derive(Debug, Clone, Default)]
pub struct HttpSourceContext {
    /// The pipeline's name (part of every batch id).
    pub pipeline: String,
    /// The node's name (part of every batch id).
    pub node: String,
    /// The last checkpoint the engine stored for this node (after the buffer acked its
    /// batch), or `None` on the first run.
    pub checkpoint: Option<Value>,
    /// Circuit breakers shared with other sources (by host). `None`: this source keeps
    /// its own, configured by `breaker`.
    pub breakers: Option<Arc<BreakerRegistry>>,
    /// Where the API's rate-limit budget is shared with other processes (the state store
    /// on PostgreSQL): each request also takes a token there, under the API's host and a
    /// hash of the credentials, and pauses told by the API go there. `None`: the source
    /// limits only its own requests.
    pub budgets: Option<Arc<dyn sluice_core::RateBudgets>>,
    /// Where the source keeps its metrics (requests by host and status, latency,
    /// rate-limit waits, breaker state). `None`: not kept.
    pub metrics: Option<Arc<sluice_config::ConnectorMetrics>>,
}

/// Reads pages from an HTTP API as batches. Build it with [`HttpSource::new`]; use it
/// through [`Source`].
pub struct HttpSource {
    pipeline: String,
    node: String,
    cfg: HttpSourceConfig,
    /// Where the credentials may go.
    origins: Origins,
    fetcher: Arc<Fetcher>,
    records_at: RecordsAt,
    /// Where the records are for the fast path (`None`: a JSON path it does not follow).
    raw_at: Option<RawAt>,
    pager: Pager,
    converter: Converter,
    /// Text of every template, spaces removed: which variables the user placed.
    templates: String,
    /// The watermark the run started from (the last complete run's).
    start_watermark: Option<Value>,
    /// The greatest watermark seen in this run.
    max_seen: Option<Value>,
    /// Which values may become the watermark (`incremental` only).
    guard: Option<Guard>,
    pages_read: u64,
    ready: VecDeque<SourceBatch>,
    /// The last batch of the latest page, held until the next page tells whether it
    /// ends the run (its checkpoint then marks the run complete), or until it has waited
    /// `batching.max_wait` for that page.
    held: Option<SourceBatch>,
    /// When the held batch's page arrived.
    held_since: Option<std::time::Instant>,
    /// The schema of the last batch handed over before the page after it told whether
    /// the run ends (it waited `max_wait`, or an empty page came between): should the
    /// run then end on an empty page, a batch without records carries the run's
    /// completion.
    released: Option<arrow::datatypes::SchemaRef>,
    finished: bool,
    /// `max_pages` ended the run with pages left.
    guard_stopped: bool,
    /// The position of the page being read.
    current_page: Option<Position>,
    /// An error to return once the batches read before it are handed over.
    pending: Option<ConnectorError>,
    stopped: Option<ConnectorError>,
    /// Records kept for replay since the engine last took them.
    quarantined: Vec<QuarantinedRecords>,
    /// When reading quarantined records again: their places on the page.
    only: Option<Vec<usize>>,
    /// The next page, being fetched while the engine takes this one's batches.
    prefetched: Option<tokio::task::JoinHandle<Result<Fetched, ConnectorError>>>,
}

impl Drop for HttpSource {
    fn drop(&mut self) {
        if let Some(task) = self.prefetched.take() {
            task.abort();
        }
    }
}

fn invalid(message: impl Into<String>) -> ConnectorError {
    ConnectorError::new(ErrorClass::InvalidRequest, message)
}

impl HttpSource {
    /// Validates the config and builds the source (no request is sent yet).
    pub fn new(config: HttpSourceConfig, ctx: HttpSourceContext) -> Result<Self, ConnectorError> {
        let auth = Auth::new(config.auth.as_ref())?;
        let hidden = auth.secret_params();
        let redactor = Redactor::new(
            config_secrets(&config, auth.secrets()),
            auth.secret_params(),
        )
        .with_public(shown_params(&config));
        let probe = render_str(&config.url, &super::template::Vars::probe());
        let origins = Origins::new(Url::parse(&probe).ok().as_ref(), &config.allowed_hosts);
        let client = super::origin::client(
            &origins,
            &config.timeouts,
            config.rate_limit.concurrency as usize,
        )?;
        let host = Url::parse(&probe).map(|u| host_of(&u)).unwrap_or_default();
        let breaker = config.breaker.enabled.then(|| {
            ctx.breakers
                .clone()
                .unwrap_or_else(|| Arc::new(BreakerRegistry::new()))
                .for_host(&host, &config.breaker)
        });
        let fetcher = Fetcher {
            client,
            method: match config.method {
                HttpMethod::GET => reqwest::Method::GET,
                HttpMethod::POST => reqwest::Method::POST,
            },
            auth,
            limiter: {
                let limiter = Limiter::new(
                    config.rate_limit.requests_per_second,
                    config.rate_limit.burst,
                    config.rate_limit.concurrency,
                );
                match &ctx.budgets {
                    Some(b) => limiter.shared(Arc::clone(b), budget_key(&config, &probe)),
                    None => limiter,
                }
            },
            breaker,
            redactor: Mutex::new(redactor),
            events: Mutex::new(Vec::new()),
            listener: Mutex::new(None),
            retry: config.retry.clone(),
            retry_on: config.retry_on.clone(),
            max_retry_after: config.rate_limit.max_retry_after,
            request_timeout: config.timeouts.request,
            max_response_bytes: config.max_response_bytes,
            rate_limit_signal: config.rate_limit_signal.clone(),
            parked: Mutex::new(None),
            metrics: ctx
                .metrics
                .as_ref()
                .map(|m| m.get_or_register(super::metrics::HttpMetrics::new)),
        };
        let records_at = RecordsAt::new(&config.records).map_err(invalid)?;
        let raw_at = RawAt::of(&config.records);
        let mut pager = Pager::new(&config.pagination, &config.stop).map_err(invalid)?;
        pager.hide(hidden, shown_params(&config));
        let converter = Converter::new(&config.schema, config.nested);
        let mut templates = config.url.clone();
        for v in config.query.values() {
            templates.push_str(v);
        }
        for v in config.headers.values() {
            templates.push_str(v.expose());
        }
        if let Some(b) = &config.body {
            templates.push_str(&b.to_string());
        }
        templates.retain(|c| !c.is_whitespace());

        let initial = config
            .incremental
            .as_ref()
            .and_then(|i| i.initial.clone())
            .map(Value::String);
        let mut start_watermark = initial.clone();
        let mut max_seen = None;
        let mut notes = Vec::new();
        if let Some(cp) = &ctx.checkpoint {
            let wm = cp.get("watermark").filter(|v| !v.is_null()).cloned();
            if cp.get("complete") == Some(&Value::Bool(false)) {
                match cp
                    .get("next")
                    .cloned()
                    .map(serde_json::from_value::<Position>)
                {
                    Some(Ok(pos)) => {
                        // A checkpoint of an older version may hold a next-page URL
                        // with its secrets: they are left out (the request adds them).
                        let redactor = fetcher.redactor();
                        let pos = pager.kept(pos, &redactor);
                        notes.push(format!(
                            "resumed an unfinished run at {}",
                            position_text(&redactor, &pos)
                        ));
                        pager.pos = pos;
                        start_watermark = wm.or(initial.clone());
                        max_seen = cp.get("max_seen").filter(|v| !v.is_null()).cloned();
                    }
                    _ => notes.push(
                        "the checkpoint's position is unreadable: starting from the first page"
                            .to_owned(),
                    ),
                }
            } else {
                start_watermark = wm.or(initial.clone());
            }
        }
        // The watermark's guard: a stored watermark it refuses (in the future, or not of
        // the declared type, as an older version could store) gives way to `initial`.
        let guard = config.incremental.as_ref().map(|inc| {
            let mut g = Guard::new(&inc.field, chrono::Utc::now(), inc.future_tolerance);
            let declared = match &config.schema {
                SchemaConfig::Columns(cols) => cols
                    .iter()
                    .find(|c| c.name == inc.field)
                    .map(|c| c.data_type),
                SchemaConfig::Infer => None,
            };
            match declared {
                Some(ColumnType::Timestamp | ColumnType::Date) => g.declare(Kind::Time, true),
                Some(ColumnType::Int64 | ColumnType::Float64) => g.declare(Kind::Number, false),
                _ => {
                    if let Some(i) = &initial {
                        g.declare_like(i);
                    }
                }
            }
            g
        });
        let mut contract = Vec::new();
        if let Some(g) = &guard {
            if let Some(wm) = &start_watermark
                && Some(wm) != initial.as_ref()
                && g.refuse(wm).is_some()
            {
                contract.push(format!(
                    "the stored watermark {wm} is in the future or not of the watermark's type: starting from {} instead",
                    initial.as_ref().map_or("the beginning".to_owned(), ToString::to_string)
                ));
                start_watermark = initial.clone();
            }
            if max_seen.as_ref().is_some_and(|m| g.refuse(m).is_some()) {
                max_seen = None;
            }
        }
        let source = HttpSource {
            pipeline: ctx.pipeline,
            node: ctx.node,
            cfg: config,
            origins,
            fetcher: Arc::new(fetcher),
            records_at,
            raw_at,
            pager,
            converter,
            templates,
            start_watermark,
            max_seen,
            guard,
            pages_read: 0,
            ready: VecDeque::new(),
            held: None,
            held_since: None,
            released: None,
            finished: false,
            guard_stopped: false,
            current_page: None,
            pending: None,
            stopped: None,
            quarantined: Vec::new(),
            only: None,
            prefetched: None,
        };
        for n in notes {
            source.fetcher.event(None, n);
        }
        for n in contract {
            source.fetcher.event(Some(ErrorClass::ContractChanged), n);
        }
        Ok(source)
    }

    fn uses(&self, var: &str) -> bool {
        self.templates.contains(&format!("{{{{{var}}}}}"))
    }

    /// The watermark sent with requests: the run's start, minus the lookback.
    fn sent_watermark(&self) -> Option<String> {
        let inc = self.cfg.incremental.as_ref()?;
        let wm = self.start_watermark.as_ref()?;
        let lookback = inc.lookback.unwrap_or_default();
        Some(match wm {
            Value::String(s) => match chrono::DateTime::parse_from_rfc3339(s) {
                Ok(t) if !lookback.is_zero() => {
                    let back = chrono::Duration::from_std(lookback).unwrap_or_default();
                    t.with_timezone(&chrono::Utc)
                        .checked_sub_signed(back)
                        .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC)
                        .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
                }
                _ => s.clone(),
            },
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => i
                    .saturating_sub(i64::try_from(lookback.as_secs()).unwrap_or(i64::MAX))
                    .to_string(),
                (None, Some(f)) => (f - lookback.as_secs_f64()).to_string(),
                _ => n.to_string(),
            },
            other => other.to_string(),
        })
    }

    fn build_request(&self) -> Result<RequestSpec, ConnectorError> {
        let mut vars = self.pager.vars();
        vars.watermark = self.sent_watermark();
        let redactor = self.fetcher.redactor();
        let url = match self.pager.given_url() {
            Some(u) => {
                let url = Url::parse(u).map_err(|e| {
                    invalid(format!(
                        "the API gave a next-page URL that does not parse ({e})"
                    ))
                })?;
                if !self.origins.allows(&url) {
                    return Err(invalid(format!(
                        "the API gave a next-page URL on {}, another origin: the credentials (auth, headers, query) go only to {}, so the page is not requested; if that host is the API's own, add it to `allowed_hosts`",
                        origin_text(&url),
                        self.origins.describe()
                    ))
                    .with_evidence(format!(
                        "{} {}\n(next-page URL given by the API; not requested)",
                        self.fetcher.method.as_str(),
                        redactor.url(&url)
                    )));
                }
                // Secrets the API copied into its link were kept as `***`: the
                // configured query values go back in (the API key: by the auth).
                refill(url, |name| {
                    self.cfg
                        .query
                        .iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| render_str(v, &vars))
                })
            }
            None => {
                let rendered = render_str(&self.cfg.url, &vars);
                let mut url = Url::parse(&rendered).map_err(|e| {
                    invalid(format!(
                        "url renders to `{}`, which is not a URL ({e}): check its template variables",
                        redactor.text(&rendered)
                    ))
                })?;
                {
                    let mut q = url.query_pairs_mut();
                    for (k, v) in &self.cfg.query {
                        let r = render_str(v, &vars);
                        if r.is_empty() && v.contains("{{") {
                            continue; // a variable without a value yet: leave it out
                        }
                        q.append_pair(k, &r);
                    }
                    for (name, var, value) in self.pager.params() {
                        if !self.uses(var) {
                            q.append_pair(&name, &value);
                        }
                    }
                    if let Some(inc) = &self.cfg.incremental
                        && let (Some(p), Some(wm)) = (&inc.param, &vars.watermark)
                        && !self.uses("watermark")
                    {
                        q.append_pair(p, wm);
                    }
                }
                if url.query() == Some("") {
                    url.set_query(None);
                }
                url
            }
        };
        let mut headers = HeaderMap::new();
        let accept = match self.cfg.records {
            RecordsConfig::Ndjson => "application/x-ndjson, application/json;q=0.9",
            _ => "application/json",
        };
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        for (k, v) in &self.cfg.headers {
            let name = HeaderName::from_bytes(k.as_bytes())
                .map_err(|_| invalid(format!("headers: `{k}` is not a valid header name")))?;
            let mut value =
                HeaderValue::from_str(&render_str(v.expose(), &vars)).map_err(|_| {
                    invalid(format!(
                        "headers: the value of `{k}` holds characters not allowed in a header"
                    ))
                })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let body = match (self.cfg.method, &self.cfg.body) {
            (HttpMethod::POST, Some(b)) => {
                if !headers.contains_key(CONTENT_TYPE) {
                    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                }
                Some(serde_json::to_vec(&render_json(b, &vars)).unwrap_or_default())
            }
            (HttpMethod::POST, None) => Some(Vec::new()),
            _ => None,
        };
        Ok(RequestSpec { url, headers, body })
    }

    fn checkpoint(&self, next: Option<&Position>) -> Value {
        match next {
            Some(pos) => json!({
                "complete": false,
                "next": pos,
                "watermark": self.start_watermark,
                "max_seen": self.max_seen,
            }),
            None => json!({
                "complete": true,
                "watermark": newer(self.start_watermark.clone(), self.max_seen.clone()),
            }),
        }
    }

    fn page_label(&self) -> String {
        let redactor = self.fetcher.redactor();
        self.pager
            .source_position(|u| position_url(&redactor, u))
            .to_string()
    }

    /// Reads one page (asking for smaller pages on 413/504) and turns it into batches.
    ///
    /// With a `deadline`, the request runs as a task, and `Ok(None)` says the deadline
    /// passed first: the request goes on, and the next call takes its answer. The task
    /// stays in `prefetched` until it answered, so a caller that stops waiting loses
    /// nothing.
    async fn read_page(
        &mut self,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Option<Vec<SourceBatch>>, ConnectorError> {
        let fetched = loop {
            let shrinkable = self.pager.shrinkable();
            if deadline.is_some() && self.prefetched.is_none() {
                let spec = self.build_request()?;
                self.spawn_fetch(spec, shrinkable);
            }
            let answer = match self.prefetched.as_mut() {
                Some(task) => {
                    let joined = match deadline {
                        Some(at) => match tokio::time::timeout_at(at, task).await {
                            Ok(joined) => joined,
                            Err(_) => return Ok(None),
                        },
                        None => task.await,
                    };
                    self.prefetched = None;
                    joined.unwrap_or_else(|e| {
                        Err(ConnectorError::new(
                            ErrorClass::Internal,
                            format!("fetching the next page ahead failed: {e}"),
                        ))
                    })
                }
                None => {
                    let spec = self.build_request()?;
                    self.fetcher.fetch(&spec, shrinkable).await
                }
            };
            match answer {
                Ok(f) => break f,
                Err(e) if e.class == ErrorClass::PayloadTooLarge && shrinkable => {
                    match self.pager.shrink() {
                        Some(size) => self.fetcher.event(
                            Some(ErrorClass::PayloadTooLarge),
                            format!("the API could not serve a page that large; asking for {size} records per page"),
                        ),
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        };
        self.pages_read += 1;
        let out = self.page(fetched);
        self.prefetch();
        out
    }

    /// Sends the next page's request now (`prefetch`), when there is a next page to read
    /// in this run: the request `read_page` would send next, built from the same state.
    fn prefetch(&mut self) {
        let more = !self.finished && self.stopped.is_none() && self.pages_read < self.cfg.max_pages;
        if !self.cfg.prefetch || !more || self.only.is_some() {
            return;
        }
        // A request that cannot be built is built again, and its error told, by the next read.
        let Ok(spec) = self.build_request() else {
            return;
        };
        self.spawn_fetch(spec, self.pager.shrinkable());
    }

    /// Sends a request as a task, kept in `prefetched` until its answer is taken.
    fn spawn_fetch(&mut self, spec: RequestSpec, shrinkable: bool) {
        let fetcher = self.fetcher.clone();
        self.prefetched = Some(tokio::spawn(async move {
            fetcher.fetch(&spec, shrinkable).await
        }));
    }

    /// When the held batch has waited `batching.max_wait` for the next page.
    fn held_deadline(&self) -> Option<tokio::time::Instant> {
        self.held.as_ref()?;
        let since = self.held_since?;
        let at = super::instant_after(since, self.cfg.batching.max_wait);
        Some(tokio::time::Instant::from_std(at))
    }

    /// A batch without records that carries the run's completion, when the batch that
    /// would have carried it was handed over before the run's end was known.
    fn completion(&mut self) -> Option<SourceBatch> {
        let schema = self.released.take()?;
        let redactor = self.fetcher.redactor();
        let position = self.pager.source_position(|u| position_url(&redactor, u));
        drop(redactor);
        let batch = Batch::with_content_hash(
            self.pipeline.clone(),
            self.node.clone(),
            position,
            blake3::hash(b"the run's end").as_bytes(),
            arrow::array::RecordBatch::new_empty(schema),
        );
        Some(SourceBatch {
            batch,
            checkpoint: Some(self.checkpoint(None)),
        })
    }

    fn page_evidence(&self, f: &Fetched, extra: &str) -> String {
        let redactor = self.fetcher.redactor();
        let mut ev = evidence(
            &redactor,
            self.fetcher.method.as_str(),
            &f.url,
            Some(200),
            Some(&f.headers),
            &f.body,
        );
        if !extra.is_empty() {
            ev.push('\n');
            ev.push_str(&redactor.text(extra));
        }
        ev
    }

    /// Turns a fetched page into batches, in named steps: its records, the schema
    /// policy, the watermark, Arrow, then the batches and their checkpoints. A page whose
    /// content fails (bad records under `fail`, drift under `quarantine`) is still passed:
    /// the next call goes on with the next page.
    fn page(&mut self, f: Fetched) -> Result<Option<Vec<SourceBatch>>, ConnectorError> {
        let label = self.page_label();
        if let Some((fast, doc)) = self.fast_page(&f) {
            let page = self.page_at(fast.batch.num_rows(), doc.as_ref(), &f, label);
            let FastPage {
                batch,
                texts,
                watermarks,
            } = fast;
            self.learn_watermark(watermarks.iter(), &page.label);
            self.advance(&page);
            let delivered = vec![true; texts.len()];
            let out = match batch.num_rows() {
                0 => Vec::new(),
                _ => self.batches(batch, &texts, &delivered, &page, f.body.len()),
            };
            self.stop_at_max_pages(&page);
            return Ok(Some(out));
        }
        let PageRecords {
            mut records,
            places,
            bad,
            exact,
            total,
            doc,
        } = self.records_of(&f, &label)?;
        let page = self.page_at(total, doc.as_ref(), &f, label);
        if let Err(e) = self.bad_records(&bad, &page.label, &f, &page.start, &page.position) {
            self.advance(&page);
            return Err(e);
        }
        if self.schema_policy(&records, &places, &page, &f)? == Drift::Quarantined {
            self.advance(&page);
            return Ok(Some(Vec::new()));
        }
        if let Some(inc) = &self.cfg.incremental {
            let values: Vec<&Value> = records
                .iter()
                .filter_map(|r| field(r, &inc.field))
                .collect();
            self.learn_watermark(values.into_iter(), &page.label);
        }
        // What the batch id hashes: each record as read (never the envelope around them,
        // which may carry a request id or a timestamp that differs on every response).
        let texts = RecordTexts::of(&records);
        let converted = self.arrow_of(std::mem::take(&mut records), exact, &places, &page, &f);
        let (batch, delivered) = match converted {
            Ok(x) => x,
            Err(Stop::Fail(e)) => return Err(e),
            Err(Stop::Pass(e)) => {
                self.advance(&page);
                return Err(e);
            }
        };
        self.advance(&page);
        let out = match batch.filter(|b| b.num_rows() > 0) {
            Some(records) => self.batches(records, &texts, &delivered, &page, f.body.len()),
            None => Vec::new(),
        };
        self.stop_at_max_pages(&page);
        Ok(Some(out))
    }

    /// The page through the fast path ([`super::records::fast`]): every record fits the
    /// schema as it stands, so there is no drift, no bad record and nothing to quarantine.
    /// `None`: the page takes the general path (which says what is wrong with it, if
    /// anything). Also the document around the records, for pagination.
    fn fast_page(&self, f: &Fetched) -> Option<(FastPage, Option<Value>)> {
        if self.only.is_some() || !self.converter.fast_ready() {
            return None;
        }
        let raw = locate(&f.body, self.raw_at.as_ref()?)?;
        if raw.len() == 0 {
            return None;
        }
        let watermark = self.cfg.incremental.as_ref().map(|i| i.field.as_str());
        let fast = self.converter.convert_fast(&raw, f.body.len(), watermark)?;
        Some((fast, raw.doc))
    }

    /// Where a page of `total` records stands: its start, the next page, its position.
    /// A next position already read in this run ends the paging (else the same pages
    /// would be read until `max_pages`), with an `invalid_request` event naming it.
    fn page_at(&self, total: usize, doc: Option<&Value>, f: &Fetched, label: String) -> PageAt {
        let redactor = self.fetcher.redactor();
        let mut next = self.pager.next(
            &PageMeta {
                records: total,
                doc,
                headers: &f.headers,
                url: &f.url,
            },
            &redactor,
        );
        if let Some(p) = next.as_ref().filter(|p| self.pager.repeats(p)) {
            self.fetcher.event(
                Some(ErrorClass::InvalidRequest),
                format!(
                    "paging stopped after {label}: the API gave a page already read in this run as the next one ({}), so the pagination would read the same pages forever; check `pagination` against the API's answers",
                    position_text(&redactor, p)
                ),
            );
            next = None;
        }
        PageAt {
            start: self.pager.pos.clone(),
            next,
            position: self.pager.source_position(|u| position_url(&redactor, u)),
            read_from: f.url.clone(),
            total,
            label,
        }
    }

    /// The page's records (and, for a replay of quarantined records, only those): the
    /// records, each one's place on the page, the bad ones, whether numbers were kept as
    /// text, how many records the page held, and the document (for pagination).
    fn records_of(&self, f: &Fetched, label: &str) -> Result<PageRecords, ConnectorError> {
        let mut extracted = match extract(&f.body, &self.records_at) {
            Ok(x) => x,
            Err(ExtractError::Malformed(m)) => {
                return Err(invalid(format!(
                    "{label} is not valid JSON ({m}): the API sent a broken or truncated body; the run can be retried, and if it persists, report it to the API's owner"
                ))
                .with_evidence(self.page_evidence(f, "")));
            }
            Err(ExtractError::Shape(m)) => {
                return Err(ConnectorError::new(
                    ErrorClass::ContractChanged,
                    format!("{label}: {m}"),
                )
                .with_evidence(self.page_evidence(f, "")));
            }
        };
        let total = extracted.records.len() + extracted.bad.len();
        // Each good record's place on the page (bad ones are numbered in between).
        let mut places: Vec<usize> = {
            let bad: std::collections::HashSet<usize> =
                extracted.bad.iter().map(|b| b.index).collect();
            (0..total).filter(|i| !bad.contains(i)).collect()
        };
        if let Some(only) = &self.only {
            // Reading quarantined records again: just those.
            let keep = |i: &usize| only.contains(i);
            let records = std::mem::take(&mut extracted.records);
            let (kept_places, kept): (Vec<usize>, Vec<Value>) = places
                .iter()
                .copied()
                .zip(records)
                .filter(|(i, _)| keep(i))
                .unzip();
            places = kept_places;
            extracted.records = kept;
            extracted.bad.retain(|b| keep(&b.index));
        }
        Ok(PageRecords {
            records: extracted.records,
            places,
            bad: extracted.bad,
            exact: extracted.exact,
            total,
            doc: extracted.doc,
        })
    }

    /// Moves past the page: the next call reads the next one (or the source is done).
    fn advance(&mut self, page: &PageAt) {
        self.pager.records += page.total as u64;
        match &page.next {
            Some(p) => {
                let redactor = self.fetcher.redactor();
                self.pager.moved_to(p.clone(), &page.read_from, &redactor);
            }
            None => self.finished = true,
        }
    }

    /// Compares the page with the schema and applies `schema_policy`: the schema evolves
    /// (`evolve`, `warn`), the page's records are kept for replay (`quarantine`), or the
    /// source stops (`fail`).
    fn schema_policy(
        &mut self,
        records: &[Value],
        places: &[usize],
        page: &PageAt,
        f: &Fetched,
    ) -> Result<Drift, ConnectorError> {
        let Some(drift) = self.converter.check(records) else {
            return Ok(Drift::None);
        };
        let summary = drift.summary();
        let label = &page.label;
        let first = || {
            records
                .first()
                .map(|r| crate::cut(&super::records::json_text(r), 200))
                .unwrap_or_default()
        };
        match self.cfg.schema_policy {
            SchemaPolicy::Evolve | SchemaPolicy::Warn => {
                self.converter.evolve(records);
                self.fetcher.push(ConnectorEvent::schema_evolved(
                    self.cfg.schema_policy == SchemaPolicy::Warn,
                    format!("schema evolved at {label}: {summary}"),
                ));
                Ok(Drift::None)
            }
            SchemaPolicy::Quarantine => {
                let error = ConnectorError::new(
                    ErrorClass::ContractChanged,
                    format!("{label} differs from the schema ({summary}): its {} records are quarantined and the source goes on; once the schema is updated (or schema_policy: evolve), `sluice replay` reads them again", records.len()),
                )
                .with_evidence(self.page_evidence(f, &format!("first record: {}", first())));
                let raw: Vec<(usize, String)> = places
                    .iter()
                    .zip(records)
                    .map(|(&i, r)| (i, crate::cut(&super::records::json_text(r), 2000)))
                    .collect();
                self.quarantine(raw, error, &page.start, &page.position);
                Ok(Drift::Quarantined)
            }
            SchemaPolicy::Fail => {
                let e = ConnectorError::new(
                    ErrorClass::ContractChanged,
                    format!("{label} differs from the schema ({summary}): the API changed its records; update the declared schema, or set schema_policy to evolve, warn or quarantine"),
                )
                .with_evidence(self.page_evidence(f, &format!("first record: {}", first())));
                self.stopped = Some(e.clone());
                Err(e)
            }
        }
    }

    /// The watermark: the greatest value of the field on this page, of those the guard
    /// admits (a value far in the future or of another type would stall the source).
    fn learn_watermark<'v>(&mut self, values: impl Iterator<Item = &'v Value>, label: &str) {
        let (Some(_), Some(guard)) = (&self.cfg.incremental, &mut self.guard) else {
            return;
        };
        let values: Vec<&Value> = values.collect();
        guard.learn(values.iter().copied());
        for v in values {
            if guard.admit(v) {
                self.max_seen = newer(self.max_seen.take(), Some(v.clone()));
            }
        }
        for message in guard.report(label) {
            self.fetcher
                .event(Some(ErrorClass::ContractChanged), message);
        }
    }

    /// The records as an Arrow batch, and which of them were delivered: a record whose
    /// value does not fit its column goes through `bad_records`.
    fn arrow_of(
        &mut self,
        records: Vec<Value>,
        exact: bool,
        places: &[usize],
        page: &PageAt,
        f: &Fetched,
    ) -> Result<(Option<arrow::array::RecordBatch>, Vec<bool>), Stop> {
        let mut delivered: Vec<bool> = vec![true; records.len()];
        if records.is_empty() {
            return Ok((None, delivered));
        }
        let converted = self.converter.convert(records, exact).map_err(|m| {
            Stop::Fail(ConnectorError::new(
                ErrorClass::Internal,
                format!("{} could not become an Arrow batch: {m}", page.label),
            ))
        })?;
        for b in &converted.bad {
            if let Some(d) = delivered.get_mut(b.index) {
                *d = false;
            }
        }
        // Converted records are numbered among the good ones: back to page places.
        let bad: Vec<BadRecord> = converted
            .bad
            .into_iter()
            .map(|b| BadRecord {
                index: places.get(b.index).copied().unwrap_or(b.index),
                ..b
            })
            .collect();
        self.bad_records(&bad, &page.label, f, &page.start, &page.position)
            .map_err(Stop::Pass)?;
        Ok((Some(converted.batch), delivered))
    }

    /// The page's records as batches of at most `batching` rows and bytes, each with the
    /// checkpoint the engine stores once the batch is durable downstream.
    ///
    /// The exactly-once rule: only the page's last batch carries the checkpoint after the
    /// page; every other one carries the page's start. A crash between two of them resumes
    /// at the page's start, reads the same records into the same batches (their ids come
    /// from the records and the position, not from the read), and the sinks' ledgers skip
    /// the ones already written. Checkpointing past the page after its first batch would
    /// lose the rest of the page.
    fn batches(
        &self,
        records: arrow::array::RecordBatch,
        texts: &RecordTexts,
        delivered: &[bool],
        page: &PageAt,
        body_bytes: usize,
    ) -> Vec<SourceBatch> {
        // The records delivered and the schema they were declared with. An inferred
        // schema is left out on purpose: it depends on the pages read before in the
        // run, so a page re-read after a resume would otherwise change its id.
        let mut hasher = blake3::Hasher::new();
        texts.hash_into(&mut hasher, delivered);
        hasher.update(&serde_json::to_vec(&self.cfg.schema).unwrap_or_default());
        hasher.update(&serde_json::to_vec(&self.cfg.nested).unwrap_or_default());
        if let Some(only) = &self.only {
            for i in only {
                hasher.update(&(*i as u64).to_le_bytes());
            }
        }
        let whole = Batch::with_content_hash(
            self.pipeline.clone(),
            self.node.clone(),
            page.position.clone(),
            hasher.finalize().as_bytes(),
            records,
        );
        let rows = whole.num_rows();
        let per_record = (body_bytes / page.total.max(1)).max(1);
        let by_bytes = (self.cfg.batching.max_bytes / per_record).max(1);
        let chunk = self.cfg.batching.max_rows.min(by_bytes).max(1);
        let parts = if rows <= chunk {
            vec![whole]
        } else {
            (0..rows)
                .step_by(chunk)
                .map(|start| whole.slice(start, chunk.min(rows - start)))
                .collect()
        };
        let n = parts.len();
        let here = self.checkpoint(Some(&self.page_start()));
        let after = self.checkpoint(page.next.as_ref());
        parts
            .into_iter()
            .enumerate()
            .map(|(i, batch)| SourceBatch {
                batch,
                checkpoint: Some(if i + 1 == n {
                    after.clone()
                } else {
                    here.clone()
                }),
            })
            .collect()
    }

    /// Stops after `max_pages` pages, saying so, when the API has more.
    fn stop_at_max_pages(&mut self, page: &PageAt) {
        if page.next.is_some() && self.pages_read >= self.cfg.max_pages {
            self.finished = true;
            self.guard_stopped = true;
            self.fetcher.event(
                None,
                format!(
                    "stopped after max_pages ({}) with pages left; the next run goes on from there",
                    self.cfg.max_pages
                ),
            );
        }
    }

    /// The position of the page just read (to re-read it after a crash mid-page).
    fn page_start(&self) -> Position {
        self.current_page.clone().unwrap_or(Position::First)
    }

    /// Keeps records for replay: the engine takes them with `take_quarantined`.
    fn quarantine(
        &mut self,
        raw: Vec<(usize, String)>,
        error: ConnectorError,
        page: &Position,
        position: &sluice_core::SourcePosition,
    ) {
        use arrow::array::{StringArray, UInt64Array};
        use arrow::datatypes::{DataType, Field, Schema};
        if raw.is_empty() {
            return;
        }
        let places: Vec<usize> = raw.iter().map(|(i, _)| *i).collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("_index", DataType::UInt64, false),
            Field::new("_raw", DataType::Utf8, false),
        ]));
        let columns: Vec<arrow::array::ArrayRef> = vec![
            Arc::new(UInt64Array::from_iter_values(
                places.iter().map(|&i| i as u64),
            )),
            Arc::new(StringArray::from_iter_values(
                raw.iter().map(|(_, r)| r.as_str()),
            )),
        ];
        let records = match arrow::array::RecordBatch::try_new(schema, columns) {
            Ok(r) => r,
            Err(e) => {
                // Two well-formed columns of equal length: cannot happen; say so loudly.
                self.pending = Some(ConnectorError::new(
                    ErrorClass::Internal,
                    format!("could not keep quarantined records: {e}"),
                ));
                return;
            }
        };
        self.quarantined.push(QuarantinedRecords {
            batch: Batch::new(
                self.pipeline.clone(),
                self.node.clone(),
                position.clone(),
                records,
            ),
            error,
            reread: json!({
                "page": page,
                "watermark": self.start_watermark,
                "records": places,
            }),
        });
    }

    fn bad_records(
        &mut self,
        bad: &[BadRecord],
        label: &str,
        f: &Fetched,
        page: &Position,
        position: &sluice_core::SourcePosition,
    ) -> Result<(), ConnectorError> {
        if bad.is_empty() {
            return Ok(());
        }
        match self.cfg.bad_records {
            BadRecordPolicy::Quarantine => {
                let b = &bad[0];
                let error = invalid(format!(
                    "{} malformed record(s) at {label}, the first at index {} ({}): they are quarantined and the page's other records delivered; `sluice replay` reads them again once the API serves them well",
                    bad.len(),
                    b.index,
                    b.reason
                ))
                .with_evidence(self.page_evidence(f, &format!("record {}: {}", b.index, b.snippet)));
                let redactor = self.fetcher.redactor();
                let raw = bad
                    .iter()
                    .map(|b| (b.index, redactor.text(&b.snippet)))
                    .collect();
                drop(redactor);
                self.quarantine(raw, error, page, position);
                Ok(())
            }
            BadRecordPolicy::Fail => {
                let b = &bad[0];
                Err(invalid(format!(
                    "{} malformed record(s) at {label}, the first at index {} ({}): the page is skipped; set bad_records: skip to keep its good records",
                    bad.len(),
                    b.index,
                    b.reason
                ))
                .with_evidence(self.page_evidence(f, &format!("record {}: {}", b.index, b.snippet))))
            }
            BadRecordPolicy::Skip => {
                let redactor = self.fetcher.redactor();
                for b in bad.iter().take(10) {
                    self.fetcher.event(
                        Some(ErrorClass::InvalidRequest),
                        format!(
                            "left out malformed record {} at {label} ({}): {}",
                            b.index,
                            b.reason,
                            redactor.text(&b.snippet)
                        ),
                    );
                }
                if bad.len() > 10 {
                    self.fetcher.event(
                        Some(ErrorClass::InvalidRequest),
                        format!(
                            "left out {} more malformed records at {label}",
                            bad.len() - 10
                        ),
                    );
                }
                Ok(())
            }
        }
    }
}

/// `sluice doctor`'s view of the source.
impl HttpSource {
    /// Where the source connects: the API and, for OAuth2, the token endpoint.
    pub(crate) fn endpoints(&self) -> Vec<sluice_config::doctor::Endpoint> {
        use sluice_config::doctor::Endpoint;
        let probe = render_str(&self.cfg.url, &super::template::Vars::probe());
        let mut out: Vec<Endpoint> = Endpoint::of_url(&probe, "HTTP API", false)
            .into_iter()
            .collect();
        if let Some(super::config::AuthConfig::Oauth2ClientCredentials(o)) = &self.cfg.auth
            && let Some(e) = Endpoint::of_url(&o.token_url, "OAuth2 token endpoint", false)
            && !out.contains(&e)
        {
            out.push(e);
        }
        out
    }

    /// The checks of the auth, parameters and upstream steps: the credentials (an
    /// OAuth2 token fetched), then one request as a run makes its first (redacted), what
    /// the page held, whether the next page advances, and whether the records fit the
    /// declared schema. Stops at the first failure; the page's records are the sample.
    pub(crate) async fn probe(&mut self) -> sluice_config::doctor::ProbeReport {
        use sluice_config::doctor::{Finding, ProbeReport, Step};
        let mut report = ProbeReport::default();
        let out = &mut report.findings;
        let redactor = self.fetcher.redactor();
        out.push(Finding::passed(
            Step::Auth,
            "credentials configured",
            self.fetcher.auth.describe(),
        ));
        if let Some(token) = self
            .fetcher
            .auth
            .probe_token(&self.fetcher.client, &redactor)
            .await
        {
            match token {
                Ok(found) => out.push(Finding::passed(Step::Auth, "OAuth2 token fetch", found)),
                Err(e) => {
                    out.push(Finding::failed(Some(Step::Auth), "OAuth2 token fetch", e));
                    return report;
                }
            }
        }
        let spec = match self.build_request() {
            Ok(spec) => spec,
            Err(e) => {
                out.push(Finding::failed(
                    Some(Step::Parameters),
                    "the first request's URL",
                    e,
                ));
                return report;
            }
        };
        let mut line = format!(
            "{} {}",
            self.fetcher.method.as_str(),
            self.fetcher.redactor().url(&spec.url)
        );
        // As a run does: a page the API cannot serve that large (413, or a gateway
        // timeout on a large page) is asked for again smaller, so that the doctor does
        // not fail a pipeline its runs read (the run's events say so as well).
        let mut spec = spec;
        let mut smaller = None;
        let answer = loop {
            let shrinkable = self.pager.shrinkable();
            match self.fetcher.fetch(&spec, shrinkable).await {
                Err(e) if e.class == ErrorClass::PayloadTooLarge && shrinkable => {
                    let Some(size) = self.pager.shrink() else {
                        break Err(e);
                    };
                    match self.build_request() {
                        Ok(next) => spec = next,
                        Err(_) => break Err(e),
                    }
                    smaller = Some(size);
                    line = format!(
                        "{} {}",
                        self.fetcher.method.as_str(),
                        self.fetcher.redactor().url(&spec.url)
                    );
                }
                other => break other,
            }
        };
        let fetched = match answer {
            Ok(f) => f,
            Err(e) => {
                let step = Step::of_class(e.class);
                if step > Step::Auth {
                    out.push(Finding::passed(
                        Step::Auth,
                        "the API accepts the credentials",
                        "no 401, 403 or rate limit on the first request",
                    ));
                }
                out.push(Finding::failed(
                    None,
                    format!("one request as the pipeline makes it: {line}"),
                    e,
                ));
                return report;
            }
        };
        out.push(Finding::passed(
            Step::Auth,
            "the API accepts the credentials",
            "200 on the first request: no 401, 403 or rate limit",
        ));
        let label = self.page_label();
        let records_at = match &self.cfg.records {
            RecordsConfig::Root => "the root array".to_owned(),
            RecordsConfig::Ndjson => "NDJSON lines".to_owned(),
            RecordsConfig::Path(p) => format!("`{p}`"),
        };
        let page = match self.records_of(&fetched, &label) {
            Ok(page) => page,
            Err(e) => {
                out.push(Finding::failed(
                    None,
                    format!("the records at {records_at}"),
                    e,
                ));
                return report;
            }
        };
        out.push(Finding::passed(
            Step::Parameters,
            format!("one request as the pipeline makes it: {line}"),
            format!(
                "200, {} bytes, {} records at {records_at}{}{}",
                fetched.body.len(),
                page.total,
                match smaller {
                    Some(size) => format!(
                        " (the API could not serve the configured page size, so it was asked for {size} records per page, as a run does: set that size to spare the first attempts)"
                    ),
                    None => String::new(),
                },
                if page.bad.is_empty() {
                    String::new()
                } else {
                    format!(
                        " ({} malformed: bad_records decides; the first: {})",
                        page.bad.len(),
                        page.bad[0].reason
                    )
                }
            ),
        ));
        let next = self.pager.next(
            &PageMeta {
                records: page.total,
                doc: page.doc.as_ref(),
                headers: &fetched.headers,
                url: &fetched.url,
            },
            &redactor,
        );
        let shown = |p: &Position| position_text(&redactor, p);
        match next {
            None => out.push(Finding::passed(
                Step::Parameters,
                "the next page",
                "none: this page is the last",
            )),
            Some(p) if self.pager.repeats(&p) => {
                out.push(Finding::failed(
                    Some(Step::Parameters),
                    "the next page advances",
                    invalid(format!(
                        "the next page is this one again ({}): the pagination would read the same page forever; check `pagination` against the API's answers",
                        shown(&p)
                    ))
                    .with_evidence(self.page_evidence(&fetched, "")),
                ));
                return report;
            }
            Some(p) => out.push(Finding::passed(
                Step::Parameters,
                "the next page advances",
                format!("{} -> {}", shown(&self.pager.pos), shown(&p)),
            )),
        }
        if let Some(drift) = self.converter.check(&page.records) {
            let first = page
                .records
                .first()
                .map(|r| crate::cut(&super::records::json_text(r), 200))
                .unwrap_or_default();
            out.push(Finding::failed(
                Some(Step::Upstream),
                "the records against the declared schema",
                ConnectorError::new(
                    ErrorClass::ContractChanged,
                    format!(
                        "{label} differs from the declared schema ({}): the API changed its records; update the schema, or set schema_policy to evolve, warn or quarantine",
                        drift.summary()
                    ),
                )
                .with_evidence(self.page_evidence(&fetched, &format!("first record: {first}"))),
            ));
        }
        report.sample = Some(page.records);
        report
    }
}

/// A position as logs and messages show it: redacted.
fn position_text(redactor: &Redactor, p: &Position) -> String {
    match p {
        Position::First => "the first page".to_owned(),
        Position::Page { page, .. } => format!("page {page}"),
        Position::Offset { offset, .. } => format!("offset {offset}"),
        Position::Cursor(c) => redactor.text(&format!("cursor `{c}`")),
        Position::Url(u) => position_url(redactor, u),
    }
}

/// A page URL given by the API as a batch's position: redacted, and, when redaction
/// changed it, with a short hash of the full URL, so that two pages whose URLs differ
/// only in masked values keep distinct positions (and batch ids).
fn position_url(redactor: &Redactor, url: &str) -> String {
    let Ok(parsed) = Url::parse(url) else {
        return String::new();
    };
    let shown = redactor.url(&parsed);
    if shown == parsed.as_str() {
        shown
    } else {
        let hash = blake3::hash(url.as_bytes()).to_hex();
        format!("{shown} #{}", &hash[..12])
    }
}

/// Everything of the config that is secret, for redacting free text: the auth's
/// secrets, and the values of headers, query parameters (of `query` and `url`) and body
/// fields not named in `public`. Values that are only template variables are left out,
/// and (but for headers) values shorter than 4 characters, which cannot be secrets worth
/// the noise of masking them everywhere.
/// The key of the API's shared rate-limit budget: its origin (`scheme://host:port`) and
/// a hash of the credentials (the `auth` block, the values of headers not `public`), so
/// that every source reading the API as the same client shares one budget. It holds no
/// secret: the credentials are hashed (blake3, cut to 128 bits).
pub(crate) fn budget_key(config: &HttpSourceConfig, url: &str) -> String {
    use super::config::AuthConfig;
    let origin = Url::parse(url)
        .map(|u| {
            let port = u.port_or_known_default().unwrap_or_default();
            format!(
                "{}://{}:{port}",
                u.scheme(),
                u.host_str().unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let mut h = blake3::Hasher::new();
    let mut part = |tag: &str, value: &str| {
        h.update(tag.as_bytes());
        h.update(&[0]);
        h.update(&(value.len() as u64).to_le_bytes());
        h.update(value.as_bytes());
    };
    match &config.auth {
        None => part("auth", "none"),
        Some(AuthConfig::Basic { username, password }) => {
            part("basic", username);
            part("password", password.expose());
        }
        Some(AuthConfig::Bearer { token }) => part("bearer", token.expose()),
        Some(AuthConfig::ApiKey { name, value, .. }) => {
            part("api_key", name);
            part("value", value.expose());
        }
        Some(AuthConfig::Oauth2ClientCredentials(o)) => {
            part("oauth2", &o.token_url);
            part("client_id", &o.client_id);
            part("client_secret", o.client_secret.expose());
        }
        Some(AuthConfig::Hmac(m)) => {
            part("hmac", m.key_id.as_deref().unwrap_or_default());
            part("key", m.key.expose());
        }
    }
    let public = |n: &str| config.public.iter().any(|p| p.eq_ignore_ascii_case(n));
    for (name, value) in &config.headers {
        if !public(name) {
            part(&name.to_ascii_lowercase(), value.expose());
        }
    }
    let hash = h.finalize().to_hex();
    format!("{origin} {}", &hash[..32])
}

fn config_secrets(config: &HttpSourceConfig, mut secrets: Vec<Secret>) -> Vec<Secret> {
    let public = |n: &str| config.public.iter().any(|p| p.eq_ignore_ascii_case(n));
    let mut add = |v: &str, min: usize| {
        if v.chars().count() >= min && !is_template_only(v) && !v.contains("{{") {
            secrets.push(Secret::new(v));
        }
    };
    for (k, v) in &config.headers {
        if !public(k) {
            add(v.expose(), 1);
        }
    }
    for (k, v) in &config.query {
        if !public(k) {
            add(v, 4);
        }
    }
    for s in sluice_core::redact::url_secrets(&config.url, public) {
        add(s.expose(), 4);
    }
    fn body(v: &Value, shown: bool, public: &dyn Fn(&str) -> bool, add: &mut dyn FnMut(&str)) {
        match v {
            Value::Object(m) => m
                .iter()
                .for_each(|(k, v)| body(v, shown || public(k), public, add)),
            Value::Array(a) => a.iter().for_each(|v| body(v, shown, public, add)),
            Value::String(t) if !shown => add(t),
            Value::Number(n) if !shown => add(&n.to_string()),
            _ => {}
        }
    }
    if let Some(b) = &config.body {
        body(b, false, &public, &mut |t| add(t, 4));
    }
    secrets
}

/// Query parameters whose values print: the node's `public` list and the parameters the
/// pagination and the watermark fill in (page numbers, offsets, cursors).
fn shown_params(config: &HttpSourceConfig) -> Vec<String> {
    use super::config::PaginationConfig as P;
    let mut out = config.public.clone();
    match &config.pagination {
        P::PageNumber(c) => {
            out.push(c.param.clone());
            out.extend(c.size_param.clone());
        }
        P::OffsetLimit(c) => {
            out.push(c.offset_param.clone());
            out.push(c.limit_param.clone());
        }
        P::Cursor(c) => out.push(c.param.clone()),
        _ => {}
    }
    if let Some(p) = config.incremental.as_ref().and_then(|i| i.param.clone()) {
        out.push(p);
    }
    out
}

#[async_trait]
impl Source for HttpSource {
    async fn next_batch(&mut self) -> Result<Option<SourceBatch>, ConnectorError> {
        loop {
            if let Some(b) = self.ready.pop_front() {
                return Ok(Some(b));
            }
            if let Some(e) = self.pending.take() {
                return Err(e);
            }
            if let Some(e) = &self.stopped {
                return Err(e.clone());
            }
            if self.finished {
                // The held batch ends the run: its checkpoint marks the run complete
                // unless a guard (max_pages) stopped it with pages left.
                return Ok(self.held.take());
            }
            self.current_page = Some(self.pager.pos.clone());
            // The held batch waits for the next page at most `batching.max_wait`.
            let read = self.read_page(self.held_deadline()).await;
            match read {
                Ok(Some(mut batches)) => {
                    let ends = batches.is_empty() && self.finished && !self.guard_stopped;
                    if let Some(mut h) = self.held.take() {
                        if ends {
                            // An empty last page: the held batch is the run's last.
                            h.checkpoint = Some(self.checkpoint(None));
                        } else if batches.is_empty() {
                            // An empty page with more after it: should the run end on
                            // an empty page, a batch without records says so.
                            self.released = Some(h.batch.records.schema());
                        }
                        self.ready.push_back(h);
                    } else if ends {
                        let last = self.completion();
                        self.ready.extend(last);
                    }
                    self.held = batches.pop();
                    if self.held.is_some() {
                        self.held_since = Some(std::time::Instant::now());
                        self.released = None;
                    }
                    self.ready.extend(batches);
                }
                Ok(None) => {
                    // The next page is later than `max_wait`: the held batch goes now,
                    // with its checkpoint (the next page's position); the request goes on.
                    if let Some(h) = self.held.take() {
                        self.released = Some(h.batch.records.schema());
                        self.ready.push_back(h);
                    }
                }
                Err(e) => {
                    // Whatever was read before the failure is still good: hand it over
                    // first, then the error.
                    if let Some(h) = self.held.take() {
                        self.ready.push_back(h);
                    }
                    if !self.ready.is_empty() && self.stopped.is_none() {
                        self.pending = Some(e);
                        continue;
                    }
                    return Err(e);
                }
            }
        }
    }

    fn drain_events(&mut self) -> Vec<ConnectorEvent> {
        self.fetcher.drain_events()
    }

    async fn health(&mut self) -> Result<Option<std::time::Duration>, ConnectorError> {
        let started = std::time::Instant::now();
        let spec = self.build_request()?;
        match self.fetcher.fetch(&spec, self.pager.shrinkable()).await {
            // The API answered, and would with smaller pages: a run asks for those.
            Err(e) if e.class == ErrorClass::PayloadTooLarge && self.pager.shrinkable() => {}
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        Ok(Some(started.elapsed()))
    }

    /// Each request is retried by the node's policy inside (`Fetcher::fetch`).
    fn retries_inside(&self) -> bool {
        true
    }

    fn listen(&mut self, listener: sluice_core::EventListener) -> bool {
        *self
            .fetcher
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(listener);
        true
    }

    fn take_quarantined(&mut self) -> Vec<QuarantinedRecords> {
        std::mem::take(&mut self.quarantined)
    }

    async fn reread(&mut self, at: &Value) -> Result<Vec<Batch>, ConnectorError> {
        let unreadable = |what: &str| {
            invalid(format!(
                "the quarantined records' position is unreadable ({what}): drop them with `sluice failed drop` and run the pipeline again"
            ))
        };
        let page: Position = at
            .get("page")
            .cloned()
            .and_then(|p| serde_json::from_value(p).ok())
            .ok_or_else(|| unreadable("page"))?;
        let only: Vec<usize> = at
            .get("records")
            .cloned()
            .and_then(|p| serde_json::from_value(p).ok())
            .ok_or_else(|| unreadable("records"))?;
        if let Some(ahead) = self.prefetched.take() {
            ahead.abort();
        }
        self.pager.pos = self.pager.kept(page, &self.fetcher.redactor());
        self.start_watermark = at.get("watermark").filter(|v| !v.is_null()).cloned();
        self.only = Some(only);
        self.current_page = Some(self.pager.pos.clone());
        let batches = self.read_page(None).await?.unwrap_or_default();
        self.only = None;
        if let Some(still) = self.quarantined.drain(..).next() {
            return Err(still.error);
        }
        Ok(batches.into_iter().map(|b| b.batch).collect())
    }
}

/// Where a page is: its label (for messages), where it started and where the next one is,
/// its source position (the batch ids), and how many records it held.
struct PageAt {
    label: String,
    start: Position,
    next: Option<Position>,
    position: sluice_core::SourcePosition,
    /// The URL the page was read from (after redirects).
    read_from: Url,
    total: usize,
}

/// A page's records as read.
struct PageRecords {
    /// The good records.
    records: Vec<Value>,
    /// Each good record's place on the page.
    places: Vec<usize>,
    /// The records that are not JSON objects.
    bad: Vec<BadRecord>,
    /// Some records hold numbers kept as their text.
    exact: bool,
    /// Records on the page, good and bad.
    total: usize,
    /// The document around them (for pagination).
    doc: Option<Value>,
}

/// What the schema policy made of a page.
#[derive(Debug, PartialEq, Eq)]
enum Drift {
    /// The page goes on (no drift, or the schema evolved).
    None,
    /// Its records were kept for replay; nothing of it is delivered.
    Quarantined,
}

/// Why a page's conversion stopped: the source stops (`Fail`), or the page is passed and
/// the error reported (`Pass`: bad records under `bad_records: fail`).
enum Stop {
    Fail(ConnectorError),
    Pass(ConnectorError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: Value) -> HttpSourceConfig {
        let mut spec = json!({
            "url": "https://api.example.com/v1/orders",
            "records": {"path": "$.data"},
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        HttpSourceConfig::from_spec(spec).expect("a valid spec")
    }

    #[test]
    fn the_budget_key_is_the_origin_and_a_hash_of_the_credentials_never_a_secret() {
        let url = "https://api.example.com/v1/orders";
        let bearer = |t: &str| config(json!({"auth": {"bearer": {"token": t}}}));
        let key = budget_key(&bearer("tok-secret-1"), url);
        assert!(key.starts_with("https://api.example.com:443 "), "{key}");
        assert!(!key.contains("tok-secret-1"), "{key}");
        // The same credentials share a budget, whatever else differs (a public query).
        let mut other = bearer("tok-secret-1");
        other.query.insert("status".into(), "open".into());
        assert_eq!(budget_key(&other, url), key);
        // Other credentials, or none, or another host: another budget.
        assert_ne!(budget_key(&bearer("tok-secret-2"), url), key);
        assert_ne!(budget_key(&config(json!({})), url), key);
        assert_ne!(
            budget_key(&bearer("tok-secret-1"), "https://other.example.com/v1"),
            key
        );
        // A header that is not public is a credential; a public one is not.
        let header = |v: &str, public: bool| {
            config(json!({
                "headers": {"X-Api-Key": v},
                "public": if public { vec!["x-api-key"] } else { vec![] },
            }))
        };
        assert_ne!(
            budget_key(&header("a", false), url),
            budget_key(&header("b", false), url)
        );
        assert_eq!(
            budget_key(&header("a", true), url),
            budget_key(&header("b", true), url)
        );
    }
}
