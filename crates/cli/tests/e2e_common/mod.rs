//! Helpers of the end-to-end tests: a sandbox per test (a working folder for the
//! `sluice` binary with its SQLite state store and embedded buffer, a PostgreSQL schema of
//! its own, a Kafka topic prefix of its own), running the binary, and reading the sink
//! tables and their ledger.
//!
//! The pipelines use `${PG_URL}`, `${KAFKA}` and `${PREFIX}` (set for every `sluice` the
//! sandbox runs), so no password is written in a file or printed.
#![allow(dead_code)]

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use serde_json::Value;
use sluice_testkit::PostgresSchema;
use sqlx::{AssertSqlSafe, PgPool, Row};
use std::future::Future;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio::time::Instant;

/// The longest any single `sluice` command may take before the test fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// What a finished `sluice` command did.
pub(crate) struct Out {
    /// The exit code (`None`: killed by a signal).
    pub(crate) code: Option<i32>,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// The command line, for messages.
    pub(crate) what: String,
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what, self.code, self.stdout, self.stderr
        )
    }
}

impl Out {
    /// Asserts the exit code, printing everything the command said when it differs.
    pub(crate) fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(self.code, Some(code), "{self}");
        self
    }

    /// stdout parsed as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self}"))
    }
}

/// A test's own working folder, PostgreSQL schema and Kafka topic prefix.
pub(crate) struct Sandbox {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) pg: PostgresSchema,
    /// Kafka topic prefix of this test (`e2e_<12 hex>`); its topics are deleted on drop.
    pub(crate) prefix: String,
    vars: Vec<(String, String)>,
}

impl Sandbox {
    /// A sandbox whose schema and topic prefix start with `name`.
    pub(crate) async fn new(name: &str) -> Sandbox {
        let pg = sluice_testkit::postgres_schema(name).await;
        let prefix = sluice_testkit::unique_name(name);
        let dir = tempfile::Builder::new()
            .prefix(&format!("sluice-{name}-"))
            .tempdir()
            .expect("a temporary folder");
        let vars = vec![
            ("PG_URL".to_owned(), pg.url.clone()),
            ("PREFIX".to_owned(), prefix.clone()),
        ];
        Sandbox {
            dir,
            pg,
            prefix,
            vars,
        }
    }

    /// Also sets `KAFKA` (the test broker) for the pipelines: panics clearly when the
    /// broker is not configured.
    pub(crate) fn with_kafka(mut self) -> Sandbox {
        self.vars
            .push(("KAFKA".to_owned(), sluice_testkit::kafka_bootstrap()));
        self
    }

    /// Sets a variable for every `sluice` this sandbox runs.
    pub(crate) fn set(&mut self, key: &str, value: impl Into<String>) {
        self.vars.push((key.to_owned(), value.into()));
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.dir.path().join(file)
    }

    /// Writes a file into the working folder and returns its path.
    pub(crate) fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.path(file);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("cannot write {file}: {e}"));
        path
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(args)
            .current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("SLUICE_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        for (k, v) in &self.vars {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `sluice ARGS` in the working folder to its end.
    pub(crate) async fn sluice(&self, args: &[&str]) -> Out {
        let what = format!("sluice {}", args.join(" "));
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`{what}` did not end within {COMMAND_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("waiting for `{what}`: {e}"));
        Out {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            what,
        }
    }

    /// Starts `sluice ARGS` in the background; its output goes to `<log>.out`/`<log>.err`
    /// in the working folder (read them with [`Sandbox::logs`]).
    pub(crate) fn spawn(&self, log: &str, args: &[&str]) -> Child {
        let out = std::fs::File::create(self.path(&format!("{log}.out"))).expect("a log file");
        let err = std::fs::File::create(self.path(&format!("{log}.err"))).expect("a log file");
        self.command(args)
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `sluice {}`: {e}", args.join(" ")))
    }

    /// What a background `sluice` printed so far.
    pub(crate) fn logs(&self, log: &str) -> String {
        let read = |ext: &str| {
            std::fs::read_to_string(self.path(&format!("{log}.{ext}"))).unwrap_or_default()
        };
        format!(
            "--- {log}: stdout ---\n{}\n--- {log}: stderr ---\n{}",
            read("out"),
            read("err")
        )
    }

    /// Waits for a background `sluice` to end and returns its exit code.
    pub(crate) async fn wait(&self, child: &mut Child, log: &str) -> Option<i32> {
        match tokio::time::timeout(COMMAND_TIMEOUT, child.wait()).await {
            Ok(status) => status.expect("waiting for sluice").code(),
            Err(_) => panic!(
                "sluice did not end within {COMMAND_TIMEOUT:?}\n{}",
                self.logs(log)
            ),
        }
    }

    /// A connection pool on the sandbox's schema.
    pub(crate) async fn pool(&self) -> PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&self.pg.url)
            .await
            .expect("connect to PostgreSQL")
    }

    /// `sluice runs --json`, newest first.
    pub(crate) async fn runs(&self) -> Vec<Value> {
        let out = self.sluice(&["runs", "--json"]).await;
        out.expect_code(0);
        match out.json() {
            Value::Array(runs) => runs,
            other => panic!("`sluice runs --json` is not an array: {other}"),
        }
    }

    /// `sluice runs show ID --json`: `{run, nodes, attempts}`.
    pub(crate) async fn run_show(&self, id: &str) -> Value {
        let out = self.sluice(&["runs", "show", id, "--json"]).await;
        out.expect_code(0);
        out.json()
    }

    /// `sluice failed list --pipeline P --json` (batches waiting for replay).
    pub(crate) async fn failed(&self, pipeline: &str) -> Vec<Value> {
        let out = self
            .sluice(&["failed", "list", "--pipeline", pipeline, "--json"])
            .await;
        out.expect_code(0);
        match out.json() {
            Value::Array(rows) => rows,
            other => panic!("`sluice failed list --json` is not an array: {other}"),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if self.vars.iter().any(|(k, _)| k == "KAFKA") {
            delete_topics(&self.prefix);
        }
    }
}

