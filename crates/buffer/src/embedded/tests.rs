use super::*;
use sluice_core::SourcePosition;
use sluice_testkit::batches::{named_batch, page_ids};
use std::io::Write as _;

/// Page `page`: `rows` records of about 45 bytes, ids from `page * 1000`.
fn batch(page: u64, rows: i64) -> Batch {
    named_batch(page, &page_ids(page, rows, 1000), |i| {
        format!("record {i} {}", "y".repeat(30))
    })
}

async fn drain(sub: &mut Box<dyn Subscription>) -> Vec<Delivery> {
    let mut out = Vec::new();
    while let Some(d) = sub.next_within(Duration::from_millis(50)).await.unwrap() {
        out.push(d);
    }
    out
}

fn ids(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries
        .iter()
        .map(|d| match d {
            Delivery::Batch { batch, .. } => match batch.position {
                SourcePosition::Page(p) => p,
                _ => unreachable!(),
            },
            Delivery::Poison { poison, .. } => panic!("unexpected poison: {}", poison.error),
        })
        .collect()
}

#[tokio::test]
async fn round_trip_and_lag() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let sent: Vec<Batch> = (0..5).map(|p| batch(p, 10)).collect();
    for b in &sent {
        log.publish("t", b).await.unwrap();
    }
    let mut sub = log.subscribe("t", "g").await.unwrap();
    assert_eq!(log.lag("t", "g").await.unwrap(), 5);
    let got = drain(&mut sub).await;
    assert_eq!(ids(&got), [0, 1, 2, 3, 4]);
    for (d, b) in got.iter().zip(&sent) {
        let Delivery::Batch { batch, .. } = d else {
            unreachable!()
        };
        assert_eq!(batch.id, b.id);
        assert_eq!(batch.records, b.records);
    }
    let all = log.backlog_bytes("t", "g").await.unwrap().unwrap();
    sub.commit(got[2].ack()).await.unwrap();
    assert_eq!(log.lag("t", "g").await.unwrap(), 2);
    // Two of the five batches left: about two fifths of the bytes.
    let left = log.backlog_bytes("t", "g").await.unwrap().unwrap();
    assert!(left > 0 && left * 5 <= all * 2 + 5, "{left} of {all}");
    assert!(left * 5 >= all * 2 - 5, "{left} of {all}");
    sub.commit(got[4].ack()).await.unwrap();
    assert_eq!(log.backlog_bytes("t", "g").await.unwrap(), Some(0));
}

#[tokio::test]
async fn a_waiting_subscriber_wakes_on_publish() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let mut sub = log.subscribe("t", "g").await.unwrap();
    let publisher = log.clone();
    let handle = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        publisher.publish("t", &batch(7, 3)).await.unwrap();
    });
    let d = sub.next_within(Duration::from_secs(10)).await.unwrap();
    handle.await.unwrap();
    assert_eq!(ids(&[d.unwrap()]), [7]);
}

#[tokio::test]
async fn committed_offsets_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
        for p in 0..4 {
            log.publish("t", &batch(p, 5)).await.unwrap();
        }
        let mut sub = log.subscribe("t", "g").await.unwrap();
        let first = sub.next().await.unwrap().unwrap();
        let second = sub.next().await.unwrap().unwrap();
        sub.commit(first.ack()).await.unwrap();
        // `second` is processed but not committed: it must come again.
        drop(second);
    }
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let mut sub = log.subscribe("t", "g").await.unwrap();
    assert_eq!(ids(&drain(&mut sub).await), [1, 2, 3]);
    // Another group starts from the beginning.
    let mut other = log.subscribe("t", "other").await.unwrap();
    assert_eq!(ids(&drain(&mut other).await), [0, 1, 2, 3]);
}

fn last_segment(dir: &std::path::Path) -> std::path::PathBuf {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("t"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    files.sort();
    files.pop().unwrap()
}

#[tokio::test]
async fn a_torn_tail_is_truncated_and_acked_batches_survive() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
        for p in 0..3 {
            log.publish("t", &batch(p, 5)).await.unwrap();
        }
    }
    let seg = last_segment(dir.path());
    let full = std::fs::metadata(&seg).unwrap().len();
    // A write interrupted halfway: a partial entry header and body.
    let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
    f.write_all(&500u32.to_le_bytes()).unwrap();
    f.write_all(&[1, 2, 3, 4, 5, 6, 7]).unwrap();
    drop(f);

    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        full,
        "torn tail cut off"
    );
    log.publish("t", &batch(3, 5)).await.unwrap();
    let mut sub = log.subscribe("t", "g").await.unwrap();
    assert_eq!(ids(&drain(&mut sub).await), [0, 1, 2, 3]);
}

