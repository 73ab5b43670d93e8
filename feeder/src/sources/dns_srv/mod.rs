//! `--dns-srv NAME=ID[,OPTION...]`: SRV records as sets, the way VM fleets
//! and Kubernetes headless Services publish their backends.
//!
//! ```text
//! dsfeed --dns-srv _sip._udp.pbx.example.com=1 --dns-srv '_sip._tcp.media.example.com=2,flags=8'
//! ```
//!
//! This source uses nothing but the crate's public surface ([`Source`],
//! [`Publisher`], [`hold`](crate::sources::hold)): it is the proof that a
//! source written outside the crate can do everything a built-in one does.
//!
//! - Each record becomes `sip:TARGET:PORT` (see [`spec::convert`]): its DNS
//!   priority turned over into the dispatcher's (lower is preferred in DNS,
//!   higher in the dispatcher), its weight the `weight` attr (1 to 100).
//! - The name is asked again when the answer's shortest TTL runs out (at
//!   least every [`MIN_REFRESH`], at most every [`MAX_REFRESH`]).
//! - A failed lookup (a timeout, SERVFAIL, REFUSED, a malformed answer) is
//!   logged, counted and retried with backoff; the set keeps its last
//!   answer, and a name that never answered holds back the first snapshot.
//! - An empty answer (NXDOMAIN, no SRV record, every target `.`) is treated
//!   as Consul's: the set keeps its last destinations for
//!   `--dns-empty-grace`, and a first answer that is empty is published as
//!   held, so Kamailio keeps what it has for that set.
//! - A record Kamailio could not use drops only itself, with a warning
//!   naming it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;

use crate::error::Error;
use crate::sources::hold::{Guard, Guarded, Wording};
use crate::sources::{Publisher, Source, SourceFuture};
use dsfeed_model::{Destination, SetMap};

pub mod resolver;
pub mod spec;

pub use resolver::{DnsError, Lookup, Resolver};
pub use spec::SrvSpec;

/// The shortest time between two lookups of one name, whatever its TTL (a
/// TTL of 0 must not become a query loop).
pub const MIN_REFRESH: Duration = Duration::from_secs(1);

/// The longest: a record published with a TTL of a day is still checked
/// every five minutes, so a change is seen within that.
pub const MAX_REFRESH: Duration = Duration::from_secs(300);

/// How often an empty answer is asked again, so a name that comes back
/// within the grace ends the wait.
pub const EMPTY_REFRESH: Duration = Duration::from_secs(5);

/// How the empty-answer guard words the logs of an SRV name.
const WORDING: Wording = Wording {
    changed: "SRV records changed",
    holding: "no usable SRV record (NXDOMAIN or none); keeping the last destinations until the grace runs out",
    emptied: "still no usable SRV record after the grace; emptying the set",
};

/// The default `--dns-empty-grace`, as Consul's.
pub const DEFAULT_EMPTY_GRACE: &str = "30s";

/// The DNS SRV flags. `services` and `empty_grace` take ids of their own
/// (`dns-srv`, `dns-empty-grace`): the `--set` and Consul flags have fields
/// of those names, and clap needs every id once.
// The field docs are `--help` text, in the command line's own grammar
// ([OPTIONAL] parts), not rustdoc links.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "DNS SRV")]
pub struct DnsArgs {
    /// An SRV name as a set: NAME=ID[,flags=N][,attrs=K=V;K=V]. Each record
    /// becomes sip:TARGET:PORT (;transport=tcp for _tcp names, sips: for
    /// _sips), its priority the dispatcher priority turned over (DNS
    /// prefers the lowest, the dispatcher the highest: 65535 - priority),
    /// its weight the weight attr (its share of 100 within its priority).
    /// Repeatable.
    #[arg(
        id = "dns-srv",
        long = "dns-srv",
        value_name = "NAME=ID[,OPTION...]",
        env = "DSFEED_DNS_SRV"
    )]
    #[arg(value_delimiter = ' ')]
    pub services: Vec<SrvSpec>,

    /// The name server to ask, IP[:PORT] (port 53 by default), instead of
    /// those of /etc/resolv.conf; names are then asked as written, with no
    /// search domain.
    #[arg(
        long = "dns-server",
        value_name = "IP[:PORT]",
        env = "DSFEED_DNS_SERVER"
    )]
    #[arg(value_parser = parse_server)]
    pub server: Option<SocketAddr>,

    /// How long a set whose name answers empty (NXDOMAIN, no SRV record)
    /// keeps its last destinations; 0 to empty it at once.
    #[arg(
        id = "dns-empty-grace",
        long = "dns-empty-grace",
        value_name = "DURATION",
        env = "DSFEED_DNS_EMPTY_GRACE"
    )]
    #[arg(default_value = DEFAULT_EMPTY_GRACE, value_parser = crate::flag::duration)]
    pub empty_grace: Duration,
}

