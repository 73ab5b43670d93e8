//! `--consul-service NAME=ID[:PORT][,OPTION...]`: Consul services as sets,
//! followed with blocking queries on `/v1/health/service/NAME`. This replaces
//! the consul-template + `kamcmd dispatcher.reload` setup (Wazo's) and fixes
//! its weak spots: an agent that restarts and answers empty for a moment no
//! longer blanks a set, and errors are retried forever instead of ending the
//! process.
//!
//! ```text
//! dsfeed --consul-service asterisk=1 \
//!        --consul-service 'asterisk=2:5080,tag=primary,dc=dc2,health=warning' \
//!        --consul-attr weight=Weights.Passing --consul-attr duid=ID
//! ```
//!
//! - Each service is watched on its own: the first query reads at once,
//!   later ones pass `index` and `wait` and Consul answers when the index
//!   moves or the wait runs out. Queries start at most once per
//!   [`MIN_INTERVAL`], the rate limit Consul asks blocking clients to keep.
//! - Healthy means every check passing (`passing=true`); `health=warning`
//!   also keeps instances whose checks warn, and drops critical ones here.
//! - The address is the service's, else its node's; the port is the one in
//!   the flag, else the service's. Attrs come only from `--consul-attr`, and
//!   hostile values are rejected (see [`instances`]).
//! - Index rules: an index that goes backwards (a restarted or restored
//!   server) restarts at 0, a full read; an index of 0 or a missing
//!   `X-Consul-Index` becomes 1, so the next query still blocks.
//! - An error (refused connection, timeout, 5xx, bad JSON, 403) is logged and
//!   retried with jittered backoff; the set keeps its last instances. A
//!   service that never answered holds back the first snapshot, so Kamailio
//!   never sees it empty by mistake.
//! - A set whose instances all vanish keeps them for `--consul-empty-grace`
//!   (30s by default); a non-empty answer within it ends the wait, and an
//!   empty one after it empties the set (see [`crate::sources::hold`]). A first answer that
//!   is empty is held the same way: the set is published as *held*, so the
//!   other sets go ahead and Kamailio keeps what it has for this one.
//! - An answer from which Consul's ACLs filtered instances
//!   (`X-Consul-Results-Filtered-By-ACLs`) is an error, never the truth: the
//!   set keeps its last instances (or is held, before any).
//! - With `--consul-register`, this Kamailio is registered in Consul too
//!   (see [`Registration`]).
//! - Settings follow Consul's tools: `CONSUL_HTTP_ADDR`, `CONSUL_HTTP_TOKEN`,
//!   `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_HTTP_SSL`, `CONSUL_CACERT`,
//!   `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::Error;
use crate::sources::lists::Feeds;
use crate::sources::{Publisher, Source, SourceFuture};
use dsfeed_model::{Destination, SetMap};

mod addr;
mod args;
mod attrs;
mod client;
mod error;
pub mod instances;
mod register;
mod spec;

pub use addr::ConsulAddr;
pub use args::{ConsulArgs, EnvToken};
pub use attrs::{AttrMapping, Field};
pub use client::{ConsulClient, Reply};
pub use error::ConsulError;
pub use register::Registration;
pub use spec::{DomainSpec, Health, RegisterSpec, RtpengineSpec, ServiceSpec};

use crate::sources::hold::{Guard, Guarded, Wording};

/// The shortest time between the starts of two queries for one service.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// How the empty-answer guard words the logs of a Consul service.
const WORDING: Wording = Wording {
    changed: "Consul instances changed",
    holding: "Consul reports no healthy instance; keeping the last ones until the grace runs out, in case the agent is restarting",
    emptied: "Consul still reports no healthy instance after the grace; emptying the set",
};

/// One source per `--consul-service`, `--consul-rtpengine` and
/// `--consul-domain`, sharing one client. Fails when a file the flags name
/// (token, CA, client certificate) is unusable.
pub fn sources(args: &ConsulArgs) -> Result<Vec<Box<dyn Source>>, ConsulError> {
    if !args.follows_any() {
        return Ok(Vec::new());
    }
    let client = ConsulClient::new(args)?;
    let attrs: Arc<[AttrMapping]> = args.attrs.clone().into();
    let followed = args
        .services
        .iter()
        .map(|spec| (spec, Feeds::Dispatcher))
        .chain(
            args.rtpengine
                .iter()
                .map(|r| (&r.service, Feeds::Rtpengine)),
        )
        .chain(
            args.domains
                .iter()
                .map(|d| (&d.service, Feeds::Domain(d.did.clone()))),
        );
    Ok(followed
        .map(|(spec, feeds)| {
            let name = match feeds {
                Feeds::Dispatcher => format!("consul {spec}"),
                _ => format!("consul {} {spec}", feeds.noun()),
            };
            Box::new(ConsulSource {
                name,
                spec: spec.clone(),
                feeds,
                client: client.clone(),
                attrs: attrs.clone(),
                wait: args.wait,
                grace: args.empty_grace,
            }) as Box<dyn Source>
        })
        .collect())
}

