//! The snapshot model: dispatcher sets as Kamailio sees them, in one canonical
//! form whose version is a hash of its content.
//!
//! Canonical means sorted and de-duplicated, so that two feeders watching the
//! same truth render byte-identical lists and publish the same version, and a
//! Kamailio moving between them re-applies nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::net::Ipv6Addr;

use sha2::{Digest, Sha256};

use crate::error::InvalidDestination;

/// A dispatcher set id. Kamailio parses it as a non-negative C `int`.
pub type SetId = u32;

/// The largest set id, flags value or priority Kamailio's loader can parse
/// without overflowing its `int`.
pub const MAX_INT: u32 = i32::MAX as u32;

/// Kamailio reads `dispatcher.list` with `fgets` into a 1024-byte buffer, so a
/// line and its newline must fit in 1023 bytes or the tail becomes a new line.
pub const MAX_LINE: usize = 1022;

/// The room a destination may take on its line: [`MAX_LINE`] less the
/// widest set id and its separator (`2147483647 `). Checking each
/// destination against it on its own means a valid destination fits in
/// any set, so no merge of valid views can produce a line Kamailio cuts in
/// two, and one long value is dropped where it enters instead of freezing
/// the whole snapshot.
pub const MAX_DESTINATION_LINE: usize = MAX_LINE - "2147483647 ".len();

/// Destination flags Kamailio 5.6 knows: inactive, trying, disabled, probing,
/// skip-DNS-at-load.
pub const KNOWN_FLAGS: u32 = 1 | 2 | 4 | 8 | 16;

/// Flag 4: selection skips the destination but `ds_is_from_list` still
/// matches it, the right mark for a draining backend.
pub const FLAG_DISABLED: u32 = 4;

/// The default SIP port, used when a host is given without one.
pub const DEFAULT_PORT: u16 = 5060;

/// One dispatcher destination: one line of `dispatcher.list` minus its set id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub uri: String,
    pub flags: u32,
    pub priority: u32,
    /// `k=v;k=v` with no whitespace, `#` or control characters; may be empty.
    pub attrs: String,
}

impl Destination {
    /// Builds a destination after checking every field the way Kamailio's
    /// loader would read it back.
    pub fn new(
        uri: impl Into<String>,
        flags: u32,
        priority: u32,
        attrs: impl Into<String>,
    ) -> Result<Self, InvalidDestination> {
        let dest = Destination {
            uri: uri.into(),
            flags,
            priority,
            attrs: attrs.into(),
        };
        dest.validate()?;
        Ok(dest)
    }

    /// A destination with default flags, priority and attrs from either a full
    /// `sip:`/`sips:` URI or `HOST[:PORT]` (IPv6 in brackets, or bare without
    /// a port).
    pub fn parse_target(target: &str) -> Result<Self, InvalidDestination> {
        Destination::new(target_to_uri(target)?, 0, 0, "")
    }

    fn validate(&self) -> Result<(), InvalidDestination> {
        validate_uri(&self.uri)?;
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(InvalidDestination::Flags(self.flags));
        }
        if self.priority > MAX_INT {
            return Err(InvalidDestination::Priority(self.priority));
        }
        validate_attrs(&self.attrs)?;
        let len = render_fields(self).len();
        if len > MAX_DESTINATION_LINE {
            return Err(InvalidDestination::LineTooLong {
                uri: self.uri.clone(),
                len,
            });
        }
        Ok(())
    }

    /// Orders destinations within a set: highest priority first, which is
    /// the order in which Kamailio's loader inserts each line at the head of
    /// its list instead of walking it (DESIGN.md §3), then by URI.
    fn canonical_cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then_with(|| self.uri.cmp(&other.uri))
            .then_with(|| self.flags.cmp(&other.flags))
            .then_with(|| self.attrs.cmp(&other.attrs))
    }
}

/// Sets as one source (or the merge of all) sees them.
pub type SetMap = BTreeMap<SetId, Vec<Destination>>;

