//! Strictness tests for the Rocket.Chat simulator: they speak raw DDP (tokio-tungstenite) and raw
//! HTTP (reqwest) to it, on loopback, and check that it rejects what the real server rejects.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use omni_sim::ids::RoomId;
use omni_sim::rocketchat::{RocketChatSim, ServerVersion, SimOptions};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const WAIT: Duration = Duration::from_secs(3);

async fn start(ping_idle: Duration, rest_rate_limiter: bool) -> RocketChatSim {
    RocketChatSim::start(SimOptions {
        ping_idle,
        rest_rate_limiter,
        ..SimOptions::default()
    })
    .await
    .expect("simulator starts")
}

async fn sim() -> RocketChatSim {
    start(Duration::from_secs(30), false).await
}

fn digest(password: &str) -> String {
    hex::encode(Sha256::digest(password.as_bytes()))
}

fn http() -> reqwest::Client {
    omni_gateway::tls::install_crypto_provider();
    reqwest::Client::new()
}

/// One raw DDP connection.
struct Ddp {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ddp {
    /// Opens the socket and reads the `server_id` greeting.
    async fn open(sim: &RocketChatSim) -> Ddp {
        let mut url = sim.url();
        url.set_scheme("ws").expect("ws scheme");
        url.set_path("/websocket");
        let (ws, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("ws connects");
        let mut ddp = Ddp { ws };
        assert_eq!(ddp.recv().await, json!({ "server_id": "0" }));
        ddp
    }

    /// Opens, connects and logs in with a password digest.
    async fn logged_in(sim: &RocketChatSim, user: &str, password: &str) -> Ddp {
        let mut ddp = Ddp::open(sim).await;
        ddp.connect().await;
        let result = ddp.call("login", json!([{ "user": { "username": user }, "password": { "digest": digest(password), "algorithm": "sha-256" } }])).await;
        assert!(result.get("result").is_some(), "login failed: {result}");
        ddp
    }

    async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }

    /// The next DDP frame (JSON text), skipping server pings unless asked for.
    async fn recv(&mut self) -> Value {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("frame in time");
            match frame {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str()).expect("json frame");
                }
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    async fn connect(&mut self) {
        self.send(json!({ "msg": "connect", "version": "1", "support": ["1", "pre2", "pre1"] }))
            .await;
        let connected = self.recv().await;
        assert_eq!(connected["msg"], "connected");
        assert!(connected["session"].is_string());
    }

    /// Calls a method and returns its `result` frame; an implemented method is followed by
    /// `updated`, which is checked and consumed.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.send(json!({ "msg": "method", "method": method, "id": "m1", "params": params }))
            .await;
        let result = self.recv().await;
        assert_eq!(result["msg"], "result", "{result}");
        if result["error"]["error"] != 404 {
            assert_eq!(
                self.recv().await,
                json!({ "msg": "updated", "methods": ["m1"] })
            );
        }
        result
    }

    async fn sub(&mut self, id: &str, name: &str, params: Value) -> Value {
        self.send(json!({ "msg": "sub", "id": id, "name": name, "params": params }))
            .await;
        self.recv().await
    }

    /// Reads until the socket closes; returns the close code if a close frame came.
    async fn close_code(&mut self, within: Duration) -> Option<u16> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("socket closes in time")
            {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    }
}

// ---- DDP -------------------------------------------------------------------------------------

#[tokio::test]
async fn first_frame_must_be_connect_and_json() {
    let sim = sim().await;
    let cases = [
        (
            r#"{"msg":"method","method":"login","id":"1","params":[]}"#,
            1002,
        ),
        ("this is not json", 1007),
    ];
    for (frame, code) in cases {
        let mut ddp = Ddp::open(&sim).await;
        ddp.ws.send(Message::text(frame)).await.expect("send");
        assert_eq!(ddp.close_code(WAIT).await, Some(code), "{frame}");
    }
    let mut ddp = Ddp::open(&sim).await;
    ddp.send(json!({ "msg": "connect", "version": "2" })).await;
    assert_eq!(ddp.recv().await, json!({ "msg": "failed", "version": "1" }));
    assert!(sim.stats().protocol_errors >= 2);
}

#[tokio::test]
async fn client_pings_are_answered_with_their_id() {
    let sim = sim().await;
    let mut ddp = Ddp::open(&sim).await;
    ddp.connect().await;
    ddp.send(json!({ "msg": "ping", "id": "p-17" })).await;
    assert_eq!(ddp.recv().await, json!({ "msg": "pong", "id": "p-17" }));
}

#[tokio::test]
async fn unanswered_idle_ping_closes_4000() {
    let sim = start(Duration::from_millis(200), false).await;
    let mut ddp = Ddp::open(&sim).await;
    ddp.connect().await;
    assert_eq!(ddp.recv().await, json!({ "msg": "ping" }));
    assert_eq!(ddp.close_code(Duration::from_secs(2)).await, Some(4000));
    assert_eq!(sim.stats().pings_sent, 1);
}

