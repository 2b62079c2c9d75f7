//! Column naming for sinks (`naming: snake_case`): how record fields become column names,
//! deterministically, and the [`NameBook`] that keeps the mapping between runs.
//!
//! ```
//! use sluice_core::naming::{NameLimit, resolve, snake_case};
//! use std::collections::BTreeMap;
//!
//! assert_eq!(snake_case("Order Total ($)", NameLimit::Bytes(63)), "order_total");
//! let names = resolve(&BTreeMap::new(), ["userId", "userid"], NameLimit::Bytes(63));
//! assert_eq!(names["userid"], "userid"); // the field already in snake_case keeps it
//! assert!(names["userId"].starts_with("userid_")); // the other gets a hash suffix
//! ```

use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};

use crate::ConnectorError;

/// How a sink names its columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Naming {
    /// Each field's name as it is; a name the target cannot store fails the batch.
    #[default]
    Verbatim,
    /// Lower case, non-alphanumerics to `_`, long names shortened with a hash suffix,
    /// collisions resolved deterministically; the mapping is recorded and reused.
    SnakeCase,
}

/// The longest column name a target keeps whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameLimit {
    /// At most this many bytes (PostgreSQL: 63).
    Bytes(usize),
    /// At most this many characters (MySQL: 64).
    Chars(usize),
    /// No limit (SQLite).
    None,
}

impl NameLimit {
    fn fits(self, name: &str) -> bool {
        match self {
            NameLimit::Bytes(n) => name.len() <= n,
            NameLimit::Chars(n) => name.chars().count() <= n,
            NameLimit::None => true,
        }
    }
}

/// The name a field whose snake_case form is empty gets (before collisions are resolved).
pub const UNNAMED: &str = "unnamed";

/// Eight hex digits of a hash of `text`: the suffix of shortened and colliding names.
fn short_hash(text: &str) -> String {
    let hash = blake3::hash(text.as_bytes());
    hash.to_hex()[..8].to_owned()
}

/// `base` cut (at a character boundary, trailing `_` dropped) so that `base_<suffix>`
/// fits `limit`, then `_<suffix>` appended.
fn with_suffix(base: &str, suffix: &str, limit: NameLimit) -> String {
    let mut cut = base.to_owned();
    loop {
        let candidate = format!("{cut}_{suffix}");
        if limit.fits(&candidate) || cut.is_empty() {
            return candidate;
        }
        cut.pop();
        while cut.ends_with('_') {
            cut.pop();
        }
    }
}

/// The snake_case form of a field name: lower case; every run of characters that are not
/// letters or digits becomes one `_`, none at either end; an empty result is
/// [`UNNAMED`]; a result longer than `limit` is cut and ends in `_` and eight hex digits
/// of a hash of the field name, so two long names that share their start stay apart.
pub fn snake_case(field: &str, limit: NameLimit) -> String {
    let mut out = String::with_capacity(field.len());
    let mut gap = false;
    for c in field.chars() {
        if c.is_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    if out.is_empty() {
        out.push_str(UNNAMED);
    }
    if limit.fits(&out) {
        out
    } else {
        with_suffix(&out, &short_hash(field), limit)
    }
}

/// The columns of `fields`: the ones in `recorded` (field → column) keep theirs; the new
/// ones get their [`snake_case`] form unless a column already has that name (compared
/// case-insensitively), in which case they get it with `_` and a hash of the field name
/// appended. New fields are resolved in a fixed order: those already equal to their
/// snake_case form first, then by their bytes. So the result does not depend on the
/// order the fields arrive in, and once recorded it never changes.
///
/// Returns the mapping of every field in `fields` (recorded and new).
pub fn resolve<'a>(
    recorded: &BTreeMap<String, String>,
    fields: impl IntoIterator<Item = &'a str>,
    limit: NameLimit,
) -> BTreeMap<String, String> {
    let mut taken: BTreeSet<String> = recorded.values().map(|c| c.to_lowercase()).collect();
    let mut out = BTreeMap::new();
    let mut new: Vec<(bool, &str, String)> = Vec::new();
    for field in fields {
        if out.contains_key(field) || new.iter().any(|(_, f, _)| *f == field) {
            continue;
        }
        match recorded.get(field) {
            Some(column) => {
                out.insert(field.to_owned(), column.clone());
            }
            None => {
                let base = snake_case(field, limit);
                new.push((base != field, field, base));
            }
        }
    }
    new.sort();
    for (_, field, base) in new {
        let mut column = base.clone();
        let mut round = 0u32;
        while taken.contains(&column.to_lowercase()) {
            let salt = if round == 0 {
                field.to_owned()
            } else {
                format!("{field}#{round}")
            };
            column = with_suffix(&base, &short_hash(&salt), limit);
            round += 1;
        }
        taken.insert(column.to_lowercase());
        out.insert(field.to_owned(), column);
    }
    out
}

