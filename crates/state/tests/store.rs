//! The state store against SQLite and the real PostgreSQL.

use sluice_core::ErrorClass;
use sluice_state::{
    AlertKind, AlertRow, AlertSeverity, ConditionKey, Dedup, DeliveryRow, DeliveryStatus,
    FailedBatchFilter, NewFailedBatch, NodeCounts, NodeRunRow, RunStatus, StateStore, Trigger,
    new_alert_id,
};

async fn exercise(store: &StateStore) {
    // Runs and nodes.
    let run = store.start_run("orders", Trigger::Manual).await.unwrap();
    let node = NodeRunRow {
        node: "api".into(),
        status: RunStatus::Succeeded,
        counts: NodeCounts {
            records_out: 10,
            batches: 2,
            retries: 1,
            ..NodeCounts::default()
        },
        error_class: Some(ErrorClass::Dependency),
        error: None,
    };
    store.record_node(&run, &node).await.unwrap();
    store
        .record_node(
            &run,
            &NodeRunRow {
                counts: NodeCounts {
                    records_out: 20,
                    ..node.counts
                },
                ..node.clone()
            },
        )
        .await
        .unwrap();
    store
        .record_attempt(
            &run,
            "api",
            ErrorClass::RateLimited,
            "429 from GET /items, waited 1s",
        )
        .await
        .unwrap();
    store
        .finish_run(&run, RunStatus::PartiallySucceeded, None)
        .await
        .unwrap();
    let (row, nodes, attempts) = store.run(&run).await.unwrap();
    assert_eq!(row.status, RunStatus::PartiallySucceeded);
    assert_eq!(row.trigger, Trigger::Manual);
    assert!(row.finished_at.is_some());
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].counts.records_out, 20);
    assert_eq!(nodes[0].status, RunStatus::Succeeded);
    assert_eq!(nodes[0].error_class, Some(ErrorClass::Dependency));
    assert_eq!(attempts[0].class, ErrorClass::RateLimited);
    let runs = store.runs(Some("orders"), 10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert!(store.runs(Some("other"), 10).await.unwrap().is_empty());
    assert!(store.run("nope").await.is_err());

    // Checkpoints.
    assert_eq!(store.checkpoint("orders", "api").await.unwrap(), None);
    let cp = serde_json::json!({"cursor": "abc", "watermark": "2026-01-01T00:00:00Z"});
    store.save_checkpoint("orders", "api", &cp).await.unwrap();
    store.save_checkpoint("orders", "api", &cp).await.unwrap();
    assert_eq!(store.checkpoint("orders", "api").await.unwrap(), Some(cp));

    // The failed-batch store.
    let failed = NewFailedBatch {
        id: "b1",
        pipeline: "orders",
        node: "db",
        run_id: &run,
        class: ErrorClass::Dependency,
        error: "PostgreSQL refused the connection",
        evidence: None,
        attempts: 3,
        rows: 100,
        payload: &[1, 2, 3],
    };
    store.quarantine(&failed).await.unwrap();
    store
        .quarantine(&NewFailedBatch {
            attempts: 2,
            ..failed.clone()
        })
        .await
        .unwrap();
    store
        .quarantine(&NewFailedBatch {
            id: "b2",
            node: "api",
            class: ErrorClass::InvalidRequest,
            ..failed.clone()
        })
        .await
        .unwrap();
    let all = store
        .failed_batches(&FailedBatchFilter::default(), true)
        .await
        .unwrap();
    assert_eq!(all.len(), 2);
    let b1 = all.iter().find(|b| b.id == "b1").unwrap();
    assert_eq!(
        (b1.attempts, b1.rows, b1.payload.as_slice()),
        (5, 100, &[1u8, 2, 3][..])
    );
    assert_eq!(b1.class, ErrorClass::Dependency);
    let only_db = FailedBatchFilter {
        node: Some("db".into()),
        pipeline: Some("orders".into()),
        ..Default::default()
    };
    let listed = store.failed_batches(&only_db, false).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].payload.is_empty());
    store.resolve_failed("orders", "db", "b1").await.unwrap();
    assert_eq!(
        store.failed_batches(&only_db, false).await.unwrap().len(),
        0
    );
    let with_resolved = FailedBatchFilter {
        include_resolved: true,
        ..only_db
    };
    assert!(
        store.failed_batches(&with_resolved, false).await.unwrap()[0]
            .resolved_at
            .is_some()
    );
    assert_eq!(store.drop_failed("b2").await.unwrap(), 1);
    assert!(store.drop_failed("b2").await.is_err());

    // Pipelines and their files.
    store
        .register_pipeline("orders", "/a/orders.yaml")
        .await
        .unwrap();
    store
        .register_pipeline("orders", "/b/orders.yaml")
        .await
        .unwrap();
    assert_eq!(
        store.pipeline_files().await.unwrap(),
        [("orders".to_owned(), "/b/orders.yaml".to_owned())]
    );

    // Schema fingerprints.
    assert!(
        store
            .record_schema("orders", "api", "f1", "id: Int64")
            .await
            .unwrap()
    );
    assert!(
        !store
            .record_schema("orders", "api", "f1", "id: Int64")
            .await
            .unwrap()
    );

    // Replays are runs of their own trigger.
    let replay = store.start_run("orders", Trigger::Replay).await.unwrap();
    store
        .finish_run(&replay, RunStatus::Succeeded, None)
        .await
        .unwrap();
    let runs = store.runs(Some("orders"), 10).await.unwrap();
    let listed = runs.iter().find(|r| r.id == replay).unwrap();
    assert_eq!(
        (listed.trigger, listed.status),
        (Trigger::Replay, RunStatus::Succeeded)
    );

    // Alerts: the kind and the error class apart, a recovery without a class.
    let alerts = [
        AlertRow {
            pipeline: "orders".into(),
            node: None,
            kind: AlertKind::RunFailed,
            class: Some(ErrorClass::Permission),
            severity: AlertSeverity::Critical,
            message: "node `db`: permission denied".into(),
            at: 1_000,
        },
        AlertRow {
            pipeline: "orders".into(),
            node: Some("db".into()),
            kind: AlertKind::LinkDown,
            class: Some(ErrorClass::Dependency),
            severity: AlertSeverity::Critical,
            message: "database db is down".into(),
            at: 2_000,
        },
        AlertRow {
            pipeline: "orders".into(),
            node: Some("db".into()),
            kind: AlertKind::LinkRecovered,
            class: None,
            severity: AlertSeverity::Info,
            message: "database db is up again after 3s".into(),
            at: 3_000,
        },
    ];
    let mut ids = Vec::new();
    for alert in &alerts {
        ids.push(store.record_alert(alert).await.unwrap());
    }
    let newest_first: Vec<AlertRow> = alerts.iter().rev().cloned().collect();
    assert_eq!(store.alerts(10).await.unwrap(), newest_first);
    let with_ids = store.alerts_with_ids(10).await.unwrap();
    assert_eq!(with_ids[2], (ids[0].clone(), alerts[0].clone()));

    // Deliveries: one per channel, a second outcome for a channel replaces the first.
    let sent = DeliveryRow {
        alert_id: ids[0].clone(),
        channel: "ops".into(),
        status: DeliveryStatus::Sent,
        attempts: 1,
        error: None,
        at: 1_001,
    };
    let failed = DeliveryRow {
        channel: "pager".into(),
        status: DeliveryStatus::Failed,
        attempts: 3,
        error: Some("connection refused".into()),
        ..sent.clone()
    };
    store.record_delivery(&failed).await.unwrap();
    store.record_delivery(&sent).await.unwrap();
    let again = DeliveryRow {
        attempts: 4,
        ..failed.clone()
    };
    store.record_delivery(&again).await.unwrap();
    assert_eq!(
        store.deliveries(&ids[0]).await.unwrap(),
        vec![sent.clone(), again]
    );
    assert!(store.deliveries(&ids[1]).await.unwrap().is_empty());

    // Conditions: one alert, repeats held back and counted, a reminder past the interval,
    // and a clear that only one caller sees.
    let key = ConditionKey {
        pipeline: "orders".into(),
        subject: "postgres://db:5432/x".into(),
        kind: AlertKind::LinkDown,
        class: Some(ErrorClass::Network),
    };
    let hour = 3_600_000;
    let first = new_alert_id();
    assert_eq!(
        store
            .open_condition(&key, &first, 10_000, hour)
            .await
            .unwrap(),
        Dedup::First
    );
    store.record_alert_as(&first, &alerts[0]).await.unwrap();
    for at in [20_000, 30_000] {
        assert_eq!(
            store
                .open_condition(&key, &new_alert_id(), at, hour)
                .await
                .unwrap(),
            Dedup::Suppressed {
                alert_id: first.clone(),
                since: 10_000
            }
        );
    }
    assert_eq!(store.suppressed(&first).await.unwrap(), 2);
    let reminder = new_alert_id();
    assert_eq!(
        store
            .open_condition(&key, &reminder, 10_000 + hour, hour)
            .await
            .unwrap(),
        Dedup::Reminder { since: 10_000 }
    );
    // Another class of the same link, or another link, is another condition.
    let other = ConditionKey {
        class: Some(ErrorClass::Auth),
        ..key.clone()
    };
    assert_eq!(
        store
            .open_condition(&other, &new_alert_id(), 40_000, hour)
            .await
            .unwrap(),
        Dedup::First
    );
    let cleared = store
        .close_conditions("orders", Some("postgres://db:5432/x"), AlertKind::LinkDown)
        .await
        .unwrap();
    assert_eq!(cleared.len(), 2, "{cleared:?}");
    assert!(
        cleared
            .iter()
            .any(|c| c.class == Some(ErrorClass::Network) && c.since == 10_000)
    );
    assert!(
        store
            .close_conditions("orders", None, AlertKind::LinkDown)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .open_condition(&key, &new_alert_id(), 50_000, hour)
            .await
            .unwrap(),
        Dedup::First
    );
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/nested/state.db", dir.path().display());
    let store = StateStore::open(&url).await.unwrap();
    exercise(&store).await;
    drop(store);
    // Reopening applies no migration twice and keeps the data (a run and a replay).
    let store = StateStore::open(&url).await.unwrap();
    assert_eq!(store.runs(None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn postgres_store() {
    let pg = sluice_testkit::postgres_schema("state").await;
    let store = StateStore::open(&pg.url).await.unwrap();
    exercise(&store).await;
    let again = StateStore::open(&pg.url).await.unwrap();
    assert_eq!(again.runs(None, 10).await.unwrap().len(), 2);
}

#[tokio::test]
async fn bad_urls_say_what_to_use_and_hide_passwords() {
    let err = StateStore::open("mysql://u:pw@h/db").await.unwrap_err();
    assert!(err.to_string().contains("sqlite:///"), "{err}");
    assert!(!err.to_string().contains("pw"), "{err}");
    let err = StateStore::open("postgres://u:hunter2@127.0.0.1:1/db")
        .await
        .unwrap_err();
    assert!(!err.to_string().contains("hunter2"), "{err}");
    assert_eq!(err.class(), ErrorClass::Dependency);
}

/// A run whose process died (kill -9) is closed as failed when the next run of its
/// pipeline starts, or when runs are listed; a live one is left alone.
#[tokio::test]
async fn runs_of_dead_processes_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/state.db", dir.path().display());
    let store = StateStore::open(&url).await.unwrap();
    let dead = store.start_run("orders", Trigger::Manual).await.unwrap();
    let live = store.start_run("other", Trigger::Manual).await.unwrap();
    // A pid no process has: the first run's process is gone.
    let gone = {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    };
    {
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE runs SET pid = $1 WHERE id = $2")
            .bind(i64::from(gone))
            .bind(&dead)
            .execute(&mut conn)
            .await
            .unwrap();
    }
    assert_eq!(store.close_abandoned_runs(Some("other")).await.unwrap(), 0);
    let next = store.start_run("orders", Trigger::Manual).await.unwrap();
    let (row, _, _) = store.run(&dead).await.unwrap();
    assert_eq!(row.status, RunStatus::Failed);
    assert!(row.error.unwrap().starts_with("aborted"));
    for id in [&live, &next] {
        assert_eq!(store.run(id).await.unwrap().0.status, RunStatus::Running);
    }
}

/// Alerts recorded before the kind had a column of its own (`class` held `run_failed`,
/// `link_recovered` or the class of a link that went down) read back as their kind and
/// class.
async fn old_alerts_are_migrated(url: &str) {
    use sqlx::{AnyConnection, Connection};
    sqlx::any::install_default_drivers();
    let mut conn = AnyConnection::connect(url).await.unwrap();
    // A store at version 6, as far as its alerts are concerned.
    for statement in [
        "CREATE TABLE sluice_state_version (version BIGINT NOT NULL)",
        "INSERT INTO sluice_state_version (version) VALUES (1), (2), (3), (4), (5), (6)",
        "CREATE TABLE alerts (
            id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, node TEXT, class TEXT NOT NULL,
            severity TEXT NOT NULL, message TEXT NOT NULL, at BIGINT NOT NULL)",
        "INSERT INTO alerts (id, pipeline, node, class, severity, message, at) VALUES
            ('a1', 'orders', NULL, 'run_failed', 'critical', 'node `db` failed', 1),
            ('a2', 'orders', 'api', 'auth', 'critical', 'http api is down', 2),
            ('a3', 'orders', 'api', 'link_recovered', 'info', 'http api is up again', 3)",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let store = StateStore::open(url).await.unwrap();
    let read: Vec<(AlertKind, Option<ErrorClass>, AlertSeverity, Option<String>)> = store
        .alerts(10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| (a.kind, a.class, a.severity, a.node))
        .collect();
    assert_eq!(
        read,
        [
            (
                AlertKind::LinkRecovered,
                None,
                AlertSeverity::Info,
                Some("api".to_owned())
            ),
            (
                AlertKind::LinkDown,
                Some(ErrorClass::Auth),
                AlertSeverity::Critical,
                Some("api".to_owned())
            ),
            (AlertKind::RunFailed, None, AlertSeverity::Critical, None),
        ]
    );
}

#[tokio::test]
async fn sqlite_old_alerts_are_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    std::fs::File::create(&path).unwrap();
    old_alerts_are_migrated(&format!("sqlite://{}", path.display())).await;
}

