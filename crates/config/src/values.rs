//! Value types that check themselves while they are read, so that a bad value is reported
//! at its position with a message about that kind of value: durations, sizes, URLs,
//! database URLs (secrets), cron expressions, time zones, names, JSON paths, and maps whose
//! secret-looking entries never print.

use crate::de::{Spanned, error_at_offset, error_with_help};
use crate::diag::suggest;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use sluice_core::Secret;
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// Implements `Deserialize` through `FromStr` (errors carry help and offsets), `Serialize`
/// through `Display`, and a string `JsonSchema` with a `format` hint.
macro_rules! string_value {
    ($ty:ty, $name:literal, $format:literal, $pattern:expr) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = String::deserialize(d)?;
                text.parse::<$ty>().map_err(|e: ValueError| e.into_de())
            }
        }

        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }

        impl JsonSchema for $ty {
            fn schema_name() -> Cow<'static, str> {
                Cow::Borrowed($name)
            }

            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                let pattern: Option<&str> = $pattern;
                match pattern {
                    Some(p) => json_schema!({"type": "string", "format": $format, "pattern": p}),
                    None => json_schema!({"type": "string", "format": $format}),
                }
            }

            fn inline_schema() -> bool {
                true
            }
        }
    };
}

/// Why a value did not parse: message, help, and the character it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueError {
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: String,
    /// The character of the value the error is about, when known.
    pub offset: Option<usize>,
}

impl ValueError {
    fn new(message: impl Into<String>, help: impl Into<String>) -> Self {
        ValueError {
            message: message.into(),
            help: help.into(),
            offset: None,
        }
    }

    fn at(mut self, offset: usize) -> Self {
        self.offset = Some(offset);
        self
    }

    fn into_de<E: de::Error>(self) -> E {
        match self.offset {
            Some(o) => error_at_offset(self.message, self.help, o),
            None => error_with_help(self.message, self.help),
        }
    }
}

impl fmt::Display for ValueError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ValueError {}

// ---------------------------------------------------------------------------------------
// Durations

/// A duration written with units: `500ms`, `30s`, `2m`, `1h`, `7d`, or combined: `1h30m`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Whole seconds.
    pub const fn secs(s: u64) -> Self {
        Duration(std::time::Duration::from_secs(s))
    }

    /// Milliseconds.
    pub const fn millis(ms: u64) -> Self {
        Duration(std::time::Duration::from_millis(ms))
    }

    /// The standard library duration.
    pub fn get(self) -> std::time::Duration {
        self.0
    }

    /// Whether it is zero.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

const DURATION_UNITS: &str = "ms, s, m, h, d";

impl FromStr for Duration {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let help =
            format!("write a number and a unit ({DURATION_UNITS}), e.g. `30s`, `500ms` or `1h30m`");
        let chars: Vec<char> = text.chars().collect();
        let mut i = 0;
        let mut total_ms: f64 = 0.0;
        let mut parts = 0;
        while i < chars.len() {
            while i < chars.len() && chars[i].is_whitespace() {
                i += 1;
            }
            if i == chars.len() {
                break;
            }
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let number: String = chars[start..i].iter().collect();
            let value: f64 = match number.parse() {
                Ok(v) => v,
                Err(_) => {
                    return Err(
                        ValueError::new(format!("invalid duration `{text}`"), help).at(start)
                    );
                }
            };
            while i < chars.len() && chars[i] == ' ' {
                i += 1;
            }
            let unit_start = i;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit: String = chars[unit_start..i].iter().collect();
            let factor = match unit.as_str() {
                "ms" => 1.0,
                "s" => 1_000.0,
                "m" => 60_000.0,
                "h" => 3_600_000.0,
                "d" => 86_400_000.0,
                "" => {
                    return Err(ValueError::new(
                        format!("the duration `{text}` has no unit"),
                        format!("add a unit ({DURATION_UNITS}): `{number}s` is {number} seconds"),
                    )
                    .at(unit_start));
                }
                other => {
                    let hint = match other {
                        "sec" | "secs" | "second" | "seconds" => " (seconds are `s`)",
                        "min" | "mins" | "minute" | "minutes" => " (minutes are `m`)",
                        "hour" | "hours" | "hr" | "hrs" => " (hours are `h`)",
                        "day" | "days" => " (days are `d`)",
                        "us" | "ns" => " (the smallest unit is `ms`)",
                        _ => "",
                    };
                    return Err(ValueError::new(
                        format!("unknown duration unit `{other}`{hint}"),
                        help,
                    )
                    .at(unit_start));
                }
            };
            total_ms += value * factor;
            parts += 1;
        }
        if parts == 0 {
            return Err(ValueError::new("the duration is empty", help));
        }
        if !total_ms.is_finite() || total_ms > 1e15 {
            return Err(ValueError::new(
                format!("the duration `{text}` is too long"),
                help,
            ));
        }
        Ok(Duration(std::time::Duration::from_micros(
            (total_ms * 1000.0).round() as u64,
        )))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000u128),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
            ("ms", 1),
        ] {
            if ms >= size {
                write!(f, "{}{unit}", ms / size)?;
                ms %= size;
            }
        }
        Ok(())
    }
}

