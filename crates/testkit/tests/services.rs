//! Smoke tests of the real services every other integration test relies on: a Kafka
//! produce/consume round trip with a consumer group and a manual offset commit, and a sqlx
//! round trip against PostgreSQL and MariaDB. They fail, never skip, when a service is absent.

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use sqlx::{Connection, Row};
use std::time::Duration;

fn consumer(bootstrap: &str, group: &str) -> StreamConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .expect("consumer")
}

#[tokio::test]
async fn kafka_round_trip_with_group_and_manual_commit() {
    let topic = sluice_testkit::kafka_topic("smoke", 1).await;
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &topic.bootstrap)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .create()
        .expect("producer");
    for i in 0..3 {
        let payload = format!("record-{i}");
        let key = format!("k{i}");
        producer
            .send(
                FutureRecord::to(&topic.name)
                    .payload(&payload)
                    .key(&key)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: "batch_id",
                        value: Some(key.as_str()),
                    })),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .expect("delivery acked");
    }

    let group = sluice_testkit::unique_name("smoke_group");
    let first = consumer(&topic.bootstrap, &group);
    first.subscribe(&[&topic.name]).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let msg = tokio::time::timeout(Duration::from_secs(30), first.recv())
            .await
            .expect("a message within 30 s")
            .expect("no consumer error");
        let header = msg.headers().unwrap().get(0);
        assert_eq!(header.key, "batch_id");
        seen.push(String::from_utf8(msg.payload().unwrap().to_vec()).unwrap());
        // Commit only what was processed: the first two records.
        first.commit_message(&msg, CommitMode::Sync).unwrap();
    }
    assert_eq!(seen, ["record-0", "record-1"]);
    let committed = first
        .committed(Duration::from_secs(10))
        .expect("committed offsets");
    let elem = committed.find_partition(&topic.name, 0).unwrap();
    assert_eq!(elem.offset(), Offset::Offset(2));
    drop(first);

    // A new member of the same group resumes after the committed offset.
    let second = consumer(&topic.bootstrap, &group);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(&topic.name, 0);
    second.assign(&tpl).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(30), second.recv())
        .await
        .expect("the third message within 30 s")
        .expect("no consumer error");
    assert_eq!(msg.payload().unwrap(), b"record-2");
    assert_eq!(msg.offset(), 2);
}

#[tokio::test]
async fn postgres_round_trip() {
    let pg = sluice_testkit::postgres_schema("smoke").await;
    let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    sqlx::query("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    for (id, name) in [(1_i64, "a"), (2, "b"), (1, "c")] {
        sqlx::query(
            "INSERT INTO items (id, name) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name",
        )
        .bind(id)
        .bind(name)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let rows = sqlx::query("SELECT id, name FROM items ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [(1, "c".to_owned()), (2, "b".to_owned())]);
    // The table lives in the test's own schema, not in `public`.
    let schema: String = sqlx::query_scalar(
        "SELECT table_schema::text FROM information_schema.tables WHERE table_name = 'items'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(schema, pg.schema);
}

#[tokio::test]
async fn mysql_round_trip() {
    let db = sluice_testkit::mysql_database("smoke").await;
    let mut conn = sqlx::MySqlConnection::connect(&db.url).await.unwrap();
    sqlx::query("CREATE TABLE items (id BIGINT PRIMARY KEY, name TEXT NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    for (id, name) in [(1_i64, "a"), (2, "b"), (1, "c")] {
        sqlx::query(
            "INSERT INTO items (id, name) VALUES (?, ?) \
             ON DUPLICATE KEY UPDATE name = VALUES(name)",
        )
        .bind(id)
        .bind(name)
        .execute(&mut conn)
        .await
        .unwrap();
    }
    let rows = sqlx::query("SELECT id, name FROM items ORDER BY id")
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(got, [(1, "c".to_owned()), (2, "b".to_owned())]);
    let current: String = sqlx::query_scalar("SELECT DATABASE()")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(current, db.database);
}
