//! The HTTP source against the mock API, through the `Source` interface: every
//! pagination style, every auth style, incremental runs, schema drift, batching.

mod http_common;

use http_common::{config, expect_all, run, source};
use serde_json::json;
use sluice_core::{ErrorClass, Source, SourceBatch};
use sluice_testkit::mock_api::{
    Drift, DriftChange, Fault, FaultKind, KeyIn, MockApi, MockAuth, MockConfig,
};

fn mock(records: u64) -> MockConfig {
    MockConfig {
        records,
        page_size: 50,
        ..MockConfig::default()
    }
}

#[tokio::test]
async fn page_number_pagination_stops_on_has_more() {
    let m = MockApi::start(mock(230)).await.unwrap();
    let cfg = config(
        m.url("/page/items"),
        json!({
            "pagination": {"page_number": {"param": "page", "size_param": "per_page", "size": 50}},
            "records": {"path": "$.data.items"},
            "stop": {"has_more": "$.meta.has_more"},
        }),
    );
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 230);
    assert_eq!(m.data_requests().len(), 5, "has_more=false ends paging");
    assert_eq!(r.last_checkpoint().unwrap()["complete"], true);
    assert_eq!(
        m.data_requests()[2].query_param("page").as_deref(),
        Some("3")
    );
}

#[tokio::test]
async fn offset_limit_pagination_stops_at_the_total() {
    let m = MockApi::start(mock(250)).await.unwrap();
    let cfg = config(
        m.url("/offset/items"),
        json!({
            "pagination": {"offset_limit": {"limit": 100}},
            "records": {"path": "$.data.items"},
            "stop": {"total": "$.meta.total"},
        }),
    );
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 250);
    assert_eq!(m.data_requests().len(), 3);
}

#[tokio::test]
async fn cursor_pagination_follows_the_cursor() {
    let m = MockApi::start(mock(120)).await.unwrap();
    let cfg = config(
        m.url("/cursor/items"),
        json!({
            "pagination": {"cursor": {"path": "$.meta.next_cursor", "param": "cursor"}},
            "records": {"path": "$.data.items"},
        }),
    );
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 120);
    let reqs = m.data_requests();
    assert_eq!(reqs.len(), 3);
    assert!(reqs[0].query_param("cursor").is_none());
    assert!(reqs[1].query_param("cursor").is_some());
}

#[tokio::test]
async fn next_url_pagination_follows_the_url() {
    let m = MockApi::start(mock(101)).await.unwrap();
    let cfg = config(
        m.url("/next/items"),
        json!({
            "pagination": {"next_url": {"path": "$.links.next"}},
            "records": {"path": "$.data.items"},
        }),
    );
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 101);
    assert_eq!(m.data_requests().len(), 3);
}

#[tokio::test]
async fn link_header_pagination_with_root_arrays() {
    let m = MockApi::start(mock(90)).await.unwrap();
    let cfg = config(
        m.url("/link/items"),
        json!({
            "query": {"per_page": "40"},
            "pagination": "link_header",
            "records": "root",
        }),
    );
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 90);
    assert_eq!(m.data_requests().len(), 3);
}

#[tokio::test]
async fn ndjson_records_with_offsets_stop_at_an_empty_page() {
    let m = MockApi::start(mock(75)).await.unwrap();
    let cfg = config(
        m.url("/ndjson/items"),
        json!({"pagination": {"offset_limit": {"limit": 25}}, "records": "ndjson"}),
    );
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 75);
    assert_eq!(
        m.data_requests().len(),
        4,
        "three full pages and an empty one"
    );
    assert_eq!(
        r.last_checkpoint().unwrap()["complete"],
        true,
        "the empty page completes the run"
    );
}

#[tokio::test]
async fn post_with_a_templated_body() {
    let m = MockApi::start(mock(130)).await.unwrap();
    let cfg = config(
        m.url("/search"),
        json!({
            "method": "POST",
            "body": {"page": "{{page}}", "page_size": 60},
            "pagination": {"page_number": {}},
            "records": {"path": "$.data.items"},
            "stop": {"has_more": "$.meta.has_more"},
        }),
    );
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 130);
    let reqs = m.data_requests();
    assert_eq!(reqs.len(), 3);
    assert!(
        reqs.iter()
            .all(|q| q.method == "POST" && q.query.is_empty()),
        "the page goes in the body only"
    );
}

