//! The embedded durable log (`buffer: embedded`, the default).
//!
//! Layout under the log's root folder:
//!
//! ```text
//! <root>/<topic>/00000000000000000000.log    segment files, named by their first offset
//! <root>/<topic>/groups/<group>.offset       the group's committed offset, in decimal
//! ```
//!
//! An entry is `u32 length | u32 CRC-32 of the body | body` (little-endian), the body a
//! [`wire::Message`](crate::wire::Message) frame. Offsets count entries from 0. On open,
//! the last segment is scanned and a torn tail (a short or corrupt last entry, left by a
//! crash mid-write) is truncated; acknowledged entries were fsynced before the ack
//! (with [`FsyncPolicy::EveryBatch`]) and so are never lost. A segment is deleted once
//! every known group has committed past its last entry on disk. A group's offset is written
//! to disk at most every 100 ms while batches flow and whenever the topic runs dry; a crash
//! in between resumes it a little before what it had handled (late, never early: the sinks'
//! ledgers skip what is delivered again).
//!
//! One process owns a log at a time (an OS file lock, see `lock.rs`): a second process
//! opening it gets [`BufferError::Locked`] naming the holder.

mod lock;
mod segment;

use async_trait::async_trait;
use sluice_core::Batch;
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use crate::error::check_name;
use crate::wire::{self, Message, Reassembler, WireFormat};
use crate::{
    AckToken, Buffer, BufferError, Delivery, Pending, PoisonMessage, Subscription, run_blocking,
};
use segment::{ReadOutcome, SegmentReader, TopicLog};

/// When appended entries are flushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// fsync before acknowledging every publish: no acknowledged batch is lost even on
    /// power failure. A source's publishes ([`Buffer::start_publish`]) are flushed a few
    /// at a time, each acknowledged once flushed. The default.
    EveryBatch,
    /// fsync at most once per interval: faster; a power failure (not a process crash) may
    /// lose up to the interval's acknowledged batches.
    Interval(Duration),
}

/// Settings of the embedded log.
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// A new segment file starts once the current one exceeds this many bytes.
    pub segment_bytes: u64,
    /// Flush policy.
    pub fsync: FsyncPolicy,
    /// Largest message; larger batches are split into parts.
    pub max_message_bytes: usize,
    /// Encoding of batches.
    pub format: WireFormat,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            segment_bytes: 64 * 1024 * 1024,
            fsync: FsyncPolicy::EveryBatch,
            max_message_bytes: 16 * 1024 * 1024,
            // lz4, as `buffer.embedded.compression` by default: a local log trades disk
            // for CPU.
            format: WireFormat::ArrowLz4,
        }
    }
}

/// The embedded durable log. Cheap to clone; clones share the open topics.
#[derive(Debug, Clone)]
pub struct EmbeddedLog {
    root: PathBuf,
    options: EmbeddedOptions,
    /// The namespace whose topics this process owns (`None`: the whole folder).
    owner: Option<String>,
    lock: Arc<lock::FolderLock>,
    topics: Arc<Mutex<HashMap<String, Arc<OpenTopic>>>>,
}

#[derive(Debug)]
struct OpenTopic {
    /// Kept while any subscription reads the topic.
    _lock: Arc<lock::FolderLock>,
    log: Mutex<TopicLog>,
    /// The next offset to be written: readers wait on it.
    high_watermark: watch::Sender<i64>,
    /// The offset below which every entry is on disk: deferred publishes wait on it.
    synced: watch::Sender<i64>,
}

impl OpenTopic {
    /// Tells the deferred publishes waiting how far the log is on disk now.
    fn announce_synced(&self, log: &TopicLog) {
        let synced = log.synced();
        self.synced.send_if_modified(|at| {
            let moved = synced > *at;
            *at = (*at).max(synced);
            moved
        });
    }
}

