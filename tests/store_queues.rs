//! The inbox, the outbox and group commit.

use std::time::Duration;

use omni_gateway::ids::{ConversationKey, MessageId, PageId, Psid, RoomId};
use omni_gateway::store::{
    EnqueueOutcome, InboundEvent, OutboundItem, Outgoing, Payload, Store, TokenKey,
};
use serde_json::json;

fn open(dir: &std::path::Path) -> Store {
    Store::open(dir, TokenKey::from_bytes([3; 32]), 8 * 1024 * 1024).unwrap()
}

fn conv(page: &str, psid: &str) -> ConversationKey {
    ConversationKey::new(PageId::new(page), Psid::new(psid))
}

fn event(key: &ConversationKey, timestamp_ms: u64, mid: Option<&str>, label: &str) -> InboundEvent {
    InboundEvent {
        key: key.clone(),
        timestamp_ms,
        dedupe_key: mid.map(str::to_owned),
        received_ms: 1_000 + timestamp_ms,
        standby: false,
        payload: Payload::from_value(&json!({ "label": label })),
    }
}

fn labels(store: &Store, key: &ConversationKey) -> Vec<String> {
    store
        .inbox()
        .all_for(key)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.payload.to_value()["label"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn inbox_comes_back_in_timestamp_then_arrival_order() {
    /// (timestamp, mid, label) of one event.
    type Event<'a> = (u64, Option<&'a str>, &'a str);
    // (batches, expected order of labels)
    let cases: &[(&[&[Event]], &[&str])] = &[
        (
            &[&[
                (30, Some("a"), "c"),
                (10, Some("b"), "a"),
                (20, Some("c"), "b"),
            ]],
            &["a", "b", "c"],
        ),
        (
            &[
                &[(5, None, "first"), (5, None, "second")],
                &[(5, None, "third")],
            ],
            &["first", "second", "third"],
        ),
        (
            &[
                &[(300, Some("x"), "late")],
                &[(2, Some("y"), "early")],
                &[(256, Some("z"), "mid")],
            ],
            &["early", "mid", "late"],
        ),
    ];
    for (batches, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let key = conv("1", "2");
        for batch in *batches {
            let events = batch
                .iter()
                .map(|(ts, mid, label)| event(&key, *ts, *mid, label))
                .collect();
            store.enqueue_inbound(events).await.unwrap();
        }
        assert_eq!(labels(&store, &key), *expected);
        let (_, oldest) = store.inbox().oldest(&key).unwrap().unwrap();
        assert_eq!(oldest.payload.to_value()["label"], expected[0]);
    }
}

#[tokio::test]
async fn inbox_dedupes_on_page_and_mid_within_and_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = conv("1", "2");
    let outcome = store
        .enqueue_inbound(vec![
            event(&a, 1, Some("m1"), "one"),
            event(&a, 2, Some("m1"), "one again"),
            event(&a, 3, None, "no mid"),
            event(&a, 4, None, "no mid either"),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcome,
        EnqueueOutcome {
            stored: 3,
            duplicates: 1
        }
    );
    let outcome = store
        .enqueue_inbound(vec![
            event(&a, 1, Some("m1"), "retry"),
            event(&a, 5, Some("m2"), "two"),
        ])
        .await
        .unwrap();
    assert_eq!(
        outcome,
        EnqueueOutcome {
            stored: 1,
            duplicates: 1
        }
    );
    // The same mid on another page is another message.
    let other_page = conv("9", "2");
    let outcome = store
        .enqueue_inbound(vec![event(&other_page, 1, Some("m1"), "other")])
        .await
        .unwrap();
    assert_eq!(
        outcome,
        EnqueueOutcome {
            stored: 1,
            duplicates: 0
        }
    );
    assert_eq!(
        labels(&store, &a),
        ["one", "no mid", "no mid either", "two"]
    );
    assert_eq!(store.inbox().len(), 5);

    // A delivered event stays deduped until its mark is pruned.
    let (id, _) = store.inbox().oldest(&a).unwrap().unwrap();
    store.inbox().remove(&id).unwrap();
    store.inbox().remove(&id).unwrap();
    assert_eq!(store.inbox().len(), 4, "removing twice counts once");
    assert_eq!(
        store
            .enqueue_inbound(vec![event(&a, 1, Some("m1"), "late retry")])
            .await
            .unwrap()
            .stored,
        0
    );
    // A mark is set when an event leaves the inbox, stamped with its received_ms (1_000 +
    // timestamp): only m1's so far. m2 still waits, so a redelivery of it is a duplicate anyway.
    assert_eq!(store.prune_seen(1_002).unwrap(), 1);
    assert_eq!(
        store
            .enqueue_inbound(vec![event(&a, 1, Some("m1"), "after prune")])
            .await
            .unwrap()
            .stored,
        1
    );
    assert_eq!(
        store
            .enqueue_inbound(vec![event(&a, 5, Some("m2"), "still seen")])
            .await
            .unwrap()
            .stored,
        0
    );
}

#[tokio::test]
async fn conversations_are_isolated_even_when_ids_share_prefixes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let keys = [
        conv("1", "2"),
        conv("1", "23"),
        conv("12", "3"),
        conv("2", "1"),
    ];
    for (i, key) in keys.iter().enumerate() {
        let events = (0..3)
            .map(|n| event(key, n, None, &format!("{i}-{n}")))
            .collect();
        store.enqueue_inbound(events).await.unwrap();
    }
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(
            labels(&store, key),
            [format!("{i}-0"), format!("{i}-1"), format!("{i}-2")]
        );
    }
    let mut pending = store.inbox().pending_conversations().unwrap();
    pending.sort();
    let mut expected = keys.to_vec();
    expected.sort();
    assert_eq!(pending, expected);

    for (id, _) in store.inbox().all_for(&keys[0]).unwrap() {
        store.inbox().remove(&id).unwrap();
    }
    assert_eq!(store.inbox().oldest(&keys[0]).unwrap(), None);
    assert_eq!(store.inbox().pending_conversations().unwrap().len(), 3);
    assert_eq!(store.inbox().len(), 9);
}

