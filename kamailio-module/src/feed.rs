//! The feed process: holds the gRPC stream to the feeder and applies what it
//! sends, forever.
//!
//! Reconnection is its own small state machine (`reconnect`); every stream
//! starts with a hello carrying the version already applied, so the
//! feeder's first response is a full state, or a delta on that version
//! (or nothing, when nothing changed). A delta is completed here against
//! the snapshot applied or the one pending, and a whole list is swapped in
//! as for a full snapshot. Every response is answered: ACK once swapped in; NACK when
//! invalid (the previous sets stay) or superseded by a newer one before its
//! turn; "retrying" when valid but not applicable now (the dispatcher
//! refused the load, no memory, no file descriptor), in which case it stays
//! pending, is tried again with a backoff and its nonce is answered again
//! once applied. A lost feeder changes nothing in the dispatcher.
//!
//! The module must be the dispatcher's only writer. It takes the list it
//! finds at start as loaded by someone else just now, so its first swap
//! waits a full interval; it polls the list's identity every turn and again
//! right before each load, and treats any change it did not make as another
//! writer's load: the interval starts over from when it noticed, and the
//! last applied snapshot is swapped back in after it.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use dsfeed_model::pb::{self, Answer, Incoming};
use dsfeed_model::{Backoff, Snapshot, error_chain};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::config::Config;
use crate::engine::{Applied, Dispatcher, Engine};
use crate::error::{ApplyError, Retry, SessionError};
use crate::pacing::Pacer;
use crate::reconnect::Reconnect;
use crate::status::{Status, StatusSink};
use crate::{listfile, transport};

/// How often the process runs its housekeeping turn (`cfg_update`, and the
/// check of the dispatcher's list identity).
const TURN: Duration = Duration::from_secs(1);
/// Delays between attempts to apply a snapshot that could not be applied
/// for a passing reason (the dispatcher refused the load, no memory, no
/// file descriptor): soon at first, then no more than twice a minute. A
/// refused load also counts as a swap for the pacing, so attempts are never
/// closer than `min_swap_interval_ms` either.
const APPLY_RETRY: Backoff =
    Backoff::constant(Duration::from_secs(1), Duration::from_secs(30), 0.2);
/// Pause before rebuilding the feed after a panic.
const PANIC_PAUSE: Duration = Duration::from_secs(5);

/// What the feed needs from the Kamailio process it runs in.
pub trait Host {
    /// Called at the top of every turn: Kamailio's `cfg_update()`.
    fn turn(&mut self);
}

/// What the feed process knows about the dispatcher and its own swaps. It
/// outlives a panic of the feed loop: a loop started over with fresh pacing
/// could swap right after the swap before the panic, and one with a fresh
/// engine would take a list another writer loaded meanwhile as its own.
pub struct Memory {
    engine: Engine,
    pacer: Pacer,
    status: Status,
    /// The snapshot the last swap applied.
    applied: Option<Snapshot>,
    /// Set while a swap runs: a panic between its load and the pacing's
    /// record of it must still count as a swap.
    swapping: bool,
}

impl Memory {
    /// The memory of a feed process that just started: the dispatcher's
    /// current list counts as loaded now by someone else, since nothing
    /// tells when it was (Kamailio loaded it at start, or a
    /// `dispatcher.reload` raced the start).
    pub fn new(dispatcher: &impl Dispatcher, min_swap_interval: Duration) -> Self {
        let mut pacer = Pacer::new(min_swap_interval);
        pacer.swapped(Instant::now());
        Memory {
            engine: Engine::new(dispatcher),
            pacer,
            status: Status::default(),
            applied: None,
            swapping: false,
        }
    }

    /// After a panic of the feed loop: a swap it cut short counts as one
    /// now, and the snapshot it was retrying is gone with its stream.
    fn after_panic(&mut self) {
        if std::mem::take(&mut self.swapping) {
            self.pacer.swapped(Instant::now());
        }
        self.status.retrying_version.clear();
        self.status.retries = 0;
    }
}

