//! `--dns-srv NAME=ID[,OPTION...]`, and how SRV records become dispatcher
//! destinations.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use dsfeed_model::dns::Srv;
use dsfeed_model::{Destination, SetId};

use crate::flag;
use crate::sources::defaults::Defaults;

/// One `--dns-srv`: an SRV name followed as one set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvSpec {
    /// The name asked, without a trailing dot.
    pub name: String,
    /// Whether the name was written with its trailing dot: then no search
    /// domain is tried.
    pub absolute: bool,
    pub set: SetId,
    /// Flags and attrs of every destination, the attrs before the `weight`
    /// the records give; never a priority: the records give it.
    pub defaults: Defaults,
}

impl FromStr for SrvSpec {
    type Err = String;

    /// Parses `NAME=ID[,flags=N][,attrs=K=V;...]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage =
            "expected NAME=ID[,flags=N][,attrs=K=V;K=V], such as _sip._udp.pbx.example.com=1";
        let bad = |reason: String| format!("'{s}': {reason}; {usage}");
        let (name, rest) = s.split_once('=').ok_or_else(|| format!("'{s}': {usage}"))?;
        let absolute = name.ends_with('.');
        let name = name.strip_suffix('.').unwrap_or(name);
        check_name(name).map_err(|reason| bad(format!("name '{name}' {reason}")))?;
        let mut parts = rest.split(',');
        let (set, port) = flag::set_target(parts.next().unwrap_or_default()).map_err(bad)?;
        if port.is_some() {
            return Err(bad(
                "the port comes from each SRV record, not the flag".into()
            ));
        }
        let mut spec = SrvSpec {
            name: name.to_owned(),
            absolute,
            set,
            defaults: Defaults::default(),
        };
        for (key, value) in flag::options(parts).map_err(bad)? {
            if key == "priority" {
                return Err(bad(
                    "the priority comes from each SRV record's priority, not the flag".into(),
                ));
            }
            if !spec.defaults.take(key, value).map_err(bad)? {
                return Err(bad(format!("unknown option '{key}' (known: flags, attrs)")));
            }
        }
        let attrs = spec.defaults.attrs();
        if attrs.split(';').any(|kv| kv.starts_with("weight=")) {
            return Err(bad(
                "attrs may not set weight: it comes from each SRV record's weight".into(),
            ));
        }
        // The set-wide values as Kamailio's loader would read them.
        Destination::new(
            "sip:check:5060",
            spec.defaults.flags(),
            0,
            with_weight(attrs, 100),
        )
        .map_err(|e| format!("'{s}': {e}"))?;
        Ok(spec)
    }
}

impl fmt::Display for SrvSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

/// Checks `name` as a DNS name a query can carry: labels of 1 to 63
/// letters, digits, `-` and `_`, at most 253 characters in all.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > 253 {
        return Err("is longer than 253 characters".into());
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("has an empty label or one longer than 63 characters".into());
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_')))
        {
            return Err(format!("contains '{}'", c.escape_default()));
        }
    }
    Ok(())
}

/// The dispatcher priority of an SRV priority. DNS prefers the *lowest*
/// priority, the dispatcher the *highest* (`ds_select_dst` with algorithm 8
/// takes the first, and sets are ordered highest first), so the scale is
/// turned over: 0 becomes 65535 and 65535 becomes 0. The order is kept and
/// a record's priority never depends on the others'.
pub fn dispatcher_priority(srv_priority: u16) -> u32 {
    u32::from(u16::MAX - srv_priority)
}

/// The `weight` attrs (1 to 100) of records that share one priority.
/// Kamailio reads `weight` as a percentage of the set's traffic, SRV
/// weights are relative within a priority: each record gets its share of
/// 100, at least 1. A record of weight 0 among others gets 1, the
/// smallest share Kamailio knows, as RFC 2782 gives it "a very small
/// chance"; when every weight is 0 the records share equally.
pub fn weights(group: &[u16]) -> Vec<u32> {
    let total: u64 = group.iter().map(|w| u64::from(*w)).sum();
    let count = u64::try_from(group.len()).unwrap_or(u64::MAX).max(1);
    group
        .iter()
        .map(|w| {
            let share = (u64::from(*w) * 100 + total / 2)
                .checked_div(total)
                .unwrap_or(100 / count);
            u32::try_from(share.clamp(1, 100)).unwrap_or(100)
        })
        .collect()
}

