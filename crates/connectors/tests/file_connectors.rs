//! The file source and sink on their own: chunks, checkpoints and resume, formats,
//! malformed lines, duplicate batches, a write interrupted mid-way.

use arrow::array::{Array, Int64Array};
use serde_json::json;
use sluice_connectors::file::{FileFormat, FileSink, FileSinkConfig, FileSource, FileSourceConfig};
use sluice_core::{Batch, ErrorClass, RunInfo, Sink, Source};
use std::path::Path;

fn ndjson(dir: &Path, name: &str, ids: std::ops::Range<i64>) {
    let text: String = ids
        .map(|i| format!("{{\"id\":{i},\"name\":\"n{i}\",\"nested\":{{\"x\":{i}}}}}\n"))
        .collect();
    std::fs::write(dir.join(name), text).unwrap();
}

async fn read_all(source: &mut FileSource) -> (Vec<Batch>, Option<serde_json::Value>) {
    let mut out = Vec::new();
    let mut cp = None;
    while let Some(b) = source.next_batch().await.unwrap() {
        cp = b.checkpoint.clone();
        out.push(b.batch);
    }
    (out, cp)
}

fn ids(batches: &[Batch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let col = b.records.column_by_name("id").unwrap();
            let col = col.as_any().downcast_ref::<Int64Array>().unwrap().clone();
            (0..col.len()).map(move |i| col.value(i))
        })
        .collect()
}

#[tokio::test]
async fn ndjson_in_chunks_resumes_after_its_checkpoint_and_skips_done_files() {
    let dir = tempfile::tempdir().unwrap();
    ndjson(dir.path(), "a.ndjson", 0..25);
    ndjson(dir.path(), "b.ndjson", 100..110);
    let mut config = FileSourceConfig::new(dir.path().join("*.ndjson"), FileFormat::Ndjson);
    config.max_rows = 10;

    // Read two batches, then "crash": a new source from the second checkpoint.
    let mut first = FileSource::new(config.clone(), "p", "n", None).unwrap();
    let b1 = first.next_batch().await.unwrap().unwrap();
    let b2 = first.next_batch().await.unwrap().unwrap();
    assert_eq!((b1.batch.num_rows(), b2.batch.num_rows()), (10, 10));
    let cp = b2.checkpoint.unwrap();
    assert_eq!(cp["line"], json!(20));
    let mut resumed = FileSource::new(config.clone(), "p", "n", Some(cp)).unwrap();
    let (rest, done) = read_all(&mut resumed).await;
    assert_eq!(ids(&rest), (20..25).chain(100..110).collect::<Vec<_>>());
    assert_eq!(
        rest.iter().map(Batch::num_rows).collect::<Vec<_>>(),
        vec![5, 10]
    );
    // Columns in the records' order; nested objects as structs.
    assert_eq!(
        rest[0]
            .records
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>(),
        vec!["id", "name", "nested"]
    );

    // The same chunk read again has the same id (a redelivery the sinks recognise).
    let mut again = FileSource::new(config.clone(), "p", "n", None).unwrap();
    let (all, _) = read_all(&mut again).await;
    assert_eq!(all[0].id, b1.batch.id);
    assert_eq!(all.len(), 4);

    // Every file done: nothing to read.
    let mut after = FileSource::new(config, "p", "n", done).unwrap();
    assert!(after.next_batch().await.unwrap().is_none());
}

#[tokio::test]
async fn csv_and_json_arrays_read_into_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("x.csv"), "id;name\n1;\"a;b\"\n2;c\n3;d\n").unwrap();
    let mut csv = FileSourceConfig::new(dir.path().join("x.csv"), FileFormat::Csv);
    csv.csv.delimiter = ';';
    csv.max_rows = 2;
    let (batches, cp) = read_all(&mut FileSource::new(csv, "p", "n", None).unwrap()).await;
    assert_eq!(ids(&batches), vec![1, 2, 3]);
    assert_eq!(batches.len(), 2);
    assert_eq!(
        cp.unwrap()["done"],
        json!([dir.path().join("x.csv").display().to_string()])
    );

    std::fs::write(
        dir.path().join("x.json"),
        "[\n  {\"id\": 1, \"name\": \"a]\\\"\"},\n  {\"id\": 2,\n   \"name\": \"b\"}\n]\n",
    )
    .unwrap();
    let json = FileSourceConfig::new(dir.path().join("x.json"), FileFormat::Json);
    let (batches, _) = read_all(&mut FileSource::new(json, "p", "n", None).unwrap()).await;
    assert_eq!(ids(&batches), vec![1, 2]);
}

