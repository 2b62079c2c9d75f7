//! The plan of whole pipelines, through the registry of every node kind: effective
//! policies, execution order, secrets that never print, the JSON Schema.

use sluice_config::{Env, Invalid, Plan};
use sluice_connectors::http::spec::HttpSourceSpec;
use sluice_connectors::registry;

fn validate(text: &str, env: &Env) -> Result<Plan, Invalid> {
    sluice_config::validate(text, env, registry())
}

mod plans {
    use super::*;
    use sluice_config::Env;
    use sluice_config::plan::PolicySource;
    use sluice_core::{Disposition, ErrorClass};

    const SECRETS: &str = r#"
pipeline: secrets
state: postgres://sluice:${PW}@127.0.0.1:5432/state
buffer:
  kafka:
    brokers: ["127.0.0.1:9092"]
    properties: { sasl.password: "${PW}", security.protocol: SASL_SSL }
nodes:
  api:
    type: http
    url: https://api.example.com/x
    headers: { X-Api-Key: "${PW}" }
    query: { api_key: "${PW}", page_size: "10" }
    auth:
      oauth2_client_credentials: { token_url: "https://a.example.com/t", client_id: me, client_secret: "${file:/run/secret}" }
  db:
    type: postgres
    inputs: [api]
    url: postgres://etl:${PW}@127.0.0.1/db
    table: t
    compensate: { command: { program: ./undo.sh, env: { PGPASSWORD: "${PW}" } } }
"#;

    #[test]
    fn secrets_never_print_from_the_plan() {
        let env = Env::new()
            .with_var("PW", "hunter2")
            .with_file("/run/secret", "s3cr3t\n");
        let plan = validate(SECRETS, &env).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
        assert!(plan.warnings.is_empty(), "{:#?}", plan.warnings);
        let shown = [
            format!("{plan:?}"),
            plan.to_text(),
            plan.to_dot(),
            serde_json::to_string(&plan).unwrap(),
        ];
        for text in shown {
            assert!(
                !text.contains("hunter2") && !text.contains("s3cr3t"),
                "{text}"
            );
        }
        // The clear values are still there for the code that sends them.
        let h = plan
            .node("api")
            .unwrap()
            .config
            .downcast_ref::<HttpSourceSpec>()
            .expect("an HTTP source");
        assert_eq!(h.query.get_exposed("api_key"), Some("hunter2"));
    }

    #[test]
    fn effective_policies_merge_defaults_node_and_schema_policy() {
        let text = r#"
pipeline: merge
defaults:
  retry: { max_attempts: 7, max_backoff: 10s }
  on_error: { dependency: fail, payload_too_large: split }
nodes:
  api:
    type: http
    url: https://api.example.com/x
    schema_policy: quarantine
    retry: { max_attempts: 2 }
    on_error: { invalid_request: fail }
  files: { type: file, path: x.ndjson, format: ndjson }
  db:
    type: sqlite
    inputs: [api, files]
    url: sqlite://x.db
    table: t
"#;
        let plan = validate(text, &Env::new()).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
        let api = plan.node("api").unwrap();
        assert_eq!(api.retry.max_attempts, 2);
        assert_eq!(
            api.retry.max_backoff,
            sluice_config::values::Duration::secs(10)
        );
        let get = |n: &sluice_config::plan::PlannedNode, c: ErrorClass| {
            n.on_error.iter().find(|d| d.class == c).unwrap().clone()
        };
        assert_eq!(
            get(api, ErrorClass::InvalidRequest).disposition,
            Disposition::Fail
        );
        assert_eq!(
            get(api, ErrorClass::InvalidRequest).from,
            PolicySource::Node
        );
        assert_eq!(
            get(api, ErrorClass::Dependency).from,
            PolicySource::Defaults
        );
        assert_eq!(
            get(api, ErrorClass::ContractChanged).disposition,
            Disposition::Quarantine
        );
        assert_eq!(
            get(api, ErrorClass::ContractChanged).from,
            PolicySource::SchemaPolicy
        );
        // A source cannot split: the inherited `split` becomes `fail`; the sink keeps it.

        assert_eq!(
            get(api, ErrorClass::PayloadTooLarge).disposition,
            Disposition::Fail
        );
        assert_eq!(
            get(api, ErrorClass::PayloadTooLarge).from,
            PolicySource::Role
        );
        let db = plan.node("db").unwrap();
        // Nor can a source quarantine: the `file` source below inherits Sluice's
        // `invalid_request=quarantine` as `fail`; the sink keeps it.
        assert_eq!(
            get(db, ErrorClass::InvalidRequest).disposition,
            Disposition::Quarantine
        );
        let files = plan.node("files").unwrap();
        assert_eq!(
            get(files, ErrorClass::InvalidRequest).disposition,
            Disposition::Fail
        );
        assert_eq!(
            get(files, ErrorClass::InvalidRequest).from,
            PolicySource::Role
        );
        assert_eq!(
            get(db, ErrorClass::PayloadTooLarge).disposition,
            Disposition::Split
        );
        assert_eq!(db.retry.max_attempts, 7);
        assert_eq!(db.retry.policy().max_attempts, 7);
    }

    #[test]
    fn execution_order_is_topological_then_file_order() {
        let text = r#"
pipeline: order
nodes:
  sink_b: { type: file_sink, inputs: [b], path: b.ndjson, format: ndjson }
  b: { type: file, path: b.ndjson, format: ndjson, after: [setup] }
  a: { type: file, path: a.ndjson, format: ndjson }
  sink_a: { type: file_sink, inputs: [a], path: a2.ndjson, format: ndjson }
  setup: { type: command, program: ./setup.sh }
"#;
        let plan = validate(text, &Env::new()).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
        let order: Vec<(&str, usize)> = plan
            .nodes
            .iter()
            .map(|n| (n.id.as_str(), n.stage))
            .collect();
        assert_eq!(
            order,
            [
                ("a", 1),
                ("sink_a", 2),
                ("setup", 1),
                ("b", 2),
                ("sink_b", 3)
            ]
        );
    }

