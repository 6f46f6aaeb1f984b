//! The contract test against code no one here wrote: every REST request the Rocket.Chat simulator
//! receives during a representative end-to-end run is validated with the request validators
//! Rocket.Chat itself publishes in `@rocket.chat/rest-typings` (the ajv schemas the server checks
//! requests with), for each version pinned in `contract/package-lock.json`. `contract/run`
//! installs them with `npm ci` into a cache folder and runs `contract/validate.mjs`.
//!
//! Without node, npm or network (and no cache) these tests FAIL with the reason; only
//! `OMNI_CONTRACT_SKIP=1` skips them, on purpose.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use omni_gateway::store::Department;
use omni_sim::rocketchat::SimMessage;
use omni_testkit::messenger::{
    Facebook, OFFLINE, PAGE_ID, PageSetup, attachment_event, body, connect_page, now_ms,
    post_webhook, start_gateway, text_event,
};
use omni_testkit::{Chat, PATIENCE, eventually, until_ready};
use serde_json::{Value, json};

const AGENT: &str = "agent.smith";
const PSID: &str = "psid-1";

/// Routes the scenario must reach, so a change that stops exercising one cannot shrink the
/// contract unnoticed.
const EXPECTED_ROUTES: &[&str] = &[
    "POST /api/v1/livechat/visitor",
    "GET /api/v1/livechat/room",
    "POST /api/v1/livechat/message",
    "POST /api/v1/livechat/upload/{rid}",
    "GET /api/v1/livechat/messages.history/{rid}",
    "GET /api/v1/livechat/config",
    "GET /api/v1/livechat/department",
    "GET /file-upload/{id}/{name}",
];

fn skipped() -> bool {
    let skip = std::env::var("OMNI_CONTRACT_SKIP").is_ok_and(|v| v == "1");
    if skip {
        eprintln!("contract test skipped: OMNI_CONTRACT_SKIP=1");
    }
    skip
}

fn contract_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contract")
}

/// What `contract/run` said: its exit code and everything it printed.
struct Verdict {
    code: Option<i32>,
    output: String,
}

