//! Task nodes and `compensate` actions: a SQL statement on a database (`type:
//! sql_task`), or a program (`type: command`).

mod kind;
pub mod spec;

pub use kind::{COMMAND, SQL_TASK};

use async_trait::async_trait;
use sluice_core::{ConnectorError, ErrorClass, Secret};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncReadExt;

use sluice_core::node::{Task, TaskContext};

/// Runs SQL statements (separated by `;`) in one transaction on PostgreSQL, MySQL or
/// SQLite, through sqlx's `Any` driver.
pub struct SqlTask {
    url: Secret,
    sql: String,
    timeout: Duration,
}

impl SqlTask {
    /// A task running `sql` on the database at `url`.
    pub fn new(url: Secret, sql: impl Into<String>, timeout: Duration) -> Self {
        SqlTask {
            url,
            sql: sql.into(),
            timeout,
        }
    }

    fn fail(&self, e: sqlx::Error) -> ConnectorError {
        let dialect = crate::sql::Dialect::from_url(self.url.expose())
            .unwrap_or(crate::sql::Dialect::Postgres);
        let class = crate::sql::statement_class(dialect, &e);
        let mut message = self.url.redact(&format!("sql_task failed: {e}"));
        for part in sluice_core::redact::url_secrets(self.url.expose(), |_| false) {
            if part.expose().len() >= 3 {
                message = part.redact(&message);
            }
        }
        ConnectorError::new(class, message)
    }

    async fn execute(&self, ctx: &TaskContext) -> Result<(), ConnectorError> {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let mut url = self.url.expose().to_owned();
        if url.starts_with("sqlite://") && !url.contains("mode=") {
            url.push_str(if url.contains('?') {
                "&mode=rwc"
            } else {
                "?mode=rwc"
            });
        }
        let mut conn = sqlx::AnyConnection::connect(&url)
            .await
            .map_err(|e| self.fail(e))?;
        let mut tx = conn.begin().await.map_err(|e| self.fail(e))?;
        let sql = ctx.render(&self.sql);
        for statement in sql.split(';').filter(|s| !s.trim().is_empty()) {
            sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
                .execute(&mut *tx)
                .await
                .map_err(|e| self.fail(e))?;
        }
        tx.commit().await.map_err(|e| self.fail(e))
    }
}

#[async_trait]
impl Task for SqlTask {
    async fn run(&self, ctx: &TaskContext) -> Result<(), ConnectorError> {
        match tokio::time::timeout(self.timeout, self.execute(ctx)).await {
            Ok(result) => result,
            Err(_) => Err(ConnectorError::new(
                ErrorClass::Dependency,
                format!("sql_task did not finish within {:?}", self.timeout),
            )),
        }
    }

    fn describe(&self) -> String {
        let first = self.sql.split_whitespace().collect::<Vec<_>>().join(" ");
        let short: String = first.chars().take(80).collect();
        format!("sql_task `{short}`")
    }
}

/// Runs a program with arguments, environment and a timeout. A non-zero exit is an
/// `internal` failure with the end of its standard error; a timeout kills it.
pub struct CommandTask {
    program: String,
    args: Vec<String>,
    env: BTreeMap<String, Secret>,
    cwd: Option<PathBuf>,
    timeout: Duration,
}

impl CommandTask {
    /// A task running `program args...`.
    pub fn new(
        program: impl Into<String>,
        args: Vec<String>,
        env: BTreeMap<String, Secret>,
        cwd: Option<PathBuf>,
        timeout: Duration,
    ) -> Self {
        CommandTask {
            program: program.into(),
            args,
            env,
            cwd,
            timeout,
        }
    }

    fn redact(&self, text: &str) -> String {
        self.env.values().fold(text.to_owned(), |t, s| s.redact(&t))
    }
}

