//! `--set [NAMESPACE:]SERVICE=ID[:PORT]`: sets fed by Kubernetes Services.
//!
//! For each Service named by a `--set`, the source follows two list+watches
//! in the Service's namespace, never across the cluster:
//! - EndpointSlices labelled `kubernetes.io/service-name=SERVICE` (all of
//!   them: a Service may have several), which give the destinations;
//! - the Service itself (`fieldSelector=metadata.name=SERVICE`), whose
//!   `dsfeed.io/*` annotations give set-wide flags, priority, attrs and
//!   per-endpoint weights (see [`endpoints`]). Without RBAC for Services the
//!   source warns and goes on with the `--set` flags alone.
//!
//! It publishes the whole view of its sets once every watch has listed, then
//! again only when a set's content really changes. Watch errors, dropped
//! connections, an API server that is down, 410 Gone and relists publish
//! nothing unless the data they bring differ (see its `mirror` module): a set empties
//! only when its Service really has no endpoints, and with
//! `--min-endpoints N` a set that had N destinations keeps them while it
//! has fewer.

pub mod endpoints;
mod mirror;
mod spec;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use tokio::sync::mpsc;

pub use endpoints::{ATTRS_ANNOTATION, FLAGS_ANNOTATION, PRIORITY_ANNOTATION, WEIGHTS_ANNOTATION};
pub use spec::{DomainSet, Port, RtpengineSet, ServiceSet};

use mirror::Need;

use crate::error::Error;
use crate::metrics::SourceMetrics;
use crate::sources::lists::Feeds;
use crate::sources::{Publisher, Source, SourceFuture};
use dsfeed_model::Backoff;
use dsfeed_model::{SetId, SetMap};

/// The label the EndpointSlice controller puts on every slice of a Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The namespace used when neither `--set` nor `POD_NAMESPACE` names one.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Where the source finds the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// `--kubecfg PATH`.
    Kubeconfig(PathBuf),
    /// The in-cluster ServiceAccount, else `KUBECONFIG` (or `~/.kube/config`).
    Infer,
}

/// Follows the Services named by `--set` flags.
#[derive(Debug)]
pub struct KubernetesSource {
    name: String,
    feeds: Feeds,
    sets: Vec<ServiceSet>,
    connection: Connection,
    min_endpoints: usize,
    backoff: Backoff,
}

impl KubernetesSource {
    /// A source for `sets`, where a set naming no namespace uses
    /// `default_namespace` (from `POD_NAMESPACE`, else [`DEFAULT_NAMESPACE`]).
    pub fn new(
        sets: &[ServiceSet],
        default_namespace: &str,
        connection: Connection,
        min_endpoints: usize,
    ) -> Self {
        let sets = sets
            .iter()
            .map(|set| ServiceSet {
                namespace: Some(set.namespace_or(default_namespace).to_owned()),
                ..set.clone()
            })
            .collect();
        KubernetesSource {
            name: "kubernetes".into(),
            feeds: Feeds::Dispatcher,
            sets,
            connection,
            min_endpoints,
            backoff: super::RETRY,
        }
    }

    /// Feeds rtpengine sets instead of dispatcher sets (`--rtpengine-set`):
    /// the same Services, endpoints and conditions, as relays.
    pub fn rtpengine(mut self) -> Self {
        self.feeds = Feeds::Rtpengine;
        self.name = "kubernetes rtpengine".into();
        self
    }

    /// Feeds SIP domains under `did` instead of dispatcher sets
    /// (`--domain-set`): each endpoint's address is a domain.
    pub fn domains(mut self, did: String) -> Self {
        self.name = format!("kubernetes domains {did}").trim_end().to_owned();
        self.feeds = Feeds::Domain(did);
        self
    }

    /// Replaces the retry backoff (500 ms doubling to 30 s, half jittered,
    /// by default).
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

impl Source for KubernetesSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, out: Publisher) -> SourceFuture {
        Box::pin(async move {
            let client = client(&self.connection).await?;
            self.follow(client, out).await;
            Ok(())
        })
    }
}