async fn auth_run(
    auth_mock: MockAuth,
    auth: serde_json::Value,
) -> (sluice_testkit::MockHandle, http_common::Run) {
    let m = MockApi::start(MockConfig {
        auth: auth_mock,
        ..mock(60)
    })
    .await
    .unwrap();
    let mut auth = auth;
    if let Some(o) = auth.pointer_mut("/oauth2_client_credentials/token_url") {
        *o = json!(m.url("/oauth/token"));
    }
    let cfg = config(
        m.url("/offset/items"),
        json!({
            "auth": auth,
            "pagination": {"offset_limit": {"limit": 25}},
            "records": {"path": "$.data.items"},
        }),
    );
    let r = run(&mut source(cfg, None), false).await;
    (m, r)
}

#[tokio::test]
async fn basic_bearer_api_key_and_hmac_auth() {
    let (_m, r) = auth_run(
        MockAuth::Basic {
            username: "u".into(),
            password: "p4ss".into(),
        },
        json!({"basic": {"username": "u", "password": "p4ss"}}),
    )
    .await;
    expect_all(&r, 60);
    let (_m, r) = auth_run(
        MockAuth::Bearer {
            token: "t0k".into(),
        },
        json!({"bearer": {"token": "t0k"}}),
    )
    .await;
    expect_all(&r, 60);
    let (_m, r) = auth_run(
        MockAuth::ApiKey {
            name: "X-Api-Key".into(),
            value: "k3y".into(),
            location: KeyIn::Header,
        },
        json!({"api_key": {"name": "X-Api-Key", "value": "k3y"}}),
    )
    .await;
    expect_all(&r, 60);
    let (m, r) = auth_run(
        MockAuth::ApiKey {
            name: "api_key".into(),
            value: "k3y".into(),
            location: KeyIn::Query,
        },
        json!({"api_key": {"name": "api_key", "value": "k3y", "in": "query"}}),
    )
    .await;
    expect_all(&r, 60);
    assert_eq!(
        m.data_requests()[0].query_param("api_key").as_deref(),
        Some("k3y")
    );
    let (_m, r) = auth_run(
        MockAuth::Hmac {
            key: "s1gn".into(),
            signature_header: "X-Signature".into(),
            timestamp_header: "X-Timestamp".into(),
            max_skew_secs: 300,
        },
        json!({"hmac": {"key": "s1gn"}}),
    )
    .await;
    expect_all(&r, 60);
}

#[tokio::test]
async fn wrong_credentials_fail_as_auth_without_leaking_them() {
    let (m, r) = auth_run(
        MockAuth::ApiKey {
            name: "api_key".into(),
            value: "right".into(),
            location: KeyIn::Query,
        },
        json!({"api_key": {"name": "api_key", "value": "wrong-key-123", "in": "query"}}),
    )
    .await;
    let e = &r.errors[0];
    assert_eq!(e.class, ErrorClass::Auth);
    let ev = e.evidence.as_deref().unwrap();
    assert!(ev.contains("401") && ev.contains("api_key=***"), "{ev}");
    assert!(!format!("{e} {ev} {:?}", r.events).contains("wrong-key-123"));
    assert_eq!(
        m.data_requests().len(),
        1,
        "a 401 without a refreshable token is not retried"
    );

    let (_m, r) = auth_run(
        MockAuth::Hmac {
            key: "right".into(),
            signature_header: "X-Signature".into(),
            timestamp_header: "X-Timestamp".into(),
            max_skew_secs: 300,
        },
        json!({"hmac": {"key": "wrong"}}),
    )
    .await;
    assert_eq!(r.errors[0].class, ErrorClass::Auth);
    assert!(
        r.errors[0].message.contains("clock"),
        "{}",
        r.errors[0].message
    );
}

