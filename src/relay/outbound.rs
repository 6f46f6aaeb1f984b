//! Livechat → Messenger. The gateway watches every open room it created through a visitor
//! stream on its DDP connection; agent replies and the room's closing go to the store's outbox and
//! from there, one worker per conversation and in order, to the Send API.
//!
//! After any gap (a reconnect, a restart, a refused stream) every open room is caught up from
//! `livechat/messages.history`; the outbox refuses a Rocket.Chat message id it has seen before, so
//! the stream and the back-fill can overlap without sending a reply twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tracing::{debug, error, info, warn};

use super::agent_text::{reaction_emoji, to_messenger};
use super::render::QUOTE_MARK;
use super::typing::Typing;
use super::{
    Direction, Handled, MAX_FILE_BYTES, OutageLog, RETRY_MAX, RelayContext, Workers, pause,
};
use crate::backoff::Backoff;
use crate::health::now_ms;
use crate::ids::{ConversationKey, MessageId, RoomId};
use crate::messenger::graph::{
    self, AttachmentKind, Content, ErrorKind, GraphClient, Messaging, SendRequest, SenderAction,
};
use crate::rocketchat::ddp::{DdpClient, SubscriptionId};
use crate::rocketchat::realtime::{RoomMessage, RoomMessageKind};
use crate::store::{
    self, Conversation, OutboundItem, Page, PageReaction, PageStatus, Posted, Queue, QueueId,
    Store, TextLimit,
};
pub use crate::store::{AgentFile, Outgoing};

/// The standard messaging window, and the HUMAN_AGENT one.
const RESPONSE_WINDOW_MS: u64 = 24 * 3600 * 1000;
const HUMAN_AGENT_WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;
/// How often a page that needs authorization is looked at again.
const REAUTH_POLL: Duration = Duration::from_secs(2);
/// How many error answers from Meta one outbox item gets before it is given up (the waits
/// between them double from `RETRY_MIN`, so about eight seconds in all).
const SEND_ATTEMPTS: u32 = 5;
/// The `metadata` of the gateway's handover calls, which other apps see in their webhooks.
const HANDOVER_METADATA: &str = "omni-gateway: an agent answered in Rocket.Chat";
/// When a new room's history is read once, in case a reply beat the stream's subscription.
const NEW_STREAM_CATCH_UP: Duration = Duration::from_secs(1);

/// How one outbox item ended.
enum Sent {
    Delivered,
    /// Not sent, for a reason the agent must hear (already reported).
    Refused,
    /// The gateway is stopping.
    Stopped,
}

pub struct Outbound {
    ctx: RelayContext,
    graph: GraphClient,
    ddp: DdpClient,
    human_agent_tag: bool,
    streams: Mutex<HashMap<RoomId, SubscriptionId>>,
    /// The rooms' `user-activity` and `deleteMessage` subscriptions, beside `streams`.
    activity: Mutex<HashMap<RoomId, [SubscriptionId; 2]>>,
    /// The bot's username: its reactions in a room are the customer's, not an agent's.
    bot_username: String,
    typing: Typing,
    workers: Workers,
    outage: OutageLog,
}

impl Outbound {
    /// `human_agent_tag`: the app is approved for Meta's HUMAN_AGENT tag (bot.toml);
    /// `bot_username`: the gateway's own Rocket.Chat user.
    pub fn new(
        ctx: RelayContext,
        graph: GraphClient,
        ddp: DdpClient,
        human_agent_tag: bool,
        bot_username: String,
    ) -> Arc<Outbound> {
        let typing = Typing::start(
            graph.clone(),
            ctx.store.clone(),
            &ctx.tasks,
            ctx.cancel.clone(),
        );
        Arc::new(Outbound {
            ctx,
            graph,
            ddp,
            human_agent_tag,
            streams: Mutex::new(HashMap::new()),
            activity: Mutex::new(HashMap::new()),
            bot_username,
            typing,
            workers: Workers::default(),
            outage: OutageLog::new("facebook send api"),
        })
    }

    /// Starts watching a room the inbound relay just opened (idempotent).
    pub async fn watch(self: &Arc<Self>, conversation: &Conversation) {
        let Some(rid) = self.subscribe_room(conversation).await else {
            return;
        };
        // The stream is live a moment after the subscription is sent; a reply written in that
        // moment is caught up from history.
        let relay = self.clone();
        self.ctx.tasks.spawn(async move {
            relay.pause(NEW_STREAM_CATCH_UP).await;
            if !relay.ctx.cancel.is_cancelled() {
                relay.backfill_room(&rid).await;
            }
        });
    }

    /// Subscribes to a room's visitor stream unless already subscribed; the DDP client
    /// re-subscribes after every reconnect. Returns the room when it was newly subscribed.
    async fn subscribe_room(&self, conversation: &Conversation) -> Option<RoomId> {
        let rid = conversation.room.clone()?;
        if self.lock_streams().contains_key(&rid) {
            return None;
        }
        let id = self
            .ddp
            .watch_visitor_room(&rid, &conversation.visitor_token)
            .await;
        let previous = self.lock_streams().insert(rid.clone(), id);
        if let Some(previous) = previous {
            // Two callers raced; keep one subscription.
            self.ddp.unsubscribe(previous).await;
        }
        let token = &conversation.visitor_token;
        let activity = [
            self.ddp.watch_room_activity(&rid, token).await,
            self.ddp.watch_room_deletions(&rid, token).await,
        ];
        let previous = self.lock_activity().insert(rid.clone(), activity);
        for previous in previous.into_iter().flatten() {
            self.ddp.unsubscribe(previous).await;
        }
        Some(rid)
    }

    /// Watches every stored open room and resumes every pending outbox (start-up; the back-fill
    /// after the first login catches the rooms up).
    pub async fn resume(self: &Arc<Self>) -> Result<(), store::Error> {
        for conversation in self.ctx.store.conversations()? {
            self.subscribe_room(&conversation).await;
        }
        super::resume(self)?;
        Ok(())
    }

    /// A message of a room we watch, from its stream.
    pub async fn on_room_event(self: &Arc<Self>, rid: &RoomId, message: &RoomMessage) {
        if let Err(err) = self.take(rid, message).await {
            error!(room = %rid, error = %err, "cannot queue an agent message; back-fill will retry");
        }
    }

    /// A room stream was refused or ended (the room closed while we were away): catch up.
    pub async fn on_stream_failed(self: &Arc<Self>, id: SubscriptionId) {
        let rid = {
            let mut streams = self.lock_streams();
            let rid = streams
                .iter()
                .find(|(_, sub)| **sub == id)
                .map(|(rid, _)| rid.clone());
            if let Some(rid) = &rid {
                streams.remove(rid);
            }
            rid
        };
        if let Some(rid) = rid {
            self.backfill_room(&rid).await;
        }
    }

    /// Catches every open room up from its history (after a reconnect or a restart).
    pub async fn backfill_all(self: &Arc<Self>) {
        let rooms: Vec<RoomId> = match self.ctx.store.conversations() {
            Ok(all) => all.into_iter().filter_map(|c| c.room).collect(),
            Err(err) => {
                error!(error = %err, "cannot list conversations for the back-fill");
                return;
            }
        };
        for rid in rooms {
            if self.ctx.cancel.is_cancelled() {
                return;
            }
            self.backfill_room(&rid).await;
        }
    }

