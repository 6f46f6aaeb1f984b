//! The store's records through the public API: round trips, reopening, the schema check, and
//! that no token reaches the disk in clear.

use std::path::Path;
use std::sync::Arc;

use omni_gateway::ids::{ConversationKey, MessageId, PageId, Psid, RoomId, UserId, VisitorToken};
use omni_gateway::store::{
    Conversation, DeletionRequest, Department, Error, Grant, InboundEvent, OAuthState,
    OutboundItem, Outgoing, Page, PageStatus, Payload, Platform, Store, TokenKey,
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

const CACHE: u64 = 8 * 1024 * 1024;
const PAGE_TOKEN: &str = "EAAB-page-token-7f3a9c1e5b2d4f6a8c0e";
const USER_TOKEN: &str = "EAAG-user-token-1a2b3c4d5e6f7a8b9c0d";

fn key() -> TokenKey {
    TokenKey::from_bytes([42; 32])
}

fn open(dir: &Path) -> Store {
    Store::open(dir, key(), CACHE).unwrap()
}

fn page(id: &str) -> Page {
    Page {
        id: PageId::new(id),
        name: format!("Distinctive Page Name {id}"),
        platform: Platform::Messenger,
        department: Some(Department {
            id: "dep1".into(),
            name: "Sales".into(),
        }),
        welcome: Some("Welcome!".into()),
        finished: Some("Bye".into()),
        offline: None,
        token: Some(SecretString::from(PAGE_TOKEN.to_owned())),
        grant: Some("fbuser1".into()),
        status: PageStatus::Connected,
        subscribers: vec!["alice".into()],
        connected_by: Some("alice".into()),
        connected_at_ms: Some(1_700_000_000_000),
        last_webhook_ms: None,
    }
}

fn grant() -> Grant {
    Grant {
        fb_user_id: "fbuser1".into(),
        user_token: SecretString::from(USER_TOKEN.to_owned()),
        admin_username: "alice".into(),
        created_ms: 7,
    }
}

fn conv_key(page: &str, psid: &str) -> ConversationKey {
    ConversationKey::new(PageId::new(page), Psid::new(psid))
}

fn conversation(page: &str, psid: &str, room: Option<&str>) -> Conversation {
    Conversation {
        key: conv_key(page, psid),
        visitor_token: VisitorToken::new(format!("vt-{page}-{psid}")),
        room: room.map(RoomId::new),
        last_inbound_ms: Some(10),
        held_since_ms: None,
        offline_notice_sent: false,
        last_agent_message_ms: None,
    }
}

fn oauth_state(expires_ms: u64) -> OAuthState {
    OAuthState {
        admin_username: "alice".into(),
        admin_user_id: UserId::new("U1"),
        room: RoomId::new("DM1"),
        expires_ms,
    }
}

#[test]
fn pages_round_trip_in_id_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.page(&PageId::new("1")).unwrap(), None);
    let mut second = page("2");
    second.token = None;
    second.status = PageStatus::NeedsAuthorization {
        reason: "token expired".into(),
        since_ms: 9,
    };
    for p in [page("3"), second.clone(), page("1")] {
        store.put_page(&p).unwrap();
    }
    assert_eq!(store.page(&PageId::new("2")).unwrap(), Some(second));
    let ids: Vec<String> = store
        .pages()
        .unwrap()
        .iter()
        .map(|p| p.id.to_string())
        .collect();
    assert_eq!(ids, ["1", "2", "3"]);
    assert_eq!(store.pages().unwrap()[0], page("1"));
}

#[test]
fn update_page_is_atomic_and_reports_absent_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(
        store
            .update_page(&PageId::new("9"), |p| p.name.clear())
            .unwrap(),
        None
    );
    store.put_page(&page("1")).unwrap();
    let updated = store
        .update_page(&PageId::new("1"), |p| {
            p.welcome = None;
            p.id = PageId::new("moved");
        })
        .unwrap()
        .unwrap();
    assert_eq!(updated.welcome, None);
    assert_eq!(
        updated.id,
        PageId::new("1"),
        "the id is the key and cannot change"
    );
    assert_eq!(store.page(&PageId::new("1")).unwrap(), Some(updated));

    // Concurrent writers each add their own subscribers; none is lost to a race.
    let store = Arc::new(store);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                for i in 0..25 {
                    store
                        .update_page(&PageId::new("1"), |p| {
                            p.subscribers.push(format!("u{t}-{i}"))
                        })
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let subscribers = store.page(&PageId::new("1")).unwrap().unwrap().subscribers;
    assert_eq!(subscribers.len(), 101, "alice plus 100 added");
}

