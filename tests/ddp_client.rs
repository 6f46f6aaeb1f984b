//! The DDP client against a tiny scripted server on loopback: each test accepts the client's
//! connections one by one and plays the server's side of the conversation frame by frame.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use omni_gateway::ids::UserId;
use omni_gateway::rocketchat::ddp::{
    Credentials, DdpClient, DdpSettings, Error, ErrorCode, Event, StreamEvent,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;
use url::Url;

/// Upper bound on any single wait in these tests.
const STEP: Duration = Duration::from_secs(3);
/// sha256("s3cret"), lowercase hex.
const S3CRET_DIGEST: &str = "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0";

/// Accepts WebSocket connections on 127.0.0.1:0 and hands each to the test.
struct Server {
    url: Url,
    peers: mpsc::Receiver<Peer>,
}

impl Server {
    async fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let (tx, peers) = mpsc::channel(8);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if let Ok(ws) = tokio_tungstenite::accept_async(stream).await
                    && tx.send(Peer { ws }).await.is_err()
                {
                    return;
                }
            }
        });
        let url = Url::parse(&format!("ws://{addr}/websocket")).expect("url");
        Server { url, peers }
    }

    async fn accept(&mut self) -> Peer {
        timeout(STEP, self.peers.recv())
            .await
            .expect("the client did not connect in time")
            .expect("listener gone")
    }
}

/// The server's end of one connection.
struct Peer {
    ws: WebSocketStream<TcpStream>,
}

impl Peer {
    async fn send(&mut self, value: Value) {
        self.send_raw(&value.to_string()).await;
    }

    async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .await
            .expect("send to client");
    }

    /// The next text frame, as sent.
    async fn recv_text(&mut self) -> String {
        loop {
            let message = timeout(STEP, self.ws.next())
                .await
                .expect("the client sent nothing in time")
                .expect("client closed")
                .expect("websocket error");
            if let Message::Text(text) = message {
                return text.as_str().to_owned();
            }
        }
    }

    async fn recv(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).expect("client sent JSON")
    }

    /// `{"server_id":"0"}` first, then the client's `connect`, then `connected`.
    async fn handshake(&mut self) {
        self.send(json!({"server_id": "0"})).await;
        let connect = self.recv().await;
        assert_eq!(
            connect,
            json!({"msg":"connect","version":"1","support":["1","pre2","pre1"]})
        );
        self.send(json!({"msg":"connected","session":"sess-1"}))
            .await;
    }

    /// The next `login` call: its id, its single parameter and the raw frame text.
    async fn expect_login(&mut self) -> (String, Value, String) {
        let text = self.recv_text().await;
        let frame: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(frame["msg"], "method", "{frame}");
        assert_eq!(frame["method"], "login", "{frame}");
        let id = frame["id"].as_str().expect("call id").to_owned();
        let params = frame["params"].as_array().expect("params array");
        assert_eq!(params.len(), 1, "{frame}");
        (id, params[0].clone(), text)
    }

    async fn login_ok(&mut self, id: &str, user: &str, token: &str) {
        self.send(json!({"msg":"result","id":id,"result":{
            "id":user,"token":token,"tokenExpires":{"$date":1_721_048_163_925_i64},"type":"password"}}))
            .await;
        self.send(json!({"msg":"updated","methods":[id]})).await;
    }

    async fn login_error(&mut self, id: &str, error: Value) {
        self.send(json!({"msg":"result","id":id,"error":error}))
            .await;
    }

    /// The next `sub`: its wire id, name and params.
    async fn expect_sub(&mut self) -> (String, String, Value) {
        let frame = self.recv().await;
        assert_eq!(frame["msg"], "sub", "{frame}");
        (
            frame["id"].as_str().expect("sub id").to_owned(),
            frame["name"].as_str().expect("sub name").to_owned(),
            frame["params"].clone(),
        )
    }

    /// Handshake, password or resume login (whatever comes) accepted, no subscriptions.
    async fn accept_login(&mut self, token: &str) -> Value {
        self.handshake().await;
        let (id, params, _) = self.expect_login().await;
        self.login_ok(&id, "bot-id", token).await;
        params
    }

    async fn close(&mut self, code: u16, reason: &'static str) {
        let frame = CloseFrame {
            code: CloseCode::from(code),
            reason: reason.into(),
        };
        let _ = self.ws.close(Some(frame)).await;
    }
}

