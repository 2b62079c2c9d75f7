//! The commands Sluice prints are commands that work: the run summary's hints find the
//! pipeline's own state store (`-f FILE`), and `sluice runs` in a folder whose pipeline
//! keeps its state elsewhere says where it looked and how to point it there.

mod e2e_common;

use e2e_common::Sandbox;
use sluice_testkit::mock_api::{MockApi, MockConfig};

/// The line of `text` that holds `marker`, from the `sluice` word on.
fn hinted(text: &str, marker: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.contains(marker))
        .unwrap_or_else(|| panic!("no `{marker}` hint in:\n{text}"));
    let command = &line[line.find("sluice ").expect("a command") + "sluice ".len()..];
    command.split_whitespace().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_hints_work_with_a_state_store_of_the_pipelines_own() {
    let mock = MockApi::start(MockConfig {
        records: 120,
        malformed_records: vec![7],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new("e2e_hints").await;
    sb.set("MOCK", mock.base_url());
    sb.write(
        "hints.yaml",
        r#"
pipeline: hints
state: sqlite://elsewhere/state.db
nodes:
  api:
    type: http
    url: ${MOCK}/page/items
    pagination:
      page_number: { param: page, size_param: per_page, size: 50 }
    stop:
      has_more: $.meta.has_more
    records: { path: $.data.items }
    bad_records: quarantine
  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: items
    mode: append
"#,
    );
    let run = sb.sluice(&["run", "hints.yaml", "--once", "--plain"]).await;
    run.expect_code(3);

    // Each printed command, run as printed, finds the run and the kept record.
    let details = hinted(&run.stderr, "details:");
    let args: Vec<&str> = details.iter().map(String::as_str).collect();
    sb.sluice(&args).await.expect_code(0);
    let list = hinted(&run.stderr, "kept for replay:");
    let args: Vec<&str> = list.iter().map(String::as_str).collect();
    let out = sb.sluice(&args).await;
    out.expect_code(0);
    assert!(
        !out.stdout.contains("no failed batches") && out.stdout.contains("hints"),
        "the hinted `failed list` finds the kept record: {out}"
    );

    // Without -f, `sluice runs` says where it looked and how to look elsewhere.
    let runs = sb.sluice(&["runs"]).await;
    runs.expect_code(0);
    assert!(
        runs.stdout.contains("sqlite://.sluice/state.db")
            && runs.stdout.contains("-f PIPELINE.yaml"),
        "{runs}"
    );
    mock.shutdown().await;
}