    async fn backfill_room(self: &Arc<Self>, rid: &RoomId) {
        let conversation = match self.ctx.store.conversation_by_room(rid) {
            Ok(Some(conversation)) => conversation,
            Ok(None) => return,
            Err(err) => {
                error!(room = %rid, error = %err, "cannot read the conversation for the back-fill");
                return;
            }
        };
        // Inclusive of the watermark's millisecond: another message may share it. What was
        // already queued is refused by the outbox, so re-reading it is harmless.
        let since = conversation
            .last_agent_message_ms
            .unwrap_or(1)
            .saturating_sub(1);
        let Some(messages) = self
            .room_history_until_read(&conversation, rid, since)
            .await
        else {
            return;
        };
        let mut caught_up = 0;
        for message in messages {
            match self.take(rid, &message).await {
                Ok(true) => caught_up += 1,
                Ok(false) => {}
                Err(err) => {
                    error!(room = %rid, error = %err, "cannot queue a back-filled message")
                }
            }
        }
        if caught_up > 0 {
            info!(room = %rid, messages = caught_up, "back-filled agent messages missed while away");
        }
    }

    /// Reads a room's history since `since`, waiting out 429s: every room shares one
    /// `livechat/messages.history/:rid` bucket per client IP (the limiter's key is the route
    /// pattern, `apps/meteor/app/api/server/ApiClass.ts`), so after a reconnect with more open
    /// rooms than the bucket holds, the rest wait until `X-RateLimit-Reset` instead of losing
    /// their replies. `None` when another failure (or shutdown) ends it; the next reconnect
    /// retries those.
    async fn room_history_until_read(
        &self,
        conversation: &Conversation,
        rid: &RoomId,
        since: u64,
    ) -> Option<Vec<RoomMessage>> {
        loop {
            if self.ctx.cancel.is_cancelled() {
                return None;
            }
            match self
                .ctx
                .rest
                .room_history(&conversation.visitor_token, rid, since)
                .await
            {
                Ok(messages) => return Some(messages),
                Err(err) => match err.retry_after() {
                    Some(wait) => {
                        info!(room = %rid, wait_ms = wait.as_millis() as u64, "back-fill rate-limited; reading this room once the limit resets");
                        self.pause(wait).await;
                    }
                    None => {
                        warn!(room = %rid, error = %err, "back-fill failed; the next reconnect retries");
                        return None;
                    }
                },
            }
        }
    }

    /// Queues one Rocket.Chat message of a watched room if it is for the customer. `Ok(true)` when
    /// it was new.
    async fn take(
        self: &Arc<Self>,
        rid: &RoomId,
        message: &RoomMessage,
    ) -> Result<bool, store::Error> {
        let Some(conversation) = self.ctx.store.conversation_by_room(rid)? else {
            debug!(room = %rid, "message for a room no conversation uses (any more)");
            return Ok(false);
        };
        if message.from_visitor {
            // The customer's own message: only the agents' reactions on it travel.
            return self.take_reactions(&conversation, rid, message).await;
        }
        if message.kind == RoomMessageKind::Removed {
            self.deleted_after_sending(&conversation, rid, &message.id)
                .await?;
            return Ok(false);
        }
        let Some(outgoing) = classify(message) else {
            return Ok(false);
        };
        let key = conversation.key.clone();
        let item = OutboundItem {
            key: key.clone(),
            rc_message_id: message.id.clone(),
            room: rid.clone(),
            agent_username: match &outgoing {
                Outgoing::Reply { agent, .. } => Some(agent.clone()),
                Outgoing::Close { .. } | Outgoing::React { .. } => None,
            },
            created_ms: outgoing.ts_ms(),
            payload: outgoing,
        };
        let closing = matches!(item.payload, Outgoing::Close { .. });
        if !self.ctx.store.enqueue_outbound(item)? {
            if message.edited {
                self.edited_after_sending(&key, message).await?;
            }
            return Ok(false);
        }
        self.ctx.store.update_conversation(&key, |c| {
            // The back-fill after a gap starts here.
            c.last_agent_message_ms = Some(c.last_agent_message_ms.unwrap_or(0).max(message.ts_ms));
            // After a close the next customer message must open a new room (with a new welcome).
            if closing && c.room.as_ref() == Some(rid) {
                c.room = None;
            }
        })?;
        if closing {
            let stream = self.lock_streams().remove(rid);
            if let Some(stream) = stream {
                self.ddp.unsubscribe(stream).await;
            }
            let activity = self.lock_activity().remove(rid);
            for activity in activity.into_iter().flatten() {
                self.ddp.unsubscribe(activity).await;
            }
            info!(conversation = %key, room = %rid, "room closed by an agent");
        }
        self.ctx.store.sync().await?;
        self.wake(&key);
        Ok(true)
    }

    /// An agent changed a reply that is already on its way: Messenger has no way to change a
    /// page's message, so the agent hears it, once per message.
    async fn edited_after_sending(
        &self,
        key: &ConversationKey,
        message: &RoomMessage,
    ) -> Result<(), store::Error> {
        if !self.ctx.store.first_edit_notice(&message.id, now_ms())? {
            return Ok(());
        }
        self.ctx.store.sync().await?;
        info!(conversation = %key, message = %message.id, "agent edited a reply already sent to Messenger");
        let text = format!(
            "You edited a reply that was already sent to the customer on Messenger: “{}”\nMessenger cannot change a sent message; the customer keeps the first version. Send a new message to correct it.",
            preview(&to_messenger(&message.text))
        );
        // Not on the stream's path: a notice retries while Rocket.Chat is away.
        let chat = self.ctx.chat.clone();
        let agent = [message.author_username.clone()];
        self.ctx.tasks.spawn(async move {
            chat.notify(&agent, &text).await;
        });
        Ok(())
    }

    /// Queues the page's reaction on a customer's message when the agents' reactions on it
    /// changed (see [`page_reaction`]). Only messages the relay posted are known by their `mid`;
    /// the bot's own reactions there are the customer's (see `relay::inbound`). `Ok(true)` when
    /// a change was queued.
    async fn take_reactions(
        self: &Arc<Self>,
        conversation: &Conversation,
        rid: &RoomId,
        message: &RoomMessage,
    ) -> Result<bool, store::Error> {
        let key = &conversation.key;
        let Some(Posted { page, mid, .. }) = self.ctx.store.posted(&message.id)? else {
            return Ok(false);
        };
        if page != key.page {
            return Ok(false);
        }
        // Each standard emoji with the last agent who chose it; a server's custom emoji has no
        // Unicode form Messenger could show.
        let reactions: Vec<(&str, &str)> = message
            .reactions
            .iter()
            .filter(|r| reaction_emoji(&r.name).is_some())
            .filter_map(|r| {
                let agent = r.usernames.iter().rfind(|u| **u != self.bot_username)?;
                Some((r.name.as_str(), agent.as_str()))
            })
            .collect();
        let names: Vec<String> = reactions.iter().map(|(n, _)| (*n).to_owned()).collect();
        // Ordered with the replies by Rocket.Chat's clock: the change is when the message was.
        let ts_ms = message.updated_ms.unwrap_or_else(now_ms);
        let queued = self
            .ctx
            .store
            .enqueue_page_reaction(&message.id, |before| {
                let after = page_reaction(before, &names, ts_ms)?;
                let item = (after.shown != before.shown).then(|| OutboundItem {
                    key: key.clone(),
                    rc_message_id: message.id.clone(),
                    room: rid.clone(),
                    agent_username: after.shown.as_deref().and_then(|shown| {
                        reactions
                            .iter()
                            .find(|(name, _)| *name == shown)
                            .map(|(_, agent)| (*agent).to_owned())
                    }),
                    created_ms: ts_ms,
                    payload: Outgoing::React {
                        mid: mid.clone(),
                        emoji: after
                            .shown
                            .as_deref()
                            .and_then(reaction_emoji)
                            .map(str::to_owned),
                        ts_ms,
                    },
                });
                Some((after, item))
            })?;
        if queued {
            self.ctx.store.sync().await?;
            self.wake(key);
        }
        Ok(queued)
    }