#[tokio::test]
async fn answered_pings_keep_the_socket_until_frames_are_blackholed() {
    let sim = start(Duration::from_millis(150), false).await;
    let mut ddp = Ddp::open(&sim).await;
    ddp.connect().await;
    for _ in 0..3 {
        assert_eq!(ddp.recv().await, json!({ "msg": "ping" }));
        ddp.send(json!({ "msg": "pong" })).await;
    }
    // A client ping answered means every earlier frame was processed.
    ddp.send(json!({ "msg": "ping", "id": "sync" })).await;
    assert_eq!(ddp.recv().await, json!({ "msg": "pong", "id": "sync" }));
    assert_eq!(sim.stats().pongs_received, 3);
    sim.blackhole_client_frames(Duration::from_secs(5));
    loop {
        match ddp.ws.next().await {
            Some(Ok(Message::Text(t))) if t.as_str().contains("ping") => {
                ddp.send(json!({ "msg": "pong" })).await
            }
            Some(Ok(Message::Close(frame))) => {
                assert_eq!(frame.map(|f| u16::from(f.code)), Some(4000));
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn login_is_strict() {
    let sim = sim().await;
    sim.add_user("bot", "secret", &["bot"]);
    sim.add_user("guarded", "secret", &["user"]);
    sim.enable_totp("guarded");
    let pat = sim.personal_access_token("bot");
    let pw = |user: &str, password: &str| json!({ "user": { "username": user }, "password": { "digest": digest(password), "algorithm": "sha-256" } });
    // (params, expected error code or null, expected reason or login type)
    let cases = [
        (pw("bot", "secret"), Value::Null, "password"),
        (json!({ "resume": pat }), Value::Null, "resume"),
        (pw("bot", "wrong"), json!(403), "Incorrect password"),
        (pw("nobody", "secret"), json!(403), "User not found"),
        (
            json!({ "user": { "username": "bot" }, "password": "secret" }),
            json!(400),
            "Match failed",
        ),
        (
            json!({ "resume": "not-a-token" }),
            json!(403),
            "You've been logged out by the server. Please log in again.",
        ),
        (
            pw("guarded", "secret"),
            json!("totp-required"),
            "TOTP Required",
        ),
    ];
    for (params, error, text) in cases {
        let mut ddp = Ddp::open(&sim).await;
        ddp.connect().await;
        let frame = ddp.call("login", json!([params])).await;
        if error.is_null() {
            assert_eq!(frame["result"]["type"], text, "{frame}");
            assert!(frame["result"]["id"].is_string() && frame["result"]["token"].is_string());
        } else {
            assert_eq!(frame["error"]["error"], error, "{frame}");
            assert_eq!(frame["error"]["reason"], text, "{frame}");
            assert_eq!(frame["error"]["errorType"], "Meteor.Error");
        }
    }
    let stats = sim.stats();
    assert_eq!((stats.logins_password, stats.logins_resume), (1, 1));
}

#[tokio::test]
async fn other_methods_are_not_found() {
    let sim = sim().await;
    sim.add_user("bot", "secret", &["bot"]);
    let mut ddp = Ddp::logged_in(&sim, "bot", "secret").await;
    let frame = ddp
        .call("sendMessage", json!([{ "rid": "x", "msg": "hi" }]))
        .await;
    assert_eq!(frame["error"]["error"], 404);
    assert_eq!(
        frame["error"]["message"],
        "Method 'sendMessage' not found [404]"
    );
    assert_eq!(
        sim.stats().method_calls_by_name.get("sendMessage"),
        Some(&1)
    );
}

#[tokio::test]
async fn my_messages_carry_room_participation() {
    let sim = sim().await;
    sim.add_user("bot", "secret", &["bot"]);
    sim.add_user("alice", "pw", &["user"]);
    let dm = sim.direct_room("alice", "bot");
    let lobby = sim.channel("lobby", &["alice"]);
    let mut ddp = Ddp::logged_in(&sim, "bot", "secret").await;
    let ready = ddp
        .sub(
            "s1",
            "stream-room-messages",
            json!(["__my_messages__", false]),
        )
        .await;
    assert_eq!(ready, json!({ "msg": "ready", "subs": ["s1"] }));
    // (room, text, roomParticipant, roomType)
    let cases = [
        (&dm, "/facebook help", true, "d"),
        (&lobby, "hello all", false, "c"),
    ];
    for (rid, text, participant, kind) in cases {
        sim.post("alice", rid, text);
        let event = ddp.recv().await;
        assert_eq!(event["msg"], "changed");
        assert_eq!(event["collection"], "stream-room-messages");
        let fields = &event["fields"];
        assert_eq!(fields["eventName"], "__my_messages__");
        assert_eq!(fields["args"][0]["msg"], text);
        assert_eq!(fields["args"][0]["rid"], rid.as_str());
        assert!(fields["args"][0]["ts"]["$date"].is_i64());
        assert_eq!(fields["args"][1]["roomParticipant"], participant);
        assert_eq!(fields["args"][1]["roomType"], kind);
    }
    let uid = sim.add_user("bot", "secret", &["bot"]);
    let notify = ddp
        .sub(
            "s2",
            "stream-notify-user",
            json!([format!("{uid}/subscriptions-changed"), false]),
        )
        .await;
    assert_eq!(notify["msg"], "ready");
    let foreign = ddp
        .sub(
            "s3",
            "stream-notify-user",
            json!(["someone-else/subscriptions-changed", false]),
        )
        .await;
    assert_eq!(foreign["error"]["error"], "not-allowed");
    let unknown = ddp
        .sub("s4", "meteor_autoupdate_clientVersions", json!([]))
        .await;
    assert_eq!(unknown["error"]["error"], 404);
    ddp.send(json!({ "msg": "unsub", "id": "s1" })).await;
    assert_eq!(ddp.recv().await, json!({ "msg": "nosub", "id": "s1" }));
}

// ---- Livechat -------------------------------------------------------------------------------

/// A simulator with an online agent in department "Sales" and a bot.
async fn omnichannel() -> (RocketChatSim, reqwest::Client, String) {
    let sim = sim().await;
    sim.add_user("bot", "secret", &["bot"]);
    sim.add_user("agent1", "pw", &["user", "livechat-agent"]);
    sim.add_department("Sales", &["agent1"]);
    sim.set_agent_online("agent1", true);
    let base = sim.url().as_str().trim_end_matches('/').to_owned();
    (sim, http(), base)
}

async fn body(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn open_room(client: &reqwest::Client, base: &str, token: &str) -> String {
    let (status, visitor) = body(client.post(format!("{base}/api/v1/livechat/visitor"))
        .json(&json!({ "visitor": { "token": token, "name": "John Doe", "department": "Sales" } }))
        .send().await.expect("visitor")).await;
    assert_eq!(status, 200, "{visitor}");
    assert_eq!(visitor["visitor"]["token"], token);
    let (status, room) = body(
        client
            .get(format!("{base}/api/v1/livechat/room?token={token}"))
            .send()
            .await
            .expect("room"),
    )
    .await;
    assert_eq!(status, 200, "{room}");
    assert_eq!(room["newRoom"], true);
    assert_eq!(room["room"]["servedBy"]["username"], "agent1");
    room["room"]["_id"].as_str().expect("rid").to_owned()
}

#[tokio::test]
async fn visitor_stream_needs_the_room_token_and_sees_the_close() {
    let (sim, client, base) = omnichannel().await;
    let rid = open_room(&client, &base, "fb-1").await;
    let mut ddp = Ddp::open(&sim).await;
    ddp.connect().await;
    let stream =
        |token: &str| json!([rid, { "useCollection": false, "args": [{ "visitorToken": token }] }]);
    let refused = ddp
        .sub("v0", "stream-room-messages", stream("fb-other"))
        .await;
    assert_eq!(refused["msg"], "nosub");
    assert_eq!(refused["error"]["error"], "not-allowed");
    assert_eq!(
        ddp.sub("v1", "stream-room-messages", stream("fb-1")).await["msg"],
        "ready"
    );
    let rid_id = RoomId::new(rid.clone());
    sim.agent_reply("agent1", &rid_id, "How can I help?");
    let event = ddp.recv().await;
    assert_eq!(event["fields"]["eventName"], rid.as_str());
    assert_eq!(event["fields"]["args"][0]["msg"], "How can I help?");
    assert!(event["fields"]["args"][0].get("token").is_none());
    assert_eq!(event["fields"]["args"].as_array().map(Vec::len), Some(1));
    sim.close_room(&rid_id, "agent1");
    let event = ddp.recv().await;
    assert_eq!(event["fields"]["args"][0]["t"], "livechat-close");
    // Closed: a new subscription is refused, and the visitor's REST message is room-closed.
    assert_eq!(
        ddp.sub("v2", "stream-room-messages", stream("fb-1")).await["error"]["error"],
        "not-allowed"
    );
    let (status, reply) = body(
        client
            .post(format!("{base}/api/v1/livechat/message"))
            .json(&json!({ "token": "fb-1", "rid": rid, "msg": "hello?" }))
            .send()
            .await
            .expect("message"),
    )
    .await;
    assert_eq!(
        (status, reply),
        (400, json!({ "success": false, "error": "room-closed" }))
    );
}

#[tokio::test]
async fn typing_stream_needs_the_visitor_token_and_carries_the_activity() {
    let (sim, client, base) = omnichannel().await;
    let rid = open_room(&client, &base, "fb-3").await;
    let mut ddp = Ddp::open(&sim).await;
    ddp.connect().await;
    let event = format!("{rid}/user-activity");
    let stream =
        |token: &str| json!([event, { "useCollection": false, "args": [{ "token": token }] }]);
    let refused = ddp
        .sub("t0", "stream-notify-room", stream("fb-other"))
        .await;
    assert_eq!(refused["error"]["error"], "not-allowed");
    assert_eq!(
        ddp.sub("t1", "stream-notify-room", stream("fb-3")).await["msg"],
        "ready"
    );
    let rid_id = RoomId::new(rid.clone());
    sim.agent_typing("agent1", &rid_id, true);
    let typing = ddp.recv().await;
    assert_eq!(typing["collection"], "stream-notify-room");
    assert_eq!(typing["fields"]["eventName"], event.as_str());
    assert_eq!(
        typing["fields"]["args"],
        json!(["agent1", ["user-typing"], {}])
    );
    sim.agent_typing("agent1", &rid_id, false);
    assert_eq!(
        ddp.recv().await["fields"]["args"],
        json!(["agent1", [], {}])
    );
}

#[tokio::test]
async fn deletions_show_as_the_settings_say() {
    let (sim, client, base) = omnichannel().await;
    let rid = open_room(&client, &base, "fb-4").await;
    let rid_id = RoomId::new(rid.clone());
    let mut ddp = Ddp::open(&sim).await;
    ddp.connect().await;
    let deletions = format!("{rid}/deleteMessage");
    let notify =
        |token: &str| json!([deletions, { "useCollection": false, "args": [{ "token": token }] }]);
    assert_eq!(
        ddp.sub("d0", "stream-notify-room", notify("fb-other"))
            .await["error"]["error"],
        "not-allowed"
    );
    assert_eq!(
        ddp.sub("d1", "stream-notify-room", notify("fb-4")).await["msg"],
        "ready"
    );
    let room = json!([rid, { "useCollection": false, "args": [{ "visitorToken": "fb-4" }] }]);
    assert_eq!(
        ddp.sub("m1", "stream-room-messages", room).await["msg"],
        "ready"
    );

    // Default settings: removed, and only `<rid>/deleteMessage` says so.
    let first = sim.agent_reply("agent1", &rid_id, "At 8.");
    assert_eq!(ddp.recv().await["fields"]["args"][0]["msg"], "At 8.");
    sim.react("agent1", &first, ":thumbsup:", true);
    let reacted = ddp.recv().await;
    assert_eq!(
        reacted["fields"]["args"][0]["reactions"],
        json!({":thumbsup:": {"usernames": ["agent1"]}})
    );
    sim.delete("agent1", &first);
    let deleted = ddp.recv().await;
    assert_eq!(deleted["collection"], "stream-notify-room");
    assert_eq!(deleted["fields"]["eventName"], deletions.as_str());
    assert_eq!(
        deleted["fields"]["args"],
        json!([{ "_id": first.as_str() }])
    );
    assert!(sim.messages(&rid_id).iter().all(|m| m.id != first));

    // Message_ShowDeletedStatus: kept as `t: "rm"`, emptied, and re-emitted on the room stream.
    sim.set_setting("Message_ShowDeletedStatus", json!(true));
    let second = sim.agent_reply("agent1", &rid_id, "At 9.");
    assert_eq!(ddp.recv().await["fields"]["args"][0]["msg"], "At 9.");
    sim.delete("agent1", &second);
    let removed = ddp.recv().await;
    assert_eq!(removed["collection"], "stream-room-messages");
    let doc = &removed["fields"]["args"][0];
    assert_eq!(
        (doc["_id"].as_str(), doc["t"].as_str(), doc["msg"].as_str()),
        (Some(second.as_str()), Some("rm"), Some(""))
    );
    assert_eq!(doc["editedBy"]["username"], "agent1");
}

#[tokio::test]
async fn livechat_routes_follow_the_real_errors() {
    let (sim, client, base) = omnichannel().await;
    let rid = open_room(&client, &base, "fb-2").await;
    let get = |path: String| client.get(format!("{base}{path}")).send();
    let post = |path: &str, b: Value| client.post(format!("{base}{path}")).json(&b).send();

    let (status, sent) = body(
        post(
            "/api/v1/livechat/message",
            json!({ "token": "fb-2", "rid": rid, "msg": "hi", "_id": "mid.1" }),
        )
        .await
        .expect("send"),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["message"]["_id"], "mid.1");
    assert_eq!(sent["message"]["token"], "fb-2");
    let messages = sim.messages(&RoomId::new(rid.clone()));
    assert_eq!(messages.len(), 1);

    // (response, expected status, expected body)
    let cases = [
        (
            post(
                "/api/v1/livechat/message",
                json!({ "token": "fb-2", "rid": rid, "msg": "hi", "_id": "mid.1" }),
            )
            .await,
            400,
            json!({ "success": false }),
        ),
        (
            post(
                "/api/v1/livechat/message",
                json!({ "token": "nobody", "rid": rid, "msg": "x" }),
            )
            .await,
            400,
            json!({ "success": false, "error": "invalid-token" }),
        ),
        (
            post(
                "/api/v1/livechat/message",
                json!({ "token": "fb-2", "rid": "nope", "msg": "x" }),
            )
            .await,
            400,
            json!({ "success": false, "error": "invalid-room" }),
        ),
        (
            get("/api/v1/livechat/room?token=fb-2&department=Sales".into()).await,
            400,
            json!({ "success": false, "error": "Match error: Unknown key in field department" }),
        ),
        (
            get("/api/v1/livechat/visitor/nobody".into()).await,
            400,
            json!({ "success": false, "error": "[invalid-token]", "errorType": "invalid-token" }),
        ),
        (
            post(
                "/api/v1/livechat/visitor",
                json!({ "visitor": { "token": "fb-3", "department": "Nope" } }),
            )
            .await,
            400,
            json!({ "success": false, "error": "The provided department is invalid [error-invalid-department]", "errorType": "error-invalid-department" }),
        ),
    ];
    for (response, want_status, want) in cases {
        let response = response.expect("request");
        assert_eq!(body(response).await, (want_status, want));
    }
    let (status, fetched) = body(
        get(format!(
            "/api/v1/livechat/message/mid.1?token=fb-2&rid={rid}"
        ))
        .await
        .expect("get"),
    )
    .await;
    assert_eq!(
        (status, fetched["message"]["msg"].clone()),
        (200, json!("hi"))
    );
    let (_, history) = body(
        get(format!(
            "/api/v1/livechat/messages.history/{rid}?token=fb-2"
        ))
        .await
        .expect("history"),
    )
    .await;
    assert_eq!(history["messages"][0]["_id"], "mid.1");
    let (_, config) = body(get("/api/v1/livechat/config".into()).await.expect("config")).await;
    assert_eq!(config["config"]["online"], true);
    assert_eq!(config["config"]["departments"][0]["name"], "Sales");
    let (status, closed) = body(
        post(
            "/api/v1/livechat/room.close",
            json!({ "rid": rid, "token": "fb-2" }),
        )
        .await
        .expect("close"),
    )
    .await;
    assert_eq!(
        (status, closed["comment"].clone()),
        (200, json!("Closed by visitor"))
    );
}

#[tokio::test]
async fn no_agent_online_is_400_unless_accepted() {
    let (sim, client, base) = omnichannel().await;
    sim.set_agent_online("agent1", false);
    client
        .post(format!("{base}/api/v1/livechat/visitor"))
        .json(&json!({ "visitor": { "token": "fb-9", "department": "Sales" } }))
        .send()
        .await
        .expect("visitor");
    let room = || {
        client
            .get(format!("{base}/api/v1/livechat/room?token=fb-9"))
            .send()
    };
    assert_eq!(
        body(room().await.expect("room")).await,
        (
            400,
            json!({
                "success": false, "error": "Sorry, no online agents [no-agent-online]", "errorType": "no-agent-online"
            })
        )
    );
    sim.set_setting("Livechat_accept_chats_with_no_agents", json!(true));
    let (status, queued) = body(room().await.expect("room")).await;
    assert_eq!(status, 200);
    assert!(queued["room"].get("servedBy").is_none(), "{queued}");
    sim.set_agent_online("agent1", true);
    assert_eq!(sim.livechat_rooms()[0].served_by.as_deref(), Some("agent1"));
}

#[tokio::test]
async fn uploads_and_protected_downloads() {
    let (sim, client, base) = omnichannel().await;
    let rid = open_room(&client, &base, "fb-4").await;
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"PNGDATA".to_vec())
            .file_name("photo.png")
            .mime_str("image/png")
            .expect("mime"),
    );
    let upload = client.post(format!("{base}/api/v1/livechat/upload/{rid}"));
    let (status, _) = body(
        upload
            .try_clone()
            .expect("clone")
            .send()
            .await
            .expect("upload"),
    )
    .await;
    assert_eq!(status, 403, "no visitor token");
    let (status, msg) = body(
        upload
            .header("x-visitor-token", "fb-4")
            .multipart(form)
            .send()
            .await
            .expect("upload"),
    )
    .await;
    assert_eq!(status, 200, "{msg}");
    assert_eq!(msg["file"]["type"], "image/png");
    assert_eq!(msg["token"], "fb-4");

    let rid_id = RoomId::new(rid.clone());
    sim.agent_upload(
        "agent1",
        &rid_id,
        "menu.pdf",
        "application/pdf",
        b"%PDF".to_vec(),
    );
    let file = sim
        .messages(&rid_id)
        .into_iter()
        .find_map(|m| m.file.filter(|f| f.name == "menu.pdf"))
        .expect("agent file");
    let link = format!("{base}/file-upload/{}/menu.pdf", file.id);
    let bot_uid = sim.add_user("bot", "secret", &["bot"]);
    let bot_token = sim.personal_access_token("bot");
    let as_bot = client
        .get(&link)
        .header("x-user-id", bot_uid.as_str())
        .header("x-auth-token", &bot_token)
        .send()
        .await
        .expect("get");
    assert_eq!(
        as_bot.status().as_u16(),
        403,
        "the bot is not a member of the livechat room"
    );
    let wrong = client
        .get(format!(
            "{link}?rc_room_type=l&rc_rid={rid}&rc_token=fb-other"
        ))
        .send()
        .await
        .expect("get");
    assert_eq!(wrong.status().as_u16(), 403);
    let visitor = client
        .get(format!("{link}?rc_room_type=l&rc_rid={rid}&rc_token=fb-4"))
        .send()
        .await
        .expect("get");
    assert_eq!(visitor.status().as_u16(), 200);
    assert_eq!(visitor.bytes().await.expect("bytes").as_ref(), b"%PDF");
}

// ---- REST core ------------------------------------------------------------------------------

#[tokio::test]
async fn rest_core_routes() {
    let sim = sim().await;
    let bot = sim.add_user("bot", "secret", &["bot"]);
    let alice = sim.add_user("alice", "pw", &["user", "admin"]);
    sim.add_user("carol", "pw", &["user"]);
    let token = sim.personal_access_token("bot");
    let base = sim.url().as_str().trim_end_matches('/').to_owned();
    let client = http();
    let authed = |r: reqwest::RequestBuilder| {
        r.header("x-user-id", bot.as_str())
            .header("x-auth-token", &token)
    };

    let (status, unauth) = body(
        client
            .get(format!("{base}/api/v1/me"))
            .send()
            .await
            .expect("me"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(unauth["error"], "You must be logged in to do this.");

    let (status, dm) = body(
        authed(client.post(format!("{base}/api/v1/im.create")))
            .json(&json!({ "username": "alice" }))
            .send()
            .await
            .expect("im"),
    )
    .await;
    assert_eq!(status, 200, "{dm}");
    let rid = dm["room"]["rid"].as_str().expect("rid").to_owned();
    assert_eq!(dm["room"]["_id"], rid.as_str());
    assert_eq!(dm["room"]["t"], "d");

    let send = |b: Value| {
        authed(client.post(format!("{base}/api/v1/chat.sendMessage")))
            .json(&b)
            .send()
    };
    let (status, sent) = body(
        send(json!({ "message": { "_id": "reply-1", "rid": rid, "msg": "hello" } }))
            .await
            .expect("send"),
    )
    .await;
    assert_eq!(
        (status, sent["message"]["_id"].clone()),
        (200, json!("reply-1"))
    );
    let lobby = sim.channel("lobby", &["alice"]);
    // (body, expected status, expected error)
    let cases = [
        (
            json!({ "message": { "_id": "reply-1", "rid": rid, "msg": "again" } }),
            400,
            "Cannot read properties of undefined (reading 'starred')",
        ),
        (
            json!({ "message": { "rid": lobby.as_str(), "msg": "hi" } }),
            400,
            "error-not-allowed",
        ),
        (
            json!({ "message": { "rid": rid, "msg": "x".repeat(5001) } }),
            400,
            "Message size exceeds Message_MaxAllowedSize [error-message-size-exceeded]",
        ),
        (
            json!({}),
            400,
            "must have required property 'message' [invalid-params]",
        ),
    ];
    for (request, want_status, want_error) in cases {
        let (status, reply) = body(send(request).await.expect("send")).await;
        assert_eq!(
            (status, reply["error"].as_str()),
            (want_status, Some(want_error)),
            "{reply}"
        );
    }
    assert_eq!(sim.messages(&RoomId::new(rid.clone())).len(), 1);

    let info =
        |who: &str| authed(client.get(format!("{base}/api/v1/users.info?username={who}"))).send();
    let (_, other) = body(info("alice").await.expect("info")).await;
    assert!(
        other["user"].get("roles").is_none(),
        "roles hidden without view-full-other-user-info"
    );
    sim.grant_permission("bot", "view-full-other-user-info");
    let (_, other) = body(info("alice").await.expect("info")).await;
    assert_eq!(other["user"]["roles"], json!(["user", "admin"]));
    assert_eq!(other["user"]["_id"], alice.as_str());

    let (_, public) = body(client.get(format!("{base}/api/v1/settings.public?_id=Message_AllowUnrecognizedSlashCommand,Livechat_enabled")).send().await.expect("settings")).await;
    assert_eq!(public["count"], 2);
    let (status, _) = body(
        authed(client.get(format!("{base}/api/v1/settings/Livechat_enabled")))
            .send()
            .await
            .expect("setting"),
    )
    .await;
    assert_eq!(status, 403, "needs view-privileged-setting");

    let (status, login) = body(
        client
            .post(format!("{base}/api/v1/login"))
            .json(&json!({ "user": "bot", "password": "wrong" }))
            .send()
            .await
            .expect("login"),
    )
    .await;
    assert_eq!(
        (status, login["message"].clone()),
        (401, json!("Incorrect password"))
    );
    let (status, login) = body(
        client
            .post(format!("{base}/api/v1/login"))
            .json(&json!({ "user": "bot", "password": "secret" }))
            .send()
            .await
            .expect("login"),
    )
    .await;
    assert_eq!(
        (status, login["data"]["userId"].clone()),
        (200, json!(bot.as_str()))
    );
}

#[tokio::test]
async fn rate_limiter_and_injected_faults() {
    let sim = start(Duration::from_secs(30), true).await;
    let bot = sim.add_user("bot", "secret", &["bot"]);
    let token = sim.personal_access_token("bot");
    let base = sim.url().as_str().trim_end_matches('/').to_owned();
    let client = http();
    let visitor = || {
        client
            .post(format!("{base}/api/v1/livechat/visitor"))
            .json(&json!({ "visitor": { "token": "fb-r" } }))
            .send()
    };
    for remaining in (0..5).rev() {
        let response = visitor().await.expect("visitor");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers()["x-ratelimit-remaining"],
            remaining.to_string().as_str()
        );
    }
    let limited = visitor().await.expect("visitor");
    assert_eq!(limited.status().as_u16(), 429);
    assert_eq!(limited.headers()["x-ratelimit-limit"], "5");
    assert!(limited.headers().contains_key("x-ratelimit-reset"));
    let (_, reply) = body(limited).await;
    assert!(
        reply["error"].as_str().is_some_and(
            |e| e.ends_with("before trying this endpoint again. [error-too-many-requests]")
        ),
        "{reply}"
    );
    // The bot has api-bypass-rate-limit on authenticated routes.
    for _ in 0..12 {
        let me = client
            .get(format!("{base}/api/v1/me"))
            .header("x-user-id", bot.as_str())
            .header("x-auth-token", &token)
            .send()
            .await
            .expect("me");
        assert_eq!(me.status().as_u16(), 200);
    }

    sim.fail_next_rest(1, 502);
    let failed = client
        .get(format!("{base}/api/info"))
        .send()
        .await
        .expect("info");
    assert_eq!(failed.status().as_u16(), 502);
    assert_eq!(failed.text().await.expect("text"), "Bad Gateway");
    sim.rate_limit_next_rest(1);
    assert_eq!(
        client
            .get(format!("{base}/api/info"))
            .send()
            .await
            .expect("info")
            .status()
            .as_u16(),
        429
    );
    assert_eq!(
        client
            .get(format!("{base}/api/info"))
            .send()
            .await
            .expect("info")
            .status()
            .as_u16(),
        200
    );
    sim.refuse_connections(true);
    assert_eq!(
        client
            .get(format!("{base}/api/info"))
            .send()
            .await
            .expect("info")
            .status()
            .as_u16(),
        503
    );
    sim.refuse_connections(false);
    assert!(
        sim.stats()
            .rest_calls_by_route
            .get("POST /api/v1/livechat/visitor")
            .is_some_and(|n| *n == 6)
    );

    let mut ddp = Ddp::open(&sim).await;
    ddp.connect().await;
    sim.send_raw_to_all("garbage{");
    match tokio::time::timeout(WAIT, ddp.ws.next())
        .await
        .expect("frame")
    {
        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), "garbage{"),
        other => panic!("expected garbage, got {other:?}"),
    }
    sim.drop_connections();
    assert_eq!(
        ddp.close_code(WAIT).await,
        None,
        "dropped without a close frame"
    );
    sim.shutdown().await;
}

// ---- issue 11: what a real server does, per version ---------------------------------------

/// A simulator answering as `version`, with the limiter as given and an online agent in "Sales".
async fn omnichannel_with(opts: SimOptions) -> (RocketChatSim, reqwest::Client, String) {
    let sim = RocketChatSim::start(opts).await.expect("simulator starts");
    sim.add_user("bot", "secret", &["bot"]);
    sim.add_user("agent1", "pw", &["user", "livechat-agent"]);
    sim.add_department("Sales", &["agent1"]);
    sim.set_agent_online("agent1", true);
    let base = sim.url().as_str().trim_end_matches('/').to_owned();
    (sim, http(), base)
}

fn limited(version: ServerVersion) -> SimOptions {
    SimOptions {
        rest_rate_limiter: true,
        version,
        ..SimOptions::default()
    }
}

fn epoch_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_millis(),
    )
    .expect("ms")
}

