//! The Graph API client against the Graph simulator, over loopback HTTP.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use omni_gateway::ids::{PageId, Psid};
use omni_gateway::messenger::graph::{
    AttachmentKind, Content, Error, ErrorKind, GraphClient, GraphSettings, Messaging,
    SUBSCRIBED_FIELDS, SendRequest, SenderAction, UserToken,
};
use omni_sim::graph::{DialogDecision, GraphSim, SimError};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

const APP_ID: &str = "1234567890";
const APP_SECRET: &str = "app-secret-value";
const REDIRECT: &str = "https://gw.example.com/oauth/facebook/callback";
const PAGES: [&str; 3] = ["1001", "1002", "1003"];

fn client_for(url: Url, version: &str, timeout: Duration) -> GraphClient {
    GraphClient::new(GraphSettings {
        graph_url: url.clone(),
        dialog_url: url,
        api_version: version.to_owned(),
        app_id: APP_ID.to_owned(),
        app_secret: SecretString::from(APP_SECRET),
        timeout,
    })
    .expect("client builds")
}

async fn setup() -> (GraphSim, GraphClient) {
    let sim = GraphSim::start(APP_ID, APP_SECRET)
        .await
        .expect("sim starts");
    sim.add_user("u1", "Ada Admin");
    for (i, page) in PAGES.iter().enumerate() {
        sim.add_page("u1", page, &format!("Page {i}"), &["MESSAGING", "MODERATE"]);
    }
    sim.add_user("u2", "Other Person");
    sim.add_page("u2", "2001", "Not Ada's", &["MODERATE"]);
    sim.set_dialog_user("u1");
    sim.add_psid("1001", "psid-1", "Peter", "Chang");
    let client = client_for(sim.url(), "v23.0", Duration::from_secs(5));
    (sim, client)
}

/// Opens the dialog like a browser and returns the redirect's query parameters.
async fn open_dialog(client: &GraphClient, state: &str) -> Vec<(String, String)> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest builds");
    let response = http
        .get(client.login_dialog_url(REDIRECT, state, false))
        .send()
        .await
        .expect("dialog answers");
    assert_eq!(response.status(), 302);
    let location = response
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .expect("redirect has a location");
    let location = Url::parse(location).expect("location is a URL");
    assert!(location.as_str().starts_with(REDIRECT));
    location.query_pairs().into_owned().collect()
}

fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The whole login: dialog, code exchange, long-lived exchange.
async fn login(client: &GraphClient) -> UserToken {
    let params = open_dialog(client, "state-1").await;
    let code = param(&params, "code").expect("approved dialog returns a code");
    let short = client
        .exchange_code(code, REDIRECT)
        .await
        .expect("code exchange");
    client
        .exchange_long_lived(&short.access_token)
        .await
        .expect("long-lived exchange")
}

async fn page_token(sim: &GraphSim, client: &GraphClient) -> SecretString {
    let user = login(client).await;
    client.accounts(&user.access_token).await.expect("accounts");
    SecretString::from(sim.page_token("1001").expect("page token issued"))
}

