//! The `db_text` tables the rtpengine and domain modules load: a directory
//! with one file per table, its first line the column definitions exactly
//! as Kamailio ships them (`utils/kamctl/dbtext/kamailio/`, the same in
//! 5.6.3 and 6.0.1), then one row per line, fields split by `:` with `:`,
//! `\` and line breaks escaped by a backslash. An empty field is NULL.
//!
//! Held parts (an rtpengine set or a did a source cannot vouch for) keep
//! the rows of the table as it is, as held dispatcher sets keep their lines
//! of `dispatcher.list`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::destination::SetId;
use crate::lists::{ListKind, Lists};

/// The header of the rtpengine module's table (`table_name`, default
/// `rtpengine`).
pub const RTPENGINE_HEADER: &str =
    "id(int,auto) setid(int) url(string) weight(int) disabled(int) stamp(int) \n";

/// The header of the domain module's `domain` table.
pub const DOMAIN_HEADER: &str =
    "id(int,auto) domain(string) did(string,null) last_modified(int) \n";

/// The header of the domain module's `domain_attrs` table, which it reads
/// at start beside `domain` (dsfeed creates it empty when it is missing).
pub const DOMAIN_ATTRS_HEADER: &str =
    "id(int,auto) did(string) name(string) type(int) value(string) last_modified(int) \n";

/// The header of the `version` table every database module checks.
pub const VERSION_HEADER: &str = "id(int,auto) table_name(string) table_version(int) \n";

/// The table versions the modules check at start (5.6.3 and 6.0.1 alike).
pub const RTPENGINE_VERSION: u32 = 1;
pub const DOMAIN_VERSION: u32 = 2;
pub const DOMAIN_ATTRS_VERSION: u32 = 1;

/// The table file of `kind` for `lists`, keeping from `previous` (the file
/// as it is) the rows of held rtpengine sets or dids.
pub fn table(kind: ListKind, lists: &Lists, previous: &str) -> String {
    match kind {
        ListKind::Rtpengine => rtpengine_table(lists, previous),
        ListKind::Domain => domain_table(lists, previous),
    }
}

/// The rtpengine table: `id:setid:url:weight:disabled:stamp`.
pub fn rtpengine_table(lists: &Lists, previous: &str) -> String {
    // (setid, url, weight, disabled) in table order.
    let mut rows: BTreeMap<SetId, Vec<(String, String, String)>> = BTreeMap::new();
    for (id, relays) in &lists.rtpengine {
        let set = rows.entry(*id).or_default();
        for relay in relays {
            set.push((
                relay.url().to_owned(),
                relay.weight().to_string(),
                u8::from(relay.disabled()).to_string(),
            ));
        }
    }
    for fields in previous.lines().skip(1).map(fields) {
        if let [_, setid, url, weight, disabled, ..] = fields.as_slice()
            && let Ok(id) = setid.parse::<SetId>()
            && lists.held_rtpengine.contains(&id)
        {
            rows.entry(id)
                .or_default()
                .push((url.clone(), weight.clone(), disabled.clone()));
        }
    }
    let mut out = RTPENGINE_HEADER.to_owned();
    let mut row = 0;
    for (id, set) in rows {
        for (url, weight, disabled) in set {
            row += 1;
            let _ = writeln!(out, "{row}:{id}:{}:{weight}:{disabled}:0", escape(&url));
        }
    }
    out
}

/// The domain table: `id:domain:did:last_modified`, an empty did as NULL.
pub fn domain_table(lists: &Lists, previous: &str) -> String {
    let mut rows: BTreeMap<String, BTreeSet<String>> = lists.domains.clone();
    for fields in previous.lines().skip(1).map(fields) {
        if let [_, name, did, ..] = fields.as_slice()
            && lists.held_domains.contains(did)
        {
            rows.entry(did.clone()).or_default().insert(name.clone());
        }
    }
    let mut out = DOMAIN_HEADER.to_owned();
    let mut row = 0;
    for (did, names) in rows {
        for name in names {
            row += 1;
            let _ = writeln!(out, "{row}:{}:{}:0", escape(&name), escape(&did));
        }
    }
    out
}