/// What one answer comes to: the destinations, and a line per record
/// left out.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Converted {
    pub destinations: Vec<Destination>,
    pub problems: Vec<String>,
}

/// Turns SRV records into destinations: `sip:TARGET:PORT` (with the
/// transport the name's `_proto` label gives, `sips:` for `_sips`), the
/// priority turned over ([`dispatcher_priority`]), the weight as the
/// `weight` attr ([`weights`]). A record Kamailio could not use (a target
/// that is no host name, port 0) is left out and named; a target of `.`
/// ("not available here") is left out silently.
pub fn convert(spec: &SrvSpec, records: &[Srv]) -> Converted {
    let (scheme, params) = uri_form(&spec.name);
    let (flags, attrs) = (spec.defaults.flags(), spec.defaults.attrs());
    let mut out = Converted::default();
    // Usable records by priority; weights are shared among these only.
    let mut groups: BTreeMap<u16, Vec<(&Srv, String)>> = BTreeMap::new();
    for record in records.iter().filter(|r| !r.target.is_empty()) {
        let uri = format!("{scheme}:{}:{}{params}", record.target, record.port);
        let usable = if record.port == 0 {
            Err("port 0".to_owned())
        } else {
            // The widest weight, so a record that fits here fits with any.
            Destination::new(
                uri.as_str(),
                flags,
                dispatcher_priority(record.priority),
                with_weight(attrs, 100),
            )
            .map_err(|err| err.to_string())
        };
        match usable {
            Ok(_) => groups
                .entry(record.priority)
                .or_default()
                .push((record, uri)),
            Err(reason) => out.problems.push(format!(
                "SRV record {} {} {} {} of {} left out: {reason}",
                record.priority, record.weight, record.port, record.target, spec.name
            )),
        }
    }
    for (priority, group) in groups {
        let shares = weights(&group.iter().map(|(r, _)| r.weight).collect::<Vec<_>>());
        for ((_, uri), weight) in group.into_iter().zip(shares) {
            out.destinations.push(
                Destination::new(
                    uri,
                    flags,
                    dispatcher_priority(priority),
                    with_weight(attrs, weight),
                )
                .expect("checked with the widest weight"),
            );
        }
    }
    out
}

fn with_weight(attrs: &str, weight: u32) -> String {
    if attrs.is_empty() {
        format!("weight={weight}")
    } else {
        format!("{attrs};weight={weight}")
    }
}