string_value!(
    Duration,
    "Duration",
    "duration",
    Some(r"^\s*([0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)\s*)+$")
);

// ---------------------------------------------------------------------------------------
// Sizes

/// A size in bytes: `512KiB`, `4MiB`, `1GB`, or a plain number of bytes.
///
/// `KiB`/`MiB`/`GiB`/`TiB` are powers of 1024; `KB`/`MB`/`GB`/`TB` powers of 1000.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// Mebibytes.
    pub const fn mib(n: u64) -> Self {
        ByteSize(n * 1024 * 1024)
    }

    /// Kibibytes.
    pub const fn kib(n: u64) -> Self {
        ByteSize(n * 1024)
    }

    /// Bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

impl FromStr for ByteSize {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let help = "write a number and a unit, e.g. `512KiB`, `4MiB` or `1GB` (KiB, MiB, GiB are 1024-based; KB, MB, GB 1000-based)";
        let trimmed = text.trim();
        let split = trimmed
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(trimmed.len());
        let (number, unit) = trimmed.split_at(split);
        let value: f64 = number
            .parse()
            .map_err(|_| ValueError::new(format!("invalid size `{text}`"), help).at(0))?;
        let unit = unit.trim();
        let factor: f64 = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1.0,
            "kb" => 1e3,
            "mb" => 1e6,
            "gb" => 1e9,
            "tb" => 1e12,
            "kib" => 1024.0,
            "mib" => 1024.0 * 1024.0,
            "gib" => 1024.0 * 1024.0 * 1024.0,
            "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            "k" | "m" | "g" | "t" => {
                return Err(ValueError::new(
                    format!("the size unit `{unit}` is ambiguous"),
                    format!(
                        "write `{number}{}iB` (1024-based) or `{number}{}B` (1000-based)",
                        unit.to_ascii_uppercase(),
                        unit.to_ascii_uppercase()
                    ),
                )
                .at(split));
            }
            _ => {
                return Err(ValueError::new(format!("unknown size unit `{unit}`"), help).at(split));
            }
        };
        let bytes = value * factor;
        if !bytes.is_finite() || bytes >= u64::MAX as f64 {
            return Err(ValueError::new(
                format!("the size `{text}` is too large"),
                help,
            ));
        }
        Ok(ByteSize(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [
            ("TiB", 1u64 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ] {
            if n >= size && n % size == 0 {
                return write!(f, "{}{unit}", n / size);
            }
        }
        for (unit, size) in [
            ("TB", 1_000_000_000_000u64),
            ("GB", 1_000_000_000),
            ("MB", 1_000_000),
            ("KB", 1_000),
        ] {
            if n >= size && n % size == 0 {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

string_value!(
    ByteSize,
    "ByteSize",
    "byte-size",
    Some(r"^\s*[0-9]+(\.[0-9]+)?\s*([KMGT]i?B|B)?\s*$")
);

// ---------------------------------------------------------------------------------------
// HTTP URLs

/// An absolute `http://` or `https://` URL. `{{variables}}` may appear in it (they are
/// filled in per request); the rest must form a valid URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(String);

impl HttpUrl {
    /// The URL as written (after `${...}` interpolation).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the URL carries a password (`https://user:pass@host`).
    pub fn has_password(&self) -> bool {
        url::Url::parse(&blank_templates(&self.0)).is_ok_and(|u| u.password().is_some())
    }
}

/// Replaces each `{{...}}` with `x`, so the rest can be checked as a URL.
fn blank_templates(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        match rest[start..].find("}}") {
            Some(end) => {
                out.push('x');
                rest = &rest[start + end + 2..];
            }
            None => {
                rest = &rest[start..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

impl FromStr for HttpUrl {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let example = "write an absolute URL, e.g. `https://api.example.com/v1/orders`";
        let parsed = url::Url::parse(&blank_templates(text)).map_err(|e| {
            ValueError::new(
                format!(
                    "invalid URL `{}`: {e}",
                    sluice_core::redact::redact_url(text)
                ),
                example,
            )
        })?;
        match parsed.scheme() {
            "http" | "https" => {}
            other => {
                return Err(ValueError::new(
                    format!("`{other}` URLs are not supported here"),
                    "use an `http://` or `https://` URL",
                ));
            }
        }
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(ValueError::new(
                format!(
                    "the URL `{}` has no host",
                    sluice_core::redact::redact_url(text)
                ),
                example,
            ));
        }
        Ok(HttpUrl(text.to_owned()))
    }
}

/// Prints (and serializes) with its password and query values as `***` (values that
/// are only template variables print as written).
impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&sluice_core::redact::redact_url(&self.0))
    }
}

string_value!(HttpUrl, "HttpUrl", "uri", None::<&str>);

// ---------------------------------------------------------------------------------------
// Database URLs

/// The database engines Sluice reads from and writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// PostgreSQL (`postgres://`).
    #[default]
    Postgres,
    /// MySQL or MariaDB (`mysql://`).
    Mysql,
    /// SQLite (`sqlite://path` or `sqlite::memory:`).
    Sqlite,
}

impl Dialect {
    /// The engine named by the URL's scheme.
    pub fn from_url(url: &str) -> Result<Dialect, String> {
        let scheme = url.split_once(':').map(|(s, _)| s.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => Ok(Dialect::Postgres),
            Some("mysql" | "mariadb") => Ok(Dialect::Mysql),
            Some("sqlite") => Ok(Dialect::Sqlite),
            _ => Err(
                "the url must start with `postgres://`, `mysql://` (MariaDB too) or `sqlite:` \
                 (e.g. `postgres://user:pass@127.0.0.1:5432/db`, `sqlite://data/out.db`)"
                    .to_owned(),
            ),
        }
    }

    /// The engine's name in messages: `PostgreSQL`, `MySQL/MariaDB`, `SQLite`.
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Postgres => "PostgreSQL",
            Dialect::Mysql => "MySQL/MariaDB",
            Dialect::Sqlite => "SQLite",
        }
    }

    /// The node type name of this dialect.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Postgres => "postgres",
            Dialect::Mysql => "mysql",
            Dialect::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A database connection URL. It may hold a password, so it is a [`Secret`]: it prints
/// and serializes with the password and every query value replaced by `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    secret: Secret,
    dialect: Dialect,
    redacted: String,
    has_password: bool,
}

impl DatabaseUrl {
    /// The engine, from the URL's scheme.
    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// The URL with its password: only for connecting.
    pub fn expose(&self) -> &str {
        self.secret.expose()
    }

    /// The URL as a secret.
    pub fn secret(&self) -> &Secret {
        &self.secret
    }

    /// Whether the URL holds a password.
    pub fn has_password(&self) -> bool {
        self.has_password
    }
}

impl DatabaseUrl {
    /// The default state store: `sqlite://.sluice/state.db`.
    pub(crate) fn default_state() -> Self {
        let text = "sqlite://.sluice/state.db";
        DatabaseUrl {
            secret: Secret::new(text),
            dialect: Dialect::Sqlite,
            redacted: text.to_owned(),
            has_password: false,
        }
    }
}

impl FromStr for DatabaseUrl {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let help = "write e.g. `postgres://user:${PGPASSWORD}@127.0.0.1:5432/db`, `mysql://user@127.0.0.1:3306/db` or `sqlite://data/out.db`";
        if let Some(rest) = text.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(ValueError::new(
                    "the SQLite URL names no file",
                    "write `sqlite://path/to/file.db` or `sqlite::memory:`",
                ));
            }
            return Ok(DatabaseUrl {
                secret: Secret::new(text),
                dialect: Dialect::Sqlite,
                redacted: text.to_owned(),
                has_password: false,
            });
        }
        // The message never repeats the URL: it may hold a password.
        let parsed = url::Url::parse(text)
            .map_err(|e| ValueError::new(format!("invalid database URL: {e}"), help))?;
        let dialect = match parsed.scheme() {
            "postgres" | "postgresql" => Dialect::Postgres,
            "mysql" | "mariadb" => Dialect::Mysql,
            other => {
                return Err(ValueError::new(
                    format!("unsupported database URL scheme `{other}`"),
                    "use `postgres://`, `mysql://` or `sqlite://`",
                ));
            }
        };
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err(ValueError::new("the database URL has no host", help));
        }
        let has_password = parsed.password().is_some();
        Ok(DatabaseUrl {
            secret: Secret::new(text),
            dialect,
            redacted: sluice_core::redact::redact_url(text),
            has_password,
        })
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseUrl({})", self.redacted)
    }
}

