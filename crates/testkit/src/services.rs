//! Service discovery and per-test isolation.

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use sqlx::{AssertSqlSafe, Connection, Executor, MySqlConnection, PgConnection};
use std::time::Duration;

const HOW_TO_START: &str = "start the services with `scripts/services.sh up` and load their \
addresses with `eval \"$(scripts/services.sh env)\"`, or run the whole suite with `scripts/test.sh`";

fn required_env(var: &str, service: &str) -> String {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{var} is not set, so the {service} this test needs cannot be found: {HOW_TO_START}"
        ),
    }
}

/// A name no other test uses: `prefix_` and 12 hex digits, safe as a SQL identifier and a
/// Kafka topic name.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}_{}", &id[..12])
}

/// The Kafka bootstrap servers (`SLUICE_TEST_KAFKA`).
pub fn kafka_bootstrap() -> String {
    required_env("SLUICE_TEST_KAFKA", "Kafka broker")
}

/// The PostgreSQL URL (`SLUICE_TEST_POSTGRES`).
pub fn postgres_url() -> String {
    required_env("SLUICE_TEST_POSTGRES", "PostgreSQL server")
}

/// The MySQL/MariaDB URL (`SLUICE_TEST_MYSQL`).
pub fn mysql_url() -> String {
    required_env("SLUICE_TEST_MYSQL", "MySQL/MariaDB server")
}

/// Runs `scripts/services.sh ACTION SERVICE` of this checkout (`down postgres`, `up kafka`):
/// the outage tests stop a service and start it again with it. It stops only services this
/// checkout started (see the script).
///
/// # Panics
/// When the script cannot run or fails.
pub fn services_script(action: &str, service: &str) {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/services.sh");
    let status = std::process::Command::new("bash")
        .arg(&script)
        .args([action, service])
        .status()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
    assert!(
        status.success(),
        "`scripts/services.sh {action} {service}` failed"
    );
}

/// Runs `cleanup` to completion on a thread of its own with its own runtime, so that
/// `Drop` can clean up from inside or outside a tokio runtime alike.
fn cleanup_blocking<F>(what: String, cleanup: F)
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let joined = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(cleanup)
    })
    .join();
    match joined {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("sluice-testkit: could not clean up {what}: {e}"),
        Err(_) => eprintln!("sluice-testkit: cleanup of {what} panicked"),
    }
}

/// A Kafka topic of a test's own, deleted when dropped.
#[derive(Debug)]
pub struct KafkaTopic {
    /// Bootstrap servers.
    pub bootstrap: String,
    /// The topic's name.
    pub name: String,
}

fn admin(bootstrap: &str) -> AdminClient<DefaultClientContext> {
    ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .unwrap_or_else(|e| panic!("cannot create a Kafka admin client for {bootstrap}: {e}"))
}

/// Creates a topic with `partitions` partitions and a unique name starting with `prefix`.
pub async fn kafka_topic(prefix: &str, partitions: i32) -> KafkaTopic {
    let bootstrap = kafka_bootstrap();
    let name = unique_name(prefix);
    let admin = admin(&bootstrap);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(20)));
    let results = admin
        .create_topics(
            &[NewTopic::new(&name, partitions, TopicReplication::Fixed(1))],
            &opts,
        )
        .await
        .unwrap_or_else(|e| {
            panic!("Kafka at {bootstrap} did not answer a create-topic request ({e}): is it running? `scripts/services.sh status`")
        });
    for r in results {
        if let Err((topic, code)) = r {
            panic!("Kafka at {bootstrap} refused to create topic {topic}: {code}");
        }
    }
    KafkaTopic { bootstrap, name }
}

impl Drop for KafkaTopic {
    fn drop(&mut self) {
        let bootstrap = self.bootstrap.clone();
        let name = self.name.clone();
        cleanup_blocking(format!("Kafka topic {name}"), async move {
            let admin = admin(&bootstrap);
            let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
            admin
                .delete_topics(&[&name], &opts)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        });
    }
}

