//! Messenger webhooks (`docs/messenger.md` §2): the signature, the envelope, and typed
//! views of the events the relay delivers. Parsing is tolerant: unknown keys and event kinds are
//! skipped, never an error, because Meta adds them without notice.

use std::borrow::Cow;

use hmac::{Hmac, KeyInit, Mac};
use serde::de::IgnoredAny;
use sha2::Sha256;

use super::borrowed_json::{Object, Value};
use crate::ids::{PageId, Psid};
use outline::Outline;

mod item_text;
mod outline;
mod quick;

/// Why a webhook body was not accepted.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum WebhookError {
    #[error("missing X-Hub-Signature-256 header")]
    MissingSignature,
    #[error("malformed X-Hub-Signature-256 header (expected sha256=<64 hex digits>)")]
    MalformedSignature,
    #[error("signature does not match the body; check [facebook].app_secret")]
    BadSignature,
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("body is JSON but not a webhook envelope: {0}")]
    NotAnEnvelope(&'static str),
}

/// Checks `X-Hub-Signature-256` (`sha256=<hex>`) against HMAC-SHA256(app secret, raw body), in
/// constant time. The raw bytes are hashed as received: Meta signs its escaped-unicode form, so a
/// re-serialized body would not match.
pub fn verify_signature(
    app_secret: &[u8],
    header: Option<&str>,
    body: &[u8],
) -> Result<(), WebhookError> {
    let header = header.ok_or(WebhookError::MissingSignature)?;
    let hex_digest = header
        .trim()
        .strip_prefix("sha256=")
        .ok_or(WebhookError::MalformedSignature)?;
    let expected = hex::decode(hex_digest).map_err(|_| WebhookError::MalformedSignature)?;
    if expected.len() != 32 {
        return Err(WebhookError::MalformedSignature);
    }
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(app_secret)
        .map_err(|_| WebhookError::BadSignature)?;
    mac.update(body);
    mac.verify_slice(&expected)
        .map_err(|_| WebhookError::BadSignature)
}

/// One `messaging[]` or `standby[]` item of a page, with what routing needs pulled out.
#[derive(Clone, Debug)]
pub struct Envelope<'a> {
    pub page: PageId,
    /// The customer: the sender, or for echoes (sent by the page) the recipient.
    pub psid: Psid,
    pub timestamp_ms: u64,
    /// Meta's id for deduplication (see [`dedupe_key`]); `None` for events without one.
    pub dedupe_key: Option<String>,
    /// From `standby[]`: another app owns the thread (handover protocol).
    pub standby: bool,
    /// What ingest does with the item; the relay reads the whole [`Event`] from `text`.
    pub meaning: Meaning,
    /// The item's JSON text as received, stored as it is so later versions can read fields
    /// this one ignores.
    pub text: &'a str,
}

/// What ingest does with an item: relay it, tell an echo of the gateway's own send apart, or only
/// acknowledge it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Meaning {
    /// Messages, postbacks, edits, reactions, reads, unsends and unsupported messages.
    Relayed,
    /// A message the page sent; `app_id` and `metadata` tell whether the gateway sent it.
    Echo {
        app_id: Option<String>,
        metadata: Option<String>,
    },
    /// Deliveries, referrals and the rest: acknowledged, not relayed.
    Ignored,
}

impl Meaning {
    pub fn of(event: &Event) -> Meaning {
        match event {
            Event::Message { .. }
            | Event::Postback { .. }
            | Event::Edit { .. }
            | Event::Reaction { .. }
            | Event::Read { .. }
            | Event::Deleted { .. }
            | Event::Unsupported { .. } => Meaning::Relayed,
            Event::Echo {
                app_id, metadata, ..
            } => Meaning::Echo {
                app_id: app_id.clone(),
                metadata: metadata.clone(),
            },
            Event::Other(_) => Meaning::Ignored,
        }
    }
}

/// The result of reading a webhook body: the events, and a count of items that were skipped
/// because they lack a sender, recipient or page (logged by the caller).
#[derive(Debug, Default)]
pub struct Parsed<'a> {
    pub object: String,
    pub events: Vec<Envelope<'a>>,
    /// Meta's warnings and blocks of the app on a page (`messaging_policy_enforcement`).
    pub policy: Vec<PolicyEnforcement>,
    /// Who controls which conversation, and the page's app roles (`messaging_handovers`).
    pub handovers: Vec<Handover>,
    pub skipped: usize,
}

/// A `messaging_policy_enforcement` event: Meta warned about, blocked or unblocked the app on a
/// page. It has a recipient (the page) and no sender, so it is not a conversation's event.
/// Source: <https://developers.facebook.com/docs/messenger-platform/reference/webhook-events/messaging_policy_enforcement/>.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyEnforcement {
    pub page: PageId,
    /// `warning`, `block` or `unblock`.
    pub action: String,
    pub reason: Option<String>,
}