/// The URI scheme and parameters an SRV name's `_service._proto` labels
/// call for (RFC 3263): `_sips` is `sips:`, `_tcp` and `_sctp` are
/// `;transport=tcp|sctp` (TLS is implied by `sips:`), `_udp` and any other
/// name plain `sip:`.
fn uri_form(name: &str) -> (&'static str, &'static str) {
    let mut labels = name.split('.').map(str::to_ascii_lowercase);
    let service = labels.next().unwrap_or_default();
    let proto = labels.next().unwrap_or_default();
    match (service.as_str(), proto.as_str()) {
        ("_sips", _) => ("sips", ""),
        ("_sip", "_tcp") => ("sip", ";transport=tcp"),
        ("_sip", "_sctp") => ("sip", ";transport=sctp"),
        _ => ("sip", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::assert_refused;
    use dsfeed_model::list;

    fn srv(priority: u16, weight: u16, port: u16, target: &str) -> Srv {
        Srv {
            priority,
            weight,
            port,
            target: target.into(),
            ttl: 60,
        }
    }

    #[test]
    fn flags_parse_and_refuse_what_srv_gives() {
        let spec: SrvSpec = "_sip._udp.pbx.example.com=3,flags=8,attrs=duid=pbx"
            .parse()
            .unwrap();
        assert_eq!(
            (
                spec.name.as_str(),
                spec.set,
                spec.defaults.flags(),
                spec.defaults.attrs()
            ),
            ("_sip._udp.pbx.example.com", 3, 8, "duid=pbx")
        );
        assert!(!spec.absolute);
        assert!("_sip._udp.x.=1".parse::<SrvSpec>().unwrap().absolute);
        assert_refused::<SrvSpec>(&[
            ("_sip._udp.x", "expected NAME=ID"),
            ("_sip._udp.x=one", "set id 'one'"),
            ("_sip._udp.x=1:5060", "port comes from each SRV record"),
            ("_sip._udp.x=1,priority=3", "priority comes from"),
            ("_sip._udp.x=1,attrs=weight=5", "may not set weight"),
            ("_sip._udp.x=1,flags=64", "flags"),
            ("_sip._udp.x=1,ttl=5", "unknown option 'ttl'"),
            ("_sip..x=1", "empty label"),
            ("_sip._udp.x y=1", "contains ' '"),
            ("=1", "is empty"),
        ]);
    }

    #[test]
    fn dns_preference_order_is_kept() {
        assert!(dispatcher_priority(0) > dispatcher_priority(10));
        assert_eq!(dispatcher_priority(0), 65535);
        assert_eq!(dispatcher_priority(65535), 0);
    }

    #[test]
    fn weights_become_shares_of_a_hundred() {
        assert_eq!(weights(&[60, 20, 20]), [60, 20, 20]);
        assert_eq!(weights(&[3, 1]), [75, 25]);
        assert_eq!(weights(&[5000, 0]), [100, 1]);
        assert_eq!(weights(&[0, 0, 0]), [33, 33, 33]);
        assert_eq!(weights(&[7]), [100]);
        assert_eq!(weights(&[1; 300]), [1; 300]);
    }

    #[test]
    fn records_become_destinations_and_bad_ones_only_drop_themselves() {
        let spec: SrvSpec = "_sip._tcp.pbx.example=1,attrs=duid=x".parse().unwrap();
        let converted = convert(
            &spec,
            &[
                srv(10, 3, 5060, "a.pbx.example"),
                srv(10, 1, 5080, "b.pbx.example"),
                srv(20, 0, 5060, "c.pbx.example"),
                srv(20, 0, 0, "zero.pbx.example"),
                srv(20, 0, 5060, "bad\\032name"),
                srv(0, 0, 0, ""),
            ],
        );
        let lines: Vec<_> = converted
            .destinations
            .iter()
            .map(|d| list::line(1, d))
            .collect();
        assert_eq!(
            lines,
            [
                "1 sip:a.pbx.example:5060;transport=tcp 0 65525 duid=x;weight=75",
                "1 sip:b.pbx.example:5080;transport=tcp 0 65525 duid=x;weight=25",
                "1 sip:c.pbx.example:5060;transport=tcp 0 65515 duid=x;weight=100",
            ]
        );
        assert_eq!(converted.problems.len(), 2, "{:?}", converted.problems);
        assert!(
            converted.problems[0]
                .contains("zero.pbx.example of _sip._tcp.pbx.example left out: port 0"),
            "{:?}",
            converted.problems
        );
        assert!(converted.problems[1].contains("bad\\032name"));
    }

    #[test]
    fn the_name_chooses_scheme_and_transport() {
        assert_eq!(uri_form("_sip._udp.x"), ("sip", ""));
        assert_eq!(uri_form("_SIP._TCP.x"), ("sip", ";transport=tcp"));
        assert_eq!(uri_form("_sips._tcp.x"), ("sips", ""));
        assert_eq!(uri_form("_sip._sctp.x"), ("sip", ";transport=sctp"));
        assert_eq!(uri_form("pbx.example"), ("sip", ""));
    }
}