fn graph_codes(err: &Error) -> (i64, Option<i64>) {
    let e = err.graph_error().expect("a graph error");
    (e.code, e.error_subcode)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

fn text(psid: &str, messaging: Messaging, body: &str) -> SendRequest {
    SendRequest {
        recipient: Psid::new(psid),
        messaging,
        content: Content::Text(body.to_owned()),
        metadata: Some("out-1".to_owned()),
    }
}

#[tokio::test]
async fn login_exchanges_and_paged_accounts() {
    let (_sim, client) = setup().await;
    let dialog = client.login_dialog_url(REDIRECT, "xyz", false);
    let query: Vec<(String, String)> = dialog.query_pairs().into_owned().collect();
    assert_eq!(dialog.path(), "/v23.0/dialog/oauth");
    assert_eq!(param(&query, "response_type"), Some("code"));
    assert_eq!(
        param(&query, "scope"),
        Some(
            "pages_show_list,pages_messaging,pages_manage_metadata,pages_read_engagement,business_management,instagram_basic,instagram_manage_messages,instagram_manage_comments"
        )
    );

    let params = open_dialog(&client, "state-1").await;
    assert_eq!(param(&params, "state"), Some("state-1"));
    let code = param(&params, "code").expect("code").to_owned();
    let wrong_uri = client
        .exchange_code(&code, "https://gw.example.com/other")
        .await
        .expect_err("redirect_uri must match");
    assert_eq!(graph_codes(&wrong_uri), (100, Some(36008)));
    let short = client
        .exchange_code(&code, REDIRECT)
        .await
        .expect("exchange");
    let reused = client
        .exchange_code(&code, REDIRECT)
        .await
        .expect_err("codes are single-use");
    assert_eq!(graph_codes(&reused), (100, Some(36009)));
    assert_eq!(reused.kind(), ErrorKind::Final);

    let long = client
        .exchange_long_lived(&short.access_token)
        .await
        .expect("long-lived");
    assert_eq!(long.expires_in, Some(5_183_944));
    let me = client.me(&long.access_token).await.expect("me");
    assert_eq!((me.id.as_str(), me.name.as_str()), ("u1", "Ada Admin"));

    let accounts = client.accounts(&long.access_token).await.expect("accounts");
    let ids: Vec<&str> = accounts.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(ids, PAGES, "every page, across three paging requests");
    assert!(accounts.iter().all(|a| a.can_message()));
    assert!(
        accounts
            .iter()
            .all(|a| !a.access_token.expose_secret().is_empty())
    );
}

#[tokio::test]
async fn denied_dialog_keeps_state() {
    let (sim, client) = setup().await;
    sim.set_dialog_decision(DialogDecision::Deny);
    let params = open_dialog(&client, "s-9").await;
    let cases = [
        ("error", Some("access_denied")),
        ("error_reason", Some("user_denied")),
        ("error_description", Some("Permissions error")),
        ("state", Some("s-9")),
        ("code", None),
    ];
    for (key, want) in cases {
        assert_eq!(param(&params, key), want, "{key}");
    }
}

#[tokio::test]
async fn subscriptions_round_trip_and_reject_missing_fields() {
    let (sim, client) = setup().await;
    let token = page_token(&sim, &client).await;
    let page = PageId::new("1001");
    assert_eq!(
        client.subscribed_fields(&page, &token).await.expect("get"),
        None
    );
    client
        .subscribe_app(&page, &token)
        .await
        .expect("subscribe");
    let want: Vec<String> = SUBSCRIBED_FIELDS.iter().map(|f| f.to_string()).collect();
    assert_eq!(sim.subscriptions("1001"), Some(want.clone()));
    assert_eq!(
        client.subscribed_fields(&page, &token).await.expect("get"),
        Some(want)
    );
    sim.drop_subscription("1001");
    assert_eq!(
        client.subscribed_fields(&page, &token).await.expect("get"),
        None
    );
    client
        .subscribe_app(&page, &token)
        .await
        .expect("resubscribe");
    client
        .unsubscribe_app(&page, &token)
        .await
        .expect("unsubscribe");
    assert_eq!(sim.subscriptions("1001"), None);

    // Another page's token is refused.
    let other = client
        .subscribe_app(&PageId::new("1002"), &token)
        .await
        .expect_err("wrong page token");
    assert_eq!(other.kind(), ErrorKind::Final);

    // Without subscribed_fields, Meta's (#100) in its exact envelope.
    let response = reqwest::Client::new()
        .post(sim.url().join("v23.0/1001/subscribed_apps").expect("url"))
        .query(&[("access_token", token.expose_secret())])
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.expect("json");
    let error = &body["error"];
    assert_eq!(
        error["message"],
        "(#100) The parameter subscribed_fields is required"
    );
    assert_eq!(error["type"], "OAuthException");
    assert_eq!(error["code"], 100);
    assert!(error["fbtrace_id"].is_string());
}

#[tokio::test]
async fn debug_token_and_invalidation_classify_as_token_invalid() {
    let (sim, client) = setup().await;
    let token = page_token(&sim, &client).await;
    let info = client.debug_token(&token).await.expect("debug_token");
    assert!(info.is_valid);
    assert_eq!(info.r#type.as_deref(), Some("PAGE"));
    assert_eq!(info.app_id.as_deref(), Some(APP_ID));
    assert_eq!(
        info.expires_at,
        Some(0),
        "page tokens from long-lived user tokens never expire"
    );
    assert!(info.scopes.iter().any(|s| s == "pages_messaging"));

    sim.invalidate_user_tokens("u1", 460);
    let info = client.debug_token(&token).await.expect("debug_token");
    assert!(!info.is_valid);
    assert_eq!(
        info.error.map(|e| (e.code, e.subcode)),
        Some((190, Some(460)))
    );

    let err = client
        .send_message(
            &PageId::new("1001"),
            &token,
            &text("psid-1", Messaging::Response, "hi"),
        )
        .await
        .expect_err("dead token");
    assert_eq!(graph_codes(&err), (190, Some(460)));
    assert_eq!(err.kind(), ErrorKind::TokenInvalid);
    assert!(err.is_token_invalid() && !err.is_retryable());
    let line = err.describe();
    assert!(
        line.starts_with("(#190/460) Error validating access token"),
        "{line}"
    );
    assert!(
        line.ends_with("— the page must be re-authorized: /facebook authorize"),
        "{line}"
    );
    assert!(sim.sent_messages().is_empty());
}

#[tokio::test]
async fn revoking_permissions_kills_user_and_page_tokens() {
    let (sim, client) = setup().await;
    let user = login(&client).await;
    client.accounts(&user.access_token).await.expect("accounts");
    let token = SecretString::from(sim.page_token("1001").expect("page token"));
    client
        .revoke_permissions(&user.access_token)
        .await
        .expect("revoke");
    let me = client
        .me(&user.access_token)
        .await
        .expect_err("user token dead");
    assert_eq!(graph_codes(&me), (190, Some(458)));
    let page = client
        .subscribe_app(&PageId::new("1001"), &token)
        .await
        .expect_err("page token dead");
    assert_eq!(page.kind(), ErrorKind::TokenInvalid);
}

#[tokio::test]
async fn profile_and_unknown_psid() {
    let (sim, client) = setup().await;
    let token = page_token(&sim, &client).await;
    let profile = client
        .user_profile(&Psid::new("psid-1"), &token)
        .await
        .expect("profile");
    assert_eq!(profile.first_name.as_deref(), Some("Peter"));
    assert_eq!(profile.display_name().as_deref(), Some("Peter Chang"));
    assert!(profile.profile_pic.is_some());
    let err = client
        .user_profile(&Psid::new("nobody"), &token)
        .await
        .expect_err("unknown psid");
    assert_eq!(graph_codes(&err), (100, Some(2018218)));
    assert_eq!(err.kind(), ErrorKind::Final);
}

#[tokio::test]
async fn send_text_sender_action_and_text_limit() {
    let (sim, client) = setup().await;
    let token = page_token(&sim, &client).await;
    let page = PageId::new("1001");
    let answer = client
        .send_message(&page, &token, &text("psid-1", Messaging::Response, "hello"))
        .await
        .expect("send");
    assert_eq!(answer.recipient_id.as_deref(), Some("psid-1"));
    let sent = sim
        .wait_for_sent(
            |m| m.text.as_deref() == Some("hello"),
            Duration::from_secs(2),
        )
        .await
        .expect("recorded");
    assert_eq!(sent.messaging_type.as_deref(), Some("RESPONSE"));
    assert_eq!(sent.tag, None);
    assert_eq!(sent.metadata.as_deref(), Some("out-1"));
    assert_eq!(sent.token, token.expose_secret());
    assert_eq!(sent.message_id.as_deref(), Some(answer.message_id.as_str()));

    client
        .sender_action(&page, &token, &Psid::new("psid-1"), SenderAction::TypingOn)
        .await
        .expect("typing_on");
    assert!(
        sim.sent_messages()
            .iter()
            .any(|m| m.sender_action.as_deref() == Some("typing_on"))
    );

    // Reactions name a message of the conversation: the page's own, or one the customer sent.
    let psid = Psid::new("psid-1");
    client
        .react(&page, &token, &psid, &answer.message_id, Some("👍"))
        .await
        .expect("react on the page's message");
    client
        .react(&page, &token, &psid, &answer.message_id, None)
        .await
        .expect("unreact");
    let reactions: Vec<_> = sim
        .sent_messages()
        .into_iter()
        .filter(|m| {
            m.sender_action
                .as_deref()
                .is_some_and(|a| a.ends_with("react"))
        })
        .map(|m| (m.sender_action, m.payload))
        .collect();
    assert_eq!(
        reactions,
        [
            (
                Some("react".to_owned()),
                Some(serde_json::json!({"message_id": answer.message_id, "reaction": "👍"}))
            ),
            (
                Some("unreact".to_owned()),
                Some(serde_json::json!({"message_id": answer.message_id}))
            ),
        ]
    );
    let unknown = client
        .react(&page, &token, &psid, "m_not-in-this-thread", Some("👍"))
        .await
        .expect_err("unknown message");
    assert_eq!(
        (graph_codes(&unknown).0, unknown.kind()),
        (100, ErrorKind::Final)
    );

    let cases = [
        ("x".repeat(2000), true),
        ("é".repeat(2000), true),
        ("x".repeat(2001), false),
        (String::new(), false),
    ];
    for (body, ok) in cases {
        let result = client
            .send_message(&page, &token, &text("psid-1", Messaging::Response, &body))
            .await;
        assert_eq!(result.is_ok(), ok, "length {}", body.chars().count());
        if let Err(err) = result {
            assert_eq!(err.kind(), ErrorKind::Final);
        }
    }
    let missing = client
        .send_message(&page, &token, &text("psid-x", Messaging::Response, "hi"))
        .await
        .expect_err("unknown recipient");
    assert_eq!(graph_codes(&missing), (100, Some(2018001)));
}

#[tokio::test]
async fn send_windows() {
    let (sim, client) = setup().await;
    let token = page_token(&sim, &client).await;
    let page = PageId::new("1001");
    let day = 24 * 3600 * 1000;
    // (customer last wrote, policy, human agent granted, expected)
    let cases = [
        (now_ms() - day / 2, Messaging::Response, false, None),
        (
            now_ms() - 2 * day,
            Messaging::Response,
            false,
            Some(ErrorKind::OutsideWindow),
        ),
        (
            now_ms() - 2 * day,
            Messaging::HumanAgent,
            false,
            Some(ErrorKind::Final),
        ),
        (now_ms() - 2 * day, Messaging::HumanAgent, true, None),
        (
            now_ms() - 8 * day,
            Messaging::HumanAgent,
            true,
            Some(ErrorKind::OutsideWindow),
        ),
    ];
    for (last, messaging, granted, want) in cases {
        sim.set_psid_window("1001", "psid-1", last);
        sim.grant_human_agent(granted);
        let result = client
            .send_message(&page, &token, &text("psid-1", messaging, "late"))
            .await;
        assert_eq!(
            result.as_ref().err().map(Error::kind),
            want,
            "{messaging:?} granted {granted}"
        );
        if want == Some(ErrorKind::OutsideWindow) {
            let err = result.expect_err("checked above");
            assert_eq!(graph_codes(&err), (10, Some(2018278)));
            assert!(!err.is_retryable());
        }
    }
    let tagged = sim
        .wait_for_sent(|m| m.tag.is_some(), Duration::from_secs(1))
        .await
        .expect("the HUMAN_AGENT send");
    assert_eq!(tagged.messaging_type.as_deref(), Some("MESSAGE_TAG"));
    assert_eq!(tagged.tag.as_deref(), Some("HUMAN_AGENT"));
}

#[tokio::test]
async fn injected_failures_classify() {
    let (sim, client) = setup().await;
    let token = page_token(&sim, &client).await;
    let page = PageId::new("1001");
    let request = text("psid-1", Messaging::Response, "x");
    let send = || client.send_message(&page, &token, &request);

    sim.fail_next(
        "/messages",
        1,
        SimError::Throttled {
            code: 613,
            regain_minutes: 5,
        },
    );
    let err = send().await.expect_err("throttled");
    assert_eq!(err.kind(), ErrorKind::RateLimited);
    assert!(err.is_retryable());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(300)));
    assert!(
        err.describe().contains("retrying in about 5 min"),
        "{}",
        err.describe()
    );

    let cases = [
        (SimError::Http5xx(503), ErrorKind::Transient),
        (
            SimError::Graph {
                code: 2,
                subcode: None,
                http_status: 500,
            },
            ErrorKind::Transient,
        ),
        (
            SimError::Graph {
                code: 1200,
                subcode: None,
                http_status: 400,
            },
            ErrorKind::Transient,
        ),
        (
            SimError::Graph {
                code: 4,
                subcode: Some(2018022),
                http_status: 400,
            },
            ErrorKind::RateLimited,
        ),
        (
            SimError::Graph {
                code: 551,
                subcode: Some(1545041),
                http_status: 400,
            },
            ErrorKind::Final,
        ),
    ];
    for (injected, want) in cases {
        sim.fail_next("/messages", 1, injected.clone());
        let err = send().await.expect_err("injected");
        assert_eq!(err.kind(), want, "{injected:?}");
    }
    assert!(matches!(
        {
            sim.fail_next("/messages", 1, SimError::Http5xx(502));
            send().await
        },
        Err(Error::Http { status: 502, .. })
    ));
    send().await.expect("faults are used up");
    assert_eq!(sim.stats().messages_sent, 1);

    let impatient = client_for(sim.url(), "v23.0", Duration::from_millis(300));
    sim.fail_next("/messages", 1, SimError::Delay(Duration::from_secs(2)));
    let err = impatient
        .send_message(&page, &token, &text("psid-1", Messaging::Response, "slow"))
        .await
        .expect_err("timeout");
    assert!(matches!(err, Error::Timeout));
    assert_eq!(err.kind(), ErrorKind::Transient);
}