/// Deletes every topic whose name starts with `prefix.` (the topics `sluice` created for a
/// test), from a thread of its own so that it works inside a runtime too.
fn delete_topics(prefix: &str) {
    let prefix = format!("{prefix}.");
    let Ok(bootstrap) = std::env::var("SLUICE_TEST_KAFKA") else {
        return;
    };
    let done = std::thread::spawn(move || -> Result<(), String> {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .map_err(|e| e.to_string())?;
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let topics: Vec<String> = metadata
            .topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|n| n.starts_with(&prefix))
            .collect();
        if topics.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        rt.block_on(admin.delete_topics(&names, &opts))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .join();
    if let Ok(Err(e)) = done {
        eprintln!("e2e: could not delete the test's Kafka topics: {e}");
    }
}

/// Rows in a table (0 while it does not exist yet or the database does not answer).
pub(crate) async fn count(pool: &PgPool, table: &str) -> i64 {
    sqlx::query_scalar::<_, i64>(AssertSqlSafe(format!("SELECT count(*) FROM \"{table}\"")))
        .fetch_one(pool)
        .await
        .unwrap_or(0)
}

/// What a sink table holds, checked against its ledger.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TableCheck {
    pub(crate) rows: i64,
    /// Distinct values of the key columns.
    pub(crate) distinct_keys: i64,
    /// Ledger entries of the table.
    pub(crate) ledger_entries: i64,
    /// Rows the ledger says were written into the table.
    pub(crate) ledger_rows: i64,
}

/// Counts the rows of `table`, its distinct keys (`key`: a column list such as
/// `id, origin`) and its ledger entries.
pub(crate) async fn check_table(pool: &PgPool, table: &str, key: &str) -> TableCheck {
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT {key} FROM \"{table}\") d) FROM \"{table}\""
    )))
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("cannot count the rows of {table}: {e}"));
    let ledger = sqlx::query(
        "SELECT count(*), coalesce(sum(rows), 0)::bigint FROM _sluice_ledger WHERE target = $1",
    )
    .bind(table)
    .fetch_one(pool)
    .await
    .unwrap_or_else(|e| panic!("cannot read the ledger of {table}: {e}"));
    TableCheck {
        rows: row.get(0),
        distinct_keys: row.get(1),
        ledger_entries: ledger.get(0),
        ledger_rows: ledger.get(1),
    }
}

/// Asserts that `table` holds `expected` rows, each key once, and that its ledger accounts
/// for exactly those rows.
pub(crate) async fn assert_exactly_once(pool: &PgPool, table: &str, key: &str, expected: i64) {
    let c = check_table(pool, table, key).await;
    assert_eq!(c.rows, expected, "{table}: rows ({c:?})");
    assert_eq!(c.distinct_keys, expected, "{table}: duplicate keys ({c:?})");
    assert_eq!(
        c.ledger_rows, expected,
        "{table}: the ledger does not account for every row once ({c:?})"
    );
}

