//! The feed process: holds the gRPC stream to the feeder and applies what it
//! sends, forever.
//!
//! Reconnection is its own small state machine (`reconnect`); every stream
//! starts with a hello carrying the version already applied, so the
//! feeder's first response is always a full state (or nothing, when nothing
//! changed). Every response is answered:
//! ACK once swapped in, NACK when invalid or refused (the previous sets
//! stay), and a NACK naming the newer version when a burst superseded it
//! before its turn. A lost feeder changes nothing in the dispatcher; a list
//! replaced behind the module's back (`dispatcher.reload`) gets the last
//! applied snapshot back, one paced swap later.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use dsfeed_proto::v1 as pb;
use dsfeed_proto::v1::feed_client::FeedClient;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::config::Config;
use crate::engine::{Dispatcher, Engine};
use crate::error::{ApplyError, SessionError};
use crate::pacing::Pacer;
use crate::reconnect::Reconnect;
use crate::snapshot::Snapshot;
use crate::status::{Status, StatusSink};
use crate::{listfile, pb as convert, transport};

/// How often the process runs its housekeeping turn (`cfg_update`).
const TURN: Duration = Duration::from_secs(1);
/// Pause before rebuilding the feed after a panic.
const PANIC_PAUSE: Duration = Duration::from_secs(5);

/// What the feed needs from the Kamailio process it runs in.
pub trait Host {
    /// Called at the top of every turn: Kamailio's `cfg_update()`.
    fn turn(&mut self);
}

/// Runs the feed in this (dedicated, forked) process and never returns: a
/// panic is logged and the feed starts over, because returning would hand
/// control back to Kamailio's main-process code in a child.
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
    loop {
        let (dispatcher, sink, host) = parts();
        let feed = Feed::new(config.clone(), user_agent.clone(), dispatcher, sink, host)
            .sync_list_file(list_file.clone());
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| runtime.block_on(feed.run())));
        if outcome.is_err() {
            log::error!("the feed loop panicked; starting it over in {PANIC_PAUSE:?}");
            std::thread::sleep(PANIC_PAUSE);
        }
    }
}

/// A snapshot waiting for its turn to be swapped in.
struct Pending {
    /// The response to answer once done; `None` when re-applying the last
    /// snapshot after a foreign swap.
    nonce: Option<String>,
    snapshot: Snapshot,
}

/// Where answers go: the current stream's request channel, if connected.
type Answers<'a> = Option<&'a mpsc::UnboundedSender<pb::FeedRequest>>;

pub struct Feed<D, S, H> {
    config: Config,
    user_agent: String,
    dispatcher: D,
    sink: S,
    host: H,
    engine: Engine,
    pacer: Pacer,
    status: Status,
    /// The dispatcher's list file, when `list_file_sync` is on.
    list_file: Option<PathBuf>,
    reconnect: Reconnect,
    /// The next snapshot to swap in, when its turn comes.
    pending: Option<Pending>,
    /// The snapshot the last swap applied.
    applied: Option<Snapshot>,
}

impl<D: Dispatcher, S: StatusSink, H: Host> Feed<D, S, H> {
    pub fn new(config: Config, user_agent: String, dispatcher: D, sink: S, host: H) -> Self {
        let pacer = Pacer::new(config.min_swap_interval);
        let reconnect = Reconnect::new(config.backoff);
        Feed {
            config,
            user_agent,
            dispatcher,
            sink,
            host,
            engine: Engine::new(),
            pacer,
            status: Status::default(),
            list_file: None,
            reconnect,
            pending: None,
            applied: None,
        }
    }

    /// Writes each applied list to `path` too (the dispatcher's own
    /// `list_file`), so a cold start with the feeder down starts from the
    /// last known sets.
    pub fn sync_list_file(mut self, path: Option<PathBuf>) -> Self {
        self.list_file = path;
        self
    }

