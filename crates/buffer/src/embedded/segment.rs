//! Segment files: the writer side ([`TopicLog`]) and the reader side ([`SegmentReader`]).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::{EmbeddedOptions, FsyncPolicy};
use crate::BufferError;

const ENTRY_HEADER: u64 = 8;
const SEGMENT_SUFFIX: &str = ".log";

/// A deferred append ([`TopicLog::append_deferred`]) flushes once this many entries wait
/// unflushed: one fsync for several batches, fewer than a source keeps in flight (so that
/// it never waits for the flush of its oldest).
pub(super) const FLUSH_EVERY: i64 = 4;

fn segment_path(dir: &Path, base: i64) -> PathBuf {
    dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

/// The first offsets of the segments in `dir`, ascending.
fn list_segments(dir: &Path) -> Result<Vec<i64>, BufferError> {
    let mut bases = Vec::new();
    let entries = fs::read_dir(dir).map_err(|e| BufferError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| BufferError::io(dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        if let Ok(base) = stem.parse::<i64>() {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

fn sync_dir(dir: &Path) -> Result<(), BufferError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| BufferError::io(dir, e))
}

/// One entry read from a file, or why there is none.
enum RawEntry {
    Ok(Vec<u8>),
    /// The entry's CRC does not match its body.
    BadCrc(Vec<u8>),
    /// The file ends inside the entry (or its header).
    Short,
    /// The file ends exactly here.
    Eof,
}

fn read_entry(file: &mut File, file_len: u64, pos: u64) -> io::Result<RawEntry> {
    if pos == file_len {
        return Ok(RawEntry::Eof);
    }
    if pos + ENTRY_HEADER > file_len {
        return Ok(RawEntry::Short);
    }
    let mut header = [0u8; 8];
    file.read_exact(&mut header)?;
    let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
    let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
    if pos + ENTRY_HEADER + len > file_len {
        return Ok(RawEntry::Short);
    }
    let mut body = vec![0u8; len as usize];
    file.read_exact(&mut body)?;
    if crc32fast::hash(&body) == crc {
        Ok(RawEntry::Ok(body))
    } else {
        Ok(RawEntry::BadCrc(body))
    }
}

#[derive(Debug)]
struct Segment {
    base: i64,
    /// One past its last offset.
    next: i64,
    bytes: u64,
}

/// The writer's view of one topic: its segments, the active file, the groups' offsets.
#[derive(Debug)]
pub(super) struct TopicLog {
    dir: PathBuf,
    segment_bytes: u64,
    fsync: FsyncPolicy,
    segments: Vec<Segment>,
    active: File,
    last_sync: Instant,
    /// The offset below which every entry is on disk (fsynced): what a deferred
    /// publish's acknowledgement waits for (see [`Self::append_deferred`]).
    synced: i64,
    /// How many times appended entries were flushed (fsync): for tests and the curious.
    flushes: u64,
    /// Each group's committed offset (what it handled; what `lag` counts from).
    groups: HashMap<String, i64>,
    /// Each group's offset on disk (where it resumes after a crash), and when it was
    /// written: a commit is written at most every so often (see [`Self::commit_soon`]).
    durable: HashMap<String, (i64, Instant)>,
}

impl TopicLog {
    /// Opens the topic's folder, recovering a torn tail of the last segment.
    pub(super) fn open(dir: &Path, options: &EmbeddedOptions) -> Result<Self, BufferError> {
        let groups_dir = dir.join("groups");
        fs::create_dir_all(&groups_dir).map_err(|e| BufferError::io(&groups_dir, e))?;
        let mut bases = list_segments(dir)?;
        if bases.is_empty() {
            File::create(segment_path(dir, 0)).map_err(|e| BufferError::io(dir, e))?;
            sync_dir(dir)?;
            bases.push(0);
        }
        // Every segment but the last ends where the next one begins.
        let mut segments: Vec<Segment> = bases
            .windows(2)
            .map(|w| Segment {
                base: w[0],
                next: w[1],
                bytes: 0,
            })
            .collect();
        let last_base = *bases.last().expect("at least one segment");
        let (last, active) = recover_last(dir, last_base)?;
        segments.push(last);

        let mut groups = HashMap::new();
        for entry in fs::read_dir(&groups_dir).map_err(|e| BufferError::io(&groups_dir, e))? {
            let entry = entry.map_err(|e| BufferError::io(&groups_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(group) = name.strip_suffix(".offset") {
                let text = fs::read_to_string(entry.path())
                    .map_err(|e| BufferError::io(entry.path(), e))?;
                if let Ok(offset) = text.trim().parse::<i64>() {
                    groups.insert(group.to_owned(), offset);
                }
            }
        }
        let durable = groups
            .iter()
            .map(|(g, o)| (g.clone(), (*o, Instant::now())))
            .collect();
        Ok(TopicLog {
            dir: dir.to_path_buf(),
            segment_bytes: options.segment_bytes,
            fsync: options.fsync,
            segments,
            active,
            last_sync: Instant::now(),
            synced: 0,
            flushes: 0,
            groups,
            durable,
        })
    }

    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The next offset to be written (the high watermark).
    pub(super) fn next_offset(&self) -> i64 {
        self.segments.last().expect("at least one segment").next
    }

    /// The bytes on disk from offset `from` to the end: whole segments past it, and the
    /// segment it falls in in proportion to the entries left there.
    pub(super) fn bytes_from(&self, from: i64) -> u64 {
        self.segments
            .iter()
            .filter(|seg| seg.next > from)
            .map(|seg| {
                if seg.base >= from || seg.next <= seg.base {
                    seg.bytes
                } else {
                    let left = (seg.next - from) as u128;
                    let all = (seg.next - seg.base) as u128;
                    (seg.bytes as u128 * left / all) as u64
                }
            })
            .sum()
    }

    /// The first offset still on disk.
    pub(super) fn start_offset(&self) -> i64 {
        self.segments[0].base
    }

    /// Appends entries; returns the offset of the first. All or nothing: a failed write
    /// is cut off again so that no half entry stays behind. Flushed as the policy says.
    pub(super) fn append(&mut self, frames: &[Vec<u8>]) -> Result<i64, BufferError> {
        let sync_now = match self.fsync {
            FsyncPolicy::EveryBatch => true,
            FsyncPolicy::Interval(every) => self.last_sync.elapsed() >= every,
        };
        self.write(frames, sync_now)
    }

    /// Appends entries without flushing them (unless [`FLUSH_EVERY`] entries wait
    /// unflushed): the caller acknowledges them only once [`Self::synced`] passes them,
    /// after a later append's flush or its own [`Self::flush_data`]. Readers see them at
    /// once; anything on disk that refers to them (a group's offset) is written after a
    /// flush ([`Self::commit`]).
    pub(super) fn append_deferred(&mut self, frames: &[Vec<u8>]) -> Result<i64, BufferError> {
        let waiting = self.next_offset() - self.synced + frames.len() as i64;
        self.write(frames, waiting >= FLUSH_EVERY)
    }

    /// The offset below which every entry is on disk.
    pub(super) fn synced(&self) -> i64 {
        self.synced
    }

    /// How many times appended entries were flushed.
    #[cfg(test)]
    pub(super) fn flushes(&self) -> u64 {
        self.flushes
    }

    /// Flushes the entries appended and not flushed yet, if any.
    pub(super) fn flush_data(&mut self) -> Result<(), BufferError> {
        if self.synced >= self.next_offset() {
            return Ok(());
        }
        let base = self.segments.last().expect("segment").base;
        self.active
            .sync_data()
            .map_err(|e| BufferError::io(segment_path(&self.dir, base), e))?;
        self.last_sync = Instant::now();
        self.synced = self.next_offset();
        self.flushes += 1;
        Ok(())
    }

    fn write(&mut self, frames: &[Vec<u8>], sync_now: bool) -> Result<i64, BufferError> {
        let first = self.next_offset();
        let mut buf = Vec::with_capacity(frames.iter().map(|f| f.len() + 8).sum());
        for frame in frames {
            buf.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(frame).to_le_bytes());
            buf.extend_from_slice(frame);
        }
        let path = segment_path(&self.dir, self.segments.last().expect("segment").base);
        let before = self.segments.last().expect("segment").bytes;
        if let Err(e) = self.active.write_all(&buf) {
            let _ = self.active.set_len(before);
            let _ = self.active.seek(SeekFrom::Start(before));
            return Err(BufferError::io(path, e));
        }
        let seg = self.segments.last_mut().expect("segment");
        seg.bytes += buf.len() as u64;
        seg.next += frames.len() as i64;
        if sync_now {
            self.flush_data()?;
        }
        if self.segments.last().expect("segment").bytes >= self.segment_bytes {
            self.roll()?;
        }
        Ok(first)
    }

    fn roll(&mut self) -> Result<(), BufferError> {
        let next = self.next_offset();
        self.active
            .sync_all()
            .map_err(|e| BufferError::io(&self.dir, e))?;
        self.synced = next;
        let path = segment_path(&self.dir, next);
        self.active = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| BufferError::io(&path, e))?;
        sync_dir(&self.dir)?;
        self.segments.push(Segment {
            base: next,
            next,
            bytes: 0,
        });
        Ok(())
    }

    /// The group's committed offset, if it ever committed or subscribed.
    pub(super) fn committed(&self, group: &str) -> Result<Option<i64>, BufferError> {
        Ok(self.groups.get(group).copied())
    }

    /// Makes the group known (so retention waits for it) and returns where it resumes.
    pub(super) fn register_group(&mut self, group: &str) -> Result<i64, BufferError> {
        match self.groups.get(group) {
            Some(&offset) => Ok(offset.max(self.start_offset())),
            None => {
                let start = self.start_offset();
                self.commit(group, start)?;
                Ok(start)
            }
        }
    }

    /// Persists the group's offset (atomically: temp file, fsync, rename), after the
    /// entries it passes are on disk. Never moves a group backwards.
    pub(super) fn commit(&mut self, group: &str, next: i64) -> Result<(), BufferError> {
        if self
            .durable
            .get(group)
            .is_some_and(|&(current, _)| current >= next)
        {
            return Ok(());
        }
        // A group's offset on disk past entries a power cut could take would skip the
        // entries written in their place after it.
        if next > self.synced {
            self.flush_data()?;
        }
        let dir = self.dir.join("groups");
        let path = dir.join(format!("{group}.offset"));
        let tmp = dir.join(format!("{group}.offset.tmp"));
        let write = || -> io::Result<()> {
            let mut f = File::create(&tmp)?;
            f.write_all(next.to_string().as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, &path)
        };
        write().map_err(|e| BufferError::io(&path, e))?;
        sync_dir(&dir)?;
        let current = self.groups.entry(group.to_owned()).or_insert(next);
        *current = (*current).max(next);
        self.durable
            .insert(group.to_owned(), (next, Instant::now()));
        Ok(())
    }

    /// Commits the group's offset at once for this process (`lag`, a new subscription of
    /// the group), and on disk only if the last write of it is `every` old: the rest is
    /// written by a later call or [`Self::flush`]. A crash in between resumes the group
    /// at the offset on disk, before batches it had handled: late, never early (the
    /// sinks' ledgers skip what comes again), and two fsyncs per batch fewer.
    pub(super) fn commit_soon(
        &mut self,
        group: &str,
        next: i64,
        every: std::time::Duration,
    ) -> Result<(), BufferError> {
        let due = self
            .durable
            .get(group)
            .is_none_or(|(_, at)| at.elapsed() >= every);
        if due {
            return self.commit(group, next);
        }
        let current = self.groups.entry(group.to_owned()).or_insert(next);
        *current = (*current).max(next);
        Ok(())
    }

    /// Writes the group's offset if the one on disk is behind it.
    pub(super) fn flush(&mut self, group: &str) -> Result<(), BufferError> {
        match (self.groups.get(group), self.durable.get(group)) {
            (Some(&next), Some(&(on_disk, _))) if next > on_disk => self.commit(group, next),
            (Some(&next), None) => self.commit(group, next),
            _ => Ok(()),
        }
    }

    /// Deletes the segments that every known group has committed past on disk (a group
    /// resumes there after a crash). The active segment always stays.
    pub(super) fn apply_retention(&mut self) -> Result<(), BufferError> {
        let Some(min) = self
            .groups
            .keys()
            .map(|g| self.durable.get(g).map_or(i64::MIN, |(o, _)| *o))
            .min()
        else {
            return Ok(());
        };
        while self.segments.len() > 1 && self.segments[0].next <= min {
            let seg = self.segments.remove(0);
            let path = segment_path(&self.dir, seg.base);
            fs::remove_file(&path).map_err(|e| BufferError::io(&path, e))?;
            tracing::debug!(segment = %path.display(), "deleted a fully consumed segment");
        }
        Ok(())
    }
}

/// Scans the last segment, truncates a torn tail, and opens it for appending.
fn recover_last(dir: &Path, base: i64) -> Result<(Segment, File), BufferError> {
    let path = segment_path(dir, base);
    let io_err = |e| BufferError::io(&path, e);
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .open(&path)
        .map_err(io_err)?;
    let len = file.metadata().map_err(io_err)?.len();
    let mut pos = 0u64;
    let mut count = 0i64;
    loop {
        match read_entry(&mut file, len, pos).map_err(io_err)? {
            RawEntry::Ok(body) => {
                pos += ENTRY_HEADER + body.len() as u64;
                count += 1;
            }
            RawEntry::Eof => break,
            RawEntry::Short | RawEntry::BadCrc(_) => {
                tracing::warn!(
                    segment = %path.display(),
                    valid_bytes = pos,
                    dropped_bytes = len - pos,
                    "truncating a torn tail left by an interrupted write"
                );
                file.set_len(pos).map_err(io_err)?;
                file.sync_all().map_err(io_err)?;
                break;
            }
        }
    }
    Ok((
        Segment {
            base,
            next: base + count,
            bytes: pos,
        },
        file,
    ))
}

/// What a reader got.
pub(super) enum ReadOutcome {
    Entry {
        offset: i64,
        body: Vec<u8>,
    },
    /// An entry that fails its CRC, or a stretch of a segment that cannot be parsed.
    Corrupt {
        offset: i64,
        body: Vec<u8>,
        error: String,
    },
}

/// A reader with its own file handle; it reads only below the high watermark, which the
/// caller checks.
pub(super) struct SegmentReader {
    dir: PathBuf,
    offset: i64,
    current: Option<OpenSegment>,
}

struct OpenSegment {
    file: File,
    len: u64,
    pos: u64,
}

impl SegmentReader {
    pub(super) fn new(dir: PathBuf, offset: i64) -> Self {
        SegmentReader {
            dir,
            offset,
            current: None,
        }
    }

    /// The offset of the next entry to read.
    pub(super) fn offset(&self) -> i64 {
        self.offset
    }

    /// Opens the segment holding `self.offset` and skips to it.
    fn seek(&mut self) -> Result<(), BufferError> {
        let bases = list_segments(&self.dir)?;
        let Some(&base) = bases.iter().rev().find(|&&b| b <= self.offset) else {
            // Retention removed what we wanted: resume at the oldest entry still there.
            self.offset = bases.first().copied().unwrap_or(self.offset);
            return self.seek_exact(self.offset);
        };
        self.seek_exact(base)
    }

    fn seek_exact(&mut self, base: i64) -> Result<(), BufferError> {
        let path = segment_path(&self.dir, base);
        let io_err = |e| BufferError::io(&path, e);
        let mut file = File::open(&path).map_err(io_err)?;
        let len = file.metadata().map_err(io_err)?.len();
        let mut pos = 0;
        for _ in base..self.offset {
            let mut header = [0u8; 8];
            if pos + ENTRY_HEADER > len {
                break;
            }
            file.read_exact(&mut header).map_err(io_err)?;
            let body = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as u64;
            pos += ENTRY_HEADER + body;
            file.seek(SeekFrom::Start(pos)).map_err(io_err)?;
        }
        self.current = Some(OpenSegment { file, len, pos });
        Ok(())
    }

    /// Reads the entry at `self.offset` and advances past it.
    pub(super) fn read_next(&mut self) -> Result<ReadOutcome, BufferError> {
        for _ in 0..2 {
            if self.current.is_none() {
                self.seek()?;
            }
            let seg = self.current.as_mut().expect("segment open");
            // The writer may have appended since we opened the file.
            let dir = &self.dir;
            seg.len = seg
                .file
                .metadata()
                .map_err(|e| BufferError::io(dir, e))?
                .len();
            let offset = self.offset;
            match read_entry(&mut seg.file, seg.len, seg.pos)
                .map_err(|e| BufferError::io(dir, e))?
            {
                RawEntry::Ok(body) => {
                    seg.pos += ENTRY_HEADER + body.len() as u64;
                    self.offset += 1;
                    return Ok(ReadOutcome::Entry { offset, body });
                }
                RawEntry::BadCrc(body) => {
                    seg.pos += ENTRY_HEADER + body.len() as u64;
                    self.offset += 1;
                    return Ok(ReadOutcome::Corrupt {
                        offset,
                        body,
                        error: "entry fails its CRC check (corrupted on disk)".into(),
                    });
                }
                RawEntry::Eof => {
                    // The entry is in the next segment.
                    self.current = None;
                    if list_segments(dir)?.contains(&offset) {
                        self.seek_exact(offset)?;
                    }
                }
                RawEntry::Short => {
                    // Unparseable rest of a segment: skip to the next segment.
                    let next = list_segments(dir)?.into_iter().find(|&b| b > offset);
                    self.current = None;
                    if let Some(next) = next {
                        self.offset = next;
                    }
                    return Ok(ReadOutcome::Corrupt {
                        offset,
                        body: Vec::new(),
                        error: "segment is truncated or has a corrupt entry length; skipped to the next segment".into(),
                    });
                }
            }
        }
        Err(BufferError::io(
            &self.dir,
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "offset {} is below the high watermark but in no segment",
                    self.offset
                ),
            ),
        ))
    }
}
