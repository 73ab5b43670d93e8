//! The Consul flags and the syntax of their values.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::Args;

use dsfeed_model::{SetId, validate_set_id};

/// Consul's own default wait for a blocking query.
pub const DEFAULT_WAIT: &str = "5m";

/// Consul caps a blocking query's wait at ten minutes.
pub const MAX_WAIT: Duration = Duration::from_secs(600);

/// How long a set that Consul suddenly reports empty keeps its last
/// instances: long enough for a restarted agent to sync its services back.
pub const DEFAULT_EMPTY_GRACE: &str = "30s";

/// Where the feeder finds Consul and which services it turns into sets.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Consul")]
pub struct ConsulArgs {
    /// A Consul service as a set: NAME=ID[:PORT][,OPTION...]. Healthy
    /// instances become destinations sip:ADDRESS:PORT, the address being the
    /// service's (or else its node's) and the port PORT or else the
    /// service's. Options: tag=TAG (repeatable; an instance must carry every
    /// tag), dc=DATACENTER, health=warning (keep instances whose checks
    /// warn too; critical ones are always left out). Repeatable.
    #[arg(
        id = "consul-service",
        long = "consul-service",
        value_name = "NAME=ID[:PORT][,OPTION...]"
    )]
    pub services: Vec<ServiceSpec>,

    /// Consul's HTTP API: [http://|https://]HOST[:PORT]. Without a scheme
    /// the port defaults to 8500 and https is used only with
    /// CONSUL_HTTP_SSL=true; with one, to the scheme's port.
    #[arg(
        id = "consul-addr",
        long = "consul-addr",
        value_name = "ADDR",
        env = "CONSUL_HTTP_ADDR",
        default_value = "127.0.0.1:8500"
    )]
    pub addr: ConsulAddr,

    /// Speak https to a --consul-addr given without a scheme.
    #[arg(
        id = "consul-https",
        long = "consul-https",
        env = "CONSUL_HTTP_SSL",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub https: bool,

    /// A file holding the ACL token sent as X-Consul-Token; it is read again
    /// before every query, so a rotated token is picked up. Without it the
    /// token comes from CONSUL_HTTP_TOKEN (never a flag: flags show in ps).
    #[arg(
        id = "consul-token-file",
        long = "consul-token-file",
        value_name = "PATH",
        env = "CONSUL_HTTP_TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,

    /// CONSUL_HTTP_TOKEN, which has no flag.
    #[arg(skip = EnvToken(std::env::var("CONSUL_HTTP_TOKEN").ok()))]
    pub env_token: EnvToken,

    /// PEM file of the CA certificates that sign Consul's certificate;
    /// default: the system's trusted roots.
    #[arg(
        id = "consul-cacert",
        long = "consul-cacert",
        value_name = "PATH",
        env = "CONSUL_CACERT"
    )]
    pub cacert: Option<PathBuf>,

    /// PEM client certificate (chain) presented to Consul, for mutual TLS.
    #[arg(
        id = "consul-client-cert",
        long = "consul-client-cert",
        value_name = "PATH",
        env = "CONSUL_CLIENT_CERT",
        requires = "consul-client-key"
    )]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --consul-client-cert.
    #[arg(
        id = "consul-client-key",
        long = "consul-client-key",
        value_name = "PATH",
        env = "CONSUL_CLIENT_KEY",
        requires = "consul-client-cert"
    )]
    pub client_key: Option<PathBuf>,

    /// The name to verify in Consul's certificate instead of the host of
    /// --consul-addr.
    #[arg(
        id = "consul-tls-server-name",
        long = "consul-tls-server-name",
        value_name = "NAME",
        env = "CONSUL_TLS_SERVER_NAME"
    )]
    pub tls_server_name: Option<String>,

    /// A dispatcher attr taken from each instance: KEY=FIELD, FIELD one of
    /// ID (the service instance's ID), Node (the node's name),
    /// Weights.Passing, Weights.Warning, Meta.NAME (service meta) or
    /// NodeMeta.NAME. Values that could break dispatcher.list (whitespace,
    /// ';', ',', '#', '=', quotes, non-ASCII) or a weight/rweight outside
    /// 1..100 are rejected: the instance is kept without that attr and the
    /// value is logged. Repeatable, e.g. weight=Weights.Passing duid=ID.
    #[arg(id = "consul-attr", long = "consul-attr", value_name = "KEY=FIELD")]
    pub attrs: Vec<AttrMapping>,

    /// Register this Kamailio in Consul as service NAME (port default 5060)
    /// with a TTL check that passes while Kamailio answers on --rpc, and
    /// deregister it on shutdown. Options: id=ID (default NAME-HOSTNAME),
    /// address=ADDR (default: the agent's node address), tag=TAG
    /// (repeatable), ttl=DURATION (default 30s). Off by default.
    #[arg(
        id = "consul-register",
        long = "consul-register",
        value_name = "NAME[:PORT][,OPTION...]"
    )]
    pub register: Option<RegisterSpec>,

    /// How long one blocking query may wait for a change (Consul caps it at
    /// 10m).
    #[arg(
        id = "consul-wait",
        long = "consul-wait",
        value_name = "DURATION",
        default_value = DEFAULT_WAIT,
        value_parser = parse_wait
    )]
    pub wait: Duration,

    /// How long a set whose instances all vanish at once keeps them before
    /// it is emptied, so that a restarting agent's brief empty answer does
    /// not blank it. 0 empties at once.
    #[arg(
        id = "consul-empty-grace",
        long = "consul-empty-grace",
        value_name = "DURATION",
        default_value = DEFAULT_EMPTY_GRACE,
        value_parser = parse_duration
    )]
    pub empty_grace: Duration,
}