/// Checks a set id against the range Kamailio's loader accepts.
pub fn validate_set_id(id: u64) -> Result<SetId, InvalidDestination> {
    u32::try_from(id)
        .ok()
        .filter(|id| *id <= MAX_INT)
        .ok_or(InvalidDestination::SetId(id))
}

/// The canonical, versioned content of every set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    sets: SetMap,
    /// Sets no source can vouch for yet (a Consul service whose first answer
    /// after a restart was suspiciously empty): they carry no content, and
    /// every sink keeps what it already has for them.
    held: BTreeSet<SetId>,
    version: String,
}

impl Snapshot {
    /// Canonicalizes `sets`: destinations sorted, a URI listed twice in one
    /// set kept once (the entry that sorts first wins), and empty sets kept,
    /// since an empty set is real data (a Service with no endpoints). It
    /// cannot fail: every [`Destination`] fits Kamailio's line in any set.
    pub fn new(mut sets: SetMap) -> Self {
        for dests in sets.values_mut() {
            dests.sort_by(Destination::canonical_cmp);
            let mut seen = std::collections::HashSet::new();
            dests.retain(|d| seen.insert(d.uri.clone()));
        }
        let version = version_of(&sets, &BTreeSet::new());
        Snapshot {
            sets,
            held: BTreeSet::new(),
            version,
        }
    }

    /// Like [`Snapshot::new`], with the sets in `held` marked as held: their
    /// content, if any, is dropped, and sinks keep what they have for them.
    pub fn with_held(sets: SetMap, held: BTreeSet<SetId>) -> Self {
        let mut snapshot = Snapshot::new(sets);
        snapshot.sets.retain(|id, _| !held.contains(id));
        snapshot.version = version_of(&snapshot.sets, &held);
        snapshot.held = held;
        snapshot
    }

    /// The hex SHA-256 prefix of the rendered sets: equal content, equal
    /// version, on every feeder.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The sets with known content; held sets are not among them.
    pub fn sets(&self) -> &SetMap {
        &self.sets
    }

    /// The ids of the held sets.
    pub fn held(&self) -> &BTreeSet<SetId> {
        &self.held
    }

    /// The sets among `ids` that exist, as a snapshot of their own: a client
    /// that asks for some sets gets a version that changes only when those
    /// sets do, and is the same on every feeder.
    pub fn filtered(&self, ids: &BTreeSet<SetId>) -> Snapshot {
        // A subset of a canonical snapshot is canonical and valid already.
        let sets: SetMap = self
            .sets
            .iter()
            .filter(|(id, _)| ids.contains(id))
            .map(|(id, dests)| (*id, dests.clone()))
            .collect();
        let held = self.held.intersection(ids).copied().collect();
        let version = version_of(&sets, &held);
        Snapshot {
            sets,
            held,
            version,
        }
    }

    pub fn destination_count(&self) -> usize {
        self.sets.values().map(Vec::len).sum()
    }

    /// The content of `dispatcher.list`: a header naming the version, then
    /// one line per destination. Held sets are left out; see
    /// [`Snapshot::to_dispatcher_list_keeping`].
    pub fn to_dispatcher_list(&self) -> String {
        self.to_dispatcher_list_keeping("")
    }

