//! A property: any valid JSON records (deep, wide, mixed, unicode, huge numbers, empty
//! keys) go through the HTTP source (`schema: infer`, `schema_policy: evolve`,
//! `bad_records: quarantine`) and the SQLite sink without a panic and without a failed
//! page; every record lands in the table or is quarantined with a reason.

mod http_common;

use http_common::{config, run, source};
use proptest::prelude::*;
use serde_json::json;
use sluice_connectors::sql::{SchemaPolicy, SqlSinkConfig, build_sink};
use sluice_core::ErrorClass;
use sluice_testkit::mock_api::{MockApi, MockConfig};

/// A JSON value, written as text by [`J::write`] (numbers as literals of any length).
#[derive(Debug, Clone)]
enum J {
    Null,
    Bool(bool),
    Num(String),
    Str(String),
    Arr(Vec<J>),
    Obj(Vec<(String, J)>),
}

impl J {
    fn write(&self, out: &mut String) {
        match self {
            J::Null => out.push_str("null"),
            J::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            J::Num(n) => out.push_str(n),
            J::Str(s) => out.push_str(&serde_json::to_string(s).unwrap()),
            J::Arr(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            J::Obj(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
        }
    }
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| serde_json::Number::from_f64(f).unwrap().to_string()),
        "-?[1-9][0-9]{18,45}",
        "-?(0|[1-9][0-9]{0,25})\\.[0-9]{1,30}",
        "-?[1-9](\\.[0-9]{1,20})?[eE][+-]?[0-9]{1,3}",
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z]{1,3}",
        "[a-zA-Z_ ]{0,8}",
        "\\PC{0,6}",
    ]
}

fn value() -> impl Strategy<Value = J> {
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        number().prop_map(J::Num),
        "\\PC{0,12}".prop_map(J::Str),
        "[\u{0}-\u{1f}\"\\\\]{0,4}".prop_map(J::Str),
    ];
    leaf.prop_recursive(6, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(J::Arr),
            prop::collection::vec((key(), inner), 0..6).prop_map(J::Obj),
        ]
    })
}

/// A value nested `depth` levels deep (within serde_json's limit of 128).
fn deep() -> impl Strategy<Value = J> {
    (1usize..100, any::<bool>()).prop_map(|(depth, objects)| {
        let mut v = J::Num("1".into());
        for _ in 0..depth {
            v = if objects {
                J::Obj(vec![("d".into(), v)])
            } else {
                J::Arr(vec![v])
            };
        }
        v
    })
}

fn record() -> impl Strategy<Value = Vec<(String, J)>> {
    prop::collection::vec((key(), prop_oneof![4 => value(), 1 => deep()]), 0..12)
}

fn pages() -> impl Strategy<Value = Vec<Vec<Vec<(String, J)>>>> {
    prop::collection::vec(prop::collection::vec(record(), 1..6), 1..3)
}

async fn check(pages: Vec<Vec<Vec<(String, J)>>>) -> Result<(), TestCaseError> {
    let records: usize = pages.iter().map(Vec::len).sum();
    let texts: Vec<String> = pages
        .iter()
        .map(|p| {
            let mut t = String::new();
            J::Arr(p.iter().map(|r| J::Obj(r.clone())).collect()).write(&mut t);
            t
        })
        .collect();
    let m = MockApi::start(MockConfig {
        pages: texts.clone(),
        records: 1,
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let cfg = config(
        m.url("/fixed/items"),
        json!({
            "pagination": {"page_number": {"param": "page"}},
            "records": "root",
            "schema_policy": "evolve",
            "bad_records": "quarantine",
        }),
    );
    let r = run(&mut source(cfg, None), false).await;
    m.shutdown().await;
    prop_assert!(
        r.errors.is_empty(),
        "a page failed: {:?}\npages: {texts:?}",
        r.errors
    );

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.db").display());
    let mut sink_cfg = SqlSinkConfig::new(url, "t");
    sink_cfg.schema_policy = SchemaPolicy::Evolve;
    let mut sink = build_sink(sink_cfg).await.expect("the SQLite sink opens");
    let mut landed = 0;
    let mut quarantined: usize = r.quarantined.iter().map(|q| q.batch.num_rows()).sum();
    for q in &r.quarantined {
        prop_assert!(!q.error.to_string().is_empty());
    }
    for b in &r.batches {
        match sink.write(&b.batch).await {
            Ok(report) => {
                landed += report.written;
                for rej in &report.rejected {
                    prop_assert!(!rej.error.to_string().is_empty());
                    quarantined += rej.rows.num_rows();
                }
            }
            // A batch the target cannot hold as it is (a column named ``, records without
            // fields) fails the sink with `contract_changed` and what to do: the engine
            // keeps it for replay.
            Err(e) if e.class == ErrorClass::ContractChanged => {
                let text = e.to_string();
                prop_assert!(
                    text.contains("rename") || text.contains("transform"),
                    "{e}\npages: {texts:?}"
                );
                quarantined += b.batch.num_rows();
            }
            Err(e) => {
                return Err(TestCaseError::fail(format!(
                    "the sink failed a batch: {e}\npages: {texts:?}"
                )));
            }
        }
    }
    prop_assert_eq!(landed + quarantined, records, "pages: {:?}", texts);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_json_lands_or_is_quarantined_with_a_reason(pages in pages()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(check(pages))?;
    }
}

/// Records without fields make a batch without columns: the sink says so (it used to fail
/// with a syntax error, as `internal`, creating a table of no columns).
#[tokio::test]
async fn records_without_fields_are_contract_changed_in_the_sink() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("e.db").display());
    let mut sink = build_sink(SqlSinkConfig::new(url, "t")).await.unwrap();
    let records = arrow::array::RecordBatch::try_new_with_options(
        std::sync::Arc::new(arrow::datatypes::Schema::empty()),
        vec![],
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(2)),
    )
    .unwrap();
    let batch = sluice_core::Batch::new("p", "n", sluice_core::SourcePosition::page(1), records);
    let e = sink.write(&batch).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::ContractChanged, "{e}");
    assert!(e.to_string().contains("no columns"), "{e}");
}
