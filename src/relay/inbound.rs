//! Messenger → Livechat. Events wait in the store's inbox until Rocket.Chat has accepted them;
//! one worker per conversation delivers them oldest first, so order holds without global locks
//! and a slow or held conversation never blocks another.
//!
//! Per event: the visitor (registered with the page's department whenever a new room is needed),
//! the room (a new one sends the page's welcome to the customer), then each part with an id derived
//! from Meta's `mid`, so a retry or a redelivery cannot post twice. `no-agent-online` holds the
//! conversation: the customer gets the offline message and the page's admins a notice, once per
//! hold, and delivery resumes when `livechat/config` says an agent can take it; Omnichannel
//! switched off holds the same way. A refusal that no retry passes (a blocked contact, a text
//! over the limits after splitting) sets the event aside: out of the queue into its own store
//! record, the page's admins told once per kind, the conversation's later events next, and
//! `/facebook retry` puts it back.

mod page_inbox;

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::agent_text::to_rocketchat_name;
use super::outbound::Outbound;
use super::render::{self, Part};
use super::{
    Direction, Handled, MAX_FILE_BYTES, OutageLog, RETRY_MAX, RelayContext, Workers, pause,
};
use crate::backoff::Backoff;
use crate::health::now_ms;
use crate::ids::{ConversationKey, PageId, RoomId, VisitorToken};
use crate::messenger::webhook::{self, Attachment, Event};
use crate::rocketchat::livechat::{self, Refusal, Visitor};
use crate::rocketchat::rest::{self, RestClient};
use crate::store::{self, Conversation, InboundEvent, Page, Queue, QueueId, Store};

/// Longest wait between retries of an error a person must fix (deleted department, …).
const STUCK_RETRY: Duration = Duration::from_secs(300);
/// First and longest wait between `livechat/config` polls while no agent is online.
const POLL_MIN: Duration = Duration::from_secs(2);
const POLL_MAX: Duration = Duration::from_secs(30);

