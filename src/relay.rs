//! The central module: relays conversations between Messenger and Livechat. `inbound` delivers
//! webhook events to Rocket.Chat; `render` decides how they read there. This file holds what
//! both directions share: talking to the customer through the Send API (with token health), and
//! one log line per outage instead of one per retry.

pub mod agent_text;
pub mod inbound;
pub mod outbound;
pub mod render;
pub mod threads;
pub mod typing;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tracing::{error, info, warn};

use crate::backoff::Backoff;

use crate::ids::{ConversationKey, ConversationSet, PageId, Psid};
use crate::messenger::graph::{self, Content, GraphClient, Messaging, SendRequest};
use crate::notices::Notifier;
use crate::pages;
use crate::rocketchat::rest::RestClient;
use crate::store::{Page, Queue, QueueId, Store};
use crate::telemetry::Telemetry;

/// What both relays work with, wired once by the daemon.
#[derive(Clone)]
pub struct RelayContext {
    pub store: Store,
    pub rest: RestClient,
    pub customer: CustomerMessenger,
    pub chat: Notifier,
    pub telemetry: Telemetry,
    /// Who controls each conversation (handover protocol).
    pub threads: Arc<threads::Threads>,
    /// Where the relays' workers run, so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// The runtime the workers run on: a conversation is woken from the inbox journal's
    /// applier thread too.
    pub runtime: tokio::runtime::Handle,
    pub cancel: CancellationToken,
}

/// The conversations that have a worker running, for one direction. A worker runs while its
/// conversation's queue has items; [`retire`](Self::retire) looks at the queue again under the
/// lock, so an item queued while a worker decides to stop is either seen by it or starts a new
/// worker, never left behind.
#[derive(Default)]
pub struct Workers {
    running: Mutex<ConversationSet>,
}

impl Workers {
    fn running(&self) -> std::sync::MutexGuard<'_, ConversationSet> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `true` when no worker runs for `key` yet: the caller starts one.
    pub fn claim(&self, key: &ConversationKey) -> bool {
        let mut running = self.running();
        // Most wakes find the worker running: no copy of the key for those.
        !running.contains(key) && running.insert(key.clone())
    }

    /// Called by a worker whose queue looked empty: `true` (stop now) when `queue_is_empty`
    /// confirms it under the lock.
    pub fn retire(&self, key: &ConversationKey, queue_is_empty: impl FnOnce() -> bool) -> bool {
        let mut running = self.running();
        if queue_is_empty() {
            running.remove(key);
            true
        } else {
            false
        }
    }
}

/// Largest file either relay carries (Messenger's attachment limit is 25 MB; Rocket.Chat's is
/// configurable and says so when it refuses).
pub const MAX_FILE_BYTES: usize = 25 * 1024 * 1024;
/// First and longest wait between retries while a far end is failing.
pub const RETRY_MIN: Duration = Duration::from_millis(500);
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// How handling a queue's oldest item ended.
pub enum Handled {
    /// Finished (delivered, or refused for good and reported): remove it from the queue.
    Done,
    /// Nothing of it was done yet: take the oldest item again (it may be another one now).
    Again,
    /// The gateway is stopping.
    Stopped,
}

/// One direction of the relay, as its per-conversation queue workers see it: which store queue
/// it drains and how it handles one item. [`wake`] and the worker loop are the same for both.
pub trait Direction: Send + Sync + 'static {
    type Item: Send + Sync;
    /// The queue's name, for logs.
    const QUEUE: &'static str;
    /// Whether removing a finished item must be flushed at once: a crash before the flush
    /// repeats the item, which only the inbox's derived message ids make harmless.
    const FLUSH_AFTER_REMOVE: bool;

    fn context(&self) -> &RelayContext;
    fn workers(&self) -> &Workers;
    fn queue(store: &Store) -> Queue<'_, Self::Item>;
    /// Handles one item until it is done, retrying with `retry` (shared by the items of one
    /// worker, so going back to the queue after a failure does not restart the backoff). `id`
    /// is where the item sits, for a handler that moves it out of the queue itself (the inbox
    /// sets aside what Rocket.Chat refuses for good).
    fn handle(
        &self,
        key: &ConversationKey,
        id: &QueueId,
        item: &Self::Item,
        retry: &mut Backoff,
    ) -> impl Future<Output = Handled> + Send;
}

/// Makes sure a worker is draining this conversation's queue. Call after the items are stored.
pub fn wake<D: Direction>(relay: &Arc<D>, key: &ConversationKey) {
    let ctx = relay.context();
    if ctx.cancel.is_cancelled() || !relay.workers().claim(key) {
        return;
    }
    let worker = relay.clone();
    let key = key.clone();
    ctx.tasks
        .spawn_on(async move { work(worker, key).await }, &ctx.runtime);
}

