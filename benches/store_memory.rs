//! The store's memory under the soak's write pattern, without the HTTP, relay or simulators: per
//! conversation a conversation record, one inbox event (journaled, read, removed, leaving its `seen`
//! mark) and one outbox item (the same, leaving its `relayed` mark), with a group-commit sync
//! every 100 conversations. Prints the process's VmRSS every 20,000 conversations, so the soak's
//! RSS growth can be split between sled and the rest of the gateway.
//!
//! `cargo bench --bench store_memory` (all kinds); `-- conv|inbox|outbox` for one kind alone,
//! `-- updates` for a conversation record rewritten six times as the soak does;
//! `-- all 200000` for more conversations; `-- all 60000 1` to flush after every conversation.

mod support;

use omni_gateway::ids::{ConversationKey, MessageId, PageId, Psid, RoomId, VisitorToken};
use omni_gateway::store::{
    Conversation, InboundEvent, OutboundItem, Outgoing, Payload, Store, TokenKey,
};
use serde_json::json;

/// sled's page cache in the measurement: small, so what grows beyond it is visible.
const CACHE_BYTES: u64 = 4 << 20;

fn rss_kib() -> u64 {
    support::rss_kib("self").unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().filter(|a| a != "--bench").collect();
    let mode = args.get(1).cloned().unwrap_or_else(|| "all".into());
    let total: u64 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(60_000);
    // The soak flushes for every webhook (group commit); 100 is a busy gateway's batch.
    let sync_every: u64 = args.get(3).and_then(|n| n.parse().ok()).unwrap_or(100);
    let dir = tempfile::tempdir().expect("temp dir");
    let store =
        Store::open(dir.path(), TokenKey::from_bytes([7; 32]), CACHE_BYTES).expect("store opens");
    let start = rss_kib();
    println!("| kind | conversations | VmRSS MiB | growth MiB |");
    println!("|---|---:|---:|---:|");
    for n in 1..=total {
        let key = ConversationKey::new(
            PageId::new("111111111111111"),
            Psid::new(format!("{}", 7_000_000_000_000_000 + n)),
        );
        if mode == "all" || mode == "conv" || mode == "updates" {
            store
                .put_conversation(&Conversation {
                    key: key.clone(),
                    visitor_token: VisitorToken::new(format!("fb-{n:032x}")),
                    room: Some(RoomId::new(format!("{n:017}"))),
                    last_inbound_ms: Some(n),
                    held_since_ms: None,
                    offline_notice_sent: false,
                    last_agent_message_ms: None,
                })
                .expect("conversation written");
        }
        if mode == "updates" {
            // The soak's pattern: the record is rewritten several times per conversation (room
            // set, customer's write, hold cleared, watermark, room cleared on close).
            for step in 0..6u64 {
                store
                    .update_conversation(&key, |c| {
                        c.last_inbound_ms = Some(n * 10 + step);
                        c.room = if step % 2 == 0 {
                            Some(RoomId::new(format!("{n:017}")))
                        } else {
                            None
                        };
                    })
                    .expect("conversation updated");
            }
        }
        if mode == "all" || mode == "inbox" {
            let event = InboundEvent {
                key: key.clone(),
                timestamp_ms: n,
                dedupe_key: Some(format!("m:m_{n:040}")),
                received_ms: n,
                standby: false,
                payload: Payload::from_value(
                    &json!({"message": {"mid": format!("m_{n:040}"), "text": "Hi, has my order shipped?"}}),
                ),
            };
            store
                .enqueue_inbound(vec![event])
                .await
                .expect("event stored");
            let (id, _) = store
                .inbox()
                .oldest(&key)
                .expect("inbox read")
                .expect("the event");
            store.inbox().remove(&id).expect("event removed");
        }
        if mode == "all" || mode == "outbox" {
            let item = OutboundItem {
                key: key.clone(),
                rc_message_id: MessageId::new(format!("{n:017}")),
                room: RoomId::new(format!("{n:017}")),
                agent_username: Some("sam".into()),
                created_ms: n,
                payload: Outgoing::Close { ts_ms: n },
            };
            store.enqueue_outbound(item).expect("item stored");
            let (id, _) = store
                .outbox()
                .oldest(&key)
                .expect("outbox read")
                .expect("the item");
            store.outbox().remove(&id).expect("item removed");
        }
        if n % sync_every == 0 {
            store.sync().await.expect("flushed");
        }
        if n % 20_000 == 0 || n == total {
            let now = rss_kib();
            println!(
                "| {mode} | {n} | {:.1} | {:.1} |",
                now as f64 / 1024.0,
                now.saturating_sub(start) as f64 / 1024.0
            );
        }
    }
}
