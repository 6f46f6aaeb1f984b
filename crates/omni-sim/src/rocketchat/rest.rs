//! The REST half: the router, the gate every call passes (injected faults, the REST rate limiter
//! of `ApiClass.ts`), authentication by `X-User-Id` + `X-Auth-Token`, and the core routes
//! (`login`, `me`, `chat.*`, `users.info`, `im.create`, `settings`). Livechat routes live in
//! `livechat.rs`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{
    ConnectInfo, MatchedPath, Path, Query, Request, State as AxState, WebSocketUpgrade,
};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::time::Duration;

use super::state::{
    Author, Msg, OTHER_PUBLIC_SETTINGS, PUBLIC_SETTINGS, RoomKind, State, User, sha256_hex,
};
use super::wire::{
    DateForm, Reply, date, forbidden_permissions, meteor_failure, now_ms, object_failure,
    plain_failure, random_id, success, unauthorized,
};
use super::{ServerVersion, Shared};
use super::{ddp, livechat};

type St = AxState<Arc<Shared>>;

/// Routes that need `X-User-Id`/`X-Auth-Token`; the rate limiter lets their callers with
/// `api-bypass-rate-limit` through, and leaves unauthenticated calls to the route's 401.
const AUTH_ROUTES: &[&str] = &[
    "/api/v1/me",
    "/api/v1/chat.sendMessage",
    "/api/v1/chat.getMessage",
    "/api/v1/users.info",
    "/api/v1/im.create",
    "/api/v1/settings/{id}",
    "/api/v1/livechat/department",
    "/api/v1/permissions.listAll",
];

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/websocket", get(websocket))
        .route("/api/info", get(info))
        .route("/api/v1/login", post(login))
        .route("/api/v1/me", get(me))
        .route("/api/v1/chat.sendMessage", post(send_message))
        .route("/api/v1/chat.getMessage", get(get_message))
        .route("/api/v1/users.info", get(users_info))
        .route("/api/v1/im.create", post(im_create))
        .route("/api/v1/settings.public", get(settings_public))
        .route("/api/v1/settings/{id}", get(setting))
        .route("/api/v1/permissions.listAll", get(permissions_list_all))
        .merge(livechat::routes())
        .route_layer(from_fn_with_state(shared.clone(), gate))
        .fallback(not_found)
        .with_state(shared)
}

async fn not_found() -> Reply {
    Reply {
        status: StatusCode::NOT_FOUND,
        body: json!({ "success": false, "error": "Resource not found" }),
    }
}

async fn websocket(AxState(shared): St, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| ddp::serve_socket(shared, socket))
}

/// Applies the injected faults and the REST rate limiter before a route runs.
async fn gate(
    AxState(shared): St,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let ip = peer.ip();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| req.uri().path().to_owned());
    if shared.lock().faults.refuse {
        return (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response();
    }
    if route == "/websocket" {
        return next.run(req).await;
    }
    let recording = shared.lock().rest_log.active();
    let req = if recording {
        match record(&shared, &route, req).await {
            Ok(req) => req,
            Err(refused) => return refused,
        }
    } else {
        req
    };
    let method = req.method().clone();
    let latency = {
        let mut st = shared.lock();
        *st.counters
            .rest_calls_by_route
            .entry(format!("{method} {route}"))
            .or_default() += 1;
        st.faults.latency
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if let Some(forced) = forced_fault(&shared) {
        return forced;
    }
    let Some(verdict) = limiter_for(&shared, &route, &method, req.headers(), ip) else {
        return next.run(req).await;
    };
    // `enforceRateLimit` sets the headers on every counted call, refused or not.
    let headers = rate_headers(verdict.limit, verdict.remaining, verdict.reset_ms);
    let mut response = if verdict.allowed {
        next.run(req).await
    } else {
        too_many_requests(verdict.reset_ms).into_response()
    };
    response.headers_mut().extend(headers);
    response
}

/// The REST requests the simulator received, kept for a contract test that checks them against
/// the request schemas Rocket.Chat publishes (`@rocket.chat/rest-typings`). Off unless a test asks
/// for it (`RocketChatSim::record_rest_requests`) or `OMNI_SIM_REST_LOG` names a JSONL file that
/// every simulator in the process appends to.
#[derive(Debug, Default)]
pub(super) struct RestLog {
    /// `Some` while a test records in memory.
    pub requests: Option<Vec<Value>>,
    file: Option<std::path::PathBuf>,
}

impl RestLog {
    pub fn from_env() -> Self {
        Self {
            requests: None,
            file: std::env::var_os("OMNI_SIM_REST_LOG")
                .filter(|path| !path.is_empty())
                .map(Into::into),
        }
    }

    fn active(&self) -> bool {
        self.requests.is_some() || self.file.is_some()
    }

    /// Fails when the log file cannot be written: the caller refuses the request, so a test that
    /// relies on a complete log fails instead of checking a partial one.
    fn push(&mut self, entry: Value) -> std::io::Result<()> {
        if let Some(path) = &self.file {
            let line = format!("{entry}\n");
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut file| std::io::Write::write_all(&mut file, line.as_bytes()))
                .map_err(|error| {
                    std::io::Error::new(error.kind(), format!("{}: {error}", path.display()))
                })?;
        }
        if let Some(requests) = &mut self.requests {
            requests.push(entry);
        }
        Ok(())
    }
}

