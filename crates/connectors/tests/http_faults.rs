//! The HTTP source against the mock API's injected faults: each failure class handled by
//! rule, asserted from the mock's request log rather than from wall time.

mod http_common;

use http_common::{config, expect_all, run, source};
use serde_json::json;
use sluice_connectors::http::{BreakerRegistry, HttpSource, HttpSourceContext};
use sluice_core::ErrorClass;
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig, MockHandle, RetryAfter};
use std::sync::Arc;
use std::time::Duration;

async fn mock(records: u64, faults: Vec<Fault>) -> MockHandle {
    MockApi::start(MockConfig {
        records,
        page_size: 50,
        faults,
        ..MockConfig::default()
    })
    .await
    .unwrap()
}

fn offset_cfg(m: &MockHandle) -> sluice_connectors::http::HttpSourceConfig {
    config(
        m.url("/offset/items"),
        json!({"pagination": {"offset_limit": {"limit": 50}}, "records": {"path": "$.data.items"}, "stop": {"total": "$.meta.total"}}),
    )
}

/// Every request after a 429 came no earlier than its `Retry-After` allowed.
fn assert_retry_after_honoured(m: &MockHandle) {
    let log = m.data_requests();
    let mut checked = 0;
    for (i, r) in log.iter().enumerate() {
        if let Some(until) = r.retry_after_until {
            for later in &log[i + 1..] {
                assert!(
                    later.at >= until,
                    "request {} came {:?} before Retry-After allowed",
                    later.seq,
                    until.duration_since(later.at).unwrap_or_default()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "the mock sent no 429");
}

#[tokio::test]
async fn retry_after_in_seconds_is_honoured() {
    let m = mock(
        150,
        vec![Fault::new(
            2,
            1,
            FaultKind::RateLimited {
                retry_after: RetryAfter::Seconds(1),
            },
        )],
    )
    .await;
    let r = run(&mut source(offset_cfg(&m), None), false).await;
    expect_all(&r, 150);
    assert_retry_after_honoured(&m);
    let statuses: Vec<u16> = m.data_requests().iter().map(|q| q.status).collect();
    assert_eq!(statuses, vec![200, 429, 200, 200]);
    let text = r.event_text();
    assert!(
        text.contains("waited 1s as Retry-After asked") && text.contains("slowed to"),
        "{text}"
    );
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let m = mock(
        100,
        vec![Fault::new(
            1,
            1,
            FaultKind::RateLimited {
                retry_after: RetryAfter::HttpDate(1),
            },
        )],
    )
    .await;
    let r = run(&mut source(offset_cfg(&m), None), false).await;
    expect_all(&r, 100);
    assert_retry_after_honoured(&m);
    assert!(
        r.events
            .iter()
            .any(|e| e.class == Some(ErrorClass::RateLimited))
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_retry_budget_fails_as_rate_limited_with_the_wait() {
    let m = mock(
        100,
        vec![Fault::new(
            1,
            1,
            FaultKind::RateLimited {
                retry_after: RetryAfter::Seconds(120),
            },
        )],
    )
    .await;
    let mut cfg = offset_cfg(&m);
    cfg.retry.max_elapsed = Some(Duration::from_secs(5));
    let r = run(&mut source(cfg, None), false).await;
    let e = &r.errors[0];
    assert_eq!(e.class, ErrorClass::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(120)));
    assert_eq!(m.data_requests().len(), 1, "no request before the wait");
}

#[tokio::test]
async fn a_5xx_burst_is_retried_until_it_passes() {
    let m = mock(
        100,
        vec![Fault::new(2, 3, FaultKind::ServerError { status: 503 })],
    )
    .await;
    let r = run(&mut source(offset_cfg(&m), None), false).await;
    expect_all(&r, 100);
    let statuses: Vec<u16> = m.data_requests().iter().map(|q| q.status).collect();
    assert_eq!(statuses, vec![200, 503, 503, 503, 200]);
    assert_eq!(
        r.events
            .iter()
            .filter(|e| e.class == Some(ErrorClass::Dependency))
            .count(),
        3,
        "{}",
        r.event_text()
    );
}

#[tokio::test]
async fn a_5xx_that_lasts_gives_up_as_dependency_with_evidence() {
    let m = mock(
        100,
        vec![Fault::new(1, 0, FaultKind::ServerError { status: 502 })],
    )
    .await;
    let mut cfg = offset_cfg(&m);
    cfg.retry.max_attempts = 3;
    cfg.breaker.enabled = false;
    let r = run(&mut source(cfg, None), false).await;
    let e = &r.errors[0];
    assert_eq!(e.class, ErrorClass::Dependency);
    assert!(
        e.message.contains("gave up after 3 attempt(s)"),
        "{}",
        e.message
    );
    let ev = e.evidence.as_deref().unwrap();
    assert!(
        ev.starts_with("GET http://127.0.0.1")
            && ev.contains("502 Bad Gateway")
            && ev.contains("bad day"),
        "{ev}"
    );
    assert_eq!(m.data_requests().len(), 3);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_is_retried() {
    let m = mock(
        100,
        vec![Fault::new(2, 1, FaultKind::Slow { delay_ms: 3000 })],
    )
    .await;
    let mut cfg = offset_cfg(&m);
    cfg.timeouts.request = Duration::from_millis(400);
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 100);
    assert!(
        r.events
            .iter()
            .any(|e| e.class == Some(ErrorClass::Network) && e.message.contains("network error")),
        "{}",
        r.event_text()
    );
    assert_eq!(m.data_requests().len(), 3);
}

#[tokio::test]
async fn a_connection_reset_is_retried() {
    let m = mock(100, vec![Fault::new(2, 1, FaultKind::Reset)]).await;
    let r = run(&mut source(offset_cfg(&m), None), false).await;
    expect_all(&r, 100);
    let statuses: Vec<u16> = m.data_requests().iter().map(|q| q.status).collect();
    assert_eq!(statuses, vec![200, 0, 200]);
}

#[tokio::test]
async fn a_timeout_that_lasts_fails_as_network_saying_what_to_raise() {
    let m = mock(
        100,
        vec![Fault::new(1, 0, FaultKind::Slow { delay_ms: 2000 })],
    )
    .await;
    let mut cfg = offset_cfg(&m);
    cfg.timeouts.request = Duration::from_millis(200);
    cfg.retry.max_attempts = 2;
    let r = run(&mut source(cfg, None), false).await;
    let e = &r.errors[0];
    assert_eq!(e.class, ErrorClass::Network);
    assert!(
        e.message.contains("did not answer within 200ms") && e.message.contains("timeouts.request"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn a_permanent_401_is_auth_and_a_403_is_permission_neither_retried() {
    let m = mock(100, vec![Fault::new(1, 0, FaultKind::Unauthorized)]).await;
    let r = run(&mut source(offset_cfg(&m), None), false).await;
    assert_eq!(r.errors[0].class, ErrorClass::Auth);
    assert!(
        r.errors[0]
            .evidence
            .as_deref()
            .unwrap()
            .contains("www-authenticate")
    );
    assert_eq!(m.data_requests().len(), 1);

    let m = mock(100, vec![Fault::new(1, 0, FaultKind::Forbidden)]).await;
    let r = run(&mut source(offset_cfg(&m), None), false).await;
    assert_eq!(r.errors[0].class, ErrorClass::Permission);
    assert!(
        r.errors[0].message.contains("permission"),
        "{}",
        r.errors[0].message
    );
    assert_eq!(m.data_requests().len(), 1);
}

#[tokio::test]
async fn a_malformed_json_page_is_invalid_request_with_the_body_in_evidence() {
    let m = mock(100, vec![Fault::new(2, 1, FaultKind::MalformedJson)]).await;
    let r = run(&mut source(offset_cfg(&m), None), false).await;
    assert_eq!(
        r.ids(),
        (1..=50).collect::<Vec<_>>(),
        "the good page before it is delivered"
    );
    let e = &r.errors[0];
    assert_eq!(e.class, ErrorClass::InvalidRequest);
    assert!(
        e.message.contains("offset 50 is not valid JSON"),
        "{}",
        e.message
    );
    assert!(
        e.evidence
            .as_deref()
            .unwrap()
            .contains("{\"data\":{\"items\":[{"),
        "{:?}",
        e.evidence
    );
    // Healed, the same source goes on from the page that failed.
    m.heal();
}

#[tokio::test]
async fn a_page_too_large_for_the_backend_is_asked_again_smaller() {
    let m = MockApi::start(MockConfig {
        records: 120,
        max_page_size: Some(30),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let cfg = config(
        m.url("/offset/items"),
        json!({"pagination": {"offset_limit": {"limit": 100}}, "records": {"path": "$.data.items"}}),
    );
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 120);
    let limits: Vec<String> = m
        .data_requests()
        .iter()
        .map(|q| q.query_param("limit").unwrap())
        .collect();
    assert_eq!(&limits[..3], &["100", "50", "25"]);
    assert!(
        r.events
            .iter()
            .any(|e| e.class == Some(ErrorClass::PayloadTooLarge))
    );

    let m = MockApi::start(MockConfig {
        records: 10,
        max_body_bytes: Some(20),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let cfg = config(
        m.url("/search"),
        json!({"method": "POST", "body": {"filter": "a long filter value that is too large"}, "records": {"path": "$.data.items"}}),
    );
    let r = run(&mut source(cfg, None), false).await;
    assert_eq!(r.errors[0].class, ErrorClass::PayloadTooLarge);
}

#[tokio::test]
async fn the_circuit_breaker_opens_on_failures_then_probes_and_closes() {
    let m = mock(
        100,
        vec![Fault::new(1, 4, FaultKind::ServerError { status: 500 })],
    )
    .await;
    let mut cfg = offset_cfg(&m);
    cfg.retry.max_attempts = 10;
    cfg.breaker.min_requests = 3;
    cfg.breaker.failure_ratio = 0.5;
    cfg.breaker.open_for = Duration::from_millis(300);
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 100);
    let text = r.event_text();
    assert!(text.contains("opened: 3 of the last 3"), "{text}");
    assert!(text.contains("half-open"), "{text}");
    assert!(text.contains("closed"), "{text}");
    // While open, no request reached the API: the 4th failure came only as a probe.
    let log = m.data_requests();
    assert!(
        log[3].elapsed >= log[2].elapsed + Duration::from_millis(250),
        "{:?} {:?}",
        log[2].elapsed,
        log[3].elapsed
    );
}

#[tokio::test]
async fn the_token_bucket_paces_requests() {
    let m = mock(100, vec![]).await;
    let mut cfg = config(
        m.url("/offset/items"),
        json!({"pagination": {"offset_limit": {"limit": 10}}, "records": {"path": "$.data.items"}, "rate_limit": {"requests_per_second": 20.0, "burst": 1}}),
    );
    cfg.stop.total = Some("$.meta.total".into());
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 100);
    let log = m.data_requests();
    let span = log.last().unwrap().elapsed - log[0].elapsed;
    assert!(
        span >= Duration::from_millis(9 * 50 - 20),
        "10 requests at 20/s take 450ms, took {span:?}"
    );
}

/// The engine passes one registry to every source: each source's own `breaker` settings
/// still decide when its breaker opens.
#[tokio::test]
async fn a_configured_breaker_opens_after_its_numbers_in_a_shared_registry() {
    let m = mock(
        100,
        vec![Fault::new(1, 4, FaultKind::ServerError { status: 503 })],
    )
    .await;
    let mut cfg = offset_cfg(&m);
    cfg.retry.max_attempts = 10;
    cfg.breaker.min_requests = 3;
    cfg.breaker.failure_ratio = 1.0;
    cfg.breaker.open_for = Duration::from_millis(300);
    let shared = Arc::new(BreakerRegistry::new());
    let mut src = HttpSource::new(
        cfg,
        HttpSourceContext {
            pipeline: "test".into(),
            node: "api".into(),
            checkpoint: None,
            breakers: Some(shared),
            budgets: None,
            metrics: None,
        },
    )
    .expect("source builds");
    let r = run(&mut src, false).await;
    expect_all(&r, 100);
    let text = r.event_text();
    assert!(text.contains("opened: 3 of the last 3"), "{text}");
    let log = m.data_requests();
    assert!(
        log[3].elapsed >= log[2].elapsed + Duration::from_millis(250),
        "the 4th request waited for the open breaker: {:?} {:?}",
        log[2].elapsed,
        log[3].elapsed
    );
}
