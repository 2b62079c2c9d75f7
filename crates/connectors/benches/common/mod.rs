//! What the HTTP benchmarks share: the mock API's pages and the benchmark's columns.

use sluice_connectors::http::{ColumnConfig, ColumnType, SchemaConfig};
use sluice_testkit::mock_api::MockHandle;

/// Pages 1 to `pages` of `GET /page/items` (1,000 records each, if the mock was started
/// with that page size), as response bodies.
pub async fn fetch_pages(mock: &MockHandle, pages: u64) -> Vec<Vec<u8>> {
    let client = reqwest::Client::new();
    let mut bodies = Vec::new();
    for page in 1..=pages {
        let body = client
            .get(mock.url(&format!("/page/items?page={page}")))
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .expect("a page")
            .bytes()
            .await
            .expect("a body");
        bodies.push(body.to_vec());
    }
    bodies
}

/// The columns of bench/e2e/sluice-embedded.yaml: what `scripts/bench.sh` declares.
pub fn declared_columns() -> SchemaConfig {
    let col = |name: &str, data_type, nullable| ColumnConfig {
        name: name.into(),
        data_type,
        nullable,
    };
    SchemaConfig::Columns(vec![
        col("id", ColumnType::Int64, false),
        col("updated_at", ColumnType::Timestamp, true),
        col("created_at", ColumnType::Timestamp, true),
        col("status", ColumnType::String, true),
        col("amount", ColumnType::Float64, true),
        col("currency", ColumnType::String, true),
        col("customer", ColumnType::Json, true),
        col("items", ColumnType::Json, true),
        col("tags", ColumnType::Json, true),
        col("notes", ColumnType::String, true),
    ])
}
