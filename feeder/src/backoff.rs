//! Exponential backoff with jitter, validated once at construction.
//!
//! Every retry loop in the feeder (reloads, source reconnects) uses this, so
//! a fleet of feeders restarted together does not retry in lock-step.

use std::time::Duration;

use rand::Rng;

/// Backoff settings: the first delay, the cap, and how much of each delay is
/// randomized (0.0 none, 1.0 anywhere from zero to the full delay).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    jitter: f64,
}

/// Why a backoff setting was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InvalidBackoff {
    #[error("backoff minimum must be above zero")]
    ZeroMin,
    #[error("backoff maximum {max:?} is below its minimum {min:?}")]
    MaxBelowMin { min: Duration, max: Duration },
    #[error("backoff jitter {0} is not between 0 and 1")]
    Jitter(f64),
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

    /// A fresh sequence of delays.
    pub fn iter(&self) -> Delays {
        Delays {
            backoff: *self,
            next: self.min,
        }
    }
}

/// The delays of one retry sequence: doubling from `min` up to `max`, each
/// shortened by a random part of up to `jitter` of itself.
#[derive(Debug, Clone)]
pub struct Delays {
    backoff: Backoff,
    next: Duration,
}

impl Iterator for Delays {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.next;
        self.next = (base * 2).min(self.backoff.max);
        let cut = base.mul_f64(self.backoff.jitter * rand::rng().random::<f64>());
        Some(base - cut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn doubles_up_to_the_cap() {
        let delays: Vec<_> = Backoff::new(100 * MS, 500 * MS, 0.0)
            .unwrap()
            .iter()
            .take(5)
            .collect();
        assert_eq!(delays, [100 * MS, 200 * MS, 400 * MS, 500 * MS, 500 * MS]);
    }

    #[test]
    fn jitter_stays_within_its_share() {
        let backoff = Backoff::new(100 * MS, 100 * MS, 0.5).unwrap();
        for delay in backoff.iter().take(200) {
            assert!((50 * MS..=100 * MS).contains(&delay), "{delay:?}");
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        assert_eq!(
            Backoff::new(Duration::ZERO, MS, 0.0),
            Err(InvalidBackoff::ZeroMin)
        );
        assert!(matches!(
            Backoff::new(2 * MS, MS, 0.0),
            Err(InvalidBackoff::MaxBelowMin { .. })
        ));
        assert_eq!(Backoff::new(MS, MS, 1.5), Err(InvalidBackoff::Jitter(1.5)));
    }
}
