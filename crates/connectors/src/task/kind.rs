//! `type: sql_task` and `type: command`: node kinds that do something once, also usable as
//! `compensate`.

use super::spec::{CommandTaskSpec, SqlTaskSpec};
use super::{CommandTask, SqlTask};
use sluice_config::kind::KindOf;
use sluice_config::plan::PlannedNode;
use sluice_config::spec::nodes::{NodeSpec, Role};
use sluice_config::{BuildContext, Checker, Kind, Link, NodeConfig};
use sluice_core::node::{BoxFuture, NodeRunner, Task};
use sluice_core::{ConnectorError, Secret};

/// `type: sql_task`.
pub static SQL_TASK: KindOf<SqlTaskSpec> = KindOf::new("sql_task", Role::Task, "SQL task");

/// `type: command`.
pub static COMMAND: KindOf<CommandTaskSpec> = KindOf::new("command", Role::Task, "command task");

const TASK_VARIABLES: &[&str] = &["run_id", "pipeline"];

fn why(_: &str) -> String {
    "tasks may use `{{run_id}}` and `{{pipeline}}`".to_owned()
}

impl SqlTaskSpec {
    /// The task this spec describes; a relative SQLite path starts at the pipeline's folder.
    pub fn task(&self, ctx: &BuildContext) -> SqlTask {
        SqlTask::new(
            Secret::new(ctx.database_url(self.url.value.expose())),
            self.sql.value.clone(),
            self.timeout.value.get(),
        )
    }
}

impl CommandTaskSpec {
    /// The task this spec describes; a relative `cwd` starts at the pipeline's folder.
    pub fn task(&self, ctx: &BuildContext) -> CommandTask {
        CommandTask::new(
            self.program.value.clone(),
            self.args.clone(),
            self.env
                .iter_exposed()
                .map(|(k, v)| (k.to_owned(), Secret::new(v)))
                .collect(),
            self.cwd.as_ref().map(|d| ctx.path(d)),
            self.timeout.value.get(),
        )
    }
}

impl NodeConfig for SqlTaskSpec {
    fn kind(&self) -> &'static dyn Kind {
        &SQL_TASK
    }

    fn role(&self) -> Role {
        Role::Task
    }

    fn check(&self, _node: &NodeSpec, c: &mut Checker<'_>) {
        let t = self;
        if t.sql.value.trim().is_empty() {
            c.error_at(&t.sql, "`sql` is empty", "write the statements to run");
        }
        if t.url.value.has_password() && !t.url.interpolated {
            c.secret_warning(
                t.url.pos,
                t.url.width,
                "the database URL holds a password written in clear",
                "write the password as `${NAME}`, e.g. `postgres://user:${PGPASSWORD}@host/db`",
            );
        }
        c.templates(&t.sql.value, t.sql.pos, TASK_VARIABLES, &why);
        c.positive_duration(&t.timeout, "timeout");
    }

    fn shown(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn summary(&self) -> String {
        format!("sql_task on {}", self.url.value)
    }

    fn build<'a>(
        &'a self,
        _node: &'a PlannedNode,
        ctx: &'a BuildContext,
    ) -> BoxFuture<'a, Result<NodeRunner, ConnectorError>> {
        Box::pin(async move { Ok(NodeRunner::Task(Box::new(self.task(ctx)) as Box<dyn Task>)) })
    }

    fn links(&self, _node: &PlannedNode, ctx: &BuildContext) -> Vec<Link> {
        vec![crate::sql::database_link(&self.url.value, ctx)]
    }
}

impl NodeConfig for CommandTaskSpec {
    fn kind(&self) -> &'static dyn Kind {
        &COMMAND
    }

    fn role(&self) -> Role {
        Role::Task
    }

    fn check(&self, _node: &NodeSpec, c: &mut Checker<'_>) {
        let t = self;
        if t.program.value.trim().is_empty() {
            c.error_at(
                &t.program,
                "`program` is empty",
                "name the program to run, e.g. `./scripts/refresh.sh`",
            );
        }
        for arg in &t.args {
            c.templates(arg, t.program.pos, TASK_VARIABLES, &why);
        }
        c.redacted_map(&t.env, "environment variable");
        c.positive_duration(&t.timeout, "timeout");
    }

    fn shown(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    fn summary(&self) -> String {
        format!("command `{}`", self.program.value)
    }

    fn build<'a>(
        &'a self,
        _node: &'a PlannedNode,
        ctx: &'a BuildContext,
    ) -> BoxFuture<'a, Result<NodeRunner, ConnectorError>> {
        Box::pin(async move { Ok(NodeRunner::Task(Box::new(self.task(ctx)) as Box<dyn Task>)) })
    }

    fn links(&self, _node: &PlannedNode, _ctx: &BuildContext) -> Vec<Link> {
        // A program on this machine: it is checked when it runs.
        Vec::new()
    }
}