    pub async fn run(mut self) -> std::convert::Infallible {
        crate::testhook::maybe_panic("feed");
        loop {
            self.host.turn();
            self.reconnect.connecting();
            self.publish();
            let Err(error) = self.stream().await;
            let delay = self.reconnect.ended(&error, Instant::now(), rand::random());
            log::warn!(
                "feeder {}: {}; reconnecting in {delay:?}",
                self.config.feeder,
                error_chain(&error)
            );
            self.record_error(format!(
                "feeder {}: {}",
                self.config.feeder,
                error_chain(&error)
            ));
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

    /// When the pending snapshot may be swapped in, if there is one.
    fn swap_at(&self) -> Option<Instant> {
        self.pending
            .as_ref()
            .map(|_| self.pacer.next_swap_at(Instant::now()))
    }

    /// The housekeeping turn: Kamailio's `cfg_update`, and a check that the
    /// dispatcher's list is still the one the module installed.
    fn turn(&mut self) {
        self.host.turn();
        if self.pending.is_none() && self.engine.foreign_swap(&self.dispatcher) {
            self.foreign_swap();
            if let Some(snapshot) = self.applied.clone() {
                self.pending = Some(Pending {
                    nonce: None,
                    snapshot,
                });
            }
        }
    }

    /// Something else swapped the list: it may have freed a list a reader
    /// held, and the next swap must wait a full interval from now.
    fn foreign_swap(&mut self) {
        log::warn!(
            "the dispatcher list was replaced by something else (dispatcher.reload?): dsfeed must \
             be its only writer, since two writers can free a list under a reader; re-applying \
             version {:?} in {:?}",
            self.status.applied_version,
            self.config.min_swap_interval
        );
        self.engine.adopt(&self.dispatcher);
        self.pacer.swapped(Instant::now());
    }

    /// One stream, until it fails.
    async fn stream(&mut self) -> Result<std::convert::Infallible, SessionError> {
        let bearer = transport::bearer(self.config.token.as_ref())?;
        let channel = transport::connect(&self.config).await?;
        let mut client =
            FeedClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
                if let Some(bearer) = &bearer {
                    request
                        .metadata_mut()
                        .insert("authorization", bearer.clone());
                }
                Ok(request)
            });
        let (answers, outbound) = mpsc::unbounded_channel();
        let hello = convert::hello(
            &self.config.node_id,
            &self.user_agent,
            &self.config.sets,
            &self.status.applied_version,
        );
        // The receiver is alive right here, so this cannot fail.
        let _ = answers.send(hello);
        let mut inbound = client
            .stream(UnboundedReceiverStream::new(outbound))
            .await
            .map_err(SessionError::Refused)?
            .into_inner();
        self.status.connects += 1;
        self.reconnect.connected(Instant::now());
        self.publish();
        log::info!(
            "connected to feeder {} as node {:?} (applied version {:?})",
            self.config.feeder,
            self.config.node_id,
            self.status.applied_version
        );

        let mut turn = tokio::time::interval(TURN);
        let result = loop {
            let swap_at = self.swap_at();
            tokio::select! {
                // Read first: a newer snapshot supersedes the pending one.
                biased;
                message = inbound.message() => {
                    let response = match message {
                        Ok(Some(response)) => response,
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
        }
        Err(result)
    }

    fn receive(
        &mut self,
        response: pb::FeedResponse,
        answers: &mpsc::UnboundedSender<pb::FeedRequest>,
    ) {
        let answer = |request| {
            // A closed stream surfaces on the next read.
            let _ = answers.send(request);
        };
        let snapshot = match convert::snapshot(&response, &self.config.sets) {
            Ok(snapshot) => snapshot,
            Err(err) => {
                let message = format!("invalid snapshot {:?}: {err}", response.version_info);
                log::error!(
                    "{message}; keeping version {:?}",
                    self.status.applied_version
                );
                answer(convert::answer(
                    &response.nonce,
                    &self.status.applied_version,
                    Some(message.clone()),
                ));
                self.status.nacks += 1;
                self.record_error(message);
                return;
            }
        };
        let unchanged = snapshot.version == self.status.applied_version
            && !self.engine.foreign_swap(&self.dispatcher);
        let superseded = if unchanged {
            answer(convert::answer(&response.nonce, &snapshot.version, None));
            self.pending.take()
        } else {
            self.pending.replace(Pending {
                nonce: Some(response.nonce),
                snapshot,
            })
        };
        if let Some(Pending {
            nonce: Some(nonce),
            snapshot: old,
        }) = superseded
        {
            let newer = &response.version_info;
            log::debug!(
                "version {:?} superseded by {newer:?} before its swap",
                old.version
            );
            answer(convert::answer(
                &nonce,
                &self.status.applied_version,
                Some(format!(
                    "superseded by version {newer:?} before it was applied"
                )),
            ));
        }
    }

    /// Swaps the pending snapshot in (or puts it back to retry), and
    /// answers its response if it has one.
    fn swap(&mut self, answers: Answers<'_>) {
        let Some(next) = self.pending.take() else {
            return;
        };
        self.host.turn();
        if self.engine.foreign_swap(&self.dispatcher) {
            self.foreign_swap();
            self.pending = Some(next);
            return;
        }
        let answer = |request| {
            if let Some(answers) = answers {
                // A closed stream surfaces on the next read.
                let _ = answers.send(request);
            }
        };
        let version = next.snapshot.version.clone();
        let started = Instant::now();
        let outcome = self.engine.apply(&mut self.dispatcher, &next.snapshot);
        // Paced from the end of the load: the new list becomes current (and
        // the old one starts being retired) only when the load finishes,
        // which takes a while for big sets.
        let now = Instant::now();
        match outcome {
            Ok(applied) => {
                self.pacer.swapped(now);
                self.status.swaps += 1;
                self.status.applied_version = version.clone();
                self.status.applied_at = Some(SystemTime::now());
                self.status.sets = applied.sets;
                self.status.destinations = applied.destinations;
                if let Some(nonce) = &next.nonce {
                    answer(convert::answer(nonce, &version, None));
                }
                // With the swap's duration: the stock loader is quadratic in
                // a set of equal priorities, so big sets are slow to swap.
                log::info!(
                    "applied version {version:?}: {} sets, {} destinations in {:.1?} (swap {})",
                    self.status.sets.len(),
                    self.status.destinations,
                    now - started,
                    self.status.swaps
                );
                if !applied.dropped.is_empty() {
                    let dropped: Vec<String> = applied
                        .dropped
                        .iter()
                        .map(|(set, uri)| format!("{set} {uri}"))
                        .collect();
                    self.record_error(format!(
                        "the dispatcher did not load {} destination(s) of version {version:?} (see its log): {}",
                        dropped.len(),
                        dropped.join(", ")
                    ));
                    log::warn!("{}", self.status.last_error);
                }
                if let Some(path) = &self.list_file
                    && let Err(err) = listfile::write_atomic(path, &version, &applied.list_file)
                {
                    let message = format!("cannot sync {}: {err}", path.display());
                    log::error!("{message}");
                    self.record_error(message);
                }
                self.applied = Some(next.snapshot);
                self.publish();
            }
            Err(ApplyError::Skipped) => {
                log::warn!("{}", ApplyError::Skipped);
                self.pacer.swapped(now);
                self.pending = Some(next);
            }
            Err(err) => {
                if matches!(err, ApplyError::Refused) {
                    // A refused load still freed the list the last swap retired.
                    self.pacer.swapped(now);
                }
                let message = format!("cannot apply version {version:?}: {}", error_chain(&err));
                log::error!("{message}");
                if let Some(nonce) = &next.nonce {
                    answer(convert::answer(
                        nonce,
                        &self.status.applied_version,
                        Some(message.clone()),
                    ));
                    self.status.nacks += 1;
                }
                self.record_error(message);
            }
        }
    }

    fn record_error(&mut self, message: String) {
        self.status.last_error = message;
        self.status.last_error_at = Some(SystemTime::now());
        self.publish();
    }

    fn publish(&mut self) {
        self.status.state = self.reconnect.state();
        self.sink.publish(&self.status);
    }
}

/// An error and its causes on one line, for logs and NACKs.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        // Some errors (tonic's transport error) already print their cause.
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