    /// The content of `dispatcher.list`, with the lines of held sets taken
    /// from `previous` (the list file as it is), so a held set keeps what
    /// Kamailio would load from the file today.
    pub fn to_dispatcher_list_keeping(&self, previous: &str) -> String {
        let mut out = format!(
            "# dispatcher.list generated by dsfeed, version {}\n",
            self.version
        );
        let mut kept: BTreeMap<SetId, Vec<&str>> = BTreeMap::new();
        for line in previous.lines() {
            let id = line.split_whitespace().next().and_then(|w| w.parse().ok());
            if let Some(id) = id.filter(|id| self.held.contains(id)) {
                kept.entry(id).or_default().push(line);
            }
        }
        let ids: BTreeSet<SetId> = self.sets.keys().chain(kept.keys()).copied().collect();
        for id in ids {
            for dest in self.sets.get(&id).into_iter().flatten() {
                out.push_str(&render_line(id, dest));
                out.push('\n');
            }
            for line in kept.get(&id).into_iter().flatten() {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "version {} ({} sets, {} destinations",
            self.version,
            self.sets.len(),
            self.destination_count()
        )?;
        if !self.held.is_empty() {
            write!(f, ", held sets {:?}", self.held)?;
        }
        f.write_str(")")
    }
}

fn version_of(sets: &SetMap, held: &BTreeSet<SetId>) -> String {
    let mut body = String::new();
    render_body(sets, &mut body);
    // Empty and held sets render no line but are still part of the truth.
    for (id, dests) in sets {
        if dests.is_empty() {
            let _ = writeln!(body, "# empty {id}");
        }
    }
    for id in held {
        let _ = writeln!(body, "# held {id}");
    }
    let digest = Sha256::digest(body.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn render_body(sets: &SetMap, out: &mut String) {
    for (id, dests) in sets {
        for dest in dests {
            out.push_str(&render_line(*id, dest));
            out.push('\n');
        }
    }
}

fn render_line(id: SetId, dest: &Destination) -> String {
    format!("{id} {}", render_fields(dest))
}

/// A destination's part of its line: `uri flags priority [attrs]`.
fn render_fields(dest: &Destination) -> String {
    let mut line = format!("{} {} {}", dest.uri, dest.flags, dest.priority);
    if !dest.attrs.is_empty() {
        line.push(' ');
        line.push_str(&dest.attrs);
    }
    line
}

/// Turns `HOST[:PORT]` into `sip:HOST:PORT`, or checks and keeps a full URI.
fn target_to_uri(target: &str) -> Result<String, InvalidDestination> {
    let bad = |reason: &str| InvalidDestination::Target {
        target: target.to_owned(),
        reason: reason.to_owned(),
    };
    if target.is_empty() {
        return Err(bad("empty host"));
    }
    if has_scheme(target) {
        return Ok(target.to_owned());
    }
    // A bare IPv6 address cannot carry a port: every colon is part of it.
    if target.parse::<Ipv6Addr>().is_ok() {
        return Ok(format!("sip:[{target}]:{DEFAULT_PORT}"));
    }
    let (host, port) = split_host_port(target).map_err(|r| bad(&r))?;
    Ok(format!("sip:{host}:{}", port.unwrap_or(DEFAULT_PORT)))
}

fn has_scheme(s: &str) -> bool {
    let lower = s.get(..5).map(str::to_ascii_lowercase);
    matches!(lower.as_deref(), Some("sips:"))
        || s.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("sip:"))
}

/// Splits `host[:port]` where host may be a bracketed IPv6 address.
fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
    let (host, rest) = if let Some(inner) = s.strip_prefix('[') {
        let end = inner.find(']').ok_or("unclosed '[' in IPv6 address")?;
        let addr = &inner[..end];
        addr.parse::<Ipv6Addr>()
            .map_err(|_| format!("'{addr}' is not an IPv6 address"))?;
        (&s[..end + 2], &inner[end + 1..])
    } else {
        match s.find(':') {
            Some(i) if s[i + 1..].contains(':') => {
                return Err(
                    "IPv6 addresses with a port must be written in brackets, as [2001:db8::1]:5060"
                        .into(),
                );
            }
            Some(i) => (&s[..i], &s[i..]),
            None => (s, ""),
        }
    };
    if !host.starts_with('[') {
        validate_hostname(host)?;
    }
    let port = match rest {
        "" => None,
        p => Some(parse_port(
            p.strip_prefix(':')
                .ok_or_else(|| format!("unexpected '{p}' after host"))?,
        )?),
    };
    Ok((host, port))
}

fn parse_port(p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("port '{p}' is not a number from 1 to 65535")),
        Ok(port) => Ok(port),
    }
}

fn validate_hostname(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("empty host".into());
    }
    if let Some(c) = host
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!("host '{host}' contains '{}'", c.escape_default()));
    }
    Ok(())
}

