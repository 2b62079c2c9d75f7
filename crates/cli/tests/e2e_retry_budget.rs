//! One retry budget per node: an HTTP source's `retry.max_attempts` is the number of
//! requests it makes for a page, not that number times the engine's own attempts.

mod e2e_common;

use e2e_common::Sandbox;
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig, MockHandle};

/// A mock API that answers every data request with 503.
async fn failing_mock() -> MockHandle {
    MockApi::start(MockConfig {
        records: 20,
        faults: vec![Fault::new(1, 0, FaultKind::ServerError { status: 503 })],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_3_makes_3_requests() {
    let mock = failing_mock().await;
    let mut sb = Sandbox::new("e2e_budget").await;
    sb.set("MOCK", mock.base_url());
    sb.write(
        "budget.yaml",
        r#"
pipeline: budget
nodes:
  api:
    type: http
    url: ${MOCK}/page/items
    records: { path: $.data.items }
    retry: { max_attempts: 3, initial_backoff: 10ms, max_backoff: 20ms }
  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: items
"#,
    );
    let plan = sb.sluice(&["plan", "budget.yaml"]).await;
    plan.expect_code(0);
    assert!(
        plan.stdout
            .contains("retry:    3 attempts per request (by the connector; the engine adds none)"),
        "{plan}"
    );

    let run = sb
        .sluice(&["run", "budget.yaml", "--once", "--plain"])
        .await;
    assert_ne!(run.code, Some(0), "{run}");
    assert!(
        run.stderr.contains("503") || run.stdout.contains("503"),
        "{run}"
    );
    let requests = mock.data_requests().len();
    assert_eq!(
        requests, 3,
        "max_attempts: 3 made {requests} requests\n{run}"
    );

    // `on_error: { dependency: fail }` is obeyed by the connector too: one request.
    mock.clear_log();
    let text = std::fs::read_to_string(sb.path("budget.yaml")).unwrap();
    sb.write(
        "budget.yaml",
        &text.replace(
            "    retry: {",
            "    on_error: { dependency: fail }\n    retry: {",
        ),
    );
    let run = sb
        .sluice(&["run", "budget.yaml", "--once", "--plain"])
        .await;
    assert_ne!(run.code, Some(0), "{run}");
    let requests = mock.data_requests().len();
    assert_eq!(
        requests, 1,
        "dependency: fail made {requests} requests\n{run}"
    );
    mock.shutdown().await;
}

/// A node's `breaker:` reaches the connector: opened after 2 failed requests for a minute,
/// it stops the source before its 5 attempts are spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_breaker_stops_requests_after_its_numbers() {
    let mock = failing_mock().await;
    let mut sb = Sandbox::new("e2e_breaker").await;
    sb.set("MOCK", mock.base_url());
    sb.write(
        "breaker.yaml",
        r#"
pipeline: breaker
nodes:
  api:
    type: http
    url: ${MOCK}/page/items
    records: { path: $.data.items }
    retry: { max_attempts: 5, initial_backoff: 10ms, max_backoff: 20ms, max_elapsed: 10s }
    breaker: { window: 60s, min_requests: 2, failure_ratio: 1.0, open_for: 1m }
  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: items
"#,
    );
    let run = sb
        .sluice(&["run", "breaker.yaml", "--once", "--plain"])
        .await;
    assert_ne!(run.code, Some(0), "{run}");
    assert!(
        run.stderr.contains("circuit breaker") || run.stdout.contains("circuit breaker"),
        "{run}"
    );
    let requests = mock.data_requests().len();
    assert_eq!(
        requests, 2,
        "the breaker opened after {requests} requests\n{run}"
    );
    mock.shutdown().await;
}
