//! A mirror of the objects one list+watch selects, kept through every kind
//! of trouble the API server can cause.
//!
//! `kube::runtime::watcher` does the list, the paging, the watch, resuming
//! from the last resourceVersion or bookmark, and the relist after an `ERROR`
//! 410 event. On top of it the mirror:
//! - builds a relist into a fresh map and swaps it in whole at `InitDone`,
//!   so a relist shows up as one change, or as none when nothing changed;
//! - restarts the watcher (so it relists) when a watch is refused with an
//!   HTTP 410: kube-runtime 5.0 would retry the same expired
//!   resourceVersion forever;
//! - waits with a backoff after every error, reset by the next success;
//! - sends nothing on an error: the last good map stays what it sent.

use std::collections::BTreeMap;
use std::fmt::Debug;

use futures::StreamExt as _;
use kube::Resource;
use kube::api::Api;
use kube::runtime::watcher::{self, Event};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use dsfeed_model::Backoff;

use crate::metrics::SourceMetrics;

/// What one list+watch follows.
pub struct Mirror<K: Resource> {
    pub api: Api<K>,
    pub config: watcher::Config,
    /// Names the mirror in logs, such as `voice/asterisk endpointslices`.
    pub label: String,
    pub backoff: Backoff,
    /// Whether the source can do without these objects, which decides
    /// what a 403 means.
    pub need: Need,
    /// Where its errors are counted: the source's own label.
    pub metrics: SourceMetrics,
}

/// Whether a source can do without a mirror's objects: that decides what
/// an HTTP 403 (no RBAC to read them) means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// The source cannot work without them: a 403 is an error, counted and
    /// retried, and the last sets stay.
    Required,
    /// The source goes on without them (Service annotations): a 403 before
    /// the first list counts as "synced, nothing there", with a warning.
    Optional,
}

/// How the mirror reports: each time its objects change, all of them.
pub type Report<K> = Box<dyn Fn(Vec<K>) -> super::Update + Send>;

impl<K> Mirror<K>
where
    K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Default,
{
    /// Runs until `tx` closes.
    pub async fn run(self, tx: mpsc::Sender<super::Update>, report: Report<K>) {
        let mut delays = self.backoff.iter();
        let mut objects: Option<BTreeMap<String, K>> = None;
        let mut forbidden_reported = false;
        loop {
            let mut stream = watcher::watcher(self.api.clone(), self.config.clone()).boxed();
            let mut relist: Option<BTreeMap<String, K>> = None;
            while let Some(item) = stream.next().await {
                let changed = match item {
                    Ok(Event::Init) => {
                        relist = Some(BTreeMap::new());
                        false
                    }
                    Ok(Event::InitApply(object)) => {
                        relist
                            .get_or_insert_default()
                            .insert(name_of(&object), object);
                        false
                    }
                    Ok(Event::InitDone) => {
                        delays = self.backoff.iter();
                        let fresh = relist.take().unwrap_or_default();
                        tracing::debug!(mirror = %self.label, objects = fresh.len(), "listed");
                        objects = Some(fresh);
                        true
                    }
                    Ok(Event::Apply(object)) => {
                        delays = self.backoff.iter();
                        objects
                            .get_or_insert_default()
                            .insert(name_of(&object), object);
                        true
                    }
                    Ok(Event::Delete(object)) => {
                        delays = self.backoff.iter();
                        objects.get_or_insert_default().remove(&name_of(&object));
                        true
                    }
                    Err(err) => {
                        let fault = Fault::of(&err);
                        if fault == Fault::Forbidden
                            && self.need == Need::Optional
                            && objects.is_none()
                        {
                            if !forbidden_reported {
                                tracing::warn!(mirror = %self.label, error = %err,
                                    "forbidden; going on without it (grant get, list, watch to use it)");
                                forbidden_reported = true;
                                if tx.send(report(Vec::new())).await.is_err() {
                                    return;
                                }
                            }
                        } else if matches!(fault, Fault::Gone | Fault::GoneAtStart) {
                            tracing::info!(mirror = %self.label, error = %err,
                                "resourceVersion expired; listing again");
                        } else if fault == Fault::Forbidden {
                            tracing::error!(mirror = %self.label, error = %err,
                                "forbidden: the feeder's ServiceAccount needs get, list and watch here; keeping the last sets");
                            self.metrics
                                .failure("forbidden", format_args!("{}: {err}", self.label));
                        } else {
                            tracing::warn!(mirror = %self.label, error = %err,
                                "watch failed; keeping the last sets and retrying");
                            self.metrics
                                .failure("watch", format_args!("{}: {err}", self.label));
                        }
                        tokio::time::sleep(delays.next().unwrap_or_default()).await;
                        if fault == Fault::GoneAtStart {
                            break;
                        }
                        false
                    }
                };
                if changed
                    && let Some(objects) = &objects
                    && tx
                        .send(report(objects.values().cloned().collect()))
                        .await
                        .is_err()
                {
                    return;
                }
            }
            tracing::info!(mirror = %self.label, "restarting the watch with a fresh list");
        }
    }
}

/// The errors the mirror treats differently, decided here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A watch refused with HTTP 410: only a fresh list can recover.
    GoneAtStart,
    /// An `ERROR` 410 event: routine, the watcher lists again by itself.
    Gone,
    Forbidden,
    /// Anything else: the watcher retries by itself.
    Other,
}

impl Fault {
    fn of(err: &watcher::Error) -> Fault {
        let status = match err {
            watcher::Error::InitialListFailed(kube::Error::Api(s))
            | watcher::Error::WatchStartFailed(kube::Error::Api(s))
            | watcher::Error::WatchFailed(kube::Error::Api(s)) => s.as_ref(),
            watcher::Error::WatchError(s) => s.as_ref(),
            _ => return Fault::Other,
        };
        match (err, status.code) {
            (watcher::Error::WatchStartFailed(_), 410) => Fault::GoneAtStart,
            (_, 410) => Fault::Gone,
            (_, 403) => Fault::Forbidden,
            _ => Fault::Other,
        }
    }
}

fn name_of<K: Resource>(object: &K) -> String {
    object.meta().name.clone().unwrap_or_default()
}
