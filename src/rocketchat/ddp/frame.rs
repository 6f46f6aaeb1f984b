//! DDP frames: the JSON objects Rocket.Chat's realtime API exchanges, one per WebSocket text
//! frame (`docs/rocketchat.md` §2.1–§2.5). Decoding is pure and total: any text yields either a
//! typed [`ServerFrame`] or a [`DecodeError`], never a panic, because the input comes from the
//! network and is fuzzed.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value, json};

/// How long to wait when the server says `too-many-requests` without a `timeToReset`. Meteor's
/// per-method DDP rate-limit window is 10 s by default, so waiting that long always suffices.
const RATE_LIMIT_FALLBACK: Duration = Duration::from_secs(10);

/// Upper bound on a server-supplied `timeToReset`, so a corrupt value cannot park a caller for
/// days. The longest default Rocket.Chat rate-limit window is one minute.
const RATE_LIMIT_CAP: Duration = Duration::from_secs(3600);

/// A frame received from the server.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerFrame {
    /// `{"server_id":"0"}`, sent right after the socket opens; carries nothing we need.
    ServerId,
    /// The answer to our `connect`.
    Connected { session: String },
    /// The server does not speak a DDP version we proposed; `version` is the one it suggests.
    Failed { version: Option<String> },
    /// A server heartbeat; must be answered with a `pong` echoing `id`.
    Ping { id: Option<String> },
    /// The answer to one of our pings.
    Pong { id: Option<String> },
    /// The outcome of a method call. A result without a `result` key is `Ok(Value::Null)`.
    Result {
        id: String,
        outcome: Result<Value, MethodError>,
    },
    /// The writes of these method calls are visible; irrelevant to completion of the call.
    Updated { methods: Vec<String> },
    /// These subscriptions sent their initial data.
    Ready { subs: Vec<String> },
    /// A subscription was refused (with `error`) or ended by the server (without).
    NoSub {
        id: String,
        error: Option<MethodError>,
    },
    Added {
        collection: String,
        id: String,
        fields: Map<String, Value>,
    },
    Changed {
        collection: String,
        id: String,
        fields: Map<String, Value>,
    },
    Removed {
        collection: String,
        id: String,
        fields: Map<String, Value>,
    },
    /// The server could not make sense of a message we sent.
    Error { reason: String },
    /// A well-formed frame with a `msg` we do not handle (e.g. `addedBefore`).
    Unknown { msg: String },
}

/// Why a text frame is not a DDP frame we can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("frame is not JSON: {0}")]
    NotJson(String),
    #[error("frame is not a JSON object")]
    NotObject,
    #[error("frame has no \"msg\" field")]
    MissingMsg,
    #[error("\"{msg}\" frame lacks field \"{field}\"")]
    MissingField {
        msg: &'static str,
        field: &'static str,
    },
    #[error("\"{msg}\" frame has a wrongly typed field \"{field}\"")]
    WrongType {
        msg: &'static str,
        field: &'static str,
    },
}

/// A Meteor error code: Rocket.Chat uses both strings (`"totp-required"`) and numbers (`403`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorCode {
    Text(String),
    Number(i64),
}

impl ErrorCode {
    fn is(&self, code: &str) -> bool {
        matches!(self, ErrorCode::Text(text) if text == code)
    }

    fn is_number(&self, number: i64) -> bool {
        match self {
            ErrorCode::Number(n) => *n == number,
            ErrorCode::Text(text) => text.parse::<i64>() == Ok(number),
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorCode::Text(text) => f.write_str(text),
            ErrorCode::Number(number) => write!(f, "{number}"),
        }
    }
}

/// A `Meteor.Error` as serialised in a `result` or `nosub` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodError {
    pub error: ErrorCode,
    pub reason: Option<String>,
    pub details: Option<Value>,
    pub message: Option<String>,
}

impl MethodError {
    /// The password login needs a second factor (TOTP or e-mail code), which a daemon cannot give.
    pub fn is_totp_required(&self) -> bool {
        self.error.is("totp-required")
    }