fn settings(url: &Url) -> DdpSettings {
    DdpSettings {
        url: url.clone(),
        keepalive: Duration::from_secs(60),
        dead_link: Duration::from_secs(5),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(200),
        login_retry: Duration::from_millis(300),
        connect_timeout: Duration::from_secs(2),
        call_timeout: Duration::from_secs(2),
    }
}

fn password_credentials() -> Credentials {
    Credentials {
        username: "facebook.bot".into(),
        password: Some(SecretString::from("s3cret")),
        personal_token: None,
    }
}

/// A running client with its events and the cancel token that stops it at the end of a test.
struct Client {
    client: DdpClient,
    events: mpsc::Receiver<Event>,
    cancel: CancellationToken,
}

impl Client {
    fn start(settings: DdpSettings, credentials: Credentials) -> Client {
        let cancel = CancellationToken::new();
        let (client, events) = DdpClient::start(settings, credentials, cancel.clone());
        Client {
            client,
            events,
            cancel,
        }
    }

    async fn event(&mut self) -> Event {
        timeout(STEP, self.events.recv())
            .await
            .expect("no event in time")
            .expect("event channel closed")
    }

    async fn expect_ready(&mut self) -> UserId {
        match self.event().await {
            Event::Ready(session) => session.user_id,
            other => panic!("expected Ready, got {other:?}"),
        }
    }

    async fn expect_disconnected(&mut self) -> (String, Duration) {
        match self.event().await {
            Event::Disconnected { reason, retry_in } => (reason, retry_in),
            other => panic!("expected Disconnected, got {other:?}"),
        }
    }

    /// True when no event is waiting: nothing may be reported before the server answers.
    fn event_is_pending_free(&mut self) -> bool {
        self.events.try_recv().is_err()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

#[tokio::test]
async fn password_login_sends_the_digest_and_never_the_password() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let mut peer = server.accept().await;
    peer.handshake().await;
    let (id, params, raw) = peer.expect_login().await;
    assert_eq!(
        params,
        json!({"user":{"username":"facebook.bot"},"password":{"digest":S3CRET_DIGEST,"algorithm":"sha-256"}})
    );
    assert!(
        !raw.contains("s3cret"),
        "plaintext password on the wire: {raw}"
    );
    assert!(!client.client.is_ready());
    peer.login_ok(&id, "bot-id", "tok-1").await;
    assert_eq!(client.expect_ready().await, UserId::new("bot-id"));
    assert!(client.client.is_ready());
    let stats = client.client.stats();
    assert_eq!((stats.connects, stats.logins, stats.reconnects), (1, 1, 0));
}

#[tokio::test]
async fn personal_access_token_logs_in_by_resume() {
    let mut server = Server::start().await;
    let credentials = Credentials {
        username: "facebook.bot".into(),
        password: None,
        personal_token: Some(SecretString::from("pat-1")),
    };
    let mut client = Client::start(settings(&server.url), credentials);
    let mut peer = server.accept().await;
    let params = peer.accept_login("pat-1").await;
    assert_eq!(params, json!({"resume":"pat-1"}));
    client.expect_ready().await;
}

#[tokio::test]
async fn server_close_reconnects_resumes_and_resubscribes() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let sub = client
        .client
        .subscribe("stream-room-messages", json!(["__my_messages__", false]))
        .await;