fn header(response: &reqwest::Response, name: &str) -> u64 {
    response.headers()[name]
        .to_str()
        .expect("ascii")
        .parse()
        .expect("number")
}

#[tokio::test]
async fn livechat_room_has_its_own_five_a_minute_that_the_default_does_not_lift() {
    let (sim, client, base) = omnichannel_with(limited(ServerVersion::V8)).await;
    // Raising the default limit does not lift a route's own limit.
    sim.set_setting("API_Enable_Rate_Limiter_Limit_Calls_Default", json!(1000));
    // The bot's credentials and its api-bypass-rate-limit do not help on an unauthenticated route.
    let bot = sim.add_user("bot", "secret", &["bot"]);
    let token = sim.personal_access_token("bot");
    let room = |visitor: &str| {
        client
            .get(format!("{base}/api/v1/livechat/room?token={visitor}"))
            .header("x-user-id", bot.as_str())
            .header("x-auth-token", &token)
            .send()
    };
    open_room(&client, &base, "fb-l1").await;
    // open_room spent one slot of each; an already-open room costs a slot too.
    for left in (0..4).rev() {
        let response = room("fb-l1").await.expect("room");
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(header(&response, "x-ratelimit-remaining"), left);
        assert_eq!(header(&response, "x-ratelimit-limit"), 5);
    }
    let before = epoch_ms();
    let refused = room("fb-l1").await.expect("room");
    assert_eq!(refused.status().as_u16(), 429);
    let reset = header(&refused, "x-ratelimit-reset");
    assert!(
        reset > before + 50_000 && reset <= epoch_ms() + 60_000,
        "X-RateLimit-Reset is epoch ms: {reset}"
    );
    let (_, reply) = body(refused).await;
    let keys: Vec<&String> = reply.as_object().expect("object").keys().collect();
    assert_eq!(
        keys,
        ["error", "success"],
        "no details, no errorType: {reply}"
    );
    // The visitor route has its own bucket, also 5.
    for n in 0..5 {
        let response = client
            .post(format!("{base}/api/v1/livechat/visitor"))
            .json(&json!({ "visitor": { "token": format!("fb-v{n}") } }))
            .send()
            .await
            .expect("visitor");
        let expected = if n < 4 { 200 } else { 429 };
        assert_eq!(response.status().as_u16(), expected, "visitor {n}");
    }
    // Only switching the limiter off lifts both.
    sim.set_setting("API_Enable_Rate_Limiter", json!(false));
    assert_eq!(room("fb-l1").await.expect("room").status().as_u16(), 200);
}

