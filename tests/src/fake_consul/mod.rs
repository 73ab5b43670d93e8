//! A fake Consul agent for tests: the real HTTP protocol of
//! `GET /v1/health/service/NAME` on 127.0.0.1 (plain or TLS), driven by the
//! test, so the feeder is reached through the same client code users run.
//!
//! What it does as Consul does:
//! - every answer carries `X-Consul-Index`: the index of the service's last
//!   change (registration, health change, deregistration), or the catalog's
//!   index for a service never registered;
//! - a query with `index=N` (N > 0) is held until the service's index moves
//!   past N or `wait` runs out (Go durations such as `300s` or `1500ms`;
//!   default 5m, capped at 10m; no jitter is added), then answers the
//!   current state; `index=0` or no index answers at once;
//! - `passing=true` leaves out instances with any check not passing; `tag=`
//!   (repeatable; every tag must match, ignoring case) and `dc=` filter; a
//!   datacenter nobody registered in answers 500 "No path to datacenter";
//! - with [`FakeConsul::require_token`], an unknown `X-Consul-Token` answers
//!   403 "ACL not found" and a query without a token is anonymous: 200 with
//!   an empty list and `X-Consul-Results-Filtered-By-ACLs: true`;
//! - a malformed `index` or `wait` answers 400;
//! - the agent endpoints `PUT /v1/agent/service/register` (a TTL check
//!   starts critical), `PUT /v1/agent/check/update/CHECK_ID` and
//!   `PUT /v1/agent/service/deregister/ID` change what the health endpoint
//!   answers; unknown IDs answer 404. Agent registrations live on the node
//!   [`AGENT_NODE`] at 127.0.0.1.
//!
//! And what a test needs to break it:
//! - [`FakeConsul::fail`]: every query answers the given status;
//! - [`FakeConsul::hang`]: queries are accepted and never answered;
//! - [`FakeConsul::index_header`]: leave `X-Consul-Index` out, or send 0;
//! - [`FakeConsul::restart`]: the agent loses its state, as a dev-mode or
//!   single-node agent that restarts: open connections are closed, every
//!   service is gone and the index starts again from 1;
//! - [`FakeConsul::requests`]: every request, as received.

mod model;
mod server;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use hyper::StatusCode;
pub use model::{IndexHeader, Instance, Recorded, Status};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::feeder::Args;
use crate::pki::Pki;
use model::{Service, State};
use server::{Handler, accept};

/// The datacenter instances are in unless a test says otherwise.
pub const DEFAULT_DC: &str = "dc1";

/// The node the fake agent registers services on.
pub const AGENT_NODE: &str = "fake-agent";

/// A running fake Consul agent; stops when dropped.
pub struct FakeConsul {
    addr: SocketAddr,
    https: bool,
    state: Arc<Mutex<State>>,
    /// Bumped on every change, to wake held queries.
    changes: watch::Sender<u64>,
    /// Bumped by [`FakeConsul::restart`], to close every connection.
    epoch: watch::Sender<u64>,
    server: JoinHandle<()>,
}

impl Drop for FakeConsul {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl FakeConsul {
    /// A plain-HTTP fake on a free port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::serve(None).await
    }

    /// An HTTPS fake presenting `pki`'s server certificate; with `mutual`,
    /// it refuses clients without a certificate signed by `pki`'s CA.
    pub async fn start_tls(pki: &Pki, mutual: bool) -> Self {
        Self::serve(Some(Arc::new(pki.rustls_server(mutual)))).await
    }

    async fn serve(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free port on 127.0.0.1");
        let addr = listener.local_addr().expect("a bound address");
        let state = Arc::new(Mutex::new(State {
            index: 1,
            services: BTreeMap::new(),
            datacenters: BTreeSet::from([DEFAULT_DC.to_owned()]),
            token: None,
            fail: None,
            hang: false,
            index_header: IndexHeader::Real,
            requests: Vec::new(),
        }));
        let (changes, _) = watch::channel(0);
        let (epoch, _) = watch::channel(0);
        let https = tls.is_some();
        let server = tokio::spawn(accept(
            listener,
            tls.map(tokio_rustls::TlsAcceptor::from),
            Handler {
                state: state.clone(),
                changes: changes.clone(),
            },
            epoch.clone(),
        ));
        FakeConsul {
            addr,
            https,
            state,
            changes,
            epoch,
            server,
        }
    }

    /// `http://127.0.0.1:PORT` or `https://...`, for `--consul-addr`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `HOST:PORT`, for `--consul-addr` without a scheme.
    pub fn addr(&self) -> String {
        self.addr.to_string()
    }