/// Where a sink's field → column mapping is kept between runs (the state store), and
/// which mappings each run applied (its run record).
#[async_trait]
pub trait NameBook: Send + Sync {
    /// The mapping recorded for this sink by earlier runs (field → column).
    async fn recorded(&self) -> Result<BTreeMap<String, String>, ConnectorError>;
    /// Records mappings the sink is about to use (new ones are kept for later runs; all
    /// are listed in this run's record). Called before any column is created for them.
    async fn record(&self, names: &BTreeMap<String, String>) -> Result<(), ConnectorError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: NameLimit = NameLimit::Bytes(63);

    #[test]
    fn snake_case_lowers_and_joins_with_underscores() {
        assert_eq!(snake_case("Order Total ($)", PG), "order_total");
        assert_eq!(snake_case("userId", PG), "userid");
        assert_eq!(snake_case("  a--b  ", PG), "a_b");
        assert_eq!(snake_case("", PG), "unnamed");
        assert_eq!(snake_case("$$", PG), "unnamed");
        assert_eq!(snake_case("Größe", PG), "größe");
        assert_eq!(snake_case("a\"; DROP TABLE x; --", PG), "a_drop_table_x");
    }

    #[test]
    fn long_names_are_cut_with_a_hash_of_the_whole_name() {
        let a = format!("{}_a", "x".repeat(70));
        let b = format!("{}_b", "x".repeat(70));
        let (ca, cb) = (snake_case(&a, PG), snake_case(&b, PG));
        assert_eq!(ca.len(), 63);
        assert_ne!(ca, cb);
        assert_eq!(ca, snake_case(&a, PG));
        let m = snake_case(&"é".repeat(70), NameLimit::Chars(64));
        assert_eq!(m.chars().count(), 64);
        assert_eq!(snake_case(&"é".repeat(70), NameLimit::None), "é".repeat(70));
    }

    #[test]
    fn collisions_resolve_the_same_whatever_the_order() {
        let none = BTreeMap::new();
        let one = resolve(&none, ["userId", "userid", "USERID"], PG);
        let two = resolve(&none, ["USERID", "userid", "userId"], PG);
        assert_eq!(one, two);
        assert_eq!(one["userid"], "userid");
        let columns: BTreeSet<&String> = one.values().collect();
        assert_eq!(columns.len(), 3);
    }

    #[test]
    fn recorded_names_win_over_later_fields() {
        let first = resolve(&BTreeMap::new(), ["userId"], PG);
        assert_eq!(first["userId"], "userid");
        let later = resolve(&first, ["userid", "userId"], PG);
        assert_eq!(later["userId"], "userid");
        assert_ne!(later["userid"], "userid");
        assert!(later["userid"].starts_with("userid_"));
        // Reused, the mapping stays.
        assert_eq!(resolve(&later, ["userid"], PG)["userid"], later["userid"]);
    }
}