/// Notes one request: method, route pattern, concrete path, raw query, and the body when it is
/// JSON (multipart uploads are noted by content type only). The request goes on unchanged.
async fn record(shared: &Shared, route: &str, req: Request) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let content_type = parts
        .headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let json = content_type.starts_with("application/json");
    let (body, recorded) = if json {
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|_| (StatusCode::BAD_REQUEST, "unreadable body").into_response())?;
        let value = serde_json::from_slice::<Value>(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (axum::body::Body::from(bytes), value)
    } else {
        (body, Value::Null)
    };
    let entry = json!({
        "method": parts.method.as_str(),
        "route": route,
        "path": parts.uri.path(),
        "query": parts.uri.query().unwrap_or(""),
        "content_type": content_type,
        "body": recorded,
    });
    if let Err(error) = shared.lock().rest_log.push(entry) {
        tracing::error!(error = %error, "OMNI_SIM_REST_LOG: cannot write the request log");
        let body = format!("OMNI_SIM_REST_LOG: cannot write the request log: {error}");
        return Err((StatusCode::INTERNAL_SERVER_ERROR, body).into_response());
    }
    Ok(Request::from_parts(parts, body))
}

/// The one-shot faults a test queued: forced statuses, then forced 429s.
fn forced_fault(shared: &Shared) -> Option<Response> {
    let mut st = shared.lock();
    if st.faults.fail_next > 0 {
        st.faults.fail_next -= 1;
        let status = StatusCode::from_u16(st.faults.fail_status)
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let reason = status.canonical_reason().unwrap_or("Error");
        return Some(if status.is_server_error() {
            (status, reason.to_owned()).into_response()
        } else {
            (
                status,
                axum::Json(json!({ "success": false, "error": reason })),
            )
                .into_response()
        });
    }
    if st.faults.rate_limit_next > 0 {
        st.faults.rate_limit_next -= 1;
        let mut response = too_many_requests(1000).into_response();
        response.headers_mut().extend(rate_headers(10, 0, 1000));
        return Some(response);
    }
    None
}

/// One counted call: whether it may go on, the route's limit, calls left, ms until reset.
struct RateVerdict {
    allowed: bool,
    limit: u64,
    remaining: u64,
    reset_ms: u64,
}