/// The token from `CONSUL_HTTP_TOKEN`, kept out of `Debug` output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EnvToken(pub Option<String>);

impl fmt::Debug for EnvToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = if self.0.is_some() {
            "Some(<redacted>)"
        } else {
            "None"
        };
        write!(f, "EnvToken({shown})")
    }
}

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
        let (host, port) = split_host_port(rest).map_err(|reason| format!("'{s}': {reason}"))?;
        let port = port.unwrap_or(default_port);
        Ok(ConsulAddr {
            https,
            authority: format!("{host}:{port}"),
        })
    }
}

fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (addr, rest) = inner.split_once(']').ok_or("unclosed '['")?;
        addr.parse::<std::net::Ipv6Addr>()
            .map_err(|_| format!("'{addr}' is not an IPv6 address"))?;
        let port = match rest {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected ':PORT' after ']'")?),
        };
        (format!("[{addr}]"), port)
    } else if s.parse::<std::net::Ipv6Addr>().is_ok() {
        (format!("[{s}]"), None)
    } else {
        match s.rsplit_once(':') {
            Some((host, port)) => (host.to_owned(), Some(port)),
            None => (s.to_owned(), None),
        }
    };
    if host.is_empty() {
        return Err("no host".into());
    }
    let port = port
        .map(|p| match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("port '{p}' is not a number from 1 to 65535")),
            Ok(p) => Ok(p),
        })
        .transpose()?;
    Ok((host, port))
}

/// Which instances count as healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    /// Every check passing (Consul's `passing=true`).
    #[default]
    Passing,
    /// No check critical: passing or warning.
    Warning,
}

/// One `--consul-service`: which instances of which service make a set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub set: SetId,
    /// Replaces every instance's registered port.
    pub port: Option<u16>,
    pub tags: Vec<String>,
    pub datacenter: Option<String>,
    pub health: Health,
}

impl FromStr for ServiceSpec {
    type Err = String;