/// Checks `sip[s]:[user@]host[:port][;params][?headers]` with no character
/// that would end the URI early in Kamailio's loader.
fn validate_uri(uri: &str) -> Result<(), InvalidDestination> {
    let bad = |reason: String| InvalidDestination::Uri {
        uri: uri.to_owned(),
        reason,
    };
    if let Some(c) = uri
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '#')
    {
        return Err(bad(format!("contains '{}'", c.escape_default())));
    }
    if !has_scheme(uri) {
        return Err(bad("must start with sip: or sips:".into()));
    }
    let rest = &uri[uri.find(':').map_or(0, |i| i + 1)..];
    let hostport_end = rest.find([';', '?']).unwrap_or(rest.len());
    let hostport = &rest[..hostport_end];
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    split_host_port(hostport).map_err(bad)?;
    Ok(())
}

fn validate_attrs(attrs: &str) -> Result<(), InvalidDestination> {
    if let Some(c) = attrs
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || *c == '#')
    {
        return Err(InvalidDestination::Attrs {
            attrs: attrs.to_owned(),
            reason: format!("contains '{}'", c.escape_default()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(uri: &str, priority: u32) -> Destination {
        Destination::new(uri, 0, priority, "").unwrap()
    }

    #[test]
    fn targets_become_uris() {
        let cases = [
            ("10.0.0.1", "sip:10.0.0.1:5060"),
            ("10.0.0.1:5080", "sip:10.0.0.1:5080"),
            ("asterisk.voice.svc", "sip:asterisk.voice.svc:5060"),
            ("[2001:db8::1]", "sip:[2001:db8::1]:5060"),
            ("[2001:db8::1]:5080", "sip:[2001:db8::1]:5080"),
            ("2001:db8::1", "sip:[2001:db8::1]:5060"),
            (
                "sip:10.0.0.1:5060;transport=tcp",
                "sip:10.0.0.1:5060;transport=tcp",
            ),
            ("sips:pbx.example.com", "sips:pbx.example.com"),
        ];
        for (target, uri) in cases {
            assert_eq!(
                Destination::parse_target(target).unwrap().uri,
                uri,
                "{target}"
            );
        }
    }

    #[test]
    fn bad_targets_name_the_culprit() {
        for (target, needle) in [
            ("", "empty host"),
            ("10.0.0.1:99999", "port '99999'"),
            ("10.0.0.1:0", "port '0'"),
            ("2001:db8::1:5060x", "brackets"),
            ("[2001:db8::1", "unclosed"),
            ("[nope]:5060", "not an IPv6"),
            ("host name", "contains ' '"),
            ("sip:10.0.0.1 x", "contains ' '"),
            ("sip:[::1", "unclosed"),
            ("sip:10.0.0.1#c", "contains '#'"),
        ] {
            let err = Destination::parse_target(target).unwrap_err().to_string();
            assert!(err.contains(needle), "{target:?}: {err}");
        }
    }

    #[test]
    fn attrs_and_flags_are_checked() {
        assert!(Destination::new("sip:a:5060", 0, 0, "weight=50;duid=b").is_ok());
        for attrs in ["a=1 b=2", "a=1\nb", "a=#", "a=\t"] {
            assert!(
                Destination::new("sip:a:5060", 0, 0, attrs).is_err(),
                "{attrs:?}"
            );
        }
        assert!(Destination::new("sip:a:5060", 32, 0, "").is_err());
        assert!(Destination::new("sip:a:5060", 0, MAX_INT + 1, "").is_err());
        assert!(validate_set_id(u64::from(MAX_INT) + 1).is_err());
        assert_eq!(validate_set_id(7).unwrap(), 7);
    }

    #[test]
    fn canonical_order_dedup_and_version() {
        let a = Snapshot::new(SetMap::from([
            (2, vec![dest("sip:b:5060", 0), dest("sip:a:5060", 0)]),
            (
                1,
                vec![
                    dest("sip:low:5060", 1),
                    dest("sip:high:5060", 9),
                    dest("sip:low:5060", 1),
                ],
            ),
        ]));
        let b = Snapshot::new(SetMap::from([
            (1, vec![dest("sip:high:5060", 9), dest("sip:low:5060", 1)]),
            (2, vec![dest("sip:a:5060", 0), dest("sip:b:5060", 0)]),
        ]));
        assert_eq!(a, b);
        assert_eq!(a.version().len(), 16);
        let body: Vec<_> = a
            .to_dispatcher_list()
            .lines()
            .skip(1)
            .map(str::to_owned)
            .collect();
        assert_eq!(
            body,
            [
                "1 sip:high:5060 0 9",
                "1 sip:low:5060 0 1",
                "2 sip:a:5060 0 0",
                "2 sip:b:5060 0 0"
            ]
        );
        let c = Snapshot::new(SetMap::from([(1, vec![dest("sip:high:5060", 9)])]));
        assert_ne!(a.version(), c.version());
    }

    #[test]
    fn an_empty_set_changes_the_version() {
        let none = Snapshot::new(SetMap::new());
        let empty = Snapshot::new(SetMap::from([(1, vec![])]));
        assert_ne!(none.version(), empty.version());
        assert_eq!(empty.to_dispatcher_list().lines().count(), 1);
    }

    #[test]
    fn a_filtered_snapshot_has_its_own_stable_version() {
        let full = Snapshot::new(SetMap::from([
            (1, vec![dest("sip:a:5060", 0)]),
            (2, vec![dest("sip:b:5060", 0)]),
            (3, vec![]),
        ]));
        let only_two = full.filtered(&BTreeSet::from([2, 9]));
        assert_eq!(only_two.sets().keys().copied().collect::<Vec<_>>(), [2]);
        let direct = Snapshot::new(SetMap::from([(2, vec![dest("sip:b:5060", 0)])]));
        assert_eq!(only_two, direct);
        assert_ne!(only_two.version(), full.version());
        assert_eq!(full.filtered(&BTreeSet::from([1, 2, 3])), full);
    }

    #[test]
    fn held_sets_keep_the_lines_of_the_previous_file() {
        let sets = SetMap::from([
            (1, vec![dest("sip:a:5060", 0)]),
            (3, vec![dest("sip:c:5060", 0)]),
        ]);
        let held = Snapshot::with_held(sets.clone(), BTreeSet::from([2, 3]));
        assert_eq!(held.sets().keys().copied().collect::<Vec<_>>(), [1]);
        assert_ne!(held.version(), Snapshot::new(sets).version());
        let previous = "# old\n1 sip:old:5060 0 0\n2 sip:b:5060 8 0 duid=b\n2 sip:b2:5060 0 0\n";
        let list = held.to_dispatcher_list_keeping(previous);
        let body: Vec<&str> = list.lines().skip(1).collect();
        assert_eq!(
            body,
            [
                "1 sip:a:5060 0 0",
                "2 sip:b:5060 8 0 duid=b",
                "2 sip:b2:5060 0 0"
            ]
        );
        assert_eq!(
            held.filtered(&BTreeSet::from([2])).held(),
            &BTreeSet::from([2])
        );
        assert!(held.to_string().contains("held sets {2, 3}"), "{held}");
    }

    #[test]
    fn a_destination_fits_kamailios_buffer_in_any_set() {
        let uri = "sip:10.0.0.1:5060";
        // "sip:10.0.0.1:5060 0 0 " is 22 bytes; the widest set id takes 11.
        let fits = format!("x={}", "a".repeat(MAX_DESTINATION_LINE - 22 - 2));
        let dest = Destination::new(uri, 0, 0, fits).unwrap();
        let widest = Snapshot::new(SetMap::from([(MAX_INT, vec![dest])]));
        let line = widest.to_dispatcher_list().lines().nth(1).unwrap().len();
        assert_eq!(line, MAX_LINE);
        let long = format!("x={}", "a".repeat(MAX_DESTINATION_LINE - 22 - 1));
        let err = Destination::new(uri, 0, 0, long).unwrap_err();
        assert!(err.to_string().contains("1024-byte"), "{err}");
        let host = format!("sip:{}.example.com", "a".repeat(1000));
        assert!(Destination::parse_target(&host).is_err());
    }
}
