//! From a Service's EndpointSlices (and its annotations) to the
//! destinations of one set: a pure function, so every rule is unit-tested.
//!
//! Rules:
//! - every slice of the Service counts (Kubernetes splits large Services
//!   into several) and an address listed twice is kept once, its best state
//!   winning;
//! - only an endpoint's first address counts, as for kube-proxy (the API
//!   gives no meaning to the others);
//! - `ready` (nil means true) and not `terminating` → active;
//!   `terminating` but `serving` (nil means true) → kept with flag 4
//!   (admin-disabled): `ds_select_dst` skips it for new calls while
//!   `ds_is_from_list` still accepts its in-dialog requests;
//!   anything else (starting, failing its readiness probe) → left out;
//! - IPv4 → `sip:A.B.C.D:PORT`, IPv6 → `sip:[ADDR]:PORT`, FQDN → `sip:NAME:PORT`;
//! - a named port is looked up in each slice; a slice without it
//!   contributes nothing.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};

use super::spec::{Port, ServiceSet};
use dsfeed_model::{Destination, FLAG_DISABLED};

/// Service annotation: the set's flags, when the `--set` flag gives none.
pub const FLAGS_ANNOTATION: &str = "dsfeed.io/flags";
/// Service annotation: the set's priority, when the `--set` flag gives none.
pub const PRIORITY_ANNOTATION: &str = "dsfeed.io/priority";
/// Service annotation: the set's attrs (`k=v;k=v`), when the `--set` flag
/// gives none.
pub const ATTRS_ANNOTATION: &str = "dsfeed.io/attrs";
/// Service annotation: per-endpoint weights, `NAME=W[,NAME=W...]`, where
/// NAME is the endpoint's pod name (`targetRef.name`), its hostname or its
/// address and W is Kamailio's dispatcher weight (1 to 100). It lives on
/// the Service, already watched, so weights need no access to Pods.
pub const WEIGHTS_ANNOTATION: &str = "dsfeed.io/weights";

/// The highest weight Kamailio's dispatcher accepts in the `weight` attr.
const MAX_WEIGHT: u32 = 100;

/// The destinations `set` gets from `slices` of its Service, whose object
/// (with the annotations) is `service` when it exists and can be read.
pub fn destinations<'a>(
    set: &ServiceSet,
    service: Option<&Service>,
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
) -> Vec<Destination> {
    let settings = Settings::of(set, service);
    let mut by_uri: BTreeMap<String, Destination> = BTreeMap::new();
    for slice in slices {
        let Some(port) = port_of(&set.port, slice) else {
            continue;
        };
        for endpoint in &slice.endpoints {
            let Some(dest) = destination(&settings, slice, endpoint, port) else {
                continue;
            };
            match by_uri.get(dest.uri()) {
                Some(kept) if kept.flags() <= dest.flags() => {}
                _ => {
                    by_uri.insert(dest.uri().to_owned(), dest);
                }
            }
        }
    }
    by_uri.into_values().collect()
}

/// Whether an endpoint can take traffic, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Active,
    Draining,
}

fn state(endpoint: &Endpoint) -> Option<State> {
    let conditions = endpoint.conditions.clone().unwrap_or_default();
    let terminating = conditions.terminating.unwrap_or(false);
    let ready = conditions.ready.unwrap_or(true);
    let serving = conditions.serving.unwrap_or(true);
    match (terminating, ready, serving) {
        (false, true, _) => Some(State::Active),
        (true, _, true) => Some(State::Draining),
        _ => None,
    }
}