    /// A message of a watched room was deleted (`<rid>/deleteMessage` on the room's
    /// `stream-notify-room`).
    pub async fn on_deleted(self: &Arc<Self>, rid: &RoomId, id: &MessageId) {
        let conversation = match self.ctx.store.conversation_by_room(rid) {
            Ok(Some(conversation)) => conversation,
            Ok(None) => return,
            Err(err) => {
                error!(room = %rid, error = %err, "cannot read the conversation of a deleted message");
                return;
            }
        };
        if let Err(err) = self.deleted_after_sending(&conversation, rid, id).await {
            error!(room = %rid, error = %err, "cannot note a deleted reply");
        }
    }

    /// An agent deleted a reply that was sent to Messenger (or is on its way): Messenger cannot
    /// unsend a page's message, so the room hears it, once per message. The notice is the bot's
    /// message in the room under an id derived from the deleted one, so it is never relayed to
    /// the customer (`render::is_derived_id`) and a repeat cannot post it twice; posting in a
    /// Livechat room takes the `view-livechat-rooms` permission (as the Page Inbox replies do),
    /// without which the page's admins are told by direct message instead.
    async fn deleted_after_sending(
        &self,
        conversation: &Conversation,
        rid: &RoomId,
        id: &MessageId,
    ) -> Result<(), store::Error> {
        if !self.ctx.store.was_relayed(id)? || !self.ctx.store.first_delete_notice(id, now_ms())? {
            return Ok(());
        }
        self.ctx.store.sync().await?;
        let key = conversation.key.clone();
        info!(conversation = %key, message = %id, "agent deleted a reply already sent to Messenger");
        let notice = super::render::message_id(&key.page, rid, &format!("deleted:{id}"), 0);
        const UNSENT: &str =
            "Messenger cannot unsend a page's message: the customer still sees it.";
        let text = format!(
            "A reply deleted here was already sent to the customer on Messenger. {UNSENT} Send a new message if it needs correcting."
        );
        let rest = self.ctx.rest.clone();
        let chat = self.ctx.chat.clone();
        let (admins, page_name) = match self.ctx.store.page(&key.page)? {
            Some(page) => (page.subscribers, page.name),
            None => (Vec::new(), key.page.to_string()),
        };
        let rid = rid.clone();
        // Not on the stream's path: the notice may wait for Rocket.Chat.
        self.ctx.tasks.spawn(async move {
            if let Err(err) = rest.send_message(&notice, &rid, &text).await {
                warn!(conversation = %key, room = %rid, error = %err, "cannot tell the room a deleted reply stays in Messenger; telling the page's admins (the bot needs the view-livechat-rooms permission to post in Omnichannel rooms)");
                let text = format!(
                    "A reply deleted in Livechat room {rid} (page *{page_name}*) was already sent to the customer on Messenger. {UNSENT}\nWhat to do: tell the agent; to have the bot say this in the room itself, grant its role the view-livechat-rooms permission."
                );
                chat.notify(&admins, &text).await;
            }
        });
        Ok(())
    }

    fn wake(self: &Arc<Self>, key: &ConversationKey) {
        super::wake(self, key);
    }

