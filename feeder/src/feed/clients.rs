//! Who is connected: each open stream's node, filter and ACK state, kept for
//! `/status` and `/metrics`. Every text a client sends is cut to a fixed
//! length, so the memory a client costs here is bounded.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use dsfeed_model::SetId;

use crate::metrics::ClientSample;

/// The longest node id or user agent kept.
const MAX_NAME: usize = 256;

/// The longest NACK text kept.
const MAX_ERROR: usize = 1024;

/// One open stream, as `/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ClientStatus {
    pub node: String,
    pub user_agent: String,
    /// The peer's address, or `unix` (with its pid when known).
    pub peer: String,
    /// The set ids asked for; `null` means every set.
    pub sets: Option<Vec<SetId>>,
    /// Unix time in seconds.
    pub connected_at: u64,
    /// The version of the last response sent on this stream.
    pub sent_version: Option<String>,
    /// The version the client last reported as applied (on connect or by
    /// ACK); a NACK leaves it as it was.
    pub acked_version: Option<String>,
    /// Unix time in seconds of the last ACK on this stream.
    pub acked_at: Option<u64>,
    /// The text of the last NACK.
    pub last_error: Option<String>,
    pub nacks: u64,
    /// A snapshot the client could not apply yet and keeps retrying (the
    /// dispatcher refused the load, no memory...); `null` when none.
    pub retrying: Option<Retrying>,
    /// Every "retrying" answer of this stream; they are not NACKs.
    pub retries: u64,
    /// Why the newest snapshot is not sent to this client (it is larger
    /// than a client accepts); `null` when it is.
    pub withheld: Option<String>,
    /// Whether the client takes deltas (only the sets that changed since a
    /// version it holds) rather than every set each time.
    pub deltas: bool,
}

/// A response a client answered "retrying": valid, not applied yet.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Retrying {
    pub version: String,
    /// The client's last word on why it could not apply it.
    pub error: String,
    /// Failed attempts reported for this version.
    pub attempts: u64,
}

impl ClientStatus {
    pub fn new(
        node: &str,
        user_agent: &str,
        peer: String,
        sets: Option<Vec<SetId>>,
        applied: &str,
    ) -> Self {
        ClientStatus {
            node: bounded(node, MAX_NAME),
            user_agent: bounded(user_agent, MAX_NAME),
            peer,
            sets,
            connected_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            sent_version: None,
            acked_version: (!applied.is_empty()).then(|| bounded(applied, MAX_NAME)),
            acked_at: None,
            last_error: None,
            nacks: 0,
            retrying: None,
            retries: 0,
            withheld: None,
            deltas: false,
        }
    }

    /// The client applied `version`; whatever it was retrying is over.
    /// What the metrics' live gauges need of this client.
    pub fn sample(&self) -> ClientSample {
        ClientSample {
            node: self.node.clone(),
            acked: self.acked_version.clone(),
            retrying: self.retrying.as_ref().map(|r| r.version.clone()),
            sent: self.sent_version.clone(),
            acked_at: self
                .acked_at
                .map(|secs| UNIX_EPOCH + std::time::Duration::from_secs(secs)),
        }
    }

    pub fn ack(&mut self, version: &str) {
        self.acked_version = Some(bounded(version, MAX_NAME));
        self.acked_at = Some(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        );
        self.retrying = None;
    }

    /// The client could not apply `version` yet and keeps retrying it;
    /// `kept_version` stays applied meanwhile.
    pub fn retry(&mut self, kept_version: &str, version: &str, error: &str) {
        self.acked_version = (!kept_version.is_empty()).then(|| bounded(kept_version, MAX_NAME));
        let version = bounded(version, MAX_NAME);
        let attempts = self
            .retrying
            .as_ref()
            .filter(|r| r.version == version)
            .map_or(0, |r| r.attempts);
        self.retrying = Some(Retrying {
            version,
            error: bounded(error, MAX_ERROR),
            attempts: attempts + 1,
        });
        self.retries += 1;
    }

    pub fn nack(&mut self, kept_version: &str, error: &str) {
        self.acked_version = (!kept_version.is_empty()).then(|| bounded(kept_version, MAX_NAME));
        self.last_error = Some(bounded(error, MAX_ERROR));
        self.nacks += 1;
    }
}

/// Every open stream, by stream id.
#[derive(Debug, Default)]
pub struct Clients {
    next_id: AtomicU64,
    streams: Mutex<BTreeMap<u64, ClientStatus>>,
}

impl Clients {
    /// Records a new stream; it is forgotten when the returned handle drops.
    pub fn register(self: &Arc<Self>, status: ClientStatus) -> ClientHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.streams
            .lock()
            .expect("not poisoned")
            .insert(id, status);
        ClientHandle {
            id,
            clients: Arc::clone(self),
        }
    }

    /// A copy of every open stream's status, oldest stream first.
    pub fn list(&self) -> Vec<ClientStatus> {
        self.streams
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.streams.lock().expect("not poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One stream's entry in [`Clients`], removed on drop so that no exit path
/// of a stream leaves a ghost behind.
#[derive(Debug)]
pub struct ClientHandle {
    id: u64,
    clients: Arc<Clients>,
}

impl ClientHandle {
    /// A number unique to this stream in this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn update(&self, change: impl FnOnce(&mut ClientStatus)) {
        if let Some(status) = self
            .clients
            .streams
            .lock()
            .expect("not poisoned")
            .get_mut(&self.id)
        {
            change(status);
        }
    }
}

impl Drop for ClientHandle {
    fn drop(&mut self) {
        self.clients
            .streams
            .lock()
            .expect("not poisoned")
            .remove(&self.id);
    }
}

/// `text` cut to at most `max` bytes on a character boundary.
fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_forgotten_when_they_end() {
        let clients = Arc::new(Clients::default());
        let a = clients.register(ClientStatus::new("a", "", "unix".into(), None, ""));
        let b = clients.register(ClientStatus::new("b", "", "unix".into(), None, "v0"));
        assert_ne!(a.id(), b.id());
        b.update(|s| s.nack("v0", "bad uri"));
        a.update(|s| s.retry("", "v1", "no memory"));
        a.update(|s| s.retry("", "v1", "no file descriptor"));
        let list = clients.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[1].acked_version.as_deref(), Some("v0"));
        assert_eq!(list[1].last_error.as_deref(), Some("bad uri"));
        let retrying = list[0].retrying.clone().unwrap();
        assert_eq!(
            (retrying.version.as_str(), retrying.error.as_str()),
            ("v1", "no file descriptor")
        );
        assert_eq!(
            (retrying.attempts, list[0].retries, list[0].nacks),
            (2, 2, 0)
        );
        a.update(|s| s.ack("v1"));
        assert!(clients.list()[0].retrying.is_none());
        drop(a);
        assert_eq!(clients.list()[0].node, "b");
        drop(b);
        assert!(clients.is_empty());
    }

    #[test]
    fn client_text_is_bounded() {
        let status = ClientStatus::new(&"é".repeat(1000), "", "unix".into(), None, "");
        assert!(status.node.len() <= MAX_NAME + '…'.len_utf8());
        let mut status = status;
        status.nack("", &"x".repeat(1 << 20));
        assert!(status.last_error.unwrap().len() <= MAX_ERROR + '…'.len_utf8());
    }
}