/// A `messaging_handovers` event. Source:
/// <https://developers.facebook.com/docs/messenger-platform/reference/webhook-events/messaging_handovers/>.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handover {
    /// `pass_thread_control` or `take_thread_control`: `owner` controls the conversation now.
    Moved {
        page: PageId,
        psid: Psid,
        owner: Option<String>,
    },
    /// `request_thread_control`: another app asks for a conversation this app controls.
    Requested {
        page: PageId,
        psid: Psid,
        requester: Option<String>,
    },
    /// `app_roles`: the apps that are the page's primary receivers.
    Roles {
        page: PageId,
        primary_receivers: Vec<String>,
    },
}

/// The `id` of the object under `key` (`sender`, `recipient`).
fn party_id<'i>(item: &'i Object<'_>, key: &str) -> Option<Cow<'i, str>> {
    item.object(key)?.id("id")
}

fn handover(item: &Object<'_>, entry_page: Option<&str>) -> Option<Handover> {
    let page = entry_page
        .map(str::to_owned)
        .or_else(|| party_id(item, "recipient").map(Cow::into_owned))?;
    let page = PageId::new(page);
    if let Some(roles) = item.object("app_roles") {
        let primary_receivers = roles
            .entries()
            .filter(|(_, list)| {
                list.as_array().is_some_and(|roles| {
                    roles
                        .iter()
                        .any(|role| role.as_str() == Some("primary_receiver"))
                })
            })
            .map(|(app, _)| app.to_owned())
            .collect();
        return Some(Handover::Roles {
            page,
            primary_receivers,
        });
    }
    let psid = || party_id(item, "sender").map(|psid| Psid::new(psid.as_ref()));
    for kind in ["pass_thread_control", "take_thread_control"] {
        if let Some(body) = item.section(kind) {
            return Some(Handover::Moved {
                page,
                psid: psid()?,
                owner: body.id("new_owner_app_id").map(Cow::into_owned),
            });
        }
    }
    let body = item.section("request_thread_control")?;
    Some(Handover::Requested {
        page,
        psid: psid()?,
        requester: body.id("requested_owner_app_id").map(Cow::into_owned),
    })
}

fn policy_enforcement(item: &Object<'_>, entry_page: Option<&str>) -> Option<PolicyEnforcement> {
    // Meta's reference spells the key with a hyphen; the field name uses an underscore.
    let body = item
        .section("policy-enforcement")
        .or_else(|| item.section("policy_enforcement"))?;
    let page = entry_page
        .map(str::to_owned)
        .or_else(|| party_id(item, "recipient").map(Cow::into_owned))?;
    Some(PolicyEnforcement {
        page: PageId::new(page),
        action: body.str("action").unwrap_or("warning").to_owned(),
        reason: body.str("reason").map(str::to_owned),
    })
}

/// Reads a webhook body (already signature-checked). The envelopes borrow their items' text
/// from `body`.
pub fn parse(body: &[u8]) -> Result<Parsed<'_>, WebhookError> {
    // JSON text is UTF-8: checked once here, not again for each string the pass borrows.
    let text = std::str::from_utf8(body)
        .map_err(|err| WebhookError::NotJson(format!("not UTF-8 text: {err}")))?;
    let body = match quick::read(text) {
        Some(body) => body,
        None => read_generally(text)?,
    };
    let entries = body
        .entries
        .ok_or(WebhookError::NotAnEnvelope("entry is not an array"))?;
    Ok(parsed(body.object, entries))
}

/// A body's `object` and entries, as either reader reads them.
struct Body<'a> {
    object: Option<Cow<'a, str>>,
    /// `None` when `entry` is not an array.
    entries: Option<Vec<BodyEntry<'a>>>,
}

/// One `entry[]` element: its page id, and its items, each with its text as Meta sent it.
#[derive(Default)]
struct BodyEntry<'a> {
    id: Option<Cow<'a, str>>,
    messaging: Vec<(ReadItem<'a>, &'a str)>,
    standby: Vec<(ReadItem<'a>, &'a str)>,
}

/// An item as read: its JSON values, or, for a plain customer message, only what ingest needs.
enum ReadItem<'a> {
    Json(Value<'a>),
    Message(PlainMessage<'a>),
}

/// An item with exactly `sender.id`, `recipient.id` (non-empty strings), `timestamp` and a
/// `message` with `mid` and maybe `text`: the usual customer message, read without building its
/// values. It means what the general way reads from it: a relayed message keyed by its `mid`.
struct PlainMessage<'a> {
    sender: &'a str,
    recipient: &'a str,
    timestamp_ms: u64,
    mid: &'a str,
}