    let mut peer = server.accept().await;
    let params = peer.accept_login("tok-1").await;
    assert!(params.get("password").is_some(), "{params}");
    let (wire_id, name, sub_params) = peer.expect_sub().await;
    assert_eq!(name, "stream-room-messages");
    assert_eq!(sub_params, json!(["__my_messages__", false]));
    assert!(client.event_is_pending_free());
    peer.send(json!({"msg":"ready","subs":[wire_id]})).await;
    client.expect_ready().await;

    peer.close(4000, "TIMEOUT").await;
    let (reason, retry_in) = client.expect_disconnected().await;
    assert!(reason.contains("4000"), "{reason}");
    assert!(retry_in <= Duration::from_millis(200), "{retry_in:?}");
    assert!(!client.client.is_ready());

    let mut peer = server.accept().await;
    let params = peer.accept_login("tok-1").await;
    assert_eq!(params, json!({"resume":"tok-1"}));
    let (wire_id2, name2, sub_params2) = peer.expect_sub().await;
    assert_eq!(
        (name2.as_str(), &sub_params2),
        ("stream-room-messages", &sub_params)
    );
    peer.send(json!({"msg":"ready","subs":[wire_id2]})).await;
    client.expect_ready().await;
    let stats = client.client.stats();
    assert_eq!((stats.connects, stats.reconnects, stats.logins), (2, 1, 2));
    client.client.unsubscribe(sub).await;
    assert_eq!(peer.recv().await, json!({"msg":"unsub","id":wire_id}));
}

#[tokio::test]
async fn refused_resume_falls_back_to_password() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let mut peer = server.accept().await;
    peer.accept_login("tok-old").await;
    client.expect_ready().await;
    drop(peer); // abrupt: no close frame
    client.expect_disconnected().await;

    let mut peer = server.accept().await;
    peer.handshake().await;
    let (id, params, _) = peer.expect_login().await;
    assert_eq!(params, json!({"resume":"tok-old"}));
    peer.login_error(
        &id,
        json!({"error":403,"reason":"You've been logged out by the server. Please log in again.","errorType":"Meteor.Error"}),
    )
    .await;
    let (id, params, _) = peer.expect_login().await;
    assert_eq!(params["password"]["digest"], S3CRET_DIGEST);
    peer.login_ok(&id, "bot-id", "tok-new").await;
    client.expect_ready().await;

    drop(peer);
    client.expect_disconnected().await;
    let mut peer = server.accept().await;
    assert_eq!(
        peer.accept_login("tok-new").await,
        json!({"resume":"tok-new"})
    );
    client.expect_ready().await;
}

#[tokio::test]
async fn totp_required_reports_login_failed_and_retries_slowly() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let mut peer = server.accept().await;
    peer.handshake().await;
    let (id, _, _) = peer.expect_login().await;
    peer.login_error(
        &id,
        json!({"error":"totp-required","reason":"TOTP Required","details":{"method":"email","codeGenerated":true,"availableMethods":["email"]}}),
    )
    .await;
    match client.event().await {
        Event::LoginFailed { message } => {
            assert!(message.contains("two-factor"), "{message}");
            assert!(message.contains("personal access token"), "{message}");
            assert!(message.contains("auth_token and user_id"), "{message}");
        }
        other => panic!("expected LoginFailed, got {other:?}"),
    }
    let (_, retry_in) = client.expect_disconnected().await;
    assert_eq!(
        retry_in,
        Duration::from_millis(300),
        "retries slowly, at login_retry"
    );
    let mut peer = server.accept().await;
    peer.handshake().await;
    let (_, params, _) = peer.expect_login().await;
    assert_eq!(params["password"]["digest"], S3CRET_DIGEST);
    assert_eq!(client.client.stats().login_failures, 1);
}

