//! Reconnection as its own small state machine: `Connecting → Connected →
//! Backoff → Connecting`, with the delay before each attempt decided here
//! from the validated backoff, whether the last stream was healthy (it
//! delivered a response, or stayed up as long as the longest delay), and
//! whether its error is one a quick retry cannot fix.
//!
//! Failover lives here too: with several feeders (replicas of one service),
//! every attempt after a lost or failed one goes to the next feeder of the
//! list, so a dead replica costs one attempt; the backoff grows by one step
//! per round through the list, not per attempt.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::SessionError;
use crate::status::LinkState;
use dsfeed_model::Backoff;

#[derive(Debug)]
pub struct Reconnect {
    backoff: Backoff,
    /// Attempts since the last healthy stream.
    failures: u32,
    state: LinkState,
    connected_at: Option<Instant>,
    delivered: bool,
    /// The feeder of the last attempt, and how many there were to choose
    /// from then.
    feeder: Option<String>,
    choices: u32,
}

impl Reconnect {
    pub fn new(backoff: Backoff) -> Self {
        Reconnect {
            backoff,
            failures: 0,
            state: LinkState::Starting,
            connected_at: None,
            delivered: false,
            feeder: None,
            choices: 1,
        }
    }

    /// Picks the feeder to try among `feeders` (as named now, in the
    /// configured order): the first at start, then the one after the last
    /// attempt's, since that one failed or was lost. Returns its index.
    pub fn choose(&mut self, feeders: &[String]) -> usize {
        let next = self
            .feeder
            .as_ref()
            .and_then(|last| feeders.iter().position(|f| f == last))
            .map_or(0, |last| (last + 1) % feeders.len().max(1));
        self.feeder = feeders.get(next).cloned();
        self.choices = u32::try_from(feeders.len()).unwrap_or(u32::MAX).max(1);
        next
    }

    pub fn state(&self) -> LinkState {
        self.state
    }

    /// A connect attempt starts.
    pub fn connecting(&mut self) {
        self.state = LinkState::Connecting;
        self.connected_at = None;
        self.delivered = false;
    }

    /// The stream is open.
    pub fn connected(&mut self, now: Instant) {
        self.state = LinkState::Connected;
        self.connected_at = Some(now);
    }

    /// The feeder sent something on this stream.
    pub fn delivered(&mut self) {
        self.delivered = true;
    }

    /// The attempt or the stream ended with `error` at `now`; returns how
    /// long to wait before the next attempt. `unit` (0..1, random) picks
    /// the jitter.
    pub fn ended(&mut self, error: &SessionError, now: Instant, unit: f64) -> Duration {
        let lasted = self
            .connected_at
            .is_some_and(|at| now.saturating_duration_since(at) >= self.backoff.max());
        if self.delivered || lasted {
            self.failures = 0;
        }
        let delay = if error.is_persistent() {
            self.backoff.delay(u32::MAX, unit)
        } else {
            self.backoff.delay(self.failures / self.choices, unit)
        };
        self.failures = self.failures.saturating_add(1);
        self.state = LinkState::Backoff;
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn reconnect() -> Reconnect {
        Reconnect::new(Backoff::new(100 * MS, 1000 * MS, 0.0).unwrap())
    }

    fn unreachable() -> SessionError {
        SessionError::Closed
    }

    #[test]
    fn failed_attempts_back_off_exponentially() {
        let mut r = reconnect();
        let now = Instant::now();
        let delays: Vec<Duration> = (0..5)
            .map(|_| {
                r.connecting();
                assert_eq!(r.state(), LinkState::Connecting);
                r.ended(&unreachable(), now, 0.0)
            })
            .collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000].map(|ms| ms * MS));
        assert_eq!(r.state(), LinkState::Backoff);
    }

    #[test]
    fn a_healthy_stream_starts_the_backoff_over() {
        let mut r = reconnect();
        let now = Instant::now();
        for _ in 0..3 {
            r.connecting();
            r.ended(&unreachable(), now, 0.0);
        }
        // Delivered a response: healthy.
        r.connecting();
        r.connected(now);
        assert_eq!(r.state(), LinkState::Connected);
        r.delivered();
        assert_eq!(r.ended(&unreachable(), now, 0.0), 100 * MS);
        // Quiet but up for the longest delay: healthy too.
        r.connecting();
        r.ended(&unreachable(), now, 0.0);
        r.connecting();
        r.connected(now);
        assert_eq!(r.ended(&unreachable(), now + 1000 * MS, 0.0), 100 * MS);
        // Accepted and dropped at once, repeatedly: not healthy.
        r.connecting();
        r.connected(now);
        assert_eq!(r.ended(&unreachable(), now, 0.0), 200 * MS);
    }

    #[test]
    fn each_attempt_goes_to_the_next_feeder_and_rounds_back_off() {
        let mut r = reconnect();
        let now = Instant::now();
        let feeders = ["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let mut tried = Vec::new();
        let mut delays = Vec::new();
        for _ in 0..6 {
            r.connecting();
            tried.push(feeders[r.choose(&feeders)].clone());
            delays.push(r.ended(&unreachable(), now, 0.0));
        }
        assert_eq!(tried, ["a", "b", "c", "a", "b", "c"]);
        assert_eq!(delays, [100, 100, 100, 200, 200, 200].map(|ms| ms * MS));
        // A healthy stream to "a" is lost: the next attempt is "b", at once.
        r.connecting();
        assert_eq!(r.choose(&feeders), 0);
        r.connected(now);
        r.delivered();
        assert_eq!(r.ended(&unreachable(), now, 0.0), 100 * MS);
        assert_eq!(r.choose(&feeders), 1);
        // The list changed (a name resolved differently): start over.
        assert_eq!(r.choose(&["x".to_owned(), "y".to_owned()]), 0);
        assert_eq!(r.choose(&["y".to_owned()]), 0);
    }

    #[test]
    fn persistent_errors_wait_the_longest_delay() {
        let mut r = reconnect();
        r.connecting();
        let refused = SessionError::Refused(tonic::Status::unauthenticated("bad token"));
        assert_eq!(r.ended(&refused, Instant::now(), 0.0), 1000 * MS);
    }
}
