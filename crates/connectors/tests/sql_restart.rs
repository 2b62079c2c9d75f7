//! The database restarted mid-load: the write fails with `dependency`, a retry once the
//! server is back succeeds, and in the end every row is there exactly once.
//!
//! This binary stops and starts the shared PostgreSQL and MariaDB servers
//! (`scripts/services.sh down|up`), so it holds one test that does both in turn; run it
//! alone, nothing else beside it. It can only stop servers this checkout started; to run it
//! beside servers another checkout owns, give it private ones:
//!
//! ```text
//! export SLUICE_SERVICES_DIR=/tmp/sql-restart SLUICE_PG_PORT=55432 SLUICE_MYSQL_PORT=33306
//! scripts/services.sh up postgres mariadb && eval "$(scripts/services.sh env)"
//! cargo test -p sluice-connectors --test sql_restart
//! scripts/services.sh down postgres mariadb
//! ```

mod sql_common;

use sluice_connectors::sql::{WriteMode, build_sink};
use sluice_core::{ErrorClass, Sink};
use sluice_testkit::batches::page_batch;
use sluice_testkit::services_script;
use sql_common::{Target, records};
use std::time::{Duration, Instant};

/// Writes `b`, retrying like the engine does (every `dependency` error) until it succeeds.
async fn write_until_it_succeeds(
    sink: &mut Box<dyn Sink>,
    b: &sluice_core::Batch,
) -> (usize, usize) {
    let started = Instant::now();
    let mut failures = 0;
    loop {
        match sink.write(b).await {
            Ok(r) => {
                assert!(r.rejected.is_empty(), "{:?}", r.rejected);
                return (r.written, failures);
            }
            Err(e) => {
                assert_eq!(e.class, ErrorClass::Dependency, "{e}");
                failures += 1;
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "still failing: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// `host:port` of a `scheme://user:pass@host:port/db` URL.
fn address(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, a)| a)
        .to_owned()
}

async fn restart_mid_load(t: Target, service: &str) {
    let address = address(&t.url);
    let port = address.as_str();
    for mode in [WriteMode::Append, WriteMode::Upsert] {
        let table = format!("restart_{mode:?}").to_lowercase();
        let mut config = t.config(&table);
        config.mode = mode;
        config.key = vec!["id".into()];
        config.connect_timeout_ms = 2_000;
        let mut sink = build_sink(config).await.unwrap();
        let mut batches: Vec<_> = (0..9u64)
            .map(|p| page_batch(p, records(p as i64 * 1_000, 1_000)))
            .collect();
        // The last one is large, so that the server can go down while it is being written.
        batches.push(page_batch(9, records(9_000, 60_000)));
        for b in &batches[..5] {
            assert_eq!(write_until_it_succeeds(&mut sink, b).await.0, 1_000);
        }

        services_script("down", service);
        assert!(
            std::net::TcpStream::connect(port).is_err(),
            "{port} still answers after `scripts/services.sh down {service}`: the server was started by \
             another checkout; stop it there and run `scripts/services.sh up` here (or run this test from that checkout)"
        );
        let e = sink.write(&batches[5]).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Dependency, "{e}");
        assert!(
            e.message.contains(port),
            "the message names the server: {e}"
        );
        assert!(
            e.message.contains("services.sh status"),
            "the message says what to check: {e}"
        );
        assert!(!e.message.contains("sluice:sluice"), "no password: {e}");
        println!("[{}] {mode:?}: while down: {e}", t.name);
        assert!(sink.health().await.is_err());
        services_script("up", service);

        // The batch that failed, retried, is written once; the ones already written are not.
        let (written, failures) = write_until_it_succeeds(&mut sink, &batches[5]).await;
        assert_eq!(written, 1_000);
        println!(
            "[{}] {mode:?}: written after {failures} more failed attempts",
            t.name
        );
        assert!(sink.write(&batches[4]).await.unwrap().duplicate);
        for b in &batches[6..9] {
            assert_eq!(write_until_it_succeeds(&mut sink, b).await.0, 1_000);
        }

        // Down in the middle of a write: that write fails or commits; either way the retry
        // leaves every row there once (a commit whose answer was lost is a ledger duplicate).
        let service_name = service.to_owned();
        let outage = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            services_script("down", &service_name);
            std::thread::sleep(Duration::from_secs(1));
            services_script("up", &service_name);
        });
        let first = sink.write(&batches[9]).await;
        println!(
            "[{}] {mode:?}: the write in flight: {:?}",
            t.name,
            first.as_ref().map(|r| r.written)
        );
        outage.join().unwrap();
        if let Err(e) = &first {
            assert_eq!(e.class, ErrorClass::Dependency, "{e}");
            write_until_it_succeeds(&mut sink, &batches[9]).await;
        }
        assert!(sink.write(&batches[9]).await.unwrap().duplicate);
        assert_eq!(
            t.ids(&table).await,
            (0..69_000).collect::<Vec<i64>>(),
            "{} {mode:?}: every row once",
            t.name
        );
    }
}

#[tokio::test]
async fn a_database_restarted_mid_load_loses_and_duplicates_nothing() {
    restart_mid_load(sql_common::postgres().await, "postgres").await;
    restart_mid_load(sql_common::mariadb().await, "mariadb").await;
}
