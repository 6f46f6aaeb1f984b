//! The gateway against a Rocket.Chat with its REST rate limiter on, as a real server ships:
//! `livechat/visitor` and `livechat/room` allow 5 calls per 60 s per client IP, every other
//! unauthenticated route the default 10 per 60 s, and `livechat/messages.history/:rid` is one
//! bucket for all rooms. The windows are shortened with the simulator's `rate_window_divisor`;
//! the ignored test runs the same burst at real timing for BENCHMARKS.md.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use omni_gateway::store::Department;
use omni_sim::rocketchat::{ServerVersion, SimOptions};
use omni_testkit::messenger::{
    Facebook, PageSetup, attachment_event, body, connect_page, now_ms, post_webhook, start_gateway,
    text_event,
};
use omni_testkit::traffic::{agent_replies, customer_messages, settle, text};
use omni_testkit::{Chat, Running, until_ready};

const AGENT: &str = "agent.smith";
const CUSTOMERS: usize = 20;
const PER_CUSTOMER: usize = 3;

struct World {
    chat: Chat,
    fb: Facebook,
    running: Running,
}

/// Both simulators with the limiter on (windows divided by `divisor`), an online agent, and a
/// gateway with the page connected.
async fn world(divisor: u32) -> World {
    world_on(ServerVersion::default(), divisor).await
}

