//! End to end through the `sluice` binary into PostgreSQL and MySQL/MariaDB: field names a
//! database cannot take as they are (a 70-character key, `userId` next to `userid`, an
//! empty key, `Order Total ($)`).
//!
//! - `naming: verbatim` (the default) refuses the batch with `contract_changed`, saying
//!   what to do; no table is created.
//! - `naming: snake_case` writes them to normalised columns, each value in its column. A
//!   second run whose records bring the fields in another order, plus `userid` (which
//!   collides with the `userId` of the first run), maps `userId` to the same column as
//!   before: the mapping is recorded in the state store and reused. `sluice runs show`
//!   lists it; `sluice plan` shows the rule and the names of declared fields. `key: [Id]`
//!   names the field `Id`, which is the column `id` (the upsert's key).

mod e2e_common;

use e2e_common::Sandbox;
use serde_json::json;
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeMap;

fn long_key() -> String {
    format!("customer{}", "X".repeat(62))
}

/// The first run's record: `userId` only.
fn first_records() -> String {
    let mut r = serde_json::Map::new();
    r.insert("Id".into(), json!(1));
    r.insert(long_key(), json!("long-1"));
    r.insert("userId".into(), json!("U1"));
    r.insert(String::new(), json!("empty-1"));
    r.insert("Order Total ($)".into(), json!("1.50"));
    format!("{}\n", serde_json::Value::Object(r))
}

/// The second run's record: the same fields in another order, and `userid`.
fn second_records() -> String {
    let fields = [
        ("Order Total ($)", json!("2.50")),
        ("userid", json!("u2")),
        ("", json!("empty-2")),
        ("userId", json!("U2")),
        ("Id", json!(2)),
    ];
    let mut text = String::from("{");
    for (i, (k, v)) in fields.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(&format!("{}:{v}", json!(k)));
    }
    text.push_str(&format!(",{}:\"long-2\"}}\n", json!(long_key())));
    text
}