impl EmbeddedLog {
    /// Opens (creating if needed) a log rooted at `root`, owning the whole folder: fails
    /// with [`BufferError::Locked`] while another process has it (or part of it) open.
    pub fn open(root: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self, BufferError> {
        Self::open_as(root.as_ref(), None, options)
    }

    /// Opens the part of the log at `root` that holds the topics of `namespace` (those
    /// named `<namespace>.<node>`), owning it: other namespaces of the same folder can be
    /// opened by other processes at the same time; the same one cannot
    /// ([`BufferError::Locked`], naming the holder).
    pub fn open_for(
        root: impl AsRef<Path>,
        namespace: &str,
        options: EmbeddedOptions,
    ) -> Result<Self, BufferError> {
        check_name("namespace", namespace)?;
        Self::open_as(root.as_ref(), Some(namespace), options)
    }

    fn open_as(
        root: &Path,
        owner: Option<&str>,
        options: EmbeddedOptions,
    ) -> Result<Self, BufferError> {
        let root = root.to_path_buf();
        std::fs::create_dir_all(&root).map_err(|e| BufferError::io(&root, e))?;
        let lock = Arc::new(lock::FolderLock::acquire(&root, owner)?);
        let log = EmbeddedLog {
            root,
            options,
            owner: owner.map(str::to_owned),
            lock,
            topics: Arc::default(),
        };
        // Open every existing topic now, so that a torn tail left by a crash is recovered
        // before anything reads or writes.
        let entries = std::fs::read_dir(&log.root).map_err(|e| BufferError::io(&log.root, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| BufferError::io(&log.root, e))?;
            if let Some(name) = entry.file_name().to_str()
                && entry.path().is_dir()
                && check_name("topic", name).is_ok()
                && log.owns(name)
            {
                log.topic(name)?;
            }
        }
        Ok(log)
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this process owns the topic: every topic when it owns the folder, else
    /// those of its namespace.
    fn owns(&self, topic: &str) -> bool {
        match &self.owner {
            None => true,
            Some(ns) => topic
                .strip_prefix(ns.as_str())
                .is_some_and(|rest| rest.starts_with('.')),
        }
    }

    fn topic(&self, name: &str) -> Result<Arc<OpenTopic>, BufferError> {
        check_name("topic", name)?;
        if !self.owns(name) {
            return Err(BufferError::NotOwned {
                topic: name.to_owned(),
                namespace: self.owner.clone().unwrap_or_default(),
            });
        }
        let mut topics = self.topics.lock().expect("topic map lock");
        if let Some(t) = topics.get(name) {
            return Ok(t.clone());
        }
        let log = TopicLog::open(&self.root.join(name), &self.options)?;
        let (high_watermark, _) = watch::channel(log.next_offset());
        let (synced, _) = watch::channel(log.synced());
        let topic = Arc::new(OpenTopic {
            _lock: self.lock.clone(),
            log: Mutex::new(log),
            high_watermark,
            synced,
        });
        topics.insert(name.to_owned(), topic.clone());
        Ok(topic)
    }

    /// Appends a batch and returns the offset of its first message.
    pub async fn append(&self, topic: &str, batch: &Batch) -> Result<i64, BufferError> {
        let (_, first, _) = self.write(topic, batch, false).await?;
        Ok(first)
    }

    /// Appends a batch, flushed as the policy says or (`deferred`) as
    /// [`TopicLog::append_deferred`] does: the topic, the batch's first offset and the
    /// offset after it.
    async fn write(
        &self,
        topic: &str,
        batch: &Batch,
        deferred: bool,
    ) -> Result<(Arc<OpenTopic>, i64, i64), BufferError> {
        let open = self.topic(topic)?;
        let messages = wire::encode(batch, self.options.format, self.options.max_message_bytes)?;
        let frames: Vec<Vec<u8>> = messages.iter().map(Message::to_frame).collect();
        let writer = open.clone();
        let (first, next) = run_blocking(move || {
            let mut log = writer.log.lock().expect("topic log lock");
            let first = if deferred {
                log.append_deferred(&frames)?
            } else {
                log.append(&frames)?
            };
            let next = log.next_offset();
            writer.high_watermark.send_replace(next);
            writer.announce_synced(&log);
            Ok((first, next))
        })
        .await?;
        Ok((open, first, next))
    }

    /// [`Buffer::start_publish`] under [`FsyncPolicy::EveryBatch`]: the batch is appended
    /// now and acknowledged once it is on disk — flushed with the batches after it (one
    /// fsync for a few), or by its acknowledgement itself when nothing else flushed it
    /// within [`FLUSH_WITHIN`].
    async fn append_deferred(&self, topic: &str, batch: &Batch) -> Result<Pending, BufferError> {
        let (open, _, end) = self.write(topic, batch, true).await?;
        let mut synced = open.synced.subscribe();
        let deadline = tokio::time::Instant::now() + FLUSH_WITHIN;
        Ok(Box::pin(async move {
            loop {
                if *synced.borrow_and_update() >= end {
                    return Ok(());
                }
                let waited = tokio::time::timeout_at(deadline, synced.changed()).await;
                if matches!(waited, Ok(Ok(()))) {
                    continue;
                }
                // Nothing flushed it in time (or the topic was dropped): flush it here.
                let topic = open.clone();
                return run_blocking(move || {
                    let mut log = topic.log.lock().expect("topic log lock");
                    log.flush_data()?;
                    topic.announce_synced(&log);
                    Ok(())
                })
                .await;
            }
        }))
    }
}

/// How long a deferred publish waits for a later one's flush before it flushes itself.
const FLUSH_WITHIN: Duration = Duration::from_millis(5);

#[async_trait]
impl Buffer for EmbeddedLog {
    async fn publish(&self, topic: &str, batch: &Batch) -> Result<(), BufferError> {
        self.append(topic, batch).await.map(|_| ())
    }

    async fn start_publish(&self, topic: &str, batch: &Batch) -> Result<Pending, BufferError> {
        match self.options.fsync {
            FsyncPolicy::EveryBatch => self.append_deferred(topic, batch).await,
            FsyncPolicy::Interval(_) => {
                self.append(topic, batch).await?;
                Ok(Box::pin(async { Ok(()) }))
            }
        }
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn Subscription>, BufferError> {
        check_name("group", group)?;
        let open = self.topic(topic)?;
        let (start, dir) = {
            let mut log = open.log.lock().expect("topic log lock");
            (log.register_group(group)?, log.dir().to_path_buf())
        };
        Ok(Box::new(EmbeddedSubscription {
            topic_name: topic.to_owned(),
            group: group.to_owned(),
            high_watermark: open.high_watermark.subscribe(),
            topic: open,
            reader: Some(SegmentReader::new(dir, start)),
            reassembler: Reassembler::default(),
            ready: VecDeque::new(),
        }))
    }

    async fn health(&self) -> Result<std::time::Duration, BufferError> {
        let started = std::time::Instant::now();
        let probe = self.root.join(".sluice-health");
        let io = |source| BufferError::Io {
            path: probe.clone(),
            source,
        };
        std::fs::create_dir_all(&self.root).map_err(io)?;
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&probe).map_err(io)?;
            f.write_all(b"ok").map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        std::fs::remove_file(&probe).map_err(io)?;
        Ok(started.elapsed())
    }

    async fn lag(&self, topic: &str, group: &str) -> Result<u64, BufferError> {
        check_name("group", group)?;
        let open = self.topic(topic)?;
        let log = open.log.lock().expect("topic log lock");
        let committed = log.committed(group)?.unwrap_or(log.start_offset());
        Ok((log.next_offset() - committed).max(0) as u64)
    }

    async fn backlog_bytes(&self, topic: &str, group: &str) -> Result<Option<u64>, BufferError> {
        check_name("group", group)?;
        let open = self.topic(topic)?;
        let log = open.log.lock().expect("topic log lock");
        let committed = log.committed(group)?.unwrap_or(log.start_offset());
        Ok(Some(log.bytes_from(committed)))
    }

    async fn oldest_uncommitted(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Option<i64>, BufferError> {
        check_name("group", group)?;
        let open = self.topic(topic)?;
        let (committed, next, dir) = {
            let log = open.log.lock().expect("topic log lock");
            let committed = log.committed(group)?.unwrap_or(log.start_offset());
            (committed, log.next_offset(), log.dir().to_path_buf())
        };
        if committed >= next {
            return Ok(None);
        }
        run_blocking(move || {
            let mut reader = SegmentReader::new(dir, committed);
            // An entry that cannot be read says nothing of its age: the consumer will
            // quarantine it.
            Ok(match reader.read_next()? {
                ReadOutcome::Entry { body, .. } => Message::from_frame(&body)
                    .ok()
                    .and_then(|m| m.headers.get("sluice.created_at")?.parse().ok()),
                ReadOutcome::Corrupt { .. } => None,
            })
        })
        .await
    }
}

struct EmbeddedSubscription {
    topic_name: String,
    group: String,
    topic: Arc<OpenTopic>,
    high_watermark: watch::Receiver<i64>,
    reader: Option<SegmentReader>,
    reassembler: Reassembler,
    /// Deliveries decided but not handed out yet (orphaned parts, then a batch).
    ready: VecDeque<Delivery>,
}

#[async_trait]
impl Subscription for EmbeddedSubscription {
    async fn next_within(&mut self, wait: Duration) -> Result<Option<Delivery>, BufferError> {
        self.next_until(tokio::time::Instant::now() + wait, true)
            .await
    }

    /// What the log holds before its end is at hand; at the end nothing is written to
    /// disk (`next_within` does that when the topic runs dry).
    async fn next_ready(&mut self) -> Result<Option<Delivery>, BufferError> {
        self.next_until(tokio::time::Instant::now(), false).await
    }

    /// Commits at once for this process, and on disk at most every [`COMMIT_EVERY`] (and
    /// whenever the topic runs dry): see `TopicLog::commit_soon`.
    async fn commit(&mut self, ack: &AckToken) -> Result<(), BufferError> {
        let topic = self.topic.clone();
        let group = self.group.clone();
        let next = ack.next_offset;
        run_blocking(move || {
            let mut log = topic.log.lock().expect("topic log lock");
            log.commit_soon(&group, next, COMMIT_EVERY)?;
            topic.announce_synced(&log);
            log.apply_retention()
        })
        .await
    }
}

/// How often a group's committed offset is written to disk while batches flow.
const COMMIT_EVERY: Duration = Duration::from_millis(100);

impl EmbeddedSubscription {
    /// The next delivery, waiting until `deadline` for one; when none came, the group's
    /// offset is written to disk first if `flush_when_dry`.
    async fn next_until(
        &mut self,
        deadline: tokio::time::Instant,
        flush_when_dry: bool,
    ) -> Result<Option<Delivery>, BufferError> {
        loop {
            if let Some(ready) = self.ready.pop_front() {
                return Ok(Some(ready));
            }
            let high = *self.high_watermark.borrow_and_update();
            let reader = self.reader.as_ref().expect("reader present between reads");
            if reader.offset() >= high && self.reassembler.holds(0) {
                // Every append is whole below the high watermark: parts still missing
                // there are never coming.
                self.orphans(reader.offset() - 1, true);
                continue;
            }
            if reader.offset() >= high {
                match tokio::time::timeout_at(deadline, self.high_watermark.changed()).await {
                    Ok(Ok(())) => continue,
                    // Timed out, or the log was dropped: nothing more for now (and the
                    // offset on disk is the committed one).
                    Ok(Err(_)) | Err(_) => {
                        if flush_when_dry {
                            self.flush().await?;
                        }
                        return Ok(None);
                    }
                }
            }
            let mut reader = self.reader.take().expect("reader present");
            let (reader, outcome) = run_blocking(move || {
                let outcome = reader.read_next();
                Ok((reader, outcome))
            })
            .await?;
            self.reader = Some(reader);
            let (offset, frame) = match outcome? {
                ReadOutcome::Entry { offset, body } => (offset, body),
                ReadOutcome::Corrupt {
                    offset,
                    body,
                    error,
                } => {
                    return Ok(Some(self.poison(offset, body, error)));
                }
            };
            let decoded = Message::from_frame(&frame).and_then(|m| wire::decode(&m));
            let decoded = match decoded {
                Ok(d) => d,
                Err(error) => return Ok(Some(self.poison(offset, frame, error.to_string()))),
            };
            let added = self.reassembler.add(0, offset, decoded);
            self.orphans(offset, false);
            match added {
                Ok(Some(batch)) => {
                    let next = self.reassembler.commit_point(0, offset);
                    self.ready.push_back(Delivery::Batch {
                        batch,
                        ack: self.ack(next),
                    });
                }
                Ok(None) => {}
                Err(error) => {
                    let poison = self.poison(offset, frame, error.to_string());
                    self.ready.push_back(poison);
                }
            }
        }
    }

    /// Writes the group's offset to disk if it is behind what was committed.
    async fn flush(&self) -> Result<(), BufferError> {
        let topic = self.topic.clone();
        let group = self.group.clone();
        run_blocking(move || {
            let mut log = topic.log.lock().expect("topic log lock");
            log.flush(&group)?;
            topic.announce_synced(&log);
            log.apply_retention()
        })
        .await
    }
}

impl Drop for EmbeddedSubscription {
    fn drop(&mut self) {
        if let Ok(mut log) = self.topic.log.lock() {
            if let Err(e) = log.flush(&self.group) {
                tracing::warn!(topic = %self.topic_name, group = %self.group, error = %e, "could not write the group's last offset");
            }
        }
    }
}

impl EmbeddedSubscription {
    fn ack(&self, next_offset: i64) -> AckToken {
        AckToken {
            topic: self.topic_name.clone(),
            partition: 0,
            next_offset,
        }
    }

    fn poison(&self, offset: i64, payload: Vec<u8>, error: String) -> Delivery {
        tracing::warn!(topic = %self.topic_name, offset, %error, "undecodable message in the embedded buffer; handing it out for quarantine");
        Delivery::Poison {
            poison: PoisonMessage {
                topic: self.topic_name.clone(),
                partition: 0,
                offset,
                payload,
                error,
            },
            ack: self.ack(self.reassembler.commit_point(0, offset)),
        }
    }

    /// Queues the parts of batches that will never be whole as poison (see
    /// [`Reassembler::orphans`]), having read up to `offset`.
    fn orphans(&mut self, offset: i64, all: bool) {
        for orphan in self.reassembler.orphans(0, offset, all) {
            let poison = self.poison(orphan.offset, orphan.payload, orphan.error);
            let Delivery::Poison { poison, .. } = poison else {
                continue;
            };
            let ack = self.ack(self.reassembler.commit_point(0, offset));
            self.ready.push_back(Delivery::Poison { poison, ack });
        }
    }
}

#[cfg(test)]
mod tests;
