//! Binary key layouts of the trees.
//!
//! A conversation is encoded as `len(page) page len(psid) psid` with 32-bit big-endian lengths.
//! The encoding is prefix-free: no conversation's encoding is a prefix of another's, so a prefix
//! scan over it returns that conversation's entries and nobody else's. Queue keys (inbox and
//! outbox) append two big-endian `u64`s, an ordering value and an arrival sequence, so sled's
//! byte order is the delivery order.

use std::fmt;

use crate::ids::{ConversationKey, PageId, Psid};

/// Where an item sits in its queue (inbox or outbox). Opaque; pass it back to the queue's
/// `remove`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct QueueId(pub(super) Vec<u8>);

impl fmt::Debug for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "QueueId({})", describe_queue_key(&self.0))
    }
}

fn push_str(out: &mut Vec<u8>, s: &str) {
    // Ids come from requests capped at 1 MiB, far below u32::MAX.
    let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn take_str(bytes: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (s, rest) = rest.split_at(len);
    Some((std::str::from_utf8(s).ok()?, rest))
}

/// The key of a conversation, which is also the prefix of its inbox and outbox entries.
pub(super) fn conversation(key: &ConversationKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + key.page.as_str().len() + key.psid.as_str().len() + 16);
    push_str(&mut out, key.page.as_str());
    push_str(&mut out, key.psid.as_str());
    out
}

/// The prefix of every key of one page's conversations.
pub(super) fn page(page: &PageId) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + page.as_str().len());
    push_str(&mut out, page.as_str());
    out
}

/// Reads the conversation at the start of `bytes` and returns what follows it.
pub(super) fn split_conversation(bytes: &[u8]) -> Option<(ConversationKey, &[u8])> {
    let (page, rest) = take_str(bytes)?;
    let (psid, rest) = take_str(rest)?;
    Some((
        ConversationKey::new(PageId::new(page), Psid::new(psid)),
        rest,
    ))
}

/// An inbox or outbox key: the conversation, then `order`, then `seq`.
pub(super) fn queue(key: &ConversationKey, order: u64, seq: u64) -> Vec<u8> {
    let mut out = conversation(key);
    out.extend_from_slice(&order.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out
}

/// Splits a queue key into its conversation, `order` and `seq`.
pub(super) fn split_queue(bytes: &[u8]) -> Option<(ConversationKey, u64, u64)> {
    let (conversation, rest) = split_conversation(bytes)?;
    let (order, seq) = rest.split_first_chunk::<8>()?;
    let seq: [u8; 8] = seq.try_into().ok()?;
    Some((
        conversation,
        u64::from_be_bytes(*order),
        u64::from_be_bytes(seq),
    ))
}

/// The dedupe key of an inbound event: the page, then the event's own key (its `mid`).
pub(super) fn seen(page: &PageId, dedupe_key: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + page.as_str().len() + dedupe_key.len());
    push_str(&mut out, page.as_str());
    out.extend_from_slice(dedupe_key.as_bytes());
    out
}

/// The page and dedupe key of a `seen` key.
pub(super) fn split_seen(key: &[u8]) -> Option<(&str, &[u8])> {
    take_str(key)
}

/// A message the Send API accepted: the page, then the `message_id` Meta gave it.
pub(super) fn sent(page: &PageId, message_id: &str) -> Vec<u8> {
    seen(page, message_id)
}

/// A customer's reaction: the page, then the `mid` of the message reacted to.
pub(super) fn reaction(page: &PageId, mid: &str) -> Vec<u8> {
    seen(page, mid)
}

/// The smallest key greater than every key starting with `prefix`; `None` when there is none.
pub(super) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// A queue key for messages and logs, with the PSID redacted.
pub(super) fn describe_queue_key(bytes: &[u8]) -> String {
    match split_conversation(bytes) {
        Some((conv, rest)) => match (rest.get(..8), rest.get(8..16)) {
            (Some(order), Some(seq)) if rest.len() == 16 => {
                let order = u64::from_be_bytes(order.try_into().unwrap_or_default());
                let seq = u64::from_be_bytes(seq.try_into().unwrap_or_default());
                format!("{conv} @{order} #{seq}")
            }
            _ => format!("{conv} + {} bytes", rest.len()),
        },
        None => format!("{} undecodable bytes", bytes.len()),
    }
}

/// A conversation key for messages and logs, with the PSID redacted.
pub(super) fn describe_conversation_key(bytes: &[u8]) -> String {
    match split_conversation(bytes) {
        Some((conv, [])) => conv.to_string(),
        _ => format!("{} undecodable bytes", bytes.len()),
    }
}