#[tokio::test]
async fn a_corrupted_last_entry_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
        for p in 0..3 {
            log.publish("t", &batch(p, 5)).await.unwrap();
        }
    }
    let seg = last_segment(dir.path());
    let mut bytes = std::fs::read(&seg).unwrap();
    let n = bytes.len();
    bytes[n - 3] ^= 0xff; // flip bits in the last entry's body
    std::fs::write(&seg, &bytes).unwrap();

    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let mut sub = log.subscribe("t", "g").await.unwrap();
    assert_eq!(ids(&drain(&mut sub).await), [0, 1]);
}

#[tokio::test]
async fn a_corrupt_entry_in_the_middle_is_poison_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    log.publish("t", &batch(0, 5)).await.unwrap();
    // A frame that is not a sluice message at all, appended with a valid CRC.
    log.topic("t")
        .unwrap()
        .log
        .lock()
        .unwrap()
        .append(&[b"\x02\x00\x00\x00{}garbage".to_vec()])
        .unwrap();
    log.publish("t", &batch(2, 5)).await.unwrap();
    let open = log.topic("t").unwrap();
    open.high_watermark
        .send_replace(open.log.lock().unwrap().next_offset());

    let mut sub = log.subscribe("t", "g").await.unwrap();
    let got = drain(&mut sub).await;
    assert_eq!(got.len(), 3);
    let Delivery::Poison { poison, ack } = &got[1] else {
        panic!("expected poison, got {:?}", got[1]);
    };
    assert_eq!((poison.partition, poison.offset), (0, 1));
    assert_eq!(ack.next_offset, 2);
    assert_eq!(ids(&got[2..]), [2]);
}

#[tokio::test]
async fn an_oversized_batch_travels_in_parts_and_arrives_whole() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        max_message_bytes: 4096,
        format: WireFormat::Arrow,
        ..EmbeddedOptions::default()
    };
    let log = EmbeddedLog::open(dir.path(), options).unwrap();
    let big = batch(1, 500);
    let first = log.append("t", &big).await.unwrap();
    let next = log.append("t", &batch(2, 1)).await.unwrap();
    assert!(next - first > 2, "split into {} parts", next - first);
    let mut sub = log.subscribe("t", "g").await.unwrap();
    let got = drain(&mut sub).await;
    assert_eq!(ids(&got), [1, 2]);
    let Delivery::Batch { batch, ack } = &got[0] else {
        unreachable!()
    };
    assert_eq!(batch.records, big.records);
    assert_eq!(batch.id, big.id);
    assert_eq!(ack.next_offset, next);
}

#[tokio::test]
async fn retention_deletes_only_segments_every_group_consumed() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        segment_bytes: 1, // one entry per segment
        ..EmbeddedOptions::default()
    };
    let log = EmbeddedLog::open(dir.path(), options.clone()).unwrap();
    let mut fast = log.subscribe("t", "fast").await.unwrap();
    let mut slow = log.subscribe("t", "slow").await.unwrap();
    for p in 0..4 {
        log.publish("t", &batch(p, 2)).await.unwrap();
    }
    let count = || {
        std::fs::read_dir(dir.path().join("t"))
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count()
    };
    assert_eq!(count(), 5); // 4 full segments and the empty active one
    let got = drain(&mut fast).await;
    fast.commit(got[3].ack()).await.unwrap();
    assert!(drain(&mut fast).await.is_empty());
    assert_eq!(count(), 5, "slow has consumed nothing: nothing may go");
    let got = drain(&mut slow).await;
    slow.commit(got[1].ack()).await.unwrap();
    // A segment goes once the offsets past it are on disk: at most 100 ms after a commit
    // while batches flow, at once when a read finds the topic dry.
    assert!(drain(&mut slow).await.is_empty());
    assert_eq!(count(), 3, "segments 0 and 1 are consumed by both groups");
    slow.commit(got[3].ack()).await.unwrap();
    assert!(drain(&mut slow).await.is_empty());
    assert_eq!(count(), 1, "only the active segment stays");

    // After a restart, both groups resume where they were, and new data flows.
    drop((fast, slow, log));
    let log = EmbeddedLog::open(dir.path(), options).unwrap();
    log.publish("t", &batch(9, 2)).await.unwrap();
    let mut slow = log.subscribe("t", "slow").await.unwrap();
    assert_eq!(ids(&drain(&mut slow).await), [9]);
}

