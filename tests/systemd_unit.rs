//! The systemd unit and the stop it promises: `systemd-analyze` rates the unit's hardening and
//! finds nothing to complain about, and the real binary, stopped with SIGTERM while deliveries
//! are in flight, exits within the unit's `TimeoutStopSec` and loses nothing: after a restart
//! every acknowledged webhook event reaches Rocket.Chat exactly once, in order.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use omni_gateway::ids::PageId;
use omni_gateway::store::{Page, PageStatus, Store, TokenKey};
use omni_sim::graph::GraphSim;
use omni_testkit::daemon::{Daemon, free_port};
use omni_testkit::webhook;
use omni_testkit::{APP_ID, APP_SECRET, Chat, config_text_on_port, gateway_binary};

const UNIT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/omni-gateway.service");
const BINARY: &str = env!("CARGO_BIN_EXE_omni-gateway");
const PAGE: &str = "333000000000001";

fn unit_text() -> String {
    std::fs::read_to_string(UNIT).unwrap()
}

/// The unit with `ExecStart=` pointing at the binary this test built, so `verify` can stat it.
fn unit_for_this_build(dir: &Path) -> PathBuf {
    let path = dir.join("omni-gateway.service");
    std::fs::write(&path, unit_text().replace("/usr/bin/omni-gateway", BINARY)).unwrap();
    path
}

fn systemd_analyze() -> Option<&'static str> {
    let found = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("note: systemd-analyze is not installed; the unit's rating was not checked");
    }
    found.then_some("systemd-analyze")
}

/// A `Key=` value of the unit (the first, for keys that repeat).
fn unit_value(key: &str) -> Option<String> {
    unit_text()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_owned))
}

#[test]
fn the_unit_declares_notify_watchdog_restart_and_credentials() {
    for (key, want) in [
        ("Type", Some("notify")),
        ("Restart", Some("on-failure")),
        ("WatchdogSec", None),
        ("TimeoutStopSec", None),
        ("LoadCredential", None),
        ("DynamicUser", Some("yes")),
        ("ProtectSystem", Some("strict")),
    ] {
        let value = unit_value(key).unwrap_or_else(|| panic!("{key}= missing from the unit"));
        if let Some(want) = want {
            assert_eq!(value, want, "{key}=");
        }
    }
    assert!(
        !unit_text().contains("Environment=OMNI_GATEWAY_"),
        "secrets come in as credentials, never as environment variables"
    );
}

#[test]
fn systemd_analyze_rates_the_unit_at_most_2_0() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let output = Command::new(tool)
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for omni-gateway.service: "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure in:\n{text}"));
    println!("systemd-analyze security: exposure {exposure}");
    assert!(exposure <= 2.0, "exposure {exposure} > 2.0:\n{text}");
}

#[test]
fn systemd_analyze_verify_finds_nothing() {
    let Some(tool) = systemd_analyze() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_for_this_build(dir.path());
    let output = Command::new(tool)
        .arg("verify")
        .arg(&unit)
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
}

/// A connected page in a fresh store, as `authorize` would leave it (without a token: the relay
/// then names visitors by a placeholder, which is all this test needs).
fn seed_store(path: &Path) {
    let key = TokenKey::load_or_create(&path.with_extension("key")).unwrap();
    let store = Store::open(path, key, 8 * 1024 * 1024).unwrap();
    let mut page = Page::new(PageId::new(PAGE), "Sigterm Page".into());
    page.status = PageStatus::Connected;
    store.put_page(&page).unwrap();
    store.flush_blocking().unwrap();
}

