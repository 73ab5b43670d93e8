//! The module's view of a feed snapshot: dispatcher sets as the feeder wants
//! them, already checked (see `pb`); the dispatcher's in-memory list as it
//! really is (`LiveDestination`: bytes and C ints); and the
//! `dispatcher.list` line format Kamailio's loader reads.

use std::collections::BTreeMap;
use std::io::Write as _;

/// A dispatcher set id; Kamailio parses it into a non-negative C `int`.
pub type SetId = u32;

/// The largest set id, flags value or priority Kamailio's loader can parse
/// without overflowing its `int`.
pub const MAX_ID: u32 = i32::MAX as u32;

/// Kamailio reads the list with `fgets` into a 1024-byte buffer: a line and
/// its newline must fit in 1023 bytes or the tail becomes a line of its own.
pub const MAX_LINE: usize = 1022;

/// Flags Kamailio 5.6 knows: 1 inactive, 2 trying, 4 disabled, 8 probing,
/// 16 no DNS resolution at load.
pub const KNOWN_FLAGS: u32 = 31;

/// The flags that describe a destination's runtime state, which probing and
/// `ds_mark_dst` change and a load resets.
pub const STATE_FLAGS: u32 = 1 | 2 | 4 | 8;

/// Flag 4, admin-disabled: the feeder's mark for a draining backend.
pub const FLAG_DISABLED: u32 = 4;

/// One destination of a set, as a `dispatcher.list` line minus its set id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub uri: String,
    pub flags: u32,
    pub priority: u32,
    /// `k=v;k=v` without whitespace; may be empty.
    pub attrs: String,
}

/// Sets by id, each in `dispatcher.list` order (highest priority first).
pub type Sets = BTreeMap<SetId, Vec<Destination>>;

/// One destination as the dispatcher holds it in memory (`ds_dest_t`): the
/// bytes and C ints as they are, not as the feed would have them. A set the
/// feed does not carry is written back from these, and `dispatcher.add` or
/// a database can put there what the feed never would (a negative
/// priority, bytes that are not UTF-8, attrs with spaces).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveDestination {
    pub uri: Vec<u8>,
    pub flags: i32,
    pub priority: i32,
    pub attrs: Vec<u8>,
}

/// The dispatcher's current list by set id (a C `int`, which
/// `dispatcher.add` takes as given), each set in memory order.
pub type LiveSets = BTreeMap<i32, Vec<LiveDestination>>;

/// One checked feed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The feeder's opaque version (a hash of the content).
    pub version: String,
    pub sets: Sets,
}

/// Appends the list line for `dest` in set `id`, with `flags` in place of
/// the destination's own. `pb` has checked that the loader reads it back
/// as it is.
pub fn push_line(out: &mut Vec<u8>, id: SetId, dest: &Destination, flags: u32) {
    push_fields(
        out,
        id,
        dest.uri.as_bytes(),
        flags,
        dest.priority,
        dest.attrs.as_bytes(),
    );
}

/// The length of that line without its newline.
pub fn line_len(id: SetId, dest: &Destination) -> usize {
    let mut line = Vec::new();
    push_line(&mut line, id, dest, dest.flags);
    line.len() - 1
}