    /// `Some(wait)` when the server's DDP rate limiter refused the call; `wait` is
    /// `details.timeToReset` (milliseconds), or a safe default when the server omitted it.
    pub fn is_rate_limited(&self) -> Option<Duration> {
        if !self.error.is("too-many-requests") {
            return None;
        }
        let millis = self
            .details
            .as_ref()
            .and_then(|details| details.get("timeToReset"))
            .and_then(Value::as_f64)
            .filter(|ms| ms.is_finite() && *ms >= 0.0);
        Some(match millis {
            Some(ms) => Duration::try_from_secs_f64(ms / 1000.0)
                .unwrap_or(RATE_LIMIT_CAP)
                .min(RATE_LIMIT_CAP),
            None => RATE_LIMIT_FALLBACK,
        })
    }

    /// The server refused who we claim to be: wrong credentials, unknown user, expired token,
    /// blocked login, or a second factor we cannot give. Retrying unchanged will not help.
    pub fn is_auth_failure(&self) -> bool {
        const CODES: [&str; 7] = [
            "totp-required",
            "totp-invalid",
            "totp-max-attempts",
            "error-login-blocked-for-ip",
            "error-login-blocked-for-user",
            "error-app-user-is-not-allowed-to-login",
            "error-user-is-not-activated",
        ];
        self.error.is_number(401)
            || self.error.is_number(403)
            || CODES.iter().any(|code| self.error.is(code))
    }

    fn from_value(value: &Value) -> Option<MethodError> {
        let object = value.as_object()?;
        let error = match object.get("error") {
            Some(Value::String(text)) => ErrorCode::Text(text.clone()),
            Some(Value::Number(number)) => match number.as_i64() {
                Some(n) => ErrorCode::Number(n),
                None => ErrorCode::Text(number.to_string()),
            },
            Some(other) => ErrorCode::Text(other.to_string()),
            None => ErrorCode::Text(String::new()),
        };
        let text = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
        Some(MethodError {
            error,
            reason: text("reason"),
            details: object.get("details").filter(|d| !d.is_null()).cloned(),
            message: text("message"),
        })
    }
}

impl fmt::Display for MethodError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.reason {
            Some(reason) => write!(f, "{reason} [{}]", self.error),
            None => write!(f, "[{}]", self.error),
        }
    }
}

impl std::error::Error for MethodError {}

/// One event of a Rocket.Chat stream: a `changed` frame whose fields carry `eventName` and `args`
/// (`docs/rocketchat.md` §2.5). `args` is passed through as the server sent it, so both the 6.x
/// shape `[message, info]` and the 4.x shape `[[message], info]` reach the caller intact.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// `stream-<name>`, e.g. `stream-room-messages`.
    pub collection: String,
    /// The subscription's event name, e.g. `__my_messages__`, a room id, `<uid>/rooms-changed`.
    pub event_name: String,
    pub args: Vec<Value>,
}

impl StreamEvent {
    /// The stream event carried by a `changed` frame's fields, or `None` when the frame is an
    /// ordinary collection change (e.g. the `users` collection after login).
    pub fn from_changed(collection: &str, fields: &Map<String, Value>) -> Option<StreamEvent> {
        let event_name = fields.get("eventName")?.as_str()?.to_owned();
        let args = match fields.get("args") {
            Some(Value::Array(args)) => args.clone(),
            None | Some(Value::Null) => Vec::new(),
            Some(other) => vec![other.clone()],
        };
        Some(StreamEvent {
            collection: collection.to_owned(),
            event_name,
            args,
        })
    }
}

