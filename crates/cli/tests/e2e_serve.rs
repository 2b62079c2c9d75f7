//! `sluice serve` through the binary: a folder with a file that does not validate and two
//! pipelines on a seconds-level cron against the mock API into SQLite; the API (trigger,
//! list, replay, token checks), `/metrics` parsed and compared with the run records;
//! missed ticks with each `catch_up`; overlap (also across two workers); a run whose
//! lease is held elsewhere; hot reload; graceful stop; the refusals (non-loopback without
//! a token, a second service on one SQLite state store); two workers on PostgreSQL state
//! and Kafka (one killed -9 mid-run; a run's sink spread over both, a helper killed).
//!
//! No timed assertion of speed: every wait is for a condition, with a generous deadline
//! (the takeover after a kill is bounded by the lease's time, which is what it shows).

mod e2e_common;

use e2e_common::{Sandbox, poll};
use serde_json::{Value, json};
use sluice_testkit::mock_api::{MockApi, MockConfig, MockHandle};
use std::time::Duration;
use tokio::process::Child;

const TOKEN: &str = "s3cret-token-for-tests";
const WAIT: Duration = Duration::from_secs(90);
const EVERY: Duration = Duration::from_millis(200);

/// A running `sluice serve` of a sandbox.
struct Serve<'a> {
    sb: &'a Sandbox,
    child: Child,
    log: String,
    base: String,
    http: reqwest::Client,
}

impl<'a> Serve<'a> {
    /// Starts `sluice serve ARGS --listen 127.0.0.1:0` and waits for its address.
    async fn start(sb: &'a Sandbox, log: &str, args: &[&str]) -> Serve<'a> {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--listen", "127.0.0.1:0"]);
        let child = sb.spawn(log, &all);
        let base = sb.listening(log).await;
        Serve {
            sb,
            child,
            log: log.to_owned(),
            base,
            http: reqwest::Client::new(),
        }
    }

    fn logs(&self) -> String {
        self.sb.logs(&self.log)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.expect("the API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("a body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)))
            .await
    }

    async fn post(&self, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.post(format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        self.send(req).await
    }

    async fn metrics(&self) -> prometheus_parse::Scrape {
        let text = self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("a body");
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))
            .unwrap_or_else(|e| panic!("/metrics does not parse ({e}):\n{text}"))
    }

    /// The runs of `pipeline` (newest first) once `done` holds for them.
    async fn wait_runs(
        &self,
        what: &str,
        pipeline: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let done = &done;
        poll(
            what,
            WAIT,
            EVERY,
            || async move {
                let (status, body) = self
                    .get(&format!("/runs?pipeline={pipeline}&limit=1000"))
                    .await;
                let runs = body["runs"].as_array().cloned().unwrap_or_default();
                (status == 200 && done(&runs)).then_some(runs)
            },
            || self.logs(),
        )
        .await
    }

    /// Waits for the log to say `text`.
    async fn wait_log(&self, text: &str) {
        poll(
            &format!("the log says `{text}`"),
            WAIT,
            EVERY,
            || async move { self.logs().contains(text).then_some(()) },
            || self.logs(),
        )
        .await;
    }

    /// SIGTERM, then the exit code.
    async fn stop(self) -> (Option<i32>, String) {
        signal(&self.child, "-TERM");
        self.stop_wait().await
    }

    /// The exit code, once it exits (after a signal sent).
    async fn stop_wait(mut self) -> (Option<i32>, String) {
        let code = self.sb.wait(&mut self.child, &self.log).await;
        (code, self.logs())
    }
}

/// A sandbox whose `sluice serve` logs what it runs and skips (its info lines).
async fn sandbox(name: &str) -> Sandbox {
    let mut sb = Sandbox::new(name).await;
    sb.set("SLUICE_LOG", "warn,sluice_server=info");
    sb
}

fn signal(child: &Child, sig: &str) {
    let pid = child.id().expect("the process runs").to_string();
    let ok = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "kill {sig} {pid}");
}

fn finished(run: &Value) -> bool {
    !run["finished_at"].is_null()
}

/// A pipeline from the mock API into a SQLite table.
fn api_pipeline(name: &str, schedule: &str) -> String {
    format!(
        r#"
pipeline: {name}
schedule: {schedule}
nodes:
  api:
    type: http
    url: ${{MOCK}}/page/items
    records: {{ path: $.data.items }}
  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: {name}
"#
    )
}

/// A pipeline of one `command` task: `sh -c SCRIPT`.
fn task_pipeline(name: &str, schedule: &str, script: &str) -> String {
    format!(
        r#"
pipeline: {name}
schedule: {schedule}
nodes:
  task:
    type: command
    program: sh
    args: ["-c", {script:?}]
"#
    )
}

