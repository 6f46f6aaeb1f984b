//! Faults at the far ends, with the real gateway between the two simulators: Rocket.Chat down for
//! 30 s with the DDP socket dropped while customers write and agents reply, Graph 5xx/613 storms
//! over many conversations, and Meta timestamps far from our clock. The promise under test:
//! nothing acknowledged is lost, nothing arrives twice, and each conversation keeps its order.

use std::time::Duration;

use omni_sim::graph::SimError;
use omni_sim::ids::RoomId;
use omni_testkit::logs::Logs;
use omni_testkit::messenger::{
    Facebook, PAGE_ID, PageSetup, body, connect_page, now_ms, post_webhook, start_gateway,
    text_event,
};
use omni_testkit::traffic::{agent_replies, customer_messages, settle, text};
use omni_testkit::{Chat, PATIENCE, Running, eventually, until_ready};
use serde_json::Value;

const AGENT: &str = "agent.smith";
const YEAR_MS: u64 = 365 * 24 * 3600 * 1000;

/// Both simulators, an online agent, and a gateway with the page connected; `conversations`
/// customers (`psid-0`…) known to the Graph simulator.
struct World {
    chat: Chat,
    fb: Facebook,
    running: Running,
    conversations: usize,
    logs: Logs,
}

impl World {
    async fn start(conversations: usize) -> World {
        let logs = Logs::capture("omni_gateway=info");
        let chat = Chat::start().await;
        chat.sim
            .add_user(AGENT, "agent-pw", &["user", "livechat-agent"]);
        chat.sim.set_agent_online(AGENT, true);
        let fb = Facebook::start().await;
        for c in 0..conversations {
            fb.sim
                .add_psid(PAGE_ID, &psid(c), "Customer", &c.to_string());
        }
        let running = start_gateway(&chat, &fb).await;
        until_ready(&running.gateway).await;
        connect_page(&running.gateway, &fb, PageSetup::default()).await;
        World {
            chat,
            fb,
            running,
            conversations,
            logs,
        }
    }

    /// One signed webhook carrying `items`, which must be acknowledged.
    async fn post_ok(&self, items: &[Value]) {
        let status = post_webhook(&self.fb, self.running.gateway.http_addr, &body(items)).await;
        assert_eq!(status.as_u16(), 200, "webhook acknowledged");
    }

    /// The customer of conversation `c` writes `text` (mid derived from the text).
    async fn customer_writes(&self, c: usize, text: &str, timestamp_ms: u64) {
        self.post_ok(&[text_event(
            &psid(c),
            &format!("m_{}", text.replace(' ', "_")),
            timestamp_ms,
            text,
        )])
        .await;
    }

    /// Every conversation writes once and gets its room and welcome; returns the rooms.
    async fn open_rooms(&self) -> Vec<RoomId> {
        for c in 0..self.conversations {
            self.customer_writes(c, &text(c, "m", 0), now_ms()).await;
        }
        let mut rooms = Vec::new();
        for c in 0..self.conversations {
            rooms.push(self.room_of(c).await);
        }
        // The welcome is best effort: let it through before any fault is armed.
        eventually("every customer welcomed", || {
            self.fb
                .sim
                .sent_messages()
                .iter()
                .filter(|m| m.metadata.as_deref() == Some("omni-gateway:welcome"))
                .count()
                == self.conversations
        })
        .await;
        rooms
    }

    /// The room conversation `c`'s first message reached.
    async fn room_of(&self, c: usize) -> RoomId {
        let first = text(c, "m", 0);
        let mut found = None;
        eventually(&format!("{first:?} in a room"), || {
            found = self.chat.sim.livechat_rooms().into_iter().find_map(|r| {
                self.chat
                    .sim
                    .messages(&r.id)
                    .iter()
                    .any(|m| m.msg == first)
                    .then_some(r.id)
            });
            found.is_some()
        })
        .await;
        found.expect("room found")
    }

    async fn stop(self) {
        self.running.stop().await;
    }
}

fn psid(c: usize) -> String {
    format!("psid-{c}")
}