#[tokio::test]
async fn rate_limited_login_waits_time_to_reset() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let mut peer = server.accept().await;
    peer.handshake().await;
    let (id, _, _) = peer.expect_login().await;
    peer.login_error(
        &id,
        json!({"error":"too-many-requests","reason":"Error, too many requests.","details":{"timeToReset":400}}),
    )
    .await;
    let (reason, retry_in) = client.expect_disconnected().await;
    assert!(reason.contains("rate-limited"), "{reason}");
    assert_eq!(retry_in, Duration::from_millis(400));
    let refused_at = Instant::now();
    let mut peer = server.accept().await;
    assert!(refused_at.elapsed() >= Duration::from_millis(350));
    peer.accept_login("tok").await;
    client.expect_ready().await;
}

#[tokio::test]
async fn server_pings_are_answered_with_and_without_id() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let mut peer = server.accept().await;
    peer.send(json!({"server_id": "0"})).await;
    assert_eq!(peer.recv().await["msg"], "connect");
    // Before the handshake completes, pings are answered too.
    peer.send(json!({"msg":"ping"})).await;
    assert_eq!(peer.recv().await, json!({"msg":"pong"}));
    peer.send(json!({"msg":"connected","session":"s"})).await;
    let (id, _, _) = peer.expect_login().await;
    peer.login_ok(&id, "bot-id", "tok").await;
    client.expect_ready().await;
    peer.send(json!({"msg":"ping","id":"p-17"})).await;
    assert_eq!(peer.recv().await, json!({"msg":"pong","id":"p-17"}));
    peer.send(json!({"msg":"ping"})).await;
    assert_eq!(peer.recv().await, json!({"msg":"pong"}));
    assert_eq!(client.client.stats().pings_answered, 3);
}

#[tokio::test]
async fn own_pings_are_sent_every_keepalive() {
    let mut server = Server::start().await;
    let mut fast = settings(&server.url);
    fast.keepalive = Duration::from_millis(100);
    let mut client = Client::start(fast, password_credentials());
    let mut peer = server.accept().await;
    peer.accept_login("tok").await;
    client.expect_ready().await;
    let started = Instant::now();
    let mut ids = Vec::new();
    while ids.len() < 3 {
        let frame = peer.recv().await;
        assert_eq!(frame["msg"], "ping", "{frame}");
        let id = frame["id"]
            .as_str()
            .expect("our pings carry an id")
            .to_owned();
        peer.send(json!({"msg":"pong","id":id})).await;
        ids.push(id);
    }
    assert!(started.elapsed() < Duration::from_secs(2));
    ids.dedup();
    assert_eq!(ids.len(), 3, "ping ids are distinct");
    assert!(client.client.stats().pings_sent >= 3);
}

#[tokio::test]
async fn silent_server_is_dropped_after_dead_link() {
    let mut server = Server::start().await;
    let mut quick = settings(&server.url);
    quick.dead_link = Duration::from_millis(300);
    let mut client = Client::start(quick, password_credentials());
    let mut peer = server.accept().await;
    peer.accept_login("tok").await;
    client.expect_ready().await;
    let silent_since = Instant::now();
    // The server keeps the socket open but says nothing more.
    let (reason, _) = client.expect_disconnected().await;
    assert!(reason.contains("no frame"), "{reason}");
    let mut peer2 = server.accept().await;
    let elapsed = silent_since.elapsed();
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    assert_eq!(peer2.accept_login("tok2").await, json!({"resume":"tok"}));
    client.expect_ready().await;
    drop(peer);
}

