//! The records callers see, and the versioned forms written to disk.
//!
//! Each public record has a private `…V1` twin that is what serde writes. The twin carries a
//! `"v"` field; decoding reads that field first and picks the matching twin, so a later version
//! adds a `…V2` and an arm that converts old values, and existing stores keep opening. Tokens
//! exist only as sealed strings in the twins; the public records hold them as `SecretString`.

use secrecy::SecretString;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::crypto::TokenKey;
use super::keys::Tree;
use super::{Error, Result};
use crate::ids::{ConversationKey, MessageId, PageId, Psid, RoomId, UserId, VisitorToken};

/// The version every value is written with, unless its record says otherwise.
const V1: u32 = 1;
/// Pages: the record gained its [`Platform`].
const PAGE_V2: u32 = 2;

/// The Omnichannel department a page's conversations are routed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Department {
    pub id: String,
    pub name: String,
}

/// Whether a page can be served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PageStatus {
    Connected,
    /// The page token stopped working (Graph error 190, …); an admin must run `authorize`.
    NeedsAuthorization {
        reason: String,
        since_ms: u64,
    },
    Disconnected,
}

/// Which Meta messaging product a [`Page`] record serves.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "platform", rename_all = "snake_case")]
pub enum Platform {
    #[default]
    Messenger,
    /// An Instagram professional account, reached through its linked Facebook Page: the Page's
    /// token and the Page's `/messages` edge serve it (docs/instagram.md §1).
    Instagram {
        page: PageId,
        username: Option<String>,
    },
}

/// A connected (or once connected) Facebook Page, or the Instagram account linked to one, and
/// its settings. Both live in the pages tree keyed by their Meta id, which never collide.
#[derive(Clone, Debug)]
pub struct Page {
    pub id: PageId,
    pub name: String,
    pub platform: Platform,
    pub department: Option<Department>,
    pub welcome: Option<String>,
    pub finished: Option<String>,
    pub offline: Option<String>,
    /// The page access token; sealed at rest, `None` after `unauthorize`.
    pub token: Option<SecretString>,
    /// The Facebook user id of the [`Grant`] the token came from.
    pub grant: Option<String>,
    pub status: PageStatus,
    /// Rocket.Chat usernames that get this page's notices.
    pub subscribers: Vec<String>,
    pub connected_by: Option<String>,
    pub connected_at_ms: Option<u64>,
    pub last_webhook_ms: Option<u64>,
}

/// How long one text sent to the customer may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextLimit {
    /// At most this many characters (Messenger).
    Chars(usize),
    /// At most this many UTF-8 bytes (Instagram).
    Bytes(usize),
}

impl TextLimit {
    /// Whether `text` fits.
    pub fn fits(self, text: &str) -> bool {
        match self {
            TextLimit::Chars(max) => text.chars().count() <= max,
            TextLimit::Bytes(max) => text.len() <= max,
        }
    }
}

/// Messenger: "UTF-8 and less than 2000 characters" (`docs/messenger.md` §3).
const MESSENGER_TEXT_CHARS: usize = 1999;
/// Instagram: "less than 1000 characters" and "1000 bytes or less"; at most 999 bytes meets both
/// (`docs/instagram.md` §6.2).
const INSTAGRAM_TEXT_BYTES: usize = 999;

impl Page {
    /// The node whose `/messages` edge reaches this record's customers: the linked Page for an
    /// Instagram account (`docs/instagram.md` §6.1), the Page itself otherwise.
    pub fn send_node(&self) -> &PageId {
        match &self.platform {
            Platform::Messenger => &self.id,
            Platform::Instagram { page, .. } => page,
        }
    }

    /// How long one text to the customer may be.
    pub fn text_limit(&self) -> TextLimit {
        match self.platform {
            Platform::Messenger => TextLimit::Chars(MESSENGER_TEXT_CHARS),
            Platform::Instagram { .. } => TextLimit::Bytes(INSTAGRAM_TEXT_BYTES),
        }
    }

    /// How admins see the record: the Page's name, or `@username` for an Instagram account.
    pub fn label(&self) -> String {
        match &self.platform {
            Platform::Instagram {
                username: Some(username),
                ..
            } => format!("@{username}"),
            _ => self.name.clone(),
        }
    }

    pub fn is_instagram(&self) -> bool {
        matches!(self.platform, Platform::Instagram { .. })
    }

    /// The product's name, for texts that tell agents and admins where a customer is.
    pub fn product(&self) -> &'static str {
        match self.platform {
            Platform::Messenger => "Messenger",
            Platform::Instagram { .. } => "Instagram",
        }
    }

    /// A page seen for the first time: no settings, no token yet, no subscribers.
    pub fn new(id: PageId, name: String) -> Page {
        Page {
            id,
            name,
            platform: Platform::Messenger,
            department: None,
            welcome: None,
            finished: None,
            offline: None,
            token: None,
            grant: None,
            status: PageStatus::Disconnected,
            subscribers: Vec::new(),
            connected_by: None,
            connected_at_ms: None,
            last_webhook_ms: None,
        }
    }
}

/// Compares every field, the token included (tests and change detection need it).
impl PartialEq for Page {
    fn eq(&self, other: &Self) -> bool {
        // Destructured so that a new field cannot be forgotten here.
        let Page {
            id,
            name,
            platform,
            department,
            welcome,
            finished,
            offline,
            token,
            grant,
            status,
            subscribers,
            connected_by,
            connected_at_ms,
            last_webhook_ms,
        } = self;
        *id == other.id
            && *name == other.name
            && *platform == other.platform
            && *department == other.department
            && *welcome == other.welcome
            && *finished == other.finished
            && *offline == other.offline
            && same_secret(token.as_ref(), other.token.as_ref())
            && *grant == other.grant
            && *status == other.status
            && *subscribers == other.subscribers
            && *connected_by == other.connected_by
            && *connected_at_ms == other.connected_at_ms
            && *last_webhook_ms == other.last_webhook_ms
    }
}

/// A data deletion request Meta sent for a person (the Data Deletion Request callback). It
/// holds no trace of who asked: only the confirmation code Meta showed them and what was done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletionRequest {
    pub code: String,
    pub requested_ms: u64,
    /// When everything the gateway held about the person was gone.
    pub completed_ms: Option<u64>,
    /// Pages that were connected through the person's grant and were disconnected.
    pub pages_disconnected: u32,
}

/// The long-lived user token of the admin who authorized the app, kept to list and re-read
/// that admin's pages.
#[derive(Clone, Debug)]
pub struct Grant {
    pub fb_user_id: String,
    /// Sealed at rest.
    pub user_token: SecretString,
    pub admin_username: String,
    pub created_ms: u64,
}