#[tokio::test]
async fn a_malformed_line_and_a_missing_file_are_invalid_requests_naming_them() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.ndjson"),
        "{\"id\":1}\n\n{\"id\":2\n{\"id\":3}\n",
    )
    .unwrap();
    let config = FileSourceConfig::new(dir.path().join("bad.ndjson"), FileFormat::Ndjson);
    let err = FileSource::new(config, "p", "n", None)
        .unwrap()
        .next_batch()
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::InvalidRequest);
    assert!(err.message.contains("bad.ndjson line 3"), "{}", err.message);

    let config = FileSourceConfig::new(dir.path().join("nope.ndjson"), FileFormat::Ndjson);
    let err = FileSource::new(config, "p", "n", None)
        .unwrap()
        .next_batch()
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::InvalidRequest);
    assert!(err.message.contains("nope.ndjson"), "{}", err.message);
}

#[tokio::test]
async fn new_fields_fail_by_default_and_are_added_with_evolve() {
    let dir = tempfile::tempdir().unwrap();
    let text = "{\"id\":1}\n{\"id\":2,\"extra\":\"x\"}\n";
    std::fs::write(dir.path().join("d.ndjson"), text).unwrap();
    let mut config = FileSourceConfig::new(dir.path().join("d.ndjson"), FileFormat::Ndjson);
    config.infer_rows = 1;
    let err = FileSource::new(config.clone(), "p", "n", None)
        .unwrap()
        .next_batch()
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::ContractChanged, "{err}");
    assert!(err.message.contains("extra"), "{}", err.message);
    config.schema_policy = sluice_connectors::http::SchemaPolicy::Evolve;
    let (batches, _) = read_all(&mut FileSource::new(config, "p", "n", None).unwrap()).await;
    assert_eq!(batches[0].records.num_columns(), 2);
}

async fn batches(dir: &Path) -> Vec<Batch> {
    ndjson(dir, "in.ndjson", 0..30);
    let mut config = FileSourceConfig::new(dir.join("in.ndjson"), FileFormat::Ndjson);
    config.max_rows = 10;
    read_all(&mut FileSource::new(config, "p", "n", None).unwrap())
        .await
        .0
}

#[tokio::test]
async fn the_sink_writes_each_batch_once_across_runs_and_rolls_back_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let input = batches(dir.path()).await;
    for format in [FileFormat::Ndjson, FileFormat::Csv, FileFormat::Json] {
        let path = dir.path().join(format!("out/o.{}", format.as_str()));
        let config = FileSinkConfig::new(&path, format);
        let mut sink = FileSink::new(config.clone(), "p", "s").unwrap();
        assert!(!sink.write(&input[0]).await.unwrap().duplicate);
        assert!(sink.write(&input[0]).await.unwrap().duplicate);
        let after_one = std::fs::read(&path).unwrap();

        // A crash after the data went in and before the commit: the next run undoes it.
        let ledger = dir.path().join("out/.sluice-ledger");
        let mut text = std::fs::read_to_string(&ledger).unwrap();
        let start = after_one.len() - if format == FileFormat::Json { 3 } else { 0 };
        text.push_str(&format!(
            "{}\n",
            json!({"op": "begin", "target": path.display().to_string(), "key": "torn", "file": path.display().to_string(), "start": start, "suffix": if format == FileFormat::Json { "\n]\n" } else { "" }})
        ));
        std::fs::write(&ledger, text).unwrap();
        let mut garbage = after_one.clone();
        garbage.truncate(start);
        garbage.extend_from_slice(b",\n{\"id\": 99, \"half");
        std::fs::write(&path, garbage).unwrap();

        let mut next_run = FileSink::new(config, "p", "s").unwrap();
        assert!(next_run.write(&input[0]).await.unwrap().duplicate);
        assert!(!next_run.write(&input[1]).await.unwrap().duplicate);
        // A part of a batch already written whole is a duplicate too.
        let (left, _) = input[1].split().unwrap();
        assert!(next_run.write(&left).await.unwrap().duplicate);
        assert!(!next_run.write(&input[2]).await.unwrap().duplicate);
        let events = next_run.drain_events();
        assert!(
            events.iter().any(|e| e.message.contains("rolled back")),
            "{events:?}"
        );

        let text = std::fs::read_to_string(&path).unwrap();
        match format {
            FileFormat::Ndjson => assert_eq!(text.lines().count(), 30),
            FileFormat::Csv => {
                assert_eq!(text.lines().count(), 31);
                assert_eq!(text.lines().next(), Some("id,name,nested"));
            }
            FileFormat::Json => {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                let ids: Vec<i64> = v
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|r| r["id"].as_i64().unwrap())
                    .collect();
                assert_eq!(ids, (0..30).collect::<Vec<_>>());
            }
        }
    }
}