#[tokio::test]
async fn messages_history_is_one_bucket_for_every_room_and_its_window_passes() {
    let (sim, client, base) = omnichannel_with(SimOptions {
        // Test knob: the 60 s window becomes 200 ms.
        rate_window_divisor: 300,
        ..limited(ServerVersion::V8)
    })
    .await;
    sim.set_setting("API_Enable_Rate_Limiter_Limit_Calls_Default", json!(3));
    let a = open_room(&client, &base, "fb-h1").await;
    let b = open_room(&client, &base, "fb-h2").await;
    let history = |rid: &str, token: &str| {
        client
            .get(format!(
                "{base}/api/v1/livechat/messages.history/{rid}?token={token}"
            ))
            .send()
    };
    assert_eq!(
        history(&a, "fb-h1").await.expect("h").status().as_u16(),
        200
    );
    assert_eq!(
        history(&b, "fb-h2").await.expect("h").status().as_u16(),
        200
    );
    assert_eq!(
        history(&a, "fb-h1").await.expect("h").status().as_u16(),
        200
    );
    let refused = history(&b, "fb-h2").await.expect("h");
    assert_eq!(
        refused.status().as_u16(),
        429,
        "room b shares room a's bucket"
    );
    assert_eq!(header(&refused, "x-ratelimit-limit"), 3);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(
        history(&b, "fb-h2").await.expect("h").status().as_u16(),
        200
    );
}