fn destination(
    settings: &Settings,
    slice: &EndpointSlice,
    endpoint: &Endpoint,
    port: u16,
) -> Option<Destination> {
    let state = state(endpoint)?;
    let address = endpoint.addresses.first()?;
    let uri = match uri(&slice.address_type, address, port) {
        Ok(uri) => uri,
        Err(reason) => {
            tracing::warn!(slice = ?slice.metadata.name, %address, "endpoint skipped: {reason}");
            return None;
        }
    };
    let weight = [
        endpoint.target_ref.as_ref().and_then(|r| r.name.as_deref()),
        endpoint.hostname.as_deref(),
        Some(address.as_str()),
    ]
    .into_iter()
    .flatten()
    .find_map(|name| settings.weights.get(name).copied());
    let attrs = match weight {
        Some(weight) => with_weight(&settings.attrs, weight),
        None => settings.attrs.clone(),
    };
    let flags = match state {
        State::Active => settings.flags,
        State::Draining => settings.flags | FLAG_DISABLED,
    };
    let with_attrs = Destination::new(uri.clone(), flags, settings.priority, attrs);
    // A long name plus long attrs can outgrow Kamailio's line: the endpoint
    // stays, without the attrs, rather than going missing.
    let dest = with_attrs.or_else(|err| {
        let plain = Destination::new(uri, flags, settings.priority, "")?;
        tracing::warn!(slice = ?slice.metadata.name, %address, "attrs dropped for this endpoint: {err}");
        Ok::<_, dsfeed_model::InvalidDestination>(plain)
    });
    match dest {
        Ok(dest) => Some(dest),
        Err(err) => {
            tracing::warn!(slice = ?slice.metadata.name, %address, "endpoint skipped: {err}");
            None
        }
    }
}

fn uri(address_type: &str, address: &str, port: u16) -> Result<String, String> {
    match address_type {
        "IPv4" => address
            .parse::<Ipv4Addr>()
            .map(|ip| format!("sip:{ip}:{port}"))
            .map_err(|_| "not an IPv4 address".into()),
        "IPv6" => address
            .parse::<Ipv6Addr>()
            .map(|ip| format!("sip:[{ip}]:{port}"))
            .map_err(|_| "not an IPv6 address".into()),
        "FQDN" => Ok(format!("sip:{}:{port}", address.trim_end_matches('.'))),
        other => Err(format!("unknown address type '{other}'")),
    }
}

/// The port `wanted` names in `slice`, if it has it.
fn port_of(wanted: &Port, slice: &EndpointSlice) -> Option<u16> {
    match wanted {
        Port::Number(n) => Some(*n),
        Port::Name(name) => slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0),
    }
}

/// `attrs` with its `weight` replaced by `weight`.
fn with_weight(attrs: &str, weight: u32) -> String {
    attrs
        .split(';')
        .filter(|kv| !kv.is_empty() && !kv.starts_with("weight="))
        .map(str::to_owned)
        .chain(std::iter::once(format!("weight={weight}")))
        .collect::<Vec<_>>()
        .join(";")
}

/// A set's flags, priority, attrs and weights once the `--set` flag and
/// the Service's annotations are merged (the flag wins).
#[derive(Debug, Default)]
struct Settings {
    flags: u32,
    priority: u32,
    attrs: String,
    weights: BTreeMap<String, u32>,
}

