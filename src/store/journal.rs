//! The inbox journal: an append-only log of webhook batches, made durable with one
//! `fdatasync` per group of waiting requests. It is the only disk write on a webhook's way to
//! its 200, and the inbox's only copy of the events: they stay in their segment until the
//! store has taken each of them (delivered, set aside or found a duplicate), and the store
//! reads them back from there.
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
//! caller may now acknowledge. The group then goes to the applier thread, which takes it with
//! every other group waiting at that moment, calls the `apply` hook once for them (the store
//! indexes the events) and tells each append's [`OnApplied`] its answer, there on the applier
//! thread: nothing waits for it on the webhook's path. Writing the next group and applying the
//! last one overlap. When a segment is full the writer starts the next one and drops the one
//! before the full one from the page cache; the store deletes a segment
//! ([`Segments::delete`]) once none of its events is waiting any more.
//!
//! At start-up [`Journal::recover`] shows the store every record of every segment, oldest
//! first, and [`Journal::start`] opens a new segment after them.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use tokio::sync::{mpsc, oneshot};

/// A segment is closed after this many bytes (about 24,000 typical webhooks): one event still
/// waiting keeps its whole segment on disk, and each segment costs a file and a sled flush when
/// it goes.
const SEGMENT_BYTES: u64 = 8 * 1024 * 1024;

/// How many appends may wait for the writer before callers wait to enqueue.
const QUEUE: usize = 4096;
/// How many written groups may wait for the applier before the writer waits: this bounds the
/// acknowledged events that are not indexed yet.
const APPLY_QUEUE: usize = 64;

const HEADER: usize = 8;
/// Where a record's payload starts, from the record's [`Position`].
pub const PAYLOAD_OFFSET: u64 = HEADER as u64;
const SUFFIX: &str = "journal";

/// Where a record sits: its segment and its byte offset. Ordered as the journal is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

impl Position {
    /// A fixed-size encoding that sorts as positions do.
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

/// What the previous run left in the journal.
pub struct Recovered {
    /// The segments found, oldest first.
    pub segments: Vec<u64>,
    next_segment: u64,
}

impl Recovered {
    /// The segment the writer starts with: newer than every recovered one.
    pub fn next_segment(&self) -> u64 {
        self.next_segment
    }
}

/// Called on the applier thread with durable records, oldest first, after their appends were
/// answered durable; it returns one answer per item. An error stops the applier and with it
/// the writer: the records stay in the journal, and the next start's recovery shows them again.
pub type ApplyHook<T, R> = Box<dyn FnMut(Vec<(Position, T)>) -> Result<Vec<R>, String> + Send>;

/// What a durable append is told once the `apply` hook has taken its record: the hook's answer,
/// or why the record will only be applied at the next start. It is told exactly once, on the
/// applier thread (or wherever the record is dropped when the journal stops), and never for an
/// append that returned an error: that record was not made durable.
pub struct OnApplied<R> {
    tell: Option<Tell<R>>,
}

type Tell<R> = Box<dyn FnOnce(Result<R, Error>) + Send>;

impl<R> OnApplied<R> {
    pub fn new(tell: impl FnOnce(Result<R, Error>) + Send + 'static) -> Self {
        OnApplied {
            tell: Some(Box::new(tell)),
        }
    }

    fn answer(mut self, answer: Result<R, Error>) {
        if let Some(tell) = self.tell.take() {
            tell(answer);
        }
    }

