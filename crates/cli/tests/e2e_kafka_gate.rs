//! Health-gated flow through the `sluice` binary with a Kafka buffer (a private broker
//! this test owns, never the shared one on 9092) under `when_link_down: pause`: the
//! broker is stopped for ~15 s in the middle of a run. A `link_down` alert reaches the
//! webhook; the source sends no request to the API while it is paused (the mock's
//! request log, against the pause recorded in the run at the source); once the broker is
//! back the run goes on by itself, a `link_recovered` alert says how long it was down,
//! and every record is in the table exactly once (count and checksum).

mod e2e_common;

use e2e_common::{
    Sandbox, alerts_of, assert_exactly_once, assert_no_request_between, hook, the_pause_of,
};
use sluice_testkit::PrivateKafka;
use sluice_testkit::mock_api::{Fault, FaultKind, MockApi, MockConfig};
use std::time::Duration;
use tokio::time::Instant;

const RECORDS: i64 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_buffer_down_pauses_the_source_and_the_run_resumes_by_itself() {
    let kafka = tokio::task::spawn_blocking(PrivateKafka::start)
        .await
        .expect("the private Kafka starts");
    let mut sb = Sandbox::new("e2e_kgate").await;
    // Every page takes 200 ms: the source reads for about 8 s, and is still reading when
    // the broker stops.
    let mock = MockApi::start(MockConfig {
        records: RECORDS as u64,
        page_size: 50,
        faults: vec![Fault::new(1, 0, FaultKind::Slow { delay_ms: 200 })],
        ..MockConfig::default()
    })
    .await
    .expect("the mock API starts");
    let (url, seen) = hook().await;
    sb.set("MOCK", mock.base_url());
    sb.set("BROKER", kafka.bootstrap());
    sb.set("HOOK", url);
    sb.set("SLUICE_LINK_PROBE_INTERVAL", "1s");
    let file = sb.write(
        "kgate.yaml",
        r#"
pipeline: e2e_kgate
buffer:
  kafka: { brokers: ["${BROKER}"], topic_prefix: "${PREFIX}", partitions: 2 }
when_link_down: pause
alerts:
  channels:
    hook: { webhook: { url: "${HOOK}", timeout: 2s } }
nodes:
  api:
    type: http
    url: ${MOCK}/page/items
    pagination:
      page_number: { param: page, size_param: per_page, size: 50 }
    stop:
      has_more: $.meta.has_more
    records: { path: $.data.items }
  db:
    type: postgres
    inputs: [api]
    url: ${PG_URL}
    table: kgate_orders
    mode: append
"#,
    );
    let mut child = sb.spawn("run", &["run", file.to_str().unwrap(), "--once", "--plain"]);
    let pool = sb.pool().await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while e2e_common::count(&pool, "kgate_orders").await == 0 {
        assert!(child.try_wait().unwrap().is_none(), "{}", sb.logs("run"));
        assert!(
            Instant::now() < deadline,
            "nothing written\n{}",
            sb.logs("run")
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The outage.
    kafka.stop();
    let deadline = Instant::now() + Duration::from_secs(60);
    while alerts_of(&seen, "link_down").is_empty() {
        assert!(
            Instant::now() < deadline,
            "no link_down alert\n{}",
            sb.logs("run")
        );
        assert!(child.try_wait().unwrap().is_none(), "{}", sb.logs("run"));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the run waits for the broker, it does not end\n{}",
        sb.logs("run")
    );
    let kafka = tokio::task::spawn_blocking(move || {
        kafka.start_again();
        kafka
    })
    .await
    .expect("the private Kafka starts again");

    let code = sb.wait(&mut child, "run").await;
    assert_eq!(
        code,
        Some(0),
        "{}\n--- kafka ---\n{}",
        sb.logs("run"),
        kafka.log_tail()
    );
    assert_exactly_once(&pool, "kgate_orders", "id", RECORDS).await;
    let checksum: i64 = sqlx::query_scalar("SELECT sum(id)::bigint FROM kgate_orders")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        checksum,
        (1..=RECORDS).sum::<i64>(),
        "the ids are 1..={RECORDS}"
    );
    assert!(
        sb.failed("e2e_kgate").await.is_empty(),
        "nothing quarantined"
    );

    // One link_down alert about the buffer, then a recovery with the downtime.
    let down = alerts_of(&seen, "link_down");
    assert_eq!(down.len(), 1, "{down:#?}");
    let text = down[0]["message"].as_str().unwrap();
    assert!(
        text.contains("buffer") && text.contains(&kafka.bootstrap()),
        "{down:#?}"
    );
    let up = alerts_of(&seen, "link_recovered");
    assert_eq!(up.len(), 1, "{:#?}", seen.lock().unwrap());
    let text = up[0]["message"].as_str().unwrap();
    assert!(text.contains("up again after"), "{text}");
    assert!(alerts_of(&seen, "run_failed").is_empty());

    // The pause is in the run record, at the source, with its cause and length.
    let (paused, from, to, show) = the_pause_of(&sb, "api").await;
    assert!(paused.contains("buffer"), "{show:#}");
    assert!(
        to - from >= 10_000,
        "paused about as long as the outage: {show:#}"
    );
    // No request to the API while paused.
    assert_no_request_between(&mock, from, to);
    mock.shutdown().await;
    pool.close().await;
}