/// Runs the feed in this (dedicated, forked) process and never returns: a
/// panic is logged and the feed starts over with the same `Memory`, because
/// returning would hand control back to Kamailio's main-process code in a
/// child.
pub fn run_forever<D, S, H>(
    config: Config,
    user_agent: String,
    list_file: Option<PathBuf>,
    parts: impl Fn() -> (D, S, H),
) -> !
where
    D: Dispatcher,
    S: StatusSink,
    H: Host,
{
    let runtime = loop {
        // A current-thread runtime: no worker threads in a Kamailio process.
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => break runtime,
            Err(err) => {
                log::error!("cannot start the feed runtime: {err}; retrying");
                std::thread::sleep(PANIC_PAUSE);
            }
        }
    };
    let mut memory: Option<Memory> = None;
    loop {
        let (dispatcher, sink, host) = parts();
        let memory =
            memory.get_or_insert_with(|| Memory::new(&dispatcher, config.min_swap_interval));
        let feed = Feed {
            reconnect: Reconnect::new(config.backoff),
            config: config.clone(),
            user_agent: user_agent.clone(),
            list_file: list_file.clone(),
            pending: None,
            dispatcher,
            sink,
            host,
            memory,
        };
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(feed.run())));
        if outcome.is_err() {
            memory.after_panic();
            log::error!("the feed loop panicked; starting it over in {PANIC_PAUSE:?}");
            std::thread::sleep(PANIC_PAUSE);
        }
    }
}

/// A snapshot waiting for its turn to be swapped in.
struct Pending {
    /// The response to answer once done; `None` when re-applying the last
    /// snapshot after another writer's load.
    nonce: Option<String>,
    snapshot: Snapshot,
    /// Attempts that could not apply it; its response was answered
    /// "retrying" after the first.
    failures: u32,
    /// The backoff after the last failed attempt.
    retry_at: Option<Instant>,
}

impl Pending {
    fn new(nonce: Option<String>, snapshot: Snapshot) -> Self {
        Pending {
            nonce,
            snapshot,
            failures: 0,
            retry_at: None,
        }
    }
}

/// Where answers go: the current stream's request channel, if connected.
type Answers<'a> = Option<&'a mpsc::UnboundedSender<pb::FeedRequest>>;

pub struct Feed<'m, D, S, H> {
    config: Config,
    user_agent: String,
    dispatcher: D,
    sink: S,
    host: H,
    memory: &'m mut Memory,
    /// The dispatcher's list file, when `list_file_sync` is on: each
    /// applied list is written there too, so a cold start with the feeder
    /// down starts from the last known sets.
    list_file: Option<PathBuf>,
    reconnect: Reconnect,
    /// The next snapshot to swap in, when its turn comes.
    pending: Option<Pending>,
}

impl<'m, D: Dispatcher, S: StatusSink, H: Host> Feed<'m, D, S, H> {
    pub async fn run(mut self) -> std::convert::Infallible {
        crate::testhook::maybe_panic("feed");
        loop {
            self.host.turn();
            self.reconnect.connecting();
            self.publish();
            let Err(error) = self.stream().await;
            let delay = self.reconnect.ended(&error, Instant::now(), rand::random());
            // The feeder tried, or the list when no address could be tried.
            let feeder = match self.memory.status.feeder.as_str() {
                "" => self.config.feeder_list(),
                feeder => feeder.to_owned(),
            };
            let next = if self.config.feeders.len() > 1 {
                "trying the next feeder"
            } else {
                "reconnecting"
            };
            log::warn!(
                "feeder {feeder}: {}; {next} in {delay:?}",
                error_chain(&error)
            );
            self.record_error(format!("feeder {feeder}: {}", error_chain(&error)));
            self.idle(Instant::now() + delay).await;
        }
    }

    /// Waits until `until` while disconnected, still re-applying the last
    /// snapshot if the list is replaced meanwhile.
    async fn idle(&mut self, until: Instant) {
        let mut turn = tokio::time::interval(TURN);
        loop {
            let swap_at = self.swap_at();
            tokio::select! {
                () = sleep_until(until) => return,
                () = sleep_until(swap_at.unwrap_or(until)), if swap_at.is_some() => self.swap(None),
                _ = turn.tick() => self.turn(),
            }
        }
    }