    /// For an append answered with an error: it was never durable, so it is told nothing.
    fn forget(mut self) {
        self.tell = None;
    }
}

impl<R> Drop for OnApplied<R> {
    fn drop(&mut self) {
        if let Some(tell) = self.tell.take() {
            tell(Err(Error::Stopped));
        }
    }
}

struct Append<T, R> {
    record: Vec<u8>,
    item: T,
    durable: oneshot::Sender<Result<(), String>>,
    applied: OnApplied<R>,
}

/// What the writer hands the applier: one durable group, in journal order.
type Written<T, R> = Vec<(Position, T, OnApplied<R>)>;

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
    /// Reads every segment in `dir` (created if missing), one at a time, cutting a torn tail
    /// off the last one, and shows `visit` each record, oldest first.
    pub fn recover<E: From<Error>>(
        dir: &Path,
        mut visit: impl FnMut(Position, &[u8]) -> Result<(), E>,
    ) -> Result<Recovered, E> {
        let segments = segment_numbers(dir)?;
        let mut bytes = Vec::new();
        let last = segments.len().saturating_sub(1);
        for (index, &number) in segments.iter().enumerate() {
            let path = segment_path(dir, number);
            bytes.clear();
            File::open(&path)
                .and_then(|mut file| file.read_to_end(&mut bytes))
                .map_err(io_err(&path))?;
            let valid = visit_records(number, &bytes, &mut visit)?;
            if valid < bytes.len() {
                if index != last {
                    return Err(Error::Corrupt {
                        path,
                        offset: valid as u64,
                    }
                    .into());
                }
                tracing::warn!(
                    path = %path.display(),
                    kept = valid,
                    cut = bytes.len() - valid,
                    "inbox journal ended in a cut-short write (a crash before its 200); the tail was dropped"
                );
                let file = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io_err(&path))?;
                file.set_len(valid as u64).map_err(io_err(&path))?;
                file.sync_all().map_err(io_err(&path))?;
            }
        }
        let next_segment = segments.last().map_or(1, |number| number + 1);
        Ok(Recovered {
            segments,
            next_segment,
        })
    }

    /// Opens a new segment after the recovered ones and starts the writer thread.
    pub fn start(
        dir: &Path,
        recovered: &Recovered,
        apply: ApplyHook<T, R>,
    ) -> Result<Journal<T, R>, Error> {
        Self::start_sized(dir, recovered, apply, SEGMENT_BYTES)
    }

    fn start_sized(
        dir: &Path,
        recovered: &Recovered,
        apply: ApplyHook<T, R>,
        segment_bytes: u64,
    ) -> Result<Journal<T, R>, Error> {
        let segment = Segment::create(dir, recovered.next_segment)?;
        let (appends, queue) = mpsc::channel(QUEUE);
        let (written, to_apply) = std::sync::mpsc::sync_channel(APPLY_QUEUE);
        thread::Builder::new()
            .name("inbox-apply".to_owned())
            .spawn(move || run_applier(to_apply, apply))
            .map_err(io_err(dir))?;
        let writer = Writer {
            dir: dir.to_owned(),
            segment,
            previous: None,
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
    /// queued beside it); `applied` is told when `item`, the record decoded, is applied. A
    /// caller that stops waiting once the record is queued still has it written and applied.
    pub async fn append(
        &self,
        record: Vec<u8>,
        item: T,
        applied: OnApplied<R>,
    ) -> Result<(), Error> {
        let (durable, written) = oneshot::channel();
        // A place first, so that a caller that stops waiting here drops nothing half sent.
        let Ok(place) = self.appends.reserve().await else {
            applied.forget();
            return Err(Error::Stopped);
        };
        place.send(Append {
            record,
            item,
            durable,
            applied,
        });
        match written.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(stopped_by(reason)),
            Err(_) => Err(Error::Stopped),
        }
    }
}

/// The name a replacement journal is written under before it takes the old segments' place.
const REPLACEMENT: &str = "replacement.tmp";

/// Writes `records` as a replacement for the whole journal in `dir`, durably, beside the old
/// segments: [`install_replacement`] puts it in their place. Writing it again overwrites it.
pub fn write_replacement(dir: &Path, records: &[Vec<u8>]) -> Result<(), Error> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join(REPLACEMENT);
    let mut bytes = Vec::new();
    for record in records {
        // Records are webhook events, each capped at 1 MiB by the HTTP server.
        let len = u32::try_from(record.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(record).to_le_bytes());
        bytes.extend_from_slice(record);
    }
    let mut file = File::create(&path).map_err(io_err(&path))?;
    file.write_all(&bytes).map_err(io_err(&path))?;
    file.sync_all().map_err(io_err(&path))?;
    sync_dir(dir)
}

/// When a replacement was written, deletes every segment and makes it the first one; `true`
/// then. Safe to repeat after a crash at any point.
pub fn install_replacement(dir: &Path) -> Result<bool, Error> {
    let path = dir.join(REPLACEMENT);
    if !path.exists() {
        return Ok(false);
    }
    for number in segment_numbers(dir)? {
        let old = segment_path(dir, number);
        fs::remove_file(&old).map_err(io_err(&old))?;
    }
    let first = segment_path(dir, 1);
    fs::rename(&path, &first).map_err(io_err(&first))?;
    sync_dir(dir)?;
    Ok(true)
}