impl PartialEq for Grant {
    fn eq(&self, other: &Self) -> bool {
        let Grant {
            fb_user_id,
            user_token,
            admin_username,
            created_ms,
        } = self;
        *fb_user_id == other.fb_user_id
            && same_secret(Some(user_token), Some(&other.user_token))
            && *admin_username == other.admin_username
            && *created_ms == other.created_ms
    }
}

fn same_secret(a: Option<&SecretString>, b: Option<&SecretString>) -> bool {
    use secrecy::ExposeSecret;
    use subtle::ConstantTimeEq;
    match (a, b) {
        (Some(a), Some(b)) => bool::from(
            a.expose_secret()
                .as_bytes()
                .ct_eq(b.expose_secret().as_bytes()),
        ),
        (None, None) => true,
        _ => false,
    }
}

/// An OAuth login in progress: who asked, and where to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthState {
    pub admin_username: String,
    pub admin_user_id: UserId,
    /// The DM to report the result in.
    pub room: RoomId,
    pub expires_ms: u64,
}

/// One Messenger conversation and the Livechat room it currently maps to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conversation {
    pub key: ConversationKey,
    pub visitor_token: VisitorToken,
    pub room: Option<RoomId>,
    pub last_inbound_ms: Option<u64>,
    pub held_since_ms: Option<u64>,
    pub offline_notice_sent: bool,
    pub last_agent_message_ms: Option<u64>,
}

/// A webhook event waiting to be delivered to Rocket.Chat.
#[derive(Clone, Debug, PartialEq)]
pub struct InboundEvent {
    pub key: ConversationKey,
    pub timestamp_ms: u64,
    /// The message id (`mid`) when the event has one; events without one are never deduped.
    pub dedupe_key: Option<String>,
    pub received_ms: u64,
    /// Came from `standby[]` rather than `messaging[]`.
    pub standby: bool,
    /// The `messaging[]` item as Meta sent it.
    pub payload: Payload,
}

/// A webhook's event on its way into the inbox: an [`InboundEvent`] whose item is still the
/// text of the request body, written once, into the journal.
#[derive(Clone, Debug)]
pub struct Arriving<'a> {
    pub key: ConversationKey,
    pub timestamp_ms: u64,
    pub dedupe_key: Option<String>,
    pub received_ms: u64,
    pub standby: bool,
    /// The `messaging[]` item's JSON text as Meta sent it: one JSON value, checked by the
    /// webhook's parse, written into the record as it is.
    pub text: &'a str,
}

impl InboundEvent {
    /// The event as the store's ingest takes it.
    pub fn arriving(&self) -> Arriving<'_> {
        Arriving {
            key: self.key.clone(),
            timestamp_ms: self.timestamp_ms,
            dedupe_key: self.dedupe_key.clone(),
            received_ms: self.received_ms,
            standby: self.standby,
            text: self.payload.as_raw().get(),
        }
    }
}

/// A webhook item's JSON text as Meta sent it. Stored verbatim and read when it is delivered:
/// ingest neither builds nor re-encodes a JSON tree for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Payload(Box<RawValue>);

impl Payload {
    /// A payload made from a JSON value (for events the gateway builds itself, and tests).
    pub fn from_value(item: &serde_json::Value) -> Payload {
        // A `Value`'s keys are strings, so it always serializes.
        Payload(serde_json::value::to_raw_value(item).expect("a JSON value serializes"))
    }

    pub fn as_raw(&self) -> &RawValue {
        &self.0
    }

    /// The item as a JSON tree.
    pub fn to_value(&self) -> serde_json::Value {
        // The text is valid JSON by construction: this never falls back to `null`.
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }
}

/// The same text is the same item.
impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.0.get() == other.0.get()
    }
}

/// An inbox event Rocket.Chat refused in a way no retry passes (a blocked contact, a text it
/// will not take), moved out of its conversation's queue so the conversation goes on. It stays
/// until an admin retries it; nothing is dropped.
#[derive(Clone, Debug, PartialEq)]
pub struct SetAside {
    pub event: InboundEvent,
    /// The refusal's code as Rocket.Chat sent it.
    pub reason: String,
    /// The refusal as the log showed it.
    pub detail: String,
    pub set_aside_ms: u64,
}

/// An agent message waiting to be sent to Messenger.
#[derive(Clone, Debug, PartialEq)]
pub struct OutboundItem {
    pub key: ConversationKey,
    pub rc_message_id: MessageId,
    pub room: RoomId,
    pub agent_username: Option<String>,
    /// Orders the conversation's outbox (ties keep enqueue order): pass the Rocket.Chat
    /// message time so back-filled messages line up with live ones.
    pub created_ms: u64,
    /// What to send.
    pub payload: Outgoing,
}

/// What waits in the outbox. Stored as the item's `payload`, tagged by `kind`.
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
    /// The page's reaction on the customer's message `mid` changes to `emoji` (a Unicode emoji),
    /// or goes (`None`): the Send API's `react` / `unreact`.
    React {
        mid: String,
        emoji: Option<String>,
        ts_ms: u64,
    },
}

impl Outgoing {
    /// When Rocket.Chat says the message was written (or, for a reaction, changed).
    pub fn ts_ms(&self) -> u64 {
        match self {
            Outgoing::Reply { ts_ms, .. }
            | Outgoing::Close { ts_ms }
            | Outgoing::React { ts_ms, .. } => *ts_ms,
        }
    }
}

/// A customer's message the relay posted in a room: the Messenger message it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    pub page: PageId,
    pub mid: String,
    pub at_ms: u64,
}

/// The page's reaction on a customer's message, as the relay last queued it for Messenger.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PageReaction {
    /// The agents' reaction names (`:thumbsup:`) on the message when last seen.
    pub agent_names: Vec<String>,
    /// The name whose emoji the customer sees as the page's reaction, if any.
    pub shown: Option<String>,
    /// The message's `_updatedAt` when it was seen (Rocket.Chat's clock).
    pub at_ms: u64,
}

/// A file an agent attached, as Rocket.Chat serves it (a path relative to the server).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentFile {
    pub path: String,
    pub name: String,
    pub mime: String,
}

/// What `enqueue_inbound` did with a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EnqueueOutcome {
    pub stored: usize,
    pub duplicates: usize,
}

// ---- stored forms ----

#[derive(Serialize, Deserialize)]
struct PageV2 {
    v: u32,
    id: PageId,
    name: String,
    #[serde(flatten)]
    platform: Platform,
    department: Option<Department>,
    welcome: Option<String>,
    finished: Option<String>,
    offline: Option<String>,
    /// Sealed with the page's context; see [`TokenKey::seal`].
    token: Option<String>,
    grant: Option<String>,
    status: PageStatus,
    subscribers: Vec<String>,
    connected_by: Option<String>,
    connected_at_ms: Option<u64>,
    last_webhook_ms: Option<u64>,
}