/// Counts the call against the REST limiter when it applies; `None` when it does not.
/// `shouldVerifyRateLimit` in `apps/meteor/app/api/server/ApiClass.ts`: the limiter is on
/// (`API_Enable_Rate_Limiter`) and the caller is not an authenticated user holding
/// `api-bypass-rate-limit` (unauthenticated routes such as the Livechat visitor ones never bypass).
fn limiter_for(
    shared: &Shared,
    route: &str,
    method: &Method,
    headers: &HeaderMap,
    ip: IpAddr,
) -> Option<RateVerdict> {
    let name = route.strip_prefix("/api/v1/")?;
    let mut st = shared.lock();
    if !st.setting_bool("API_Enable_Rate_Limiter") {
        return None;
    }
    if AUTH_ROUTES.contains(&route) {
        // Unauthenticated: the route answers 401 before the limiter runs (ApiClass.ts order).
        let uid = authenticate(&st, headers)?;
        if st.has_permission(&uid, "api-bypass-rate-limit") {
            return None;
        }
    }
    let (limit, interval) = limits(&st, shared.opts.version, route);
    let interval = interval / shared.opts.rate_window_divisor.max(1);
    // The rule's key is `{ IPAddr, route: `/${route}${method}` }` with the route *pattern*
    // (`getFullRouteName` in ApiClass.ts): every room shares one `messages.history/:rid` bucket.
    let pattern = name.replace('{', ":").replace('}', "");
    let key = format!("{ip} /{pattern}{}", method.as_str().to_ascii_lowercase());
    let (allowed, remaining, reset_ms) = st.rate_check(key, limit, interval);
    Some(RateVerdict {
        allowed,
        limit,
        remaining,
        reset_ms,
    })
}

/// Per-route limits. A route's own `rateLimiterOptions` replaces the defaults
/// (`addRateLimiterRuleForRoutes` in ApiClass.ts), so raising the default-limit settings does not
/// lift them: `livechat/visitor` 5 per 60 s
/// (`apps/meteor/app/livechat/server/api/v1/visitor.ts`), `livechat/room` 5 per 60 s
/// (`apps/meteor/app/livechat/server/api/v1/room.ts`, late 6.x onward), and on 8.x
/// `livechat/upload/:rid` 5 per 10 s (`apps/meteor/app/livechat/imports/server/rest/upload.ts`).
/// Every other v1 route: the `API_Enable_Rate_Limiter_Limit_*_Default` settings
/// (`apps/meteor/server/settings/rate.ts`). `docs/rocketchat.md` §3.3.
fn limits(st: &State, version: ServerVersion, route: &str) -> (u64, Duration) {
    match route {
        "/api/v1/livechat/visitor" | "/api/v1/livechat/room" => {
            return (5, Duration::from_millis(60_000));
        }
        "/api/v1/livechat/upload/{rid}" if version >= ServerVersion::V8 => {
            return (5, Duration::from_millis(10_000));
        }
        _ => {}
    }
    let calls =
        u64::try_from(st.setting_i64("API_Enable_Rate_Limiter_Limit_Calls_Default")).unwrap_or(10);
    let time = u64::try_from(st.setting_i64("API_Enable_Rate_Limiter_Limit_Time_Default"))
        .unwrap_or(60_000);
    (calls, Duration::from_millis(time))
}

fn rate_headers(limit: u64, remaining: u64, reset_ms: u64) -> HeaderMap {
    let reset_at = u64::try_from(now_ms()).unwrap_or(0) + reset_ms;
    let mut headers = HeaderMap::new();
    for (name, value) in [
        ("x-ratelimit-limit", limit),
        ("x-ratelimit-remaining", remaining),
        ("x-ratelimit-reset", reset_at),
    ] {
        headers.insert(name, HeaderValue::from(value));
    }
    headers
}

/// The limiter's `Meteor.Error('error-too-many-requests', …)` mapped by `API.v1.tooManyRequests`.
fn too_many_requests(reset_ms: u64) -> Reply {
    let seconds = reset_ms.div_ceil(1000);
    Reply {
        status: StatusCode::TOO_MANY_REQUESTS,
        body: json!({
            "success": false,
            "error": format!(
                "Error, too many requests. Please slow down. You must wait {seconds} seconds before trying this endpoint again. [error-too-many-requests]"
            ),
        }),
    }
}