impl Settings {
    fn of(set: &ServiceSet, service: Option<&Service>) -> Settings {
        let annotations = service.and_then(|s| s.metadata.annotations.as_ref());
        let annotation = |key: &str| annotations.and_then(|a| a.get(key)).map(String::as_str);
        let invalid = |key: &str, value: &str, why: &str| {
            tracing::error!(
                namespace = ?service.and_then(|s| s.metadata.namespace.as_deref()),
                service = %set.service,
                "annotation {key}: '{value}' ignored: {why}"
            );
        };
        let number = |key: &str| {
            let value = annotation(key)?;
            match value.trim().parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => {
                    invalid(key, value, "not a number");
                    None
                }
            }
        };
        let mut settings = Settings {
            flags: set
                .defaults
                .given_flags()
                .or_else(|| number(FLAGS_ANNOTATION))
                .unwrap_or(0),
            priority: set
                .defaults
                .given_priority()
                .or_else(|| number(PRIORITY_ANNOTATION))
                .unwrap_or(0),
            attrs: set
                .defaults
                .given_attrs()
                .or_else(|| annotation(ATTRS_ANNOTATION))
                .unwrap_or_default()
                .to_owned(),
            weights: BTreeMap::new(),
        };
        // An annotation Kamailio would misread is dropped, not the set.
        if let Err(err) = Destination::new("sip:check:5060", settings.flags, 0, "") {
            invalid(
                FLAGS_ANNOTATION,
                &settings.flags.to_string(),
                &err.to_string(),
            );
            settings.flags = 0;
        }
        if let Err(err) = Destination::new("sip:check:5060", 0, settings.priority, "") {
            invalid(
                PRIORITY_ANNOTATION,
                &settings.priority.to_string(),
                &err.to_string(),
            );
            settings.priority = 0;
        }
        if let Err(err) = Destination::new("sip:check:5060", 0, 0, settings.attrs.clone()) {
            invalid(ATTRS_ANNOTATION, &settings.attrs, &err.to_string());
            settings.attrs.clear();
        }
        if let Some(weights) = annotation(WEIGHTS_ANNOTATION) {
            for entry in weights.split(',').map(str::trim).filter(|e| !e.is_empty()) {
                let parsed = entry
                    .split_once('=')
                    .and_then(|(name, w)| Some((name.trim(), w.trim().parse::<u32>().ok()?)))
                    .filter(|(name, w)| !name.is_empty() && (1..=MAX_WEIGHT).contains(w));
                match parsed {
                    Some((name, weight)) => {
                        settings.weights.insert(name.to_owned(), weight);
                    }
                    None => invalid(WEIGHTS_ANNOTATION, entry, "expected NAME=WEIGHT, 1 to 100"),
                }
            }
        }
        settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(spec: &str) -> ServiceSet {
        spec.parse().unwrap()
    }

    fn slice(value: serde_json::Value) -> EndpointSlice {
        serde_json::from_value(value).unwrap()
    }

    fn lines(dests: &[Destination]) -> Vec<String> {
        dests
            .iter()
            .map(|d| {
                format!("{} {} {} {}", d.uri(), d.flags(), d.priority(), d.attrs())
                    .trim_end()
                    .to_owned()
            })
            .collect()
    }

    fn v4(name: &str, endpoints: serde_json::Value) -> EndpointSlice {
        slice(json!({
            "metadata": {"name": name},
            "addressType": "IPv4",
            "ports": [{"name": "sip", "port": 5080, "protocol": "UDP"}],
            "endpoints": endpoints,
        }))
    }

