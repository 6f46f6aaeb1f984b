//! How long the store takes to open with a held backlog: the inbox's index is rebuilt from the
//! journal's segments at start-up, so the time grows with what waits. Fills a store with N held
//! events (Messenger-sized, 1000 senders, in records of 1000), closes it, opens it three times,
//! and prints the time to open and the process's VmRSS after each.
//!
//! `cargo bench --bench store_reopen` (1,000,000 events); `-- 100000` for fewer.

mod support;

use std::time::Instant;

use omni_gateway::ids::{ConversationKey, PageId, Psid};
use omni_gateway::store::{InboundEvent, Payload, Store, TokenKey};
use serde_json::json;

const CACHE_BYTES: u64 = 64 << 20;

fn rss_mib() -> f64 {
    support::rss_kib("self").unwrap_or(0) as f64 / 1024.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let total: u64 = args
        .get(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let key = || TokenKey::from_bytes([7; 32]);
    let store = Store::open(dir.path(), key(), CACHE_BYTES).expect("store opens");
    let filling = Instant::now();
    for batch in 0..total.div_ceil(1000) {
        let events = (batch * 1000..((batch + 1) * 1000).min(total))
            .map(|n| {
                let mid = format!("m_{n:084}");
                InboundEvent {
                    key: ConversationKey::new(
                        PageId::new("111111111111111"),
                        Psid::new(format!("{}", 7_000_000_000_000_000 + n % 1000)),
                    ),
                    timestamp_ms: 1_700_000_000_000 + n,
                    dedupe_key: Some(format!("m:{mid}")),
                    received_ms: 1_700_000_000_000 + n,
                    standby: false,
                    payload: Payload::from_value(&json!({
                        "sender": {"id": format!("{}", 7_000_000_000_000_000 + n % 1000)},
                        "recipient": {"id": "111111111111111"},
                        "timestamp": 1_700_000_000_000 + n,
                        "message": {"mid": mid, "text": "Hi, has my order shipped yet? It was due on Monday."}
                    })),
                }
            })
            .collect();
        store.enqueue_inbound(events).await.expect("events held");
    }
    println!(
        "filled {total} held events in {:.1} s; VmRSS {:.1} MiB",
        filling.elapsed().as_secs_f64(),
        rss_mib()
    );
    drop(store);
    println!("| open | held | seconds | VmRSS MiB |");
    println!("|---:|---:|---:|---:|");
    for run in 1..=3 {
        let opening = Instant::now();
        let store = Store::open(dir.path(), key(), CACHE_BYTES).expect("store reopens");
        let seconds = opening.elapsed().as_secs_f64();
        println!(
            "| {run} | {} | {seconds:.2} | {:.1} |",
            store.inbox().len(),
            rss_mib()
        );
    }
}