/// Reads a body with serde_json, then finds each item's text beside that pass (`item_text`).
fn read_generally<'a>(text: &'a str) -> Result<Body<'a>, WebhookError> {
    let outline: Outline = serde_json::from_str(text).map_err(|err| {
        if serde_json::from_str::<IgnoredAny>(text).is_ok() {
            WebhookError::NotAnEnvelope("the body is not an object")
        } else {
            WebhookError::NotJson(err.to_string())
        }
    })?;
    let Some(entries) = outline.entries else {
        return Ok(Body {
            object: outline.object,
            entries: None,
        });
    };
    let texts = item_text::entries(text);
    // Both read the same text by the same rules; a difference would be a bug here, answered
    // like a body that cannot be read rather than stored wrong.
    let unlocated = || WebhookError::NotAnEnvelope("its items could not be located in its text");
    if texts.len() != entries.len() {
        return Err(unlocated());
    }
    let items = |values: Vec<Value<'a>>, texts: Vec<&'a str>| {
        if values.len() != texts.len() {
            return Err(unlocated());
        }
        Ok(values.into_iter().map(ReadItem::Json).zip(texts).collect())
    };
    let entries = entries
        .into_iter()
        .zip(texts)
        .map(|(entry, texts)| {
            Ok(BodyEntry {
                id: entry.id.map(Cow::Owned),
                messaging: items(entry.messaging, texts.messaging)?,
                standby: items(entry.standby, texts.standby)?,
            })
        })
        .collect::<Result<_, WebhookError>>()?;
    Ok(Body {
        object: outline.object,
        entries: Some(entries),
    })
}

/// What the items of a body's entries mean.
fn parsed<'a>(object: Option<Cow<'a, str>>, entries: Vec<BodyEntry<'a>>) -> Parsed<'a> {
    let mut parsed = Parsed {
        object: object.map(Cow::into_owned).unwrap_or_default(),
        ..Parsed::default()
    };
    // A batch is nearly always one page's: its entries share one copy of the id.
    let mut last_page: Option<PageId> = None;
    for entry in entries {
        let entry_page = entry.id.map(|id| match &last_page {
            Some(page) if page.as_str() == id => page.clone(),
            _ => PageId::new(id),
        });
        if entry_page.is_some() {
            last_page.clone_from(&entry_page);
        }
        let entry_page = entry_page.as_ref();
        for (items, standby) in [(entry.messaging, false), (entry.standby, true)] {
            for (item, text) in items {
                let item = match item {
                    ReadItem::Message(message) => {
                        parsed
                            .events
                            .push(plain_envelope(&message, text, entry_page, standby));
                        continue;
                    }
                    ReadItem::Json(value) => match value.into_object() {
                        Some(fields) => Item { fields },
                        None => {
                            parsed.skipped += 1;
                            continue;
                        }
                    },
                };
                let page_id = entry_page.map(PageId::as_str);
                if let Some(notice) = policy_enforcement(&item.fields, page_id) {
                    parsed.policy.push(notice);
                    continue;
                }
                if let Some(handover) = handover(&item.fields, page_id) {
                    parsed.handovers.push(handover);
                    continue;
                }
                match envelope(&item, text, entry_page, standby) {
                    Some(event) => parsed.events.push(event),
                    None => parsed.skipped += 1,
                }
            }
        }
    }
    parsed
}

/// Whether the hand reader of the usual body (`quick`) reads `text` as the general way does:
/// the same result when it reads it, and never a body the general way refuses.
#[cfg(any(test, fuzzing))]
fn readings_agree(text: &str) -> bool {
    let Some(quick) = quick::read(text) else {
        return true;
    };
    let Ok(general) = read_generally(text) else {
        return false;
    };
    let result = |body: Body<'_>| format!("{:?}", body.entries.map(|e| parsed(body.object, e)));
    result(quick) == result(general)
}

/// [`readings_agree`], for the fuzz target, which checks it on every input.
#[cfg(fuzzing)]
pub fn both_readings_agree(body: &str) -> bool {
    readings_agree(body)
}

/// A `messaging[]` item's fields, with its `message` (where most events are) read once.
struct Item<'a> {
    fields: Object<'a>,
}

impl<'a> Item<'a> {
    fn parse(text: &'a str) -> Option<Item<'a>> {
        Object::parse(text).map(|fields| Item { fields })
    }

    fn message(&self) -> Option<&Object<'a>> {
        self.fields.section("message")
    }
}

