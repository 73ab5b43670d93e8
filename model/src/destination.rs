//! One dispatcher destination, and every rule about what Kamailio's loader
//! reads back as it was written.

use std::net::Ipv6Addr;

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

/// Destination flags Kamailio knows (5.6 and 6.0 alike): 1 inactive,
/// 2 trying, 4 disabled, 8 probing, 16 skip DNS at load.
pub const KNOWN_FLAGS: u32 = 1 | 2 | 4 | 8 | 16;

/// The flags that describe a destination's runtime state, which probing and
/// `ds_mark_dst` change and a load resets.
pub const STATE_FLAGS: u32 = 1 | 2 | 4 | 8;

/// Flag 4: selection skips the destination but `ds_is_from_list` still
/// matches it, the right mark for a draining backend.
pub const FLAG_DISABLED: u32 = 4;

/// The default SIP port, used when a host is given without one.
pub const DEFAULT_PORT: u16 = 5060;

/// One dispatcher destination: one line of `dispatcher.list` minus its set id.
/// Built only through [`Destination::new`] or [`Destination::parse_target`],
/// so every value in a snapshot is one Kamailio reads back unchanged, in
/// any set.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    uri: String,
    flags: u32,
    priority: u32,
    attrs: String,
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

    /// The SIP URI, such as `sip:10.0.0.1:5060`.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The URI's host: a name or an IPv4 address as written, an IPv6
    /// address without its brackets.
    pub fn host(&self) -> &str {
        let host = uri_host_port(&self.uri).0;
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// The URI's port; `None` when it names none (Kamailio then uses the
    /// scheme's default, and `ds_is_from_list` matches any port).
    pub fn port(&self) -> Option<u16> {
        uri_host_port(&self.uri).1
    }

    /// The dispatcher flags ([`KNOWN_FLAGS`]).
    pub fn flags(&self) -> u32 {
        self.flags
    }

    /// The priority: higher is tried first.
    pub fn priority(&self) -> u32 {
        self.priority
    }

    /// `k=v;k=v` with no whitespace, `#` or control characters; may be empty.
    pub fn attrs(&self) -> &str {
        &self.attrs
    }

    /// The same destination with other flags, checked again.
    pub fn with_flags(&self, flags: u32) -> Result<Self, InvalidDestination> {
        Destination::new(self.uri.clone(), flags, self.priority, self.attrs.clone())
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
        let len = self.line_fields().len();
        if len > MAX_DESTINATION_LINE {
            return Err(InvalidDestination::LineTooLong {
                uri: self.uri.clone(),
                len,
            });
        }
        Ok(())
    }

    /// The destination's part of its `dispatcher.list` line:
    /// `uri flags priority [attrs]`.
    pub(crate) fn line_fields(&self) -> String {
        let mut line = format!("{} {} {}", self.uri, self.flags, self.priority);
        if !self.attrs.is_empty() {
            line.push(' ');
            line.push_str(&self.attrs);
        }
        line
    }

    /// Orders destinations within a set: highest priority first, which is
    /// the order in which Kamailio's loader inserts each line at the head of
    /// its list instead of walking it, then by URI.
    pub(crate) fn canonical_cmp(&self, other: &Self) -> std::cmp::Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then_with(|| self.uri.cmp(&other.uri))
            .then_with(|| self.flags.cmp(&other.flags))
            .then_with(|| self.attrs.cmp(&other.attrs))
    }
}

/// Checks a set id against the range Kamailio's loader accepts.
pub fn validate_set_id(id: u64) -> Result<SetId, InvalidDestination> {
    u32::try_from(id)
        .ok()
        .filter(|id| *id <= MAX_INT)
        .ok_or(InvalidDestination::SetId(id))
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

/// Splits `host[:port]` where host is a name, an IPv4 address or an IPv6
/// address in brackets (kept with its brackets): the one host and port
/// rule for SIP URIs, feed endpoints and the feeder's other addresses.
pub fn split_host_port(s: &str) -> Result<(&str, Option<u16>), String> {
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

/// The host (IPv6 in brackets) and port of a URI that passed
/// [`validate_uri`].
fn uri_host_port(uri: &str) -> (&str, Option<u16>) {
    let rest = &uri[uri.find(':').map_or(0, |i| i + 1)..];
    let hostport = &rest[..rest.find([';', '?']).unwrap_or(rest.len())];
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    split_host_port(hostport).unwrap_or((hostport, None))
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
                Destination::parse_target(target).unwrap().uri(),
                uri,
                "{target}"
            );
        }
    }

    #[test]
    fn hosts_and_ports_are_read_back_from_the_uri() {
        for (target, host, port) in [
            ("10.0.0.1", "10.0.0.1", Some(5060)),
            ("[2001:db8::1]:5080", "2001:db8::1", Some(5080)),
            (
                "sip:user@pbx.example:5061;transport=tls",
                "pbx.example",
                Some(5061),
            ),
            ("sips:pbx.example?x=1", "pbx.example", None),
        ] {
            let dest = Destination::parse_target(target).unwrap();
            assert_eq!((dest.host(), dest.port()), (host, port), "{target}");
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
            ("sip:", "empty host"),
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
        let dest = Destination::parse_target("10.0.0.1").unwrap();
        assert_eq!(dest.with_flags(4).unwrap().flags(), 4);
        assert!(dest.with_flags(64).is_err());
    }

    #[test]
    fn a_destination_fits_kamailios_buffer_in_any_set() {
        let uri = "sip:10.0.0.1:5060";
        // "sip:10.0.0.1:5060 0 0 " is 22 bytes.
        let fits = format!("x={}", "a".repeat(MAX_DESTINATION_LINE - 22 - 2));
        assert!(Destination::new(uri, 0, 0, fits).is_ok());
        let long = format!("x={}", "a".repeat(MAX_DESTINATION_LINE - 22 - 1));
        let err = Destination::new(uri, 0, 0, long).unwrap_err();
        assert!(err.to_string().contains("1024-byte"), "{err}");
        let host = format!("sip:{}.example.com", "a".repeat(1000));
        assert!(Destination::parse_target(&host).is_err());
    }
}
