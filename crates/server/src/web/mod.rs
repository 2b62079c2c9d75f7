//! The web view (docs/web.md): server-rendered pages on the service's address, with their
//! CSS and script embedded in the binary. Reading is open like the JSON API; running,
//! replaying and dropping need a signed-in session (the API token, entered once in a
//! form, sets an HttpOnly SameSite=Strict cookie) and pass two CSRF checks: the session's
//! form token in the form, and the request's `Origin` (or `Referer`) naming this host.

mod dag;
mod html;
mod pages;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use sluice_engine::{Event, EventKind};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, LazyLock, Mutex};
use subtle::ConstantTimeEq;

use crate::service::Service;
use html::Viewer;

/// The session cookie's name.
const COOKIE: &str = "sluice_session";
/// A session lasts this long (ms).
const SESSION_TTL: i64 = 12 * 3600 * 1000;
/// At most this many sessions are kept (the oldest go first).
const MAX_SESSIONS: usize = 10_000;
/// Events kept per pipeline for the run page's timeline.
const MAX_EVENTS: usize = 2_000;
/// Checks kept per link for its latency history.
const MAX_CHECKS: usize = 60;

/// The web view's state: the service and the sessions.
pub(crate) struct Web {
    pub(crate) svc: Arc<Service>,
    sessions: Mutex<HashMap<String, Session>>,
}

#[derive(Clone)]
struct Session {
    csrf: String,
    created: i64,
}

type WebState = axum::extract::State<Arc<Web>>;

/// The pages and their forms.
pub(crate) fn router(svc: Arc<Service>) -> Router {
    let web = Arc::new(Web {
        svc,
        sessions: Mutex::default(),
    });
    Router::new()
        .route("/", get(pages::pipelines))
        .route("/ui/pipelines/{name}", get(pages::pipeline))
        .route("/ui/pipelines/{name}/run", post(pages::run_now))
        .route("/ui/runs", get(pages::runs))
        .route("/ui/runs/{id}", get(pages::run))
        .route("/ui/failed", get(pages::failed))
        .route("/ui/failed/{id}", get(pages::failed_one))
        .route("/ui/failed/{id}/drop", post(pages::drop_batch))
        .route("/ui/replay", post(pages::replay))
        .route("/ui/links", get(pages::links))
        .route("/ui/login", get(pages::login_form).post(pages::login))
        .route("/ui/logout", post(pages::logout))
        .route("/ui/assets/style.css", get(style))
        .route("/ui/assets/app.js", get(script))
        .with_state(web)
}

async fn style() -> Response {
    asset("text/css; charset=utf-8", include_str!("style.css"))
}

async fn script() -> Response {
    asset("text/javascript; charset=utf-8", include_str!("app.js"))
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// A fresh random token (two v4 UUIDs: 244 random bits from the OS).
fn random_token() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn cookie_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| {
            let (k, v) = kv.trim().split_once('=')?;
            (k == COOKIE).then(|| v.to_owned())
        })
}

