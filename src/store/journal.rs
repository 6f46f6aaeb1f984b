//! The inbox journal: an append-only log of webhook batches, made durable with one
//! `fdatasync` per group of waiting requests. It is the only disk write on a webhook's way to
//! its 200; sled receives the same events right after, off that path.
//!
//! # Format
//! Segment files `NNNNNNNNNNNNNNNNNNNN.journal` (a decimal sequence, zero-padded so names sort
//! in order) hold records `len: u32 LE | crc32(payload): u32 LE | payload`. A record whose
//! header or checksum does not match is where a crash cut the last write short: recovery stops
//! there and the tail is cut off. Only the last segment may end that way; a bad record earlier
//! is corruption and an error.
//!
//! # Life of a record
//! [`Journal::append`] hands the record to the writer thread, which takes every request
//! queued at that moment, writes them with one `write`, `fdatasync`s and answers them all: the
//! caller may now acknowledge. The batch then goes to the applier thread, which takes every
//! batch waiting, calls the `apply` hook once for them (the store puts the events in sled and
//! remembers the last [`Position`] in the same sled transaction) and answers each append's
//! [`Pending`]. Writing the next group and applying the last one overlap. When a segment is
//! full the writer starts the next one and sends the full one down the same line: the applier
//! passes it to the checkpoint thread only after applying every record before it, and that
//! thread calls `checkpoint` (a sled flush) and then deletes the segment: its records are in
//! sled, durably.
//!
//! At start-up [`Journal::recover`] returns the records the last run left; the store skips
//! those at or before the last applied position it kept in sled, applies the rest, and only
//! then [`Journal::start`]s a new segment, deleting the recovered ones once they are applied
//! and flushed.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::thread;

use tokio::sync::{mpsc, oneshot};

/// A segment is closed, checkpointed and deleted after this many bytes (about 24,000 typical
/// webhooks): small enough that recovery is quick, large enough that the sled flush a
/// checkpoint costs is rare.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// How many appends may wait for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// How many written groups may wait for the applier before the writer waits: this bounds the
/// acknowledged events that are not in sled yet.
const APPLY_QUEUE: usize = 64;
/// How long the applier gathers groups after the first before one `apply`: each sled
/// transaction has a fixed cost (and sled's I/O threads a wake-up), which at a steady 1,000
/// small webhooks a second was most of the gateway's CPU. The wait is off the webhooks' path;
/// it only delays the hand-over to the relay.
const APPLY_GATHER: std::time::Duration = std::time::Duration::from_millis(5);

const HEADER: usize = 8;
const SUFFIX: &str = "journal";

/// Where a record sits: its segment and its byte offset. Ordered as the journal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

impl Position {
    /// The fixed-size encoding kept in sled beside the events it covers.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut out = [0; 16];
        out[..8].copy_from_slice(&self.segment.to_be_bytes());
        out[8..].copy_from_slice(&self.offset.to_be_bytes());
        out
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<Position> {
        let (segment, offset) = bytes.split_first_chunk::<8>()?;
        let offset: [u8; 8] = offset.try_into().ok()?;
        Some(Position {
            segment: u64::from_be_bytes(*segment),
            offset: u64::from_be_bytes(offset),
        })
    }
}

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("inbox journal {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error(
        "inbox journal {path} is damaged at byte {offset} (not its last segment, so not a cut-short \
         write); move the file aside to start, and report it"
    )]
    Corrupt { path: PathBuf, offset: u64 },
    #[error("the inbox journal writer stopped after an earlier error; restart the gateway")]
    Stopped,
}

impl Error {
    /// The underlying I/O error, for the store's disk-full classification.
    pub fn io(&self) -> Option<&io::Error> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn io_err(path: &Path) -> impl Fn(io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_owned(),
        source,
    }
}

/// What the previous run left in the journal, oldest first.
pub struct Recovered {
    pub records: Vec<(Position, Vec<u8>)>,
    segments: Vec<PathBuf>,
    next_segment: u64,
}

