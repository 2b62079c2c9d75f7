//! End to end through the `sluice` binary: what a sink replaces, and what a crash leaves.
//!
//! - `mode: replace` (PostgreSQL) and `file_sink` `mode: overwrite` empty their target once
//!   per load: a run that fails part-way and the run that resumes it make one load (every
//!   record once); a replay of one quarantined record keeps the rest; the next full run
//!   starts over.
//! - A `file_sink` whose process dies in the middle of an append to a `{{run_id}}` file:
//!   the next run (writing another file) cuts the partial batch out of the old one, and
//!   every record is in the files exactly once.

mod e2e_common;

use e2e_common::{Sandbox, assert_exactly_once, count};
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig};
use sqlx::AssertSqlSafe;
use std::collections::BTreeMap;
use std::path::Path;

/// Every `id` in the NDJSON files of `dir` whose name starts with `prefix`, with how many
/// times it appears; panics on a line that is not a whole record.
fn ids_in(dir: &Path, prefix: &str) -> BTreeMap<i64, usize> {
    let mut ids = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return ids;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for line in text.lines() {
            let v: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}: a torn line `{line}`: {e}"));
            *ids.entry(v["id"].as_i64().expect("an id")).or_default() += 1;
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_and_overwrite_empty_their_target_once_per_load() {
    const RECORDS: u64 = 200;
    // Pages of 50: the third answer comes late (the sink writes the first pages
    // meanwhile), the fourth is a 403 that fails the run.
    let mock = MockApi::start(MockConfig {
        records: RECORDS,
        malformed_records: vec![10],
        faults: vec![
            Fault::new(3, 1, FaultKind::Slow { delay_ms: 2_000 }),
            Fault::new(4, 1, FaultKind::Forbidden),
        ],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let mut sb = Sandbox::new("e2e_replace").await;
    sb.set("MOCK", mock.base_url());
    let file = sb.write(
        "replace.yaml",
        r#"
pipeline: e2e_replace
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
    type: postgres
    inputs: [api]
    url: ${PG_URL}
    table: snapshot
    mode: replace
  snap:
    type: file_sink
    inputs: [api]
    path: out/snapshot.ndjson
    format: ndjson
    mode: overwrite
"#,
    );
    let file = file.to_str().unwrap();
    let pool = sb.pool().await;
    let out_dir = sb.path("out");
    let n = RECORDS as i64;

    // Run 1 fails at page 4, after the sinks emptied their targets and wrote a part.
    let first = sb.sluice(&["run", file, "--once", "--plain"]).await;
    assert_ne!(first.code, Some(0), "{first}");
    let written = count(&pool, "snapshot").await;
    assert!(
        written > 0 && written < n,
        "run 1 wrote {written} rows\n{first}"
    );
    assert_eq!(sb.runs().await[0]["status"], "failed");

    // Run 2 resumes the load: every record once (but the malformed one, kept for replay).
    mock.set_faults(Vec::new());
    let second = sb.sluice(&["run", file, "--once", "--plain"]).await;
    assert_eq!(second.code, Some(0), "{second}");
    assert_exactly_once(&pool, "snapshot", "id", n - 1).await;
    let ids = ids_in(&out_dir, "snapshot");
    assert_eq!(ids.len() as i64, n - 1, "{ids:?}");
    assert!(ids.values().all(|&c| c == 1), "{ids:?}");

    // A replay of the one quarantined record adds it and keeps the rest.
    mock.repair();
    let replay = sb.sluice(&["replay", "--pipeline", "e2e_replace"]).await;
    replay.expect_code(0);
    assert_exactly_once(&pool, "snapshot", "id", n).await;
    let ids = ids_in(&out_dir, "snapshot");
    assert_eq!(ids.len() as i64, n, "{ids:?}");
    assert!(ids.values().all(|&c| c == 1), "{ids:?}");

    // The next full run (the last one completed) is a new load: it starts over.
    sqlx::query(AssertSqlSafe(
        "INSERT INTO snapshot (id) VALUES (1000000)".to_owned(),
    ))
    .execute(&pool)
    .await
    .expect("a stale row");
    std::fs::write(out_dir.join("snapshot.ndjson"), "{\"id\":1000000}\n").unwrap();
    let third = sb.sluice(&["run", file, "--once", "--plain"]).await;
    third.expect_code(0);
    assert_exactly_once(&pool, "snapshot", "id", n).await;
    let ids = ids_in(&out_dir, "snapshot");
    assert_eq!(ids.len() as i64, n, "{ids:?}");
    assert!(!ids.contains_key(&1_000_000), "{ids:?}");
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_sink_killed_mid_append_leaves_no_partial_batch_behind() {
    let mut sb = Sandbox::new("e2e_torn").await;
    std::fs::create_dir_all(sb.path("in")).unwrap();
    let mut text = String::new();
    for id in 0..100 {
        text.push_str(&format!("{{\"id\":{id},\"name\":\"record {id}\"}}\n"));
    }
    sb.write("in/records.ndjson", &text);
    let file = sb.write(
        "torn.yaml",
        r#"
pipeline: e2e_torn
nodes:
  records:
    type: file
    path: in/records.ndjson
    format: ndjson
    batching: { max_rows: 10 }
  out:
    type: file_sink
    inputs: [records]
    path: out/records-{{run_id}}.ndjson
    format: ndjson
"#,
    );
    let file = file.to_str().unwrap().to_owned();
    // The third append of the first run writes half its bytes, then the process dies.
    sb.set("SLUICE_DEBUG_FILE_SINK_ABORT", "3");
    let crashed = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    assert_eq!(crashed.code, None, "killed by SIGABRT\n{crashed}");
    let out_dir = sb.path("out");
    let files = std::fs::read_dir(&out_dir).unwrap().count();
    assert!(files >= 1, "run 1 wrote a file");

    sb.set("SLUICE_DEBUG_FILE_SINK_ABORT", "0");
    let second = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    second.expect_code(0);
    let ids = ids_in(&out_dir, "records-");
    assert_eq!(
        ids.keys().copied().collect::<Vec<_>>(),
        (0..100).collect::<Vec<_>>()
    );
    assert!(
        ids.values().all(|&c| c == 1),
        "a record written twice: {ids:?}"
    );
}
