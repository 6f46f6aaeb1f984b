//! The durable state of the gateway, kept in sled (`docs/contract.md` §6), and the inbox, kept
//! in its own journal (`journal`, indexed by `inbox`).
//!
//! Architecture invariant: only this module touches sled. The rest of the crate sees typed
//! records and opaque queue ids, so the engine could be replaced without touching it.
//!
//! # Durability
//! A webhook's events are durable when [`Store::ingest`] returns: the journal `fdatasync`ed
//! them. Other writes land in sled's in-memory log and reach the disk when sled flushes: on its
//! own every 500 ms, or when [`Store::sync`] asks. Anything else that must survive `kill -9`
//! before it is acknowledged (an agent reply) is written first and then `sync()`ed.
//! `sync()` is a group commit: one flusher task takes every request waiting at that moment
//! and answers them all with one `flush()`, run in `spawn_blocking` because it fsyncs. A
//! request that arrives while a flush is running waits for the next one, because its writes
//! may postdate the running flush. sled's own `flush_async()` is never used: it deadlocks with
//! several concurrent waiters (sled#1308).
//!
//! # Tokens
//! Page and user tokens are sealed with a [`TokenKey`] kept outside the store directory
//! before they are serialized; no token byte is written in clear.
//!
//! # Format
//! Every value is JSON with a version field `"v"`, and the `meta` tree holds the schema
//! version of the whole store. [`Store::open`] refuses a store from a newer build and migrates
//! an older one. A value that does not decode is an error naming its tree and key, never
//! skipped.

mod crypto;
mod inbox;
mod journal;
mod keys;
mod records;
mod seen_filter;

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicIsize, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use tokio::sync::{mpsc, oneshot};

pub use crypto::TokenKey;
pub use keys::QueueId;
pub use records::{
    AgentFile, Arriving, Conversation, DeletionRequest, Department, EnqueueOutcome, Grant,
    InboundEvent, OAuthState, OutboundItem, Outgoing, Page, PageReaction, PageStatus, Payload,
    Platform, Posted, SetAside, TextLimit,
};

use crate::ids::{ConversationKey, ConversationMap, MessageId, PageId, RoomId};
use journal::Journal;
use keys::Tree;
use records::At;

/// The schema version this build writes. Bump it with a new arm in [`Store::migrate`].
/// Version 2 keeps the inbox in the journal's segments instead of sled's `inbox` tree.
pub const SCHEMA_VERSION: u64 = 2;

const SCHEMA_KEY: &[u8] = b"schema_version";
/// Schema 1 only: the last inbox-journal record whose events were in sled's `inbox` tree.
const JOURNAL_APPLIED_KEY: &[u8] = b"inbox_journal_applied";
/// The journal's folder inside the store's.
const JOURNAL_DIR: &str = "inbox-journal";

/// How many `sync()` requests may queue for the flusher before callers wait to enqueue.
const FLUSH_QUEUE: usize = 1024;

/// Errors of the store. Messages are lowercase and say what to do where a person must act.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("cannot open the store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("the store at {path} is in use by another process; stop the other omni-gateway first")]
    Locked { path: PathBuf },
    #[error("store {op} failed: {source}")]
    Sled {
        op: &'static str,
        source: sled::Error,
    },
    #[error("cannot encode a value for tree {tree}: {reason}")]
    Encode { tree: &'static str, reason: String },
    #[error("cannot decode {tree}/{key}: {reason}")]
    Decode {
        tree: &'static str,
        key: String,
        reason: String,
    },
    #[error(
        "cannot decrypt the token in {tree}/{key}: the token key is not the one the store was \
         written with; restore the original key file"
    )]
    Decrypt { tree: &'static str, key: String },
    #[error(
        "the store at {path} has schema version {found} but this build supports up to \
         {supported}; run a newer omni-gateway or restore a backup"
    )]
    NewerSchema {
        path: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error("token key file {path}: {reason}")]
    TokenKey { path: PathBuf, reason: String },
    #[error("token key file {path}: {source}")]
    TokenKeyIo { path: PathBuf, source: io::Error },
    #[error("store sync failed: {0}")]
    Sync(String),
    #[error(transparent)]
    Journal(#[from] journal::Error),
}

impl Error {
    /// The disk is full or read-only, or a file hit the process's size limit: the webhook answers 503 so Meta retries later, rather
    /// than 500.
    pub fn is_disk_full(&self) -> bool {
        let io = match self {
            Error::Open {
                source: sled::Error::Io(err),
                ..
            }
            | Error::Sled {
                source: sled::Error::Io(err),
                ..
            } => err,
            Error::TokenKeyIo { source, .. } => source,
            Error::Journal(err) => match err.io() {
                Some(io) => io,
                None => return false,
            },
            _ => return false,
        };
        const EFBIG: i32 = 27;
        const ENOSPC: i32 = 28;
        const EROFS: i32 = 30;
        const EDQUOT: i32 = 122;
        matches!(
            io.kind(),
            io::ErrorKind::StorageFull
                | io::ErrorKind::ReadOnlyFilesystem
                | io::ErrorKind::QuotaExceeded
                | io::ErrorKind::FileTooLarge
        ) || matches!(io.raw_os_error(), Some(EFBIG | ENOSPC | EROFS | EDQUOT))
    }
}

pub type Result<T> = std::result::Result<T, Error>;

fn sled_err(op: &'static str) -> impl Fn(sled::Error) -> Error {
    move |source| Error::Sled { op, source }
}

fn tx_err(op: &'static str) -> impl Fn(TransactionError<Error>) -> Error {
    move |err| match err {
        TransactionError::Abort(err) => err,
        TransactionError::Storage(source) => Error::Sled { op, source },
    }
}

/// The outcome of one shared flush, handed to every request it served.
type FlushResult = std::result::Result<(), String>;

/// The handle to the store. Cheap to clone; every clone shares one database.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    path: PathBuf,
    key: TokenKey,
    meta: sled::Tree,
    pages: sled::Tree,
    grants: sled::Tree,
    /// Data deletion requests from Meta, by confirmation code.
    deletions: sled::Tree,
    oauth_states: sled::Tree,
    conversations: sled::Tree,
    /// Secondary index: Livechat room id → conversation, written in the same transaction as
    /// `conversations`.
    rooms: sled::Tree,
    /// Schema 1's inbox, emptied into the journal by the migration to schema 2.
    legacy_inbox: sled::Tree,
    /// Journal positions of inbox events taken out (see [`Tree::Taken`]).
    taken: sled::Tree,
    /// `(page, mid)` of events the inbox took: delivered or set aside. A webhook event found
    /// here (or waiting in the inbox) is a duplicate. Also Meta's echoes of the gateway's sends.
    seen: sled::Tree,
    outbox: sled::Tree,
    relayed: sled::Tree,
    /// Send API `message_id` → the agent's Rocket.Chat message it carried.
    sent: sled::Tree,
    /// A customer's current reaction per message: page and `mid` → the Rocket.Chat emoji name.
    reactions: sled::Tree,
    /// The customers' messages as posted in rooms: Rocket.Chat message id → page and `mid`.
    posted: sled::Tree,
    /// The page's reaction on a customer's message, as last queued: Rocket.Chat message id →
    /// [`PageReaction`].
    page_reactions: sled::Tree,
    /// Inbox events Rocket.Chat refused for good, under their inbox keys, until an admin retries
    /// them.
    set_aside: sled::Tree,
    /// Serialises setting events aside, so "the page's first of this kind" is told once.
    set_aside_turn: Mutex<()>,
    /// The outbox's entry count, kept beside the tree because sled's `len()` walks the whole
    /// tree. Signed because a removal may be counted before the enqueue that preceded it.
    outbox_len: AtomicIsize,
    flushes: AtomicU64,
    /// Set by the first failed flush; see [`Store::has_failed`].
    failed: AtomicBool,
    /// The group-commit queue, created by the first `sync()` (it needs a runtime) and again if
    /// its runtime went away.
    flusher: Mutex<Option<mpsc::Sender<oneshot::Sender<FlushResult>>>>,
    /// Where webhooks' events are made durable before their 200, and where the inbox keeps
    /// them; set once at open.
    journal: std::sync::OnceLock<Journal<Vec<PreparedInbound>, EnqueueOutcome>>,
    /// The inbox: which events wait, in which order, where in the journal (see [`inbox`]).
    inbox: Mutex<inbox::Index>,
    segments: journal::Segments,
    /// Segments the inbox no longer needs, on their way to deletion (see [`run_retirer`]).
    retire: std::sync::OnceLock<std::sync::mpsc::Sender<u32>>,
    /// Conversations with a webhook between parse and inbox: see [`Queue::arriving`].
    arriving: Mutex<ConversationMap<usize>>,
    /// Every page read so far, decoded and its token opened: each webhook and each relayed
    /// event reads its page. Page writes go through the same lock, so it never goes stale.
    page_cache: Mutex<HashMap<PageId, Page>>,
    /// Which dedupe hashes may have a `seen` mark; locked after `inbox` when both are.
    seen_filter: Mutex<seen_filter::SeenFilter>,
}

/// Counts a webhook's conversations as arriving while it is on its way into the inbox.
struct Arrival {
    inner: Arc<Inner>,
    keys: Vec<ConversationKey>,
}