/// The `version` table `previous` with a row for each of `tables` it lacks
/// (`None` when it has them all): the modules refuse to start without.
pub fn version_table(previous: Option<&str>, tables: &[(&str, u32)]) -> Option<String> {
    let previous = previous.unwrap_or(VERSION_HEADER);
    let rows: Vec<Vec<String>> = previous.lines().skip(1).map(fields).collect();
    let missing: Vec<&(&str, u32)> = tables
        .iter()
        .filter(|(name, _)| {
            !rows
                .iter()
                .any(|r| r.get(1).map(String::as_str) == Some(*name))
        })
        .collect();
    if missing.is_empty() && previous.starts_with("id(") {
        return None;
    }
    let mut out = if previous.ends_with('\n') {
        previous.to_owned()
    } else {
        format!("{previous}\n")
    };
    let mut next = rows
        .iter()
        .filter_map(|r| r.first()?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    for (name, version) in missing {
        next += 1;
        let _ = writeln!(out, "{next}:{}:{version}", escape(name));
    }
    Some(out)
}

/// Escapes a value as db_text reads it back.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            ':' => out.push_str("\\:"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out
}

/// The fields of one row, unescaped.
fn fields(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        let field = fields.last_mut().expect("never empty");
        match c {
            ':' => fields.push(String::new()),
            '\\' => match chars.next() {
                Some('n') => field.push('\n'),
                Some('r') => field.push('\r'),
                Some('t') => field.push('\t'),
                Some(other) => field.push(other),
                None => {}
            },
            c => field.push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Relay;

    fn lists() -> Lists {
        let mut lists = Lists::default();
        lists.rtpengine.insert(
            2,
            vec![
                Relay::parse_target("10.0.0.2").unwrap(),
                Relay::new("udp6:[2001:db8::1]:22222", 5, true).unwrap(),
            ],
        );
        lists.domains.insert(
            String::new(),
            BTreeSet::from(["sip.example.com".to_owned()]),
        );
        lists
            .domains
            .insert("t1".into(), BTreeSet::from(["[2001:db8::9]".to_owned()]));
        lists
    }

    #[test]
    fn tables_match_kamailios_format() {
        let mut l = lists();
        l.canonicalize();
        assert_eq!(
            rtpengine_table(&l, ""),
            "id(int,auto) setid(int) url(string) weight(int) disabled(int) stamp(int) \n\
             1:2:udp6\\:[2001\\:db8\\:\\:1]\\:22222:5:1:0\n\
             2:2:udp\\:10.0.0.2\\:22222:1:0:0\n"
        );
        assert_eq!(
            domain_table(&l, ""),
            "id(int,auto) domain(string) did(string,null) last_modified(int) \n\
             1:sip.example.com::0\n\
             2:[2001\\:db8\\:\\:9]:t1:0\n"
        );
    }

    #[test]
    fn held_parts_keep_the_rows_of_the_previous_table() {
        let mut held = lists();
        held.held_rtpengine.insert(7);
        held.held_domains.insert("t1".into());
        held.canonicalize();
        let previous = format!(
            "{RTPENGINE_HEADER}1:7:udp\\:10.9.9.9\\:22222:3:0:0\n2:2:udp\\:10.0.0.1\\:22222:1:0:0\n"
        );
        let table = rtpengine_table(&held, &previous);
        assert!(
            table.ends_with("3:7:udp\\:10.9.9.9\\:22222:3:0:0\n"),
            "{table}"
        );
        assert!(!table.contains("10.0.0.1"), "{table}");
        let previous = format!("{DOMAIN_HEADER}1:old.example.com:t1:0\n2:gone.example.com::0\n");
        let table = domain_table(&held, &previous);
        assert!(table.contains(":old.example.com:t1:0\n"), "{table}");
        assert!(!table.contains("[2001"), "{table}");
        assert!(!table.contains("gone"), "{table}");
    }

    #[test]
    fn version_rows_are_added_once() {
        let tables = [("rtpengine", RTPENGINE_VERSION), ("domain", DOMAIN_VERSION)];
        let created = version_table(None, &tables).unwrap();
        assert_eq!(
            created,
            format!("{VERSION_HEADER}1:rtpengine:1\n2:domain:2\n")
        );
        assert_eq!(version_table(Some(&created), &tables), None);
        let shipped = format!("{VERSION_HEADER}0:version:1\n0:acc:5");
        let added = version_table(Some(&shipped), &tables[..1]).unwrap();
        assert_eq!(added, format!("{shipped}\n1:rtpengine:1\n"));
    }
}