    /// Parses `NAME=ID[:PORT][,tag=TAG...][,dc=DC][,health=passing|warning]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected NAME=ID[:PORT][,tag=TAG][,dc=DATACENTER][,health=warning]";
        let (name, rest) = s.split_once('=').ok_or_else(|| format!("'{s}': {usage}"))?;
        check_name(s, name).map_err(|e| format!("{e}; {usage}"))?;
        let mut parts = rest.split(',');
        let target = parts.next().unwrap_or_default();
        let (id, port) = match target.split_once(':') {
            Some((id, port)) => (id, Some(port)),
            None => (target, None),
        };
        let set = id
            .parse::<u64>()
            .map_err(|_| format!("'{s}': set id '{id}' is not a number; {usage}"))
            .and_then(|id| validate_set_id(id).map_err(|e| format!("'{s}': {e}")))?;
        let port = port
            .map(|p| match p.parse::<u16>() {
                Ok(0) | Err(_) => Err(format!("'{s}': port '{p}' is not a number from 1 to 65535")),
                Ok(p) => Ok(p),
            })
            .transpose()?;
        let mut spec = ServiceSpec {
            name: name.to_owned(),
            set,
            port,
            tags: Vec::new(),
            datacenter: None,
            health: Health::Passing,
        };
        for option in parts {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("'{s}': option '{option}' is not KEY=VALUE; {usage}"))?;
            if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!(
                    "'{s}': option {key} needs a value without spaces or control characters"
                ));
            }
            match key {
                "tag" => spec.tags.push(value.to_owned()),
                "dc" if spec.datacenter.is_some() => {
                    return Err(format!("'{s}': dc is given twice"));
                }
                "dc" => spec.datacenter = Some(value.to_owned()),
                "health" => {
                    spec.health = match value {
                        "passing" => Health::Passing,
                        "warning" => Health::Warning,
                        other => {
                            return Err(format!(
                                "'{s}': health '{other}' is not 'passing' or 'warning'"
                            ));
                        }
                    }
                }
                other => {
                    return Err(format!(
                        "'{s}': unknown option '{other}' (known: tag, dc, health)"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for ServiceSpec {
    /// The service as logs name it: `name[@dc][+tag...]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        if let Some(dc) = &self.datacenter {
            write!(f, "@{dc}")?;
        }
        for tag in &self.tags {
            write!(f, "+{tag}")?;
        }
        Ok(())
    }
}

/// `--consul-register`: how this Kamailio appears in Consul.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisterSpec {
    pub name: String,
    pub port: u16,
    pub id: Option<String>,
    pub address: Option<String>,
    pub tags: Vec<String>,
    pub ttl: Duration,
}

impl FromStr for RegisterSpec {
    type Err = String;

    /// Parses `NAME[:PORT][,id=ID][,address=ADDR][,tag=TAG...][,ttl=DURATION]`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let usage = "expected NAME[:PORT][,id=ID][,address=ADDR][,tag=TAG][,ttl=DURATION]";
        let mut parts = s.split(',');
        let head = parts.next().unwrap_or_default();
        let (name, port) = match head.split_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (head, None),
        };
        check_name(s, name).map_err(|e| format!("{e}; {usage}"))?;
        let port = match port {
            None => dsfeed_model::DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(format!("'{s}': port '{p}' is not a number from 1 to 65535"));
                }
                Ok(p) => p,
            },
        };
        let mut spec = RegisterSpec {
            name: name.to_owned(),
            port,
            id: None,
            address: None,
            tags: Vec::new(),
            ttl: Duration::from_secs(30),
        };
        for option in parts {
            let (key, value) = option
                .split_once('=')
                .ok_or_else(|| format!("'{s}': option '{option}' is not KEY=VALUE; {usage}"))?;
            if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(format!(
                    "'{s}': option {key} needs a value without spaces or control characters"
                ));
            }
            match key {
                "id" => spec.id = Some(value.to_owned()),
                "address" => spec.address = Some(value.to_owned()),
                "tag" => spec.tags.push(value.to_owned()),
                "ttl" => {
                    spec.ttl = parse_duration(value).map_err(|e| format!("'{s}': {e}"))?;
                    if spec.ttl < Duration::from_secs(1) {
                        return Err(format!("'{s}': ttl must be at least 1s"));
                    }
                }
                other => {
                    return Err(format!(
                        "'{s}': unknown option '{other}' (known: id, address, tag, ttl)"
                    ));
                }
            }
        }
        Ok(spec)
    }
}

/// Consul service names as dsfeed accepts them: letters, digits, `-`, `_`
/// and `.`.
fn check_name(flag: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("'{flag}': empty service name"));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "'{flag}': service name '{name}' contains '{}' (Consul service names are letters, digits, '-', '_' and '.')",
            c.escape_default()
        ));
    }
    Ok(())
}

/// Where an attr's value comes from in a `/v1/health/service` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    /// `Service.ID`.
    ServiceId,
    /// `Node.Node`.
    NodeName,
    /// `Service.Weights.Passing`.
    WeightPassing,
    /// `Service.Weights.Warning`.
    WeightWarning,
    /// `Service.Meta[NAME]`.
    Meta(String),
    /// `Node.Meta[NAME]`.
    NodeMeta(String),
}