/// Restarts every conversation with items left in the queue (after a restart or a crash).
pub fn resume<D: Direction>(relay: &Arc<D>) -> Result<Vec<ConversationKey>, crate::store::Error> {
    let pending = D::queue(&relay.context().store).pending_conversations()?;
    for key in &pending {
        wake(relay, key);
    }
    Ok(pending)
}

/// One conversation's worker: handles the oldest item until the queue is empty.
async fn work<D: Direction>(relay: Arc<D>, key: ConversationKey) {
    let ctx = relay.context();
    let mut retry = Backoff::new(RETRY_MIN, RETRY_MAX);
    loop {
        if ctx.cancel.is_cancelled() {
            return;
        }
        let queue = D::queue(&ctx.store);
        // The webhook still arriving wakes a worker once its events are queued.
        if queue.arriving(&key) && relay.workers().retire(&key, || queue.arriving(&key)) {
            return;
        }
        let next = match queue.oldest(&key) {
            Ok(next) => next,
            Err(err) => {
                error!(conversation = %key, queue = D::QUEUE, error = %err, "cannot read the queue; retrying");
                pause(&ctx.cancel, RETRY_MAX).await;
                continue;
            }
        };
        let Some((id, item)) = next else {
            let queue = D::queue(&ctx.store);
            if relay
                .workers()
                .retire(&key, || matches!(queue.oldest(&key), Ok(None)))
            {
                return;
            }
            continue;
        };
        match relay.handle(&key, &id, &item, &mut retry).await {
            Handled::Done => {}
            Handled::Again => continue,
            Handled::Stopped => return,
        }
        if let Err(err) = D::queue(&ctx.store).remove(&id) {
            error!(conversation = %key, queue = D::QUEUE, error = %err, "cannot remove a finished item from the queue");
        }
        if D::FLUSH_AFTER_REMOVE {
            if let Err(err) = ctx.store.sync().await {
                error!(conversation = %key, queue = D::QUEUE, error = %err, "cannot persist the queue");
            }
        }
    }
}

/// Sleeps for `wait`, or less when the gateway stops.
pub async fn pause(cancel: &CancellationToken, wait: Duration) {
    tokio::select! {
        _ = cancel.cancelled() => {}
        _ = tokio::time::sleep(wait) => {}
    }
}

/// Sends the gateway's own messages (welcome, offline, finished) to customers and reads their
/// names, marking a page "needs authorization" when Facebook says its token is dead.
#[derive(Clone)]
pub struct CustomerMessenger {
    graph: GraphClient,
    store: Store,
    chat: Notifier,
}

impl CustomerMessenger {
    pub fn new(graph: GraphClient, store: Store, chat: Notifier) -> CustomerMessenger {
        CustomerMessenger { graph, store, chat }
    }

    /// The customer's name from the User Profile API, with fallbacks: `first last`, `name`,
    /// then "Facebook user …1234" (profiles are often unavailable, `docs/messenger.md` §9).
    ///
    /// Instagram customers are named from the Instagram profile, marked so the room says where
    /// they wrote: `name (@username) · Instagram`, then `@username · Instagram`, `name ·
    /// Instagram`, then "Instagram user …1234" (`docs/instagram.md` §5). A failed lookup (230
    /// before consent, 9010 for an unknown user) never holds a message.
    pub async fn display_name(&self, page: Option<&Page>, psid: &Psid) -> String {
        if let Some(page) = page.filter(|p| p.is_instagram()) {
            return self.instagram_name(page, psid).await;
        }
        let fallback = || {
            format!(
                "Facebook user {}",
                psid.to_string().trim_start_matches("psid")
            )
        };
        let Some((page, token)) = page.and_then(|p| p.token.as_ref().map(|t| (p, t))) else {
            return fallback();
        };
        match self.graph.user_profile(psid, token).await {
            Ok(profile) => profile.display_name().unwrap_or_else(fallback),
            Err(err) => {
                if err.is_token_invalid() {
                    self.token_invalid(&page.id, &err).await;
                }
                info!(page = %page.id, error = %err.describe(), "no profile for the customer; using a placeholder name");
                fallback()
            }
        }
    }

