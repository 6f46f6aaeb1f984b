//! Crash safety in both directions with the real binary: SIGKILL while customers' webhooks and
//! agents' replies are both in flight, agents writing while the process is dead, then a restart on
//! the same store. Every acknowledged webhook reaches its room once and in order; every agent
//! reply reaches the Send API once and in order, those written while the process was dead by
//! back-fill.
//!
//! A reply can be sent twice only if the kill falls between Meta's answer and the outbox removal.
//! The test closes that window: the Send API refuses (HTTP 503) from before the burst until after
//! the restart, so no send can succeed anywhere near the kill, and it asserts exactly once.
//!
//! The same run for Messenger and for Instagram Direct.

use std::time::Duration;

use omni_sim::graph::SimError;
use omni_sim::ids::RoomId;
use omni_testkit::daemon::Installed;
use omni_testkit::instagram::IG_ID;
use omni_testkit::messenger::{Facebook, PAGE_ID, PageSetup, now_ms};
use omni_testkit::traffic::{agent_replies, customer_messages, settle, text};
use omni_testkit::{Chat, PATIENCE};
use omni_testkit::{instagram, messenger};

const AGENT: &str = "agent.smith";
const CONVERSATIONS: usize = 4;
/// Webhooks each customer tries during the burst (the kill stops them well before).
const WEBHOOKS: usize = 400;
/// Replies each agent writes from the start of the burst; the kill falls in the middle.
const REPLIES: usize = 24;
const REPLY_EVERY: Duration = Duration::from_millis(25);
const KILL_AFTER: Duration = Duration::from_millis(300);
/// Replies each agent writes while the process is dead.
const WHILE_DEAD: usize = 3;

fn psid(c: usize) -> String {
    format!("psid-{c}")
}

#[derive(Clone, Copy)]
enum Platform {
    Messenger,
    Instagram,
}

/// The webhook of customer `c`'s `n`th message, stamped `ts`.
fn webhook(platform: Platform, c: usize, n: usize, ts: u64) -> Vec<u8> {
    let (mid, words) = (format!("m_{c}_{n}"), text(c, "m", n));
    match platform {
        Platform::Messenger => {
            messenger::body(&[messenger::text_event(&psid(c), &mid, ts, &words)])
        }
        Platform::Instagram => {
            instagram::body(&[instagram::text_event(&psid(c), &mid, ts, &words)])
        }
    }
}

/// What one customer's burst achieved: the messages acknowledged with 200, in order, and the
/// first one that was not (its POST failed when the process died), which Meta would retry.
struct Burst {
    acknowledged: Vec<usize>,
    unacknowledged: Option<usize>,
}

#[tokio::test]
async fn sigkill_during_webhooks_and_replies_loses_and_repeats_nothing() {
    run(Platform::Messenger).await;
}

#[tokio::test]
async fn sigkill_during_instagram_traffic_loses_and_repeats_nothing() {
    run(Platform::Instagram).await;
}

