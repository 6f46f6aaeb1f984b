//! Crash safety of the inbox with the real binary: webhooks are acknowledged while Rocket.Chat is
//! unreachable, the process is killed with SIGKILL, Rocket.Chat comes back, the binary starts
//! again on the same store, and every acknowledged event reaches a Livechat room exactly once.

use std::collections::BTreeMap;
use std::time::Duration;

use omni_gateway::store::Department;
use omni_testkit::Chat;
use omni_testkit::daemon::Installed;
use omni_testkit::messenger::{Facebook, PageSetup, body, now_ms, text_event};

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

    // The page is connected before the daemon starts, as after an earlier `authorize`.
    let installed = Installed::new(
        &chat,
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

    chat.sim.refuse_connections(true);
    let mut daemon = installed.start(omni_testkit::gateway_binary!());
    let base = installed.base.clone();
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
    let mut daemon = installed.start(omni_testkit::gateway_binary!());
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
