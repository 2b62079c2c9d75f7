//! GitHub's primary rate limit through the `sluice` binary: a `403` with
//! `x-ratelimit-remaining: 0` and a reset further away than `max_retry_after` parks the
//! source. The run ends `rate_limited` (exit 4) with its resume time and the checkpoint of
//! the last acked page; the next run after the reset delivers the rest, exactly once. A
//! scheduled `sluice run` does not ask the API again before the reset.

mod e2e_common;

use e2e_common::{Sandbox, assert_exactly_once, count, poll};
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig, MockHandle, QuotaDialect};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const RECORDS: u64 = 250;

/// Pages of 50; the third request finds the quota used up for `reset_secs`.
async fn github_mock(reset_secs: u64) -> MockHandle {
    quota_mock(403, QuotaDialect::Github, reset_secs).await
}

async fn quota_mock(status: u16, dialect: QuotaDialect, reset_secs: u64) -> MockHandle {
    MockApi::start(MockConfig {
        records: RECORDS,
        page_size: 50,
        faults: vec![Fault::new(
            3,
            1,
            FaultKind::Quota {
                status,
                dialect,
                reset_secs,
            },
        )],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts")
}

fn pipeline(name: &str, schedule: &str) -> String {
    pipeline_with(name, schedule, "")
}

fn pipeline_with(name: &str, schedule: &str, extra: &str) -> String {
    format!(
        r#"
pipeline: {name}
{schedule}
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
    rate_limit: {{ max_retry_after: 1s }}
{extra}
  db:
    type: postgres
    inputs: [api]
    url: ${{PG_URL}}
    table: orders
    mode: append
"#
    )
}

/// The answers of the mock that told of the used-up quota.
fn quota_answers(mock: &MockHandle) -> usize {
    mock.data_requests()
        .iter()
        .filter(|r| r.status == 403)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_far_github_reset_parks_the_run_and_the_next_run_resumes_exactly_once() {
    let mock = github_mock(3).await;
    let mut sb = Sandbox::new("rl_park").await;
    sb.set("MOCK", mock.base_url());
    let file = sb.write("p.yaml", &pipeline("rl_park", ""));
    let file = file.to_str().unwrap().to_owned();
    let pool = sb.pool().await;

    let first = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    first.expect_code(4);
    assert!(
        first.stderr.contains("parked until") && first.stderr.contains("rate_limited"),
        "the summary says the run is parked and until when: {first}"
    );
    assert_eq!(
        mock.data_requests().len(),
        3,
        "no request after the one that told the reset"
    );
    assert_eq!(
        count(&pool, "orders").await,
        100,
        "the pages read before are delivered"
    );
    let runs = sb.runs().await;
    assert_eq!(runs[0]["status"], "rate_limited", "{runs:?}");
    let resume_at = runs[0]["resume_at"].as_i64().expect("a resume time");
    let reset = mock.data_requests()[2]
        .retry_after_until
        .expect("the mock told a reset");
    let reset_ms = reset.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
    assert!(
        resume_at >= reset_ms && resume_at < reset_ms + 1000,
        "the resume time is the reset: {resume_at} vs {reset_ms}"
    );
    let show = sb.run_show(runs[0]["id"].as_str().expect("a run id")).await;
    let api = e2e_common::node(&show, "api");
    assert_eq!(api["status"], "rate_limited", "{show}");
    assert_eq!(api["error_class"], "rate_limited", "{show}");
    assert_eq!(
        e2e_common::node(&show, "db")["status"],
        "succeeded",
        "{show}"
    );
    let listed = sb.sluice(&["runs"]).await;
    assert!(listed.stdout.contains("parked until"), "{listed}");

    // After the reset, the next run goes on from the third page.
    tokio::time::sleep(reset.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let second = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    second.expect_code(0);
    assert_exactly_once(&pool, "orders", "id", RECORDS as i64).await;
    let offsets: Vec<String> = mock.data_requests()[3..]
        .iter()
        .map(|r| r.query.clone())
        .collect();
    assert!(
        offsets.first().is_some_and(|q| q.contains("offset=100")),
        "the second run starts at the page that was refused: {offsets:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_run_waits_for_the_reset_instead_of_asking_again() {
    let mock = github_mock(3).await;
    let mut sb = Sandbox::new("rl_sched").await;
    sb.set("MOCK", mock.base_url());
    let file = sb.write(
        "p.yaml",
        &pipeline(
            "rl_sched",
            "schedule: { realtime: { poll_interval: 100ms } }",
        ),
    );
    let file = file.to_str().unwrap().to_owned();
    let pool = sb.pool().await;
    let mut child = sb.spawn("sched", &["run", &file, "--plain"]);
    poll(
        "every record delivered",
        Duration::from_secs(30),
        Duration::from_millis(200),
        || async { (count(&pool, "orders").await == RECORDS as i64).then_some(()) },
        || sb.logs("sched"),
    )
    .await;
    let _ = child.start_kill();
    let _ = child.wait().await;
    assert_eq!(
        quota_answers(&mock),
        1,
        "no request between the quota answer and its reset\n{}",
        sb.logs("sched")
    );
    assert!(
        sb.logs("sched").contains("the next run waits until"),
        "{}",
        sb.logs("sched")
    );
    assert_exactly_once(&pool, "orders", "id", RECORDS as i64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_200_whose_body_says_rate_limited_parks_the_run_through_the_pipeline_file() {
    let mock = quota_mock(200, QuotaDialect::Body, 3).await;
    let mut sb = Sandbox::new("rl_body").await;
    sb.set("MOCK", mock.base_url());
    let file = sb.write(
        "p.yaml",
        &pipeline_with(
            "rl_body",
            "",
            "    rate_limit_signal: { path: $.error.code, equals: RATE_LIMITED, reset: $.error.reset_at }",
        ),
    );
    let file = file.to_str().unwrap().to_owned();
    let pool = sb.pool().await;
    let first = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    first.expect_code(4);
    assert!(first.stderr.contains("parked until"), "{first}");
    assert_eq!(count(&pool, "orders").await, 100);
    let reset = mock.data_requests()[2]
        .retry_after_until
        .expect("the mock told a reset");
    tokio::time::sleep(reset.duration_since(SystemTime::now()).unwrap_or_default()).await;
    sb.sluice(&["run", &file, "--once", "--plain"])
        .await
        .expect_code(0);
    assert_exactly_once(&pool, "orders", "id", RECORDS as i64).await;
}
