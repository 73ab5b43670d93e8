//! What `/v1/health/service/NAME` answers, and how its entries become
//! dispatcher destinations.
//!
//! Everything in an entry was written by whoever registered the service, so
//! nothing reaches dispatcher.list unchecked: an address or port Kamailio
//! would misread drops that instance, and an attr value that could end the
//! attrs field, add an attr or start a comment is rejected (never escaped,
//! since Kamailio's attrs parser has no escapes that survive its line
//! reader) while the instance is kept without that attr. Each rejection is
//! reported with the instance and the offending value.

use std::collections::HashMap;
use std::net::Ipv6Addr;

use serde::Deserialize;

use super::attrs::{AttrMapping, Field};
use super::spec::{Health, ServiceSpec};
use dsfeed_model::Destination;

/// One element of the JSON array Consul answers.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    pub node: Node,
    pub service: Service,
    #[serde(default)]
    pub checks: Option<Vec<Check>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "Node")]
    pub name: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub meta: Option<HashMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub port: i64,
    #[serde(default)]
    pub meta: Option<HashMap<String, String>>,
    #[serde(default)]
    pub weights: Option<Weights>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    pub passing: i64,
    pub warning: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Check {
    pub status: String,
}

/// The most JSON values (objects, arrays, strings, numbers...) one answer
/// may hold. A value of a few bytes on the wire (`"",` in a tag list) costs
/// tens of bytes decoded, so the body's byte cap alone does not bound the
/// memory; an instance is 20 to 60 values, so this leaves room for ~10,000.
pub const MAX_JSON_VALUES: usize = 1 << 19;

/// Why an answer could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("is not the JSON of /v1/health/service")]
    Json(#[source] serde_json::Error),
    #[error("{0}")]
    OverBudget(String),
}

/// Decodes an answer of `/v1/health/service/NAME` (`null` is no entry),
/// after counting its values against [`MAX_JSON_VALUES`] without decoding.
pub fn decode(body: &[u8]) -> Result<Vec<ServiceEntry>, DecodeError> {
    let values = json_values(body);
    if values > MAX_JSON_VALUES {
        return Err(DecodeError::OverBudget(format!(
            "holds more than {MAX_JSON_VALUES} JSON values"
        )));
    }
    let entries: Option<Vec<ServiceEntry>> =
        serde_json::from_slice(body).map_err(DecodeError::Json)?;
    Ok(entries.unwrap_or_default())
}

/// An upper bound on the values in a JSON text: one plus each `,`, `[`,
/// `{` and `:` outside strings.
fn json_values(body: &[u8]) -> usize {
    let mut count = 1;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b',' | b'[' | b'{' | b':' => count += 1,
                _ => {}
            }
        }
    }
    count
}

/// The longest attr value taken from Consul; longer ones are rejected so
/// that a few of them cannot push a line past Kamailio's 1024-byte buffer.
pub const MAX_ATTR_VALUE: usize = 128;

/// The destinations of one service, and what had to be left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Converted {
    pub destinations: Vec<Destination>,
    /// One sentence per rejected instance or attr value, naming it.
    pub problems: Vec<String>,
}

/// Turns the healthy, tag-matching entries into destinations of `spec`'s
/// set. Consul already filtered by health and tags; checking again here
/// keeps a proxy or an older agent that ignores a parameter from widening
/// the set.
pub fn convert(spec: &ServiceSpec, attrs: &[AttrMapping], entries: &[ServiceEntry]) -> Converted {
    let mut out = Converted::default();
    for entry in entries {
        if !healthy(entry, spec.health) || !tagged(entry, &spec.tags) {
            continue;
        }
        match destination(spec, attrs, entry, &mut out.problems) {
            Ok(dest) => out.destinations.push(dest),
            Err(reason) => out.problems.push(format!(
                "instance {} on node {} left out: {reason}",
                shown(&entry.service.id),
                shown(&entry.node.name)
            )),
        }
    }
    out
}

fn healthy(entry: &ServiceEntry, health: Health) -> bool {
    entry.checks.iter().flatten().all(|c| match health {
        Health::Passing => c.status == "passing",
        Health::Warning => c.status == "passing" || c.status == "warning",
    })
}

