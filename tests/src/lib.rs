//! The one harness for every test and bench that runs real processes: the
//! real Kamailio (with or without dsfeed.so), the `dsfeed` binary, sipp, a
//! feed client and a scripted feed server, TLS material, an HTTP client,
//! the fake Consul agent, a DNS server (the fake Kubernetes API server is the
//! `fake-kube` crate). Each process gets its own ports and files and is
//! stopped when the test ends. Tests wait for conditions with
//! [`eventually`], never for a fixed time.

pub mod ctl_proxy;
pub mod dns_server;
pub mod fake_consul;
pub mod feed_client;
pub mod feeder;
pub mod http;
mod kamailio;
pub mod loads;
pub mod module;
pub mod netns;
pub mod pki;
pub mod probe;
pub mod report;
pub mod scripted;
pub mod sets;
pub mod sipp;

pub use kamailio::{HarnessError, Kamailio, KamailioBuilder, ParamValue, Target, target};

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

/// Replaces `path` with `text` through a rename, as editors and ConfigMap
/// updates do, so a watching feeder never reads a half-written file.
pub fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write the temporary file");
    std::fs::rename(&tmp, path).expect("rename it into place");
}

/// Writes a token file readable by its owner only, as dsfeed and dsfeed.so
/// demand whatever the caller's umask is.
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write the secret");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("make the secret owner-only");
}

/// How long any single expected event may take on a loaded machine.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A free TCP address on 127.0.0.1, for a listener the test is about to
/// start (`--http`, `--listen`).
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port on 127.0.0.1")
}

/// A UDP port on 127.0.0.1 that was free a moment ago, for a process the
/// test is about to start (sipp, Kamailio).
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port")
        .port()
}

/// The URIs Kamailio has loaded per set, read over binrpc with the same
/// client the feeder uses; empty when Kamailio has no sets.
pub async fn loaded(kamailio: &Kamailio) -> BTreeMap<u32, BTreeSet<String>> {
    dsfeed_binrpc::dispatcher::list(&kamailio.client())
        .await
        .expect("dispatcher.list answers")
        .into_iter()
        .map(|(id, dests)| (id, dests.into_iter().map(|d| d.uri).collect()))
        .collect()
}

/// Sets as tests write them: `[(set id, [uri, ...])]`.
pub fn sets(entries: &[(u32, &[&str])]) -> BTreeMap<u32, BTreeSet<String>> {
    entries
        .iter()
        .map(|(id, uris)| (*id, uris.iter().map(|u| (*u).to_owned()).collect()))
        .collect()
}

/// Polls `probe` until it returns `Some`, panicking with `what` after
/// `timeout`. Tests wait for conditions this way rather than sleeping, so a
/// loaded machine slows them down instead of failing them.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Like [`eventually`], for a probe that says what it saw instead: the
/// panic after `timeout` shows the last observation.
pub async fn wait_until<T, E, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> T
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match probe().await {
            Ok(value) => return value,
            Err(seen) if Instant::now() >= deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
        }
    }
}

/// Waits until Kamailio's loaded sets equal `expected`; returns how long it
/// took, or panics with what Kamailio had at the deadline.
pub async fn until_loaded(
    kamailio: &Kamailio,
    expected: &BTreeMap<u32, BTreeSet<String>>,
    timeout: Duration,
) -> Duration {
    let start = Instant::now();
    loop {
        let now = loaded(kamailio).await;
        if now == *expected {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < timeout,
            "after {timeout:?} Kamailio has {now:?}, expected {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