#[tokio::test]
async fn method_results_complete_calls_in_either_order() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let mut peer = server.accept().await;
    peer.accept_login("tok").await;
    client.expect_ready().await;

    type Script = fn(String) -> Vec<Value>;
    let cases: [(Script, Value); 3] = [
        (
            |id| {
                vec![
                    json!({"msg":"updated","methods":[id]}),
                    json!({"msg":"result","id":id,"result":{"n":1}}),
                ]
            },
            json!({"n":1}),
        ),
        (
            |id| {
                vec![
                    json!({"msg":"result","id":id,"result":[2]}),
                    json!({"msg":"updated","methods":[id]}),
                ]
            },
            json!([2]),
        ),
        (|id| vec![json!({"msg":"result","id":id})], Value::Null),
    ];
    for (script, expected) in cases {
        let handle = client.client.clone();
        let call = tokio::spawn(async move { handle.call("echo", vec![json!(1)]).await });
        let frame = peer.recv().await;
        assert_eq!(frame["msg"], "method");
        assert_eq!(frame["method"], "echo");
        assert_eq!(frame["params"], json!([1]));
        let id = frame["id"].as_str().expect("id").to_owned();
        for reply in script(id) {
            peer.send(reply).await;
        }
        let result = call.await.expect("task").expect("call succeeded");
        assert_eq!(result, expected);
    }
}

#[tokio::test]
async fn method_errors_keep_their_shape_and_classification() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let mut peer = server.accept().await;
    peer.accept_login("tok").await;
    client.expect_ready().await;

    let cases = [
        (
            ErrorCode::Text("too-many-requests".into()),
            json!({"isClientSafe":true,"error":"too-many-requests","reason":"Error, too many requests.","details":{"timeToReset":2875},"message":"Error, too many requests. [too-many-requests]","errorType":"Meteor.Error"}),
            true,
            Some(Duration::from_millis(2875)),
        ),
        (
            ErrorCode::Number(404),
            json!({"error":404,"reason":"Method 'echo' not found","message":"Method 'echo' not found [404]","errorType":"Meteor.Error"}),
            false,
            None,
        ),
    ];
    for (code, error, retryable, retry_after) in cases {
        let handle = client.client.clone();
        let call = tokio::spawn(async move { handle.call("echo", vec![]).await });
        let frame = peer.recv().await;
        let id = frame["id"].as_str().expect("id").to_owned();
        peer.send(json!({"msg":"result","id":id,"error":error.clone()}))
            .await;
        let err = call.await.expect("task").expect_err("call must fail");
        let Error::Method(method_error) = &err else {
            panic!("expected a method error, got {err:?}");
        };
        assert_eq!(method_error.error, code);
        assert_eq!(method_error.reason.as_deref(), error["reason"].as_str());
        assert_eq!(method_error.message.as_deref(), error["message"].as_str());
        assert_eq!(err.is_retryable(), retryable);
        assert_eq!(err.retry_after(), retry_after);
    }
}

#[tokio::test]
async fn pending_calls_fail_closed_when_the_link_drops_and_calls_need_a_link() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    assert!(matches!(
        client.client.call("echo", vec![]).await,
        Err(Error::NotConnected)
    ));
    let mut peer = server.accept().await;
    peer.accept_login("tok").await;
    client.expect_ready().await;
    let handle = client.client.clone();
    let call = tokio::spawn(async move { handle.call("echo", vec![]).await });
    assert_eq!(peer.recv().await["method"], "echo");
    drop(peer);
    let result = timeout(STEP, call)
        .await
        .expect("call ended")
        .expect("task");
    assert!(matches!(result, Err(Error::Closed)), "{result:?}");
    client.expect_disconnected().await;
}