string_value!(
    DatabaseUrl,
    "DatabaseUrl",
    "uri",
    Some(r"^(postgres|postgresql|mysql|mariadb|sqlite):")
);

// ---------------------------------------------------------------------------------------
// Cron

/// A cron expression, checked with the `cron` crate.
///
/// Five fields (`minute hour day-of-month month day-of-week`) are standard Unix cron:
/// Sluice prefixes a `0` seconds field and names the weekdays (Unix counts Sunday as 0 or
/// 7, the `cron` crate as 1). Six or seven fields (seconds first, optional year) are
/// passed to the `cron` crate as written: there, weekdays are 1-7 from Sunday, or names.
#[derive(Debug, Clone)]
pub struct CronExpr {
    written: String,
    normalized: String,
    schedule: cron::Schedule,
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.normalized == other.normalized
    }
}

impl Eq for CronExpr {}

impl CronExpr {
    /// The expression as written.
    pub fn as_written(&self) -> &str {
        &self.written
    }

    /// The expression for the `cron` crate (six or seven fields).
    pub fn normalized(&self) -> &str {
        &self.normalized
    }

    /// The parsed schedule.
    pub fn schedule(&self) -> &cron::Schedule {
        &self.schedule
    }
}

const DAY_NAMES: [&str; 8] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];

