//! The rate-limit budget shared through a PostgreSQL state store, through the `sluice`
//! binary: two `sluice run` processes (two pipelines, one state store) read the same mock
//! API with the same credentials and `rate_limit: { requests_per_second: N }`.
//!
//! - Together they stay within the limit: the mock's log holds at most N requests in
//!   every one-second window (a count over the logged arrival times; nothing asserts how
//!   long anything took).
//! - A `429` with a `Retry-After` beyond `max_retry_after` told to one parks both: the
//!   mock receives no request after it, and both runs end `rate_limited`.

mod e2e_common;

use e2e_common::{Sandbox, assert_exactly_once};
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig, RetryAfter};
use std::time::{Duration, SystemTime};

const RECORDS: u64 = 200;
const TOKEN: &str = "budget-test-bearer-token";

/// Pipeline `name` on the sandbox's PostgreSQL state, reading `/offset/items` by pages of
/// 10 with the shared bearer token; `reader` tells its requests apart in the mock's log
/// (a public query parameter: not a credential, so not part of the budget's key).
fn pipeline(name: &str, rate: u32, extra: &str) -> String {
    format!(
        r#"
pipeline: {name}
state: ${{PG_URL}}
nodes:
  api:
    type: http
    url: ${{MOCK}}/offset/items
    query: {{ reader: {name} }}
    public: [reader]
    auth:
      bearer:
        token: ${{API_TOKEN}}
    pagination:
      offset_limit: {{ limit: 10 }}
    stop:
      total: $.meta.total
    records: {{ path: $.data.items }}
    nested: json_text
    rate_limit: {{ requests_per_second: {rate}{extra} }}
  db:
    type: postgres
    inputs: [api]
    url: ${{PG_URL}}
    table: {name}
    mode: append
"#
    )
}

/// The most requests the log holds in one window `[t, t + 1s)`, over every `t` at a
/// request's arrival.
fn most_in_a_second(mut times: Vec<SystemTime>) -> usize {
    times.sort();
    (0..times.len())
        .map(|i| {
            let end = times[i] + Duration::from_secs(1);
            times[i..].iter().take_while(|t| **t < end).count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_on_one_postgres_state_keep_within_one_rate_limit_together() {
    let mock = MockApi::start(MockConfig {
        records: RECORDS,
        page_size: 10,
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new("budget_rate").await;
    sb.set("MOCK", mock.base_url());
    sb.set("API_TOKEN", TOKEN);
    let a = sb.write("a.yaml", &pipeline("budget_a", 10, ""));
    let b = sb.write("b.yaml", &pipeline("budget_b", 10, ""));
    let mut first = sb.spawn("a", &["run", a.to_str().unwrap(), "--once", "--plain"]);
    let mut second = sb.spawn("b", &["run", b.to_str().unwrap(), "--once", "--plain"]);
    let (code_a, code_b) = (
        sb.wait(&mut first, "a").await,
        sb.wait(&mut second, "b").await,
    );
    assert_eq!(code_a, Some(0), "{}", sb.logs("a"));
    assert_eq!(code_b, Some(0), "{}", sb.logs("b"));
    let pool = sb.pool().await;
    assert_exactly_once(&pool, "budget_a", "id", RECORDS as i64).await;
    assert_exactly_once(&pool, "budget_b", "id", RECORDS as i64).await;

    let log = mock.data_requests();
    let of = |reader: &str| -> Vec<SystemTime> {
        log.iter()
            .filter(|r| r.query_param("reader").as_deref() == Some(reader))
            .map(|r| r.at)
            .collect()
    };
    let (at_a, at_b) = (of("budget_a"), of("budget_b"));
    assert!(
        at_a.len() > 10 && at_b.len() > 10,
        "each process made more requests than the limit allows in a second: {} and {}",
        at_a.len(),
        at_b.len()
    );
    // The two read at the same time (else the test would prove nothing).
    let (first_a, last_a) = (at_a.iter().min().unwrap(), at_a.iter().max().unwrap());
    let (first_b, last_b) = (at_b.iter().min().unwrap(), at_b.iter().max().unwrap());
    assert!(
        first_a < last_b && first_b < last_a,
        "the two processes read the API at the same time"
    );
    assert!(
        most_in_a_second(at_a.clone()) <= 10 && most_in_a_second(at_b.clone()) <= 10,
        "each within the limit"
    );
    let together = most_in_a_second(log.iter().map(|r| r.at).collect());
    assert!(
        together <= 10,
        "the API saw {together} requests within one second from the two processes together, over its limit of 10"
    );

    // The budget is in the state store, keyed by host and a hash: no credential there.
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM rate_budgets")
        .fetch_all(&pool)
        .await
        .expect("the budgets table");
    assert_eq!(
        keys.len(),
        1,
        "one budget for one API and credentials: {keys:?}"
    );
    assert!(
        keys[0].starts_with(&format!("http://{}", mock.addr())) && !keys[0].contains(TOKEN),
        "{keys:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_retry_after_told_to_one_process_parks_the_other_too() {
    // The 6th data request gets a 429 whose Retry-After (30 s) is beyond max_retry_after.
    let mock = MockApi::start(MockConfig {
        records: RECORDS,
        page_size: 10,
        faults: vec![Fault::new(
            6,
            1,
            FaultKind::RateLimited {
                retry_after: RetryAfter::Seconds(30),
            },
        )],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new("budget_park").await;
    sb.set("MOCK", mock.base_url());
    sb.set("API_TOKEN", TOKEN);
    let extra = ", max_retry_after: 1s";
    let a = sb.write("a.yaml", &pipeline("park_a", 5, extra));
    let b = sb.write("b.yaml", &pipeline("park_b", 5, extra));
    let mut first = sb.spawn("a", &["run", a.to_str().unwrap(), "--once", "--plain"]);
    let mut second = sb.spawn("b", &["run", b.to_str().unwrap(), "--once", "--plain"]);
    let (code_a, code_b) = (
        sb.wait(&mut first, "a").await,
        sb.wait(&mut second, "b").await,
    );
    let logs = format!("{}\n{}", sb.logs("a"), sb.logs("b"));
    assert_eq!(
        (code_a, code_b),
        (Some(4), Some(4)),
        "both runs parked by the rate limit (exit 4)\n{logs}"
    );
    let log = mock.data_requests();
    let refused = log
        .iter()
        .find(|r| r.status == 429)
        .expect("the mock answered a 429");
    assert!(refused.retry_after_until.is_some());
    assert_eq!(
        log.len(),
        6,
        "no request after the 429, from either process (both parked until its Retry-After)\n{logs}"
    );
    let runs: Vec<(String, String, Option<i64>)> =
        sqlx::query_as("SELECT pipeline, status, resume_at FROM runs ORDER BY pipeline")
            .fetch_all(&sb.pool().await)
            .await
            .expect("the runs in the state store");
    assert_eq!(runs.len(), 2, "{runs:?}");
    for (_, status, resume_at) in &runs {
        assert_eq!(status, "rate_limited", "{runs:?}");
        assert!(resume_at.is_some(), "{runs:?}");
    }
}