/// Every visitor message of every Livechat room, room by room, each room in arrival order.
fn delivered(chat: &Chat) -> Vec<String> {
    chat.sim
        .livechat_rooms()
        .iter()
        .flat_map(|r| chat.sim.messages(&r.id))
        .filter(|m| m.token.is_some())
        .map(|m| m.msg)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_delivery_loses_nothing_and_stops_in_time() {
    let chat = Chat::start().await;
    chat.sim
        .add_user("sam", "sam-pw", &["user", "livechat-agent"]);
    chat.sim.set_agent_online("sam", true);
    let graph = GraphSim::start(APP_ID, APP_SECRET).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("data");
    seed_store(&store);
    let port = free_port();
    let config_path = dir.path().join("bot.toml");
    let config = config_text_on_port(chat.sim.url().as_str(), graph.url().as_str(), &store, port);
    std::fs::write(&config_path, config).unwrap();
    let log = dir.path().join("daemon.log");
    let stop_limit = Duration::from_secs(
        unit_value("TimeoutStopSec")
            .and_then(|v| v.trim_end_matches('s').parse().ok())
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let webhook = format!("{base}/webhooks/messenger");
    let http = reqwest::Client::new();

    let mut daemon = Daemon::start(gateway_binary!(), &config_path, log.clone());
    daemon.until_ready(&http, &base).await;
    // Rocket.Chat is slow: each call takes 100 ms, so deliveries are in flight at the SIGTERM.
    chat.sim.set_rest_latency(Duration::from_millis(100));

    // Three customers write, and keep writing while the gateway stops; every 200 is a promise.
    let stopping = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for customer in 0..3 {
        let (graph, webhook, stopping) = (graph.clone(), webhook.clone(), stopping.clone());
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for n in 0.. {
                let text = format!("customer {customer} message {n}");
                let psid = format!("80000000000000{customer}");
                let body = webhook::text_body(PAGE, &psid, &format!("m_{customer}_{n}"), &text);
                match graph.deliver_webhook(&webhook, &body).await {
                    Ok(r) if r.status().is_success() => acknowledged.push(text),
                    // Refused or cut off while stopping: Meta would retry it later.
                    _ if stopping.load(Ordering::Relaxed) => break,
                    Ok(r) => panic!("webhook refused while running: {}", r.status()),
                    Err(e) => panic!("webhook failed while running: {e}"),
                }
                if n >= 10 && stopping.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            acknowledged
        }));
    }
    omni_testkit::eventually("some deliveries before the stop", || {
        delivered(&chat).len() >= 3
    })
    .await;
    stopping.store(true, Ordering::Relaxed);
    daemon.sigterm();
    let started = tokio::time::Instant::now();
    let status = daemon.wait_exit(stop_limit).await;
    let took = started.elapsed();
    match status {
        Some(status) => assert!(status.success(), "the gateway exited with {status}"),
        None => panic!("the gateway did not stop within {stop_limit:?}"),
    }
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    let before_restart = delivered(&chat).len();
    println!(
        "stopped in {took:?} with {before_restart} of {} acknowledged events delivered",
        acknowledged.len()
    );
    assert!(
        before_restart < acknowledged.len(),
        "the stop came while deliveries were still due"
    );

    chat.sim.set_rest_latency(Duration::ZERO);
    let mut daemon = Daemon::start(gateway_binary!(), &config_path, log.clone());
    daemon.until_ready(&http, &base).await;
    omni_testkit::eventually("every acknowledged event delivered", || {
        delivered(&chat).len() >= acknowledged.len()
    })
    .await;
    let got = delivered(&chat);
    for text in &acknowledged {
        let copies = got.iter().filter(|t| *t == text).count();
        assert_eq!(copies, 1, "{text:?} delivered {copies} times");
    }
    assert_eq!(
        got.len(),
        acknowledged.len(),
        "nothing unacknowledged appeared"
    );
    for customer in 0..3 {
        let prefix = format!("customer {customer} message ");
        let order: Vec<u32> = got
            .iter()
            .filter_map(|t| t.strip_prefix(&prefix))
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(
            order.windows(2).all(|w| w[0] < w[1]),
            "customer {customer}: {order:?}"
        );
    }
    daemon.sigterm();
    let status = daemon.wait_exit(stop_limit).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the restarted gateway did not stop cleanly within {stop_limit:?}: {status:?}"
    );
}
