//! A DNS server on 127.0.0.1, UDP and TCP on one port, authoritative for
//! the SRV names a test gives it: records it changes at once, names it
//! removes (NXDOMAIN), and failures on demand (SERVFAIL, or no answer at
//! all). An answer too long for a 512-byte datagram is truncated (TC) over
//! UDP, as a real server does for a client without EDNS, and whole over
//! TCP. Messages are read and written with simple-dns, an implementation
//! independent of the feeder's own parser, so a shared misreading cannot
//! hide.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use simple_dns::rdata::{RData, SRV};
use simple_dns::{CLASS, Name, Packet, PacketFlag, QTYPE, RCODE, ResourceRecord, TYPE};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, UdpSocket};
use tokio::task::JoinHandle;

/// The largest answer sent over UDP to a client that asked without EDNS.
const UDP_LIMIT: usize = 512;

/// One SRV record as the zone holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    pub target: String,
    pub ttl: u32,
}

/// `SrvRecord` in one line: priority, weight, port, target, TTL.
pub fn srv(priority: u16, weight: u16, port: u16, target: &str, ttl: u32) -> SrvRecord {
    SrvRecord {
        priority,
        weight,
        port,
        target: target.to_owned(),
        ttl,
    }
}

/// How the server answers every question.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// From the zone.
    Answer,
    /// SERVFAIL, as a server whose zone is broken or whose upstream is down.
    ServFail,
    /// Not at all, as a server that is down or filtered.
    Silent,
}

#[derive(Debug)]
struct Zone {
    names: BTreeMap<String, Vec<SrvRecord>>,
    behavior: Behavior,
    /// Questions received, per name (lower case), whatever the answer.
    asked: BTreeMap<String, usize>,
    /// Questions that came over TCP.
    tcp: usize,
}

/// The running server; stopped when dropped.
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    tasks: Vec<JoinHandle<()>>,
}

impl DnsServer {
    /// Binds UDP and TCP on one free port of 127.0.0.1 and serves an empty
    /// zone: every name is NXDOMAIN until [`DnsServer::set`].
    pub async fn start() -> DnsServer {
        let (udp, tcp) = loop {
            let udp = UdpSocket::bind("127.0.0.1:0").await.expect("bind UDP");
            let addr = udp.local_addr().expect("UDP address");
            // The same port for TCP; another process may hold it, then retry.
            if let Ok(tcp) = TcpListener::bind(addr).await {
                break (udp, tcp);
            }
        };
        let addr = udp.local_addr().expect("UDP address");
        let zone = Arc::new(Mutex::new(Zone {
            names: BTreeMap::new(),
            behavior: Behavior::Answer,
            asked: BTreeMap::new(),
            tcp: 0,
        }));
        let tasks = vec![
            tokio::spawn(serve_udp(udp, Arc::clone(&zone))),
            tokio::spawn(serve_tcp(tcp, Arc::clone(&zone))),
        ];
        DnsServer { addr, zone, tasks }
    }

    /// Where it listens, for `--dns-server`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `name` now has exactly `records` (none: the name exists with no SRV
    /// record, NODATA).
    pub fn set(&self, name: &str, records: Vec<SrvRecord>) {
        let mut zone = self.zone.lock().expect("not poisoned");
        zone.names.insert(name.to_ascii_lowercase(), records);
    }

    /// `name` no longer exists: NXDOMAIN.
    pub fn remove(&self, name: &str) {
        let mut zone = self.zone.lock().expect("not poisoned");
        zone.names.remove(&name.to_ascii_lowercase());
    }

    /// How every question is answered from now on.
    pub fn behave(&self, behavior: Behavior) {
        self.zone.lock().expect("not poisoned").behavior = behavior;
    }

    /// Questions asked about `name` so far.
    pub fn asked(&self, name: &str) -> usize {
        let zone = self.zone.lock().expect("not poisoned");
        zone.asked
            .get(&name.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Questions that came over TCP so far.
    pub fn tcp_questions(&self) -> usize {
        self.zone.lock().expect("not poisoned").tcp
    }
}

impl Drop for DnsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve_udp(socket: UdpSocket, zone: Arc<Mutex<Zone>>) {
    let mut buf = vec![0; 65535];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        if let Some(answer) = answer(&buf[..n], &zone, false) {
            let _ = socket.send_to(&answer, from).await;
        }
    }
}

async fn serve_tcp(listener: TcpListener, zone: Arc<Mutex<Zone>>) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            return;
        };
        let zone = Arc::clone(&zone);
        tokio::spawn(async move {
            loop {
                let mut len = [0; 2];
                if stream.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut query = vec![0; usize::from(u16::from_be_bytes(len))];
                if stream.read_exact(&mut query).await.is_err() {
                    return;
                }
                let Some(answer) = answer(&query, &zone, true) else {
                    continue;
                };
                let len = u16::try_from(answer.len()).expect("an answer fits TCP's frame");
                let mut framed = len.to_be_bytes().to_vec();
                framed.extend_from_slice(&answer);
                if stream.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// The answer to `query`, or `None` to stay silent.
fn answer(query: &[u8], zone: &Mutex<Zone>, over_tcp: bool) -> Option<Vec<u8>> {
    let query = Packet::parse(query).ok()?;
    let question = query.questions.first()?;
    let name = question.qname.to_string().to_ascii_lowercase();
    let (behavior, records) = {
        let mut zone = zone.lock().expect("not poisoned");
        *zone.asked.entry(name.clone()).or_default() += 1;
        zone.tcp += usize::from(over_tcp);
        (zone.behavior, zone.names.get(&name).cloned())
    };
    let mut reply = Packet::new_reply(query.id());
    reply.set_flags(PacketFlag::AUTHORITATIVE_ANSWER);
    reply.questions.push(question.clone());
    match (behavior, &records) {
        (Behavior::Silent, _) => return None,
        (Behavior::ServFail, _) => *reply.rcode_mut() = RCODE::ServerFailure,
        (Behavior::Answer, None) => *reply.rcode_mut() = RCODE::NameError,
        (Behavior::Answer, Some(records)) => {
            let wants_srv = matches!(question.qtype, QTYPE::TYPE(TYPE::SRV) | QTYPE::ANY);
            for record in records.iter().filter(|_| wants_srv) {
                reply.answers.push(ResourceRecord::new(
                    question.qname.clone(),
                    CLASS::IN,
                    record.ttl,
                    RData::SRV(SRV {
                        priority: record.priority,
                        weight: record.weight,
                        port: record.port,
                        target: Name::new_unchecked(&record.target),
                    }),
                ));
            }
        }
    }
    let bytes = reply.build_bytes_vec_compressed().ok()?;
    if over_tcp || bytes.len() <= UDP_LIMIT {
        return Some(bytes);
    }
    let mut truncated = Packet::new_reply(query.id());
    truncated.set_flags(PacketFlag::AUTHORITATIVE_ANSWER | PacketFlag::TRUNCATION);
    truncated.questions.push(question.clone());
    truncated.build_bytes_vec().ok()
}