fn item(key: &ConversationKey, id: &str, created_ms: u64) -> OutboundItem {
    OutboundItem {
        key: key.clone(),
        rc_message_id: MessageId::new(id),
        room: RoomId::new("R1"),
        agent_username: Some("bob".into()),
        created_ms,
        payload: Outgoing::Close { ts_ms: created_ms },
    }
}

/// The `seen` marks are checked through a filter in memory, built when the store opens and
/// again after each pruning: a taken event must stay a duplicate through both.
#[tokio::test]
async fn a_taken_event_stays_a_duplicate_after_a_restart_and_a_pruning() {
    let dir = tempfile::tempdir().unwrap();
    let a = conv("1", "2");
    let redelivered = |mid: &str| vec![event(&a, 1, Some(mid), "redelivered")];
    {
        let store = open(dir.path());
        store
            .enqueue_inbound(vec![
                event(&a, 1, Some("m1"), "one"),
                event(&a, 2, Some("m2"), "two"),
            ])
            .await
            .unwrap();
        for _ in 0..2 {
            let (id, _) = store.inbox().oldest(&a).unwrap().unwrap();
            store.inbox().remove(&id).unwrap();
        }
        assert_eq!(store.inbox().len(), 0);
        store.sync().await.unwrap();
    }
    let store = open(dir.path());
    let outcome = store.enqueue_inbound(redelivered("m1")).await.unwrap();
    assert_eq!(outcome.duplicates, 1, "after a restart");
    assert_eq!(store.prune_seen(0).unwrap(), 0, "no mark is that old");
    let outcome = store.enqueue_inbound(redelivered("m2")).await.unwrap();
    assert_eq!(outcome.duplicates, 1, "after a pruning");
    let outcome = store.enqueue_inbound(redelivered("m3")).await.unwrap();
    assert_eq!(outcome.stored, 1, "never seen");
}