/// Polls `probe` every `every` until it returns `Some`, or fails after `within` with
/// `what` and the output of `context`.
pub(crate) async fn poll<T, F, Fut>(
    what: &str,
    within: Duration,
    every: Duration,
    mut probe: F,
    context: impl Fn() -> String,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("{what}: not within {within:?}\n{}", context());
        }
        tokio::time::sleep(every).await;
    }
}

/// The node `id` of a `sluice runs show --json` value.
pub(crate) fn node<'a>(show: &'a Value, id: &str) -> &'a Value {
    show["nodes"]
        .as_array()
        .and_then(|nodes| nodes.iter().find(|n| n["node"] == id))
        .unwrap_or_else(|| panic!("no node `{id}` in {show:#}"))
}

/// `host:port` of a `scheme://user:pass@host:port/db?...` URL.
pub(crate) fn address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, a)| a)
        .to_owned()
}

/// Runs the `sluice` binary in `dir` with extra environment, waiting for it: its output
/// and stdout + stderr as one text (for the tests that need no sandbox).
pub(crate) fn sluice_in(
    dir: &std::path::Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (std::process::Output, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .current_dir(dir)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("sluice runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

impl Sandbox {
    /// The address a `sluice serve` spawned with `log` (and `--listen 127.0.0.1:0`) says it
    /// listens on, once it says so (within 90 s).
    pub(crate) async fn listening(&self, log: &str) -> String {
        let out = self.path(&format!("{log}.out"));
        poll(
            "sluice serve says where it listens",
            Duration::from_secs(90),
            Duration::from_millis(100),
            || {
                let text = std::fs::read_to_string(&out).unwrap_or_default();
                async move {
                    text.lines()
                        .find_map(|l| l.strip_prefix("listening on "))
                        .map(|a| a.trim().to_owned())
                }
            },
            || self.logs(log),
        )
        .await
    }
}

/// Alerts a webhook receiver got, as JSON.
pub(crate) type Seen = std::sync::Arc<std::sync::Mutex<Vec<Value>>>;

/// A webhook receiver keeping each alert it got: its URL and what it got.
pub(crate) async fn hook() -> (String, Seen) {
    use sluice_testkit::receiver::{Answer, Request, receive};
    let seen: Seen = Seen::default();
    let kept = seen.clone();
    let addr = receive(move |r: &Request| {
        if let Ok(v) = serde_json::from_slice::<Value>(&r.body) {
            kept.lock().unwrap().push(v);
        }
        Answer::status(200)
    })
    .await;
    (format!("http://{addr}/hook"), seen)
}

/// The alerts of `kind` a receiver got.
pub(crate) fn alerts_of(seen: &Seen, kind: &str) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == kind)
        .cloned()
        .collect()
}

/// The one pause of node `node` in the last run's record: its `paused:` attempt's detail,
/// when it paused and when it resumed (ms since the epoch), and the run as shown (for
/// messages). Asserts there is exactly one of each.
pub(crate) async fn the_pause_of(sb: &Sandbox, node: &str) -> (String, i64, i64, Value) {
    let runs = sb.runs().await;
    let show = sb.run_show(runs[0]["id"].as_str().unwrap()).await;
    let attempts = show["attempts"].as_array().unwrap();
    let at_node = |prefix: &str| -> Vec<&Value> {
        attempts
            .iter()
            .filter(|a| a["node"] == node && a["detail"].as_str().unwrap().starts_with(prefix))
            .collect()
    };
    let paused = at_node("paused:");
    let resumed = at_node("resumed after");
    assert_eq!(paused.len(), 1, "{show:#}");
    assert_eq!(resumed.len(), 1, "{show:#}");
    let detail = paused[0]["detail"].as_str().unwrap().to_owned();
    let (from, to) = (
        paused[0]["at"].as_i64().unwrap(),
        resumed[0]["at"].as_i64().unwrap(),
    );
    (detail, from, to, show)
}

/// Asserts that no data request reached the mock API between `from` and `to` (ms since
/// the epoch): a paused source sends none.
pub(crate) fn assert_no_request_between(
    mock: &sluice_testkit::mock_api::MockHandle,
    from: i64,
    to: i64,
) {
    let during: Vec<u64> = mock
        .data_requests()
        .iter()
        .filter(|r| {
            let at =
                r.at.duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as i64;
            at > from && at < to
        })
        .map(|r| r.seq)
        .collect();
    assert!(
        during.is_empty(),
        "requests {during:?} reached the API while the source was paused ({from}..{to})"
    );
}