/// Makes the directory's entries (a created, renamed or deleted file) survive a crash.
fn sync_dir(dir: &Path) -> Result<(), Error> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

fn segment_number(path: &Path) -> Option<u64> {
    if path.extension()? != SUFFIX {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}

fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:020}.{SUFFIX}"))
}

/// The segments in `dir` (created if missing), oldest first.
fn segment_numbers(dir: &Path) -> Result<Vec<u64>, Error> {
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err(dir))? {
        if let Some(number) = segment_number(&entry.map_err(io_err(dir))?.path()) {
            segments.push(number);
        }
    }
    segments.sort_unstable();
    Ok(segments)
}

/// Shows `visit` the records of one segment; returns the length of its valid prefix.
fn visit_records<E>(
    segment: u64,
    bytes: &[u8],
    visit: &mut impl FnMut(Position, &[u8]) -> Result<(), E>,
) -> Result<usize, E> {
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
        let position = Position {
            segment,
            offset: at as u64,
        };
        visit(position, payload)?;
        at += HEADER + len;
    }
    Ok(at)
}

/// Reads events back from the segments, and deletes segments nothing waits in any more.
pub struct Segments {
    dir: PathBuf,
    /// Read handles, opened on first use and closed when their segment is deleted.
    open: Mutex<HashMap<u64, Arc<File>>>,
}

impl Segments {
    pub fn new(dir: &Path) -> Segments {
        Segments {
            dir: dir.to_owned(),
            open: Mutex::default(),
        }
    }

    /// The `len` bytes at `offset` of `segment`: written and made durable before, so a short
    /// read is damage.
    pub fn read(&self, segment: u64, offset: u64, len: usize) -> Result<Vec<u8>, Error> {
        let file = self.handle(segment)?;
        let mut bytes = vec![0; len];
        file.read_exact_at(&mut bytes, offset)
            .map_err(io_err(&segment_path(&self.dir, segment)))?;
        Ok(bytes)
    }

    fn handle(&self, segment: u64) -> Result<Arc<File>, Error> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(file) = open.get(&segment) {
            return Ok(file.clone());
        }
        let path = segment_path(&self.dir, segment);
        let file = Arc::new(File::open(&path).map_err(io_err(&path))?);
        open.insert(segment, file.clone());
        Ok(file)
    }

    /// Deletes a segment whose events have all been taken. The caller first makes durable
    /// whatever records their fate.
    pub fn delete(&self, segment: u64) -> Result<(), Error> {
        self.open
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&segment);
        let path = segment_path(&self.dir, segment);
        match fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(io_err(&path)(err)),
            _ => Ok(()),
        }
    }
}

struct Segment {
    number: u64,
    path: PathBuf,
    file: File,
    len: u64,
}

impl Segment {
    fn create(dir: &Path, number: u64) -> Result<Segment, Error> {
        let path = segment_path(dir, number);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .map_err(io_err(&path))?;
        // The new name must survive a crash too, or recovery would miss the segment.
        sync_dir(dir)?;
        Ok(Segment {
            number,
            path,
            file,
            len: 0,
        })
    }
}

/// Drops a written segment's pages from the page cache. Its records are on disk, and the relay
/// reads back from there whatever it still needs, so while Rocket.Chat is down the journal
/// keeps about two segments cached instead of every byte it holds: the kernel gives the next
/// writes the pages just freed rather than growing the cache. On the VM we measure on, a write
/// into pages not used recently took 25 times the CPU (BENCHMARKS.md, "Batched, session 9"). A
/// refusal only leaves the pages to the kernel's own reclaim.
fn uncache(file: &File) {
    if let Err(err) = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed) {
        tracing::debug!(error = %err, "inbox journal: a written segment stays in the page cache");
    }
}

struct Writer<T, R> {
    dir: PathBuf,
    segment: Segment,
    /// The segment written before `segment`, whose pages stay in the page cache.
    previous: Option<File>,
    segment_bytes: u64,
    /// Durable groups on their way to [`run_applier`].
    written: std::sync::mpsc::SyncSender<Written<T, R>>,
}