/// The user the `X-User-Id` + `X-Auth-Token` headers authenticate, if they match.
pub(super) fn authenticate(st: &State, headers: &HeaderMap) -> Option<String> {
    let uid = headers.get("x-user-id")?.to_str().ok()?;
    let token = headers.get("x-auth-token")?.to_str().ok()?;
    st.user_by_credentials(uid, token).map(|u| u.id.clone())
}

/// A JSON request body; an empty body counts as `{}`.
pub(super) fn json_body(body: &Bytes) -> Result<Value, Reply> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|_| plain_failure("Invalid JSON body"))
}

/// The `invalid-params` error ajv validation produces for a missing property.
pub(super) fn missing_param(name: &str) -> Reply {
    meteor_failure(
        "invalid-params",
        Some(&format!("must have required property '{name}'")),
        None,
    )
}

/// The JavaScript length of a string (UTF-16 code units), which server-side limits count.
pub(super) fn js_len(s: &str) -> usize {
    s.encode_utf16().count()
}

fn user_json(user: &User, full: bool) -> Value {
    let mut doc = json!({
        "_id": user.id, "username": user.username, "name": user.name, "type": "user",
        "status": if user.online { "online" } else { "offline" }, "active": true, "utcOffset": 0,
    });
    if user.roles.iter().any(|r| r == "livechat-agent") {
        doc["statusLivechat"] = json!(if user.livechat_available {
            "available"
        } else {
            "not-available"
        });
    }
    if full {
        doc["roles"] = json!(user.roles);
        doc["emails"] = json!([]);
        doc["createdAt"] = date(user.created_ms, DateForm::Iso);
    }
    doc
}

async fn info(AxState(shared): St) -> Reply {
    success(json!({ "version": shared.opts.version.number() }))
}

/// `POST /api/v1/login`: `{user|username|email, password}` (plain text, as the REST API takes
/// it), optional `code`, or `{resume}`. Failures are 401 with the Meteor error folded in
/// (`_initAuth` in ApiClass.ts).
async fn login(AxState(shared): St, body: Bytes) -> Reply {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    shared.mutate(|st| {
        let fail = |error: Value, message: &str, details: Option<Value>| {
            let mut body = json!({ "success": false, "status": "error", "error": error, "message": message });
            if let Some(d) = details {
                body["details"] = d;
            }
            Reply { status: StatusCode::UNAUTHORIZED, body }
        };
        let not_found = || fail(json!("Unauthorized"), "Unauthorized", None);
        let uid = if let Some(token) = body.get("resume").and_then(Value::as_str) {
            let Some((user, _)) = st.user_by_resume(token) else {
                return fail(json!(403), "You've been logged out by the server. Please log in again.", None);
            };
            let uid = user.id.clone();
            st.counters.logins_resume += 1;
            (uid, token.to_owned())
        } else {
            let name = ["user", "username"]
                .iter()
                .find_map(|k| body.get(*k).and_then(Value::as_str));
            let Some(password) = body.get("password").and_then(Value::as_str) else {
                return not_found();
            };
            let Some(user) = name.and_then(|n| st.user_by_name(n)) else {
                return not_found();
            };
            if user.password_digest != sha256_hex(password) {
                return fail(json!(403), "Incorrect password", None);
            }
            if user.totp {
                return if body.get("code").is_some() {
                    fail(json!("totp-invalid"), "TOTP Invalid", None)
                } else {
                    let details = json!({ "method": "totp", "codeGenerated": false, "availableMethods": ["totp"] });
                    fail(json!("totp-required"), "TOTP Required", Some(details))
                };
            }
            let uid = user.id.clone();
            let Some((token, _)) = st.issue_token(&uid, false) else {
                return not_found();
            };
            st.counters.logins_password += 1;
            (uid, token)
        };
        let (uid, token) = uid;
        let me = st.users.get(&uid).map(|u| user_json(u, true)).unwrap_or(Value::Null);
        success(json!({ "status": "success", "data": { "userId": uid, "authToken": token, "me": me } }))
    })
}