/// Before Instagram: every record was a Facebook Page.
#[derive(Deserialize)]
struct PageV1 {
    id: PageId,
    name: String,
    department: Option<Department>,
    welcome: Option<String>,
    finished: Option<String>,
    offline: Option<String>,
    /// Sealed with the page's context; see [`TokenKey::seal`].
    token: Option<String>,
    grant: Option<String>,
    status: PageStatus,
    subscribers: Vec<String>,
    connected_by: Option<String>,
    connected_at_ms: Option<u64>,
    last_webhook_ms: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct GrantV1 {
    v: u32,
    fb_user_id: String,
    /// Sealed with the grant's context.
    user_token: String,
    admin_username: String,
    created_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct DeletionV1 {
    v: u32,
    code: String,
    requested_ms: u64,
    completed_ms: Option<u64>,
    pages_disconnected: u32,
}

#[derive(Serialize, Deserialize)]
struct OAuthStateV1 {
    v: u32,
    admin_username: String,
    admin_user_id: UserId,
    room: RoomId,
    expires_ms: u64,
}

#[derive(Serialize, Deserialize)]
struct ConversationV1 {
    v: u32,
    page: PageId,
    psid: Psid,
    visitor_token: VisitorToken,
    room: Option<RoomId>,
    last_inbound_ms: Option<u64>,
    held_since_ms: Option<u64>,
    offline_notice_sent: bool,
    last_agent_message_ms: Option<u64>,
}

/// The `rooms` index: a Livechat room id points at its conversation.
#[derive(Serialize, Deserialize)]
struct RoomIndexV1 {
    v: u32,
    page: PageId,
    psid: Psid,
}

#[derive(Serialize, Deserialize)]
struct InboundV1 {
    v: u32,
    page: PageId,
    psid: Psid,
    timestamp_ms: u64,
    dedupe_key: Option<String>,
    received_ms: u64,
    standby: bool,
    payload: Payload,
}

#[derive(Serialize, Deserialize)]
struct OutboundV1 {
    v: u32,
    page: PageId,
    psid: Psid,
    rc_message_id: MessageId,
    room: RoomId,
    agent_username: Option<String>,
    created_ms: u64,
    /// Typed since the queue worker was shared; the bytes are those the relay wrote before as
    /// untyped JSON, so version 1 records of earlier builds read unchanged.
    payload: Outgoing,
}

/// A set-aside event: the inbox record as it was, and why it was set aside.
#[derive(Serialize, Deserialize)]
struct SetAsideV1 {
    v: u32,
    reason: String,
    detail: String,
    set_aside_ms: u64,
    event: InboundV1,
}

/// A dedupe mark: when it was set, so it can be pruned by age.
#[derive(Serialize, Deserialize)]
struct MarkV1 {
    v: u32,
    at_ms: u64,
}

/// A message the Send API accepted: which agent message it carried, and when.
#[derive(Serialize, Deserialize)]
struct SentV1 {
    v: u32,
    rc_message_id: MessageId,
    at_ms: u64,
}

/// A customer's reaction: the Rocket.Chat emoji name, and when it was set.
#[derive(Serialize, Deserialize)]
struct ReactionV1 {
    v: u32,
    name: String,
    at_ms: u64,
}

/// See [`Posted`].
#[derive(Serialize, Deserialize)]
struct PostedV1 {
    v: u32,
    page: PageId,
    mid: String,
    at_ms: u64,
}

/// See [`PageReaction`].
#[derive(Serialize, Deserialize)]
struct PageReactionV1 {
    v: u32,
    agent_names: Vec<String>,
    shown: Option<String>,
    at_ms: u64,
}

/// Where a value sits, for error messages.
#[derive(Clone, Copy)]
pub(super) struct At<'a> {
    pub tree: Tree,
    pub key: &'a [u8],
}

impl At<'_> {
    pub(super) fn decode_error(self, reason: impl ToString) -> Error {
        Error::Decode {
            tree: self.tree.name(),
            key: self.tree.describe(self.key),
            reason: reason.to_string(),
        }
    }

    /// Parses a stored value and returns its version with the value.
    fn versioned(self, bytes: &[u8]) -> Result<(u64, serde_json::Value)> {
        let value: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|err| self.decode_error(err))?;
        let version = value
            .get("v")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| self.decode_error("no version field \"v\""))?;
        Ok((version, value))
    }

    fn parse<T: DeserializeOwned>(self, value: serde_json::Value) -> Result<T> {
        serde_json::from_value(value).map_err(|err| self.decode_error(err))
    }

    fn unsupported(self, version: u64) -> Error {
        self.decode_error(format!(
            "value version {version} is not supported by this build (it writes {V1}); run the omni-gateway that wrote it"
        ))
    }
}

fn encode<T: Serialize>(tree: Tree, value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|err| Error::Encode {
        tree: tree.name(),
        reason: err.to_string(),
    })
}

fn page_context(id: &PageId) -> String {
    format!("page:{id}")
}

fn grant_context(fb_user_id: &str) -> String {
    format!("grant:{fb_user_id}")
}

pub(super) fn encode_page(key: &TokenKey, page: &Page) -> Result<Vec<u8>> {
    let Page {
        id,
        name,
        platform,
        department,
        welcome,
        finished,
        offline,
        token,
        grant,
        status,
        subscribers,
        connected_by,
        connected_at_ms,
        last_webhook_ms,
    } = page.clone();
    let token = token.map(|token| key.seal(&page_context(&id), &token));
    let stored = PageV2 {
        v: PAGE_V2,
        id,
        name,
        platform,
        department,
        welcome,
        finished,
        offline,
        token,
        grant,
        status,
        subscribers,
        connected_by,
        connected_at_ms,
        last_webhook_ms,
    };
    encode(Tree::Pages, &stored)
}