/// Writes `requests` as JSONL and runs `contract/run` on them with `envs` added.
fn run_contract(dir: &Path, requests: &[Value], envs: &[(&str, &str)]) -> Verdict {
    let file = dir.join("requests.jsonl");
    let lines: String = requests.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&file, lines).expect("write the request log");
    let output = Command::new("bash")
        .arg(contract_dir().join("run"))
        .arg(&file)
        .envs(envs.iter().copied())
        .output()
        .expect("bash runs contract/run");
    Verdict {
        code: output.status.code(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// Panics with the reason when the validators could not run at all (exit 2): no node, npm,
/// network or cache must never look like a pass.
fn ran(verdict: Verdict) -> Verdict {
    assert!(
        matches!(verdict.code, Some(0 | 1)),
        "the contract check could not run (exit {:?}); set OMNI_CONTRACT_SKIP=1 to skip it on \
         purpose:\n{}",
        verdict.code,
        verdict.output
    );
    verdict
}

/// Waits for `n` customer messages in the visitor's open room; returns them.
async fn customer_messages(chat: &Chat, n: usize) -> Vec<SimMessage> {
    let mut found = Vec::new();
    eventually(&format!("{n} customer messages in an open room"), || {
        found = chat
            .sim
            .livechat_rooms()
            .into_iter()
            .filter(|r| r.open)
            .flat_map(|r| chat.sim.messages(&r.id))
            .filter(|m| m.token.is_some())
            .collect();
        found.len() >= n
    })
    .await;
    found
}

/// First message while no agent is online (held), commands, an image, agent replies with text
/// and a file, a dropped socket and its back-fill, a close and the next conversation.
#[tokio::test]
async fn every_request_of_an_end_to_end_run_matches_rocket_chat_s_published_schemas() {
    if skipped() {
        return;
    }
    let chat = Chat::start().await;
    chat.sim.record_rest_requests();
    chat.sim
        .add_user(AGENT, "agent-pw", &["user", "livechat-agent"]);
    let department = chat.sim.add_department("Sales", &[AGENT]);
    chat.sim.set_agent_online(AGENT, false);
    let fb = Facebook::start().await;
    fb.sim.add_psid(PAGE_ID, PSID, "Peter", "Chang");
    let running = start_gateway(&chat, &fb).await;
    until_ready(&running.gateway).await;
    let setup = PageSetup {
        department: Some(Department {
            id: department,
            name: "Sales".into(),
        }),
        ..PageSetup::default()
    };
    connect_page(&running.gateway, &fb, setup).await;
    let addr = running.gateway.http_addr;
    let deliver = |items: Vec<Value>| {
        let fb = &fb;
        async move { assert_eq!(post_webhook(fb, addr, &body(&items)).await, 200) }
    };

    // Held: no agent online, then one comes online.
    let t0 = now_ms();
    deliver(vec![text_event(PSID, "m-1", t0, "hello, anyone?")]).await;
    fb.sim
        .wait_for_sent(|m| m.text.as_deref() == Some(OFFLINE), PATIENCE)
        .await
        .expect("the offline message");
    chat.sim.set_agent_online(AGENT, true);
    customer_messages(&chat, 1).await;

    // Commands an admin types, including one that looks a department up.
    for command in [
        "/facebook status".to_owned(),
        "/facebook pages".to_owned(),
        format!("/facebook edit {PAGE_ID} department Sales"),
    ] {
        let before = chat.bot_messages(&chat.alice_dm).len();
        chat.sim.post("alice", &chat.alice_dm, &command);
        eventually(&format!("an answer to {command}"), || {
            chat.bot_messages(&chat.alice_dm).len() > before
        })
        .await;
    }

    // An image from the customer: an upload.
    let image = fb
        .cdn
        .put("photo.png", "image/png", b"\x89PNG\r\n\x1a\nbytes".to_vec());
    deliver(vec![attachment_event(PSID, "m-2", t0 + 1, "image", &image)]).await;
    let messages = customer_messages(&chat, 2).await;
    let rid = messages[0].rid.clone();

    // Agent replies: text, and a file the gateway downloads.
    chat.sim.agent_reply(AGENT, &rid, "Nice photo.");
    fb.sim
        .wait_for_sent(|m| m.text.as_deref() == Some("Nice photo."), PATIENCE)
        .await
        .expect("the agent's text reaches Messenger");
    chat.sim.agent_upload(
        AGENT,
        &rid,
        "invoice.pdf",
        "application/pdf",
        b"%PDF-1.4 invoice".to_vec(),
    );
    fb.sim
        .wait_for_sent(|m| m.file.is_some(), PATIENCE)
        .await
        .expect("the agent's file reaches Messenger");

    // A reply written while the socket is down arrives by back-fill (`messages.history`).
    let connections = chat.sim.stats().ws_connections;
    chat.sim.refuse_connections(true);
    chat.sim.drop_connections();
    let health = running.gateway.health.clone();
    eventually("the gateway sees the link down", || {
        health.readiness().is_err()
    })
    .await;
    chat.sim
        .agent_reply(AGENT, &rid, "Written while you were away");
    chat.sim.refuse_connections(false);
    eventually("the gateway reconnects", || {
        chat.sim.stats().ws_connections > connections
    })
    .await;
    fb.sim
        .wait_for_sent(
            |m| m.text.as_deref() == Some("Written while you were away"),
            PATIENCE,
        )
        .await
        .expect("the back-filled reply reaches Messenger");

    // The agent closes; the customer's next message opens a new room.
    chat.sim.close_room(&rid, AGENT);
    deliver(vec![text_event(PSID, "m-3", t0 + 2, "one more thing")]).await;
    eventually("a second room", || {
        chat.sim
            .livechat_rooms()
            .iter()
            .any(|r| r.open && r.id != rid)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    running.gateway.shutdown().await.expect("clean shutdown");

    let requests = chat.sim.rest_requests();
    let reached: Vec<String> = requests
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["method"].as_str().unwrap_or(""),
                r["route"].as_str().unwrap_or("")
            )
        })
        .collect();
    for route in EXPECTED_ROUTES {
        assert!(
            reached.iter().any(|r| r == route),
            "the scenario no longer reaches {route}; reached: {reached:#?}"
        );
    }
    let verdict = ran(run_contract(running.dir.path(), &requests, &[]));
    println!("{}", verdict.output);
    assert_eq!(
        verdict.code,
        Some(0),
        "requests the gateway sent break Rocket.Chat's published schemas:\n{}",
        verdict.output
    );
}

/// Proof the check bites: wrong requests, sent to the simulator like any client would, are
/// recorded and rejected by the package's validators, naming route and field.
#[tokio::test]
async fn a_deliberately_wrong_request_fails_naming_route_and_field() {
    if skipped() {
        return;
    }
    omni_gateway::tls::install_crypto_provider();
    let chat = Chat::start().await;
    chat.sim.record_rest_requests();
    // The crate's reqwest has no default TLS provider; the gateway installs one, and this test
    // may run before any gateway in the process did.
    omni_gateway::tls::install_crypto_provider();
    let http = reqwest::Client::new();
    let base = chat.sim.url();
    let url = |path: &str| base.join(path).expect("simulator URL");
    // `rid` missing.
    http.post(url("api/v1/livechat/message"))
        .json(&json!({"token": "visitor-token", "msg": "hello"}))
        .send()
        .await
        .expect("the simulator answers");
    // An object where a string is expected (the package's ajv coerces numbers, not objects).
    http.post(url("api/v1/livechat/message"))
        .json(&json!({"token": "visitor-token", "rid": "R1", "msg": {"text": "hello"}}))
        .send()
        .await
        .expect("the simulator answers");
    // `token` missing from a query.
    http.get(url("api/v1/livechat/messages.history/R1?limit=20"))
        .send()
        .await
        .expect("the simulator answers");
    let dir = tempfile::tempdir().expect("temp dir");
    let verdict = ran(run_contract(dir.path(), &chat.sim.rest_requests(), &[]));
    assert_eq!(verdict.code, Some(1), "{}", verdict.output);
    for (route, field) in [
        ("POST livechat/message", "field rid"),
        ("POST livechat/message", "field msg"),
        ("GET livechat/messages.history/:rid", "field token"),
    ] {
        for version in ["@6.", "@8."] {
            assert!(
                verdict
                    .output
                    .lines()
                    .any(|l| l.contains(version) && l.contains(route) && l.contains(field)),
                "no {version}x violation naming {route} {field}:\n{}",
                verdict.output
            );
        }
    }
}

/// Without network and without a cache the check fails loudly, saying how to fix or skip it.
#[tokio::test]
async fn without_network_or_cache_the_check_fails_with_the_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cache = dir.path().join("empty-cache");
    let request = json!({"method": "GET", "route": "/api/v1/me", "path": "/api/v1/me",
        "query": "", "content_type": "", "body": null});
    let verdict = run_contract(
        dir.path(),
        &[request],
        &[
            (
                "OMNI_CONTRACT_CACHE",
                cache.to_str().expect("UTF-8 temp path"),
            ),
            // Nothing listens on port 9: the registry is unreachable, at once.
            ("npm_config_registry", "http://127.0.0.1:9/"),
            ("npm_config_fetch_retries", "0"),
            ("npm_config_offline", "false"),
            (
                "npm_config_cache",
                dir.path().join("npm").to_str().expect("UTF-8"),
            ),
        ],
    );
    assert_eq!(verdict.code, Some(2), "{}", verdict.output);
    assert!(
        verdict.output.contains("OMNI_CONTRACT_SKIP=1"),
        "the failure says how to skip on purpose:\n{}",
        verdict.output
    );
}