async fn me(AxState(shared): St, headers: HeaderMap) -> Reply {
    let st = shared.lock();
    let Some(uid) = authenticate(&st, &headers) else {
        return unauthorized();
    };
    match st.users.get(&uid) {
        Some(user) => success(user_json(user, true)),
        None => unauthorized(),
    }
}

/// `POST /api/v1/chat.sendMessage {"message":{_id?, rid, msg}}` (chat.ts → `executeSendMessage`).
/// A repeated `_id` is skipped by `sendMessage`, which returns nothing, and the route then fails
/// normalising `undefined` (`normalizeMessagesForUser` reads `.starred`): HTTP 400 with the
/// TypeError text, inferred from source.
async fn send_message(AxState(shared): St, headers: HeaderMap, body: Bytes) -> Reply {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    shared.mutate(|st| {
        let Some(uid) = authenticate(st, &headers) else {
            return unauthorized();
        };
        let Some(message) = body.get("message").filter(|m| m.is_object()) else {
            return missing_param("message");
        };
        if message.get("t").is_some() {
            return plain_failure("Cannot send system messages using 'chat.sendMessage'");
        }
        let text = message
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let max = usize::try_from(st.setting_i64("Message_MaxAllowedSize")).unwrap_or(5000);
        if js_len(text) > max {
            return meteor_failure(
                "error-message-size-exceeded",
                Some("Message size exceeds Message_MaxAllowedSize"),
                Some(json!({ "method": "sendMessage" })),
            );
        }
        let Some(rid) = message.get("rid").and_then(Value::as_str) else {
            return plain_failure("The 'rid' property on the message object is missing.");
        };
        let Some(room) = st.rooms.get(rid) else {
            return plain_failure("error-invalid-room");
        };
        // `canSendMessageAsync` → `canAccessRoomAsync`
        // (apps/meteor/app/authorization/server/functions/canSendMessage.ts): members, and for
        // a Livechat room anyone with `view-livechat-rooms` or its serving agent
        // (apps/meteor/app/livechat/server/roomAccessValidator.compatibility.ts). Other rooms
        // keep the simulator's narrower members-only rule (the gateway posts there only in DMs).
        let allowed = match room.kind {
            RoomKind::Livechat => st.can_access(&uid, room),
            _ => room.members.contains(&uid),
        };
        if !allowed {
            return plain_failure("error-not-allowed");
        }
        let id = match message.get("_id") {
            None => random_id(),
            Some(Value::String(id)) => id.clone(),
            Some(_) => return meteor_failure("invalid-params", Some("must be string"), None),
        };
        let Some(author) = st.author(&uid) else {
            return unauthorized();
        };
        let now = now_ms();
        let msg = Msg {
            id,
            rid: rid.to_owned(),
            msg: text.to_owned(),
            t: None,
            u: author,
            token: None,
            alias: None,
            ts_ms: now,
            updated_ms: now,
            edited: None,
            file: None,
        };
        let doc = msg.to_json(DateForm::Iso);
        if !st.insert_message(msg) {
            return plain_failure("Cannot read properties of undefined (reading 'starred')");
        }
        success(json!({ "message": doc }))
    })
}

