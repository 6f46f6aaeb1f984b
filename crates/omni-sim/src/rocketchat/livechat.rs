//! The Livechat visitor-side REST API (`RC:apps/meteor/app/livechat/server/api/v1/*.ts`), the
//! agent-side department list, and file downloads at `/file-upload/<id>/<name>` with
//! `FileUpload_ProtectFiles` semantics. Visitor routes throw plain `Error('invalid-token')` and
//! the like, so their bodies are `{"success":false,"error":"invalid-token"}` without `errorType`.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{DefaultBodyLimit, Multipart, Path, Query, State as AxState};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use super::rest::{
    authenticate, js_len, json_body, missing_param, pagination, unknown_param, visitor_author,
};
use super::state::{Msg, RoomRequest, State, Visitor};
use super::wire::{
    DateForm, Reply, forbidden, forbidden_permissions, meteor_failure, now_ms, object_failure,
    plain_failure, random_id, success, unauthorized,
};
use super::{ServerVersion, Shared, store_file};

type St = AxState<Arc<Shared>>;
type QueryList = Query<Vec<(String, String)>>;

pub(super) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/api/v1/livechat/visitor", post(register_visitor))
        .route("/api/v1/livechat/visitor/{token}", get(get_visitor))
        .route("/api/v1/livechat/room", get(room))
        .route("/api/v1/livechat/room.close", post(close))
        .route("/api/v1/livechat/message", post(send))
        .route(
            "/api/v1/livechat/message/{id}",
            get(get_message).put(update_message),
        )
        .route("/api/v1/livechat/messages.history/{rid}", get(history))
        .route(
            "/api/v1/livechat/upload/{rid}",
            post(upload).layer(DefaultBodyLimit::disable()),
        )
        .route("/api/v1/livechat/config", get(config))
        .route("/api/v1/livechat/custom.field", post(custom_field))
        .route("/api/v1/livechat/department", get(departments))
        .route("/file-upload/{id}/{name}", get(download))
}

fn param<'a>(q: &'a [(String, String)], name: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// `findRoom(token, rid)`: the Livechat room with this id and visitor token, open or not.
fn find_room<'a>(st: &'a State, token: &str, rid: &str) -> Option<&'a super::state::Room> {
    st.rooms
        .get(rid)
        .filter(|r| r.live.as_ref().is_some_and(|l| l.visitor_token == token))
}

/// `POST livechat/visitor {"visitor":{token, name?, username?, department?}}`: registers or
/// updates the visitor matched by token; the department is accepted by id or name.
async fn register_visitor(AxState(shared): St, body: Bytes) -> Reply {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let Some(v) = body.get("visitor").filter(|v| v.is_object()) else {
        return missing_param("visitor");
    };
    let Some(token) = v.get("token").and_then(Value::as_str) else {
        return missing_param("token");
    };
    if token.trim().is_empty() {
        return meteor_failure("error-invalid-token", Some("Token cannot be empty"), None);
    }
    let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    shared.mutate(|st| {
        let department = match field("department") {
            None => None,
            Some(key) => match st.department_by_id_or_name(&key) {
                Some(d) => Some(d.id.clone()),
                None => {
                    return meteor_failure(
                        "error-invalid-department",
                        Some("The provided department is invalid"),
                        None,
                    );
                }
            },
        };
        if let Some(existing) = st.visitors.iter_mut().find(|x| x.token == token) {
            if let Some(name) = field("name") {
                existing.name = Some(name);
            }
            if department.is_some() {
                existing.department = department;
            }
        } else {
            st.guest_seq += 1;
            let username = field("username").unwrap_or_else(|| format!("guest-{}", st.guest_seq));
            st.visitors.push(Visitor {
                id: random_id(),
                token: token.to_owned(),
                name: field("name"),
                username,
                department,
                ts_ms: now_ms(),
                blocked: false,
            });
        }
        match st.visitor_by_token(token) {
            Some(visitor) => success(json!({ "visitor": st.visitor_json(visitor) })),
            None => plain_failure("invalid-token"),
        }
    })
}

async fn get_visitor(AxState(shared): St, Path(token): Path<String>) -> Reply {
    let st = shared.lock();
    match st.visitor_by_token(&token) {
        Some(v) => success(json!({ "visitor": st.visitor_json(v) })),
        None => meteor_failure("invalid-token", None, None),
    }
}

