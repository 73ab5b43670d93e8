//! Reconnect delays: exponential from `min` to `max`, plus up to `jitter`
//! (a fraction of the delay) at random so a fleet of Kamailios restarted
//! together does not reconnect in lockstep.

use std::time::Duration;

use crate::error::InvalidBackoff;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
}

impl Backoff {
    /// Delays between attempts to apply a snapshot that could not be
    /// applied for a passing reason (the dispatcher refused the load, no
    /// memory, no file descriptor): soon at first, then no more than twice
    /// a minute. A refused load also counts as a swap for the pacing, so
    /// attempts are never closer than `min_swap_interval_ms` either.
    pub const APPLY_RETRY: Backoff = Backoff {
        min: Duration::from_secs(1),
        max: Duration::from_secs(30),
        jitter: 0.2,
    };

    pub fn new(min: Duration, max: Duration, jitter: f64) -> Result<Self, InvalidBackoff> {
        if min.is_zero() {
            return Err(InvalidBackoff::ZeroMin);
        }
        if max < min {
            return Err(InvalidBackoff::MaxBelowMin { min, max });
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(InvalidBackoff::Jitter(jitter));
        }
        Ok(Backoff { min, max, jitter })
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before attempt `failures + 1`; `unit` is a random number in
    /// `0..1` choosing how much of the jitter to add.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let base = self
            .min
            .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        base + base.mul_f64(self.jitter * unit.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn grows_exponentially_up_to_max() {
        let b = Backoff::new(100 * MS, 1000 * MS, 0.0).unwrap();
        let delays: Vec<_> = (0..6).map(|n| b.delay(n, 0.5)).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000].map(|ms| ms * MS));
        assert_eq!(b.delay(u32::MAX, 0.0), 1000 * MS);
    }

    #[test]
    fn jitter_adds_at_most_its_fraction() {
        let b = Backoff::new(100 * MS, 1000 * MS, 0.5).unwrap();
        assert_eq!(b.delay(0, 0.0), 100 * MS);
        assert_eq!(b.delay(0, 1.0), 150 * MS);
        assert_eq!(b.delay(10, 1.0), 1500 * MS);
        assert_eq!(b.delay(0, 7.0), 150 * MS);
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert_eq!(
            Backoff::new(Duration::ZERO, MS, 0.1),
            Err(InvalidBackoff::ZeroMin)
        );
        assert!(matches!(
            Backoff::new(2 * MS, MS, 0.1),
            Err(InvalidBackoff::MaxBelowMin { .. })
        ));
        assert!(matches!(
            Backoff::new(MS, MS, 1.5),
            Err(InvalidBackoff::Jitter(_))
        ));
        assert!(Backoff::new(MS, MS, f64::NAN).is_err());
    }
}
