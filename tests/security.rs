//! Security tests against the simulators with the real gateway: webhook signatures, Meta's
//! verification handshake, who may run commands and where, secrets kept out of the log, and the
//! HTTP limits (body, header, connections).

use std::time::Duration;

use omni_gateway::commands::{self, Parsed};
use omni_gateway::daemon::Gateway;
use omni_gateway::ids::PageId;
use omni_gateway::store::{Page, PageStatus};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use omni_testkit::logs::Logs;
use omni_testkit::webhook;
use omni_testkit::{
    APP_SECRET, BOT, BOT_PASSWORD, Chat, Facebook, PAGES, PATIENCE, eventually,
    password_credentials, start_gateway, start_gateway_with, until_ready,
};

const VERIFY_TOKEN: &str = "verify-token-for-tests";
/// The page the tests connect (one of the pages the Graph simulator's admin manages).
const PAGE: &str = PAGES[0].0;

// ---- helpers ----

fn connect_page(gateway: &Gateway, token: &str) {
    let mut page = Page::new(PageId::new(PAGE), "Shop".to_owned());
    page.token = Some(SecretString::from(token.to_owned()));
    page.status = PageStatus::Connected;
    page.subscribers = vec!["alice".to_owned()];
    gateway.store.put_page(&page).unwrap();
}

/// A customer's text message to `PAGE`, as Meta sends it.
fn message_body(psid: &str, mid: &str, text: &str) -> Vec<u8> {
    webhook::text_body(PAGE, psid, mid, text)
}

async fn post_webhook(gateway: &Gateway, signature: Option<&str>, body: Vec<u8>) -> u16 {
    webhook::post(&reqwest::Client::new(), gateway.http_addr, body, signature).await
}