/// Unix day-of-week numbers (0-7, Sunday 0 or 7) to names.
fn unix_weekdays(field: &str) -> Result<String, ValueError> {
    let name = |n: &str| -> Result<&'static str, ValueError> {
        match n.parse::<usize>() {
            Ok(i) if i <= 7 => Ok(DAY_NAMES[i]),
            Ok(_) => Err(ValueError::new(
                format!("day of week `{n}` is out of range"),
                "days of the week are 0-7 (Sunday is 0 or 7) or names: `Mon-Fri`",
            )),
            Err(_) => Ok(""),
        }
    };
    let mut items = Vec::new();
    for item in field.split(',') {
        let (base, step) = match item.split_once('/') {
            Some((b, s)) => (b, Some(s)),
            None => (item, None),
        };
        let converted = match base.split_once('-') {
            Some((a, b)) => {
                let (na, nb) = (name(a)?, name(b)?);
                let a2 = if na.is_empty() { a } else { na };
                let b2 = if nb.is_empty() { b } else { nb };
                if b == "7" && a != "0" && step.is_none() {
                    // `5-7` is Friday to Sunday: Sunday is the start of the crate's week.
                    format!("{a2}-Sat,Sun")
                } else {
                    format!("{a2}-{b2}")
                }
            }
            None => match name(base)? {
                "" => base.to_owned(),
                n => n.to_owned(),
            },
        };
        items.push(match step {
            Some(s) => format!("{converted}/{s}"),
            None => converted,
        });
    }
    Ok(items.join(","))
}

impl FromStr for CronExpr {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let help = "five fields `minute hour day-of-month month day-of-week` (e.g. `*/15 * * * *`), or six with seconds first";
        let fields: Vec<&str> = text.split_whitespace().collect();
        let normalized = if text.trim_start().starts_with('@') {
            text.trim().to_owned()
        } else {
            match fields.len() {
                5 => {
                    let weekdays = unix_weekdays(fields[4])?;
                    format!(
                        "0 {} {} {} {} {weekdays}",
                        fields[0], fields[1], fields[2], fields[3]
                    )
                }
                6 | 7 => fields.join(" "),
                n => {
                    return Err(ValueError::new(
                        format!("a cron expression has 5, 6 or 7 fields, this one has {n}"),
                        help,
                    ));
                }
            }
        };
        let schedule = cron::Schedule::from_str(&normalized).map_err(|e| {
            // The crate's message repeats the expression with a caret line; keep its
            // last line, which says what is wrong.
            let detail = e.to_string();
            let reason = detail
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim()
                // The crate names its inclusive maximum as a bound to stay under
                // ("Minutes must be less than 59. ('60' specified.)").
                .replace(" must be less than ", " must be at most ");
            ValueError::new(format!("invalid cron expression `{text}`: {reason}"), help)
        })?;
        // A valid expression can still match no time to come (30 February, a past year):
        // such a schedule would run once by hand and never again.
        if schedule.upcoming(chrono_tz::UTC).next().is_none() {
            return Err(ValueError::new(
                format!("the cron expression `{text}` matches no time from now on"),
                "check the day of the month against the month (e.g. 30 February), and the year if one is given",
            ));
        }
        Ok(CronExpr {
            written: text.to_owned(),
            normalized,
            schedule,
        })
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

string_value!(CronExpr, "CronExpr", "cron", None::<&str>);

// ---------------------------------------------------------------------------------------
// Time zones

/// An IANA time zone name (`UTC`, `Europe/Paris`), checked with `chrono-tz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timezone(pub chrono_tz::Tz);

impl FromStr for Timezone {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        chrono_tz::Tz::from_str(text).map(Timezone).map_err(|_| {
            let names = chrono_tz::TZ_VARIANTS.iter().map(|tz| tz.name());
            let help = match suggest(text, names) {
                Some(near) => format!("did you mean `{near}`? Time zones are IANA names such as `UTC` or `Europe/Paris`"),
                None => "time zones are IANA names such as `UTC`, `Europe/Paris` or `America/New_York`".to_owned(),
            };
            ValueError::new(format!("unknown time zone `{text}`"), help)
        })
    }
}

