//! What the commands promise, kept: the run summary's hints find the pipeline's own state
//! store (`-f FILE`); `sluice runs` in a folder whose pipeline keeps its state elsewhere
//! says where it looked; a closed pipe (`| head`) ends a command quietly; a realtime
//! schedule runs back to back while there is data.

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

#[tokio::test]
async fn a_closed_pipe_ends_a_command_quietly() {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("schema")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("sluice starts");
    let mut first = [0u8; 16];
    child
        .stdout
        .take()
        .expect("stdout")
        .read_exact(&mut first)
        .expect("some output");
    // The reader went away (as `| head -c 16` does).
    let out = child.wait_with_output().expect("sluice ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_realtime_schedule_runs_back_to_back_while_there_is_data() {
    let sb = Sandbox::new("e2e_realtime").await;
    std::fs::create_dir_all(sb.path("in")).unwrap();
    sb.write("in/a.ndjson", "{\"id\": 1}\n{\"id\": 2}\n");
    sb.write(
        "rt.yaml",
        r#"
pipeline: rt
schedule: { realtime: { poll_interval: 1h } }
nodes:
  files: { type: file, path: in/*.ndjson, format: ndjson }
  db: { type: sqlite, inputs: [files], url: sqlite://out.db, table: items, mode: append }
"#,
    );
    let mut child = sb.spawn("rt", &["run", "rt.yaml", "--plain"]);
    // The first run found data: the second starts at once (not an hour later) and finds
    // nothing; then the process waits for its poll interval.
    e2e_common::poll(
        "a second run right after the first",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(100),
        || async {
            let out = sb.sluice(&["runs", "--json"]).await;
            let runs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).ok()?;
            (runs.len() >= 2).then_some(())
        },
        || sb.logs("rt"),
    )
    .await;
    // Idle now: it waits for its hour, not in a loop. Two seconds is ten handover gaps
    // (200 ms); a busy loop would have run more than two runs by then.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let out = sb.sluice(&["runs", "--json"]).await;
    let runs: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(
        runs.len(),
        2,
        "an idle realtime pipeline waits for its poll interval: {runs:#?}"
    );
    child.start_kill().unwrap();
    let _ = child.wait().await;
}

/// `sluice run --help` and docs/operations.md name the same exit codes.
#[test]
fn run_exit_codes_are_the_same_in_help_and_docs() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["run", "--help"])
        .output()
        .expect("sluice runs");
    let help = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let docs = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/operations.md"
    ))
    .expect("docs/operations.md");
    let docs = docs.split_whitespace().collect::<Vec<_>>().join(" ");
    let from = docs
        .find("Exit codes of `sluice run`:")
        .expect("the exit codes in the docs");
    let sentence = &docs[from..from + docs[from..].find(" usage error.").expect("their end")];
    for code in ["0", "1", "2", "3", "4", "75", "130"] {
        assert!(
            sentence.contains(&format!("`{code}`")),
            "{code} in the docs: {sentence}"
        );
        assert!(
            help.contains(&format!(" {code} ")) || help.contains(&format!(": {code} ")),
            "{code} in `sluice run --help`: {help}"
        );
    }
}