#[tokio::test]
async fn oauth2_token_is_cached_and_refreshed_once_when_it_expires_mid_run() {
    let m = MockApi::start(MockConfig {
        auth: MockAuth::Oauth2 {
            client_id: "sluice".into(),
            client_secret: "cl13nt".into(),
            token_ttl_secs: 3600,
        },
        faults: vec![Fault::new(3, 1, FaultKind::ExpireTokens)],
        ..mock(150)
    })
    .await
    .unwrap();
    let cfg = config(
        m.url("/offset/items"),
        json!({
            "auth": {"oauth2_client_credentials": {"token_url": m.url("/oauth/token"), "client_id": "sluice", "client_secret": "cl13nt", "credentials_in": "body"}},
            "pagination": {"offset_limit": {"limit": 50}},
            "records": {"path": "$.data.items"},
        }),
    );
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 150);
    assert_eq!(
        m.tokens_issued(),
        2,
        "one token, then one refresh after the 401"
    );
    let statuses: Vec<u16> = m.data_requests().iter().map(|q| q.status).collect();
    assert_eq!(statuses, vec![200, 200, 401, 200, 200]);
    let text = r.event_text();
    assert!(text.contains("refused the access token"), "{text}");
    assert!(!text.contains("tok-"), "tokens never reach events: {text}");

    // A client secret the token endpoint refuses is an auth failure.
    let mut bad = config(
        m.url("/offset/items"),
        json!({
            "auth": {"oauth2_client_credentials": {"token_url": m.url("/oauth/token"), "client_id": "sluice", "client_secret": "nope"}},
            "records": {"path": "$.data.items"},
        }),
    );
    bad.retry.max_attempts = 1;
    let r = run(&mut source(bad, None), false).await;
    assert_eq!(r.errors[0].class, ErrorClass::Auth);
    assert!(
        r.errors[0].message.contains("client_secret"),
        "{}",
        r.errors[0].message
    );
}