#[test]
fn outbox_dedupes_on_the_rocketchat_message_id_and_keeps_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let a = conv("1", "2");
    let b = conv("1", "3");
    assert!(store.enqueue_outbound(item(&a, "M2", 20)).unwrap());
    assert!(
        store.enqueue_outbound(item(&a, "M1", 10)).unwrap(),
        "a back-filled older message"
    );
    assert!(store.enqueue_outbound(item(&a, "M3", 20)).unwrap());
    assert!(
        !store.enqueue_outbound(item(&a, "M2", 20)).unwrap(),
        "the live stream and back-fill overlap"
    );
    assert!(store.enqueue_outbound(item(&b, "M4", 1)).unwrap());
    assert_eq!(store.outbox().len(), 4);
    assert_eq!(
        store.outbox().pending_conversations().unwrap(),
        [a.clone(), b.clone()]
    );

    let mut sent = Vec::new();
    while let Some((id, next)) = store.outbox().oldest(&a).unwrap() {
        sent.push(next.rc_message_id.to_string());
        store.outbox().remove(&id).unwrap();
    }
    assert_eq!(sent, ["M1", "M2", "M3"]);
    assert!(
        !store.enqueue_outbound(item(&a, "M1", 10)).unwrap(),
        "a sent message is not sent again"
    );
    assert_eq!(store.outbox().len(), 1);
    assert_eq!(store.outbox().pending_conversations().unwrap(), [b]);
    assert_eq!(store.prune_relayed(15).unwrap(), 2, "M1 (10) and M4 (1)");
    assert!(store.enqueue_outbound(item(&a, "M1", 10)).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_is_a_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());

    // Each lone sync flushes once: the flush is real, not skipped.
    let before = store.flush_count();
    store.sync().await.unwrap();
    store.sync().await.unwrap();
    assert_eq!(store.flush_count() - before, 2);

    let before = store.flush_count();
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let key = conv("1", &format!("{i}"));
                store
                    .enqueue_inbound(vec![event(&key, 1, Some(&format!("m{i}")), "x")])
                    .await
                    .unwrap();
                store.sync().await
            })
        })
        .collect();
    let all = async {
        for task in tasks {
            task.await.unwrap().unwrap();
        }
    };
    tokio::time::timeout(Duration::from_secs(8), all)
        .await
        .expect("200 syncs finish in time");
    let flushes = store.flush_count() - before;
    assert!(
        (1..=40).contains(&flushes),
        "200 callers caused {flushes} flushes"
    );
    assert_eq!(store.inbox().len(), 200);
}

#[tokio::test]
async fn a_store_reopens_after_its_last_handle_is_dropped_even_after_sync() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .enqueue_inbound(vec![event(&conv("1", "2"), 1, Some("m"), "x")])
        .await
        .unwrap();
    store.sync().await.unwrap();
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.inbox().len(), 1);
    store.sync().await.unwrap();
}

#[tokio::test]
async fn set_aside_events_leave_the_queue_and_come_back_in_their_place() {
    let dir = tempfile::tempdir().unwrap();
    let key = conv("1", "2");
    let other_page = conv("12", "3");
    {
        let store = open(dir.path());
        store
            .enqueue_inbound(vec![
                event(&key, 10, Some("a"), "refused"),
                event(&key, 20, Some("b"), "next"),
                event(&key, 30, Some("c"), "refused too"),
                event(&other_page, 5, Some("d"), "other page"),
            ])
            .await
            .unwrap();
        let id_of = |label: &str| {
            store
                .inbox()
                .all_for(&key)
                .unwrap()
                .into_iter()
                .find(|(_, e)| e.payload.to_value()["label"] == label)
                .map(|(id, _)| id)
                .unwrap()
        };
        let (first, second) = (id_of("refused"), id_of("refused too"));
        // The page's first of a kind is told; the next of the same kind is not.
        assert!(store.set_aside(&first, "blocked", "why", 100).unwrap());
        assert!(!store.set_aside(&second, "blocked", "why", 101).unwrap());
        assert!(
            !store.set_aside(&first, "blocked", "why", 102).unwrap(),
            "gone from the inbox: nothing to move"
        );
        assert_eq!(labels(&store, &key), ["next"]);
        assert_eq!(store.inbox().len(), 2);
        let aside = store.set_aside_events().unwrap();
        assert_eq!(aside.len(), 2);
        assert_eq!(aside[0].event.payload.to_value()["label"], "refused");
        assert_eq!(
            (aside[0].reason.as_str(), aside[0].set_aside_ms),
            ("blocked", 100)
        );
        // Another page's kinds are its own.
        let (other, _) = store.inbox().oldest(&other_page).unwrap().unwrap();
        assert!(store.set_aside(&other, "blocked", "why", 103).unwrap());
        store.flush_blocking().unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.set_aside_events().unwrap().len(), 3, "durable");
    store
        .enqueue_inbound(vec![event(&key, 25, Some("e"), "arrived meanwhile")])
        .await
        .unwrap();
    let restored = store
        .restore_set_aside(Some(&PageId::new("1")))
        .await
        .unwrap();
    assert_eq!(restored, vec![key.clone(), key.clone()]);
    assert_eq!(
        labels(&store, &key),
        ["refused", "next", "arrived meanwhile", "refused too"],
        "back in Meta timestamp order among what waits"
    );
    assert_eq!(store.inbox().len(), 4);
    let left = store.set_aside_events().unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].event.key, other_page);
    assert_eq!(
        store.restore_set_aside(None).await.unwrap(),
        vec![other_page]
    );
    assert!(store.set_aside_events().unwrap().is_empty());
}
