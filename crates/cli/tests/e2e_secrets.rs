//! Nothing leaked, end to end through the `sluice` binary: a pipeline that uses every
//! form of secret (a database URL password with a raw `@`, a `?password=`, an
//! `access_token` in `url`'s query, a POST body field, a custom header, a query key,
//! API-key and bearer auth, a PostgreSQL state store with a password) is validated,
//! planned, run (succeeding, and failing on wrong passwords, a 401 and a 500 that echo
//! the request), checked and listed; no output of any command, no file the runs left
//! behind and no row of the state store holds any of the secrets. And an API whose
//! next-page link or redirect points to another origin gets no credentials there: the
//! node fails `invalid_request`, with evidence.

mod e2e_common;

use e2e_common::{Out, Sandbox, address};
use sluice_testkit::mock_api::{Fault, FaultKind, KeyIn, MockApi, MockAuth, MockConfig};
use sqlx::{AssertSqlSafe, Connection, Row};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// The secrets of the test: `(variable, value)`. Each value ends with a random part of
/// its own, which is searched for alone too (a secret cut at a raw `@` leaks its tail).
struct Secrets(Vec<(&'static str, String)>);

impl Secrets {
    fn new() -> Secrets {
        let tail = |p: &str| format!("{p}{}", sluice_testkit::unique_name("s").replace('_', ""));
        Secrets(vec![
            ("ROLE_PW", format!("pg@{}", tail("X"))),
            ("WRONG_PW", format!("wr@ng{}", tail("Y"))),
            ("QUERY_PW", tail("qpw")),
            ("TOKEN", tail("tok")),
            ("BODY", tail("body")),
            ("HEADER", tail("hdr")),
            ("QKEY", tail("qk")),
            ("APIKEY", tail("ak")),
            ("BEARER", tail("br")),
            ("ROBOT", tail("rb")),
            ("ROBOT_SECRET", tail("rs")),
            ("SMTP_PW", tail("sm")),
        ])
    }

    fn get(&self, name: &str) -> &str {
        &self.0.iter().find(|(n, _)| *n == name).expect("a secret").1
    }

    /// Every string that must not appear: each secret, its random tail, and its tail
    /// after a raw `@`.
    fn needles(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, value) in &self.0 {
            out.push((name.to_string(), value.clone()));
            if let Some((_, after)) = value.rsplit_once('@') {
                out.push((format!("{name} after its `@`"), after.to_owned()));
            }
            let tail: String = value
                .chars()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            out.push((format!("{name} (its last 12 characters)"), tail));
        }
        out
    }
}

/// Everything the commands printed and the runs left behind, by name.
#[derive(Default)]
struct Outputs(Vec<(String, Vec<u8>)>);

impl Outputs {
    fn add(&mut self, out: &Out) {
        self.0.push((
            out.what.clone(),
            format!("{}\n{}", out.stdout, out.stderr).into_bytes(),
        ));
    }

    /// Fails listing every place a secret appears.
    fn assert_clean(&self, secrets: &Secrets) {
        let mut leaks = Vec::new();
        for (what, bytes) in &self.0 {
            for (name, needle) in secrets.needles() {
                if let Some(at) = find(bytes, needle.as_bytes()) {
                    let from = at.saturating_sub(120);
                    let to = (at + needle.len() + 60).min(bytes.len());
                    leaks.push(format!(
                        "{name} in `{what}`: …{}…",
                        String::from_utf8_lossy(&bytes[from..to])
                    ));
                }
            }
        }
        assert!(
            leaks.is_empty(),
            "{} leak(s):\n{}",
            leaks.len(),
            leaks.join("\n\n")
        );
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A PostgreSQL role of the test's own with a password holding a raw `@`, owning the
/// sandbox's schema: the sinks and the state store log in as it.
async fn create_role(sb: &Sandbox, password: &str) -> String {
    let role = format!("{}_r", sb.pg.schema);
    let mut conn = sqlx::PgConnection::connect(&sb.pg.server_url)
        .await
        .expect("connect to PostgreSQL");
    for sql in [
        format!(
            "CREATE ROLE \"{role}\" LOGIN PASSWORD '{}'",
            password.replace('\'', "''")
        ),
        format!("ALTER SCHEMA \"{}\" OWNER TO \"{role}\"", sb.pg.schema),
    ] {
        sqlx::query(AssertSqlSafe(sql))
            .execute(&mut conn)
            .await
            .expect("create the test's role");
    }
    role
}

async fn drop_role(sb: &Sandbox, role: &str) {
    if let Ok(mut conn) = sqlx::PgConnection::connect(&sb.pg.server_url).await {
        let _ = sqlx::query(AssertSqlSafe(format!(
            "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
            sb.pg.schema
        )))
        .execute(&mut conn)
        .await;
        let _ = sqlx::query(AssertSqlSafe(format!("DROP ROLE IF EXISTS \"{role}\"")))
            .execute(&mut conn)
            .await;
    }
}

/// Every row of every table of the sandbox's schema (the PostgreSQL state store and the
/// sink tables), as text.
async fn dump_schema(sb: &Sandbox) -> Vec<u8> {
    let mut conn = sqlx::PgConnection::connect(&sb.pg.server_url)
        .await
        .expect("connect to PostgreSQL");
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1",
    )
    .bind(&sb.pg.schema)
    .fetch_all(&mut conn)
    .await
    .expect("list the tables")
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert!(
        tables.iter().any(|t| t == "runs"),
        "the state store is not in the schema: {tables:?}"
    );
    let mut out = Vec::new();
    for t in tables {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT t::text FROM \"{}\".\"{t}\" t",
            sb.pg.schema
        )))
        .fetch_all(&mut conn)
        .await
        .expect("read a table");
        for r in rows {
            out.extend(format!("{t}: {}\n", r.get::<String, _>(0)).into_bytes());
        }
    }
    out
}