/// Called on the applier thread with durable records, oldest first, after their appends were
/// answered durable; it returns one answer per item. An error stops the applier and with it
/// the writer: what is in the journal but not applied is applied by the next start's recovery.
pub type ApplyHook<T, R> = Box<dyn FnMut(Vec<(Position, T)>) -> Result<Vec<R>, String> + Send>;
/// Called on the writer thread before older segments are deleted: it must make every applied
/// batch durable elsewhere (a sled flush).
pub type CheckpointHook = Box<dyn FnMut() -> Result<(), String> + Send>;

/// Where an append learns its `apply` answer.
type AppliedTo<R> = oneshot::Sender<Result<R, String>>;

struct Append<T, R> {
    record: Vec<u8>,
    item: T,
    durable: oneshot::Sender<Result<(), String>>,
    applied: AppliedTo<R>,
}

/// What the writer hands the applier, in journal order.
enum Written<T, R> {
    Group(Vec<(Position, T, AppliedTo<R>)>),
    /// A segment every record of which was sent before this.
    SegmentFull(PathBuf),
}

/// An append that is durable and on its way into sled.
pub struct Pending<R> {
    applied: oneshot::Receiver<Result<R, String>>,
}

impl<R> Pending<R> {
    /// Waits until the `apply` hook has taken the record, and returns its answer.
    pub async fn applied(self) -> Result<R, Error> {
        match self.applied.await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(reason)) => Err(stopped_by(reason)),
            Err(_) => Err(Error::Stopped),
        }
    }
}

fn stopped_by(reason: String) -> Error {
    Error::Io {
        path: PathBuf::from("inbox journal"),
        source: io::Error::other(reason),
    }
}

/// The handle to the writer thread. Dropping every clone lets the thread finish what is queued
/// and exit.
pub struct Journal<T, R> {
    appends: mpsc::Sender<Append<T, R>>,
}

impl<T, R> Clone for Journal<T, R> {
    fn clone(&self) -> Self {
        Journal {
            appends: self.appends.clone(),
        }
    }
}

impl<T: Send + 'static, R: Send + 'static> Journal<T, R> {
    /// Reads every segment in `dir` (created if missing), cutting a torn tail off the last one.
    pub fn recover(dir: &Path) -> Result<Recovered, Error> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let mut segments = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let path = entry.map_err(io_err(dir))?.path();
            if let Some(seq) = segment_number(&path) {
                segments.push((seq, path));
            }
        }
        segments.sort();
        let mut records = Vec::new();
        let last = segments.len().saturating_sub(1);
        for (index, (seq, path)) in segments.iter().enumerate() {
            let mut bytes = Vec::new();
            File::open(path)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .map_err(io_err(path))?;
            let (found, valid) = read_records(*seq, &bytes);
            if valid < bytes.len() {
                if index != last {
                    return Err(Error::Corrupt {
                        path: path.clone(),
                        offset: valid as u64,
                    });
                }
                tracing::warn!(
                    path = %path.display(),
                    kept = valid,
                    cut = bytes.len() - valid,
                    "inbox journal ended in a cut-short write (a crash before its 200); the tail was dropped"
                );
            }
            records.extend(found);
        }
        let next_segment = segments.last().map_or(1, |(seq, _)| seq + 1);
        Ok(Recovered {
            records,
            segments: segments.into_iter().map(|(_, path)| path).collect(),
            next_segment,
        })
    }

    /// Opens a new segment and starts the writer thread. The recovered segments are deleted
    /// after `checkpoint` succeeds once, so the caller must have applied their records first.
    pub fn start(
        dir: &Path,
        recovered: Recovered,
        apply: ApplyHook<T, R>,
        checkpoint: CheckpointHook,
    ) -> Result<Journal<T, R>, Error> {
        Self::start_sized(dir, recovered, apply, checkpoint, SEGMENT_BYTES)
    }

    fn start_sized(
        dir: &Path,
        recovered: Recovered,
        apply: ApplyHook<T, R>,
        mut checkpoint: CheckpointHook,
        segment_bytes: u64,
    ) -> Result<Journal<T, R>, Error> {
        checkpoint().map_err(|reason| Error::Io {
            path: dir.to_owned(),
            source: io::Error::other(reason),
        })?;
        for path in &recovered.segments {
            fs::remove_file(path).map_err(io_err(path))?;
        }
        let segment = Segment::create(dir, recovered.next_segment)?;
        let (appends, queue) = mpsc::channel(QUEUE);
        let (full_segments, to_checkpoint) = std::sync::mpsc::sync_channel(FULL_SEGMENTS);
        let (written, to_apply) = std::sync::mpsc::sync_channel(APPLY_QUEUE);
        thread::Builder::new()
            .name("inbox-checkpoint".to_owned())
            .spawn(move || run_checkpoints(to_checkpoint, checkpoint))
            .map_err(io_err(dir))?;
        thread::Builder::new()
            .name("inbox-apply".to_owned())
            .spawn(move || run_applier(to_apply, apply, full_segments))
            .map_err(io_err(dir))?;
        let writer = Writer {
            dir: dir.to_owned(),
            segment,
            segment_bytes,
            written,
        };
        thread::Builder::new()
            .name("inbox-journal".to_owned())
            .spawn(move || writer.run(queue))
            .map_err(io_err(dir))?;
        Ok(Journal { appends })
    }

    /// Returns once `record` is on disk (its own `fdatasync` or one shared with the appends
    /// queued beside it); the [`Pending`] tells when `item`, the record decoded, is applied.
    pub async fn append(&self, record: Vec<u8>, item: T) -> Result<Pending<R>, Error> {
        let (durable, written) = oneshot::channel();
        let (applied, pending) = oneshot::channel();
        self.appends
            .send(Append {
                record,
                item,
                durable,
                applied,
            })
            .await
            .map_err(|_| Error::Stopped)?;
        match written.await {
            Ok(Ok(())) => Ok(Pending { applied: pending }),
            Ok(Err(reason)) => Err(stopped_by(reason)),
            Err(_) => Err(Error::Stopped),
        }
    }
}