#[tokio::test]
async fn bad_names_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let err = log.publish("../escape", &batch(0, 1)).await.unwrap_err();
    assert_eq!(err.class(), sluice_core::ErrorClass::InvalidRequest);
    assert!(log.subscribe("t", "a/b").await.is_err());
}

#[tokio::test]
async fn one_owner_per_pipeline_namespace() {
    let dir = tempfile::tempdir().unwrap();
    let orders = EmbeddedLog::open_for(dir.path(), "orders", EmbeddedOptions::default()).unwrap();
    // Another pipeline shares the folder; the same one, or the whole folder, cannot.
    let users = EmbeddedLog::open_for(dir.path(), "users", EmbeddedOptions::default()).unwrap();
    let err = EmbeddedLog::open_for(dir.path(), "orders", EmbeddedOptions::default()).unwrap_err();
    match &err {
        BufferError::Locked { holder, .. } => assert!(
            holder.contains(&format!("pid {}", std::process::id())),
            "the error names the holder: {err}"
        ),
        other => panic!("expected Locked, got {other}"),
    }
    assert!(matches!(
        EmbeddedLog::open(dir.path(), EmbeddedOptions::default()),
        Err(BufferError::Locked { .. })
    ));
    // A pipeline writes only its own topics.
    orders.publish("orders.api", &batch(0, 1)).await.unwrap();
    assert!(orders.publish("users.api", &batch(0, 1)).await.is_err());
    // A subscription keeps the lock until it is dropped too.
    let sub = orders.subscribe("orders.api", "orders.db").await.unwrap();
    drop(orders);
    assert!(EmbeddedLog::open_for(dir.path(), "orders", EmbeddedOptions::default()).is_err());
    drop(sub);
    let again = EmbeddedLog::open_for(dir.path(), "orders", EmbeddedOptions::default()).unwrap();
    drop((again, users));
    EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
}

/// Appends raw frames with valid CRCs (what a crafted or half-written producer leaves)
/// and moves the high watermark past them.
fn append_frames(log: &EmbeddedLog, topic: &str, frames: &[Vec<u8>]) {
    let open = log.topic(topic).unwrap();
    let mut l = open.log.lock().unwrap();
    l.append(frames).unwrap();
    open.high_watermark.send_replace(l.next_offset());
}

#[tokio::test]
async fn a_crafted_split_count_is_poison_and_reading_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let mut m = wire::encode(&batch(0, 3), WireFormat::Arrow, usize::MAX)
        .unwrap()
        .remove(0);
    // 10^11 parts: once an allocation of that many slots, which aborted the process.
    m.headers
        .insert("sluice.split".into(), "0/100000000000".into());
    append_frames(&log, "t", &[m.to_frame()]);
    log.publish("t", &batch(1, 5)).await.unwrap();

    let mut sub = log.subscribe("t", "g").await.unwrap();
    let got = drain(&mut sub).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let Delivery::Poison { poison, ack } = &got[0] else {
        panic!("expected poison, got {:?}", got[0]);
    };
    assert_eq!((poison.offset, ack.next_offset), (0, 1));
    assert!(poison.error.contains("sluice.split"), "{}", poison.error);
    assert_eq!(ids(&got[1..]), [1]);
}

