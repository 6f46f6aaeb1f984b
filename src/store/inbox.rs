//! The inbox's index: which webhook events wait, in which order, and where the journal holds
//! each. The events themselves stay in the journal's segments (`journal`), so a held backlog
//! costs one small entry per event here and nothing in sled; the index is rebuilt from the
//! segments at start-up.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};

use crate::ids::{ConversationKey, ConversationMap, PageId};

/// One waiting event: its delivery order and where its encoding sits. 24 bytes: a held
/// backlog of a million events costs about 24 MiB here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Held {
    pub timestamp_ms: u64,
    /// [`dedupe_tag`] of its dedupe key, 0 for an event without one.
    pub dedupe: u32,
    pub segment: u32,
    pub offset: u32,
    pub len: u32,
}

impl Held {
    /// The order within a conversation: Meta's timestamp, then arrival (journal position).
    fn order(&self) -> (u64, u32, u32) {
        (self.timestamp_ms, self.segment, self.offset)
    }

    /// The queue sequence number its id carries: the journal position, packed.
    pub fn seq(&self) -> u64 {
        (u64::from(self.segment) << 32) | u64::from(self.offset)
    }
}

/// Splits a queue sequence number back into segment and offset.
pub(super) fn position_of(seq: u64) -> (u32, u32) {
    // Both halves are `u32`s by construction.
    ((seq >> 32) as u32, (seq & u64::from(u32::MAX)) as u32)
}

/// The part of a [`dedupe_hash`] an index entry keeps, never 0: entries with the same tag are
/// the candidates a duplicate is compared with.
pub(super) fn dedupe_tag(hash: u64) -> u32 {
    (hash as u32) | 1
}

/// A 64-bit hash of a page and dedupe key, never 0. Equal hashes are only candidates: the store
/// compares the keys themselves before calling an event a duplicate.
pub(super) fn dedupe_hash(page: &PageId, dedupe_key: &str) -> u64 {
    dedupe_hash_of(page.as_str(), dedupe_key.as_bytes())
}

/// [`dedupe_hash`] from the parts of a `seen` key.
pub(super) fn dedupe_hash_of(page: &str, dedupe_key: &[u8]) -> u64 {
    // Fixed keys (not `RandomState`): a collision, however unlikely, then repeats the same way.
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    hasher.write(page.as_bytes());
    hasher.write_u8(0xff);
    hasher.write(dedupe_key);
    hasher.finish().max(1)
}

/// Hashes a key that is a [`dedupe_tag`] already: spread over 64 bits by one multiplication
/// (the hash table reads its top bits), not hashed again.
#[derive(Default)]
struct AlreadyHashed(u64);

