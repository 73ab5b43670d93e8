//! Exponential backoff with jitter, validated once at construction: every
//! retry loop in dsfeed (reloads, source reconnects, the module's and
//! `dsfeed watch`'s reconnects, the module's retried swaps) uses this one.

use std::time::Duration;

use crate::error::InvalidBackoff;

/// Backoff settings: the first delay, the cap, and how much of each delay is
/// randomized away (0.0 none, 1.0 anywhere from zero to the full delay), so
/// a fleet restarted together does not retry in lockstep and no delay ever
/// exceeds the cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
}

impl Backoff {
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

    /// Settings known when the program is written, checked by the compiler
    /// (an invalid one fails the build).
    pub const fn constant(min: Duration, max: Duration, jitter: f64) -> Self {
        assert!(!min.is_zero(), "backoff minimum must be above zero");
        assert!(
            max.as_nanos() >= min.as_nanos(),
            "backoff maximum below minimum"
        );
        assert!(
            jitter >= 0.0 && jitter <= 1.0,
            "backoff jitter outside 0..=1"
        );
        Backoff { min, max, jitter }
    }

    /// The longest delay.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before attempt `failures + 1`: `min` doubled `failures`
    /// times up to `max`, less up to `jitter` of itself; `unit`, a random
    /// number in `0..1`, chooses how much.
    pub fn delay(&self, failures: u32, unit: f64) -> Duration {
        let base = self
            .min
            .checked_mul(1u32.checked_shl(failures.min(31)).unwrap_or(u32::MAX))
            .unwrap_or(self.max)
            .min(self.max);
        base - base.mul_f64(self.jitter * unit.clamp(0.0, 1.0))
    }

    /// A fresh sequence of delays, jittered at random.
    pub fn iter(&self) -> Delays {
        Delays {
            backoff: *self,
            failures: 0,
        }
    }
}

/// The delays of one retry sequence; it never ends.
#[derive(Debug, Clone)]
pub struct Delays {
    backoff: Backoff,
    failures: u32,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let delay = self.backoff.delay(self.failures, rand::random());
        self.failures = self.failures.saturating_add(1);
        Some(delay)
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
        assert_eq!(
            b.iter().take(3).collect::<Vec<_>>(),
            [100 * MS, 200 * MS, 400 * MS]
        );
    }

    #[test]
    fn jitter_takes_off_at_most_its_fraction_and_never_exceeds_max() {
        let b = Backoff::new(100 * MS, 1000 * MS, 0.5).unwrap();
        assert_eq!(b.delay(0, 0.0), 100 * MS);
        assert_eq!(b.delay(0, 1.0), 50 * MS);
        assert_eq!(b.delay(10, 1.0), 500 * MS);
        assert_eq!(b.delay(0, 7.0), 50 * MS);
        assert!(b.iter().take(50).all(|d| d <= 1000 * MS && d >= 50 * MS));
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
