//! The Kafka buffer against the real broker (`SLUICE_TEST_KAFKA`).

use sluice_buffer::{Buffer, Delivery, KafkaBuffer, KafkaOptions, Subscription, WireFormat};
use sluice_core::{Batch, SourcePosition};
use sluice_testkit::batches::{named_batch, page_ids};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// Page `page`: `rows` records of about 55 bytes, ids from `page * 100_000`.
fn batch(page: u64, rows: i64) -> Batch {
    named_batch(page, &page_ids(page, rows, 100_000), |i| {
        format!("record {i} {}", "z".repeat(40))
    })
}

fn buffer(bootstrap: &str, partitions: i32) -> KafkaBuffer {
    KafkaBuffer::new(KafkaOptions {
        brokers: bootstrap.to_owned(),
        partitions,
        ..KafkaOptions::default()
    })
    .unwrap()
}

fn page(d: &Delivery) -> u64 {
    match d {
        Delivery::Batch { batch, .. } => match batch.position {
            SourcePosition::Page(p) => p,
            ref other => panic!("unexpected position {other:?}"),
        },
        Delivery::Poison { poison, .. } => panic!("unexpected poison: {}", poison.error),
    }
}

/// Reads until `n` deliveries arrived (or 60 s passed), committing each.
async fn take(sub: &mut Box<dyn Subscription>, n: usize) -> Vec<Delivery> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while out.len() < n && tokio::time::Instant::now() < deadline {
        if let Some(d) = sub.next_within(Duration::from_millis(500)).await.unwrap() {
            sub.commit(d.ack()).await.unwrap();
            out.push(d);
        }
    }
    out
}