#[tokio::test]
async fn nosub_reports_the_failed_subscription_and_forgets_it() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let good = client
        .client
        .subscribe("stream-room-messages", json!(["r-open", false]))
        .await;
    let bad = client
        .client
        .subscribe(
            "stream-room-messages",
            json!(["r-closed", {"useCollection":false,"args":[{"visitorToken":"v"}]}]),
        )
        .await;
    assert_ne!(good, bad);
    let mut peer = server.accept().await;
    peer.accept_login("tok").await;
    let (good_wire, _, good_params) = peer.expect_sub().await;
    let (bad_wire, _, bad_params) = peer.expect_sub().await;
    assert_eq!(good_params, json!(["r-open", false]));
    assert_eq!(bad_params[0], "r-closed");
    peer.send(json!({"msg":"nosub","id":bad_wire,"error":{"isClientSafe":true,"error":"not-allowed","reason":"Not allowed","errorType":"Meteor.Error"}}))
        .await;
    peer.send(json!({"msg":"ready","subs":[good_wire]})).await;
    match client.event().await {
        Event::SubscriptionFailed { id, error } => {
            assert_eq!(id, bad);
            assert!(error.contains("not-allowed"), "{error}");
        }
        other => panic!("expected SubscriptionFailed, got {other:?}"),
    }
    client.expect_ready().await;

    // After a reconnect only the healthy subscription is sent again.
    peer.close(1002, "").await;
    client.expect_disconnected().await;
    let mut peer = server.accept().await;
    peer.accept_login("tok2").await;
    let (wire, _, params) = peer.expect_sub().await;
    assert_eq!(
        (wire.as_str(), params),
        (good_wire.as_str(), json!(["r-open", false]))
    );
    peer.send(json!({"msg":"ready","subs":[wire]})).await;
    client.expect_ready().await;

    // A subscription added while ready goes out at once; its ready emits nothing new.
    let late = client
        .client
        .subscribe("stream-notify-user", json!(["bot-id/rooms-changed", false]))
        .await;
    let (late_wire, name, _) = peer.expect_sub().await;
    assert_eq!(name, "stream-notify-user");
    peer.send(json!({"msg":"ready","subs":[late_wire]})).await;
    peer.send(json!({"msg":"ping","id":"sync"})).await;
    assert_eq!(peer.recv().await, json!({"msg":"pong","id":"sync"}));
    assert!(client.event_is_pending_free());
    assert_ne!(late, good);
}

#[tokio::test]
async fn stream_events_are_dispatched_with_their_args_as_given() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let mut peer = server.accept().await;
    peer.accept_login("tok").await;
    client.expect_ready().await;

    let message =
        json!({"_id":"m1","rid":"r1","msg":"/facebook help","u":{"_id":"u1","username":"alice"}});
    let info = json!({"roomParticipant":true,"roomType":"d","roomName":null});
    let cases = [
        // 6.x / 7.x shape.
        (
            "stream-room-messages",
            "__my_messages__",
            json!([message, info]),
        ),
        // 4.x shape: the message list nested in the first argument.
        (
            "stream-room-messages",
            "__my_messages__",
            json!([[message], info]),
        ),
        (
            "stream-notify-user",
            "bot-id/rooms-changed",
            json!(["inserted", {"_id":"r2","t":"d"}]),
        ),
    ];
    // An ordinary collection change (no eventName) is not a stream event.
    peer.send(
        json!({"msg":"changed","collection":"users","id":"bot-id","fields":{"status":"online"}}),
    )
    .await;
    for (collection, event_name, args) in cases {
        peer.send(json!({"msg":"changed","collection":collection,"id":"id","fields":{"eventName":event_name,"args":args}}))
            .await;
        match client.event().await {
            Event::Stream(StreamEvent {
                collection: got_collection,
                event_name: got_name,
                args: got_args,
            }) => {
                assert_eq!(got_collection, collection);
                assert_eq!(got_name, event_name);
                assert_eq!(Value::Array(got_args), args);
            }
            other => panic!("expected Stream, got {other:?}"),
        }
    }
    assert_eq!(client.client.stats().stream_events, 3);
}

