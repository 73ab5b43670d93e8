//! Just enough of the DNS for the module to resolve its feeder's name
//! without blocking: the feed process is one thread inside Kamailio, where
//! `getaddrinfo` can block for minutes (search domains × attempts ×
//! timeouts) and a resolver thread is not allowed. This part is the pure
//! one — `/etc/resolv.conf` and `/etc/hosts` as glibc reads them, the A and
//! AAAA queries to send, the answers — and the module sends the queries
//! over its own async UDP sockets under one deadline. The feeder's DNS SRV
//! source asks SRV questions with the same parts ([`parse_srv_answer`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Record types asked for.
pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;

/// The response codes the parsers tell apart; any other is a failure to
/// ask another server about.
const NOERROR: u8 = 0;
const NXDOMAIN: u8 = 3;

/// The largest name the DNS carries, in presentation form (RFC 1035 §2.3.4
/// allows 255 octets on the wire, which is 253 characters written out).
const MAX_NAME: usize = 253;

/// What `/etc/resolv.conf` says, with glibc's defaults and limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    /// At most three, as glibc uses.
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub ndots: usize,
    /// Seconds per query, at most 30.
    pub timeout: u64,
    /// Rounds over the nameservers, at most 5.
    pub attempts: usize,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf {
            nameservers: Vec::new(),
            search: Vec::new(),
            ndots: 1,
            timeout: 5,
            attempts: 2,
        }
    }
}

impl ResolvConf {
    /// Parses the text of `/etc/resolv.conf`; unknown lines are ignored, as
    /// glibc does. Without a nameserver, the local one is asked.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(ip) = words.next().and_then(|w| w.parse().ok())
                        && conf.nameservers.len() < 3
                    {
                        conf.nameservers.push(ip);
                    }
                }
                Some("search") | Some("domain") => {
                    conf.search = words
                        .filter(|d| *d != ".")
                        .take(32)
                        .map(|d| d.trim_end_matches('.').to_owned())
                        .collect();
                }
                Some("options") => {
                    for option in words {
                        let (name, value) = option.split_once(':').unwrap_or((option, ""));
                        let value = value.parse::<usize>().ok();
                        match (name, value) {
                            ("ndots", Some(n)) => conf.ndots = n.min(15),
                            ("timeout", Some(n)) => conf.timeout = (n as u64).clamp(1, 30),
                            ("attempts", Some(n)) => conf.attempts = n.clamp(1, 5),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        if conf.nameservers.is_empty() {
            conf.nameservers.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
        }
        conf
    }

    /// The names to ask for `host`, in glibc's order: with at least `ndots`
    /// dots the name as it is first, else the search domains first.
    pub fn candidates(&self, host: &str) -> Vec<String> {
        if let Some(absolute) = host.strip_suffix('.') {
            return vec![absolute.to_owned()];
        }
        let searched = self.search.iter().map(|d| format!("{host}.{d}"));
        if host.matches('.').count() >= self.ndots {
            std::iter::once(host.to_owned()).chain(searched).collect()
        } else {
            searched.chain(std::iter::once(host.to_owned())).collect()
        }
    }
}

/// The addresses `/etc/hosts` gives `host` (case-insensitive), in file order.
pub fn hosts_lookup(text: &str, host: &str) -> Vec<IpAddr> {
    let host = host.trim_end_matches('.');
    text.lines()
        .filter_map(|line| {
            let mut words = line.split('#').next()?.split_whitespace();
            let ip: IpAddr = words.next()?.parse().ok()?;
            words
                .any(|name| name.eq_ignore_ascii_case(host))
                .then_some(ip)
        })
        .collect()
}

/// A query for `name` and `qtype` with `id`, recursion desired; `None` if
/// the name cannot be a DNS name (an empty or over-long label).
pub fn query(id: u16, name: &str, qtype: u16) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(name.len() + 18);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    if out.len() > 12 + 255 {
        return None;
    }
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    Some(out)
}