/// Parses `IP[:PORT]`, an IPv6 address in brackets when a port follows.
fn parse_server(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<std::net::IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    let addr: SocketAddr = s.parse().map_err(|_| {
        format!("'{s}' is not IP[:PORT] (an IPv6 address with a port in brackets: [::1]:53)")
    })?;
    if addr.port() == 0 {
        return Err(format!("'{s}': port 0 is no name server's"));
    }
    Ok(addr)
}

impl DnsArgs {
    /// The resolver the flags ask for.
    pub fn resolver(&self) -> Result<Resolver, DnsError> {
        match self.server {
            Some(server) => Ok(Resolver::server(server)),
            None => Resolver::system(),
        }
    }
}

/// One source per `--dns-srv`, sharing one resolver.
pub fn sources(args: &DnsArgs) -> Result<Vec<Box<dyn Source>>, DnsError> {
    if args.services.is_empty() {
        return Ok(Vec::new());
    }
    let resolver = Arc::new(args.resolver()?);
    Ok(args
        .services
        .iter()
        .map(|spec| {
            Box::new(DnsSrvSource::new(
                spec.clone(),
                Arc::clone(&resolver),
                args.empty_grace,
            )) as Box<dyn Source>
        })
        .collect())
}

/// Follows one SRV name and publishes it as one set.
#[derive(Debug)]
pub struct DnsSrvSource {
    name: String,
    spec: SrvSpec,
    resolver: Arc<Resolver>,
    grace: Duration,
}

impl DnsSrvSource {
    pub fn new(spec: SrvSpec, resolver: Arc<Resolver>, grace: Duration) -> Self {
        DnsSrvSource {
            name: format!("dns {}", spec.name),
            spec,
            resolver,
            grace,
        }
    }
}

impl Source for DnsSrvSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(self: Box<Self>, out: Publisher) -> SourceFuture {
        Box::pin(self.follow(out))
    }
}

impl DnsSrvSource {
    /// Looks the name up forever; no DNS error is fatal, since the last
    /// answer is the best truth there is until the name server answers.
    async fn follow(self: Box<Self>, out: Publisher) -> Result<(), Error> {
        let mut guard = Guard::new(self.grace, self.spec.set, WORDING);
        loop {
            let lookup = self.resolver.srv(&self.spec.name, self.spec.absolute);
            let found = match guard.meanwhile(&*self, &out, lookup).await {
                Ok(found) => found,
                Err(err) => {
                    guard
                        .failed(&*self, &out, "SRV lookup failed", err.label(), &err)
                        .await;
                    continue;
                }
            };
            let (converted, refresh) = match found {
                Lookup::Records(records) => {
                    let ttl = records.iter().map(|r| r.ttl).min().unwrap_or(0);
                    let refresh =
                        Duration::from_secs(u64::from(ttl)).clamp(MIN_REFRESH, MAX_REFRESH);
                    (spec::convert(&self.spec, &records), refresh)
                }
                Lookup::Empty => (spec::Converted::default(), EMPTY_REFRESH),
            };
            guard
                .answer(&*self, &out, converted.destinations, converted.problems)
                .await;
            guard
                .meanwhile(&*self, &out, tokio::time::sleep(refresh))
                .await;
        }
    }
}

impl Guarded for DnsSrvSource {
    async fn publish(&self, out: &Publisher, dests: Vec<Destination>) {
        out.publish(SetMap::from([(self.spec.set, dests)])).await;
    }

    async fn publish_held(&self, out: &Publisher) {
        out.publish_holding(SetMap::new(), BTreeSet::from([self.spec.set]))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_servers_are_addresses() {
        assert_eq!(
            parse_server("127.0.0.1").unwrap(),
            "127.0.0.1:53".parse().unwrap()
        );
        assert_eq!(
            parse_server("[::1]:5353").unwrap(),
            "[::1]:5353".parse().unwrap()
        );
        assert_eq!(parse_server("::1").unwrap(), "[::1]:53".parse().unwrap());
        for bad in ["ns.example", "127.0.0.1:0", "127.0.0.1:x", ""] {
            assert!(parse_server(bad).is_err(), "{bad}");
        }
    }
}