fn envelope<'a>(
    item: &Item<'a>,
    text: &'a str,
    entry_page: Option<&PageId>,
    standby: bool,
) -> Option<Envelope<'a>> {
    let sender = party_id(&item.fields, "sender")?;
    let recipient = party_id(&item.fields, "recipient")?;
    let event = item_event(item);
    let (page, psid) = if matches!(event, Event::Echo { .. }) {
        (sender, recipient)
    } else {
        (recipient, sender)
    };
    Some(Envelope {
        // The entry's id is the page; trust it over the recipient when both are present.
        page: entry_page
            .cloned()
            .unwrap_or_else(|| PageId::new(page.as_ref())),
        psid: Psid::new(psid.as_ref()),
        timestamp_ms: item.fields.u64("timestamp").unwrap_or(0),
        dedupe_key: item_dedupe_key(item),
        standby,
        meaning: Meaning::of(&event),
        text,
    })
}

/// [`envelope`] for a plain customer message: what the general way reads from the same item.
fn plain_envelope<'a>(
    message: &PlainMessage<'a>,
    text: &'a str,
    entry_page: Option<&PageId>,
    standby: bool,
) -> Envelope<'a> {
    Envelope {
        page: entry_page
            .cloned()
            .unwrap_or_else(|| PageId::new(message.recipient)),
        psid: Psid::new(message.sender),
        timestamp_ms: message.timestamp_ms,
        dedupe_key: Some([MESSAGE_KEY, message.mid].concat()),
        standby,
        meaning: Meaning::Relayed,
        text,
    }
}

/// How a message's dedupe key starts: the `mid` follows.
const MESSAGE_KEY: &str = "m:";

/// The `mid` of a message's dedupe key ([`dedupe_key`]); `None` for other events' keys.
pub fn message_mid(dedupe_key: &str) -> Option<&str> {
    dedupe_key.strip_prefix(MESSAGE_KEY)
}

/// The key Meta's redeliveries share (`docs/messenger.md` §2.4): `mid` for messages, echoes and
/// postbacks; `mid` + edit number for edits; sender, mid, action and time for reactions.
pub fn dedupe_key(item: &str) -> Option<String> {
    item_dedupe_key(&Item::parse(item)?)
}

fn item_dedupe_key(item: &Item<'_>) -> Option<String> {
    if let Some(message) = item.message() {
        let mid = message.str("mid")?;
        // An Instagram unsend reuses the `mid` of the message it removes (`docs/instagram.md`
        // §4.8): keyed apart, or it would be dropped as a redelivery of the original.
        if message.bool("is_deleted") == Some(true) {
            return Some(format!("d:{mid}"));
        }
        return Some(format!("{MESSAGE_KEY}{mid}"));
    }
    let item = &item.fields;
    if let Some(postback) = item.section("postback") {
        return postback.str("mid").map(|mid| format!("p:{mid}"));
    }
    if let Some(edit) = item.section("message_edit") {
        // The number as Meta wrote it.
        let n = edit
            .get("num_edit")
            .and_then(Value::scalar_text)
            .unwrap_or_default();
        return edit.str("mid").map(|mid| format!("e:{mid}:{n}"));
    }
    if let Some(reaction) = item.section("reaction") {
        let sender = party_id(item, "sender")?;
        let action = reaction.str("action").unwrap_or("react");
        let ts = item.u64("timestamp").unwrap_or(0);
        return reaction
            .str("mid")
            .map(|mid| format!("r:{sender}:{mid}:{action}:{ts}"));
    }
    None
}

/// What a Messenger event means for the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A customer's message.
    Message {
        mid: String,
        text: Option<String>,
        attachments: Vec<Attachment>,
        /// Set when the customer tapped a quick reply (its text is `text`).
        quick_reply: bool,
        /// The message this one answers (`reply_to.mid`).
        reply_to: Option<String>,
        /// Instagram: the story this message answers (`reply_to.story.url`, which has no `mid`;
        /// `docs/instagram.md` §4.3).
        story_reply: Option<String>,
    },
    /// Instagram: the customer unsent the message with this `mid` (`is_deleted`,
    /// `docs/instagram.md` §4.8).
    Deleted { mid: String },
    /// Instagram: a message Instagram does not show to apps (`is_unsupported`).
    Unsupported { mid: String },
    /// A button tap.
    Postback { mid: Option<String>, title: String },
    /// A customer edited a message.
    Edit { mid: String, text: String },
    /// A customer reacted to a message (theirs or the page's), or took the reaction back
    /// (`react: false`; the emoji may then be missing).
    Reaction {
        mid: String,
        emoji: Option<String>,
        react: bool,
    },
    /// The customer read every page message sent at or before `watermark_ms`.
    Read { watermark_ms: u64 },
    /// A message the page sent (from this app or from another tool such as the Page Inbox):
    /// `metadata` is what the sending app attached to its Send API call.
    Echo {
        app_id: Option<String>,
        mid: Option<String>,
        text: Option<String>,
        attachments: Vec<Attachment>,
        metadata: Option<String>,
    },
    /// Anything else (deliveries, referrals, handover…): acknowledged, not relayed.
    Other(&'static str),
}