/// `GET livechat/room?token=[&rid=][&agentId=]`. The query is `check`ed strictly (room.ts), so
/// any other key is a Match error; `no-agent-online` when nobody can take a new chat.
async fn room(AxState(shared): St, Query(q): QueryList) -> Reply {
    if let Some((key, _)) = q
        .iter()
        .find(|(k, _)| !matches!(k.as_str(), "token" | "rid" | "agentId"))
    {
        return plain_failure(&format!("Match error: Unknown key in field {key}"));
    }
    let Some(token) = param(&q, "token") else {
        return plain_failure("Match error: Missing key 'token'");
    };
    shared.mutate(|st| {
        if st.visitor_by_token(token).is_none() {
            return plain_failure("invalid-token");
        }
        if let Some(refusal) = st.get_room_refusal(token) {
            return refusal;
        }
        if let Some(rid) = param(&q, "rid") {
            let open =
                find_room(st, token, rid).is_some_and(|r| r.live.as_ref().is_some_and(|l| l.open));
            if !open {
                return plain_failure("invalid-room");
            }
            return success(json!({ "room": st.livechat_room_json(rid), "newRoom": false }));
        }
        match st.request_room(token) {
            Some(RoomRequest::Existing(rid)) => {
                success(json!({ "room": st.livechat_room_json(&rid), "newRoom": false }))
            }
            Some(RoomRequest::Created(rid)) => {
                success(json!({ "room": st.livechat_room_json(&rid), "newRoom": true }))
            }
            Some(RoomRequest::NoAgentOnline) => {
                meteor_failure("no-agent-online", Some("Sorry, no online agents"), None)
            }
            None => plain_failure("invalid-token"),
        }
    })
}

/// `POST livechat/room.close {"rid","token"}` → `{rid, comment:"Closed by visitor"}`.
async fn close(AxState(shared): St, body: Bytes) -> Reply {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let (Some(rid), Some(token)) = (
        body.get("rid").and_then(Value::as_str),
        body.get("token").and_then(Value::as_str),
    ) else {
        return missing_param(if body.get("rid").is_none() {
            "rid"
        } else {
            "token"
        });
    };
    shared.mutate(|st| {
        let Some(author) = visitor_author(st, token) else {
            return plain_failure("invalid-token");
        };
        let Some(room) = find_room(st, token, rid) else {
            return plain_failure("invalid-room");
        };
        if !room.live.as_ref().is_some_and(|l| l.open) {
            return plain_failure("room-closed");
        }
        let comment = "Closed by visitor";
        st.close_livechat_room(rid, author, comment);
        success(json!({ "rid": rid, "comment": comment }))
    })
}

/// The string parameters a visitor route requires, or the server's missing-param refusal naming
/// the first one absent.
fn required_strings<'a, const N: usize>(
    body: &'a Value,
    keys: [&str; N],
) -> Result<[&'a str; N], Reply> {
    let mut values = [""; N];
    for (value, key) in values.iter_mut().zip(keys) {
        match body.get(key).and_then(Value::as_str) {
            Some(found) => *value = found,
            None => return Err(missing_param(key)),
        }
    }
    Ok(values)
}