/// Every file under `dir` (state databases with their WAL, buffer segments, outputs).
fn files(dir: &std::path::Path, out: &mut Outputs) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if let Ok(bytes) = std::fs::read(&p) {
            out.0.push((format!("file {}", p.display()), bytes));
        }
    }
}

/// Runs each reading command for `file`: validate, plan, health, and with `lists` those
/// that list the state store (runs, alerts, failed).
async fn inspect(sb: &Sandbox, file: &str, lists: bool, out: &mut Outputs) {
    for args in [
        vec!["validate", file],
        vec!["plan", file],
        vec!["plan", "--json", file],
        vec!["plan", "--dot", file],
        vec!["health", file],
        vec!["health", "--json", file],
    ] {
        out.add(&sb.sluice(&args).await);
    }
    if !lists {
        return;
    }
    for args in [
        vec!["alerts", "-f", file],
        vec!["failed", "list", "--all", "-f", file],
    ] {
        out.add(&sb.sluice(&args).await);
    }
    let runs = sb.sluice(&["runs", "-f", file, "--json"]).await;
    out.add(&runs);
    out.add(&sb.sluice(&["runs", "-f", file]).await);
    if let Ok(serde_json::Value::Array(runs)) = serde_json::from_str(&runs.stdout) {
        for r in runs {
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            out.add(&sb.sluice(&["runs", "show", &id, "-f", file]).await);
            out.add(
                &sb.sluice(&["runs", "show", &id, "-f", file, "--json"])
                    .await,
            );
        }
    }
    let failed = sb
        .sluice(&["failed", "list", "--all", "-f", file, "--json"])
        .await;
    out.add(&failed);
    if let Ok(serde_json::Value::Array(rows)) = serde_json::from_str(&failed.stdout) {
        for r in rows {
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            out.add(&sb.sluice(&["failed", "show", &id, "-f", file]).await);
        }
    }
}