/// A file or rich content in a customer's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// `image`, `video`, `audio`, `file`, `sticker`, `location`, `fallback`, `reel`, …
    pub kind: String,
    pub url: Option<String>,
    pub title: Option<String>,
    /// `(lat, long)` of a legacy location attachment.
    pub coordinates: Option<(String, String)>,
}

impl Attachment {
    /// Whether the content is a file to download and upload (as opposed to a link or a place).
    pub fn is_file(&self) -> bool {
        // A sticker is an image with a URL (`docs/messenger.md` §2.6).
        matches!(
            self.kind.as_str(),
            "image" | "video" | "audio" | "file" | "sticker"
        ) && self.url.is_some()
    }
}

/// Reads the meaning of one `messaging[]` item (as stored: its JSON text).
pub fn event(item: &str) -> Event {
    match Item::parse(item) {
        Some(item) => item_event(&item),
        None => Event::Other("not an object"),
    }
}

fn item_event(item: &Item<'_>) -> Event {
    let owned = |text: Option<&str>| text.map(str::to_owned);
    if let Some(message) = item.message() {
        let attachments = || {
            message
                .array("attachments")
                .map(|list| list.iter().filter_map(attachment).collect())
                .unwrap_or_default()
        };
        if message.bool("is_echo") == Some(true) {
            return Event::Echo {
                app_id: message.id("app_id").map(Cow::into_owned),
                mid: owned(message.str("mid")),
                text: owned(message.str("text")),
                attachments: attachments(),
                metadata: owned(message.str("metadata")),
            };
        }
        let Some(mid) = owned(message.str("mid")) else {
            return Event::Other("message without mid");
        };
        if message.bool("is_deleted") == Some(true) {
            return Event::Deleted { mid };
        }
        if message.bool("is_unsupported") == Some(true) {
            return Event::Unsupported { mid };
        }
        let reply_to = message.object("reply_to");
        return Event::Message {
            mid,
            text: owned(message.str("text")),
            attachments: attachments(),
            quick_reply: message.get("quick_reply").is_some(),
            reply_to: owned(reply_to.and_then(|r| r.str("mid"))),
            story_reply: owned(
                reply_to
                    .and_then(|r| r.object("story"))
                    .and_then(|story| story.str("url")),
            ),
        };
    }
    let item = &item.fields;
    if let Some(postback) = item.section("postback") {
        return Event::Postback {
            mid: owned(postback.str("mid")),
            title: postback
                .str("title")
                .or_else(|| postback.str("payload"))
                .unwrap_or("(button)")
                .to_owned(),
        };
    }
    if let Some(edit) = item.section("message_edit") {
        if let (Some(mid), Some(text)) = (edit.str("mid"), edit.str("text")) {
            return Event::Edit {
                mid: mid.to_owned(),
                text: text.to_owned(),
            };
        }
        return Event::Other("message_edit without text");
    }
    if let Some(reaction) = item.section("reaction") {
        // https://developers.facebook.com/docs/messenger-platform/reference/webhook-events/message-reactions
        if let Some(mid) = reaction.str("mid") {
            return Event::Reaction {
                mid: mid.to_owned(),
                emoji: owned(reaction.str("emoji").filter(|e| !e.is_empty())),
                react: reaction.str("action") != Some("unreact"),
            };
        }
        return Event::Other("reaction without mid");
    }
    if let Some(read) = item.section("read") {
        // https://developers.facebook.com/docs/messenger-platform/reference/webhook-events/message-reads
        // An Instagram read names one message (`read.mid`) and no watermark
        // (`docs/instagram.md` §4.5): everything sent before the read's time was seen.
        let instagram_read = read.get("mid").and_then(|_| item.u64("timestamp"));
        return match read.u64("watermark").or(instagram_read) {
            Some(watermark_ms) => Event::Read { watermark_ms },
            None => Event::Other("read without watermark"),
        };
    }
    for kind in [
        "delivery",
        "referral",
        "optin",
        "account_linking",
        "pass_thread_control",
        "take_thread_control",
        "request_thread_control",
        "policy_enforcement",
        "policy-enforcement",
    ] {
        if item.get(kind).is_some() {
            return Event::Other(kind);
        }
    }
    Event::Other("unknown")
}

