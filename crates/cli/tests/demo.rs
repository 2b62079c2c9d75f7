//! `sluice demo` end to end, as a new user runs it: every injected failure class is
//! handled, the SQLite table holds the mock's records minus the quarantined ones, and the
//! suggested replay (against the healed mock, served by `sluice mock-api`) brings it to
//! all of them, once. No service needed.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const RECORDS: u64 = 600;
/// `MockConfig::demo` serves three malformed records.
const MALFORMED: i64 = 3;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

fn run(cmd: &mut Command) -> (Output, String) {
    let out = cmd.output().expect("sluice runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn rows(db: &Path) -> (i64, i64) {
    let url = format!("sqlite://{}", db.display());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            use sqlx::Connection;
            let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
            sqlx::query_as("SELECT count(*), count(DISTINCT order_id) FROM orders")
                .fetch_one(&mut conn)
                .await
                .unwrap()
        })
}

/// Kills the mock server when the test ends, pass or fail.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `sluice mock-api` serving the demo's API, fixed, on `port`; returns once it listens.
fn healed_mock(port: u16) -> Server {
    let mut child = sluice()
        .args(["mock-api", "--faults", "demo", "--healed", "--records"])
        .arg(RECORDS.to_string())
        .args(["--port", &port.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("mock-api starts");
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with("mock API: http://127.0.0.1:"), "{first}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "mock-api never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    Server(child)
}

#[test]
fn the_demo_handles_every_failure_and_replay_completes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let demo = || {
        run(sluice()
            .current_dir(tmp.path())
            .args([
                "demo",
                "--plain",
                "--no-wait",
                "--port",
                "0",
                "--dir",
                "demo",
            ])
            .args(["--records", &RECORDS.to_string()])
            .stdin(Stdio::null()))
    };
    let (out, text) = demo();
    assert!(out.status.success(), "{text}");
    for class in [
        "rate_limited",
        "dependency",
        "auth",
        "payload_too_large",
        "contract_changed",
        "invalid_request",
    ] {
        assert!(
            text.lines()
                .any(|l| l.trim_start().starts_with(class) && l.contains("event(s)")),
            "the demo's summary shows no `{class}` handled:\n{text}"
        );
    }
    assert!(text.contains("partially_succeeded"), "{text}");
    let db = dir.join("quickstart.db");
    assert_eq!(
        rows(&db),
        (RECORDS as i64 - MALFORMED, RECORDS as i64 - MALFORMED)
    );

    let (out, text) = run(sluice().current_dir(&dir).args(["failed", "list"]));
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches("invalid_request").count(),
        MALFORMED as usize,
        "{text}"
    );

    // The port the demo's API had: the suggested `mock-api` line names it.
    let port: u16 = text_port(&demo_port_line(&dir));
    let _mock = healed_mock(port);
    let (out, text) = run(sluice()
        .current_dir(&dir)
        .args(["replay", "--pipeline", "quickstart"]));
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("3 batch(es) / 3 record(s) delivered"),
        "{text}"
    );
    assert_eq!(rows(&db), (RECORDS as i64, RECORDS as i64));

    // Twice: nothing left, nothing written twice.
    let (out, text) = run(sluice()
        .current_dir(&dir)
        .args(["replay", "--pipeline", "quickstart"]));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("0 batch(es)"), "{text}");
    assert_eq!(rows(&db), (RECORDS as i64, RECORDS as i64));

    // And the demo runs again in the same folder, from scratch.
    drop(_mock);
    let (out, text) = demo();
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Starting afresh"), "{text}");
    assert_eq!(rows(&db).0, RECORDS as i64 - MALFORMED);
}

/// The demo writes the API's address into its copy of the pipeline.
fn demo_port_line(dir: &Path) -> String {
    let yaml = std::fs::read_to_string(dir.join("quickstart.yaml")).unwrap();
    yaml.lines()
        .find(|l| l.contains("url:") && l.contains("127.0.0.1:"))
        .unwrap_or_else(|| panic!("no API url in the demo's pipeline:\n{yaml}"))
        .to_owned()
}

fn text_port(line: &str) -> u16 {
    let after = line.split("127.0.0.1:").nth(1).unwrap();
    after
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap()
}

/// A folder an earlier demo made, where the user has since put their own things: the next
/// demo removes only what the earlier one made. A non-empty folder no demo made is refused
/// and left as it was.
#[test]
fn a_demo_removes_only_what_a_demo_made() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    std::fs::create_dir_all(dir.join(".sluice")).unwrap();
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    // The marker as an earlier demo left it (it listed nothing), and what that demo made.
    std::fs::write(
        dir.join(".sluice-demo"),
        "made by `sluice demo`; emptied by the next one\n",
    )
    .unwrap();
    std::fs::write(dir.join(".sluice/state.db"), "not a database").unwrap();
    std::fs::write(dir.join("quickstart.yaml"), "stale").unwrap();
    // What the user added since.
    std::fs::write(dir.join("src/main.rs"), "fn main() {}\n").unwrap();
    std::fs::write(dir.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "mine").unwrap();

    let demo = |dir: &str| {
        run(sluice()
            .current_dir(tmp.path())
            .args(["demo", "--plain", "--no-wait", "--port", "0", "--records"])
            .arg("100")
            .args(["--dir", dir])
            .stdin(Stdio::null()))
    };
    let (out, text) = demo("demo");
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Starting afresh"), "{text}");
    assert!(text.contains("kept the 3 others"), "{text}");
    assert_eq!(
        std::fs::read_to_string(dir.join("src/main.rs")).unwrap(),
        "fn main() {}\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(".git/HEAD")).unwrap(),
        "ref: refs/heads/main\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(rows(&dir.join("quickstart.db")).0, 100 - MALFORMED);
    let marker = std::fs::read_to_string(dir.join(".sluice-demo")).unwrap();
    let listed: Vec<&str> = marker.lines().skip(1).collect();
    assert!(
        listed.contains(&"quickstart.db") && listed.contains(&".sluice"),
        "{marker}"
    );
    for mine in ["src", ".git", "notes.txt"] {
        assert!(
            !listed.contains(&mine),
            "the marker claims `{mine}`:\n{marker}"
        );
    }

    // Again: the user's entries still stay.
    let (out, text) = demo("demo");
    assert!(out.status.success(), "{text}");
    assert!(dir.join("src/main.rs").exists() && dir.join(".git/HEAD").exists());

    // A folder no demo made, not empty: refused, untouched.
    let other = tmp.path().join("project");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("Cargo.toml"), "[package]\n").unwrap();
    let (out, text) = demo("project");
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("is not a demo's folder"), "{text}");
    assert_eq!(std::fs::read_dir(&other).unwrap().count(), 1);
}
