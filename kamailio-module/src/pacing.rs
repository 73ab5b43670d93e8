//! Swap pacing. The stock dispatcher frees the list retired by one swap
//! when the next swap starts, while SIP workers, the ping timer and RPCs may
//! still be reading it with no lock or reference count (DESIGN.md §3). So
//! two swaps must be further apart than any reader's window: a lone change
//! is applied at once, a burst waits out the interval and then applies only
//! its newest snapshot.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug)]
pub struct Pacer {
    min_interval: Duration,
    last_swap: Option<Instant>,
}

impl Pacer {
    pub fn new(min_interval: Duration) -> Self {
        Pacer {
            min_interval,
            last_swap: None,
        }
    }

    /// The earliest moment the next swap may start.
    pub fn next_swap_at(&self, now: Instant) -> Instant {
        match self.last_swap {
            Some(last) => now.max(last + self.min_interval),
            None => now,
        }
    }

    /// Records that the dispatcher's lists changed at `at`: when our load
    /// finished (the flip to the new list), a refused load ended, or
    /// another writer's swap was noticed.
    pub fn swapped(&mut self, at: Instant) {
        self.last_swap = Some(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_change_goes_at_once_and_bursts_wait() {
        let start = Instant::now();
        let interval = Duration::from_millis(1000);
        let mut pacer = Pacer::new(interval);
        assert_eq!(pacer.next_swap_at(start), start);
        pacer.swapped(start);
        let soon = start + Duration::from_millis(5);
        assert_eq!(pacer.next_swap_at(soon), start + interval);
        let later = start + Duration::from_secs(3);
        assert_eq!(pacer.next_swap_at(later), later);
    }
}