impl FromStr for Field {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let key = |k: &str| -> Result<String, String> {
            if k.is_empty() {
                Err(format!("'{s}' names no meta key"))
            } else {
                Ok(k.to_owned())
            }
        };
        Ok(match s {
            "ID" => Field::ServiceId,
            "Node" => Field::NodeName,
            "Weights.Passing" => Field::WeightPassing,
            "Weights.Warning" => Field::WeightWarning,
            _ => {
                if let Some(k) = s.strip_prefix("Meta.") {
                    Field::Meta(key(k)?)
                } else if let Some(k) = s.strip_prefix("NodeMeta.") {
                    Field::NodeMeta(key(k)?)
                } else {
                    return Err(format!(
                        "unknown field '{s}' (known: ID, Node, Weights.Passing, Weights.Warning, Meta.NAME, NodeMeta.NAME)"
                    ));
                }
            }
        })
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Field::ServiceId => f.write_str("ID"),
            Field::NodeName => f.write_str("Node"),
            Field::WeightPassing => f.write_str("Weights.Passing"),
            Field::WeightWarning => f.write_str("Weights.Warning"),
            Field::Meta(k) => write!(f, "Meta.{k}"),
            Field::NodeMeta(k) => write!(f, "NodeMeta.{k}"),
        }
    }
}

/// One `--consul-attr KEY=FIELD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttrMapping {
    /// The dispatcher attr name, such as `weight` or `duid`.
    pub key: String,
    pub field: Field,
}

impl FromStr for AttrMapping {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, field) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' is not KEY=FIELD, as weight=Weights.Passing"))?;
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "'{s}': attr name '{key}' must be letters, digits and '_'"
            ));
        }
        let field = field.parse().map_err(|e| format!("'{s}': {e}"))?;
        Ok(AttrMapping {
            key: key.to_owned(),
            field,
        })
    }
}

impl ConsulArgs {
    /// Checks what clap cannot see one flag at a time.
    pub fn validate(&self) -> Result<(), String> {
        let mut keys = std::collections::HashSet::new();
        for attr in &self.attrs {
            if !keys.insert(attr.key.to_ascii_lowercase()) {
                return Err(format!("--consul-attr {} is given twice", attr.key));
            }
        }
        Ok(())
    }

    /// Whether queries go over TLS.
    pub fn uses_https(&self) -> bool {
        self.addr.https.unwrap_or(self.https)
    }
}

fn parse_wait(s: &str) -> Result<Duration, String> {
    let wait = parse_duration(s)?;
    if wait < Duration::from_secs(1) || wait > MAX_WAIT {
        return Err(format!("'{s}' is not between 1s and 10m"));
    }
    Ok(wait)
}