/// `POST livechat/message {"token","rid","msg","_id"?}` (message.ts). `_id` is honoured; a
/// repeated `_id` is skipped by the core `sendMessage`, so `Livechat.sendMessage` returns nothing
/// and the route answers `API.v1.failure()`: HTTP 400 `{"success":false}`.
async fn send(AxState(shared): St, body: Bytes) -> Reply {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let [token, rid, text] = match required_strings(&body, ["token", "rid", "msg"]) {
        Ok(values) => values,
        Err(reply) => return reply,
    };
    shared.mutate(|st| {
        let Some(author) = visitor_author(st, token) else {
            return plain_failure("invalid-token");
        };
        let Some(room) = find_room(st, token, rid) else {
            return plain_failure("invalid-room");
        };
        if !room.live.as_ref().is_some_and(|l| l.open) {
            return plain_failure("room-closed");
        }
        // message.ts: `if (Livechat_enable_message_character_limit && msg.length >
        // parseInt(Livechat_message_character_limit)) throw new Error(
        // 'message-length-exceeds-character-limit')`, checked against that setting alone
        // (`docs/rocketchat.md` §4.3, §4.4).
        if st.setting_bool("Livechat_enable_message_character_limit") {
            let limit =
                usize::try_from(st.setting_i64("Livechat_message_character_limit")).unwrap_or(0);
            if js_len(text) > limit {
                return plain_failure("message-length-exceeds-character-limit");
            }
        }
        // `Livechat.sendMessage` → `getRoom`, after the route's own checks.
        if let Some(refusal) = st.get_room_refusal(token) {
            return refusal;
        }
        let max = usize::try_from(st.setting_i64("Message_MaxAllowedSize")).unwrap_or(5000);
        if js_len(text) > max {
            return meteor_failure(
                "error-message-size-exceeded",
                Some("Message size exceeds Message_MaxAllowedSize"),
                Some(json!({ "method": "sendMessage" })),
            );
        }
        let id = body
            .get("_id")
            .and_then(Value::as_str)
            .map_or_else(random_id, str::to_owned);
        let now = now_ms();
        let msg = Msg {
            id,
            rid: rid.to_owned(),
            msg: text.to_owned(),
            t: None,
            alias: author.name.clone(),
            u: author,
            token: Some(token.to_owned()),
            ts_ms: now,
            updated_ms: now,
            edited: None,
            file: None,
            quotes: Vec::new(),
            reactions: Default::default(),
        };
        let doc = msg.to_json(DateForm::Iso);
        if !st.insert_message(msg) {
            return object_failure(json!({}));
        }
        success(json!({ "message": doc }))
    })
}

/// `GET livechat/message/:_id?token=&rid=`.
async fn get_message(AxState(shared): St, Path(id): Path<String>, Query(q): QueryList) -> Reply {
    let st = shared.lock();
    let (Some(token), Some(rid)) = (param(&q, "token"), param(&q, "rid")) else {
        return missing_param(if param(&q, "token").is_none() {
            "token"
        } else {
            "rid"
        });
    };
    if st.visitor_by_token(token).is_none() {
        return plain_failure("invalid-token");
    }
    if find_room(&st, token, rid).is_none() {
        return plain_failure("invalid-room");
    }
    // 7.x onward: `Messages.findOneByRoomIdAndMessageId(rid, _id)`; 6.x: `findOneById(_id)`
    // (`apps/meteor/app/livechat/server/api/v1/message.ts`, `docs/rocketchat.md` §4.3). So from
    // 7.x a message that landed in the visitor's previous room is not found with the new rid.
    let by_room = shared.opts.version >= ServerVersion::V7;
    match st.message(&id).filter(|m| !by_room || m.rid == rid) {
        Some(m) => success(json!({ "message": m.to_json(DateForm::Iso) })),
        None => plain_failure("invalid-message"),
    }
}

/// `PUT livechat/message/:_id {"token","rid","msg"}` (`message.ts`, `put()`): the visitor edits
/// a message. In this order: the guest by token (`invalid-token`), the room by token and `rid`
/// with no open check (`invalid-room`), the message by `_id` alone, not checked against `rid`
/// (`invalid-message`); then `updateMessage` (`apps/meteor/app/livechat/server/lib/messages.ts`)
/// refuses with `error-action-not-allowed` unless `Message_AllowEditing` is on and the visitor
/// wrote the message. The core update sets `editedAt`/`editedBy` and re-emits the message.
async fn update_message(AxState(shared): St, Path(id): Path<String>, body: Bytes) -> Reply {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let [token, rid, text] = match required_strings(&body, ["token", "rid", "msg"]) {
        Ok(values) => values,
        Err(reply) => return reply,
    };
    shared.mutate(|st| {
        let Some(author) = visitor_author(st, token) else {
            return plain_failure("invalid-token");
        };
        if find_room(st, token, rid).is_none() {
            return plain_failure("invalid-room");
        }
        let Some(original) = st.message(&id) else {
            return plain_failure("invalid-message");
        };
        if !st.setting_bool("Message_AllowEditing") || original.u.id != author.id {
            return plain_failure("error-action-not-allowed");
        }
        st.edit_message(&id, text, author);
        match st.message(&id) {
            Some(m) => success(json!({ "message": m.to_json(DateForm::Iso) })),
            None => plain_failure("invalid-message"),
        }
    })
}

