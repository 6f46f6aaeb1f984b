//! Typed views of the stream events the gateway subscribes to. The DDP layer hands over raw
//! `eventName` + `args`; this module turns them into messages the core understands.

use serde::Deserialize;
use serde_json::{Value, json};

use super::dates;
use super::ddp::{DdpClient, StreamEvent, SubscriptionId};
use crate::ids::{MessageId, RoomId, UserId, VisitorToken};

/// The stream of every message the bot can see (`docs/rocketchat.md` §2.6).
const MY_MESSAGES: &str = "__my_messages__";
const ROOM_MESSAGES_STREAM: &str = "stream-room-messages";
const NOTIFY_ROOM_STREAM: &str = "stream-notify-room";
const USER_ACTIVITY: &str = "/user-activity";
const DELETE_MESSAGE: &str = "/deleteMessage";
const USER_TYPING: &str = "user-typing";
/// The system message type of a Livechat room's closing.
const LIVECHAT_CLOSE: &str = "livechat-close";
/// The system message type of a message deleted while deleted messages show as such.
const REMOVED: &str = "rm";
/// The type of a direct-message room.
const DIRECT_ROOM: &str = "d";

impl DdpClient {
    /// Subscribes to every message the bot can see (its direct messages carry the commands).
    pub async fn watch_my_messages(&self) -> SubscriptionId {
        self.subscribe(ROOM_MESSAGES_STREAM, json!([MY_MESSAGES, false]))
            .await
    }

    /// Subscribes to a Livechat room's messages as its visitor: the bot is not a member of
    /// Livechat rooms, so the stream is authorised by the visitor's token.
    pub async fn watch_visitor_room(&self, rid: &RoomId, token: &VisitorToken) -> SubscriptionId {
        let params = json!([rid.as_str(), {"useCollection": false, "args": [{"visitorToken": token.as_str()}]}]);
        self.subscribe(ROOM_MESSAGES_STREAM, params).await
    }

    /// Subscribes to who is typing in a Livechat room, as its visitor: `stream-notify-room`
    /// `<rid>/user-activity` takes the visitor's `token` in place of room access
    /// (`apps/meteor/server/modules/notifications/notifications.module.ts`, `streamRoom`;
    /// `docs/rocketchat.md` §2.8.2).
    pub async fn watch_room_activity(&self, rid: &RoomId, token: &VisitorToken) -> SubscriptionId {
        let params = json!([format!("{}{USER_ACTIVITY}", rid.as_str()), {"useCollection": false, "args": [{"token": token.as_str()}]}]);
        self.subscribe(NOTIFY_ROOM_STREAM, params).await
    }

    /// Subscribes to a Livechat room's deletions, as its visitor: with Rocket.Chat's default
    /// settings a deleted message is removed and only `stream-notify-room`
    /// `<rid>/deleteMessage` says so (`apps/meteor/app/lib/server/functions/deleteMessage.ts`);
    /// the read rule takes the visitor's `token` as for `user-activity` (`docs/rocketchat.md`
    /// §2.8.3).
    pub async fn watch_room_deletions(&self, rid: &RoomId, token: &VisitorToken) -> SubscriptionId {
        let params = json!([format!("{}{DELETE_MESSAGE}", rid.as_str()), {"useCollection": false, "args": [{"token": token.as_str()}]}]);
        self.subscribe(NOTIFY_ROOM_STREAM, params).await
    }
}

/// What a stream event means to the gateway.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Streamed {
    /// A message the bot can see, with what the server says about its room.
    MyMessage(ChatMessage, RoomContext),
    /// A message of a watched Livechat room.
    Room(RoomId, RoomMessage),
    /// Someone in a watched Livechat room started (`typing`) or stopped typing.
    Activity { rid: RoomId, typing: bool },
    /// A message of a watched Livechat room was deleted (and removed from the room).
    Deleted { rid: RoomId, id: MessageId },
}