#[tokio::test]
async fn incremental_runs_read_only_changed_records() {
    let m = MockApi::start(mock(120)).await.unwrap();
    let cfg = config(
        m.url("/offset/items"),
        json!({
            "pagination": {"offset_limit": {"limit": 50}},
            "records": {"path": "$.data.items"},
            "incremental": {"field": "updated_at", "param": "updated_since"},
        }),
    );
    let first = run(&mut source(cfg.clone(), None), false).await;
    expect_all(&first, 120);
    assert!(
        m.data_requests()[0].query_param("updated_since").is_none(),
        "the first run reads all"
    );
    let cp = first.last_checkpoint().unwrap();
    assert_eq!(cp["complete"], true);
    let wm = cp["watermark"].as_str().unwrap().to_owned();
    let max = (1..=120)
        .map(|i| {
            m.record(i).unwrap()["updated_at"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .max()
        .unwrap();
    assert_eq!(wm, max);

    m.touch(&[5, 77, 118]);
    m.clear_log();
    let second = run(&mut source(cfg.clone(), Some(cp)), false).await;
    assert_eq!(second.ids(), vec![5, 77, 118]);
    assert_eq!(m.data_requests()[0].query_param("updated_since"), Some(wm));
    let cp2 = second.last_checkpoint().unwrap();
    assert!(cp2["watermark"].as_str().unwrap() > max.as_str());

    // Nothing changed: no batch, so the stored checkpoint stays as it is.
    let third = run(&mut source(cfg.clone(), Some(cp2.clone())), false).await;
    assert!(third.batches.is_empty());

    // A lookback re-reads a window behind the watermark.
    let mut lb = cfg;
    lb.incremental.as_mut().unwrap().lookback = Some(std::time::Duration::from_secs(120));
    m.clear_log();
    let fourth = run(&mut source(lb, Some(cp2)), false).await;
    assert_eq!(
        fourth.ids(),
        vec![5, 77, 118],
        "the touched records are within 2 minutes"
    );
    let sent = m.data_requests()[0].query_param("updated_since").unwrap();
    assert!(sent < cp_str(&fourth), "sent {sent}");
}

fn cp_str(r: &http_common::Run) -> String {
    r.last_checkpoint().unwrap()["watermark"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_run_cut_short_resumes_from_its_checkpoint() {
    let m = MockApi::start(mock(200)).await.unwrap();
    let mut cfg = config(
        m.url("/page/items"),
        json!({
            "pagination": {"page_number": {"size_param": "per_page", "size": 50}},
            "records": {"path": "$.data.items"},
            "stop": {"has_more": "$.meta.has_more"},
        }),
    );
    cfg.max_pages = 2;
    let first = run(&mut source(cfg.clone(), None), false).await;
    assert_eq!(first.ids(), (1..=100).collect::<Vec<_>>());
    let cp = first.last_checkpoint().unwrap();
    assert_eq!(cp["complete"], false);
    assert!(first.event_text().contains("max_pages"));
    let second = run(&mut source(cfg, Some(cp)), false).await;
    assert_eq!(second.ids(), (101..=200).collect::<Vec<_>>());
    assert_eq!(second.last_checkpoint().unwrap()["complete"], true);
}

async fn drift_run(change: DriftChange, policy: &str) -> http_common::Run {
    let m = MockApi::start(MockConfig {
        drift: Some(Drift {
            from_id: 101,
            change,
        }),
        ..mock(200)
    })
    .await
    .unwrap();
    let cfg = config(
        m.url("/offset/items"),
        json!({
            "pagination": {"offset_limit": {"limit": 50}},
            "records": {"path": "$.data.items"},
            "schema_policy": policy,
        }),
    );
    run(&mut source(cfg, None), true).await
}

#[tokio::test]
async fn schema_drift_fails_by_default() {
    let r = drift_run(DriftChange::Retype, "fail").await;
    assert_eq!(r.ids(), (1..=100).collect::<Vec<_>>());
    assert_eq!(r.errors.len(), 50, "the source stays failed");
    let e = &r.errors[0];
    assert_eq!(e.class, ErrorClass::ContractChanged);
    assert!(
        e.message.contains("retyped `amount` (float64 → string)"),
        "{}",
        e.message
    );
    assert!(e.evidence.as_deref().unwrap().contains("first record"));
}

#[tokio::test]
async fn schema_drift_quarantines_pages_and_goes_on() {
    let r = drift_run(DriftChange::Rename, "quarantine").await;
    assert_eq!(r.ids(), (1..=100).collect::<Vec<_>>());
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.quarantined.len(), 2, "pages 3 and 4 quarantined");
    for q in &r.quarantined {
        assert_eq!(q.error.class, ErrorClass::ContractChanged);
        assert_eq!(q.batch.num_rows(), 50);
        assert_eq!(q.reread["records"].as_array().unwrap().len(), 50);
    }
    let e = &r.quarantined[0].error;
    assert!(
        e.message.contains("added `state`") && e.message.contains("removed `status`"),
        "{}",
        e.message
    );
}

/// Malformed records: the page's good records are delivered, the bad ones handed over
/// with where to read them again; once the API serves them well, `reread` returns
/// exactly them, and while it does not, it fails.
#[tokio::test]
async fn malformed_records_are_quarantined_and_read_again() {
    let m = MockApi::start(MockConfig {
        malformed_records: vec![7, 130],
        ..mock(200)
    })
    .await
    .unwrap();
    let cfg = config(
        m.url("/offset/items"),
        json!({
            "pagination": {"offset_limit": {"limit": 50}},
            "records": {"path": "$.data.items"},
            "bad_records": "quarantine",
        }),
    );
    let r = run(&mut source(cfg.clone(), None), false).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    let expected: Vec<i64> = (1..=200).filter(|&i| i != 7 && i != 130).collect();
    assert_eq!(r.ids(), expected);
    assert_eq!(r.quarantined.len(), 2);
    let q = &r.quarantined[1];
    assert_eq!(q.error.class, ErrorClass::InvalidRequest);
    assert_eq!(
        q.reread["records"],
        json!([29]),
        "record 130 is 30th of page 3"
    );
    assert!(format!("{:?}", q.batch.records).contains("corrupted record 130"));

    // Still broken upstream: reading again fails, with the same class.
    let e = source(cfg.clone(), None)
        .reread(&q.reread)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::InvalidRequest);

    m.repair();
    let mut again = Vec::new();
    for q in &r.quarantined {
        for b in source(cfg.clone(), None).reread(&q.reread).await.unwrap() {
            again.extend(http_common::ids(&SourceBatch {
                batch: b,
                checkpoint: None,
            }));
        }
    }
    assert_eq!(again, vec![7, 130]);
}

#[tokio::test]
async fn schema_drift_evolves_or_warns() {
    for (policy, class) in [
        ("evolve", None),
        ("warn", Some(ErrorClass::ContractChanged)),
    ] {
        let r = drift_run(DriftChange::Add, policy).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.ids().len(), 200);
        let last = r.batches.last().unwrap();
        assert!(
            last.batch
                .records
                .schema()
                .field_with_name("priority")
                .is_ok()
        );
        let first = &r.batches[0];
        assert!(
            first
                .batch
                .records
                .schema()
                .field_with_name("priority")
                .is_err()
        );
        let ev: Vec<_> = r
            .events
            .iter()
            .filter(|e| e.message.contains("schema evolved"))
            .collect();
        assert_eq!(ev.len(), 1, "{}", r.event_text());
        assert_eq!(ev[0].class, class);
        // Only `warn` asks the engine for a `schema_drift` alert.
        assert_eq!(ev[0].drift_warned, policy == "warn");
    }
}

#[tokio::test]
async fn an_oversized_page_becomes_several_batches_of_one_page() {
    let m = MockApi::start(MockConfig {
        page_size: 1000,
        ..mock(450)
    })
    .await
    .unwrap();
    let mut cfg = config(
        m.url("/page/items"),
        json!({"records": {"path": "$.data.items"}}),
    );
    cfg.batching.max_rows = 100;
    let r = run(&mut source(cfg.clone(), None), false).await;
    expect_all(&r, 450);
    let sizes: Vec<usize> = r.batches.iter().map(|b| b.batch.num_rows()).collect();
    assert_eq!(sizes, vec![100, 100, 100, 100, 50]);
    let parent = r.batches[0].batch.part.as_ref().unwrap().parent.clone();
    assert!(
        r.batches
            .iter()
            .all(|b| b.batch.part.as_ref().unwrap().parent == parent)
    );
    let keys: std::collections::HashSet<_> =
        r.batches.iter().map(|b| b.batch.ledger_key()).collect();
    assert_eq!(keys.len(), 5);
    assert_eq!(r.batches[0].checkpoint.as_ref().unwrap()["complete"], false);
    assert_eq!(r.last_checkpoint().unwrap()["complete"], true);

    // Bytes limit too: records are 300–600 bytes, so 16 KiB holds a few dozen.
    cfg.batching.max_rows = 10_000;
    cfg.batching.max_bytes = 16 * 1024;
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 450);
    assert!(
        r.batches.len() >= 8 && r.batches.iter().all(|b| b.batch.num_rows() <= 60),
        "{}",
        r.batches.len()
    );

    // The same page read twice gives the same batch ids; a changed page does not.
    let again = run(
        &mut source(
            config(
                m.url("/page/items"),
                json!({"records": {"path": "$.data.items"}}),
            ),
            None,
        ),
        false,
    )
    .await;
    let once = run(
        &mut source(
            config(
                m.url("/page/items"),
                json!({"records": {"path": "$.data.items"}}),
            ),
            None,
        ),
        false,
    )
    .await;
    assert_eq!(again.batches[0].batch.id, once.batches[0].batch.id);
    m.touch(&[3]);
    let changed = run(
        &mut source(
            config(
                m.url("/page/items"),
                json!({"records": {"path": "$.data.items"}}),
            ),
            None,
        ),
        false,
    )
    .await;
    assert_ne!(again.batches[0].batch.id, changed.batches[0].batch.id);
}

#[tokio::test]
async fn malformed_records_fail_the_page_or_are_left_out_with_an_event() {
    let m = MockApi::start(MockConfig {
        malformed_records: vec![7, 60],
        ..mock(100)
    })
    .await
    .unwrap();
    let base =
        json!({"pagination": {"offset_limit": {"limit": 50}}, "records": {"path": "$.data.items"}});
    let r = run(
        &mut source(config(m.url("/offset/items"), base.clone()), None),
        true,
    )
    .await;
    assert_eq!(r.errors.len(), 2);
    assert!(
        r.errors
            .iter()
            .all(|e| e.class == ErrorClass::InvalidRequest)
    );
    assert!(
        r.errors[0]
            .evidence
            .as_deref()
            .unwrap()
            .contains("corrupted record 7")
    );
    assert!(r.ids().is_empty());

    let mut skip = base;
    skip["bad_records"] = json!("skip");
    let r = run(
        &mut source(config(m.url("/offset/items"), skip), None),
        false,
    )
    .await;
    assert!(r.errors.is_empty());
    assert_eq!(r.ids().len(), 98);
    let bad: Vec<_> = r
        .events
        .iter()
        .filter(|e| e.class == Some(ErrorClass::InvalidRequest))
        .collect();
    assert_eq!(bad.len(), 2, "{}", r.event_text());
}

#[tokio::test]
async fn declared_schema_and_json_text_columns() {
    let m = MockApi::start(mock(30)).await.unwrap();
    let cfg = config(
        m.url("/page/items"),
        json!({
            "records": {"path": "$.data.items"},
            "schema": {"columns": [
                {"name": "id", "type": "int64", "nullable": false},
                {"name": "updated_at", "type": "timestamp"},
                {"name": "amount", "type": "float64"},
                {"name": "customer", "type": "json"},
            ]},
        }),
    );
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 30);
    let schema = r.batches[0].batch.records.schema();
    assert_eq!(schema.fields().len(), 4);
    assert!(matches!(
        schema.field(1).data_type(),
        arrow::datatypes::DataType::Timestamp(_, _)
    ));

    let cfg = config(
        m.url("/page/items"),
        json!({"records": {"path": "$.data.items"}, "nested": "json_text"}),
    );
    let r = run(&mut source(cfg, None), false).await;
    let schema = r.batches[0].batch.records.schema();
    assert_eq!(
        schema.field_with_name("items").unwrap().data_type(),
        &arrow::datatypes::DataType::Utf8
    );
}

