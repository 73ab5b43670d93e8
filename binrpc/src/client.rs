//! One binrpc call per connection (or per UDP socket), over the transports
//! ctl listens on: unix stream, TCP and UDP.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, UnixStream};

use crate::codec::{Header, Message, MessageType, Value};
use crate::{Addr, Error};

/// How long a call may take, connect to last byte, unless set otherwise:
/// ctl answers in milliseconds, but a busy 2-core host may stall it a while.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// ctl reads a request into a 65535-byte buffer (stream and datagram alike)
/// and drops anything longer.
const MAX_REQUEST: usize = 65_535;

/// The receive buffer asked for on UDP sockets.
const UDP_RECV_BUFFER: usize = 4 << 20;

/// A reply announcing more than this is refused before any of its body is
/// buffered: `dispatcher.list` of 2,000 destinations is ~413 KB, and the
/// record budget ([`super::MAX_RECORDS`]) ends bigger ones anyway. With it,
/// a hostile ctl peer costs at most this buffer and the decoded records.
pub const MAX_REPLY: usize = 16 << 20;

/// A binrpc client for one Kamailio ctl address. Cheap to clone; holds no
/// connection between calls, so a restarted Kamailio needs no reconnect.
#[derive(Debug, Clone)]
pub struct Client {
    addr: Addr,
    timeout: Duration,
}

impl Client {
    pub fn new(addr: Addr) -> Self {
        Client {
            addr,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A client for a unix socket path, the common sidecar setup.
    pub fn unix(path: impl AsRef<Path>) -> Self {
        Client::new(Addr::Unix(path.as_ref().to_path_buf()))
    }

    /// Sets the limit for a whole call, from connecting to the last byte of
    /// the reply.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn addr(&self) -> &Addr {
        &self.addr
    }

    /// Calls `method` with `params` and returns the reply's values. A fault
    /// reply becomes [`Error::Fault`]; no complete reply within the timeout
    /// becomes [`Error::Timeout`].
    pub async fn call(&self, method: &str, params: &[Value]) -> Result<Vec<Value>, Error> {
        let cookie = rand::random::<u32>();
        let mut body = Vec::with_capacity(params.len() + 1);
        body.push(Value::Str(method.to_owned()));
        body.extend_from_slice(params);
        let request = Message {
            kind: MessageType::Request,
            cookie,
            body,
        }
        .encode()
        .map_err(|source| Error::Encode {
            method: method.to_owned(),
            source,
        })?;
        if request.len() > MAX_REQUEST {
            return Err(Error::RequestTooLarge {
                method: method.to_owned(),
                len: request.len(),
                max: MAX_REQUEST,
            });
        }

        let exchange = async {
            match &self.addr {
                Addr::Unix(path) => {
                    let stream = UnixStream::connect(path)
                        .await
                        .map_err(|e| self.connect_error(e))?;
                    self.stream_exchange(stream, &request).await
                }
                Addr::Tcp(host_port) => {
                    let stream = TcpStream::connect(host_port.as_str())
                        .await
                        .map_err(|e| self.connect_error(e))?;
                    self.stream_exchange(stream, &request).await
                }
                Addr::Udp(host_port) => self.udp_exchange(host_port, &request).await,
            }
        };
        let reply = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout {
                addr: self.addr.clone(),
                timeout: self.timeout,
            })??;

        if reply.cookie != cookie {
            return Err(Error::Cookie {
                addr: self.addr.clone(),
                sent: cookie,
                got: reply.cookie,
            });
        }
        match reply.kind {
            MessageType::Reply => Ok(reply.body),
            MessageType::Fault => Err(self.fault(method, reply.body)),
            MessageType::Request => Err(Error::UnexpectedReply {
                addr: self.addr.clone(),
                method: method.to_owned(),
                reason: "the answer is a request, not a reply".to_owned(),
            }),
        }
    }

