//! Crash safety of the inbox with the real binary: webhooks are acknowledged while Rocket.Chat is
//! unreachable, the process is killed with SIGKILL, Rocket.Chat comes back, the binary starts
//! again on the same store, and every acknowledged event reaches a Livechat room exactly once.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use omni_gateway::config::Config;
use omni_gateway::store::{Department, Store, TokenKey};
use support::daemon::{Daemon, free_port};
use support::messenger::{Facebook, PageSetup, body, now_ms, page_record, text_event};
use support::{Chat, config_text_with, password_credentials};

const AGENT: &str = "agent.smith";
const CONVERSATIONS: usize = 4;
const PER_CONVERSATION: usize = 10;

#[tokio::test]
async fn acknowledged_events_survive_sigkill_and_arrive_exactly_once() {
    let chat = Chat::start().await;
    chat.sim
        .add_user(AGENT, "agent-pw", &["user", "livechat-agent"]);
    let department = chat.sim.add_department("Sales", &[AGENT]);
    chat.sim.set_agent_online(AGENT, true);
    let fb = Facebook::start().await;

    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let text = config_text_with(
        chat.sim.url().as_str().trim_end_matches('/'),
        fb.sim.url().as_str(),
        &dir.path().join("data"),
        &password_credentials(),
        "",
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"127.0.0.1:{port}\""),
    );
    let config_path = dir.path().join("bot.toml");
    std::fs::write(&config_path, &text).expect("bot.toml written");

    // The page is connected before the daemon starts, as after an earlier `authorize`.
    let config = Config::parse(&text, &config_path, &|_| None).expect("valid config");
    {
        let key = TokenKey::load_or_create(&config.store.key_file).expect("token key");
        let store = Store::open(&config.store.path, key, config.store.cache_capacity_bytes)
            .expect("store opens");
        let page = page_record(
            &fb,
            PageSetup {
                department: Some(Department {
                    id: department,
                    name: "Sales".into(),
                }),
                ..PageSetup::default()
            },
        )
        .await;
        store.put_page(&page).expect("page stored");
        store.flush_blocking().expect("page flushed");
    }

    chat.sim.refuse_connections(true);
    let log = dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&config_path, log.clone());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    daemon.until_healthy(&http, &base).await;

    // Every event is acknowledged; the conversations' webhooks race each other.
    let t0 = now_ms();
    let posts = (0..CONVERSATIONS).map(|c| {
        let sim = fb.sim.clone();
        let url = format!("{base}/webhooks/messenger");
        tokio::spawn(async move {
            for n in 0..PER_CONVERSATION {
                let body = body(&[text_event(
                    &format!("psid-{c}"),
                    &format!("m_{c}_{n}"),
                    t0 + n as u64,
                    &format!("crash {c}/{n}"),
                )]);
                let status = sim
                    .deliver_webhook(&url, &body)
                    .await
                    .expect("the daemon answers")
                    .status();
                assert_eq!(status.as_u16(), 200, "event {c}/{n} acknowledged");
            }
        })
    });
    for post in futures_util::future::join_all(posts).await {
        post.expect("all webhooks acknowledged");
    }
    daemon.kill();
    assert!(
        chat.sim.livechat_rooms().is_empty(),
        "nothing could be delivered while Rocket.Chat refused connections"
    );

    chat.sim.refuse_connections(false);
    let daemon = Daemon::start(&config_path, log);
    daemon.until_healthy(&http, &base).await;

    let want = CONVERSATIONS * PER_CONVERSATION;
    let delivered = || {
        let mut by_room: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for room in chat.sim.livechat_rooms() {
            for m in chat.sim.messages(&room.id) {
                if m.token.is_some() {
                    by_room.entry(room.id.to_string()).or_default().push(m.msg);
                }
            }
        }
        by_room
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while delivered().values().map(Vec::len).sum::<usize>() < want {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {:?} delivered; the daemon's log:\n{}",
            delivered(),
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Room for a late duplicate to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rooms = delivered();
    assert_eq!(
        rooms.len(),
        CONVERSATIONS,
        "one room per conversation: {rooms:#?}"
    );
    let mut conversations: Vec<Vec<String>> = rooms.into_values().collect();
    conversations.sort();
    let mut expected: Vec<Vec<String>> = (0..CONVERSATIONS)
        .map(|c| {
            (0..PER_CONVERSATION)
                .map(|n| format!("crash {c}/{n}"))
                .collect()
        })
        .collect();
    expected.sort();
    assert_eq!(conversations, expected, "exactly once, in order");
}
