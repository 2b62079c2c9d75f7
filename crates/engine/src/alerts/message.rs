//! An alert as a person reads it: a title, the facts (pipeline, node, class, severity,
//! time), what happened, what Sluice did about it, and the command to run next. Each chat
//! robot and the email channel lay this out in their own format.

use sluice_state::{AlertKind, AlertRow, AlertSeverity};

/// The readable form of one alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `[critical] orders: run failed`.
    pub title: String,
    /// Label and value, in order: Pipeline, Node, Class, Severity, At.
    pub facts: Vec<(&'static str, String)>,
    /// What happened (the alert's message, redacted where it was raised).
    pub what: String,
    /// What Sluice did about it.
    pub did: String,
    /// The command that shows more.
    pub next: String,
}

/// Longest `what` sent to a chat robot: the services cut or refuse longer messages
/// (WeCom takes 4096 bytes of markdown: 1000 characters of CJK text are 3000).
const MAX_WHAT: usize = 1000;

impl Message {
    /// The message of `alert`, with `next` the command that shows more.
    pub fn of(alert: &AlertRow, next: &str) -> Message {
        let mut facts = vec![("Pipeline", alert.pipeline.clone())];
        if let Some(node) = &alert.node {
            facts.push(("Node", node.clone()));
        }
        if let Some(class) = alert.class {
            facts.push(("Class", class.as_str().to_owned()));
        }
        facts.push(("Severity", alert.severity.as_str().to_owned()));
        facts.push(("At", time(alert.at)));
        Message {
            title: format!(
                "[{}] {}: {}",
                alert.severity.as_str(),
                alert.pipeline,
                headline(alert.kind)
            ),
            facts,
            what: cut(&alert.message, MAX_WHAT),
            did: did(alert.kind).to_owned(),
            next: next.to_owned(),
        }
    }

    /// Plain text: the email body, and the fallback text of chat messages.
    pub fn plain(&self) -> String {
        let mut text = format!("{}\n\n", self.title);
        for (label, value) in &self.facts {
            text.push_str(&format!("{label}: {value}\n"));
        }
        text.push_str(&format!(
            "\nWhat happened: {}\nWhat Sluice did: {}\nNext: {}\n",
            self.what, self.did, self.next
        ));
        text
    }

    /// Markdown as the chat robots read it (DingTalk, WeCom, Feishu's `lark_md`): bold
    /// labels, one fact a line, the command in backquotes.
    pub fn markdown(&self, line_break: &str) -> String {
        let mut lines: Vec<String> = self
            .facts
            .iter()
            .map(|(label, value)| format!("**{label}**: {value}"))
            .collect();
        lines.push(format!("**What happened**: {}", self.what));
        lines.push(format!("**What Sluice did**: {}", self.did));
        lines.push(format!("**Next**: `{}`", self.next));
        lines.join(line_break)
    }
}

/// What an alert of this kind is about, in a few words.
pub fn headline(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::RunFailed => "run failed",
        AlertKind::RunPartiallySucceeded => "records quarantined",
        AlertKind::LinkDown => "link down",
        AlertKind::LinkRecovered => "link recovered",
        AlertKind::SchemaDrift => "schema drift",
        AlertKind::ReplayFinished => "replay finished",
        AlertKind::Stale => "no successful run within its freshness bound",
        AlertKind::Recovered => "recovered",
        AlertKind::ChannelFailed => "an alert channel fails",
        AlertKind::Backlog => "backlog above max_lag",
        AlertKind::PipelineInvalid => "pipeline file invalid",
        AlertKind::QuotaExhausted => "API quota used up",
        AlertKind::BreakerOpen => "circuit breaker open",
    }
}

