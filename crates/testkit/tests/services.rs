//! Smoke tests of the real databases every other integration test relies on: a sqlx round
//! trip against PostgreSQL and MariaDB. They fail, never skip, when a service is absent.
//! Kafka's round trip through the real broker (produce with acks=all, a consumer group,
//! manual offset commits, two members sharing partitions, a broker restart) is tested in
//! `crates/buffer/tests/kafka.rs` and `kafka_outage.rs`.

use sqlx::{Connection, Row};

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
    // The table lives in the test's own schema, not in `public`. (Resolved by name as the
    // test's queries resolve it: other tests' schemas may have an `items` table too.)
    let schema: String = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.oid = 'items'::regclass",
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
