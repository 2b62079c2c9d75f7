//! The file sink's ledger: `.sluice-ledger` in the output's folder, one JSON line per
//! event, appended and fsynced.
//!
//! ```text
//! {"op":"begin","target":T,"key":K,"file":F,"start":S,"suffix":X}   before the data
//! {"op":"commit","target":T,"key":K,"file":F,"rows":N,"replace":B}    after the data
//! ```
//!
//! `target` is the sink's path template, so two sinks writing the same folder never skip
//! each other's batches. A `begin` without a `commit` (a crash mid-write) is undone at the
//! next write to that file: the file is cut back to `start` bytes and `suffix` (a JSON
//! array's closing `]`) written again. A commit with `replace` voids the earlier commits
//! of the same file (an `overwrite` sink started it afresh).

use super::io_error;
use serde::{Deserialize, Serialize};
use sluice_core::ConnectorError;
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
    /// Committed ledger keys and the file each went to.
    committed: HashMap<String, String>,
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
                    self.committed.retain(|_, f| *f != entry.file);
                }
                if self
                    .pending
                    .get(&entry.file)
                    .is_some_and(|p| p.key == entry.key)
                {
                    self.pending.remove(&entry.file);
                }
                self.committed.insert(entry.key, entry.file);
            }
            _ => {}
        }
    }

    /// Whether the rows of this ledger key were written before: the key itself, or the
    /// whole batch a part was split from.
    pub(crate) fn written(&self, key: &str) -> bool {
        self.committed.contains_key(key)
            || key
                .split_once(':')
                .is_some_and(|(parent, _)| self.committed.contains_key(parent))
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
