//! A client for Kamailio's binrpc protocol (the `ctl` module), the protocol
//! `kamcmd` speaks.

mod client;
mod codec;
pub mod dispatcher;
pub mod lists;

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub use client::{Client, DEFAULT_TIMEOUT, MAX_REPLY};
pub use codec::{
    CodecError, Header, MAX_DEPTH, MAX_RECORDS, Message, MessageType, Value, decode_body,
};

/// A binrpc call that did not succeed. Each variant names the ctl address, so
/// a log line alone tells which Kamailio misbehaved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach Kamailio's ctl at {addr}")]
    Connect {
        addr: Addr,
        #[source]
        source: std::io::Error,
    },
    #[error("binrpc exchange with {addr} failed")]
    Io {
        addr: Addr,
        #[source]
        source: std::io::Error,
    },
    #[error("no answer from Kamailio's ctl at {addr} within {timeout:?}")]
    Timeout { addr: Addr, timeout: Duration },
    #[error("{method} at {addr} failed: {code} {message}")]
    Fault {
        addr: Addr,
        method: String,
        code: i32,
        message: String,
    },
    #[error("malformed binrpc reply from {addr}")]
    Malformed {
        addr: Addr,
        #[source]
        source: CodecError,
    },
    #[error("reply from {addr} carries cookie {got:#x}, the request had {sent:#x}")]
    Cookie { addr: Addr, sent: u32, got: u32 },
    #[error("request for {method} is {len} bytes; ctl reads at most {max}")]
    RequestTooLarge {
        method: String,
        len: usize,
        max: usize,
    },
    #[error("cannot encode the request for {method}")]
    Encode {
        method: String,
        #[source]
        source: CodecError,
    },
    #[error("unexpected reply to {method} from {addr}: {reason}")]
    UnexpectedReply {
        addr: Addr,
        method: String,
        reason: String,
    },
}

impl Error {
    /// A short, stable label for metrics and structured logs.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Connect { .. } => "connect",
            Error::Io { .. } => "io",
            Error::Timeout { .. } => "timeout",
            Error::Fault { .. } => "fault",
            Error::Malformed { .. } => "malformed",
            Error::Cookie { .. } => "cookie",
            Error::RequestTooLarge { .. } => "request_too_large",
            Error::Encode { .. } => "encode",
            Error::UnexpectedReply { .. } => "unexpected_reply",
        }
    }

    /// A 500 fault from `method`, for the tests of which faults are retried.
    #[cfg(test)]
    pub(crate) fn fault(method: &str, message: &str) -> Error {
        Error::Fault {
            addr: "unix:/x".parse().unwrap(),
            method: method.into(),
            code: 500,
            message: message.into(),
        }
    }
}

/// Where Kamailio's ctl module listens: `unix:PATH`, `tcp:HOST:PORT` or
/// `udp:HOST:PORT` (the forms of ctl's `binrpc` modparam).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Unix(PathBuf),
    Tcp(String),
    Udp(String),
}

impl FromStr for Addr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s
            .split_once(':')
            .ok_or_else(|| format!("'{s}' is not unix:PATH, tcp:HOST:PORT or udp:HOST:PORT"))?;
        let host_port = |rest: &str| -> Result<String, String> {
            let rest = rest.trim_start_matches("//");
            let (host, port) =
                dsfeed_model::split_host_port(rest).map_err(|reason| format!("'{s}': {reason}"))?;
            let port = port.ok_or_else(|| format!("'{s}' has no port"))?;
            Ok(format!("{host}:{port}"))
        };
        match scheme {
            "unix" if !rest.is_empty() => {
                Ok(Addr::Unix(PathBuf::from(rest.trim_start_matches("//"))))
            }
            "unix" => Err(format!("'{s}' has no socket path")),
            "tcp" => host_port(rest).map(Addr::Tcp),
            "udp" => host_port(rest).map(Addr::Udp),
            other => Err(format!(
                "'{s}': unknown transport '{other}' (use unix:, tcp: or udp:)"
            )),
        }
    }
}

impl fmt::Display for Addr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Addr::Unix(path) => write!(f, "unix:{}", path.display()),
            Addr::Tcp(hp) => write!(f, "tcp:{hp}"),
            Addr::Udp(hp) => write!(f, "udp:{hp}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_transports() {
        assert_eq!(
            "unix:/run/k.sock".parse(),
            Ok(Addr::Unix("/run/k.sock".into()))
        );
        assert_eq!(
            "tcp:127.0.0.1:2049".parse(),
            Ok(Addr::Tcp("127.0.0.1:2049".into()))
        );
        assert_eq!("udp:[::1]:9998".parse(), Ok(Addr::Udp("[::1]:9998".into())));
        for bad in [
            "127.0.0.1:9998",
            "udp:127.0.0.1",
            "tcp::9",
            "udp:h:0",
            "unix:",
            "http:x:1",
        ] {
            assert!(bad.parse::<Addr>().is_err(), "{bad}");
        }
    }
}
