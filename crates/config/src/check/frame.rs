//! The top-level sections: the header (state store, schedule), the buffer, `defaults`
//! and `alerts`.

use super::Checker;
use crate::diag::suggest;
use crate::plan::topic_name;
use crate::spec::{
    AlertsSpec, BufferSpec, ChannelSpec, EmailChannel, FsyncPolicy, PipelineSpec, Schedule,
    WhenLinkDown,
};
use crate::values::Dialect;
use crate::values::SecretValue;
use std::collections::BTreeSet;

impl Checker<'_> {
    pub(super) fn header(&mut self, spec: &PipelineSpec, ids: &BTreeSet<String>) {
        let state = &spec.state;
        if state.value.dialect() == Dialect::Mysql {
            self.error_at(
                state,
                "the state store runs on SQLite or PostgreSQL, not MySQL",
                "use `sqlite://.sluice/state.db` (one machine) or `postgres://...` (many workers)",
            );
        }
        if state.value.has_password() && !state.interpolated {
            self.secret_warning(state.pos, state.width, "the state store URL holds a password written in clear", "write the password as `${NAME}` (e.g. `postgres://sluice:${SLUICE_STATE_PASSWORD}@host/db`)");
        }
        if let Schedule::Realtime(r) = &spec.schedule {
            self.positive_duration(&r.poll_interval, "poll_interval");
        }
        self.buffer(&spec.buffer, spec);
        if let Some(r) = &spec.defaults.retry {
            self.retry(r);
        }
        if let Some(b) = &spec.defaults.batching {
            self.batching(b);
        }
        self.timeouts(&spec.defaults.timeouts);
        self.on_error(&spec.defaults.on_error, None);
        self.alerts(spec, ids);
        if let Some(w) = &spec.when_link_down
            && w.value == WhenLinkDown::Buffer
            && matches!(spec.buffer, BufferSpec::Embedded(_))
        {
            self.error_at(
                w,
                "`when_link_down: buffer` needs a Kafka buffer: the embedded log is on this machine's disk, and reading on into it while the sink is down only fills the disk",
                "use `when_link_down: pause` (the default), or `buffer: { kafka: { brokers: [...] } }`",
            );
        }
        let max_lag = match &spec.buffer {
            BufferSpec::Embedded(e) => e.max_lag.as_ref(),
            BufferSpec::Kafka(k) => k.max_lag.as_ref(),
        };
        if let Some(m) = max_lag {
            if m.value.batches == Some(0) {
                self.error_at(
                    m,
                    "`max_lag` must be at least 1 batch",
                    "e.g. `max_lag: 10000` (batches) or `max_lag: 10m` (the age of the oldest batch waiting)",
                );
            }
            if m.value.age.is_some_and(|a| a.is_zero()) {
                self.error_at(
                    m,
                    "`max_lag` must be an age of more than zero",
                    "e.g. `max_lag: 10m` (the age of the oldest batch waiting)",
                );
            }
            if m.value.batches.is_none() && m.value.age.is_none() {
                self.error_at(
                    m,
                    "`max_lag` bounds nothing",
                    "give `batches`, `age` or both: `max_lag: { batches: 10000, age: 10m }`",
                );
            }
        }
    }

    fn buffer(&mut self, buffer: &BufferSpec, spec: &PipelineSpec) {
        match buffer {
            BufferSpec::Embedded(e) => {
                if e.segment_size.value.bytes() < 64 * 1024 {
                    self.error_at(
                        &e.segment_size,
                        format!(
                            "`segment_size` must be at least 64KiB, found {}",
                            e.segment_size.value
                        ),
                        "e.g. `segment_size: 64MiB`",
                    );
                }
                if e.max_message_size.value > e.segment_size.value {
                    self.error_at(&e.max_message_size, format!("`max_message_size` ({}) is larger than `segment_size` ({})", e.max_message_size.value, e.segment_size.value), "an entry must fit in a segment: lower `max_message_size` or raise `segment_size`");
                }
                if let FsyncPolicy::Interval(d) = &e.fsync {
                    self.positive_duration(d, "interval");
                }
            }
            BufferSpec::Kafka(k) => {
                if k.brokers.value.is_empty() {
                    self.error_at(
                        &k.brokers,
                        "`brokers` is empty",
                        "list at least one broker: `brokers: [\"127.0.0.1:9092\"]`",
                    );
                }
                for b in &k.brokers.value {
                    let port_ok = b.value.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok()
                    });
                    if !port_ok {
                        self.error_at(
                            b,
                            format!("broker `{}` is not `host:port`", b.value),
                            "write brokers as `host:port`, e.g. `127.0.0.1:9092`",
                        );
                    }
                }
                let prefix = &k.topic_prefix;
                if prefix.value.is_empty()
                    || !prefix
                        .value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
                {
                    self.error_at(
                        prefix,
                        format!("invalid topic prefix `{}`", prefix.value),
                        "Kafka topic names are letters, digits, `.`, `_` and `-`",
                    );
                }
                self.at_least(&k.partitions, 1, "partitions");
                self.at_least(&k.replication, 1, "replication");
                self.positive_duration(&k.retention, "retention");
                let max = &k.message_max_bytes;
                if max.value.bytes() < 1000 || max.value.bytes() > 1_000_000_000 {
                    self.error_at(
                        max,
                        format!(
                            "`message_max_bytes` must be between 1000 bytes and 1GB, found {}",
                            max.value
                        ),
                        "librdkafka accepts 1000..1000000000; the broker's default is 1MiB",
                    );
                }
                for (key, _) in k.properties.entries() {
                    let reserved = match key.value.as_str() {
                        "bootstrap.servers" | "metadata.broker.list" => Some("set by `brokers`"),
                        "message.max.bytes" => Some("set by `message_max_bytes`"),
                        "compression.type" | "compression.codec" => Some("set by `compression`"),
                        "enable.idempotence" | "acks" | "request.required.acks" => Some(
                            "Sluice sets `enable.idempotence=true` and `acks=all` so that no acknowledged batch is lost",
                        ),
                        "group.id" => {
                            Some("Sluice names consumer groups per node (see `sluice plan`)")
                        }
                        "enable.auto.commit" | "enable.auto.offset.store" => Some(
                            "Sluice commits offsets itself, after the downstream node succeeded",
                        ),
                        _ => None,
                    };
                    if let Some(why) = reserved {
                        self.error_at(
                            key,
                            format!("the librdkafka property `{}` cannot be set here", key.value),
                            why,
                        );
                    }
                }
                self.redacted_map(&k.properties, "librdkafka property");
                for node in spec.nodes.iter() {
                    let topic =
                        topic_name(buffer, &spec.pipeline.value.to_string(), &node.id.value);
                    if topic.len() > 249 {
                        self.error_at(
                            &node.id,
                            format!(
                                "the topic name `{topic}` is longer than Kafka's 249 characters"
                            ),
                            "shorten the topic prefix, the pipeline name or this node id",
                        );
                    }
                }
            }
        }
    }

    fn alerts(&mut self, spec: &PipelineSpec, ids: &BTreeSet<String>) {
        self.alerts_section(&spec.alerts, Some(ids));
        if let Some(f) = &spec.freshness {
            self.positive_duration(f, "freshness");
        }
    }

    /// An `alerts:` section; `ids`: the pipeline's nodes (`None`: the service's default
    /// channels, which name no node).
    pub(crate) fn alerts_section(&mut self, alerts: &AlertsSpec, ids: Option<&BTreeSet<String>>) {
        let names: Vec<&str> = alerts
            .channels
            .iter()
            .map(|(k, _)| k.value.as_str())
            .collect();
        for (name, channel) in alerts.channels.iter() {
            if let Err(e) = crate::values::check_name(&name.value, "channel name") {
                self.error_at(name, e.message, e.help);
            }
            match channel {
                ChannelSpec::Log(_) => {}
                ChannelSpec::Webhook(w) => {
                    self.redacted_map(&w.headers, "header");
                    if let Some(secret) = &w.secret {
                        self.secret(secret, "secret");
                    }
                    self.positive_duration(&w.timeout, "timeout");
                }
                ChannelSpec::Slack(c) => {
                    self.robot_url(
                        &c.url,
                        "a Slack incoming webhook",
                        "https://hooks.slack.com/services/...",
                    );
                    self.positive_duration(&c.timeout, "timeout");
                }
                ChannelSpec::Dingtalk(c) => {
                    self.robot_url(
                        &c.url,
                        "a DingTalk robot",
                        "https://oapi.dingtalk.com/robot/send?access_token=...",
                    );
                    if let Some(secret) = &c.secret {
                        self.secret(secret, "secret");
                    }
                    self.positive_duration(&c.timeout, "timeout");
                }
                ChannelSpec::Feishu(c) => {
                    self.robot_url(
                        &c.url,
                        "a Feishu/Lark bot",
                        "https://open.feishu.cn/open-apis/bot/v2/hook/...",
                    );
                    if let Some(secret) = &c.secret {
                        self.secret(secret, "secret");
                    }
                    self.positive_duration(&c.timeout, "timeout");
                }
                ChannelSpec::Wecom(c) => {
                    self.robot_url(
                        &c.url,
                        "a WeCom robot",
                        "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=...",
                    );
                    self.positive_duration(&c.timeout, "timeout");
                }
                ChannelSpec::Email(c) => self.email(c),
                ChannelSpec::Command(c) => {
                    if c.program.value.trim().is_empty() {
                        self.error_at(
                            &c.program,
                            "`program` is empty",
                            "name the program to run, e.g. `./scripts/page-oncall.sh`",
                        );
                    }
                    self.positive_duration(&c.timeout, "timeout");
                }
            }
            if !alerts.routes.is_empty()
                && !alerts.routes.iter().any(|r| r.channel.value == name.value)
            {
                self.warning(
                    name.pos,
                    name.width,
                    format!(
                        "alert channel `{}` has no route, so it receives nothing",
                        name.value
                    ),
                    "add a route `{ channel: ... }`, or remove the channel",
                );
            }
        }
        self.positive_duration(&alerts.repeat_every, "repeat_every");
        self.positive_duration(&alerts.breaker_open_for, "breaker_open_for");
        for route in &alerts.routes {
            if !names.contains(&route.channel.value.as_str()) {
                let help = match suggest(&route.channel.value, names.iter().copied()) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None if names.is_empty() => "define it under `alerts.channels`".to_owned(),
                    None => format!("the channels are: {}", names.join(", ")),
                };
                self.error_at(
                    &route.channel,
                    format!("unknown alert channel `{}`", route.channel.value),
                    help,
                );
            }
            for node in &route.nodes {
                let Some(ids) = ids else {
                    self.error_at(
                        node,
                        "the service's default channels route no node",
                        "filter by `classes` or `severities`; routes by node belong in a pipeline's `alerts:`",
                    );
                    continue;
                };
                if !ids.contains(&node.value) {
                    let help = suggest(&node.value, ids.iter().map(String::as_str)).map_or_else(
                        || "list ids of `nodes`".to_owned(),
                        |n| format!("did you mean `{n}`?"),
                    );
                    self.error_at(node, format!("unknown node `{}`", node.value), help);
                }
            }
        }
    }
}

