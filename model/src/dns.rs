//! Just enough of the DNS for the module to resolve its feeder's name
//! without blocking: the feed process is one thread inside Kamailio, where
//! `getaddrinfo` can block for minutes (search domains × attempts ×
//! timeouts) and a resolver thread is not allowed. This part is the pure
//! one — `/etc/resolv.conf` and `/etc/hosts` as glibc reads them, the A and
//! AAAA queries to send, the answers — and the module sends the queries
//! over its own async UDP sockets under one deadline.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Record types asked for.
pub const TYPE_A: u16 = 1;
pub const TYPE_AAAA: u16 = 28;

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
    let header = msg.get(..12).ok_or("shorter than a header")?;
    if u16::from_be_bytes([header[0], header[1]]) != id {
        return Err("another id");
    }
    if header[2] & 0x80 == 0 {
        return Err("not an answer");
    }
    match header[3] & 0x0f {
        0 => {}
        3 => return Ok(Answer::NoSuchName),
        code => return Ok(Answer::Failed(code)),
    }
    let questions = u16::from_be_bytes([header[4], header[5]]);
    let answers = u16::from_be_bytes([header[6], header[7]]);
    let mut pos = 12;
    for _ in 0..questions {
        pos = skip_name(msg, pos)?;
        pos = pos
            .checked_add(4)
            .filter(|p| *p <= msg.len())
            .ok_or("cut question")?;
    }
    let mut addresses = Vec::new();
    for _ in 0..answers {
        pos = skip_name(msg, pos)?;
        let fixed = msg.get(pos..pos + 10).ok_or("cut record")?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let class = u16::from_be_bytes([fixed[2], fixed[3]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        pos += 10;
        let data = msg.get(pos..pos + len).ok_or("cut record data")?;
        pos += len;
        match (rtype, class, len) {
            (TYPE_A, 1, 4) => addresses.push(IpAddr::V4(Ipv4Addr::new(
                data[0], data[1], data[2], data[3],
            ))),
            (TYPE_AAAA, 1, 16) => {
                let octets: [u8; 16] = data.try_into().map_err(|_| "bad AAAA")?;
                addresses.push(IpAddr::V6(Ipv6Addr::from(octets)));
            }
            _ => {}
        }
    }
    Ok(Answer::Addresses(addresses))
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
}
