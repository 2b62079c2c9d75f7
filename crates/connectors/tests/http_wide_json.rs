//! JSON that must not fail a page under `schema: infer`: numbers beyond `i64` and
//! `float64`, values whose shape differs between records and pages, declared `json`
//! columns. Each page is served as written by the mock API (`/fixed/items`).

mod http_common;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Decimal128Type, UInt64Type};
use http_common::{config, run, source};
use serde_json::json;
use sluice_core::ErrorClass;
use sluice_testkit::mock_api::{MockApi, MockConfig, MockHandle};

async fn serve(pages: &[&str]) -> MockHandle {
    MockApi::start(MockConfig {
        pages: pages.iter().map(|p| (*p).to_owned()).collect(),
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts")
}

fn cfg(m: &MockHandle, extra: serde_json::Value) -> sluice_connectors::http::HttpSourceConfig {
    let mut base = json!({
        "pagination": {"page_number": {"param": "page"}},
        "records": "root",
    });
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    config(m.url("/fixed/items"), base)
}

fn text(b: &RecordBatch, col: &str, row: usize) -> String {
    b.column_by_name(col)
        .unwrap()
        .as_string::<i32>()
        .value(row)
        .to_owned()
}

fn json_tagged(b: &RecordBatch, col: &str) -> bool {
    b.schema()
        .field_with_name(col)
        .unwrap()
        .metadata()
        .get("ARROW:extension:name")
        .is_some_and(|n| n == "arrow.json")
}

#[tokio::test]
async fn a_twenty_digit_id_is_a_uint64() {
    let m = serve(&[
        r#"[{"id": 12345678901234567890}, {"id": 7}]"#,
        r#"[{"id": 18446744073709551615}, {"id": 8}]"#,
    ])
    .await;
    let r = run(&mut source(cfg(&m, json!({})), None), false).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let ids: Vec<u64> = r
        .batches
        .iter()
        .flat_map(|b| {
            let a = b.batch.records.column_by_name("id").unwrap();
            assert_eq!(a.data_type(), &DataType::UInt64);
            let a = a.as_primitive::<UInt64Type>().clone();
            (0..a.len()).map(move |i| a.value(i))
        })
        .collect();
    assert_eq!(ids, vec![12_345_678_901_234_567_890, 7, u64::MAX, 8]);
}

#[tokio::test]
async fn a_long_decimal_amount_keeps_every_digit() {
    let m = serve(&[
        r#"[{"id": 1, "amount": 1234567890123456789012.345}, {"id": 2, "amount": 0.5}, {"id": 3, "amount": 12}]"#,
        r#"[{"id": 4, "amount": -7.25}]"#,
    ])
    .await;
    let r = run(&mut source(cfg(&m, json!({})), None), false).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let mut values = Vec::new();
    for b in &r.batches {
        let a = b.batch.records.column_by_name("amount").unwrap();
        assert_eq!(a.data_type(), &DataType::Decimal128(25, 3));
        let a = a.as_primitive::<Decimal128Type>();
        values.extend((0..a.len()).map(|i| a.value(i)));
    }
    assert_eq!(
        values,
        vec![1_234_567_890_123_456_789_012_345, 500, 12_000, -7_250]
    );
}

#[tokio::test]
async fn a_mixed_array_and_an_object_or_a_string_become_json_text() {
    let m = serve(&[
        r#"[{"id": 1, "tags": [1, 2, {"d": "x"}], "meta": {"a": 1}}, {"id": 2, "tags": [3], "meta": "plain"}]"#,
    ])
    .await;
    let r = run(&mut source(cfg(&m, json!({})), None), false).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let b = &r.batches[0].batch.records;
    assert!(json_tagged(b, "tags") && json_tagged(b, "meta"));
    assert_eq!(text(b, "tags", 0), r#"[1,2,{"d":"x"}]"#);
    assert_eq!(text(b, "tags", 1), "[3]");
    assert_eq!(text(b, "meta", 0), r#"{"a":1}"#);
    assert_eq!(text(b, "meta", 1), r#""plain""#);
}

#[tokio::test]
async fn an_object_that_becomes_a_string_on_a_later_page_is_contract_changed_and_json_text() {
    let m = serve(&[
        r#"[{"id": 1, "meta": {"a": 1}}]"#,
        r#"[{"id": 2, "meta": "plain"}, {"id": 3, "meta": {"b": [true]}}]"#,
    ])
    .await;
    let r = run(
        &mut source(cfg(&m, json!({"schema_policy": "warn"})), None),
        false,
    )
    .await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let ev = r
        .events
        .iter()
        .find(|e| e.message.contains("retyped `meta` (object → json)"))
        .unwrap_or_else(|| panic!("no retype event:\n{}", r.event_text()));
    assert_eq!(ev.class, Some(ErrorClass::ContractChanged));
    assert!(matches!(
        r.batches[0]
            .batch
            .records
            .schema()
            .field_with_name("meta")
            .unwrap()
            .data_type(),
        DataType::Struct(_)
    ));
    let b = &r.batches[1].batch.records;
    assert!(json_tagged(b, "meta"));
    assert_eq!(text(b, "meta", 0), r#""plain""#);
    assert_eq!(text(b, "meta", 1), r#"{"b":[true]}"#);
}

#[tokio::test]
async fn a_declared_json_column_is_tagged_json_text() {
    let m = serve(&[r#"[{"id": 1, "doc": "a"}, {"id": 2, "doc": {"k": [1, 1e400]}}]"#]).await;
    let schema = json!({"columns": [
        {"name": "id", "type": "int64", "nullable": false},
        {"name": "doc", "type": "json"},
    ]});
    let r = run(&mut source(cfg(&m, json!({"schema": schema})), None), false).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let b = &r.batches[0].batch.records;
    assert!(json_tagged(b, "doc"));
    assert_eq!(text(b, "doc", 0), r#""a""#);
    assert_eq!(text(b, "doc", 1), r#"{"k":[1,1e400]}"#);
}
