//! The web view of `sluice serve` through the binary, over HTTP: every page after a run
//! (the pipeline listed, each DAG node with its counts, the run's nodes and failed attempts,
//! the failed batches with their records, links and alerts), escaping of hostile text, and
//! the guards of a change: no session → 401, a session without the form's CSRF token → 403,
//! another origin → 403, both → the replay happens and the failed batch is resolved.
//!
//! No timed assertion: every wait is for a condition, with a generous deadline.

mod e2e_common;

use e2e_common::{Sandbox, poll};
use serde_json::Value;
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig};
use std::time::Duration;

const TOKEN: &str = "web-t0ken-for-tests";
const WAIT: Duration = Duration::from_secs(90);
const EVERY: Duration = Duration::from_millis(200);
const HOSTILE: &str = r#"<script>alert("pwned")</script> & 'quotes'"#;

struct Page {
    status: u16,
    text: String,
    cookie: Option<String>,
    location: Option<String>,
}

struct Web {
    base: String,
    http: reqwest::Client,
}

impl Web {
    async fn send(&self, req: reqwest::RequestBuilder) -> Page {
        let resp = req.send().await.expect("the service answers");
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let cookie = header("set-cookie");
        let location = header("location");
        let text = resp.text().await.expect("a body");
        Page {
            status,
            text,
            cookie,
            location,
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Page {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        self.send(req).await
    }

    async fn json(&self, path: &str) -> Value {
        let page = self.get(path, None).await;
        assert_eq!(page.status, 200, "{path}: {}", page.text);
        serde_json::from_str(&page.text).expect("JSON")
    }

    /// A form POST, as a browser on the page sends it (its `Origin`), unless `origin`.
    async fn post(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &str,
        origin: Option<&str>,
    ) -> Page {
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin.unwrap_or(&self.base))
            .body(form.to_owned());
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        self.send(req).await
    }
}

/// The value of the form's CSRF field in a page.
fn csrf_of(html: &str) -> String {
    let at = html
        .find(r#"name="csrf" value=""#)
        .unwrap_or_else(|| panic!("no CSRF field in the page:\n{html}"));
    let rest = &html[at + r#"name="csrf" value=""#.len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// The markup of the DAG node `id` (its `<g>`).
fn dag_node<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html
        .find(&format!(r#"data-node="{id}"><title>"#))
        .unwrap_or_else(|| panic!("node `{id}` is not drawn:\n{html}"));
    let rest = &html[at..];
    &rest[..rest.find("</g>").unwrap()]
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_after_a_run_and_a_guarded_replay() {
    let malformed = vec![7, 60];
    let mock = MockApi::start(MockConfig {
        records: 100,
        malformed_records: malformed.clone(),
        // The first two data requests fail with 503 (`dependency`): retries by class.
        faults: vec![Fault::new(1, 2, FaultKind::ServerError { status: 503 })],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new("e2e_web").await;
    sb.set("SLUICE_LOG", "warn,sluice_server=info");
    sb.set("MOCK", mock.base_url());
    sb.set("SLUICE_API_TOKEN", TOKEN);
    std::fs::create_dir_all(sb.path("p")).unwrap();
    sb.write(
        "p/orders.yaml",
        &format!(
            r#"
pipeline: orders
description: {HOSTILE:?}
nodes:
  api:
    type: http
    url: ${{MOCK}}/page/items
    pagination:
      page_number: {{ param: page, size_param: per_page, size: 25 }}
    stop:
      has_more: $.meta.has_more
    records: {{ path: $.data.items }}
    bad_records: quarantine
    retry: {{ initial_backoff: 10ms, max_backoff: 20ms }}
  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: orders
"#
        ),
    );
    // A file that does not validate, with markup in its name: listed, escaped.
    sb.write(
        "p/<img src=x onerror=alert(1)>.yaml",
        "pipeline: x\nnodes: {}\n",
    );
    let mut child = sb.spawn("serve", &["serve", "p", "--listen", "127.0.0.1:0"]);
    let out = sb.path("serve.out");
    let base = poll(
        "sluice serve says where it listens",
        WAIT,
        EVERY,
        || {
            let text = std::fs::read_to_string(&out).unwrap_or_default();
            async move {
                text.lines()
                    .find_map(|l| l.strip_prefix("listening on "))
                    .map(|a| a.trim().to_owned())
            }
        },
        || sb.logs("serve"),
    )
    .await;
    let web = Web {
        base,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };

    // Signed out: the pages show, the buttons ask to sign in; a wrong token is refused.
    let home = web.get("/", None).await;
    assert_eq!(home.status, 200, "{}", home.text);
    assert!(
        home.text.contains(r#"href="/ui/pipelines/orders""#),
        "{}",
        home.text
    );
    assert!(
        !home.text.contains("<script>alert"),
        "unescaped:\n{}",
        home.text
    );
    assert!(
        home.text.contains(
            "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt; &amp; &#39;quotes&#39;"
        ),
        "{}",
        home.text
    );
    assert!(
        !home.text.contains("<img src=x"),
        "unescaped:\n{}",
        home.text
    );
    assert!(
        home.text
            .contains("&lt;img src=x onerror=alert(1)&gt;.yaml"),
        "{}",
        home.text
    );
    let css = web.get("/ui/assets/style.css", None).await;
    assert_eq!(css.status, 200);
    assert!(css.text.contains("svg.dag"));
    let wrong = web.post("/ui/login", None, "token=nope", None).await;
    assert_eq!(wrong.status, 403, "{}", wrong.text);
    assert!(wrong.cookie.is_none());

    // Run now: refused without a session; then signed in, through the form.
    let refused = web
        .post("/ui/pipelines/orders/run", None, "csrf=x", None)
        .await;
    assert_eq!(refused.status, 401, "{}", refused.text);
    let login = web
        .post("/ui/login", None, &format!("token={}", enc(TOKEN)), None)
        .await;
    assert_eq!(login.status, 303, "{}", login.text);
    let set = login.cookie.expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_owned();
    let page = web.get("/ui/pipelines/orders", Some(&cookie)).await;
    assert_eq!(page.status, 200, "{}", page.text);
    let csrf = csrf_of(&page.text);
    let started = web
        .post(
            "/ui/pipelines/orders/run",
            Some(&cookie),
            &format!("csrf={csrf}"),
            None,
        )
        .await;
    assert_eq!(started.status, 303, "{}", started.text);
    assert_eq!(started.location.as_deref(), Some("/ui/pipelines/orders"));
    let runs = poll(
        "the run ends",
        WAIT,
        EVERY,
        || async {
            let body = web.json("/runs?pipeline=orders").await;
            let runs = body["runs"].as_array().cloned().unwrap_or_default();
            (runs.len() == 1 && !runs[0]["finished_at"].is_null()).then_some(runs)
        },
        || sb.logs("serve"),
    )
    .await;
    assert_eq!(runs[0]["status"], "partially_succeeded", "{runs:#?}");
    let run_id = runs[0]["id"].as_str().unwrap().to_owned();
    let show = web.json(&format!("/runs/{run_id}")).await;

    // The pipeline: each node drawn with its counts and state.
    let page = web.get("/ui/pipelines/orders", None).await;
    assert_eq!(page.status, 200, "{}", page.text);
    for n in show["nodes"].as_array().unwrap() {
        let id = n["node"].as_str().unwrap();
        let g = dag_node(&page.text, id);
        let counts = format!("in {} · out {}", n["records_in"], n["records_out"]);
        assert!(g.contains(&counts), "node {id} without `{counts}`: {g}");
        let drawn = format!(
            r#"class="node st-{}" data-node="{id}""#,
            n["status"].as_str().unwrap()
        );
        assert!(page.text.contains(&drawn), "{drawn}: {g}");
    }
    let api = dag_node(&page.text, "api");
    assert!(api.contains("quarantined 2"), "{api}");
    assert!(api.contains("dependency"), "retries by class: {api}");
    assert!(
        page.text.contains(&format!("/ui/runs/{run_id}")),
        "{}",
        page.text
    );
    assert!(
        page.text.contains("sign in with the token"),
        "signed out: no button"
    );

    // The pipelines page, now with the last run and a sparkline.
    let home = web.get("/", None).await;
    assert!(
        home.text.contains(&format!("/ui/runs/{run_id}")),
        "{}",
        home.text
    );
    assert!(home.text.contains(r#"<svg class="spark""#), "{}", home.text);

    // The run: every node with its counts, the failed attempts with their class.
    let page = web.get(&format!("/ui/runs/{run_id}"), None).await;
    assert_eq!(page.status, 200, "{}", page.text);
    for n in show["nodes"].as_array().unwrap() {
        assert!(
            page.text.contains(&format!(
                r#"<tr data-node="{}">"#,
                n["node"].as_str().unwrap()
            )),
            "{}",
            page.text
        );
    }
    for a in show["attempts"].as_array().unwrap() {
        assert!(
            page.text
                .contains(&format!("st-{}", a["class"].as_str().unwrap())),
            "{}",
            page.text
        );
    }
    assert!(
        page.text.contains("started"),
        "events timeline: {}",
        page.text
    );

    // The failed batches: listed, filtered, one opened with its records.
    let failed = web.json("/failed?pipeline=orders").await;
    let batches = failed["failed"].as_array().unwrap().clone();
    assert!(!batches.is_empty(), "{failed:#}");
    let page = web
        .get("/ui/failed?pipeline=orders&class=invalid_request", None)
        .await;
    assert_eq!(page.status, 200, "{}", page.text);
    for b in &batches {
        assert!(
            page.text
                .contains(&format!(r#"data-batch="{}""#, b["id"].as_str().unwrap())),
            "{}",
            page.text
        );
    }
    let none = web.get("/ui/failed?pipeline=orders&class=auth", None).await;
    assert!(!none.text.contains("data-batch="), "{}", none.text);
    let batch = batches[0]["id"].as_str().unwrap().to_owned();
    let page = web.get(&format!("/ui/failed/{batch}"), None).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(
        page.text.contains(r#"<table class="list records">"#),
        "{}",
        page.text
    );
    assert!(page.text.contains("Evidence"), "{}", page.text);

    // Links and alerts.
    let page = web.get("/ui/links", None).await;
    assert_eq!(page.status, 200, "{}", page.text);
    assert!(page.text.contains("Alerts"), "{}", page.text);

    // A replay: refused without a session, without the CSRF token, from another origin.
    mock.repair();
    let page = web.get("/ui/failed?pipeline=orders", Some(&cookie)).await;
    let csrf = csrf_of(&page.text);
    let form = |csrf: Option<&str>| {
        let mut f = format!(
            "pipeline=orders&batch={}",
            enc(&format!("orders\u{1f}{batch}"))
        );
        if let Some(c) = csrf {
            f.push_str(&format!("&csrf={c}"));
        }
        f
    };
    let r = web.post("/ui/replay", None, &form(Some(&csrf)), None).await;
    assert_eq!(r.status, 401, "no session: {}", r.text);
    let r = web
        .post("/ui/replay", Some(&cookie), &form(None), None)
        .await;
    assert_eq!(r.status, 403, "no CSRF token: {}", r.text);
    let r = web
        .post("/ui/replay", Some(&cookie), &form(Some("0123abcd")), None)
        .await;
    assert_eq!(r.status, 403, "another CSRF token: {}", r.text);
    let r = web
        .post(
            "/ui/replay",
            Some(&cookie),
            &form(Some(&csrf)),
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(r.status, 403, "another origin: {}", r.text);
    let still = web.json("/failed?pipeline=orders").await;
    assert_eq!(
        still["failed"].as_array().unwrap().len(),
        batches.len(),
        "{still:#}"
    );
    // Dropping asks for a confirmation.
    let r = web
        .post(
            &format!("/ui/failed/{batch}/drop"),
            Some(&cookie),
            &format!("csrf={csrf}"),
            None,
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.text);

    let r = web
        .post("/ui/replay", Some(&cookie), &form(Some(&csrf)), None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert!(r.text.contains("delivered"), "{}", r.text);
    let after = web.json("/failed?pipeline=orders&all=true").await;
    let row = after["failed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == batch.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{after:#}"));
    assert!(
        !row["resolved_at"].is_null(),
        "the batch is resolved: {row:#}"
    );
    let page = web.get(&format!("/ui/failed/{batch}"), None).await;
    assert!(page.text.contains("st-resolved"), "{}", page.text);

    // The rest: replay all since a time, then a confirmed drop of what is left.
    let rest: Vec<String> = web.json("/failed?pipeline=orders").await["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    let r = web
        .post(
            "/ui/replay",
            Some(&cookie),
            &format!("csrf={csrf}&pipeline=orders&since=1d"),
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let left = web.json("/failed?pipeline=orders").await;
    assert_eq!(
        left["failed"].as_array().unwrap().len(),
        0,
        "{left:#} (was {rest:?})"
    );
    let r = web
        .post(
            &format!("/ui/failed/{batch}/drop"),
            Some(&cookie),
            &format!("csrf={csrf}&confirm=yes"),
            None,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.text);
    let gone = web.get(&format!("/ui/failed/{batch}"), None).await;
    assert_eq!(gone.status, 404, "{}", gone.text);

    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let code = sb.wait(&mut child, "serve").await;
    assert_eq!(code, Some(0), "{}", sb.logs("serve"));
    mock.shutdown().await;
}