    #[test]
    fn conditions_decide_active_draining_or_absent() {
        let s = v4(
            "a",
            json!([
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true, "serving": true, "terminating": false}},
                {"addresses": ["10.0.0.2"]},
                {"addresses": ["10.0.0.3"], "conditions": {"ready": false, "serving": true, "terminating": true}},
                {"addresses": ["10.0.0.4"], "conditions": {"ready": false, "serving": false, "terminating": true}},
                {"addresses": ["10.0.0.5"], "conditions": {"ready": false, "serving": false, "terminating": false}},
                {"addresses": ["10.0.0.6"], "conditions": {"ready": false}},
            ]),
        );
        assert_eq!(
            lines(&destinations(&set("svc=1"), None, [&s])),
            [
                "sip:10.0.0.1:5060 0 0",
                "sip:10.0.0.2:5060 0 0",
                "sip:10.0.0.3:5060 4 0"
            ]
        );
    }

    #[test]
    fn slices_merge_and_duplicates_keep_their_best_state() {
        let a = v4(
            "a",
            json!([{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"], "conditions": {"terminating": true}}]),
        );
        let b = v4(
            "b",
            json!([{"addresses": ["10.0.0.2"]}, {"addresses": ["10.0.0.3"]}]),
        );
        let c = v4(
            "c",
            json!([{"addresses": ["10.0.0.1"], "conditions": {"terminating": true}}]),
        );
        assert_eq!(
            lines(&destinations(&set("svc=1:sip"), None, [&a, &b, &c])),
            [
                "sip:10.0.0.1:5080 0 0",
                "sip:10.0.0.2:5080 0 0",
                "sip:10.0.0.3:5080 0 0"
            ]
        );
    }

    #[test]
    fn named_ports_are_resolved_per_slice() {
        let a = v4("a", json!([{"addresses": ["10.0.0.1"]}]));
        let other = slice(json!({
            "metadata": {"name": "b"}, "addressType": "IPv4",
            "ports": [{"name": "sip", "port": 5090}],
            "endpoints": [{"addresses": ["10.0.0.2"]}],
        }));
        let unnamed = slice(json!({
            "metadata": {"name": "c"}, "addressType": "IPv4",
            "ports": [{"name": "rtp", "port": 10000}],
            "endpoints": [{"addresses": ["10.0.0.3"]}],
        }));
        assert_eq!(
            lines(&destinations(
                &set("svc=1:sip"),
                None,
                [&a, &other, &unnamed]
            )),
            ["sip:10.0.0.1:5080 0 0", "sip:10.0.0.2:5090 0 0"]
        );
    }

    #[test]
    fn address_types() {
        let v6 = slice(json!({
            "metadata": {"name": "v6"}, "addressType": "IPv6",
            "endpoints": [{"addresses": ["2001:DB8:0:0::1"]}, {"addresses": ["10.0.0.1"]}],
        }));
        let fqdn = slice(json!({
            "metadata": {"name": "f"}, "addressType": "FQDN",
            "endpoints": [{"addresses": ["pbx.example.com."]}],
        }));
        assert_eq!(
            lines(&destinations(&set("svc=1"), None, [&v6, &fqdn])),
            ["sip:[2001:db8::1]:5060 0 0", "sip:pbx.example.com:5060 0 0"]
        );
    }

    #[test]
    fn annotations_fill_what_the_flag_leaves_out() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "svc", "annotations": {
                FLAGS_ANNOTATION: "8", PRIORITY_ANNOTATION: "5", ATTRS_ANNOTATION: "duid=x;weight=10",
                WEIGHTS_ANNOTATION: "pbx-0=80, 10.0.0.3=30, bad, x=500",
            }}
        }))
        .unwrap();
        let s = v4(
            "a",
            json!([
                {"addresses": ["10.0.0.1"], "targetRef": {"kind": "Pod", "name": "pbx-0"}},
                {"addresses": ["10.0.0.2"], "conditions": {"terminating": true}},
                {"addresses": ["10.0.0.3"]},
            ]),
        );
        assert_eq!(
            lines(&destinations(&set("svc=1"), Some(&service), [&s])),
            [
                "sip:10.0.0.1:5060 8 5 duid=x;weight=80",
                "sip:10.0.0.2:5060 12 5 duid=x;weight=10",
                "sip:10.0.0.3:5060 8 5 duid=x;weight=30",
            ]
        );
        assert_eq!(
            lines(&destinations(
                &set("svc=1,priority=9,attrs=a=b"),
                Some(&service),
                [&s]
            ))[1],
            "sip:10.0.0.2:5060 12 9 a=b"
        );
    }

    #[test]
    fn invalid_annotations_are_dropped() {
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": "svc", "annotations": {
                FLAGS_ANNOTATION: "64", PRIORITY_ANNOTATION: "high", ATTRS_ANNOTATION: "a b",
            }}
        }))
        .unwrap();
        let s = v4("a", json!([{"addresses": ["10.0.0.1"]}]));
        assert_eq!(
            lines(&destinations(&set("svc=1"), Some(&service), [&s])),
            ["sip:10.0.0.1:5060 0 0"]
        );
    }
}