async fn run(platform: Platform) {
    let chat = Chat::start().await;
    chat.sim
        .add_user(AGENT, "agent-pw", &["user", "livechat-agent"]);
    chat.sim.set_agent_online(AGENT, true);
    let fb = Facebook::start().await;
    for c in 0..CONVERSATIONS {
        match platform {
            Platform::Messenger => fb
                .sim
                .add_psid(PAGE_ID, &psid(c), "Customer", &c.to_string()),
            Platform::Instagram => fb
                .sim
                .add_igsid(IG_ID, &psid(c), None, &format!("customer{c}")),
        }
    }
    let installed = match platform {
        Platform::Messenger => Installed::new(&chat, &fb, PageSetup::default()).await,
        Platform::Instagram => {
            Installed::with_instagram(&chat, &fb, PageSetup::default(), PageSetup::default()).await
        }
    };
    let http = reqwest::Client::new();
    let url = format!("{}/webhooks/messenger", installed.base);
    let mut daemon = installed.start(omni_testkit::gateway_binary!());
    daemon.until_healthy(&http, &installed.base).await;

    // Warm-up: every conversation has its room and one reply sent, so its stream is live.
    let t0 = now_ms();
    for c in 0..CONVERSATIONS {
        let answer = fb
            .sim
            .deliver_webhook(&url, &webhook(platform, c, 0, t0))
            .await
            .expect("the daemon answers");
        assert_eq!(answer.status().as_u16(), 200);
    }
    let mut rooms: Vec<RoomId> = Vec::new();
    for c in 0..CONVERSATIONS {
        let first = text(c, "m", 0);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let rid = loop {
            let found = chat
                .sim
                .livechat_rooms()
                .into_iter()
                .find(|r| chat.sim.messages(&r.id).iter().any(|m| m.msg == first));
            if let Some(room) = found {
                break room.id;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{first:?} never reached a room; the daemon's log:\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        chat.sim.agent_reply(AGENT, &rid, &text(c, "r", 0));
        rooms.push(rid);
    }
    for c in 0..CONVERSATIONS {
        let first = text(c, "r", 0);
        fb.sim
            .wait_for_sent(|m| m.text.as_deref() == Some(first.as_str()), PATIENCE)
            .await
            .unwrap_or_else(|| panic!("{first:?} not sent; log:\n{}", daemon.log()));
    }
    // Long past the outbox removal of the warm-up replies; from now on no send can succeed.
    tokio::time::sleep(Duration::from_millis(200)).await;
    fb.sim
        .fail_next("/messages", usize::MAX, SimError::Http5xx(503));

    // The burst: customers post as fast as the daemon acknowledges, agents reply steadily.
    let customers: Vec<_> = (0..CONVERSATIONS)
        .map(|c| {
            let sim = fb.sim.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let mut burst = Burst {
                    acknowledged: Vec::new(),
                    unacknowledged: None,
                };
                for n in 1..=WEBHOOKS {
                    let answer = sim
                        .deliver_webhook(&url, &webhook(platform, c, n, now_ms()))
                        .await;
                    match answer.map(|a| a.status().as_u16()) {
                        Ok(200) => burst.acknowledged.push(n),
                        _ => {
                            burst.unacknowledged = Some(n);
                            break;
                        }
                    }
                }
                burst
            })
        })
        .collect();
    let agents: Vec<_> = rooms
        .iter()
        .enumerate()
        .map(|(c, rid)| {
            let sim = chat.sim.clone();
            let rid = rid.clone();
            tokio::spawn(async move {
                for n in 1..=REPLIES {
                    sim.agent_reply(AGENT, &rid, &text(c, "r", n));
                    tokio::time::sleep(REPLY_EVERY).await;
                }
            })
        })
        .collect();
    tokio::time::sleep(KILL_AFTER).await;
    daemon.kill();

    let mut bursts = Vec::new();
    for customer in customers {
        bursts.push(customer.await.expect("customer task"));
    }
    for agent in agents {
        agent.await.expect("agent task");
    }
    for (c, burst) in bursts.iter().enumerate() {
        assert!(
            !burst.acknowledged.is_empty() && burst.unacknowledged.is_some(),
            "conversation {c}: the kill fell inside the burst (acknowledged {:?}, then {:?})",
            burst.acknowledged.len(),
            burst.unacknowledged
        );
    }
    for (c, rid) in rooms.iter().enumerate() {
        for n in REPLIES + 1..=REPLIES + WHILE_DEAD {
            chat.sim.agent_reply(AGENT, rid, &text(c, "r", n));
        }
    }
    let sent_before_restart = agent_replies(&fb.sim);

    fb.sim.clear_faults();
    let mut daemon = installed.start(omni_testkit::gateway_binary!());
    daemon.until_healthy(&http, &installed.base).await;
    // Meta retries what it did not see acknowledged.
    for (c, burst) in bursts.iter().enumerate() {
        if let Some(n) = burst.unacknowledged {
            let answer = fb
                .sim
                .deliver_webhook(&url, &webhook(platform, c, n, now_ms()))
                .await
                .expect("the restarted daemon answers");
            assert_eq!(answer.status().as_u16(), 200, "Meta's retry acknowledged");
        }
    }

    let want_messages = (0..CONVERSATIONS)
        .map(|c| {
            let burst = &bursts[c];
            let numbers = std::iter::once(0)
                .chain(burst.acknowledged.iter().copied())
                .chain(burst.unacknowledged);
            (format!("c{c}"), numbers.map(|n| text(c, "m", n)).collect())
        })
        .collect();
    let want_replies = (0..CONVERSATIONS)
        .map(|c| {
            let replies = (0..=REPLIES + WHILE_DEAD).map(|n| text(c, "r", n));
            (psid(c), replies.collect())
        })
        .collect();
    let took = settle(
        Duration::from_secs(20),
        || customer_messages(&chat.sim) == want_messages && agent_replies(&fb.sim) == want_replies,
        || {
            format!(
                "rooms: {:#?}\nsent: {:#?}\nthe daemon's log:\n{}",
                customer_messages(&chat.sim),
                agent_replies(&fb.sim),
                daemon.log()
            )
        },
    )
    .await;
    eprintln!(
        "after the restart, everything arrived within {took:?}; acknowledged before the kill: {:?}",
        bursts
            .iter()
            .map(|b| b.acknowledged.len())
            .collect::<Vec<_>>()
    );
    assert_eq!(
        sent_before_restart.values().map(Vec::len).sum::<usize>(),
        CONVERSATIONS,
        "only the warm-up replies were sent before the restart"
    );
    assert_eq!(
        customer_messages(&chat.sim),
        want_messages,
        "once, in order"
    );
    assert_eq!(agent_replies(&fb.sim), want_replies, "once, in order");
}
