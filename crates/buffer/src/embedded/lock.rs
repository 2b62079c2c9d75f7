//! One owner per embedded log: an OS file lock (`flock`) held while the log is open.
//!
//! Two processes appending to and deleting segments of the same topics would lose data:
//! each keeps offsets and retention in memory, and a segment one deems consumed is
//! deleted under the other. So a log is opened by one process at a time:
//!
//! - a log opened for a pipeline ([`EmbeddedLog::open_for`](super::EmbeddedLog::open_for))
//!   takes `<root>/<namespace>.lock` exclusively and `<root>/.lock` shared: pipelines
//!   sharing a folder run side by side, each on its own topics;
//! - a log opened whole ([`EmbeddedLog::open`](super::EmbeddedLog::open)) takes
//!   `<root>/.lock` exclusively.
//!
//! The exclusive lock file holds who took it (host, pid, since, command), so a second
//! process is told whom it waits for. The OS releases the lock when the process ends,
//! however it ends (kill -9 included): a dead owner never blocks the next one.

use sluice_core::flock::{LockMode, try_lock};
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::BufferError;

/// Locks held while a log is open; released on drop.
#[derive(Debug)]
pub(super) struct FolderLock {
    _files: Vec<File>,
}

/// Who holds a lock, as written in its file.
pub(super) fn describe_holder(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut f) = File::open(path) {
        let _ = Read::by_ref(&mut f).take(1024).read_to_string(&mut text);
    }
    let text = text.trim();
    if text.is_empty() {
        "another process".to_owned()
    } else {
        text.to_owned()
    }
}

/// The holder line written into an exclusive lock file.
fn holder_line() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown host".to_owned());
    let command: Vec<String> = std::env::args().take(3).collect();
    format!(
        "pid {} on {host} since {} ({})",
        std::process::id(),
        chrono_like_now(),
        command.join(" ")
    )
}

/// UTC time as `YYYY-MM-DD HH:MM:SS UTC`, without a date crate in this one.
fn chrono_like_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn open_lock_file(path: &Path) -> Result<File, BufferError> {
    sluice_core::flock::open_lock_file(path).map_err(|e| BufferError::io(path, e))
}

fn locked(root: &Path, path: PathBuf, holder: String) -> BufferError {
    BufferError::Locked {
        root: root.to_path_buf(),
        lock: path,
        holder,
    }
}

impl FolderLock {
    /// Takes the locks for `owner`'s topics (or the whole folder when `owner` is `None`).
    pub(super) fn acquire(root: &Path, owner: Option<&str>) -> Result<FolderLock, BufferError> {
        let folder_path = root.join(".lock");
        let folder = open_lock_file(&folder_path)?;
        let Some(owner) = owner else {
            exclusive(root, &folder_path, &folder)?;
            return Ok(FolderLock {
                _files: vec![folder],
            });
        };
        match try_lock(&folder, LockMode::Shared) {
            Ok(true) => {}
            Ok(false) => {
                return Err(locked(
                    root,
                    folder_path.clone(),
                    describe_holder(&folder_path),
                ));
            }
            Err(e) => return Err(BufferError::io(&folder_path, e)),
        }
        let own_path = root.join(format!("{owner}.lock"));
        let own = open_lock_file(&own_path)?;
        exclusive(root, &own_path, &own)?;
        Ok(FolderLock {
            _files: vec![folder, own],
        })
    }
}

/// Takes `file`'s exclusive lock and writes who holds it.
fn exclusive(root: &Path, path: &Path, file: &File) -> Result<(), BufferError> {
    match try_lock(file, LockMode::Exclusive) {
        Ok(true) => {}
        Ok(false) => {
            return Err(locked(root, path.to_path_buf(), describe_holder(path)));
        }
        Err(e) => return Err(BufferError::io(path, e)),
    }
    let mut f = file;
    let line = holder_line();
    let write = f
        .set_len(0)
        .and_then(|()| f.rewind())
        .and_then(|()| f.write_all(line.as_bytes()));
    write.map_err(|e| BufferError::io(path, e))
}