#[tokio::test]
async fn orphaned_parts_are_poison_and_commits_pass_them() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        max_message_bytes: 4096,
        format: WireFormat::Arrow,
        ..EmbeddedOptions::default()
    };
    let log = EmbeddedLog::open(dir.path(), options).unwrap();
    // A producer died after parts 0 and 1 of a split batch; the page was then re-read
    // (other content: another batch id) and published whole, then more batches.
    let parts = wire::encode(&batch(1, 500), WireFormat::Arrow, 4096).unwrap();
    assert!(parts.len() > 2);
    let frames: Vec<Vec<u8>> = parts.iter().take(2).map(Message::to_frame).collect();
    append_frames(&log, "t", &frames);
    log.publish("t", &batch(2, 3)).await.unwrap();
    log.publish("t", &batch(3, 3)).await.unwrap();

    let mut sub = log.subscribe("t", "g").await.unwrap();
    let got = drain(&mut sub).await;
    let batches: Vec<u64> = got
        .iter()
        .filter_map(|d| match d {
            Delivery::Batch { batch, .. } => match batch.position {
                SourcePosition::Page(p) => Some(p),
                _ => None,
            },
            Delivery::Poison { .. } => None,
        })
        .collect();
    assert_eq!(batches, [2, 3], "{got:?}");
    let poison: Vec<i64> = got
        .iter()
        .filter_map(|d| match d {
            Delivery::Poison { poison, .. } => Some(poison.offset),
            Delivery::Batch { .. } => None,
        })
        .collect();
    assert_eq!(poison, [0, 1], "{got:?}");
    for d in &got {
        if let Delivery::Poison { poison, .. } = d {
            assert!(poison.error.contains("orphaned"), "{}", poison.error);
        }
        sub.commit(d.ack()).await.unwrap();
    }
    assert_eq!(
        log.lag("t", "g").await.unwrap(),
        0,
        "the group passed the orphans"
    );
    // Nothing more: a new subscription finds nothing left.
    let mut again = log.subscribe("t", "g").await.unwrap();
    assert!(drain(&mut again).await.is_empty());
}

/// Where the topic is on disk: (entries flushed below, next offset, flushes so far).
fn on_disk(log: &EmbeddedLog, topic: &str) -> (i64, i64, u64) {
    let open = log.topic(topic).unwrap();
    let t = open.log.lock().unwrap();
    (t.synced(), t.next_offset(), t.flushes())
}

#[tokio::test]
async fn a_source_s_batches_are_flushed_a_few_at_a_time_and_acked_once_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let mut pending = Vec::new();
    for p in 0..segment::FLUSH_EVERY as u64 - 1 {
        pending.push(log.start_publish("t", &batch(p, 10)).await.unwrap());
    }
    // Appended, readable, not flushed: not acknowledged.
    let (synced, next, flushes) = on_disk(&log, "t");
    assert_eq!((synced, next, flushes), (0, segment::FLUSH_EVERY - 1, 0));
    let mut sub = log.subscribe("t", "g").await.unwrap();
    assert_eq!(drain(&mut sub).await.len(), pending.len());
    // The next one flushes them all at once, and every acknowledgement is ready.
    pending.push(log.start_publish("t", &batch(9, 10)).await.unwrap());
    let (synced, next, flushes) = on_disk(&log, "t");
    assert_eq!((synced, flushes), (next, 1));
    for p in pending {
        // Ready at the first poll (a timeout of zero polls it once).
        let acked = tokio::time::timeout(Duration::ZERO, p).await;
        assert!(matches!(acked, Ok(Ok(()))));
    }
    // One alone flushes itself when nothing else does.
    let alone = log.start_publish("t", &batch(10, 10)).await.unwrap();
    assert!(on_disk(&log, "t").0 < on_disk(&log, "t").1);
    alone.await.unwrap();
    let (synced, next, flushes) = on_disk(&log, "t");
    assert_eq!((synced, flushes), (next, 2));
}

#[tokio::test]
async fn a_group_s_offset_is_never_on_disk_past_what_is_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let log = EmbeddedLog::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let mut sub = log.subscribe("t", "g").await.unwrap();
    let _pending = log.start_publish("t", &batch(0, 10)).await.unwrap();
    let got = drain(&mut sub).await;
    assert_eq!(ids(&got), [0]);
    assert!(
        on_disk(&log, "t").0 < on_disk(&log, "t").1,
        "not flushed yet"
    );
    sub.commit(got[0].ack()).await.unwrap();
    sub.next_within(Duration::from_millis(10)).await.unwrap();
    let offset: i64 = std::fs::read_to_string(dir.path().join("t/groups/g.offset"))
        .unwrap()
        .parse()
        .unwrap();
    let (synced, _, _) = on_disk(&log, "t");
    assert_eq!(offset, 1, "the group's offset is on disk");
    assert!(
        synced >= offset,
        "offset {offset} on disk past the flushed {synced}"
    );
}
