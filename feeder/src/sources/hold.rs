//! What a source that follows one set through a fallible upstream does
//! after each answer and each failure: the empty-answer guard, and the
//! paced retries.
//!
//! A Consul agent that restarts answers for a moment as if no instance were
//! registered, and consul-template renders that as an empty list; a DNS
//! zone being reloaded can answer NXDOMAIN. Here a set that suddenly turns
//! empty keeps its last destinations for a grace period; any non-empty
//! answer ends the wait, and an answer still empty when it runs out is a
//! real removal and empties the set. A first answer that is empty (the
//! feeder restarted while the upstream did) is held the same way: the
//! source publishes the set as held
//! ([`Publisher::publish_holding`](crate::sources::Publisher::publish_holding)),
//! so Kamailio keeps what it has.
//!
//! A query that fails, or an answer that cannot be used, changes nothing:
//! it is reported (logged and counted in `dsfeed_source_errors_total`) and
//! the next try waits, longer after each failure in a row (500 ms doubling
//! to 30 s), so an upstream that is down is not hammered; the first answer
//! taken starts the waits over.
//!
//! A source that follows one set drives it all through a [`Guard`], given
//! the words of its logs ([`Wording`]), and only says how it publishes
//! ([`Guarded`]).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::sources::{Publisher, RETRY};
use dsfeed_model::{Delays, Destination, SetId};

/// What the source should do with an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send these destinations to the hub.
    Publish(Vec<Destination>),
    /// The set turned empty: keep publishing the last instances until
    /// `until`; `started` is true for the answer that began the wait.
    Hold { until: Instant, started: bool },
    /// Nothing changed.
    Unchanged,
}

/// One set's guard: feed it every answer with [`Holder::observe`], and
/// empty the set when [`Holder::expired`] resolves.
#[derive(Debug)]
pub struct Holder {
    grace: Duration,
    /// What the hub has from this watch, sorted; `None` before the first
    /// answer.
    published: Option<Vec<Destination>>,
    empty_since: Option<Instant>,
}

impl Holder {
    /// A guard that holds an empty answer for `grace` (zero: never).
    pub fn new(grace: Duration) -> Self {
        Holder {
            grace,
            published: None,
            empty_since: None,
        }
    }

    /// Takes the destinations of one answer received at `now`.
    pub fn observe(&mut self, mut dests: Vec<Destination>, now: Instant) -> Decision {
        let suspicious = self.published.as_ref().is_none_or(|p| !p.is_empty());
        if dests.is_empty() && suspicious && !self.grace.is_zero() {
            let started = self.empty_since.is_none();
            let until = *self.empty_since.get_or_insert(now) + self.grace;
            if now < until {
                return Decision::Hold { until, started };
            }
        }
        self.empty_since = None;
        dests.sort_by(|a, b| a.uri().cmp(b.uri()).then_with(|| a.attrs().cmp(b.attrs())));
        if self.published.as_ref() == Some(&dests) {
            return Decision::Unchanged;
        }
        self.published = Some(dests.clone());
        Decision::Publish(dests)
    }

    /// Whether the hub has content from this watch yet (a held set is none).
    pub fn has_published(&self) -> bool {
        self.published.is_some()
    }

    /// When the current wait runs out, if a wait is on.
    pub fn deadline(&self) -> Option<Instant> {
        self.empty_since.map(|since| since + self.grace)
    }

    /// Resolves when the current wait runs out; never while none is on.
    /// Meant for a `select!` beside the source's own work, so the grace
    /// ends on time even while a query is in flight.
    pub async fn expired(&self) {
        match self.deadline() {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    }

    /// Ends the wait: the set was really emptied. Publish it empty.
    pub fn expire(&mut self) {
        self.empty_since = None;
        self.published = Some(Vec::new());
    }
}

/// How a source following one set through a [`Guard`] publishes it; the
/// guard decides when, and logs in the source's [`Wording`], so every such
/// source holds, logs and announces a held set alike.
pub trait Guarded {
    /// Publishes `dests` as the set.
    fn publish(&self, out: &Publisher, dests: Vec<Destination>) -> impl Future<Output = ()> + Send;

