//! Exponential backoff with jitter between failed queries, so that many
//! feeders do not hammer a recovering Consul in step.

use std::time::Duration;

use rand::Rng as _;

#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    /// The fraction of each delay that is randomized away (0 to 1).
    jitter: f64,
    next: Duration,
}

impl Backoff {
    /// Checks that `min` is not zero and not above `max`, and that `jitter`
    /// is a fraction.
    pub fn new(min: Duration, max: Duration, jitter: f64) -> Result<Self, String> {
        if min.is_zero() || min > max {
            return Err(format!(
                "backoff needs 0 < min <= max, not {min:?}..{max:?}"
            ));
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(format!("backoff jitter {jitter} is not between 0 and 1"));
        }
        Ok(Backoff {
            min,
            max,
            jitter,
            next: min,
        })
    }

    /// The delay before the next attempt: the current step less up to
    /// `jitter` of it; each call doubles the step up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let step = self.next;
        self.next = (step * 2).min(self.max);
        step.mul_f64(1.0 - self.jitter * rand::rng().random::<f64>())
    }

    /// Starts again from `min` after a success.
    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_max_within_jitter() {
        let (min, max) = (Duration::from_millis(100), Duration::from_millis(1000));
        let mut backoff = Backoff::new(min, max, 0.5).unwrap();
        for step in [100, 200, 400, 800, 1000, 1000] {
            let delay = backoff.next_delay();
            let step = Duration::from_millis(step);
            assert!(delay <= step && delay >= step / 2, "{delay:?} for {step:?}");
        }
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }

    #[test]
    fn bad_settings_are_refused() {
        let s = Duration::from_secs(1);
        assert!(Backoff::new(Duration::ZERO, s, 0.5).is_err());
        assert!(Backoff::new(s * 2, s, 0.5).is_err());
        assert!(Backoff::new(s, s, 1.5).is_err());
    }
}