#[tokio::test]
async fn configs_are_validated_with_every_problem_named() {
    let err = sluice_connectors::http::HttpSourceConfig::from_spec(json!({
        "url": "ftp://x/{{page}}",
        "records": {"path": "data["},
        "max_pages": 0,
        "pagination": {"page_number": {"param": "page"}},
    }))
    .unwrap_err();
    // Values that cannot be read are all named; the checks across fields (`max_pages`)
    // come once the fields read.
    assert_eq!(err.errors().count(), 2, "{:#?}", err.diagnostics());
    let zero = sluice_connectors::http::HttpSourceConfig::from_spec(json!({
        "url": "https://x/{{page}}",
        "max_pages": 0,
        "pagination": {"page_number": {"param": "page"}},
    }))
    .unwrap_err();
    assert!(
        zero.errors().any(|d| d.message.contains("max_pages")),
        "{:#?}",
        zero.diagnostics()
    );
    let unknown = sluice_connectors::http::HttpSourceConfig::from_spec(
        json!({"url": "http://x", "paginaton": "none"}),
    )
    .unwrap_err();
    assert!(
        unknown
            .errors()
            .any(|d| d.message.contains("did you mean `pagination`")),
        "{:#?}",
        unknown.diagnostics()
    );
    let mut s = source(
        config(
            "http://127.0.0.1:9/".into(),
            json!({"retry": {"max_attempts": 1, "initial_backoff": "1ms", "max_backoff": "1ms"}}),
        ),
        None,
    );
    let e = s.next_batch().await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Network);
    assert!(
        e.message.contains("could not connect to 127.0.0.1:9"),
        "{}",
        e.message
    );
}