async fn stored_events(gateway: &Gateway) -> u64 {
    let text = reqwest::get(format!("http://{}/metrics", gateway.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.contains("webhook_events_total") && l.contains("outcome=\"stored\""))
        .and_then(|l| l.rsplit(' ').next())
        .map(|n| n.parse().unwrap())
        .unwrap_or(0)
}

fn page_snapshot(gateway: &Gateway) -> Vec<String> {
    gateway
        .store
        .pages()
        .unwrap()
        .iter()
        .map(|p| {
            let token = p.token.as_ref().map(|t| t.expose_secret().to_owned());
            format!("{p:?} token={token:?}")
        })
        .collect()
}

async fn healthz(gateway: &Gateway) -> u16 {
    reqwest::Client::new()
        .get(format!("http://{}/healthz", gateway.http_addr))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/healthz answers")
        .status()
        .as_u16()
}

// ---- signatures ----

#[tokio::test]
async fn only_correctly_signed_bodies_are_accepted() {
    Logs::global("trace");
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    connect_page(&running.gateway, "page-token-unused");

    let body = message_body("6789", "m_sig", "hello");
    let good = webhook::signature(APP_SECRET, &body);
    let mut altered = body.clone();
    let at = altered.len() - 10;
    altered[at] ^= 0x01;
    // Meta signs its escaped-unicode form; the same text re-encoded as UTF-8 is another body.
    let escaped = String::from_utf8(message_body("6789", "m_uni", "café 😀"))
        .unwrap()
        .replace("café 😀", r"caf\u00e9 \ud83d\ude00")
        .into_bytes();
    let escaped_sig = webhook::signature(APP_SECRET, &escaped);
    let decoded = message_body("6789", "m_uni", "café 😀");

    struct Case {
        what: &'static str,
        signature: Option<String>,
        body: Vec<u8>,
        status: u16,
        stored: u64,
    }
    let cases = [
        Case {
            what: "missing signature",
            signature: None,
            body: body.clone(),
            status: 401,
            stored: 0,
        },
        Case {
            what: "empty signature",
            signature: Some(String::new()),
            body: body.clone(),
            status: 401,
            stored: 0,
        },
        Case {
            what: "sha1 instead of sha256",
            signature: Some(good.replace("sha256=", "sha1=")),
            body: body.clone(),
            status: 401,
            stored: 0,
        },
        Case {
            what: "not hex",
            signature: Some(format!("sha256={}", "zz".repeat(32))),
            body: body.clone(),
            status: 401,
            stored: 0,
        },
        Case {
            what: "truncated digest",
            signature: Some(good[..good.len() - 2].to_owned()),
            body: body.clone(),
            status: 401,
            stored: 0,
        },
        Case {
            what: "signed with another secret",
            signature: Some(webhook::signature("another-secret", &body)),
            body: body.clone(),
            status: 401,
            stored: 0,
        },
        Case {
            what: "body altered after signing",
            signature: Some(good.clone()),
            body: altered,
            status: 401,
            stored: 0,
        },
        Case {
            what: "escaped body's signature over the decoded body",
            signature: Some(escaped_sig.clone()),
            body: decoded,
            status: 401,
            stored: 0,
        },
        Case {
            what: "unicode-escaped body signed correctly",
            signature: Some(escaped_sig),
            body: escaped,
            status: 200,
            stored: 1,
        },
        Case {
            what: "plain body signed correctly",
            signature: Some(good),
            body,
            status: 200,
            stored: 1,
        },
    ];
    for case in cases {
        let before = stored_events(&running.gateway).await;
        let status = post_webhook(&running.gateway, case.signature.as_deref(), case.body).await;
        assert_eq!(status, case.status, "{}", case.what);
        let after = stored_events(&running.gateway).await;
        assert_eq!(after - before, case.stored, "events stored: {}", case.what);
    }
    running.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn verification_needs_the_exact_token() {
    Logs::global("trace");
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    let url = format!("http://{}/webhooks/messenger", running.gateway.http_addr);
    type Query<'a> = &'a [(&'a str, &'a str)];
    let cases: [(&str, Query, u16); 6] = [
        (
            "right token",
            &[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", VERIFY_TOKEN),
                ("hub.challenge", "1158201444"),
            ],
            200,
        ),
        (
            "wrong token",
            &[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", "verify-token-for-test"),
                ("hub.challenge", "1"),
            ],
            403,
        ),
        (
            "token with a suffix",
            &[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", "verify-token-for-tests "),
                ("hub.challenge", "1"),
            ],
            403,
        ),
        (
            "no token",
            &[("hub.mode", "subscribe"), ("hub.challenge", "1")],
            403,
        ),
        (
            "other mode",
            &[
                ("hub.mode", "unsubscribe"),
                ("hub.verify_token", VERIFY_TOKEN),
                ("hub.challenge", "1"),
            ],
            403,
        ),
        (
            "no challenge",
            &[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", VERIFY_TOKEN),
            ],
            403,
        ),
    ];
    for (what, query, status) in cases {
        let response = reqwest::Client::new()
            .get(&url)
            .query(query)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{what}");
        if status == 200 {
            assert_eq!(response.text().await.unwrap(), "1158201444", "{what}");
        }
    }
    running.gateway.shutdown().await.unwrap();
}

// ---- commands ----

#[tokio::test]
async fn a_non_admin_can_run_no_command_and_changes_nothing() {
    Logs::global("trace");
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;
    connect_page(&running.gateway, "page-token-unused");
    let before = page_snapshot(&running.gateway);

    let attempts = [
        "/facebook authorize".to_owned(),
        "/facebook unauthorize".to_owned(),
        format!("/facebook unauthorize {PAGE}"),
        "/facebook pages".to_owned(),
        format!("/facebook edit {PAGE}"),
        format!("/facebook edit {PAGE} department none"),
        format!("/facebook edit {PAGE} welcome Hi from bob"),
        format!("/facebook edit {PAGE} finished off"),
        format!("/facebook edit {PAGE} offline off"),
        format!("/facebook subscribe {PAGE}"),
        format!("/facebook unsubscribe {PAGE}"),
        "/facebook status".to_owned(),
        "authorize".to_owned(),
        format!("edit {PAGE} welcome bare"),
    ];
    // The list covers every command that needs an admin.
    let mut names: Vec<&str> = attempts
        .iter()
        .map(|text| match commands::parse(text, true) {
            Parsed::Command(command) => {
                assert!(command.needs_admin(), "{text}");
                command.name()
            }
            other => panic!("{text} does not parse as a command: {other:?}"),
        })
        .collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(
        names,
        [
            "authorize",
            "edit",
            "pages",
            "status",
            "subscribe",
            "unauthorize",
            "unsubscribe"
        ]
    );

    for (n, text) in attempts.iter().enumerate() {
        chat.sim.post("bob", &chat.bob_dm, text);
        let dm = chat.bob_dm.clone();
        eventually(&format!("refusal #{} for {text:?}", n + 1), || {
            chat.bot_messages(&dm)
                .iter()
                .filter(|m| m.contains("only Rocket.Chat admins"))
                .count()
                > n
        })
        .await;
    }
    let said = chat.bot_messages(&chat.bob_dm);
    assert_eq!(said.len(), attempts.len(), "only refusals: {said:#?}");
    assert!(
        said.iter().all(|m| !m.contains("http")),
        "no login link was handed out: {said:#?}"
    );
    assert_eq!(
        page_snapshot(&running.gateway),
        before,
        "the store is unchanged"
    );
    running.gateway.shutdown().await.unwrap();
}

#[tokio::test]
async fn commands_outside_direct_messages_with_the_bot_are_ignored() {
    Logs::global("trace");
    let chat = Chat::start().await;
    chat.sim.grant_permission("bot", "view-livechat-rooms");
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;
    connect_page(&running.gateway, "page-token-unused");
    let before = page_snapshot(&running.gateway);

    let rooms = [
        ("channel", chat.sim.channel("general", &["alice", BOT])),
        (
            "private group",
            chat.sim.private_group("ops", &["alice", BOT]),
        ),
        (
            "livechat room",
            chat.sim.livechat_room_with("visitor chat", &["alice", BOT]),
        ),
        (
            "direct message without the bot",
            chat.sim.direct_room("alice", "bob"),
        ),
    ];
    for (_, rid) in &rooms {
        for text in [
            "/facebook status".to_owned(),
            format!("/facebook edit {PAGE} welcome from a channel"),
            "facebook pages".to_owned(),
            "status".to_owned(),
        ] {
            chat.sim.post("alice", rid, &text);
        }
    }
    // The bot handles its messages in order: once it answers this, it has seen the others.
    chat.sim.post("alice", &chat.alice_dm, "/facebook help");
    chat.bot_says(&chat.alice_dm, |m| m.contains("authorize"))
        .await;
    for (what, rid) in &rooms {
        assert!(
            chat.bot_messages(rid).is_empty(),
            "the bot answered in a {what}"
        );
    }
    assert_eq!(chat.bot_messages(&chat.alice_dm).len(), 1);
    assert_eq!(
        page_snapshot(&running.gateway),
        before,
        "the store is unchanged"
    );
    running.gateway.shutdown().await.unwrap();
}

// ---- secrets ----

#[tokio::test]
async fn secrets_never_reach_the_log() {
    let logs = Logs::global("trace");
    let chat = Chat::start().await;
    let facebook = Facebook::start().await;
    let graph = &facebook.sim;
    graph.add_psid(PAGE, "6789", "Vera", "Visitor");
    let running = start_gateway_with(&chat, Some(&facebook), &password_credentials(), "").await;
    until_ready(&running.gateway).await;

    // A full run: the page connected through Facebook Login, commands, Meta's handshake (right
    // and wrong), bad and good webhooks, a visitor reaching a Livechat room, a dropped
    // Rocket.Chat link and the login that follows.
    chat.sim
        .post("alice", &chat.alice_dm, "/facebook authorize");
    let link = chat
        .bot_says(&chat.alice_dm, |m| m.contains(graph.url().as_str()))
        .await
        .msg;
    let link = link
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '<' || c == '>')
        .find(|word| word.starts_with(graph.url().as_str()))
        .unwrap()
        .to_owned();
    let browser = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let dialog = browser.get(&link).send().await.unwrap();
    let callback = dialog.headers()["location"].to_str().unwrap().replace(
        "http://127.0.0.1:8080",
        &format!("http://{}", running.gateway.http_addr),
    );
    let connected = browser.get(&callback).send().await.unwrap();
    assert_eq!(
        connected.status().as_u16(),
        200,
        "{:?}",
        connected.text().await
    );
    let page_token = graph.page_token(PAGE).expect("a page token was handed out");
    for text in [
        "/facebook status",
        "/facebook pages",
        &format!("/facebook edit {PAGE}"),
    ] {
        chat.sim.post("alice", &chat.alice_dm, text);
    }
    chat.bot_says(&chat.alice_dm, |m| m.contains("welcome"))
        .await;
    chat.sim.post("bob", &chat.bob_dm, "/facebook status");
    for token in [VERIFY_TOKEN, "wrong-token"] {
        reqwest::Client::new()
            .get(format!(
                "http://{}/webhooks/messenger",
                running.gateway.http_addr
            ))
            .query(&[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", token),
                ("hub.challenge", "42"),
            ])
            .send()
            .await
            .unwrap();
    }
    let body = message_body("6789", "m_secret_run", "where is my order?");
    assert_eq!(
        post_webhook(&running.gateway, Some("sha256=00"), body.clone()).await,
        401
    );
    let signature = webhook::signature(APP_SECRET, &body);
    assert_eq!(
        post_webhook(&running.gateway, Some(&signature), body).await,
        200
    );
    eventually("the visitor is registered in Livechat", || {
        !chat.sim.visitors().is_empty()
    })
    .await;
    let visitor_token = running.gateway.store.conversations().unwrap()[0]
        .visitor_token
        .as_str()
        .to_owned();
    let logins = chat.sim.stats().logins();
    chat.sim.drop_connections();
    eventually("a new login", || chat.sim.stats().logins() > logins).await;
    until_ready(&running.gateway).await;
    running.gateway.shutdown().await.unwrap();

    let text = logs.text();
    assert!(
        text.contains("webhook refused") && text.contains("command accepted"),
        "the capture holds the run's log"
    );
    for (what, secret) in [
        ("rocket.chat password", BOT_PASSWORD),
        ("app secret", APP_SECRET),
        ("verify token", VERIFY_TOKEN),
        ("page token", page_token.as_str()),
        ("visitor token", visitor_token.as_str()),
    ] {
        assert!(secret.len() >= 8, "{what} is long enough to search for");
        assert!(!text.contains(secret), "the {what} is in the log");
    }
}

// ---- limits ----

#[tokio::test]
async fn a_body_over_one_mebibyte_gets_413() {
    Logs::global("trace");
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    connect_page(&running.gateway, "page-token-unused");
    let mut body = message_body("6789", "m_big", "big");
    body.resize(omni_gateway::http::MAX_BODY_BYTES + 1, b' ');
    let signature = webhook::signature(APP_SECRET, &body);
    assert_eq!(
        post_webhook(&running.gateway, Some(&signature), body).await,
        413
    );
    assert_eq!(stored_events(&running.gateway).await, 0);

    // Exactly at the limit is still accepted.
    let mut body = message_body("6789", "m_max", "max");
    body.resize(omni_gateway::http::MAX_BODY_BYTES, b' ');
    let signature = webhook::signature(APP_SECRET, &body);
    assert_eq!(
        post_webhook(&running.gateway, Some(&signature), body).await,
        200
    );
    running.gateway.shutdown().await.unwrap();
}

/// Sends `head` on a fresh connection and returns what came back before the server closed it or
/// went quiet (an empty string when it closed without an answer).
async fn raw_exchange(gateway: &Gateway, head: &[u8]) -> String {
    let mut stream = TcpStream::connect(gateway.http_addr).await.unwrap();
    // The server may close while we are still writing; what it answered is what counts.
    let _ = stream.write_all(head).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn huge_request_heads_are_refused_and_the_server_stays_up() {
    Logs::global("trace");
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;

    let big_value = "x".repeat(omni_gateway::http::MAX_HEADER_BYTES + 1);
    let many_headers: String = (0..200).map(|n| format!("x-h{n}: v\r\n")).collect();
    let cases = [
        (
            "one huge header",
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {big_value}\r\n\r\n"),
        ),
        (
            "a huge request line",
            format!("GET /healthz?{big_value} HTTP/1.1\r\nhost: x\r\n\r\n"),
        ),
        (
            "too many headers",
            format!("GET /healthz HTTP/1.1\r\nhost: x\r\n{many_headers}\r\n"),
        ),
    ];
    for (what, head) in cases {
        let answer = raw_exchange(&running.gateway, head.as_bytes()).await;
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
            "{what}: {}",
            answer.lines().next().unwrap_or_default()
        );
        assert_eq!(healthz(&running.gateway).await, 200, "after {what}");
    }
    // A large but reasonable head is fine.
    let fine = format!(
        "GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\nx-ok: {}\r\n\r\n",
        "y".repeat(16 * 1024)
    );
    let answer = raw_exchange(&running.gateway, fine.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    running.gateway.shutdown().await.unwrap();
}

/// Raises this process's open-file limit as far as allowed and returns it.
fn raise_open_file_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
    }
    limit.rlim_cur
}

#[tokio::test]
async fn thousands_of_idle_connections_do_not_stop_healthz() {
    Logs::global("trace");
    // Both ends of every connection live in this process.
    let wanted: u64 = 2000;
    let sockets = wanted.min(raise_open_file_limit().saturating_sub(512) / 2);
    assert!(sockets >= 400, "too few file descriptors to test with");
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;

    let mut idle = Vec::new();
    for _ in 0..sockets {
        idle.push(TcpStream::connect(running.gateway.http_addr).await.unwrap());
    }
    // Half of them start a request and stall in the middle of the head.
    for stream in idle.iter_mut().step_by(2) {
        stream
            .write_all(b"POST /webhooks/messenger HTTP/1.1\r\nhost: x\r\n")
            .await
            .unwrap();
    }
    let started = tokio::time::Instant::now();
    assert_eq!(healthz(&running.gateway).await, 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "/healthz took {:?} with {sockets} idle connections",
        started.elapsed()
    );
    drop(idle);
    running.gateway.shutdown().await.unwrap();
}