/// Why one attempt to deliver an event did not finish.
#[derive(thiserror::Error, Debug)]
enum Failure {
    #[error("no agent is online")]
    NoAgent { department: Option<String> },
    /// The room is ready and an older event of the conversation is waiting: it goes first.
    #[error("an older message of the conversation arrived meanwhile")]
    OlderFirst,
    #[error(transparent)]
    RocketChat(#[from] rest::Error),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Why a customer's file is posted as a link instead of uploaded (the agent reads it).
#[derive(thiserror::Error, Debug)]
enum FileFallback {
    #[error("the file could not be downloaded from Messenger: {0}")]
    Unreachable(reqwest::Error),
    #[error("Messenger answered HTTP {0} for the file")]
    Status(u16),
    #[error("the file is larger than 25 MB")]
    TooLarge,
    #[error("the download broke off: {0}")]
    BrokeOff(reqwest::Error),
    #[error("{}", .0.upload_refusal())]
    Refused(rest::Error),
}

/// The inbound relay. Shared (`Arc`) by the webhook handler, which wakes it, and its workers.
/// The Omnichannel custom field (scope Room) that shows agents when the customer last read the
/// page's messages (an ISO date).
pub const READ_FIELD: &str = "messenger_read_at";

pub struct Inbound {
    ctx: RelayContext,
    /// Watches the rooms this relay opens, for the agents' replies.
    outbound: Arc<Outbound>,
    downloads: reqwest::Client,
    workers: Workers,
    agents: AgentWatch,
    outage: OutageLog,
    /// Whether the log already says that reactions degrade to lines.
    reactions_warned: AtomicBool,
    /// Whether the log already says that read receipts have no custom field to go to.
    reads_warned: AtomicBool,
    /// Pages whose admins were told that Omnichannel is switched off, until a message of the
    /// page gets through again.
    omnichannel_off_told: Mutex<std::collections::HashSet<PageId>>,
    /// Visitor tokens registered while their room is not open yet (a 429, a hold, an outage),
    /// with the department they were registered with: `livechat/visitor` allows 5 calls a
    /// minute per client IP, so a retry does not register the visitor again.
    registered: Mutex<HashMap<VisitorToken, Option<String>>>,
    /// The names looked up for visitors whose room is not open yet: a conversation held
    /// through an outage retries for as long as it lasts, and Graph's profile calls are
    /// rate-limited per page, so each customer is looked up once.
    names: Mutex<HashMap<VisitorToken, String>>,
    /// One conversation at a time registers its visitor and opens its room. Both routes allow
    /// 5 calls per 60 s per client IP (`rateLimiterOptions` in
    /// `apps/meteor/app/livechat/server/api/v1/visitor.ts` and `room.ts`); the one whose call
    /// is refused waits until `X-RateLimit-Reset` holding its turn, so a burst of new customers
    /// costs at most one refused call each instead of every worker retrying at every reset.
    opening: tokio::sync::Mutex<()>,
}

impl Inbound {
    pub fn new(ctx: RelayContext, outbound: Arc<Outbound>) -> Arc<Inbound> {
        crate::tls::install_crypto_provider();
        let downloads = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_default();
        Arc::new(Inbound {
            agents: AgentWatch::new(ctx.rest.clone(), ctx.tasks.clone(), ctx.cancel.clone()),
            ctx,
            outbound,
            downloads,
            workers: Workers::default(),
            outage: OutageLog::new("rocket.chat"),
            reactions_warned: AtomicBool::new(false),
            reads_warned: AtomicBool::new(false),
            omnichannel_off_told: Mutex::default(),
            registered: Mutex::new(HashMap::new()),
            names: Mutex::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
        })
    }

    /// Makes sure a worker is delivering this conversation's inbox. Call after the events are
    /// durably stored.
    pub fn wake(self: &Arc<Self>, key: &ConversationKey) {
        super::wake(self, key);
    }

    /// Rocket.Chat is reachable again (the realtime link logged in): retry now.
    pub fn rocketchat_is_back(&self) {
        self.outage.nudge();
    }

    /// Restarts delivery of everything left in the inbox (after a restart or a crash).
    pub fn resume_pending(self: &Arc<Self>) -> Result<usize, store::Error> {
        let pending = super::resume(self)?;
        if !pending.is_empty() {
            info!(
                conversations = pending.len(),
                events = self.ctx.store.inbox().len(),
                "resuming delivery of stored webhook events"
            );
        }
        Ok(pending.len())
    }

    /// Puts the set-aside events of `page` (of every page with `None`) back in their
    /// conversations' queues and starts delivering them (`/facebook retry`). Each goes back to
    /// its place by Meta timestamp: ahead of the conversation's newer events still waiting,
    /// after those already delivered. Returns how many events.
    pub async fn retry_set_aside(
        self: &Arc<Self>,
        page: Option<&PageId>,
    ) -> Result<usize, store::Error> {
        let mut conversations = self.ctx.store.restore_set_aside(page).await?;
        let events = conversations.len();
        self.ctx.store.sync().await?;
        conversations.dedup();
        for key in &conversations {
            self.wake(key);
        }
        if events > 0 {
            info!(
                page = page.map(PageId::as_str).unwrap_or("all"),
                events,
                conversations = conversations.len(),
                "set-aside messages put back in their conversations"
            );
        }
        Ok(events)
    }

    /// Retries one event until Rocket.Chat accepts it. While nothing of it is posted, a failed
    /// attempt hands back to the queue instead: an event with an older Meta timestamp may have
    /// arrived during the wait (Meta retries late, an outage or a hold queues many), and it goes
    /// first.
    async fn deliver_until_accepted(
        &self,
        key: &ConversationKey,
        id: &QueueId,
        event: &InboundEvent,
        retry: &mut Backoff,
    ) -> Handled {
        let mut progress = 0usize;
        loop {
            if self.ctx.cancel.is_cancelled() {
                return Handled::Stopped;
            }
            match self.deliver(key, event, &mut progress).await {
                Ok(()) => {
                    self.outage.recovered();
                    self.omnichannel_off_told
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&key.page);
                    retry.reset();
                    let latency_ms = now_ms().saturating_sub(event.received_ms);
                    self.ctx.telemetry.inbound_delivered(latency_ms);
                    return Handled::Done;
                }
                Err(Failure::OlderFirst) if progress == 0 => return Handled::Again,
                Err(Failure::OlderFirst) => {}
                Err(Failure::NoAgent { department }) => {
                    self.ctx.telemetry.rocketchat_error("no_agent_online");
                    if let Err(err) = self.hold(key).await {
                        warn!(conversation = %key, error = %err, "cannot record the hold");
                    }
                    self.agents
                        .wait_until_online(department, &self.ctx.cancel)
                        .await;
                    retry.reset();
                }
                Err(Failure::RocketChat(err)) => {
                    self.ctx.telemetry.rocketchat_error(err.kind());
                    if let Some(refusal) = err.permanent_refusal() {
                        return self.set_aside(key, id, &refusal, &err).await;
                    }
                    if err.refusal() == Some(Refusal::OmnichannelDisabled) {
                        self.omnichannel_off(key, &err).await;
                        retry.reset();
                    } else if err.is_retryable() {
                        self.outage.failed(&err.to_string());
                        let backoff = if self.outage.probes(key) {
                            retry.next_wait()
                        } else {
                            RETRY_MAX
                        };
                        let wait = err.retry_after().unwrap_or(backoff);
                        // A rate limit's wait is the server's word; an outage ends early when
                        // any conversation gets through.
                        if err.retry_after().is_some() {
                            self.pause(wait).await;
                        } else {
                            tokio::select! {
                                _ = self.pause(wait) => {}
                                _ = self.outage.recovery() => {}
                            }
                        }
                    } else {
                        warn!(conversation = %key, error = %err, "rocket.chat refused a customer's message; it stays queued and is retried");
                        self.pause(STUCK_RETRY).await;
                    }
                }
                Err(Failure::Store(err)) => {
                    error!(conversation = %key, error = %err, "store failure while delivering; retrying");
                    self.pause(RETRY_MAX).await;
                }
            }
            if progress == 0 {
                return Handled::Again;
            }
        }
    }

    /// Moves an event Rocket.Chat refused for good out of the conversation's queue into the
    /// set-aside records, so the conversation's later events go on; the page's admins hear of
    /// the first of each kind. Parts of the event already posted stay posted: a retry into the
    /// same room finds its texts by their derived ids, but a file part, or any part once the room
    /// changed, shows again.
    async fn set_aside(
        &self,
        key: &ConversationKey,
        id: &QueueId,
        refusal: &Refusal,
        err: &rest::Error,
    ) -> Handled {
        let first = match self
            .ctx
            .store
            .set_aside(id, refusal.code(), &err.to_string(), now_ms())
        {
            Ok(first) => first,
            Err(store_err) => {
                error!(conversation = %key, error = %store_err, "cannot set a refused message aside; retrying");
                self.pause(RETRY_MAX).await;
                return Handled::Again;
            }
        };
        // Not fatal: after a crash the event is in the inbox again and is refused again.
        if let Err(store_err) = self.ctx.store.sync().await {
            error!(conversation = %key, error = %store_err, "cannot persist a set-aside message");
        }
        self.ctx.telemetry.inbound_set_aside();
        warn!(
            conversation = %key,
            page = %key.page,
            reason = refusal.code(),
            error = %err,
            fix = refusal.fix(),
            "Rocket.Chat refused a customer's message for good: it is set aside and the conversation goes on; after the fix, `/facebook retry <pageId>` delivers it"
        );
        if first {
            self.tell_set_aside(key, refusal).await;
        }
        Handled::Done
    }

    /// Tells the page's admins, once per kind of refusal, that a message was set aside.
    async fn tell_set_aside(&self, key: &ConversationKey, refusal: &Refusal) {
        let page = match self.ctx.store.page(&key.page) {
            Ok(Some(page)) => page,
            Ok(None) => return,
            Err(err) => {
                warn!(page = %key.page, error = %err, "cannot read the page to tell its admins of a set-aside message");
                return;
            }
        };
        let name = self.ctx.customer.display_name(Some(&page), &key.psid).await;
        let text = format!(
            "Rocket.Chat refused a message from {name} on page *{page_name}*: {meaning} (`{code}`). It will not take that message as things are, so the message is set aside and the conversation's later messages go on; more messages of this page refused the same way are set aside without another notice. Nothing is lost. To deliver them: {fix}, then run `/facebook retry {page_id}`. `/facebook status` lists what is set aside.",
            page_name = page.name,
            meaning = refusal.meaning(),
            code = refusal.code(),
            fix = refusal.fix(),
            page_id = page.id,
        );
        self.ctx.chat.notify(&page.subscribers, &text).await;
    }

    /// Omnichannel is switched off: the conversation waits in order until it is on again and an
    /// agent can take it, on the same `livechat/config` poller as a hold. Nothing is set aside:
    /// the switch refuses every conversation alike, so setting aside would free none of them,
    /// and once it is back on the newer messages would overtake the set-aside ones until an admin
    /// retried them. The page's admins are told once, until a message of the page gets through.
    async fn omnichannel_off(&self, key: &ConversationKey, err: &rest::Error) {
        let first = self
            .omnichannel_off_told
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.page.clone());
        let page = self.ctx.store.page(&key.page).unwrap_or_else(|store_err| {
            warn!(page = %key.page, error = %store_err, "cannot read the page");
            None
        });
        if first {
            let refusal = Refusal::OmnichannelDisabled;
            warn!(page = %key.page, conversation = %key, error = %err, fix = refusal.fix(), "Omnichannel is switched off in Rocket.Chat: customers' messages wait in order until it is on again");
            if let Some(page) = &page {
                let text = format!(
                    "Rocket.Chat refuses the messages of page *{}*: {} (`{}`). They wait in order and are delivered as soon as it is on again; nothing is lost. To fix it: {}.",
                    page.name,
                    refusal.meaning(),
                    refusal.code(),
                    refusal.fix()
                );
                self.ctx.chat.notify(&page.subscribers, &text).await;
            }
        }
        let department = page.and_then(|p| p.department).map(|d| d.id);
        self.agents
            .wait_until_online(department, &self.ctx.cancel)
            .await;
    }