async fn upload_png(client: &reqwest::Client, base: &str, rid: &str, token: &str) -> (u16, Value) {
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(b"PNGDATA".to_vec())
            .file_name("photo.png")
            .mime_str("image/png")
            .expect("mime"),
    );
    body(
        client
            .post(format!("{base}/api/v1/livechat/upload/{rid}"))
            .header("x-visitor-token", token)
            .multipart(form)
            .send()
            .await
            .expect("upload"),
    )
    .await
}

#[tokio::test]
async fn uploads_are_five_per_ten_seconds_on_8x_only() {
    for (version, sixth) in [(ServerVersion::V8, 429), (ServerVersion::V7, 200)] {
        let (_sim, client, base) = omnichannel_with(limited(version)).await;
        let rid = open_room(&client, &base, "fb-u").await;
        for n in 0..5 {
            assert_eq!(upload_png(&client, &base, &rid, "fb-u").await.0, 200, "{n}");
        }
        let (status, reply) = upload_png(&client, &base, &rid, "fb-u").await;
        assert_eq!(status, sixth, "{version:?}: {reply}");
    }
}

#[tokio::test]
async fn upload_refusals_carry_reason() {
    let (sim, client, base) = omnichannel().await;
    let rid = open_room(&client, &base, "fb-r1").await;
    let (status, reply) = body(
        client
            .post(format!("{base}/api/v1/livechat/upload/{rid}"))
            .header("x-visitor-token", "fb-r1")
            .multipart(reqwest::multipart::Form::new().text("msg", "no file"))
            .send()
            .await
            .expect("upload"),
    )
    .await;
    assert_eq!(
        (status, reply),
        (
            400,
            json!({ "success": false, "reason": "error-no-file-uploaded" })
        )
    );
    sim.set_setting("Livechat_fileupload_enabled", json!(false));
    assert_eq!(
        upload_png(&client, &base, &rid, "fb-r1").await,
        (
            400,
            json!({ "success": false, "reason": "error-file-upload-disabled" })
        )
    );
}

