//! The stock dispatcher module's RPCs: read back what Kamailio has loaded,
//! and ask it to reload its list file.

use std::collections::BTreeMap;

use crate::codec::{Value, describe};
use crate::{Client, Error};
use dsfeed_model::SetId;

/// The fault text of `dispatcher.list` when no set is loaded (an empty list
/// file is valid and loads zero sets).
pub const NO_SETS: &str = "No Destination Sets";

/// The fault text of `dispatcher.reload` within `reload_delta` seconds of
/// the previous reload.
pub const ONGOING_RELOAD: &str = "Ongoing reload";

/// One destination as `dispatcher.list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedDestination {
    pub uri: String,
    /// State letters: `A`ctive, `I`nactive, `D`isabled or `T`rying, then
    /// `P`robing or `X` (not probing), e.g. `"AX"`.
    pub flags: String,
    pub priority: i32,
    /// The attrs as written in the list (`k=v;k=v`); empty when none.
    pub attrs: String,
}

/// Every loaded set by id; within a set, destinations in Kamailio's order.
pub type ListedSets = BTreeMap<SetId, Vec<ListedDestination>>;

/// Reads the sets Kamailio currently has in memory. Zero sets (which
/// Kamailio reports as a fault) is an empty map, not an error.
pub async fn list(client: &Client) -> Result<ListedSets, Error> {
    const METHOD: &str = "dispatcher.list";
    let reply = match client.call(METHOD, &[]).await {
        Err(Error::Fault { message, .. }) if message == NO_SETS => return Ok(ListedSets::new()),
        other => other?,
    };
    if reply.is_empty() {
        return Ok(ListedSets::new());
    }
    parse_list(&reply).map_err(|reason| Error::UnexpectedReply {
        addr: client.addr().clone(),
        method: METHOD.to_owned(),
        reason,
    })
}

/// Asks Kamailio to reload its list file. Refused with [`ONGOING_RELOAD`]
/// within `reload_delta` of the previous reload; see [`is_ongoing_reload`].
pub async fn reload(client: &Client) -> Result<(), Error> {
    client.call("dispatcher.reload", &[]).await.map(drop)
}

/// Whether `err` is dispatcher's throttle refusing a reload, which is worth
/// retrying after `reload_delta`, unlike a failed load.
pub fn is_ongoing_reload(err: &Error) -> bool {
    matches!(err, Error::Fault { message, .. } if message == ONGOING_RELOAD)
}

/// Parses dispatcher 5.6's reply:
/// `{NRSETS, RECORDS: {SET: {ID, TARGETS: {DEST: {URI, FLAGS, PRIORITY,
/// ATTRS: {BODY, ..}?, ..}}*}}*}`.
fn parse_list(reply: &[Value]) -> Result<ListedSets, String> {
    let root = reply
        .first()
        .filter(|_| reply.len() == 1)
        .ok_or_else(|| format!("expected one struct, got {} values", reply.len()))?;
    let records = field(root, "RECORDS", "the reply")?;
    let mut sets = ListedSets::new();
    for set in named_members(records, "SET", "RECORDS")? {
        let id = int_field(set, "ID", "a SET")?;
        let id = SetId::try_from(id).map_err(|_| format!("set id {id} is negative"))?;
        let dests = sets.entry(id).or_default();
        // A set whose destinations all failed to load may have no TARGETS.
        let Some(targets) = set.get("TARGETS") else {
            continue;
        };
        let context = format!("TARGETS of set {id}");
        for dest in named_members(targets, "DEST", &context)? {
            dests.push(parse_dest(dest, id)?);
        }
    }
    Ok(sets)
}

fn parse_dest(dest: &Value, set: SetId) -> Result<ListedDestination, String> {
    let context = format!("a DEST of set {set}");
    let uri = str_field(dest, "URI", &context)?;
    let context = format!("DEST {uri} of set {set}");
    let attrs = match dest.get("ATTRS") {
        None => String::new(),
        Some(attrs) => str_field(attrs, "BODY", &format!("ATTRS of {context}"))?,
    };
    Ok(ListedDestination {
        flags: str_field(dest, "FLAGS", &context)?,
        priority: int_field(dest, "PRIORITY", &context)?,
        attrs,
        uri,
    })
}

fn field<'a>(value: &'a Value, name: &str, context: &str) -> Result<&'a Value, String> {
    if value.members().is_none() {
        return Err(format!(
            "{context} is {}, not a struct",
            describe(Some(value))
        ));
    }
    value
        .get(name)
        .ok_or_else(|| format!("{context} has no {name}"))
}

fn int_field(value: &Value, name: &str, context: &str) -> Result<i32, String> {
    let v = field(value, name, context)?;
    v.as_int()
        .ok_or_else(|| format!("{name} of {context} is {}, not an int", describe(Some(v))))
}