impl fmt::Display for Timezone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}

string_value!(Timezone, "Timezone", "timezone", None::<&str>);

// ---------------------------------------------------------------------------------------
// Names

/// A pipeline name or node id: lowercase letters, digits, `_` and `-`, starting with a
/// letter or digit, at most 64 characters. Names go into topic names, table rows and URLs.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Name(String);

impl Name {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a name, suggesting a valid one.
pub(crate) fn check_name(text: &str, what: &str) -> Result<(), ValueError> {
    let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-';
    let first_ok = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !text.is_empty() && first_ok && text.chars().all(valid_char) && text.len() <= 64 {
        return Ok(());
    }
    let slug: String = text
        .trim()
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if valid_char(c) { c } else { '_' }
        })
        .collect::<String>()
        .trim_matches(['_', '-'])
        .chars()
        .take(64)
        .collect();
    let help = if slug.is_empty() || slug == text {
        format!(
            "a {what} is lowercase letters, digits, `_` and `-`, starts with a letter or digit, and has at most 64 characters"
        )
    } else {
        format!("a {what} is lowercase letters, digits, `_` and `-` (at most 64): e.g. `{slug}`")
    };
    let offset = text.chars().position(|c| !valid_char(c)).unwrap_or(0);
    Err(ValueError::new(format!("invalid {what} `{text}`"), help).at(offset))
}

impl FromStr for Name {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        check_name(text, "pipeline name").map(|()| Name(text.to_owned()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

string_value!(Name, "Name", "name", Some("^[a-z0-9][a-z0-9_-]{0,63}$"));

// ---------------------------------------------------------------------------------------
// JSON paths

/// One step of a [`JsonPath`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathStep {
    /// `.name` or `['name']`: a field of an object.
    Key(String),
    /// `[3]`: an element of an array.
    Index(usize),
}

/// A JSON path into a response: `$` (the whole document), `$.data.items`,
/// `$.meta['next-cursor']`, `$.pages[0].url`. No wildcards or filters: a path names one
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    written: String,
    steps: Vec<PathStep>,
}

impl JsonPath {
    /// The steps after `$`.
    pub fn steps(&self) -> &[PathStep] {
        &self.steps
    }

    /// Looks the path up in a JSON value.
    pub fn lookup<'v>(&self, value: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        self.steps.iter().try_fold(value, |v, step| match step {
            PathStep::Key(k) => v.get(k),
            PathStep::Index(i) => v.get(*i),
        })
    }
}

impl FromStr for JsonPath {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let help = "a path starts with `$` and goes down with `.field`, `['field']` or `[index]`, e.g. `$.data.items`";
        let chars: Vec<char> = text.chars().collect();
        if chars.first() != Some(&'$') {
            return Err(ValueError::new(
                format!("the JSON path `{text}` does not start with `$`"),
                help,
            )
            .at(0));
        }
        let mut steps = Vec::new();
        let mut i = 1;
        while i < chars.len() {
            match chars[i] {
                '.' => {
                    let start = i + 1;
                    let mut j = start;
                    while j < chars.len() && chars[j] != '.' && chars[j] != '[' {
                        j += 1;
                    }
                    if j == start {
                        return Err(ValueError::new(
                            format!("empty field name in JSON path `{text}`"),
                            help,
                        )
                        .at(i));
                    }
                    let key: String = chars[start..j].iter().collect();
                    if key == "*" {
                        return Err(ValueError::new(
                            "wildcards are not supported in JSON paths",
                            "point at the list itself: `$.data.items`, not `$.data.items.*`",
                        )
                        .at(start));
                    }
                    steps.push(PathStep::Key(key));
                    i = j;
                }
                '[' => {
                    let close = chars[i..].iter().position(|c| *c == ']').map(|p| p + i);
                    let Some(close) = close else {
                        return Err(ValueError::new(
                            format!("`[` is not closed in JSON path `{text}`"),
                            help,
                        )
                        .at(i));
                    };
                    let inner: String = chars[i + 1..close].iter().collect();
                    let quoted = (inner.starts_with('\'') && inner.ends_with('\''))
                        || (inner.starts_with('"') && inner.ends_with('"'));
                    if quoted && inner.len() >= 2 {
                        steps.push(PathStep::Key(inner[1..inner.len() - 1].to_owned()));
                    } else if let Ok(n) = inner.parse::<usize>() {
                        steps.push(PathStep::Index(n));
                    } else if inner == "*" {
                        return Err(ValueError::new(
                            "wildcards are not supported in JSON paths",
                            "point at the list itself: `$.data.items`, not `$.data.items[*]`",
                        )
                        .at(i));
                    } else {
                        return Err(ValueError::new(
                            format!("`[{inner}]` is neither an index nor a quoted field name"),
                            help,
                        )
                        .at(i));
                    }
                    i = close + 1;
                }
                c => {
                    return Err(ValueError::new(
                        format!("unexpected `{c}` in JSON path `{text}`"),
                        help,
                    )
                    .at(i));
                }
            }
        }
        Ok(JsonPath {
            written: text.to_owned(),
            steps,
        })
    }
}