#[tokio::test]
async fn overwrite_starts_the_file_afresh_each_run() {
    let dir = tempfile::tempdir().unwrap();
    let input = batches(dir.path()).await;
    let path = dir.path().join("snap.ndjson");
    let mut config = FileSinkConfig::new(&path, FileFormat::Ndjson);
    config.mode = sluice_connectors::file::FileWriteMode::Overwrite;
    for _run in 0..2 {
        let mut sink = FileSink::new(config.clone(), "p", "s").unwrap();
        for b in &input {
            assert!(!sink.write(b).await.unwrap().duplicate);
        }
        assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 30);
    }
}

#[tokio::test]
async fn run_id_in_the_path_names_each_runs_file_and_the_ledger_spans_them() {
    let dir = tempfile::tempdir().unwrap();
    let input = batches(dir.path()).await;
    let template = dir.path().join("out/x-{{run_id}}.ndjson");
    let config = FileSinkConfig::new(&template, FileFormat::Ndjson);
    let mut sink = FileSink::new(config.clone(), "p", "s").unwrap();
    // Not told its run: it says so instead of writing a file named `{{run_id}}`.
    let err = sink.write(&input[0]).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Internal);
    sink.begin_run(&RunInfo::new("run1", "run1")).unwrap();
    for b in &input {
        assert!(!sink.write(b).await.unwrap().duplicate);
    }
    let first = dir.path().join("out/x-run1.ndjson");
    assert_eq!(std::fs::read_to_string(&first).unwrap().lines().count(), 30);
    // The next run writes its own file; batches delivered again are not written twice.
    let mut next = FileSink::new(config, "p", "s").unwrap();
    next.begin_run(&RunInfo::new("run2", "run2")).unwrap();
    for b in &input {
        assert!(next.write(b).await.unwrap().duplicate);
    }
    assert!(!dir.path().join("out/x-run2.ndjson").exists());
}

/// The ids in an NDJSON file, in order; panics on a line that is not a whole record.
fn ndjson_ids(path: &Path) -> Vec<i64> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{}: a torn line `{l}`: {e}", path.display()));
            v["id"].as_i64().unwrap()
        })
        .collect()
}

