//! What the fake agent knows: the instances the test registered, their
//! health, and every request it received.

use std::collections::{BTreeMap, BTreeSet};

use hyper::StatusCode;
use serde_json::{Value, json};

use super::DEFAULT_DC;

/// A service check's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Passing,
    Warning,
    Critical,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Passing => "passing",
            Status::Warning => "warning",
            Status::Critical => "critical",
        }
    }

    pub(super) fn parse(s: &str) -> Option<Self> {
        match s {
            "passing" => Some(Status::Passing),
            "warning" => Some(Status::Warning),
            "critical" => Some(Status::Critical),
            _ => None,
        }
    }
}

/// How answers carry `X-Consul-Index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexHeader {
    /// The real index.
    Real,
    /// No header at all, as some proxies do.
    Missing,
    /// Always 0, a Consul bug clients must survive.
    Zero,
}

/// One registered service instance, with one service check.
#[derive(Debug, Clone)]
pub struct Instance {
    pub service: String,
    pub id: String,
    pub node: String,
    pub node_address: String,
    /// Empty means "use the node's address", as in Consul.
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    /// `Weights.Passing`, `Weights.Warning`.
    pub weights: (i64, i64),
    pub status: Status,
    /// The service check's ID (`service:ID` unless registered otherwise)
    /// and its last output.
    pub check_id: String,
    pub output: String,
    pub datacenter: String,
}

impl Instance {
    /// A passing instance `id` of `service` at `address:port`, on its own
    /// node `node-ID` whose address is 192.0.2.1.
    pub fn new(service: &str, id: &str, address: &str, port: u16) -> Self {
        Instance {
            service: service.into(),
            id: id.into(),
            node: format!("node-{id}"),
            node_address: "192.0.2.1".into(),
            address: address.into(),
            port,
            tags: Vec::new(),
            meta: BTreeMap::new(),
            node_meta: BTreeMap::new(),
            weights: (1, 1),
            status: Status::Passing,
            check_id: format!("service:{id}"),
            output: String::new(),
            datacenter: DEFAULT_DC.into(),
        }
    }

    pub fn node(mut self, name: &str, address: &str) -> Self {
        self.node = name.into();
        self.node_address = address.into();
        self
    }

    pub fn tag(mut self, tag: &str) -> Self {
        self.tags.push(tag.into());
        self
    }

    pub fn meta(mut self, key: &str, value: &str) -> Self {
        self.meta.insert(key.into(), value.into());
        self
    }

    pub fn weights(mut self, passing: i64, warning: i64) -> Self {
        self.weights = (passing, warning);
        self
    }

    pub fn status(mut self, status: Status) -> Self {
        self.status = status;
        self
    }

    pub fn datacenter(mut self, dc: &str) -> Self {
        self.datacenter = dc.into();
        self
    }

    pub(super) fn to_json(&self, index: u64) -> Value {
        let checks = json!([
            {
                "Node": self.node, "CheckID": "serfHealth", "Name": "Serf Health Status",
                "Status": "passing", "Notes": "", "Output": "Agent alive and reachable",
                "ServiceID": "", "ServiceName": "", "ServiceTags": [], "Type": "",
                "CreateIndex": index, "ModifyIndex": index
            },
            {
                "Node": self.node, "CheckID": self.check_id,
                "Name": format!("Service '{}' check", self.service),
                "Status": self.status.as_str(), "Notes": "", "Output": self.output,
                "ServiceID": self.id, "ServiceName": self.service, "ServiceTags": self.tags,
                "Type": "ttl", "CreateIndex": index, "ModifyIndex": index
            }
        ]);
        json!({
            "Node": {
                "ID": "", "Node": self.node, "Address": self.node_address,
                "Datacenter": self.datacenter,
                "TaggedAddresses": {"lan": self.node_address, "wan": self.node_address},
                "Meta": self.node_meta, "CreateIndex": index, "ModifyIndex": index
            },
            "Service": {
                "ID": self.id, "Service": self.service, "Tags": self.tags,
                "Address": self.address, "Meta": if self.meta.is_empty() { Value::Null } else { json!(self.meta) },
                "Port": self.port,
                "Weights": {"Passing": self.weights.0, "Warning": self.weights.1},
                "EnableTagOverride": false, "Proxy": {}, "Connect": {},
                "CreateIndex": index, "ModifyIndex": index
            },
            "Checks": checks
        })
    }
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    pub token: Option<String>,
    pub body: String,
}

impl std::fmt::Display for Recorded {
    /// One line: method, path, decoded query, token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.method, self.path)?;
        for (i, (k, v)) in self.query.iter().enumerate() {
            write!(f, "{}{k}={v}", if i == 0 { '?' } else { '&' })?;
        }
        if let Some(token) = &self.token {
            write!(f, " (token {token})")?;
        }
        Ok(())
    }
}

impl Recorded {
    /// The first value of query parameter `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of query parameter `key`.
    pub fn params(&self, key: &str) -> Vec<&str> {
        self.query
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The `index` parameter as a number, if any.
    pub fn index(&self) -> Option<u64> {
        self.param("index").and_then(|i| i.parse().ok())
    }
}

#[derive(Debug)]
pub(super) struct Service {
    pub(super) index: u64,
    pub(super) instances: Vec<Instance>,
}

#[derive(Debug)]
pub(super) struct State {
    /// The catalog's index: the last change to anything.
    pub(super) index: u64,
    pub(super) services: BTreeMap<String, Service>,
    pub(super) datacenters: BTreeSet<String>,
    pub(super) token: Option<String>,
    pub(super) fail: Option<StatusCode>,
    pub(super) hang: bool,
    pub(super) index_header: IndexHeader,
    pub(super) requests: Vec<Recorded>,
}