async fn mock(records: u64) -> MockHandle {
    MockApi::start(MockConfig {
        records,
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts")
}

/// The sum of a counter's samples with these labels.
fn counter(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_on_cron_with_the_api_and_metrics() {
    let mock = mock(40).await;
    let mut sb = sandbox("e2e_serve").await;
    sb.set("MOCK", mock.base_url());
    sb.set("SLUICE_API_TOKEN", TOKEN);
    std::fs::create_dir_all(sb.path("pipelines")).unwrap();
    sb.write(
        "pipelines/alpha.yaml",
        &api_pipeline("alpha", r#"{ cron: "*/2 * * * * *" }"#),
    );
    sb.write(
        "pipelines/beta.yaml",
        &api_pipeline(
            "beta",
            r#"{ cron: "*/3 * * * * *", timezone: Europe/Paris }"#,
        ),
    );
    sb.write("pipelines/gamma.yaml", &api_pipeline("gamma", "manual"));
    sb.write(
        "pipelines/broken.yaml",
        "pipeline: broken\nnodes:\n  api:\n    type: htp\n",
    );
    let serve = Serve::start(&sb, "serve", &["pipelines"]).await;

    // The broken file is reported; the others are served.
    let (status, list) = serve.get("/pipelines").await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["pipelines"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta", "gamma"], "{list:#}");
    let invalid = list["invalid"].as_array().unwrap();
    assert_eq!(invalid.len(), 1, "{list:#}");
    assert!(
        invalid[0]["file"]
            .as_str()
            .unwrap()
            .ends_with("broken.yaml")
    );
    assert!(
        invalid[0]["error"]
            .as_str()
            .unwrap()
            .contains("unknown node type `htp`"),
        "{list:#}"
    );
    serve.wait_log("unknown node type `htp`").await;

    // Both cron pipelines run on their own, twice each.
    for p in ["alpha", "beta"] {
        serve
            .wait_runs(&format!("two cron runs of {p}"), p, |runs| {
                runs.iter()
                    .filter(|r| r["trigger"] == "cron" && r["status"] == "succeeded")
                    .count()
                    >= 2
            })
            .await;
    }
    let (_, alpha) = serve.get("/pipelines/alpha").await;
    assert!(alpha["next_run"].as_i64().is_some(), "{alpha:#}");
    assert_eq!(alpha["plan"]["nodes"][0]["id"], "api", "{alpha:#}");
    assert_eq!(alpha["plan"]["nodes"][1]["type"], "sqlite", "{alpha:#}");

    // The token: 401 without, 403 wrong, 202 right.
    let (status, body) = serve.post("/pipelines/gamma/runs", None, None).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["class"], "auth", "{body}");
    let (status, body) = serve
        .post("/pipelines/gamma/runs", Some("wrong"), None)
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["class"], "permission", "{body}");
    assert!(
        !serve.logs().contains(TOKEN),
        "the token is never logged\n{}",
        serve.logs()
    );
    let (status, body) = serve.post("/pipelines/nope/runs", Some(TOKEN), None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["class"], "invalid_request", "{body}");
    // gamma (manual) runs twice through the API.
    for n in 1..=2 {
        let (status, body) = serve.post("/pipelines/gamma/runs", Some(TOKEN), None).await;
        assert_eq!(status, 202, "{body}");
        serve
            .wait_runs(&format!("manual run {n} of gamma"), "gamma", |runs| {
                runs.len() == n && runs.iter().all(finished)
            })
            .await;
    }
    let runs = serve
        .wait_runs("gamma's runs", "gamma", |runs| runs.len() == 2)
        .await;
    for run in &runs {
        assert_eq!(run["trigger"], "manual", "{run}");
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    let (status, show) = serve
        .get(&format!("/runs/{}", runs[0]["id"].as_str().unwrap()))
        .await;
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["nodes"].as_array().unwrap().len(), 2, "{show:#}");
    let (status, body) = serve.get("/runs/000000000000").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = serve.get("/runs?status=bogus").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["class"], "invalid_request", "{body}");
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains("`bogus`"), "{body}");
    assert!(!message.contains("state store"), "{body}");
    // A query string the endpoint cannot read is answered in JSON like any other error.
    for path in ["/runs?limit=abc", "/failed?all=maybe"] {
        let (status, body) = serve.get(path).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["class"], "invalid_request", "{path}: {body}");
        assert_eq!(body["status"], 400, "{path}: {body}");
    }

    // /metrics: gamma's counters equal the sum of its run records.
    let scrape = serve.metrics().await;
    let mut expected: std::collections::BTreeMap<(String, &str), i64> = Default::default();
    for run in &runs {
        let (_, show) = serve
            .get(&format!("/runs/{}", run["id"].as_str().unwrap()))
            .await;
        for node in show["nodes"].as_array().unwrap() {
            let id = node["node"].as_str().unwrap().to_owned();
            for field in ["records_in", "records_out", "batches", "duplicates"] {
                *expected.entry((id.clone(), field)).or_default() += node[field].as_i64().unwrap();
            }
        }
    }
    for ((node, field), value) in &expected {
        let metric = match *field {
            "records_in" => "sluice_node_records_in_total",
            "records_out" => "sluice_node_records_out_total",
            "batches" => "sluice_node_batches_total",
            _ => "sluice_node_duplicates_skipped_total",
        };
        let got = counter(&scrape, metric, &[("pipeline", "gamma"), ("node", node)]);
        assert_eq!(got, *value as f64, "{metric} of gamma.{node}");
    }
    assert_eq!(expected[&("db".to_owned(), "records_out")], 40);
    assert_eq!(
        counter(
            &scrape,
            "sluice_runs_total",
            &[("pipeline", "gamma"), ("status", "succeeded")]
        ),
        2.0
    );
    assert!(counter(&scrape, "sluice_runs_total", &[("pipeline", "alpha")]) >= 2.0);
    assert_eq!(counter(&scrape, "sluice_pipeline_files_invalid", &[]), 1.0);
    assert_eq!(counter(&scrape, "sluice_pipelines_loaded", &[]), 3.0);
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "sluice_run_duration_seconds"
                && s.labels.get("pipeline") == Some("gamma")),
        "the run duration histogram"
    );

    // Failed batches and replay (nothing to replay: every batch was delivered).
    let (status, body) = serve.get("/failed?pipeline=gamma").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["failed"].as_array().unwrap().len(), 0, "{body}");
    let (status, body) = serve
        .post("/replay", None, Some(json!({"pipeline": "gamma"})))
        .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = serve
        .post("/replay", Some(TOKEN), Some(json!({"pipeline": "gamma"})))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["delivered"].as_array().unwrap().len(), 0, "{body}");
    let (status, body) = serve
        .post("/replay", Some(TOKEN), Some(json!({"pipelin": "gamma"})))
        .await;
    assert_eq!(status, 400, "{body}");

    // Probes and link checks.
    assert_eq!(serve.get("/healthz").await.0, 200);
    let (status, body) = serve.get("/readyz").await;
    assert_eq!(
        (status, body["pipelines"].as_i64()),
        (200, Some(3)),
        "{body}"
    );
    let (status, body) = serve.get("/health").await;
    assert_eq!(status, 200, "{body:#}");
    assert_eq!(body["status"], "up", "{body:#}");
    let (_, alpha) = serve.get("/pipelines/alpha").await;
    let links = alpha["links"]["links"]
        .as_array()
        .expect("the last link check");
    assert!(
        links.iter().any(|l| l["kind"] == "api" && l["up"] == true),
        "{alpha:#}"
    );
    let scrape = serve.metrics().await;
    assert_eq!(
        counter(
            &scrape,
            "sluice_link_up",
            &[("pipeline", "alpha"), ("kind", "api")]
        ),
        1.0
    );

    // A second service on the same SQLite state store is refused.
    let second = sb
        .sluice(&["serve", "pipelines", "--listen", "127.0.0.1:0"])
        .await;
    assert_eq!(second.code, Some(1), "{second}");
    assert!(
        second.stderr.contains("another `sluice serve` uses it"),
        "{second}"
    );

    let (code, logs) = serve.stop().await;
    assert_eq!(code, Some(0), "{logs}");
    assert!(logs.contains("stopped"), "{logs}");
    // Every record once in each table (the sinks' ledgers).
    let db = sb.path("out.db");
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    for table in ["alpha", "beta", "gamma"] {
        let (n, distinct): (i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), count(DISTINCT id) FROM {table}"
        )))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!((n, distinct), (40, 40), "{table}");
    }
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_beyond_loopback_needs_a_token() {
    let sb = sandbox("e2e_serve_open").await;
    sb.write("p.yaml", &task_pipeline("p", "manual", "true"));
    let out = sb
        .sluice(&["serve", "p.yaml", "--listen", "0.0.0.0:0"])
        .await;
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("not a loopback address"), "{out}");
    assert!(out.stderr.contains("--token-file"), "{out}");
}