#[tokio::test]
async fn multipart_attachment_arrives_with_bytes() {
    let (sim, client) = setup().await;
    let token = page_token(&sim, &client).await;
    let bytes = Bytes::from_static(b"\x89PNG\r\n\x1a\n fake image bytes \x00\xff");
    let answer = client
        .send_attachment(
            &PageId::new("1001"),
            &token,
            &Psid::new("psid-1"),
            &Messaging::Response,
            AttachmentKind::Image,
            "photo.png",
            "image/png",
            bytes.clone(),
        )
        .await
        .expect("attachment send");
    let sent = sim
        .wait_for_sent(|m| m.file.is_some(), Duration::from_secs(2))
        .await
        .expect("recorded");
    assert_eq!(sent.message_id.as_deref(), Some(answer.message_id.as_str()));
    assert_eq!(sent.messaging_type.as_deref(), Some("RESPONSE"));
    let attachment = sent.attachment.expect("attachment object");
    assert_eq!(attachment["type"], "image");
    assert_eq!(attachment["payload"]["is_reusable"], false);
    let file = sent.file.expect("file");
    assert_eq!(file.name.as_deref(), Some("photo.png"));
    assert_eq!(file.mime.as_deref(), Some("image/png"));
    assert_eq!(file.bytes, bytes.to_vec());
}

