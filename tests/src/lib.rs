//! Harness for end-to-end tests: the real Kamailio, the `dsfeed` binary
//! and sipp, each on its own ports and stopped when the test ends; and fake
//! servers that stand in for the sources (Consul).

pub mod ctl_proxy;
pub mod fake_consul;
pub mod feeder;
mod kamailio;
pub mod loads;
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
    dsfeed::binrpc::dispatcher::list(&kamailio.client())
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