impl Checker<'_> {
    /// A chat robot's webhook URL: a secret (its path or query is the token), so it must
    /// come from the environment or a file, and no message repeats it.
    fn robot_url(&mut self, url: &SecretValue, what: &str, example: &str) {
        let text = url.value.expose();
        let help = format!("the URL of {what} looks like `{example}`");
        let problem = match url::Url::parse(text) {
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some_and(|h| !h.is_empty()) =>
            {
                None
            }
            Ok(u) if !matches!(u.scheme(), "http" | "https") => Some(format!(
                "`url` must be an `http://` or `https://` URL, found a `{}:` one",
                u.scheme()
            )),
            _ => Some(
                "`url` is not an absolute URL (it is a secret, so it is not repeated here)"
                    .to_owned(),
            ),
        };
        if let Some(message) = problem {
            self.error_at(url, message, help);
            // The line quoted under the error would show the token.
            if let Some(d) = self.diags.last_mut() {
                d.masked = true;
            }
        }
        if !url.interpolated {
            self.secret_warning(
                url.pos,
                url.width,
                format!("the URL of {what} is written in clear in the pipeline file: it holds the token that lets anyone post"),
                "read it from the environment or a file instead: `${NAME}` or `${file:/run/secrets/name}`",
            );
        }
    }

    fn email(&mut self, c: &EmailChannel) {
        if let Err(e) = c.host_port() {
            self.error_at(&c.smtp, e, "e.g. `smtp: smtp.example.com:587`");
        }
        if c.to.value.is_empty() {
            self.error_at(
                &c.to,
                "`to` is empty",
                "list at least one recipient: `to: [oncall@example.com]`",
            );
        }
        for address in std::iter::once(&c.from).chain(&c.to.value) {
            if !looks_like_mailbox(&address.value) {
                self.error_at(
                    address,
                    format!("`{}` is not an email address", address.value),
                    "write `name@example.com` or `Name <name@example.com>`",
                );
            }
        }
        match (&c.username, &c.password) {
            (Some(_), None) => self.error_at(
                &c.smtp,
                "`username` is set without `password`",
                "add `password: ${SMTP_PASSWORD}`, or remove `username`",
            ),
            (None, Some(p)) => self.error_at(
                p,
                "`password` is set without `username`",
                "add `username: ${SMTP_USER}`",
            ),
            _ => {}
        }
        for secret in c.username.iter().chain(&c.password) {
            self.secret(secret, "password");
        }
        if c.password.is_some() && !c.starttls.value {
            self.warning(
                c.starttls.pos,
                c.starttls.width,
                "`starttls: false` sends the SMTP password in clear",
                "keep `starttls: true` (the default) unless the server is on this host",
            );
        }
        self.positive_duration(&c.timeout, "timeout");
    }
}

/// `name@domain` or `Name <name@domain>`: checked again by the mail library when sent.
fn looks_like_mailbox(text: &str) -> bool {
    let address = match (text.find('<'), text.rfind('>')) {
        (Some(open), Some(close)) if open < close && close == text.trim_end().len() - 1 => {
            &text[open + 1..close]
        }
        (None, None) => text.trim(),
        _ => return false,
    };
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !address.contains(char::is_whitespace)
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    }
}
