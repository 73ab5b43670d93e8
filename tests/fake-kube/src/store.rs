//! What the fake API server holds: the objects, the history of writes for
//! watches that resume, the open watches, and every request received.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use futures::channel::mpsc;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::{AbortHandle, JoinSet};

use crate::http::send;
use crate::selector::Filter;
use crate::{Gone, Recorded};

pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Wakes tests polling for recorded requests.
    pub(crate) requested: Notify,
    /// The accept loop, stopped on `Down`.
    pub(crate) listener: Mutex<Option<AbortHandle>>,
    /// Every connection, cut on `DropConnections` and `Down`.
    pub(crate) connections: Mutex<JoinSet<()>>,
}

#[derive(Default)]
pub(crate) struct State {
    /// The last resourceVersion handed out.
    pub(crate) rv: u64,
    /// Watches from a resourceVersion below this are refused.
    pub(crate) compacted: u64,
    pub(crate) gone: Option<Gone>,
    pub(crate) objects: BTreeMap<Key, Value>,
    /// Every write, in order, for replay to watches that resume.
    pub(crate) history: Vec<Change>,
    pub(crate) watches: Vec<Watch>,
    pub(crate) requests: Vec<Recorded>,
    pub(crate) uid: u64,
    /// Plurals (`services`) whose every request is refused with 403.
    pub(crate) forbidden: Vec<String>,
}

/// A collection: the API prefix (`api/v1`, `apis/discovery.k8s.io/v1`) and
/// the plural resource name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Collection {
    pub(crate) prefix: String,
    pub(crate) plural: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Key {
    pub(crate) collection: Collection,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

pub(crate) struct Change {
    pub(crate) rv: u64,
    pub(crate) key: Key,
    pub(crate) before: Option<Value>,
    pub(crate) after: Option<Value>,
}

pub(crate) struct Watch {
    pub(crate) collection: Collection,
    /// `None` for a watch across every namespace.
    pub(crate) namespace: Option<String>,
    pub(crate) filter: Filter,
    pub(crate) bookmarks: bool,
    pub(crate) kind: String,
    pub(crate) api_version: String,
    pub(crate) tx: mpsc::UnboundedSender<Bytes>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("the state lock")
    }
}

impl State {
    /// Stores a write in history and sends it to every watch it concerns.
    pub(crate) fn record(&mut self, change: Change) {
        self.watches.retain(|w| match w.event_for(&change) {
            Some(event) => send(&w.tx, &event),
            None => !w.tx.is_closed(),
        });
        self.history.push(change);
    }
}

impl Watch {
    /// The event this watch sees for `change`: an object entering the
    /// selection is `ADDED`, one leaving it `DELETED`.
    pub(crate) fn event_for(&self, change: &Change) -> Option<Value> {
        if change.key.collection != self.collection
            || self
                .namespace
                .as_ref()
                .is_some_and(|ns| *ns != change.key.namespace)
        {
            return None;
        }
        let before = change.before.as_ref().filter(|o| self.filter.matches(o));
        let after = change.after.as_ref().filter(|o| self.filter.matches(o));
        let (kind, object) = match (before, after) {
            (None, Some(after)) => ("ADDED", after.clone()),
            (Some(_), Some(after)) => ("MODIFIED", after.clone()),
            (Some(before), None) => {
                let mut gone = change.after.clone().unwrap_or_else(|| before.clone());
                gone["metadata"]["resourceVersion"] = json!(change.rv.to_string());
                ("DELETED", gone)
            }
            (None, None) => return None,
        };
        Some(json!({"type": kind, "object": object}))
    }
}

/// Binds with SO_REUSEADDR so the port can be taken again after `Down`.
pub(crate) fn collection_of(api_version: &str, kind: &str) -> Collection {
    let prefix = if api_version.contains('/') {
        format!("apis/{api_version}")
    } else {
        format!("api/{api_version}")
    };
    Collection {
        prefix,
        plural: format!("{}s", kind.to_ascii_lowercase()),
    }
}

pub(crate) fn key_of(object: &Value) -> Key {
    let field = |v: &Value, what: &str| -> String {
        v.as_str()
            .unwrap_or_else(|| panic!("an applied object needs {what}: {object}"))
            .to_owned()
    };
    Key {
        collection: collection_of(
            &field(&object["apiVersion"], "apiVersion"),
            &field(&object["kind"], "kind"),
        ),
        namespace: field(&object["metadata"]["namespace"], "metadata.namespace"),
        name: field(&object["metadata"]["name"], "metadata.name"),
    }
}