#[tokio::test]
async fn postgres_old_alerts_are_migrated() {
    let pg = sluice_testkit::postgres_schema("state_alerts").await;
    old_alerts_are_migrated(&pg.url).await;
}

/// Of two workers claiming the same ticks at once, exactly one gets each; an older tick
/// is never claimed after a newer one.
async fn ticks_are_claimed_once(url: &str) {
    let a = StateStore::open(url).await.unwrap();
    let b = StateStore::open(url).await.unwrap();
    for tick in [1_000, 2_000, 3_000] {
        let (x, y) = tokio::join!(
            a.claim_tick("orders", "@tick", tick),
            b.claim_tick("orders", "@tick", tick)
        );
        assert!(x.unwrap() ^ y.unwrap(), "tick {tick} claimed once");
    }
    assert!(!a.claim_tick("orders", "@tick", 2_500).await.unwrap());
    assert_eq!(
        a.checkpoint("orders", "@tick").await.unwrap().unwrap()["tick"],
        3_000
    );
}

#[tokio::test]
async fn sqlite_ticks_are_claimed_once() {
    let dir = tempfile::tempdir().unwrap();
    ticks_are_claimed_once(&format!("sqlite://{}/state.db", dir.path().display())).await;
}

#[tokio::test]
async fn postgres_ticks_are_claimed_once() {
    let pg = sluice_testkit::postgres_schema("ticks").await;
    ticks_are_claimed_once(&pg.url).await;
}