/// A Service the source follows, identified by namespace and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ServiceKey {
    namespace: String,
    name: String,
}

/// What a mirror reports about one followed Service.
#[derive(Debug)]
pub(crate) struct Update {
    service: usize,
    part: Part,
}

#[derive(Debug)]
enum Part {
    Slices(Vec<EndpointSlice>),
    /// The Service object: empty when it does not exist or cannot be read.
    Service(Vec<Service>),
}

/// The last state each mirror of one Service reported; `None` until it has
/// listed once.
#[derive(Debug, Default)]
struct Followed {
    slices: Option<Vec<EndpointSlice>>,
    service: Option<Vec<Service>>,
}

impl KubernetesSource {
    async fn follow(self, client: kube::Client, out: Publisher) {
        let mut keys: Vec<ServiceKey> = self
            .sets
            .iter()
            .map(|set| ServiceKey {
                namespace: set.namespace.clone().unwrap_or_default(),
                name: set.service.clone(),
            })
            .collect();
        keys.sort();
        keys.dedup();

        let (tx, mut rx) = mpsc::channel(64);
        let mut mirrors = Mirrors {
            client,
            backoff: self.backoff,
            metrics: out.metrics().clone(),
            tx,
            tasks: tokio::task::JoinSet::new(),
        };
        for (index, key) in keys.iter().enumerate() {
            let slices =
                watcher::Config::default().labels(&format!("{SERVICE_NAME_LABEL}={}", key.name));
            mirrors.start(
                index,
                key,
                "endpointslices",
                slices,
                Need::Required,
                Part::Slices,
            );
            let service = watcher::Config::default().fields(&format!("metadata.name={}", key.name));
            mirrors.start(
                index,
                key,
                "service",
                service,
                Need::Optional,
                Part::Service,
            );
        }
        // The mirrors' tasks hold the only senders now: the loop ends with
        // them.
        drop(mirrors.tx);

        let mut followed: Vec<Followed> = keys.iter().map(|_| Followed::default()).collect();
        let mut guard = Guard::new(self.min_endpoints);
        let mut published: Option<SetMap> = None;
        while let Some(update) = rx.recv().await {
            store(&mut followed, update);
            // Coalesce a burst (a relist of many slices, a rollout).
            while let Ok(update) = rx.try_recv() {
                store(&mut followed, update);
            }
            let Some(sets) = self.sets_of(&keys, &followed) else {
                continue;
            };
            let sets = guard.apply(sets);
            if published.as_ref() != Some(&sets) {
                tracing::info!(
                    sets = sets.len(),
                    destinations = sets.values().map(Vec::len).sum::<usize>(),
                    "kubernetes {} changed",
                    self.feeds.noun()
                );
                let (view, lists) = self.feeds.view(sets.clone(), |problem| {
                    tracing::warn!("endpoint dropped: {problem}");
                });
                out.publish_view(view, Default::default(), lists).await;
                published = Some(sets);
            }
        }
    }

    /// Every set's destinations, or `None` while a mirror has not listed.
    fn sets_of(&self, keys: &[ServiceKey], followed: &[Followed]) -> Option<SetMap> {
        let mut sets = SetMap::new();
        for set in &self.sets {
            let key = ServiceKey {
                namespace: set.namespace.clone().unwrap_or_default(),
                name: set.service.clone(),
            };
            let index = keys
                .binary_search(&key)
                .expect("every set's Service is followed");
            let state = &followed[index];
            let dests = endpoints::destinations(
                set,
                state.service.as_ref()?.first(),
                state.slices.as_ref()?,
            );
            sets.entry(set.id).or_default().extend(dests);
        }
        for dests in sets.values_mut() {
            dests.sort_by(|a, b| a.uri().cmp(b.uri()).then(a.flags().cmp(&b.flags())));
            dests.dedup_by(|a, b| a.uri() == b.uri());
        }
        Some(sets)
    }
}