#[tokio::test]
async fn settings_public_filters_by_id_only_from_7x() {
    for version in [ServerVersion::V6, ServerVersion::V7, ServerVersion::V8] {
        let (_sim, client, base) = omnichannel_with(SimOptions {
            version,
            ..SimOptions::default()
        })
        .await;
        let get = |query: &str| {
            client
                .get(format!("{base}/api/v1/settings.public?{query}"))
                .send()
        };
        let (status, public) = body(get("_id=Livechat_enabled").await.expect("get")).await;
        assert_eq!(status, 200, "{public}");
        let ids: Vec<&str> = public["settings"]
            .as_array()
            .expect("settings")
            .iter()
            .filter_map(|s| s["_id"].as_str())
            .collect();
        if version == ServerVersion::V6 {
            // The filter is ignored: the first page (50, by _id) has no Livechat setting.
            assert_eq!(ids.len(), 50, "{version:?}");
            assert!(!ids.contains(&"Livechat_enabled"), "{version:?}");
            assert!(public["total"].as_u64() > Some(50));
            assert_eq!(get("nonsense=1").await.expect("get").status().as_u16(), 200);
        } else {
            assert_eq!(ids, ["Livechat_enabled"], "{version:?}");
            let (status, refused) = body(get("nonsense=1").await.expect("get")).await;
            assert_eq!(status, 400, "{version:?}");
            assert_eq!(refused["errorType"], "invalid-params");
        }
    }
}