#[async_trait]
impl Task for CommandTask {
    async fn run(&self, ctx: &TaskContext) -> Result<(), ConnectorError> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(self.args.iter().map(|a| ctx.render(a)))
            .env("SLUICE_PIPELINE", &ctx.pipeline)
            .env("SLUICE_RUN_ID", &ctx.run_id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &self.env {
            command.env(k, v.expose());
        }
        if let Some(cwd) = &self.cwd {
            command.current_dir(cwd);
        }
        let mut child = command.spawn().map_err(|e| {
            ConnectorError::new(
                ErrorClass::InvalidRequest,
                format!(
                    "cannot start `{}`: {e} (is it installed and on PATH?)",
                    self.program
                ),
            )
        })?;
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let waited = tokio::time::timeout(self.timeout, async {
            let mut err = Vec::new();
            let _ = stderr.read_to_end(&mut err).await;
            (child.wait().await, err)
        })
        .await;
        match waited {
            Err(_) => Err(ConnectorError::new(
                ErrorClass::Dependency,
                format!(
                    "`{}` did not finish within {:?} and was killed",
                    self.program, self.timeout
                ),
            )),
            Ok((Err(e), _)) => Err(ConnectorError::new(
                ErrorClass::Internal,
                format!("waiting for `{}`: {e}", self.program),
            )),
            Ok((Ok(status), _)) if status.success() => Ok(()),
            Ok((Ok(status), err)) => {
                let text = String::from_utf8_lossy(&err);
                let tail: String = text
                    .trim()
                    .chars()
                    .rev()
                    .take(300)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                Err(ConnectorError::new(
                    ErrorClass::Internal,
                    self.redact(&format!("`{}` exited with {status}: {tail}", self.program)),
                ))
            }
        }
    }

    fn describe(&self) -> String {
        format!("command `{} {}`", self.program, self.args.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn commands_succeed_fail_and_time_out_with_clear_errors() {
        let ok = CommandTask::new(
            "true",
            vec![],
            BTreeMap::new(),
            None,
            Duration::from_secs(5),
        );
        ok.run(&TaskContext::default()).await.unwrap();
        let env = BTreeMap::from([("TOKEN".to_owned(), Secret::new("s3cret"))]);
        let fails = CommandTask::new(
            "sh",
            vec!["-c".into(), "echo \"bad token $TOKEN\" >&2; exit 3".into()],
            env,
            None,
            Duration::from_secs(5),
        );
        let err = fails.run(&TaskContext::default()).await.unwrap_err();
        assert_eq!(err.class, ErrorClass::Internal);
        assert!(
            err.message.contains("bad token ***") && !err.message.contains("s3cret"),
            "{err}"
        );
        let slow = CommandTask::new(
            "sleep",
            vec!["5".into()],
            BTreeMap::new(),
            None,
            Duration::from_millis(100),
        );
        assert_eq!(
            slow.run(&TaskContext::default()).await.unwrap_err().class,
            ErrorClass::Dependency
        );
        let missing = CommandTask::new(
            "no-such-program-xyz",
            vec![],
            BTreeMap::new(),
            None,
            Duration::from_secs(1),
        );
        assert!(
            missing
                .run(&TaskContext::default())
                .await
                .unwrap_err()
                .message
                .contains("PATH")
        );
        // The run's id and pipeline reach the arguments and the environment.
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let note = CommandTask::new(
            "sh",
            vec![
                "-c".into(),
                format!(
                    "echo \"$1 $SLUICE_PIPELINE $SLUICE_RUN_ID\" > {}",
                    out.display()
                ),
                "sh".into(),
                "run={{ run_id }}".into(),
            ],
            BTreeMap::new(),
            None,
            Duration::from_secs(5),
        );
        let ctx = TaskContext {
            pipeline: "orders".into(),
            run_id: "abc123".into(),
        };
        note.run(&ctx).await.unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "run=abc123 orders abc123"
        );
    }

    #[tokio::test]
    async fn sql_tasks_run_in_a_transaction_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = Secret::new(format!("sqlite://{}/t.db", dir.path().display()));
        SqlTask::new(
            url.clone(),
            "CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1)",
            Duration::from_secs(5),
        )
        .run(&TaskContext::default())
        .await
        .unwrap();
        // A failing statement rolls the whole task back.
        let err = SqlTask::new(
            url.clone(),
            "INSERT INTO t VALUES (2); INSERT INTO nope VALUES (1)",
            Duration::from_secs(5),
        )
        .run(&TaskContext::default())
        .await
        .unwrap_err();
        assert_eq!(err.class, ErrorClass::InvalidRequest, "{err}");
        use sqlx::Connection;
        let mut conn = sqlx::SqliteConnection::connect(url.expose()).await.unwrap();
        let xs: Vec<i64> = sqlx::query_scalar("SELECT x FROM t")
            .fetch_all(&mut conn)
            .await
            .unwrap();
        assert_eq!(xs, [1], "the failed task's first insert was rolled back");
    }
}