    /// The feeder's flags that make sets of `services` (`--consul-service`
    /// values) from this agent: its address as users usually give it,
    /// `HOST:PORT` for plain HTTP and `https://HOST:PORT` for TLS.
    pub fn feeder_args(&self, services: &[&str]) -> Args {
        let addr = if self.https { self.url() } else { self.addr() };
        services
            .iter()
            .fold(Args::default(), |args, s| args.arg("--consul-service", s))
            .arg("--consul-addr", addr)
    }

    /// The port the fake listens on.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Registers `instance`, or replaces the one with the same service and ID.
    pub fn register(&self, instance: Instance) {
        self.change(|state| {
            state.datacenters.insert(instance.datacenter.clone());
            let service = state
                .services
                .entry(instance.service.clone())
                .or_insert_with(|| Service {
                    index: 0,
                    instances: Vec::new(),
                });
            service.instances.retain(|i| i.id != instance.id);
            service.instances.push(instance.clone());
            Some(instance.service.clone())
        });
    }

    /// Sets the status of instance `id`'s service check.
    pub fn set_status(&self, service: &str, id: &str, status: Status) {
        self.change(|state| {
            let instance = state
                .services
                .get_mut(service)?
                .instances
                .iter_mut()
                .find(|i| i.id == id)?;
            instance.status = status;
            Some(service.to_owned())
        });
    }

    /// Removes instance `id` of `service`.
    pub fn deregister(&self, service: &str, id: &str) {
        self.change(|state| {
            state
                .services
                .get_mut(service)?
                .instances
                .retain(|i| i.id != id);
            Some(service.to_owned())
        });
    }

    /// Loses every registration and restarts the index from 1, closing the
    /// connections the agent had open.
    pub fn restart(&self) {
        {
            let mut state = self.lock();
            state.index = 1;
            state.services.clear();
        }
        self.epoch.send_modify(|e| *e += 1);
        self.changes.send_modify(|c| *c += 1);
    }

    /// Restarts, then waits until the client has seen the index go
    /// backwards: a full read without an index, then a query blocking on
    /// the new index, 1. Returns the position of the full read.
    pub async fn restart_and_await_reread(&self, timeout: Duration) -> usize {
        self.restart();
        let restarted = self.requests().len();
        let reread = self
            .wait_for_request(restarted, timeout, |r| r.index().is_none())
            .await;
        self.wait_for_request(reread, timeout, |r| r.index() == Some(1))
            .await;
        reread
    }

    /// Demands `token` in `X-Consul-Token` from now on.
    pub fn require_token(&self, token: &str) {
        self.lock().token = Some(token.to_owned());
        self.changes.send_modify(|c| *c += 1);
    }

    /// Answers every query with `status` (with `None`, normally again).
    pub fn fail(&self, status: Option<u16>) {
        self.lock().fail = status.map(|s| StatusCode::from_u16(s).expect("a valid status"));
        self.changes.send_modify(|c| *c += 1);
    }

    /// Holds every query, new or already waiting, without answering.
    pub fn hang(&self, hang: bool) {
        self.lock().hang = hang;
        self.changes.send_modify(|c| *c += 1);
    }

    /// How answers carry `X-Consul-Index` from now on.
    pub fn index_header(&self, header: IndexHeader) {
        self.lock().index_header = header;
    }

    /// Instance `id` of `service` as the fake holds it now.
    pub fn instance(&self, service: &str, id: &str) -> Option<Instance> {
        self.lock()
            .services
            .get(service)?
            .instances
            .iter()
            .find(|i| i.id == id)
            .cloned()
    }

    /// Every request received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// Waits until a request matching `pred` has arrived after the first
    /// `after` requests; panics after `timeout`. Returns its position.
    pub async fn wait_for_request(
        &self,
        after: usize,
        timeout: Duration,
        pred: impl Fn(&Recorded) -> bool,
    ) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(found) = self
                .requests()
                .iter()
                .enumerate()
                .skip(after)
                .find(|(_, r)| pred(r))
                .map(|(i, _)| i)
            {
                return found;
            }
            if Instant::now() >= deadline {
                let seen: Vec<String> = self.requests().iter().map(|r| r.to_string()).collect();
                panic!(
                    "no matching request after #{after} within {timeout:?}; requests:\n{}",
                    seen.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .expect("the fake's state is never poisoned")
    }

    /// Applies a change to one service; it gets the next index.
    fn change(&self, apply: impl FnOnce(&mut State) -> Option<String>) {
        {
            let mut state = self.lock();
            let Some(name) = apply(&mut state) else {
                return;
            };
            state.index += 1;
            let index = state.index;
            if let Some(service) = state.services.get_mut(&name) {
                service.index = index;
            }
        }
        self.changes.send_modify(|c| *c += 1);
    }
}