/// The list+watches of one source, each on its own task, all reporting to
/// one channel.
struct Mirrors {
    client: kube::Client,
    backoff: Backoff,
    metrics: SourceMetrics,
    tx: mpsc::Sender<Update>,
    tasks: tokio::task::JoinSet<()>,
}

impl Mirrors {
    /// Starts mirroring the `K` objects `config` selects in the namespace
    /// of Service `index` (`key`), reported as `part`. `what` names them in
    /// logs; `need` says whether a 403 is an error or means "none".
    fn start<K>(
        &mut self,
        index: usize,
        key: &ServiceKey,
        what: &str,
        config: watcher::Config,
        need: Need,
        part: fn(Vec<K>) -> Part,
    ) where
        K: kube::Resource<Scope = kube::core::NamespaceResourceScope>
            + Clone
            + std::fmt::Debug
            + serde::de::DeserializeOwned
            + Send
            + Sync
            + 'static,
        K::DynamicType: Default,
    {
        let mirror = mirror::Mirror {
            api: Api::<K>::namespaced(self.client.clone(), &key.namespace),
            config,
            label: format!("{}/{} {what}", key.namespace, key.name),
            backoff: self.backoff,
            need,
            metrics: self.metrics.clone(),
        };
        let report = Box::new(move |objects| Update {
            service: index,
            part: part(objects),
        });
        self.tasks.spawn(mirror.run(self.tx.clone(), report));
    }
}

fn store(followed: &mut [Followed], update: Update) {
    let state = &mut followed[update.service];
    match update.part {
        Part::Slices(slices) => state.slices = Some(slices),
        Part::Service(service) => state.service = Some(service),
    }
}

/// `--min-endpoints N`: a set that has had at least N destinations keeps
/// its last such view while the truth has fewer, so a misbehaving cluster
/// cannot drain it. Off when N is 0.
#[derive(Debug)]
struct Guard {
    min: usize,
    held: BTreeMap<SetId, Vec<dsfeed_model::Destination>>,
}

impl Guard {
    fn new(min: usize) -> Self {
        Guard {
            min,
            held: BTreeMap::new(),
        }
    }

    fn apply(&mut self, mut sets: SetMap) -> SetMap {
        if self.min == 0 {
            return sets;
        }
        for (id, dests) in &mut sets {
            if dests.len() >= self.min {
                self.held.insert(*id, dests.clone());
            } else if let Some(held) = self.held.get(id) {
                tracing::warn!(
                    set = id,
                    have = dests.len(),
                    keeping = held.len(),
                    "set has fewer than --min-endpoints destinations; keeping its last view"
                );
                dests.clone_from(held);
            }
        }
        sets
    }
}

/// Builds the API client from `--kubecfg`, else the in-cluster
/// ServiceAccount, else `KUBECONFIG` / `~/.kube/config`.
async fn client(connection: &Connection) -> Result<kube::Client, Error> {
    let options = KubeConfigOptions::default();
    let config = match connection {
        Connection::Kubeconfig(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|e| Error::KubeConfig {
                reason: format!("cannot read kubeconfig {}", path.display()),
                source: Box::new(e),
            })?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &options)
                .await
                .map_err(|e| Error::KubeConfig {
                    reason: format!("kubeconfig {} is unusable", path.display()),
                    source: Box::new(e),
                })?
        }
        Connection::Infer => match kube::Config::incluster() {
            Ok(config) => config,
            Err(in_cluster) => kube::Config::from_kubeconfig(&options)
                .await
                .map_err(|e| Error::KubeConfig {
                    reason: format!(
                        "not in a cluster ({in_cluster}) and no usable KUBECONFIG or ~/.kube/config; give --kubecfg PATH"
                    ),
                    source: Box::new(e),
                })?,
        },
    };
    tracing::info!(server = %config.cluster_url, "connecting to Kubernetes");
    kube::Client::try_from(config).map_err(Error::KubeClient)
}