fn segment_number(path: &Path) -> Option<u64> {
    if path.extension()? != SUFFIX {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

/// The records of one segment and the length of its valid prefix.
fn read_records(segment: u64, bytes: &[u8]) -> (Vec<(Position, Vec<u8>)>, usize) {
    let mut records = Vec::new();
    let mut at = 0;
    while let Some(header) = bytes.get(at..at + HEADER) {
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let Some(payload) = bytes.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        if crc32fast::hash(payload) != crc {
            break;
        }
        records.push((
            Position {
                segment,
                offset: at as u64,
            },
            payload.to_vec(),
        ));
        at += HEADER + len;
    }
    (records, at)
}

struct Segment {
    number: u64,
    path: PathBuf,
    file: File,
    len: u64,
}

impl Segment {
    fn create(dir: &Path, number: u64) -> Result<Segment, Error> {
        let path = dir.join(format!("{number:020}.{SUFFIX}"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // The new name must survive a crash too, or recovery would miss the segment.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(dir))?;
        Ok(Segment {
            number,
            path,
            file,
            len: 0,
        })
    }
}

struct Writer<T, R> {
    dir: PathBuf,
    segment: Segment,
    segment_bytes: u64,
    /// Durable groups and full segments on their way to [`run_applier`].
    written: std::sync::mpsc::SyncSender<Written<T, R>>,
}

/// How many full segments may wait for their checkpoint before the writer waits (each holds
/// about [`SEGMENT_BYTES`]).
const FULL_SEGMENTS: usize = 4;

/// Checkpoints full segments: one `checkpoint` for every segment waiting, then deletes them.
/// Stops at the first failure, leaving the segments for the next start's recovery.
fn run_checkpoints(full: std::sync::mpsc::Receiver<PathBuf>, mut checkpoint: CheckpointHook) {
    while let Ok(first) = full.recv() {
        let mut paths = vec![first];
        paths.extend(full.try_iter());
        if let Err(reason) = checkpoint() {
            tracing::error!(error = %reason, "inbox journal checkpoint failed; its segments stay for the next start");
            return;
        }
        for path in paths {
            if let Err(err) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %err, "cannot delete a checkpointed journal segment");
            }
        }
    }
}

/// Applies durable groups: every group waiting in one `apply` call, then answers them, then
/// passes on the full segments that came after them. Stops at the first failure; the writer
/// stops with it when it next hands over a group.
fn run_applier<T, R>(
    queue: std::sync::mpsc::Receiver<Written<T, R>>,
    mut apply: ApplyHook<T, R>,
    full_segments: std::sync::mpsc::SyncSender<PathBuf>,
) {
    while let Ok(first) = queue.recv() {
        let mut items = Vec::new();
        let mut waiting = Vec::new();
        let mut full = Vec::new();
        let until = std::time::Instant::now() + APPLY_GATHER;
        let gathered = std::iter::from_fn(|| {
            let left = until.saturating_duration_since(std::time::Instant::now());
            queue.recv_timeout(left).ok()
        });
        for written in std::iter::once(first).chain(gathered) {
            match written {
                Written::Group(group) => {
                    for (position, item, applied) in group {
                        items.push((position, item));
                        waiting.push(applied);
                    }
                }
                Written::SegmentFull(path) => full.push(path),
            }
        }
        let answers = if items.is_empty() {
            Ok(Vec::new())
        } else {
            apply(items)
        };
        match answers {
            Ok(answers) => {
                for (applied, answer) in waiting.into_iter().zip(answers) {
                    // A caller that stopped waiting needs no answer.
                    let _ = applied.send(Ok(answer));
                }
            }
            Err(reason) => {
                tracing::error!(error = %reason, "inbox journal: acknowledged events could not be put in the store; they stay in the journal for the next start");
                for applied in waiting {
                    let _ = applied.send(Err(reason.clone()));
                }
                return;
            }
        }
        for path in full {
            if full_segments.send(path).is_err() {
                return;
            }
        }
    }
}

impl<T, R> Writer<T, R> {
    fn run(mut self, mut queue: mpsc::Receiver<Append<T, R>>) {
        let mut buffer = Vec::new();
        let mut batch = Vec::new();
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while let Ok(next) = queue.try_recv() {
                batch.push(next);
            }
            match self.write(&mut buffer, &mut batch) {
                Ok(()) => {}
                Err(err) => {
                    let reason = err.to_string();
                    tracing::error!(error = %reason, "inbox journal write failed; webhooks are answered 503 until the gateway restarts");
                    for append in batch.drain(..) {
                        let _ = append.durable.send(Err(reason.clone()));
                    }
                    // Later appends see the closed channel and report the writer stopped.
                    return;
                }
            }
        }
    }

    /// Writes and syncs one batch, answers its appends, and hands it to the applier.
    fn write(&mut self, buffer: &mut Vec<u8>, batch: &mut Vec<Append<T, R>>) -> Result<(), Error> {
        buffer.clear();
        let mut positions = Vec::with_capacity(batch.len());
        for append in batch.iter() {
            positions.push(Position {
                segment: self.segment.number,
                offset: self.segment.len + buffer.len() as u64,
            });
            // Records are webhook bodies, capped at 1 MiB by the HTTP server.
            let len = u32::try_from(append.record.len()).unwrap_or(u32::MAX);
            buffer.extend_from_slice(&len.to_le_bytes());
            buffer.extend_from_slice(&crc32fast::hash(&append.record).to_le_bytes());
            buffer.extend_from_slice(&append.record);
        }
        let path = &self.segment.path;
        self.segment.file.write_all(buffer).map_err(io_err(path))?;
        self.segment.file.sync_data().map_err(io_err(path))?;
        self.segment.len += buffer.len() as u64;
        let mut group = Vec::with_capacity(batch.len());
        for (append, position) in batch.drain(..).zip(positions) {
            // A caller that gave up (its connection closed) needs no answer.
            let _ = append.durable.send(Ok(()));
            group.push((position, append.item, append.applied));
        }
        self.written
            .send(Written::Group(group))
            .map_err(|_| Error::Stopped)?;
        if self.segment.len >= self.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    /// Starts a new segment and hands the full one to the checkpoint thread.
    fn rotate(&mut self) -> Result<(), Error> {
        let next = Segment::create(&self.dir, self.segment.number + 1)?;
        let full = std::mem::replace(&mut self.segment, next);
        self.written
            .send(Written::SegmentFull(full.path))
            .map_err(|_| Error::Stopped)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    type Applied = Arc<Mutex<Vec<(Position, Vec<u8>)>>>;
    type Test = Journal<Vec<u8>, Position>;

    fn start(dir: &Path) -> (Test, Applied, Vec<(Position, Vec<u8>)>) {
        let recovered = Test::recover(dir).unwrap();
        let old = recovered.records.clone();
        let applied: Applied = Arc::default();
        let sink = applied.clone();
        let journal = Test::start(
            dir,
            recovered,
            Box::new(move |batch: Vec<(Position, Vec<u8>)>| {
                let positions = batch.iter().map(|(p, _)| *p).collect();
                sink.lock().unwrap().extend(batch);
                Ok(positions)
            }),
            Box::new(|| Ok(())),
        )
        .unwrap();
        (journal, applied, old)
    }

    #[tokio::test]
    async fn appended_records_are_applied_and_recovered_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, applied, old) = start(dir.path());
        assert!(old.is_empty());
        let mut waiting = Vec::new();
        for i in 0..50u32 {
            let journal = journal.clone();
            waiting.push(tokio::spawn(async move {
                let record = format!("record {i}").into_bytes();
                journal
                    .append(record.clone(), record)
                    .await?
                    .applied()
                    .await
            }));
        }
        for task in waiting {
            task.await.unwrap().unwrap();
        }
        drop(journal);
        let applied = applied.lock().unwrap().clone();
        assert_eq!(applied.len(), 50);
        assert!(
            applied.windows(2).all(|w| w[0].0 < w[1].0),
            "positions grow"
        );

        // Nothing was checkpointed past the live segment, so a restart finds all 50 again.
        let recovered = Test::recover(dir.path()).unwrap();
        assert_eq!(recovered.records, applied);
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(format!("{:020}.{SUFFIX}", 7));
        let mut bytes = Vec::new();
        for payload in [b"one".as_slice(), b"two"] {
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        let whole = bytes.len();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        fs::write(&path, &bytes).unwrap();
        let recovered = Test::recover(dir.path()).unwrap();
        let payloads: Vec<_> = recovered.records.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(payloads, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(recovered.next_segment, 8);
        assert!(whole < bytes.len());
    }

    #[test]
    fn damage_before_the_last_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join(format!("{:020}.{SUFFIX}", 1)),
            [1, 0, 0, 0, 0],
        )
        .unwrap();
        fs::write(dir.path().join(format!("{:020}.{SUFFIX}", 2)), []).unwrap();
        assert!(matches!(
            Test::recover(dir.path()),
            Err(Error::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn a_full_segment_is_deleted_only_after_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let checkpoints = Arc::new(Mutex::new(0));
        let counter = checkpoints.clone();
        let journal = Test::start_sized(
            dir.path(),
            Test::recover(dir.path()).unwrap(),
            Box::new(|batch: Vec<(Position, Vec<u8>)>| {
                Ok(batch.into_iter().map(|(p, _)| p).collect())
            }),
            Box::new(move || {
                *counter.lock().unwrap() += 1;
                Ok(())
            }),
            64,
        )
        .unwrap();
        for i in 0..10u32 {
            let pending = journal.append(vec![i as u8; 40], vec![]).await.unwrap();
            pending.applied().await.unwrap();
        }
        drop(journal);
        // One checkpoint at start, then at least one for the five full segments (the checkpoint
        // thread takes every segment waiting at once). It runs after the appends were answered:
        // give it a moment.
        for _ in 0..500 {
            if fs::read_dir(dir.path()).unwrap().count() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "only the live segment stays");
        let done = *checkpoints.lock().unwrap();
        assert!((2..=6).contains(&done), "{done} checkpoints");
    }

    #[test]
    fn positions_round_trip() {
        let position = Position {
            segment: 3,
            offset: 1 << 40,
        };
        assert_eq!(Position::from_bytes(&position.to_bytes()), Some(position));
    }
}
