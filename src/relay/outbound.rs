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
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::{debug, error, info, warn};

use super::{OutageLog, RelayContext, Workers, jitter};
use crate::health::now_ms;
use crate::ids::{ConversationKey, RoomId};
use crate::messenger::graph::{
    self, AttachmentKind, Content, ErrorKind, GraphClient, Messaging, SendRequest, SenderAction,
};
use crate::rocketchat::ddp::{DdpClient, SubscriptionId};
use crate::rocketchat::realtime::{ROOM_MESSAGES_STREAM, RoomMessage};
use crate::store::{self, Conversation, OutboundItem, Page, PageStatus};

/// Meta's text limit: "UTF-8 and less than 2000 characters".
const MAX_TEXT_CHARS: usize = 1999;
/// The standard messaging window, and the HUMAN_AGENT one.
const RESPONSE_WINDOW_MS: u64 = 24 * 3600 * 1000;
const HUMAN_AGENT_WINDOW_MS: u64 = 7 * 24 * 3600 * 1000;
const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// How often a page that needs authorization is looked at again.
const REAUTH_POLL: Duration = Duration::from_secs(2);
/// When a new room's history is read once, in case a reply beat the stream's subscription.
const NEW_STREAM_CATCH_UP: Duration = Duration::from_secs(1);
/// Largest agent file sent to Messenger (Meta's attachment limit).
const MAX_FILE_BYTES: usize = 25 * 1024 * 1024;

/// What waits in the outbox (stored as the item's payload, versioned by the store).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outgoing {
    /// An agent's message: text and files.
    Reply {
        text: String,
        files: Vec<AgentFile>,
        agent: String,
        /// Written by a bot agent (`bot` set on the message): never sent with HUMAN_AGENT.
        automated: bool,
        ts_ms: u64,
    },
    /// The agent closed the room: send the page's "conversation finished" message.
    Close { ts_ms: u64 },
}

/// A file an agent attached, as Rocket.Chat serves it (a path relative to the server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFile {
    pub path: String,
    pub name: String,
    pub mime: String,
}

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
    workers: Workers,
    outage: OutageLog,
}

