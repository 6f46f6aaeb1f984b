//! The Livechat visitor client against the Rocket.Chat simulator: the calls the inbound relay
//! makes, and the history paging the outbound back-fill relies on.

use std::time::Duration;

use omni_gateway::ids::{MessageId, VisitorToken};
use omni_gateway::rocketchat::livechat::{Visitor, is_room_problem};
use omni_gateway::rocketchat::rest::RestClient;
use omni_sim::rocketchat::{RocketChatSim, SimOptions};

async fn sim_with_agent() -> RocketChatSim {
    let sim = RocketChatSim::start(SimOptions {
        // The set-up `check` asks for: the REST rate limiter off.
        rest_rate_limiter: false,
        ..SimOptions::default()
    })
    .await
    .expect("simulator");
    sim.add_user("agent1", "pw", &["user", "livechat-agent"]);
    sim.set_agent_online("agent1", true);
    sim
}

fn client(sim: &RocketChatSim) -> RestClient {
    RestClient::new(&sim.url(), Duration::from_secs(10)).expect("client")
}

async fn register(rest: &RestClient, token: &VisitorToken) {
    rest.register_visitor(&Visitor {
        token,
        name: "Jane",
        department: None,
    })
    .await
    .expect("visitor registered");
}

#[tokio::test]
async fn history_pages_back_to_the_watermark_in_order() {
    let sim = sim_with_agent().await;
    let rest = client(&sim);
    let token = VisitorToken::new("fb-history-test");
    register(&rest, &token).await;
    let room = rest.visitor_room(&token).await.expect("room");
    assert!(room.created);

    // Distinct timestamps: the simulator stamps messages with its clock.
    let mut ids = Vec::new();
    for n in 0..250 {
        let id = MessageId::new(format!("m{n:03}"));
        rest.send_visitor_message(&token, &room.rid, &id, &format!("message {n}"))
            .await
            .expect("sent");
        ids.push(id);
        if n % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let all = rest
        .room_history(&token, &room.rid, 0)
        .await
        .expect("history");
    let texts: Vec<&str> = all
        .iter()
        .map(|m| m.text.as_str())
        .filter(|t| t.starts_with("message "))
        .collect();
    assert_eq!(texts.len(), 250, "every page was read");
    assert_eq!(texts.first(), Some(&"message 0"));
    assert_eq!(texts.last(), Some(&"message 249"), "oldest first");

    let watermark = all
        .iter()
        .find(|m| m.text == "message 199")
        .expect("present")
        .ts_ms;
    let newer = rest
        .room_history(&token, &room.rid, watermark)
        .await
        .expect("history");
    assert!(newer.iter().all(|m| m.ts_ms > watermark));
    assert!(newer.iter().any(|m| m.text == "message 249"));
    assert!(
        !newer.iter().any(|m| m.text == "message 100"),
        "nothing from before the watermark"
    );
}

#[tokio::test]
async fn a_repeated_message_id_counts_as_delivered_and_closed_rooms_are_recognised() {
    let sim = sim_with_agent().await;
    let rest = client(&sim);
    let token = VisitorToken::new("fb-repeat-test");
    register(&rest, &token).await;
    let room = rest.visitor_room(&token).await.expect("room");
    let id = MessageId::new("fb-repeated");
    rest.send_visitor_message(&token, &room.rid, &id, "once")
        .await
        .expect("first");
    rest.send_visitor_message(&token, &room.rid, &id, "once")
        .await
        .expect("the retry is accepted as delivered");
    // The simulator has its own id types; the room is the same.
    let sim_rid = omni_sim::ids::RoomId::new(room.rid.as_str());
    let copies = sim
        .messages(&sim_rid)
        .into_iter()
        .filter(|m| m.msg == "once")
        .count();
    assert_eq!(copies, 1);

    sim.close_room(&sim_rid, "agent1");
    let err = rest
        .send_visitor_message(
            &token,
            &room.rid,
            &MessageId::new("fb-after-close"),
            "hello again",
        )
        .await
        .expect_err("the room is closed");
    assert!(is_room_problem(&err), "{err}");
}

#[tokio::test]
async fn no_agent_online_is_a_typed_error_and_config_says_when_one_is() {
    let sim = RocketChatSim::start(SimOptions {
        // The set-up `check` asks for: the REST rate limiter off.
        rest_rate_limiter: false,
        ..SimOptions::default()
    })
    .await
    .expect("simulator");
    sim.add_user("agent1", "pw", &["user", "livechat-agent"]);
    let rest = client(&sim);
    let token = VisitorToken::new("fb-offline-test");
    register(&rest, &token).await;
    let err = rest
        .visitor_room(&token)
        .await
        .expect_err("nobody is online");
    assert_eq!(err.error_type(), Some("no-agent-online"), "{err}");
    assert!(!rest.livechat_online(&token, None).await.expect("config"));
    sim.set_agent_online("agent1", true);
    assert!(rest.livechat_online(&token, None).await.expect("config"));
    assert!(rest.visitor_room(&token).await.expect("a room now").created);
}
