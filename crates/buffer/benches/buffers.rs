//! Buffer throughput: publish + consume of the same batches through the embedded log and
//! Kafka, beside librdkafka's raw producer on the same bytes (the ceiling), and the wire
//! formats' size and encode/decode speed. A benchmark, not a test: it asserts nothing.
//!
//! ```sh
//! eval "$(scripts/services.sh env)"
//! cargo bench -p sluice-buffer --bench buffers            # BATCHES=200 ROWS=1000 RUNS=3
//! ```
//! Prints medians of RUNS runs as a markdown table.

use arrow::array::{Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sluice_buffer::wire::{self, Message, WireFormat};
use sluice_buffer::{Buffer, EmbeddedLog, EmbeddedOptions, FsyncPolicy, KafkaBuffer, KafkaOptions};
use sluice_core::{Batch, SourcePosition};
use sluice_testkit::batches::page_ids;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A batch of `rows` records shaped like an API page: ids, timestamps, short and long text.
fn batch(page: u64, rows: usize) -> Batch {
    let ids = page_ids(page, rows as i64, 1_000_000);
    let names: Vec<String> = ids.iter().map(|i| format!("customer-{i}")).collect();
    let notes: Vec<String> = ids
        .iter()
        .map(|i| {
            format!(
                "order {i} shipped to {} street, city {}, with {} items; notes: {}",
                i % 977,
                i % 89,
                i % 7,
                "lorem ipsum dolor sit amet ".repeat(8)
            )
        })
        .collect();
    let ts: Vec<i64> = ids
        .iter()
        .map(|i| 1_760_000_000_000_000 + i * 1000)
        .collect();
    let records = RecordBatch::try_from_iter([
        ("id", Arc::new(Int64Array::from(ids)) as _),
        ("name", Arc::new(StringArray::from(names)) as _),
        ("note", Arc::new(StringArray::from(notes)) as _),
        (
            "updated_at",
            Arc::new(TimestampMicrosecondArray::from(ts).with_timezone("UTC")) as _,
        ),
    ])
    .unwrap();
    Batch::new("bench", "src", SourcePosition::page(page), records)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

struct Row {
    name: String,
    secs: Vec<f64>,
    bytes: usize,
}

/// Seconds of one round trip's parts.
struct Trip {
    /// Subscribing until the first delivery came (Kafka: joining the consumer group), with
    /// one warm-up batch published before. Once per run in a pipeline, beside the source's
    /// first reads; not in the other figures.
    join: f64,
    publish: f64,
    /// Consuming every batch, each delivery committed as the engine's sinks do, until the
    /// topic runs dry (which confirms the commits).
    consume: f64,
}

/// Publishes and consumes every batch: one publish at a time (`in_flight` 1, each acked
/// before the next), or as the engine's sources do, up to `in_flight` batches started
/// and their acks taken in order. The subscriber joins first, as a pipeline's sink does
/// when the run starts.
async fn round_trip(buffer: &dyn Buffer, topic: &str, batches: &[Batch], in_flight: usize) -> Trip {
    let start = Instant::now();
    buffer.publish(topic, &batch(1_000_000, 10)).await.unwrap();
    let mut sub = buffer.subscribe(topic, "bench").await.unwrap();
    loop {
        if let Some(d) = sub.next_within(Duration::from_secs(10)).await.unwrap() {
            sub.commit(d.ack()).await.unwrap();
            break;
        }
    }
    let join = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut acks = std::collections::VecDeque::new();
    for b in batches {
        acks.push_back(buffer.start_publish(topic, b).await.unwrap());
        if acks.len() >= in_flight {
            acks.pop_front().unwrap().await.unwrap();
        }
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let publish = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let mut seen = 0;
    while seen < batches.len() {
        if let Some(d) = sub.next_within(Duration::from_secs(10)).await.unwrap() {
            sub.commit(d.ack()).await.unwrap();
            seen += 1;
        }
    }
    // Until nothing is left: the commits are confirmed, as when a sink catches up.
    while sub
        .next_within(Duration::from_millis(1))
        .await
        .unwrap()
        .is_some()
    {}
    Trip {
        join,
        publish,
        consume: start.elapsed().as_secs_f64(),
    }
}

#[tokio::main]
async fn main() {
    let n_batches = env("BATCHES", 200);
    let rows = env("ROWS", 1000);
    let runs = env("RUNS", 3);
    let batches: Vec<Batch> = (0..n_batches as u64).map(|p| batch(p, rows)).collect();
    let records = n_batches * rows;
    let mut table: Vec<Row> = Vec::new();

    // Wire formats: size and encode + decode time.
    for format in [
        WireFormat::ArrowZstd,
        WireFormat::ArrowLz4,
        WireFormat::Arrow,
        WireFormat::JsonLines,
    ] {
        let mut secs = Vec::new();
        let mut bytes = 0;
        for _ in 0..runs {
            let start = Instant::now();
            bytes = 0;
            for b in &batches {
                for m in wire::encode(b, format, usize::MAX).unwrap() {
                    bytes += m.payload.len();
                    let frame = m.to_frame();
                    let back = wire::decode(&Message::from_frame(&frame).unwrap()).unwrap();
                    assert_eq!(back.batch.num_rows(), rows);
                }
            }
            secs.push(start.elapsed().as_secs_f64());
        }
        table.push(Row {
            name: format!("wire encode+decode {}", format.as_str()),
            secs,
            bytes,
        });
    }

    // Embedded log, both fsync policies.
    for (label, fsync) in [
        ("every batch", FsyncPolicy::EveryBatch),
        ("interval 1s", FsyncPolicy::Interval(Duration::from_secs(1))),
    ] {
        let mut secs = Vec::new();
        for _ in 0..runs {
            let dir = tempfile::tempdir().unwrap();
            let log = EmbeddedLog::open(
                dir.path(),
                EmbeddedOptions {
                    fsync,
                    ..EmbeddedOptions::default()
                },
            )
            .unwrap();
            let trip = round_trip(&log, "t", &batches, 1).await;
            secs.push(trip.publish + trip.consume);
        }
        table.push(Row {
            name: format!("embedded log publish+consume (fsync {label})"),
            secs,
            bytes: 0,
        });
    }

    if let Ok(bootstrap) = std::env::var("SLUICE_TEST_KAFKA") {
        // The last variant consumes with librdkafka's own `fetch.queue.backoff.ms` (1 s)
        // instead of Sluice's 20 ms: with more than the consumer's 16 MiB queue published
        // (BATCHES=1000), its consume shows the waits a backlog's drain had.
        for (label, in_flight, backoff) in [
            ("one at a time", 1, None),
            ("8 in flight, as sources publish", 8, None),
            (
                "8 in flight, librdkafka's 1 s fetch backoff",
                8,
                Some("1000"),
            ),
        ] {
            let (mut secs, mut publish_secs, mut consume_secs, mut join_secs) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for run in 0..runs {
                let mut options = KafkaOptions {
                    brokers: bootstrap.clone(),
                    partitions: 1,
                    ..KafkaOptions::default()
                };
                if let Some(ms) = backoff {
                    options
                        .properties
                        .insert("fetch.queue.backoff.ms".into(), ms.into());
                }
                let kafka = KafkaBuffer::new(options).unwrap();
                let topic = format!(
                    "bench.buffer.{}.{in_flight}.{}.{run}",
                    std::process::id(),
                    backoff.unwrap_or("20")
                );
                kafka.ensure_topic(&topic).await.unwrap();
                let trip = round_trip(&kafka, &topic, &batches, in_flight).await;
                secs.push(trip.publish + trip.consume);
                publish_secs.push(trip.publish);
                consume_secs.push(trip.consume);
                join_secs.push(trip.join);
            }
            table.push(Row {
                name: format!("kafka publish+consume (acks=all, idempotent; {label})"),
                secs,
                bytes: 0,
            });
            table.push(Row {
                name: format!("- of which publish ({label})"),
                secs: publish_secs,
                bytes: 0,
            });
            table.push(Row {
                name: format!("- of which consume + commit ({label})"),
                secs: consume_secs,
                bytes: 0,
            });
            table.push(Row {
                name: format!("- before them, once: joining the group ({label}; records/s: n/a)"),
                secs: join_secs,
                bytes: 0,
            });
        }

        // The ceiling: librdkafka producing the same encoded bytes (the Kafka buffer's
        // default format), no Sluice in between.
        let frames: Vec<Vec<u8>> = batches
            .iter()
            .map(|b| {
                wire::encode(b, KafkaOptions::default().format, usize::MAX)
                    .unwrap()
                    .remove(0)
                    .payload
            })
            .collect();
        let mut secs = Vec::new();
        for run in 0..runs {
            let producer: FutureProducer = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("enable.idempotence", "true")
                .set("acks", "all")
                .set("linger.ms", "5")
                .create()
                .unwrap();
            let topic = format!("bench.raw.{}.{run}", std::process::id());
            let start = Instant::now();
            let pending: Vec<_> = frames
                .iter()
                .map(|f| {
                    producer
                        .send_result(FutureRecord::<(), _>::to(&topic).payload(f))
                        .unwrap()
                })
                .collect();
            for p in pending {
                p.await.unwrap().unwrap();
            }
            secs.push(start.elapsed().as_secs_f64());
        }
        table.push(Row {
            name: "ceiling: librdkafka raw produce of the same bytes".into(),
            secs,
            bytes: 0,
        });
    } else {
        eprintln!(
            "SLUICE_TEST_KAFKA is not set: Kafka rows skipped (eval \"$(scripts/services.sh env)\")"
        );
    }

    println!("{n_batches} batches x {rows} records ({records} records), median of {runs} runs\n");
    println!("| what | median s | records/s | batches/s | payload MB |");
    println!("|---|---:|---:|---:|---:|");
    for row in &table {
        let m = median(row.secs.clone());
        let mb = if row.bytes > 0 {
            format!("{:.1}", row.bytes as f64 / 1e6)
        } else {
            "".into()
        };
        println!(
            "| {} | {m:.3} | {:.0} | {:.0} | {mb} |",
            row.name,
            records as f64 / m,
            n_batches as f64 / m
        );
    }
}