pub(super) fn decode_page(key: &TokenKey, at: At<'_>, bytes: &[u8]) -> Result<Page> {
    let (version, value) = at.versioned(bytes)?;
    let stored: PageV2 = match version {
        1 => PageV2::from(at.parse::<PageV1>(value)?),
        2 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    let token = match stored.token {
        Some(sealed) => Some(
            key.open(&page_context(&stored.id), &sealed)
                .ok_or_else(|| decrypt_error(at))?,
        ),
        None => None,
    };
    Ok(Page {
        id: stored.id,
        name: stored.name,
        platform: stored.platform,
        department: stored.department,
        welcome: stored.welcome,
        finished: stored.finished,
        offline: stored.offline,
        token,
        grant: stored.grant,
        status: stored.status,
        subscribers: stored.subscribers,
        connected_by: stored.connected_by,
        connected_at_ms: stored.connected_at_ms,
        last_webhook_ms: stored.last_webhook_ms,
    })
}

impl From<PageV1> for PageV2 {
    fn from(old: PageV1) -> PageV2 {
        PageV2 {
            v: PAGE_V2,
            id: old.id,
            name: old.name,
            platform: Platform::Messenger,
            department: old.department,
            welcome: old.welcome,
            finished: old.finished,
            offline: old.offline,
            token: old.token,
            grant: old.grant,
            status: old.status,
            subscribers: old.subscribers,
            connected_by: old.connected_by,
            connected_at_ms: old.connected_at_ms,
            last_webhook_ms: old.last_webhook_ms,
        }
    }
}

fn decrypt_error(at: At<'_>) -> Error {
    Error::Decrypt {
        tree: at.tree.name(),
        key: at.tree.describe(at.key),
    }
}

pub(super) fn encode_grant(key: &TokenKey, grant: &Grant) -> Result<Vec<u8>> {
    let stored = GrantV1 {
        v: V1,
        fb_user_id: grant.fb_user_id.clone(),
        user_token: key.seal(&grant_context(&grant.fb_user_id), &grant.user_token),
        admin_username: grant.admin_username.clone(),
        created_ms: grant.created_ms,
    };
    encode(Tree::Grants, &stored)
}

pub(super) fn decode_grant(key: &TokenKey, at: At<'_>, bytes: &[u8]) -> Result<Grant> {
    let (version, value) = at.versioned(bytes)?;
    let stored: GrantV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    let user_token = key
        .open(&grant_context(&stored.fb_user_id), &stored.user_token)
        .ok_or_else(|| decrypt_error(at))?;
    Ok(Grant {
        fb_user_id: stored.fb_user_id,
        user_token,
        admin_username: stored.admin_username,
        created_ms: stored.created_ms,
    })
}

pub(super) fn encode_deletion(request: &DeletionRequest) -> Result<Vec<u8>> {
    let DeletionRequest {
        code,
        requested_ms,
        completed_ms,
        pages_disconnected,
    } = request.clone();
    encode(
        Tree::Deletions,
        &DeletionV1 {
            v: V1,
            code,
            requested_ms,
            completed_ms,
            pages_disconnected,
        },
    )
}

pub(super) fn decode_deletion(at: At<'_>, bytes: &[u8]) -> Result<DeletionRequest> {
    let (version, value) = at.versioned(bytes)?;
    let stored: DeletionV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    Ok(DeletionRequest {
        code: stored.code,
        requested_ms: stored.requested_ms,
        completed_ms: stored.completed_ms,
        pages_disconnected: stored.pages_disconnected,
    })
}

pub(super) fn encode_oauth_state(state: &OAuthState) -> Result<Vec<u8>> {
    let OAuthState {
        admin_username,
        admin_user_id,
        room,
        expires_ms,
    } = state.clone();
    encode(
        Tree::OAuthStates,
        &OAuthStateV1 {
            v: V1,
            admin_username,
            admin_user_id,
            room,
            expires_ms,
        },
    )
}

pub(super) fn decode_oauth_state(at: At<'_>, bytes: &[u8]) -> Result<OAuthState> {
    let (version, value) = at.versioned(bytes)?;
    let stored: OAuthStateV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    Ok(OAuthState {
        admin_username: stored.admin_username,
        admin_user_id: stored.admin_user_id,
        room: stored.room,
        expires_ms: stored.expires_ms,
    })
}

pub(super) fn encode_conversation(conv: &Conversation) -> Result<Vec<u8>> {
    let Conversation {
        key,
        visitor_token,
        room,
        last_inbound_ms,
        held_since_ms,
        offline_notice_sent,
        last_agent_message_ms,
    } = conv.clone();
    let stored = ConversationV1 {
        v: V1,
        page: key.page,
        psid: key.psid,
        visitor_token,
        room,
        last_inbound_ms,
        held_since_ms,
        offline_notice_sent,
        last_agent_message_ms,
    };
    encode(Tree::Conversations, &stored)
}

pub(super) fn decode_conversation(at: At<'_>, bytes: &[u8]) -> Result<Conversation> {
    let (version, value) = at.versioned(bytes)?;
    let stored: ConversationV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    Ok(Conversation {
        key: ConversationKey::new(stored.page, stored.psid),
        visitor_token: stored.visitor_token,
        room: stored.room,
        last_inbound_ms: stored.last_inbound_ms,
        held_since_ms: stored.held_since_ms,
        offline_notice_sent: stored.offline_notice_sent,
        last_agent_message_ms: stored.last_agent_message_ms,
    })
}

pub(super) fn encode_room_index(key: &ConversationKey) -> Result<Vec<u8>> {
    encode(
        Tree::Rooms,
        &RoomIndexV1 {
            v: V1,
            page: key.page.clone(),
            psid: key.psid.clone(),
        },
    )
}

pub(super) fn decode_room_index(at: At<'_>, bytes: &[u8]) -> Result<ConversationKey> {
    let (version, value) = at.versioned(bytes)?;
    let stored: RoomIndexV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    Ok(ConversationKey::new(stored.page, stored.psid))
}

#[cfg(test)]
pub(super) fn encode_inbound(event: &InboundEvent) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    encode_arriving_to(&event.arriving(), &mut out)?;
    Ok(out)
}

/// Appends an event's encoding ([`InboundV1`]) to `out`: a journal record is written in place,
/// not copied in, and the item's text as it came (JSON already checked by the webhook's parse).
/// Written by hand, field by field in [`InboundV1`]'s order, byte for byte what serde writes
/// (a test compares them): this runs for every event a webhook brings.
pub(super) fn encode_arriving_to(event: &Arriving<'_>, out: &mut Vec<u8>) -> Result<()> {
    let mut numbers = itoa::Buffer::new();
    out.extend_from_slice(b"{\"v\":");
    out.extend_from_slice(numbers.format(V1).as_bytes());
    out.extend_from_slice(b",\"page\":");
    json_string_to(event.key.page.as_str(), out)?;
    out.extend_from_slice(b",\"psid\":");
    json_string_to(event.key.psid.as_str(), out)?;
    out.extend_from_slice(b",\"timestamp_ms\":");
    out.extend_from_slice(numbers.format(event.timestamp_ms).as_bytes());
    out.extend_from_slice(b",\"dedupe_key\":");
    match &event.dedupe_key {
        Some(key) => json_string_to(key, out)?,
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"received_ms\":");
    out.extend_from_slice(numbers.format(event.received_ms).as_bytes());
    out.extend_from_slice(if event.standby {
        b",\"standby\":true"
    } else {
        b",\"standby\":false"
    });
    out.extend_from_slice(b",\"payload\":");
    out.extend_from_slice(event.text.as_bytes());
    out.push(b'}');
    Ok(())
}

/// Appends `text` as a JSON string: copied between quotes when nothing in it needs escaping (ids
/// and `mid`s never do), otherwise escaped by serde_json.
fn json_string_to(text: &str, out: &mut Vec<u8>) -> Result<()> {
    // Without an early exit, so the check runs over many bytes at a time.
    let plain = text.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
        return Ok(());
    }
    serde_json::to_writer(&mut *out, text).map_err(|err| Error::Encode {
        tree: Tree::Inbox.name(),
        reason: err.to_string(),
    })
}

