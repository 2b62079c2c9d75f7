//! An API that cannot be read for a while raises one alert through the `sluice` binary,
//! delivered to a webhook, and a `recovered` alert when it clears:
//!
//! - a quota used up (GitHub's `403` with `x-ratelimit-remaining: 0`) until a reset
//!   further away than `rate_limit.max_retry_after`: the source parks, the run ends
//!   `rate_limited`, and `quota_exhausted` goes out once, however many runs find it
//!   parked; the first run that reads again after the reset recovers it;
//! - a host that keeps failing, so that its circuit breaker stays open through its
//!   probes longer than `alerts.breaker_open_for`: one `breaker_open` while the run waits
//!   on it, and a `recovered` alert when a probe succeeds and the breaker closes. With a
//!   bound longer than the outage, no alert.

mod e2e_common;

use e2e_common::{Sandbox, Seen, alerts_of, assert_exactly_once, hook};
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig, QuotaDialect};
use std::time::SystemTime;

fn all(seen: &Seen) -> String {
    format!("{:#?}", seen.lock().unwrap())
}

/// A pipeline reading `${MOCK}` by offset (pages of 50) into PostgreSQL, alerting to
/// `${HOOK}`; `alerts_extra` goes under `alerts:`, `api_extra` under the source.
fn pipeline(name: &str, alerts_extra: &str, api_extra: &str) -> String {
    format!(
        r#"
pipeline: {name}
alerts:
  channels:
    hook: {{ webhook: {{ url: "${{HOOK}}", timeout: 2s }} }}
{alerts_extra}
nodes:
  api:
    type: http
    url: ${{MOCK}}/offset/items
    pagination:
      offset_limit: {{ limit: 50 }}
    stop:
      total: $.meta.total
    records: {{ path: $.data.items }}
    nested: json_text
{api_extra}
  db:
    type: postgres
    inputs: [api]
    url: ${{PG_URL}}
    table: orders
    mode: append
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_used_up_quota_alerts_once_while_parked_and_recovers_after_the_reset() {
    const RECORDS: u64 = 200;
    const RESET_SECS: u64 = 6;
    let mock = MockApi::start(MockConfig {
        records: RECORDS,
        page_size: 50,
        faults: vec![Fault::new(
            3,
            1,
            FaultKind::Quota {
                status: 403,
                dialect: QuotaDialect::Github,
                reset_secs: RESET_SECS,
            },
        )],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let (url, seen) = hook().await;
    let mut sb = Sandbox::new("quota_alert").await;
    sb.set("MOCK", mock.base_url());
    sb.set("HOOK", url);
    let file = sb.write(
        "p.yaml",
        &pipeline("quota_alert", "", "    rate_limit: { max_retry_after: 1s }"),
    );
    let file = file.to_str().unwrap().to_owned();

    let first = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    first.expect_code(4);
    let quota = alerts_of(&seen, "quota_exhausted");
    assert_eq!(quota.len(), 1, "{}", all(&seen));
    assert_eq!(quota[0]["node"], "api", "{quota:#?}");
    assert_eq!(quota[0]["class"], "rate_limited", "{quota:#?}");
    assert_eq!(quota[0]["severity"], "warning", "{quota:#?}");
    let text = quota[0]["message"].as_str().unwrap();
    assert!(text.contains("quota is used up until"), "{text}");
    assert!(
        quota[0]["next"]
            .as_str()
            .unwrap()
            .starts_with("sluice runs show "),
        "{quota:#?}"
    );

    // Parked again (or not started) before the reset: the same condition, no second alert.
    let reset = mock.data_requests()[2]
        .retry_after_until
        .expect("the mock told a reset");
    if SystemTime::now() < reset {
        let again = sb.sluice(&["run", &file, "--once", "--plain"]).await;
        assert_ne!(again.code, Some(0), "{again}");
    }
    assert_eq!(
        alerts_of(&seen, "quota_exhausted").len(),
        1,
        "{}",
        all(&seen)
    );
    assert!(alerts_of(&seen, "recovered").is_empty(), "{}", all(&seen));

    // After the reset the run reads on: a recovery, once.
    tokio::time::sleep(reset.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let last = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    last.expect_code(0);
    let pool = sb.pool().await;
    assert_exactly_once(&pool, "orders", "id", RECORDS as i64).await;
    let recovered = alerts_of(&seen, "recovered");
    assert_eq!(recovered.len(), 1, "{}", all(&seen));
    assert_eq!(recovered[0]["node"], "api");
    let text = recovered[0]["message"].as_str().unwrap();
    assert!(text.contains("quota had been used up for"), "{text}");
    assert_eq!(
        alerts_of(&seen, "quota_exhausted").len(),
        1,
        "{}",
        all(&seen)
    );

    // `sluice alerts` lists it under its kind.
    let listed = sb.sluice(&["alerts"]).await;
    assert!(listed.stdout.contains("quota_exhausted"), "{listed}");
    mock.shutdown().await;
}

/// A run against an API whose first `failing` requests answer 503: the breaker opens
/// after two failures and probes once a second until a probe succeeds. Returns the
/// alerts delivered.
async fn breaker_run(name: &str, breaker_open_for: &str, failing: u64) -> Seen {
    const RECORDS: u64 = 150;
    let mock = MockApi::start(MockConfig {
        records: RECORDS,
        page_size: 50,
        faults: vec![Fault::new(
            2,
            failing,
            FaultKind::ServerError { status: 503 },
        )],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let (url, seen) = hook().await;
    let mut sb = Sandbox::new(name).await;
    sb.set("MOCK", mock.base_url());
    sb.set("HOOK", url);
    let file = sb.write(
        "p.yaml",
        &pipeline(
            name,
            &format!("  breaker_open_for: {breaker_open_for}"),
            "    retry: { max_attempts: 50, initial_backoff: 50ms, max_backoff: 200ms }\n    breaker: { min_requests: 2, failure_ratio: 0.5, window: 1m, open_for: 1s }",
        ),
    );
    let out = sb
        .sluice(&["run", file.to_str().unwrap(), "--once", "--plain"])
        .await;
    out.expect_code(0);
    let pool = sb.pool().await;
    assert_exactly_once(&pool, "orders", "id", RECORDS as i64).await;
    let failed = mock
        .data_requests()
        .iter()
        .filter(|r| r.status == 503)
        .count() as u64;
    assert_eq!(failed, failing, "every fault was answered");
    mock.shutdown().await;
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_open_longer_than_its_bound_alerts_once_and_recovers_when_it_closes() {
    // Two failures open the breaker, each probe (one a second) fails until the tenth
    // request: open about 8 s, past a 3 s bound.
    let seen = breaker_run("breaker_alert", "3s", 10).await;
    let open = alerts_of(&seen, "breaker_open");
    assert_eq!(open.len(), 1, "{}", all(&seen));
    assert_eq!(open[0]["node"], "api", "{open:#?}");
    assert_eq!(open[0]["class"], "dependency", "{open:#?}");
    assert_eq!(open[0]["severity"], "critical", "{open:#?}");
    let text = open[0]["message"].as_str().unwrap();
    assert!(
        text.contains("circuit breaker for 127.0.0.1:") && text.contains("`breaker_open_for` (3s)"),
        "{text}"
    );
    let recovered = alerts_of(&seen, "recovered");
    assert_eq!(recovered.len(), 1, "{}", all(&seen));
    let text = recovered[0]["message"].as_str().unwrap();
    assert!(
        text.contains("circuit breaker for 127.0.0.1:") && text.contains("closed"),
        "{text}"
    );
    assert!(alerts_of(&seen, "run_failed").is_empty(), "{}", all(&seen));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_open_shorter_than_its_bound_raises_nothing() {
    let seen = breaker_run("breaker_quiet", "1h", 10).await;
    assert!(
        seen.lock().unwrap().is_empty(),
        "the breaker was open for less than `breaker_open_for`: {}",
        all(&seen)
    );
}