    /// Publishes the set as held.
    fn publish_held(&self, out: &Publisher) -> impl Future<Output = ()> + Send;
}

/// The messages a [`Guard`] logs for a source, in the source's own terms
/// (instances, records). Each is logged with the source's name and the set.
#[derive(Debug, Clone, Copy)]
pub struct Wording {
    /// The set changed, just before it is published (with its count of
    /// destinations).
    pub changed: &'static str,
    /// The set turned empty and is kept for the grace (with how long).
    pub holding: &'static str,
    /// The grace ran out with the set still empty, just before it is
    /// published empty.
    pub emptied: &'static str,
}

/// One set's [`Holder`] with what goes around it in a source: what its
/// logs say, the last answer's problems, so they are logged once, and
/// whether the set was announced as held, so that is published once.
#[derive(Debug)]
pub struct Guard {
    holder: Holder,
    set: SetId,
    wording: Wording,
    problems: Vec<String>,
    held_announced: bool,
    /// The waits before the next query after failed ones.
    retries: Delays,
}

impl Guard {
    /// A guard of set `set` that holds an empty answer for `grace` (zero:
    /// never), and logs in `wording`.
    pub fn new(grace: Duration, set: SetId, wording: Wording) -> Self {
        Guard {
            holder: Holder::new(grace),
            set,
            wording,
            problems: Vec::new(),
            held_announced: false,
            retries: RETRY.iter(),
        }
    }

    /// Takes one answer's destinations and problems: logs the problems when
    /// they changed, then publishes the destinations, or starts holding the
    /// set, or does nothing, as the [`Holder`] decides.
    pub async fn answer<S: Guarded>(
        &mut self,
        source: &S,
        out: &Publisher,
        destinations: Vec<Destination>,
        problems: Vec<String>,
    ) {
        self.retries = RETRY.iter();
        let (name, set) = (out.metrics().name(), self.set);
        if problems != self.problems {
            for problem in &problems {
                tracing::warn!(source = name, "{problem}");
            }
            self.problems = problems;
        }
        match self.holder.observe(destinations, Instant::now()) {
            Decision::Publish(dests) => {
                let destinations = dests.len();
                tracing::info!(source = name, set, destinations, "{}", self.wording.changed);
                source.publish(out, dests).await;
            }
            Decision::Hold {
                started: true,
                until,
            } => {
                let holding_for = until.saturating_duration_since(Instant::now());
                tracing::warn!(source = name, set, ?holding_for, "{}", self.wording.holding);
                self.announce_held(source, out).await;
            }
            Decision::Hold { .. } | Decision::Unchanged => {}
        }
    }

    /// A query that failed or gave an answer that cannot be used: reports
    /// `err` through the source's one path (its log line and
    /// `dsfeed_source_errors_total`), saying what becomes of the set, then
    /// waits before the next try (longer after each failure, until an
    /// answer is taken), emptying the set meanwhile if its grace runs out.
    /// `what` heads the log line ("Consul query failed"); `kind` is the
    /// error's label.
    pub async fn failed<S: Guarded>(
        &mut self,
        source: &S,
        out: &Publisher,
        what: &str,
        kind: &str,
        err: &(dyn std::error::Error + Sync),
    ) {
        let delay = self.retries.next().expect("backoff delays never end");
        let outcome = if self.holder.has_published() {
            "the set keeps its last destinations"
        } else {
            "the set waits for a first answer"
        };
        out.report(
            kind,
            err,
            &format!("{what}, retrying in {delay:?}; {outcome}"),
        );
        self.meanwhile(source, out, tokio::time::sleep(delay)).await;
    }

    /// Publishes the set as held if nothing was published for it yet, once:
    /// for an answer the source cannot vouch for.
    pub async fn announce_held<S: Guarded>(&mut self, source: &S, out: &Publisher) {
        if !self.holder.has_published() && !self.held_announced {
            self.held_announced = true;
            source.publish_held(out).await;
        }
    }

