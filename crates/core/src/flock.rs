//! Advisory whole-file locks (`flock`), the OS lock behind one owner per pipeline: held
//! while the file stays open, released by the OS when the process ends, however it ends.

use std::fs::File;
use std::io;

/// How a lock is shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once, none exclusive.
    Shared,
    /// One holder.
    Exclusive,
}

/// Opens (creating it and its folder, keeping its content) a lock file.
pub fn open_lock_file(path: &std::path::Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
}

/// Tries to lock `file` without waiting: `Ok(false)` when another open file holds a
/// conflicting lock (another process, or another handle in this one).
pub fn try_lock(file: &File, mode: LockMode) -> io::Result<bool> {
    use rustix::fs::{FlockOperation, flock};
    let op = match mode {
        LockMode::Shared => FlockOperation::NonBlockingLockShared,
        LockMode::Exclusive => FlockOperation::NonBlockingLockExclusive,
    };
    match flock(file, op) {
        Ok(()) => Ok(true),
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => Ok(false),
        Err(e) => Err(io::Error::from(e)),
    }
}
