//! Hot reload: the folders (and the folders of the files) `sluice serve` was given are
//! watched with `notify`; after a change settles, every file is read again
//! ([`Service::rescan`]).

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use crate::ServeError;
use crate::service::Service;

/// How long changes must settle before the files are read again (an editor writes a file
/// in several steps).
const SETTLE: Duration = Duration::from_millis(300);

/// Watches `paths`; the watcher stops when the returned value is dropped.
pub(crate) fn watch(
    service: Arc<Service>,
    paths: &[PathBuf],
) -> Result<RecommendedWatcher, ServeError> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
            Ok(event) if event.kind.is_access() => {}
            // Only pipeline files matter: the sinks' SQLite files and logs written beside
            // them in the folder do not make the files be read again.
            Ok(event)
                if event.need_rescan()
                    || event
                        .paths
                        .iter()
                        .any(|p| crate::catalog::is_pipeline_file(p)) =>
            {
                let _ = tx.send(());
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "watching the pipeline files"),
        })
        .map_err(|e| ServeError::Watch {
            path: PathBuf::from("."),
            message: e.to_string(),
        })?;
    let mut watched: Vec<PathBuf> = Vec::new();
    for path in paths {
        // A file is watched through its folder: editors replace files by renaming.
        let dir = if path.is_dir() {
            path.clone()
        } else {
            match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        if watched.contains(&dir) {
            continue;
        }
        watcher
            .watch(Path::new(&dir), RecursiveMode::NonRecursive)
            .map_err(|e| ServeError::Watch {
                path: dir.clone(),
                message: e.to_string(),
            })?;
        watched.push(dir);
    }
    let stopping = service.stopping.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = rx.recv() => if got.is_none() { return },
                _ = stopping.cancelled() => return,
            }
            // Let the change settle: more events within SETTLE are the same change.
            loop {
                tokio::select! {
                    got = rx.recv() => if got.is_none() { return },
                    _ = tokio::time::sleep(SETTLE) => break,
                }
            }
            if stopping.is_cancelled() {
                return;
            }
            if let Err(e) = service.rescan(false).await {
                tracing::error!(error = %e, "reloading the pipeline files");
            }
        }
    });
    Ok(watcher)
}
