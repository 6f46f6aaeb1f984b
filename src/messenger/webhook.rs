//! Messenger webhooks (`docs/messenger.md` §2): the signature, the envelope, and typed
//! views of the events the relay delivers. Parsing is tolerant: unknown keys and event kinds are
//! skipped, never an error, because Meta adds them without notice.

use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use crate::ids::{PageId, Psid};

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
#[derive(Clone, Debug, PartialEq)]
pub struct Envelope {
    pub page: PageId,
    /// The customer: the sender, or for echoes (sent by the page) the recipient.
    pub psid: Psid,
    pub timestamp_ms: u64,
    /// Meta's id for deduplication (see [`dedupe_key`]); `None` for events without one.
    pub dedupe_key: Option<String>,
    /// From `standby[]`: another app owns the thread (handover protocol).
    pub standby: bool,
    /// The item as received, so later versions can read fields this one ignores.
    pub raw: Value,
}

/// The result of reading a webhook body: the events, and a count of items that were skipped
/// because they lack a sender, recipient or page (logged by the caller).
#[derive(Debug, Default, PartialEq)]
pub struct Parsed {
    pub object: String,
    pub events: Vec<Envelope>,
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

fn handover(item: &Value, entry_page: Option<&str>) -> Option<Handover> {
    let page = entry_page.map(str::to_owned).or_else(|| {
        item.get("recipient")
            .and_then(|r| r.get("id"))
            .and_then(id_string)
    })?;
    let page = PageId::new(page);
    if let Some(roles) = item.get("app_roles").and_then(Value::as_object) {
        let primary_receivers = roles
            .iter()
            .filter(|(_, list)| {
                list.as_array()
                    .is_some_and(|l| l.iter().any(|r| r.as_str() == Some("primary_receiver")))
            })
            .map(|(app, _)| app.clone())
            .collect();
        return Some(Handover::Roles {
            page,
            primary_receivers,
        });
    }
    let psid = || {
        item.get("sender")
            .and_then(|s| s.get("id"))
            .and_then(id_string)
            .map(Psid::new)
    };
    for kind in ["pass_thread_control", "take_thread_control"] {
        if let Some(body) = item.get(kind) {
            return Some(Handover::Moved {
                page,
                psid: psid()?,
                owner: body.get("new_owner_app_id").and_then(id_string),
            });
        }
    }
    let body = item.get("request_thread_control")?;
    Some(Handover::Requested {
        page,
        psid: psid()?,
        requester: body.get("requested_owner_app_id").and_then(id_string),
    })
}

fn policy_enforcement(item: &Value, entry_page: Option<&str>) -> Option<PolicyEnforcement> {
    // Meta's reference spells the key with a hyphen; the field name uses an underscore.
    let body = item
        .get("policy-enforcement")
        .or_else(|| item.get("policy_enforcement"))?;
    let page = entry_page.map(str::to_owned).or_else(|| {
        item.get("recipient")
            .and_then(|r| r.get("id"))
            .and_then(id_string)
    })?;
    Some(PolicyEnforcement {
        page: PageId::new(page),
        action: body
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("warning")
            .to_owned(),
        reason: body
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Reads a webhook body (already signature-checked).
pub fn parse(body: &[u8]) -> Result<Parsed, WebhookError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::NotJson(e.to_string()))?;
    // Owned, so each item moves into its envelope instead of being copied.
    let Value::Object(mut root) = value else {
        return Err(WebhookError::NotAnEnvelope("the body is not an object"));
    };
    let object = root
        .get("object")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let entries = match root.remove("entry") {
        Some(Value::Array(entries)) => entries,
        Some(_) => return Err(WebhookError::NotAnEnvelope("entry is not an array")),
        None => Vec::new(),
    };
    let mut parsed = Parsed {
        object,
        ..Parsed::default()
    };
    for mut entry in entries {
        let entry_page = entry.get("id").and_then(id_string);
        for (key, standby) in [("messaging", false), ("standby", true)] {
            let Some(Value::Array(items)) = entry.get_mut(key).map(Value::take) else {
                continue;
            };
            for item in items {
                if let Some(notice) = policy_enforcement(&item, entry_page.as_deref()) {
                    parsed.policy.push(notice);
                    continue;
                }
                if let Some(handover) = handover(&item, entry_page.as_deref()) {
                    parsed.handovers.push(handover);
                    continue;
                }
                match envelope(item, entry_page.as_deref(), standby) {
                    Some(event) => parsed.events.push(event),
                    None => parsed.skipped += 1,
                }
            }
        }
    }
    Ok(parsed)
}

fn envelope(item: Value, entry_page: Option<&str>, standby: bool) -> Option<Envelope> {
    let sender = item
        .get("sender")
        .and_then(|s| s.get("id"))
        .and_then(id_string)?;
    let recipient = item
        .get("recipient")
        .and_then(|r| r.get("id"))
        .and_then(id_string)?;
    let echo = item
        .get("message")
        .and_then(|m| m.get("is_echo"))
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (page, psid) = if echo {
        (sender, recipient)
    } else {
        (recipient, sender)
    };
    // The entry's id is the page; trust it over the recipient when both are present.
    let page = entry_page.map(str::to_owned).unwrap_or(page);
    let timestamp_ms = item.get("timestamp").and_then(Value::as_u64).unwrap_or(0);
    Some(Envelope {
        page: PageId::new(page),
        psid: Psid::new(psid),
        timestamp_ms,
        dedupe_key: dedupe_key(&item),
        standby,
        raw: item,
    })
}

/// Ids arrive as strings, but tolerate numbers.
fn id_string(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
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
pub fn dedupe_key(item: &Value) -> Option<String> {
    let mid = |v: &Value| v.get("mid").and_then(Value::as_str).map(str::to_owned);
    if let Some(message) = item.get("message") {
        // An Instagram unsend reuses the `mid` of the message it removes (`docs/instagram.md`
        // §4.8): keyed apart, or it would be dropped as a redelivery of the original.
        if message.get("is_deleted").and_then(Value::as_bool) == Some(true) {
            return mid(message).map(|m| format!("d:{m}"));
        }
        return mid(message).map(|m| format!("{MESSAGE_KEY}{m}"));
    }
    if let Some(postback) = item.get("postback") {
        return mid(postback).map(|m| format!("p:{m}"));
    }
    if let Some(edit) = item.get("message_edit") {
        let n = edit
            .get("num_edit")
            .map(|n| n.to_string())
            .unwrap_or_default();
        return mid(edit).map(|m| format!("e:{m}:{n}"));
    }
    if let Some(reaction) = item.get("reaction") {
        let sender = item
            .get("sender")
            .and_then(|s| s.get("id"))
            .and_then(id_string)?;
        let action = reaction
            .get("action")
            .and_then(Value::as_str)
            .unwrap_or("react");
        let ts = item.get("timestamp").and_then(Value::as_u64).unwrap_or(0);
        return mid(reaction).map(|m| format!("r:{sender}:{m}:{action}:{ts}"));
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

/// Reads the meaning of one `messaging[]` item.
pub fn event(item: &Value) -> Event {
    if let Some(message) = item.get("message") {
        if message.get("is_echo").and_then(Value::as_bool) == Some(true) {
            let field = |name: &str| message.get(name).and_then(Value::as_str).map(str::to_owned);
            return Event::Echo {
                app_id: message.get("app_id").and_then(id_string),
                mid: field("mid"),
                text: field("text"),
                attachments: message
                    .get("attachments")
                    .and_then(Value::as_array)
                    .map(|list| list.iter().filter_map(attachment).collect())
                    .unwrap_or_default(),
                metadata: field("metadata"),
            };
        }
        let Some(mid) = message.get("mid").and_then(Value::as_str) else {
            return Event::Other("message without mid");
        };
        let flag = |name: &str| message.get(name).and_then(Value::as_bool) == Some(true);
        if flag("is_deleted") {
            return Event::Deleted {
                mid: mid.to_owned(),
            };
        }
        if flag("is_unsupported") {
            return Event::Unsupported {
                mid: mid.to_owned(),
            };
        }
        return Event::Message {
            mid: mid.to_owned(),
            text: message
                .get("text")
                .and_then(Value::as_str)
                .map(str::to_owned),
            attachments: message
                .get("attachments")
                .and_then(Value::as_array)
                .map(|list| list.iter().filter_map(attachment).collect())
                .unwrap_or_default(),
            quick_reply: message.get("quick_reply").is_some(),
            reply_to: message
                .get("reply_to")
                .and_then(|r| r.get("mid"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            story_reply: message
                .get("reply_to")
                .and_then(|r| r.get("story"))
                .and_then(|story| story.get("url"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
    }
    if let Some(postback) = item.get("postback") {
        return Event::Postback {
            mid: postback
                .get("mid")
                .and_then(Value::as_str)
                .map(str::to_owned),
            title: postback
                .get("title")
                .and_then(Value::as_str)
                .or_else(|| postback.get("payload").and_then(Value::as_str))
                .unwrap_or("(button)")
                .to_owned(),
        };
    }
    if let Some(edit) = item.get("message_edit") {
        if let (Some(mid), Some(text)) = (
            edit.get("mid").and_then(Value::as_str),
            edit.get("text").and_then(Value::as_str),
        ) {
            return Event::Edit {
                mid: mid.to_owned(),
                text: text.to_owned(),
            };
        }
        return Event::Other("message_edit without text");
    }
    if let Some(reaction) = item.get("reaction") {
        // https://developers.facebook.com/docs/messenger-platform/reference/webhook-events/message-reactions
        if let Some(mid) = reaction.get("mid").and_then(Value::as_str) {
            return Event::Reaction {
                mid: mid.to_owned(),
                emoji: reaction
                    .get("emoji")
                    .and_then(Value::as_str)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned),
                react: reaction.get("action").and_then(Value::as_str) != Some("unreact"),
            };
        }
        return Event::Other("reaction without mid");
    }
    if let Some(read) = item.get("read") {
        // https://developers.facebook.com/docs/messenger-platform/reference/webhook-events/message-reads
        // An Instagram read names one message (`read.mid`) and no watermark
        // (`docs/instagram.md` §4.5): everything sent before the read's time was seen.
        let instagram_read = read
            .get("mid")
            .and_then(|_| item.get("timestamp"))
            .and_then(Value::as_u64);
        return match read
            .get("watermark")
            .and_then(Value::as_u64)
            .or(instagram_read)
        {
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

fn attachment(value: &Value) -> Option<Attachment> {
    let kind = value.get("type").and_then(Value::as_str)?.to_owned();
    let payload = value.get("payload");
    let field = |name: &str| {
        payload
            .and_then(|p| p.get(name))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    let coordinates = payload.and_then(|p| p.get("coordinates")).and_then(|c| {
        let lat = c.get("lat")?;
        let long = c.get("long")?;
        Some((lat.to_string(), long.to_string()))
    });
    // A `fallback` (shared link) may carry `url` and `title` beside `payload` rather than in it.
    let top = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    Some(Attachment {
        url: field("url").or_else(|| top("url")),
        title: field("title").or_else(|| {
            value
                .get("title")
                .and_then(Value::as_str)
                .map(str::to_owned)
        }),
        coordinates,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

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
        let parsed = parse(body.to_string().as_bytes()).expect("parsed");
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
    fn bad_bodies() {
        for (body, expected) in [
            (&b"not json"[..], "not JSON"),
            (b"[1]", "not an object"),
            (br#"{"entry":5}"#, "not an array"),
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
            assert_eq!(event(&item), expected, "{item}");
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
        let parsed = parse(body.to_string().as_bytes()).expect("parses");
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
        let Event::Message { attachments, .. } = event(&item) else {
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
        let parsed = parse(body.to_string().as_bytes()).expect("parses");
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
            event(&parsed.events[1].raw),
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
            assert_eq!(dedupe_key(&item).as_deref(), expected, "{item}");
        }
        assert_eq!(message_mid("m:m_1"), Some("m_1"));
        assert_eq!(message_mid("e:m_1:2"), None);
    }
}
