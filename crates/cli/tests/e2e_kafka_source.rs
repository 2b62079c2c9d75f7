//! `type: kafka`, the node kind added through the registry alone: JSON messages of an
//! external topic (two partitions) into SQLite in `mode: append`, so that a message read
//! twice would be a second row. Each run reads what the topic held when it started, from
//! the offsets of the last checkpoint: a second run with nothing new writes nothing, new
//! messages (and a bad one, skipped) arrive once, and `sluice health` checks the topic.

mod e2e_common;

use e2e_common::Sandbox;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use sqlx::Connection;
use std::time::Duration;

async fn produce(bootstrap: &str, topic: &str, messages: &[(i32, String)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("a producer");
    for (partition, payload) in messages {
        producer
            .send(
                FutureRecord::<(), _>::to(topic)
                    .partition(*partition)
                    .payload(payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce to {topic}: {e}"));
    }
}

fn orders(ids: std::ops::Range<i64>) -> Vec<(i32, String)> {
    ids.map(|i| {
        let partition = i32::from(i % 2 == 1);
        // Pretty-printed on purpose for some: a message is one record whatever its layout.
        let text = if i % 10 == 0 {
            format!("{{\n  \"id\": {i},\n  \"name\": \"order {i}\"\n}}")
        } else {
            format!("{{\"id\": {i}, \"name\": \"order {i}\"}}")
        };
        (partition, text)
    })
    .collect()
}

async fn rows(path: &std::path::Path) -> (i64, i64, i64) {
    let url = format!("sqlite://{}", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("the SQLite file opens");
    sqlx::query_as("SELECT count(*), count(DISTINCT id), coalesce(sum(id), 0) FROM orders")
        .fetch_one(&mut conn)
        .await
        .expect("orders is readable")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_is_read_once_across_runs_in_append_mode() {
    let topic = sluice_testkit::kafka_topic("e2e_kafka_src", 2).await;
    let mut sb = Sandbox::new("e2e_kafka_src").await;
    sb.set("BROKERS", topic.bootstrap.clone());
    sb.set("TOPIC", topic.name.clone());
    produce(&topic.bootstrap, &topic.name, &orders(0..250)).await;
    let file = sb.write(
        "p.yaml",
        r#"
pipeline: kafka_in
nodes:
  events:
    type: kafka
    brokers: ["${BROKERS}"]
    topic: ${TOPIC}
    bad_records: skip
    batching: { max_rows: 40 }
  db:
    type: sqlite
    inputs: [events]
    url: sqlite://out.db
    table: orders
    mode: append
"#,
    );
    let file = file.to_str().unwrap().to_owned();
    let db = sb.path("out.db");

    sb.sluice(&["validate", &file]).await.expect_code(0);
    sb.sluice(&["run", &file, "--once", "--plain"])
        .await
        .expect_code(0);
    assert_eq!(rows(&db).await, (250, 250, (0..250).sum()));

    // Nothing new: nothing written.
    sb.sluice(&["run", &file, "--once", "--plain"])
        .await
        .expect_code(0);
    assert_eq!(rows(&db).await.0, 250);

    // New messages and a bad one (skipped, with the run saying so).
    let mut more = orders(250..330);
    more.insert(7, (0, "not json".to_owned()));
    produce(&topic.bootstrap, &topic.name, &more).await;
    let third = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    third.expect_code(0);
    assert!(
        third.stderr.contains("skipped the message")
            || third.stdout.contains("skipped the message"),
        "the skipped message is reported: {third}"
    );
    assert_eq!(rows(&db).await, (330, 330, (0..330).sum()));

    let health = sb.sluice(&["health", &file]).await;
    health.expect_code(0);
    assert!(
        health.stdout.contains(&format!("topic {}", topic.name)),
        "health checks the topic: {health}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_fails_the_run_as_invalid_request() {
    let mut sb = Sandbox::new("e2e_kafka_nt").await;
    sb.set("BROKERS", sluice_testkit::kafka_bootstrap());
    let file = sb.write(
        "p.yaml",
        r#"
pipeline: kafka_nt
nodes:
  events:
    type: kafka
    brokers: ["${BROKERS}"]
    topic: no_such_topic_for_sluice
    properties: { allow.auto.create.topics: "false" }
  db:
    type: sqlite
    inputs: [events]
    url: sqlite://out.db
    table: orders
"#,
    );
    let file = file.to_str().unwrap().to_owned();
    let out = sb.sluice(&["run", &file, "--once", "--plain"]).await;
    out.expect_code(1);
    assert!(
        out.stderr.contains("no_such_topic_for_sluice") && out.stderr.contains("invalid_request"),
        "the failure names the topic and its class: {out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn start_latest_reads_only_what_comes_after_the_first_run() {
    let topic = sluice_testkit::kafka_topic("e2e_kafka_latest", 2).await;
    let mut sb = Sandbox::new("e2e_kafka_latest").await;
    sb.set("BROKERS", topic.bootstrap.clone());
    sb.set("TOPIC", topic.name.clone());
    produce(&topic.bootstrap, &topic.name, &orders(0..50)).await;
    let file = sb.write(
        "p.yaml",
        r#"
pipeline: kafka_latest
nodes:
  events:
    type: kafka
    brokers: ["${BROKERS}"]
    topic: ${TOPIC}
    start: latest
  out:
    type: file_sink
    inputs: [events]
    path: out.ndjson
    format: ndjson
"#,
    );
    let file = file.to_str().unwrap().to_owned();
    let lines = |sb: &Sandbox| {
        std::fs::read_to_string(sb.path("out.ndjson"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    // The first run starts at the end: nothing of what was there before.
    sb.sluice(&["run", &file, "--once", "--plain"])
        .await
        .expect_code(0);
    assert_eq!(lines(&sb), 0);
    // What comes after it is read by the next run, once.
    produce(&topic.bootstrap, &topic.name, &orders(50..80)).await;
    sb.sluice(&["run", &file, "--once", "--plain"])
        .await
        .expect_code(0);
    assert_eq!(lines(&sb), 30);
    sb.sluice(&["run", &file, "--once", "--plain"])
        .await
        .expect_code(0);
    assert_eq!(lines(&sb), 30);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_s_commit_marker_does_not_hold_the_run() {
    use rdkafka::producer::Producer;
    let topic = sluice_testkit::kafka_topic("e2e_kafka_tx", 1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &topic.bootstrap)
        .set("transactional.id", format!("{}-tx", topic.name))
        .create()
        .expect("a transactional producer");
    producer
        .init_transactions(Duration::from_secs(30))
        .expect("transactions start");
    producer.begin_transaction().expect("a transaction");
    for (_, payload) in orders(0..10) {
        producer
            .send(
                FutureRecord::<(), _>::to(&topic.name).payload(&payload),
                Duration::from_secs(10),
            )
            .await
            .unwrap_or_else(|(e, _)| panic!("produce: {e}"));
    }
    producer
        .commit_transaction(Duration::from_secs(30))
        .expect("the transaction commits");
    let mut sb = Sandbox::new("e2e_kafka_tx").await;
    sb.set("BROKERS", topic.bootstrap.clone());
    sb.set("TOPIC", topic.name.clone());
    let file = sb.write(
        "p.yaml",
        r#"
pipeline: kafka_tx
nodes:
  events:
    type: kafka
    brokers: ["${BROKERS}"]
    topic: ${TOPIC}
  db:
    type: sqlite
    inputs: [events]
    url: sqlite://out.db
    table: orders
    mode: append
"#,
    );
    let file = file.to_str().unwrap().to_owned();
    // The high watermark counts the commit marker, which is no message: the run ends at
    // the consumer's position with every record (waiting for it would end the run as
    // `dependency` once the source's retries are spent).
    sb.sluice(&["run", &file, "--once", "--plain"])
        .await
        .expect_code(0);
    assert_eq!(rows(&sb.path("out.db")).await, (10, 10, (0..10).sum()));
}