async fn get_message(
    AxState(shared): St,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Reply {
    let st = shared.lock();
    let Some(uid) = authenticate(&st, &headers) else {
        return unauthorized();
    };
    let Some(id) = q
        .iter()
        .find(|(k, _)| k == "msgId")
        .map(|(_, v)| v.as_str())
    else {
        return plain_failure("The \"msgId\" query parameter must be provided.");
    };
    let Some(msg) = st.message(id) else {
        return object_failure(json!({}));
    };
    let allowed = st
        .rooms
        .get(&msg.rid)
        .is_some_and(|room| st.can_access(&uid, room));
    if !allowed {
        return meteor_failure("error-not-allowed", Some("Not allowed"), None);
    }
    success(json!({ "message": msg.to_json(DateForm::Iso) }))
}

/// `GET /api/v1/users.info?userId=|username=`: `roles` only for oneself or with
/// `view-full-other-user-info` (`getFullUserDataByIdOrUsernameOrImportId`).
async fn users_info(
    AxState(shared): St,
    headers: HeaderMap,
    Query(q): Query<Vec<(String, String)>>,
) -> Reply {
    let st = shared.lock();
    let Some(uid) = authenticate(&st, &headers) else {
        return unauthorized();
    };
    let param = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let user = match (param("userId"), param("username")) {
        (Some(id), _) => st.users.get(&id),
        (None, Some(name)) => st.user_by_name(&name),
        (None, None) => {
            return meteor_failure(
                "error-user-param-not-provided",
                Some("The required \"userId\" or \"username\" param was not provided"),
                None,
            );
        }
    };
    let Some(user) = user else {
        return meteor_failure(
            "error-invalid-user",
            Some("The required \"userId\" or \"username\" param provided does not match any users"),
            None,
        );
    };
    let full = user.id == uid || st.has_permission(&uid, "view-full-other-user-info");
    success(json!({ "user": user_json(user, full) }))
}

/// `POST /api/v1/im.create {"username"}`: `{room: {...room, _id: room.rid}}` (im.ts).
async fn im_create(AxState(shared): St, headers: HeaderMap, body: Bytes) -> Reply {
    let body = match json_body(&body) {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    shared.mutate(|st| {
        let Some(uid) = authenticate(st, &headers) else {
            return unauthorized();
        };
        let Some(target) = body.get("username").and_then(Value::as_str) else {
            return missing_param("username");
        };
        let details = json!({ "method": "createDirectMessage" });
        if !st.has_permission(&uid, "create-d") {
            return meteor_failure("error-not-allowed", Some("Not allowed"), Some(details));
        }
        let Some(me) = st.users.get(&uid).map(|u| u.username.clone()) else {
            return unauthorized();
        };
        if st.user_by_name(target).is_none() {
            return meteor_failure("error-invalid-user", Some("Invalid user"), Some(details));
        }
        let Some(rid) = st.direct_room(&me, target) else {
            return meteor_failure("error-invalid-user", Some("Invalid user"), Some(details));
        };
        let Some(room) = st.rooms.get(&rid) else {
            return meteor_failure("error-invalid-user", Some("Invalid user"), Some(details));
        };
        let mut usernames: Vec<String> = room
            .members
            .iter()
            .filter_map(|m| st.users.get(m).map(|u| u.username.clone()))
            .collect();
        usernames.sort();
        let msgs = st.msgs.iter().filter(|m| m.rid == rid).count();
        success(json!({ "room": {
            "_id": rid, "rid": rid, "t": RoomKind::Direct.t(), "usernames": usernames, "uids": room.members,
            "msgs": msgs, "ts": date(room.ts_ms, DateForm::Iso), "_updatedAt": date(now_ms(), DateForm::Iso),
        } }))
    })
}

/// The `offset`/`count` of a paged route (`getPaginationItems` in
/// `apps/meteor/app/api/server/helpers/getPaginationItems.ts`): `count` defaults to
/// `API_Default_Count` (50) and is clamped to `API_Upper_Count_Limit` (100), not refused;
/// `count=0` means everything when `API_Allow_Infinite_Count` is on. `None` count = no limit.
pub(super) fn pagination(st: &State, q: &[(String, String)]) -> (usize, Option<usize>) {
    let get = |name: &str| q.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    let number = |name: &str| get(name).and_then(|v| v.trim().parse::<usize>().ok());
    let default = usize::try_from(st.setting_i64("API_Default_Count")).unwrap_or(50);
    let upper = usize::try_from(st.setting_i64("API_Upper_Count_Limit")).unwrap_or(100);
    let offset = number("offset").unwrap_or(0);
    let count = match number("count") {
        Some(0) if st.setting_bool("API_Allow_Infinite_Count") => None,
        Some(0) | None => Some(default),
        Some(n) => Some(n.min(upper)),
    };
    (offset, count)
}

/// The 400 ajv gives a query with a key the route's schema does not allow
/// (`additionalProperties: false`), as `validateParams` in ApiClass.ts reports it.
pub(super) fn unknown_param(allowed: &[&str], q: &[(String, String)]) -> Option<Reply> {
    q.iter()
        .find(|(k, _)| !allowed.contains(&k.as_str()))
        .map(|_| {
            meteor_failure(
                "invalid-params",
                Some("must NOT have additional properties"),
                None,
            )
        })
}

/// `GET /api/v1/settings.public`: public settings, sorted by `_id`, paged (§3.4 of
/// `docs/rocketchat.md`). From 7.0 the route validates its query with
/// `isSettingsPublicWithPaginationProps` (`count, offset, sort, _id, query`,
/// `additionalProperties: false`) and `_id=a,b` filters (`apps/meteor/app/api/server/v1/settings.ts`);
/// 6.x has no `_id` filter and answers the first page whatever it was asked.
async fn settings_public(AxState(shared): St, Query(q): Query<Vec<(String, String)>>) -> Reply {
    let st = shared.lock();
    let filters = shared.opts.version >= ServerVersion::V7;
    if filters
        && let Some(refused) = unknown_param(&["count", "offset", "sort", "_id", "query"], &q)
    {
        return refused;
    }
    let wanted: Option<Vec<String>> = q
        .iter()
        .find(|(k, _)| filters && k == "_id")
        .map(|(_, v)| v.split(',').map(|s| s.trim().to_owned()).collect());
    let mut ids: Vec<&str> = PUBLIC_SETTINGS
        .iter()
        .chain(OTHER_PUBLIC_SETTINGS)
        .copied()
        .collect();
    ids.sort_unstable();
    let all: Vec<Value> = ids
        .into_iter()
        .filter(|id| wanted.as_ref().is_none_or(|w| w.iter().any(|x| x == *id)))
        .filter_map(|id| {
            st.settings
                .get(id)
                .map(|v| json!({ "_id": id, "value": v }))
        })
        .collect();
    let total = all.len();
    let (offset, count) = pagination(&st, &q);
    let page: Vec<Value> = all
        .into_iter()
        .skip(offset)
        .take(count.unwrap_or(usize::MAX))
        .collect();
    let n = page.len();
    success(json!({ "settings": page, "count": n, "offset": offset, "total": total }))
}

/// `GET /api/v1/settings/:_id`: needs `view-privileged-setting` (settings.ts), so a bot should
/// read public settings through `settings.public`.
async fn setting(AxState(shared): St, headers: HeaderMap, Path(id): Path<String>) -> Reply {
    let st = shared.lock();
    let Some(uid) = authenticate(&st, &headers) else {
        return unauthorized();
    };
    if !st.has_permission(&uid, "view-privileged-setting") {
        return forbidden_permissions();
    }
    match st.settings.get(&id) {
        Some(value) => success(json!({ "_id": id, "value": value })),
        None => object_failure(json!({})),
    }
}

/// `GET /api/v1/permissions.listAll`: every permission with the roles holding it, for any
/// logged-in user (`permissions.ts`); `{update: [{_id, roles, _updatedAt}], remove: []}`.
async fn permissions_list_all(AxState(shared): St, headers: HeaderMap) -> Reply {
    let st = shared.lock();
    if authenticate(&st, &headers).is_none() {
        return unauthorized();
    }
    let update: Vec<Value> = st
        .perms
        .iter()
        .map(|(id, roles)| {
            json!({ "_id": id, "roles": roles, "_updatedAt": date(now_ms(), DateForm::Iso) })
        })
        .collect();
    success(json!({ "update": update, "remove": [] }))
}

/// The author record of a Livechat visitor's messages.
pub(super) fn visitor_author(st: &State, token: &str) -> Option<Author> {
    st.visitor_by_token(token).map(|v| Author {
        id: v.id.clone(),
        username: v.username.clone(),
        name: v.name.clone(),
    })
}