    /// One attempt. `progress` counts the parts already posted, so a retry continues where the
    /// last attempt stopped (uploads, unlike messages, carry no id of ours).
    async fn deliver(
        &self,
        key: &ConversationKey,
        event: &InboundEvent,
        progress: &mut usize,
    ) -> Result<(), Failure> {
        let meaning = webhook::event(event.payload.as_raw().get());
        if let Event::Read { watermark_ms } = meaning {
            return self.mark_read(key, watermark_ms).await;
        }
        if let webhook::Event::Echo {
            app_id,
            mid: Some(mid),
            text,
            attachments,
            ..
        } = &meaning
        {
            let reply = page_inbox::PageReply {
                app_id: app_id.as_deref(),
                mid,
                text: text.as_deref(),
                attachments,
            };
            return self.deliver_page_reply(key, reply).await;
        }
        let Some(mut parts) = render::parts(&meaning) else {
            debug!(conversation = %key, "event is not relayed");
            return Ok(());
        };
        let page = self.ctx.store.page(&key.page)?;
        if event.standby {
            let label = match &page {
                Some(page) if page.is_instagram() => render::INSTAGRAM_STANDBY_LABEL,
                _ => render::STANDBY_LABEL,
            };
            render::mark_standby(&mut parts, label);
        }
        let mut conversation = self.conversation(key)?;
        // The customer's write opens the Send API window, whether or not Rocket.Chat has the
        // message yet: recorded before posting, because an agent (or a bot) may answer the moment
        // the message lands in the room, and the outbox checks the window.
        let written_ms = event.timestamp_ms;
        if let Event::Reaction { mid, emoji, react } = &meaning {
            // A reaction is not a message: it opens no window, and shows on the message itself.
            if *progress == 0
                && self
                    .react_in_place(key, mid, emoji.as_deref(), *react)
                    .await?
            {
                return Ok(());
            }
        } else if !matches!(meaning, Event::Deleted { .. }) {
            // An unsend is no message either: only the customer's writes open the window.
            self.ctx.store.update_conversation(key, |c| {
                c.last_inbound_ms = Some(c.last_inbound_ms.unwrap_or(0).max(written_ms));
            })?;
        }
        let dedupe = event
            .dedupe_key
            .clone()
            .unwrap_or_else(|| format!("t:{}:{}", event.timestamp_ms, event.received_ms));
        if *progress == 0 && self.edit_in_place(key, &meaning, &conversation).await? {
            return Ok(());
        }
        let mut new_rooms = 0;
        while *progress < parts.len() {
            let had_room = conversation.room.is_some();
            let rid = self.room(page.as_ref(), &mut conversation).await?;
            // Opening a room takes a few round trips, during which an older message of the same
            // conversation may have been stored (concurrent deliveries, Meta's late retries):
            // the message to post is picked once the room is ready.
            if !had_room && *progress == 0 && self.older_waiting(key, event)? {
                return Err(Failure::OlderFirst);
            }
            let id = render::message_id(&key.page, &rid, &dedupe, *progress);
            let posted = match &parts[*progress] {
                Part::Text { text, quoting } => {
                    // An upload gets Rocket.Chat's id, so only texts are known by theirs.
                    self.remember_posted(key, &id, &dedupe)?;
                    let text = match quoting {
                        Some(mid) => format!("{}\n{text}", self.quote(&key.page, &rid, mid)),
                        None => text.clone(),
                    };
                    let pieces = Pieces {
                        page: &key.page,
                        dedupe: &dedupe,
                        index: *progress,
                    };
                    self.post_text(&conversation.visitor_token, &rid, &id, &text, pieces)
                        .await
                }
                Part::File {
                    attachment,
                    fallback,
                } => {
                    self.post_file(&conversation.visitor_token, &rid, &id, attachment, fallback)
                        .await
                }
            };
            match posted {
                Ok(()) => *progress += 1,
                Err(err) if livechat::is_room_problem(&err) && new_rooms < 3 => {
                    // The agent closed the room (or it vanished): the next message opens a new one.
                    info!(conversation = %key, room = %rid, reason = err.error_type().unwrap_or("-"), "room is gone; opening a new one");
                    new_rooms += 1;
                    conversation.room = None;
                    self.ctx.store.update_conversation(key, |c| {
                        if c.room.as_ref() == Some(&rid) {
                            c.room = None;
                        }
                    })?;
                }
                Err(err) => return Err(err.into()),
            }
        }
        let was_held = conversation.held_since_ms.is_some();
        // Only the fields this relay owns: `conversation` is a copy from before the posts, and
        // the outbound relay may have closed the room or moved its watermark meanwhile.
        self.ctx.store.update_conversation(key, |c| {
            c.held_since_ms = None;
            c.offline_notice_sent = false;
        })?;
        if was_held {
            info!(conversation = %key, "held conversation delivered: an agent can take it now");
        }
        Ok(())
    }