#[tokio::test]
async fn round_trip_with_commit_and_lag() {
    let topic = sluice_testkit::kafka_topic("buf_rt", 1).await;
    let kafka = buffer(&topic.bootstrap, 1);
    let sent: Vec<Batch> = (0..4).map(|p| batch(p, 50)).collect();
    for b in &sent {
        kafka.publish(&topic.name, b).await.unwrap();
    }
    let group = sluice_testkit::unique_name("g");
    assert_eq!(kafka.lag(&topic.name, &group).await.unwrap(), 4);
    let mut sub = kafka.subscribe(&topic.name, &group).await.unwrap();
    let got = take(&mut sub, 4).await;
    assert_eq!(got.iter().map(page).collect::<Vec<_>>(), [0, 1, 2, 3]);
    for (d, b) in got.iter().zip(&sent) {
        let Delivery::Batch { batch, .. } = d else {
            unreachable!()
        };
        assert_eq!((&batch.id, &batch.records), (&b.id, &b.records));
    }
    // Commits go out in the background; a read that finds nothing confirms them.
    assert!(
        sub.next_within(Duration::from_millis(200))
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(kafka.lag(&topic.name, &group).await.unwrap(), 0);
}

#[tokio::test]
async fn json_lines_format_round_trips() {
    let topic = sluice_testkit::kafka_topic("buf_jsonl", 1).await;
    let kafka = KafkaBuffer::new(KafkaOptions {
        brokers: topic.bootstrap.clone(),
        format: WireFormat::JsonLines,
        ..KafkaOptions::default()
    })
    .unwrap();
    let b = batch(5, 20);
    kafka.publish(&topic.name, &b).await.unwrap();
    let mut sub = kafka
        .subscribe(&topic.name, &sluice_testkit::unique_name("g"))
        .await
        .unwrap();
    let got = take(&mut sub, 1).await;
    let Delivery::Batch { batch, .. } = &got[0] else {
        panic!("{:?}", got[0])
    };
    assert_eq!(batch.records, b.records);
}

#[tokio::test]
async fn two_consumers_in_one_group_share_partitions_and_see_each_batch_once() {
    let topic = sluice_testkit::kafka_topic("buf_group", 4).await;
    let kafka = Arc::new(buffer(&topic.bootstrap, 4));
    let group = sluice_testkit::unique_name("g");
    let mut a = kafka.subscribe(&topic.name, &group).await.unwrap();
    let mut b = kafka.subscribe(&topic.name, &group).await.unwrap();
    const N: u64 = 40;
    for p in 0..N {
        kafka.publish(&topic.name, &batch(p, 3)).await.unwrap();
    }
    let mut seen_a = BTreeSet::new();
    let mut seen_b = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while (seen_a.len() + seen_b.len()) < N as usize && tokio::time::Instant::now() < deadline {
        for (sub, seen) in [(&mut a, &mut seen_a), (&mut b, &mut seen_b)] {
            if let Some(d) = sub.next_within(Duration::from_millis(200)).await.unwrap() {
                sub.commit(d.ack()).await.unwrap();
                assert!(
                    seen.insert(page(&d)),
                    "batch {} delivered twice to one consumer",
                    page(&d)
                );
            }
        }
    }
    assert!(
        seen_a.is_disjoint(&seen_b),
        "a batch went to both consumers: {:?}",
        seen_a.intersection(&seen_b).collect::<Vec<_>>()
    );
    let all: BTreeSet<u64> = seen_a.union(&seen_b).copied().collect();
    assert_eq!(all, (0..N).collect::<BTreeSet<_>>());
    assert!(
        !seen_a.is_empty() && !seen_b.is_empty(),
        "both members got partitions: {} / {}",
        seen_a.len(),
        seen_b.len()
    );
}

#[tokio::test]
async fn an_oversized_batch_is_split_and_reassembled() {
    let topic = sluice_testkit::kafka_topic("buf_split", 1).await;
    let kafka = KafkaBuffer::new(KafkaOptions {
        brokers: topic.bootstrap.clone(),
        message_max_bytes: 16 * 1024,
        format: WireFormat::Arrow,
        ..KafkaOptions::default()
    })
    .unwrap();
    let big = batch(1, 5_000); // ~300 KB of records
    kafka.publish(&topic.name, &big).await.unwrap();
    kafka.publish(&topic.name, &batch(2, 2)).await.unwrap();
    let mut sub = kafka
        .subscribe(&topic.name, &sluice_testkit::unique_name("g"))
        .await
        .unwrap();
    let got = take(&mut sub, 2).await;
    assert_eq!(got.iter().map(page).collect::<Vec<_>>(), [1, 2]);
    let Delivery::Batch { batch, .. } = &got[0] else {
        unreachable!()
    };
    assert_eq!(batch.records, big.records);
    assert_eq!(batch.id, big.id);
}

#[tokio::test]
async fn a_garbage_message_is_poison_and_later_batches_are_delivered() {
    let topic = sluice_testkit::kafka_topic("buf_poison", 1).await;
    let kafka = buffer(&topic.bootstrap, 1);
    kafka.publish(&topic.name, &batch(0, 5)).await.unwrap();
    kafka
        .publish_raw(&topic.name, "x", b"{\"not\": \"a sluice batch\"}")
        .await
        .unwrap();
    kafka.publish(&topic.name, &batch(2, 5)).await.unwrap();
    let mut sub = kafka
        .subscribe(&topic.name, &sluice_testkit::unique_name("g"))
        .await
        .unwrap();
    let got = take(&mut sub, 3).await;
    assert_eq!(got.len(), 3);
    assert_eq!(page(&got[0]), 0);
    let Delivery::Poison { poison, .. } = &got[1] else {
        panic!("expected poison: {:?}", got[1])
    };
    assert_eq!(
        (poison.topic.as_str(), poison.partition, poison.offset),
        (topic.name.as_str(), 0, 1)
    );
    assert!(poison.error.contains("missing header"), "{}", poison.error);
    assert_eq!(page(&got[2]), 2);
}

#[tokio::test]
async fn a_crafted_split_count_is_poison_and_later_batches_are_delivered() {
    let topic = sluice_testkit::kafka_topic("buf_split_count", 1).await;
    let kafka = buffer(&topic.bootstrap, 1);
    let mut m = sluice_buffer::wire::encode(&batch(0, 3), WireFormat::Arrow, usize::MAX)
        .unwrap()
        .remove(0);
    // 10^11 parts: once an allocation of that many slots, which aborted the process.
    m.headers
        .insert("sluice.split".into(), "0/100000000000".into());
    kafka.publish_message(&topic.name, "x", &m).await.unwrap();
    kafka.publish(&topic.name, &batch(1, 5)).await.unwrap();
    let mut sub = kafka
        .subscribe(&topic.name, &sluice_testkit::unique_name("g"))
        .await
        .unwrap();
    let got = take(&mut sub, 2).await;
    assert_eq!(got.len(), 2);
    let Delivery::Poison { poison, ack } = &got[0] else {
        panic!("expected poison: {:?}", got[0])
    };
    assert_eq!((poison.offset, ack.next_offset), (0, 1));
    assert!(poison.error.contains("sluice.split"), "{}", poison.error);
    assert_eq!(page(&got[1]), 1);
}
