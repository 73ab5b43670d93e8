//! One SIP request by hand, for tests of what a Kamailio script answers
//! about the request's source address: sipp picks its own source port,
//! these tests need to choose it.

use std::net::{SocketAddr, UdpSocket};

/// Sends one OPTIONS for `sip:1@kamailio` from `socket` and returns the
/// reply's status code and reason phrase.
pub fn options(socket: &UdpSocket, kamailio: SocketAddr) -> (u16, String) {
    let local = socket.local_addr().expect("a bound socket");
    let request = format!(
        "OPTIONS sip:1@{kamailio} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-{port}\r\n\
         From: <sip:probe@{local}>;tag={port}\r\n\
         To: <sip:1@{kamailio}>\r\n\
         Call-ID: probe-{port}@127.0.0.1\r\n\
         CSeq: 1 OPTIONS\r\n\
         Max-Forwards: 70\r\n\
         Content-Length: 0\r\n\r\n",
        port = local.port()
    );
    socket
        .set_read_timeout(Some(crate::PATIENCE))
        .expect("a read timeout");
    socket
        .send_to(request.as_bytes(), kamailio)
        .expect("send the OPTIONS");
    let mut buf = [0u8; 4096];
    let (n, _) = socket.recv_from(&mut buf).expect("a reply from Kamailio");
    let reply = String::from_utf8_lossy(&buf[..n]);
    let status = reply.lines().next().unwrap_or_default();
    let mut parts = status.splitn(3, ' ');
    let code = parts.nth(1).and_then(|c| c.parse().ok());
    let reason = parts.next().unwrap_or_default().to_owned();
    (
        code.unwrap_or_else(|| panic!("not a SIP reply: {reply}")),
        reason,
    )
}

/// A UDP socket on 127.0.0.1 with a port of its own, to send [`options`]
/// from.
pub fn socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").expect("a UDP port on 127.0.0.1")
}

/// How `socket` is written in a sets file and in `/check`: `127.0.0.1:PORT`.
pub fn address(socket: &UdpSocket) -> String {
    socket.local_addr().expect("a bound socket").to_string()
}