/// What one answer said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The addresses found (A and AAAA records of the answer section,
    /// whatever CNAMEs led there); may be empty (no record of that type).
    Addresses(Vec<IpAddr>),
    /// The name does not exist (NXDOMAIN): try the next candidate.
    NoSuchName,
    /// The server failed or refused (SERVFAIL, REFUSED...): ask another.
    Failed(u8),
}

/// Parses the answer to query `id`; `Err` for anything else (another id, a
/// query, a malformed message), which is ignored like a stray datagram.
pub fn parse_answer(id: u16, msg: &[u8]) -> Result<Answer, &'static str> {
    let header = answer_header(id, msg)?;
    Ok(match rcode(header) {
        NOERROR => Answer::Addresses(records(msg, header, address)?),
        NXDOMAIN => Answer::NoSuchName,
        code => Answer::Failed(code),
    })
}

/// The address an A or AAAA record holds; `None` for any other record
/// (the CNAMEs that led there).
fn address(record: Record<'_>) -> Result<Option<IpAddr>, &'static str> {
    let data = record.data;
    Ok(match (record.rtype, record.class, data.len()) {
        (TYPE_A, 1, 4) => Some(IpAddr::V4(Ipv4Addr::new(
            data[0], data[1], data[2], data[3],
        ))),
        (TYPE_AAAA, 1, 16) => {
            let octets: [u8; 16] = data.try_into().map_err(|_| "bad AAAA")?;
            Some(IpAddr::V6(Ipv6Addr::from(octets)))
        }
        _ => None,
    })
}

/// The header of the answer to query `id`; `Err` for another id or a
/// query, which both parsers ignore.
fn answer_header(id: u16, msg: &[u8]) -> Result<&[u8], &'static str> {
    let header = msg.get(..12).ok_or("shorter than a header")?;
    if u16::from_be_bytes([header[0], header[1]]) != id {
        return Err("another id");
    }
    if header[2] & 0x80 == 0 {
        return Err("not an answer");
    }
    Ok(header)
}

/// The response code of an answer whose header is `header`.
fn rcode(header: &[u8]) -> u8 {
    header[3] & 0x0f
}

/// One record of an answer section.
struct Record<'a> {
    rtype: u16,
    class: u16,
    ttl: u32,
    data: &'a [u8],
    /// Where `data` starts in the message, for names in it that are
    /// compressed against the rest of the message.
    start: usize,
}

/// Skips the questions of `msg` (whose header is `header`) and returns what
/// `read` makes of each record of its answer section, in order (`None`
/// skips a record); the first error, a cut message or `read`'s own, ends
/// the walk.
fn records<'a, T>(
    msg: &'a [u8],
    header: &[u8],
    mut read: impl FnMut(Record<'a>) -> Result<Option<T>, &'static str>,
) -> Result<Vec<T>, &'static str> {
    let questions = u16::from_be_bytes([header[4], header[5]]);
    let answers = u16::from_be_bytes([header[6], header[7]]);
    let mut found = Vec::new();
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(msg, pos)?;
        pos = pos
            .checked_add(4)
            .filter(|p| *p <= msg.len())
            .ok_or("cut question")?;
    }
    for _ in 0..answers {
        pos = skip_name(msg, pos)?;
        let fixed = msg.get(pos..pos + 10).ok_or("cut record")?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        pos += 10;
        let start = pos;
        let data = msg.get(pos..pos + len).ok_or("cut record data")?;
        pos += len;
        found.extend(read(Record {
            rtype,
            class,
            ttl,
            data,
            start,
        })?);
    }
    Ok(found)
}

/// One SRV record (RFC 2782): where a service is, and how to prefer it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Srv {
    /// Lower is preferred: every target of the lowest priority is tried
    /// before any of the next.
    pub priority: u16,
    /// Within one priority, the share of the traffic, relative to the
    /// others' weights; 0 means "only when nothing else is there".
    pub weight: u16,
    pub port: u16,
    /// The target host, without the root's trailing dot; `.` alone (here
    /// an empty string) means "decidedly not available here".
    pub target: String,
    /// Seconds the record may be kept.
    pub ttl: u32,
}

