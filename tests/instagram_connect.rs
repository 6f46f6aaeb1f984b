//! Connecting a Page's linked Instagram account end to end: `/facebook authorize`, the simulated
//! Login dialog and the callback connect the account as its own record beside its Page; `pages`,
//! `edit` and `status` show it; its texts are checked in bytes; a reconnect keeps its settings;
//! `unauthorize` takes it down with its Page without a Graph call on its id; a dead token marks
//! both; a declined Instagram permission still connects the Page; the health check notices an
//! account unlinked from its Page.

use omni_gateway::ids::PageId;
use omni_gateway::store::{PageStatus, Platform};
use omni_testkit::eventually;
use omni_testkit::instagram::{IG_ID, body, text_event};
use omni_testkit::pages::World;
use reqwest::StatusCode;

const USERNAME: &str = "acme.bakery";

async fn world_with_linked_account() -> World {
    let w = World::start("").await;
    w.fb.sim
        .link_instagram("1001", IG_ID, USERNAME, "Acme Bakery Lyon");
    w
}

#[tokio::test]
async fn authorize_connects_the_linked_account_with_its_own_settings() {
    let w = world_with_linked_account().await;
    w.connect_pages().await;
    let told = w
        .chat
        .bot_says(&w.chat.alice_dm, |m| m.starts_with("Connected pages"))
        .await;
    assert!(
        told.msg.contains(&format!(
            "@{USERNAME} (Instagram, via Acme Bakery) ({IG_ID})"
        )),
        "{}",
        told.msg
    );
    let account = w.page(IG_ID);
    assert_eq!(
        account.platform,
        Platform::Instagram {
            page: PageId::new("1001"),
            username: Some(USERNAME.into()),
        }
    );
    assert_eq!(account.status, PageStatus::Connected);
    assert_eq!(account.subscribers, ["alice"]);
    assert_eq!(account.grant, w.page("1001").grant);
    assert!(account.token.is_some());
    // The Page without a linked account connects alone; nothing is subscribed on the account.
    assert_eq!(w.stored_pages().len(), 3);
    assert!(
        !w.fb.sim.calls().iter().any(|c| c.contains(IG_ID)),
        "{:#?}",
        w.fb.sim.calls()
    );

    let listed = w.ask("/facebook pages").await;
    assert!(
        listed.contains(&format!(
            "{IG_ID} *@{USERNAME}* (Instagram, via Acme Bakery) — department: none (any agent)"
        )),
        "{listed}"
    );
    let status = w.ask("/facebook status").await;
    assert!(
        status.contains("pages: 2 · Instagram accounts: 1"),
        "{status}"
    );

    // Texts for the account are counted in bytes: 600 "é" are 1200 bytes.
    let long = "é".repeat(600);
    let refused = w
        .ask(&format!("/facebook edit {IG_ID} welcome {long}"))
        .await;
    assert!(
        refused.contains("1200 bytes") && refused.contains("at most 999 bytes"),
        "{refused}"
    );
    assert_eq!(w.page(IG_ID).welcome, None);
    let set = w
        .ask(&format!(
            "/facebook edit {IG_ID} welcome Bonjour depuis Instagram"
        ))
        .await;
    assert!(set.contains("welcome message updated"), "{set}");
    let shown = w.ask(&format!("/facebook edit {IG_ID}")).await;
    assert!(
        shown.contains("platform: Instagram, through Page 1001 *Acme Bakery*"),
        "{shown}"
    );

    // A second authorize keeps the account's settings.
    w.connect_pages().await;
    eventually("the second connection is reported", || {
        w.told_alice("Connected pages") >= 2
    })
    .await;
    assert_eq!(
        w.page(IG_ID).welcome.as_deref(),
        Some("Bonjour depuis Instagram")
    );

    // Disconnecting the Page takes its account along, with no call on the account's id.
    let report = w.ask("/facebook unauthorize 1001").await;
    assert!(
        report.contains(&format!("@{USERNAME} ({IG_ID}) disconnected")),
        "{report}"
    );
    for id in ["1001", IG_ID] {
        let record = w.page(id);
        assert!(record.token.is_none(), "{id}");
        assert_eq!(record.status, PageStatus::Disconnected, "{id}");
    }
    assert!(w.page("1002").token.is_some());
    assert!(
        !w.fb.sim.calls().iter().any(|c| c.contains(IG_ID)),
        "never subscribed_apps on an Instagram id: {:#?}",
        w.fb.sim.calls()
    );
    assert_eq!(
        w.page(IG_ID).welcome.as_deref(),
        Some("Bonjour depuis Instagram"),
        "settings kept"
    );
    w.stop().await;
}

