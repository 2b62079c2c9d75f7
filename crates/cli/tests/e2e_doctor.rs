//! `sluice doctor` through the binary: each fault injected (through the mock API and the
//! real services) is named at its step of the troubleshooting flow with its class, its
//! evidence never holds the secret, and the exit code is 1; a healthy pipeline exits 0.

use serde_json::Value;
use sluice_testkit::mock_api::{
    Drift, DriftChange, Fault, FaultKind, MockApi, MockAuth, MockConfig, RetryAfter,
};
use std::path::Path;

/// The secret every pipeline here uses; no output may hold it.
const SECRET: &str = "S3cret-doctor-7Q";

mod e2e_common;

use e2e_common::sluice_in as sluice;

/// `sluice doctor FILE --json` (and the text form, checked for the secret too): the
/// report, the exit code.
fn doctor(dir: &Path, env: &[(&str, &str)], extra: &[&str]) -> (Value, Option<i32>) {
    let mut args = vec!["doctor", "p.yaml"];
    args.extend_from_slice(extra);
    let (text_out, text) = sluice(dir, &args, env);
    assert!(!text.contains(SECRET), "the secret leaked:\n{text}");
    args.push("--json");
    let (out, json_text) = sluice(dir, &args, env);
    assert!(
        !json_text.contains(SECRET),
        "the secret leaked:\n{json_text}"
    );
    assert_eq!(
        out.status.code(),
        text_out.status.code(),
        "text and JSON agree on the exit code:\n{text}\n--- JSON ---\n{json_text}"
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("JSON on stdout ({e}):\n{json_text}"));
    (report, out.status.code())
}

/// The link of `kind` in a report.
fn link<'a>(report: &'a Value, kind: &str) -> &'a Value {
    report["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} link in {report:#}"))
}

/// Asserts that the link of `kind` failed at `step` with `class`, that the failing
/// check carries a remedy linked to the troubleshooting page, and that the steps after
/// it were not checked; returns the failing check.
fn failed_at<'a>(report: &'a Value, kind: &str, step: &str, class: &str) -> &'a Value {
    let l = link(report, kind);
    assert_eq!(report["healthy"], false, "{report:#}");
    assert_eq!(l["failed_step"], step, "{l:#}");
    assert_eq!(l["class"], class, "{l:#}");
    let steps = l["steps"].as_array().unwrap();
    let at = steps.iter().position(|s| s["name"] == step).unwrap();
    for later in &steps[at + 1..] {
        assert_eq!(later["status"], "not checked", "{l:#}");
    }
    let check = steps[at]["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["ok"] == false)
        .unwrap_or_else(|| panic!("no failed check at {step}: {l:#}"));
    assert!(
        check["see"]
            .as_str()
            .unwrap()
            .starts_with("docs/troubleshooting.md#"),
        "{check:#}"
    );
    assert!(!check["remedy"].as_str().unwrap().is_empty(), "{check:#}");
    check
}