/// `POST livechat/custom.field {"token","key","value","overwrite"}` (`customField.ts`): the guest
/// by token (`invalid-token`), then `setCustomFields`
/// (`apps/meteor/app/livechat/server/lib/custom-fields.ts`): the field must exist
/// (`invalid-custom-field`); a room-scope field is written to `livechatData` of the visitor's
/// open rooms (`LivechatRooms.updateDataByToken`), kept when `overwrite` is false and a value is
/// there. Visitor-scope fields are accepted and not modelled further.
async fn custom_field(AxState(shared): St, body: Bytes) -> Reply {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let get = |k: &str| body.get(k).and_then(Value::as_str);
    let (Some(token), Some(key), Some(value), Some(overwrite)) = (
        get("token"),
        get("key"),
        get("value"),
        body.get("overwrite").and_then(Value::as_bool),
    ) else {
        return plain_failure("Match error: token, key, value and overwrite are required");
    };
    shared.mutate(|st| {
        if st.visitor_by_token(token).is_none() {
            return plain_failure("invalid-token");
        }
        let Some(room_scope) = st.custom_fields.get(key).copied() else {
            return plain_failure("invalid-custom-field");
        };
        if room_scope {
            for room in st.rooms.values_mut() {
                if let Some(live) = room
                    .live
                    .as_mut()
                    .filter(|l| l.visitor_token == token && l.open)
                {
                    if overwrite || !live.data.contains_key(key) {
                        live.data.insert(key.to_owned(), value.to_owned());
                    }
                }
            }
        }
        success(json!({ "field": { "key": key, "value": value, "overwrite": overwrite } }))
    })
}

/// `GET livechat/messages.history/:rid?token=[&end=<ISO date>][&limit=20]`: newest first, only
/// messages before `end` when given (`loadMessageHistory` queries `ts < end`). `ls` (last seen)
/// only counts unread messages on the real server and is accepted and ignored.
async fn history(AxState(shared): St, Path(rid): Path<String>, Query(q): QueryList) -> Reply {
    let st = shared.lock();
    let Some(token) = param(&q, "token") else {
        return plain_failure("error-token-param-not-provided");
    };
    if st.visitor_by_token(token).is_none() {
        return plain_failure("invalid-token");
    }
    if find_room(&st, token, &rid).is_none() {
        return plain_failure("invalid-room");
    }
    let limit = param(&q, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(20);
    let end = match param(&q, "end") {
        Some(end) => match crate::dates::parse_iso(end) {
            Some(ms) => Some(ms as i64),
            None => return plain_failure("Match error: Expected a date in field end"),
        },
        None => None,
    };
    let messages: Vec<Value> = st
        .msgs
        .iter()
        .rev()
        .filter(|m| m.rid == rid && end.is_none_or(|end| m.ts_ms < end))
        .take(limit)
        .map(|m| m.to_json(DateForm::Iso))
        .collect();
    success(json!({ "messages": messages }))
}

/// upload.ts: `API.v1.failure({ reason: 'error-no-file-uploaded' })` — `reason`, not `error`
/// (`docs/rocketchat.md` §4.6).
fn no_file() -> Reply {
    object_failure(json!({ "reason": "error-no-file-uploaded" }))
}

/// Whether a MIME type passes `FileUpload_MediaTypeWhiteList`/`BlackList` (comma lists, `type/*`).
fn type_allowed(st: &State, mime: &str) -> bool {
    let matches = |list: &str| {
        list.split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .any(|entry| {
                entry == mime
                    || entry
                        .strip_suffix("/*")
                        .is_some_and(|prefix| mime.split('/').next() == Some(prefix))
            })
    };
    let white = st.setting_str("FileUpload_MediaTypeWhiteList");
    if matches(st.setting_str("FileUpload_MediaTypeBlackList")) {
        return false;
    }
    white.trim().is_empty() || matches(white)
}

/// `POST livechat/upload/:rid`, header `x-visitor-token`, multipart field `file` (+ `msg`).
/// Bad token or room → 403; uploads disabled → `error-file-upload-disabled`; too large →
/// `{reason:"error-size-not-allowed", sizeAllowed}`; type refused → `{reason:"error-type-not-allowed"}`
/// (upload.ts). The answer is the created message with `success` added.
async fn upload(
    AxState(shared): St,
    headers: HeaderMap,
    Path(rid): Path<String>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Reply {
    let Some(token) = headers
        .get("x-visitor-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return forbidden();
    };
    let max = {
        let st = shared.lock();
        let open =
            find_room(&st, &token, &rid).is_some_and(|r| r.live.as_ref().is_some_and(|l| l.open));
        if st.visitor_by_token(&token).is_none() || !open {
            return forbidden();
        }
        if !(st.setting_bool("FileUpload_Enabled")
            && st.setting_bool("Livechat_fileupload_enabled"))
        {
            // upload.ts: `API.v1.failure({ reason: 'error-file-upload-disabled' })`.
            return object_failure(json!({ "reason": "error-file-upload-disabled" }));
        }
        st.setting_i64("FileUpload_MaxFileSize")
    };
    let Ok(mut multipart) = multipart else {
        return no_file();
    };
    let mut file: Option<(String, String, Bytes)> = None;
    let mut text = String::new();
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(field)) => field,
            Ok(None) => break,
            Err(_) => return no_file(),
        };
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let file_name = field.file_name().unwrap_or("file").to_owned();
            let mime = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_owned();
            match field.bytes().await {
                Ok(bytes) => file = Some((file_name, mime, bytes)),
                Err(_) => return no_file(),
            }
        } else if name == "msg" || name == "description" {
            text = field.text().await.unwrap_or_default();
        }
    }
    let Some((name, mime, bytes)) = file else {
        return no_file();
    };
    shared.mutate(|st| {
        if !type_allowed(st, &mime) {
            return object_failure(json!({ "reason": "error-type-not-allowed" }));
        }
        if max > -1 && i64::try_from(bytes.len()).unwrap_or(i64::MAX) > max {
            return object_failure(
                json!({ "reason": "error-size-not-allowed", "sizeAllowed": max }),
            );
        }
        let Some(author) = visitor_author(st, &token) else {
            return forbidden();
        };
        let file = store_file(st, &rid, &name, &mime, bytes.to_vec());
        let now = now_ms();
        let msg = Msg {
            id: random_id(),
            rid: rid.clone(),
            msg: text,
            t: None,
            alias: author.name.clone(),
            u: author,
            token: Some(token.clone()),
            ts_ms: now,
            updated_ms: now,
            edited: None,
            file: Some(file),
            quotes: Vec::new(),
            reactions: Default::default(),
        };
        let doc = msg.to_json(DateForm::Iso);
        st.insert_message(msg);
        success(doc)
    })
}