/// Consul compares tags without regard to case.
fn tagged(entry: &ServiceEntry, wanted: &[String]) -> bool {
    let tags = entry.service.tags.as_deref().unwrap_or_default();
    wanted
        .iter()
        .all(|w| tags.iter().any(|t| t.eq_ignore_ascii_case(w)))
}

fn destination(
    spec: &ServiceSpec,
    attrs: &[AttrMapping],
    entry: &ServiceEntry,
    problems: &mut Vec<String>,
) -> Result<Destination, String> {
    let address = if entry.service.address.is_empty() {
        &entry.node.address
    } else {
        &entry.service.address
    };
    if address.is_empty() {
        return Err("neither the service nor its node has an address".into());
    }
    let port = match spec.port {
        Some(port) => port,
        None => u16::try_from(entry.service.port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| {
                format!(
                    "registered port {} is not usable; give one as {}={}:PORT",
                    entry.service.port, spec.name, spec.set
                )
            })?,
    };
    let target = if address.parse::<Ipv6Addr>().is_ok() {
        format!("[{address}]:{port}")
    } else {
        format!("{address}:{port}")
    };
    let plain = Destination::parse_target(&target)
        .map_err(|e| format!("address {} rejected: {e}", shown(address)))?;

    // The flag's own attrs first; a mapped attr of the same key replaces it.
    let mut pairs: Vec<String> = spec
        .defaults
        .attrs()
        .split(';')
        .filter(|pair| !pair.is_empty())
        .map(str::to_owned)
        .collect();
    for mapping in attrs {
        let Some(value) = lookup(entry, &mapping.field) else {
            continue;
        };
        match check_value(&mapping.key, &value) {
            Ok(()) => {
                pairs.retain(|pair| pair.split('=').next() != Some(mapping.key.as_str()));
                pairs.push(format!("{}={value}", mapping.key));
            }
            Err(reason) => problems.push(format!(
                "instance {} on node {}: attr {} from {} rejected: value {} {reason}",
                shown(&entry.service.id),
                shown(&entry.node.name),
                mapping.key,
                mapping.field,
                shown(&value)
            )),
        }
    }
    // Attrs that push the line past Kamailio's buffer would not load; keep
    // the instance without them instead. Flags and priority were checked
    // when the flag was read.
    let uri = plain.uri().to_owned();
    let (flags, priority) = (spec.defaults.flags(), spec.defaults.priority());
    match Destination::new(uri.clone(), flags, priority, pairs.join(";")) {
        Ok(dest) => Ok(dest),
        Err(err) => {
            problems.push(format!(
                "instance {} on node {}: attrs dropped: {err}",
                shown(&entry.service.id),
                shown(&entry.node.name)
            ));
            Destination::new(uri, flags, priority, "").or(Ok(plain))
        }
    }
}

fn lookup(entry: &ServiceEntry, field: &Field) -> Option<String> {
    let service = &entry.service;
    match field {
        Field::ServiceId => Some(service.id.clone()),
        Field::NodeName => Some(entry.node.name.clone()),
        Field::WeightPassing => service.weights.as_ref().map(|w| w.passing.to_string()),
        Field::WeightWarning => service.weights.as_ref().map(|w| w.warning.to_string()),
        Field::Meta(key) => service.meta.as_ref()?.get(key).cloned(),
        Field::NodeMeta(key) => entry.node.meta.as_ref()?.get(key).cloned(),
    }
}

/// Accepts a value only if Kamailio reads it back as exactly one attr value:
/// printable ASCII without the characters that end a value (`;` `,`), start
/// a quoted one (`"` `'`), or that dsfeed refuses in attrs (`#`, `=`, `\`).
fn check_value(key: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if value.len() > MAX_ATTR_VALUE {
        return Err(format!("is longer than {MAX_ATTR_VALUE} bytes"));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !c.is_ascii_graphic() || matches!(c, ';' | ',' | '#' | '=' | '"' | '\'' | '\\'))
    {
        return Err(format!("contains '{}'", c.escape_default()));
    }
    // Kamailio ignores a weight outside 1..100 and logs an error per reload.
    if key.eq_ignore_ascii_case("weight") || key.eq_ignore_ascii_case("rweight") {
        match value.parse::<u32>() {
            Ok(1..=100) => {}
            _ => return Err(format!("is not a {key} from 1 to 100")),
        }
    }
    Ok(())
}