/// A page's answer: the HTML with the headers every page carries.
pub(crate) fn html_response(status: StatusCode, body: String) -> Response {
    let mut r = (status, body).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Why a change was refused: 401 (not signed in) or 403 (a CSRF check failed).
pub(crate) struct Refused(StatusCode, String);

impl Web {
    fn token_set(&self) -> bool {
        self.svc.token.is_some()
    }

    fn session(&self, headers: &HeaderMap) -> Option<Session> {
        let id = cookie_of(headers)?;
        let mut sessions = self.sessions.lock().expect("sessions");
        let now = sluice_state::now_ms();
        match sessions.get(&id) {
            Some(s) if now - s.created < SESSION_TTL => Some(s.clone()),
            Some(_) => {
                sessions.remove(&id);
                None
            }
            None => None,
        }
    }

    /// A new session: its cookie (HttpOnly, SameSite=Strict, the whole site).
    fn new_session(&self) -> HeaderValue {
        let id = random_token();
        let mut sessions = self.sessions.lock().expect("sessions");
        if sessions.len() >= MAX_SESSIONS {
            let now = sluice_state::now_ms();
            sessions.retain(|_, s| now - s.created < SESSION_TTL);
            if sessions.len() >= MAX_SESSIONS {
                if let Some(oldest) = sessions
                    .iter()
                    .min_by_key(|(_, s)| s.created)
                    .map(|(k, _)| k.clone())
                {
                    sessions.remove(&oldest);
                }
            }
        }
        sessions.insert(
            id.clone(),
            Session {
                csrf: random_token(),
                created: sluice_state::now_ms(),
            },
        );
        HeaderValue::from_str(&format!(
            "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            SESSION_TTL / 1000
        ))
        .expect("a cookie of hex digits")
    }

    fn end_session(&self, headers: &HeaderMap) {
        if let Some(id) = cookie_of(headers) {
            self.sessions.lock().expect("sessions").remove(&id);
        }
    }

    /// Who looks: with a token set, a session is signed in; without one (loopback only),
    /// everyone may change things, and a session is opened for its form token.
    fn viewer(&self, headers: &HeaderMap) -> (Viewer, Option<HeaderValue>) {
        let session = self.session(headers);
        if self.token_set() {
            return (
                Viewer {
                    may_change: session.is_some(),
                    csrf: session.map(|s| s.csrf),
                    token_set: true,
                },
                None,
            );
        }
        let (csrf, cookie) = match session {
            Some(s) => (s.csrf, None),
            None => {
                let cookie = self.new_session();
                let id = cookie
                    .to_str()
                    .ok()
                    .and_then(|c| c.split(';').next())
                    .and_then(|kv| kv.split_once('='))
                    .map(|(_, v)| v.to_owned())
                    .unwrap_or_default();
                let csrf = self
                    .sessions
                    .lock()
                    .expect("sessions")
                    .get(&id)
                    .map(|s| s.csrf.clone())
                    .unwrap_or_default();
                (csrf, Some(cookie))
            }
        };
        (
            Viewer {
                may_change: true,
                csrf: Some(csrf),
                token_set: false,
            },
            cookie,
        )
    }

    /// The checks of every change: the request comes from this site (`Origin`, else
    /// `Referer`, when the browser sends one; `Sec-Fetch-Site` not cross-site), a signed-in
    /// session, and its form token in the form.
    fn check_change(&self, headers: &HeaderMap, form: &Form) -> Result<(), Refused> {
        same_origin(headers)?;
        let Some(session) = self.session(headers) else {
            return Err(Refused(
                StatusCode::UNAUTHORIZED,
                if self.token_set() {
                    "this changes things: sign in with the API token first (/ui/login)".into()
                } else {
                    "the page's session expired: reload it and try again".into()
                },
            ));
        };
        let given = form.get("csrf").unwrap_or("");
        if given.is_empty() || !bool::from(given.as_bytes().ct_eq(session.csrf.as_bytes())) {
            return Err(Refused(
                StatusCode::FORBIDDEN,
                "the form's CSRF token is missing or not this session's: reload the page and try again".into(),
            ));
        }
        Ok(())
    }

    /// Compares the token entered in the login form with the service's, in constant time.
    fn token_matches(&self, given: &str) -> bool {
        match &self.svc.token {
            Some(expected) => bool::from(given.trim().as_bytes().ct_eq(expected.as_bytes())),
            None => true,
        }
    }
}

/// A request from another site is refused (a browser names the page's origin).
fn same_origin(headers: &HeaderMap) -> Result<(), Refused> {
    let refused = |why: String| Err(Refused(StatusCode::FORBIDDEN, why));
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return refused("a request from another site is refused".into());
    }
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            let referer = headers.get(header::REFERER)?.to_str().ok()?;
            let rest = referer.split_once("://")?;
            Some(format!(
                "{}://{}",
                rest.0,
                rest.1.split('/').next().unwrap_or("")
            ))
        });
    match origin {
        None => Ok(()),
        Some(o) if o == format!("http://{host}") || o == format!("https://{host}") => Ok(()),
        Some(o) => refused(format!(
            "the request comes from `{o}`, not from this service's pages ({host}): refused"
        )),
    }
}

/// A form body (`application/x-www-form-urlencoded`), keeping repeated fields.
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    pub(crate) fn parse(body: &[u8]) -> Form {
        let text = String::from_utf8_lossy(body);
        Form(
            text.split('&')
                .filter(|kv| !kv.is_empty())
                .map(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    (decode(k), decode(v))
                })
                .collect(),
        )
    }

    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// An event of a run, kept for the run page's timeline (in memory: the latest
/// [`MAX_EVENTS`] per pipeline of this service).
#[derive(Clone)]
pub(crate) struct Noted {
    pub(crate) at: i64,
    pub(crate) node: String,
    pub(crate) kind: &'static str,
    pub(crate) text: String,
}

static EVENTS: LazyLock<Mutex<BTreeMap<String, VecDeque<Noted>>>> = LazyLock::new(Mutex::default);