/// `GET livechat/config[?token=][&department=]`: `online` follows `Livechat.online(department)`;
/// `departments` lists enabled departments that have agents.
async fn config(AxState(shared): St, Query(q): QueryList) -> Reply {
    let st = shared.lock();
    if !st.setting_bool("Livechat_enabled") {
        return success(json!({ "config": { "enabled": false } }));
    }
    let departments: Vec<Value> = st
        .departments
        .iter()
        .filter(|d| d.enabled && !d.agents.is_empty())
        .map(|d| json!({ "_id": d.id, "name": d.name, "showOnRegistration": true, "showOnOfflineForm": true }))
        .collect();
    let file_upload =
        st.setting_bool("FileUpload_Enabled") && st.setting_bool("Livechat_fileupload_enabled");
    // `settings()` in `apps/meteor/app/livechat/server/api/lib/livechat.ts`:
    // `limitTextLength: Livechat_enable_message_character_limit && (Livechat_message_character_limit
    // || Message_MaxAllowedSize)` — `false` when off, else a number (`docs/rocketchat.md` §4.4).
    let limit_text_length = if st.setting_bool("Livechat_enable_message_character_limit") {
        match st.setting_i64("Livechat_message_character_limit") {
            0 => json!(st.setting_i64("Message_MaxAllowedSize")),
            n => json!(n),
        }
    } else {
        json!(false)
    };
    let mut config = json!({
        "enabled": true,
        "settings": { "registrationForm": true, "allowSwitchingDepartments": true, "displayOfflineForm": true,
                      "fileUpload": file_upload, "language": "en", "limitTextLength": limit_text_length },
        "theme": {}, "messages": {}, "survey": {}, "triggers": [], "resources": {},
        "departments": departments,
        "online": st.livechat_online(param(&q, "department")),
    });
    if let Some(token) = param(&q, "token") {
        if let Some(v) = st.visitor_by_token(token) {
            config["guest"] = st.visitor_json(v);
        }
        if let Some(room) = st.open_livechat_room_of(token) {
            config["room"] = st.livechat_room_json(&room.id);
        }
    }
    success(json!({ "config": config }))
}