/// `prefetch: true` sends the next page's request while the engine takes the current
/// page's batches; `prefetch: false` sends none until the next read.
#[tokio::test]
async fn prefetch_asks_for_the_next_page_ahead_and_false_turns_it_off() {
    for prefetch in [true, false] {
        let m = MockApi::start(MockConfig {
            records: 50,
            page_size: 10,
            ..MockConfig::default()
        })
        .await
        .unwrap();
        let cfg = config(
            m.url("/page/items"),
            json!({
                "pagination": {"page_number": {"param": "page", "size_param": "per_page", "size": 10}},
                "records": {"path": "$.data.items"},
                "prefetch": prefetch,
            }),
        );
        let mut src = source(cfg, None);
        // The first batch: page 1, handed over once page 2 says page 1 was not the last.
        let first = src.next_batch().await.unwrap().expect("a batch");
        assert_eq!(first.batch.num_rows(), 10);
        let expected = if prefetch { 3 } else { 2 };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while m.data_requests().len() < expected && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        if !prefetch {
            // Room for a request sent ahead by mistake to reach the mock.
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
        assert_eq!(m.data_requests().len(), expected, "prefetch: {prefetch}");
        // Either way every record arrives once.
        let rest = run(&mut src, false).await;
        assert_eq!(
            10 + rest
                .batches
                .iter()
                .map(|b| b.batch.num_rows())
                .sum::<usize>(),
            50
        );
        m.shutdown().await;
    }
}