/// Today's midnight (UTC) minus `days`, in ms.
fn midnight_minus(days: i64) -> i64 {
    let now = chrono::Utc::now();
    let midnight = now.date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    (midnight - chrono::Duration::days(days)).timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_are_caught_up_by_policy() {
    let mock = mock(10).await;
    let mut sb = sandbox("e2e_serve_catchup").await;
    sb.set("MOCK", mock.base_url());
    std::fs::create_dir_all(sb.path("p")).unwrap();
    for policy in ["none", "last", "all"] {
        sb.write(
            &format!("p/c_{policy}.yaml"),
            &api_pipeline(
                &format!("c_{policy}"),
                &format!(r#"{{ cron: "0 0 0 * * *", catch_up: {policy} }}"#),
            ),
        );
    }
    // The state store as it is after a service that ran the tick of 3 days ago, then
    // was down: 3 daily ticks missed (2 days ago, yesterday, today).
    sb.sluice(&["runs"]).await.expect_code(0);
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect(&format!(
            "sqlite://{}",
            sb.path(".sluice/state.db").display()
        ))
        .await
        .unwrap();
    let last = midnight_minus(3);
    for policy in ["none", "last", "all"] {
        sqlx::query(
            "INSERT INTO checkpoints (pipeline, node, value, updated_at) VALUES ($1, '@tick', $2, 0)",
        )
        .bind(format!("c_{policy}"))
        .bind(json!({ "tick": last }).to_string())
        .execute(&pool)
        .await
        .unwrap();
    }
    let serve = Serve::start(&sb, "serve", &["p"]).await;
    let all = serve
        .wait_runs("3 catch-up runs of c_all", "c_all", |runs| {
            runs.len() >= 3 && runs.iter().all(finished)
        })
        .await;
    assert_eq!(all.len(), 3, "{all:#?}");
    let last_runs = serve
        .wait_runs("1 catch-up run of c_last", "c_last", |runs| {
            !runs.is_empty() && runs.iter().all(finished)
        })
        .await;
    assert_eq!(last_runs.len(), 1, "{last_runs:#?}");
    serve.wait_log("not caught up (catch_up: none)").await;
    let (_, none) = serve.get("/runs?pipeline=c_none").await;
    assert_eq!(none["runs"].as_array().unwrap().len(), 0, "{none:#}");
    for run in all.iter().chain(&last_runs) {
        assert_eq!(run["trigger"], "cron", "{run}");
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    // Each pipeline's last tick moved to today's midnight.
    for policy in ["none", "last", "all"] {
        let (_, p) = serve.get(&format!("/pipelines/c_{policy}")).await;
        let expected = chrono::DateTime::from_timestamp_millis(midnight_minus(0))
            .unwrap()
            .to_rfc3339();
        assert_eq!(p["last_tick"], expected, "{p:#}");
    }
    let (code, logs) = serve.stop().await;
    assert_eq!(code, Some(0), "{logs}");
    mock.shutdown().await;
}

/// Whether two runs' [start, end] overlap.
fn overlapping(runs: &[Value]) -> Option<(Value, Value)> {
    let mut spans: Vec<(i64, i64, &Value)> = runs
        .iter()
        .map(|r| {
            (
                r["started_at"].as_i64().unwrap(),
                r["finished_at"].as_i64().unwrap_or(i64::MAX),
                r,
            )
        })
        .collect();
    spans.sort_by_key(|s| s.0);
    spans
        .windows(2)
        .find(|w| w[1].0 < w[0].1)
        .map(|w| (w[0].2.clone(), w[1].2.clone()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_lease_and_graceful_stop() {
    let sb = sandbox("e2e_serve_overlap").await;
    std::fs::create_dir_all(sb.path("p")).unwrap();
    // A run takes 3 s; ticks come every second.
    sb.write(
        "p/slow.yaml",
        &task_pipeline("slow", r#"{ cron: "* * * * * *" }"#, "sleep 3"),
    );
    sb.write(
        "p/queued.yaml",
        &task_pipeline(
            "queued",
            r#"{ cron: "* * * * * *", overlap: queue }"#,
            "sleep 2",
        ),
    );
    sb.write(
        "held.yaml",
        &task_pipeline("held", "manual", "echo started > held.started; sleep 4"),
    );
    sb.write("p/held.yaml", &task_pipeline("held", "manual", "true"));
    let serve = Serve::start(&sb, "serve", &["p"]).await;
    let (s, sbr) = (&serve, &sb);
    serve
        .wait_log("skipped: the previous run still runs (overlap: skip)")
        .await;
    let runs = serve
        .wait_runs("two runs of slow", "slow", |runs| {
            runs.iter().filter(|r| finished(r)).count() >= 2
        })
        .await;
    assert_eq!(overlapping(&runs), None, "runs of one pipeline overlapped");
    // `overlap: queue`: the tick waits for the run in flight; ticks that pile up make one.
    serve
        .wait_log("runs once the previous run ends (overlap: queue)")
        .await;
    let queued = serve
        .wait_runs("three runs of queued", "queued", |runs| {
            runs.iter().filter(|r| finished(r)).count() >= 3
        })
        .await;
    assert_eq!(overlapping(&queued), None, "queued runs overlapped");
    let logs = serve.logs();
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("pipeline=queued") && l.contains("overlap: skip")),
        "a queued pipeline skips no tick\n{logs}"
    );
    let scrape = serve.metrics().await;
    assert!(
        counter(
            &scrape,
            "sluice_runs_skipped_total",
            &[("pipeline", "slow"), ("reason", "overlap")]
        ) >= 1.0
    );

    // `held` is being run by a `sluice run` in a terminal: the service's run is skipped.
    let mut cli = sb.spawn("cli", &["run", "held.yaml", "--once", "--plain"]);
    poll(
        "the terminal's run started",
        WAIT,
        EVERY,
        || async move { sbr.path("held.started").exists().then_some(()) },
        || sb.logs("cli"),
    )
    .await;
    let (status, body) = serve.post("/pipelines/held/runs", None, None).await;
    assert_eq!(status, 202, "{body}");
    serve
        .wait_log("run skipped: pipeline `held` is being run by")
        .await;
    let (_, p) = serve.get("/pipelines/held").await;
    assert!(
        p["last_skip"]
            .as_str()
            .unwrap_or_default()
            .contains("is being run by"),
        "{p:#}"
    );
    assert_eq!(
        sb.wait(&mut cli, "cli").await,
        Some(0),
        "{}",
        sb.logs("cli")
    );

    // SIGTERM while `slow` runs: the run finishes (succeeded), then the service exits.
    poll(
        "a run of slow in flight",
        WAIT,
        EVERY,
        || async move {
            let (_, p) = s.get("/pipelines/slow").await;
            (!p["running"].is_null()).then_some(())
        },
        || serve.logs(),
    )
    .await;
    let (code, logs) = serve.stop().await;
    assert_eq!(code, Some(0), "{logs}");
    let out = sb.sluice(&["runs", "--json", "--limit", "1000"]).await;
    out.expect_code(0);
    let runs: Vec<Value> = out.json().as_array().unwrap().clone();
    let slow: Vec<Value> = runs
        .into_iter()
        .filter(|r| r["pipeline"] == "slow")
        .collect();
    assert_eq!(slow[0]["status"], "succeeded", "{slow:#?}\n{logs}");
    assert!(slow.iter().all(finished), "{slow:#?}");
    assert_eq!(overlapping(&slow), None);
    // The lease was released: a run in a terminal takes the pipeline at once.
    sb.sluice(&["run", "p/slow.yaml", "--once", "--plain"])
        .await
        .expect_code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_edit_break_add_delete() {
    let sb = sandbox("e2e_serve_reload").await;
    std::fs::create_dir_all(sb.path("p")).unwrap();
    let write = |version: &str, sleep: u32| {
        sb.write(
            "p/hr.yaml",
            &task_pipeline(
                "hr",
                "manual",
                &format!("sleep {sleep}; echo {version} >> marks.txt"),
            ),
        );
    };
    let marks = || std::fs::read_to_string(sb.path("marks.txt")).unwrap_or_default();
    write("v1", 0);
    let serve = Serve::start(&sb, "serve", &["p"]).await;
    let s = &serve;
    let version = || async move {
        let (_, p) = s.get("/pipelines/hr").await;
        p["version"].as_str().unwrap_or_default().to_owned()
    };
    let trigger_and_wait = |n: usize| {
        let serve = &serve;
        async move {
            let (status, body) = serve.post("/pipelines/hr/runs", None, None).await;
            assert_eq!(status, 202, "{body}");
            serve
                .wait_runs(&format!("{n} run(s) of hr"), "hr", |runs| {
                    runs.len() == n && runs.iter().all(finished)
                })
                .await;
        }
    };
    trigger_and_wait(1).await;
    assert_eq!(marks(), "v1\n");

    // An edit: the next run uses it. A slow version, to edit it while it runs.
    let v1 = &version().await;
    write("v2", 3);
    poll(
        "the edit is loaded",
        WAIT,
        EVERY,
        || async move { (&version().await != v1).then_some(()) },
        || serve.logs(),
    )
    .await;
    let (status, _) = serve.post("/pipelines/hr/runs", None, None).await;
    assert_eq!(status, 202);
    poll(
        "the v2 run in flight",
        WAIT,
        EVERY,
        || async move {
            let (_, p) = s.get("/pipelines/hr").await;
            (!p["running"].is_null()).then_some(())
        },
        || serve.logs(),
    )
    .await;
    // Edited while it runs: the run finishes on v2; the next uses v3.
    let v2 = &version().await;
    write("v3", 0);
    poll(
        "the v3 edit is loaded",
        WAIT,
        EVERY,
        || async move { (&version().await != v2).then_some(()) },
        || serve.logs(),
    )
    .await;
    serve
        .wait_runs("the v2 run finished", "hr", |runs| {
            runs.len() == 2 && runs.iter().all(finished)
        })
        .await;
    assert_eq!(marks(), "v1\nv2\n");
    trigger_and_wait(3).await;
    assert_eq!(marks(), "v1\nv2\nv3\n");

    // A broken edit: the running version stays, and the API says why.
    sb.write(
        "p/hr.yaml",
        "pipeline: hr\nnodes:\n  task:\n    type: comand\n",
    );
    let p = poll(
        "the broken edit is reported",
        WAIT,
        EVERY,
        || async move {
            let (_, p) = s.get("/pipelines/hr").await;
            (!p["reload_error"].is_null()).then_some(p)
        },
        || serve.logs(),
    )
    .await;
    assert!(
        p["reload_error"]
            .as_str()
            .unwrap()
            .contains("unknown node type `comand`"),
        "{p:#}"
    );
    serve
        .wait_log("the edit does not validate: the running version is kept")
        .await;
    trigger_and_wait(4).await;
    assert_eq!(marks(), "v1\nv2\nv3\nv3\n");

    // A new file is served; a deleted one is not any more.
    sb.write("p/added.yaml", &task_pipeline("added", "manual", "true"));
    poll(
        "the new file is served",
        WAIT,
        EVERY,
        || async move { (s.get("/pipelines/added").await.0 == 200).then_some(()) },
        || serve.logs(),
    )
    .await;
    std::fs::remove_file(sb.path("p/hr.yaml")).unwrap();
    poll(
        "the deleted file is no longer served",
        WAIT,
        EVERY,
        || async move { (s.get("/pipelines/hr").await.0 == 404).then_some(()) },
        || serve.logs(),
    )
    .await;
    let (_, list) = serve.get("/pipelines").await;
    assert_eq!(list["invalid"].as_array().unwrap().len(), 0, "{list:#}");
    let (code, logs) = serve.stop().await;
    assert_eq!(code, Some(0), "{logs}");
}

/// The records of the two-worker test: 60 pages of 25 at 25 requests a second, so that
/// a run lasts a few seconds (time enough to kill its worker in the middle).
const SHARED_RECORDS: i64 = 1500;

/// A pipeline shared by workers: PostgreSQL state, Kafka buffer, a PostgreSQL sink that
/// appends (a duplicate would show).
fn shared_pipeline(name: &str, schedule: &str) -> String {
    format!(
        r#"
pipeline: {name}
schedule: {schedule}
state: ${{PG_URL}}
buffer:
  kafka:
    brokers: ["${{KAFKA}}"]
    topic_prefix: ${{PREFIX}}
    partitions: 2
nodes:
  api:
    type: http
    url: ${{MOCK}}/page/items
    pagination:
      page_number: {{ param: page, size_param: per_page, size: 25 }}
    stop:
      has_more: $.meta.has_more
    records: {{ path: $.data.items }}
    rate_limit: {{ requests_per_second: 25, burst: 1 }}
  db:
    type: postgres
    inputs: [api]
    url: ${{PG_URL}}
    table: {name}
    mode: append
"#
    )
}

/// Which of the workers runs `pipeline` now.
async fn running_on<'s, 'a>(workers: &'s [&'s Serve<'a>], pipeline: &str) -> Option<usize> {
    for (i, w) in workers.iter().enumerate() {
        let (_, p) = w.get(&format!("/pipelines/{pipeline}")).await;
        if !p["running"].is_null() {
            return Some(i);
        }
    }
    None
}

/// The pipelines the two workers share in `two_workers_on_postgresql_one_killed`.
const SHARED: [&str; 3] = ["shared_a", "shared_b", "shared_c"];

/// Rows, distinct ids and the sum of the ids of `table`: every record of the mock (ids 1
/// to N) exactly once is `(N, N, N(N+1)/2)`.
async fn checksum(pool: &sqlx::PgPool, table: &str) -> (i64, i64, i64) {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT count(*), count(DISTINCT id), coalesce(sum(id), 0)::bigint FROM \"{table}\""
    )))
    .fetch_one(pool)
    .await
    .unwrap_or((0, 0, 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_on_postgresql_one_killed() {
    let mock = mock(SHARED_RECORDS as u64).await;
    let mut sb = sandbox("e2e_serve_workers").await.with_kafka();
    sb.set("MOCK", mock.base_url());
    let ttl_s = 3;
    sb.set("SLUICE_LEASE_TTL", format!("{ttl_s}s"));
    std::fs::create_dir_all(sb.path("p")).unwrap();
    for name in SHARED {
        sb.write(
            &format!("p/{name}.yaml"),
            &shared_pipeline(name, r#"{ cron: "*/2 * * * * *" }"#),
        );
    }
    let a = Serve::start(&sb, "a", &["p"]).await;
    let b = Serve::start(&sb, "b", &["p"]).await;
    let pool = sb.pool().await;
    // A worker in a run of `shared_a` that has saved a checkpoint: kill it there.
    let victim = poll(
        "a worker in the middle of a run",
        WAIT,
        Duration::from_millis(100),
        || {
            let pool = pool.clone();
            let workers = [&a, &b];
            async move {
                let saved: i64 = sqlx::query_scalar(
                    "SELECT count(*) FROM checkpoints WHERE pipeline = 'shared_a' AND node = 'api'",
                )
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
                if saved == 0 {
                    return None;
                }
                running_on(&workers, "shared_a").await
            }
        },
        || format!("{}\n{}", a.logs(), b.logs()),
    )
    .await;
    let (mut killed, survivor) = if victim == 0 { (a, b) } else { (b, a) };
    signal(&killed.child, "-KILL");
    sb.wait(&mut killed.child, &killed.log).await;
    let killed_at = chrono::Utc::now().timestamp_millis();

    // The survivor takes over once the lease expires, and finishes every load.
    let n = SHARED_RECORDS;
    let expected = (n, n, n * (n + 1) / 2);
    for name in SHARED {
        let runs = survivor
            .wait_runs(&format!("a run of {name} after the kill"), name, |runs| {
                runs.iter().any(|r| {
                    r["started_at"].as_i64().unwrap() > killed_at && r["status"] == "succeeded"
                })
            })
            .await;
        let sums = poll(
            &format!("every record of {name} in its table"),
            WAIT,
            EVERY,
            || {
                let pool = pool.clone();
                async move {
                    let sums = checksum(&pool, name).await;
                    (sums.0 >= n).then_some(sums)
                }
            },
            || survivor.logs(),
        )
        .await;
        assert_eq!(sums, expected, "{name}: every record exactly once");
        e2e_common::assert_exactly_once(&pool, name, "id", n).await;
        assert_eq!(overlapping(&runs), None, "{name}: {runs:#?}");
        if name == "shared_a" {
            // The killed worker's run was closed as aborted, by the survivor's first run
            // after the lease expired (within the lease's time, a tick and some slack;
            // without the expiry it would wait for nothing and never run).
            let aborted: Vec<&Value> = runs
                .iter()
                .filter(|r| r["error"].as_str().is_some_and(|e| e.contains("aborted")))
                .collect();
            assert_eq!(aborted.len(), 1, "{runs:#?}");
            let took_over = runs
                .iter()
                .filter_map(|r| r["started_at"].as_i64())
                .filter(|&at| at > killed_at)
                .min()
                .unwrap();
            assert!(
                took_over - killed_at < (ttl_s + 2 + 15) * 1000,
                "the survivor took over {} ms after the kill",
                took_over - killed_at
            );
        }
    }
    let (code, logs) = survivor.stop().await;
    assert_eq!(code, Some(0), "{logs}");
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_worker_is_refused_for_the_embedded_buffer() {
    let mut sb = sandbox("e2e_serve_embedded").await;
    sb.set("SLUICE_LEASE_TTL", "3s");
    std::fs::create_dir_all(sb.path("p")).unwrap();
    sb.write(
        "p/local.yaml",
        &format!(
            "{}state: ${{PG_URL}}\n",
            task_pipeline("local", "manual", "true")
        ),
    );
    let first = Serve::start(&sb, "first", &["p"]).await;
    let second = sb.sluice(&["serve", "p", "--listen", "127.0.0.1:0"]).await;
    assert_eq!(second.code, Some(1), "{second}");
    assert!(
        second.stderr.contains("uses the embedded buffer")
            && second.stderr.contains("Kafka buffer"),
        "{second}"
    );
    assert!(!second.stderr.contains("password"), "{second}");
    let (code, logs) = first.stop().await;
    assert_eq!(code, Some(0), "{logs}");
    // Stopped, the first gave the pipeline up: another worker may serve it now.
    let again = Serve::start(&sb, "again", &["p"]).await;
    let (status, _) = again.get("/pipelines/local").await;
    assert_eq!(status, 200);
    let (code, logs) = again.stop().await;
    assert_eq!(code, Some(0), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn realtime_runs_back_to_back_while_there_is_data() {
    let sb = sandbox("e2e_serve_realtime").await;
    std::fs::create_dir_all(sb.path("p")).unwrap();
    std::fs::create_dir_all(sb.path("in")).unwrap();
    sb.write(
        "p/rt.yaml",
        r#"
pipeline: rt
schedule: { realtime: { poll_interval: 200ms } }
nodes:
  files:
    type: file
    path: in/*.ndjson
    format: ndjson
  db:
    type: sqlite
    inputs: [files]
    url: sqlite://out.db
    table: rt
"#,
    );
    let serve = Serve::start(&sb, "serve", &["p"]).await;
    let db = sb.path("out.db");
    let rows = || {
        let db = db.clone();
        async move {
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .connect(&format!("sqlite://{}?mode=rwc", db.display()))
                .await
                .ok()?;
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM rt")
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
            pool.close().await;
            Some(n)
        }
    };
    for (round, file) in ["a", "b"].iter().enumerate() {
        let text: String = (0..10)
            .map(|i| format!("{{\"id\": {}}}\n", round * 10 + i))
            .collect();
        let tmp = sb.write(&format!("in/{file}.tmp"), &text);
        std::fs::rename(&tmp, sb.path(&format!("in/{file}.ndjson"))).unwrap();
        let expected = (round as i64 + 1) * 10;
        poll(
            &format!("{expected} rows"),
            WAIT,
            EVERY,
            || async move { rows().await.filter(|n| *n == expected) },
            || serve.logs(),
        )
        .await;
    }
    let (_, body) = serve.get("/runs?pipeline=rt&limit=1000").await;
    let runs = body["runs"].as_array().unwrap();
    assert!(runs.len() >= 2, "{body:#}");
    assert!(runs.iter().all(|r| r["trigger"] == "realtime"), "{body:#}");
    assert_eq!(overlapping(runs), None);
    let (code, logs) = serve.stop().await;
    assert_eq!(code, Some(0), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_is_bounded_and_a_second_signal_stops_at_once() {
    let sb = sandbox("e2e_serve_stop").await;
    std::fs::create_dir_all(sb.path("p")).unwrap();
    // A task that does not listen to the graceful stop.
    sb.write("p/long.yaml", &task_pipeline("long", "manual", "sleep 8"));
    for (log, second) in [("bounded", false), ("twice", true)] {
        let mut args = vec!["p"];
        if !second {
            args.extend_from_slice(&["--stop-timeout", "1s"]);
        }
        let serve = Serve::start(&sb, log, &args).await;
        let (status, body) = serve.post("/pipelines/long/runs", None, None).await;
        assert_eq!(status, 202, "{body}");
        let s = &serve;
        poll(
            "the run in flight",
            WAIT,
            EVERY,
            || async move {
                let (_, p) = s.get("/pipelines/long").await;
                (!p["running"].is_null()).then_some(())
            },
            || serve.logs(),
        )
        .await;
        signal(&serve.child, "-TERM");
        serve.wait_log("stopping: no new runs").await;
        if second {
            signal(&serve.child, "-TERM");
            let (code, logs) = serve.stop_wait().await;
            assert_eq!(code, Some(130), "{logs}");
            assert!(logs.contains("stopped at once"), "{logs}");
        } else {
            let (code, logs) = serve.stop_wait().await;
            assert_eq!(code, Some(0), "{logs}");
            assert!(
                logs.contains("runs still going after the stop timeout"),
                "{logs}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_by_class_in_metrics_and_a_replay_through_the_api() {
    const RECORDS: i64 = 100;
    let malformed = vec![7, 60];
    let mock = MockApi::start(MockConfig {
        records: RECORDS as u64,
        malformed_records: malformed.clone(),
        // The first two data requests fail with 503 (`dependency`), then it answers.
        faults: vec![sluice_testkit::mock_api::Fault::new(
            1,
            2,
            sluice_testkit::mock_api::FaultKind::ServerError { status: 503 },
        )],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = sandbox("e2e_serve_failures").await;
    sb.set("MOCK", mock.base_url());
    sb.set("SLUICE_API_TOKEN", TOKEN);
    std::fs::create_dir_all(sb.path("p")).unwrap();
    sb.write(
        "p/bad.yaml",
        r#"
pipeline: bad
nodes:
  api:
    type: http
    url: ${MOCK}/page/items
    pagination:
      page_number: { param: page, size_param: per_page, size: 25 }
    stop:
      has_more: $.meta.has_more
    records: { path: $.data.items }
    bad_records: quarantine
    retry: { initial_backoff: 10ms, max_backoff: 20ms }
  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: bad
"#,
    );
    let serve = Serve::start(&sb, "serve", &["p"]).await;
    let (status, body) = serve.post("/pipelines/bad/runs", Some(TOKEN), None).await;
    assert_eq!(status, 202, "{body}");
    let runs = serve
        .wait_runs("the run", "bad", |runs| {
            runs.len() == 1 && runs.iter().all(finished)
        })
        .await;
    assert_eq!(runs[0]["status"], "partially_succeeded", "{runs:#?}");
    let (_, show) = serve
        .get(&format!("/runs/{}", runs[0]["id"].as_str().unwrap()))
        .await;
    let api = show["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "api")
        .unwrap()
        .clone();
    let scrape = serve.metrics().await;
    let labels = [("pipeline", "bad"), ("node", "api")];
    assert_eq!(
        counter(&scrape, "sluice_node_retries_total", &labels),
        api["retries"].as_i64().unwrap() as f64,
        "{show:#}"
    );
    assert_eq!(
        counter(&scrape, "sluice_node_records_quarantined_total", &labels),
        malformed.len() as f64,
        "{show:#}"
    );
    assert!(
        counter(
            &scrape,
            "sluice_failures_handled_total",
            &[
                ("pipeline", "bad"),
                ("class", "dependency"),
                ("action", "retried")
            ]
        ) >= 1.0,
        "retries of 503s counted by class"
    );
    assert!(
        counter(
            &scrape,
            "sluice_failures_handled_total",
            &[("pipeline", "bad"), ("class", "invalid_request")]
        ) >= 1.0,
        "the malformed records counted by class"
    );
    assert_eq!(
        counter(
            &scrape,
            "sluice_runs_total",
            &[("pipeline", "bad"), ("status", "partially_succeeded")]
        ),
        1.0
    );

    // The failed batches, then a replay once the API serves them well.
    let (_, failed) = serve.get("/failed?pipeline=bad").await;
    let kept: i64 = failed["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["rows"].as_i64().unwrap())
        .sum();
    assert_eq!(kept, malformed.len() as i64, "{failed:#}");
    mock.repair();
    let (status, report) = serve
        .post("/replay", Some(TOKEN), Some(json!({"pipeline": "bad"})))
        .await;
    assert_eq!(status, 200, "{report:#}");
    let delivered: i64 = report["delivered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["records"].as_i64().unwrap())
        .sum();
    assert_eq!(delivered, malformed.len() as i64, "{report:#}");
    let (_, failed) = serve.get("/failed?pipeline=bad").await;
    assert_eq!(failed["failed"].as_array().unwrap().len(), 0, "{failed:#}");
    let (_, replays) = serve.get("/runs?pipeline=bad").await;
    assert_eq!(replays["runs"][0]["trigger"], "replay", "{replays:#}");
    let (code, logs) = serve.stop().await;
    assert_eq!(code, Some(0), "{logs}");
    let pool = sqlx::sqlite::SqlitePoolOptions::new()
        .connect(&format!("sqlite://{}", sb.path("out.db").display()))
        .await
        .unwrap();
    let (n, distinct): (i64, i64) = sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM bad")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!((n, distinct), (RECORDS, RECORDS));
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_through_the_api() {
    let mock = mock(20).await;
    let mut sb = sandbox("e2e_serve_doctor").await;
    sb.set("MOCK", mock.base_url());
    std::fs::create_dir_all(sb.path("p")).unwrap();
    sb.write("p/good.yaml", &api_pipeline("good", "manual"));
    // Nothing listens on port 1 of the loopback: the link is down.
    sb.write(
        "p/down.yaml",
        &api_pipeline("down", "manual").replace("${MOCK}", "http://127.0.0.1:1"),
    );
    let serve = Serve::start(&sb, "serve", &["p"]).await;

    let (status, good) = serve.get("/pipelines/good/doctor").await;
    assert_eq!(status, 200, "{good:#}");
    assert_eq!(good["pipeline"], "good", "{good:#}");
    assert_eq!(good["healthy"], true, "{good:#}");
    let links = good["links"].as_array().expect("links");
    assert!(
        links.iter().any(|l| l["kind"] == "api" && l["ok"] == true),
        "{good:#}"
    );

    let (status, down) = serve.get("/pipelines/down/doctor").await;
    assert_eq!(status, 200, "{down:#}");
    assert_eq!(down["healthy"], false, "{down:#}");
    let api = down["links"]
        .as_array()
        .expect("links")
        .iter()
        .find(|l| l["kind"] == "api")
        .cloned()
        .expect("the API link");
    assert_eq!(api["ok"], false, "{down:#}");
    assert_eq!(api["class"], "network", "{down:#}");
    assert!(api["failed_step"].is_string(), "{down:#}");

    // Only one node's links; a node or a run that does not exist; a pipeline not served.
    let (status, one) = serve.get("/pipelines/good/doctor?node=api").await;
    assert_eq!(status, 200, "{one:#}");
    assert!(
        one["links"]
            .as_array()
            .expect("links")
            .iter()
            .all(|l| l["nodes"]
                .as_array()
                .is_some_and(|n| n.contains(&json!("api")))),
        "{one:#}"
    );
    let (status, body) = serve.get("/pipelines/good/doctor?node=nope").await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["class"], "invalid_request", "{body}");
    let (status, body) = serve.get("/pipelines/good/doctor?run=nope").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = serve.get("/pipelines/nope/doctor").await;
    assert_eq!(status, 404, "{body}");
    signal(&serve.child, "-TERM");
    let (code, logs) = serve.stop_wait().await;
    assert_eq!(code, Some(0), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_requests_waits_and_breakers_per_host_in_metrics() {
    use sluice_testkit::mock_api::{Fault, FaultKind};
    // 60 records by pages of 20; the 2nd request gets a 503 (retried).
    let mock = MockApi::start(MockConfig {
        records: 60,
        page_size: 20,
        faults: vec![Fault::new(2, 1, FaultKind::ServerError { status: 503 })],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = sandbox("e2e_serve_http_metrics").await;
    sb.set("MOCK", mock.base_url());
    std::fs::create_dir_all(sb.path("p")).unwrap();
    sb.write(
        "p/paged.yaml",
        r#"
pipeline: paged
schedule: manual
nodes:
  api:
    type: http
    url: ${MOCK}/page/items
    pagination:
      page_number: { param: page, size_param: per_page, size: 20 }
    stop:
      has_more: $.meta.has_more
    records: { path: $.data.items }
    nested: json_text
    rate_limit: { requests_per_second: 5 }
    retry: { initial_backoff: 10ms, max_backoff: 50ms }
  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: paged
"#,
    );
    // Link checks are requests too (counted): one at the start, no other during the test.
    let serve = Serve::start(&sb, "serve", &["p", "--health-interval", "1h"]).await;
    let (status, body) = serve.post("/pipelines/paged/runs", None, None).await;
    assert_eq!(status, 202, "{body}");
    let runs = serve
        .wait_runs("the run of paged", "paged", |runs| {
            runs.len() == 1 && runs.iter().all(finished)
        })
        .await;
    assert_eq!(runs[0]["status"], "succeeded", "{runs:?}");

    let log = mock.data_requests();
    let ok = log.iter().filter(|r| r.status == 200).count() as f64;
    let host = mock.addr().to_string();
    let host = host.as_str();
    let scrape = serve.metrics().await;
    assert_eq!(
        counter(
            &scrape,
            "sluice_http_requests_total",
            &[("host", host), ("status", "200")]
        ),
        ok,
        "the 200s the mock answered"
    );
    assert_eq!(
        counter(
            &scrape,
            "sluice_http_requests_total",
            &[("host", host), ("status", "503")]
        ),
        1.0
    );
    let observed = scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == "sluice_http_request_duration_seconds" && s.labels.get("host") == Some(host)
        })
        .map(|s| match &s.value {
            prometheus_parse::Value::Histogram(buckets) => {
                buckets.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            other => panic!("not a histogram: {other:?}"),
        })
        .expect("the latency histogram of the host");
    assert_eq!(observed, log.len() as f64, "one observation per request");
    // At 5 requests a second, one request at least waited for its token.
    assert!(
        counter(
            &scrape,
            "sluice_http_rate_limit_waits_total",
            &[("host", host)]
        ) >= 1.0,
        "rate-limit waits counted"
    );
    assert!(
        counter(
            &scrape,
            "sluice_http_rate_limit_wait_seconds_total",
            &[("host", host)]
        ) > 0.0
    );
    assert_eq!(
        counter(&scrape, "sluice_http_breaker_state", &[("host", host)]),
        0.0,
        "the breaker is closed"
    );
    assert!(
        scrape
            .samples
            .iter()
            .any(|s| s.metric == "sluice_http_breaker_state" && s.labels.get("host") == Some(host)),
        "the breaker's state is shown"
    );
    // Every batch the source put in the buffer was consumed by the sink.
    let backlog = scrape.samples.iter().find(|s| {
        s.metric == "sluice_buffer_backlog_batches"
            && s.labels.get("pipeline") == Some("paged")
            && s.labels.get("node") == Some("db")
            && s.labels.get("input") == Some("api")
    });
    assert!(
        backlog.is_some_and(|s| matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 0.0)),
        "the sink's backlog is measured and empty: {backlog:?}"
    );
    let age = scrape.samples.iter().find(|s| {
        s.metric == "sluice_buffer_backlog_age_seconds"
            && s.labels.get("pipeline") == Some("paged")
            && s.labels.get("node") == Some("db")
    });
    assert!(
        age.is_some_and(|s| matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 0.0)),
        "the age of the oldest waiting batch is measured, and none waits: {age:?}"
    );
    let bytes = scrape.samples.iter().find(|s| {
        s.metric == "sluice_buffer_backlog_bytes"
            && s.labels.get("pipeline") == Some("paged")
            && s.labels.get("node") == Some("db")
    });
    assert!(
        bytes.is_some_and(|s| matches!(s.value, prometheus_parse::Value::Gauge(v) if v == 0.0)),
        "the embedded log's backlog in bytes is measured, and empty: {bytes:?}"
    );
    signal(&serve.child, "-TERM");
    let (code, logs) = serve.stop_wait().await;
    assert_eq!(code, Some(0), "{logs}");
}

/// Records of the run the workers share: enough pages (at the rate limit) that the
/// helper joins the sink's consumer group while the run goes on.
const SPREAD_RECORDS: i64 = 4000;

/// What each worker other than the owner wrote for a run's sink (`node_shares`).
async fn shares(pool: &sqlx::PgPool, run: &str) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT worker, records_out FROM node_shares WHERE run_id = $1 AND node = 'db'")
        .bind(run)
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runs_sink_spreads_over_workers_and_survives_a_helper_killed() {
    let mock = mock(SPREAD_RECORDS as u64).await;
    let mut sb = sandbox("e2e_serve_spread").await.with_kafka();
    sb.set("MOCK", mock.base_url());
    sb.set("SLUICE_LEASE_TTL", "3s");
    sb.set("SLUICE_API_TOKEN", TOKEN);
    std::fs::create_dir_all(sb.path("p")).unwrap();
    let four = |name: &str| {
        shared_pipeline(name, "manual")
            .replace("partitions: 2", "partitions: 4")
            .replace("requests_per_second: 25", "requests_per_second: 20")
    };
    sb.write("p/spread.yaml", &four("spread"));
    sb.write("p/victim.yaml", &four("victim"));
    let a = Serve::start(&sb, "a", &["p"]).await;
    let b = Serve::start(&sb, "b", &["p"]).await;
    let pool = sb.pool().await;

    // A run on `a`: `b` joins its sink's group and writes the partitions it gets.
    let (status, body) = a.post("/pipelines/spread/runs", Some(TOKEN), None).await;
    assert_eq!(status, 202, "{body}");
    let runs = a
        .wait_runs("the run on a", "spread", |runs| {
            runs.len() == 1 && runs.iter().all(finished)
        })
        .await;
    let run_id = runs[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(runs[0]["status"], "succeeded", "{runs:#?}\n{}", a.logs());
    e2e_common::assert_exactly_once(&pool, "spread", "id", SPREAD_RECORDS).await;
    let helped = shares(&pool, &run_id).await;
    let by_b: i64 = helped.iter().map(|(_, n)| n).sum();
    assert!(
        by_b > 0 && by_b < SPREAD_RECORDS,
        "b wrote part of the run: {helped:?}\n--- a\n{}\n--- b\n{}",
        a.logs(),
        b.logs()
    );
    // The run record counts every record once, whoever wrote it; so does a's metric.
    let (_, show) = a.get(&format!("/runs/{run_id}")).await;
    let db = show["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "db")
        .cloned()
        .unwrap();
    assert_eq!(db["records_out"], SPREAD_RECORDS, "{show:#}");
    // (Counted once the service has the run's summary, a moment after the record.)
    let out = poll(
        "a's metric of the run",
        WAIT,
        EVERY,
        || async {
            let out = counter(
                &a.metrics().await,
                "sluice_node_records_out_total",
                &[("pipeline", "spread"), ("node", "db")],
            );
            (out > 0.0).then_some(out)
        },
        || a.logs(),
    )
    .await;
    assert_eq!(out as i64, SPREAD_RECORDS);
    b.wait_log("helped the run").await;
    let helped_metric = counter(
        &b.metrics().await,
        "sluice_node_records_helped_total",
        &[("pipeline", "spread"), ("node", "db")],
    );
    assert_eq!(helped_metric as i64, by_b, "{}", b.logs());

    // Another run on `a`; `b` killed -9 while it helps: its partitions go back to `a`
    // once its session ends, and the run still writes every record exactly once.
    let (status, body) = a.post("/pipelines/victim/runs", Some(TOKEN), None).await;
    assert_eq!(status, 202, "{body}");
    let mut b = b;
    poll(
        "b writing part of the victim run",
        WAIT,
        Duration::from_millis(100),
        || {
            let pool = pool.clone();
            async move {
                let run: Option<String> = sqlx::query_scalar(
                    "SELECT id FROM runs WHERE pipeline = 'victim' ORDER BY started_at DESC LIMIT 1",
                )
                .fetch_optional(&pool)
                .await
                .ok()
                .flatten();
                let run = run?;
                let written: i64 = shares(&pool, &run).await.iter().map(|(_, n)| n).sum();
                (written > 0).then_some(())
            }
        },
        || format!("--- a\n{}\n--- b\n{}", a.logs(), b.logs()),
    )
    .await;
    signal(&b.child, "-KILL");
    sb.wait(&mut b.child, &b.log).await;
    let runs = a
        .wait_runs("the victim run on a", "victim", |runs| {
            runs.len() == 1 && runs.iter().all(finished)
        })
        .await;
    assert_eq!(runs[0]["status"], "succeeded", "{runs:#?}\n{}", a.logs());
    e2e_common::assert_exactly_once(&pool, "victim", "id", SPREAD_RECORDS).await;
    let (code, logs) = a.stop().await;
    assert_eq!(code, Some(0), "{logs}");
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlap_queue_waits_for_the_run_on_another_worker() {
    let sb = sandbox("e2e_serve_queue_workers").await.with_kafka();
    std::fs::create_dir_all(sb.path("p")).unwrap();
    // Runs of 3 s on ticks every 2 s, on a store and buffer two workers share.
    let pipeline = task_pipeline(
        "queued",
        r#"{ cron: "*/2 * * * * *", overlap: queue }"#,
        "sleep 3",
    )
    .replace(
        "nodes:",
        "state: ${PG_URL}\nbuffer: { kafka: { brokers: [\"${KAFKA}\"], topic_prefix: \"${PREFIX}\" } }\nnodes:",
    );
    sb.write("p/queued.yaml", &pipeline);
    let a = Serve::start(&sb, "a", &["p"]).await;
    let b = Serve::start(&sb, "b", &["p"]).await;
    let waiting = "the tick runs once the run on another worker ends (overlap: queue)";
    let waiter = poll(
        "a tick waiting for the other worker's run",
        WAIT,
        EVERY,
        || async { [&a, &b].iter().position(|w| w.logs().contains(waiting)) },
        || format!("--- a\n{}\n--- b\n{}", a.logs(), b.logs()),
    )
    .await;
    let w = [&a, &b][waiter];
    // The waiting worker runs its tick once the lease is free: a run starts there after
    // the wait, and runs never overlap.
    poll(
        "the waiting worker runs the tick",
        WAIT,
        EVERY,
        || async {
            let log = w.logs();
            let at = log.find(waiting)?;
            log[at..].contains("run starting").then_some(())
        },
        || w.logs(),
    )
    .await;
    let runs = a
        .wait_runs("four runs", "queued", |runs| {
            runs.iter().filter(|r| finished(r)).count() >= 4
        })
        .await;
    assert_eq!(overlapping(&runs), None, "runs of one pipeline overlapped");
    for run in runs.iter().filter(|r| finished(r)) {
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    for w in [&a, &b] {
        assert!(!w.logs().contains("run skipped"), "{}", w.logs());
    }
    let (code, logs) = a.stop().await;
    assert_eq!(code, Some(0), "{logs}");
    let (code, logs) = b.stop().await;
    assert_eq!(code, Some(0), "{logs}");
}