#[tokio::test]
async fn character_limit_refuses_long_texts_and_config_reports_it() {
    let (sim, client, base) = omnichannel().await;
    let rid = open_room(&client, &base, "fb-c").await;
    let limit = || async {
        let (_, config) = body(
            client
                .get(format!("{base}/api/v1/livechat/config?token=fb-c"))
                .send()
                .await
                .expect("config"),
        )
        .await;
        config["config"]["settings"]["limitTextLength"].clone()
    };
    let send = |text: String| {
        client
            .post(format!("{base}/api/v1/livechat/message"))
            .json(&json!({ "token": "fb-c", "rid": rid, "msg": text }))
            .send()
    };
    assert_eq!(limit().await, json!(false));
    assert_eq!(
        send("x".repeat(20)).await.expect("send").status().as_u16(),
        200
    );
    sim.set_setting("Livechat_enable_message_character_limit", json!(true));
    sim.set_setting("Livechat_message_character_limit", json!(10));
    assert_eq!(limit().await, json!(10));
    // UTF-16 units: five emoji are ten units.
    assert_eq!(
        send("😀".repeat(5)).await.expect("send").status().as_u16(),
        200
    );
    let (status, refused) = body(send("😀".repeat(5) + "!").await.expect("send")).await;
    assert_eq!(
        (status, refused),
        (
            400,
            json!({ "success": false, "error": "message-length-exceeds-character-limit" })
        )
    );
    // Limit 0: config falls back to Message_MaxAllowedSize, the route refuses any text.
    sim.set_setting("Livechat_message_character_limit", json!(0));
    assert_eq!(limit().await, json!(5000));
    assert_eq!(send("a".into()).await.expect("send").status().as_u16(), 400);
}

#[tokio::test]
async fn a_message_id_from_a_closed_room_is_refused_and_found_only_there_from_7x() {
    for version in [ServerVersion::V6, ServerVersion::V7] {
        let (sim, client, base) = omnichannel_with(SimOptions {
            version,
            ..SimOptions::default()
        })
        .await;
        let old = open_room(&client, &base, "fb-d").await;
        let send = |rid: &str| {
            client
                .post(format!("{base}/api/v1/livechat/message"))
                .json(&json!({ "token": "fb-d", "rid": rid, "msg": "hi", "_id": "mid-1" }))
                .send()
        };
        assert_eq!(send(&old).await.expect("send").status().as_u16(), 200);
        sim.close_room(&RoomId::new(old.clone()), "agent1");
        let (_, room) = body(
            client
                .get(format!("{base}/api/v1/livechat/room?token=fb-d"))
                .send()
                .await
                .expect("room"),
        )
        .await;
        let new = room["room"]["_id"].as_str().expect("rid").to_owned();
        assert_ne!(new, old);
        assert_eq!(send(&new).await.expect("send").status().as_u16(), 400);
        let find = |rid: &str| {
            client
                .get(format!(
                    "{base}/api/v1/livechat/message/mid-1?token=fb-d&rid={rid}"
                ))
                .send()
        };
        let (status, in_old) = body(find(&old).await.expect("get")).await;
        assert_eq!(
            (status, in_old["message"]["rid"].as_str()),
            (200, Some(old.as_str()))
        );
        let (status, in_new) = body(find(&new).await.expect("get")).await;
        if version == ServerVersion::V6 {
            assert_eq!(status, 200, "6.x looks the id up alone: {in_new}");
        } else {
            assert_eq!(
                (status, in_new),
                (400, json!({ "success": false, "error": "invalid-message" }))
            );
        }
    }
}