#[tokio::test]
async fn garbage_frames_are_counted_and_survived() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let mut peer = server.accept().await;
    peer.accept_login("tok").await;
    client.expect_ready().await;

    let garbage = [
        "not json",
        "a[\"{\\\"msg\\\":\\\"ping\\\"}\"]",
        "[]",
        "{}",
        r#"{"msg":42}"#,
        r#"{"msg":"ping","id":5}"#,
        r#"{"msg":"result","id":3}"#,
        r#"{"msg":"changed","collection":"c","id":"id","fields":[1]}"#,
        r#"{"msg":"ready","subs":"s"}"#,
    ];
    for text in garbage {
        peer.send_raw(text).await;
    }
    peer.ws
        .send(Message::binary(vec![0u8, 159, 146, 150]))
        .await
        .expect("send binary");
    let unknown = [
        json!({"msg":"addedBefore","collection":"c","id":"1","fields":{},"before":null}),
        json!({"msg":"whatever"}),
        json!({"msg":"result","id":"no-such-call","result":1}),
        json!({"msg":"nosub","id":"sub-999"}),
        json!({"msg":"ready","subs":["sub-999"]}),
        json!({"msg":"error","reason":"Bad request"}),
    ];
    for frame in unknown {
        peer.send(frame).await;
    }
    peer.send(json!({"msg":"ping","id":"still-alive"})).await;
    assert_eq!(peer.recv().await, json!({"msg":"pong","id":"still-alive"}));
    let stats = client.client.stats();
    assert_eq!(stats.garbage_frames, garbage.len() as u64 + 1);
    assert_eq!(stats.unknown_frames, 2);
    assert_eq!(stats.connects, 1);
    assert!(client.client.is_ready());
    assert!(client.event_is_pending_free());
}

#[tokio::test]
async fn unreachable_server_backs_off_and_cancel_stops_the_client() {
    // Bind then drop, so the port refuses connections.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind")
        .local_addr()
        .expect("addr");
    let url = Url::parse(&format!("ws://{addr}/websocket")).expect("url");
    let mut client = Client::start(settings(&url), password_credentials());
    let mut delays = Vec::new();
    for _ in 0..4 {
        let (reason, retry_in) = client.expect_disconnected().await;
        assert!(reason.contains("could not connect"), "{reason}");
        delays.push(retry_in);
    }
    assert!(
        delays
            .iter()
            .all(|d| *d >= Duration::from_millis(50) && *d <= Duration::from_millis(200)),
        "{delays:?}"
    );
    client.cancel.cancel();
    let closed = timeout(STEP, async {
        while client.events.recv().await.is_some() {}
    })
    .await;
    assert!(
        closed.is_ok(),
        "the client stopped and closed its event channel"
    );
    assert!(client.client.stats().reconnects >= 3);
    assert!(matches!(
        client.client.call("x", vec![]).await,
        Err(Error::NotConnected)
    ));
}

#[tokio::test]
async fn session_token_is_not_printed_in_debug_output() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    let mut peer = server.accept().await;
    peer.accept_login("very-secret-token").await;
    match client.event().await {
        Event::Ready(session) => {
            assert_eq!(session.token.expose_secret(), "very-secret-token");
            assert!(!format!("{session:?}").contains("very-secret-token"));
        }
        other => panic!("expected Ready, got {other:?}"),
    }
}

#[tokio::test]
async fn rate_limited_subscription_is_retried_before_ready() {
    let mut server = Server::start().await;
    let mut client = Client::start(settings(&server.url), password_credentials());
    client
        .client
        .subscribe("stream-room-messages", json!(["__my_messages__", false]))
        .await;
    let mut peer = server.accept().await;
    peer.accept_login("tok").await;
    let (wire, _, _) = peer.expect_sub().await;
    peer.send(json!({"msg":"nosub","id":wire,"error":{"error":"too-many-requests","reason":"Error, too many requests.","details":{"timeToReset":300}}}))
        .await;
    let limited_at = Instant::now();
    let (again, name, params) = peer.expect_sub().await;
    assert!(limited_at.elapsed() >= Duration::from_millis(250));
    assert_eq!(
        (again.as_str(), name.as_str()),
        (wire.as_str(), "stream-room-messages")
    );
    assert_eq!(params, json!(["__my_messages__", false]));
    assert!(
        client.event_is_pending_free(),
        "no Ready before the stream is live"
    );
    peer.send(json!({"msg":"ready","subs":[again]})).await;
    client.expect_ready().await;
}
