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
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig, MockHandle};
use std::time::Duration;
use tokio::process::Child;

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

/// The folder served: `orders` (the mock API, two malformed records quarantined, two 503s
/// retried, into SQLite; a hostile description) and a file that does not validate with
/// markup in its name.
async fn served(name: &str) -> (Sandbox, MockHandle, Child, Web) {
    let mock = MockApi::start(MockConfig {
        records: 100,
        malformed_records: vec![7, 60],
        // The first two data requests fail with 503 (`dependency`): retries by class.
        faults: vec![Fault::new(1, 2, FaultKind::ServerError { status: 503 })],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new(name).await;
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
    let child = sb.spawn("serve", &["serve", "p", "--listen", "127.0.0.1:0"]);
    let base = sb.listening("serve").await;
    let web = Web {
        base,
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
    };
    (sb, mock, child, web)
}

/// The runs of `orders` once one finished.
async fn one_run(web: &Web, sb: &Sandbox) -> Vec<Value> {
    poll(
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
    .await
}

/// SIGTERM; the service exits 0.
async fn stop(sb: &Sandbox, mut child: Child) {
    let pid = child.id().unwrap().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let code = sb.wait(&mut child, "serve").await;
    assert_eq!(code, Some(0), "{}", sb.logs("serve"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_after_a_run_and_a_guarded_replay() {
    let (sb, mock, child, web) = served("e2e_web").await;

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
    let runs = one_run(&web, &sb).await;
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
        let mut f = format!("pipeline=orders&batch={}", enc(&format!("orders:{batch}")));
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

    stop(&sb, child).await;
    mock.shutdown().await;
}

/// A WebDriver session on chromedriver, over plain HTTP (the W3C protocol's few calls this
/// test needs: no client crate).
struct Browser {
    http: reqwest::Client,
    session: String,
    driver: std::process::Child,
}

/// The browser and chromedriver end with the test, even one that failed: the session is
/// deleted (a plain blocking request: no runtime in `drop`), then chromedriver killed.
impl Drop for Browser {
    fn drop(&mut self) {
        use std::io::{Read, Write};
        let target = self
            .session
            .strip_prefix("http://")
            .and_then(|r| r.split_once('/'));
        let conn = target.and_then(|(host, _)| std::net::TcpStream::connect(host).ok());
        if let (Some((host, path)), Some(mut conn)) = (target, conn) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                conn,
                "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = conn.read_to_end(&mut Vec::new());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    /// Headless Chromium through chromedriver; `None` when they are not installed.
    async fn start() -> Option<Browser> {
        let which = |b: &str| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {b}")])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        };
        let (driver, chromium) = match (which("chromedriver"), which("chromium")) {
            (Some(d), Some(c)) => (d, c),
            _ => {
                let why = "chromium and chromium-driver are not installed (scripts/deps.sh browser installs them)";
                assert!(
                    std::env::var_os("CI").is_none(),
                    "{why}: CI must run the browser test"
                );
                eprintln!("SKIPPED the real-browser test: {why}");
                return None;
            }
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = std::process::Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        poll(
            "chromedriver is ready",
            WAIT,
            EVERY,
            || {
                let http = http.clone();
                let url = format!("{base}/status");
                async move {
                    let r = http.get(url).send().await.ok()?;
                    let v: Value = serde_json::from_str(&r.text().await.ok()?).ok()?;
                    (v["value"]["ready"] == true).then_some(())
                }
            },
            String::new,
        )
        .await;
        // Every host but 127.0.0.1 unresolvable: the pages need nothing from outside.
        let caps = serde_json::json!({"capabilities": {"alwaysMatch": {
            "goog:chromeOptions": {
                "binary": chromium,
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                    "--disable-dev-shm-usage", "--window-size=1400,1000",
                    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
            }
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .header("content-type", "application/json")
            .body(caps.to_string())
            .send()
            .await
            .expect("a WebDriver session")
            .text()
            .await
            .map(|t| serde_json::from_str(&t).unwrap_or(Value::String(t)))
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v:#}"))
            .to_owned();
        Some(Browser {
            http,
            session: format!("{base}/session/{session}"),
            driver,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.session));
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let text = req.send().await.unwrap().text().await.unwrap();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        assert!(v["value"]["error"].is_null(), "WebDriver {path}: {v:#}");
        v["value"].clone()
    }

    async fn open(&self, url: &str) {
        self.call(
            reqwest::Method::POST,
            "/url",
            Some(serde_json::json!({"url": url})),
        )
        .await;
    }

    async fn source(&self) -> String {
        self.call(reqwest::Method::GET, "/source", None)
            .await
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Waits until the page's source contains `text` (after a click that navigates).
    async fn wait_for(&self, text: &str) {
        poll(
            &format!("the page shows `{text}`"),
            WAIT,
            EVERY,
            || async { self.source().await.contains(text).then_some(()) },
            String::new,
        )
        .await;
    }

    async fn find(&self, css: &str) -> String {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(serde_json::json!({"using": "css selector", "value": css})),
            )
            .await;
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element `{css}`: {v}"))
            .to_owned()
    }

    async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.call(reqwest::Method::GET, &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/click"),
            Some(serde_json::json!({})),
        )
        .await;
    }

    async fn type_in(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.call(
            reqwest::Method::POST,
            &format!("/element/{e}/value"),
            Some(serde_json::json!({"text": text})),
        )
        .await;
    }

    async fn script(&self, script: &str) -> Value {
        self.call(
            reqwest::Method::POST,
            "/execute/sync",
            Some(serde_json::json!({"script": script, "args": []})),
        )
        .await
    }

    /// A PNG of the window, saved as `dir/name.png`.
    async fn screenshot(&self, dir: &std::path::Path, name: &str) {
        use base64::Engine;
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap())
            .unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Ends the session and chromedriver (as dropping does).
    fn quit(self) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser() {
    let Some(browser) = Browser::start().await else {
        return;
    };
    let shots = std::env::var_os("SLUICE_SCREENSHOTS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("sluice-web-screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let (sb, mock, child, web) = served("e2e_web_browser").await;
    let base = web.base.clone();

    // Signed in through the form, then "Run now".
    browser.open(&format!("{base}/ui/login")).await;
    browser.type_in(r#"input[name="token"]"#, TOKEN).await;
    browser.click(r#"form.login button"#).await;
    browser.wait_for("sign out").await;
    browser.open(&format!("{base}/ui/pipelines/orders")).await;
    browser
        .click(r#"form[action="/ui/pipelines/orders/run"] button"#)
        .await;
    let runs = one_run(&web, &sb).await;
    let run_id = runs[0]["id"].as_str().unwrap().to_owned();
    let show = web.json(&format!("/runs/{run_id}")).await;

    // The pipelines page: the pipeline listed, styled by the embedded stylesheet (nothing
    // else reachable: every other host is unresolvable for this browser).
    browser.open(&format!("{base}/")).await;
    let row = browser.text(r#"tr[data-pipeline="orders"]"#).await;
    assert!(row.contains("orders"), "{row}");
    let header = browser
        .script("return getComputedStyle(document.querySelector('header')).backgroundColor")
        .await;
    assert_eq!(header, "rgb(20, 32, 46)", "the stylesheet is applied");
    assert!(
        browser
            .script("return window.__pwned === undefined && !document.querySelector('main script')")
            .await
            == true,
        "no hostile script ran"
    );
    browser.screenshot(&shots, "1-pipelines").await;

    // The DAG: each node drawn with its count.
    browser.click(r#"a[href="/ui/pipelines/orders"]"#).await;
    browser.wait_for("<h2>Graph</h2>").await;
    for n in show["nodes"].as_array().unwrap() {
        let id = n["node"].as_str().unwrap();
        let text = browser.text(&format!(r#"g[data-node="{id}"]"#)).await;
        let counts = format!("in {} · out {}", n["records_in"], n["records_out"]);
        assert!(
            text.contains(&counts),
            "node {id}: `{text}` without `{counts}`"
        );
    }
    browser.screenshot(&shots, "2-pipeline").await;
    browser.open(&format!("{base}/ui/runs/{run_id}")).await;
    assert!(browser.source().await.contains(r#"data-node="api""#));
    browser.screenshot(&shots, "3-run").await;

    // A failed batch, opened, replayed through its button.
    browser
        .open(&format!("{base}/ui/failed?pipeline=orders"))
        .await;
    browser.screenshot(&shots, "4-failed").await;
    browser.click(r#"tr[data-batch] a"#).await;
    browser.wait_for("<h2>Evidence (redacted)</h2>").await;
    let batch = browser
        .script("return document.querySelector('input[name=\"batch\"]').value.split(':')[1]")
        .await
        .as_str()
        .unwrap()
        .to_owned();
    browser.screenshot(&shots, "5-batch").await;
    mock.repair();
    browser
        .click(r#"form[action="/ui/replay"] button[type="submit"]"#)
        .await;
    browser.wait_for(r#"<ul class="report">"#).await;
    let report = browser.text("ul.report").await;
    assert!(report.contains("delivered"), "{report}");
    browser.screenshot(&shots, "6-replayed").await;
    let all = web.json("/failed?pipeline=orders&all=true").await;
    let row = all["failed"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == batch.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("{batch}: {all:#}"));
    assert!(!row["resolved_at"].is_null(), "{row:#}");
    browser.open(&format!("{base}/ui/failed/{batch}")).await;
    assert!(browser.source().await.contains("st-resolved"));

    browser.open(&format!("{base}/ui/links")).await;
    browser.screenshot(&shots, "7-links").await;
    eprintln!("screenshots in {}", shots.display());
    browser.quit();
    stop(&sb, child).await;
    mock.shutdown().await;
}