/// Follows one Consul service and publishes it as one set (dispatcher or
/// rtpengine) or as the domains of one did.
pub struct ConsulSource {
    name: String,
    spec: ServiceSpec,
    feeds: Feeds,
    client: ConsulClient,
    attrs: Arc<[AttrMapping]>,
    wait: Duration,
    grace: Duration,
}

impl Source for ConsulSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, out: Publisher) -> SourceFuture {
        Box::pin(self.watch(out))
    }
}

impl ConsulSource {
    /// Queries forever; no Consul error is fatal, since the set's last
    /// instances are the best truth there is until Consul answers again.
    async fn watch(self: Box<Self>, out: Publisher) -> Result<(), Error> {
        let mut guard = Guard::new(self.grace, self.spec.set, WORDING);
        let mut index = 0;
        let mut warned_no_index = false;
        let mut last_start: Option<Instant> = None;
        loop {
            if let Some(start) = last_start {
                let pause = tokio::time::sleep_until(start + MIN_INTERVAL);
                guard.meanwhile(&*self, &out, pause).await;
            }
            last_start = Some(Instant::now());
            let query = self.client.health_service(&self.spec, index, self.wait);
            let reply = match guard.meanwhile(&*self, &out, query).await {
                Ok(reply) => reply,
                Err(err) => {
                    guard
                        .failed(&*self, &out, "Consul query failed", err.label(), &err)
                        .await;
                    continue;
                }
            };
            if reply.index.is_none() && !warned_no_index {
                tracing::warn!(
                    source = out.metrics().name(),
                    "Consul's answer has no X-Consul-Index; polling every {MIN_INTERVAL:?} instead of blocking"
                );
            }
            warned_no_index = reply.index.is_none();
            let next = next_index(index, reply.index);
            if next == 0 {
                tracing::info!(
                    source = out.metrics().name(),
                    from = index,
                    to = reply.index,
                    "Consul's index went backwards; reading the service again"
                );
            }
            index = next;

            if reply.filtered_by_acls {
                // Instances hidden by ACLs are not gone: never publish this.
                let err = ConsulError::FilteredByAcls;
                guard.announce_held(&*self, &out).await;
                guard
                    .failed(&*self, &out, "Consul answer not used", err.label(), &err)
                    .await;
                continue;
            }

            let converted = instances::convert(&self.spec, &self.attrs, &reply.entries);
            guard
                .answer(&*self, &out, converted.destinations, converted.problems)
                .await;
        }
    }
}

impl Guarded for ConsulSource {
    /// Publishes `dests` as the list this service feeds.
    async fn publish(&self, out: &Publisher, dests: Vec<Destination>) {
        let sets = SetMap::from([(self.spec.set, dests)]);
        let (sets, lists) = self.feeds.view(sets, |problem| {
            tracing::warn!(source = out.metrics().name(), "instance dropped: {problem}");
        });
        out.publish_view(sets, BTreeSet::new(), lists).await;
    }

    /// Publishes this service's set (or did) as held.
    async fn publish_held(&self, out: &Publisher) {
        let (held, lists) = self.feeds.held(BTreeSet::from([self.spec.set]));
        out.publish_view(SetMap::new(), held, lists).await;
    }
}

/// The index for the next query, by Consul's blocking-query rules.
fn next_index(sent: u64, got: Option<u64>) -> u64 {
    match got {
        None | Some(0) => 1,
        Some(got) if got < sent => 0,
        Some(got) => got,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_rules() {
        assert_eq!(next_index(0, Some(42)), 42);
        assert_eq!(next_index(42, Some(42)), 42);
        assert_eq!(next_index(42, Some(50)), 50);
        assert_eq!(next_index(42, Some(7)), 0);
        assert_eq!(next_index(42, Some(0)), 1);
        assert_eq!(next_index(42, None), 1);
        assert_eq!(next_index(0, None), 1);
    }
}
