//! Webhook ingest under load: signed Messenger webhooks POSTed to a real gateway (in-process,
//! `Gateway::start`, store on disk) by N concurrent senders, while the inbound relay delivers to
//! the Rocket.Chat simulator. Reports per-request latency (p50/p99/max, from sending to the
//! durable 200), events per second, and store flushes per request (the group commit at work).
//!
//! `cargo bench --bench webhook_ingest` runs the default matrix; one case:
//! `cargo bench --bench webhook_ingest -- --concurrency 32 --requests 4000 --events 1`.
//! BENCHMARKS.md records the figures and the machine.

use std::time::Duration;

use omni_gateway::config::Config;
use omni_gateway::daemon::Gateway;
use omni_gateway::ids::PageId;
use omni_gateway::store::{Page, PageStatus};
use omni_sim::graph::GraphSim;
use omni_sim::rocketchat::{RocketChatSim, SimOptions};
use omni_testkit::webhook;
use omni_testkit::{APP_ID, APP_SECRET, BOT, BOT_PASSWORD, config_text_on_port};
use serde_json::json;
use tokio::time::Instant;

const PAGE: &str = "444000000000001";
/// Conversations the load is spread over (one ordered worker each).
const CUSTOMERS: usize = 200;

struct Case {
    concurrency: usize,
    requests: usize,
    events_per_request: usize,
}

struct Outcome {
    p50: Duration,
    p99: Duration,
    max: Duration,
    events_per_second: f64,
    flushes_per_request: f64,
    drained_in: Duration,
}

fn main() {
    let cases = cases_from_args();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!(
        "| concurrency | requests | events/request | p50 ms | p99 ms | max ms | events/s | flushes/request | all delivered after s |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for case in cases {
        let o = runtime.block_on(run(&case));
        println!(
            "| {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.0} | {:.3} | {:.1} |",
            case.concurrency,
            case.requests,
            case.events_per_request,
            ms(o.p50),
            ms(o.p99),
            ms(o.max),
            o.events_per_second,
            o.flushes_per_request,
            o.drained_in.as_secs_f64()
        );
    }
}

fn cases_from_args() -> Vec<Case> {
    let value = omni_testkit::bench::arg;
    match value("--concurrency") {
        Some(concurrency) => vec![Case {
            concurrency,
            requests: value("--requests").unwrap_or(4000),
            events_per_request: value("--events").unwrap_or(1),
        }],
        None => [1, 8, 32, 128]
            .into_iter()
            .map(|concurrency| Case {
                concurrency,
                requests: 4000,
                events_per_request: 1,
            })
            .chain(std::iter::once(Case {
                concurrency: 32,
                requests: 1000,
                events_per_request: 10,
            }))
            .collect(),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn run(case: &Case) -> Outcome {
    let chat = RocketChatSim::start(SimOptions {
        // The set-up `check` asks for: the REST rate limiter off.
        rest_rate_limiter: false,
        ..SimOptions::default()
    })
    .await
    .expect("rocket.chat simulator");
    chat.add_user(BOT, BOT_PASSWORD, &["bot"]);
    chat.add_user("sam", "sam-pw", &["user", "livechat-agent"]);
    chat.set_agent_online("sam", true);
    let facebook = GraphSim::start(APP_ID, APP_SECRET)
        .await
        .expect("graph simulator");
    let dir = tempfile::tempdir().expect("temp dir");
    let text = config_text_on_port(
        chat.url().as_str(),
        facebook.url().as_str(),
        &dir.path().join("data"),
        0,
    );
    let config = Config::parse(&text, &dir.path().join("bot.toml"), &|_| None).expect("config");
    let gateway = Gateway::start(config).await.expect("gateway");
    let mut page = Page::new(PageId::new(PAGE), "Bench Page".into());
    page.status = PageStatus::Connected;
    gateway.store.put_page(&page).expect("seed page");
    while gateway.health.readiness().is_err() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let addr = gateway.http_addr;
    let bodies: Vec<(Vec<u8>, String)> = (0..case.requests)
        .map(|n| {
            let body = webhook(n, case.events_per_request);
            let signature = facebook.sign(&body);
            (body, signature)
        })
        .collect();
    let bodies = std::sync::Arc::new(bodies);
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(case.concurrency)
        .build()
        .expect("http client");
    let flushes_before = gateway.store.flush_count();
    let started = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..case.concurrency {
        let (client, bodies, next) = (client.clone(), bodies.clone(), next.clone());
        senders.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((body, signature)) = bodies.get(n) else {
                    return latencies;
                };
                let sent = Instant::now();
                let status = webhook::post(&client, addr, body.clone(), Some(signature)).await;
                assert_eq!(status, 200, "webhook refused");
                latencies.push(sent.elapsed());
            }
        }));
    }
    let mut latencies = Vec::with_capacity(case.requests);
    for sender in senders {
        latencies.extend(sender.await.expect("sender task"));
    }
    let elapsed = started.elapsed();
    let flushes = gateway.store.flush_count() - flushes_before;
    while !gateway.store.inbox().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drained_in = started.elapsed();
    latencies.sort();
    let pick = |q: f64| latencies[((latencies.len() as f64 - 1.0) * q).round() as usize];
    let outcome = Outcome {
        p50: pick(0.50),
        p99: pick(0.99),
        max: latencies[latencies.len() - 1],
        events_per_second: (case.requests * case.events_per_request) as f64 / elapsed.as_secs_f64(),
        flushes_per_request: flushes as f64 / case.requests as f64,
        drained_in,
    };
    gateway.shutdown().await.expect("shutdown");
    chat.shutdown().await;
    outcome
}

/// Request `n`: `events` text messages from one of the customers, each with its own `mid`.
fn webhook(n: usize, events: usize) -> Vec<u8> {
    let psid = format!("9{:015}", n % CUSTOMERS);
    let messaging: Vec<_> = (0..events)
        .map(|e| {
            json!({
                "sender": { "id": psid },
                "recipient": { "id": PAGE },
                "timestamp": 1_700_000_000_000u64 + (n * events + e) as u64,
                "message": { "mid": format!("m_bench_{n}_{e}"), "text": format!("message {n}.{e}") },
            })
        })
        .collect();
    json!({
        "object": "page",
        "entry": [{ "id": PAGE, "time": 1_700_000_000_000u64, "messaging": messaging }],
    })
    .to_string()
    .into_bytes()
}