/// The trees of the store, named for error messages and the sled tree names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Tree {
    Meta,
    Pages,
    Grants,
    Deletions,
    OAuthStates,
    Conversations,
    Rooms,
    Inbox,
    Seen,
    Outbox,
    Relayed,
    Sent,
    Reactions,
    Posted,
    PageReactions,
    SetAside,
    /// Journal positions of inbox events already taken (delivered or set aside), until their
    /// segment is deleted.
    Taken,
}

impl Tree {
    pub(super) fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Pages => "pages",
            Tree::Grants => "grants",
            Tree::Deletions => "deletions",
            Tree::OAuthStates => "oauth_states",
            Tree::Conversations => "conversations",
            Tree::Rooms => "rooms",
            Tree::Inbox => "inbox",
            Tree::Seen => "seen",
            Tree::Outbox => "outbox",
            Tree::Relayed => "relayed",
            Tree::Sent => "sent",
            Tree::Reactions => "reactions",
            Tree::Posted => "posted",
            Tree::PageReactions => "page_reactions",
            Tree::SetAside => "set_aside",
            Tree::Taken => "inbox_taken",
        }
    }

    /// A key of this tree for an error message: PSIDs redacted, OAuth states shortened (they
    /// are bearer secrets until used).
    pub(super) fn describe(self, key: &[u8]) -> String {
        match self {
            Tree::Conversations => describe_conversation_key(key),
            Tree::Inbox | Tree::Outbox | Tree::SetAside => describe_queue_key(key),
            Tree::Seen | Tree::Sent | Tree::Reactions => match take_str(key) {
                Some((page, rest)) => format!("{page}/{}", String::from_utf8_lossy(rest)),
                None => format!("{} undecodable bytes", key.len()),
            },
            Tree::OAuthStates => {
                let state = String::from_utf8_lossy(key);
                format!("{}…", state.chars().take(4).collect::<String>())
            }
            Tree::Meta
            | Tree::Pages
            | Tree::Grants
            | Tree::Deletions
            | Tree::Rooms
            | Tree::Relayed
            | Tree::Posted
            | Tree::PageReactions => String::from_utf8_lossy(key).into_owned(),
            Tree::Taken => format!("{key:02x?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(page: &str, psid: &str) -> ConversationKey {
        ConversationKey::new(PageId::new(page), Psid::new(psid))
    }

    #[test]
    fn conversation_keys_are_prefix_free_and_round_trip() {
        let keys = [
            conv("1", "23"),
            conv("12", "3"),
            conv("1", "2"),
            conv("", "123"),
            conv("123", ""),
        ];
        for a in &keys {
            let encoded = conversation(a);
            assert_eq!(split_conversation(&encoded), Some((a.clone(), &[][..])));
            for b in &keys {
                if a != b {
                    assert!(
                        !queue(b, 5, 6).starts_with(&encoded),
                        "{a} is a prefix of {b}'s queue key"
                    );
                }
            }
        }
    }

    #[test]
    fn queue_keys_sort_by_order_then_seq() {
        let c = conv("1", "2");
        let mut keys = [
            queue(&c, 256, 0),
            queue(&c, 1, 9),
            queue(&c, 1, 2),
            queue(&c, 0, u64::MAX),
        ];
        keys.sort();
        assert_eq!(split_queue(&keys[1]), Some((c.clone(), 1, 2)));
        assert_eq!(split_queue(&keys[1][..20]), None);
        let orders: Vec<String> = keys.iter().map(|k| describe_queue_key(k)).collect();
        assert_eq!(
            orders,
            [
                "1/psid…2 @0 #18446744073709551615",
                "1/psid…2 @1 #2",
                "1/psid…2 @1 #9",
                "1/psid…2 @256 #0"
            ]
        );
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"ab", Some(b"ac")),
            (&[1, 0xff], Some(&[2])),
            (&[0xff, 0xff], None),
            (&[], None),
        ];
        for (prefix, end) in cases {
            assert_eq!(prefix_end(prefix).as_deref(), *end, "{prefix:?}");
        }
    }

    #[test]
    fn a_page_prefix_holds_its_conversations_only() {
        assert!(conversation(&conv("1", "23")).starts_with(&page(&PageId::new("1"))));
        assert!(!conversation(&conv("12", "3")).starts_with(&page(&PageId::new("1"))));
    }

    #[test]
    fn seen_keys_of_different_pages_never_collide() {
        assert_ne!(seen(&PageId::new("1"), "2m"), seen(&PageId::new("12"), "m"));
    }
}