impl Arrival {
    fn new(inner: &Arc<Inner>, events: &[Arriving<'_>]) -> Self {
        let mut keys: Vec<ConversationKey> = events.iter().map(|e| e.key.clone()).collect();
        keys.sort();
        keys.dedup();
        let mut counts = inner
            .arriving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for key in &keys {
            // The key is copied only when no other webhook of the conversation is arriving.
            match counts.get_mut(key) {
                Some(count) => *count += 1,
                None => {
                    counts.insert(key.clone(), 1);
                }
            }
        }
        Arrival {
            inner: inner.clone(),
            keys,
        }
    }

    /// No longer arriving: returns the conversations, each once.
    fn end(mut self) -> Vec<ConversationKey> {
        self.uncount();
        std::mem::take(&mut self.keys)
    }

    fn uncount(&mut self) {
        let mut counts = self
            .inner
            .arriving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for key in &self.keys {
            if let Some(count) = counts.get_mut(key) {
                *count -= 1;
                if *count == 0 {
                    counts.remove(key);
                }
            }
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.uncount();
    }
}

/// What the index needs of an event the journal carries: the event itself stays in the record.
struct PreparedInbound {
    key: ConversationKey,
    timestamp_ms: u64,
    dedupe: Option<Dedupe>,
    /// The length of its encoding in the record.
    len: usize,
}

/// An event's dedupe key, with its hash.
struct Dedupe {
    key: String,
    hash: u64,
}

impl Dedupe {
    fn new(page: &PageId, key: String) -> Option<Dedupe> {
        Some(Dedupe {
            hash: inbox::dedupe_hash(page, &key),
            key,
        })
    }
}

impl Inner {
    fn new(db: sled::Db, path: &Path, key: TokenKey) -> sled::Result<Inner> {
        let open_tree = |tree: Tree| db.open_tree(tree.name());
        Ok(Inner {
            meta: open_tree(Tree::Meta)?,
            pages: open_tree(Tree::Pages)?,
            grants: open_tree(Tree::Grants)?,
            deletions: open_tree(Tree::Deletions)?,
            oauth_states: open_tree(Tree::OAuthStates)?,
            conversations: open_tree(Tree::Conversations)?,
            rooms: open_tree(Tree::Rooms)?,
            legacy_inbox: open_tree(Tree::Inbox)?,
            taken: open_tree(Tree::Taken)?,
            seen: open_tree(Tree::Seen)?,
            outbox: open_tree(Tree::Outbox)?,
            relayed: open_tree(Tree::Relayed)?,
            sent: open_tree(Tree::Sent)?,
            reactions: open_tree(Tree::Reactions)?,
            posted: open_tree(Tree::Posted)?,
            page_reactions: open_tree(Tree::PageReactions)?,
            set_aside: open_tree(Tree::SetAside)?,
            set_aside_turn: Mutex::new(()),
            db,
            path: path.to_owned(),
            key,
            outbox_len: AtomicIsize::new(0),
            flushes: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            flusher: Mutex::new(None),
            journal: std::sync::OnceLock::new(),
            inbox: Mutex::default(),
            segments: journal::Segments::new(&path.join(JOURNAL_DIR)),
            retire: std::sync::OnceLock::new(),
            arriving: Mutex::default(),
            page_cache: Mutex::default(),
            seen_filter: Mutex::new(seen_filter::SeenFilter::unknown()),
        })
    }

    fn index(&self) -> std::sync::MutexGuard<'_, inbox::Index> {
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn seen_filter(&self) -> std::sync::MutexGuard<'_, seen_filter::SeenFilter> {
        self.seen_filter
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Indexes the events of durable journal records, oldest first, each after the dedupe
    /// check. Returns one outcome per record.
    fn index_inbound(
        &self,
        records: Vec<(journal::Position, Vec<PreparedInbound>)>,
    ) -> Result<Vec<EnqueueOutcome>> {
        let mut index = self.index();
        records
            .into_iter()
            .map(|(position, prepared)| self.index_record(&mut index, position, prepared, false))
            .collect()
    }

    /// Indexes one record's events. An event whose `(page, dedupe key)` waits in the inbox
    /// already, or was taken before (a `seen` mark), is a duplicate. `recovering`: the record
    /// is read back at start-up, and events taken out before are skipped.
    fn index_record(
        &self,
        index: &mut inbox::Index,
        position: journal::Position,
        prepared: Vec<PreparedInbound>,
        recovering: bool,
    ) -> Result<EnqueueOutcome> {
        let mut outcome = EnqueueOutcome::default();
        let mut offset = position.offset + journal::PAYLOAD_OFFSET;
        let segment =
            u32::try_from(position.segment).map_err(|_| self.beyond_journal_range(position))?;
        if let Some(closed) = index.writing(segment) {
            // While recovering there is no retiring thread yet: `open_journal` deletes the
            // empty segments it read once it has read them all.
            self.retire(closed);
        }
        for event in prepared {
            let at = offset + 4;
            offset = at + event.len as u64;
            let dedupe = event.dedupe.as_ref().map_or(0, |d| d.hash);
            let held = inbox::Held {
                timestamp_ms: event.timestamp_ms,
                dedupe: event
                    .dedupe
                    .as_ref()
                    .map_or(0, |d| inbox::dedupe_tag(d.hash)),
                segment,
                offset: u32::try_from(at).map_err(|_| self.beyond_journal_range(position))?,
                len: u32::try_from(event.len).map_err(|_| self.beyond_journal_range(position))?,
            };
            if recovering && self.was_taken(&held)? {
                continue;
            }
            if let Some(dedupe) = &event.dedupe {
                if self.is_duplicate(index, &event.key, dedupe)? {
                    if !recovering {
                        // So that a later start, whatever became of the first copy, finds this
                        // one taken too.
                        self.taken
                            .insert(taken_key(&held), &[][..])
                            .map_err(sled_err("inbox taken write"))?;
                    }
                    outcome.duplicates += 1;
                    continue;
                }
            }
            index.insert(&event.key, held, dedupe);
            outcome.stored += 1;
        }
        Ok(outcome)
    }

    fn beyond_journal_range(&self, position: journal::Position) -> Error {
        Error::Decode {
            tree: Tree::Taken.name(),
            key: format!("{position:?}"),
            reason: "an inbox event beyond the journal's range (4 GiB segments, 2^32 of them)"
                .to_owned(),
        }
    }

    fn was_taken(&self, held: &inbox::Held) -> Result<bool> {
        self.taken
            .contains_key(taken_key(held))
            .map_err(sled_err("inbox taken read"))
    }

    fn is_duplicate(
        &self,
        index: &inbox::Index,
        key: &ConversationKey,
        dedupe: &Dedupe,
    ) -> Result<bool> {
        if index.may_hold(dedupe.hash) {
            for held in index.with_dedupe(key, dedupe.hash) {
                let waiting = self.read_held(key, &held)?;
                if waiting.dedupe_key.as_deref() == Some(dedupe.key.as_str()) {
                    return Ok(true);
                }
            }
        }
        if !self.seen_filter().may_contain(dedupe.hash) {
            return Ok(false);
        }
        self.seen
            .contains_key(keys::seen(&key.page, &dedupe.key))
            .map_err(sled_err("dedupe read"))
    }

    /// A waiting event, read back from its journal segment.
    fn read_held(&self, key: &ConversationKey, held: &inbox::Held) -> Result<InboundEvent> {
        let bytes = self.segments.read(
            u64::from(held.segment),
            u64::from(held.offset),
            held.len as usize,
        )?;
        let id = keys::queue(key, held.timestamp_ms, held.seq());
        records::decode_inbound(Store::at(Tree::Inbox, &id), &bytes)
    }

    /// Takes an event out of the inbox for good: its `taken` mark, its `seen` mark (a
    /// redelivery is then a duplicate) and, when it is set aside, its set-aside record, in one
    /// transaction; then out of the index. `false` when it was no longer waiting.
    fn take(
        &self,
        id: &QueueId,
        aside: impl FnOnce(InboundEvent) -> Result<Option<Vec<u8>>>,
    ) -> Result<bool> {
        let Some((key, timestamp_ms, seq)) = keys::split_queue(&id.0) else {
            return Err(Store::at(Tree::Inbox, &id.0).decode_error("not a queue key"));
        };
        let mut index = self.index();
        let Some(held) = index.find(&key, timestamp_ms, seq) else {
            return Ok(false);
        };
        let event = self.read_held(&key, &held)?;
        let dedupe = event
            .dedupe_key
            .as_deref()
            .map_or(0, |dedupe| inbox::dedupe_hash(&key.page, dedupe));
        let seen = match &event.dedupe_key {
            Some(dedupe) => Some((
                keys::seen(&key.page, dedupe),
                records::encode_mark(Tree::Seen, event.received_ms)?,
            )),
            None => None,
        };
        let aside = aside(event)?;
        let taken = taken_key(&held);
        (&self.taken, &self.seen, &self.set_aside)
            .transaction(|(taken_tree, seen_tree, aside_tree)| {
                taken_tree.insert(taken.as_slice(), &[][..])?;
                if let Some((seen_key, mark)) = &seen {
                    seen_tree.insert(seen_key.as_slice(), mark.as_slice())?;
                }
                if let Some(value) = &aside {
                    aside_tree.insert(id.0.as_slice(), value.as_slice())?;
                }
                Ok(())
            })
            .map_err(tx_err("inbox take"))?;
        if seen.is_some() {
            // Under the inbox lock, like the dedupe checks that read the filter.
            self.seen_filter().insert(dedupe);
        }
        if let Some(empty) = index.remove(&key, &held, dedupe) {
            self.retire(empty);
        }
        Ok(true)
    }

    /// Hands a segment nothing waits in any more to the retiring thread.
    fn retire(&self, segment: u32) {
        if let Some(retire) = self.retire.get() {
            // The thread stops only with the store (or after a failed flush, which the store
            // reports): the segment then stays for the next start, harmlessly.
            let _ = retire.send(segment);
        }
    }

    fn flush(&self) -> Result<()> {
        if let Err(err) = self.db.flush() {
            self.failed.store(true, Ordering::Relaxed);
            return Err(sled_err("flush")(err));
        }
        self.flushes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn tree(&self, tree: Tree) -> &sled::Tree {
        match tree {
            Tree::Meta => &self.meta,
            Tree::Pages => &self.pages,
            Tree::Grants => &self.grants,
            Tree::Deletions => &self.deletions,
            Tree::OAuthStates => &self.oauth_states,
            Tree::Conversations => &self.conversations,
            Tree::Rooms => &self.rooms,
            Tree::Inbox => &self.legacy_inbox,
            Tree::Taken => &self.taken,
            Tree::Seen => &self.seen,
            Tree::Outbox => &self.outbox,
            Tree::Relayed => &self.relayed,
            Tree::Sent => &self.sent,
            Tree::Reactions => &self.reactions,
            Tree::Posted => &self.posted,
            Tree::PageReactions => &self.page_reactions,
            Tree::SetAside => &self.set_aside,
        }
    }
}

/// The key of an event's `taken` mark: its journal position, so a deleted segment's marks are
/// one range.
fn taken_key(held: &inbox::Held) -> [u8; 16] {
    journal::Position {
        segment: u64::from(held.segment),
        offset: u64::from(held.offset),
    }
    .to_bytes()
}

/// Encodes events as one journal record (each behind its 32-bit length), off the journal's
/// thread, with what the index needs of each (moved out of the events, not copied).
fn prepare_inbound(events: Vec<Arriving<'_>>) -> Result<(Vec<u8>, Vec<PreparedInbound>)> {
    // Room for the payloads and each event's few other fields.
    let capacity = events.iter().map(|e| e.text.len() + 256);
    let mut record = Vec::with_capacity(capacity.sum());
    let mut prepared = Vec::with_capacity(events.len());
    for event in events {
        let start = record.len();
        record.extend_from_slice(&[0; 4]);
        records::encode_arriving_to(&event, &mut record)?;
        let len = record.len() - start - 4;
        // An event comes from a webhook body capped at 1 MiB.
        let len_bytes = u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes();
        record[start..start + 4].copy_from_slice(&len_bytes);
        let Arriving {
            key,
            timestamp_ms,
            dedupe_key,
            ..
        } = event;
        prepared.push(PreparedInbound {
            dedupe: dedupe_key.and_then(|dedupe| Dedupe::new(&key.page, dedupe)),
            key,
            timestamp_ms,
            len,
        });
    }
    Ok((record, prepared))
}

/// What the index needs of each event of a journal record, read back at start-up.
fn read_journal_record(at: At<'_>, mut record: &[u8]) -> Result<Vec<PreparedInbound>> {
    let mut events = Vec::new();
    while !record.is_empty() {
        let damaged = || Error::Decode {
            tree: at.tree.name(),
            key: at.tree.describe(at.key),
            reason: "a journal record that is not a list of inbox events".to_owned(),
        };
        let (len, rest) = record.split_first_chunk::<4>().ok_or_else(damaged)?;
        let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| damaged())?;
        let value = rest.get(..len).ok_or_else(damaged)?;
        let head = records::decode_inbound_head(at, value)?;
        events.push(PreparedInbound {
            dedupe: head
                .dedupe_key
                .and_then(|key| Dedupe::new(&head.key.page, key)),
            key: head.key,
            timestamp_ms: head.timestamp_ms,
            len,
        });
        record = &rest[len..];
    }
    Ok(events)
}

/// Deletes segments the inbox no longer needs: takes every one waiting, flushes sled first (the
/// `taken`, `seen` and set-aside writes that say where their events went must outlive them),
/// deletes the files, then forgets their `taken` marks. Stops at a failed flush: the segments
/// then stay for the next start, which finds their events taken.
fn run_retirer(inner: Weak<Inner>, queue: std::sync::mpsc::Receiver<u32>) {
    while let Ok(first) = queue.recv() {
        let mut segments = vec![first];
        segments.extend(queue.try_iter());
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if let Err(error) = inner.flush() {
            tracing::error!(%error, "inbox journal segments stay until the next start: the store cannot flush");
            return;
        }
        for segment in segments {
            if let Err(error) = inner.forget_segment(segment) {
                tracing::warn!(segment, %error, "cannot delete an inbox journal segment nothing waits in; it is retried at the next start");
            }
        }
    }
}

impl Inner {
    /// Deletes a segment with nothing waiting in it, then its `taken` marks.
    fn forget_segment(&self, segment: u32) -> Result<()> {
        let segment = u64::from(segment);
        self.segments.delete(segment)?;
        let from = journal::Position { segment, offset: 0 }.to_bytes();
        let to = journal::Position {
            segment: segment + 1,
            offset: 0,
        }
        .to_bytes();
        for entry in self.taken.range(from..to) {
            let (key, _) = entry.map_err(sled_err("inbox taken scan"))?;
            self.taken
                .remove(key)
                .map_err(sled_err("inbox taken remove"))?;
        }
        Ok(())
    }
}

/// Serves `sync()` requests: waits for one, takes every other one already queued, flushes once
/// and answers them all. Holds the store only while flushing, so dropping the last `Store`
/// closes the database promptly.
async fn run_flusher(
    inner: Weak<Inner>,
    mut requests: mpsc::Receiver<oneshot::Sender<FlushResult>>,
) {
    let mut batch = Vec::with_capacity(FLUSH_QUEUE);
    while requests.recv_many(&mut batch, FLUSH_QUEUE).await > 0 {
        let result = match inner.upgrade() {
            Some(inner) => match tokio::task::spawn_blocking(move || inner.flush()).await {
                Ok(result) => result.map_err(|err| err.to_string()),
                Err(err) => Err(format!("the flush task failed: {err}")),
            },
            None => Err("the store was closed".to_owned()),
        };
        if let Err(error) = &result {
            tracing::error!(%error, waiters = batch.len(), "store flush failed");
        }
        for waiter in batch.drain(..) {
            // A caller that gave up waiting is no concern of the others.
            let _ = waiter.send(result.clone());
        }
    }
}

impl Store {
    /// Opens (or creates) the store at `path`, with sled's page cache capped at
    /// `cache_capacity_bytes`. Checks the schema version: a newer one is refused, an older one
    /// migrated.
    pub fn open(path: &Path, key: TokenKey, cache_capacity_bytes: u64) -> Result<Store> {
        /// How long a held lock is waited for before the store counts as in use.
        const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
        let open_err = |source: sled::Error| {
            // sled reports a held lock only as text in an `io::ErrorKind::Other` error.
            if matches!(&source, sled::Error::Io(err) if err.to_string().contains("could not acquire lock"))
            {
                Error::Locked {
                    path: path.to_owned(),
                }
            } else {
                Error::Open {
                    path: path.to_owned(),
                    source,
                }
            }
        };
        std::fs::create_dir_all(path).map_err(|err| open_err(sled::Error::Io(err)))?;
        let config = sled::Config::new()
            .path(path)
            .cache_capacity(cache_capacity_bytes);
        // A store closed a moment ago in this process (a restart of the gateway in-process) keeps
        // its lock until sled's background flusher has exited: wait a little for it. Another
        // process holding the store is still refused after that.
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            match config.open().map_err(open_err) {
                Err(Error::Locked { .. }) if tokio::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let inner = Inner::new(db, path, key).map_err(open_err)?;
        let store = Store {
            inner: Arc::new(inner),
        };
        store.check_schema()?;
        store.rebuild_seen_filter()?;
        store.open_journal()?;
        let count = |tree: &sled::Tree| isize::try_from(tree.len()).unwrap_or(isize::MAX);
        store
            .inner
            .outbox_len
            .store(count(&store.inner.outbox), Ordering::Relaxed);
        tracing::info!(
            path = %path.display(),
            inbox = store.inbox().len(),
            outbox = store.outbox().len(),
            "store opened"
        );
        Ok(store)
    }

    /// Reads the schema version (a store without one is version 0, that is empty or written
    /// before versioning), refuses newer ones and migrates older ones.
    fn check_schema(&self) -> Result<()> {
        let at = At {
            tree: Tree::Meta,
            key: SCHEMA_KEY,
        };
        let found = match self
            .inner
            .meta
            .get(SCHEMA_KEY)
            .map_err(sled_err("schema read"))?
        {
            None => 0,
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Error::Decode {
                    tree: at.tree.name(),
                    key: at.tree.describe(at.key),
                    reason: format!(
                        "not a version number: {:?}",
                        String::from_utf8_lossy(&bytes)
                    ),
                })?,
        };
        if found > SCHEMA_VERSION {
            return Err(Error::NewerSchema {
                path: self.inner.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < SCHEMA_VERSION {
            self.migrate(found)?;
        }
        Ok(())
    }

    /// Upgrades the store one schema version at a time, recording each step, then flushes so
    /// a crash cannot leave a half-known version behind.
    fn migrate(&self, from: u64) -> Result<()> {
        let mut version = from;
        while version < SCHEMA_VERSION {
            let next = version + 1;
            match next {
                // Version 1 is the first format: a store at version 0 is new (or predates any
                // release) and has nothing to convert. Later versions add an arm here that
                // rewrites the affected trees.
                1 => {}
                2 => self.move_inbox_to_journal()?,
                _ => {
                    return Err(Error::Decode {
                        tree: Tree::Meta.name(),
                        key: Tree::Meta.describe(SCHEMA_KEY),
                        reason: format!("no migration from schema version {version}"),
                    });
                }
            }
            self.inner
                .meta
                .insert(SCHEMA_KEY, next.to_string().as_bytes())
                .map_err(sled_err("schema write"))?;
            if version > 0 {
                tracing::info!(from = version, to = next, "store migrated");
            }
            version = next;
        }
        self.inner.flush()
    }

    /// Schema 1 → 2: the inbox moves from sled's `inbox` tree into the journal. The tree's events
    /// (in queue order), then those of journal records not yet applied to it (in journal order),
    /// are written as a replacement journal; version 2 is committed in the same sled batch that
    /// forgets the applied position. `open_journal` then installs the replacement and empties
    /// the tree ([`empty_legacy_inbox`](Self::empty_legacy_inbox)). A crash before the commit
    /// repeats the whole step; after it, only what `open_journal` does.
    fn move_inbox_to_journal(&self) -> Result<()> {
        /// Events per record of the replacement.
        const PER_RECORD: usize = 1000;
        let dir = self.inner.path.join(JOURNAL_DIR);
        let applied = self
            .inner
            .meta
            .get(JOURNAL_APPLIED_KEY)
            .map_err(sled_err("journal position read"))?
            .and_then(|bytes| journal::Position::from_bytes(&bytes));
        let mut records = Vec::new();
        let mut waiting = Vec::new();
        for entry in self.inner.legacy_inbox.iter() {
            let (key, bytes) = entry.map_err(sled_err("inbox read"))?;
            waiting.push(records::decode_inbound(
                Self::at(Tree::Inbox, &key),
                &bytes,
            )?);
            if waiting.len() == PER_RECORD {
                records
                    .push(prepare_inbound(waiting.iter().map(InboundEvent::arriving).collect())?.0);
                waiting.clear();
            }
        }
        if !waiting.is_empty() {
            records.push(prepare_inbound(waiting.iter().map(InboundEvent::arriving).collect())?.0);
        }
        let moved = records.len();
        Journal::<Vec<PreparedInbound>, EnqueueOutcome>::recover(
            &dir,
            |position, record| -> Result<()> {
                if applied.is_none_or(|applied| position > applied) {
                    records.push(record.to_vec());
                }
                Ok(())
            },
        )?;
        journal::write_replacement(&dir, &records)?;
        let mut commit = sled::Batch::default();
        commit.remove(JOURNAL_APPLIED_KEY);
        commit.insert(SCHEMA_KEY, b"2".as_slice());
        self.inner
            .meta
            .apply_batch(commit)
            .map_err(sled_err("schema write"))?;
        self.inner.flush()?;
        tracing::info!(
            records = records.len(),
            from_sled = moved,
            "store migration: the inbox now lives in its journal"
        );
        Ok(())
    }

    /// Empties schema 1's inbox tree once its events are in the journal, clearing the `seen`
    /// marks they got at ingest (a mark now means "taken out of the inbox"). Each entry goes
    /// after its mark, in sled's ordered log, so a crash midway leaves only work to repeat.
    fn empty_legacy_inbox(&self) -> Result<()> {
        for entry in self.inner.legacy_inbox.iter() {
            let (key, bytes) = entry.map_err(sled_err("inbox read"))?;
            let event = records::decode_inbound(Self::at(Tree::Inbox, &key), &bytes)?;
            if let Some(dedupe) = &event.dedupe_key {
                self.inner
                    .seen
                    .remove(keys::seen(&event.key.page, dedupe))
                    .map_err(sled_err("dedupe remove"))?;
            }
            self.inner
                .legacy_inbox
                .remove(&key)
                .map_err(sled_err("inbox remove"))?;
        }
        Ok(())
    }

    /// Returns once every write made before the call is on disk. Concurrent callers share one
    /// flush (see the module documentation). Needs a tokio runtime.
    pub async fn sync(&self) -> Result<()> {
        let (answer, answered) = oneshot::channel();
        self.flusher()
            .send(answer)
            .await
            .map_err(|_| Error::Sync("the flusher stopped".to_owned()))?;
        answered
            .await
            .map_err(|_| Error::Sync("the flusher stopped".to_owned()))?
            .map_err(Error::Sync)
    }

    fn flusher(&self) -> mpsc::Sender<oneshot::Sender<FlushResult>> {
        // The slot holds no invariant a panic could break, so a poisoned lock is still usable.
        let mut slot = self
            .inner
            .flusher
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*slot {
            Some(requests) if !requests.is_closed() => requests.clone(),
            _ => {
                let (requests, queue) = mpsc::channel(FLUSH_QUEUE);
                tokio::spawn(run_flusher(Arc::downgrade(&self.inner), queue));
                *slot = Some(requests.clone());
                requests
            }
        }
    }

    /// Flushes on the calling thread: for shutdown and other non-async callers.
    pub fn flush_blocking(&self) -> Result<()> {
        self.inner.flush()
    }

    /// Whether a flush has failed (disk full, file-size limit, I/O error). sled keeps the first
    /// write error for the life of the database, so nothing more can be made durable until the
    /// store is reopened: the daemon exits and systemd starts it again.
    pub fn has_failed(&self) -> bool {
        self.inner.failed.load(Ordering::Relaxed)
    }

    /// Records an I/O failure of a queue write for [`has_failed`](Self::has_failed): sled's own
    /// background flush may meet a full disk before any `sync()` does, and then every write
    /// fails.
    fn noting_failure<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(Error::Sled {
            source: sled::Error::Io(_),
            ..
        }) = &result
        {
            self.inner.failed.store(true, Ordering::Relaxed);
        }
        result
    }

    /// How many flushes this handle's database has done (for tests and metrics).
    pub fn flush_count(&self) -> u64 {
        self.inner.flushes.load(Ordering::Relaxed)
    }

    fn at(tree: Tree, key: &[u8]) -> At<'_> {
        At { tree, key }
    }

    // ---- pages ----

    pub fn page(&self, id: &PageId) -> Result<Option<Page>> {
        let mut cache = self.page_cache();
        if let Some(page) = cache.get(id) {
            return Ok(Some(page.clone()));
        }
        let key = id.as_str().as_bytes();
        let Some(bytes) = self.inner.pages.get(key).map_err(sled_err("page read"))? else {
            return Ok(None);
        };
        let page = records::decode_page(&self.inner.key, Self::at(Tree::Pages, key), &bytes)?;
        cache.insert(id.clone(), page.clone());
        Ok(Some(page))
    }

    fn page_cache(&self) -> std::sync::MutexGuard<'_, HashMap<PageId, Page>> {
        self.inner
            .page_cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// All pages, ordered by id.
    pub fn pages(&self) -> Result<Vec<Page>> {
        self.inner
            .pages
            .iter()
            .map(|entry| {
                let (key, bytes) = entry.map_err(sled_err("page scan"))?;
                records::decode_page(&self.inner.key, Self::at(Tree::Pages, &key), &bytes)
            })
            .collect()
    }

    pub fn put_page(&self, page: &Page) -> Result<()> {
        let bytes = records::encode_page(&self.inner.key, page)?;
        let mut cache = self.page_cache();
        cache.remove(&page.id);
        self.inner
            .pages
            .insert(page.id.as_str().as_bytes(), bytes)
            .map_err(sled_err("page write"))?;
        cache.insert(page.id.clone(), page.clone());
        Ok(())
    }

    /// Atomically reads, changes and writes a page; `None` if there is no such page. `f` may run
    /// more than once when another writer wins the race. The id is the key: a change of
    /// `page.id` inside `f` is undone. `f` runs under the page cache's lock: it must not call
    /// the store.
    pub fn update_page(&self, id: &PageId, mut f: impl FnMut(&mut Page)) -> Result<Option<Page>> {
        let key = id.as_str().as_bytes();
        let mut cache = self.page_cache();
        cache.remove(id);
        loop {
            let Some(old) = self.inner.pages.get(key).map_err(sled_err("page read"))? else {
                return Ok(None);
            };
            let before = records::decode_page(&self.inner.key, Self::at(Tree::Pages, key), &old)?;
            let mut page = before.clone();
            f(&mut page);
            page.id = id.clone();
            if page == before {
                // Nothing to write (for example a page already marked as needing authorization).
                cache.insert(id.clone(), page.clone());
                return Ok(Some(page));
            }
            let new = records::encode_page(&self.inner.key, &page)?;
            match self
                .inner
                .pages
                .compare_and_swap(key, Some(old), Some(new))
                .map_err(sled_err("page update"))?
            {
                Ok(()) => {
                    cache.insert(id.clone(), page.clone());
                    return Ok(Some(page));
                }
                Err(_) => continue,
            }
        }
    }

    // ---- grants ----

    pub fn put_grant(&self, grant: &Grant) -> Result<()> {
        let bytes = records::encode_grant(&self.inner.key, grant)?;
        self.inner
            .grants
            .insert(grant.fb_user_id.as_bytes(), bytes)
            .map_err(sled_err("grant write"))?;
        Ok(())
    }

    pub fn grant(&self, fb_user_id: &str) -> Result<Option<Grant>> {
        let key = fb_user_id.as_bytes();
        match self.inner.grants.get(key).map_err(sled_err("grant read"))? {
            Some(bytes) => {
                records::decode_grant(&self.inner.key, Self::at(Tree::Grants, key), &bytes)
                    .map(Some)
            }
            None => Ok(None),
        }
    }

    pub fn remove_grant(&self, fb_user_id: &str) -> Result<()> {
        self.inner
            .grants
            .remove(fb_user_id.as_bytes())
            .map_err(sled_err("grant remove"))?;
        Ok(())
    }

    // ---- data deletion requests ----

    pub fn put_deletion(&self, request: &DeletionRequest) -> Result<()> {
        let bytes = records::encode_deletion(request)?;
        self.inner
            .deletions
            .insert(request.code.as_bytes(), bytes)
            .map_err(sled_err("deletion request write"))?;
        Ok(())
    }

    pub fn deletion(&self, code: &str) -> Result<Option<DeletionRequest>> {
        let key = code.as_bytes();
        match self
            .inner
            .deletions
            .get(key)
            .map_err(sled_err("deletion request read"))?
        {
            Some(bytes) => {
                records::decode_deletion(Self::at(Tree::Deletions, key), &bytes).map(Some)
            }
            None => Ok(None),
        }
    }

    // ---- OAuth states ----

    pub fn put_oauth_state(&self, state: &str, rec: &OAuthState) -> Result<()> {
        let bytes = records::encode_oauth_state(rec)?;
        self.inner
            .oauth_states
            .insert(state.as_bytes(), bytes)
            .map_err(sled_err("oauth state write"))?;
        Ok(())
    }

    /// Removes and returns the state, so it can be used once. The caller checks expiry.
    pub fn take_oauth_state(&self, state: &str) -> Result<Option<OAuthState>> {
        let key = state.as_bytes();
        match self
            .inner
            .oauth_states
            .remove(key)
            .map_err(sled_err("oauth state take"))?
        {
            Some(bytes) => {
                records::decode_oauth_state(Self::at(Tree::OAuthStates, key), &bytes).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Removes states that expired at or before `now_ms`; returns how many.
    pub fn prune_oauth_states(&self, now_ms: u64) -> Result<usize> {
        self.prune(Tree::OAuthStates, |at, bytes| {
            Ok(records::decode_oauth_state(at, bytes)?.expires_ms <= now_ms)
        })
    }

    /// Removes the entries of `tree` for which `expired` says so; returns how many.
    fn prune(
        &self,
        tree: Tree,
        mut expired: impl FnMut(At<'_>, &[u8]) -> Result<bool>,
    ) -> Result<usize> {
        let tree_handle = self.inner.tree(tree);
        let mut removed = 0;
        for entry in tree_handle.iter() {
            let (key, bytes) = entry.map_err(sled_err("prune scan"))?;
            if expired(Self::at(tree, &key), &bytes)? {
                // Only if unchanged since read: a rewritten entry is someone's fresh state.
                let swapped = tree_handle
                    .compare_and_swap(&key, Some(&bytes), None as Option<&[u8]>)
                    .map_err(sled_err("prune remove"))?;
                if swapped.is_ok() {
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }

    // ---- conversations ----

    pub fn conversation(&self, key: &ConversationKey) -> Result<Option<Conversation>> {
        let key = keys::conversation(key);
        match self
            .inner
            .conversations
            .get(&key)
            .map_err(sled_err("conversation read"))?
        {
            Some(bytes) => {
                records::decode_conversation(Self::at(Tree::Conversations, &key), &bytes).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Writes the conversation and, in the same transaction, points its room (if any) at it
    /// and drops the index entry of the room it had before.
    pub fn put_conversation(&self, conv: &Conversation) -> Result<()> {
        self.update_conversation_with(&conv.key, |stored| {
            *stored = Some(conv.clone());
        })
        .map(|_| ())
    }

    /// Atomic read-modify-write of an existing conversation (the inbound and outbound relays
    /// change different fields of the same record concurrently); `None` if it does not exist.
    pub fn update_conversation(
        &self,
        key: &ConversationKey,
        mut f: impl FnMut(&mut Conversation),
    ) -> Result<Option<Conversation>> {
        self.update_conversation_with(key, |stored| {
            if let Some(conv) = stored {
                f(conv);
            }
        })
    }

    /// One transaction over the conversation and the room index: `f` sees the stored value
    /// (`None` if absent) and leaves the value to store (`None` stores nothing). Retried by sled
    /// on conflict, so `f` may run more than once.
    fn update_conversation_with(
        &self,
        key: &ConversationKey,
        f: impl FnMut(&mut Option<Conversation>),
    ) -> Result<Option<Conversation>> {
        let tree_key = keys::conversation(key);
        // sled's transaction closure is `Fn`; the caller's `FnMut` is only ever called from it.
        let f = std::cell::RefCell::new(f);
        (&self.inner.conversations, &self.inner.rooms)
            .transaction(|(conversations, rooms)| {
                let old = match conversations.get(tree_key.as_slice())? {
                    Some(bytes) => Some(
                        records::decode_conversation(
                            Self::at(Tree::Conversations, &tree_key),
                            &bytes,
                        )
                        .map_err(ConflictableTransactionError::Abort)?,
                    ),
                    None => None,
                };
                let mut new = old.clone();
                (f.borrow_mut())(&mut new);
                let Some(mut conv) = new else {
                    return Ok(None);
                };
                conv.key = key.clone();
                let value = records::encode_conversation(&conv)
                    .map_err(ConflictableTransactionError::Abort)?;
                conversations.insert(tree_key.as_slice(), value.as_slice())?;
                let old_room = old.and_then(|o| o.room);
                if let Some(old_room) = old_room.filter(|r| Some(r) != conv.room.as_ref()) {
                    let room_key = old_room.as_str().as_bytes();
                    if let Some(bytes) = rooms.get(room_key)? {
                        let owner =
                            records::decode_room_index(Self::at(Tree::Rooms, room_key), &bytes)
                                .map_err(ConflictableTransactionError::Abort)?;
                        if owner == conv.key {
                            rooms.remove(room_key)?;
                        }
                    }
                }
                if let Some(room) = &conv.room {
                    let index = records::encode_room_index(&conv.key)
                        .map_err(ConflictableTransactionError::Abort)?;
                    rooms.insert(room.as_str().as_bytes(), index.as_slice())?;
                }
                Ok(Some(conv))
            })
            .map_err(tx_err("conversation write"))
    }

    pub fn conversations(&self) -> Result<Vec<Conversation>> {
        self.inner
            .conversations
            .iter()
            .map(|entry| {
                let (key, bytes) = entry.map_err(sled_err("conversation scan"))?;
                records::decode_conversation(Self::at(Tree::Conversations, &key), &bytes)
            })
            .collect()
    }

    /// The conversation whose current room is `rid`.
    pub fn conversation_by_room(&self, rid: &RoomId) -> Result<Option<Conversation>> {
        let room_key = rid.as_str().as_bytes();
        let Some(bytes) = self
            .inner
            .rooms
            .get(room_key)
            .map_err(sled_err("room index read"))?
        else {
            return Ok(None);
        };
        let key = records::decode_room_index(Self::at(Tree::Rooms, room_key), &bytes)?;
        Ok(self
            .conversation(&key)?
            .filter(|conv| conv.room.as_ref() == Some(rid)))
    }

    // ---- inbox ----

    /// Makes a webhook's events durable: the step before the webhook's 200. The events are
    /// appended to the inbox journal, which shares one `fdatasync` among every webhook waiting
    /// at that moment. When this returns `Ok` they are on disk. Once they are in the inbox
    /// (deduped as [`enqueue_inbound`](Self::enqueue_inbound) does), off the webhook's path and
    /// on the journal's applier thread, `queued` is told how many were new and their
    /// conversations (each once); an error there means the store stopped taking them, and the
    /// next start reads them back from the journal. `queued` is told nothing when this returns
    /// an error. Until it is told, the conversations count as arriving (see
    /// [`Queue::arriving`]), so no worker posts a later event first. Nothing is written to sled
    /// on this path: the journal is the inbox.
    pub async fn ingest(
        &self,
        events: Vec<Arriving<'_>>,
        queued: impl FnOnce(Result<EnqueueOutcome>, Vec<ConversationKey>) + Send + 'static,
    ) -> Result<()> {
        let arrival = Arrival::new(&self.inner, &events);
        let (record, prepared) = prepare_inbound(events)?;
        let Some(journal) = self.inner.journal.get() else {
            return Err(Error::Sync("the inbox journal is not open".to_owned()));
        };
        let applied = journal::OnApplied::new(move |answer| {
            let outcome = answer.map_err(|err| {
                arrival.inner.failed.store(true, Ordering::Relaxed);
                Error::Journal(err)
            });
            queued(outcome, arrival.end());
        });
        journal
            .append(record, prepared, applied)
            .await
            .map_err(|err| {
                // The writer stops at its first error; nothing more can be made durable until
                // the store is reopened (see `has_failed`).
                self.inner.failed.store(true, Ordering::Relaxed);
                Error::Journal(err)
            })
    }

    /// Puts events in the inbox as [`ingest`](Self::ingest) does, and returns once they are
    /// there: how many were new. An event whose `(page, dedupe_key)` waits or was taken before
    /// (in an earlier call or earlier in this batch) is skipped.
    pub async fn enqueue_inbound(&self, events: Vec<InboundEvent>) -> Result<EnqueueOutcome> {
        let arriving = events.iter().map(InboundEvent::arriving).collect();
        let (tell, told) = tokio::sync::oneshot::channel();
        self.ingest(arriving, move |outcome, _| {
            let _ = tell.send(outcome);
        })
        .await?;
        // `ingest` tells `queued` once whatever becomes of the events.
        told.await
            .unwrap_or_else(|_| Err(Error::Journal(journal::Error::Stopped)))
    }

    /// Reads the inbox back from the journal's segments (every event not taken out), deletes
    /// segments with nothing waiting, and starts the journal's writer.
    fn open_journal(&self) -> Result<()> {
        let dir = self.inner.path.join(JOURNAL_DIR);
        journal::install_replacement(&dir)?;
        self.empty_legacy_inbox()?;
        let mut index = self.inner.index();
        let mut waiting = 0;
        let recovered = Journal::<Vec<PreparedInbound>, EnqueueOutcome>::recover(
            &dir,
            |position, record| -> Result<()> {
                let at = Self::at(Tree::Inbox, JOURNAL_DIR.as_bytes());
                let prepared = read_journal_record(at, record)?;
                waiting += self
                    .inner
                    .index_record(&mut index, position, prepared, true)?
                    .stored;
                Ok(())
            },
        )?;
        // Every recovered segment is closed: `empty_among` names the empty ones.
        let in_range = |segment: u64| {
            u32::try_from(segment).map_err(|_| {
                self.inner
                    .beyond_journal_range(journal::Position { segment, offset: 0 })
            })
        };
        let _ = index.writing(in_range(recovered.next_segment())?);
        let recovered_segments = recovered
            .segments
            .iter()
            .map(|&segment| in_range(segment))
            .collect::<Result<Vec<_>>>()?;
        let empty = index.empty_among(&recovered_segments);
        drop(index);
        for segment in empty {
            self.inner.forget_segment(segment)?;
        }
        if waiting > 0 {
            tracing::info!(events = waiting, "inbox read back from its journal");
        }
        let (retire, retiring) = std::sync::mpsc::channel();
        let for_retire = Arc::downgrade(&self.inner);
        std::thread::Builder::new()
            .name("inbox-retire".to_owned())
            .spawn(move || run_retirer(for_retire, retiring))
            .map_err(|source| {
                Error::Journal(journal::Error::Io {
                    path: dir.clone(),
                    source,
                })
            })?;
        // `open` is the only caller, once per `Inner`.
        let _ = self.inner.retire.set(retire);
        let for_apply = Arc::downgrade(&self.inner);
        let journal = Journal::start(
            &dir,
            &recovered,
            Box::new(move |records| {
                let inner = for_apply.upgrade().ok_or("the store was closed")?;
                inner.index_inbound(records).map_err(|err| {
                    inner.failed.store(true, Ordering::Relaxed);
                    err.to_string()
                })
            }),
        )?;
        let _ = self.inner.journal.set(journal);
        Ok(())
    }

    /// The inbox: webhook events waiting for Rocket.Chat.
    pub fn inbox(&self) -> Queue<'_, InboundEvent> {
        Queue {
            store: self,
            tree: Tree::Inbox,
            scan: Store::inbox_scan,
        }
    }

    /// The inbox's events of `key`, oldest first, at most `limit`.
    fn inbox_scan(
        &self,
        key: &ConversationKey,
        limit: usize,
    ) -> Result<Vec<(QueueId, InboundEvent)>> {
        let index = self.inner.index();
        let mut found = Vec::new();
        for held in index.first(key, limit) {
            let event = self.inner.read_held(key, &held)?;
            found.push((
                QueueId(keys::queue(key, held.timestamp_ms, held.seq())),
                event,
            ));
        }
        Ok(found)
    }

    /// The outbox's items for `key`, oldest first, at most `limit`.
    fn outbox_scan(
        &self,
        key: &ConversationKey,
        limit: usize,
    ) -> Result<Vec<(QueueId, OutboundItem)>> {
        self.inner
            .outbox
            .scan_prefix(keys::conversation(key))
            .take(limit)
            .map(|entry| {
                let (key, bytes) = entry.map_err(sled_err("queue scan"))?;
                let item = records::decode_outbound(Self::at(Tree::Outbox, &key), &bytes)?;
                Ok((QueueId(key.to_vec()), item))
            })
            .collect()
    }

    /// Distinct conversations of a queue tree, skipping from one conversation to the next
    /// instead of reading every entry.
    fn pending(&self, tree: Tree) -> Result<Vec<ConversationKey>> {
        let tree_handle = self.inner.tree(tree);
        let mut found = Vec::new();
        let mut from: Vec<u8> = Vec::new();
        loop {
            let Some((key, _)) = tree_handle
                .range(from.as_slice()..)
                .next()
                .transpose()
                .map_err(sled_err("queue scan"))?
            else {
                return Ok(found);
            };
            let Some((conv, _)) = keys::split_conversation(&key) else {
                return Err(Error::Decode {
                    tree: tree.name(),
                    key: tree.describe(&key),
                    reason: "not a queue key".to_owned(),
                });
            };
            let Some(next) = keys::prefix_end(&keys::conversation(&conv)) else {
                found.push(conv);
                return Ok(found);
            };
            found.push(conv);
            from = next;
        }
    }

    /// Forgets dedupe marks set before `older_than_ms`; returns how many. The `seen` filter is
    /// then rebuilt for the marks left.
    pub fn prune_seen(&self, older_than_ms: u64) -> Result<usize> {
        let pruned = self.prune(Tree::Seen, |at, bytes| {
            Ok(records::decode_mark(at, bytes)? < older_than_ms)
        })?;
        self.rebuild_seen_filter()?;
        Ok(pruned)
    }

    /// Builds the `seen` filter again from the marks (`store/seen_filter.rs`).
    fn rebuild_seen_filter(&self) -> Result<()> {
        self.inner.seen_filter().begin_rebuild();
        let hashes = self.seen_hashes();
        let mut filter = self.inner.seen_filter();
        match hashes {
            Ok(hashes) => {
                filter.finish_rebuild(hashes);
                Ok(())
            }
            Err(err) => {
                filter.abandon_rebuild();
                Err(err)
            }
        }
    }

    /// The dedupe hash of every `seen` mark (echo marks, keyed otherwise, are skipped).
    fn seen_hashes(&self) -> Result<Vec<u64>> {
        let mut hashes = Vec::new();
        for key in self.inner.seen.iter().keys() {
            let key = key.map_err(sled_err("dedupe scan"))?;
            if let Some((page, dedupe)) = keys::split_seen(&key) {
                hashes.push(inbox::dedupe_hash_of(page, dedupe));
            }
        }
        Ok(hashes)
    }

    /// Records that Meta echoed one of the gateway's own sends (`sent` names the Rocket.Chat
    /// message and part, from the Send API `metadata`), so a retry after an unanswered send can
    /// tell that it was delivered. Does not flush; pruned with the dedupe marks.
    pub fn mark_echoed(&self, sent: &str, at_ms: u64) -> Result<()> {
        let mark = records::encode_mark(Tree::Seen, at_ms)?;
        let result = self
            .inner
            .seen
            .insert(echo_key(sent), mark)
            .map(|_| ())
            .map_err(sled_err("echo mark write"));
        self.noting_failure(result)
    }

    /// Whether Meta echoed this send (see [`mark_echoed`](Self::mark_echoed)).
    pub fn was_echoed(&self, sent: &str) -> Result<bool> {
        let found = self
            .inner
            .seen
            .get(echo_key(sent))
            .map_err(sled_err("echo mark read"))?;
        Ok(found.is_some())
    }

    // ---- outbox ----

    /// Queues an agent message, unless its Rocket.Chat message id was queued before (a
    /// back-fill after a reconnect sees messages the live stream already delivered): then
    /// `false`. Does not flush.
    pub fn enqueue_outbound(&self, item: OutboundItem) -> Result<bool> {
        self.noting_failure(self.try_enqueue_outbound(item))
    }

    fn try_enqueue_outbound(&self, item: OutboundItem) -> Result<bool> {
        let seq = self.inner.db.generate_id().map_err(sled_err("outbox id"))?;
        let key = keys::queue(&item.key, item.created_ms, seq);
        let value = records::encode_outbound(&item)?;
        let mark = records::encode_mark(Tree::Relayed, item.created_ms)?;
        let relayed_key = item.rc_message_id.as_str().as_bytes();
        let stored = (&self.inner.outbox, &self.inner.relayed)
            .transaction(|(outbox, relayed)| {
                if relayed.get(relayed_key)?.is_some() {
                    return Ok(false);
                }
                relayed.insert(relayed_key, mark.as_slice())?;
                outbox.insert(key.as_slice(), value.as_slice())?;
                Ok(true)
            })
            .map_err(tx_err("outbox write"))?;
        if stored {
            add(&self.inner.outbox_len, 1);
        }
        Ok(stored)
    }

    /// The outbox: agent messages waiting for the Send API.
    pub fn outbox(&self) -> Queue<'_, OutboundItem> {
        Queue {
            store: self,
            tree: Tree::Outbox,
            scan: Store::outbox_scan,
        }
    }

    /// Forgets relayed-message marks created before `older_than_ms`, and the sent-message links
    /// of the same age; returns how many. Keep them longer than any back-fill reaches, or an old
    /// reply could be sent twice.
    pub fn prune_relayed(&self, older_than_ms: u64) -> Result<usize> {
        let marks = self.prune(Tree::Relayed, |at, bytes| {
            Ok(records::decode_mark(at, bytes)? < older_than_ms)
        })?;
        let links = self.prune(Tree::Sent, |at, bytes| {
            Ok(records::decode_sent(at, bytes)?.1 < older_than_ms)
        })?;
        let reactions = self.prune(Tree::Reactions, |at, bytes| {
            Ok(records::decode_reaction(at, bytes)?.1 < older_than_ms)
        })?;
        let posted = self.prune(Tree::Posted, |at, bytes| {
            Ok(records::decode_posted(at, bytes)?.at_ms < older_than_ms)
        })?;
        let page_reactions = self.prune(Tree::PageReactions, |at, bytes| {
            Ok(records::decode_page_reaction(at, bytes)?.at_ms < older_than_ms)
        })?;
        Ok(marks + links + reactions + posted + page_reactions)
    }

    /// Marks that the agent was told an edit of `rc_message_id` cannot reach Messenger: `true`
    /// the first time. Kept with the relayed marks (under a prefix no message id has) and pruned
    /// with them. Does not flush.
    pub fn first_edit_notice(&self, rc_message_id: &MessageId, at_ms: u64) -> Result<bool> {
        self.first_notice("edit-notice", rc_message_id, at_ms)
    }

    /// Like [`first_edit_notice`](Self::first_edit_notice), for a deletion of `rc_message_id`.
    pub fn first_delete_notice(&self, rc_message_id: &MessageId, at_ms: u64) -> Result<bool> {
        self.first_notice("delete-notice", rc_message_id, at_ms)
    }

    fn first_notice(&self, what: &str, rc_message_id: &MessageId, at_ms: u64) -> Result<bool> {
        let key = format!("{what}:{}", rc_message_id.as_str());
        let mark = records::encode_mark(Tree::Relayed, at_ms)?;
        let swapped = self
            .inner
            .relayed
            .compare_and_swap(key.as_bytes(), None as Option<&[u8]>, Some(mark))
            .map_err(sled_err("notice mark"))?;
        Ok(swapped.is_ok())
    }

    /// Whether the agent message `rc_message_id` was queued for Messenger (and so is sent or on
    /// its way).
    pub fn was_relayed(&self, rc_message_id: &MessageId) -> Result<bool> {
        Ok(self
            .inner
            .relayed
            .get(rc_message_id.as_str().as_bytes())
            .map_err(sled_err("relayed mark read"))?
            .is_some())
    }

    // ---- customers' messages and the page's reactions on them ----

    /// Remembers that the customer's Messenger message `mid` was posted as `rc_message_id`, so an
    /// agent's reaction on it can name the `mid`. Does not flush: the inbox item it belongs to
    /// leaves the queue later, and a store flush covers both.
    pub fn put_posted(
        &self,
        rc_message_id: &MessageId,
        page: &PageId,
        mid: &str,
        at_ms: u64,
    ) -> Result<()> {
        let bytes = records::encode_posted(&Posted {
            page: page.clone(),
            mid: mid.to_owned(),
            at_ms,
        })?;
        self.inner
            .posted
            .insert(rc_message_id.as_str().as_bytes(), bytes)
            .map_err(sled_err("posted message write"))?;
        Ok(())
    }

    /// The customer's Messenger message a Rocket.Chat message carries, when the relay posted it.
    pub fn posted(&self, rc_message_id: &MessageId) -> Result<Option<Posted>> {
        let key = rc_message_id.as_str().as_bytes();
        match self
            .inner
            .posted
            .get(key)
            .map_err(sled_err("posted message read"))?
        {
            Some(bytes) => records::decode_posted(Self::at(Tree::Posted, key), &bytes).map(Some),
            None => Ok(None),
        }
    }

    /// Updates the page's reaction on the customer's message `rc_message_id` and queues what
    /// Messenger must be sent for it, in one transaction: `decide` gets the reaction as last
    /// queued (the default before the first) and returns `None` when nothing changed, else the
    /// new one with the outbox item when the customer must see a change. A stream event and a
    /// back-fill of the same state therefore queue it once. `true` when an item was queued.
    /// Does not flush.
    pub fn enqueue_page_reaction(
        &self,
        rc_message_id: &MessageId,
        decide: impl Fn(&PageReaction) -> Option<(PageReaction, Option<OutboundItem>)>,
    ) -> Result<bool> {
        self.noting_failure(self.try_enqueue_page_reaction(rc_message_id, decide))
    }

    fn try_enqueue_page_reaction(
        &self,
        rc_message_id: &MessageId,
        decide: impl Fn(&PageReaction) -> Option<(PageReaction, Option<OutboundItem>)>,
    ) -> Result<bool> {
        let seq = self.inner.db.generate_id().map_err(sled_err("outbox id"))?;
        let state_key = rc_message_id.as_str().as_bytes();
        let at = Self::at(Tree::PageReactions, state_key);
        let queued = (&self.inner.page_reactions, &self.inner.outbox)
            .transaction(|(states, outbox)| {
                let before = match states.get(state_key)? {
                    Some(bytes) => records::decode_page_reaction(at, &bytes)
                        .map_err(ConflictableTransactionError::Abort)?,
                    None => PageReaction::default(),
                };
                let Some((after, item)) = decide(&before) else {
                    return Ok(false);
                };
                let bytes = records::encode_page_reaction(&after)
                    .map_err(ConflictableTransactionError::Abort)?;
                states.insert(state_key, bytes)?;
                let Some(item) = item else {
                    return Ok(false);
                };
                let value =
                    records::encode_outbound(&item).map_err(ConflictableTransactionError::Abort)?;
                let key = keys::queue(&item.key, item.created_ms, seq);
                outbox.insert(key.as_slice(), value.as_slice())?;
                Ok(true)
            })
            .map_err(tx_err("page reaction write"))?;
        if queued {
            add(&self.inner.outbox_len, 1);
        }
        Ok(queued)
    }

    // ---- set-aside events ----

    /// Moves the inbox event at `id` out of its conversation's queue into the set-aside records,
    /// under the same key, with why Rocket.Chat refused it; the conversation's later events are
    /// then next. `true` when it is the page's first set-aside event with this reason (its admins
    /// are told then, once per kind until an admin retries); `false` too when the event is no
    /// longer in the inbox. Does not flush.
    pub fn set_aside(&self, id: &QueueId, reason: &str, detail: &str, at_ms: u64) -> Result<bool> {
        let _turn = self
            .inner
            .set_aside_turn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let result = self.try_set_aside(id, reason, detail, at_ms);
        self.noting_failure(result)
    }

    fn try_set_aside(&self, id: &QueueId, reason: &str, detail: &str, at_ms: u64) -> Result<bool> {
        let Some((conversation, _)) = keys::split_conversation(&id.0) else {
            return Err(Self::at(Tree::Inbox, &id.0).decode_error("not a queue key"));
        };
        let first = !self
            .set_aside_under(&keys::page(&conversation.page))?
            .iter()
            .any(|aside| aside.reason == reason);
        let moved = self.inner.take(id, |event| {
            records::encode_set_aside(&SetAside {
                event,
                reason: reason.to_owned(),
                detail: detail.to_owned(),
                set_aside_ms: at_ms,
            })
            .map(Some)
        })?;
        Ok(moved && first)
    }

    /// Every set-aside event, by page, conversation and Meta timestamp.
    pub fn set_aside_events(&self) -> Result<Vec<SetAside>> {
        self.set_aside_under(&[])
    }

    fn set_aside_under(&self, prefix: &[u8]) -> Result<Vec<SetAside>> {
        self.inner
            .set_aside
            .scan_prefix(prefix)
            .map(|entry| {
                let (key, bytes) = entry.map_err(sled_err("set aside scan"))?;
                records::decode_set_aside(Self::at(Tree::SetAside, &key), &bytes)
            })
            .collect()
    }

    /// Puts the set-aside events of `page` (of every page with `None`) back in the inbox. A
    /// queue is ordered by Meta timestamp, so each goes back to its place among the events of its
    /// conversation waiting now: ahead of newer ones, in their original order among themselves.
    /// Returns each restored event's conversation, in key order (so one conversation's entries
    /// are adjacent).
    ///
    /// Their `seen` marks go first (or they would be duplicates of themselves), then they are
    /// written to the journal like a webhook's events, then their set-aside records go. A crash
    /// between the steps leaves them set aside, or both set aside and waiting, and a second
    /// retry then finds them duplicates: none is lost or posted twice.
    pub async fn restore_set_aside(&self, page: Option<&PageId>) -> Result<Vec<ConversationKey>> {
        let result = self.try_restore_set_aside(page).await;
        self.noting_failure(result)
    }

    async fn try_restore_set_aside(&self, page: Option<&PageId>) -> Result<Vec<ConversationKey>> {
        let prefix = page.map(keys::page).unwrap_or_default();
        let mut ids = Vec::new();
        let mut events = Vec::new();
        for entry in self.inner.set_aside.scan_prefix(prefix) {
            let (key, bytes) = entry.map_err(sled_err("set aside scan"))?;
            ids.push(key.clone());
            events.push(records::decode_set_aside(Self::at(Tree::SetAside, &key), &bytes)?.event);
        }
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let seen_keys = events
            .iter()
            .filter_map(|event| Some(keys::seen(&event.key.page, event.dedupe_key.as_deref()?)));
        remove_all(&self.inner.seen, seen_keys)?;
        let conversations = events.iter().map(|event| event.key.clone()).collect();
        self.enqueue_inbound(events).await?;
        remove_all(&self.inner.set_aside, ids)?;
        Ok(conversations)
    }

    // ---- customer reactions ----

    /// Remembers the customer's reaction on message `mid` (a Rocket.Chat emoji name), or forgets
    /// it (`None`): Messenger's `unreact` may not say which emoji it removes. Does not flush.
    pub fn put_reaction(
        &self,
        page: &PageId,
        mid: &str,
        name: Option<&str>,
        at_ms: u64,
    ) -> Result<()> {
        let key = keys::reaction(page, mid);
        match name {
            Some(name) => {
                let bytes = records::encode_reaction(name, at_ms)?;
                self.inner
                    .reactions
                    .insert(key, bytes)
                    .map_err(sled_err("reaction write"))?;
            }
            None => {
                self.inner
                    .reactions
                    .remove(key)
                    .map_err(sled_err("reaction remove"))?;
            }
        }
        Ok(())
    }

    /// The customer's current reaction on message `mid`, as a Rocket.Chat emoji name.
    pub fn reaction(&self, page: &PageId, mid: &str) -> Result<Option<String>> {
        let key = keys::reaction(page, mid);
        match self
            .inner
            .reactions
            .get(&key)
            .map_err(sled_err("reaction read"))?
        {
            Some(bytes) => records::decode_reaction(Self::at(Tree::Reactions, &key), &bytes)
                .map(|(name, _)| Some(name)),
            None => Ok(None),
        }
    }

    // ---- sent messages ----

    /// Remembers that the Send API accepted (part of) the agent's Rocket.Chat message
    /// `rc_message_id` as `message_id`, so a customer's reply to it links to that message.
    /// Does not flush: losing it in a crash only makes such a link point nowhere.
    pub fn put_sent(
        &self,
        page: &PageId,
        message_id: &str,
        rc_message_id: &MessageId,
        at_ms: u64,
    ) -> Result<()> {
        let bytes = records::encode_sent(rc_message_id, at_ms)?;
        self.inner
            .sent
            .insert(keys::sent(page, message_id), bytes)
            .map_err(sled_err("sent message write"))?;
        Ok(())
    }

    /// The agent's Rocket.Chat message that the page's Send API `message_id` carried.
    pub fn sent(&self, page: &PageId, message_id: &str) -> Result<Option<MessageId>> {
        let key = keys::sent(page, message_id);
        match self
            .inner
            .sent
            .get(&key)
            .map_err(sled_err("sent message read"))?
        {
            Some(bytes) => {
                records::decode_sent(Self::at(Tree::Sent, &key), &bytes).map(|(id, _)| Some(id))
            }
            None => Ok(None),
        }
    }
}

/// Echo marks share the dedupe tree; inbound dedupe keys never start with `echo:`.
fn echo_key(sent: &str) -> Vec<u8> {
    format!("echo:{sent}").into_bytes()
}

/// One queue of the store (the inbox or the outbox): per conversation, oldest first. Items are
/// enqueued by [`Store::enqueue_inbound`] and [`Store::enqueue_outbound`], each with its own
/// dedupe marks in the same transaction.
pub struct Queue<'s, T> {
    store: &'s Store,
    tree: Tree,
    scan: Scan<T>,
}

/// Reads the items of a conversation, oldest first, at most so many.
type Scan<T> = fn(&Store, &ConversationKey, usize) -> Result<Vec<(QueueId, T)>>;

impl<T> Queue<'_, T> {
    /// Whether a webhook for `key` is between parse and inbox (inbox only). Its events may be
    /// older than what the queue holds now: a worker that posts meanwhile could post out of
    /// order, so it leaves the conversation to the worker that webhook wakes.
    pub fn arriving(&self, key: &ConversationKey) -> bool {
        self.tree == Tree::Inbox
            && self
                .store
                .inner
                .arriving
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(key)
    }

    /// The next item for `key`.
    pub fn oldest(&self, key: &ConversationKey) -> Result<Option<(QueueId, T)>> {
        Ok((self.scan)(self.store, key, 1)?.into_iter().next())
    }

    /// Every item waiting for `key`, in order.
    pub fn all_for(&self, key: &ConversationKey) -> Result<Vec<(QueueId, T)>> {
        (self.scan)(self.store, key, usize::MAX)
    }

    /// Removes a finished item. Removing an id twice is harmless.
    pub fn remove(&self, id: &QueueId) -> Result<()> {
        if self.tree == Tree::Inbox {
            let taken = self.store.inner.take(id, |_| Ok(None));
            return self.store.noting_failure(taken).map(|_| ());
        }
        if self
            .store
            .inner
            .tree(self.tree)
            .remove(&id.0)
            .map_err(sled_err("queue remove"))?
            .is_some()
        {
            add(&self.store.inner.outbox_len, -1);
        }
        Ok(())
    }

    /// The conversations with items waiting, for restart recovery.
    pub fn pending_conversations(&self) -> Result<Vec<ConversationKey>> {
        if self.tree == Tree::Inbox {
            return Ok(self.store.inner.index().conversations());
        }
        self.store.pending(self.tree)
    }

    /// Items waiting, all conversations together.
    pub fn len(&self) -> usize {
        if self.tree == Tree::Inbox {
            return self.store.inner.index().len();
        }
        len(&self.store.inner.outbox_len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Removes `keys` from `tree` in one atomic batch (for restoring set-aside events).
fn remove_all<K: Into<sled::IVec>>(
    tree: &sled::Tree,
    keys: impl IntoIterator<Item = K>,
) -> Result<()> {
    let mut batch = sled::Batch::default();
    for key in keys {
        batch.remove(key);
    }
    tree.apply_batch(batch)
        .map_err(sled_err("set aside restore"))
}

fn add(counter: &AtomicIsize, n: impl TryInto<isize>) {
    counter.fetch_add(n.try_into().unwrap_or(isize::MAX), Ordering::Relaxed);
}

fn len(counter: &AtomicIsize) -> usize {
    usize::try_from(counter.load(Ordering::Relaxed)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_and_read_only_are_told_apart_from_other_failures() {
        let sled_io = |err: io::Error| Error::Sled {
            op: "flush",
            source: sled::Error::Io(err),
        };
        let cases = [
            (sled_io(io::Error::from_raw_os_error(28)), true),
            (sled_io(io::Error::from_raw_os_error(30)), true),
            (sled_io(io::Error::from_raw_os_error(122)), true),
            (sled_io(io::Error::from_raw_os_error(27)), true),
            (sled_io(io::Error::from_raw_os_error(5)), false),
            (sled_io(io::Error::from(io::ErrorKind::StorageFull)), true),
            (
                Error::Open {
                    path: "data".into(),
                    source: sled::Error::Io(io::Error::from_raw_os_error(28)),
                },
                true,
            ),
            (
                Error::TokenKeyIo {
                    path: "key".into(),
                    source: io::Error::from_raw_os_error(30),
                },
                true,
            ),
            (
                Error::Sled {
                    op: "flush",
                    source: sled::Error::Unsupported("x".into()),
                },
                false,
            ),
            (Error::Sync("the flusher stopped".into()), false),
        ];
        for (err, full) in cases {
            assert_eq!(err.is_disk_full(), full, "{err}");
        }
    }

    fn inbound(psid: &str, timestamp_ms: u64, mid: &str) -> InboundEvent {
        InboundEvent {
            key: ConversationKey::new(PageId::new("1"), crate::ids::Psid::new(psid)),
            timestamp_ms,
            dedupe_key: Some(mid.to_owned()),
            received_ms: timestamp_ms,
            standby: false,
            payload: Payload::from_value(&serde_json::json!({ "label": mid })),
        }
    }

    /// A store as schema 1 left it: events `a` and `b` in sled's inbox tree with the dedupe
    /// marks ingest gave them, a delivered event's mark, and a journal whose first record (`a`)
    /// was applied to the tree and whose second (`c`, and a redelivery of the delivered one)
    /// was not.
    fn write_schema_1(dir: &Path) {
        let db = sled::open(dir).unwrap();
        let meta = db.open_tree(Tree::Meta.name()).unwrap();
        let inbox = db.open_tree(Tree::Inbox.name()).unwrap();
        let seen = db.open_tree(Tree::Seen.name()).unwrap();
        meta.insert(SCHEMA_KEY, "1").unwrap();
        for (seq, event) in [inbound("9", 10, "a"), inbound("9", 20, "b")]
            .iter()
            .enumerate()
        {
            let key = keys::queue(&event.key, event.timestamp_ms, seq as u64);
            inbox
                .insert(key, records::encode_inbound(event).unwrap())
                .unwrap();
            seen.insert(
                keys::seen(&event.key.page, event.dedupe_key.as_deref().unwrap()),
                records::encode_mark(Tree::Seen, 1).unwrap(),
            )
            .unwrap();
        }
        seen.insert(
            keys::seen(&PageId::new("1"), "delivered"),
            records::encode_mark(Tree::Seen, 1).unwrap(),
        )
        .unwrap();
        fn arriving(events: &[InboundEvent]) -> Vec<Arriving<'_>> {
            events.iter().map(InboundEvent::arriving).collect()
        }
        let applied = prepare_inbound(arriving(&[inbound("9", 10, "a")]))
            .unwrap()
            .0;
        let waiting = prepare_inbound(arriving(&[
            inbound("9", 30, "c"),
            inbound("9", 5, "delivered"),
        ]))
        .unwrap()
        .0;
        let journal_dir = dir.join(JOURNAL_DIR);
        journal::write_replacement(&journal_dir, &[applied, waiting]).unwrap();
        std::fs::rename(
            journal_dir.join("replacement.tmp"),
            journal_dir.join(format!("{:020}.journal", 1)),
        )
        .unwrap();
        let first = journal::Position {
            segment: 1,
            offset: 0,
        };
        meta.insert(JOURNAL_APPLIED_KEY, first.to_bytes().as_slice())
            .unwrap();
        db.flush().unwrap();
    }

    fn labels(store: &Store) -> Vec<String> {
        let key = ConversationKey::new(PageId::new("1"), crate::ids::Psid::new("9"));
        store
            .inbox()
            .all_for(&key)
            .unwrap()
            .into_iter()
            .map(|(_, event)| {
                event.payload.to_value()["label"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_schema_1_inbox_moves_into_the_journal_once() {
        let dir = tempfile::tempdir().unwrap();
        write_schema_1(dir.path());
        let key = || TokenKey::from_bytes([1; 32]);
        let store = Store::open(dir.path(), key(), 1 << 20).unwrap();
        assert_eq!(labels(&store), ["a", "b", "c"]);
        assert!(store.inner.legacy_inbox.is_empty());
        assert_eq!(store.inner.meta.get(JOURNAL_APPLIED_KEY).unwrap(), None);
        let redelivered = store
            .enqueue_inbound(vec![inbound("9", 10, "a")])
            .await
            .unwrap();
        assert_eq!(
            redelivered.duplicates, 1,
            "a waiting event is still deduped"
        );
        // Taking `a` out marks it seen again, and the journal keeps the order across a restart.
        let (id, _) = store
            .inbox()
            .oldest(&inbound("9", 0, "").key)
            .unwrap()
            .unwrap();
        store.inbox().remove(&id).unwrap();
        store.flush_blocking().unwrap();
        drop(store);
        let store = Store::open(dir.path(), key(), 1 << 20).unwrap();
        assert_eq!(labels(&store), ["b", "c"]);
        let outcome = store
            .enqueue_inbound(vec![inbound("9", 10, "a"), inbound("9", 5, "delivered")])
            .await
            .unwrap();
        assert_eq!(outcome.duplicates, 2);
    }

    #[tokio::test]
    async fn a_migration_cut_short_after_its_commit_finishes_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        write_schema_1(dir.path());
        let key = || TokenKey::from_bytes([1; 32]);
        {
            // The commit point, and nothing after it.
            let db = sled::open(dir.path()).unwrap();
            let meta = db.open_tree(Tree::Meta.name()).unwrap();
            let store = Store {
                inner: Arc::new(Inner::new(db.clone(), dir.path(), key()).unwrap()),
            };
            store.move_inbox_to_journal().unwrap();
            assert_eq!(meta.get(SCHEMA_KEY).unwrap().as_deref(), Some(&b"2"[..]));
        }
        let store = Store::open(dir.path(), key(), 1 << 20).unwrap();
        assert_eq!(labels(&store), ["a", "b", "c"]);
    }

    #[tokio::test]
    async fn a_segment_is_deleted_with_its_taken_marks_once_nothing_in_it_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), TokenKey::from_bytes([1; 32]), 1 << 20).unwrap();
        let segments = || {
            let mut names: Vec<_> = std::fs::read_dir(dir.path().join(JOURNAL_DIR))
                .unwrap()
                .map(|entry| entry.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        };
        let text = "x".repeat(4096);
        // A little over one segment (8 MiB) of 4 KiB events, in records of 100.
        for batch in 0..21 {
            let events = (0..100)
                .map(|n| InboundEvent {
                    payload: Payload::from_value(&serde_json::json!({ "text": text })),
                    ..inbound("9", batch * 100 + n, &format!("m{batch}-{n}"))
                })
                .collect();
            store.enqueue_inbound(events).await.unwrap();
        }
        assert_eq!(segments().len(), 2, "{:?}", segments());
        let first = segments()[0].clone();
        let key = inbound("9", 0, "").key;
        while let Some((id, event)) = store.inbox().oldest(&key).unwrap() {
            if event.timestamp_ms >= 2000 {
                break;
            }
            store.inbox().remove(&id).unwrap();
        }
        // The retiring thread flushes sled, deletes the file, then its taken marks.
        for _ in 0..500 {
            if !segments().contains(&first) && store.inner.taken.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(!segments().contains(&first), "{:?}", segments());
        assert!(store.inner.taken.is_empty());
        assert_eq!(store.inbox().len(), 100);
        drop(store);
        let store = Store::open(dir.path(), TokenKey::from_bytes([1; 32]), 1 << 20).unwrap();
        assert_eq!(
            store.inbox().len(),
            100,
            "the second segment's events still wait"
        );
    }
}