/// Appends the list line that loads back into exactly `dest` of set `id`,
/// with `flags` in place of its own; or says why no line can. Kamailio
/// 5.6's loader (`ds_load_list`) reads digits only for the set id, flags
/// and priority (no sign), ends the URI at whitespace or `#` and the attrs
/// at whitespace, takes attrs that start with `#` for a comment, and reads
/// lines into a 1024-byte buffer; a C string ends at NUL.
pub fn push_live_line(
    out: &mut Vec<u8>,
    id: i32,
    dest: &LiveDestination,
    flags: i32,
) -> Result<(), String> {
    let id = u32::try_from(id).map_err(|_| format!("its set id {id} is negative"))?;
    let flags = u32::try_from(flags).map_err(|_| format!("its flags {flags} are negative"))?;
    let priority = u32::try_from(dest.priority).map_err(|_| {
        format!(
            "its priority {} is negative, and the list loader reads digits only",
            dest.priority
        )
    })?;
    let ends_a_field = |b: &u8| matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0);
    if dest.uri.is_empty() {
        return Err("its URI is empty".into());
    }
    if dest.uri.iter().any(|b| ends_a_field(b) || *b == b'#') {
        return Err("its URI contains whitespace, '#' or NUL".into());
    }
    if dest.attrs.iter().any(ends_a_field) {
        return Err("its attrs contain whitespace or NUL".into());
    }
    if dest.attrs.first() == Some(&b'#') {
        return Err("its attrs start with '#', which the loader reads as a comment".into());
    }
    let start = out.len();
    push_fields(out, id, &dest.uri, flags, priority, &dest.attrs);
    let len = out.len() - start - 1;
    if len > MAX_LINE {
        out.truncate(start);
        return Err(format!(
            "its dispatcher.list line would be {len} bytes, over the loader's {MAX_LINE}"
        ));
    }
    Ok(())
}

fn push_fields(out: &mut Vec<u8>, id: u32, uri: &[u8], flags: u32, priority: u32, attrs: &[u8]) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{id} ");
    out.extend_from_slice(uri);
    let _ = write!(out, " {flags} {priority}");
    if !attrs.is_empty() {
        out.push(b' ');
        out.extend_from_slice(attrs);
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_the_dispatcher_list_format() {
        let mut out = Vec::new();
        let dest = Destination {
            uri: "sip:10.0.0.1:5060".into(),
            flags: 0,
            priority: 5,
            attrs: String::new(),
        };
        push_line(&mut out, 1, &dest, 4);
        let with_attrs = Destination {
            attrs: "duid=a;weight=50".into(),
            ..dest.clone()
        };
        push_line(&mut out, 2, &with_attrs, 0);
        assert_eq!(
            out,
            b"1 sip:10.0.0.1:5060 4 5\n2 sip:10.0.0.1:5060 0 5 duid=a;weight=50\n"
        );
        assert_eq!(line_len(1, &dest), "1 sip:10.0.0.1:5060 0 5".len());
    }

    fn live(uri: &[u8], priority: i32, attrs: &[u8]) -> LiveDestination {
        LiveDestination {
            uri: uri.to_vec(),
            flags: 0,
            priority,
            attrs: attrs.to_vec(),
        }
    }

    #[test]
    fn live_lines_keep_their_bytes() {
        let mut out = Vec::new();
        push_live_line(
            &mut out,
            9,
            &live(b"sip:caf\xe9@10.0.0.9", 3, b"name=caf\xe9"),
            8,
        )
        .unwrap();
        assert_eq!(out, b"9 sip:caf\xe9@10.0.0.9 8 3 name=caf\xe9\n");
    }

    #[test]
    fn live_lines_the_loader_would_misread_are_refused() {
        let cases: [(i32, LiveDestination, i32, &str); 8] = [
            (-1, live(b"sip:a", 0, b""), 0, "set id -1 is negative"),
            (9, live(b"sip:a", -5, b""), 0, "priority -5 is negative"),
            (9, live(b"sip:a", 0, b""), -1, "flags -1"),
            (
                9,
                live(b"sip:a", 0, b"a=1 b=2"),
                0,
                "attrs contain whitespace",
            ),
            (
                9,
                live(b"sip:a", 0, b"a=1\0"),
                0,
                "attrs contain whitespace or NUL",
            ),
            (9, live(b"sip:a", 0, b"#a=1"), 0, "comment"),
            (9, live(b"sip:a#b", 0, b""), 0, "URI contains"),
            (
                9,
                live(b"sip:a", 0, &[b'x'; 1100]),
                0,
                "over the loader's 1022",
            ),
        ];
        for (id, dest, flags, expected) in cases {
            let mut out = b"kept\n".to_vec();
            let err = push_live_line(&mut out, id, &dest, flags).unwrap_err();
            assert!(err.contains(expected), "{err}");
            assert_eq!(out, b"kept\n", "nothing half-written");
        }
    }
}