fn http_pipeline(url: &str, extra: &str) -> String {
    format!(
        r#"pipeline: doctor_api
nodes:
  api:
    type: http
    url: {url}
    auth: {{ bearer: {{ token: "${{API_TOKEN}}" }} }}
    pagination: {{ page_number: {{ param: page, size_param: per_page, size: 20 }} }}
    records: {{ path: $.data.items }}
{extra}  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: items
    create_table: true
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn api_faults_are_named_at_their_step_with_their_class() {
    let mock = MockApi::start(MockConfig {
        auth: MockAuth::Bearer {
            token: SECRET.into(),
        },
        records: 60,
        // Error answers echo the request, headers and all: the evidence must still hold
        // no secret.
        echo_requests: true,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = [("API_TOKEN", SECRET)];
    let write = |text: String| std::fs::write(dir.join("p.yaml"), text).unwrap();
    write(http_pipeline(&mock.url("/page/items"), ""));

    // Healthy: every link passes, exit 0; the request is shown, the pages advance.
    let (report, code) = doctor(dir, &good, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["healthy"], true);
    let api = link(&report, "api");
    let text = api.to_string();
    assert!(text.contains("page 1 -> page 2"), "{api:#}");
    assert!(text.contains("20 records at `$.data.items`"), "{api:#}");
    assert!(text.contains("clock offset"), "{api:#}");

    // A wrong token: 401 at the auth step.
    let (report, code) = doctor(dir, &[("API_TOKEN", "revoked-token")], &[]);
    assert_eq!(code, Some(1));
    let check = failed_at(&report, "api", "auth", "auth");
    assert!(
        check["evidence"].as_str().unwrap().contains("401"),
        "{check:#}"
    );

    // A token without the scope: 403, `permission`, told apart from a rate limit.
    mock.set_faults(vec![Fault::new(1, 0, FaultKind::Forbidden)]);
    let (report, code) = doctor(dir, &good, &[]);
    assert_eq!(code, Some(1));
    failed_at(&report, "api", "auth", "permission");

    // A rate limit whose reset is an hour away: `rate_limited`, not waited out.
    mock.set_faults(vec![Fault::new(
        1,
        0,
        FaultKind::RateLimited {
            retry_after: RetryAfter::Seconds(3600),
        },
    )]);
    let (report, code) = doctor(dir, &good, &[]);
    assert_eq!(code, Some(1));
    failed_at(&report, "api", "auth", "rate_limited");
    mock.heal();

    // A wrong parameter: 400 at the parameters step, the request shown (redacted).
    write(http_pipeline(
        &mock.url("/page/items"),
        "    query: { updated_since: yesterday }\n    public: [updated_since]\n",
    ));
    let (report, code) = doctor(dir, &good, &[]);
    assert_eq!(code, Some(1));
    let check = failed_at(&report, "api", "parameters", "invalid_request");
    assert!(
        check["checked"]
            .as_str()
            .unwrap()
            .contains("updated_since=yesterday"),
        "{check:#}"
    );
    assert!(
        check["evidence"].as_str().unwrap().contains("400"),
        "{check:#}"
    );

    // Nothing listens on the port: `network`, at the network step.
    let closed = closed_port();
    write(http_pipeline(
        &format!("http://127.0.0.1:{closed}/page/items"),
        "",
    ));
    let (report, code) = doctor(dir, &good, &[]);
    assert_eq!(code, Some(1));
    let check = failed_at(&report, "api", "network", "network");
    assert!(
        check["error"].as_str().unwrap().contains("refused"),
        "{check:#}"
    );

    // A host name that does not resolve.
    write(http_pipeline("http://api.doctor.invalid/page/items", ""));
    let (report, code) = doctor(dir, &good, &[]);
    assert_eq!(code, Some(1));
    let check = failed_at(&report, "api", "network", "network");
    assert!(
        check["error"].as_str().unwrap().contains("resolv"),
        "{check:#}"
    );
    mock.shutdown().await;
}

/// An API that times out on pages larger than it can build (504): a run asks for smaller
/// pages and reads them, so the doctor does the same and passes, saying what it asked for.
#[tokio::test(flavor = "multi_thread")]
async fn pages_too_large_for_the_api_are_asked_for_smaller_as_a_run_does() {
    let mock = MockApi::start(MockConfig {
        auth: MockAuth::Bearer {
            token: SECRET.into(),
        },
        records: 60,
        max_page_size: Some(8),
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("p.yaml"),
        http_pipeline(&mock.url("/page/items"), ""),
    )
    .unwrap();
    let (report, code) = doctor(dir, &[("API_TOKEN", SECRET)], &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert_eq!(report["healthy"], true, "{report:#}");
    let api = link(&report, "api").to_string();
    assert!(api.contains("asked for 5 records per page"), "{api}");
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_client_secret_fails_the_token_fetch() {
    let mock = MockApi::start(MockConfig {
        auth: MockAuth::Oauth2 {
            client_id: "doctor".into(),
            client_secret: "the-right-one".into(),
            token_ttl_secs: 300,
        },
        records: 30,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pipeline = format!(
        r#"pipeline: doctor_oauth
nodes:
  api:
    type: http
    url: {url}
    auth:
      oauth2_client_credentials:
        token_url: {token}
        client_id: doctor
        client_secret: "${{CLIENT_SECRET}}"
        scopes: [orders.read]
    records: {{ path: $.data.items }}
  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: items
    create_table: true
"#,
        url = mock.url("/page/items"),
        token = mock.url("/oauth/token"),
    );
    std::fs::write(dir.join("p.yaml"), pipeline).unwrap();
    let (report, code) = doctor(dir, &[("CLIENT_SECRET", "the-right-one")], &[]);
    assert_eq!(code, Some(0), "{report:#}");
    assert!(
        link(&report, "api").to_string().contains("expires in 300s"),
        "{report:#}"
    );

    let (report, code) = doctor(dir, &[("CLIENT_SECRET", SECRET)], &[]);
    assert_eq!(code, Some(1));
    let check = failed_at(&report, "api", "auth", "auth");
    assert_eq!(check["checked"], "OAuth2 token fetch", "{check:#}");
    assert!(
        check["error"]
            .as_str()
            .unwrap()
            .contains("client credentials"),
        "{check:#}"
    );
    mock.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upstream_field_renamed_or_retyped_is_named_with_a_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = [("API_TOKEN", SECRET)];
    let mock = |drift: Option<DriftChange>| {
        MockApi::start(MockConfig {
            auth: MockAuth::Bearer {
                token: SECRET.into(),
            },
            records: 40,
            drift: drift.map(|change| Drift { from_id: 1, change }),
            ..MockConfig::default()
        })
    };
    // A good run stores the schema of what it delivered.
    let before = mock(None).await.unwrap();
    std::fs::write(
        dir.join("p.yaml"),
        http_pipeline(&before.url("/page/items"), ""),
    )
    .unwrap();
    let (out, text) = sluice(dir, &["run", "p.yaml", "--once"], &good);
    assert!(out.status.success(), "{text}");
    before.shutdown().await;

    for (change, expect) in [
        (
            DriftChange::Rename,
            ["`status` (Utf8) removed", "`state` added"],
        ),
        (
            DriftChange::Retype,
            ["`amount` retyped from Float64", "to string"],
        ),
    ] {
        let after = mock(Some(change)).await.unwrap();
        std::fs::write(
            dir.join("p.yaml"),
            http_pipeline(&after.url("/page/items"), ""),
        )
        .unwrap();
        let (report, code) = doctor(dir, &good, &[]);
        assert_eq!(code, Some(1), "{report:#}");
        let check = failed_at(&report, "api", "upstream", "contract_changed");
        let error = check["error"].as_str().unwrap();
        for e in expect {
            assert!(error.contains(e), "{change:?}: {error}");
        }
        assert!(
            check["evidence"]
                .as_str()
                .unwrap()
                .starts_with("a record that shows it: {"),
            "{check:#}"
        );
        after.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_down_or_without_insert_and_kafka_down_are_dependencies() {
    use sqlx::{AssertSqlSafe, Connection, Executor};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mock = MockApi::start(MockConfig {
        auth: MockAuth::Bearer {
            token: SECRET.into(),
        },
        records: 20,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let pg = sluice_testkit::postgres_schema("doctor").await;
    let pipeline = |db_url: &str| {
        format!(
            r#"pipeline: doctor_db
nodes:
  api:
    type: http
    url: {url}
    auth: {{ bearer: {{ token: "${{API_TOKEN}}" }} }}
    records: {{ path: $.data.items }}
  db:
    type: postgres
    inputs: [api]
    url: "{db_url}"
    table: items
"#,
            url = mock.url("/page/items")
        )
    };
    let env = [("API_TOKEN", SECRET)];

    // The table exists and the pipeline's user may write: healthy.
    let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    conn.execute("CREATE TABLE items (id BIGINT PRIMARY KEY, status TEXT)")
        .await
        .unwrap();
    std::fs::write(dir.join("p.yaml"), pipeline("${PG_URL}")).unwrap();
    let with_pg = [("API_TOKEN", SECRET), ("PG_URL", pg.url.as_str())];
    let (report, code) = doctor(dir, &with_pg, &["--node", "db"]);
    assert_eq!(code, Some(0), "{report:#}");
    assert!(
        link(&report, "database").to_string().contains("granted"),
        "{report:#}"
    );

    // The whole pipeline: the records carry fields the table lacks, and the sink's
    // `schema_policy: fail` would refuse them (our logic: step 6, at the API's link).
    let (report, code) = doctor(dir, &with_pg, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    let check = failed_at(&report, "api", "logic", "contract_changed");
    assert!(
        check["error"].as_str().unwrap().contains("`currency`"),
        "{check:#}"
    );
    assert_eq!(link(&report, "database")["ok"], true, "{report:#}");

    // A user who may read but not insert: `permission` at the dependencies step.
    let role = sluice_testkit::unique_name("doctor_ro");
    let schema = &pg.schema;
    for sql in [
        format!("CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'"),
        format!("GRANT USAGE ON SCHEMA \"{schema}\" TO {role}"),
        format!("GRANT SELECT ON \"{schema}\".items TO {role}"),
    ] {
        conn.execute(AssertSqlSafe(sql)).await.unwrap();
    }
    let server = pg.server_url.split_once('@').unwrap().1;
    let sep = if server.contains('?') { '&' } else { '?' };
    let ro_url =
        format!("postgres://{role}:{SECRET}@{server}{sep}options=-c%20search_path%3D{schema}");
    let with_ro = [("API_TOKEN", SECRET), ("PG_URL", ro_url.as_str())];
    let (report, code) = doctor(dir, &with_ro, &["--node", "db"]);
    let check = failed_at(&report, "database", "dependencies", "permission");
    assert_eq!(code, Some(1));
    assert!(
        check["error"].as_str().unwrap().contains("GRANT INSERT"),
        "{check:#}"
    );

    // The database is down (nothing listens on its port): `dependency`.
    let down = format!(
        "postgres://sluice:{SECRET}@127.0.0.1:{}/sluice",
        closed_port()
    );
    let with_down = [("API_TOKEN", SECRET), ("PG_URL", down.as_str())];
    let (report, code) = doctor(dir, &with_down, &[]);
    assert_eq!(code, Some(1));
    let check = failed_at(&report, "database", "dependencies", "dependency");
    assert!(
        check["error"].as_str().unwrap().contains("refused"),
        "{check:#}"
    );
    // The API is fine meanwhile.
    assert_eq!(link(&report, "api")["ok"], true, "{report:#}");

    // A Kafka source whose broker is down.
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            r#"pipeline: doctor_kafka
nodes:
  events:
    type: kafka
    brokers: ["127.0.0.1:{port}"]
    topic: doctor.events
  out:
    type: sqlite
    inputs: [events]
    url: sqlite://out.db
    table: events
    create_table: true
"#,
            port = closed_port()
        ),
    )
    .unwrap();
    let (report, code) = doctor(dir, &env, &[]);
    assert_eq!(code, Some(1));
    failed_at(&report, "kafka", "dependencies", "dependency");

    // A Kafka buffer whose broker is down.
    std::fs::write(
        dir.join("p.yaml"),
        format!(
            "{}buffer: {{ kafka: {{ brokers: [\"127.0.0.1:{}\"] }} }}\n",
            pipeline("${PG_URL}"),
            closed_port()
        ),
    )
    .unwrap();
    let (report, code) = doctor(dir, &with_pg, &[]);
    assert_eq!(code, Some(1));
    failed_at(&report, "buffer", "dependencies", "dependency");

    drop(conn);
    drop(pg); // drops the schema, its table and the role's grants on them
    let mut admin = sqlx::PgConnection::connect(&sluice_testkit::postgres_url())
        .await
        .unwrap();
    admin
        .execute(AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
        .await
        .unwrap();
    mock.shutdown().await;
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed).
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// An HTTPS server on 127.0.0.1 with this certificate, answering every request with one
/// page of one record (and a `Date`); its port.
async fn https_server(cert: rcgen::Certificate, key: &rcgen::KeyPair) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let body = r#"{"data":{"items":[{"id":1,"name":"a"}]}}"#;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nDate: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    httpdate::fmt_http_date(std::time::SystemTime::now()),
                    body.len()
                );
                let _ = tls.write_all(head.as_bytes()).await;
                let _ = tls.write_all(body.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_certificates_self_signed_expired_or_for_another_host_are_named() {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pipeline = |port: u16| {
        format!(
            r#"pipeline: doctor_tls
nodes:
  api:
    type: http
    url: https://localhost:{port}/items
    auth: {{ bearer: {{ token: "${{API_TOKEN}}" }} }}
    records: {{ path: $.data.items }}
  db:
    type: sqlite
    inputs: [api]
    url: sqlite://out.db
    table: items
    create_table: true
"#
        )
    };
    let leaf = |names: &[&str], expired: bool| {
        let mut p = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
        if expired {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        p
    };

    // Self-signed: no authority of this machine vouches for it.
    let key = KeyPair::generate().unwrap();
    let cert = leaf(&["localhost"], false).self_signed(&key).unwrap();
    std::fs::write(dir.join("p.yaml"), pipeline(https_server(cert, &key).await)).unwrap();
    let env = [("API_TOKEN", SECRET)];
    let (report, code) = doctor(dir, &env, &[]);
    assert_eq!(code, Some(1));
    let check = failed_at(&report, "api", "network", "network");
    assert!(
        check["error"].as_str().unwrap().contains("self-signed"),
        "{check:#}"
    );

    // A CA of the test's own, trusted through SSL_CERT_FILE (as the system's store).
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let trusted = [
        ("API_TOKEN", SECRET),
        ("SSL_CERT_FILE", ca_file.to_str().unwrap()),
    ];
    for (names, expired, expect) in [
        (&["localhost"][..], true, "has expired"),
        (&["api.example.com"][..], false, "not issued for localhost"),
    ] {
        let key = KeyPair::generate().unwrap();
        let cert = leaf(names, expired).signed_by(&key, &ca).unwrap();
        std::fs::write(dir.join("p.yaml"), pipeline(https_server(cert, &key).await)).unwrap();
        let (report, code) = doctor(dir, &trusted, &[]);
        assert_eq!(code, Some(1), "{report:#}");
        let check = failed_at(&report, "api", "network", "network");
        assert!(
            check["error"].as_str().unwrap().contains(expect),
            "{expect}: {check:#}"
        );
    }

    // A good certificate from the trusted CA: every step passes.
    let key = KeyPair::generate().unwrap();
    let cert = leaf(&["localhost"], false).signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join("p.yaml"), pipeline(https_server(cert, &key).await)).unwrap();
    let (report, code) = doctor(dir, &trusted, &[]);
    assert_eq!(code, Some(0), "{report:#}");
    let text = link(&report, "api").to_string();
    assert!(text.contains("trusted for localhost"), "{text}");
    assert!(text.contains("clock offset"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transform_that_fails_on_the_sample_and_the_last_runs_failure() {
    let mock = MockApi::start(MockConfig {
        auth: MockAuth::Bearer {
            token: SECRET.into(),
        },
        records: 30,
        ..MockConfig::default()
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Our logic: a cast the records cannot take.
    std::fs::write(
        dir.join("p.yaml"),
        http_pipeline(&mock.url("/page/items"), "").replace(
            "  db:\n    type: sqlite\n    inputs: [api]",
            "  shape:\n    type: transform\n    inputs: [api]\n    ops:\n      - select: [id, currency]\n      - cast: { currency: int64 }\n  db:\n    type: sqlite\n    inputs: [shape]",
        ),
    )
    .unwrap();
    let good = [("API_TOKEN", SECRET)];
    let (report, code) = doctor(dir, &good, &[]);
    assert_eq!(code, Some(1), "{report:#}");
    let check = failed_at(&report, "api", "logic", "invalid_request");
    assert!(
        check["checked"]
            .as_str()
            .unwrap()
            .contains("transform shape"),
        "{check:#}"
    );
    assert!(
        check["evidence"]
            .as_str()
            .unwrap()
            .contains("keep in the failed-batch store"),
        "{check:#}"
    );

    // The symptom: a run that failed on a revoked token is shown, and `--run` narrows
    // the links to the nodes that failed in it.
    std::fs::write(
        dir.join("p.yaml"),
        http_pipeline(&mock.url("/page/items"), ""),
    )
    .unwrap();
    let revoked = [("API_TOKEN", "revoked-token")];
    let (out, text) = sluice(dir, &["run", "p.yaml", "--once"], &revoked);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let (report, _) = doctor(dir, &revoked, &[]);
    let run = report["run"].as_str().expect("the latest run").to_owned();
    let symptom = link(&report, "api")["steps"][0].to_string();
    assert!(symptom.contains("node api failed with [auth]"), "{symptom}");
    let (report, code) = doctor(dir, &revoked, &["--run", &run]);
    assert_eq!(code, Some(1));
    let kinds: Vec<&str> = report["links"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["api"], "{report:#}");
    failed_at(&report, "api", "auth", "auth");
    let (out, text) = sluice(dir, &["doctor", "p.yaml", "--run", "no-such-run"], &revoked);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("`no-such-run` not found"), "{text}");
    // The token renewed: every step passes, and the failed run is put in its place.
    let (out, text) = sluice(dir, &["doctor", "p.yaml"], &good);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains(&format!(
            "run {run} ended failed, but every check passes now"
        )),
        "{text}"
    );
    mock.shutdown().await;
}
