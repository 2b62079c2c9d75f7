//! The broker stops mid-stream and starts again: no acknowledged batch is lost, and a
//! publish during the outage fails with class `dependency` (or succeeds once it is back).
//! Kept in its own test binary: it stops the shared broker, so nothing may run beside it.

use sluice_buffer::{Buffer, Delivery, KafkaBuffer, KafkaOptions};
use sluice_core::{Batch, ErrorClass, SourcePosition};
use sluice_testkit::batches::ids_batch;
use sluice_testkit::services_script;
use std::collections::BTreeSet;
use std::time::Duration;

/// Page `n` holds one record, whose id is `n`.
fn page_of_one(n: u64) -> Batch {
    ids_batch(n, &[n as i64])
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
        kafka.publish(&topic.name, &page_of_one(p)).await.unwrap();
        acked.insert(p);
    }

    services_script("down", "kafka");
    let addr = topic.bootstrap.split(',').next().unwrap().to_owned();
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "Kafka at {addr} still answers after `scripts/services.sh down kafka`: it was started by another checkout; stop it there (or run the suite from that checkout)"
    );
    let err = kafka
        .publish(&topic.name, &page_of_one(100))
        .await
        .unwrap_err();
    assert_eq!(err.class(), ErrorClass::Dependency, "{err}");
    assert!(
        err.to_string().contains("scripts/services.sh status"),
        "{err}"
    );
    services_script("up", "kafka");

    // Flow resumes by itself once the broker is back (the producer reconnects).
    let mut p = 5;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while p < 10 && tokio::time::Instant::now() < deadline {
        match kafka.publish(&topic.name, &page_of_one(p)).await {
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