/// The expected record of each conversation: `what0`..`what{n-1}`, keyed as the ledgers key it.
fn expected<K: Ord>(
    conversations: usize,
    key: impl Fn(usize) -> K,
    texts: impl Fn(usize) -> Vec<String>,
) -> std::collections::BTreeMap<K, Vec<String>> {
    (0..conversations).map(|c| (key(c), texts(c))).collect()
}

#[tokio::test]
async fn graph_storms_send_every_reply_once_in_order() {
    const CONVERSATIONS: usize = 8;
    const REPLIES: usize = 6;
    let world = World::start(CONVERSATIONS).await;
    let rooms = world.open_rooms().await;

    // A storm of every transient kind Meta answers, consumed by whichever sends come first.
    let storm = [
        SimError::Http5xx(503),
        SimError::Throttled {
            code: 613,
            regain_minutes: 0,
        },
        SimError::Graph {
            code: 2,
            subcode: None,
            http_status: 500,
        },
        SimError::Http5xx(502),
        SimError::Graph {
            code: 1200,
            subcode: None,
            http_status: 400,
        },
    ];
    for fault in &storm {
        world
            .fb
            .sim
            .fail_next("/messages", CONVERSATIONS, fault.clone());
    }
    let faults_before = world.fb.sim.stats().injected_faults;
    for n in 0..REPLIES {
        for (c, rid) in rooms.iter().enumerate() {
            world.chat.sim.agent_reply(AGENT, rid, &text(c, "r", n));
        }
    }

    let want = expected(CONVERSATIONS, psid, |c| {
        (0..REPLIES).map(|n| text(c, "r", n)).collect()
    });
    let took = settle(
        Duration::from_secs(12),
        || agent_replies(&world.fb.sim) == want,
        || format!("{:#?}", agent_replies(&world.fb.sim)),
    )
    .await;
    assert_eq!(
        agent_replies(&world.fb.sim),
        want,
        "each reply once, in order"
    );
    assert_eq!(
        world.fb.sim.stats().injected_faults - faults_before,
        (storm.len() * CONVERSATIONS) as u64,
        "the whole storm hit the gateway"
    );
    eprintln!("graph storm: all replies sent {took:?} after the first reply");

    let outages = world.logs.lines(&["outage: retrying", "facebook send api"]);
    let recoveries = world.logs.lines(&["outage over", "facebook send api"]);
    assert_eq!(outages.len(), 1, "one warning per outage: {outages:#?}");
    assert_eq!(recoveries.len(), 1, "one line at recovery: {recoveries:#?}");
    world.stop().await;
}