    fn lock_activity(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, [SubscriptionId; 2]>> {
        self.activity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Someone typing in a watched room: the customer sees "typing…" (see `relay::typing`).
    /// The visitor is the gateway itself and never types, so every activity is an agent's.
    pub async fn on_activity(&self, rid: &RoomId, typing: bool) {
        match self.ctx.store.conversation_by_room(rid) {
            Ok(Some(conversation)) => self.typing.activity(&conversation.key, typing).await,
            Ok(None) => {}
            Err(err) => debug!(room = %rid, error = %err, "typing indicator skipped"),
        }
    }

    fn lock_streams(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, SubscriptionId>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends one item, retrying what can succeed later, holding while the page needs authorization.
    async fn send(&self, key: &ConversationKey, item: &OutboundItem, retry: &mut Backoff) -> Sent {
        let outgoing = &item.payload;
        retry.reset();
        // Parts of a reply already sent, so a retry does not repeat them.
        let mut progress = 0;
        // Error answers from Meta for this item: every code is retried a bounded number of times.
        let mut answers = 0;
        loop {
            if self.ctx.cancel.is_cancelled() {
                return Sent::Stopped;
            }
            let page = match self.ctx.store.page(&key.page) {
                Ok(page) => page,
                Err(err) => {
                    error!(conversation = %key, error = %err, "cannot read the page");
                    self.pause(RETRY_MAX).await;
                    continue;
                }
            };
            let Some(page) = page else {
                return self
                    .refuse(
                        key,
                        item,
                        outgoing,
                        "the page is no longer connected to the gateway",
                        "Reconnect it with `/facebook authorize`.",
                    )
                    .await;
            };
            if !matches!(page.status, PageStatus::Connected) || page.token.is_none() {
                // Held until an admin re-authorizes the page; then it resumes by itself.
                self.pause(REAUTH_POLL).await;
                continue;
            }
            let result = match outgoing {
                Outgoing::Close { .. } => self.send_finished(&page, key, item).await,
                Outgoing::Reply { .. } => {
                    self.send_reply(&page, key, item, outgoing, &mut progress)
                        .await
                }
                Outgoing::React { mid, emoji, .. } => {
                    self.send_reaction(&page, key, mid, emoji.as_deref()).await
                }
            };
            let failure = match result {
                Ok(()) => {
                    self.outage.recovered();
                    return Sent::Delivered;
                }
                Err(failure) => failure,
            };
            if let Some((reason, fix)) = self.after_failure(key, failure, retry, &mut answers).await
            {
                return self.refuse(key, item, outgoing, &reason, fix).await;
            }
        }
    }

    /// Deals with a failed attempt: waits before the retry (`None`), or gives the reason and the
    /// fix of a final refusal. `answers` counts Meta's error answers for this item: after
    /// [`SEND_ATTEMPTS`] of them the item is given up, so a code that never heals (code 2 when the
    /// person blocked the page) does not hold the conversation's later replies.
    async fn after_failure(
        &self,
        key: &ConversationKey,
        failure: Failure,
        retry: &mut Backoff,
        answers: &mut u32,
    ) -> Option<(String, &'static str)> {
        match failure {
            Failure::Window { reason, fix } => Some((reason.to_string(), fix)),
            Failure::File(reason) => Some((
                reason.to_string(),
                "Send the file again, or describe it in text.",
            )),
            Failure::Store(err) => {
                error!(conversation = %key, error = %err, "cannot read the conversation; retrying");
                self.pause(RETRY_MAX).await;
                None
            }
            Failure::Graph(err) => {
                self.ctx.telemetry.reply_failed(&err);
                if err.is_answer() {
                    *answers += 1;
                }
                let given_up = *answers >= SEND_ATTEMPTS;
                match err.kind() {
                    ErrorKind::TokenInvalid => {
                        self.ctx.customer.token_invalid(&key.page, &err).await;
                        None
                    }
                    ErrorKind::Transient if given_up => Some((
                        format!(
                            "{} (tried {SEND_ATTEMPTS} times)",
                            err.plain_reason()
                                .map(str::to_owned)
                                .unwrap_or_else(|| err.to_string())
                        ),
                        "The reply was given up so the conversation's later replies are not held up; send it again later, or reach the customer another way.",
                    )),
                    ErrorKind::ThreadOwnedElsewhere if given_up => Some((
                        err.describe(),
                        "The gateway took the conversation but Messenger still refused; an admin should check the page's Conversation routing in its Meta settings.",
                    )),
                    ErrorKind::ThreadOwnedElsewhere => self.take_thread(key).await,
                    ErrorKind::Transient | ErrorKind::RateLimited => {
                        self.outage.failed(&err.describe());
                        let backoff = retry.next_wait();
                        let wait = err.retry_after().unwrap_or(backoff);
                        self.pause(wait).await;
                        None
                    }
                    ErrorKind::OutsideWindow => Some((
                        err.describe(),
                        "Messenger only allows replies within 24 hours of the customer's last message; wait for the customer to write again.",
                    )),
                    ErrorKind::Final => Some((
                        err.describe(),
                        "Facebook refused this message; it will not be retried.",
                    )),
                }
            }
        }
    }

    /// Another app controls the conversation: take it (allowed when this app is the page's
    /// primary receiver) and let the caller send again at once (`None`); otherwise ask for it
    /// and give the agent the reason (`docs/messenger.md` §7).
    async fn take_thread(&self, key: &ConversationKey) -> Option<(String, &'static str)> {
        let page = match self.ctx.store.page(&key.page) {
            Ok(Some(page)) => page,
            Ok(None) => return None,
            Err(err) => {
                error!(conversation = %key, error = %err, "cannot read the page");
                self.pause(RETRY_MAX).await;
                return None;
            }
        };
        let token = page.token.as_ref()?;
        let owner = self
            .ctx
            .threads
            .other_owner(key)
            .unwrap_or_else(|| "another app (the Page Inbox or a bot)".to_owned());
        // `app_roles` said the app is not the primary receiver: taking would be refused.
        if self.ctx.threads.is_primary(&key.page) != Some(false) {
            match self
                .graph
                .take_thread_control(page.send_node(), token, &key.psid, HANDOVER_METADATA)
                .await
            {
                Ok(()) => {
                    info!(conversation = %key, "took thread control to send an agent's reply");
                    self.ctx.threads.taken(key);
                    return None;
                }
                Err(err) => {
                    info!(conversation = %key, error = %err.describe(), "cannot take thread control; requesting it");
                }
            }
        }
        let asked = self
            .graph
            .request_thread_control(page.send_node(), token, &key.psid, HANDOVER_METADATA)
            .await;
        let reason = format!(
            "{owner} controls this conversation in Messenger, and the gateway's app is not the page's primary receiver, so it cannot take it"
        );
        Some(match asked {
            Ok(()) => (
                reason,
                "The gateway asked for the conversation; send your reply again once it is passed (or answer from the Page Inbox). To stop this, an admin can make the gateway's app the page's primary receiver in the page's Conversation routing settings.",
            ),
            Err(err) => {
                warn!(conversation = %key, error = %err.describe(), "request_thread_control failed");
                (
                    reason,
                    "Answer from the Page Inbox, or have an admin make the gateway's app the page's primary receiver in the page's Conversation routing settings.",
                )
            }
        })
    }

    async fn send_finished(
        &self,
        page: &Page,
        key: &ConversationKey,
        item: &OutboundItem,
    ) -> Result<(), Failure> {
        let Some(text) = page.finished.as_deref() else {
            return Ok(());
        };
        let conversation = self.ctx.store.conversation(key)?;
        let messaging =
            policy(conversation.as_ref(), now_ms(), false, false).map_err(|_| Failure::Window {
                reason: OutsideWindow::FinishedTooLate,
                fix: "The conversation finished message was not sent.",
            })?;
        self.send_text(page, key, text, messaging, send_metadata(item, 0))
            .await
            .map(|_| ())
    }

    /// The page's reaction on the customer's message: `react` with the emoji, or `unreact`.
    /// A person's gesture, so the window is a person's reply's. Meta answers either call the
    /// same way when repeated, so a retry after a lost answer changes nothing.
    async fn send_reaction(
        &self,
        page: &Page,
        key: &ConversationKey,
        mid: &str,
        emoji: Option<&str>,
    ) -> Result<(), Failure> {
        let Some(token) = &page.token else {
            return Ok(());
        };
        let conversation = self.ctx.store.conversation(key)?;
        policy(conversation.as_ref(), now_ms(), self.human_agent_tag, false).map_err(|reason| {
            Failure::Window {
                reason,
                fix: "Messenger shows a page's reactions only while it may answer the customer; wait for the customer to write again.",
            }
        })?;
        self.graph
            .react(page.send_node(), token, &key.psid, mid, emoji)
            .await
            .map_err(Failure::Graph)
    }

    async fn send_reply(
        &self,
        page: &Page,
        key: &ConversationKey,
        item: &OutboundItem,
        outgoing: &Outgoing,
        progress: &mut usize,
    ) -> Result<(), Failure> {
        let Outgoing::Reply {
            text,
            files,
            automated,
            ..
        } = outgoing
        else {
            return Ok(());
        };
        let conversation = self.ctx.store.conversation(key)?;
        let messaging = policy(conversation.as_ref(), now_ms(), self.human_agent_tag, *automated).map_err(|reason| {
            Failure::Window {
                reason,
                fix: if self.human_agent_tag {
                    "Messenger allows a person's reply up to 7 days after the customer's last message; wait for the customer to write again."
                } else {
                    "Messenger allows replies within 24 hours of the customer's last message; wait for the customer to write again. (An app approved for the HUMAN_AGENT tag can reply for 7 days: set human_agent_tag = true.)"
                },
            }
        })?;
        self.typing.replied(key);
        if *progress == 0 {
            // Best effort: the customer sees their messages were read.
            if let Some(token) = &page.token {
                if let Err(err) = self
                    .graph
                    .sender_action(page.send_node(), token, &key.psid, SenderAction::MarkSeen)
                    .await
                {
                    debug!(conversation = %key, error = %err.describe(), "mark_seen failed");
                }
            }
        }
        let chunks = match page.text_limit() {
            TextLimit::Chars(max) => split_text(text, max),
            TextLimit::Bytes(max) => split_text_bytes(text, max),
        };
        let total = chunks.len() + files.len();
        while *progress < total {
            // Meta echoed this part already: an earlier attempt that got no answer was delivered.
            if self.ctx.store.was_echoed(&sent_part(item, *progress))? {
                info!(conversation = %key, message = %item.rc_message_id, part = *progress, "already delivered (echoed); not sent again");
                *progress += 1;
                continue;
            }
            let message_id = if *progress < chunks.len() {
                let metadata = send_metadata(item, *progress);
                self.send_text(page, key, &chunks[*progress], messaging, metadata)
                    .await?
            } else {
                let file = &files[*progress - chunks.len()];
                self.send_file(page, key, item, file, messaging).await?
            };
            *progress += 1;
            self.remember_sent(key, message_id.as_deref(), item);
        }
        Ok(())
    }

    /// Keeps which agent message Meta's `message_id` carried, so a customer who replies to it in
    /// Messenger (`reply_to.mid`) is shown replying to that agent message in the room. Best
    /// effort: the reply itself was delivered either way.
    fn remember_sent(&self, key: &ConversationKey, message_id: Option<&str>, item: &OutboundItem) {
        let Some(message_id) = message_id else {
            return;
        };
        if let Err(err) =
            self.ctx
                .store
                .put_sent(&key.page, message_id, &item.rc_message_id, now_ms())
        {
            warn!(conversation = %key, error = %err, "cannot remember a sent message; a customer's reply to it will not link to it");
        }
    }

    async fn send_text(
        &self,
        page: &Page,
        key: &ConversationKey,
        text: &str,
        messaging: Messaging,
        metadata: String,
    ) -> Result<Option<String>, Failure> {
        let Some(token) = &page.token else {
            return Ok(None);
        };
        let request = SendRequest {
            recipient: key.psid.clone(),
            messaging,
            content: Content::Text(text.to_owned()),
            // Instagram neither lists `metadata` nor echoes it (docs/instagram.md §6.1).
            metadata: (!page.is_instagram()).then_some(metadata),
        };
        self.graph
            .send_message(page.send_node(), token, &request)
            .await
            .map(|sent| Some(sent.message_id))
            .map_err(Failure::Graph)
    }

    /// Downloads an agent's file from Rocket.Chat as the room's visitor (the bot is not a member)
    /// and uploads it to Meta as multipart, so no URL (and no token) is handed to Meta.
    async fn send_file(
        &self,
        page: &Page,
        key: &ConversationKey,
        item: &OutboundItem,
        file: &AgentFile,
        messaging: Messaging,
    ) -> Result<Option<String>, Failure> {
        let Some(token) = &page.token else {
            return Ok(None);
        };
        let conversation = self
            .ctx
            .store
            .conversation(key)?
            .ok_or(Failure::File(FileProblem::ConversationGone))?;
        let bytes = self
            .ctx
            .rest
            .download_as_visitor(&file.path, &conversation.visitor_token, &item.room)
            .await
            .map_err(|err| Failure::File(FileProblem::Unreadable(err)))?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(Failure::File(FileProblem::TooLarge(file.name.clone())));
        }
        let kind = AttachmentKind::from_mime(&file.mime);
        if page.is_instagram() {
            return self
                .send_instagram_file(page, token, key, file, messaging, bytes)
                .await;
        }
        self.graph
            .send_attachment(
                page.send_node(),
                token,
                &key.psid,
                &messaging,
                kind,
                &file.name,
                &file.mime,
                Bytes::from(bytes),
            )
            .await
            .map(|sent| Some(sent.message_id))
            .map_err(Failure::Graph)
    }

    /// Instagram takes a file as an upload to `message_attachments`, then a send that names its
    /// `attachment_id` (`docs/instagram.md` §6.4). The kind, format, size and name rules were
    /// checked before the download (see [`instagram_file_problem`]); the size is checked again on
    /// the bytes.
    async fn send_instagram_file(
        &self,
        page: &Page,
        token: &secrecy::SecretString,
        key: &ConversationKey,
        file: &AgentFile,
        messaging: Messaging,
        bytes: Vec<u8>,
    ) -> Result<Option<String>, Failure> {
        let (kind, max) = instagram_kind(&file.mime, &file.name)
            .map_err(|reason| Failure::File(FileProblem::Instagram(reason)))?;
        if bytes.len() > max {
            return Err(Failure::File(FileProblem::Instagram(format!(
                "{} is larger than Instagram's {} MB limit for {}s",
                file.name,
                max >> 20,
                kind.as_str()
            ))));
        }
        let id = self
            .graph
            .upload_attachment(
                page.send_node(),
                token,
                kind,
                &file.name,
                &file.mime,
                Bytes::from(bytes),
            )
            .await
            .map_err(Failure::Graph)?;
        let request = SendRequest {
            recipient: key.psid.clone(),
            messaging,
            content: Content::AttachmentId { kind, id },
            metadata: None,
        };
        self.graph
            .send_message(page.send_node(), token, &request)
            .await
            .map(|sent| Some(sent.message_id))
            .map_err(Failure::Graph)
    }

    /// Reports a reply that will not be delivered to its agent and the page's admins.
    async fn refuse(
        &self,
        key: &ConversationKey,
        item: &OutboundItem,
        outgoing: &Outgoing,
        reason: &str,
        fix: &str,
    ) -> Sent {
        warn!(conversation = %key, message = %item.rc_message_id, reason, "reply not delivered to Messenger");
        self.ctx.telemetry.reply_refused();
        let page = match self.ctx.store.page(&key.page) {
            Ok(page) => page,
            Err(err) => {
                // The notice still goes to the agent; only the page's admins are unknown.
                error!(conversation = %key, error = %err, "cannot read the page for the refusal notice");
                None
            }
        };
        let customer = self
            .ctx
            .customer
            .display_name(page.as_ref(), &key.psid)
            .await;
        let page_name = page
            .as_ref()
            .map(Page::label)
            .unwrap_or_else(|| key.page.to_string());
        let what = match outgoing {
            Outgoing::Reply { text, .. } => format!(
                "Your reply to {customer} (page *{page_name}*) was not delivered: “{}”",
                preview(text)
            ),
            Outgoing::Close { .. } => format!(
                "The conversation finished message to {customer} (page *{page_name}*) was not delivered"
            ),
            Outgoing::React {
                emoji: Some(emoji), ..
            } => format!(
                "Your reaction {emoji} to a message of {customer} (page *{page_name}*) was not shown in Messenger"
            ),
            Outgoing::React { emoji: None, .. } => format!(
                "The page's reaction to a message of {customer} (page *{page_name}*) was not removed in Messenger"
            ),
        };
        // The shared reasons and fixes name Messenger; an Instagram customer is on Instagram,
        // whose window and tag rules are the same (docs/instagram.md §6.3).
        let product = |words: &str| match &page {
            Some(page) if page.is_instagram() => words.replace("Messenger", "Instagram"),
            _ => words.to_owned(),
        };
        let text = format!(
            "{what}\nWhy: {}\nWhat to do: {}",
            product(reason),
            product(fix)
        );
        let mut recipients: Vec<String> = item.agent_username.iter().cloned().collect();
        if let Some(page) = &page {
            for admin in &page.subscribers {
                if !recipients.contains(admin) {
                    recipients.push(admin.clone());
                }
            }
        }
        self.ctx.chat.notify(&recipients, &text).await;
        Sent::Refused
    }

    async fn pause(&self, wait: Duration) {
        pause(&self.ctx.cancel, wait).await;
    }
}

impl Direction for Outbound {
    type Item = OutboundItem;
    const QUEUE: &'static str = "outbox";
    // A crash after a send but before the flush would send the reply again: keep the window
    // small.
    const FLUSH_AFTER_REMOVE: bool = true;

    fn context(&self) -> &RelayContext {
        &self.ctx
    }

    fn workers(&self) -> &Workers {
        &self.workers
    }

    fn queue(store: &Store) -> Queue<'_, OutboundItem> {
        store.outbox()
    }

    async fn handle(
        &self,
        key: &ConversationKey,
        _id: &QueueId,
        item: &OutboundItem,
        retry: &mut Backoff,
    ) -> Handled {
        let started = tokio::time::Instant::now();
        match self.send(key, item, retry).await {
            Sent::Stopped => Handled::Stopped,
            // A reaction is not a reply: the reply metrics leave it out.
            Sent::Delivered if matches!(item.payload, Outgoing::React { .. }) => Handled::Done,
            Sent::Delivered => {
                self.ctx
                    .telemetry
                    .reply_sent(started.elapsed().as_secs_f64());
                Handled::Done
            }
            Sent::Refused => Handled::Done,
        }
    }
}

/// Why one attempt to send an outbox item did not finish.
#[derive(thiserror::Error, Debug)]
enum Failure {
    #[error(transparent)]
    Graph(graph::Error),
    /// Outside the messaging window: why, and what the agent can do.
    #[error("{reason}")]
    Window {
        reason: OutsideWindow,
        fix: &'static str,
    },
    #[error(transparent)]
    File(FileProblem),
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Why an agent's file cannot be sent to Messenger.
#[derive(thiserror::Error, Debug)]
enum FileProblem {
    #[error("the conversation is gone")]
    ConversationGone,
    #[error("the file could not be read from Rocket.Chat: {0}")]
    Unreadable(crate::rocketchat::rest::Error),
    #[error("{0} is larger than Messenger's 25 MB limit")]
    TooLarge(String),
    /// A file Instagram does not take (kind, format, size or name).
    #[error("{0}")]
    Instagram(String),
}

/// The attachment kind and size limit Instagram takes for a file of this type, or why it takes
/// none (`docs/instagram.md` §6.4: png/jpeg/gif images up to 8 MB; mp4/ogg/avi/mov/webm video and
/// aac/m4a/wav/mp4 audio up to 25 MB; documents only as PDF up to 25 MB; ASCII file names).
pub fn instagram_kind(mime: &str, name: &str) -> Result<(AttachmentKind, usize), String> {
    const MB: usize = 1 << 20;
    if !name.is_ascii() {
        return Err(format!(
            "Instagram accepts only file names in plain ASCII letters; rename “{name}” and send it again"
        ));
    }
    let mime = mime.to_ascii_lowercase();
    let extension = name
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    let subtype = mime.split('/').nth(1).unwrap_or_default();
    let is = |formats: &[&str]| formats.contains(&subtype) || formats.contains(&extension.as_str());
    let kind = AttachmentKind::from_mime(&mime);
    let accepted = match kind {
        AttachmentKind::Image => is(&["png", "jpeg", "jpg", "gif"]).then_some(8 * MB),
        AttachmentKind::Video => {
            is(&["mp4", "ogg", "avi", "mov", "quicktime", "webm"]).then_some(25 * MB)
        }
        AttachmentKind::Audio => {
            is(&["aac", "m4a", "x-m4a", "wav", "x-wav", "mp4"]).then_some(25 * MB)
        }
        AttachmentKind::File => is(&["pdf"]).then_some(25 * MB),
    };
    match (accepted, kind) {
        (Some(max), kind) => Ok((kind, max)),
        (None, AttachmentKind::File) => Err(format!(
            "Instagram accepts only PDF documents, and {name} is not one; send it as a PDF or as a link"
        )),
        (None, kind) => Err(format!(
            "Instagram does not take {name} as a {} (it accepts png, jpeg and gif images, mp4, ogg, avi, mov and webm videos, aac, m4a, wav and mp4 audio); convert it or send a link",
            kind.as_str()
        )),
    }
}

/// Why the Send API policy refuses a message (see [`policy`]).
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum OutsideWindow {
    #[error("the customer has not written to the page yet")]
    NeverWrote,
    #[error("the customer last wrote {}, outside Messenger's {}-{} window", age(*hours), if *human_agent { 7 } else { 24 }, if *human_agent { "day" } else { "hour" })]
    TooLate { hours: u64, human_agent: bool },
    /// The "conversation finished" message: sent only within the standard window.
    #[error("the customer last wrote more than 24 hours ago")]
    FinishedTooLate,
}

fn age(hours: u64) -> String {
    if hours >= 48 {
        format!("{} days ago", hours / 24)
    } else {
        format!("{hours} hours ago")
    }
}

/// The Send API `metadata` of the gateway's sends: the Rocket.Chat message and the part, so its
/// echo (`docs/messenger.md` §2.6) tells which part of which reply reached the customer.
const METADATA_PREFIX: &str = "omni-gateway:agent:";

fn sent_part(item: &OutboundItem, part: usize) -> String {
    format!("{}:{part}", item.rc_message_id)
}

fn send_metadata(item: &OutboundItem, part: usize) -> String {
    format!("{METADATA_PREFIX}{}", sent_part(item, part))
}

/// The part an echo's `metadata` names, when the gateway sent it (for [`Store::mark_echoed`]).
pub fn own_send(metadata: &str) -> Option<&str> {
    metadata
        .strip_prefix(METADATA_PREFIX)
        .filter(|rest| !rest.is_empty())
}

/// Decides what a room message means for the customer: an agent reply, the room's closing, or
/// nothing (the visitor's own messages, other system messages, empty messages).
pub fn classify(message: &RoomMessage) -> Option<Outgoing> {
    match message.kind {
        RoomMessageKind::Closed => {
            return Some(Outgoing::Close {
                ts_ms: message.ts_ms,
            });
        }
        RoomMessageKind::System(_) | RoomMessageKind::Removed => return None,
        RoomMessageKind::Written => {}
    }
    // Converted here, before the outbox, so what is stored, split and retried is what is sent;
    // emptiness is judged after it: a message that was only `@all` or a quote marker says nothing
    // to the customer.
    let text = to_messenger(&message.text);
    if message.from_visitor || (text.trim().is_empty() && message.files.is_empty()) {
        return None;
    }
    // The gateway's own posts (the page's replies from the Page Inbox) came from Messenger.
    if super::render::is_derived_id(&message.id) {
        return None;
    }
    let text = with_quotes(&message.quoted, text);
    Some(Outgoing::Reply {
        text,
        files: message
            .files
            .iter()
            .map(|f| AgentFile {
                path: f.path.clone(),
                name: f.name.clone(),
                mime: f.mime.clone(),
            })
            .collect(),
        agent: message.author_username.clone(),
        automated: message.automated,
        ts_ms: message.ts_ms,
    })
}

/// What the page's reaction on a customer's message becomes when the agents' reactions on it are
/// `now` (reaction names) as of `at_ms` (the message's `_updatedAt`), given what was last queued;
/// `None` when nothing changed, or when this view of the message is older than the last one (a
/// back-fill read before a stream event was handled).
///
/// Messenger keeps one reaction per sender and message, and the page is one sender for all its
/// agents, so one of the agents' emoji is shown: the one added last, as Messenger itself
/// replaces a reaction with the next one its sender picks. When the shown emoji is removed and
/// others remain, the last of them (by name) is shown; when none remains, the page's reaction
/// goes.
pub fn page_reaction(before: &PageReaction, now: &[String], at_ms: u64) -> Option<PageReaction> {
    if at_ms < before.at_ms {
        return None;
    }
    let added = now.iter().rfind(|n| !before.agent_names.contains(n));
    let shown = match (added, &before.shown) {
        (Some(added), _) => Some(added.clone()),
        (None, Some(shown)) if now.contains(shown) => Some(shown.clone()),
        (None, _) => now.last().cloned(),
    };
    if before.agent_names == now && before.shown == shown {
        return None;
    }
    Some(PageReaction {
        agent_names: now.to_vec(),
        shown,
        at_ms,
    })
}

/// An agent's reply that quotes messages reads with the quoted words first, one line each:
/// Messenger shows no quote the gateway could attach to a page's message (the Send API documents
/// no reply-to for pages), and the customer must know what the answer refers to. The gateway's
/// own "replying to" line in a relayed customer message is not part of what the customer wrote.
fn with_quotes(quoted: &[String], reply: String) -> String {
    let mut lines: Vec<String> = quoted
        .iter()
        .filter_map(|text| {
            let words = to_messenger(text)
                .lines()
                .filter(|line| !line.starts_with(QUOTE_MARK))
                .collect::<Vec<_>>()
                .join(" ");
            let words = words.trim();
            (!words.is_empty()).then(|| format!("{QUOTE_MARK} “{}”", preview(words)))
        })
        .collect();
    if lines.is_empty() {
        return reply;
    }
    lines.push(reply);
    lines.join("\n")
}

/// The Send API policy (`docs/messenger.md` §3.3): `RESPONSE` within 24 h of the customer's last
/// message; `HUMAN_AGENT` up to 7 days only when the app is approved for it and a person wrote
/// the reply; otherwise the reason it cannot be sent.
pub fn policy(
    conversation: Option<&Conversation>,
    now: u64,
    human_agent_tag: bool,
    automated: bool,
) -> Result<Messaging, OutsideWindow> {
    let Some(last) = conversation.and_then(|c| c.last_inbound_ms) else {
        return Err(OutsideWindow::NeverWrote);
    };
    let age = now.saturating_sub(last);
    if age <= RESPONSE_WINDOW_MS {
        return Ok(Messaging::Response);
    }
    if human_agent_tag && !automated && age <= HUMAN_AGENT_WINDOW_MS {
        return Ok(Messaging::HumanAgent);
    }
    Err(OutsideWindow::TooLate {
        hours: age / 3_600_000,
        human_agent: human_agent_tag && !automated,
    })
}

/// Splits a text into pieces of at most `max` characters, at a sentence end, else a line break,
/// else a space, else anywhere. A blank text has no pieces (a file sent without a caption).
pub fn split_text(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while rest.chars().count() > max {
        let cut_byte = rest
            .char_indices()
            .nth(max)
            .map(|(i, _)| i)
            .unwrap_or(rest.len());
        let window = &rest[..cut_byte];
        let split_at = [". ", "! ", "? ", "\n", " "]
            .iter()
            .filter_map(|sep| window.rfind(sep).map(|i| i + sep.len()))
            .find(|&i| i > cut_byte / 2)
            .unwrap_or(cut_byte);
        pieces.push(rest[..split_at].trim_end().to_owned());
        rest = rest[split_at..].trim_start();
    }
    if !rest.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces
}

/// Splits a text into pieces of at most `max` UTF-8 bytes, cut on character boundaries, with
/// [`split_text`]'s preference for sentence ends, line breaks and spaces (Instagram counts bytes,
/// `docs/instagram.md` §6.2).
pub fn split_text_bytes(text: &str, max: usize) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while rest.len() > max {
        let mut cut_byte = max;
        while !rest.is_char_boundary(cut_byte) {
            cut_byte -= 1;
        }
        let window = &rest[..cut_byte];
        let split_at = [". ", "! ", "? ", "\n", " "]
            .iter()
            .filter_map(|sep| window.rfind(sep).map(|i| i + sep.len()))
            .find(|&i| i > cut_byte / 2)
            .unwrap_or(cut_byte);
        pieces.push(rest[..split_at].trim_end().to_owned());
        rest = rest[split_at..].trim_start();
    }
    if !rest.is_empty() {
        pieces.push(rest.to_owned());
    }
    pieces
}

fn preview(text: &str) -> String {
    let short: String = text.chars().take(80).collect();
    if short.len() < text.len() {
        format!("{short}…")
    } else {
        short
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{PageId, Psid, VisitorToken};

    fn conversation(last_inbound_ms: Option<u64>) -> Conversation {
        Conversation {
            key: ConversationKey::new(PageId::new("1"), Psid::new("2")),
            visitor_token: VisitorToken::new("t"),
            room: None,
            last_inbound_ms,
            held_since_ms: None,
            offline_notice_sent: false,
            last_agent_message_ms: None,
        }
    }

    #[test]
    fn window_policy() {
        let hour = 3_600_000;
        let now = 1_000 * hour;
        let cases = [
            (Some(now - hour), false, false, Ok(Messaging::Response)),
            (Some(now - 24 * hour), false, false, Ok(Messaging::Response)),
            (Some(now - 25 * hour), false, false, Err("24-hour")),
            (
                Some(now - 25 * hour),
                true,
                false,
                Ok(Messaging::HumanAgent),
            ),
            (Some(now - 25 * hour), true, true, Err("24-hour")),
            (
                Some(now - 7 * 24 * hour),
                true,
                false,
                Ok(Messaging::HumanAgent),
            ),
            (Some(now - 8 * 24 * hour), true, false, Err("7-day")),
            (None, true, false, Err("not written")),
        ];
        for (last, tag, automated, expected) in cases {
            let got = policy(Some(&conversation(last)), now, tag, automated);
            match (got, expected) {
                (Ok(m), Ok(e)) => assert_eq!(m, e, "{last:?} {tag} {automated}"),
                (Err(reason), Err(part)) => {
                    assert!(reason.to_string().contains(part), "{reason}")
                }
                (got, expected) => {
                    panic!("{last:?} {tag} {automated}: got {got:?}, expected {expected:?}")
                }
            }
        }
    }

    #[test]
    fn byte_splitting_keeps_pieces_under_the_limit_on_char_boundaries() {
        let cases = [
            "Très bien, merci ! Ça arrive demain à Lyon. ".repeat(60),
            "🎉🎉 Félicitations ! ".repeat(150),
            "é".repeat(2500),
        ];
        for text in cases {
            let pieces = split_text_bytes(&text, 999);
            assert!(pieces.len() > 1, "{} bytes split", text.len());
            assert!(pieces.iter().all(|p| p.len() <= 999 && !p.is_empty()));
            let joined: String = pieces.concat().split_whitespace().collect();
            let want: String = text.split_whitespace().collect();
            assert_eq!(joined, want, "nothing lost");
        }
        let sentences = "Ça arrive demain. ".repeat(100);
        assert!(
            split_text_bytes(&sentences, 999)
                .iter()
                .all(|p| p.ends_with('.')),
            "split at sentence ends"
        );
    }

    #[test]
    fn instagram_files_are_checked_before_any_call() {
        let accepted = [
            ("image/png", "shot.png", "image"),
            ("image/gif", "fun.gif", "image"),
            ("video/mp4", "clip.mp4", "video"),
            ("audio/x-m4a", "note.m4a", "audio"),
            ("application/pdf", "invoice.pdf", "file"),
        ];
        for (mime, name, kind) in accepted {
            let (got, _) = instagram_kind(mime, name).expect(name);
            assert_eq!(got.as_str(), kind, "{name}");
        }
        let refused = [
            (
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
                "offer.docx",
                "only PDF",
            ),
            ("image/webp", "photo.webp", "png, jpeg and gif"),
            ("image/png", "café.png", "ASCII"),
        ];
        for (mime, name, says) in refused {
            let reason = instagram_kind(mime, name).expect_err(name);
            assert!(reason.contains(says), "{name}: {reason}");
        }
    }

    #[test]
    fn splitting_prefers_sentences_then_words() {
        let cases: Vec<(&str, usize, Vec<&str>)> = vec![
            ("short", 10, vec!["short"]),
            ("", 10, vec![]),
            ("  \n ", 10, vec![]),
            (
                "One two. Three four five.",
                12,
                vec!["One two.", "Three four", "five."],
            ),
            ("aaaaaaaaaaaaaaa", 10, vec!["aaaaaaaaaa", "aaaaa"]),
            ("word word word word", 10, vec!["word word", "word word"]),
            ("ééééé ééééé", 6, vec!["ééééé", "ééééé"]),
        ];
        for (text, max, expected) in cases {
            assert_eq!(split_text(text, max), expected, "{text:?}");
        }
        let long = "Sentence number one is here. ".repeat(200);
        let pieces = split_text(&long, 1999);
        assert!(pieces.iter().all(|p| p.chars().count() <= 1999));
        assert!(
            pieces.iter().all(|p| p.ends_with('.')),
            "split at sentence ends"
        );
        assert_eq!(pieces.join(" "), long.trim());
    }

    #[test]
    fn the_page_shows_the_agents_latest_reaction() {
        let names = |list: &[&str]| list.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>();
        let state = |list: &[&str], shown: Option<&str>| PageReaction {
            agent_names: names(list),
            shown: shown.map(str::to_owned),
            at_ms: 5,
        };
        // (before, agents' reactions now, what the customer sees after; None = nothing changes)
        let cases = [
            (state(&[], None), vec![], None),
            (
                state(&[], None),
                vec![":thumbsup:"],
                Some(Some(":thumbsup:")),
            ),
            (
                state(&[":thumbsup:"], Some(":thumbsup:")),
                vec![":thumbsup:"],
                None,
            ),
            (
                state(&[":thumbsup:"], Some(":thumbsup:")),
                vec![":heart:", ":thumbsup:"],
                Some(Some(":heart:")),
            ),
            (
                state(&[":heart:", ":thumbsup:"], Some(":heart:")),
                vec![":thumbsup:"],
                Some(Some(":thumbsup:")),
            ),
            (
                state(&[":heart:", ":thumbsup:"], Some(":heart:")),
                vec![":heart:"],
                Some(Some(":heart:")),
            ),
            (
                state(&[":thumbsup:"], Some(":thumbsup:")),
                vec![],
                Some(None),
            ),
        ];
        let stale = page_reaction(&state(&[":thumbsup:"], Some(":thumbsup:")), &[], 4);
        assert_eq!(stale, None, "an older view of the message changes nothing");
        for (before, now, expected) in cases {
            let got = page_reaction(&before, &names(&now), 9);
            assert_eq!(
                got.as_ref().map(|after| after.shown.as_deref()),
                expected,
                "{before:?} → {now:?}"
            );
            if let Some(after) = got {
                assert_eq!(after.agent_names, names(&now));
            }
        }
    }

    #[test]
    fn classifies_room_messages() {
        let message =
            |kind: RoomMessageKind, from_visitor: bool, text: &str, files: Vec<&str>| RoomMessage {
                id: crate::ids::MessageId::new("m"),
                kind,
                from_visitor,
                author_username: "agent1".into(),
                automated: false,
                text: text.into(),
                ts_ms: 5,
                files: files
                    .into_iter()
                    .map(|path| crate::rocketchat::realtime::RoomFile {
                        path: path.into(),
                        name: "a.pdf".into(),
                        mime: "application/pdf".into(),
                    })
                    .collect(),
                quoted: vec![],
                edited: false,
                reactions: vec![],
                updated_ms: None,
            };
        let written = RoomMessageKind::Written;
        let cases = vec![
            (
                message(written.clone(), false, "Hello!", vec![]),
                Some("reply agent1 Hello!"),
            ),
            (
                message(written.clone(), true, "from the customer", vec![]),
                None,
            ),
            (
                message(RoomMessageKind::Closed, false, "", vec![]),
                Some("close"),
            ),
            (
                message(
                    RoomMessageKind::System("transfer".into()),
                    false,
                    "",
                    vec![],
                ),
                None,
            ),
            (message(written.clone(), false, "  ", vec![]), None),
            (
                message(
                    written.clone(),
                    false,
                    ":thumbsup: [docs](https://x.example)",
                    vec![],
                ),
                Some("reply agent1 👍 docs (https://x.example)"),
            ),
            (message(written.clone(), false, "@all", vec![]), None),
            (
                RoomMessage {
                    quoted: vec![
                        "↩️ [replying to an earlier message](https://c.example/live/R?msg=x)\nIs it *blue*? :smile:".into(),
                        String::new(),
                    ],
                    ..message(written.clone(), false, "[ ](https://c.example/live/R?msg=q) Yes", vec![])
                },
                Some("reply agent1 ↩️ “Is it *blue*? 😄”\nYes"),
            ),
            (
                message(written, false, "", vec!["/file-upload/F1/a.pdf"]),
                Some("reply agent1  files:/file-upload/F1/a.pdf"),
            ),
        ];
        for (message, expected) in cases {
            let got = classify(&message).map(|o| match o {
                Outgoing::Reply {
                    text, files, agent, ..
                } if files.is_empty() => format!("reply {agent} {text}"),
                Outgoing::Reply {
                    text, files, agent, ..
                } => {
                    format!(
                        "reply {agent} {text} files:{}",
                        files
                            .iter()
                            .map(|f| f.path.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                }
                Outgoing::Close { .. } => "close".into(),
                Outgoing::React { .. } => "react".into(),
            });
            assert_eq!(got.as_deref(), expected, "{message:?}");
        }
    }
}
