//! Rate-limit dialects against the mock API: each way an API says its quota is used up
//! makes the answer `rate_limited`, waited out until the reset (never earlier), or, when
//! the reset is further than `max_retry_after`, parks the source with its checkpoint.

mod http_common;

use http_common::{config, expect_all, run, source};
use serde_json::json;
use sluice_core::ErrorClass;
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig, MockHandle, QuotaDialect};
use std::time::SystemTime;

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

fn quota(from: u64, status: u16, dialect: QuotaDialect, reset_secs: u64) -> Fault {
    Fault::new(
        from,
        1,
        FaultKind::Quota {
            status,
            dialect,
            reset_secs,
        },
    )
}

fn offset_cfg(
    m: &MockHandle,
    extra: serde_json::Value,
) -> sluice_connectors::http::HttpSourceConfig {
    let mut base = json!({"pagination": {"offset_limit": {"limit": 50}}, "records": {"path": "$.data.items"}, "stop": {"total": "$.meta.total"}});
    if let (Some(b), Some(e)) = (base.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    config(m.url("/offset/items"), base)
}

/// No request came before the reset the mock announced, and the mock announced one.
fn assert_reset_honoured(m: &MockHandle) {
    let log = m.data_requests();
    let mut checked = 0;
    for (i, r) in log.iter().enumerate() {
        if let Some(until) = r.retry_after_until {
            for later in &log[i + 1..] {
                assert!(
                    later.at >= until,
                    "request {} came {:?} before the quota reset",
                    later.seq,
                    until.duration_since(later.at).unwrap_or_default()
                );
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "the mock announced no reset");
}

/// The quota answer is waited out and retried: every record once, the reset honoured,
/// and the retry told as `rate_limited`.
async fn waited_out(status: u16, dialect: QuotaDialect) {
    let m = mock(150, vec![quota(2, status, dialect, 1)]).await;
    let r = run(&mut source(offset_cfg(&m, json!({})), None), false).await;
    expect_all(&r, 150);
    assert_reset_honoured(&m);
    let statuses: Vec<u16> = m.data_requests().iter().map(|q| q.status).collect();
    assert_eq!(statuses, vec![200, status, 200, 200], "{dialect:?}");
    assert!(
        r.events
            .iter()
            .any(|e| e.class == Some(ErrorClass::RateLimited)
                && e.message.contains(&format!("retried after {status}"))
                && e.message.contains("slowed to")),
        "{dialect:?}: {}",
        r.event_text()
    );
}

#[tokio::test]
async fn github_403_with_x_ratelimit_headers_waits_for_the_reset() {
    waited_out(403, QuotaDialect::Github).await;
}

/// GitHub's secondary rate limit: a `403` with `Retry-After` while the primary quota still
/// has requests left (`X-RateLimit-Remaining: 4990`, its reset an hour away). It is a rate
/// limit, not `permission`, and it is waited out for `Retry-After`'s seconds, not until the
/// primary quota's reset (beyond `max_retry_after`, that would park the source).
#[tokio::test]
async fn github_secondary_rate_limit_403_with_retry_after_is_waited_out() {
    let started = std::time::Instant::now();
    waited_out(403, QuotaDialect::GithubSecondary).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "waited {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn ietf_ratelimit_headers_in_delta_seconds_are_waited_out() {
    waited_out(403, QuotaDialect::Ietf).await;
}

#[tokio::test]
async fn hyphenated_x_rate_limit_headers_are_waited_out() {
    waited_out(403, QuotaDialect::Hyphenated).await;
}

#[tokio::test]
async fn retry_after_on_a_503_is_a_rate_limit() {
    waited_out(503, QuotaDialect::RetryAfter).await;
}

#[tokio::test]
async fn a_used_up_call_limit_header_is_a_rate_limit() {
    // On an error answer: rate limited (no reset told: backoff), then retried.
    let m = mock(150, vec![quota(2, 400, QuotaDialect::CallLimit, 0)]).await;
    let r = run(&mut source(offset_cfg(&m, json!({})), None), false).await;
    expect_all(&r, 150);
    assert!(
        r.events
            .iter()
            .any(|e| e.class == Some(ErrorClass::RateLimited)
                && e.message.contains("retried after 400")),
        "{}",
        r.event_text()
    );
    // On a success: the bucket is full, the source slows down.
    let m = mock(150, vec![quota(2, 200, QuotaDialect::CallLimit, 0)]).await;
    let r = run(&mut source(offset_cfg(&m, json!({})), None), false).await;
    expect_all(&r, 150);
    assert!(
        r.events
            .iter()
            .any(|e| e.class == Some(ErrorClass::RateLimited)
                && e.message.contains("says the quota is used up; slowed to")),
        "{}",
        r.event_text()
    );
}

#[tokio::test]
async fn a_200_whose_body_says_rate_limited_is_waited_out_until_its_reset() {
    let m = mock(150, vec![quota(2, 200, QuotaDialect::Body, 1)]).await;
    let cfg = offset_cfg(
        &m,
        json!({"rate_limit_signal": {"path": "$.error.code", "equals": "RATE_LIMITED", "reset": "$.error.reset_at"}}),
    );
    let r = run(&mut source(cfg, None), false).await;
    expect_all(&r, 150);
    assert_reset_honoured(&m);
    assert_eq!(m.data_requests().len(), 4);
    assert!(
        r.events
            .iter()
            .any(|e| e.class == Some(ErrorClass::RateLimited)
                && e.message.contains("retried after 200")),
        "{}",
        r.event_text()
    );
}

#[tokio::test]
async fn a_reset_beyond_max_retry_after_parks_the_source_with_its_checkpoint() {
    let m = mock(150, vec![quota(2, 403, QuotaDialect::Github, 2)]).await;
    let cfg = offset_cfg(&m, json!({"rate_limit": {"max_retry_after": "1s"}}));
    let r = run(&mut source(cfg.clone(), None), false).await;
    assert_eq!(
        r.ids(),
        (1..=50).collect::<Vec<_>>(),
        "the first page is delivered"
    );
    assert_eq!(r.errors.len(), 1);
    let e = &r.errors[0];
    assert_eq!(e.class, ErrorClass::RateLimited, "{e}");
    let until = m.data_requests()[1].retry_after_until.expect("a reset");
    // Never before the reset the API told (the wait is measured from the answer).
    let resume_at = e.resume_at.expect("a parked error says when to resume");
    assert!(
        resume_at >= until && resume_at < until + std::time::Duration::from_secs(1),
        "{e}"
    );
    assert!(e.message.contains("parked"), "{e}");
    assert_eq!(
        m.data_requests().len(),
        2,
        "one answer told the reset: no more asked"
    );

    // After the reset, a source opened from the checkpoint goes on from the second page.
    let checkpoint = r.last_checkpoint();
    tokio::time::sleep(until.duration_since(SystemTime::now()).unwrap_or_default()).await;
    let r = run(&mut source(cfg, checkpoint), false).await;
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    assert_eq!(r.ids(), (51..=150).collect::<Vec<_>>());
}