impl fmt::Display for JsonPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

string_value!(JsonPath, "JsonPath", "json-path", Some(r"^\$"));

// ---------------------------------------------------------------------------------------
// Maps

/// A mapping that keeps its entries in file order with the position of each key.
#[derive(Debug, Clone, PartialEq)]
pub struct SpannedMap<V>(pub Vec<(Spanned<String>, V)>);

impl<V> Default for SpannedMap<V> {
    fn default() -> Self {
        SpannedMap(Vec::new())
    }
}

impl<V> SpannedMap<V> {
    /// The value under `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| k.value == key).map(|(_, v)| v)
    }

    /// The entries in file order.
    pub fn iter(&self) -> impl Iterator<Item = (&Spanned<String>, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for SpannedMap<V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for MapVisitor<V> {
            type Value = SpannedMap<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SpannedMap<V>, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key::<Spanned<String>>()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(SpannedMap(entries))
            }
        }
        d.deserialize_map(MapVisitor(std::marker::PhantomData))
    }
}

impl<V: Serialize> Serialize for SpannedMap<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(&k.value, v)?;
        }
        map.end()
    }
}

impl<V: JsonSchema> JsonSchema for SpannedMap<V> {
    fn schema_name() -> Cow<'static, str> {
        Cow::Owned(format!("Map_of_{}", V::schema_name()))
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let value = generator.subschema_for::<V>();
        json_schema!({"type": "object", "additionalProperties": value})
    }
}

/// Whether a key (a header, a librdkafka property, an environment variable) names
/// something secret, whose value must never print.
pub fn is_sensitive_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "token",
        "credential",
        "api-key",
        "api_key",
        "apikey",
        "authorization",
        "cookie",
        "private",
        ".pem",
        "signature",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// A string-to-string mapping (headers, librdkafka properties, environment variables)
/// whose secret-looking entries (see [`is_sensitive_key`]) print and serialize as `***`.
#[derive(Clone, PartialEq, Default, Deserialize)]
#[serde(transparent)]
pub struct RedactedMap(SpannedMap<Spanned<String>>);

impl RedactedMap {
    /// The entries with their clear values: only where they are sent.
    pub fn iter_exposed(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .map(|(k, v)| (k.value.as_str(), v.value.as_str()))
    }

    /// The entries with their positions (and clear values: only where they are sent).
    pub fn entries(&self) -> impl Iterator<Item = (&Spanned<String>, &Spanned<String>)> {
        self.0.iter()
    }

    /// The same as [`RedactedMap::entries`], in the shape of [`SpannedMap::iter`].
    pub fn iter(&self) -> impl Iterator<Item = (&Spanned<String>, &Spanned<String>)> {
        self.0.iter()
    }

    /// The clear value under `key`.
    pub fn get_exposed(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.value.as_str())
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Entries with secret-looking values replaced by `***`.
    pub fn redacted(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(k, v)| {
                let shown = if is_sensitive_key(k) {
                    "***".to_owned()
                } else {
                    v.value.clone()
                };
                (k.value.clone(), shown)
            })
            .collect()
    }
}

impl fmt::Debug for RedactedMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.redacted()).finish()
    }
}

impl Serialize for RedactedMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let entries = self.redacted();
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in &entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl JsonSchema for RedactedMap {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("StringMap")
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "object", "additionalProperties": {"type": "string"}})
    }
}

/// A mapping whose every value is secret (request headers, query parameters): each
/// prints and serializes as `***`, except values that are only template variables
/// (`{{page}}`). A node's `public:` list shows chosen ones (see the HTTP node specs).
#[derive(Clone, PartialEq, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretMap(RedactedMap);

