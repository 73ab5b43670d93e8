//! `docs/openapi.yaml` against what a running `dsfeed` answers: every path
//! and status the document describes is asked of a real feeder, and every
//! answer must be described by it, down to the content type, the headers
//! and each JSON field (the schemas forbid fields they do not name, so a
//! field added to or dropped from a response fails here until the document
//! says so).
//!
//! The validator below knows the JSON Schema keywords the document uses
//! and refuses any other, so the document cannot grow a constraint that
//! is silently not checked.

use std::collections::BTreeSet;

use dsfeed_tests::dns_server::{Behavior, DnsServer};
use dsfeed_tests::feed_client::{self, Stream, hello};
use dsfeed_tests::feeder::{Args, Feeder};
use dsfeed_tests::http::{Response, fetch};
use dsfeed_tests::{PATIENCE, free_addr, wait_until, write_secret};
use serde_json::Value;
use tempfile::TempDir;

fn spec() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/openapi.yaml");
    let text = std::fs::read_to_string(path).expect("docs/openapi.yaml");
    serde_saphyr::from_str(&text).expect("docs/openapi.yaml is YAML")
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(spec: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let pointer = reference.strip_prefix('#').expect("a local $ref");
            let target = spec
                .pointer(pointer)
                .unwrap_or_else(|| panic!("{reference} does not resolve"));
            resolve(spec, target)
        }
        None => node,
    }
}

/// Keywords that only describe.
const ANNOTATIONS: &[&str] = &["description", "examples", "title"];

/// Every way `value` breaks `schema`, each with its JSON path.
fn violations(spec: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(spec, schema);
    let object = schema.as_object().expect("a schema is an object");
    let mut found = Vec::new();
    for (keyword, rule) in object {
        let broken = |what: String| format!("{at}: {what}");
        match keyword.as_str() {
            "type" => {
                let allowed: Vec<&str> = match rule {
                    Value::String(one) => vec![one.as_str()],
                    Value::Array(many) => many.iter().filter_map(Value::as_str).collect(),
                    other => panic!("type {other}"),
                };
                if !allowed.iter().any(|t| has_type(value, t)) {
                    found.push(broken(format!("{value} is not {allowed:?}")));
                }
            }
            "properties" => {
                for (name, property) in rule.as_object().unwrap() {
                    if let Some(inner) = value.get(name) {
                        found.extend(violations(spec, property, inner, &format!("{at}.{name}")));
                    }
                }
            }
            "required" => {
                for name in rule.as_array().unwrap().iter().filter_map(Value::as_str) {
                    if value.is_object() && value.get(name).is_none() {
                        found.push(broken(format!("{name} is missing")));
                    }
                }
            }
            "additionalProperties" => {
                let Some(fields) = value.as_object() else {
                    continue;
                };
                let named = object.get("properties").and_then(Value::as_object);
                for (name, inner) in fields {
                    if named.is_some_and(|n| n.contains_key(name)) {
                        continue;
                    }
                    match rule {
                        Value::Bool(false) => {
                            found.push(broken(format!("{name} is not in the document")));
                        }
                        Value::Bool(true) => {}
                        schema => {
                            found.extend(violations(spec, schema, inner, &format!("{at}.{name}")))
                        }
                    }
                }
            }
            "propertyNames" => {
                for name in value.as_object().into_iter().flat_map(|o| o.keys()) {
                    let name = Value::String(name.clone());
                    found.extend(violations(spec, rule, &name, &format!("{at} key")));
                }
            }
            "items" => {
                for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                    found.extend(violations(spec, rule, item, &format!("{at}[{i}]")));
                }
            }
            "oneOf" => {
                let matching = rule
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|option| violations(spec, option, value, at).is_empty())
                    .count();
                if matching != 1 {
                    found.push(broken(format!("{value} matches {matching} of oneOf")));
                }
            }
            "const" => {
                if value != rule {
                    found.push(broken(format!("{value} is not {rule}")));
                }
            }
            "minimum" | "maximum" => {
                if let (Some(n), Some(bound)) = (value.as_f64(), rule.as_f64()) {
                    let ok = if keyword == "minimum" {
                        n >= bound
                    } else {
                        n <= bound
                    };
                    if !ok {
                        found.push(broken(format!("{n} is beyond {keyword} {bound}")));
                    }
                }
            }
            "pattern" => {
                let pattern = regex::Regex::new(rule.as_str().unwrap()).unwrap();
                if let Some(text) = value.as_str()
                    && !pattern.is_match(text)
                {
                    found.push(broken(format!("{text:?} does not match {pattern}")));
                }
            }
            other if ANNOTATIONS.contains(&other) => {}
            other => panic!("{at}: the validator does not know the keyword {other}"),
        }
    }
    found
}

