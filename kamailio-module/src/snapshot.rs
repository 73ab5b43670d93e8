//! The module's view of a feed snapshot: dispatcher sets as the feeder wants
//! them, already checked (see `pb`), and the `dispatcher.list` line format
//! Kamailio's loader reads.

use std::collections::BTreeMap;
use std::fmt::Write as _;

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

/// One checked feed response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The feeder's opaque version (a hash of the content).
    pub version: String,
    pub sets: Sets,
}

/// Appends the list line for `dest` in set `id`, with `flags` in place of
/// the destination's own.
pub fn push_line(out: &mut String, id: SetId, dest: &Destination, flags: u32) {
    let _ = write!(out, "{id} {} {flags} {}", dest.uri, dest.priority);
    if !dest.attrs.is_empty() {
        out.push(' ');
        out.push_str(&dest.attrs);
    }
    out.push('\n');
}

/// The length of that line without its newline.
pub fn line_len(id: SetId, dest: &Destination) -> usize {
    let mut line = String::new();
    push_line(&mut line, id, dest, dest.flags);
    line.len() - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_match_the_dispatcher_list_format() {
        let mut out = String::new();
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
            "1 sip:10.0.0.1:5060 4 5\n2 sip:10.0.0.1:5060 0 5 duid=a;weight=50\n"
        );
        assert_eq!(line_len(1, &dest), "1 sip:10.0.0.1:5060 0 5".len());
    }
}