/// A value from Consul as logs show it: quoted, with anything unprintable
/// escaped, so that the log line cannot be forged either.
fn shown(value: &str) -> String {
    format!("\"{}\"", value.escape_debug())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dsfeed_model::list;

    #[test]
    fn answers_have_a_budget_in_values() {
        let tags = format!("[{}\"\"]", "\"\",".repeat(MAX_JSON_VALUES));
        let body = format!(
            "[{{\"Node\":{{\"Node\":\"n\"}},\"Service\":{{\"ID\":\"a\",\"Tags\":{tags}}}}}]"
        );
        assert!(body.len() < 2 * 1024 * 1024);
        let err = decode(body.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("JSON values"), "{err}");
        assert_eq!(json_values(br#"{"a":"[,{:","b":[1,2]}"#), 7);
        assert!(decode(b"null").unwrap().is_empty());
        assert!(matches!(decode(b"{"), Err(DecodeError::Json(_))));
    }

    fn entries(json: &str) -> Vec<ServiceEntry> {
        serde_json::from_str(json).unwrap()
    }

    fn spec(text: &str) -> ServiceSpec {
        text.parse().unwrap()
    }

    fn attrs(list: &[&str]) -> Vec<AttrMapping> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    fn uris(converted: &Converted) -> Vec<&str> {
        converted.destinations.iter().map(|d| d.uri()).collect()
    }

    const TWO: &str = r#"[
      {"Node": {"Node": "n1", "Address": "10.0.0.1", "Meta": null},
       "Service": {"ID": "a1", "Service": "asterisk", "Tags": ["primary"], "Address": "",
                   "Port": 5060, "Meta": {"instance": "a-1"}, "Weights": {"Passing": 10, "Warning": 1}},
       "Checks": [{"Status": "passing"}, {"Status": "passing"}]},
      {"Node": {"Node": "n2", "Address": "10.0.0.2"},
       "Service": {"ID": "a2", "Service": "asterisk", "Tags": null, "Address": "2001:db8::2",
                   "Port": 5080, "Meta": null, "Weights": {"Passing": 3, "Warning": 1}},
       "Checks": [{"Status": "warning"}]}
    ]"#;

    #[test]
    fn addresses_fall_back_to_the_node() {
        let out = convert(&spec("asterisk=1,health=warning"), &[], &entries(TWO));
        assert_eq!(uris(&out), ["sip:10.0.0.1:5060", "sip:[2001:db8::2]:5080"]);
        assert!(out.problems.is_empty());
    }

    #[test]
    fn health_tags_and_port_override() {
        let passing = convert(&spec("asterisk=1:5090"), &[], &entries(TWO));
        assert_eq!(uris(&passing), ["sip:10.0.0.1:5090"]);
        let tagged = convert(
            &spec("asterisk=1,tag=PRIMARY,health=warning"),
            &[],
            &entries(TWO),
        );
        assert_eq!(uris(&tagged), ["sip:10.0.0.1:5060"]);
        let critical = entries(&TWO.replace("\"warning\"", "\"critical\""));
        let out = convert(&spec("asterisk=1,health=warning"), &[], &critical);
        assert_eq!(uris(&out), ["sip:10.0.0.1:5060"]);
    }

    #[test]
    fn attrs_follow_the_mapping() {
        let out = convert(
            &spec("asterisk=1,health=warning"),
            &attrs(&["weight=Weights.Passing", "duid=Meta.instance", "node=Node"]),
            &entries(TWO),
        );
        let attrs: Vec<_> = out.destinations.iter().map(|d| d.attrs()).collect();
        assert_eq!(attrs, ["weight=10;duid=a-1;node=n1", "weight=3;node=n2"]);
        assert!(out.problems.is_empty());
    }

    #[test]
    fn the_flags_set_wide_values_reach_every_instance() {
        let out = convert(
            &spec(
                "asterisk=1,health=warning,flags=8,priority=10,attrs=duid=pbx;socket=udp:10.9.9.9:5060",
            ),
            &attrs(&["duid=Meta.instance"]),
            &entries(TWO),
        );
        let lines: Vec<_> = out.destinations.iter().map(|d| list::line(1, d)).collect();
        // a1 has Meta.instance, which replaces the flag's duid; a2 keeps it.
        assert_eq!(
            lines,
            [
                "1 sip:10.0.0.1:5060 8 10 socket=udp:10.9.9.9:5060;duid=a-1",
                "1 sip:[2001:db8::2]:5080 8 10 duid=pbx;socket=udp:10.9.9.9:5060",
            ]
        );
    }

    #[test]
    fn hostile_values_are_rejected_and_named() {
        for (value, needle) in [
            ("a b", "contains ' '"),
            ("a\\n1 sip:evil:5060", "contains '\\\\'"),
            ("a\n1 sip:evil:5060 0 0", "contains '\\n'"),
            ("a;weight=100", "contains ';'"),
            ("a#x", "contains '#'"),
            ("a,b", "contains ','"),
            ("\"quoted\"", "contains '\\\"'"),
            ("", "is empty"),
            ("é", "contains '\\u{e9}'"),
        ] {
            let json = TWO.replace(
                r#""instance": "a-1""#,
                &format!(r#""instance": {}"#, serde_json::to_string(value).unwrap()),
            );
            let out = convert(
                &spec("asterisk=1"),
                &attrs(&["duid=Meta.instance"]),
                &entries(&json),
            );
            assert_eq!(uris(&out), ["sip:10.0.0.1:5060"], "{value:?}");
            assert_eq!(out.destinations[0].attrs(), "", "{value:?}");
            assert_eq!(out.problems.len(), 1, "{value:?}");
            let problem = &out.problems[0];
            assert!(
                problem.contains(
                    "instance \"a1\" on node \"n1\": attr duid from Meta.instance rejected"
                ) && problem.contains(needle),
                "{value:?}: {problem}"
            );
            assert!(!problem.contains('\n'), "{problem}");
        }
    }

    #[test]
    fn weights_outside_kamailios_range_are_rejected() {
        let json = TWO.replace(r#""Passing": 10"#, r#""Passing": 250"#);
        let out = convert(
            &spec("asterisk=1"),
            &attrs(&["weight=Weights.Passing"]),
            &entries(&json),
        );
        assert_eq!(out.destinations[0].attrs(), "");
        assert!(
            out.problems[0].contains("not a weight from 1 to 100"),
            "{:?}",
            out.problems
        );
    }

    #[test]
    fn bad_addresses_and_ports_drop_the_instance() {
        let json = TWO
            .replace(r#""Address": "10.0.0.1""#, r#""Address": "10.0.0.1 # x""#)
            .replace(r#""Port": 5080"#, r#""Port": 0"#);
        let out = convert(&spec("asterisk=1,health=warning"), &[], &entries(&json));
        assert!(out.destinations.is_empty());
        assert_eq!(out.problems.len(), 2);
        assert!(
            out.problems[0]
                .contains("instance \"a1\" on node \"n1\" left out: address \"10.0.0.1 # x\"")
        );
        assert!(
            out.problems[1]
                .contains("registered port 0 is not usable; give one as asterisk=1:PORT")
        );
    }

    #[test]
    fn an_address_too_long_for_a_line_drops_only_its_instance() {
        let long = format!("{}.example.com", "a".repeat(1100));
        let json = TWO.replace(
            r#""Address": "10.0.0.1""#,
            &format!(r#""Address": "{long}""#),
        );
        let out = convert(&spec("asterisk=1,health=warning"), &[], &entries(&json));
        assert_eq!(uris(&out), ["sip:[2001:db8::2]:5080"]);
        assert_eq!(out.problems.len(), 1);
        assert!(
            out.problems[0].contains("instance \"a1\" on node \"n1\" left out")
                && out.problems[0].contains("1024-byte"),
            "{:?}",
            out.problems
        );
    }

    #[test]
    fn attrs_too_long_for_a_line_are_dropped() {
        let meta: Vec<String> = (0..12)
            .map(|i| format!(r#""k{i}": "{}""#, "v".repeat(100)))
            .collect();
        let json = TWO.replace(r#""instance": "a-1""#, &meta.join(","));
        let mapping: Vec<String> = (0..12).map(|i| format!("a{i}=Meta.k{i}")).collect();
        let mapping: Vec<&str> = mapping.iter().map(String::as_str).collect();
        let out = convert(&spec("asterisk=1"), &attrs(&mapping), &entries(&json));
        assert_eq!(out.destinations[0].attrs(), "");
        assert!(out.problems[0].contains("1024-byte"), "{:?}", out.problems);
    }
}