/// Keeps a run's event for the timeline (batches read and written are counted on the
/// nodes, not listed).
pub(crate) fn note_event(pipeline: &str, event: &Event) {
    let (kind, text) = match &event.kind {
        EventKind::NodeStarted => ("started", "started".to_owned()),
        EventKind::BatchRead { .. }
        | EventKind::BatchWritten { .. }
        | EventKind::DuplicateSkipped { .. } => return,
        EventKind::Retried {
            class,
            wait,
            message,
        } => (
            "retry",
            format!("[{class}] retry in {:.1}s: {message}", wait.as_secs_f64()),
        ),
        EventKind::Split { class, rows } => (
            "split",
            format!("[{class}] split a batch of {rows} records in halves"),
        ),
        EventKind::Quarantined {
            class,
            rows,
            message,
        } => (
            "quarantine",
            format!("[{class}] quarantined {rows} record(s): {message}"),
        ),
        EventKind::Skipped { class, rows } => {
            ("skip", format!("[{class}] skipped {rows} record(s)"))
        }
        EventKind::Connector { class, message, .. } => (
            "connector",
            match class {
                Some(c) => format!("[{c}] {message}"),
                None => message.clone(),
            },
        ),
        EventKind::LinkWentDown { .. } | EventKind::LinkCameBack { .. } => {
            ("link", event.kind.describe().unwrap_or_default())
        }
        EventKind::Paused { .. } | EventKind::Resumed { .. } => {
            ("pause", event.kind.describe().unwrap_or_default())
        }
        EventKind::Compensated { ok, message } => (
            "compensation",
            format!(
                "compensation {}: {message}",
                if *ok { "ran" } else { "failed" }
            ),
        ),
        EventKind::NodeFinished { status, error } => (
            "finished",
            match error {
                Some(e) => format!("{status}: {e}"),
                None => status.clone(),
            },
        ),
    };
    let mut all = EVENTS.lock().expect("events");
    let list = all.entry(pipeline.to_owned()).or_default();
    if list.len() >= MAX_EVENTS {
        list.pop_front();
    }
    list.push_back(Noted {
        at: sluice_state::now_ms(),
        node: event.node.clone(),
        kind,
        text,
    });
}

/// The events of `pipeline` between two times (ms).
pub(crate) fn events_between(pipeline: &str, from: i64, to: i64) -> Vec<Noted> {
    EVENTS
        .lock()
        .expect("events")
        .get(pipeline)
        .map(|l| {
            l.iter()
                .filter(|e| e.at >= from && e.at <= to)
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// One check of a link: when (ms), and its latency (ms) if it was up.
pub(crate) type Check = (i64, Option<u64>);

/// The checks kept, by (pipeline, link).
type Checks = BTreeMap<(String, String), VecDeque<Check>>;

static CHECKS: LazyLock<Mutex<Checks>> = LazyLock::new(Mutex::default);

/// Keeps a link check of `pipeline` for the links page's history (the latest
/// [`MAX_CHECKS`] per link, in memory).
pub(crate) fn note_links(pipeline: &str, at: i64, links: &[serde_json::Value]) {
    let mut all = CHECKS.lock().expect("checks");
    for l in links {
        let link = l["link"].as_str().unwrap_or("").to_owned();
        let list = all.entry((pipeline.to_owned(), link)).or_default();
        if list.len() >= MAX_CHECKS {
            list.pop_front();
        }
        let latency = (l["up"] == true).then(|| l["latency_ms"].as_u64().unwrap_or(0));
        list.push_back((at, latency));
    }
}

/// The checks kept of one link, oldest first.
pub(crate) fn checks_of(pipeline: &str, link: &str) -> Vec<Check> {
    CHECKS
        .lock()
        .expect("checks")
        .get(&(pipeline.to_owned(), link.to_owned()))
        .map(|l| l.iter().copied().collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_decode_and_keep_repeated_fields() {
        let f = Form::parse(b"csrf=a%2Bb&batch=x+1&batch=y%3C&bad=%zz&end=%4");
        assert_eq!(f.get("csrf"), Some("a+b"));
        assert_eq!(f.all("batch"), ["x 1", "y<"]);
        assert_eq!(f.get("bad"), Some("%zz"));
        assert_eq!(f.get("end"), Some("%4"));
    }

    #[test]
    fn other_origins_are_refused() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:7878"));
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:7878"),
        );
        assert!(same_origin(&h).is_ok());
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://evil.example"),
        );
        assert!(same_origin(&h).is_err());
        h.remove(header::ORIGIN);
        h.insert(
            header::REFERER,
            HeaderValue::from_static("http://evil.example/x"),
        );
        assert!(same_origin(&h).is_err());
    }
}