    /// A customer's reaction set (or removed) on the reacted message as the bot's reaction (`true`),
    /// where Rocket.Chat lets the bot react there; otherwise it is posted as a line quoting the
    /// message. Messenger keeps one reaction per person and message, and its `unreact` may not
    /// name the emoji, so the current one is remembered per message.
    async fn react_in_place(
        &self,
        key: &ConversationKey,
        mid: &str,
        emoji: Option<&str>,
        react: bool,
    ) -> Result<bool, Failure> {
        let page = &key.page;
        // The page's messages were agents' replies; the customer's were posted under derived ids.
        let target = match self.ctx.store.sent(page, mid)? {
            Some(agent_message) => agent_message,
            None => {
                // Posted under an id derived from its `mid` and its room: the current room (a
                // message of an earlier, closed room cannot be reacted to there).
                let room = self.ctx.store.conversation(key)?.and_then(|c| c.room);
                let Some(rid) = room else {
                    return Ok(false);
                };
                render::message_id(page, &rid, &format!("m:{mid}"), 0)
            }
        };
        let previous = self.ctx.store.reaction(page, mid)?;
        // Removing takes the remembered emoji; an unknown emoji is shown as a line.
        let name = if react {
            match emoji.and_then(to_rocketchat_name) {
                Some(name) => Some(name),
                None => return Ok(false),
            }
        } else {
            None
        };
        let outcome = async {
            if let Some(previous) = previous.as_deref().filter(|p| Some(*p) != name.as_deref()) {
                self.ctx.rest.react(&target, previous, false).await?;
            }
            if let Some(name) = &name {
                self.ctx.rest.react(&target, name, true).await?;
            }
            Ok::<_, rest::Error>(())
        }
        .await;
        match outcome {
            Ok(()) if !react && previous.is_none() => Ok(false),
            Ok(()) => {
                self.ctx
                    .store
                    .put_reaction(page, mid, name.as_deref(), now_ms())?;
                Ok(true)
            }
            Err(err) if err.is_reaction_refused() => {
                self.reactions_degraded(key, &err);
                self.ctx.store.put_reaction(page, mid, None, now_ms())?;
                Ok(false)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Shows agents how far the customer has read, in the room's custom field
    /// [`READ_FIELD`], without a chat message per receipt. Needs the field created by an admin;
    /// without it receipts are dropped (and that is logged once).
    async fn mark_read(&self, key: &ConversationKey, watermark_ms: u64) -> Result<(), Failure> {
        let Some(conversation) = self.ctx.store.conversation(key)? else {
            return Ok(());
        };
        if conversation.room.is_none() {
            return Ok(());
        }
        let value = crate::rocketchat::dates::iso(watermark_ms);
        match self
            .ctx
            .rest
            .set_room_field(&conversation.visitor_token, READ_FIELD, &value)
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if err.is_unknown_custom_field() => {
                if !self
                    .reads_warned
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    warn!(conversation = %key, "read receipts are not shown: create the Omnichannel custom field {READ_FIELD} (scope Room) in Rocket.Chat to show agents when the customer read their replies");
                }
                Ok(())
            }
            Err(err) if livechat::is_room_problem(&err) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// Says once per run that customer reactions appear as lines, and what the bot lacks.
    fn reactions_degraded(&self, key: &ConversationKey, err: &rest::Error) {
        if !self
            .reactions_warned
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            warn!(conversation = %key, error = %err, "Rocket.Chat refused a customer's reaction; reactions are shown as lines in the room. To show them as reactions, give the bot's role the view-livechat-rooms permission");
        } else {
            debug!(conversation = %key, error = %err, "reaction shown as a line");
        }
    }

    /// A customer's edit changes the message in the room when Rocket.Chat lets the visitor edit
    /// it (`true`); otherwise the edit is posted as a new "(edited)" line. The message is the
    /// first part of the original, posted under the id derived from its `mid`.
    async fn edit_in_place(
        &self,
        key: &ConversationKey,
        meaning: &Event,
        conversation: &Conversation,
    ) -> Result<bool, Failure> {
        // An Instagram unsend changes the original to a mark and still posts its notice: the
        // edit depends on Rocket.Chat's message-editing settings, and files cannot be removed
        // with the visitor token, so the notice is what agents can rely on.
        let (mid, text, replaces_post) = match meaning {
            Event::Edit { mid, text } => (mid, text.as_str(), true),
            Event::Deleted { mid } => (mid, render::UNSENT_TEXT, false),
            _ => return Ok(false),
        };
        let Some(rid) = &conversation.room else {
            return Ok(false);
        };
        let original = render::message_id(&key.page, rid, &format!("m:{mid}"), 0);
        match self
            .ctx
            .rest
            .update_visitor_message(&conversation.visitor_token, rid, &original, text)
            .await
        {
            Ok(()) => Ok(replaces_post),
            Err(err) if err.is_edit_refused() || livechat::is_room_problem(&err) => {
                debug!(conversation = %key, reason = err.error_type().unwrap_or("-"), "edit posted as a new line");
                Ok(false)
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Waits until a 429's `X-RateLimit-Reset`; `false` (do not retry here) for any other
    /// failure, or when the gateway stops.
    async fn wait_out_limit(&self, err: &rest::Error) -> bool {
        let Some(wait) = err.retry_after() else {
            return false;
        };
        self.ctx.telemetry.rocketchat_error(err.kind());
        info!(error = %err, wait_ms = wait.as_millis() as u64, "new conversations are rate-limited by Rocket.Chat; waiting for the limit to reset");
        self.pause(wait).await;
        !self.ctx.cancel.is_cancelled()
    }

    /// Posts a customer's text; when Livechat's character limit refuses it, splits it under
    /// the limit `livechat/config` gives and posts the pieces in order, each with an id derived
    /// from the part's, so a retry finds the pieces already posted.
    async fn post_text(
        &self,
        token: &VisitorToken,
        rid: &RoomId,
        id: &crate::ids::MessageId,
        text: &str,
        pieces: Pieces<'_>,
    ) -> Result<(), rest::Error> {
        let err = match self
            .ctx
            .rest
            .send_visitor_message(token, rid, id, text)
            .await
        {
            Err(err) if err.refusal() == Some(livechat::Refusal::TooLong) => err,
            other => return other,
        };
        let Some(limit) = self.ctx.rest.livechat_text_limit(token).await? else {
            return Err(err);
        };
        let split = split_under(text, limit);
        if split.len() < 2 {
            return Err(err);
        }
        info!(room = %rid, limit, pieces = split.len(), "text longer than Livechat's character limit; posting it in pieces");
        for (n, piece) in split.iter().enumerate() {
            let id = render::message_id(
                pieces.page,
                rid,
                &format!("{}#{n}", pieces.dedupe),
                pieces.index,
            );
            if let Some(mid) = webhook::message_mid(pieces.dedupe) {
                // Best effort: without it an agent's reaction on this piece stays in the room.
                if let Err(err) = self.ctx.store.put_posted(&id, pieces.page, mid, now_ms()) {
                    warn!(room = %rid, error = %err, "cannot remember a posted piece");
                }
            }
            self.ctx
                .rest
                .send_visitor_message(token, rid, &id, piece)
                .await?;
        }
        Ok(())
    }

    /// Remembers which Messenger message a customer's post carries (messages only: their dedupe
    /// key is `m:<mid>`), so an agent's reaction on it reaches that `mid`. Written before the
    /// post, so a post Rocket.Chat has is always known.
    fn remember_posted(
        &self,
        key: &ConversationKey,
        id: &crate::ids::MessageId,
        dedupe: &str,
    ) -> Result<(), store::Error> {
        match webhook::message_mid(dedupe) {
            Some(mid) => self.ctx.store.put_posted(id, &key.page, mid, now_ms()),
            None => Ok(()),
        }
    }

    /// Whether the inbox holds an event of this conversation older than `event`.
    fn older_waiting(&self, key: &ConversationKey, event: &InboundEvent) -> Result<bool, Failure> {
        Ok(self
            .ctx
            .store
            .inbox()
            .oldest(key)?
            .is_some_and(|(_, oldest)| oldest.timestamp_ms < event.timestamp_ms))
    }

    /// The customer's name for the visitor record, looked up once while the room is not open.
    async fn visitor_name(&self, page: Option<&Page>, conversation: &Conversation) -> String {
        let token = &conversation.visitor_token;
        let known = self
            .names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned();
        if let Some(name) = known {
            return name;
        }
        let name = self
            .ctx
            .customer
            .display_name(page, &conversation.key.psid)
            .await;
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(token.clone(), name.clone());
        name
    }

    /// Registers the visitor unless this token was registered with this department already.
    async fn register_once(&self, visitor: &Visitor<'_>) -> Result<(), rest::Error> {
        let department = visitor.department.map(str::to_owned);
        let known = self
            .registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(visitor.token)
            .is_some_and(|d| *d == department);
        if known {
            return Ok(());
        }
        self.ctx.rest.register_visitor(visitor).await?;
        self.registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(visitor.token.clone(), department);
        Ok(())
    }

    /// The line that shows which message a reply answers: a link to it in the room. A page
    /// message is the agent's message the Send API answered with that `mid`; a customer's
    /// message has its id derived from its `mid` and the room, as for every relayed message.
    fn quote(&self, page: &PageId, rid: &RoomId, mid: &str) -> String {
        let agent_message = self.ctx.store.sent(page, mid).unwrap_or_else(|err| {
            warn!(error = %err, "cannot read which agent message was quoted; linking the customer's");
            None
        });
        let target =
            agent_message.unwrap_or_else(|| render::message_id(page, rid, &format!("m:{mid}"), 0));
        match self.ctx.rest.room_message_link(rid, &target) {
            Ok(url) => render::quote_line(url.as_str()),
            Err(_) => "↩️ _replying to an earlier message_".into(),
        }
    }

    /// The conversation's record, created with a fresh visitor token on first contact.
    fn conversation(&self, key: &ConversationKey) -> Result<Conversation, store::Error> {
        if let Some(existing) = self.ctx.store.conversation(key)? {
            return Ok(existing);
        }
        let conversation = Conversation {
            key: key.clone(),
            visitor_token: new_visitor_token(),
            room: None,
            last_inbound_ms: None,
            held_since_ms: None,
            offline_notice_sent: false,
            last_agent_message_ms: None,
        };
        self.ctx.store.put_conversation(&conversation)?;
        Ok(conversation)
    }

    /// The open room, registering the visitor and opening a room when there is none.
    async fn room(
        &self,
        page: Option<&Page>,
        conversation: &mut Conversation,
    ) -> Result<RoomId, Failure> {
        if let Some(rid) = &conversation.room {
            return Ok(rid.clone());
        }
        let key = conversation.key.clone();
        let department = page
            .and_then(|p| p.department.as_ref())
            .map(|d| d.id.clone());
        let name = self.visitor_name(page, conversation).await;
        let turn = self.opening.lock().await;
        let visitor = Visitor {
            token: &conversation.visitor_token,
            name: &name,
            department: department.as_deref(),
        };
        loop {
            match self.register_once(&visitor).await {
                Err(err) if self.wait_out_limit(&err).await => {}
                registered => break registered?,
            }
        }
        let opened = loop {
            match self
                .ctx
                .rest
                .visitor_room(&conversation.visitor_token)
                .await
            {
                Err(err) if self.wait_out_limit(&err).await => {}
                opened => break opened,
            }
        };
        drop(turn);
        let room = match opened {
            Ok(room) => room,
            Err(err) if err.is_no_agent_online() => {
                return Err(Failure::NoAgent { department });
            }
            Err(err) => return Err(err.into()),
        };
        // Kept only until the room is open, so the map stays as small as the conversations
        // waiting for a room; a later room registers again (the page's department may change).
        self.registered
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conversation.visitor_token);
        self.names
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&conversation.visitor_token);
        conversation.room = Some(room.rid.clone());
        self.ctx
            .store
            .update_conversation(&key, |c| c.room = Some(room.rid.clone()))?;
        self.outbound.watch(conversation).await;
        if room.created {
            info!(conversation = %key, room = %room.rid, department = department.as_deref().unwrap_or("-"), "conversation opened");
            if let Some(welcome) = page.and_then(|p| p.welcome.as_deref()) {
                self.ctx
                    .customer
                    .send_text(page, &key.psid, welcome, "welcome")
                    .await;
            }
        }
        Ok(room.rid)
    }

    /// Downloads a customer's file from Meta at once (its URLs expire) and uploads it to the
    /// room; posts the fallback text with the reason when either step fails for good.
    async fn post_file(
        &self,
        token: &VisitorToken,
        rid: &RoomId,
        id: &crate::ids::MessageId,
        attachment: &Attachment,
        fallback: &str,
    ) -> Result<(), rest::Error> {
        let url = attachment.url.as_deref().unwrap_or_default();
        let failure = match self.download(url).await {
            Ok((bytes, mime)) => {
                let name = render::file_name(url, &attachment.kind, &mime);
                match self
                    .ctx
                    .rest
                    .upload_visitor_file(token, rid, &name, &mime, bytes, None)
                    .await
                {
                    Ok(()) => return Ok(()),
                    Err(err) if err.is_retryable() || livechat::is_room_problem(&err) => {
                        return Err(err);
                    }
                    Err(err) => FileFallback::Refused(err),
                }
            }
            Err(reason) => reason,
        };
        warn!(room = %rid, kind = %attachment.kind, reason = %failure, "customer file posted as a link");
        let text = format!("{fallback}\n_({failure})_");
        self.ctx
            .rest
            .send_visitor_message(token, rid, id, &text)
            .await
    }

    async fn download(&self, url: &str) -> Result<(Vec<u8>, String), FileFallback> {
        let response = self
            .downloads
            .get(url)
            .send()
            .await
            .map_err(|e| FileFallback::Unreachable(e.without_url()))?;
        if !response.status().is_success() {
            return Err(FileFallback::Status(response.status().as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|n| n as usize > MAX_FILE_BYTES)
        {
            return Err(FileFallback::TooLarge);
        }
        let mime = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .unwrap_or("application/octet-stream")
            .trim()
            .to_owned();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| FileFallback::BrokeOff(e.without_url()))?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(FileFallback::TooLarge);
        }
        Ok((bytes.to_vec(), mime))
    }

    /// Marks the conversation held; the first time in a hold, the customer gets the page's
    /// offline message and the page's admins a notice.
    async fn hold(&self, key: &ConversationKey) -> Result<(), store::Error> {
        self.conversation(key)?;
        // Read-modify-write of the hold's own fields only: the outbound relay may be writing the
        // same record.
        let (mut newly_held, mut first_notice) = (false, false);
        self.ctx.store.update_conversation(key, |c| {
            newly_held = c.held_since_ms.is_none();
            first_notice = !c.offline_notice_sent;
            c.held_since_ms.get_or_insert_with(now_ms);
            c.offline_notice_sent = true;
        })?;
        if newly_held {
            self.ctx.telemetry.inbound_held();
            info!(conversation = %key, "no agent online: holding the conversation until one is");
        }
        if !first_notice {
            return Ok(());
        }
        self.ctx.store.sync().await?;
        let page = self.ctx.store.page(&key.page)?;
        if let Some(offline) = page.as_ref().and_then(|p| p.offline.as_deref()) {
            self.ctx
                .customer
                .send_text(page.as_ref(), &key.psid, offline, "offline")
                .await;
        }
        if let Some(page) = &page {
            let name = self.ctx.customer.display_name(Some(page), &key.psid).await;
            let text = format!(
                "No agent is online for page *{}*: the conversation with {name} is held. Its messages are kept in order and delivered as soon as an agent is available.",
                page.name
            );
            self.ctx.chat.notify(&page.subscribers, &text).await;
        }
        Ok(())
    }

    async fn pause(&self, wait: Duration) {
        pause(&self.ctx.cancel, wait).await;
    }
}

impl Direction for Inbound {
    type Item = InboundEvent;
    const QUEUE: &'static str = "inbox";
    // Redelivery after a crash is harmless: the message ids are derived from `mid`.
    const FLUSH_AFTER_REMOVE: bool = false;

    fn context(&self) -> &RelayContext {
        &self.ctx
    }

    fn workers(&self) -> &Workers {
        &self.workers
    }

    fn queue(store: &Store) -> Queue<'_, InboundEvent> {
        store.inbox()
    }

    async fn handle(
        &self,
        key: &ConversationKey,
        id: &QueueId,
        event: &InboundEvent,
        retry: &mut Backoff,
    ) -> Handled {
        self.deliver_until_accepted(key, id, event, retry).await
    }
}

/// What a text part's split pieces derive their ids from.
struct Pieces<'a> {
    page: &'a PageId,
    dedupe: &'a str,
    index: usize,
}

/// `text` in pieces of at most `limit` UTF-16 code units (the server compares `msg.length`),
/// cut at sentence or word ends where it can.
fn split_under(text: &str, limit: usize) -> Vec<String> {
    let mut max = limit;
    loop {
        let pieces = super::outbound::split_text(text, max);
        if max <= 1 || pieces.iter().all(|p| p.encode_utf16().count() <= limit) {
            return pieces;
        }
        max /= 2;
    }
}

/// Waits for agents to come online, with one `livechat/config` poller per department however
/// many conversations are held (the endpoint is rate-limited per IP).
struct AgentWatch {
    rest: RestClient,
    /// The daemon's tracker: shutdown waits for the pollers too.
    tasks: TaskTracker,
    cancel: CancellationToken,
    pollers: Arc<Mutex<HashMap<Option<String>, Arc<Notify>>>>,
}

impl AgentWatch {
    fn new(rest: RestClient, tasks: TaskTracker, cancel: CancellationToken) -> AgentWatch {
        AgentWatch {
            rest,
            tasks,
            cancel,
            pollers: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Returns once `livechat/config` says an agent of the department can take a conversation,
    /// or when the gateway stops.
    async fn wait_until_online(&self, department: Option<String>, cancel: &CancellationToken) {
        let notify = {
            let mut pollers = self.pollers.lock().unwrap_or_else(|e| e.into_inner());
            pollers
                .entry(department.clone())
                .or_insert_with(|| {
                    let notify = Arc::new(Notify::new());
                    self.tasks.spawn(poll_until_online(
                        self.rest.clone(),
                        department.clone(),
                        notify.clone(),
                        self.pollers.clone(),
                        self.cancel.clone(),
                    ));
                    notify
                })
                .clone()
        };
        let woken = notify.notified();
        tokio::pin!(woken);
        // Registered before the lock is gone from our hands' view: a poller that fires after
        // this line wakes us.
        woken.as_mut().enable();
        tokio::select! {
            _ = cancel.cancelled() => {}
            _ = woken => {}
        }
    }
}

async fn poll_until_online(
    rest: RestClient,
    department: Option<String>,
    notify: Arc<Notify>,
    pollers: Arc<Mutex<HashMap<Option<String>, Arc<Notify>>>>,
    cancel: CancellationToken,
) {
    // Any token works for the `online` flag; a throw-away one avoids creating a guest.
    let token = new_visitor_token();
    let mut backoff = Backoff::new(POLL_MIN, POLL_MAX);
    // A rate limit's wait is the server's word.
    let mut told: Option<Duration> = None;
    loop {
        let wait = told.take().unwrap_or_else(|| backoff.next_wait());
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        match rest.livechat_online(&token, department.as_deref()).await {
            Ok(true) => break,
            Ok(false) => {}
            Err(err) => {
                debug!(error = %err, "livechat/config poll failed");
                told = err.retry_after();
            }
        }
    }
    pollers
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&department);
    info!(
        department = department.as_deref().unwrap_or("any"),
        "an agent is online: delivering held conversations"
    );
    notify.notify_waiters();
}

/// A new random visitor token. It grants access to the visitor's room and files, so it is
/// random rather than derived from the PSID.
fn new_visitor_token() -> VisitorToken {
    let mut bytes = [0u8; 16];
    rand::rng().fill(&mut bytes);
    VisitorToken::new(format!("fb-{}", hex::encode(bytes)))
}