/// What one answer to an SRV question said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SrvAnswer {
    /// The SRV records of the answer section, whatever CNAMEs led there;
    /// empty when the name exists with no SRV record (NODATA).
    Records(Vec<Srv>),
    /// The name does not exist (NXDOMAIN).
    NoSuchName,
    /// The server failed or refused (SERVFAIL, REFUSED...).
    Failed(u8),
    /// The answer did not fit the datagram (TC): ask again over TCP.
    Truncated,
}

/// Parses the answer to the SRV query `id`; `Err` for anything else
/// (another id, a query, a malformed message), which is ignored like a
/// stray datagram. A record whose data is malformed makes the whole answer
/// malformed: half a record set must not read as the truth.
pub fn parse_srv_answer(id: u16, msg: &[u8]) -> Result<SrvAnswer, &'static str> {
    let header = answer_header(id, msg)?;
    if header[2] & 0x02 != 0 {
        return Ok(SrvAnswer::Truncated);
    }
    Ok(match rcode(header) {
        NOERROR => SrvAnswer::Records(records(msg, header, |record| srv(msg, record))?),
        NXDOMAIN => SrvAnswer::NoSuchName,
        code => SrvAnswer::Failed(code),
    })
}

/// The SRV record `record` of the answer `msg` holds; `None` for any other
/// record (the CNAMEs that led there).
fn srv(msg: &[u8], record: Record<'_>) -> Result<Option<Srv>, &'static str> {
    if (record.rtype, record.class) != (TYPE_SRV, 1) {
        return Ok(None);
    }
    let fixed = record.data.get(..6).ok_or("cut SRV record")?;
    // The target is read from the whole message: RFC 2782 forbids
    // compressing it, but some servers do.
    let (target, end) = read_name(msg, record.start + 6)?;
    if end != record.start + record.data.len() {
        return Err("SRV record data longer or shorter than its target");
    }
    // RFC 2181 §8: a TTL with the top bit set is read as 0.
    let ttl = if record.ttl > i32::MAX as u32 {
        0
    } else {
        record.ttl
    };
    Ok(Some(Srv {
        priority: u16::from_be_bytes([fixed[0], fixed[1]]),
        weight: u16::from_be_bytes([fixed[2], fixed[3]]),
        port: u16::from_be_bytes([fixed[4], fixed[5]]),
        target,
        ttl,
    }))
}

/// The (possibly compressed) name at `pos` in presentation form, without
/// the root's dot, and the position after it in place.
fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), &'static str> {
    let mut name = String::new();
    let mut end = None;
    // Each pointer must go backwards, so a message cannot loop; the hop
    // limit is a second guard.
    let mut hops = 0;
    loop {
        let len = *msg.get(pos).ok_or("cut name")?;
        match len {
            0 => {
                return Ok((name, end.unwrap_or(pos + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let low = *msg.get(pos + 1).ok_or("cut pointer")?;
                let target = usize::from(l & 0x3f) << 8 | usize::from(low);
                if target >= pos || hops > 127 {
                    return Err("name pointer loops");
                }
                hops += 1;
                end.get_or_insert(pos + 2);
                pos = target;
            }
            l if l & 0xc0 == 0 => {
                let label = msg
                    .get(pos + 1..pos + 1 + usize::from(l))
                    .ok_or("cut label")?;
                if !name.is_empty() {
                    name.push('.');
                }
                for &byte in label {
                    // Bytes a host name cannot hold are kept visible but
                    // harmless; the caller decides whether the name is usable.
                    if byte.is_ascii_graphic() && byte != b'.' {
                        name.push(char::from(byte));
                    } else {
                        name.push_str(&format!("\\{byte:03}"));
                    }
                }
                if name.len() > MAX_NAME * 4 {
                    return Err("name too long");
                }
                pos += 1 + usize::from(l);
            }
            _ => return Err("bad label"),
        }
    }
}

/// The position after the (possibly compressed) name at `pos`.
fn skip_name(msg: &[u8], mut pos: usize) -> Result<usize, &'static str> {
    // A name has at most 128 labels; more is a loop or garbage.
    for _ in 0..128 {
        let len = *msg.get(pos).ok_or("cut name")?;
        match len {
            0 => return Ok(pos + 1),
            l if l & 0xc0 == 0xc0 => {
                msg.get(pos + 1).ok_or("cut pointer")?;
                return Ok(pos + 2);
            }
            l if l & 0xc0 == 0 => pos += 1 + usize::from(l),
            _ => return Err("bad label"),
        }
    }
    Err("too many labels")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_as_kubernetes_writes_it() {
        let conf = ResolvConf::parse(
            "search voice.svc.cluster.local svc.cluster.local cluster.local\n\
             nameserver 10.96.0.10\n# comment\noptions ndots:5 timeout:1 attempts:9 edns0\n",
        );
        assert_eq!(conf.nameservers, ["10.96.0.10".parse::<IpAddr>().unwrap()]);
        assert_eq!((conf.ndots, conf.timeout, conf.attempts), (5, 1, 5));
        assert_eq!(
            conf.candidates("dsfeed.voice"),
            [
                "dsfeed.voice.voice.svc.cluster.local",
                "dsfeed.voice.svc.cluster.local",
                "dsfeed.voice.cluster.local",
                "dsfeed.voice"
            ]
        );
        assert_eq!(
            conf.candidates("a.b.c.d.e.f"),
            [
                "a.b.c.d.e.f",
                "a.b.c.d.e.f.voice.svc.cluster.local",
                "a.b.c.d.e.f.svc.cluster.local",
                "a.b.c.d.e.f.cluster.local"
            ]
        );
        assert_eq!(conf.candidates("x.example."), ["x.example"]);
        let empty = ResolvConf::parse("");
        assert_eq!(empty.nameservers, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert_eq!(empty.candidates("feeder"), ["feeder"]);
    }

    #[test]
    fn hosts_entries_match_any_alias() {
        let hosts = "127.0.0.1 localhost\n10.0.0.7 feeder feeder.local # x\n::1 ip6-localhost\n";
        assert_eq!(
            hosts_lookup(hosts, "FEEDER.local"),
            ["10.0.0.7".parse::<IpAddr>().unwrap()]
        );
        assert!(hosts_lookup(hosts, "other").is_empty());
    }

    #[test]
    fn answers_are_read_through_cnames_and_compression() {
        let q = query(0x1234, "feeder.example", TYPE_A).unwrap();
        let mut msg = q.clone();
        msg[2] = 0x81;
        msg[3] = 0x80;
        msg[7] = 2; // two answers
        // CNAME feeder.example -> (compressed pointer to the question name)
        msg.extend_from_slice(&[0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 0xc0, 12]);
        msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 9]);
        assert_eq!(
            parse_answer(0x1234, &msg),
            Ok(Answer::Addresses(vec!["10.0.0.9".parse().unwrap()]))
        );
        assert!(parse_answer(0x1235, &msg).is_err());
        assert!(parse_answer(0x1234, &q).is_err(), "a query is no answer");
        let mut nx = q.clone();
        nx[2] = 0x81;
        nx[3] = 0x83;
        assert_eq!(parse_answer(0x1234, &nx), Ok(Answer::NoSuchName));
        for cut in 0..msg.len() {
            let _ = parse_answer(0x1234, &msg[..cut]);
        }
        assert!(query(1, "a..b", TYPE_A).is_none());
        assert!(query(1, &"a".repeat(64), TYPE_A).is_none());
    }

    /// An answer to `query(id, name, TYPE_SRV)` with `records` appended as
    /// (priority, weight, port, target bytes, ttl).
    fn srv_answer(id: u16, name: &str, records: &[(u16, u16, u16, &[u8], u32)]) -> Vec<u8> {
        let mut msg = query(id, name, TYPE_SRV).unwrap();
        msg[2] = 0x81;
        msg[3] = 0x80;
        msg[7] = u8::try_from(records.len()).unwrap();
        for (priority, weight, port, target, ttl) in records {
            msg.extend_from_slice(&[0xc0, 12]);
            msg.extend_from_slice(&TYPE_SRV.to_be_bytes());
            msg.extend_from_slice(&[0, 1]);
            msg.extend_from_slice(&ttl.to_be_bytes());
            let len = u16::try_from(6 + target.len()).unwrap();
            msg.extend_from_slice(&len.to_be_bytes());
            for field in [priority, weight, port] {
                msg.extend_from_slice(&field.to_be_bytes());
            }
            msg.extend_from_slice(target);
        }
        msg
    }

    #[test]
    fn srv_answers_give_every_record_with_its_ttl() {
        let msg = srv_answer(
            7,
            "_sip._udp.pbx.example",
            &[
                (10, 60, 5060, b"\x02a1\x03pbx\x07example\x00", 30),
                // Compressed against the question, which RFC 2782 forbids
                // and some servers do anyway.
                (20, 0, 5080, b"\x02b2\xc0\x16", u32::MAX),
                (0, 0, 0, b"\x00", 5),
            ],
        );
        let Ok(SrvAnswer::Records(records)) = parse_srv_answer(7, &msg) else {
            panic!("{:?}", parse_srv_answer(7, &msg));
        };
        let got: Vec<_> = records
            .iter()
            .map(|r| (r.priority, r.weight, r.port, r.target.as_str(), r.ttl))
            .collect();
        assert_eq!(
            got,
            [
                (10, 60, 5060, "a1.pbx.example", 30),
                (20, 0, 5080, "b2.pbx.example", 0),
                (0, 0, 0, "", 5)
            ]
        );
        for cut in 0..msg.len() {
            let _ = parse_srv_answer(7, &msg[..cut]);
        }
    }

    #[test]
    fn srv_answers_that_are_not_records() {
        let q = query(9, "_sip._tcp.gone.example", TYPE_SRV).unwrap();
        let mut answer = q.clone();
        answer[2] = 0x81;
        for (rcode, expected) in [
            (0x83, SrvAnswer::NoSuchName),
            (0x82, SrvAnswer::Failed(2)),
            (0x85, SrvAnswer::Failed(5)),
            (0x80, SrvAnswer::Records(vec![])),
        ] {
            answer[3] = rcode;
            assert_eq!(parse_srv_answer(9, &answer), Ok(expected));
        }
        answer[2] = 0x83;
        assert_eq!(parse_srv_answer(9, &answer), Ok(SrvAnswer::Truncated));
        assert!(parse_srv_answer(9, &q).is_err(), "a query is no answer");
        assert!(parse_srv_answer(8, &answer).is_err());
    }

    #[test]
    fn malformed_srv_records_spoil_the_answer() {
        // A pointer to itself, and one forwards.
        for target in [&b"\xc0\x3d"[..], b"\xc0\xff", b"\x05ab"] {
            let msg = srv_answer(1, "_sip._udp.x", &[(1, 1, 5060, target, 1)]);
            assert!(parse_srv_answer(1, &msg).is_err(), "{target:?}");
        }
        // Data longer than its target.
        let mut msg = srv_answer(1, "_sip._udp.x", &[(1, 1, 5060, b"\x01a\x00", 1)]);
        let at = msg.len() - 3 - 6 - 2;
        msg[at + 1] += 1;
        msg.push(0);
        assert!(parse_srv_answer(1, &msg).is_err());
    }
}