    /// When the pending snapshot may be swapped in, if there is one: paced
    /// after the last swap, and not before its retry backoff ends.
    fn swap_at(&self) -> Option<Instant> {
        self.pending.as_ref().map(|pending| {
            let paced = self.memory.pacer.next_swap_at(Instant::now());
            pending.retry_at.map_or(paced, |retry| paced.max(retry))
        })
    }

    /// The housekeeping turn: Kamailio's `cfg_update`, and a check that the
    /// dispatcher's list is still the one the module knows.
    fn turn(&mut self) {
        self.host.turn();
        if self.memory.engine.foreign_load(&self.dispatcher) {
            self.foreign_load();
            if self.pending.is_none()
                && let Some(snapshot) = self.memory.applied.clone()
            {
                self.pending = Some(Pending::new(None, snapshot));
            }
        }
    }

    /// Something else loaded the list: it may have freed a list a reader
    /// held, and the next swap must wait a full interval from now.
    fn foreign_load(&mut self) {
        let then = match (&self.pending, &self.memory.applied) {
            (Some(pending), _) => format!("applying version {:?}", pending.snapshot.version()),
            (None, Some(applied)) => format!("re-applying version {:?}", applied.version()),
            (None, None) => "the first swap waits".to_owned(),
        };
        log::warn!(
            "the dispatcher list was replaced by something else (dispatcher.reload, ds_reload(), \
             dispatcher.add?): dsfeed must be its only writer, since two writers can free a list \
             under a reader or corrupt shared memory; {then} in {:?}",
            self.config.min_swap_interval
        );
        self.memory.engine.adopt(&self.dispatcher);
        self.memory.pacer.swapped(Instant::now());
    }

    /// One stream, until it fails.
    async fn stream(&mut self) -> Result<std::convert::Infallible, SessionError> {
        let bearer = transport::bearer(self.config.token.as_ref())?;
        let candidates = transport::candidates(&self.config)
            .await
            .inspect_err(|_| self.memory.status.feeder.clear())?;
        let names: Vec<String> = candidates.iter().map(ToString::to_string).collect();
        let chosen = self.reconnect.choose(&names);
        self.memory.status.feeder = names[chosen].clone();
        self.publish();
        let channel = transport::connect(&self.config, &candidates[chosen]).await?;
        let (answers, outbound) = mpsc::unbounded_channel();
        // The module completes deltas against the snapshot it applied or
        // the one waiting for its turn.
        let hello = pb::hello_with_deltas(
            &self.config.node_id,
            &self.user_agent,
            &self.config.sets,
            &self.memory.status.applied_version,
        );
        // The receiver is alive right here, so this cannot fail.
        let _ = answers.send(hello);
        let mut request = tonic::Request::new(UnboundedReceiverStream::new(outbound));
        if let Some(bearer) = bearer {
            request.metadata_mut().insert("authorization", bearer);
        }
        // Responses are counted against the budget before they are decoded.
        let mut inbound = pb::open_stream(channel, request)
            .await
            .map_err(SessionError::Refused)?;
        self.memory.status.connects += 1;
        self.reconnect.connected(Instant::now());
        self.publish();
        log::info!(
            "connected to feeder {} as node {:?} (applied version {:?})",
            self.memory.status.feeder,
            self.config.node_id,
            self.memory.status.applied_version
        );

        let mut turn = tokio::time::interval(TURN);
        let result = loop {
            let swap_at = self.swap_at();
            tokio::select! {
                // Read first: a newer snapshot supersedes the pending one.
                biased;
                message = inbound.message() => {
                    let response = match message {
                        Ok(Some(Incoming::Response(response))) => response,
                        Ok(Some(Incoming::OverBudget { version, nonce, reason })) => {
                            self.reconnect.delivered();
                            self.refuse_over_budget(&version, &nonce, &reason, &answers);
                            continue;
                        }
                        Ok(None) => break SessionError::Closed,
                        Err(status) => break SessionError::Stream(status),
                    };
                    self.reconnect.delivered();
                    self.receive(response, &answers);
                }
                () = sleep_until(swap_at.unwrap_or_else(Instant::now)), if swap_at.is_some() => {
                    self.swap(Some(&answers));
                }
                _ = turn.tick() => self.turn(),
            }
        };
        // A response can only be answered on its own stream; the next hello
        // names the applied version and the feeder sends its newest again.
        if self.pending.as_ref().is_some_and(|p| p.nonce.is_some()) {
            self.pending = None;
            self.clear_retry();
        }
        Err(result)
    }