#[tokio::test]
async fn wrong_version_is_refused() {
    let (sim, _) = setup().await;
    let client = client_for(sim.url(), "23.0", Duration::from_secs(5));
    let err = client
        .debug_token(&SecretString::from("x"))
        .await
        .expect_err("unversioned path");
    assert_eq!(err.kind(), ErrorKind::Final);
}

#[tokio::test]
async fn tokens_never_appear_in_errors() {
    let (sim, client) = setup().await;
    let user = login(&client).await;
    client.accounts(&user.access_token).await.expect("accounts");
    let page_token = SecretString::from(sim.page_token("1001").expect("page token"));
    let secrets = [
        user.access_token.expose_secret().to_owned(),
        page_token.expose_secret().to_owned(),
        APP_SECRET.to_owned(),
    ];
    let mut errors = Vec::new();
    sim.invalidate_user_tokens("u1", 460);
    errors.push(client.me(&user.access_token).await.expect_err("dead"));
    errors.push(
        client
            .subscribe_app(&PageId::new("1001"), &page_token)
            .await
            .expect_err("dead"),
    );
    errors.push(
        client
            .exchange_long_lived(&user.access_token)
            .await
            .expect_err("dead"),
    );
    // Transport errors: nothing listens on a port we just released.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let offline = client_for(
        Url::parse(&format!("http://{closed}/")).expect("url"),
        "v23.0",
        Duration::from_secs(2),
    );
    errors.push(
        offline
            .exchange_long_lived(&user.access_token)
            .await
            .expect_err("refused"),
    );
    errors.push(offline.debug_token(&page_token).await.expect_err("refused"));
    assert!(matches!(errors.last(), Some(Error::Transport(_))));
    for err in &errors {
        let shown = [err.to_string(), format!("{err:?}"), err.describe()];
        for text in &shown {
            for secret in &secrets {
                assert!(!text.contains(secret.as_str()), "secret leaked in {text}");
            }
        }
    }
}

/// `GET /{page}/secondary_receivers` answers the primary receiver only: what `check`'s
/// "thread control" line reads.
#[tokio::test]
async fn the_primary_receiver_role_is_read_from_secondary_receivers() {
    let (sim, client) = setup().await;
    let token = page_token(&sim, &client).await;
    let page = PageId::new("1001");
    assert!(client.is_primary_receiver(&page, &token).await.unwrap());
    // The Page Inbox takes the role (Meta's Page Inbox app id).
    sim.set_primary_receiver("1001", "263902037430900");
    assert!(!client.is_primary_receiver(&page, &token).await.unwrap());
    sim.set_primary_receiver("1001", APP_ID);
    assert!(client.is_primary_receiver(&page, &token).await.unwrap());
}
