//! `--consul-addr`: where Consul's HTTP API listens, written as Consul's
//! own tools take `CONSUL_HTTP_ADDR`.

use std::str::FromStr;

use dsfeed_model::split_host_port;

/// `--consul-addr`: where Consul's HTTP API listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulAddr {
    /// `Some(true)` for `https://`, `Some(false)` for `http://`, `None` when
    /// no scheme was written (then `--consul-https` decides).
    pub https: Option<bool>,
    /// `host:port`, IPv6 hosts in brackets.
    pub authority: String,
}

impl FromStr for ConsulAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (https, rest) = if let Some(rest) = s.strip_prefix("https://") {
            (Some(true), rest)
        } else if let Some(rest) = s.strip_prefix("http://") {
            (Some(false), rest)
        } else if s.starts_with("unix://") {
            return Err(format!(
                "'{s}': Consul over a unix socket is not supported; use HOST:PORT"
            ));
        } else if let Some((scheme, _)) = s.split_once("://") {
            return Err(format!(
                "'{s}': unknown scheme '{scheme}' (use http:// or https://)"
            ));
        } else {
            (None, s)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) || rest.chars().any(char::is_whitespace) {
            return Err(format!("'{s}' is not [http://|https://]HOST[:PORT]"));
        }
        let default_port = match https {
            None => 8500,
            Some(false) => 80,
            Some(true) => 443,
        };
        // A bare IPv6 address has no port: every colon is part of it.
        let bracketed;
        let rest = if rest.parse::<std::net::Ipv6Addr>().is_ok() {
            bracketed = format!("[{rest}]");
            &bracketed
        } else {
            rest
        };
        let (host, port) = split_host_port(rest).map_err(|reason| format!("'{s}': {reason}"))?;
        let port = port.unwrap_or(default_port);
        Ok(ConsulAddr {
            https,
            authority: format!("{host}:{port}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_follow_consuls_conventions() {
        for (text, https, authority) in [
            ("127.0.0.1:8500", None, "127.0.0.1:8500"),
            ("consul", None, "consul:8500"),
            ("http://consul", Some(false), "consul:80"),
            (
                "https://consul.service:8501/",
                Some(true),
                "consul.service:8501",
            ),
            ("[::1]:8500", None, "[::1]:8500"),
            ("::1", None, "[::1]:8500"),
            ("https://[2001:db8::1]", Some(true), "[2001:db8::1]:443"),
        ] {
            let addr: ConsulAddr = text.parse().unwrap();
            assert_eq!(
                (addr.https, addr.authority.as_str()),
                (https, authority),
                "{text}"
            );
        }
        for bad in [
            "unix:///run/consul.sock",
            "ftp://x",
            "http://x/v1",
            "x:0",
            "x:port",
            "[::1",
            "",
        ] {
            assert!(bad.parse::<ConsulAddr>().is_err(), "{bad}");
        }
    }
}
