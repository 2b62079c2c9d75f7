//! `sluice validate` through the built binary: every invalid fixture prints its golden
//! diagnostics and exits 1; every example pipeline exits 0.
//!
//! Regenerate the goldens after an intended change of messages with
//! `SLUICE_BLESS=1 cargo test -p sluice --test validate`, then review the diff.

mod common;

use common::{bless, root, sluice, text, yaml_files};

#[test]
fn every_invalid_fixture_prints_its_golden_diagnostics() {
    let fixtures = yaml_files("tests/fixtures/invalid");
    assert!(
        fixtures.len() >= 40,
        "expected at least 40 fixtures, found {}",
        fixtures.len()
    );
    let mut failures = Vec::new();
    for path in &fixtures {
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let rel = format!("tests/fixtures/invalid/{name}.yaml");
        let out = sluice(&["validate", &rel], &[]);
        let stderr = text(&out.stderr);
        if out.status.code() != Some(1) {
            failures.push(format!(
                "{name}: exit {:?}, expected 1\n{stderr}{}",
                out.status.code(),
                text(&out.stdout)
            ));
            continue;
        }
        if !stderr.contains(": error: ") {
            failures.push(format!("{name}: no error printed\n{stderr}"));
        }
        let golden = path.with_extension("expected");
        if bless() {
            std::fs::write(&golden, &stderr).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(expected) if expected == stderr => {}
            Ok(expected) => failures.push(format!(
                "{name}: output differs from {}\n--- expected\n{expected}--- got\n{stderr}",
                golden.display()
            )),
            Err(_) => failures.push(format!(
                "{name}: no golden {} (run with SLUICE_BLESS=1)",
                golden.display()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

#[test]
fn every_golden_has_its_fixture() {
    for entry in std::fs::read_dir(root().join("tests/fixtures/invalid")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "expected") {
            assert!(
                path.with_extension("yaml").exists(),
                "{} has no fixture",
                path.display()
            );
        }
    }
}

#[test]
fn every_example_pipeline_is_valid() {
    let pipelines = yaml_files("pipelines");
    assert!(
        pipelines.len() >= 5,
        "expected at least 5 example pipelines, found {}",
        pipelines.len()
    );
    for path in pipelines {
        let rel = format!("pipelines/{}", path.file_name().unwrap().to_string_lossy());
        let out = sluice(&["validate", &rel], &[]);
        assert_eq!(out.status.code(), Some(0), "{rel}:\n{}", text(&out.stderr));
        assert!(
            text(&out.stdout).contains(": ok: pipeline"),
            "{rel}: {}",
            text(&out.stdout)
        );
        assert!(
            text(&out.stderr).is_empty(),
            "{rel} has warnings:\n{}",
            text(&out.stderr)
        );
    }
}

#[test]
fn several_files_exit_1_when_any_is_invalid() {
    let out = sluice(
        &[
            "validate",
            "pipelines/quickstart.yaml",
            "tests/fixtures/invalid/cycle.yaml",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("pipelines/quickstart.yaml: ok"));
    assert!(text(&out.stderr).contains("tests/fixtures/invalid/cycle.yaml:"));
}

#[test]
fn json_format_lists_every_diagnostic() {
    let out = sluice(
        &[
            "validate",
            "--format",
            "json",
            "tests/fixtures/invalid/many_errors_at_once.yaml",
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let items = v.as_array().unwrap();
    assert!(items.len() >= 5, "{v:#}");
    for d in items {
        assert_eq!(d["file"], "tests/fixtures/invalid/many_errors_at_once.yaml");
        assert!(d["line"].as_u64().unwrap() >= 1);
        assert!(d["column"].as_u64().unwrap() >= 1);
        assert!(d["severity"] == "error" || d["severity"] == "warning");
        assert!(!d["message"].as_str().unwrap().is_empty());
        assert!(d.get("help").is_some());
    }
    let ok = sluice(
        &["validate", "--format", "json", "pipelines/quickstart.yaml"],
        &[],
    );
    assert_eq!(ok.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&ok.stdout).unwrap(),
        serde_json::json!([])
    );
}

#[test]
fn environment_variables_are_interpolated() {
    let fixture = "tests/fixtures/invalid/missing_env_var.yaml";
    let out = sluice(
        &["validate", fixture],
        &[("SLUICE_FIXTURE_UNSET_TOKEN", "t0k3n")],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(sluice(&["validate"], &[]).status.code(), Some(2));
    assert_eq!(
        sluice(&["validate", "--format", "xml", "x.yaml"], &[])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(sluice(&["plan"], &[]).status.code(), Some(2));
}

#[test]
fn a_missing_file_is_reported() {
    let out = sluice(&["validate", "no/such/pipeline.yaml"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no/such/pipeline.yaml: error: cannot read"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_file_nested_150000_levels_deep_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("deep.yaml");
    // 300 KB of `- - - … x`: once overflowed the stack of `sluice validate`.
    std::fs::write(&path, format!("{}x", "- ".repeat(150_000))).unwrap();
    let out = sluice(&["validate", path.to_str().unwrap()], &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("deep.yaml:1:129: error: values nested deeper than 64 levels"),
        "{stderr}"
    );
}

/// The `breaker:` example of docs/http-source.md is accepted as written.
#[test]
fn the_documented_breaker_example_is_valid() {
    let doc = std::fs::read_to_string(root().join("docs/http-source.md")).unwrap();
    let start = doc
        .find("`breaker: {")
        .expect("docs/http-source.md shows `breaker:`")
        + 1;
    let end = start + doc[start..].find("}`").expect("the example ends") + 1;
    let example = doc[start..end]
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("breaker.yaml");
    std::fs::write(
        &path,
        format!(
            "pipeline: breaker\nnodes:\n  api:\n    type: http\n    url: https://api.example.com/v1/orders\n    {example}\n  db:\n    type: sqlite\n    inputs: [api]\n    url: sqlite://out.db\n    table: orders\n"
        ),
    )
    .unwrap();
    let out = sluice(&["validate", path.to_str().unwrap()], &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{example}\n{}",
        text(&out.stderr)
    );
}

/// Every `alerts:` example of docs/alerts.md (each channel's) is accepted as written, with
/// no warning: its secrets come from the environment.
#[test]
fn every_documented_alerts_example_is_valid() {
    let doc = std::fs::read_to_string(root().join("docs/alerts.md")).unwrap();
    let examples: Vec<&str> = doc
        .split("```yaml\n")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .filter(|block| block.contains("alerts:"))
        .collect();
    assert!(examples.len() >= 9, "one example per channel: {examples:?}");
    let vars = [
        ("ALERT_WEBHOOK_SECRET", "s"),
        ("HOOK_TOKEN", "t"),
        (
            "SLACK_WEBHOOK_URL",
            "https://hooks.slack.com/services/T/B/x",
        ),
        (
            "DINGTALK_WEBHOOK_URL",
            "https://oapi.dingtalk.com/robot/send?access_token=x",
        ),
        ("DINGTALK_SECRET", "SECx"),
        (
            "FEISHU_WEBHOOK_URL",
            "https://open.feishu.cn/open-apis/bot/v2/hook/x",
        ),
        ("FEISHU_SECRET", "x"),
        (
            "WECOM_WEBHOOK_URL",
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=x",
        ),
        ("SMTP_USER", "u"),
        ("SMTP_PASSWORD", "p"),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, example) in examples.iter().enumerate() {
        let head = if example.contains("pipeline:") {
            String::new()
        } else {
            "pipeline: documented\n".to_owned()
        };
        let path = dir.path().join(format!("alerts_{i}.yaml"));
        // An example with its own nodes (ending the example) gets a sink for its node
        // `orders`; the others get a source and a sink.
        let nodes = if example.contains("\nnodes:") {
            "  db:\n    type: sqlite\n    inputs: [orders]\n    url: sqlite://out.db\n    table: orders\n"
        } else {
            "nodes:\n  orders_db:\n    type: file\n    path: in/*.ndjson\n    format: ndjson\n  db:\n    type: sqlite\n    inputs: [orders_db]\n    url: sqlite://out.db\n    table: orders\n"
        };
        std::fs::write(&path, format!("{head}{example}{nodes}")).unwrap();
        let out = sluice(&["validate", path.to_str().unwrap()], &vars);
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{example}\n{said}");
        assert!(!said.contains("warning"), "{example}\n{said}");
    }
}

/// `rate_limit.concurrency` above 1 raises nothing, and validation says so (a warning:
/// the file stays valid).
#[test]
fn a_concurrency_that_cannot_take_effect_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let pipeline = |concurrency: u32| {
        format!(
            "pipeline: c\nnodes:\n  api:\n    type: http\n    url: https://api.example.com/v1/orders\n    rate_limit: {{ requests_per_second: 5, concurrency: {concurrency} }}\n  db:\n    type: sqlite\n    inputs: [api]\n    url: sqlite://out.db\n    table: orders\n"
        )
    };
    std::fs::write(&path, pipeline(4)).unwrap();
    let out = sluice(&["validate", path.to_str().unwrap()], &[]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains(":6:56: warning: `concurrency: 4` sends no more requests at once"),
        "{said}"
    );
    std::fs::write(&path, pipeline(1)).unwrap();
    let out = sluice(&["validate", path.to_str().unwrap()], &[]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!said.contains("warning"), "{said}");
}

/// A SQL source's `fetch_size` does nothing (the drivers stream without a round-trip
/// size), and validation says so when it is written.
#[test]
fn a_fetch_size_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.yaml");
    let pipeline = |extra: &str| {
        format!(
            "pipeline: f\nnodes:\n  db:\n    type: sqlite\n    url: sqlite://in.db\n    query: SELECT id FROM t\n{extra}  out:\n    type: sqlite\n    inputs: [db]\n    url: sqlite://out.db\n    table: t\n"
        )
    };
    std::fs::write(&path, pipeline("    fetch_size: 500\n")).unwrap();
    let out = sluice(&["validate", path.to_str().unwrap()], &[]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains(":7:17: warning: `fetch_size` has no effect"),
        "{said}"
    );
    std::fs::write(&path, pipeline("")).unwrap();
    let out = sluice(&["validate", path.to_str().unwrap()], &[]);
    let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(!said.contains("warning"), "{said}");
}