    /// ctl writes a fault as an int code and a string; anything else in a
    /// fault body is kept in the message rather than lost.
    fn fault(&self, method: &str, body: Vec<Value>) -> Error {
        let mut values = body.into_iter();
        let (code, rest): (i32, Vec<Value>) = match values.next() {
            Some(Value::Int(code)) => (code, values.collect()),
            first => (0, first.into_iter().chain(values).collect()),
        };
        let message = rest
            .iter()
            .map(|v| match v {
                Value::Str(s) => s.clone(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
        Error::Fault {
            addr: self.addr.clone(),
            method: method.to_owned(),
            code,
            message,
        }
    }

    fn connect_error(&self, source: io::Error) -> Error {
        Error::Connect {
            addr: self.addr.clone(),
            source,
        }
    }

    fn io_error(&self, source: io::Error) -> Error {
        Error::Io {
            addr: self.addr.clone(),
            source,
        }
    }

    async fn stream_exchange<S>(&self, mut stream: S, request: &[u8]) -> Result<Message, Error>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        stream
            .write_all(request)
            .await
            .map_err(|e| self.io_error(e))?;
        let mut reply = ReplyBuffer::default();
        let mut chunk = vec![0; 64 * 1024];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .map_err(|e| self.io_error(e))?;
            if n == 0 {
                return Err(self.io_error(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "connection closed after {} bytes, before the reply was complete",
                        reply.buf.len()
                    ),
                )));
            }
            if let Some(message) = self.push(&mut reply, &chunk[..n])? {
                return Ok(message);
            }
        }
    }

    /// A fresh socket per call, connected to ctl, so that only its answers
    /// reach us and a refused port is reported at once (ICMP) where the
    /// network delivers it. ctl may split a large reply into several
    /// datagrams; they are concatenated as `kamcmd` does.
    async fn udp_exchange(&self, host_port: &str, request: &[u8]) -> Result<Message, Error> {
        let target = tokio::net::lookup_host(host_port)
            .await
            .map_err(|e| self.connect_error(e))?
            .next()
            .ok_or_else(|| {
                self.connect_error(io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{host_port} resolves to no address"),
                ))
            })?;
        let socket = udp_socket(target).map_err(|e| self.io_error(e))?;
        socket
            .connect(target)
            .await
            .map_err(|e| self.connect_error(e))?;
        socket.send(request).await.map_err(|e| self.udp_error(e))?;
        let mut reply = ReplyBuffer::default();
        let mut datagram = vec![0; 65_536];
        loop {
            let n = socket
                .recv(&mut datagram)
                .await
                .map_err(|e| self.udp_error(e))?;
            if let Some(message) = self.push(&mut reply, &datagram[..n])? {
                return Ok(message);
            }
        }
    }

    /// On a connected UDP socket, "connection refused" is the ICMP answer of
    /// a host where nothing listens on the port.
    fn udp_error(&self, source: io::Error) -> Error {
        if source.kind() == io::ErrorKind::ConnectionRefused {
            self.connect_error(source)
        } else {
            self.io_error(source)
        }
    }

    fn push(&self, reply: &mut ReplyBuffer, bytes: &[u8]) -> Result<Option<Message>, Error> {
        reply.push(bytes).map_err(|source| Error::Malformed {
            addr: self.addr.clone(),
            source,
        })
    }
}

/// A non-blocking UDP socket for `target`'s address family, with a receive
/// buffer big enough for the burst of datagrams ctl sends for a large reply
/// (413 KB in 85 datagrams for `dispatcher.list` of 2,000 destinations); the
/// kernel caps the request at `net.core.rmem_max`.
fn udp_socket(target: SocketAddr) -> io::Result<UdpSocket> {
    let (domain, local): (_, SocketAddr) = if target.is_ipv6() {
        (Domain::IPV6, (Ipv6Addr::UNSPECIFIED, 0).into())
    } else {
        (Domain::IPV4, (Ipv4Addr::UNSPECIFIED, 0).into())
    };
    let socket = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    // Best effort: a smaller buffer still serves small replies.
    let _ = socket.set_recv_buffer_size(UDP_RECV_BUFFER);
    socket.set_nonblocking(true)?;
    socket.bind(&local.into())?;
    UdpSocket::from_std(socket.into())
}

/// Accumulates a reply until its header's announced length has arrived.
#[derive(Default)]
struct ReplyBuffer {
    buf: Vec<u8>,
}