fn attachment(value: &Value<'_>) -> Option<Attachment> {
    let value = value.as_object()?;
    let kind = value.str("type")?.to_owned();
    let payload = value.object("payload");
    let field = |name: &str| payload.and_then(|p| p.str(name)).map(str::to_owned);
    let coordinates = payload.and_then(|p| p.object("coordinates")).and_then(|c| {
        let lat = c.get("lat")?.scalar_text()?;
        let long = c.get("long")?.scalar_text()?;
        Some((lat, long))
    });
    // A `fallback` (shared link) may carry `url` and `title` beside `payload` rather than in it.
    let top = |name: &str| value.str(name).map(str::to_owned);
    Some(Attachment {
        url: field("url").or_else(|| top("url")),
        title: field("title").or_else(|| top("title")),
        coordinates,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    /// An item as the store keeps it: its JSON text.
    fn raw(item: &Value) -> String {
        item.to_string()
    }

    const SECRET: &[u8] = b"app-secret";

    fn sign(body: &[u8]) -> String {
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(SECRET).unwrap();
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn signatures() {
        let body = br#"{"object":"page","entry":[]}"#;
        let good = sign(body);
        type Case<'a> = (Option<String>, &'a [u8], Result<(), WebhookError>);
        let cases: Vec<Case> = vec![
            (Some(good.clone()), body, Ok(())),
            (
                Some(good.to_uppercase().replace("SHA256=", "sha256=")),
                body,
                Ok(()),
            ),
            (None, body, Err(WebhookError::MissingSignature)),
            (
                Some("sha1=abcd".into()),
                body,
                Err(WebhookError::MalformedSignature),
            ),
            (
                Some("sha256=zz".into()),
                body,
                Err(WebhookError::MalformedSignature),
            ),
            (
                Some("sha256=abcd".into()),
                body,
                Err(WebhookError::MalformedSignature),
            ),
            (
                Some(good.clone()),
                br#"{"object":"page","entry":[1]}"#,
                Err(WebhookError::BadSignature),
            ),
            (Some(sign(b"other")), body, Err(WebhookError::BadSignature)),
        ];
        for (header, body, expected) in cases {
            assert_eq!(
                verify_signature(SECRET, header.as_deref(), body),
                expected,
                "{header:?}"
            );
        }
    }

    #[test]
    fn unicode_escapes_are_hashed_as_received() {
        let escaped = br#"{"text":"\u00e4\u00f6\u00e5"}"#;
        assert_eq!(
            verify_signature(SECRET, Some(&sign(escaped)), escaped),
            Ok(())
        );
        let decoded = "{\"text\":\"äöå\"}".as_bytes();
        assert_eq!(
            verify_signature(SECRET, Some(&sign(escaped)), decoded),
            Err(WebhookError::BadSignature)
        );
    }

    #[test]
    fn envelopes_from_messaging_and_standby() {
        let body = json!({"object":"page","entry":[
            {"id":"P1","time":1,"messaging":[
                {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":10,"message":{"mid":"m1","text":"hi"}},
                {"sender":{"id":"P1"},"recipient":{"id":"U1"},"timestamp":11,"message":{"mid":"m2","is_echo":true,"app_id":42}},
                {"recipient":{"id":"P1"},"timestamp":12,"read":{"watermark":1}}
            ]},
            {"id":"P2","time":2,"standby":[
                {"sender":{"id":"U2"},"recipient":{"id":"P2"},"timestamp":13,"postback":{"mid":"pb","title":"Start"}}
            ],"changes":[{"field":"feed","value":{}}]}
        ]});
        let body = body.to_string();
        let parsed = parse(body.as_bytes()).expect("parsed");
        assert_eq!(parsed.object, "page");
        assert_eq!(parsed.skipped, 1, "the item without a sender");
        let summary: Vec<_> = parsed
            .events
            .iter()
            .map(|e| {
                (
                    e.page.as_str(),
                    e.psid.as_str(),
                    e.timestamp_ms,
                    e.dedupe_key.clone(),
                    e.standby,
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("P1", "U1", 10, Some("m:m1".into()), false),
                ("P1", "U1", 11, Some("m:m2".into()), false),
                ("P2", "U2", 13, Some("p:pb".into()), true),
            ]
        );
    }

    #[test]
    fn items_are_kept_as_meta_sent_them() {
        // Escapes and spacing stay as received: the stored text is Meta's, read when delivered.
        let body = br#"{"object":"page","entry":[{"id":"P1","messaging":[ 7,
            {"sender":{"id":"U1"}, "recipient":{"id":"P1"}, "timestamp":10,
             "message":{"mid":"m1","text":"caf\u00e9"}} ]}, "not an entry"]}"#;
        let parsed = parse(body).expect("parsed");
        assert_eq!(parsed.skipped, 1, "the item that is not an object");
        let [envelope] = &parsed.events[..] else {
            panic!("one event: {:?}", parsed.events);
        };
        assert_eq!(
            envelope.text,
            r#"{"sender":{"id":"U1"}, "recipient":{"id":"P1"}, "timestamp":10,
             "message":{"mid":"m1","text":"caf\u00e9"}}"#
        );
        assert_eq!(Meaning::of(&event(envelope.text)), envelope.meaning);
        assert!(
            matches!(event(envelope.text), Event::Message { text: Some(t), .. } if t == "café")
        );
    }

    #[test]
    fn bad_bodies() {
        for (body, expected) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "not an object"),
            (br#"{"entry":5}"#, "not an array"),
            (b"{\"object\":\"pa\xffge\"}", "not UTF-8"),
        ] {
            let err = parse(body).expect_err("refused");
            assert!(err.to_string().contains(expected), "{err}");
        }
        let empty = parse(br#"{"object":"page"}"#).expect("tolerated");
        assert!(empty.events.is_empty());
    }

    #[test]
    fn event_kinds() {
        let cases = vec![
            (
                json!({"message":{"mid":"m","text":"Yes","quick_reply":{"payload":"Y"}}}),
                Event::Message {
                    mid: "m".into(),
                    text: Some("Yes".into()),
                    attachments: vec![],
                    quick_reply: true,
                    reply_to: None,
                    story_reply: None,
                },
            ),
            (
                json!({"message":{"mid":"m","text":"re","reply_to":{"mid":"old"}}}),
                Event::Message {
                    mid: "m".into(),
                    text: Some("re".into()),
                    attachments: vec![],
                    quick_reply: false,
                    reply_to: Some("old".into()),
                    story_reply: None,
                },
            ),
            (
                json!({"message":{"mid":"m","text":"love it","reply_to":{"story":{"url":"https://cdn/s","id":"18"}}}}),
                Event::Message {
                    mid: "m".into(),
                    text: Some("love it".into()),
                    attachments: vec![],
                    quick_reply: false,
                    reply_to: None,
                    story_reply: Some("https://cdn/s".into()),
                },
            ),
            (
                json!({"message":{"mid":"gone","is_deleted":true}}),
                Event::Deleted { mid: "gone".into() },
            ),
            (
                json!({"message":{"mid":"odd","is_unsupported":true}}),
                Event::Unsupported { mid: "odd".into() },
            ),
            (
                json!({"timestamp":77,"read":{"mid":"seen"}}),
                Event::Read { watermark_ms: 77 },
            ),
            (
                json!({"postback":{"mid":"p","title":"Talk to a person","payload":"HUMAN"}}),
                Event::Postback {
                    mid: Some("p".into()),
                    title: "Talk to a person".into(),
                },
            ),
            (
                json!({"message_edit":{"mid":"m","text":"fixed","num_edit":1}}),
                Event::Edit {
                    mid: "m".into(),
                    text: "fixed".into(),
                },
            ),
            (
                json!({"message":{"mid":"m","is_echo":true,"app_id":1517776481860111i64,
                    "text":"hi","metadata":"omni-gateway:abc:0"}}),
                Event::Echo {
                    app_id: Some("1517776481860111".into()),
                    mid: Some("m".into()),
                    text: Some("hi".into()),
                    attachments: vec![],
                    metadata: Some("omni-gateway:abc:0".into()),
                },
            ),
            (
                json!({"read":{"watermark":1}}),
                Event::Read { watermark_ms: 1 },
            ),
            (json!({"read":{}}), Event::Other("read without watermark")),
            (
                json!({"reaction":{"mid":"m","action":"react","emoji":"\u{2764}\u{FE0F}","reaction":"love"}}),
                Event::Reaction {
                    mid: "m".into(),
                    emoji: Some("❤️".into()),
                    react: true,
                },
            ),
            (
                json!({"reaction":{"mid":"m","action":"unreact"}}),
                Event::Reaction {
                    mid: "m".into(),
                    emoji: None,
                    react: false,
                },
            ),
            (
                json!({"reaction":{"action":"react"}}),
                Event::Other("reaction without mid"),
            ),
            (json!({"brand_new_kind":{}}), Event::Other("unknown")),
            (
                json!({"message":{"text":"no mid"}}),
                Event::Other("message without mid"),
            ),
        ];
        for (item, expected) in cases {
            assert_eq!(event(&raw(&item)), expected, "{item}");
        }
    }

    #[test]
    fn handovers_and_policy_notices_are_read_from_the_envelope() {
        let body = json!({"object":"page","entry":[{"id":"P1","time":1,"messaging":[
            {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":1,
             "pass_thread_control":{"new_owner_app_id":"42","previous_owner_app_id":"263902037430900"}},
            {"sender":{"id":"U1"},"recipient":{"id":"P1"},"timestamp":2,
             "request_thread_control":{"requested_owner_app_id":263902037430900i64}},
            {"recipient":{"id":"P1"},"timestamp":3,"app_roles":{"42":["primary_receiver"],"7":["secondary_receiver"]}},
            {"recipient":{"id":"P1"},"timestamp":4,"policy-enforcement":{"action":"block","reason":"spam"}}
        ]}]});
        let body = body.to_string();
        let parsed = parse(body.as_bytes()).expect("parses");
        assert!(parsed.events.is_empty());
        assert_eq!(parsed.skipped, 0);
        assert_eq!(
            parsed.handovers,
            vec![
                Handover::Moved {
                    page: PageId::new("P1"),
                    psid: Psid::new("U1"),
                    owner: Some("42".into()),
                },
                Handover::Requested {
                    page: PageId::new("P1"),
                    psid: Psid::new("U1"),
                    requester: Some("263902037430900".into()),
                },
                Handover::Roles {
                    page: PageId::new("P1"),
                    primary_receivers: vec!["42".into()],
                },
            ]
        );
        assert_eq!(
            parsed.policy,
            vec![PolicyEnforcement {
                page: PageId::new("P1"),
                action: "block".into(),
                reason: Some("spam".into()),
            }]
        );
    }

    #[test]
    fn attachments_of_every_kind() {
        let item = json!({"message":{"mid":"m","attachments":[
            {"type":"image","payload":{"url":"https://cdn/x.jpg"}},
            {"type":"sticker","payload":{"url":"https://cdn/s.png","sticker_id":369239263222822i64}},
            {"type":"location","payload":{"coordinates":{"lat":52.5,"long":13.4}},"title":"Berlin"},
            {"type":"fallback","payload":{"url":"https://example.com","title":"Example"}},
            {"type":"fallback"},
            {"type":"fallback","url":"https://example.org/a","title":"Top level"},
            {"payload":{}}
        ]}});
        let Event::Message { attachments, .. } = event(&raw(&item)) else {
            panic!("a message");
        };
        let kinds: Vec<_> = attachments
            .iter()
            .map(|a| (a.kind.as_str(), a.is_file()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("image", true),
                ("sticker", true),
                ("location", false),
                ("fallback", false),
                ("fallback", false),
                ("fallback", false)
            ]
        );
        assert_eq!(attachments[5].url.as_deref(), Some("https://example.org/a"));
        assert_eq!(attachments[5].title.as_deref(), Some("Top level"));
        assert_eq!(
            attachments[2].coordinates,
            Some(("52.5".into(), "13.4".into()))
        );
        assert_eq!(attachments[2].title.as_deref(), Some("Berlin"));
    }

    #[test]
    fn instagram_envelopes_are_keyed_by_the_account() {
        // docs/instagram.md §3.1 and §4.7: the entry id is the account, an echo swaps the ends,
        // and standby items arrive like Messenger's.
        let body = json!({"object":"instagram","entry":[{"id":"178","time":1,
            "messaging":[
                {"sender":{"id":"ig-user"},"recipient":{"id":"178"},"timestamp":2,
                 "message":{"mid":"aWdf1","text":"Bonjour"}},
                {"sender":{"id":"178"},"recipient":{"id":"ig-user"},"timestamp":3,
                 "message":{"mid":"aWdf2","text":"Salut","is_echo":true}}],
            "standby":[
                {"sender":{"id":"ig-user"},"recipient":{"id":"178"},"timestamp":4,
                 "message":{"mid":"aWdf3","text":"hello?"}}]}]});
        let body = body.to_string();
        let parsed = parse(body.as_bytes()).expect("parses");
        assert_eq!(parsed.object, "instagram");
        let seen: Vec<(&str, &str, bool)> = parsed
            .events
            .iter()
            .map(|e| (e.page.as_str(), e.psid.as_str(), e.standby))
            .collect();
        assert_eq!(
            seen,
            vec![
                ("178", "ig-user", false),
                ("178", "ig-user", false),
                ("178", "ig-user", true)
            ]
        );
        assert!(matches!(
            event(parsed.events[1].text),
            Event::Echo {
                app_id: None,
                metadata: None,
                ..
            }
        ));
    }

    #[test]
    fn dedupe_keys() {
        let cases = vec![
            (json!({"message":{"mid":"a"}}), Some("m:a")),
            (json!({"postback":{"mid":"b"}}), Some("p:b")),
            (json!({"postback":{"title":"old, no mid"}}), None),
            (
                json!({"message_edit":{"mid":"c","num_edit":2}}),
                Some("e:c:2"),
            ),
            (
                json!({"sender":{"id":"u"},"timestamp":5,"reaction":{"mid":"d","action":"unreact"}}),
                Some("r:u:d:unreact:5"),
            ),
            (json!({"read":{"watermark":1}}), None),
            // An Instagram unsend reuses its original's mid and must not match its key.
            (
                json!({"message":{"mid":"a","is_deleted":true}}),
                Some("d:a"),
            ),
        ];
        for (item, expected) in cases {
            assert_eq!(dedupe_key(&raw(&item)).as_deref(), expected, "{item}");
        }
        assert_eq!(message_mid("m:m_1"), Some("m_1"));
        assert_eq!(message_mid("e:m_1:2"), None);
    }
}