impl Streamed {
    /// Reads a stream event; `None` for events of other streams and malformed ones.
    pub fn read(event: &StreamEvent) -> Option<Streamed> {
        if event.collection == NOTIFY_ROOM_STREAM {
            if let Some(rid) = event.event_name.strip_suffix(DELETE_MESSAGE) {
                // `args: [{"_id": "<message id>"}]`.
                let id = event.args.first()?.get("_id")?.as_str()?;
                return Some(Streamed::Deleted {
                    rid: RoomId::new(rid),
                    id: MessageId::new(id),
                });
            }
            // `args: [name, ["user-typing", …] or [], {}]`.
            let rid = event.event_name.strip_suffix(USER_ACTIVITY)?;
            event.args.first()?.as_str()?;
            let activities = event.args.get(1)?.as_array()?;
            return Some(Streamed::Activity {
                rid: RoomId::new(rid),
                typing: activities.iter().any(|a| a.as_str() == Some(USER_TYPING)),
            });
        }
        if event.collection != ROOM_MESSAGES_STREAM {
            return None;
        }
        if event.event_name == MY_MESSAGES {
            let (message, context) = my_message(&event.args)?;
            return Some(Streamed::MyMessage(message, context));
        }
        let message = event.args.first().and_then(RoomMessage::from_value)?;
        Some(Streamed::Room(
            RoomId::new(event.event_name.clone()),
            message,
        ))
    }
}

/// Whether a raw DDP frame is a `__my_messages__` event the gateway ignores: anything but a
/// direct message the bot takes part in. The stream carries every message of every public channel
/// the bot can see (the `bot` role holds `view-c-room`; the per-subscriber filter of
/// `apps/meteor/server/modules/notifications/notifications.module.ts` lets through what the user
/// can access), so it is dropped here from the frame's text: the message body is skipped
/// unparsed and only the room context, the second argument, is read, borrowing from the frame.
/// The admin applies the same rule again to what passes.
pub fn is_ignored_my_message(frame: &str) -> bool {
    use serde::de::IgnoredAny;
    use std::borrow::Cow;
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(borrow)]
        collection: Option<Cow<'a, str>>,
        #[serde(borrow)]
        fields: Option<Fields<'a>>,
    }
    #[derive(Deserialize)]
    struct Fields<'a> {
        #[serde(rename = "eventName", borrow)]
        event_name: Cow<'a, str>,
        #[serde(borrow)]
        args: (IgnoredAny, Context<'a>),
    }
    #[derive(Deserialize)]
    struct Context<'a> {
        #[serde(rename = "roomType", borrow)]
        room_type: Option<Cow<'a, str>>,
        #[serde(rename = "roomParticipant", default)]
        room_participant: bool,
    }
    // Most frames are not this stream's: a substring test spares them any parsing.
    if !frame.contains(MY_MESSAGES) {
        return false;
    }
    let Ok(Frame {
        collection: Some(collection),
        fields: Some(fields),
    }) = serde_json::from_str::<Frame>(frame)
    else {
        return false;
    };
    let context = &fields.args.1;
    collection == ROOM_MESSAGES_STREAM
        && fields.event_name == MY_MESSAGES
        && !(context.room_participant && context.room_type.as_deref() == Some(DIRECT_ROOM))
}

/// A chat message as the stream delivers it (the fields the gateway reads).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    pub id: MessageId,
    pub rid: RoomId,
    pub text: String,
    /// System message type (`uj`, `livechat-close`, …); `None` for what a person typed.
    pub kind: Option<String>,
    pub author_id: UserId,
    pub author_username: String,
    /// Present when a Livechat visitor wrote the message.
    pub visitor_token: Option<String>,
    /// Set when this event is an edit of an earlier message.
    pub edited: bool,
}

/// What the server tells a `__my_messages__` subscriber about the message's room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomContext {
    /// Whether the bot is a member of the room (not merely able to see it).
    pub participant: bool,
    /// `None` when the server did not say.
    pub room_type: Option<RoomType>,
}

/// A room's type, as the server's one-letter code says it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomType {
    /// `d`: a direct message (1:1 or group).
    Direct,
    /// Any other type (`c` channel, `p` private group, `l` livechat, `v` VoIP, …).
    Other(String),
}

impl RoomType {
    fn from_code(code: String) -> RoomType {
        if code == DIRECT_ROOM {
            RoomType::Direct
        } else {
            RoomType::Other(code)
        }
    }
}