impl ReplyBuffer {
    fn push(&mut self, bytes: &[u8]) -> Result<Option<Message>, super::CodecError> {
        self.buf.extend_from_slice(bytes);
        let Some(header) = Header::parse(&self.buf)? else {
            return Ok(None);
        };
        let total = header.header_len + header.body_len;
        if total > MAX_REPLY {
            return Err(super::CodecError::TooLong {
                what: "a reply",
                len: total,
            });
        }
        if self.buf.capacity() < total {
            // Once, at the announced size: no doubling on the way there.
            self.buf.reserve_exact(total - self.buf.len());
        }
        if self.buf.len() < total {
            return Ok(None);
        }
        Message::decode(&self.buf).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// Serves one connection with a scripted answer built from the request's
    /// cookie, so the client's framing and checks can be exercised on
    /// replies Kamailio would not send.
    async fn serve_once<F>(answer: F) -> (tempfile::TempDir, Client)
    where
        F: FnOnce(u32) -> Vec<Vec<u8>> + Send + 'static,
    {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ctl.sock");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = vec![0; 1024];
            let n = stream.read(&mut buf).await.unwrap();
            let request = Message::decode(&buf[..n]).unwrap();
            for chunk in answer(request.cookie) {
                stream.write_all(&chunk).await.unwrap();
                stream.flush().await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let client = Client::unix(&path).with_timeout(Duration::from_secs(10));
        (dir, client)
    }

    fn reply(kind: MessageType, cookie: u32, body: Vec<Value>) -> Vec<u8> {
        Message { kind, cookie, body }.encode().unwrap()
    }

    #[tokio::test]
    async fn a_reply_split_into_pieces_is_reassembled() {
        let body = vec![Value::Str("y".repeat(100_000)), Value::Int(3)];
        let expected = body.clone();
        let (_dir, client) = serve_once(move |cookie| {
            let bytes = reply(MessageType::Reply, cookie, body);
            vec![
                bytes[..1].to_vec(),
                bytes[1..3].to_vec(),
                bytes[3..50].to_vec(),
                bytes[50..].to_vec(),
            ]
        })
        .await;
        assert_eq!(client.call("x", &[]).await.unwrap(), expected);
    }

    #[tokio::test]
    async fn a_wrong_cookie_is_refused() {
        let (_dir, client) =
            serve_once(|cookie| vec![reply(MessageType::Reply, cookie.wrapping_add(1), vec![])])
                .await;
        let err = client.call("x", &[]).await.unwrap_err();
        assert!(matches!(err, Error::Cookie { .. }), "{err}");
        assert_eq!(err.label(), "cookie");
    }

    #[tokio::test]
    async fn a_fault_carries_code_and_message() {
        let (_dir, client) = serve_once(|cookie| {
            vec![reply(
                MessageType::Fault,
                cookie,
                vec![Value::Int(500), Value::Str("Ongoing reload".into())],
            )]
        })
        .await;
        let err = client.call("dispatcher.reload", &[]).await.unwrap_err();
        match &err {
            Error::Fault {
                code,
                message,
                method,
                ..
            } => {
                assert_eq!((*code, message.as_str()), (500, "Ongoing reload"));
                assert_eq!(method, "dispatcher.reload");
            }
            other => panic!("expected a fault, got {other}"),
        }
        assert!(
            err.to_string().contains("dispatcher.reload at unix:"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_connection_closed_early_is_an_io_error() {
        let (_dir, client) = serve_once(|cookie| {
            let bytes = reply(MessageType::Reply, cookie, vec![Value::Str("z".repeat(50))]);
            vec![bytes[..20].to_vec()]
        })
        .await;
        let err = client.call("x", &[]).await.unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }

    #[tokio::test]
    async fn garbage_is_a_malformed_reply() {
        let (_dir, client) =
            serve_once(|_| vec![b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()]).await;
        let err = client.call("x", &[]).await.unwrap_err();
        assert!(matches!(err, Error::Malformed { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_request_too_large_for_ctl_is_not_sent() {
        let client = Client::unix("/nonexistent/ctl.sock");
        let err = client
            .call("x", &[Value::Str("a".repeat(70_000))])
            .await
            .unwrap_err();
        assert!(matches!(err, Error::RequestTooLarge { .. }), "{err}");
    }
}