#[tokio::test]
async fn an_image_carries_its_thumbnail_second_and_image_url_points_at_it() {
    let (sim, client, base) = omnichannel().await;
    let rid = open_room(&client, &base, "fb-i").await;
    let rid_id = RoomId::new(rid.clone());
    sim.agent_upload(
        "agent1",
        &rid_id,
        "cat.png",
        "image/png",
        b"ORIGINAL-PNG".to_vec(),
    );
    sim.agent_upload(
        "agent1",
        &rid_id,
        "menu.pdf",
        "application/pdf",
        b"%PDF".to_vec(),
    );
    let (_, history) = body(
        client
            .get(format!(
                "{base}/api/v1/livechat/messages.history/{rid}?token=fb-i"
            ))
            .send()
            .await
            .expect("history"),
    )
    .await;
    let messages = history["messages"].as_array().expect("messages");
    let image = messages
        .iter()
        .find(|m| m["file"]["name"] == "cat.png")
        .expect("image message");
    let files = image["files"].as_array().expect("files");
    assert_eq!(files.len(), 2, "{image}");
    assert_eq!(files[0]["_id"], image["file"]["_id"]);
    assert_eq!(files[1]["name"], "thumb-cat.png");
    let attachment = &image["attachments"][0];
    let thumb_url = format!(
        "/file-upload/{}/cat.png",
        files[1]["_id"].as_str().expect("id")
    );
    assert_eq!(attachment["image_url"], thumb_url.as_str());
    let original_url = attachment["title_link"].as_str().expect("title_link");
    assert!(original_url.contains(image["file"]["_id"].as_str().expect("id")));
    let pdf = messages
        .iter()
        .find(|m| m["file"]["name"] == "menu.pdf")
        .expect("pdf message");
    assert_eq!(pdf["files"].as_array().map(Vec::len), Some(1));
    // Both are served to the room's visitor, and they differ.
    let fetch = |path: String| {
        client
            .get(format!(
                "{base}{path}?rc_room_type=l&rc_rid={rid}&rc_token=fb-i"
            ))
            .send()
    };
    let original = fetch(original_url.to_owned()).await.expect("get");
    assert_eq!(original.status().as_u16(), 200);
    assert_eq!(
        original.bytes().await.expect("bytes").as_ref(),
        b"ORIGINAL-PNG"
    );
    let thumb = fetch(thumb_url).await.expect("get");
    assert_eq!(thumb.status().as_u16(), 200);
    assert_ne!(
        thumb.bytes().await.expect("bytes").as_ref(),
        b"ORIGINAL-PNG"
    );
    let seen = sim
        .messages(&rid_id)
        .into_iter()
        .find(|m| m.file.as_ref().is_some_and(|f| f.name == "cat.png"))
        .expect("image");
    assert_eq!(seen.thumbnail.map(|t| t.name), Some("thumb-cat.png".into()));
    // With thumbnails off the server keeps one file.
    sim.set_setting("Message_Attachments_Thumbnails_Enabled", json!(false));
    let plain = sim.agent_upload("agent1", &rid_id, "dog.png", "image/png", b"PNG".to_vec());
    let plain = sim
        .messages(&rid_id)
        .into_iter()
        .find(|m| m.id == plain)
        .expect("image");
    assert!(plain.thumbnail.is_none());
}

#[tokio::test]
async fn my_messages_carries_public_channel_traffic_the_bot_is_not_in() {
    let sim = sim().await;
    sim.add_user("bot", "secret", &["bot"]);
    sim.add_user("carol", "pw", &["user"]);
    let general = sim.channel("general", &["carol"]);
    let mut ddp = Ddp::logged_in(&sim, "bot", "secret").await;
    assert_eq!(
        ddp.sub(
            "m",
            "stream-room-messages",
            json!(["__my_messages__", false])
        )
        .await["msg"],
        "ready"
    );
    sim.post_channel_message("carol", &general, "lunch?");
    let event = ddp.recv().await;
    let args = &event["fields"]["args"];
    assert_eq!(args[0]["msg"], "lunch?");
    assert_eq!(args[1]["roomType"], "c");
    assert_eq!(args[1]["roomParticipant"], false);
}

#[tokio::test]
async fn departments_come_in_pages_of_at_most_100() {
    let (sim, client, base) = omnichannel().await;
    for n in 1..150 {
        sim.add_department(&format!("Dept {n:03}"), &["agent1"]);
    }
    sim.grant_permission("bot", "view-livechat-departments");
    let token = sim.personal_access_token("bot");
    let bot = sim.add_user("bot", "secret", &["bot"]);
    let page = |query: &str| {
        client
            .get(format!("{base}/api/v1/livechat/department?{query}"))
            .header("x-user-id", bot.as_str())
            .header("x-auth-token", &token)
            .send()
    };
    let (_, first) = body(page("count=200").await.expect("page")).await;
    assert_eq!(first["departments"].as_array().map(Vec::len), Some(100));
    assert_eq!(
        (first["count"].clone(), first["total"].clone()),
        (json!(100), json!(150))
    );
    let (_, rest) = body(page("count=100&offset=100").await.expect("page")).await;
    assert_eq!(rest["departments"].as_array().map(Vec::len), Some(50));
    assert_eq!(rest["offset"], 100);
    let (_, default) = body(page("").await.expect("page")).await;
    assert_eq!(default["count"], 50);
    let (status, refused) = body(page("limit=500").await.expect("page")).await;
    assert_eq!(
        (status, refused["errorType"].clone()),
        (400, json!("invalid-params"))
    );
}