/// Decodes one WebSocket text frame.
pub fn decode(text: &str) -> Result<ServerFrame, DecodeError> {
    let value: Value =
        serde_json::from_str(text).map_err(|err| DecodeError::NotJson(err.to_string()))?;
    let Value::Object(object) = value else {
        return Err(DecodeError::NotObject);
    };
    let Some(msg) = object.get("msg") else {
        if object.contains_key("server_id") {
            return Ok(ServerFrame::ServerId);
        }
        return Err(DecodeError::MissingMsg);
    };
    let Some(msg) = msg.as_str() else {
        return Err(DecodeError::WrongType {
            msg: "?",
            field: "msg",
        });
    };
    let fields = Fields { object: &object };
    Ok(match msg {
        "connected" => ServerFrame::Connected {
            session: fields.string("connected", "session")?,
        },
        "failed" => ServerFrame::Failed {
            version: fields.opt_string("failed", "version")?,
        },
        "ping" => ServerFrame::Ping {
            id: fields.opt_string("ping", "id")?,
        },
        "pong" => ServerFrame::Pong {
            id: fields.opt_string("pong", "id")?,
        },
        "result" => {
            let id = fields.string("result", "id")?;
            let outcome = match object.get("error") {
                None | Some(Value::Null) => {
                    Ok(object.get("result").cloned().unwrap_or(Value::Null))
                }
                Some(error) => Err(MethodError::from_value(error).ok_or(
                    DecodeError::WrongType {
                        msg: "result",
                        field: "error",
                    },
                )?),
            };
            ServerFrame::Result { id, outcome }
        }
        "updated" => ServerFrame::Updated {
            methods: fields.strings("updated", "methods")?,
        },
        "ready" => ServerFrame::Ready {
            subs: fields.strings("ready", "subs")?,
        },
        "nosub" => {
            let id = fields.string("nosub", "id")?;
            let error = match object.get("error") {
                None | Some(Value::Null) => None,
                Some(error) => Some(MethodError::from_value(error).ok_or(
                    DecodeError::WrongType {
                        msg: "nosub",
                        field: "error",
                    },
                )?),
            };
            ServerFrame::NoSub { id, error }
        }
        "added" => {
            let (collection, id, fields) = fields.document("added")?;
            ServerFrame::Added {
                collection,
                id,
                fields,
            }
        }
        "changed" => {
            let (collection, id, fields) = fields.document("changed")?;
            ServerFrame::Changed {
                collection,
                id,
                fields,
            }
        }
        "removed" => {
            let (collection, id, fields) = fields.document("removed")?;
            ServerFrame::Removed {
                collection,
                id,
                fields,
            }
        }
        "error" => ServerFrame::Error {
            reason: fields.opt_string("error", "reason")?.unwrap_or_default(),
        },
        other => ServerFrame::Unknown {
            msg: other.to_owned(),
        },
    })
}

/// Typed access to a frame's fields, naming the frame and field in every error.
struct Fields<'a> {
    object: &'a Map<String, Value>,
}

impl Fields<'_> {
    fn opt_string(
        &self,
        msg: &'static str,
        field: &'static str,
    ) -> Result<Option<String>, DecodeError> {
        match self.object.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(text)) => Ok(Some(text.clone())),
            Some(_) => Err(DecodeError::WrongType { msg, field }),
        }
    }

    fn string(&self, msg: &'static str, field: &'static str) -> Result<String, DecodeError> {
        self.opt_string(msg, field)?
            .ok_or(DecodeError::MissingField { msg, field })
    }

    fn strings(&self, msg: &'static str, field: &'static str) -> Result<Vec<String>, DecodeError> {
        let Some(value) = self.object.get(field) else {
            return Err(DecodeError::MissingField { msg, field });
        };
        let Value::Array(items) = value else {
            return Err(DecodeError::WrongType { msg, field });
        };
        items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or(DecodeError::WrongType { msg, field })
            })
            .collect()
    }

    fn document(
        &self,
        msg: &'static str,
    ) -> Result<(String, String, Map<String, Value>), DecodeError> {
        let collection = self.string(msg, "collection")?;
        let id = self.string(msg, "id")?;
        let fields = match self.object.get("fields") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(fields)) => fields.clone(),
            Some(_) => {
                return Err(DecodeError::WrongType {
                    msg,
                    field: "fields",
                });
            }
        };
        Ok((collection, id, fields))
    }
}

/// A frame we send. Login credentials travel inside `Method::params`, so this type has no
/// `Debug`: it must never end up in a log line.
pub enum ClientFrame {
    Connect,
    Ping {
        id: Option<String>,
    },
    Pong {
        id: Option<String>,
    },
    Method {
        id: String,
        method: String,
        params: Vec<Value>,
    },
    /// `params` is sent as given when it is an array (the usual `["<eventName>", false]`); any
    /// other value is wrapped in a one-element array, since DDP requires an array.
    Sub {
        id: String,
        name: String,
        params: Value,
    },
    Unsub {
        id: String,
    },
}

