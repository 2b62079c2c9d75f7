//! A Kafka broker the test owns: a single-node KRaft broker and controller, run on the
//! machine's JDK from the jars `scripts/services.sh` fetched from Maven Central (the
//! cache `${SLUICE_CACHE:-~/.cache/sluice}/kafka-<version>-<hash>/libs`, or
//! `SLUICE_KAFKA_LIBS`), with its own log folder under the temp dir and free ports of
//! 127.0.0.1. The test stops and starts it (an outage of the Kafka buffer) without
//! touching the shared broker on 9092; it is killed and its folder removed when the
//! handle drops.
//!
//! ```no_run
//! let kafka = sluice_testkit::PrivateKafka::start();
//! let brokers = kafka.bootstrap(); // 127.0.0.1:PORT
//! kafka.stop();
//! kafka.start_again();
//! ```

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a start may take (a JVM on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// A private Kafka broker (see the module).
#[derive(Debug)]
pub struct PrivateKafka {
    dir: PathBuf,
    libs: PathBuf,
    port: u16,
    child: Mutex<Option<Child>>,
}

/// The repository's root (this crate is `crates/testkit`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The folder of Kafka's jars: `SLUICE_KAFKA_LIBS`, as `scripts/services.sh env` exports
/// it (the script that fetches them names their folder).
fn libs() -> PathBuf {
    let libs = PathBuf::from(std::env::var_os("SLUICE_KAFKA_LIBS").unwrap_or_else(|| {
        panic!("SLUICE_KAFKA_LIBS is not set: run `eval \"$(scripts/services.sh env)\"` (scripts/test.sh does)")
    }));
    assert!(
        libs.is_dir(),
        "no Kafka jars at {} (`scripts/services.sh up kafka` fetches them once; or set SLUICE_KAFKA_LIBS)",
        libs.display()
    );
    libs
}

fn java() -> PathBuf {
    match std::env::var_os("JAVA_HOME") {
        Some(home) if Path::new(&home).join("bin/java").exists() => {
            Path::new(&home).join("bin/java")
        }
        _ => PathBuf::from("java"),
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl PrivateKafka {
    /// Formats a log folder of its own and starts the broker; returns once it answers a
    /// metadata request.
    pub fn start() -> PrivateKafka {
        let libs = libs();
        let dir = std::env::temp_dir().join(crate::unique_name("sluice_kafka"));
        std::fs::create_dir_all(dir.join("data")).expect("the broker's folder");
        let (port, controller) = (free_port(), free_port());
        let template = std::fs::read_to_string(repo_root().join("scripts/kafka/server.properties"))
            .expect("scripts/kafka/server.properties");
        let config = template
            .replace(
                "@LOG_DIRS@",
                dir.join("data").to_str().expect("a UTF-8 path"),
            )
            .replace("@KAFKA_PORT@", &port.to_string())
            .replace("@CONTROLLER_PORT@", &controller.to_string());
        std::fs::write(dir.join("server.properties"), config).expect("server.properties");
        std::fs::write(
            dir.join("log4j2.properties"),
            "appender.out.type = Console\nappender.out.name = OUT\nappender.out.layout.type = PatternLayout\nappender.out.layout.pattern = [%d] %p %m (%c)%n\nrootLogger.level = INFO\nrootLogger.appenderRef.out.ref = OUT\n",
        )
        .expect("log4j2.properties");
        // A cluster id: 16 random bytes in Kafka's URL-safe base64 without padding.
        let cluster_id = {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes())
        };
        let out = Command::new(java())
            .args(["-Xmx256m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                dir.join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", libs.display()))
            // One id in 64 starts with '-', which the tool would read as an option: given as
            // `--cluster-id=ID`, it is always a value.
            .args(["kafka.tools.StorageTool", "format"])
            .arg(format!("--cluster-id={cluster_id}"))
            .arg("-c")
            .arg(dir.join("server.properties"))
            .arg("--ignore-formatted")
            .output()
            .expect("java runs (a JDK 17+ on PATH, or JAVA_HOME)");
        assert!(
            out.status.success(),
            "formatting the private Kafka's log folder failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let kafka = PrivateKafka {
            dir,
            libs,
            port,
            child: Mutex::new(None),
        };
        kafka.start_again();
        kafka
    }

    /// `127.0.0.1:PORT`, for `brokers:`.
    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Starts it (again) on its port and log folder, and waits until it answers a
    /// metadata request.
    pub fn start_again(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        assert!(child.is_none(), "the private Kafka runs already");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kafka.log"))
            .expect("kafka.log");
        let spawned = Command::new(java())
            .args([
                "-Xms128m",
                "-Xmx512m",
                "-XX:+UseG1GC",
                "-XX:MaxGCPauseMillis=20",
                "-XX:+ExitOnOutOfMemoryError",
                "-Djava.awt.headless=true",
            ])
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                self.dir.join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", self.libs.display()))
            .arg("kafka.Kafka")
            .arg(self.dir.join("server.properties"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("kafka.log"))
            .stderr(log)
            .spawn()
            .expect("java runs (a JDK 17+ on PATH, or JAVA_HOME)");
        *child = Some(spawned);
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(c) = child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                panic!(
                    "the private Kafka exited ({status}) while starting:\n{}",
                    self.log_tail()
                );
            }
            if self.answers() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the private Kafka did not answer within {START_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Whether it answers a metadata request now.
    fn answers(&self) -> bool {
        let consumer: Result<BaseConsumer, _> = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", "sluice-testkit-probe")
            .create();
        consumer.is_ok_and(|c| c.fetch_metadata(None, Duration::from_secs(2)).is_ok())
    }

    /// Stops it as an outage does: the process is killed (`SIGKILL`), its clients' connections cut.
    pub fn stop(&self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut c) = child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The last lines of its log, for failure messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("kafka.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

impl Drop for PrivateKafka {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
