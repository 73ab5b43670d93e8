//! The one grammar for a feed address, wherever a user types one: the
//! feeder's `--listen`, `dsfeed watch ADDR` and the module's `feeder`
//! parameter.
//!
//! - `unix:PATH` (or `unix://PATH`): a unix socket, the sidecar's choice;
//! - `tcp://HOST:PORT` or `http://HOST:PORT`: TCP, clear text (a listener
//!   serves TLS when given a certificate);
//! - `https://HOST:PORT`: TCP with TLS.
//!
//! HOST is a name, an IPv4 address or an IPv6 address in brackets. Binrpc
//! addresses (`--rpc`) keep Kamailio's own `unix:`/`tcp:`/`udp:` form, as
//! kamcmd writes them, and are not endpoints.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;

use crate::destination::split_host_port;
use crate::error::InvalidEndpoint;

/// Where a feed is served or reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Net {
        scheme: Scheme,
        /// A name, an IPv4 address, or an IPv6 address in brackets.
        host: String,
        port: u16,
    },
}

/// How a TCP endpoint was written; `https` means TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Tcp,
    Http,
    Https,
}

impl Scheme {
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Tcp => "tcp",
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

impl Endpoint {
    /// Whether the address asks for TLS (`https://`).
    pub fn tls(&self) -> bool {
        matches!(
            self,
            Endpoint::Net {
                scheme: Scheme::Https,
                ..
            }
        )
    }

    /// Whether only this machine can reach it, so clear text is acceptable.
    pub fn is_local(&self) -> bool {
        match self {
            Endpoint::Unix(_) => true,
            Endpoint::Net { host, .. } => {
                host == "localhost" || host_ip(host).is_some_and(|ip| ip.is_loopback())
            }
        }
    }

    /// The address a listener binds: the host must be an IP address or
    /// `localhost`, since a listener must know which interface it binds.
    pub fn socket_addr(&self) -> Result<SocketAddr, InvalidEndpoint> {
        let Endpoint::Net { host, port, .. } = self else {
            return Err(invalid(self, "a unix socket has no IP address"));
        };
        let ip = if host == "localhost" {
            IpAddr::V4(Ipv4Addr::LOCALHOST)
        } else {
            host_ip(host).ok_or_else(|| {
                invalid(
                    self,
                    "a listener needs an IP address or localhost, not a name",
                )
            })?
        };
        Ok(SocketAddr::new(ip, *port))
    }

    /// `HOST:PORT`, IPv6 in brackets, for a URI or a connect.
    pub fn authority(&self) -> Option<String> {
        match self {
            Endpoint::Unix(_) => None,
            Endpoint::Net { host, port, .. } => Some(format!("{host}:{port}")),
        }
    }
}

fn invalid(endpoint: &Endpoint, reason: &str) -> InvalidEndpoint {
    InvalidEndpoint {
        endpoint: endpoint.to_string(),
        reason: reason.to_owned(),
    }
}

fn host_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

impl FromStr for Endpoint {
    type Err = InvalidEndpoint;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = |reason: &str| InvalidEndpoint {
            endpoint: s.to_owned(),
            reason: reason.to_owned(),
        };
        if let Some(path) = s.strip_prefix("unix:") {
            let path = path.strip_prefix("//").unwrap_or(path);
            if path.is_empty() {
                return Err(bad("no socket path"));
            }
            return Ok(Endpoint::Unix(PathBuf::from(path)));
        }
        let (scheme, rest) = [Scheme::Tcp, Scheme::Http, Scheme::Https]
            .into_iter()
            .find_map(|scheme| {
                s.strip_prefix(scheme.as_str())
                    .and_then(|r| r.strip_prefix("://"))
                    .map(|rest| (scheme, rest))
            })
            .ok_or_else(|| {
                bad("expected unix:PATH, tcp://HOST:PORT, http://HOST:PORT or https://HOST:PORT")
            })?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = split_host_port(rest).map_err(|reason| bad(&reason))?;
        let port = port.ok_or_else(|| bad("no port: write HOST:PORT"))?;
        Ok(Endpoint::Net {
            scheme,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // `unix://` is the prefix the parser strips, so a path that
            // itself starts with `//` must be written after it.
            Endpoint::Unix(path) if path.as_os_str().as_encoded_bytes().starts_with(b"//") => {
                write!(f, "unix://{}", path.display())
            }
            Endpoint::Unix(path) => write!(f, "unix:{}", path.display()),
            Endpoint::Net { scheme, host, port } => {
                write!(f, "{}://{host}:{port}", scheme.as_str())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_parses_to_one_kind() {
        // The spelling; TLS; reachable from this machine only; the address
        // a listener binds.
        for (spelling, tls, local, binds) in [
            ("unix:/run/dsfeed/feed.sock", false, true, None),
            ("unix:///run/x.sock", false, true, None),
            ("https://dsfeed.voice.svc:7443/", true, false, None),
            ("tcp://127.0.0.1:7000", false, true, Some("127.0.0.1:7000")),
            ("http://[::1]:7000", false, true, Some("[::1]:7000")),
            ("tcp://localhost:7000", false, true, Some("127.0.0.1:7000")),
            ("tcp://0.0.0.0:7000", false, false, Some("0.0.0.0:7000")),
        ] {
            let endpoint: Endpoint = spelling
                .parse()
                .unwrap_or_else(|e| panic!("{spelling}: {e}"));
            assert_eq!(
                (endpoint.tls(), endpoint.is_local()),
                (tls, local),
                "{spelling}"
            );
            let bound = endpoint.socket_addr().ok().map(|a| a.to_string());
            assert_eq!(bound.as_deref(), binds, "{spelling}");
            // What it shows is the same endpoint, in its one spelling.
            assert_eq!(endpoint.to_string().parse(), Ok(endpoint.clone()));
        }
        let unix: Endpoint = "unix:///run/x.sock".parse().unwrap();
        assert_eq!(unix, Endpoint::Unix("/run/x.sock".into()));
        assert_eq!(unix.to_string(), "unix:/run/x.sock");
        let https: Endpoint = "https://dsfeed.voice.svc:7443/".parse().unwrap();
        assert_eq!(https.to_string(), "https://dsfeed.voice.svc:7443");
        assert_eq!(https.authority().unwrap(), "dsfeed.voice.svc:7443");
    }

    #[test]
    fn bad_endpoints_name_the_culprit() {
        for (bad, why) in [
            ("unix:", "no socket path"),
            ("feeder:7000", "expected unix:PATH"),
            ("tcp://feeder", "no port"),
            ("https://:1", "empty host"),
            ("tcp://h:0", "port '0'"),
            ("tcp://2001:db8::1:7000", "brackets"),
            ("tcp://h b:7000", "contains ' '"),
        ] {
            let err = bad.parse::<Endpoint>().unwrap_err().to_string();
            assert!(err.contains(bad) && err.contains(why), "{bad}: {err}");
        }
    }

    /// Found by fuzzing (flag_specs): `unix:////red.sock` printed as
    /// `unix://red.sock`, which reads back as the relative `red.sock`.
    #[test]
    fn a_path_starting_with_two_slashes_prints_as_it_parses() {
        for text in [
            "unix:////red.sock",
            "unix:red.sock",
            "unix:/run/f.sock",
            "unix:///run/f.sock",
        ] {
            let endpoint: Endpoint = text.parse().unwrap();
            assert_eq!(
                endpoint.to_string().parse::<Endpoint>().unwrap(),
                endpoint,
                "{text}"
            );
        }
    }
}
