//! The file sink's ledger: `.sluice-ledger` in the output's folder, one JSON line per
//! event, appended and fsynced.
//!
//! ```text
//! {"op":"begin","target":T,"key":K,"file":F,"start":S,"suffix":X}   before the data
//! {"op":"commit","target":T,"key":K,"file":F,"rows":N,"replace":B,"load":L}  after it
//! {"op":"rollback","target":T,"key":K,"file":F}                       a begin undone
//! ```
//!
//! `target` is the sink's path template, so two sinks writing the same folder never skip
//! each other's batches. A `begin` without a `commit` (a crash mid-write) is undone when
//! the sink opens the ledger, whatever file the path names now (a `{{run_id}}` path names
//! another one in the next run): the file is cut back to `start` bytes, `suffix` (a JSON
//! array's closing `]`) written again, and a `rollback` recorded. A commit's key says
//! which rows of its original batch it holds (`parent:first+rows` for a part), so a batch
//! delivered again split differently writes only the rows no commit holds. A commit with
//! `replace` voids the earlier commits of the same file (an `overwrite` sink started it
//! afresh) and names the load that did it, so that the load does it once.

use super::io_error;
use crate::sql::ledger::{parent_and_base, uncovered};
use serde::{Deserialize, Serialize};
use sluice_core::{Batch, ConnectorError};
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;

/// One line of the ledger.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) op: String,
    pub(crate) target: String,
    #[serde(default)]
    pub(crate) key: String,
    pub(crate) file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) start: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub(crate) suffix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) rows: Option<usize>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) replace: bool,
    /// With `replace`: the load that started the file afresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) load: Option<String>,
}

/// A `begin` not followed by its `commit`.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) key: String,
    pub(crate) start: u64,
    pub(crate) suffix: String,
}

/// The ledger of one target, as read from the file and kept up to date.
pub(crate) struct Ledger {
    path: PathBuf,
    target: String,
    /// Per original batch, the rows committed: `(first_row, rows)` and the file.
    committed: HashMap<String, Vec<(i64, i64, String)>>,
    /// Per file, the load whose `overwrite` started it afresh.
    loads: HashMap<String, String>,
    /// Per file, a write that began and did not commit.
    pub(crate) pending: HashMap<String, Pending>,
    file: Option<File>,
}

impl Ledger {
    /// Reads the ledger at `path` (missing: empty), keeping `target`'s entries.
    pub(crate) fn open(path: PathBuf, target: String) -> Result<Self, ConnectorError> {
        let mut ledger = Ledger {
            path,
            target,
            committed: HashMap::new(),
            loads: HashMap::new(),
            pending: HashMap::new(),
            file: None,
        };
        let file = match File::open(&ledger.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ledger),
            Err(e) => return Err(io_error("read the ledger", &ledger.path, &e)),
        };
        for line in BufReader::new(file).lines() {
            let line = line.map_err(|e| io_error("read the ledger", &ledger.path, &e))?;
            // A torn last line (a crash while appending it) is not an entry.
            let Ok(entry) = serde_json::from_str::<Entry>(&line) else {
                continue;
            };
            if entry.target == ledger.target {
                ledger.apply(entry);
            }
        }
        Ok(ledger)
    }

    fn apply(&mut self, entry: Entry) {
        match entry.op.as_str() {
            "begin" => {
                self.pending.insert(
                    entry.file,
                    Pending {
                        key: entry.key,
                        start: entry.start.unwrap_or(0),
                        suffix: entry.suffix,
                    },
                );
            }
            "commit" => {
                if entry.replace {
                    for ranges in self.committed.values_mut() {
                        ranges.retain(|(_, _, f)| *f != entry.file);
                    }
                    match &entry.load {
                        Some(load) => self.loads.insert(entry.file.clone(), load.clone()),
                        None => self.loads.remove(&entry.file),
                    };
                }
                if self
                    .pending
                    .get(&entry.file)
                    .is_some_and(|p| p.key == entry.key)
                {
                    self.pending.remove(&entry.file);
                }
                let (parent, first, rows) = rows_of(&entry.key, entry.rows);
                self.committed
                    .entry(parent)
                    .or_default()
                    .push((first, rows, entry.file));
            }
            "rollback"
                if self
                    .pending
                    .get(&entry.file)
                    .is_some_and(|p| p.key == entry.key) =>
            {
                self.pending.remove(&entry.file);
            }
            _ => {}
        }
    }

    /// The parts of the batch's rows no commit holds, as `(offset, len)` in the batch.
    pub(crate) fn uncovered(&self, batch: &Batch) -> Vec<(usize, usize)> {
        let (parent, base) = parent_and_base(batch);
        let covered: Vec<(i64, i64)> = self
            .committed
            .get(&parent)
            .map(|r| r.iter().map(|&(first, rows, _)| (first, rows)).collect())
            .unwrap_or_default();
        uncovered(base, batch.num_rows(), &covered)
    }

    /// The load whose `overwrite` last started `file` afresh.
    pub(crate) fn load_of(&self, file: &str) -> Option<&str> {
        self.loads.get(file).map(String::as_str)
    }

    /// Appends an entry and fsyncs the ledger.
    pub(crate) fn append(&mut self, mut entry: Entry) -> Result<(), ConnectorError> {
        entry.target = self.target.clone();
        if self.file.is_none() {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .map_err(|e| io_error("write the ledger", &self.path, &e))?;
            self.file = Some(f);
        }
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        let path = self.path.clone();
        if let Some(f) = self.file.as_mut() {
            f.write_all(&line)
                .and_then(|()| f.sync_data())
                .map_err(|e| io_error("write the ledger", &path, &e))?;
        }
        self.apply(entry);
        Ok(())
    }
}

/// The original batch and the rows a ledger key holds: `parent:first+rows` for a part of
/// a split batch, else the whole batch (`rows` from its commit).
fn rows_of(key: &str, rows: Option<usize>) -> (String, i64, i64) {
    let part = key.split_once(':').and_then(|(parent, range)| {
        let (first, n) = range.split_once('+')?;
        Some((parent.to_owned(), first.parse().ok()?, n.parse().ok()?))
    });
    part.unwrap_or_else(|| {
        let rows = rows.map_or(i64::MAX / 2, |r| i64::try_from(r).unwrap_or(i64::MAX / 2));
        (key.to_owned(), 0, rows)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_name_their_rows() {
        assert_eq!(rows_of("abc", Some(10)), ("abc".into(), 0, 10));
        assert_eq!(rows_of("abc:5+3", Some(3)), ("abc".into(), 5, 3));
        // Not a part: the whole key.
        assert_eq!(rows_of("a:b", Some(2)), ("a:b".into(), 0, 2));
    }
}
