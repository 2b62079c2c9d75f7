//! `sluice plan` and `sluice schema` through the built binary.

mod common;

use common::{sluice, text, yaml_files};

#[test]
fn plan_lists_nodes_in_execution_order_with_topics_and_policies() {
    let out = sluice(&["plan", "pipelines/fanout-join.yaml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    let pos = |needle: &str| {
        plan.find(needle)
            .unwrap_or_else(|| panic!("`{needle}` not in\n{plan}"))
    };
    // The pre-step runs before the sources it orders, the join after both branches.
    assert!(pos(". prepare_staging (") < pos(". orders_api ("));
    assert!(pos(". orders_api (") < pos(". combine ("));
    assert!(pos(". customers_db (") < pos(". combine ("));
    assert!(plan.contains("retry:"), "{plan}");
    assert!(plan.contains("on_error:"), "{plan}");
    assert!(
        plan.contains("compensate: sql_task on postgres://etl:***@"),
        "{plan}"
    );
    assert!(
        plan.contains("data via topic `sluice.fanout_join.orders_api`"),
        "{plan}"
    );
    assert!(
        plan.contains("prepare_staging -> orders_api  order only"),
        "{plan}"
    );
    assert!(
        !plan.contains("sluice-dev-password"),
        "a secret leaked into the plan:\n{plan}"
    );
}

#[test]
fn plan_shows_effective_overrides() {
    let out = sluice(&["plan", "pipelines/incremental-cron.yaml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    assert!(plan.contains("(node)"), "{plan}");
    assert!(plan.contains("(defaults)"), "{plan}");
    assert!(plan.contains("cron `"), "{plan}");
}

/// A source or a task has no batch: the engine retries it or fails it. The plan shows no
/// other disposition for them (an HTTP source's `schema_policy: quarantine` is its own).
#[test]
fn plan_shows_only_dispositions_that_act() {
    let out = sluice(&["plan", "pipelines/incremental-cron.yaml"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = text(&out.stdout);
    let line = |node: &str| {
        let at = plan.find(&format!(". {node} (")).unwrap();
        let rest = &plan[at..];
        let on_error = rest.find("on_error: ").unwrap();
        rest[on_error..].lines().next().unwrap().to_owned()
    };
    // `defaults.on_error` quarantines `invalid_request`: the sink does, the source cannot.
    let source = line("tickets");
    assert!(
        source.contains("invalid_request=fail (a source only retries or fails)"),
        "{source}"
    );
    assert!(
        !source.contains("=quarantine") && !source.contains("=skip"),
        "{source}"
    );
    assert!(
        line("tickets_db").contains("invalid_request=quarantine (defaults)"),
        "{plan}"
    );

    for path in yaml_files("pipelines") {
        let rel = format!("pipelines/{}", path.file_name().unwrap().to_string_lossy());
        let out = sluice(&["plan", "--json", &rel], &[]);
        assert_eq!(out.status.code(), Some(0), "{rel}: {}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for n in v["nodes"].as_array().unwrap() {
            if !matches!(n["role"].as_str(), Some("source" | "task")) {
                continue;
            }
            for d in n["on_error"].as_array().unwrap() {
                let acts = matches!(d["disposition"].as_str(), Some("retry" | "fail"))
                    || (d["class"] == "contract_changed" && d["from"] == "schema_policy");
                assert!(acts, "{rel}: node {}: {d}", n["id"]);
            }
        }
    }
}

#[test]
fn plan_as_dot_and_json() {
    let dot = sluice(&["plan", "--dot", "pipelines/quickstart.yaml"], &[]);
    assert_eq!(dot.status.code(), Some(0));
    let dot = text(&dot.stdout);
    assert!(dot.starts_with("digraph \"quickstart\" {"), "{dot}");
    assert!(
        dot.contains("\"orders\" -> \"shape\" [label=\"quickstart.orders\"];"),
        "{dot}"
    );
    assert!(dot.trim_end().ends_with('}'));

    let json = sluice(
        &["plan", "--json", "pipelines/kafka-postgres.yaml"],
        &[
            ("WAREHOUSE_PASSWORD", "Sup3r-S3cret"),
            ("SHOP_TOKEN", "T0ken-S3cret"),
        ],
    );
    assert_eq!(json.status.code(), Some(0), "{}", text(&json.stderr));
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["pipeline"], "kafka_postgres");
    assert!(
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["retry"]["max_attempts"].as_u64().unwrap() >= 1)
    );
    assert!(
        !text(&json.stdout).contains("S3cret"),
        "a secret leaked into the JSON plan"
    );
}

#[test]
fn plan_of_an_invalid_pipeline_prints_diagnostics_and_exits_1() {
    let out = sluice(&["plan", "tests/fixtures/invalid/cycle.yaml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cycle: "),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn schema_is_json_schema_with_descriptions() {
    let out = sluice(&["schema"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["title"], "Sluice pipeline");
    assert!(v["$schema"].as_str().unwrap().contains("json-schema.org"));
    assert!(v["properties"]["nodes"]["$ref"].is_string() || v["properties"]["nodes"].is_object());
    assert!(v["$defs"]["RetrySpec"]["properties"]["max_attempts"]["description"].is_string());
    let md = sluice(&["schema", "--markdown"], &[]);
    assert!(text(&md.stdout).contains("#### `type: http (source)`"));
}