pub(super) fn decode_inbound(at: At<'_>, bytes: &[u8]) -> Result<InboundEvent> {
    let (version, value) = at.versioned(bytes)?;
    let stored: InboundV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    Ok(from_inbound_v1(stored))
}

/// What rebuilding the inbox's index needs of a held event. Read straight from the bytes with
/// the payload skipped, not decoded: a restart reads every held event (7 s for a million when
/// each was decoded whole).
#[derive(Debug)]
pub(super) struct InboundHead {
    pub key: ConversationKey,
    pub timestamp_ms: u64,
    pub dedupe_key: Option<String>,
}

#[derive(Deserialize)]
struct InboundHeadV1 {
    v: u64,
    page: PageId,
    psid: Psid,
    timestamp_ms: u64,
    dedupe_key: Option<String>,
}

pub(super) fn decode_inbound_head(at: At<'_>, bytes: &[u8]) -> Result<InboundHead> {
    let head: InboundHeadV1 = serde_json::from_slice(bytes).map_err(|err| at.decode_error(err))?;
    if head.v != u64::from(V1) {
        return Err(at.unsupported(head.v));
    }
    Ok(InboundHead {
        key: ConversationKey::new(head.page, head.psid),
        timestamp_ms: head.timestamp_ms,
        dedupe_key: head.dedupe_key,
    })
}

fn inbound_v1(event: InboundEvent) -> InboundV1 {
    let InboundEvent {
        key,
        timestamp_ms,
        dedupe_key,
        received_ms,
        standby,
        payload,
    } = event;
    InboundV1 {
        v: V1,
        page: key.page,
        psid: key.psid,
        timestamp_ms,
        dedupe_key,
        received_ms,
        standby,
        payload,
    }
}

fn from_inbound_v1(stored: InboundV1) -> InboundEvent {
    InboundEvent {
        key: ConversationKey::new(stored.page, stored.psid),
        timestamp_ms: stored.timestamp_ms,
        dedupe_key: stored.dedupe_key,
        received_ms: stored.received_ms,
        standby: stored.standby,
        payload: stored.payload,
    }
}

pub(super) fn encode_set_aside(aside: &SetAside) -> Result<Vec<u8>> {
    let SetAside {
        event,
        reason,
        detail,
        set_aside_ms,
    } = aside.clone();
    let stored = SetAsideV1 {
        v: V1,
        reason,
        detail,
        set_aside_ms,
        event: inbound_v1(event),
    };
    encode(Tree::SetAside, &stored)
}

pub(super) fn decode_set_aside(at: At<'_>, bytes: &[u8]) -> Result<SetAside> {
    let (version, value) = at.versioned(bytes)?;
    let stored: SetAsideV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    // The event inside keeps the inbox record's own version.
    if stored.event.v != V1 {
        return Err(at.unsupported(u64::from(stored.event.v)));
    }
    Ok(SetAside {
        event: from_inbound_v1(stored.event),
        reason: stored.reason,
        detail: stored.detail,
        set_aside_ms: stored.set_aside_ms,
    })
}

pub(super) fn encode_outbound(item: &OutboundItem) -> Result<Vec<u8>> {
    let OutboundItem {
        key,
        rc_message_id,
        room,
        agent_username,
        created_ms,
        payload,
    } = item.clone();
    let stored = OutboundV1 {
        v: V1,
        page: key.page,
        psid: key.psid,
        rc_message_id,
        room,
        agent_username,
        created_ms,
        payload,
    };
    encode(Tree::Outbox, &stored)
}

pub(super) fn decode_outbound(at: At<'_>, bytes: &[u8]) -> Result<OutboundItem> {
    let (version, value) = at.versioned(bytes)?;
    let stored: OutboundV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    Ok(OutboundItem {
        key: ConversationKey::new(stored.page, stored.psid),
        rc_message_id: stored.rc_message_id,
        room: stored.room,
        agent_username: stored.agent_username,
        created_ms: stored.created_ms,
        payload: stored.payload,
    })
}

/// A dedupe mark for `seen` or `relayed`, stamped with `at_ms` for pruning.
pub(super) fn encode_mark(tree: Tree, at_ms: u64) -> Result<Vec<u8>> {
    encode(tree, &MarkV1 { v: V1, at_ms })
}

pub(super) fn decode_mark(at: At<'_>, bytes: &[u8]) -> Result<u64> {
    let (version, value) = at.versioned(bytes)?;
    let stored: MarkV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    Ok(stored.at_ms)
}

pub(super) fn encode_sent(rc_message_id: &MessageId, at_ms: u64) -> Result<Vec<u8>> {
    let stored = SentV1 {
        v: V1,
        rc_message_id: rc_message_id.clone(),
        at_ms,
    };
    encode(Tree::Sent, &stored)
}

/// The Rocket.Chat message id and when it was sent.
pub(super) fn decode_sent(at: At<'_>, bytes: &[u8]) -> Result<(MessageId, u64)> {
    let (version, value) = at.versioned(bytes)?;
    let stored: SentV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    Ok((stored.rc_message_id, stored.at_ms))
}

pub(super) fn encode_reaction(name: &str, at_ms: u64) -> Result<Vec<u8>> {
    let stored = ReactionV1 {
        v: V1,
        name: name.to_owned(),
        at_ms,
    };
    encode(Tree::Reactions, &stored)
}

/// The emoji name and when it was set.
pub(super) fn decode_reaction(at: At<'_>, bytes: &[u8]) -> Result<(String, u64)> {
    let (version, value) = at.versioned(bytes)?;
    let stored: ReactionV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    Ok((stored.name, stored.at_ms))
}

pub(super) fn encode_posted(posted: &Posted) -> Result<Vec<u8>> {
    let Posted { page, mid, at_ms } = posted.clone();
    encode(
        Tree::Posted,
        &PostedV1 {
            v: V1,
            page,
            mid,
            at_ms,
        },
    )
}

pub(super) fn decode_posted(at: At<'_>, bytes: &[u8]) -> Result<Posted> {
    let (version, value) = at.versioned(bytes)?;
    let stored: PostedV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    Ok(Posted {
        page: stored.page,
        mid: stored.mid,
        at_ms: stored.at_ms,
    })
}

pub(super) fn encode_page_reaction(reaction: &PageReaction) -> Result<Vec<u8>> {
    let PageReaction {
        agent_names,
        shown,
        at_ms,
    } = reaction.clone();
    encode(
        Tree::PageReactions,
        &PageReactionV1 {
            v: V1,
            agent_names,
            shown,
            at_ms,
        },
    )
}

