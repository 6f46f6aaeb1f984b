//! The one retry backoff of the relays and the bot's notices: a wait that doubles from a
//! minimum up to a maximum, spread by jitter so that many workers retrying together do not hit
//! the far end in step. (The DDP client's reconnect backoff is its own, in `rocketchat::ddp`.)

use std::time::Duration;

use rand::Rng;

/// A doubling wait between `min` and `max`.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The current step, without jitter.
    pub fn current(&self) -> Duration {
        self.next
    }

    /// Doubles the step, up to the maximum.
    pub fn advance(&mut self) {
        self.next = (self.next * 2).min(self.max);
    }

    /// The wait before the next try (the current step, jittered), then doubles the step.
    pub fn next_wait(&mut self) -> Duration {
        let wait = jitter(self.next);
        self.advance();
        wait
    }

    /// Back to the minimum (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A random wait between half and all of `base`, so retries of many workers spread.
pub fn jitter(base: Duration) -> Duration {
    let millis = base.as_millis().max(2) as u64;
    Duration::from_millis(rand::rng().random_range(millis / 2..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_maximum_and_resets() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(700));
        let mut backoff = Backoff::new(min, max);
        let mut steps = Vec::new();
        for _ in 0..5 {
            let step = backoff.current();
            let wait = backoff.next_wait();
            assert!(wait >= step / 2 && wait <= step, "{wait:?} within {step:?}");
            steps.push(step.as_millis());
        }
        assert_eq!(steps, [100, 200, 400, 700, 700]);
        backoff.reset();
        assert_eq!(backoff.current(), min);
    }
}