/// `GET livechat/department` (auth; `view-livechat-departments` or `view-l-room`).
async fn departments(AxState(shared): St, headers: HeaderMap, Query(q): QueryList) -> Reply {
    let st = shared.lock();
    let Some(uid) = authenticate(&st, &headers) else {
        return unauthorized();
    };
    if !(st.has_permission(&uid, "view-livechat-departments")
        || st.has_permission(&uid, "view-l-room"))
    {
        return forbidden_permissions();
    }
    // `isGETLivechatDepartmentProps` (@rocket.chat/rest-typings, `additionalProperties: false`).
    let allowed = [
        "text",
        "onlyMyDepartments",
        "enabled",
        "excludeDepartmentId",
        "showArchived",
        "count",
        "offset",
        "sort",
        "query",
    ];
    if let Some(refused) = unknown_param(&allowed, &q) {
        return refused;
    }
    let only_enabled = param(&q, "enabled") == Some("true");
    let matching: Vec<&super::state::Department> = st
        .departments
        .iter()
        .filter(|d| !only_enabled || d.enabled)
        .collect();
    // Paged by `getPaginationItems` (at most 100 a page): a client pages with `offset` until
    // `offset + count >= total` (`apps/meteor/app/livechat/imports/server/rest/departments.ts`,
    // `docs/rocketchat.md` §3.4).
    let (offset, count) = pagination(&st, &q);
    let list: Vec<Value> = matching
        .iter()
        .skip(offset)
        .take(count.unwrap_or(usize::MAX))
        .map(|d| {
            json!({ "_id": d.id, "name": d.name, "enabled": d.enabled, "showOnRegistration": true,
                    "showOnOfflineForm": true, "numAgents": d.agents.len(), "email": "", "description": "" })
        })
        .collect();
    let n = list.len();
    success(json!({ "departments": list, "count": n, "offset": offset, "total": matching.len() }))
}

/// Reads a credential from the query string or, failing that, the cookies.
fn credential(q: &[(String, String)], headers: &HeaderMap, name: &str) -> Option<String> {
    if let Some(v) = param(q, name) {
        return Some(v.to_owned());
    }
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|c| c.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

/// `GET /file-upload/:id/:name` (`FileUpload.requestCanAccessFiles`): with `ProtectFiles` the
/// caller must be a member of the file's room (headers `X-User-Id`/`X-Auth-Token`, or
/// `rc_uid`/`rc_token` in query or cookies), or the room's visitor
/// (`rc_room_type=l&rc_rid=<rid>&rc_token=<visitor token>`); anyone else gets an empty 403.
async fn download(
    AxState(shared): St,
    headers: HeaderMap,
    Path((id, _name)): Path<(String, String)>,
    Query(q): QueryList,
) -> Response {
    let st = shared.lock();
    let Some(file) = st.files.get(&id) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let user = authenticate(&st, &headers).or_else(|| {
        let uid = credential(&q, &headers, "rc_uid")?;
        let token = credential(&q, &headers, "rc_token")?;
        st.user_by_credentials(&uid, &token).map(|u| u.id.clone())
    });
    let room = st.rooms.get(&file.rid);
    let member = user.as_deref().is_some_and(|uid| {
        !st.setting_bool("FileUpload_Restrict_to_room_members")
            || room.is_some_and(|r| r.members.contains(uid))
    });
    let visitor = credential(&q, &headers, "rc_room_type").as_deref() == Some("l")
        && credential(&q, &headers, "rc_rid").as_deref() == Some(file.rid.as_str())
        && credential(&q, &headers, "rc_token").is_some_and(|t| {
            room.and_then(|r| r.live.as_ref())
                .is_some_and(|l| l.visitor_token == t)
        });
    if st.setting_bool("FileUpload_ProtectFiles") && !member && !visitor {
        return StatusCode::FORBIDDEN.into_response();
    }
    let mut response = file.bytes.clone().into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&file.mime) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    let encoded: String = url::form_urlencoded::byte_serialize(file.name.as_bytes()).collect();
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename*=UTF-8''{encoded}")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    response
}
