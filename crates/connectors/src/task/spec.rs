//! Task nodes, which do something once instead of moving data: `type: sql_task` and
//! `type: command`. Both also serve as `compensate` steps.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sluice_config::Spanned;
use sluice_config::values::{DatabaseUrl, Duration, RedactedMap};

/// `type: sql_task`: statements run on a database.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SqlTaskSpec {
    /// The connection URL (a secret: it may hold a password).
    #[schemars(example = &"postgres://etl:${PGPASSWORD}@127.0.0.1:5432/warehouse")]
    pub url: Spanned<DatabaseUrl>,
    /// The statements, run in one transaction.
    #[schemars(example = &"TRUNCATE staging.orders")]
    pub sql: Spanned<String>,
    /// Time after which the statement is cancelled.
    #[serde(default = "default_sql_timeout")]
    pub timeout: Spanned<Duration>,
}

fn default_sql_timeout() -> Spanned<Duration> {
    Spanned::new(Duration::secs(300), sluice_config::Pos::START)
}

/// `type: command`: a program run to completion. It succeeds when it exits with 0.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommandTaskSpec {
    /// The program: a path, or a name looked up in `PATH`. Not run through a shell.
    #[schemars(example = &"./scripts/refresh-views.sh")]
    pub program: Spanned<String>,
    /// Its arguments.
    #[serde(default)]
    #[schemars(example = &serde_json::json!(["--full"]))]
    pub args: Vec<String>,
    /// Extra environment variables (secret-looking values never print).
    #[serde(default)]
    #[schemars(example = &serde_json::json!({"PGPASSWORD": "${PGPASSWORD}"}))]
    pub env: RedactedMap,
    /// The working directory (else Sluice's).
    #[schemars(example = &"/srv/etl")]
    pub cwd: Option<String>,
    /// Time after which the program is killed.
    #[serde(default = "default_command_timeout")]
    pub timeout: Spanned<Duration>,
}

fn default_command_timeout() -> Spanned<Duration> {
    Spanned::new(Duration::secs(600), sluice_config::Pos::START)
}
