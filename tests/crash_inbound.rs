//! Crash safety of the inbox with the real binary: webhooks are acknowledged while Rocket.Chat is
//! unreachable, the process is killed with SIGKILL, Rocket.Chat comes back, the binary starts
//! again on the same store, and every acknowledged event reaches a Livechat room exactly once.
//! The same run for Messenger and for Instagram Direct (whose batch also carries an unsend).

use std::collections::BTreeMap;
use std::time::Duration;

use omni_gateway::store::Department;
use omni_testkit::daemon::Installed;
use omni_testkit::messenger::{Facebook, PageSetup, now_ms};
use omni_testkit::{Chat, instagram, messenger};
use serde_json::Value;

const AGENT: &str = "agent.smith";
const CONVERSATIONS: usize = 4;
const PER_CONVERSATION: usize = 10;

#[derive(Clone, Copy)]
enum Platform {
    Messenger,
    Instagram,
}

impl Platform {
    /// A customer's text message, as a webhook body of this platform.
    fn text_body(self, customer: &str, mid: &str, ts: u64, text: &str) -> Vec<u8> {
        match self {
            Platform::Messenger => {
                messenger::body(&[messenger::text_event(customer, mid, ts, text)])
            }
            Platform::Instagram => {
                instagram::body(&[instagram::text_event(customer, mid, ts, text)])
            }
        }
    }

    /// Items sent after the burst: an Instagram customer unsends their first message (its
    /// `mid` again, `docs/instagram.md` §4.8), which must neither be lost nor taken for a
    /// redelivery.
    fn after_burst(self, ts: u64) -> Option<Vec<u8>> {
        let unsend: Value = instagram::deleted_event("psid-0", "m_0_0", ts);
        matches!(self, Platform::Instagram).then(|| instagram::body(&[unsend]))
    }
}

#[tokio::test]
async fn acknowledged_events_survive_sigkill_and_arrive_exactly_once() {
    run(Platform::Messenger).await;
}

#[tokio::test]
async fn acknowledged_instagram_events_survive_sigkill_and_arrive_exactly_once() {
    run(Platform::Instagram).await;
}

async fn run(platform: Platform) {
    let chat = Chat::start().await;
    chat.sim
        .add_user(AGENT, "agent-pw", &["user", "livechat-agent"]);
    let department = chat.sim.add_department("Sales", &[AGENT]);
    chat.sim.set_agent_online(AGENT, true);
    let fb = Facebook::start().await;

    // The page is connected before the daemon starts, as after an earlier `authorize`.
    let setup = || PageSetup {
        department: Some(Department {
            id: department.clone(),
            name: "Sales".into(),
        }),
        ..PageSetup::default()
    };
    let installed = match platform {
        Platform::Messenger => Installed::new(&chat, &fb, setup()).await,
        Platform::Instagram => Installed::with_instagram(&chat, &fb, setup(), setup()).await,
    };

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
                let body = platform.text_body(
                    &format!("psid-{c}"),
                    &format!("m_{c}_{n}"),
                    t0 + n as u64,
                    &format!("crash {c}/{n}"),
                );
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
    let unsend = platform.after_burst(t0 + PER_CONVERSATION as u64);
    if let Some(body) = &unsend {
        let status = fb
            .sim
            .deliver_webhook(&format!("{base}/webhooks/messenger"), body)
            .await
            .expect("the daemon answers")
            .status();
        assert_eq!(status.as_u16(), 200, "the unsend acknowledged");
    }
    daemon.kill();
    assert!(
        chat.sim.livechat_rooms().is_empty(),
        "nothing could be delivered while Rocket.Chat refused connections"
    );

    chat.sim.refuse_connections(false);
    let mut daemon = installed.start(omni_testkit::gateway_binary!());
    daemon.until_healthy(&http, &base).await;

    let want = CONVERSATIONS * PER_CONVERSATION + usize::from(unsend.is_some());
    let delivered = || {
        let mut by_room: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for room in chat.sim.livechat_rooms() {
            for m in chat.sim.messages(&room.id) {
                if m.token.is_some() {
                    // The unsend notice opens with a link to the message it quotes.
                    let text = match m.msg.lines().last() {
                        Some(notice) if notice.contains("unsent this message") => notice.to_owned(),
                        _ => m.msg,
                    };
                    by_room.entry(room.id.to_string()).or_default().push(text);
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
            let mut texts: Vec<String> = (0..PER_CONVERSATION)
                .map(|n| format!("crash {c}/{n}"))
                .collect();
            if c == 0 && unsend.is_some() {
                // The unsent message is marked in place, and the notice follows, once.
                texts[0] = "🗑️ (unsent by the customer)".into();
                texts.push("🗑️ _The customer unsent this message._".into());
            }
            texts
        })
        .collect();
    expected.sort();
    assert_eq!(conversations, expected, "exactly once, in order");
}