fn has_type(value: &Value, name: &str) -> bool {
    match name {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("unknown type {other}"),
    }
}

/// The document's path template that `path` (without its query) fits.
fn template<'a>(spec: &'a Value, path: &str) -> &'a str {
    let segments: Vec<&str> = path.split('/').collect();
    spec["paths"]
        .as_object()
        .unwrap()
        .keys()
        .find(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p.starts_with('{') || p == s)
        })
        .unwrap_or_else(|| panic!("GET {path} is not in the document"))
}

/// Asks `path` and checks the answer against the document; returns the
/// `(template, status)` it exercised.
async fn check(
    spec: &Value,
    feeder: &Feeder,
    path: &str,
    token: Option<&str>,
    status: u16,
) -> (String, u16) {
    let response = fetch(feeder.http.unwrap(), path, token).await.unwrap();
    assert_eq!(response.status, status, "GET {path}: {response:?}");
    validate(spec, path, &response);
    (template(spec, path).to_owned(), status)
}

fn validate(spec: &Value, path: &str, response: &Response) {
    let operation = &spec["paths"][template(spec, path)]["get"];
    let described = operation["responses"]
        .get(response.status.to_string())
        .unwrap_or_else(|| {
            panic!(
                "GET {path}: status {} is not in the document",
                response.status
            )
        });
    let described = resolve(spec, described);
    let content_type = response.content_type.as_deref().unwrap_or("(none)");
    let media = described["content"].get(content_type).unwrap_or_else(|| {
        panic!(
            "GET {path} {}: content type {content_type} is not in the document",
            response.status
        )
    });
    for (name, header) in described
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let value = response
            .headers
            .get(&name.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("GET {path}: header {name} is missing"));
        let problems = violations(spec, &header["schema"], &Value::String(value.clone()), name);
        assert!(problems.is_empty(), "GET {path}: {problems:#?}");
    }
    let body = if content_type == "application/json" {
        response.json()
    } else {
        Value::String(response.body.clone())
    };
    let problems = violations(spec, &media["schema"], &body, "$");
    assert!(
        problems.is_empty(),
        "GET {path} {} does not follow docs/openapi.yaml: {problems:#?}\n{body:#}",
        response.status
    );
}