    async fn instagram_name(&self, page: &Page, igsid: &Psid) -> String {
        let fallback = || {
            format!(
                "Instagram user {}",
                igsid.to_string().trim_start_matches("psid")
            )
        };
        let Some(token) = &page.token else {
            return fallback();
        };
        match self.graph.instagram_profile(igsid, token).await {
            Ok(profile) => profile.display_name().unwrap_or_else(fallback),
            Err(err) => {
                if err.is_token_invalid() {
                    self.token_invalid(&page.id, &err).await;
                }
                info!(account = %page.id, error = %err.describe(), "no Instagram profile for the customer; using a placeholder name");
                fallback()
            }
        }
    }

    /// Sends one of the gateway's own texts (`purpose`: welcome, offline, finished) to the
    /// customer. Best effort: failures are logged, never retried into a duplicate.
    pub async fn send_text(&self, page: Option<&Page>, psid: &Psid, text: &str, purpose: &str) {
        let Some((page, token)) = page.and_then(|p| p.token.as_ref().map(|t| (p, t))) else {
            warn!(psid = %psid, purpose, "the page has no token; its message to the customer was not sent");
            return;
        };
        let request = SendRequest {
            recipient: psid.clone(),
            messaging: Messaging::Response,
            content: Content::Text(text.to_owned()),
            // Instagram neither lists `metadata` nor echoes it (docs/instagram.md §6.1).
            metadata: (!page.is_instagram()).then(|| format!("omni-gateway:{purpose}")),
        };
        match self
            .graph
            .send_message(page.send_node(), token, &request)
            .await
        {
            Ok(_) => info!(page = %page.id, psid = %psid, purpose, "message sent to the customer"),
            Err(err) => {
                if err.is_token_invalid() {
                    self.token_invalid(&page.id, &err).await;
                }
                warn!(page = %page.id, psid = %psid, purpose, error = %err.describe(), "could not send to the customer");
            }
        }
    }

    /// Graph error 190: marks the page and tells its admins, once per loss of authorization.
    pub async fn token_invalid(&self, page_id: &PageId, err: &graph::Error) {
        pages::lost_authorization(&self.store, &self.chat, page_id, &err.describe()).await;
    }
}

/// Logs one warning when a far end starts failing and one line when it recovers, however many
/// retries happen in between.
///
/// It also shortens outages for everyone: a worker waiting to retry can wait for
/// [`recovery`](Self::recovery) too, which fires when any worker gets through or the daemon knows
/// the far end is back, so one success restarts every conversation instead of each waiting out
/// its own backoff. And one conversation at a time [`probes`](Self::probes) the far end on its
/// backoff: the rest wait for that, so a thousand held conversations cost one retry per step,
/// not a thousand.
pub struct OutageLog {
    name: &'static str,
    down: AtomicBool,
    back: Notify,
    prober: std::sync::Mutex<Option<ConversationKey>>,
}

impl OutageLog {
    pub fn new(name: &'static str) -> OutageLog {
        OutageLog {
            name,
            down: AtomicBool::new(false),
            back: Notify::new(),
            prober: std::sync::Mutex::new(None),
        }
    }

    pub fn failed(&self, reason: &str) {
        if !self.down.swap(true, Ordering::Relaxed) {
            warn!(
                peer = self.name,
                reason, "outage: retrying with backoff, nothing is dropped"
            );
        }
    }

    pub fn recovered(&self) {
        *self.prober() = None;
        if self.down.swap(false, Ordering::Relaxed) {
            info!(peer = self.name, "outage over: delivering again");
            self.back.notify_waiters();
        }
    }

    /// The far end is reachable again (e.g. the realtime link logged in): wake the waiting
    /// retries now.
    pub fn nudge(&self) {
        if self.down.load(Ordering::Relaxed) {
            self.back.notify_waiters();
        }
    }

    /// Resolves when the outage is over (see the type's doc), at once if it already is.
    pub async fn recovery(&self) {
        let notified = self.back.notified();
        tokio::pin!(notified);
        // Registered before the check, so a recovery between the two is not missed.
        notified.as_mut().enable();
        if self.down.load(Ordering::Relaxed) {
            notified.await;
        }
    }

    /// Whether `key` retries on its own backoff during this outage: the first conversation to
    /// ask takes the turn and keeps it until the outage is over; the others wait for
    /// [`recovery`](Self::recovery), or the longest backoff should the prober stop trying.
    pub fn probes(&self, key: &ConversationKey) -> bool {
        let mut prober = self.prober();
        match &*prober {
            Some(current) => current == key,
            None => {
                *prober = Some(key.clone());
                true
            }
        }
    }

    fn prober(&self) -> std::sync::MutexGuard<'_, Option<ConversationKey>> {
        self.prober
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