async fn mock(
    auth: MockAuth,
    faults: Vec<Fault>,
    malformed: Vec<u64>,
) -> sluice_testkit::mock_api::MockHandle {
    MockApi::start(MockConfig {
        records: 45,
        page_size: 20,
        auth,
        faults,
        malformed_records: malformed,
        echo_requests: true,
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_any_output_or_the_state_store() {
    let secrets = Secrets::new();
    let mut sb = Sandbox::new("e2e_secrets").await;
    let role = create_role(&sb, secrets.get("ROLE_PW")).await;
    for (name, value) in &secrets.0 {
        sb.set(name, value.clone());
    }
    sb.set("SLUICE_LOG", "debug");
    let api_key = MockAuth::ApiKey {
        name: "X-Api-Key".into(),
        value: secrets.get("APIKEY").into(),
        location: KeyIn::Header,
    };
    let bearer = MockAuth::Bearer {
        token: secrets.get("BEARER").into(),
    };
    let ok_api = mock(api_key.clone(), vec![], vec![7]).await;
    let ok_bearer = mock(bearer.clone(), vec![], vec![]).await;
    let api_401 = mock(
        api_key,
        vec![Fault::new(1, 0, FaultKind::Unauthorized)],
        vec![],
    )
    .await;
    let api_500 = mock(
        bearer,
        vec![Fault::new(1, 0, FaultKind::ServerError { status: 500 })],
        vec![],
    )
    .await;
    sb.set("OK_API", ok_api.base_url());
    sb.set("OK_BEARER", ok_bearer.base_url());
    sb.set("API_401", api_401.base_url());
    sb.set("API_500", api_500.base_url());

    // Where the role's connections go (its schema is its search_path).
    let db_path = sb.pg.server_url.split_once("://").map_or("", |(_, r)| r);
    let db_path = db_path.rsplit_once('@').map_or(db_path, |(_, r)| r);
    let addr = address(&sb.pg.server_url);
    let db = db_path
        .split_once('/')
        .map_or("", |(_, r)| r)
        .split('?')
        .next()
        .unwrap_or_default();
    let opts = format!("options=-c%20search_path%3D{}", sb.pg.schema);
    let live_db = format!("postgres://{role}:${{ROLE_PW}}@{addr}/{db}?{opts}");
    let wrong_db = format!("postgres://{role}:${{WRONG_PW}}@{addr}/{db}?{opts}");
    let query_pw_db = format!("postgres://{role}@{addr}/{db}?password=${{QUERY_PW}}&{opts}");

    // Every form of secret, in an HTTP source (POST) and a bearer one, into PostgreSQL.
    let sources = |api: &str, bearer_api: &str| {
        format!(
            r#"
  orders:
    type: http
    method: POST
    url: ${{{api}}}/search?access_token=${{TOKEN}}
    headers:
      Ocp-Apim-Subscription-Key: ${{HEADER}}
    query:
      key: ${{QKEY}}
    body:
      page: "{{{{page}}}}"
      page_size: 20
      secret_field: ${{BODY}}
    auth:
      api_key: {{ name: X-Api-Key, value: "${{APIKEY}}" }}
    pagination:
      page_number: {{ param: page }}
    stop: {{ has_more: $.meta.has_more }}
    records: {{ path: $.data.items }}
    bad_records: quarantine
    schema_policy: evolve
  bearer_orders:
    type: http
    url: ${{{bearer_api}}}/page/items?access_token=${{TOKEN}}
    query:
      key: ${{QKEY}}
    auth:
      bearer: {{ token: "${{BEARER}}" }}
    pagination:
      page_number: {{ param: page, size_param: per_page, size: 20 }}
    stop: {{ has_more: $.meta.has_more }}
    records: {{ path: $.data.items }}
    schema_policy: evolve
"#
        )
    };
    // Every alert channel with a secret, none reachable (port 1): their failures are
    // logged and recorded, and must not carry a robot's token or the SMTP password.
    let alerts = r#"alerts:
  channels:
    slack: { slack: { url: "http://127.0.0.1:1/services/T0/B0/${ROBOT}", timeout: 2s } }
    ding: { dingtalk: { url: "http://127.0.0.1:1/robot/send?access_token=${ROBOT}", secret: "${ROBOT_SECRET}", timeout: 2s } }
    feishu: { feishu: { url: "http://127.0.0.1:1/open-apis/bot/v2/hook/${ROBOT}", secret: "${ROBOT_SECRET}", timeout: 2s } }
    wecom: { wecom: { url: "http://127.0.0.1:1/cgi-bin/webhook/send?key=${ROBOT}", timeout: 2s } }
    mail: { email: { smtp: "127.0.0.1:1", from: a@example.com, to: [b@example.com], username: sluice, password: "${SMTP_PW}", timeout: 2s } }
"#;
    let pipeline = |name: &str, state: &str, body: &str| {
        format!(
            "pipeline: {name}\nstate: {state}\n{alerts}defaults:\n  retry: {{ max_attempts: 1 }}\n  timeouts: {{ connect: 3s, request: 10s }}\nnodes:{body}"
        )
    };
    let ok = pipeline(
        "leak_ok",
        &live_db,
        &format!(
            "{}  warehouse:\n    type: postgres\n    inputs: [orders]\n    url: {live_db}\n    table: leak_orders\n    schema_policy: evolve\n  warehouse_b:\n    type: postgres\n    inputs: [bearer_orders]\n    url: {live_db}\n    table: leak_bearer\n    schema_policy: evolve\n",
            sources("OK_API", "OK_BEARER")
        ),
    );
    // The APIs answer 401 (one pipeline) and 500 (another: a failed node cancels the
    // others), echoing the request in their bodies.
    let failing_api = |name: &str, api: &str| {
        pipeline(
            name,
            &live_db,
            &format!(
                "{}  sink:\n    type: file_sink\n    inputs: [orders, bearer_orders]\n    path: out/{name}.ndjson\n    format: ndjson\n",
                sources(api, api)
            ),
        )
    };
    // The databases refuse the passwords (one with a raw `@`, one in `?password=`).
    let failing_dbs = pipeline(
        "leak_db_fail",
        &live_db,
        &format!(
            "{}  wrong_password:\n    type: postgres\n    inputs: [orders]\n    url: {wrong_db}\n    table: leak_orders\n  query_password:\n    type: postgres\n    inputs: [bearer_orders]\n    url: {query_pw_db}\n    table: leak_bearer\n",
            sources("OK_API", "OK_BEARER")
        ),
    );
    // The state store refuses its password.
    let failing_state = pipeline(
        "leak_state_fail",
        &wrong_db,
        &format!(
            "{}  sink:\n    type: file_sink\n    inputs: [orders, bearer_orders]\n    path: out/state.ndjson\n    format: ndjson\n",
            sources("OK_API", "OK_BEARER")
        ),
    );
    sb.write("ok.yaml", &ok);
    sb.write("api_401.yaml", &failing_api("leak_api_401", "API_401"));
    sb.write("api_500.yaml", &failing_api("leak_api_500", "API_500"));
    sb.write("db_fail.yaml", &failing_dbs);
    sb.write("state_fail.yaml", &failing_state);

    let mut out = Outputs::default();
    let first = sb.sluice(&["run", "--once", "ok.yaml"]).await;
    out.add(&first);
    // Record 7 is malformed: kept for replay, the run partially succeeds.
    assert_eq!(first.code, Some(3), "{first}");
    out.add(&sb.sluice(&["run", "--once", "--json", "ok.yaml"]).await);
    out.add(&sb.sluice(&["run", "--once", "--plain", "ok.yaml"]).await);

    for file in [
        "api_401.yaml",
        "api_500.yaml",
        "db_fail.yaml",
        "state_fail.yaml",
    ] {
        for mode in [None, Some("--json"), Some("--plain")] {
            let mut args = vec!["run", "--once"];
            args.extend(mode);
            args.push(file);
            let run = sb.sluice(&args).await;
            assert_eq!(run.code, Some(1), "{run}");
            out.add(&run);
        }
    }
    // The failures went through the paths that show what the servers said.
    let shown = sb
        .sluice(&["failed", "list", "-f", "ok.yaml", "--json"])
        .await;
    assert!(shown.stdout.contains("invalid_request"), "{shown}");
    let runs = sb.sluice(&["runs", "-f", "ok.yaml", "--json"]).await;
    for (pipeline, class) in [
        ("leak_api_401", "auth"),
        ("leak_api_500", "dependency"),
        ("leak_db_fail", "auth"),
    ] {
        let run = serde_json::from_str::<serde_json::Value>(&runs.stdout)
            .ok()
            .and_then(|v| {
                v.as_array()?
                    .iter()
                    .find(|r| r["pipeline"] == pipeline)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("no run of {pipeline}: {runs}"));
        let id = run["id"].as_str().unwrap_or_default();
        let show = sb
            .sluice(&["runs", "show", id, "-f", "ok.yaml", "--json"])
            .await;
        assert!(
            show.stdout
                .contains(&format!("\"error_class\": \"{class}\"")),
            "{pipeline}: no `{class}` failure: {show}"
        );
        if pipeline.starts_with("leak_api") {
            assert!(
                show.stdout.contains("echo"),
                "the evidence does not show the echoing answer: {show}"
            );
        }
    }

    for file in [
        "ok.yaml",
        "api_401.yaml",
        "api_500.yaml",
        "db_fail.yaml",
        "state_fail.yaml",
    ] {
        // One state store holds the runs of all but the last: list them twice only.
        let lists = matches!(file, "ok.yaml" | "state_fail.yaml");
        inspect(&sb, file, lists, &mut out).await;
    }
    // The alert channels were tried and failed, so their errors were recorded.
    let listed = sb.sluice(&["alerts", "-f", "ok.yaml"]).await;
    for channel in ["slack", "ding", "feishu", "wecom", "mail"] {
        assert!(
            listed
                .stdout
                .contains(&format!("-> {channel}: failed after 3 attempts")),
            "{listed}"
        );
    }
    out.add(&listed);
    out.0
        .push(("the PostgreSQL state store".into(), dump_schema(&sb).await));
    files(sb.dir.path(), &mut out);
    // The mocks did see the secrets: the test would catch nothing if they had not.
    assert!(
        ok_api
            .requests()
            .iter()
            .any(|r| r.query.contains(secrets.get("TOKEN"))),
        "the API never got the access token"
    );
    drop_role(&sb, &role).await;
    out.assert_clean(&secrets);
}

/// A bare HTTP/1.1 listener on 127.0.0.1 that answers each request with
/// `answer(request)` and keeps every request it received, whole.
struct Listener {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Listener {
    async fn start(answer: impl Fn(&str) -> String + Send + Sync + 'static) -> Listener {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("an address").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let answer = Arc::new(answer);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let log = log.clone();
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    loop {
                        let Ok(n) = conn.read(&mut chunk).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                        let text = String::from_utf8_lossy(&buf).into_owned();
                        if let Some(end) = text.find("\r\n\r\n") {
                            let length = text[..end]
                                .lines()
                                .find_map(|l| {
                                    let (k, v) = l.split_once(':')?;
                                    k.eq_ignore_ascii_case("content-length")
                                        .then(|| v.trim().parse::<usize>().ok())?
                                })
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + length {
                                break;
                            }
                        }
                    }
                    let request = String::from_utf8_lossy(&buf).into_owned();
                    let response = answer(&request);
                    log.lock().unwrap_or_else(|e| e.into_inner()).push(request);
                    let _ = conn.write_all(response.as_bytes()).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        Listener { port, seen }
    }

    fn requests(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn http_response(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_go_to_no_other_origin() {
    let secrets = Secrets::new();
    // Another origin: 127.0.0.1 on another port. It records what it gets.
    let elsewhere =
        Listener::start(|_| http_response("200 OK", "", r#"{"data":[],"next":null}"#)).await;
    let other = elsewhere.port;
    let api = Listener::start(move |request| {
        if request.starts_with("GET /redirect") {
            http_response(
                "307 Temporary Redirect",
                &format!("location: http://127.0.0.1:{other}/stolen?via=redirect\r\n"),
                "{}",
            )
        } else {
            http_response(
                "200 OK",
                "",
                &format!(
                    r#"{{"data":[{{"id":1}}],"next":"http://127.0.0.1:{other}/steal?page=2"}}"#
                ),
            )
        }
    })
    .await;
    let mut sb = Sandbox::new("e2e_origin").await;
    for (name, value) in &secrets.0 {
        sb.set(name, value.clone());
    }
    sb.set("SLUICE_LOG", "debug");
    sb.set("API", format!("http://127.0.0.1:{}", api.port));
    // One source per pipeline: in one run, the first node to fail would cancel the other
    // before its request, and its refusal would go untested.
    let sink = r#"
  out:
    type: file_sink
    inputs: [NODE]
    path: out/NODE.ndjson
    format: ndjson
"#;
    sb.write(
        "next.yaml",
        &(r#"
pipeline: leak_next
defaults:
  retry: { max_attempts: 1 }
nodes:
  paged:
    type: http
    url: ${API}/items?access_token=${TOKEN}
    headers:
      Ocp-Apim-Subscription-Key: ${HEADER}
    query:
      key: ${QKEY}
    auth:
      api_key: { name: X-Api-Key, value: "${APIKEY}" }
    pagination:
      next_url: { path: $.next }
    records: { path: $.data }"#
            .to_owned()
            + &sink.replace("NODE", "paged")),
    );
    sb.write(
        "redirect.yaml",
        &(r#"
pipeline: leak_redirect
defaults:
  retry: { max_attempts: 1 }
nodes:
  redirected:
    type: http
    url: ${API}/redirect?access_token=${TOKEN}
    headers:
      Ocp-Apim-Subscription-Key: ${HEADER}
    auth:
      bearer: { token: "${BEARER}" }
    records: { path: $.data }"#
            .to_owned()
            + &sink.replace("NODE", "redirected")),
    );
    let mut out = Outputs::default();
    let mut shows = Vec::new();
    for (file, pipeline) in [
        ("next.yaml", "leak_next"),
        ("redirect.yaml", "leak_redirect"),
    ] {
        let run = sb.sluice(&["run", "--once", "--json", file]).await;
        out.add(&run);
        assert_eq!(run.code, Some(1), "{run}");
        let runs = sb.runs().await;
        let id = runs
            .iter()
            .find(|r| r["pipeline"] == pipeline)
            .and_then(|r| r["id"].as_str())
            .unwrap_or_default()
            .to_owned();
        shows.push(sb.run_show(&id).await);
    }

    let stolen = elsewhere.requests();
    for request in &stolen {
        for (name, needle) in secrets.needles() {
            assert!(
                !request.contains(&needle),
                "the other origin received {name}:\n{request}"
            );
        }
    }
    assert!(
        stolen.is_empty(),
        "the other origin was asked at all: {stolen:?}"
    );
    assert_eq!(api.requests().len(), 2, "{:?}", api.requests());

    for (show, (node, words)) in shows.iter().zip([
        ("paged", ["next-page URL", "allowed_hosts"]),
        ("redirected", ["redirected", "allowed_hosts"]),
    ]) {
        let n = e2e_common::node(show, node);
        assert_eq!(n["error_class"], "invalid_request", "{show:#}");
        let text = show.to_string();
        for w in words {
            assert!(text.contains(w), "`{node}`: no `{w}` in {show:#}");
        }
    }
    let attempts = shows[0]["attempts"].to_string();
    assert!(
        attempts.contains(&format!("127.0.0.1:{other}/steal")),
        "no evidence of the refused URL: {shows:#?}"
    );
    inspect(&sb, "next.yaml", true, &mut out).await;
    inspect(&sb, "redirect.yaml", true, &mut out).await;
    files(sb.dir.path(), &mut out);
    out.assert_clean(&secrets);
}