impl Hasher for AlreadyHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u32` is used for a `u32` key; this keeps any other use correct.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u32(&mut self, tag: u32) {
        self.0 = u64::from(tag).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// How far back from a queue's end [`Index::insert`] looks before it searches.
const NEAR_THE_END: usize = 16;

#[derive(Default)]
pub(super) struct Index {
    conversations: ConversationMap<VecDeque<Held>>,
    /// How many waiting events carry each dedupe tag: 8 bytes a slot, where the whole hash
    /// took 16 (a million held events fill two million slots). Two keys whose hashes share a
    /// tag are only compared more often: the store reads the waiting copy before it calls an
    /// event a duplicate.
    dedupes: HashMap<u32, u32, BuildHasherDefault<AlreadyHashed>>,
    /// How many waiting events each segment holds; a segment absent here holds none.
    live: BTreeMap<u32, usize>,
    /// The segment the journal writes now: never deleted while it may still grow.
    writing: u32,
    len: usize,
}

impl Index {
    pub fn len(&self) -> usize {
        self.len
    }

    /// Notes that the journal writes `segment` (or a later one) now. Returns the segment it
    /// wrote before when that one holds no waiting event: it can go.
    #[must_use]
    pub fn writing(&mut self, segment: u32) -> Option<u32> {
        if segment <= self.writing {
            return None;
        }
        let closed = std::mem::replace(&mut self.writing, segment);
        (closed != 0 && !self.holds(closed)).then_some(closed)
    }

    /// Whether a waiting event may carry this dedupe hash.
    pub fn may_hold(&self, dedupe: u64) -> bool {
        self.dedupes.contains_key(&dedupe_tag(dedupe))
    }

    /// The waiting events of `key` whose dedupe hash may be this one.
    pub fn with_dedupe(&self, key: &ConversationKey, dedupe: u64) -> Vec<Held> {
        let tag = dedupe_tag(dedupe);
        self.conversations
            .get(key)
            .map(|queue| queue.iter().filter(|h| h.dedupe == tag).copied().collect())
            .unwrap_or_default()
    }

    /// Indexes a waiting event; `dedupe` is its [`dedupe_hash`], 0 for none.
    pub fn insert(&mut self, key: &ConversationKey, held: Held, dedupe: u64) {
        // The key is copied only for a conversation's first waiting event.
        let queue = match self.conversations.get_mut(key) {
            Some(queue) => queue,
            None => self.conversations.entry(key.clone()).or_default(),
        };
        // Events arrive nearly in order (concurrent webhooks reach the journal a little out of
        // timestamp order): look back from the end first. A binary search over a long backlog
        // touches cold memory at every step.
        let later = queue
            .iter()
            .rev()
            .take(NEAR_THE_END)
            .take_while(|h| h.order() > held.order())
            .count();
        let at = if later < NEAR_THE_END {
            queue.len() - later
        } else {
            queue.partition_point(|h| h.order() <= held.order())
        };
        if queue.len() == queue.capacity() {
            // Half again, not twice: a held backlog is mostly queues that grew once too far.
            queue.reserve_exact(queue.len() / 2 + 1);
        }
        queue.insert(at, held);
        if dedupe != 0 {
            *self.dedupes.entry(dedupe_tag(dedupe)).or_default() += 1;
        }
        *self.live.entry(held.segment).or_default() += 1;
        self.len += 1;
    }

    /// The first `limit` waiting events of `key`, oldest first.
    pub fn first(&self, key: &ConversationKey, limit: usize) -> Vec<Held> {
        self.conversations
            .get(key)
            .map(|queue| queue.iter().take(limit).copied().collect())
            .unwrap_or_default()
    }

    /// The waiting event of `key` at this order and position.
    pub fn find(&self, key: &ConversationKey, timestamp_ms: u64, seq: u64) -> Option<Held> {
        let queue = self.conversations.get(key)?;
        let (segment, offset) = position_of(seq);
        let order = (timestamp_ms, segment, offset);
        let at = queue.partition_point(|h| h.order() < order);
        queue.get(at).filter(|h| h.order() == order).copied()
    }

    /// Takes a waiting event out; `dedupe` as for [`insert`](Self::insert). Returns the
    /// segment it leaves empty, once the journal writes past it: that segment can go.
    pub fn remove(&mut self, key: &ConversationKey, held: &Held, dedupe: u64) -> Option<u32> {
        let Entry::Occupied(mut queue) = self.conversations.entry(key.clone()) else {
            return None;
        };
        let at = queue.get().partition_point(|h| h.order() < held.order());
        if queue.get().get(at) != Some(held) {
            return None;
        }
        queue.get_mut().remove(at);
        if queue.get().is_empty() {
            queue.remove();
        }
        self.len -= 1;
        if dedupe != 0 {
            if let Entry::Occupied(mut count) = self.dedupes.entry(dedupe_tag(dedupe)) {
                *count.get_mut() -= 1;
                if *count.get() == 0 {
                    count.remove();
                }
            }
        }
        let std::collections::btree_map::Entry::Occupied(mut live) = self.live.entry(held.segment)
        else {
            return None;
        };
        *live.get_mut() -= 1;
        if *live.get() > 0 {
            return None;
        }
        live.remove();
        (held.segment < self.writing).then_some(held.segment)
    }

    /// Whether a segment holds a waiting event.
    pub fn holds(&self, segment: u32) -> bool {
        self.live.contains_key(&segment)
    }

    /// Closed segments that hold no waiting event any more, oldest first.
    pub fn empty_among(&self, segments: &[u32]) -> Vec<u32> {
        segments
            .iter()
            .copied()
            .filter(|&segment| segment < self.writing && !self.holds(segment))
            .collect()
    }

    /// The conversations with events waiting.
    pub fn conversations(&self) -> Vec<ConversationKey> {
        self.conversations.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Psid;

    fn held(timestamp_ms: u64, segment: u32, offset: u32) -> Held {
        Held {
            timestamp_ms,
            dedupe: 0,
            segment,
            offset,
            len: 10,
        }
    }

    #[test]
    fn hashes_sharing_a_tag_are_candidates_counted_together() {
        let key = ConversationKey::new(PageId::new("1"), Psid::new("2"));
        let mut index = Index::default();
        let (first, second) = (0x1_0000_0005, 0x2_0000_0005);
        assert_eq!(dedupe_tag(first), dedupe_tag(second));
        let waiting = Held {
            dedupe: dedupe_tag(first),
            ..held(1, 1, 0)
        };
        index.insert(&key, waiting, first);
        assert!(
            index.may_hold(second),
            "a candidate, to be compared by its key"
        );
        assert_eq!(index.with_dedupe(&key, second), vec![waiting]);
        assert!(!index.may_hold(0x3_0000_0007));
        index.insert(&key, held(2, 1, 50), 0);
        assert_eq!(index.remove(&key, &waiting, first), None);
        assert!(!index.may_hold(first) && !index.may_hold(second));
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn events_wait_in_timestamp_then_journal_order_and_empty_segments_are_named() {
        let key = ConversationKey::new(PageId::new("1"), Psid::new("2"));
        let mut index = Index::default();
        assert_eq!(index.writing(2), None);
        index.insert(&key, held(5, 1, 0), 0);
        index.insert(&key, held(3, 1, 100), 0);
        index.insert(&key, held(5, 2, 0), 0);
        let order: Vec<_> = index
            .first(&key, usize::MAX)
            .iter()
            .map(|h| h.order())
            .collect();
        assert_eq!(order, vec![(3, 1, 100), (5, 1, 0), (5, 2, 0)]);
        let first = index.first(&key, 1)[0];
        assert_eq!(index.find(&key, 3, first.seq()), Some(first));
        assert_eq!(
            index.remove(&key, &first, 0),
            None,
            "segment 1 still holds one"
        );
        assert_eq!(
            index.remove(&key, &first, 0),
            None,
            "a second removal finds nothing"
        );
        assert_eq!(index.remove(&key, &held(5, 1, 0), 0), Some(1));
        assert_eq!(
            index.remove(&key, &held(5, 2, 0), 0),
            None,
            "the segment being written stays"
        );
        assert_eq!(
            index.writing(3),
            Some(2),
            "until the journal writes the next"
        );
        assert_eq!(index.writing(3), None);
        assert_eq!(index.len(), 0);
        assert!(index.conversations().is_empty());
    }

    #[test]
    fn late_events_are_placed_near_the_end_or_far_back() {
        let key = ConversationKey::new(PageId::new("1"), Psid::new("2"));
        let mut index = Index::default();
        for n in 0..40 {
            index.insert(&key, held(10 * n, 1, n as u32), 0);
        }
        index.insert(&key, held(385, 2, 0), 0); // 2 from the end
        index.insert(&key, held(5, 2, 1), 0); // beyond the look-back: searched
        index.insert(&key, held(1000, 2, 2), 0);
        let times: Vec<u64> = index
            .first(&key, usize::MAX)
            .iter()
            .map(|h| h.timestamp_ms)
            .collect();
        let mut sorted = times.clone();
        sorted.sort_unstable();
        assert_eq!(times, sorted);
        assert_eq!(times.len(), 43);
        assert_eq!((times[1], times[40]), (5, 385));
    }

    #[test]
    fn dedupe_hashes_count_waiting_events() {
        let page = PageId::new("1");
        let key = ConversationKey::new(page.clone(), Psid::new("2"));
        let hash = dedupe_hash(&page, "m:abc");
        assert_eq!(hash, dedupe_hash(&page, "m:abc"));
        assert_ne!(hash, dedupe_hash(&PageId::new("2"), "m:abc"));
        let mut index = Index::default();
        let one = Held {
            dedupe: dedupe_tag(hash),
            ..held(1, 1, 0)
        };
        index.insert(&key, one, hash);
        assert!(index.may_hold(hash));
        assert_eq!(index.with_dedupe(&key, hash), vec![one]);
        index.remove(&key, &one, hash);
        assert!(!index.may_hold(hash));
    }
}
