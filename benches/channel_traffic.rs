//! The cost of public-channel traffic on `__my_messages__`: the stream carries every message of
//! every public channel the bot can see, and the gateway drops it at the door
//! (`realtime::is_ignored_my_message`, before the frame is decoded). This times that check on a
//! realistic channel message frame (mentions, markdown tree, a URL preview), and for comparison
//! what the same frame would cost decoded and read in full, then prints the CPU share of 1,000
//! channel messages a second.
//!
//! `cargo bench --bench channel_traffic` (`-- 200000` for more frames).

use std::hint::black_box;
use std::time::Instant;

use omni_gateway::rocketchat::ddp::frame;
use omni_gateway::rocketchat::realtime::{Streamed, is_ignored_my_message};
use serde_json::json;

fn channel_frame(n: usize) -> String {
    let text = format!(
        "@here release {n} is out: see https://example.com/notes/{n} for the notes, thanks everyone who helped test it this week"
    );
    json!({
        "msg": "changed",
        "collection": "stream-room-messages",
        "id": "id",
        "fields": {
            "eventName": "__my_messages__",
            "args": [
                {
                    "_id": format!("m{n:016}"),
                    "rid": "GENERAL",
                    "msg": text,
                    "ts": {"$date": 1_764_000_000_000u64 + n as u64},
                    "u": {"_id": "u1", "username": "carol", "name": "Carol Jones"},
                    "mentions": [{"_id": "here", "username": "here", "type": "team"}],
                    "channels": [],
                    "md": [{"type": "PARAGRAPH", "value": [
                        {"type": "MENTION_USER", "value": {"type": "PLAIN_TEXT", "value": "here"}},
                        {"type": "PLAIN_TEXT", "value": " release is out: see "},
                        {"type": "LINK", "value": {"src": {"type": "PLAIN_TEXT", "value": "https://example.com/notes"},
                            "label": [{"type": "PLAIN_TEXT", "value": "https://example.com/notes"}]}},
                        {"type": "PLAIN_TEXT", "value": " for the notes, thanks everyone"}
                    ]}],
                    "urls": [{"url": format!("https://example.com/notes/{n}"), "meta": {"pageTitle": "Release notes", "description": "What changed in this release"}}],
                    "_updatedAt": {"$date": 1_764_000_000_000u64 + n as u64}
                },
                {"roomParticipant": false, "roomType": "c", "roomName": "general"}
            ]
        }
    })
    .to_string()
}

fn main() {
    let total: usize = std::env::args()
        .filter(|a| a != "--bench")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let frames: Vec<String> = (0..1000).map(channel_frame).collect();
    let bytes = frames[0].len();

    let started = Instant::now();
    let mut dropped = 0usize;
    for i in 0..total {
        if is_ignored_my_message(black_box(&frames[i % frames.len()])) {
            dropped += 1;
        }
    }
    let door = started.elapsed();
    assert_eq!(dropped, total, "every channel frame is dropped at the door");

    let started = Instant::now();
    let mut read = 0usize;
    for i in 0..total {
        if let Ok(frame::ServerFrame::Changed {
            collection, fields, ..
        }) = frame::decode(black_box(&frames[i % frames.len()]))
        {
            if let Some(event) = frame::StreamEvent::from_changed(&collection, &fields) {
                if Streamed::read(&event).is_some() {
                    read += 1;
                }
            }
        }
    }
    let full = started.elapsed();
    assert_eq!(read, total, "the full decode reads every frame");

    let per = |d: std::time::Duration| d.as_nanos() as f64 / total as f64;
    let (door_ns, full_ns) = (per(door), per(full));
    println!("frame: {bytes} bytes, {total} frames");
    println!("| path | ns/frame | CPU at 1,000 frames/s |");
    println!("|---|---:|---:|");
    println!(
        "| dropped at the door (`is_ignored_my_message`) | {door_ns:.0} | {:.3} % |",
        door_ns * 1000.0 / 1e9 * 100.0
    );
    println!(
        "| decoded and read in full (before) | {full_ns:.0} | {:.3} % |",
        full_ns * 1000.0 / 1e9 * 100.0
    );
}
