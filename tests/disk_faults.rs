//! A store that cannot be written (disk full, file-size limit): webhooks are answered 503 so Meta
//! retries, the log says why, and once the disk takes writes again a restarted gateway accepts
//! the retried events, each stored once.
//!
//! The fault is real, not a test hook: `RLIMIT_FSIZE` makes every write past the limit fail with
//! `EFBIG`, for root too (a read-only `chmod` does not stop root, and sled writes through file
//! handles it already holds). The limit is process-wide, so this binary holds this one test.

use omni_gateway::config::Config;
use omni_gateway::daemon::Gateway;
use omni_gateway::ids::PageId;
use omni_gateway::store::{Page, PageStatus};
use secrecy::SecretString;

use omni_testkit::logs::Logs;
use omni_testkit::webhook;
use omni_testkit::{APP_SECRET, Chat, eventually, password_credentials};

const PAGE: &str = "1122334455";

/// A webhook whose text is its own `mid`, so each message can be counted in Rocket.Chat.
fn webhook(mid: &str) -> Vec<u8> {
    webhook::text_body(PAGE, "6789", mid, mid)
}

async fn post(gateway: &Gateway, body: Vec<u8>) -> u16 {
    let signature = webhook::signature(APP_SECRET, &body);
    webhook::post(
        &reqwest::Client::new(),
        gateway.http_addr,
        body,
        Some(&signature),
    )
    .await
}

/// Sets the soft limit on the size of files this process writes.
fn limit_file_size(bytes: libc::rlim_t) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct. SIGXFSZ is ignored so a write past the limit
    // fails with EFBIG instead of killing the process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::getrlimit(libc::RLIMIT_FSIZE, &mut limit), 0);
        limit.rlim_cur = bytes.min(limit.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

async fn start(chat: &Chat, dir: &std::path::Path) -> Gateway {
    let text = omni_testkit::config_text(
        chat.sim.url().as_str().trim_end_matches('/'),
        &dir.join("data"),
        &password_credentials(),
    );
    let config = Config::parse(&text, &dir.join("bot.toml"), &|_| None).unwrap();
    Gateway::start(config).await.unwrap()
}

#[tokio::test]
async fn a_store_that_cannot_be_written_answers_503_and_recovers() {
    // Global: the store's failing writes are logged from blocking threads.
    let logs = Logs::global("info");

    let chat = Chat::start().await;
    chat.sim
        .add_user("agent1", "agent-pw", &["user", "livechat-agent"]);
    chat.sim.set_agent_online("agent1", true);
    let dir = tempfile::tempdir().unwrap();
    let gateway = start(&chat, dir.path()).await;
    let mut page = Page::new(PageId::new(PAGE), "Shop".to_owned());
    page.token = Some(SecretString::from("page-token".to_owned()));
    page.status = PageStatus::Connected;
    gateway.store.put_page(&page).unwrap();
    gateway.store.sync().await.unwrap();
    assert_eq!(post(&gateway, webhook("m_before")).await, 200);

    // The disk fills up: no file may grow past its current size.
    let db_file = dir.path().join("data").join("db");
    limit_file_size(std::fs::metadata(&db_file).unwrap().len());
    let mut refused = Vec::new();
    let mut posted = vec!["m_before".to_owned()];
    for n in 0..50 {
        let mid = format!("m_during_{n}");
        posted.push(mid.clone());
        match post(&gateway, webhook(&mid)).await {
            200 => {}
            503 => refused.push(mid),
            other => panic!("webhook {mid} answered {other}"),
        }
        if refused.len() >= 3 {
            break;
        }
    }
    assert!(
        refused.len() >= 3,
        "the full disk never turned webhooks away"
    );
    let text = logs.text();
    assert!(
        text.contains("cannot store webhook events") && text.contains("File too large"),
        "the log says why: {text}"
    );

    // sled keeps a write error for the life of the database: `run` sees this flag, exits, and
    // systemd starts the gateway again. Meanwhile the disk has room again, and Meta retries.
    assert!(gateway.store.has_failed(), "the store reports the failure");
    limit_file_size(libc::RLIM_INFINITY);
    assert!(
        gateway.shutdown().await.is_err(),
        "the final flush reports the broken store"
    );
    let gateway = start(&chat, dir.path()).await;
    for mid in &refused {
        assert_eq!(post(&gateway, webhook(mid)).await, 200, "retry of {mid}");
        assert_eq!(
            post(&gateway, webhook(mid)).await,
            200,
            "second retry of {mid}"
        );
    }
    // Every webhook reaches Rocket.Chat exactly once: those answered 200 before the failure
    // and, whether the journal or Meta's retry brought them, those answered 503.
    let times = |mid: &str| {
        chat.sim
            .livechat_rooms()
            .iter()
            .flat_map(|room| chat.sim.messages(&room.id))
            .filter(|m| m.msg == mid)
            .count()
    };
    eventually("every webhook delivered", || {
        gateway.store.inbox().is_empty() && posted.iter().all(|mid| times(mid) > 0)
    })
    .await;
    for mid in &posted {
        assert_eq!(times(mid), 1, "{mid} delivered once");
    }
    gateway.shutdown().await.unwrap();
}
