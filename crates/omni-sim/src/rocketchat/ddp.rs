//! The realtime API: one DDP session per WebSocket at `/websocket`. It follows the ddp-streamer
//! (`RC:ee/apps/ddp-streamer/src/Client.ts`) and Meteor's `livedata_server.js`: `server_id` on
//! open, `connect` first or close 1002, undecodable frames close 1007, an idle ping after
//! `ping_idle` of client silence and close 4000 "TIMEOUT" after as long again. Only `login` is a
//! method here; every other method is Meteor's 404, because the gateway must not use them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::state::{Conn, State, Sub};
use super::wire::{DateForm, date, meteor_error, random_id};

/// Frames queued for one connection before it counts as a slow consumer.
const QUEUE: usize = 1024;
/// DDP versions the server speaks (`SUPPORTED_DDP_VERSIONS`).
const VERSIONS: [&str; 3] = ["1", "pre2", "pre1"];
/// Session tokens live `Accounts_LoginExpiration` days (default 90).
const TOKEN_LIFETIME_MS: i64 = 90 * 24 * 3600 * 1000;

/// What the connection loop does after a client frame.
enum Next {
    Continue,
    Close(u16, &'static str),
}

/// Serves one WebSocket until either side ends it.
pub(super) async fn serve_socket(shared: Arc<Shared>, socket: WebSocket) {
    let (tx, mut rx) = mpsc::channel::<String>(QUEUE);
    let kill = shared.cancel.child_token();
    let slow = Arc::new(AtomicBool::new(false));
    let conn_id = shared.mutate(|st| {
        st.next_conn += 1;
        st.counters.ws_connections += 1;
        let id = st.next_conn;
        st.conns.insert(
            id,
            Conn {
                tx,
                kill: kill.clone(),
                slow: slow.clone(),
                user: None,
                subs: Default::default(),
            },
        );
        id
    });
    run(&shared, conn_id, socket, &mut rx, &kill, &slow).await;
    shared.mutate(|st| st.conns.remove(&conn_id));
}

async fn run(
    shared: &Shared,
    conn_id: u64,
    socket: WebSocket,
    rx: &mut mpsc::Receiver<String>,
    kill: &CancellationToken,
    slow: &AtomicBool,
) {
    let (mut sink, mut stream) = socket.split();
    let idle = shared.opts.ping_idle;
    let mut last_inbound = Instant::now();
    let mut ping_sent_at: Option<Instant> = None;
    let mut connected = false;
    if sink
        .send(text(json!({ "server_id": "0" }).to_string()))
        .await
        .is_err()
    {
        return;
    }
    loop {
        let deadline = ping_sent_at.unwrap_or(last_inbound) + idle;
        let next = tokio::select! {
            () = kill.cancelled() => {
                if slow.load(Ordering::SeqCst) {
                    Next::Close(1013, "SLOW_CONSUMER")
                } else {
                    // Fault injection or shutdown: vanish without a close frame.
                    return;
                }
            }
            () = sleep_until(deadline) => {
                if ping_sent_at.is_some() {
                    Next::Close(4000, "TIMEOUT")
                } else {
                    ping_sent_at = Some(Instant::now());
                    shared.lock().counters.pings_sent += 1;
                    if sink.send(text(json!({ "msg": "ping" }).to_string())).await.is_err() {
                        return;
                    }
                    Next::Continue
                }
            }
            out = rx.recv() => match out {
                Some(frame) => {
                    if sink.send(text(frame)).await.is_err() {
                        return;
                    }
                    Next::Continue
                }
                None => return,
            },
            frame = stream.next() => match frame {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => Next::Continue,
                Some(Ok(frame)) => {
                    let blackholed = shared.lock().faults.blackhole_until.is_some_and(|t| Instant::now() < t);
                    if blackholed {
                        Next::Continue
                    } else {
                        last_inbound = Instant::now();
                        ping_sent_at = None;
                        let (replies, next) = match frame {
                            Message::Text(t) => handle_text(shared, conn_id, &mut connected, t.as_str()),
                            _ => (Vec::new(), Next::Close(1007, "INVALID_FRAME")),
                        };
                        for reply in replies {
                            if sink.send(text(reply)).await.is_err() {
                                return;
                            }
                        }
                        next
                    }
                }
            },
        };
        if let Next::Close(code, reason) = next {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
            return;
        }
    }
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// Handles one client text frame; returns the frames to send back and what to do next.
fn handle_text(
    shared: &Shared,
    conn_id: u64,
    connected: &mut bool,
    raw: &str,
) -> (Vec<String>, Next) {
    let Ok(frame) = serde_json::from_str::<Value>(raw) else {
        shared.lock().counters.protocol_errors += 1;
        return (Vec::new(), Next::Close(1007, "INVALID_FRAME"));
    };
    let kind = frame.get("msg").and_then(Value::as_str).unwrap_or_default();
    if !*connected {
        if kind != "connect" {
            shared.lock().counters.protocol_errors += 1;
            return (Vec::new(), Next::Close(1002, "CLOSE_PROTOCOL_ERROR"));
        }
        let version = frame
            .get("version")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !VERSIONS.contains(&version) {
            let failed = json!({ "msg": "failed", "version": "1" }).to_string();
            return (vec![failed], Next::Close(1000, "UNSUPPORTED_VERSION"));
        }
        *connected = true;
        let session = random_id();
        return (
            vec![json!({ "msg": "connected", "session": session }).to_string()],
            Next::Continue,
        );
    }
    let id = frame.get("id").cloned();
    match kind {
        "ping" => {
            let mut pong = json!({ "msg": "pong" });
            if let Some(id) = id {
                pong["id"] = id;
            }
            (vec![pong.to_string()], Next::Continue)
        }
        "pong" => {
            shared.lock().counters.pongs_received += 1;
            (Vec::new(), Next::Continue)
        }
        "method" => (method(shared, conn_id, &frame), Next::Continue),
        "sub" => (vec![subscribe(shared, conn_id, &frame)], Next::Continue),
        "unsub" => {
            let Some(id) = id.as_ref().and_then(Value::as_str) else {
                return (bad_request(shared, &frame), Next::Continue);
            };
            shared.mutate(|st| {
                if let Some(conn) = st.conns.get_mut(&conn_id) {
                    conn.subs.remove(id);
                }
            });
            (
                vec![json!({ "msg": "nosub", "id": id }).to_string()],
                Next::Continue,
            )
        }
        _ => (bad_request(shared, &frame), Next::Continue),
    }
}

/// Meteor's answer to a frame it cannot process (`livedata_server.js` `sendError`).
fn bad_request(shared: &Shared, frame: &Value) -> Vec<String> {
    shared.lock().counters.protocol_errors += 1;
    vec![json!({ "msg": "error", "reason": "Bad request", "offendingMessage": frame }).to_string()]
}

fn method(shared: &Shared, conn_id: u64, frame: &Value) -> Vec<String> {
    let (Some(id), Some(name)) = (
        frame.get("id").and_then(Value::as_str),
        frame.get("method").and_then(Value::as_str),
    ) else {
        return bad_request(shared, frame);
    };
    *shared
        .lock()
        .counters
        .method_calls_by_name
        .entry(name.to_owned())
        .or_default() += 1;
    if name != "login" {
        let error = meteor_error(
            json!(404),
            Some(&format!("Method '{name}' not found")),
            None,
        );
        return vec![json!({ "msg": "result", "id": id, "error": error }).to_string()];
    }
    let params = frame
        .get("params")
        .and_then(|p| p.get(0))
        .cloned()
        .unwrap_or(Value::Null);
    let outcome = shared.mutate(|st| login(st, conn_id, &params));
    let result = match outcome {
        Ok(result) => json!({ "msg": "result", "id": id, "result": result }),
        Err(error) => json!({ "msg": "result", "id": id, "error": error }),
    };
    vec![
        result.to_string(),
        json!({ "msg": "updated", "methods": [id] }).to_string(),
    ]
}

fn forbidden(reason: &str) -> Value {
    meteor_error(json!(403), Some(reason), None)
}

/// The `login` method: resume tokens (session or personal access token), password digests, and
/// the `totp` wrapper. A plain-text password string is refused with Meteor's check error so the
/// gateway can never send one (the real server would accept it).
fn login(st: &mut State, conn_id: u64, params: &Value) -> Result<Value, Value> {
    if let Some(resume) = params.get("resume") {
        let token = resume.as_str().ok_or_else(match_failed)?;
        let (uid, pat) = st
            .user_by_resume(token)
            .map(|(u, t)| (u.id.clone(), t.pat))
            .ok_or_else(|| {
                forbidden("You've been logged out by the server. Please log in again.")
            })?;
        st.counters.logins_resume += 1;
        if let Some(conn) = st.conns.get_mut(&conn_id) {
            conn.user = Some(uid.clone());
        }
        // A PAT has no `when`, so Meteor computes an invalid expiry date (EJSON `$date: null`).
        let expires = if pat {
            json!({ "$date": null })
        } else {
            let when = st
                .user_by_resume(token)
                .map(|(_, t)| t.when_ms)
                .unwrap_or_default();
            date(when + TOKEN_LIFETIME_MS, DateForm::Ejson)
        };
        return Ok(json!({ "id": uid, "token": token, "tokenExpires": expires, "type": "resume" }));
    }
    let (inner, totp_code) = match params.get("totp") {
        Some(t) => (
            t.get("login").cloned().unwrap_or(Value::Null),
            Some(t.get("code").cloned()),
        ),
        None => (params.clone(), None),
    };
    let (Some(selector), Some(password)) = (inner.get("user"), inner.get("password")) else {
        return Err(meteor_error(
            json!(400),
            Some("Unrecognized options for login request"),
            None,
        ));
    };
    let digest = password
        .get("digest")
        .and_then(Value::as_str)
        .filter(|_| password.get("algorithm").and_then(Value::as_str) == Some("sha-256"))
        .ok_or_else(match_failed)?;
    let username = selector.get("username").and_then(Value::as_str);
    let user = username
        .and_then(|name| st.user_by_name(name))
        .ok_or_else(|| forbidden("User not found"))?;
    if !bool::from(
        user.password_digest
            .as_bytes()
            .ct_eq(digest.to_ascii_lowercase().as_bytes()),
    ) {
        return Err(forbidden("Incorrect password"));
    }
    if user.totp {
        return Err(match totp_code {
            None => meteor_error(
                json!("totp-required"),
                Some("TOTP Required"),
                Some(
                    json!({ "method": "totp", "codeGenerated": false, "availableMethods": ["totp"] }),
                ),
            ),
            // The simulator holds no TOTP secret, so no code can be right.
            Some(_) => meteor_error(json!("totp-invalid"), Some("TOTP Invalid"), None),
        });
    }
    let uid = user.id.clone();
    let (token, when) = st
        .issue_token(&uid, false)
        .ok_or_else(|| forbidden("User not found"))?;
    st.counters.logins_password += 1;
    if let Some(conn) = st.conns.get_mut(&conn_id) {
        conn.user = Some(uid.clone());
    }
    Ok(json!({
        "id": uid, "token": token,
        "tokenExpires": date(when + TOKEN_LIFETIME_MS, DateForm::Ejson), "type": "password",
    }))
}

/// Meteor's `check()` failure as sent to a client.
fn match_failed() -> Value {
    meteor_error(json!(400), Some("Match failed"), None)
}

/// Handles `sub`; returns `ready` or `nosub` (with the error object when refused).
fn subscribe(shared: &Shared, conn_id: u64, frame: &Value) -> String {
    let id = frame
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = frame
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let params = frame
        .get("params")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let nosub = |error: Value| json!({ "msg": "nosub", "id": id, "error": error }).to_string();
    let stream = match name {
        "stream-room-messages" | "stream-notify-user" | "stream-notify-room" => name,
        other => {
            return nosub(meteor_error(
                json!(404),
                Some(&format!("Subscription '{other}' not found")),
                None,
            ));
        }
    };
    let Some(event) = params.first().and_then(Value::as_str) else {
        return nosub(match_failed());
    };
    // `check(options, Match.OneOf(Boolean, {useCollection: Boolean, args: Array}))`.
    let args = match params.get(1) {
        None | Some(Value::Bool(_)) => Vec::new(),
        Some(Value::Object(o))
            if o.len() == 2 && o.get("useCollection").is_some_and(Value::is_boolean) =>
        {
            match o.get("args") {
                Some(Value::Array(a)) => a.clone(),
                _ => return nosub(match_failed()),
            }
        }
        Some(_) => return nosub(match_failed()),
    };
    if event.is_empty() {
        return nosub(meteor_error(json!("invalid-event-name"), None, None));
    }
    let granted = shared.mutate(|st| {
        let user = st.conns.get(&conn_id).and_then(|c| c.user.clone());
        let sub = match stream {
            "stream-room-messages" if event == "__my_messages__" => Some(Sub::MyMessages),
            "stream-room-messages" => room_read_allowed(st, user.as_deref(), event, &args)
                .then(|| Sub::Room(event.to_owned())),
            "stream-notify-room" => {
                let sub = if let Some(rid) = event.strip_suffix("/user-activity") {
                    Some((rid, Sub::RoomActivity(rid.to_owned())))
                } else {
                    event
                        .strip_suffix("/deleteMessage")
                        .map(|rid| (rid, Sub::RoomDeletions(rid.to_owned())))
                };
                sub.filter(|(rid, _)| notify_room_read_allowed(st, user.as_deref(), rid, &args))
                    .map(|(_, sub)| sub)
            }
            _ => user
                .filter(|uid| event.starts_with(&format!("{uid}/")))
                .map(|_| Sub::NotifyUser(event.to_owned())),
        };
        if let (Some(sub), Some(conn)) = (sub.clone(), st.conns.get_mut(&conn_id)) {
            conn.subs.insert(id.clone(), sub);
        }
        sub.is_some()
    });
    if granted {
        json!({ "msg": "ready", "subs": [id] }).to_string()
    } else {
        nosub(meteor_error(json!("not-allowed"), None, None))
    }
}

/// The `stream-notify-room` read rule (`notifications.module.ts`, `streamRoom.allowRead`; the
/// `user-activity` and `deleteMessage` events are modelled): with `args[0].token`, the room must
/// be a Livechat room of that visitor (`t == 'l'` and `v.token`; open or not); without one, a
/// user who can access the room.
fn notify_room_read_allowed(st: &State, user: Option<&str>, rid: &str, args: &[Value]) -> bool {
    let Some(room) = st.rooms.get(rid) else {
        return false;
    };
    match args
        .first()
        .and_then(|a| a.get("token"))
        .and_then(Value::as_str)
    {
        Some(token) => room.live.as_ref().is_some_and(|l| l.visitor_token == token),
        None => user.is_some_and(|uid| st.can_access(uid, room)),
    }
}

/// The `stream-room-messages` read rule for a room id: a user who can access the room, or the
/// visitor of an **open** Livechat room presenting its token in `args[0].visitorToken`
/// (`roomAccessValidator.compatibility.ts`).
fn room_read_allowed(st: &State, user: Option<&str>, rid: &str, args: &[Value]) -> bool {
    let Some(room) = st.rooms.get(rid) else {
        return false;
    };
    if user.is_some_and(|uid| st.can_access(uid, room)) {
        return true;
    }
    let token = args
        .first()
        .and_then(|a| a.get("visitorToken"))
        .and_then(Value::as_str);
    match (&room.live, token) {
        (Some(live), Some(token)) => live.open && live.visitor_token == token,
        _ => false,
    }
}