impl std::ops::Deref for SecretMap {
    type Target = RedactedMap;

    fn deref(&self) -> &RedactedMap {
        &self.0
    }
}

impl SecretMap {
    /// Entries with every value `***` unless `public` accepts its name (or it is only
    /// template variables).
    pub fn shown(&self, public: impl Fn(&str) -> bool) -> Vec<(String, String)> {
        self.0
            .iter_exposed()
            .map(|(k, v)| {
                let shown = if public(k) || sluice_core::redact::is_template_only(v) {
                    v.to_owned()
                } else {
                    sluice_core::redact::MASK.to_owned()
                };
                (k.to_owned(), shown)
            })
            .collect()
    }
}

impl fmt::Debug for SecretMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.shown(|_| false)).finish()
    }
}

impl Serialize for SecretMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let entries = self.shown(|_| false);
        let mut map = s.serialize_map(Some(entries.len()))?;
        for (k, v) in &entries {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl JsonSchema for SecretMap {
    fn schema_name() -> Cow<'static, str> {
        RedactedMap::schema_name()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        RedactedMap::json_schema(generator)
    }
}

/// A secret value (password, token, key). Prints and serializes as `***`.
pub type SecretValue = Spanned<Secret>;

/// The JSON Schema of a secret: a string.
pub fn secret_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "format": "secret", "writeOnly": true})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!("500ms".parse::<Duration>().unwrap(), Duration::millis(500));
        assert_eq!("30s".parse::<Duration>().unwrap(), Duration::secs(30));
        assert_eq!("2m".parse::<Duration>().unwrap(), Duration::secs(120));
        assert_eq!("1h 30m".parse::<Duration>().unwrap(), Duration::secs(5400));
        assert_eq!("1.5s".parse::<Duration>().unwrap(), Duration::millis(1500));
        assert_eq!(Duration::secs(5400).to_string(), "1h30m");
        assert_eq!(Duration::millis(1500).to_string(), "1s500ms");
        assert_eq!(Duration::secs(0).to_string(), "0s");
        let e = "30".parse::<Duration>().unwrap_err();
        assert_eq!(e.message, "the duration `30` has no unit");
        assert_eq!(e.offset, Some(2));
        let e = "5 minutes".parse::<Duration>().unwrap_err();
        assert_eq!(
            e.message,
            "unknown duration unit `minutes` (minutes are `m`)"
        );
        assert!("".parse::<Duration>().is_err());
        assert!("s".parse::<Duration>().is_err());
        assert!("1e400s".parse::<Duration>().is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!("4MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(4));
        assert_eq!("512KiB".parse::<ByteSize>().unwrap(), ByteSize::kib(512));
        assert_eq!("1GB".parse::<ByteSize>().unwrap(), ByteSize(1_000_000_000));
        assert_eq!("1 mb".parse::<ByteSize>().unwrap(), ByteSize(1_000_000));
        assert_eq!("100".parse::<ByteSize>().unwrap(), ByteSize(100));
        assert_eq!(ByteSize::mib(4).to_string(), "4MiB");
        assert_eq!(ByteSize(1_000_000).to_string(), "1MB");
        assert_eq!(ByteSize(1001).to_string(), "1001B");
        assert!(
            "4M".parse::<ByteSize>()
                .unwrap_err()
                .message
                .contains("ambiguous")
        );
        assert!("4 parsecs".parse::<ByteSize>().is_err());
        assert!("MiB".parse::<ByteSize>().is_err());
    }

    #[test]
    fn http_urls() {
        assert!(
            "https://api.example.com/v1?page={{page}}"
                .parse::<HttpUrl>()
                .is_ok()
        );
        assert!("api.example.com".parse::<HttpUrl>().is_err());
        assert!(
            "ftp://x"
                .parse::<HttpUrl>()
                .unwrap_err()
                .message
                .contains("ftp")
        );
        let u: HttpUrl = "https://me:pw@x.io/".parse().unwrap();
        assert!(u.has_password());
        assert_eq!(u.to_string(), "https://me:***@x.io/");
    }

    #[test]
    fn database_urls_hide_passwords() {
        let u: DatabaseUrl = "postgres://sluice:hunter2@127.0.0.1:5432/db"
            .parse()
            .unwrap();
        assert_eq!(u.dialect(), Dialect::Postgres);
        assert!(u.has_password());
        assert_eq!(u.to_string(), "postgres://sluice:***@127.0.0.1:5432/db");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&u).unwrap().contains("hunter2"));
        assert_eq!(u.expose(), "postgres://sluice:hunter2@127.0.0.1:5432/db");
        let s: DatabaseUrl = "sqlite://.sluice/state.db".parse().unwrap();
        assert_eq!(s.dialect(), Dialect::Sqlite);
        assert_eq!(
            "mysql://root@db/x"
                .parse::<DatabaseUrl>()
                .unwrap()
                .dialect(),
            Dialect::Mysql
        );
        let e = "redis://:secretpw@host".parse::<DatabaseUrl>().unwrap_err();
        assert!(!e.message.contains("secretpw"));
        assert!("sqlite://".parse::<DatabaseUrl>().is_err());
        assert!("not a url".parse::<DatabaseUrl>().is_err());
    }

    #[test]
    fn cron_expressions() {
        let c: CronExpr = "*/5 * * * *".parse().unwrap();
        assert_eq!(c.normalized(), "0 */5 * * * *");
        let c: CronExpr = "0 9 * * 1-5".parse().unwrap();
        assert_eq!(c.normalized(), "0 0 9 * * Mon-Fri");
        let c: CronExpr = "0 9 * * 5-7".parse().unwrap();
        assert_eq!(c.normalized(), "0 0 9 * * Fri-Sat,Sun");
        assert!("0 */5 * * * *".parse::<CronExpr>().is_ok());
        assert!("@hourly".parse::<CronExpr>().is_ok());
        let e = "* * *".parse::<CronExpr>().unwrap_err();
        assert!(e.message.contains("has 3"), "{e:?}");
        assert!("61 * * * *".parse::<CronExpr>().is_err());
        let e = "60 * * * *".parse::<CronExpr>().unwrap_err();
        assert!(e.message.contains("must be at most 59"), "{e:?}");
        let e = "0 24 * * *".parse::<CronExpr>().unwrap_err();
        assert!(e.message.contains("must be at most 23"), "{e:?}");
        assert!("59 23 * * *".parse::<CronExpr>().is_ok());
        // Valid fields, but no time to come.
        let e = "0 0 30 2 *".parse::<CronExpr>().unwrap_err();
        assert!(e.message.contains("matches no time"), "{e:?}");
        assert!("0 0 12 * * * 2020".parse::<CronExpr>().is_err());
        assert!("0 0 29 2 *".parse::<CronExpr>().is_ok());
        assert!("0 9 * * 8".parse::<CronExpr>().is_err());
        // Unix Sunday (0) and Monday (1) become the crate's Sun and Mon.
        let sunday: CronExpr = "0 0 * * 0".parse().unwrap();
        assert_eq!(sunday.normalized(), "0 0 0 * * Sun");
        sunday.schedule();
    }

    #[test]
    fn time_zones_suggest() {
        assert!("Europe/Paris".parse::<Timezone>().is_ok());
        let e = "Europe/Pars".parse::<Timezone>().unwrap_err();
        assert!(e.help.contains("Europe/Paris"), "{e:?}");
    }

    #[test]
    fn names() {
        assert!("orders_sync-2".parse::<Name>().is_ok());
        let e = "Orders Sync".parse::<Name>().unwrap_err();
        assert!(e.help.contains("`orders_sync`"), "{e:?}");
        assert!("-x".parse::<Name>().is_err());
        assert!("".parse::<Name>().is_err());
        assert!("a".repeat(65).parse::<Name>().is_err());
    }

    #[test]
    fn json_paths() {
        let p: JsonPath = "$.data['next-page'][0].id".parse().unwrap();
        assert_eq!(
            p.steps(),
            [
                PathStep::Key("data".into()),
                PathStep::Key("next-page".into()),
                PathStep::Index(0),
                PathStep::Key("id".into())
            ]
        );
        let doc = serde_json::json!({"data": {"next-page": [{"id": 7}]}});
        assert_eq!(p.lookup(&doc), Some(&serde_json::json!(7)));
        assert!("$".parse::<JsonPath>().unwrap().steps().is_empty());
        assert_eq!(
            "data.items".parse::<JsonPath>().unwrap_err().offset,
            Some(0)
        );
        assert_eq!("$.data..x".parse::<JsonPath>().unwrap_err().offset, Some(6));
        assert!("$.items[*]".parse::<JsonPath>().is_err());
        assert!("$.items[".parse::<JsonPath>().is_err());
        assert!("$x".parse::<JsonPath>().is_err());
    }

    #[test]
    fn sensitive_keys() {
        for k in [
            "sasl.password",
            "Authorization",
            "X-Api-Key",
            "ssl.key.pem",
            "PGPASSWORD",
            "client_secret",
        ] {
            assert!(is_sensitive_key(k), "{k}");
        }
        for k in ["bootstrap.servers", "Accept", "ssl.ca.location"] {
            assert!(!is_sensitive_key(k), "{k}");
        }
    }
}