/// Whether a direct room is the 1:1 DM between two users: Rocket.Chat names those rooms by the
/// two user ids concatenated (a group DM has a random id).
pub fn is_one_to_one(rid: &RoomId, one: &UserId, other: &UserId) -> bool {
    let (a, b) = (one.as_str(), other.as_str());
    let rid = rid.as_str();
    rid == format!("{a}{b}") || rid == format!("{b}{a}")
}

#[derive(Deserialize)]
struct RawMessage {
    #[serde(rename = "_id")]
    id: String,
    rid: String,
    #[serde(default)]
    msg: String,
    t: Option<String>,
    u: RawUser,
    token: Option<String>,
    #[serde(rename = "editedAt")]
    edited_at: Option<Value>,
}

#[derive(Deserialize)]
struct RawUser {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    username: String,
}

#[derive(Deserialize)]
struct RawContext {
    #[serde(rename = "roomParticipant", default)]
    room_participant: bool,
    #[serde(rename = "roomType")]
    room_type: Option<String>,
}

impl ChatMessage {
    /// Reads one message object; `None` when it lacks what every message has.
    pub fn from_value(value: &Value) -> Option<ChatMessage> {
        let raw: RawMessage = serde_json::from_value(value.clone()).ok()?;
        Some(ChatMessage {
            id: MessageId::new(raw.id),
            rid: RoomId::new(raw.rid),
            text: raw.msg,
            // `t: "e2e"` marks an encrypted user message, not a system message.
            kind: raw.t.filter(|t| t != "e2e"),
            author_id: UserId::new(raw.u.id),
            author_username: raw.u.username,
            visitor_token: raw.token,
            edited: raw.edited_at.is_some_and(|v| !v.is_null()),
        })
    }
}

/// A message of a Livechat room, as its visitor stream or `livechat/messages.history` delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomMessage {
    pub id: MessageId,
    pub kind: RoomMessageKind,
    /// Written by the visitor (the message carries the visitor's `token`).
    pub from_visitor: bool,
    pub author_username: String,
    /// Set by bots and SDK clients (`bot` field): not a person's reply.
    pub automated: bool,
    pub text: String,
    pub ts_ms: u64,
    pub files: Vec<RoomFile>,
    /// The texts of the messages this one quotes, oldest quote first (see [`quoted_texts`]).
    pub quoted: Vec<String>,
    /// Changed after it was written (`editedAt`); the stream re-emits the same `_id`.
    pub edited: bool,
    /// The message's reactions, by emoji name with colons (`:thumbsup:`), with the usernames who
    /// reacted. Empty when the field is absent.
    pub reactions: Vec<Reaction>,
    /// When the server last changed the message (`_updatedAt`), when it says.
    pub updated_ms: Option<u64>,
}

/// One emoji of a message's `reactions`: `{":thumbsup:": {"usernames": ["agent1"], "names": […]}}`
/// (`packages/core-typings/src/IMessage/IMessage.ts`); the key goes with its last user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reaction {
    pub name: String,
    pub usernames: Vec<String>,
}

/// What kind of message a Livechat room message is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomMessageKind {
    /// What a person (or a bot) wrote.
    Written,
    /// The room was closed (`livechat-close`).
    Closed,
    /// Deleted while `Message_ShowDeletedStatus` is on: the server keeps the message with
    /// `t: "rm"` and an empty text (`setAsDeletedByIdAndUser`,
    /// `apps/meteor/app/lib/server/functions/deleteMessage.ts`) and re-emits it.
    Removed,
    /// Any other system message (transfers, …), with its type.
    System(String),
}

/// A file attached to a room message: where the server serves it, relative to its URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoomFile {
    pub path: String,
    pub name: String,
    pub mime: String,
}