pub(super) fn decode_page_reaction(at: At<'_>, bytes: &[u8]) -> Result<PageReaction> {
    let (version, value) = at.versioned(bytes)?;
    let stored: PageReactionV1 = match version {
        1 => at.parse(value)?,
        other => return Err(at.unsupported(other)),
    };
    Ok(PageReaction {
        agent_names: stored.agent_names,
        shown: stored.shown,
        at_ms: stored.at_ms,
    })
}

#[cfg(test)]
mod tests {
    //! Snapshots of the on-disk form: a change here is a format change and needs a new version
    //! plus a migration arm, not an edit of the expected JSON.

    use secrecy::ExposeSecret;
    use serde_json::json;

    use super::*;

    fn at(tree: Tree, key: &[u8]) -> At<'_> {
        At { tree, key }
    }

    fn conv() -> ConversationKey {
        ConversationKey::new(PageId::new("1001"), Psid::new("2002"))
    }

    fn key() -> TokenKey {
        TokenKey::from_bytes([9; 32])
    }

    fn page() -> Page {
        Page {
            id: PageId::new("1001"),
            name: "Acme".into(),
            platform: Platform::Messenger,
            department: Some(Department {
                id: "d1".into(),
                name: "Sales".into(),
            }),
            welcome: Some("Hi".into()),
            finished: None,
            offline: Some("Later".into()),
            token: None,
            grant: Some("u7".into()),
            status: PageStatus::NeedsAuthorization {
                reason: "190".into(),
                since_ms: 5,
            },
            subscribers: vec!["alice".into()],
            connected_by: Some("alice".into()),
            connected_at_ms: Some(3),
            last_webhook_ms: None,
        }
    }

    fn stored(bytes: Vec<u8>) -> serde_json::Value {
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn page_snapshot() {
        assert_eq!(
            stored(encode_page(&key(), &page()).unwrap()),
            json!({"v":2,"id":"1001","name":"Acme","platform":"messenger","department":{"id":"d1","name":"Sales"},
                   "welcome":"Hi","finished":null,"offline":"Later","token":null,"grant":"u7",
                   "status":{"state":"needs_authorization","reason":"190","since_ms":5},
                   "subscribers":["alice"],"connected_by":"alice","connected_at_ms":3,"last_webhook_ms":null})
        );
        let statuses = [
            (PageStatus::Connected, json!({"state":"connected"})),
            (PageStatus::Disconnected, json!({"state":"disconnected"})),
        ];
        for (status, expected) in statuses {
            assert_eq!(serde_json::to_value(status).unwrap(), expected);
        }
    }

    #[test]
    fn instagram_page_snapshot_and_round_trip() {
        let mut instagram = page();
        instagram.id = PageId::new("17841405822304914");
        instagram.platform = Platform::Instagram {
            page: PageId::new("1001"),
            username: Some("lumiere_lyon".into()),
        };
        let bytes = encode_page(&key(), &instagram).unwrap();
        let value = stored(bytes.clone());
        assert_eq!(value["platform"], "instagram");
        assert_eq!(value["page"], "1001");
        assert_eq!(value["username"], "lumiere_lyon");
        let decoded = decode_page(&key(), at(Tree::Pages, b"17841405822304914"), &bytes).unwrap();
        assert_eq!(decoded, instagram);
    }

    #[test]
    fn a_page_written_before_instagram_decodes_as_messenger() {
        let v1 = json!({"v":1,"id":"1001","name":"Acme","department":{"id":"d1","name":"Sales"},
                   "welcome":"Hi","finished":null,"offline":"Later","token":null,"grant":"u7",
                   "status":{"state":"needs_authorization","reason":"190","since_ms":5},
                   "subscribers":["alice"],"connected_by":"alice","connected_at_ms":3,"last_webhook_ms":null});
        let bytes = serde_json::to_vec(&v1).unwrap();
        let decoded = decode_page(&key(), at(Tree::Pages, b"1001"), &bytes).unwrap();
        assert_eq!(decoded, page());
    }

    #[test]
    fn sealed_token_snapshot() {
        // A fixed nonce makes the sealed form reproducible; the real path draws a random one.
        let sealed =
            key().seal_with_nonce("page:1001", &SecretString::from("EAAB".to_owned()), [0; 12]);
        assert_eq!(sealed, "AAAAAAAAAAAAAAAA20X/uvdie+p/HDo8g+WLNU1jd4w=");
        assert_eq!(
            key().open("page:1001", &sealed).unwrap().expose_secret(),
            "EAAB"
        );
    }

    #[test]
    fn grant_snapshot_without_the_token() {
        let grant = Grant {
            fb_user_id: "u7".into(),
            user_token: SecretString::from("EAAG-user".to_owned()),
            admin_username: "alice".into(),
            created_ms: 11,
        };
        let mut value = stored(encode_grant(&key(), &grant).unwrap());
        let sealed = value["user_token"].take();
        assert_eq!(
            value,
            json!({"v":1,"fb_user_id":"u7","user_token":null,"admin_username":"alice","created_ms":11})
        );
        let sealed = sealed.as_str().unwrap();
        assert_eq!(
            key().open("grant:u7", sealed).unwrap().expose_secret(),
            "EAAG-user"
        );
        assert!(
            key().open("page:u7", sealed).is_none(),
            "a grant token must not open as a page token"
        );
    }

    #[test]
    fn deletion_request_snapshot() {
        let request = DeletionRequest {
            code: "c0de".into(),
            requested_ms: 5,
            completed_ms: Some(6),
            pages_disconnected: 2,
        };
        let bytes = encode_deletion(&request).unwrap();
        assert_eq!(
            stored(bytes.clone()),
            json!({"v":1,"code":"c0de","requested_ms":5,"completed_ms":6,"pages_disconnected":2})
        );
        assert_eq!(
            decode_deletion(at(Tree::Deletions, b"c0de"), &bytes).unwrap(),
            request
        );
    }

    #[test]
    fn snapshots_of_the_other_records() {
        let oauth = OAuthState {
            admin_username: "alice".into(),
            admin_user_id: UserId::new("U1"),
            room: RoomId::new("R1"),
            expires_ms: 99,
        };
        let conversation = Conversation {
            key: conv(),
            visitor_token: VisitorToken::new("vt"),
            room: Some(RoomId::new("R2")),
            last_inbound_ms: Some(1),
            held_since_ms: None,
            offline_notice_sent: true,
            last_agent_message_ms: Some(2),
        };
        let inbound = InboundEvent {
            key: conv(),
            timestamp_ms: 10,
            dedupe_key: Some("m_1".into()),
            received_ms: 12,
            standby: false,
            payload: Payload::from_value(&json!({"message":{"mid":"m_1","text":"hi"}})),
        };
        let outbound = OutboundItem {
            key: conv(),
            rc_message_id: MessageId::new("M1"),
            room: RoomId::new("R2"),
            agent_username: Some("bob".into()),
            created_ms: 20,
            payload: Outgoing::Reply {
                text: "hello".into(),
                files: vec![AgentFile {
                    path: "/file-upload/F1/a.pdf".into(),
                    name: "a.pdf".into(),
                    mime: "application/pdf".into(),
                }],
                agent: "bob".into(),
                automated: false,
                ts_ms: 20,
            },
        };
        let closing = OutboundItem {
            rc_message_id: MessageId::new("M2"),
            agent_username: None,
            payload: Outgoing::Close { ts_ms: 21 },
            ..outbound.clone()
        };
        let cases = [
            (
                encode_oauth_state(&oauth),
                json!({"v":1,"admin_username":"alice","admin_user_id":"U1","room":"R1","expires_ms":99}),
            ),
            (
                encode_conversation(&conversation),
                json!({"v":1,"page":"1001","psid":"2002","visitor_token":"vt","room":"R2","last_inbound_ms":1,
                       "held_since_ms":null,"offline_notice_sent":true,"last_agent_message_ms":2}),
            ),
            (
                encode_room_index(&conv()),
                json!({"v":1,"page":"1001","psid":"2002"}),
            ),
            (
                encode_inbound(&inbound),
                json!({"v":1,"page":"1001","psid":"2002","timestamp_ms":10,"dedupe_key":"m_1","received_ms":12,
                       "standby":false,"payload":{"message":{"mid":"m_1","text":"hi"}}}),
            ),
            (
                encode_outbound(&outbound),
                json!({"v":1,"page":"1001","psid":"2002","rc_message_id":"M1","room":"R2","agent_username":"bob",
                       "created_ms":20,"payload":{"kind":"reply","text":"hello","files":[{"path":"/file-upload/F1/a.pdf",
                       "name":"a.pdf","mime":"application/pdf"}],"agent":"bob","automated":false,"ts_ms":20}}),
            ),
            (
                encode_outbound(&closing),
                json!({"v":1,"page":"1001","psid":"2002","rc_message_id":"M2","room":"R2","agent_username":null,
                       "created_ms":20,"payload":{"kind":"close","ts_ms":21}}),
            ),
            (encode_mark(Tree::Seen, 42), json!({"v":1,"at_ms":42})),
        ];
        for (encoded, expected) in cases {
            assert_eq!(stored(encoded.unwrap()), expected);
        }
    }

    /// An outbox record as builds before the typed payload wrote it (the relay serialised its
    /// own `Outgoing` into an untyped payload): it reads as the same typed item.
    #[test]
    fn outbox_records_of_the_untyped_build_read() {
        let written = br#"{"v":1,"page":"1001","psid":"2002","rc_message_id":"M1","room":"R2","agent_username":"bob","created_ms":20,"payload":{"kind":"reply","text":"hello","files":[],"agent":"bob","automated":true,"ts_ms":20}}"#;
        let item = decode_outbound(at(Tree::Outbox, b"q"), written).unwrap();
        assert_eq!(
            item.payload,
            Outgoing::Reply {
                text: "hello".into(),
                files: vec![],
                agent: "bob".into(),
                automated: true,
                ts_ms: 20,
            }
        );
        let closing = br#"{"v":1,"page":"1001","psid":"2002","rc_message_id":"M2","room":"R2","agent_username":null,"created_ms":21,"payload":{"kind":"close","ts_ms":21}}"#;
        let item = decode_outbound(at(Tree::Outbox, b"q"), closing).unwrap();
        assert_eq!(item.payload, Outgoing::Close { ts_ms: 21 });
        assert_eq!(encode_outbound(&item).unwrap(), closing.to_vec());
    }

    #[test]
    fn every_record_round_trips() {
        let k = key();
        let mut p = page();
        p.token = Some(SecretString::from("EAAB-page".to_owned()));
        assert_eq!(
            decode_page(&k, at(Tree::Pages, b"1001"), &encode_page(&k, &p).unwrap()).unwrap(),
            p
        );
        let g = Grant {
            fb_user_id: "u7".into(),
            user_token: SecretString::from("EAAG".to_owned()),
            admin_username: "a".into(),
            created_ms: 1,
        };
        assert_eq!(
            decode_grant(&k, at(Tree::Grants, b"u7"), &encode_grant(&k, &g).unwrap()).unwrap(),
            g
        );
        assert_eq!(
            decode_room_index(at(Tree::Rooms, b"R"), &encode_room_index(&conv()).unwrap()).unwrap(),
            conv()
        );
        assert_eq!(
            decode_mark(
                at(Tree::Relayed, b"M"),
                &encode_mark(Tree::Relayed, 7).unwrap()
            )
            .unwrap(),
            7
        );
    }

    #[test]
    fn sent_message_snapshot() {
        let bytes = encode_sent(&MessageId::new("rcMsg1"), 7).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            json!({"v": 1, "rc_message_id": "rcMsg1", "at_ms": 7})
        );
        assert_eq!(
            decode_sent(at(Tree::Sent, b"k"), &bytes).unwrap(),
            (MessageId::new("rcMsg1"), 7)
        );
    }

    #[test]
    fn set_aside_snapshot() {
        let aside = SetAside {
            event: InboundEvent {
                key: conv(),
                timestamp_ms: 10,
                dedupe_key: Some("m_1".into()),
                received_ms: 12,
                standby: true,
                payload: Payload::from_value(&json!({"message":{"mid":"m_1","text":"hi"}})),
            },
            reason: "blocked".into(),
            detail: "refused".into(),
            set_aside_ms: 30,
        };
        let bytes = encode_set_aside(&aside).unwrap();
        assert_eq!(
            stored(bytes.clone()),
            json!({"v":1,"reason":"blocked","detail":"refused","set_aside_ms":30,
                   "event":{"v":1,"page":"1001","psid":"2002","timestamp_ms":10,"dedupe_key":"m_1",
                            "received_ms":12,"standby":true,"payload":{"message":{"mid":"m_1","text":"hi"}}}})
        );
        assert_eq!(
            decode_set_aside(at(Tree::SetAside, b"k"), &bytes).unwrap(),
            aside
        );
        let newer_event = br#"{"v":1,"reason":"r","detail":"d","set_aside_ms":1,"event":{"v":2,"page":"1","psid":"2","timestamp_ms":1,"dedupe_key":null,"received_ms":1,"standby":false,"payload":{}}}"#;
        let err = decode_set_aside(at(Tree::SetAside, b"k"), newer_event).unwrap_err();
        assert!(err.to_string().contains("value version 2"), "{err}");
    }

    #[test]
    fn reaction_snapshot() {
        let bytes = encode_reaction("heart", 9).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            json!({"v": 1, "name": "heart", "at_ms": 9})
        );
        assert_eq!(
            decode_reaction(at(Tree::Reactions, b"k"), &bytes).unwrap(),
            ("heart".to_owned(), 9)
        );
    }

    #[test]
    fn reaction_outbox_and_customer_message_snapshots() {
        let react = OutboundItem {
            key: conv(),
            rc_message_id: MessageId::new("fb0123"),
            room: RoomId::new("R2"),
            agent_username: Some("bob".into()),
            created_ms: 30,
            payload: Outgoing::React {
                mid: "m_1".into(),
                emoji: Some("👍".into()),
                ts_ms: 30,
            },
        };
        let bytes = encode_outbound(&react).unwrap();
        assert_eq!(
            stored(bytes.clone()),
            json!({"v":1,"page":"1001","psid":"2002","rc_message_id":"fb0123","room":"R2","agent_username":"bob",
                   "created_ms":30,"payload":{"kind":"react","mid":"m_1","emoji":"👍","ts_ms":30}})
        );
        assert_eq!(
            decode_outbound(at(Tree::Outbox, b"q"), &bytes).unwrap(),
            react
        );
        let unreact = br#"{"v":1,"page":"1001","psid":"2002","rc_message_id":"fb0123","room":"R2","agent_username":null,"created_ms":31,"payload":{"kind":"react","mid":"m_1","emoji":null,"ts_ms":31}}"#;
        assert!(matches!(
            decode_outbound(at(Tree::Outbox, b"q"), unreact)
                .unwrap()
                .payload,
            Outgoing::React { emoji: None, .. }
        ));

        let posted = Posted {
            page: PageId::new("1001"),
            mid: "m_1".into(),
            at_ms: 4,
        };
        let bytes = encode_posted(&posted).unwrap();
        assert_eq!(
            stored(bytes.clone()),
            json!({"v":1,"page":"1001","mid":"m_1","at_ms":4})
        );
        assert_eq!(
            decode_posted(at(Tree::Posted, b"fb0123"), &bytes).unwrap(),
            posted
        );

        let reaction = PageReaction {
            agent_names: vec![":thumbsup:".into(), ":heart:".into()],
            shown: Some(":heart:".into()),
            at_ms: 5,
        };
        let bytes = encode_page_reaction(&reaction).unwrap();
        assert_eq!(
            stored(bytes.clone()),
            json!({"v":1,"agent_names":[":thumbsup:",":heart:"],"shown":":heart:","at_ms":5})
        );
        assert_eq!(
            decode_page_reaction(at(Tree::PageReactions, b"fb0123"), &bytes).unwrap(),
            reaction
        );
    }

    #[test]
    fn an_arriving_event_is_written_byte_for_byte_as_serde_wrote_inbound_records() {
        let text = r#"{"sender":{"id":"2002"},"message":{"mid":"m_1","text":"caf\u00e9 \"x\""}}"#;
        let event = InboundEvent {
            key: conv(),
            timestamp_ms: 10,
            dedupe_key: Some("m:m_1".into()),
            received_ms: 12,
            standby: true,
            payload: serde_json::from_str(text).unwrap(),
        };
        let serde_form = serde_json::to_vec(&InboundV1 {
            v: V1,
            page: event.key.page.clone(),
            psid: event.key.psid.clone(),
            timestamp_ms: 10,
            dedupe_key: event.dedupe_key.clone(),
            received_ms: 12,
            standby: true,
            payload: event.payload.clone(),
        })
        .unwrap();
        let written = encode_inbound(&event).unwrap();
        assert_eq!(
            String::from_utf8(written.clone()).unwrap(),
            String::from_utf8(serde_form).unwrap()
        );
        // Ids that need escaping, no dedupe key, not from standby.
        let odd = InboundEvent {
            key: ConversationKey::new(PageId::new("p\"1\\"), Psid::new("tab\there é")),
            dedupe_key: None,
            standby: false,
            ..event.clone()
        };
        let serde_form = serde_json::to_vec(&InboundV1 {
            v: V1,
            page: odd.key.page.clone(),
            psid: odd.key.psid.clone(),
            timestamp_ms: 10,
            dedupe_key: None,
            received_ms: 12,
            standby: false,
            payload: odd.payload.clone(),
        })
        .unwrap();
        assert_eq!(encode_inbound(&odd).unwrap(), serde_form);
        // Read back through a JSON tree: the same item, not the same bytes.
        let read = decode_inbound(at(Tree::Inbox, b"k"), &written).unwrap();
        assert_eq!(read.payload.to_value(), event.payload.to_value());
        assert_eq!((read.key, read.dedupe_key), (event.key, event.dedupe_key));
    }

    #[test]
    fn an_inbound_head_reads_what_the_index_needs_and_refuses_other_versions() {
        let event = InboundEvent {
            key: ConversationKey::new(PageId::new("1"), Psid::new("2")),
            timestamp_ms: 7,
            dedupe_key: Some("m:abc".to_owned()),
            received_ms: 8,
            standby: true,
            payload: Payload::from_value(&json!({"message": {"mid": "abc", "text": "hi"}})),
        };
        let bytes = encode_inbound(&event).unwrap();
        let head = decode_inbound_head(at(Tree::Inbox, b"k"), &bytes).unwrap();
        assert_eq!(
            (head.key, head.timestamp_ms, head.dedupe_key),
            (event.key, 7, Some("m:abc".to_owned()))
        );
        let newer = br#"{"v":2,"page":"1","psid":"2","timestamp_ms":1,"dedupe_key":null}"#;
        let err = decode_inbound_head(at(Tree::Inbox, b"k"), newer).unwrap_err();
        assert!(
            err.to_string().contains("version 2 is not supported"),
            "{err}"
        );
    }

    #[test]
    fn undecodable_values_are_errors_naming_tree_and_key() {
        // (stored bytes, expected fragment)
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "expected ident"),
            (br#"{"name":"x"}"#, "no version field"),
            (
                br#"{"v":2,"admin_username":"a"}"#,
                "value version 2 is not supported",
            ),
            (br#"{"v":1,"admin_username":"a"}"#, "missing field"),
        ];
        for (bytes, expected) in cases {
            let err = decode_oauth_state(at(Tree::OAuthStates, b"state-secret"), bytes)
                .unwrap_err()
                .to_string();
            assert!(err.contains("oauth_states/stat…"), "{err}");
            assert!(
                !err.contains("state-secret"),
                "an oauth state is a secret: {err}"
            );
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn a_token_sealed_under_another_key_is_an_error_not_a_missing_token() {
        let mut p = page();
        p.token = Some(SecretString::from("EAAB".to_owned()));
        let bytes = encode_page(&key(), &p).unwrap();
        let err = decode_page(
            &TokenKey::from_bytes([1; 32]),
            at(Tree::Pages, b"1001"),
            &bytes,
        )
        .unwrap_err();
        assert!(matches!(err, Error::Decrypt { tree: "pages", .. }), "{err}");
    }
}
