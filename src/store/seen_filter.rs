//! A Bloom filter over the `seen` marks' dedupe hashes. Nearly every event that arrives is new,
//! and the filter says so from memory, without the sled lookup a `seen` check would cost. A
//! "maybe" is confirmed in sled, so a false positive costs only that lookup; a key that is in
//! `seen` is always in the filter (the store adds each mark's hash when it writes the mark).
//!
//! The filter is sized from the number of marks when it is built (at start-up, and again after
//! each hourly pruning). While a rebuild reads the marks, hashes added meanwhile are recorded and
//! go into the new filter too, so no mark written during the rebuild is missed.

/// Bits per expected key: with [`PROBES`] probes, about 0.1 % false positives at capacity.
const BITS_PER_KEY: usize = 16;
const PROBES: u64 = 6;
/// The smallest filter (128 KiB): room for the marks of a quiet gateway to grow into.
const MIN_KEYS: usize = 1 << 16;

pub(super) struct SeenFilter {
    words: Vec<u64>,
    /// The number of bits, minus one (a power of two, minus one); `None` before the first build:
    /// everything may be seen.
    mask: Option<u64>,
    /// While a rebuild reads the marks: the hashes added since it began.
    added_during_rebuild: Option<Vec<u64>>,
}

impl SeenFilter {
    /// A filter that knows nothing yet: every key may have been seen.
    pub fn unknown() -> SeenFilter {
        SeenFilter {
            words: Vec::new(),
            mask: None,
            added_during_rebuild: None,
        }
    }

    fn sized_for(keys: usize) -> SeenFilter {
        let bits = (keys.max(MIN_KEYS) * BITS_PER_KEY).next_power_of_two();
        SeenFilter {
            words: vec![0; bits / 64],
            mask: Some(bits as u64 - 1),
            added_during_rebuild: None,
        }
    }

    /// The bit positions of a hash: double hashing from its two halves.
    fn probes(mask: u64, hash: u64) -> impl Iterator<Item = usize> {
        let step = hash.rotate_left(32) | 1;
        (0..PROBES).map(move |i| (hash.wrapping_add(i.wrapping_mul(step)) & mask) as usize)
    }

    pub fn may_contain(&self, hash: u64) -> bool {
        let Some(mask) = self.mask else {
            return true;
        };
        Self::probes(mask, hash).all(|bit| self.words[bit / 64] & (1 << (bit % 64)) != 0)
    }

    pub fn insert(&mut self, hash: u64) {
        if let Some(added) = &mut self.added_during_rebuild {
            added.push(hash);
        }
        if let Some(mask) = self.mask {
            for bit in Self::probes(mask, hash) {
                self.words[bit / 64] |= 1 << (bit % 64);
            }
        }
    }

    /// A rebuild begins: hashes added from now on are kept for the new filter.
    pub fn begin_rebuild(&mut self) {
        self.added_during_rebuild = Some(Vec::new());
    }

    /// The rebuild read `hashes` (every mark written before [`begin_rebuild`]
    /// (Self::begin_rebuild), and maybe some after): the new filter replaces this one.
    pub fn finish_rebuild(&mut self, mut hashes: Vec<u64>) {
        hashes.extend(self.added_during_rebuild.take().unwrap_or_default());
        let mut rebuilt = SeenFilter::sized_for(hashes.len());
        for hash in hashes {
            rebuilt.insert(hash);
        }
        *self = rebuilt;
    }

    /// A rebuild that failed midway: the filter as it is stays (it holds every hash added).
    pub fn abandon_rebuild(&mut self) {
        self.added_during_rebuild = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(n: u64) -> u64 {
        // Spread like the store's SipHash-based dedupe hashes.
        n.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(17) ^ 0xD6E8_FEB8_6659_FD93
    }

    #[test]
    fn what_was_added_is_always_found_and_little_else_is() {
        let mut filter = SeenFilter::unknown();
        assert!(
            filter.may_contain(hash(1)),
            "before a build, everything may be seen"
        );
        filter.finish_rebuild((0..50_000).map(hash).collect());
        assert!((0..50_000).all(|n| filter.may_contain(hash(n))));
        let false_positives = (50_000..150_000)
            .filter(|&n| filter.may_contain(hash(n)))
            .count();
        assert!(false_positives < 500, "{false_positives} of 100,000");
    }

    #[test]
    fn hashes_added_during_a_rebuild_are_in_the_new_filter() {
        let mut filter = SeenFilter::unknown();
        filter.finish_rebuild(vec![hash(1)]);
        filter.begin_rebuild();
        filter.insert(hash(2));
        // The rebuild's read of the marks missed the mark written meanwhile.
        filter.finish_rebuild(vec![hash(1)]);
        assert!(filter.may_contain(hash(1)) && filter.may_contain(hash(2)));
        filter.begin_rebuild();
        filter.insert(hash(3));
        filter.abandon_rebuild();
        assert!(filter.may_contain(hash(3)), "kept by the filter that stays");
    }
}