/// Applies durable groups: every group waiting in one `apply` call, then answers them. It waits
/// for nothing more: indexing a group while the writer syncs the next one uses time the core
/// would spend idle, and under load groups wait here anyway. Stops at the first failure; the
/// writer stops with it when it next hands over a group.
fn run_applier<T, R>(queue: std::sync::mpsc::Receiver<Written<T, R>>, mut apply: ApplyHook<T, R>) {
    while let Ok(first) = queue.recv() {
        let mut items = Vec::new();
        let mut waiting = Vec::new();
        for (position, item, applied) in std::iter::once(first).chain(queue.try_iter()).flatten() {
            items.push((position, item));
            waiting.push(applied);
        }
        let answers = apply(items);
        match answers {
            Ok(answers) => {
                for (applied, answer) in waiting.into_iter().zip(answers) {
                    applied.answer(Ok(answer));
                }
            }
            Err(reason) => {
                tracing::error!(error = %reason, "inbox journal: acknowledged events could not be put in the store; they stay in the journal for the next start");
                for applied in waiting {
                    applied.answer(Err(stopped_by(reason.clone())));
                }
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
                        append.applied.forget();
                        let _ = append.durable.send(Err(reason.clone()));
                    }
                    // Appends queued behind them fail too; later ones see the closed channel.
                    queue.close();
                    while let Ok(append) = queue.try_recv() {
                        append.applied.forget();
                        let _ = append.durable.send(Err(reason.clone()));
                    }
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
        self.written.send(group).map_err(|_| Error::Stopped)?;
        if self.segment.len >= self.segment_bytes {
            let next = Segment::create(&self.dir, self.segment.number + 1)?;
            let full = std::mem::replace(&mut self.segment, next);
            if let Some(older) = self.previous.replace(full.file) {
                uncache(&older);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    type Applied = Arc<Mutex<Vec<(Position, Vec<u8>)>>>;
    type Test = Journal<Vec<u8>, Position>;

    fn recover(dir: &Path) -> (Recovered, Vec<(Position, Vec<u8>)>) {
        let mut records = Vec::new();
        let recovered = Test::recover::<Error>(dir, |position, payload| {
            records.push((position, payload.to_vec()));
            Ok(())
        })
        .unwrap();
        (recovered, records)
    }

    fn start(dir: &Path, segment_bytes: u64) -> (Test, Applied) {
        let (recovered, _) = recover(dir);
        let applied: Applied = Arc::default();
        let sink = applied.clone();
        let journal = Test::start_sized(
            dir,
            &recovered,
            Box::new(move |batch: Vec<(Position, Vec<u8>)>| {
                let positions = batch.iter().map(|(p, _)| *p).collect();
                sink.lock().unwrap().extend(batch);
                Ok(positions)
            }),
            segment_bytes,
        )
        .unwrap();
        (journal, applied)
    }

    /// Appends `record` (as its own item) and waits until it is applied.
    async fn append_applied(journal: &Test, record: Vec<u8>) -> Result<Position, Error> {
        let (tell, told) = oneshot::channel();
        let applied = OnApplied::new(move |answer| {
            let _ = tell.send(answer);
        });
        journal.append(record.clone(), record, applied).await?;
        told.await.unwrap_or(Err(Error::Stopped))
    }

    #[tokio::test]
    async fn appended_records_are_applied_read_back_and_recovered_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, applied) = start(dir.path(), SEGMENT_BYTES);
        let mut waiting = Vec::new();
        for i in 0..50u32 {
            let journal = journal.clone();
            waiting.push(tokio::spawn(async move {
                append_applied(&journal, format!("record {i}").into_bytes()).await
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
        let segments = Segments::new(dir.path());
        for (position, payload) in &applied {
            let read = segments
                .read(
                    position.segment,
                    position.offset + PAYLOAD_OFFSET,
                    payload.len(),
                )
                .unwrap();
            assert_eq!(&read, payload);
        }

        let (recovered, records) = recover(dir.path());
        assert_eq!(records, applied);
        assert_eq!(recovered.segments, vec![1]);
        assert_eq!(recovered.next_segment(), 2);
    }

    #[test]
    fn a_torn_tail_is_cut_and_earlier_records_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = segment_path(dir.path(), 7);
        let mut bytes = Vec::new();
        for payload in [b"one".as_slice(), b"two"] {
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
            bytes.extend_from_slice(payload);
        }
        let whole = bytes.len();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        fs::write(&path, &bytes).unwrap();
        let (recovered, records) = recover(dir.path());
        let payloads: Vec<_> = records.iter().map(|(_, p)| p.clone()).collect();
        assert_eq!(payloads, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(recovered.next_segment(), 8);
        // Cut off, so that the segment, no longer the last once a new one starts, reads clean.
        assert_eq!(fs::metadata(&path).unwrap().len(), whole as u64);
    }

    #[test]
    fn damage_before_the_last_segment_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 1), [1, 0, 0, 0, 0]).unwrap();
        fs::write(segment_path(dir.path(), 2), []).unwrap();
        assert!(matches!(
            Test::recover::<Error>(dir.path(), |_, _| Ok(())),
            Err(Error::Corrupt { .. })
        ));
    }

    #[tokio::test]
    async fn full_segments_stay_until_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, applied) = start(dir.path(), 64);
        for i in 0..10u32 {
            append_applied(&journal, vec![i as u8; 40]).await.unwrap();
        }
        drop(journal);
        // Read back after the writer moved on and dropped the older segments from the cache.
        let segments = Segments::new(dir.path());
        for (position, payload) in applied.lock().unwrap().iter() {
            let offset = position.offset + PAYLOAD_OFFSET;
            let read = segments.read(position.segment, offset, payload.len());
            assert_eq!(&read.unwrap(), payload);
        }
        let (recovered, records) = recover(dir.path());
        assert_eq!(records.len(), 10, "every record is still there");
        assert_eq!(recovered.segments.len(), 6, "five full and the live one");
        for &segment in &recovered.segments[..5] {
            segments.delete(segment).unwrap();
        }
        let (_, records) = recover(dir.path());
        assert_eq!(records.len(), 0);
    }

    /// How many of the file's pages are in the page cache.
    fn cached_pages(path: &Path) -> usize {
        use std::os::fd::AsRawFd;
        let file = File::open(path).unwrap();
        let len = file.metadata().unwrap().len() as usize;
        if len == 0 {
            return 0;
        }
        // SAFETY: `sysconf` reads a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap();
        let mut resident = vec![0u8; len.div_ceil(page)];
        // SAFETY: maps `len` bytes of a file kept open here, read-only, and unmaps them before
        // returning; `mincore` writes one byte per page of that mapping into `resident`, which
        // has exactly that many.
        unsafe {
            let mapped = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            );
            assert_ne!(mapped, libc::MAP_FAILED);
            assert_eq!(libc::mincore(mapped, len, resident.as_mut_ptr()), 0);
            libc::munmap(mapped, len);
        }
        resident.iter().filter(|&&byte| byte & 1 == 1).count()
    }

    #[tokio::test]
    async fn a_segment_leaves_the_page_cache_once_the_writer_is_two_segments_past_it() {
        let dir = tempfile::tempdir().unwrap();
        // Where the file system keeps a synced file's pages whatever it is advised (tmpfs is
        // the page cache), there is nothing to check.
        let probe = dir.path().join("probe");
        fs::write(&probe, vec![1; 64 << 10]).unwrap();
        let probed = File::open(&probe).unwrap();
        probed.sync_all().unwrap();
        uncache(&probed);
        if cached_pages(&probe) > 0 {
            eprintln!("skipped: this file system keeps written pages cached");
            return;
        }
        let (journal, _) = start(dir.path(), 16 << 10);
        for i in 0..24u8 {
            append_applied(&journal, vec![i + 1; 4096]).await.unwrap();
        }
        drop(journal);
        let segments = segment_numbers(dir.path()).unwrap();
        assert!(segments.len() >= 5, "{segments:?}");
        let cached: Vec<_> = segments
            .iter()
            .map(|&segment| cached_pages(&segment_path(dir.path(), segment)))
            .collect();
        let (behind, recent) = cached.split_at(cached.len() - 3);
        assert!(behind.iter().all(|&pages| pages == 0), "{cached:?}");
        assert!(recent.iter().any(|&pages| pages > 0), "{cached:?}");
    }

    #[tokio::test]
    async fn an_append_that_fails_is_told_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (journal, _) = start(dir.path(), 64);
        // Where the next segment would go: once the first is full the writer cannot go on.
        fs::create_dir(segment_path(dir.path(), 2)).unwrap();
        append_applied(&journal, vec![1; 80])
            .await
            .expect("the first append is durable and applied");
        let told = Arc::new(Mutex::new(0));
        for i in 0..3u8 {
            let count = told.clone();
            let applied = OnApplied::new(move |_| *count.lock().unwrap() += 1);
            let appended = journal.append(vec![i; 8], vec![i; 8], applied).await;
            assert!(appended.is_err(), "the writer has stopped");
        }
        assert_eq!(*told.lock().unwrap(), 0, "no callback for a refused append");
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