#[test]
fn grants_round_trip_and_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put_grant(&grant()).unwrap();
    let read = store.grant("fbuser1").unwrap().unwrap();
    assert_eq!(read, grant());
    assert_eq!(read.user_token.expose_secret(), USER_TOKEN);
    assert!(
        !format!("{read:?}").contains(USER_TOKEN),
        "Debug must not print the token"
    );
    store.remove_grant("fbuser1").unwrap();
    assert_eq!(store.grant("fbuser1").unwrap(), None);
    store.remove_grant("fbuser1").unwrap();
}

#[test]
fn deletion_requests_round_trip_and_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let request = DeletionRequest {
        code: "9f8e7d".into(),
        requested_ms: 10,
        completed_ms: Some(12),
        pages_disconnected: 2,
    };
    {
        let store = open(dir.path());
        assert_eq!(store.deletion("9f8e7d").unwrap(), None);
        store.put_deletion(&request).unwrap();
        assert_eq!(store.deletion("9f8e7d").unwrap(), Some(request.clone()));
        assert_eq!(store.deletion("other").unwrap(), None);
    }
    assert_eq!(open(dir.path()).deletion("9f8e7d").unwrap(), Some(request));
}

#[test]
fn oauth_states_are_single_use_and_pruned_by_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put_oauth_state("s-old", &oauth_state(100)).unwrap();
    store.put_oauth_state("s-edge", &oauth_state(200)).unwrap();
    store.put_oauth_state("s-new", &oauth_state(300)).unwrap();
    assert_eq!(
        store.take_oauth_state("s-new").unwrap(),
        Some(oauth_state(300))
    );
    assert_eq!(
        store.take_oauth_state("s-new").unwrap(),
        None,
        "a state is used once"
    );
    assert_eq!(store.prune_oauth_states(200).unwrap(), 2);
    assert_eq!(store.take_oauth_state("s-old").unwrap(), None);
    assert_eq!(store.take_oauth_state("s-edge").unwrap(), None);
}

#[tokio::test]
async fn conversations_and_the_room_index_stay_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let first = conversation("1", "100", Some("R1"));
    store.put_conversation(&first).unwrap();
    store
        .put_conversation(&conversation("1", "1000", None))
        .unwrap();
    assert_eq!(
        store.conversation(&conv_key("1", "100")).unwrap(),
        Some(first.clone())
    );
    assert_eq!(store.conversation(&conv_key("1", "10")).unwrap(), None);
    assert_eq!(
        store.conversation_by_room(&RoomId::new("R1")).unwrap(),
        Some(first.clone())
    );

    // The room closes and a new one opens: the old id no longer finds the conversation.
    let moved = Conversation {
        room: Some(RoomId::new("R2")),
        ..first.clone()
    };
    store.put_conversation(&moved).unwrap();
    assert_eq!(
        store.conversation_by_room(&RoomId::new("R1")).unwrap(),
        None
    );
    assert_eq!(
        store.conversation_by_room(&RoomId::new("R2")).unwrap(),
        Some(moved.clone())
    );

    let closed = Conversation {
        room: None,
        ..moved
    };
    store.put_conversation(&closed).unwrap();
    assert_eq!(
        store.conversation_by_room(&RoomId::new("R2")).unwrap(),
        None
    );
    assert_eq!(store.conversations().unwrap().len(), 2);
}

async fn fill(store: &Store) {
    store.put_page(&page("1")).unwrap();
    store.put_grant(&grant()).unwrap();
    store.put_oauth_state("state", &oauth_state(5)).unwrap();
    store
        .put_conversation(&conversation("1", "100", Some("R1")))
        .unwrap();
    let event = InboundEvent {
        key: conv_key("1", "100"),
        timestamp_ms: 1,
        dedupe_key: Some("m_1".into()),
        received_ms: 2,
        standby: false,
        payload: Payload::from_value(&json!({"message": {"mid": "m_1", "text": "hello"}})),
    };
    store.enqueue_inbound(vec![event]).await.unwrap();
    let item = OutboundItem {
        key: conv_key("1", "100"),
        rc_message_id: MessageId::new("M1"),
        room: RoomId::new("R1"),
        agent_username: Some("bob".into()),
        created_ms: 3,
        payload: Outgoing::Close { ts_ms: 3 },
    };
    assert!(store.enqueue_outbound(item).unwrap());
}

