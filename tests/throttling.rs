//! An admin learns about Rocket.Chat's rate limiting: 429s are counted per route, shown by
//! `/facebook status` and `/metrics` for the last hour, and `check` reads them from the running
//! daemon and says what the Livechat routes' limits mean for new conversations.

use omni_gateway::check::{self, Status};
use omni_testkit::messenger::{
    Facebook, PAGE_ID, PageSetup, connect_page, now_ms, start_gateway, text_event,
};
use omni_testkit::{Chat, eventually, until_ready};

#[tokio::test]
async fn rate_limited_routes_show_in_status_metrics_and_check() {
    let chat = Chat::start().await;
    chat.sim
        .add_user("agent.smith", "agent-pw", &["user", "livechat-agent"]);
    chat.sim.set_agent_online("agent.smith", true);
    let fb = Facebook::start().await;
    fb.sim.add_psid(PAGE_ID, "psid-1", "Peter", "Chang");
    let running = start_gateway(&chat, &fb).await;
    until_ready(&running.gateway).await;
    connect_page(&running.gateway, &fb, PageSetup::default()).await;
    let http = reqwest::Client::new();
    let metrics_url = format!("http://{}/metrics", running.gateway.http_addr);

    // `check` run beside the daemon, reading its /metrics.
    let config = running.dir.path().join("check.toml");
    let text = omni_testkit::config_text_with(
        chat.sim.url().as_str().trim_end_matches('/'),
        fb.sim.url().as_str(),
        &running.dir.path().join("data"),
        &omni_testkit::password_credentials(),
        "",
    )
    .replace(
        "listen = \"127.0.0.1:0\"",
        &format!("listen = \"{}\"", running.gateway.http_addr),
    );
    std::fs::write(&config, text).expect("config written");

    // The next two REST calls (the new customer's first Livechat calls) answer 429.
    chat.sim.rate_limit_next_rest(2);
    let t0 = now_ms();
    omni_testkit::messenger::post_webhook(
        &fb,
        running.gateway.http_addr,
        &omni_testkit::messenger::body(&[text_event("psid-1", "m_1", t0, "hello")]),
    )
    .await;
    let mut scraped = String::new();
    let deadline = tokio::time::Instant::now() + omni_testkit::PATIENCE;
    while tokio::time::Instant::now() < deadline {
        scraped = http
            .get(&metrics_url)
            .send()
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text");
        if scraped.contains("omni_gateway_rocketchat_rate_limited_last_hour{route=\"livechat/") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let gauge = regex::Regex::new(
        r#"omni_gateway_rocketchat_rate_limited_last_hour\{route="(livechat/[^"]+)"\} (\d+)"#,
    )
    .expect("literal regex");
    let (route, count) = gauge
        .captures(&scraped)
        .map(|c| (c[1].to_owned(), c[2].parse::<u64>().unwrap_or(0)))
        .unwrap_or_else(|| panic!("no 429 gauge in:\n{scraped}"));
    assert!(count >= 1, "{scraped}");
    assert!(
        scraped.contains(&format!(
            "omni_gateway_rocketchat_rate_limited_total{{route=\"{route}\"}}"
        )),
        "{scraped}"
    );

    // The message still arrives once the limit resets: delayed, not lost.
    eventually("the customer's message reaches a room", || {
        chat.sim
            .livechat_rooms()
            .iter()
            .any(|room| chat.sim.messages(&room.id).iter().any(|m| m.msg == "hello"))
    })
    .await;

    chat.sim.post("alice", &chat.alice_dm, "/facebook status");
    let status = chat
        .bot_says(&chat.alice_dm, |m| m.contains("429s in the last hour"))
        .await;
    assert!(
        status
            .msg
            .contains(&format!("429s in the last hour: {route} ")),
        "{}",
        status.msg
    );
    assert!(
        status.msg.contains("at most 5 new conversations a minute"),
        "{}",
        status.msg
    );

    let report = check::run(&config, &mut |_| {}).await;
    let finding = report.get("throttling").expect("the throttling check ran");
    assert_eq!(finding.status, Status::Warn, "{finding}");
    assert!(finding.detail.contains(&route), "{finding}");
    assert!(
        finding
            .detail
            .contains("livechat/visitor and livechat/room allow 5 calls per 60 s"),
        "{finding}"
    );
}