#[tokio::test]
async fn an_unfinished_append_in_an_earlier_runs_file_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let input = batches(dir.path()).await;
    let template = dir.path().join("out/x-{{run_id}}.ndjson");
    let config = FileSinkConfig::new(&template, FileFormat::Ndjson);
    let mut sink = FileSink::new(config.clone(), "p", "s").unwrap();
    sink.begin_run(&RunInfo::new("run1", "run1")).unwrap();
    sink.write(&input[0]).await.unwrap();
    // The process died appending batch 1 to run1's file: its `begin` is in the ledger,
    // half of its bytes in the file.
    let first = dir.path().join("out/x-run1.ndjson");
    let start = std::fs::metadata(&first).unwrap().len();
    let ledger = dir.path().join("out/.sluice-ledger");
    let mut text = std::fs::read_to_string(&ledger).unwrap();
    text.push_str(&format!(
        "{}\n",
        json!({"op": "begin", "target": template.display().to_string(), "key": input[1].ledger_key().as_str(), "file": first.display().to_string(), "start": start})
    ));
    std::fs::write(&ledger, text).unwrap();
    let mut torn = std::fs::read(&first).unwrap();
    torn.extend_from_slice(b"{\"id\":10,\"name\":\"n10\"}\n{\"id\":11,\"na");
    std::fs::write(&first, torn).unwrap();

    // The next run writes to its own file; run1's is repaired all the same.
    let mut next = FileSink::new(config.clone(), "p", "s").unwrap();
    next.begin_run(&RunInfo::new("run2", "run2")).unwrap();
    for b in &input {
        next.write(b).await.unwrap();
    }
    assert_eq!(ndjson_ids(&first), (0..10).collect::<Vec<_>>());
    let second = dir.path().join("out/x-run2.ndjson");
    assert_eq!(ndjson_ids(&second), (10..30).collect::<Vec<_>>());
    assert!(
        next.drain_events()
            .iter()
            .any(|e| e.message.contains("rolled back")),
    );
    // Done once: a third run finds nothing to roll back.
    let mut third = FileSink::new(config, "p", "s").unwrap();
    third.begin_run(&RunInfo::new("run3", "run3")).unwrap();
    assert!(third.write(&input[0]).await.unwrap().duplicate);
    assert!(third.drain_events().is_empty());
}

#[tokio::test]
async fn a_batch_split_differently_after_a_crash_is_not_written_twice() {
    let dir = tempfile::tempdir().unwrap();
    let input = batches(dir.path()).await;
    let path = dir.path().join("out/o.ndjson");
    let config = FileSinkConfig::new(&path, FileFormat::Ndjson);
    let mut sink = FileSink::new(config.clone(), "p", "s").unwrap();
    // Batch 0 written in halves, batch 1 only its first half (then the process died).
    let (left, right) = input[0].split().unwrap();
    sink.write(&left).await.unwrap();
    sink.write(&right).await.unwrap();
    sink.write(&input[1].split().unwrap().0).await.unwrap();
    sink.write(&input[2].slice(0, 3)).await.unwrap();

    // Delivered again: whole, or cut at other places.
    let mut next = FileSink::new(config, "p", "s").unwrap();
    assert!(next.write(&input[0]).await.unwrap().duplicate);
    assert!(next.write(&input[0].slice(2, 6)).await.unwrap().duplicate);
    assert_eq!(next.write(&input[1]).await.unwrap().written, 5);
    assert_eq!(next.write(&input[2].slice(0, 5)).await.unwrap().written, 2);
    assert_eq!(next.write(&input[2]).await.unwrap().written, 5);
    let mut ids = ndjson_ids(&path);
    ids.sort_unstable();
    assert_eq!(ids, (0..30).collect::<Vec<_>>());
}

#[tokio::test]
async fn overwrite_starts_the_file_afresh_once_per_load() {
    let dir = tempfile::tempdir().unwrap();
    let input = batches(dir.path()).await;
    let path = dir.path().join("snap.ndjson");
    let mut config = FileSinkConfig::new(&path, FileFormat::Ndjson);
    config.mode = sluice_connectors::file::FileWriteMode::Overwrite;
    let write = |run: RunInfo, batches: Vec<Batch>| {
        let config = config.clone();
        async move {
            let mut sink = FileSink::new(config, "p", "s").unwrap();
            sink.begin_run(&run).unwrap();
            for b in &batches {
                sink.write(b).await.unwrap();
            }
        }
    };
    write(RunInfo::new("r0", "r0"), vec![input[2].clone()]).await;
    write(RunInfo::new("r1", "r1"), vec![input[0].clone()]).await;
    assert_eq!(ndjson_ids(&path), (0..10).collect::<Vec<_>>());
    // The run failed; the next one resumes the load (batch 0 again, then batch 1).
    write(RunInfo::new("r2", "r1"), input[..2].to_vec()).await;
    assert_eq!(ndjson_ids(&path), (0..20).collect::<Vec<_>>());
    // A replay adds.
    write(RunInfo::replay("r3"), vec![input[2].slice(0, 1)]).await;
    assert_eq!(ndjson_ids(&path), (0..21).collect::<Vec<_>>());
    // The next load starts over.
    write(RunInfo::new("r4", "r4"), vec![input[1].clone()]).await;
    assert_eq!(ndjson_ids(&path), (10..20).collect::<Vec<_>>());
}
