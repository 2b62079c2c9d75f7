//! A PostgreSQL server the test owns: `initdb` and `pg_ctl` from Debian's binaries
//! (`/usr/lib/postgresql/*/bin`) in a folder of its own under the temp dir, on a free
//! port of 127.0.0.1, with trust authentication. The test stops, starts and restarts it
//! (an outage of the sink's database) without touching the shared server; it is stopped
//! and its folder removed when the handle drops.
//!
//! ```no_run
//! let pg = sluice_testkit::PrivatePostgres::start();
//! let url = pg.url(); // postgres://postgres@127.0.0.1:PORT/postgres
//! pg.stop();
//! pg.start_again();
//! ```

use std::path::{Path, PathBuf};
use std::process::Command;

/// A private PostgreSQL server (see the module).
#[derive(Debug)]
pub struct PrivatePostgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
}

/// The newest `/usr/lib/postgresql/<version>/bin` with `initdb`.
fn bindir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).unwrap_or_else(|| {
        panic!("no PostgreSQL server binaries under /usr/lib/postgresql (scripts/deps.sh services installs them)")
    })
}

fn root() -> bool {
    // `id -u`, as scripts/services.sh decides it.
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a PostgreSQL program, as the `postgres` OS user when we are root (initdb and
/// postgres refuse root).
fn run_pg(program: &Path, args: &[&str]) -> std::process::Output {
    let mut cmd = if root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    };
    cmd.args(args).current_dir("/");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

impl PrivatePostgres {
    /// Makes a cluster in a new folder and starts it.
    pub fn start() -> PrivatePostgres {
        let bin = bindir();
        let dir = std::env::temp_dir().join(crate::unique_name("sluice_pg"));
        std::fs::create_dir_all(&dir).expect("the cluster's folder");
        if root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .expect("chown");
            assert!(
                status.success(),
                "cannot give {} to postgres",
                dir.display()
            );
        }
        let data = dir.join("data");
        let out = run_pg(
            &bin.join("initdb"),
            &[
                "-D",
                data.to_str().expect("a UTF-8 path"),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let pg = PrivatePostgres {
            dir,
            bin,
            port: free_port(),
        };
        pg.start_again();
        pg
    }

    /// The URL of its `postgres` database, as the `postgres` role (trust: no password).
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn ctl(&self, args: &[&str]) -> std::process::Output {
        let data = self.dir.join("data");
        let mut all = vec!["-D", data.to_str().expect("a UTF-8 path")];
        all.extend_from_slice(args);
        run_pg(&self.bin.join("pg_ctl"), &all)
    }

    /// Starts it (again) on its port, and waits until it accepts connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        let out = self.ctl(&[
            "-w",
            "-t",
            "60",
            "-l",
            log.to_str().expect("a UTF-8 path"),
            "-o",
            &options,
            "start",
        ]);
        assert!(
            out.status.success(),
            "pg_ctl start failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops it at once (`-m fast`: sessions are cut, as in an outage).
    pub fn stop(&self) {
        let out = self.ctl(&["-w", "-t", "60", "-m", "fast", "stop"]);
        assert!(
            out.status.success(),
            "pg_ctl stop failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Whether it runs.
    pub fn is_running(&self) -> bool {
        self.ctl(&["status"]).status.success()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.ctl(&["-w", "-t", "30", "-m", "immediate", "stop"]);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
