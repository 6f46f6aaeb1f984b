//! The bot against the Rocket.Chat simulator on loopback: login, commands in DMs, refusals, and
//! surviving a dropped socket, an unanswered ping and garbage frames.

use std::time::Duration;

use omni_testkit::{Chat, eventually, password_credentials, start_gateway, until_ready};

#[tokio::test]
async fn admin_gets_help_in_the_same_room() {
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;

    chat.sim.post("alice", &chat.alice_dm, "/facebook help");
    let reply = chat
        .bot_says(&chat.alice_dm, |m| m.contains("authorize"))
        .await;
    assert!(
        reply.msg.contains("unauthorize") && reply.msg.contains("edit"),
        "{}",
        reply.msg
    );
    assert!(
        chat.bot_messages(&chat.bob_dm).is_empty(),
        "nothing was said elsewhere"
    );
    running.gateway.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn every_spelling_reaches_the_bot() {
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;

    for (n, text) in [
        "/facebook pages",
        "!facebook pages",
        "Facebook PAGES",
        "pages",
    ]
    .iter()
    .enumerate()
    {
        chat.sim.post("alice", &chat.alice_dm, text);
        let dm = chat.alice_dm.clone();
        eventually(&format!("answer #{} to {text:?}", n + 1), || {
            chat.bot_messages(&dm)
                .iter()
                .filter(|m| m.contains("No Facebook page is connected"))
                .count()
                > n
        })
        .await;
    }
    running.gateway.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn non_admins_are_refused_but_may_ask_for_help() {
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;

    chat.sim.post("bob", &chat.bob_dm, "/facebook pages");
    let refusal = chat
        .bot_says(&chat.bob_dm, |m| m.contains("only Rocket.Chat admins"))
        .await;
    assert!(refusal.msg.contains("@bob"), "{}", refusal.msg);

    chat.sim.post("bob", &chat.bob_dm, "/facebook help");
    chat.bot_says(&chat.bob_dm, |m| m.contains("authorize"))
        .await;
    running.gateway.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn unknown_commands_and_bad_arguments_get_usage() {
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;

    chat.sim
        .post("alice", &chat.alice_dm, "/facebook frobnicate");
    let reply = chat
        .bot_says(&chat.alice_dm, |m| m.contains("unknown command"))
        .await;
    assert!(
        reply.msg.contains("frobnicate") && reply.msg.contains("Usage"),
        "{}",
        reply.msg
    );

    chat.sim
        .post("alice", &chat.alice_dm, "/facebook edit not-a-page");
    chat.bot_says(&chat.alice_dm, |m| m.contains("digits"))
        .await;

    chat.sim
        .post("alice", &chat.alice_dm, "/facebook edit 123456");
    chat.bot_says(&chat.alice_dm, |m| m.contains("not connected"))
        .await;
    running.gateway.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn ignores_channels_its_own_messages_system_messages_and_edits() {
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;

    let general = chat.sim.channel("general", &["alice", omni_testkit::BOT]);
    chat.sim.post("alice", &general, "/facebook help");
    chat.sim.post_system(&chat.alice_dm, "uj", "/facebook help");
    let asked = chat.sim.post("alice", &chat.alice_dm, "/facebook status");
    chat.bot_says(&chat.alice_dm, |m| m.contains("omni-gateway status"))
        .await;
    chat.sim.edit("alice", &asked, "/facebook status ");

    // A marker command proves the edit and the others were processed (the bot handles its
    // messages in order) before we count.
    chat.sim.post("alice", &chat.alice_dm, "/facebook pages");
    chat.bot_says(&chat.alice_dm, |m| m.contains("No Facebook page"))
        .await;

    assert!(
        chat.bot_messages(&general).is_empty(),
        "commands in channels are ignored"
    );
    let said = chat.bot_messages(&chat.alice_dm);
    assert_eq!(
        said.len(),
        2,
        "one status reply, one pages reply, nothing for the edit or the system message: {said:#?}"
    );
    running.gateway.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn admins_listed_in_the_config_need_no_role() {
    let chat = Chat::start().await;
    chat.sim.add_user("carol", "carol-pw", &["user"]);
    let carol_dm = chat.sim.direct_room(omni_testkit::BOT, "carol");
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;

    chat.sim.post("carol", &carol_dm, "/facebook status");
    chat.bot_says(&carol_dm, |m| m.contains("omni-gateway status"))
        .await;
    running.gateway.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn hidden_roles_refuse_role_admins_and_say_why() {
    let chat = Chat::start().await;
    chat.sim
        .revoke_permission("bot", "view-full-other-user-info");
    chat.sim.add_user("carol", "carol-pw", &["user"]);
    let carol_dm = chat.sim.direct_room(omni_testkit::BOT, "carol");
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;

    chat.sim.post("alice", &chat.alice_dm, "/facebook pages");
    chat.bot_says(&chat.alice_dm, |m| m.contains("only Rocket.Chat admins"))
        .await;
    chat.sim.post("carol", &carol_dm, "/facebook status");
    chat.bot_says(&carol_dm, |m| m.contains("view-full-other-user-info"))
        .await;
    running.gateway.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn comes_back_after_the_socket_is_dropped() {
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;
    let logins_before = chat.sim.stats().logins();

    chat.sim.drop_connections();
    eventually("a new login after the drop", || {
        chat.sim.stats().logins() > logins_before
    })
    .await;
    until_ready(&running.gateway).await;

    chat.sim.post("alice", &chat.alice_dm, "/facebook help");
    chat.bot_says(&chat.alice_dm, |m| m.contains("authorize"))
        .await;
    assert!(
        chat.sim.stats().logins_resume >= 1,
        "the reconnect resumed the session instead of sending the password again"
    );
    running.gateway.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn comes_back_after_an_unanswered_ping() {
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;
    let connections_before = chat.sim.stats().ws_connections;

    // The simulator stops hearing the bot: its idle ping goes unanswered and it closes the socket.
    chat.sim
        .blackhole_client_frames(Duration::from_millis(1500));
    eventually("a reconnect after the timeout", || {
        chat.sim.stats().ws_connections > connections_before
    })
    .await;
    until_ready(&running.gateway).await;

    chat.sim.post("alice", &chat.alice_dm, "/facebook help");
    chat.bot_says(&chat.alice_dm, |m| m.contains("authorize"))
        .await;
    running.gateway.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn survives_garbage_frames() {
    let chat = Chat::start().await;
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;

    for garbage in [
        "{\"msg\":\"changed\"}",
        "{\"msg\":\"result\",\"id\":42}",
        "{\"msg\":\"changed\",\"collection\":\"stream-room-messages\",\"id\":\"id\",\"fields\":{\"eventName\":\"__my_messages__\",\"args\":[{\"_id\":1}]}}",
        "{\"msg\":\"something-new\",\"x\":[1,2,3]}",
        "[1,2,3]",
        "null",
        "{\"msg\":\"ping\",\"id\":{\"nested\":true}}",
    ] {
        chat.sim.send_raw_to_all(garbage);
    }
    chat.sim.post("alice", &chat.alice_dm, "/facebook help");
    chat.bot_says(&chat.alice_dm, |m| m.contains("authorize"))
        .await;
    running.gateway.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn logs_in_with_a_personal_access_token() {
    let chat = Chat::start().await;
    let token = chat.sim.personal_access_token(omni_testkit::BOT);
    let credentials = format!("auth_token = \"{token}\"\nuser_id = \"{}\"", chat.bot);
    let running = start_gateway(&chat, &credentials).await;
    until_ready(&running.gateway).await;

    chat.sim.post("alice", &chat.alice_dm, "/facebook help");
    chat.bot_says(&chat.alice_dm, |m| m.contains("authorize"))
        .await;
    assert_eq!(
        chat.sim.stats().logins_password,
        0,
        "no password was ever sent"
    );
    running.gateway.shutdown().await.expect("clean shutdown");
}

#[tokio::test]
async fn two_factor_accounts_are_told_to_use_a_token() {
    let chat = Chat::start().await;
    chat.sim.enable_totp(omni_testkit::BOT);
    let running = start_gateway(&chat, &password_credentials()).await;

    eventually("the login problem is reported", || {
        running.gateway.health.login_problem().is_some()
    })
    .await;
    let problem = running.gateway.health.login_problem().unwrap_or_default();
    assert!(problem.contains("personal access token"), "{problem}");
    assert!(running.gateway.health.readiness().is_err());
    running.gateway.shutdown().await.expect("clean shutdown");
}

/// `__my_messages__` carries every public channel's messages the bot can see: they are dropped
/// at the door (counted, never decoded), commands in them included, while a DM still works.
#[tokio::test]
async fn public_channel_traffic_is_dropped_at_the_door() {
    let chat = Chat::start().await;
    let general = chat.sim.channel("general", &["alice", "bob"]);
    let running = start_gateway(&chat, &password_credentials()).await;
    until_ready(&running.gateway).await;

    for n in 0..50 {
        chat.sim
            .post_channel_message("bob", &general, &format!("lunch at {n}?"));
    }
    chat.sim
        .post_channel_message("alice", &general, "/facebook help");
    eventually("51 channel frames dropped", || {
        running.gateway.ddp.stats().ignored_frames >= 51
    })
    .await;
    chat.sim.post("alice", &chat.alice_dm, "/facebook help");
    chat.bot_says(&chat.alice_dm, |m| m.contains("authorize"))
        .await;
    assert!(
        chat.bot_messages(&general).is_empty(),
        "nothing said in the channel"
    );
    running.gateway.shutdown().await.expect("clean shutdown");
}