#[tokio::test]
async fn meta_timestamps_far_from_our_clock_keep_timestamp_then_arrival_order() {
    const CONVERSATIONS: usize = 3;
    let world = World::start(CONVERSATIONS).await;
    let now = now_ms();
    // (label, timestamp) in the order they arrive: years in the past and the future, and equal
    // timestamps that must keep their arrival order.
    let arrivals = [
        ("future", now + 10 * YEAR_MS),
        ("now-a", now),
        ("past-a", now - 10 * YEAR_MS),
        ("now-b", now),
        ("past-b", now - 10 * YEAR_MS),
        ("epoch", 1),
        ("now-c", now),
    ];
    let order = [
        "epoch", "past-a", "past-b", "now-a", "now-b", "now-c", "future",
    ];

    // All of a conversation's events in one webhook: they wait in the inbox together.
    for c in 0..CONVERSATIONS {
        let items: Vec<Value> = arrivals
            .iter()
            .map(|(label, ts)| {
                let t = format!("c{c} {label}");
                text_event(&psid(c), &format!("m_{c}_{label}"), *ts, &t)
            })
            .collect();
        world.post_ok(&items).await;
    }
    let want = expected(
        CONVERSATIONS,
        |c| format!("c{c}"),
        |c| order.iter().map(|label| format!("c{c} {label}")).collect(),
    );
    settle(
        PATIENCE,
        || customer_messages(&world.chat.sim) == want,
        || format!("{:#?}", customer_messages(&world.chat.sim)),
    )
    .await;
    assert_eq!(customer_messages(&world.chat.sim), want);

    // One webhook per event while Rocket.Chat is down: they wait in the inbox together too, and
    // the first one to arrive must not jump the queue because a worker was already retrying it.
    let late = CONVERSATIONS;
    world
        .fb
        .sim
        .add_psid(PAGE_ID, &psid(late), "Customer", "late");
    world.chat.sim.refuse_connections(true);
    for (label, ts) in arrivals {
        world
            .customer_writes(late, &format!("c{late} {label}"), ts)
            .await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    world.chat.sim.refuse_connections(false);
    let late_want: Vec<String> = order.iter().map(|l| format!("c{late} {l}")).collect();
    settle(
        PATIENCE,
        || customer_messages(&world.chat.sim).get(&format!("c{late}")) == Some(&late_want),
        || format!("{:#?}", customer_messages(&world.chat.sim)),
    )
    .await;
    assert_eq!(
        customer_messages(&world.chat.sim).get(&format!("c{late}")),
        Some(&late_want)
    );
    world.stop().await;
}

#[tokio::test]
async fn rocketchat_down_30s_with_the_socket_dropped_loses_and_repeats_nothing() {
    const CONVERSATIONS: usize = 4;
    const OUTAGE: Duration = Duration::from_secs(30);
    /// Rounds of traffic (each conversation writes once and its agent replies once per round).
    const BEFORE: usize = 3;
    const DURING: usize = 12;
    const AFTER: usize = 3;
    let world = World::start(CONVERSATIONS).await;
    let rooms = world.open_rooms().await;
    let connections = world.chat.sim.stats().ws_connections;

    let round = |n: usize| {
        let world = &world;
        let rooms = &rooms;
        async move {
            for (c, rid) in rooms.iter().enumerate() {
                world
                    .customer_writes(c, &text(c, "m", n + 1), now_ms())
                    .await;
                world.chat.sim.agent_reply(AGENT, rid, &text(c, "r", n));
            }
        }
    };
    for n in 0..BEFORE {
        round(n).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.chat.sim.refuse_connections(true);
    world.chat.sim.drop_connections();
    let outage_started = tokio::time::Instant::now();
    let health = world.running.gateway.health.clone();
    eventually("the gateway sees the link down", || {
        health.readiness().is_err()
    })
    .await;
    for n in BEFORE..BEFORE + DURING {
        round(n).await;
        tokio::time::sleep(OUTAGE / DURING as u32).await;
    }
    tokio::time::sleep(OUTAGE.saturating_sub(outage_started.elapsed())).await;
    world.chat.sim.refuse_connections(false);
    let recovered = tokio::time::Instant::now();
    for n in BEFORE + DURING..BEFORE + DURING + AFTER {
        round(n).await;
    }

    let rounds = BEFORE + DURING + AFTER;
    let customers = expected(
        CONVERSATIONS,
        |c| format!("c{c}"),
        |c| (0..=rounds).map(|n| text(c, "m", n)).collect(),
    );
    let replies = expected(CONVERSATIONS, psid, |c| {
        (0..rounds).map(|n| text(c, "r", n)).collect()
    });
    settle(
        Duration::from_secs(40),
        || {
            customer_messages(&world.chat.sim) == customers
                && agent_replies(&world.fb.sim) == replies
        },
        || {
            format!(
                "rooms: {:#?}\nsent: {:#?}",
                customer_messages(&world.chat.sim),
                agent_replies(&world.fb.sim)
            )
        },
    )
    .await;
    eprintln!(
        "rocket.chat outage of {:?}: everything delivered {:?} after it ended",
        recovered - outage_started,
        recovered.elapsed()
    );
    assert_eq!(customer_messages(&world.chat.sim), customers);
    assert_eq!(agent_replies(&world.fb.sim), replies);
    assert!(
        world.chat.sim.stats().ws_connections > connections,
        "reconnected"
    );
    let outages = world.logs.lines(&["outage: retrying", "rocket.chat"]);
    assert_eq!(outages.len(), 1, "one warning per outage: {outages:#?}");
    world.stop().await;
}