impl ClientFrame {
    /// The JSON text of the frame.
    pub fn encode(&self) -> String {
        let value = match self {
            ClientFrame::Connect => {
                json!({"msg": "connect", "version": "1", "support": ["1", "pre2", "pre1"]})
            }
            ClientFrame::Ping { id: Some(id) } => json!({"msg": "ping", "id": id}),
            ClientFrame::Ping { id: None } => json!({"msg": "ping"}),
            ClientFrame::Pong { id: Some(id) } => json!({"msg": "pong", "id": id}),
            ClientFrame::Pong { id: None } => json!({"msg": "pong"}),
            ClientFrame::Method { id, method, params } => {
                json!({"msg": "method", "method": method, "id": id, "params": params})
            }
            ClientFrame::Sub { id, name, params } => {
                let params = match params {
                    Value::Array(_) => params.clone(),
                    other => Value::Array(vec![other.clone()]),
                };
                json!({"msg": "sub", "id": id, "name": name, "params": params})
            }
            ClientFrame::Unsub { id } => json!({"msg": "unsub", "id": id}),
        };
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            _ => Map::new(),
        }
    }

    fn method_error(code: ErrorCode, reason: Option<&str>, details: Option<Value>) -> MethodError {
        MethodError {
            error: code,
            reason: reason.map(str::to_owned),
            details,
            message: None,
        }
    }

    #[test]
    fn decodes_every_frame_kind() {
        let text = |s: &str| ErrorCode::Text(s.to_owned());
        let cases: Vec<(&str, ServerFrame)> = vec![
            (r#"{"server_id":"0"}"#, ServerFrame::ServerId),
            (
                r#"{"msg":"connected","session":"abc"}"#,
                ServerFrame::Connected {
                    session: "abc".into(),
                },
            ),
            (
                r#"{"msg":"failed","version":"1"}"#,
                ServerFrame::Failed {
                    version: Some("1".into()),
                },
            ),
            (r#"{"msg":"failed"}"#, ServerFrame::Failed { version: None }),
            (r#"{"msg":"ping"}"#, ServerFrame::Ping { id: None }),
            (
                r#"{"msg":"ping","id":"p-1"}"#,
                ServerFrame::Ping {
                    id: Some("p-1".into()),
                },
            ),
            (
                r#"{"msg":"pong","id":"k1"}"#,
                ServerFrame::Pong {
                    id: Some("k1".into()),
                },
            ),
            (r#"{"msg":"pong"}"#, ServerFrame::Pong { id: None }),
            (
                r#"{"msg":"result","id":"42","result":{"a":1}}"#,
                ServerFrame::Result {
                    id: "42".into(),
                    outcome: Ok(json!({"a":1})),
                },
            ),
            (
                r#"{"msg":"result","id":"42"}"#,
                ServerFrame::Result {
                    id: "42".into(),
                    outcome: Ok(Value::Null),
                },
            ),
            (
                r#"{"msg":"result","id":"42","error":null,"result":5}"#,
                ServerFrame::Result {
                    id: "42".into(),
                    outcome: Ok(json!(5)),
                },
            ),
            (
                r#"{"msg":"result","id":"42","error":{"isClientSafe":true,"error":"error-not-allowed","reason":"Not allowed","details":{"method":"sendMessage"},"message":"Not allowed [error-not-allowed]","errorType":"Meteor.Error"}}"#,
                ServerFrame::Result {
                    id: "42".into(),
                    outcome: Err(MethodError {
                        error: text("error-not-allowed"),
                        reason: Some("Not allowed".into()),
                        details: Some(json!({"method":"sendMessage"})),
                        message: Some("Not allowed [error-not-allowed]".into()),
                    }),
                },
            ),
            (
                r#"{"msg":"result","id":"1","error":{"error":403,"reason":"User not found"}}"#,
                ServerFrame::Result {
                    id: "1".into(),
                    outcome: Err(method_error(
                        ErrorCode::Number(403),
                        Some("User not found"),
                        None,
                    )),
                },
            ),
            (
                r#"{"msg":"result","id":"1","error":{}}"#,
                ServerFrame::Result {
                    id: "1".into(),
                    outcome: Err(method_error(text(""), None, None)),
                },
            ),
            (
                r#"{"msg":"updated","methods":["1","2"]}"#,
                ServerFrame::Updated {
                    methods: vec!["1".into(), "2".into()],
                },
            ),
            (
                r#"{"msg":"ready","subs":["s1"]}"#,
                ServerFrame::Ready {
                    subs: vec!["s1".into()],
                },
            ),
            (
                r#"{"msg":"nosub","id":"s1"}"#,
                ServerFrame::NoSub {
                    id: "s1".into(),
                    error: None,
                },
            ),
            (
                r#"{"msg":"nosub","id":"s1","error":{"error":"not-allowed","reason":"Not allowed"}}"#,
                ServerFrame::NoSub {
                    id: "s1".into(),
                    error: Some(method_error(text("not-allowed"), Some("Not allowed"), None)),
                },
            ),
            (
                r#"{"msg":"added","collection":"users","id":"u1","fields":{"username":"bot"}}"#,
                ServerFrame::Added {
                    collection: "users".into(),
                    id: "u1".into(),
                    fields: map(json!({"username":"bot"})),
                },
            ),
            (
                r#"{"msg":"changed","collection":"stream-room-messages","id":"id","fields":{"eventName":"r1","args":[{"msg":"hi"}]}}"#,
                ServerFrame::Changed {
                    collection: "stream-room-messages".into(),
                    id: "id".into(),
                    fields: map(json!({"eventName":"r1","args":[{"msg":"hi"}]})),
                },
            ),
            (
                r#"{"msg":"removed","collection":"users","id":"u1"}"#,
                ServerFrame::Removed {
                    collection: "users".into(),
                    id: "u1".into(),
                    fields: Map::new(),
                },
            ),
            (
                r#"{"msg":"error","reason":"Bad request","offendingMessage":{}}"#,
                ServerFrame::Error {
                    reason: "Bad request".into(),
                },
            ),
            (
                r#"{"msg":"error"}"#,
                ServerFrame::Error {
                    reason: String::new(),
                },
            ),
            (
                r#"{"msg":"addedBefore","collection":"x","id":"1"}"#,
                ServerFrame::Unknown {
                    msg: "addedBefore".into(),
                },
            ),
            (
                r#"{"msg":"","x":1}"#,
                ServerFrame::Unknown { msg: String::new() },
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(decode(input), Ok(expected), "input: {input}");
        }
    }

    #[test]
    fn rejects_malformed_frames() {
        type Check = fn(&DecodeError) -> bool;
        let cases: &[(&str, Check)] = &[
            ("", |e| matches!(e, DecodeError::NotJson(_))),
            ("not json", |e| matches!(e, DecodeError::NotJson(_))),
            ("{\"msg\":", |e| matches!(e, DecodeError::NotJson(_))),
            ("a[\"{}\"]", |e| matches!(e, DecodeError::NotJson(_))),
            ("o", |e| matches!(e, DecodeError::NotJson(_))),
            ("[]", |e| *e == DecodeError::NotObject),
            ("42", |e| *e == DecodeError::NotObject),
            ("\"ping\"", |e| *e == DecodeError::NotObject),
            ("null", |e| *e == DecodeError::NotObject),
            ("{}", |e| *e == DecodeError::MissingMsg),
            (r#"{"msg":5}"#, |e| {
                matches!(e, DecodeError::WrongType { field: "msg", .. })
            }),
            (r#"{"msg":null}"#, |e| {
                matches!(e, DecodeError::WrongType { field: "msg", .. })
            }),
            (r#"{"msg":"connected"}"#, |e| {
                matches!(
                    e,
                    DecodeError::MissingField {
                        field: "session",
                        ..
                    }
                )
            }),
            (r#"{"msg":"connected","session":7}"#, |e| {
                matches!(
                    e,
                    DecodeError::WrongType {
                        field: "session",
                        ..
                    }
                )
            }),
            (r#"{"msg":"ping","id":7}"#, |e| {
                matches!(e, DecodeError::WrongType { field: "id", .. })
            }),
            (r#"{"msg":"pong","id":[]}"#, |e| {
                matches!(e, DecodeError::WrongType { field: "id", .. })
            }),
            (r#"{"msg":"result"}"#, |e| {
                matches!(e, DecodeError::MissingField { field: "id", .. })
            }),
            (r#"{"msg":"result","id":42,"result":1}"#, |e| {
                matches!(e, DecodeError::WrongType { field: "id", .. })
            }),
            (r#"{"msg":"result","id":"1","error":"boom"}"#, |e| {
                matches!(e, DecodeError::WrongType { field: "error", .. })
            }),
            (r#"{"msg":"updated"}"#, |e| {
                matches!(
                    e,
                    DecodeError::MissingField {
                        field: "methods",
                        ..
                    }
                )
            }),
            (r#"{"msg":"updated","methods":"1"}"#, |e| {
                matches!(
                    e,
                    DecodeError::WrongType {
                        field: "methods",
                        ..
                    }
                )
            }),
            (r#"{"msg":"updated","methods":[1]}"#, |e| {
                matches!(
                    e,
                    DecodeError::WrongType {
                        field: "methods",
                        ..
                    }
                )
            }),
            (r#"{"msg":"ready","subs":{}}"#, |e| {
                matches!(e, DecodeError::WrongType { field: "subs", .. })
            }),
            (r#"{"msg":"nosub"}"#, |e| {
                matches!(e, DecodeError::MissingField { field: "id", .. })
            }),
            (r#"{"msg":"nosub","id":"s","error":true}"#, |e| {
                matches!(e, DecodeError::WrongType { field: "error", .. })
            }),
            (r#"{"msg":"changed","id":"id"}"#, |e| {
                matches!(
                    e,
                    DecodeError::MissingField {
                        field: "collection",
                        ..
                    }
                )
            }),
            (r#"{"msg":"changed","collection":"c"}"#, |e| {
                matches!(e, DecodeError::MissingField { field: "id", .. })
            }),
            (
                r#"{"msg":"changed","collection":"c","id":"id","fields":[]}"#,
                |e| {
                    matches!(
                        e,
                        DecodeError::WrongType {
                            field: "fields",
                            ..
                        }
                    )
                },
            ),
            (r#"{"msg":"added","collection":1,"id":"id"}"#, |e| {
                matches!(
                    e,
                    DecodeError::WrongType {
                        field: "collection",
                        ..
                    }
                )
            }),
            (r#"{"msg":"error","reason":{}}"#, |e| {
                matches!(
                    e,
                    DecodeError::WrongType {
                        field: "reason",
                        ..
                    }
                )
            }),
        ];
        for (input, check) in cases {
            match decode(input) {
                Err(err) => assert!(check(&err), "input {input}: unexpected error {err:?}"),
                Ok(frame) => panic!("input {input}: decoded as {frame:?}"),
            }
        }
    }

    #[test]
    fn never_panics_on_truncations_of_valid_frames() {
        let frames = [
            r#"{"msg":"result","id":"1","error":{"error":"too-many-requests","details":{"timeToReset":2875}}}"#,
            r#"{"msg":"changed","collection":"stream-room-messages","id":"id","fields":{"eventName":"__my_messages__","args":[{"_id":"m"},{"roomParticipant":true}]}}"#,
            "{\"msg\":\"ping\",\"id\":\"\u{1F600}\"}",
        ];
        for frame in frames {
            for (index, _) in frame.char_indices() {
                let _ = decode(&frame[..index]);
            }
        }
    }

    #[test]
    fn classifies_method_errors() {
        let text = |s: &str| ErrorCode::Text(s.to_owned());
        struct Case {
            error: MethodError,
            totp: bool,
            rate_limited: Option<Duration>,
            auth: bool,
        }
        let cases = [
            Case {
                error: method_error(
                    text("too-many-requests"),
                    None,
                    Some(json!({"timeToReset": 2875})),
                ),
                totp: false,
                rate_limited: Some(Duration::from_millis(2875)),
                auth: false,
            },
            Case {
                error: method_error(text("too-many-requests"), None, None),
                totp: false,
                rate_limited: Some(RATE_LIMIT_FALLBACK),
                auth: false,
            },
            Case {
                error: method_error(
                    text("too-many-requests"),
                    None,
                    Some(json!({"timeToReset": -5})),
                ),
                totp: false,
                rate_limited: Some(RATE_LIMIT_FALLBACK),
                auth: false,
            },
            Case {
                error: method_error(
                    text("too-many-requests"),
                    None,
                    Some(json!({"timeToReset": 1e300})),
                ),
                totp: false,
                rate_limited: Some(RATE_LIMIT_CAP),
                auth: false,
            },
            Case {
                error: method_error(text("totp-required"), Some("TOTP Required"), None),
                totp: true,
                rate_limited: None,
                auth: true,
            },
            Case {
                error: method_error(ErrorCode::Number(403), Some("User not found"), None),
                totp: false,
                rate_limited: None,
                auth: true,
            },
            Case {
                error: method_error(text("403"), None, None),
                totp: false,
                rate_limited: None,
                auth: true,
            },
            Case {
                error: method_error(text("error-login-blocked-for-user"), None, None),
                totp: false,
                rate_limited: None,
                auth: true,
            },
            Case {
                error: method_error(ErrorCode::Number(404), Some("Method 'x' not found"), None),
                totp: false,
                rate_limited: None,
                auth: false,
            },
        ];
        for case in cases {
            assert_eq!(case.error.is_totp_required(), case.totp, "{}", case.error);
            assert_eq!(
                case.error.is_rate_limited(),
                case.rate_limited,
                "{}",
                case.error
            );
            assert_eq!(case.error.is_auth_failure(), case.auth, "{}", case.error);
        }
    }

    #[test]
    fn method_errors_display_reason_and_code() {
        let with_reason = method_error(ErrorCode::Number(403), Some("User not found"), None);
        assert_eq!(with_reason.to_string(), "User not found [403]");
        let bare = method_error(ErrorCode::Text("totp-required".into()), None, None);
        assert_eq!(bare.to_string(), "[totp-required]");
    }

    #[test]
    fn extracts_stream_events() {
        let cases = [
            (
                json!({"eventName":"__my_messages__","args":[{"_id":"m"},{"roomParticipant":true}]}),
                Some(vec![json!({"_id":"m"}), json!({"roomParticipant":true})]),
            ),
            // 4.x nested shape passes through untouched.
            (
                json!({"eventName":"__my_messages__","args":[[{"_id":"m"}],{"roomParticipant":true}]}),
                Some(vec![json!([{"_id":"m"}]), json!({"roomParticipant":true})]),
            ),
            (json!({"eventName":"r1"}), Some(vec![])),
            (
                json!({"eventName":"r1","args":{"x":1}}),
                Some(vec![json!({"x":1})]),
            ),
            (json!({"username":"bot"}), None),
            (json!({"eventName":5,"args":[]}), None),
        ];
        for (fields, expected) in cases {
            let event = StreamEvent::from_changed("stream-room-messages", &map(fields.clone()));
            assert_eq!(
                event.as_ref().map(|e| e.args.clone()),
                expected,
                "fields {fields}"
            );
            if let Some(event) = event {
                assert_eq!(event.collection, "stream-room-messages");
                assert_eq!(
                    Some(event.event_name.as_str()),
                    fields["eventName"].as_str()
                );
            }
        }
    }

    #[test]
    fn encodes_client_frames() {
        let cases = [
            (
                ClientFrame::Connect,
                json!({"msg":"connect","version":"1","support":["1","pre2","pre1"]}),
            ),
            (
                ClientFrame::Ping {
                    id: Some("k1".into()),
                },
                json!({"msg":"ping","id":"k1"}),
            ),
            (ClientFrame::Ping { id: None }, json!({"msg":"ping"})),
            (
                ClientFrame::Pong {
                    id: Some("p".into()),
                },
                json!({"msg":"pong","id":"p"}),
            ),
            (ClientFrame::Pong { id: None }, json!({"msg":"pong"})),
            (
                ClientFrame::Method {
                    id: "3".into(),
                    method: "login".into(),
                    params: vec![json!({"resume":"t"})],
                },
                json!({"msg":"method","method":"login","id":"3","params":[{"resume":"t"}]}),
            ),
            (
                ClientFrame::Sub {
                    id: "s".into(),
                    name: "stream-room-messages".into(),
                    params: json!(["__my_messages__", false]),
                },
                json!({"msg":"sub","id":"s","name":"stream-room-messages","params":["__my_messages__",false]}),
            ),
            (
                ClientFrame::Sub {
                    id: "s".into(),
                    name: "n".into(),
                    params: json!("r1"),
                },
                json!({"msg":"sub","id":"s","name":"n","params":["r1"]}),
            ),
            (
                ClientFrame::Unsub { id: "s".into() },
                json!({"msg":"unsub","id":"s"}),
            ),
        ];
        for (frame, expected) in cases {
            let encoded: Value = serde_json::from_str(&frame.encode()).unwrap_or(Value::Null);
            assert_eq!(encoded, expected);
        }
    }
}