#[tokio::test]
async fn postgres_rate_budgets_give_each_token_once_and_share_pauses() {
    let pg = sluice_testkit::postgres_schema("budgets").await;
    let one = StateStore::open(&pg.url).await.unwrap();
    let other = StateStore::open(&pg.url).await.unwrap();
    let (a, b) = (
        one.rate_budgets().expect("PostgreSQL shares budgets"),
        other.rate_budgets().expect("PostgreSQL shares budgets"),
    );
    // A bucket of 3 refilling at one token in 1000 s: three tokens, taken by either store
    // at once, then a wait.
    let key = "http://api.example.com:443 0123abcd";
    let takes = futures_join(a.take(key, 0.001, 3.0), b.take(key, 0.001, 3.0)).await;
    assert_eq!(takes, (None, None));
    assert_eq!(a.take(key, 0.001, 3.0).await.unwrap(), None);
    let wait = b
        .take(key, 0.001, 3.0)
        .await
        .unwrap()
        .expect("the bucket is empty");
    assert!(wait > std::time::Duration::from_secs(900), "{wait:?}");
    // A pause told through one holds every take, through the other too; other keys go.
    let fresh = "http://api.example.com:443 ffff0000";
    a.pause(fresh, std::time::Duration::from_secs(60))
        .await
        .unwrap();
    let paused = b.take(fresh, 100.0, 1.0).await.unwrap().expect("paused");
    assert!(paused > std::time::Duration::from_secs(50), "{paused:?}");
    assert_eq!(
        b.take("http://elsewhere:80 00", 100.0, 1.0).await.unwrap(),
        None
    );
    // SQLite stores keep each source's own limiter.
    let dir = tempfile::tempdir().unwrap();
    let sqlite = StateStore::open(&format!("sqlite://{}/s.db", dir.path().display()))
        .await
        .unwrap();
    assert!(sqlite.rate_budgets().is_none());
}

/// Both takes at once, each unwrapped.
async fn futures_join(
    x: impl std::future::Future<
        Output = Result<Option<std::time::Duration>, sluice_core::ConnectorError>,
    >,
    y: impl std::future::Future<
        Output = Result<Option<std::time::Duration>, sluice_core::ConnectorError>,
    >,
) -> (Option<std::time::Duration>, Option<std::time::Duration>) {
    let (x, y) = tokio::join!(x, y);
    (x.unwrap(), y.unwrap())
}