/// The same world on a simulator answering as `version`.
async fn world_on(version: ServerVersion, divisor: u32) -> World {
    let chat = Chat::start_with(SimOptions {
        rest_rate_limiter: true,
        rate_window_divisor: divisor,
        version,
        ..SimOptions::default()
    })
    .await;
    chat.sim
        .add_user(AGENT, "agent-pw", &["user", "livechat-agent"]);
    let department = chat.sim.add_department("Sales", &[AGENT]);
    chat.sim.set_agent_online(AGENT, true);
    let fb = Facebook::start().await;
    let running = start_gateway(&chat, &fb).await;
    until_ready(&running.gateway).await;
    connect_page(
        &running.gateway,
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
    World { chat, fb, running }
}

/// Twenty new customers write three messages each at once. Returns how long until every message
/// was in its room.
async fn burst(divisor: u32, within: Duration) -> Duration {
    let world = world(divisor).await;
    world.chat.sim.record_rest_requests();
    let addr = world.running.gateway.http_addr;
    let t0 = now_ms();
    let started = Instant::now();
    let deliveries = (0..CUSTOMERS).map(|c| {
        let items: Vec<_> = (0..PER_CUSTOMER)
            .map(|n| {
                text_event(
                    &format!("psid-{c}"),
                    &format!("m-{c}-{n}"),
                    t0 + n as u64,
                    &text(c, "m", n),
                )
            })
            .collect();
        let fb = &world.fb;
        async move { post_webhook(fb, addr, &body(&items)).await }
    });
    for status in futures_util::future::join_all(deliveries).await {
        assert_eq!(status, StatusCode::OK);
    }
    let expected: BTreeMap<String, Vec<String>> = (0..CUSTOMERS)
        .map(|c| {
            (
                format!("c{c}"),
                (0..PER_CUSTOMER).map(|n| text(c, "m", n)).collect(),
            )
        })
        .collect();
    settle(
        within,
        || customer_messages(&world.chat.sim) == expected,
        || format!("{:#?}", customer_messages(&world.chat.sim)),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        customer_messages(&world.chat.sim),
        expected,
        "every message once, in order"
    );
    let mut registrations: BTreeMap<String, usize> = BTreeMap::new();
    for request in world.chat.sim.rest_requests() {
        if request["route"] == "/api/v1/livechat/visitor" && request["method"] == "POST" {
            let token = request["body"]["visitor"]["token"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            *registrations.entry(token).or_default() += 1;
        }
    }
    assert_eq!(registrations.len(), CUSTOMERS, "{registrations:?}");
    assert!(
        registrations.values().all(|n| *n <= 2),
        "at most two livechat/visitor calls per customer (one refused, one accepted): {registrations:?}"
    );
    world.running.stop().await;
    took
}

#[tokio::test]
async fn a_burst_of_new_customers_under_the_livechat_limits_arrives_once_in_order() {
    // 5 per second for livechat/visitor and livechat/room, 10 per second elsewhere.
    burst(60, Duration::from_secs(60)).await;
}

/// A customer sends a dozen photos at once. `livechat/upload/:rid` has its own limit of 5 per
/// 10 s on 8.x and the default 10 per 60 s before (`docs/rocketchat.md` §5), so the gateway meets
/// a 429 in either mode, at a different photo: each arrives once, in order.
#[tokio::test]
async fn a_burst_of_photos_arrives_once_in_order_under_each_versions_upload_limit() {
    const PHOTOS: usize = 12;
    for version in [ServerVersion::V7, ServerVersion::V8] {
        let world = world_on(version, 10).await;
        let t0 = now_ms();
        let items: Vec<_> = (0..PHOTOS)
            .map(|n| {
                let name = format!("photo-{n:02}.png");
                let url = world
                    .fb
                    .cdn
                    .put(&name, "image/png", format!("png {n}").into_bytes());
                attachment_event(
                    "psid-1",
                    &format!("m-photo-{n}"),
                    t0 + n as u64,
                    "image",
                    &url,
                )
            })
            .collect();
        let status = post_webhook(&world.fb, world.running.gateway.http_addr, &body(&items)).await;
        assert_eq!(status, StatusCode::OK);
        let names = || -> Vec<String> {
            world
                .chat
                .sim
                .livechat_rooms()
                .iter()
                .flat_map(|room| world.chat.sim.messages(&room.id))
                .filter(|m| m.token.is_some())
                .filter_map(|m| m.file.map(|f| f.name))
                .collect()
        };
        let expected: Vec<String> = (0..PHOTOS).map(|n| format!("photo-{n:02}.png")).collect();
        settle(
            Duration::from_secs(60),
            || names() == expected,
            || format!("{version:?}: {:#?}", names()),
        )
        .await;
        assert_eq!(names(), expected, "{version:?}: every photo once, in order");
        let uploads = world
            .chat
            .sim
            .stats()
            .rest_calls_by_route
            .get("POST /api/v1/livechat/upload/{rid}")
            .copied()
            .unwrap_or(0);
        assert!(
            uploads > PHOTOS,
            "{version:?}: the upload limit refused a call on the way ({uploads} calls)"
        );
        world.running.stop().await;
    }
}

/// The same burst at the real 5-per-60-s limits; run it with
/// `cargo test --test livechat_limits -- --ignored --nocapture` (about four minutes).
#[tokio::test]
#[ignore = "runs at real rate-limit timing, about four minutes"]
async fn a_burst_of_new_customers_at_real_timing() {
    let took = burst(1, Duration::from_secs(900)).await;
    println!(
        "{CUSTOMERS} new customers × {PER_CUSTOMER} messages under the real limits: {:.1} s",
        took.as_secs_f64()
    );
}

/// After a reconnect with more open rooms than the shared `messages.history` bucket holds, the
/// back-fill waits out the 429s until every room is caught up: no agent reply is lost.
#[tokio::test]
async fn back_fill_of_more_rooms_than_the_history_bucket_loses_no_reply() {
    const ROOMS: usize = 14;
    let world = world(20).await;
    let addr = world.running.gateway.http_addr;
    let t0 = now_ms();
    for c in 0..ROOMS {
        let items = [text_event(
            &format!("psid-{c}"),
            &format!("m-{c}"),
            t0,
            &text(c, "m", 0),
        )];
        assert_eq!(
            post_webhook(&world.fb, addr, &body(&items)).await,
            StatusCode::OK
        );
    }
    settle(
        Duration::from_secs(60),
        || customer_messages(&world.chat.sim).len() == ROOMS,
        || format!("{:#?}", customer_messages(&world.chat.sim)),
    )
    .await;
    // Replies written while the gateway's socket is down reach it only through the back-fill.
    world.chat.sim.refuse_connections(true);
    world.chat.sim.drop_connections();
    let rooms = world.chat.sim.livechat_rooms();
    assert_eq!(rooms.len(), ROOMS);
    for room in &rooms {
        let tag = customer_messages_in(&world.chat, &room.id);
        world
            .chat
            .sim
            .agent_reply(AGENT, &room.id, &format!("{tag} reply"));
    }
    world.chat.sim.refuse_connections(false);
    settle(
        Duration::from_secs(60),
        || {
            agent_replies(&world.fb.sim)
                .values()
                .map(Vec::len)
                .sum::<usize>()
                == ROOMS
        },
        || format!("{:#?}", agent_replies(&world.fb.sim)),
    )
    .await;
    let replies = agent_replies(&world.fb.sim);
    assert_eq!(replies.len(), ROOMS, "{replies:#?}");
    for (psid, texts) in &replies {
        let c = psid.trim_start_matches("psid-");
        assert_eq!(texts, &[format!("c{c} reply")], "{psid}");
    }
    world.running.stop().await;
}

/// The conversation tag (`c3`) of a room's first customer message.
fn customer_messages_in(chat: &Chat, rid: &omni_sim::ids::RoomId) -> String {
    chat.sim
        .messages(rid)
        .into_iter()
        .find(|m| m.token.is_some())
        .and_then(|m| m.msg.split(' ').next().map(str::to_owned))
        .unwrap_or_default()
}