    #[test]
    fn the_pure_validation_reads_files_only_from_the_env() {
        let text = "pipeline: f\nnodes:\n  a: { type: http, url: \"${file:url.txt}\" }\n  b: { type: file_sink, inputs: [a], path: x, format: ndjson }\n";
        let err = validate(text, &Env::new()).unwrap_err();
        assert!(
            err.diagnostics()[0].message.contains("was not read"),
            "{:?}",
            err.diagnostics()
        );
        let env = Env::new().with_file("url.txt", "https://api.example.com/v1\n");
        assert!(validate(text, &env).is_ok());
    }
}

mod schema {
    use super::*;
    use sluice_config::schema::{json_schema, property_names, reference_markdown};

    #[test]
    fn schema_has_every_section_and_node_type() {
        let s = json_schema(registry());
        let names = property_names(&s);
        for field in [
            "pipeline",
            "nodes",
            "pagination",
            "oauth2_client_credentials",
            "message_max_bytes",
            "compensate",
            "on_error",
            "ops",
        ] {
            assert!(names.contains(field), "{field}");
        }
        let text = s.to_string();
        for ty in registry().names() {
            assert!(text.contains(&format!("\"const\":\"{ty}\"")), "{ty}");
        }
    }

    #[test]
    fn reference_mentions_every_property() {
        let doc = reference_markdown(registry());
        for name in property_names(&json_schema(registry())) {
            assert!(doc.contains(&format!("`{name}`")), "{name} missing");
        }
    }
}

mod http_specs {
    use super::*;
    use sluice_config::Env;

    #[test]
    fn plan_json_masks_every_value_but_public_ones() {
        let text = r#"
pipeline: p
nodes:
  api:
    type: http
    method: POST
    url: https://api.example.com/x?access_token=tok-1&region=eu&page={{page}}
    headers: { X-Sub-Key: hdr-2, Accept: application/json }
    query: { key: qkey-3, status: open }
    body: { filter: { status: open, secret: body-4 }, ids: [1, 2], page: "{{page}}" }
    public: [accept, Status, region]
    allowed_hosts: [api2.example.com, "127.0.0.1:8443"]
    pagination: { page_number: { param: page } }
  out:
    type: http_sink
    inputs: [api]
    url: https://u:pw-5@sink.example.com/in?sig=sig-6&v=1
    headers: { X-Token: tok-7, Content-Type: application/json }
    public: [v, content-type]
"#;
        let plan = validate(text, &Env::new()).expect("valid");
        let json = serde_json::to_string(&plan).unwrap();
        for secret in [
            "tok-1", "hdr-2", "qkey-3", "body-4", "pw-5", "sig-6", "tok-7",
        ] {
            assert!(!json.contains(secret), "{secret} in {json}");
        }
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        let api = &v["nodes"][0]["config"];
        assert_eq!(
            api["url"],
            "https://api.example.com/x?access_token=***&region=eu&page={{page}}"
        );
        assert_eq!(api["headers"]["Accept"], "application/json");
        assert_eq!(api["query"]["status"], "open");
        assert_eq!(
            api["body"],
            serde_json::json!({"filter": {"status": "open", "secret": "***"}, "ids": ["***", "***"], "page": "{{page}}"})
        );
        let out = &v["nodes"][1]["config"];
        assert_eq!(out["url"], "https://u:***@sink.example.com/in?sig=***&v=1");
        assert_eq!(out["headers"]["Content-Type"], "application/json");
        assert_eq!(out["headers"]["X-Token"], "***");
    }

    #[test]
    fn allowed_hosts_are_host_names() {
        let text = |hosts: &str| {
            format!(
                "pipeline: p\nnodes:\n  api:\n    type: http\n    url: https://a.example.com/x\n    allowed_hosts: {hosts}\n  out:\n    type: file_sink\n    inputs: [api]\n    path: o.ndjson\n    format: ndjson\n"
            )
        };
        assert!(
            validate(
                &text("[b.example.com, \"b.example.com:8443\"]"),
                &Env::new()
            )
            .is_ok()
        );
        for bad in [
            "[\"https://b.example.com\"]",
            "[\"b.example.com/x\"]",
            "[\"u@b\"]",
            "[\"\"]",
        ] {
            assert!(validate(&text(bad), &Env::new()).is_err(), "{bad}");
        }
    }
}

mod kafka_specs {
    use super::*;

    #[test]
    fn kafka_properties_never_print_from_the_plan() {
        let text = r#"
pipeline: k
nodes:
  events:
    type: kafka
    brokers: ["127.0.0.1:9092"]
    topic: orders
    properties: { sasl.password: "${PW}", security.protocol: SASL_SSL }
  out:
    type: file_sink
    inputs: [events]
    path: o.ndjson
    format: ndjson
"#;
        let env = Env::new().with_var("PW", "hunter2-kafka");
        let plan = validate(text, &env).unwrap_or_else(|e| panic!("{:#?}", e.diagnostics()));
        for shown in [
            format!("{plan:?}"),
            plan.to_text(),
            serde_json::to_string(&plan).unwrap(),
        ] {
            assert!(!shown.contains("hunter2-kafka"), "{shown}");
        }
        let json: serde_json::Value = serde_json::to_value(&plan).unwrap();
        assert_eq!(
            json["nodes"][0]["config"]["properties"]["security.protocol"],
            "SASL_SSL"
        );
    }
}