/// Parses durations as Consul and Go write them: `500ms`, `30s`, `5m`,
/// `1h`, or a sum such as `1m30s`; a bare `0` is zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || format!("'{s}' is not a duration such as 500ms, 30s, 5m or 1m30s");
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let value: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = u32::try_from(value)
            .ok()
            .and_then(|v| unit.checked_mul(v))
            .and_then(|d| total.checked_add(d))
            .ok_or_else(bad)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn load(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_load(std::iter::once("dsfeed").chain(args.iter().copied()))
    }

    #[test]
    fn service_specs_parse() {
        let spec: ServiceSpec = "asterisk=1".parse().unwrap();
        assert_eq!(
            spec,
            ServiceSpec {
                name: "asterisk".into(),
                set: 1,
                port: None,
                tags: vec![],
                datacenter: None,
                health: Health::Passing
            }
        );
        let spec: ServiceSpec = "asterisk=2:5080,tag=primary,tag=v1.2,dc=dc2,health=warning"
            .parse()
            .unwrap();
        assert_eq!(spec.set, 2);
        assert_eq!(spec.port, Some(5080));
        assert_eq!(spec.tags, ["primary", "v1.2"]);
        assert_eq!(spec.datacenter.as_deref(), Some("dc2"));
        assert_eq!(spec.health, Health::Warning);
        assert_eq!(spec.to_string(), "asterisk@dc2+primary+v1.2");
    }

    #[test]
    fn bad_service_specs_name_the_culprit() {
        for (bad, needle) in [
            ("asterisk", "expected NAME=ID"),
            ("=1", "empty service name"),
            ("a/b=1", "contains '/'"),
            ("asterisk=x", "set id 'x'"),
            ("asterisk=3000000000", "out of range"),
            ("asterisk=1:0", "port '0'"),
            ("asterisk=1:http", "port 'http'"),
            ("asterisk=1,tag", "'tag' is not KEY=VALUE"),
            ("asterisk=1,tag=", "needs a value"),
            ("asterisk=1,dc=a,dc=b", "dc is given twice"),
            ("asterisk=1,health=critical", "health 'critical'"),
            ("asterisk=1,near=_agent", "unknown option 'near'"),
        ] {
            let err = bad.parse::<ServiceSpec>().unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

    #[test]
    fn register_specs_parse() {
        let spec: RegisterSpec = "kamailio".parse().unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.port, spec.ttl),
            ("kamailio", 5060, Duration::from_secs(30))
        );
        let spec: RegisterSpec = "kamailio:5080,id=k1,address=10.0.0.9,tag=edge,tag=udp,ttl=5s"
            .parse()
            .unwrap();
        assert_eq!(spec.port, 5080);
        assert_eq!(spec.id.as_deref(), Some("k1"));
        assert_eq!(spec.address.as_deref(), Some("10.0.0.9"));
        assert_eq!(spec.tags, ["edge", "udp"]);
        assert_eq!(spec.ttl, Duration::from_secs(5));
        for (bad, needle) in [
            ("", "empty service name"),
            ("k m", "contains ' '"),
            ("kamailio:0", "port '0'"),
            ("kamailio,ttl=0", "at least 1s"),
            ("kamailio,ttl=x", "not a duration"),
            ("kamailio,check=tcp", "unknown option 'check'"),
        ] {
            let err = bad.parse::<RegisterSpec>().unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }

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

    #[test]
    fn attr_mappings_parse() {
        let attr: AttrMapping = "weight=Weights.Passing".parse().unwrap();
        assert_eq!(attr.field, Field::WeightPassing);
        let attr: AttrMapping = "duid=Meta.instance".parse().unwrap();
        assert_eq!(attr.field, Field::Meta("instance".into()));
        for bad in ["weight", "we ight=ID", "x=Meta.", "x=Service.Port", "=ID"] {
            assert!(bad.parse::<AttrMapping>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_parse_like_go() {
        for (text, ms) in [
            ("0", 0),
            ("500ms", 500),
            ("30s", 30_000),
            ("5m", 300_000),
            ("1m30s", 90_000),
            ("1h", 3_600_000),
        ] {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_millis(ms)),
                "{text}"
            );
        }
        for bad in ["", "5", "s", "5x", "1.5s", "-1s", "99999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_reach_the_config() {
        let config = load(&[
            "-consul-service",
            "asterisk=1:5080,tag=a",
            "--consul-service=freeswitch=2",
            "--consul-addr",
            "https://consul:8501",
            "--consul-attr",
            "weight=Weights.Passing",
            "--consul-attr",
            "duid=ID",
            "--consul-wait",
            "30s",
            "--consul-empty-grace",
            "0",
        ])
        .unwrap();
        let consul = &config.consul;
        assert_eq!(consul.services.len(), 2);
        assert!(consul.uses_https());
        assert_eq!(consul.attrs.len(), 2);
        assert_eq!(consul.wait, Duration::from_secs(30));
        assert_eq!(consul.empty_grace, Duration::ZERO);
    }

    #[test]
    fn bad_consul_flags_exit_2() {
        for args in [
            &["--consul-service", "asterisk"][..],
            &["--consul-service", "a=1", "--consul-addr", "unix:///x"],
            &["--consul-service", "a=1", "--consul-attr", "w=Weights"],
            &[
                "--consul-service",
                "a=1",
                "--consul-attr",
                "w=ID",
                "--consul-attr",
                "W=Node",
            ],
            &["--consul-service", "a=1", "--consul-wait", "20m"],
            &["--consul-service", "a=1", "--consul-wait", "0"],
            &["--consul-service", "a=1", "--consul-empty-grace", "soon"],
            &["--consul-service", "a=1", "--consul-client-cert", "c.pem"],
        ] {
            let err = load(args).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{args:?}: {err}");
        }
    }
}