impl RoomMessage {
    /// Reads one room message; `None` when it has no id or date.
    pub fn from_value(value: &Value) -> Option<RoomMessage> {
        let id = value.get("_id").and_then(Value::as_str)?;
        let ts_ms = value.get("ts").and_then(dates::epoch_ms)?;
        Some(RoomMessage {
            id: MessageId::new(id),
            kind: match value.get("t").and_then(Value::as_str) {
                None => RoomMessageKind::Written,
                Some(LIVECHAT_CLOSE) => RoomMessageKind::Closed,
                Some(REMOVED) => RoomMessageKind::Removed,
                Some(other) => RoomMessageKind::System(other.to_owned()),
            },
            from_visitor: value.get("token").is_some_and(|t| !t.is_null()),
            author_username: value
                .get("u")
                .and_then(|u| u.get("username"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            automated: value.get("bot").is_some_and(|b| !b.is_null()),
            text: value
                .get("msg")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            ts_ms,
            files: room_files(value),
            quoted: quoted_texts(value),
            edited: value.get("editedAt").is_some_and(|v| !v.is_null()),
            reactions: reactions(value),
            updated_ms: value.get("_updatedAt").and_then(dates::epoch_ms),
        })
    }
}

/// A message's `reactions`, sorted by name; malformed entries are skipped.
fn reactions(message: &Value) -> Vec<Reaction> {
    message
        .get("reactions")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter_map(|(name, reaction)| {
            let usernames = reaction
                .get("usernames")?
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
            Some(Reaction {
                name: name.clone(),
                usernames,
            })
        })
        .collect()
}

/// The quotes of a message. A client writes a quote as a blank link to the quoted message
/// before the text (`apps/meteor/client/lib/utils/prependReplies.ts`); the server checks the
/// link and the author's access and stores the quote as an attachment with `message_link` and
/// the quoted `text` (`apps/meteor/server/services/messages/hooks/BeforeSaveJumpToMessage.ts`,
/// `apps/meteor/lib/createQuoteAttachment.ts`). Only the attachment counts: it is what the server
/// validated.
fn quoted_texts(message: &Value) -> Vec<String> {
    message
        .get("attachments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| a.get("message_link").and_then(Value::as_str).is_some())
        .filter_map(|a| a.get("text").and_then(Value::as_str))
        .map(str::to_owned)
        .collect()
}

/// The files of a message: `files[]` (or the older `file`) for name and type, the matching
/// attachment's `title_link` for the download path. An image's generated thumbnail is listed in
/// `files[]` too, after the original, and only the attachment's `image_url` points at it
/// (`parseFileIntoMessageAttachments` in
/// `apps/meteor/app/file-upload/server/methods/sendFileMessage.ts`): it is skipped, so the
/// customer gets the original once.
fn room_files(message: &Value) -> Vec<RoomFile> {
    let attachments = message
        .get("attachments")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut listed: Vec<Value> = message
        .get("files")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if listed.is_empty() {
        if let Some(file) = message.get("file").filter(|f| f.is_object()) {
            listed.push(file.clone());
        }
    }
    let links = |field: &str| -> Vec<&str> {
        attachments
            .iter()
            .filter_map(|a| a.get(field).and_then(Value::as_str))
            .collect()
    };
    let (titles, images) = (links("title_link"), links("image_url"));
    let is_thumbnail = |id: &str| {
        images.iter().any(|link| link.contains(id)) && !titles.iter().any(|link| link.contains(id))
    };
    listed
        .iter()
        .filter_map(|file| {
            let id = file.get("_id").and_then(Value::as_str)?;
            if is_thumbnail(id) {
                return None;
            }
            let name = file
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("file")
                .to_owned();
            let mime = file
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("application/octet-stream")
                .to_owned();
            let path = titles
                .iter()
                .find(|link| link.contains(id))
                .map(|link| (*link).to_owned())
                .unwrap_or_else(|| format!("/file-upload/{id}/{name}"));
            Some(RoomFile { path, name, mime })
        })
        .collect()
}

/// Reads a `__my_messages__` event: `args = [message, context]` on 6.x+, `[[message], context]`
/// on some 4.x builds. Anything else is `None` (and ignored by the caller).
pub fn my_message(args: &[Value]) -> Option<(ChatMessage, RoomContext)> {
    let first = args.first()?;
    let message = match first {
        Value::Array(inner) => inner.first()?,
        other => other,
    };
    let message = ChatMessage::from_value(message)?;
    let context = args
        .get(1)
        .and_then(|c| serde_json::from_value::<RawContext>(c.clone()).ok())
        .map(|c| RoomContext {
            participant: c.room_participant,
            room_type: c.room_type.map(RoomType::from_code),
        })
        .unwrap_or(RoomContext {
            participant: false,
            room_type: None,
        });
    Some((message, context))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message() -> Value {
        json!({"_id":"m1","rid":"r1","msg":"/facebook help","ts":{"$date":1},
               "u":{"_id":"u1","username":"alice","name":"Alice"}})
    }

    #[test]
    fn public_channel_traffic_is_dropped_at_the_door() {
        let frame = |context: Value| {
            json!({"msg":"changed","collection":"stream-room-messages","id":"id",
                   "fields":{"eventName":"__my_messages__","args":[message(), context]}})
            .to_string()
        };
        let channel = frame(json!({"roomParticipant":false,"roomType":"c","roomName":"general"}));
        let member = frame(json!({"roomParticipant":true,"roomType":"c","roomName":"general"}));
        let dm = frame(json!({"roomParticipant":true,"roomType":"d","roomName":null}));
        assert!(is_ignored_my_message(&channel));
        assert!(is_ignored_my_message(&member));
        assert!(!is_ignored_my_message(&dm), "a DM goes on to the admin");
        let room = json!({"msg":"changed","collection":"stream-room-messages","id":"id",
                          "fields":{"eventName":"r1","args":[message()]}});
        assert!(
            !is_ignored_my_message(&room.to_string()),
            "a Livechat room's stream"
        );
        assert!(!is_ignored_my_message("not json __my_messages__"));
    }

    #[test]
    fn reads_both_arg_layouts() {
        let context = json!({"roomParticipant":true,"roomType":"d","roomName":null});
        for args in [
            vec![message(), context.clone()],
            vec![json!([message()]), context],
        ] {
            let (msg, ctx) = my_message(&args).expect("parsed");
            assert_eq!(msg.text, "/facebook help");
            assert_eq!(msg.author_username, "alice");
            assert!(ctx.participant);
            assert_eq!(ctx.room_type, Some(RoomType::Direct));
        }
    }

    #[test]
    fn room_messages() {
        let agent = json!({"_id":"a","msg":"Hi","ts":{"$date":5},"u":{"username":"agent1"}});
        let m = RoomMessage::from_value(&agent).expect("parsed");
        assert_eq!(
            (m.from_visitor, m.automated, m.kind.clone(), m.ts_ms),
            (false, false, RoomMessageKind::Written, 5)
        );
        let visitor = json!({"_id":"b","msg":"yo","ts":"2024-06-10T06:13:20.123Z","token":"fb-1","u":{"username":"guest"}});
        assert!(
            RoomMessage::from_value(&visitor)
                .expect("parsed")
                .from_visitor
        );
        let file = json!({"_id":"c","msg":"","ts":{"$date":1},"u":{"username":"agent1"},"bot":{"i":"js.SDK"},
            "files":[{"_id":"F1","name":"a.pdf","type":"application/pdf"}],"attachments":[{"title_link":"/file-upload/F1/a.pdf"}]});
        let m = RoomMessage::from_value(&file).expect("parsed");
        assert!(m.automated);
        assert_eq!(
            m.files,
            vec![RoomFile {
                path: "/file-upload/F1/a.pdf".into(),
                name: "a.pdf".into(),
                mime: "application/pdf".into()
            }]
        );
        let legacy = json!({"_id":"d","ts":{"$date":1},"file":{"_id":"F2","name":"x.png","type":"image/png"}});
        assert_eq!(
            RoomMessage::from_value(&legacy).expect("parsed").files[0].path,
            "/file-upload/F2/x.png"
        );
        assert!(
            RoomMessage::from_value(&json!({"_id":"e"})).is_none(),
            "no date"
        );
        let image = json!({"_id":"f","ts":{"$date":1},
            "file":{"_id":"O1","name":"p.jpg","type":"image/jpeg"},
            "files":[{"_id":"O1","name":"p.jpg","type":"image/jpeg"},{"_id":"T1","name":"p.jpg","type":"image/jpeg"}],
            "attachments":[{"title_link":"/file-upload/O1/p.jpg","image_url":"/file-upload/T1/p.jpg"}]});
        let files = RoomMessage::from_value(&image).expect("parsed").files;
        assert_eq!(
            files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            ["/file-upload/O1/p.jpg"],
            "the original only, never the thumbnail"
        );
    }

    #[test]
    fn reactions_and_deletions_are_read() {
        let reacted = json!({"_id":"a","msg":"Hi","ts":{"$date":5},"_updatedAt":{"$date":7},"token":"vt",
            "u":{"username":"guest-1"},
            "reactions":{":thumbsup:":{"usernames":["agent1","agent2"],"names":["A","B"]},":bad:":{}}});
        let m = RoomMessage::from_value(&reacted).expect("parsed");
        assert_eq!(
            m.reactions,
            vec![Reaction {
                name: ":thumbsup:".into(),
                usernames: vec!["agent1".into(), "agent2".into()]
            }]
        );
        assert_eq!(m.updated_ms, Some(7));
        let removed =
            json!({"_id":"b","t":"rm","msg":"","ts":{"$date":5},"u":{"username":"agent1"}});
        assert_eq!(
            RoomMessage::from_value(&removed).expect("parsed").kind,
            RoomMessageKind::Removed
        );
        let deleted = StreamEvent {
            collection: "stream-notify-room".into(),
            event_name: "r1/deleteMessage".into(),
            args: vec![json!({"_id":"b"})],
        };
        assert_eq!(
            Streamed::read(&deleted),
            Some(Streamed::Deleted {
                rid: RoomId::new("r1"),
                id: MessageId::new("b")
            })
        );
    }

    #[test]
    fn closing_and_system_messages_are_typed() {
        let close = json!({"_id":"c","t":"livechat-close","msg":"","ts":{"$date":9}});
        let transfer = json!({"_id":"d","t":"livechat_transfer_history","msg":"","ts":{"$date":9}});
        assert_eq!(
            RoomMessage::from_value(&close).expect("parsed").kind,
            RoomMessageKind::Closed
        );
        assert_eq!(
            RoomMessage::from_value(&transfer).expect("parsed").kind,
            RoomMessageKind::System("livechat_transfer_history".into())
        );
    }

    #[test]
    fn stream_events_are_read_by_stream_and_event_name() {
        let event = |collection: &str, event_name: &str, args: Vec<Value>| StreamEvent {
            collection: collection.into(),
            event_name: event_name.into(),
            args,
        };
        let mine = event("stream-room-messages", "__my_messages__", vec![message()]);
        assert!(matches!(
            Streamed::read(&mine),
            Some(Streamed::MyMessage(..))
        ));
        let room = event(
            "stream-room-messages",
            "r1",
            vec![json!({"_id":"a","msg":"Hi","ts":{"$date":5},"u":{"username":"agent1"}})],
        );
        assert!(matches!(
            Streamed::read(&room),
            Some(Streamed::Room(rid, _)) if rid == RoomId::new("r1")
        ));
        let other = event("stream-notify-user", "x/rooms-changed", vec![message()]);
        assert_eq!(Streamed::read(&other), None);
    }

    #[test]
    fn one_to_one_rooms_are_the_two_ids_concatenated() {
        let bot = UserId::new("BOT");
        let alice = UserId::new("ALICE");
        assert!(is_one_to_one(&RoomId::new("ALICEBOT"), &bot, &alice));
        assert!(is_one_to_one(&RoomId::new("BOTALICE"), &bot, &alice));
        assert!(!is_one_to_one(&RoomId::new("RANDOMGROUPDM"), &bot, &alice));
    }

    #[test]
    fn missing_context_means_not_a_participant() {
        let (_, ctx) = my_message(&[message()]).expect("parsed");
        assert!(!ctx.participant);
    }

    #[test]
    fn malformed_events_are_none() {
        for args in [
            vec![],
            vec![json!(1)],
            vec![json!({"_id":"x"})],
            vec![json!([])],
        ] {
            assert!(my_message(&args).is_none(), "{args:?}");
        }
    }

    #[test]
    fn e2e_is_not_a_system_type_and_edits_are_flagged() {
        let mut m = message();
        m["t"] = json!("e2e");
        m["editedAt"] = json!({"$date": 2});
        let msg = ChatMessage::from_value(&m).expect("parsed");
        assert_eq!(msg.kind, None);
        assert!(msg.edited);
    }
}