#[tokio::test]
async fn every_answer_follows_the_document_and_the_document_is_all_answered() {
    let spec = spec();
    let dir = TempDir::new().unwrap();
    let sets = dir.path().join("sets.yaml");
    std::fs::write(
        &sets,
        "sets:\n  1:\n    - 10.0.0.1\n    - sips:edge.example.com\n    - uri: \"[2001:db8::1]:5080\"\n      attrs: weight=5\n  2: []\nrtpengine:\n  0:\n    - 10.0.0.5\n    - url: udp:10.0.0.6:2223\n      disabled: true\ndomains:\n  - sip.example.com\n  - name: t.example.com\n    did: t1\n",
    )
    .unwrap();
    let mut exercised = BTreeSet::new();

    // Open, on loopback, with a connected client that acked and nacked.
    let socket = dir.path().join("open.sock");
    let open = Feeder::serving(
        Args::default()
            .sets_file(&sets)
            .listen_unix(&socket)
            .http(free_addr()),
    )
    .await;
    let mut stream = Stream::connect(
        feed_client::unix_endpoint(&socket),
        hello("kam-1", &[1], ""),
    )
    .await;
    let first = stream.next().await;
    stream.nack(&first, "", "could not").await;
    open.wait_status("the client's NACK", |s| s["clients"][0]["nacks"] == 1)
        .await;
    for (path, status) in [
        ("/healthz", 200),
        ("/readyz", 200),
        ("/metrics", 200),
        ("/status", 200),
        ("/sets", 200),
        ("/sets/1", 200),
        ("/sets/2", 200),
        ("/sets/9", 404),
        ("/sets/x", 400),
        ("/check/1/10.0.0.1", 200),
        ("/check/1/[2001:db8::1]:5080", 200),
        ("/check/1/edge.example.com:5061", 200),
        ("/check/1/10.0.0.2", 404),
        ("/check/9/10.0.0.1", 404),
        ("/check/1/a%20b", 400),
        ("/check/x/10.0.0.1", 400),
    ] {
        exercised.insert(check(&spec, &open, path, None, status).await);
    }

    // Not ready (a name server that never answers), then a held set.
    let dns = DnsServer::start().await;
    dns.behave(Behavior::Silent);
    let waiting = Feeder::spawn_serving(
        Args::default()
            .arg("--dns-srv", "_sip._udp.held.dsfeed.test=1")
            .arg("--dns-server", dns.addr())
            .arg("--static", "2=10.0.0.2")
            .listen_unix(&dir.path().join("waiting.sock"))
            .http(free_addr()),
    );
    wait_until("the waiting feeder to answer", PATIENCE, || async {
        fetch(waiting.http.unwrap(), "/healthz", None)
            .await
            .map(|_| ())
    })
    .await;
    for (path, status) in [
        ("/readyz", 503),
        ("/status", 200),
        ("/sets", 503),
        ("/sets/2", 503),
        ("/check/2/10.0.0.2", 503),
    ] {
        exercised.insert(check(&spec, &waiting, path, None, status).await);
    }
    dns.behave(Behavior::Answer);
    wait_until("set 1 to be held", PATIENCE, || async {
        let sets = fetch(waiting.http.unwrap(), "/sets", None).await.unwrap();
        if sets.status == 200 {
            Ok(())
        } else {
            Err(format!("{sets:?}"))
        }
    })
    .await;
    for (path, status) in [("/sets", 200), ("/sets/1", 503), ("/check/1/10.0.0.1", 503)] {
        exercised.insert(check(&spec, &waiting, path, None, status).await);
    }

    // Behind a token: refused without it, and unusable once it is gone.
    let token = dir.path().join("token");
    write_secret(&token, "s3cret");
    let guarded = Feeder::serving(
        Args::default()
            .sets_file(&sets)
            .listen_unix(&dir.path().join("guarded.sock"))
            .arg("--token-file", token.display())
            .http(free_addr()),
    )
    .await;
    for path in ["/status", "/sets", "/sets/1", "/check/1/10.0.0.1"] {
        exercised.insert(check(&spec, &guarded, path, None, 401).await);
        exercised.insert(check(&spec, &guarded, path, Some("s3cret"), 200).await);
    }
    std::fs::remove_file(&token).unwrap();
    for path in ["/status", "/sets", "/sets/1", "/check/1/10.0.0.1"] {
        exercised.insert(check(&spec, &guarded, path, Some("s3cret"), 503).await);
    }

    // On an address other machines reach, without a token: off.
    let public = Feeder::serving(
        Args::default()
            .sets_file(&sets)
            .listen_unix(&dir.path().join("public.sock"))
            .arg("--http", format!("0.0.0.0:{}", free_addr().port())),
    )
    .await;
    for path in ["/status", "/sets", "/sets/1", "/check/1/10.0.0.1"] {
        exercised.insert(check(&spec, &public, path, None, 403).await);
    }

    let documented: BTreeSet<(String, u16)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item["get"]["responses"]
                .as_object()
                .unwrap()
                .keys()
                .map(|code| (path.clone(), code.parse::<u16>().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect();
    let untested: Vec<_> = documented.difference(&exercised).collect();
    assert!(
        untested.is_empty(),
        "documented but never answered: {untested:?}"
    );
}

#[test]
fn the_validator_catches_a_drifted_field() {
    let spec = spec();
    let member = serde_json::json!({"$ref": "#/components/schemas/Member"});
    let good = serde_json::json!({"uri": "sip:a:5060", "host": "a", "port": 5060,
                                  "flags": 0, "priority": 0, "attrs": ""});
    assert!(violations(&spec, &member, &good, "$").is_empty());
    let mut added = good.clone();
    added["weight"] = 5.into();
    assert_eq!(
        violations(&spec, &member, &added, "$"),
        ["$: weight is not in the document"]
    );
    let mut dropped = good.clone();
    dropped.as_object_mut().unwrap().remove("host");
    assert_eq!(
        violations(&spec, &member, &dropped, "$"),
        ["$: host is missing"]
    );
    let mut retyped = good;
    retyped["port"] = "5060".into();
    assert_eq!(violations(&spec, &member, &retyped, "$").len(), 1);
}