#[tokio::test]
async fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store).await;
    store.flush_blocking().unwrap();
    drop(store);

    let store = open(dir.path());
    assert_eq!(store.page(&PageId::new("1")).unwrap(), Some(page("1")));
    assert_eq!(store.grant("fbuser1").unwrap(), Some(grant()));
    assert_eq!(
        store.take_oauth_state("state").unwrap(),
        Some(oauth_state(5))
    );
    assert_eq!(
        store.conversation_by_room(&RoomId::new("R1")).unwrap(),
        Some(conversation("1", "100", Some("R1")))
    );
    assert_eq!((store.inbox().len(), store.outbox().len()), (1, 1));
    assert_eq!(
        store.inbox().pending_conversations().unwrap(),
        [conv_key("1", "100")]
    );
    assert_eq!(
        store.outbox().pending_conversations().unwrap(),
        [conv_key("1", "100")]
    );
    let (_, event) = store
        .inbox()
        .oldest(&conv_key("1", "100"))
        .unwrap()
        .unwrap();
    assert_eq!(event.payload.to_value()["message"]["text"], "hello");
    let dedupe = InboundEvent {
        received_ms: 99,
        ..event
    };
    assert_eq!(
        store
            .enqueue_inbound(vec![dedupe])
            .await
            .unwrap()
            .duplicates,
        1,
        "dedupe marks persist"
    );
}

#[tokio::test]
async fn no_token_byte_reaches_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    fill(&store).await;
    store.flush_blocking().unwrap();
    drop(store);

    let mut contents = Vec::new();
    let mut pending = vec![dir.path().to_owned()];
    while let Some(path) = pending.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                pending.push(entry.path());
            } else {
                contents.extend(std::fs::read(entry.path()).unwrap());
            }
        }
    }
    let found = |needle: &str| {
        contents
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
    };
    // The control proves the search sees what the store wrote (no compression, right files).
    assert!(
        found("Distinctive Page Name 1"),
        "control: the page name must be on disk"
    );
    assert!(!found(PAGE_TOKEN), "the page token is on disk in clear");
    assert!(!found(USER_TOKEN), "the user token is on disk in clear");
    assert!(
        !found("page-token-7f3a"),
        "part of the page token is on disk in clear"
    );
}

#[test]
fn a_newer_schema_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("meta")
            .unwrap()
            .insert("schema_version", "7")
            .unwrap();
        db.flush().unwrap();
    }
    let err = Store::open(dir.path(), key(), CACHE).err().unwrap();
    assert!(
        matches!(
            err,
            Error::NewerSchema {
                found: 7,
                supported: 2,
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.contains("version 7") && message.contains("up to 2"),
        "{message}"
    );
}

#[test]
fn corrupt_values_and_wrong_keys_are_errors_not_gaps() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put_page(&page("1")).unwrap();
    store.flush_blocking().unwrap();
    drop(store);

    let other = Store::open(dir.path(), TokenKey::from_bytes([1; 32]), CACHE).unwrap();
    let err = other.page(&PageId::new("1")).unwrap_err();
    assert!(matches!(err, Error::Decrypt { tree: "pages", .. }), "{err}");
    assert!(err.to_string().contains("pages/1"), "{err}");
    assert!(
        other.pages().is_err(),
        "a page that cannot be read is not skipped"
    );
    drop(other);

    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("pages")
            .unwrap()
            .insert("2", r#"{"v":1,"id":"2"}"#)
            .unwrap();
        db.flush().unwrap();
    }
    let store = open(dir.path());
    let err = store.pages().unwrap_err().to_string();
    assert!(
        err.contains("pages/2") && err.contains("missing field"),
        "{err}"
    );
    assert_eq!(store.page(&PageId::new("1")).unwrap(), Some(page("1")));
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _store = open(dir.path());
    let err = Store::open(dir.path(), key(), CACHE).err().unwrap();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(
        err.to_string().contains("in use by another process"),
        "{err}"
    );
}

#[test]
fn sent_messages_map_meta_ids_to_agent_messages_per_page_and_age_out() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let page = PageId::new("p1");
    store
        .put_sent(&page, "m_meta1", &MessageId::new("rc1"), 100)
        .unwrap();
    assert_eq!(
        store.sent(&page, "m_meta1").unwrap(),
        Some(MessageId::new("rc1"))
    );
    assert_eq!(store.sent(&PageId::new("p2"), "m_meta1").unwrap(), None);
    assert_eq!(store.prune_relayed(100).unwrap(), 0, "not older yet");
    assert_eq!(store.prune_relayed(101).unwrap(), 1);
    assert_eq!(store.sent(&page, "m_meta1").unwrap(), None);
}
