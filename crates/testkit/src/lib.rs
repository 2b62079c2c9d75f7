//! # sluice-testkit
//!
//! Finds the real services the tests run against and hands each test its own corner of
//! them, cleaned up when the handle drops:
//!
//! - [`kafka_topic`]: a fresh topic on the broker at `SLUICE_TEST_KAFKA`;
//! - [`postgres_schema`]: a fresh schema in the database at `SLUICE_TEST_POSTGRES`;
//! - [`mysql_database`]: a fresh database on the server at `SLUICE_TEST_MYSQL`;
//! - [`mock_api`]: the flaky mock HTTP API ([`MockApi::start`]), which injects each failure
//!   class on demand;
//! - [`batches`]: batches of records with an `id` column, built one way for every test;
//! - [`receiver`]: a local HTTP receiver for what Sluice sends (sinks, webhooks);
//! - [`smtp`]: a local SMTP server that records the mails it gets (email alerts);
//! - [`PrivatePostgres`]: a PostgreSQL server of the test's own, to stop and start (an
//!   outage) without touching the shared one;
//! - [`PrivateKafka`]: a single-node KRaft Kafka broker of the test's own, likewise;
//! - [`services_script`]: `scripts/services.sh down|up SERVICE`, for the outage tests.
//!
//! A missing variable is a test failure with a message saying how to start the services,
//! never a skip: a test must not pass because its service was absent.
//!
//! ```no_run
//! # async fn demo() {
//! let pg = sluice_testkit::postgres_schema("smoke").await;
//! let pool = sqlx::PgPool::connect(&pg.url).await.unwrap();
//! # }
//! ```

pub mod batches;
pub mod mock_api;
mod private_kafka;
mod private_pg;
pub mod receiver;
mod services;
pub mod smtp;

pub use services::{
    KafkaTopic, MysqlDatabase, PostgresSchema, kafka_bootstrap, kafka_topic, mysql_database,
    mysql_url, postgres_schema, postgres_url, services_script, unique_name,
};

pub use mock_api::{MockApi, MockConfig, MockHandle};
pub use private_kafka::PrivateKafka;
pub use private_pg::PrivatePostgres;
