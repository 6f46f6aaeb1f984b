//! The full loop through the real gateway and both simulators: a customer writes (signed
//! webhook) → the message lands in a Livechat room → an agent answers → the answer reaches the
//! Send API. Each conversation is a new customer on the sandbox's shop page (so each also opens a
//! room, registers a visitor and gets the welcome). An "agent desk" task answers every question
//! as soon as it lands, as an agent watching the queue would.
//!
//! Reports conversations per second and the end-to-end latency per conversation (from sending the
//! webhook to the Send API receiving the agent's answer), p50/p99/max.
//!
//! `cargo bench --bench full_loop` runs the default matrix; one case:
//! `cargo bench --bench full_loop -- --concurrency 16 --conversations 400`.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use omni_gateway::sandbox::{SHOP_AGENT, SHOP_PAGE, Sandbox};
use tokio::sync::Semaphore;
use tokio::time::Instant;

struct Case {
    concurrency: usize,
    conversations: usize,
}

fn main() {
    omni_gateway::tls::install_crypto_provider();
    // The gateway's warnings go to stderr (RUST_LOG overrides), so a stuck run says why.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    println!("| concurrency | conversations | conversations/s | p50 ms | p99 ms | max ms |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for case in cases_from_args() {
        let (rate, p50, p99, max) = runtime.block_on(run(&case));
        println!(
            "| {} | {} | {rate:.0} | {p50:.1} | {p99:.1} | {max:.1} |",
            case.concurrency, case.conversations
        );
    }
}

fn cases_from_args() -> Vec<Case> {
    let value = omni_testkit::bench::arg;
    match value("--concurrency") {
        Some(concurrency) => vec![Case {
            concurrency,
            conversations: value("--conversations").unwrap_or(400),
        }],
        None => [1, 8, 32]
            .into_iter()
            .map(|concurrency| Case {
                concurrency,
                conversations: 300,
            })
            .collect(),
    }
}

/// Returns conversations/s and p50/p99/max latency in milliseconds.
async fn run(case: &Case) -> (f64, f64, f64, f64) {
    let sandbox = Arc::new(Sandbox::start().await.expect("sandbox starts"));
    // The tour connects and configures the pages, as an admin would.
    sandbox.tour(&mut |_| {}).await.expect("the tour completes");

    let desk = tokio::spawn(agent_desk(sandbox.clone()));
    let gate = Arc::new(Semaphore::new(case.concurrency));
    let started = Instant::now();
    let mut conversations = Vec::new();
    for n in 0..case.conversations {
        let sandbox = sandbox.clone();
        let gate = gate.clone();
        conversations.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await.expect("semaphore open");
            let psid = format!("{}", 8_100_000_000_000_000u64 + n as u64);
            let answer = format!("answer {n}");
            let t0 = Instant::now();
            sandbox
                .customer_writes(SHOP_PAGE, &psid, &format!("question {n}"))
                .await
                .expect("webhook accepted");
            let sent = sandbox
                .facebook
                .wait_for_sent(
                    |m| m.text.as_deref() == Some(answer.as_str()),
                    Duration::from_secs(60),
                )
                .await;
            if sent.is_none() {
                eprintln!(
                    "conversation {n} ({psid}): the answer did not reach the Send API within 60 s"
                );
                dump_conversation(&sandbox, n);
            }
            sent.map(|_| t0.elapsed())
        }));
    }
    let mut latencies = Vec::new();
    for conversation in conversations {
        if let Some(latency) = conversation.await.expect("conversation task") {
            latencies.push(latency);
        }
    }
    assert_eq!(
        latencies.len(),
        case.conversations,
        "every conversation completes"
    );
    let elapsed = started.elapsed();
    desk.abort();
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let result = (
        case.conversations as f64 / elapsed.as_secs_f64(),
        ms(pct(0.50)),
        ms(pct(0.99)),
        ms(latencies[latencies.len() - 1]),
    );
    if let Ok(sandbox) = Arc::try_unwrap(sandbox) {
        sandbox.stop().await;
    }
    result
}

/// Answers each "question N" with "answer N" as soon as it appears in a Livechat room.
async fn agent_desk(sandbox: Arc<Sandbox>) {
    let mut answered: HashSet<String> = HashSet::new();
    let mut seen_messages: HashMap<String, usize> = HashMap::new();
    loop {
        for room in sandbox.chat.livechat_rooms() {
            let messages = sandbox.chat.messages(&room.id);
            let from = seen_messages.get(room.id.as_str()).copied().unwrap_or(0);
            for message in messages.iter().skip(from) {
                if let Some(n) = message.msg.strip_prefix("question ") {
                    if answered.insert(n.to_owned()) {
                        sandbox
                            .chat
                            .agent_reply(SHOP_AGENT, &room.id, &format!("answer {n}"));
                    }
                }
            }
            seen_messages.insert(room.id.to_string(), messages.len());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Where conversation `n` got stuck: its room's messages and what the Send API received.
fn dump_conversation(sandbox: &Sandbox, n: usize) {
    let question = format!("question {n}");
    for room in sandbox.chat.livechat_rooms() {
        let messages = sandbox.chat.messages(&room.id);
        if messages.iter().any(|m| m.msg == question) {
            let lines: Vec<String> = messages
                .iter()
                .map(|m| format!("{}: {}", m.username, m.msg))
                .collect();
            eprintln!("  room {} (open {}): {lines:?}", room.id, room.open);
        }
    }
}