#[tokio::test]
async fn a_dead_token_marks_the_account_and_its_page() {
    let w = world_with_linked_account().await;
    w.connect_pages().await;
    w.fb.sim.invalidate_user_tokens(omni_testkit::FB_ADMIN, 460);
    // The profile lookup for a new Instagram customer meets the dead token (190).
    let url = format!("http://{}/webhooks/messenger", w.running.gateway.http_addr);
    let answer =
        w.fb.sim
            .deliver_webhook(
                &url,
                &body(&[text_event(
                    "8423157790123456",
                    "aWdf_1",
                    omni_testkit::messenger::now_ms(),
                    "allô ?",
                )]),
            )
            .await
            .expect("the gateway answers");
    assert_eq!(answer.status(), StatusCode::OK);
    eventually("the account and its Page need authorization", || {
        [IG_ID, "1001"]
            .iter()
            .all(|id| matches!(w.page(id).status, PageStatus::NeedsAuthorization { .. }))
    })
    .await;
    w.stop().await;
}

#[tokio::test]
async fn a_declined_instagram_permission_still_connects_the_page() {
    let w = world_with_linked_account().await;
    w.fb.sim.decline_permissions(&["instagram_basic"]);
    w.connect_pages().await;
    eventually("the declined permission is explained", || {
        w.told_alice("`instagram_basic`: finds the Instagram account linked to each page") == 1
    })
    .await;
    assert_eq!(w.page("1001").status, PageStatus::Connected);
    assert!(
        w.running
            .gateway
            .store
            .page(&PageId::new(IG_ID))
            .expect("store readable")
            .is_none(),
        "the account is not connected without instagram_basic"
    );
    w.stop().await;
}

#[tokio::test]
async fn an_account_unlinked_from_its_page_is_disconnected_at_the_next_authorize() {
    let w = world_with_linked_account().await;
    w.connect_pages().await;
    assert_eq!(w.page(IG_ID).status, PageStatus::Connected);
    w.fb.sim.unlink_instagram("1001");
    w.connect_pages().await;
    unlinked_account_is_disconnected_and_told(&w, "").await;
    w.stop().await;
}

/// The admin is told once, with `lead` before the account's line; the account is disconnected
/// and its Page is not.
async fn unlinked_account_is_disconnected_and_told(w: &World, lead: &str) {
    eventually("the admin hears the account was unlinked", || {
        w.told_alice(&format!(
            "{lead}@{USERNAME} ({IG_ID}): no longer linked to Acme Bakery"
        )) == 1
    })
    .await;
    let account = w.page(IG_ID);
    assert_eq!(account.status, PageStatus::Disconnected);
    assert!(account.token.is_none());
    assert_eq!(w.page("1001").status, PageStatus::Connected);
}

#[tokio::test]
async fn the_health_check_disconnects_an_account_unlinked_from_its_page() {
    let w = World::start("health_check_secs = 1").await;
    w.fb.sim
        .link_instagram("1001", IG_ID, USERNAME, "Acme Bakery Lyon");
    w.connect_pages().await;
    assert_eq!(w.page(IG_ID).status, PageStatus::Connected);
    w.fb.sim.unlink_instagram("1001");
    unlinked_account_is_disconnected_and_told(&w, "Instagram account ").await;
    w.stop().await;
}