/// What Sluice did when it raised an alert of this kind.
fn did(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::RunFailed => {
            "stopped the run and recorded it as failed; batches it could not deliver are kept in the failed-batch store (`sluice failed list`) for `sluice replay` once the cause is fixed"
        }
        AlertKind::RunPartiallySucceeded => {
            "delivered the other records and kept the quarantined ones in the failed-batch store, for `sluice replay` once the cause is fixed"
        }
        AlertKind::LinkDown => {
            "keeps checking the link; under `when_link_down: pause` the pipeline's sources read nothing and its sink waits until the link answers, then they go on by themselves; otherwise runs retry or fail by the error's class"
        }
        AlertKind::LinkRecovered | AlertKind::Recovered => {
            "nothing more: the condition cleared by itself"
        }
        AlertKind::SchemaDrift => {
            "let the records through (`schema_policy: warn`) with the schema evolved to fit them"
        }
        AlertKind::ReplayFinished => {
            "delivered what it could; batches that still fail stay in the failed-batch store"
        }
        AlertKind::Stale => {
            "nothing: runs start by their schedule; this says none succeeded lately"
        }
        AlertKind::PipelineInvalid => {
            "serves the file's last good version, if it had one, and reads the file again when it changes"
        }
        AlertKind::Backlog => {
            "keeps the batches in the buffer; under `when_link_down: buffer` the sources pause until the backlog is under `max_lag` again"
        }
        AlertKind::QuotaExhausted => {
            "parked the source with its checkpoint (the run ends `rate_limited`); the next run after the quota's reset goes on where it stopped, and none starts before"
        }
        AlertKind::BreakerOpen => {
            "holds the node's requests to that host back while the breaker is open and probes it again every `breaker.open_for`; the node goes on by itself once a probe succeeds, or fails when its retries run out"
        }
        AlertKind::ChannelFailed => {
            "kept the alerts in the state store (`sluice alerts`) and goes on trying the channel with each alert"
        }
    }
}

/// The colour a severity gets where a service has colours.
pub fn colour(severity: AlertSeverity) -> &'static str {
    match severity {
        AlertSeverity::Critical => "red",
        AlertSeverity::Warning => "orange",
        AlertSeverity::Info => "green",
    }
}

/// `2026-01-01 09:00:00 UTC`.
pub fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).map_or_else(
        || format!("{ms} ms since the epoch"),
        |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
    )
}

/// `text` cut to at most `max` characters, with `…` where it was cut.
fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max).collect();
    out.push('…');
    out
}

/// A length of time for people: `2h 5m`, `42s`.
pub fn span(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    let parts: Vec<String> = [(d, "d"), (h, "h"), (m, "m"), (s, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, u)| format!("{n}{u}"))
        .take(2)
        .collect();
    if parts.is_empty() {
        "0s".to_owned()
    } else {
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::ErrorClass;

    #[test]
    fn names_the_facts_and_the_next_command() {
        let alert = AlertRow {
            pipeline: "orders".into(),
            node: Some("db".into()),
            kind: AlertKind::RunFailed,
            class: Some(ErrorClass::Permission),
            severity: AlertSeverity::Critical,
            message: "permission denied".into(),
            at: 1_767_225_600_000,
        };
        let m = Message::of(&alert, "sluice runs show abc");
        assert_eq!(m.title, "[critical] orders: run failed");
        assert_eq!(
            m.facts,
            [
                ("Pipeline", "orders".to_owned()),
                ("Node", "db".to_owned()),
                ("Class", "permission".to_owned()),
                ("Severity", "critical".to_owned()),
                ("At", "2026-01-01 00:00:00 UTC".to_owned()),
            ]
        );
        let text = m.plain();
        assert!(text.contains("What happened: permission denied"), "{text}");
        assert!(text.contains("Next: sluice runs show abc"), "{text}");
    }

    #[test]
    fn spans_read_as_people_write_them() {
        assert_eq!(span(0), "0s");
        assert_eq!(span(42_000), "42s");
        assert_eq!(span(7_500_000), "2h 5m");
        assert_eq!(span(90_061_000), "1d 1h");
    }
}
