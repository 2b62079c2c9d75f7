//! One retry budget per node: an HTTP source's `retry.max_attempts` is the number of
//! requests it makes for a page, not that number times the engine's own attempts.

mod e2e_common;

use e2e_common::Sandbox;
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_3_makes_3_requests() {
    let mock = MockApi::start(MockConfig {
        records: 20,
        faults: vec![Fault::new(1, 0, FaultKind::ServerError { status: 503 })],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
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