    /// Runs `work` to its end; if the empty-answer grace runs out meanwhile,
    /// empties the set.
    pub async fn meanwhile<S: Guarded, F: Future>(
        &mut self,
        source: &S,
        out: &Publisher,
        work: F,
    ) -> F::Output {
        tokio::pin!(work);
        loop {
            tokio::select! {
                output = &mut work => return output,
                () = self.holder.expired() => {
                    self.holder.expire();
                    let (name, set) = (out.metrics().name(), self.set);
                    tracing::info!(source = name, set, "{}", self.wording.emptied);
                    source.publish(out, Vec::new()).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(30);

    fn hold(until: Instant, started: bool) -> Decision {
        Decision::Hold { until, started }
    }

    fn dests(uris: &[&str]) -> Vec<Destination> {
        uris.iter()
            .map(|u| Destination::parse_target(u).unwrap())
            .collect()
    }

    #[test]
    fn an_empty_answer_is_held_then_published() {
        let t0 = Instant::now();
        let mut holder = Holder::new(GRACE);
        assert_eq!(
            holder.observe(dests(&["b", "a"]), t0),
            Decision::Publish(dests(&["a", "b"]))
        );
        assert_eq!(holder.observe(dests(&["a", "b"]), t0), Decision::Unchanged);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(holder.observe(vec![], t1), hold(t1 + GRACE, true));
        assert_eq!(
            holder.observe(vec![], t1 + Duration::from_secs(5)),
            hold(t1 + GRACE, false)
        );
        assert_eq!(holder.deadline(), Some(t1 + GRACE));
        assert_eq!(
            holder.observe(vec![], t1 + GRACE),
            Decision::Publish(vec![])
        );
        assert_eq!(holder.deadline(), None);
        assert_eq!(holder.observe(vec![], t1 + GRACE), Decision::Unchanged);
    }

    #[test]
    fn instances_coming_back_end_the_wait() {
        let t0 = Instant::now();
        let mut holder = Holder::new(GRACE);
        assert!(!holder.has_published());
        holder.observe(dests(&["a"]), t0);
        assert!(holder.has_published());
        assert!(matches!(holder.observe(vec![], t0), Decision::Hold { .. }));
        assert_eq!(holder.observe(dests(&["a"]), t0), Decision::Unchanged);
        assert_eq!(holder.deadline(), None);
        assert!(matches!(
            holder.observe(vec![], t0),
            Decision::Hold { started: true, .. }
        ));
        holder.expire();
        assert_eq!(holder.observe(vec![], t0), Decision::Unchanged);
    }

    #[test]
    fn a_first_empty_answer_is_held_too() {
        let t0 = Instant::now();
        let mut first = Holder::new(GRACE);
        assert_eq!(first.observe(vec![], t0), hold(t0 + GRACE, true));
        assert!(!first.has_published());
        first.expire();
        assert!(first.has_published());
        assert_eq!(first.observe(vec![], t0 + GRACE), Decision::Unchanged);
        let mut back = Holder::new(GRACE);
        back.observe(vec![], t0);
        assert_eq!(
            back.observe(dests(&["a"]), t0),
            Decision::Publish(dests(&["a"]))
        );
    }

    /// A source that publishes nowhere: the retry test watches the waits only.
    struct Quiet;

    impl Guarded for Quiet {
        async fn publish(&self, _: &Publisher, _: Vec<Destination>) {}
        async fn publish_held(&self, _: &Publisher) {}
    }

    #[tokio::test]
    async fn retries_wait_longer_until_an_answer_is_taken() {
        let (tx, _views) = tokio::sync::mpsc::channel(1);
        let metrics = crate::metrics::Metrics::new().source("test");
        let out = Publisher::new(0, metrics, tx);
        let wording = Wording {
            changed: "changed",
            holding: "holding",
            emptied: "emptied",
        };
        let mut guard = Guard::new(GRACE, 1, wording);
        let err = std::io::Error::other("refused");
        // Each failure takes its wait from the sequence, then sleeps it; a
        // zero timeout stops it at the sleep, so no test time passes.
        for _ in 0..3 {
            let failed = guard.failed(&Quiet, &out, "query failed", "test", &err);
            let _ = tokio::time::timeout(Duration::ZERO, failed).await;
        }
        // 500 ms doubled three times, less up to half of itself.
        let fourth = guard.retries.next().unwrap();
        assert!(fourth > Duration::from_millis(2000), "{fourth:?}");
        guard.answer(&Quiet, &out, dests(&["a"]), vec![]).await;
        let first = guard.retries.next().unwrap();
        assert!(first <= Duration::from_millis(500), "{first:?}");
    }

    #[test]
    fn without_grace_an_empty_answer_publishes_at_once() {
        let t0 = Instant::now();
        let mut none = Holder::new(Duration::ZERO);
        assert_eq!(none.observe(vec![], t0), Decision::Publish(vec![]));
        none.observe(dests(&["a"]), t0);
        assert_eq!(none.observe(vec![], t0), Decision::Publish(vec![]));
    }
}
