//! The broker stops mid-stream and starts again: no acknowledged batch is lost, and a
//! publish during the outage fails with class `dependency` (or succeeds once it is back).
//! Kept in its own test binary: it stops the shared broker, so nothing may run beside it.

use arrow::array::{Int64Array, RecordBatch};
use sluice_buffer::{Buffer, Delivery, KafkaBuffer, KafkaOptions};
use sluice_core::{Batch, ErrorClass, SourcePosition};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

fn batch(page: u64) -> Batch {
    let records =
        RecordBatch::try_from_iter([("id", Arc::new(Int64Array::from(vec![page as i64])) as _)])
            .unwrap();
    Batch::new("p", "src", SourcePosition::page(page), records)
}

fn services(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let status = Command::new("bash")
        .arg(&script)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "scripts/services.sh {args:?} failed");
}

#[tokio::test]
async fn broker_restart_mid_stream_loses_no_acked_batch() {
    let topic = sluice_testkit::kafka_topic("buf_outage", 1).await;
    let kafka = KafkaBuffer::new(KafkaOptions {
        brokers: topic.bootstrap.clone(),
        partitions: 1,
        delivery_timeout: Duration::from_secs(3),
        ..KafkaOptions::default()
    })
    .unwrap();
    let mut acked = BTreeSet::new();
    for p in 0..5 {
        kafka.publish(&topic.name, &batch(p)).await.unwrap();
        acked.insert(p);
    }

    services(&["down", "kafka"]);
    let addr = topic.bootstrap.split(',').next().unwrap().to_owned();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "Kafka at {addr} still answers after `scripts/services.sh down kafka`: it was started by another checkout; stop it there (or run the suite from that checkout)"
    );
    let err = kafka.publish(&topic.name, &batch(100)).await.unwrap_err();
    assert_eq!(err.class(), ErrorClass::Dependency, "{err}");
    assert!(
        err.to_string().contains("scripts/services.sh status"),
        "{err}"
    );
    services(&["up", "kafka"]);

    // Flow resumes by itself once the broker is back (the producer reconnects).
    let mut p = 5;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while p < 10 && tokio::time::Instant::now() < deadline {
        match kafka.publish(&topic.name, &batch(p)).await {
            Ok(()) => {
                acked.insert(p);
                p += 1;
            }
            Err(e) => assert_eq!(e.class(), ErrorClass::Dependency, "{e}"),
        }
    }
    assert_eq!(
        p, 10,
        "publishing did not resume after the broker came back"
    );

    let mut sub = kafka
        .subscribe(&topic.name, &sluice_testkit::unique_name("g"))
        .await
        .unwrap();
    let mut seen = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !acked.is_subset(&seen) && tokio::time::Instant::now() < deadline {
        if let Some(Delivery::Batch { batch, ack }) = sub.next().await.unwrap() {
            if let SourcePosition::Page(p) = batch.position {
                seen.insert(p);
            }
            sub.commit(&ack).await.unwrap();
        }
    }
    assert!(
        acked.is_subset(&seen),
        "lost acked batches: {:?}",
        acked.difference(&seen).collect::<Vec<_>>()
    );
}