    /// NACKs a response too large to take, without decoding it; the stream
    /// stays, and the feeder offers that version no more.
    fn refuse_over_budget(
        &mut self,
        version: &str,
        nonce: &str,
        reason: &str,
        answers: &mpsc::UnboundedSender<pb::FeedRequest>,
    ) {
        let applied = self.memory.status.applied_version.clone();
        let message = format!(
            "invalid snapshot {version:?}: it has {reason}; dsfeed.so takes at most {} destinations in {} sets",
            pb::MAX_DESTINATIONS,
            pb::MAX_SETS
        );
        log::error!("{message}; keeping version {applied:?}");
        let _ = answers.send(pb::answer(nonce, &applied, Answer::Nack(message.clone())));
        self.memory.status.nacks += 1;
        self.record_error(message);
    }

    fn receive(
        &mut self,
        response: pb::FeedResponse,
        answers: &mpsc::UnboundedSender<pb::FeedRequest>,
    ) {
        let applied_version = self.memory.status.applied_version.clone();
        let answer = |nonce: &str, version: &str, kind| {
            // A closed stream surfaces on the next read.
            let _ = answers.send(pb::answer(nonce, version, kind));
        };
        let held: Vec<&Snapshot> = [
            self.pending.as_ref().map(|p| &p.snapshot),
            self.memory.applied.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect();
        let snapshot = match pb::complete(&response, &self.config.sets, &held) {
            Ok(snapshot) => snapshot,
            Err(err) if err.wants_full() => {
                // Not the feeder's fault nor the content's: the feeder
                // sends this version in full on this NACK.
                log::info!(
                    "version {:?}: {err}; asking for it in full",
                    response.version_info
                );
                answer(
                    &response.nonce,
                    &applied_version,
                    Answer::Nack(err.to_string()),
                );
                return;
            }
            Err(err) => {
                let message = format!("invalid snapshot {:?}: {err}", response.version_info);
                log::error!("{message}; keeping version {applied_version:?}");
                answer(
                    &response.nonce,
                    &applied_version,
                    Answer::Nack(message.clone()),
                );
                self.memory.status.nacks += 1;
                self.record_error(message);
                return;
            }
        };
        // The dispatcher holds the applied version unless another writer
        // replaced it since (noticed or not yet): then it must be swapped
        // back in, and this response answered after that.
        let reapplying = self.pending.as_ref().is_some_and(|p| p.nonce.is_none());
        let unchanged = snapshot.version() == applied_version
            && !reapplying
            && !self.memory.engine.foreign_load(&self.dispatcher);
        let superseded = if unchanged {
            answer(&response.nonce, snapshot.version(), Answer::Ack);
            self.pending.take()
        } else {
            self.pending
                .replace(Pending::new(Some(response.nonce), snapshot))
        };
        let Some(old) = superseded else {
            return;
        };
        let newer = &response.version_info;
        if old.failures > 0 {
            // Its response was answered "retrying": the feeder knows a newer
            // one replaces it, and expects nothing more for it.
            log::info!(
                "stopped retrying version {:?}: superseded by {newer:?}",
                old.snapshot.version()
            );
            self.clear_retry();
        } else if let Some(nonce) = old.nonce {
            log::debug!(
                "version {:?} superseded by {newer:?} before its swap",
                old.snapshot.version()
            );
            answer(
                &nonce,
                &applied_version,
                Answer::Nack(format!(
                    "superseded by version {newer:?} before it was applied"
                )),
            );
        }
    }

    /// Swaps the pending snapshot in, or puts it back to try again, and
    /// answers its response if it has one.
    fn swap(&mut self, answers: Answers<'_>) {
        let Some(mut next) = self.pending.take() else {
            return;
        };
        self.host.turn();
        let answer = |nonce: &str, version: &str, kind| {
            if let Some(answers) = answers {
                // A closed stream surfaces on the next read.
                let _ = answers.send(pb::answer(nonce, version, kind));
            }
        };
        let version = next.snapshot.version().to_owned();
        let started = Instant::now();
        self.memory.swapping = true;
        let outcome = self
            .memory
            .engine
            .apply(&mut self.dispatcher, &next.snapshot);
        // Paced from the end of the load: the new list becomes current (and
        // the old one starts being retired) only when the load finishes,
        // which takes a while for big sets.
        let now = Instant::now();
        let err = match outcome {
            Ok(applied) => {
                self.memory.pacer.swapped(now);
                self.memory.swapping = false;
                if let Some(nonce) = &next.nonce {
                    answer(nonce, &version, Answer::Ack);
                }
                self.applied(next.snapshot, applied, now - started);
                crate::testhook::maybe_panic("swapped");
                return;
            }
            Err(err) => err,
        };
        if err.counts_as_a_swap() {
            self.memory.pacer.swapped(now);
        }
        self.memory.swapping = false;
        match err.retry() {
            Retry::Paced => {
                if matches!(err, ApplyError::ForeignLoad) {
                    self.foreign_load();
                } else {
                    log::warn!("{err}");
                }
            }
            Retry::Backoff => {
                let delay = APPLY_RETRY.delay(next.failures, rand::random());
                next.failures += 1;
                next.retry_at = Some(now + delay);
                let message = format!(
                    "cannot apply version {version:?} now (attempt {}): {}; retrying in {delay:.1?}",
                    next.failures,
                    error_chain(&err)
                );
                log::error!("{message}");
                if let Some(nonce) = &next.nonce {
                    let kept = &self.memory.status.applied_version;
                    answer(nonce, kept, Answer::Retrying(message.clone()));
                }
                self.memory.status.retrying_version = version.to_owned();
                self.memory.status.retries = u64::from(next.failures);
                self.record_error(message);
            }
        }
        self.pending = Some(next);
    }

    /// Records a successful swap of `snapshot`.
    fn applied(&mut self, snapshot: Snapshot, applied: Applied, took: Duration) {
        let version = snapshot.version().to_owned();
        let status = &mut self.memory.status;
        status.swaps += 1;
        status.applied_version = version.clone();
        status.applied_at = Some(SystemTime::now());
        status.sets = applied.sets;
        status.destinations = applied.destinations;
        status.retrying_version.clear();
        status.retries = 0;
        // With the swap's duration: the stock loader is quadratic in a set
        // of equal priorities, so big sets are slow to swap.
        log::info!(
            "applied version {version:?}: {} sets, {} destinations in {took:.1?} (swap {})",
            status.sets.len(),
            status.destinations,
            status.swaps
        );
        if !applied.dropped.is_empty() {
            let dropped: Vec<String> = applied
                .dropped
                .iter()
                .map(|(set, uri)| format!("{set} {uri}"))
                .collect();
            let message = format!(
                "the dispatcher did not load {} destination(s) of version {version:?} (see its log): {}",
                dropped.len(),
                dropped.join(", ")
            );
            log::warn!("{message}");
            self.record_error(message);
        }
        if let Some(path) = &self.list_file
            && let Err(err) = listfile::write_atomic(path, &version, &applied.list_file)
        {
            let message = format!("cannot sync {}: {err}", path.display());
            log::error!("{message}");
            self.record_error(message);
        }
        self.memory.applied = Some(snapshot);
        self.publish();
    }

    fn clear_retry(&mut self) {
        self.memory.status.retrying_version.clear();
        self.memory.status.retries = 0;
        self.publish();
    }

    fn record_error(&mut self, message: String) {
        self.memory.status.last_error = message;
        self.memory.status.last_error_at = Some(SystemTime::now());
        self.publish();
    }

    fn publish(&mut self) {
        self.memory.status.state = self.reconnect.state();
        self.sink.publish(&self.memory.status);
    }
}