impl Outbound {
    /// `human_agent_tag`: the app is approved for Meta's HUMAN_AGENT tag (bot.toml).
    pub fn new(
        ctx: RelayContext,
        graph: GraphClient,
        ddp: DdpClient,
        human_agent_tag: bool,
    ) -> Arc<Outbound> {
        Arc::new(Outbound {
            ctx,
            graph,
            ddp,
            human_agent_tag,
            streams: Mutex::new(HashMap::new()),
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
        let params = json!([rid.as_str(), {"useCollection": false, "args": [{"visitorToken": conversation.visitor_token.as_str()}]}]);
        let id = self.ddp.subscribe(ROOM_MESSAGES_STREAM, params).await;
        let previous = self.lock_streams().insert(rid.clone(), id);
        if let Some(previous) = previous {
            // Two callers raced; keep one subscription.
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
        for key in self.ctx.store.pending_outbound_conversations()? {
            self.wake(&key);
        }
        Ok(())
    }

    /// A stream event of a room we watch: `event_name` is the room id, `args[0]` the message.
    pub async fn on_room_event(self: &Arc<Self>, rid: &RoomId, args: &[Value]) {
        let Some(message) = args.first().and_then(RoomMessage::from_value) else {
            return;
        };
        if let Err(err) = self.take(rid, &message).await {
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
        match self
            .ctx
            .rest
            .room_history(&conversation.visitor_token, rid, since)
            .await
        {
            Ok(messages) => {
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
            Err(err) => {
                warn!(room = %rid, error = %err, "back-fill failed; the next reconnect retries")
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
                Outgoing::Close { .. } => None,
            },
            created_ms: outgoing.ts_ms(),
            payload: serde_json::to_value(&outgoing).unwrap_or(Value::Null),
        };
        if !self.ctx.store.enqueue_outbound(item)? {
            return Ok(false);
        }
        let closing = matches!(outgoing, Outgoing::Close { .. });
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
            info!(conversation = %key, room = %rid, "room closed by an agent");
        }
        self.ctx.store.sync().await?;
        self.wake(&key);
        Ok(true)
    }

    fn wake(self: &Arc<Self>, key: &ConversationKey) {
        if self.ctx.cancel.is_cancelled() || !self.workers.claim(key) {
            return;
        }
        let relay = self.clone();
        let key = key.clone();
        self.ctx.tasks.spawn(async move { relay.work(key).await });
    }

    fn lock_streams(&self) -> std::sync::MutexGuard<'_, HashMap<RoomId, SubscriptionId>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One conversation's worker: sends the oldest outbox item until the outbox is empty.
    async fn work(self: Arc<Self>, key: ConversationKey) {
        loop {
            let next = match self.ctx.store.oldest_outbound(&key) {
                Ok(next) => next,
                Err(err) => {
                    error!(conversation = %key, error = %err, "cannot read the outbox; retrying");
                    self.pause(RETRY_MAX).await;
                    continue;
                }
            };
            let Some((id, item)) = next else {
                let store = &self.ctx.store;
                if self
                    .workers
                    .retire(&key, || matches!(store.oldest_outbound(&key), Ok(None)))
                {
                    return;
                }
                continue;
            };
            let started = tokio::time::Instant::now();
            match self.send(&key, &item).await {
                Sent::Stopped => return,
                Sent::Delivered => self
                    .ctx
                    .telemetry
                    .reply_sent(started.elapsed().as_secs_f64()),
                Sent::Refused => {}
            }
            if let Err(err) = self.ctx.store.remove_outbound(&id).and(Ok(())) {
                error!(conversation = %key, error = %err, "cannot remove a sent reply from the outbox");
            }
            // A crash after a send but before this flush would send the reply again: keep the
            // window small.
            if let Err(err) = self.ctx.store.sync().await {
                error!(conversation = %key, error = %err, "cannot persist the outbox");
            }
        }
    }

    /// Sends one item, retrying what can succeed later, holding while the page needs authorization.
    async fn send(&self, key: &ConversationKey, item: &OutboundItem) -> Sent {
        let outgoing: Outgoing = match serde_json::from_value(item.payload.clone()) {
            Ok(outgoing) => outgoing,
            Err(err) => {
                error!(conversation = %key, error = %err, "unreadable outbox item skipped");
                return Sent::Refused;
            }
        };
        let mut retry = RETRY_MIN;
        // Parts of a reply already sent, so a retry does not repeat them.
        let mut progress = 0;
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
                        &outgoing,
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
            let result = match &outgoing {
                Outgoing::Close { .. } => self.send_finished(&page, key).await,
                Outgoing::Reply { .. } => {
                    self.send_reply(&page, key, item, &outgoing, &mut progress)
                        .await
                }
            };
            match result {
                Ok(()) => {
                    self.outage.recovered();
                    return Sent::Delivered;
                }
                Err(Failure::Window(reason, fix)) => {
                    return self.refuse(key, item, &outgoing, &reason, &fix).await;
                }
                Err(Failure::Download(reason)) => {
                    return self
                        .refuse(
                            key,
                            item,
                            &outgoing,
                            &reason,
                            "Send the file again, or describe it in text.",
                        )
                        .await;
                }
                Err(Failure::Graph(err)) => {
                    self.ctx.telemetry.reply_failed(&err);
                    match err.kind() {
                        ErrorKind::TokenInvalid => {
                            self.ctx.customer.token_invalid(&key.page, &err).await;
                        }
                        ErrorKind::Transient | ErrorKind::RateLimited => {
                            self.outage.failed(&err.describe());
                            let wait = err.retry_after().unwrap_or_else(|| jitter(retry));
                            retry = (retry * 2).min(RETRY_MAX);
                            self.pause(wait).await;
                        }
                        ErrorKind::OutsideWindow => {
                            return self
                                .refuse(key, item, &outgoing, &err.describe(), "Messenger only allows replies within 24 hours of the customer's last message; wait for the customer to write again.")
                                .await;
                        }
                        ErrorKind::Final => {
                            return self
                                .refuse(
                                    key,
                                    item,
                                    &outgoing,
                                    &err.describe(),
                                    "Facebook refused this message; it will not be retried.",
                                )
                                .await;
                        }
                    }
                }
            }
        }
    }

    async fn send_finished(&self, page: &Page, key: &ConversationKey) -> Result<(), Failure> {
        let Some(text) = page.finished.as_deref() else {
            return Ok(());
        };
        let conversation = self.ctx.store.conversation(key).ok().flatten();
        let messaging = policy(conversation.as_ref(), now_ms(), false, false).map_err(|_| {
            Failure::Window(
                "the customer last wrote more than 24 hours ago".into(),
                "The conversation finished message was not sent.".into(),
            )
        })?;
        self.send_text(page, key, text, messaging).await
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
        let conversation = self.ctx.store.conversation(key).ok().flatten();
        let messaging = policy(conversation.as_ref(), now_ms(), self.human_agent_tag, *automated).map_err(|reason| {
            Failure::Window(
                reason,
                if self.human_agent_tag {
                    "Messenger allows a person's reply up to 7 days after the customer's last message; wait for the customer to write again.".into()
                } else {
                    "Messenger allows replies within 24 hours of the customer's last message; wait for the customer to write again. (An app approved for the HUMAN_AGENT tag can reply for 7 days: set human_agent_tag = true.)".into()
                },
            )
        })?;
        if *progress == 0 {
            // Best effort: the customer sees their messages were read.
            if let Some(token) = &page.token {
                if let Err(err) = self
                    .graph
                    .sender_action(&page.id, token, &key.psid, SenderAction::MarkSeen)
                    .await
                {
                    debug!(conversation = %key, error = %err.describe(), "mark_seen failed");
                }
            }
        }
        let chunks = split_text(text, MAX_TEXT_CHARS);
        let total = chunks.len() + files.len();
        while *progress < total {
            if *progress < chunks.len() {
                self.send_text(page, key, &chunks[*progress], messaging)
                    .await?;
            } else {
                let file = &files[*progress - chunks.len()];
                self.send_file(page, key, item, file, messaging).await?;
            }
            *progress += 1;
        }
        Ok(())
    }

    async fn send_text(
        &self,
        page: &Page,
        key: &ConversationKey,
        text: &str,
        messaging: Messaging,
    ) -> Result<(), Failure> {
        let Some(token) = &page.token else {
            return Ok(());
        };
        let request = SendRequest {
            recipient: key.psid.clone(),
            messaging,
            content: Content::Text(text.to_owned()),
            metadata: Some("omni-gateway:agent".into()),
        };
        self.graph
            .send_message(&page.id, token, &request)
            .await
            .map(|_| ())
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
    ) -> Result<(), Failure> {
        let Some(token) = &page.token else {
            return Ok(());
        };
        let conversation = self
            .ctx
            .store
            .conversation(key)
            .ok()
            .flatten()
            .ok_or_else(|| Failure::Download("the conversation is gone".into()))?;
        let bytes = self
            .ctx
            .rest
            .download_as_visitor(&file.path, &conversation.visitor_token, &item.room)
            .await
            .map_err(|err| {
                Failure::Download(format!(
                    "the file could not be read from Rocket.Chat: {err}"
                ))
            })?;
        if bytes.len() > MAX_FILE_BYTES {
            return Err(Failure::Download(format!(
                "{} is larger than Messenger's 25 MB limit",
                file.name
            )));
        }
        let kind = AttachmentKind::from_mime(&file.mime);
        self.graph
            .send_attachment(
                &page.id,
                token,
                &key.psid,
                &messaging,
                kind,
                &file.name,
                &file.mime,
                Bytes::from(bytes),
            )
            .await
            .map(|_| ())
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
        let page = self.ctx.store.page(&key.page).ok().flatten();
        let customer = self
            .ctx
            .customer
            .display_name(page.as_ref(), &key.psid)
            .await;
        let page_name = page
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_else(|| key.page.to_string());
        let what = match outgoing {
            Outgoing::Reply { text, .. } => format!(
                "Your reply to {customer} (page *{page_name}*) was not delivered: “{}”",
                preview(text)
            ),
            Outgoing::Close { .. } => format!(
                "The conversation finished message to {customer} (page *{page_name}*) was not delivered"
            ),
        };
        let text = format!("{what}\nWhy: {reason}\nWhat to do: {fix}");
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
        tokio::select! {
            _ = self.ctx.cancel.cancelled() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

enum Failure {
    Graph(graph::Error),
    /// Outside the messaging window: reason and what to do.
    Window(String, String),
    Download(String),
}

impl Outgoing {
    fn ts_ms(&self) -> u64 {
        match self {
            Outgoing::Reply { ts_ms, .. } | Outgoing::Close { ts_ms } => *ts_ms,
        }
    }
}

/// Decides what a room message means for the customer: an agent reply, the room's closing, or
/// nothing (the visitor's own messages, other system messages, empty messages).
pub fn classify(message: &RoomMessage) -> Option<Outgoing> {
    match message.kind.as_deref() {
        Some("livechat-close") => {
            return Some(Outgoing::Close {
                ts_ms: message.ts_ms,
            });
        }
        Some(_) => return None,
        None => {}
    }
    if message.from_visitor || (message.text.trim().is_empty() && message.files.is_empty()) {
        return None;
    }
    Some(Outgoing::Reply {
        text: message.text.clone(),
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

/// The Send API policy (`docs/messenger.md` §3.3): `RESPONSE` within 24 h of the customer's last
/// message; `HUMAN_AGENT` up to 7 days only when the app is approved for it and a person wrote
/// the reply; otherwise the reason it cannot be sent.
pub fn policy(
    conversation: Option<&Conversation>,
    now: u64,
    human_agent_tag: bool,
    automated: bool,
) -> Result<Messaging, String> {
    let Some(last) = conversation.and_then(|c| c.last_inbound_ms) else {
        return Err("the customer has not written to the page yet".into());
    };
    let age = now.saturating_sub(last);
    if age <= RESPONSE_WINDOW_MS {
        return Ok(Messaging::Response);
    }
    if human_agent_tag && !automated && age <= HUMAN_AGENT_WINDOW_MS {
        return Ok(Messaging::HumanAgent);
    }
    let hours = age / 3_600_000;
    Err(format!(
        "the customer last wrote {} ago, outside Messenger's {} window",
        if hours >= 48 {
            format!("{} days", hours / 24)
        } else {
            format!("{hours} hours")
        },
        if human_agent_tag && !automated {
            "7-day"
        } else {
            "24-hour"
        }
    ))
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
                (Err(reason), Err(part)) => assert!(reason.contains(part), "{reason}"),
                (got, expected) => {
                    panic!("{last:?} {tag} {automated}: got {got:?}, expected {expected:?}")
                }
            }
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
        let pieces = split_text(&long, MAX_TEXT_CHARS);
        assert!(pieces.iter().all(|p| p.chars().count() <= MAX_TEXT_CHARS));
        assert!(
            pieces.iter().all(|p| p.ends_with('.')),
            "split at sentence ends"
        );
        assert_eq!(pieces.join(" "), long.trim());
    }

    #[test]
    fn classifies_room_messages() {
        let cases = vec![
            (
                json!({"_id":"a","msg":"Hello!","u":{"username":"agent1"},"ts":{"$date":5}}),
                Some("reply agent1 Hello!"),
            ),
            (
                json!({"_id":"b","msg":"from the customer","token":"fb-x","u":{"username":"guest"},"ts":{"$date":5}}),
                None,
            ),
            (
                json!({"_id":"c","t":"livechat-close","msg":"","u":{"username":"agent1"},"ts":{"$date":9}}),
                Some("close"),
            ),
            (
                json!({"_id":"d","t":"livechat_transfer_history","msg":"","ts":{"$date":9}}),
                None,
            ),
            (
                json!({"_id":"e","msg":"  ","u":{"username":"agent1"},"ts":{"$date":9}}),
                None,
            ),
            (
                json!({"_id":"f","msg":"","u":{"username":"agent1"},"ts":{"$date":9},"files":[{"_id":"F1","name":"a.pdf","type":"application/pdf"}],
                       "attachments":[{"title_link":"/file-upload/F1/a.pdf"}]}),
                Some("reply agent1  files:/file-upload/F1/a.pdf"),
            ),
        ];
        for (message, expected) in cases {
            let message = RoomMessage::from_value(&message).expect("a room message");
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
            });
            assert_eq!(got.as_deref(), expected, "{message:?}");
        }
    }
}