/// A PostgreSQL schema of a test's own, dropped (with everything in it) when dropped.
#[derive(Debug)]
pub struct PostgresSchema {
    /// The schema's name.
    pub schema: String,
    /// A URL whose connections use the schema as their `search_path`.
    pub url: String,
    /// The server's URL, without the schema option.
    pub server_url: String,
}

/// Creates a schema with a unique name starting with `prefix`.
pub async fn postgres_schema(prefix: &str) -> PostgresSchema {
    let server_url = postgres_url();
    let schema = unique_name(prefix);
    let mut conn = PgConnection::connect(&server_url).await.unwrap_or_else(|e| {
        panic!("cannot connect to PostgreSQL at {server_url} ({e}): is it running? `scripts/services.sh status`")
    });
    conn.execute(AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\"")))
        .await
        .unwrap_or_else(|e| panic!("cannot create schema {schema}: {e}"));
    let sep = if server_url.contains('?') { '&' } else { '?' };
    let url = format!("{server_url}{sep}options=-c%20search_path%3D{schema}");
    PostgresSchema {
        schema,
        url,
        server_url,
    }
}

impl Drop for PostgresSchema {
    fn drop(&mut self) {
        let url = self.server_url.clone();
        let schema = self.schema.clone();
        cleanup_blocking(format!("PostgreSQL schema {schema}"), async move {
            let mut conn = PgConnection::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            conn.execute(AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        });
    }
}

/// A MySQL/MariaDB database of a test's own, dropped when dropped.
#[derive(Debug)]
pub struct MysqlDatabase {
    /// The database's name.
    pub database: String,
    /// A URL that connects to the database.
    pub url: String,
    /// The server's URL as configured.
    pub server_url: String,
}

fn with_database(server_url: &str, database: &str) -> String {
    // Replace the path of `mysql://user:pass@host:port/db?opts` with the new database.
    let (base, query) = match server_url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (server_url, None),
    };
    let authority_end = base
        .find("://")
        .map(|i| i + 3)
        .and_then(|start| base[start..].find('/').map(|j| start + j))
        .unwrap_or(base.len());
    let mut url = format!("{}/{database}", &base[..authority_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

/// Creates a database with a unique name starting with `prefix`.
pub async fn mysql_database(prefix: &str) -> MysqlDatabase {
    let server_url = mysql_url();
    let database = unique_name(prefix);
    let mut conn = MySqlConnection::connect(&server_url).await.unwrap_or_else(|e| {
        panic!("cannot connect to MySQL/MariaDB at {server_url} ({e}): is it running? `scripts/services.sh status`")
    });
    conn.execute(AssertSqlSafe(format!("CREATE DATABASE `{database}`")))
        .await
        .unwrap_or_else(|e| panic!("cannot create database {database}: {e}"));
    let url = with_database(&server_url, &database);
    MysqlDatabase {
        database,
        url,
        server_url,
    }
}

impl Drop for MysqlDatabase {
    fn drop(&mut self) {
        let url = self.server_url.clone();
        let database = self.database.clone();
        cleanup_blocking(format!("MySQL database {database}"), async move {
            let mut conn = MySqlConnection::connect(&url)
                .await
                .map_err(|e| e.to_string())?;
            conn.execute(AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS `{database}`"
            )))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_unique_and_safe() {
        let a = unique_name("t");
        let b = unique_name("t");
        assert_ne!(a, b);
        assert!(
            a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{a}"
        );
    }

    #[test]
    fn database_is_swapped_in_the_url() {
        assert_eq!(
            with_database("mysql://u:p@127.0.0.1:3306/sluice", "t_1"),
            "mysql://u:p@127.0.0.1:3306/t_1"
        );
        assert_eq!(
            with_database("mysql://u:p@h:1/x?ssl-mode=disabled", "t_1"),
            "mysql://u:p@h:1/t_1?ssl-mode=disabled"
        );
        assert_eq!(
            with_database("mysql://u:p@h:1", "t_1"),
            "mysql://u:p@h:1/t_1"
        );
    }
}