fn pipeline(name: &str, sink_type: &str, url_var: &str, naming: &str) -> String {
    format!(
        r#"
pipeline: {name}
nodes:
  orders:
    type: file
    path: in_{name}/*.ndjson
    format: ndjson
  db:
    type: {sink_type}
    inputs: [orders]
    url: ${{{url_var}}}
    table: {name}
    mode: upsert
    key: [Id]
    schema_policy: evolve
    naming: {naming}
"#
    )
}

/// The table's columns and its rows (by `id`) as text, from PostgreSQL or MySQL.
async fn read_table(sb: &Sandbox, mysql_url: Option<&str>, table: &str) -> TableText {
    let columns: Vec<String> = match mysql_url {
        None => {
            let pool = sb.pool().await;
            sqlx::query(
                "SELECT column_name::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1 ORDER BY column_name",
            )
            .bind(table)
            .fetch_all(&pool)
            .await
            .expect("list columns")
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect()
        }
        Some(url) => {
            let pool = sqlx::mysql::MySqlPoolOptions::new()
                .max_connections(1)
                .connect(url)
                .await
                .expect("connect to MySQL");
            sqlx::query(
                "SELECT CAST(column_name AS CHAR) FROM information_schema.columns
                 WHERE table_schema = DATABASE() AND table_name = ? ORDER BY column_name",
            )
            .bind(table)
            .fetch_all(&pool)
            .await
            .expect("list columns")
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect()
        }
    };
    let select_as_text = |c: &str| match mysql_url {
        None => format!("\"{}\"::text", c.replace('"', "\"\"")),
        Some(_) => format!("CAST(`{}` AS CHAR)", c.replace('`', "``")),
    };
    let mut rows: BTreeMap<String, BTreeMap<String, Option<String>>> = BTreeMap::new();
    for c in &columns {
        let sql = format!(
            "SELECT {}, {} FROM {table} ORDER BY id",
            select_as_text("id"),
            select_as_text(c)
        );
        let values: Vec<(String, Option<String>)> = match mysql_url {
            None => sqlx::query(AssertSqlSafe(sql))
                .fetch_all(&sb.pool().await)
                .await
                .expect("read a column")
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect(),
            Some(url) => {
                let pool = sqlx::mysql::MySqlPoolOptions::new()
                    .max_connections(1)
                    .connect(url)
                    .await
                    .expect("connect to MySQL");
                sqlx::query(AssertSqlSafe(sql))
                    .fetch_all(&pool)
                    .await
                    .expect("read a column")
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect()
            }
        };
        for (id, v) in values {
            rows.entry(id).or_default().insert(c.clone(), v);
        }
    }
    TableText { columns, rows }
}

struct TableText {
    columns: Vec<String>,
    rows: BTreeMap<String, BTreeMap<String, Option<String>>>,
}

impl TableText {
    fn get(&self, id: &str, column: &str) -> Option<&str> {
        self.rows.get(id)?.get(column)?.as_deref()
    }
}

async fn names_are_normalised_recorded_and_reused(sink_type: &str) {
    let mut sb = Sandbox::new(&format!("naming_{sink_type}")).await;
    let _mysql = if sink_type == "mysql" {
        let db = sluice_testkit::mysql_database("naming").await;
        sb.set("DB_URL", db.url.clone());
        Some(db)
    } else {
        let url = sb.pg.url.clone();
        sb.set("DB_URL", url);
        None
    };
    let mysql_url = _mysql.as_ref().map(|d| d.url.clone());
    for name in ["verbatim_t", "snake_t"] {
        std::fs::create_dir_all(sb.path(&format!("in_{name}"))).expect("a folder");
        sb.write(&format!("in_{name}/a.ndjson"), &first_records());
    }

    // verbatim: refused, with what to do.
    let file = sb.write(
        "verbatim.yaml",
        &pipeline("verbatim_t", sink_type, "DB_URL", "verbatim"),
    );
    let out = sb
        .sluice(&["run", file.to_str().unwrap(), "--once", "--plain"])
        .await;
    assert_ne!(out.code, Some(0), "{out}");
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("contract_changed"), "{out}");
    assert!(said.contains("naming: snake_case"), "{out}");

    // snake_case: the first run.
    let file = sb.write(
        "snake.yaml",
        &pipeline("snake_t", sink_type, "DB_URL", "snake_case"),
    );
    let file = file.to_str().unwrap().to_owned();
    sb.sluice(&["run", &file, "--once", "--plain"])
        .await
        .expect_code(0);
    let t = read_table(&sb, mysql_url.as_deref(), "snake_t").await;
    let long: Vec<&String> = t
        .columns
        .iter()
        .filter(|c| c.starts_with("customerx"))
        .collect();
    assert_eq!(
        long.len(),
        1,
        "one column for the long key: {:?}",
        t.columns
    );
    let long = long[0].clone();
    // Cut to the engine's limit (PostgreSQL 63 bytes, MySQL 64 characters), ending in
    // `_` and 8 hex digits of a hash of the whole key.
    let limit = if sink_type == "mysql" { 64 } else { 63 };
    assert_eq!(long.len(), limit, "{long}");
    let (head, hash) = long.split_at(limit - 9);
    assert!(
        head == format!("customer{}", "x".repeat(limit - 17))
            && hash.starts_with('_')
            && hash[1..].chars().all(|c| c.is_ascii_hexdigit()),
        "{long}"
    );
    for c in ["id", "userid", "unnamed", "order_total"] {
        assert!(t.columns.contains(&c.to_owned()), "{c} in {:?}", t.columns);
    }
    assert_eq!(t.columns.len(), 5, "{:?}", t.columns);
    assert_eq!(t.get("1", "userid"), Some("U1"));
    assert_eq!(t.get("1", "unnamed"), Some("empty-1"));
    assert_eq!(t.get("1", "order_total"), Some("1.50"));
    assert_eq!(t.get("1", &long), Some("long-1"));

    // The second run: another order, and `userid`, which collides with `userId`.
    sb.write("in_snake_t/b.ndjson", &second_records());
    sb.sluice(&["run", &file, "--once", "--plain"])
        .await
        .expect_code(0);
    let t = read_table(&sb, mysql_url.as_deref(), "snake_t").await;
    let suffixed: Vec<&String> = t
        .columns
        .iter()
        .filter(|c| c.starts_with("userid_"))
        .collect();
    assert_eq!(suffixed.len(), 1, "{:?}", t.columns);
    let suffixed = suffixed[0].clone();
    assert_eq!(t.columns.len(), 6, "{:?}", t.columns);
    assert_eq!(t.get("2", "userid"), Some("U2"), "`userId` kept its column");
    assert_eq!(t.get("2", &suffixed), Some("u2"));
    assert_eq!(t.get("1", &suffixed), None);
    assert_eq!(t.get("2", "unnamed"), Some("empty-2"));
    assert_eq!(t.get("2", "order_total"), Some("2.50"));
    assert_eq!(t.get("2", &long), Some("long-2"));

    // The run record lists the mapping the run applied.
    let runs = sb.runs().await;
    let last = runs[0]["id"].as_str().expect("a run id").to_owned();
    let show = sb.sluice(&["runs", "show", &last]).await;
    show.expect_code(0);
    for line in [
        "`userId` -> `userid`".to_owned(),
        format!("`userid` -> `{suffixed}`"),
        "`` -> `unnamed`".to_owned(),
        "`Order Total ($)` -> `order_total`".to_owned(),
        format!("`{}` -> `{long}`", long_key()),
        "`Id` -> `id`".to_owned(),
    ] {
        assert!(show.stdout.contains(&line), "{line} in {show}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_names_are_normalised_recorded_and_reused() {
    names_are_normalised_recorded_and_reused("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_names_are_normalised_recorded_and_reused() {
    names_are_normalised_recorded_and_reused("mysql").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_the_rule_and_the_columns_of_declared_fields() {
    let sb = Sandbox::new("naming_plan").await;
    let file = sb.write(
        "plan.yaml",
        r#"
pipeline: naming_plan
nodes:
  orders:
    type: file
    path: in/*.ndjson
    format: ndjson
    schema:
      columns:
        - { name: userId, type: string }
        - { name: userid, type: string }
        - { name: "Order Total ($)", type: float64 }
  db:
    type: postgres
    inputs: [orders]
    url: ${PG_URL}
    table: t
    naming: snake_case
"#,
    );
    let out = sb.sluice(&["plan", file.to_str().unwrap()]).await;
    out.expect_code(0);
    assert!(out.stdout.contains("naming:   snake_case"), "{out}");
    assert!(
        out.stdout.contains("`Order Total ($)` -> `order_total`")
            && out.stdout.contains("`userid` -> `userid`")
            && out.stdout.contains("`userId` -> `userid_"),
        "{out}"
    );
}