fn str_field(value: &Value, name: &str, context: &str) -> Result<String, String> {
    let v = field(value, name, context)?;
    v.as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{name} of {context} is {}, not a string", describe(Some(v))))
}

/// The members of a struct that must all be called `name`.
fn named_members<'a>(
    value: &'a Value,
    name: &str,
    context: &str,
) -> Result<impl Iterator<Item = &'a Value>, String> {
    let members = value
        .members()
        .ok_or_else(|| format!("{context} is {}, not a struct", describe(Some(value))))?;
    if let Some((other, _)) = members.iter().find(|(n, _)| n != name) {
        return Err(format!(
            "{context} holds '{other}' where only {name} is expected"
        ));
    }
    Ok(members.iter().map(|(_, v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value::Str(v.to_owned())
    }

    fn st(members: Vec<(&str, Value)>) -> Value {
        Value::Struct(
            members
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v))
                .collect(),
        )
    }

    fn dest(uri: &str, flags: &str, priority: i32, attrs: Option<&str>) -> Value {
        let mut members = vec![
            ("URI", s(uri)),
            ("FLAGS", s(flags)),
            ("PRIORITY", Value::Int(priority)),
        ];
        if let Some(body) = attrs {
            members.push((
                "ATTRS",
                st(vec![
                    ("BODY", s(body)),
                    ("DUID", s("")),
                    ("MAXLOAD", Value::Int(0)),
                    ("WEIGHT", Value::Int(0)),
                    ("RWEIGHT", Value::Int(0)),
                    ("SOCKET", s("")),
                    ("SOCKNAME", s("")),
                    ("OBPROXY", s("")),
                ]),
            ));
        }
        st(members)
    }

    #[test]
    fn parses_the_5_6_structure() {
        let reply = vec![st(vec![
            ("NRSETS", Value::Int(2)),
            (
                "RECORDS",
                st(vec![
                    (
                        "SET",
                        st(vec![
                            ("ID", Value::Int(7)),
                            (
                                "TARGETS",
                                st(vec![("DEST", dest("sip:10.0.0.9:5060", "DX", 0, None))]),
                            ),
                        ]),
                    ),
                    (
                        "SET",
                        st(vec![
                            ("ID", Value::Int(1)),
                            (
                                "TARGETS",
                                st(vec![
                                    ("DEST", dest("sip:b", "AP", 5, Some("weight=50;duid=b"))),
                                    ("DEST", dest("sip:a", "AX", 1, None)),
                                ]),
                            ),
                        ]),
                    ),
                ]),
            ),
        ])];
        let sets = parse_list(&reply).unwrap();
        assert_eq!(sets.keys().copied().collect::<Vec<_>>(), [1, 7]);
        assert_eq!(
            sets[&1],
            [
                ListedDestination {
                    uri: "sip:b".into(),
                    flags: "AP".into(),
                    priority: 5,
                    attrs: "weight=50;duid=b".into(),
                },
                ListedDestination {
                    uri: "sip:a".into(),
                    flags: "AX".into(),
                    priority: 1,
                    attrs: String::new(),
                },
            ]
        );
        assert_eq!(sets[&7][0].flags, "DX");
    }

    #[test]
    fn unexpected_shapes_name_the_culprit() {
        let cases = [
            (vec![], "expected one struct"),
            (vec![Value::Int(1)], "not a struct"),
            (vec![st(vec![("NRSETS", Value::Int(1))])], "has no RECORDS"),
            (
                vec![st(vec![(
                    "RECORDS",
                    st(vec![("SET", st(vec![("ID", s("x"))]))]),
                )])],
                "ID of a SET is string \"x\", not an int",
            ),
            (
                vec![st(vec![(
                    "RECORDS",
                    st(vec![("SET", st(vec![("ID", Value::Int(-1))]))]),
                )])],
                "set id -1 is negative",
            ),
            (
                vec![st(vec![(
                    "RECORDS",
                    st(vec![(
                        "SET",
                        st(vec![
                            ("ID", Value::Int(3)),
                            ("TARGETS", st(vec![("DEST", st(vec![("URI", s("sip:x"))]))])),
                        ]),
                    )]),
                )])],
                "DEST sip:x of set 3 has no FLAGS",
            ),
            (
                vec![st(vec![("RECORDS", st(vec![("OTHER", Value::Int(1))]))])],
                "RECORDS holds 'OTHER'",
            ),
        ];
        for (reply, expected) in cases {
            let err = parse_list(&reply).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }

    #[test]
    fn only_the_throttle_fault_is_an_ongoing_reload() {
        let fault = |message: &str| Error::fault("dispatcher.reload", message);
        assert!(is_ongoing_reload(&fault(ONGOING_RELOAD)));
        assert!(!is_ongoing_reload(&fault("Reload Failed")));
    }
}
